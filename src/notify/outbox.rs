//! The outbox: notifications leave the tick through a bounded queue (`try_send`, never
//! awaited) and a worker delivers them, retrying with backoff. Each carries its key
//! (rollout, revision, decision); the worker drops keys it has already delivered, and
//! the daemon persists which decisions were delivered, so a restart re-sends only what
//! was not confirmed. A receiver that deduplicates by key (the webhook sends it as
//! `Idempotency-Key`) then sees each notification exactly once.

use std::collections::{HashSet, VecDeque};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use tokio::sync::mpsc;

use crate::engine::{Notification, NotificationKey};
use crate::notify::{DeliveryError, Notifier};

/// The wait before the next attempt: the receiver's `Retry-After` when it gave one,
/// else `backoff` (which doubles after each attempt, up to the maximum).
pub fn retry_delay(backoff: Duration, error: &DeliveryError) -> Duration {
    error.retry_after.unwrap_or(backoff)
}

/// Counters of the outbox, exported as the daemon's own metrics.
#[derive(Debug, Default)]
pub struct OutboxStats {
    /// Notifications waiting or being delivered.
    pub depth: AtomicU64,
    /// Notifications refused because the queue was full (they are offered again on a
    /// later tick, from the persisted state).
    pub dropped: AtomicU64,
    /// Delivered.
    pub delivered: AtomicU64,
    /// Given up after every retry.
    pub failed: AtomicU64,
}

/// How the outbox retries.
#[derive(Clone, Debug)]
pub struct OutboxOptions {
    /// Queue capacity.
    pub capacity: usize,
    /// Delivery attempts per notification.
    pub attempts: u32,
    /// Delay before the first retry, doubled each time.
    pub backoff: Duration,
    /// Longest delay between retries.
    pub max_backoff: Duration,
}

impl Default for OutboxOptions {
    fn default() -> Self {
        OutboxOptions {
            capacity: 1024,
            attempts: 8,
            backoff: Duration::from_secs(1),
            max_backoff: Duration::from_secs(60),
        }
    }
}

/// The sending side, owned by the daemon.
pub struct Outbox {
    tx: mpsc::Sender<Notification>,
    done: mpsc::UnboundedReceiver<(NotificationKey, bool)>,
    /// Counters.
    pub stats: Arc<OutboxStats>,
    pub(crate) worker: tokio::task::AbortHandle,
}

/// Keys remembered as delivered (the oldest are forgotten past this many).
const REMEMBERED: usize = 65_536;

impl Outbox {
    /// Starts the delivery worker.
    pub fn start<N: Notifier>(notifier: Arc<N>, options: OutboxOptions) -> Outbox {
        let (tx, mut rx) = mpsc::channel::<Notification>(options.capacity.max(1));
        let (done_tx, done) = mpsc::unbounded_channel();
        let stats = Arc::new(OutboxStats::default());
        let worker_stats = stats.clone();
        let worker = tokio::spawn(async move {
            let mut seen: HashSet<NotificationKey> = HashSet::new();
            let mut order: VecDeque<NotificationKey> = VecDeque::new();
            while let Some(n) = rx.recv().await {
                let delivered = seen.contains(&n.key) || deliver(&*notifier, &n, &options).await;
                worker_stats.depth.fetch_sub(1, Ordering::Relaxed);
                if delivered {
                    worker_stats.delivered.fetch_add(u64::from(!seen.contains(&n.key)), Ordering::Relaxed);
                    if seen.insert(n.key.clone()) {
                        order.push_back(n.key.clone());
                        if order.len() > REMEMBERED
                            && let Some(old) = order.pop_front()
                        {
                            seen.remove(&old);
                        }
                    }
                } else {
                    worker_stats.failed.fetch_add(1, Ordering::Relaxed);
                }
                if done_tx.send((n.key, delivered)).is_err() {
                    break;
                }
            }
        });
        Outbox { tx, done, stats, worker: worker.abort_handle() }
    }

    /// Queues `n` without waiting; `false` if the queue is full or closed (counted as a
    /// drop; the daemon offers it again later).
    pub fn offer(&self, n: Notification) -> bool {
        self.stats.depth.fetch_add(1, Ordering::Relaxed);
        match self.tx.try_send(n) {
            Ok(()) => true,
            Err(e) => {
                self.stats.depth.fetch_sub(1, Ordering::Relaxed);
                self.stats.dropped.fetch_add(1, Ordering::Relaxed);
                tracing::warn!(key = %e.into_inner().key, "outbox full: notification dropped for now");
                false
            }
        }
    }

    /// Outcomes since the last call: each key, and whether it was delivered.
    pub fn outcomes(&mut self) -> Vec<(NotificationKey, bool)> {
        let mut out = Vec::new();
        while let Ok(o) = self.done.try_recv() {
            out.push(o);
        }
        out
    }

    /// Waits until everything queued has been delivered or given up, or `deadline`
    /// passes. Returns whether the queue drained.
    pub async fn drain(&self, deadline: Duration) -> bool {
        let waiting = async {
            while self.stats.depth.load(Ordering::Relaxed) > 0 {
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        };
        tokio::time::timeout(deadline, waiting).await.is_ok()
    }
}

async fn deliver<N: Notifier>(notifier: &N, n: &Notification, options: &OutboxOptions) -> bool {
    let mut delay = options.backoff;
    for attempt in 1..=options.attempts.max(1) {
        match notifier.deliver(n).await {
            Ok(()) => return true,
            Err(e) => {
                tracing::warn!(key = %n.key, attempt, error = %e, "notification not delivered");
                if attempt < options.attempts {
                    tokio::time::sleep(retry_delay(delay, &e)).await;
                    delay = (delay * 2).min(options.max_backoff);
                }
            }
        }
    }
    false
}
