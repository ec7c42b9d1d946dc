//! The outbox: notifications leave the tick through bounded queues (`try_send`, never
//! awaited), one queue and one worker per destination (the daemon-wide webhook, each
//! Slack webhook, the log, …), so a destination that is slow, down or throttling
//! (Slack's `Retry-After`) holds up only its own queue. Each worker retries with
//! backoff. A notification is reported back once every destination that wants it has
//! delivered it or given up.
//!
//! Each carries its key (rollout, revision, decision); a destination's worker drops keys
//! it has already delivered, so a notification offered again after one destination gave
//! up reaches only the destinations still owed it. The daemon persists which decisions
//! were delivered, so a restart re-sends only what was not confirmed. A receiver that
//! deduplicates by key (the webhook sends it as `Idempotency-Key`) then sees each
//! notification exactly once.

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use tokio::sync::mpsc;

use crate::engine::{Notification, NotificationKey};
use crate::notify::{DeliveryError, Destination, Destinations};

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
    /// Capacity of each destination's queue.
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

/// Names the destinations that want a notification.
type Route = Box<dyn Fn(&Notification) -> Vec<Destination> + Send + Sync>;

/// The sending side, owned by the daemon.
pub struct Outbox {
    route: Route,
    queues: Mutex<HashMap<Destination, mpsc::Sender<Job>>>,
    spawn: Spawn,
    capacity: usize,
    shared: Shared,
    done: mpsc::UnboundedReceiver<(NotificationKey, bool)>,
    /// Counters.
    pub stats: Arc<OutboxStats>,
    /// Every destination's worker.
    pub(crate) worker: Workers,
}

/// Starts a destination's worker on its queue.
type Spawn = Box<dyn Fn(Destination, mpsc::Receiver<Job>) -> tokio::task::AbortHandle + Send + Sync>;

/// The workers of an outbox, to stop them all at once (like a killed process: what they
/// are delivering is not finished).
#[derive(Clone, Default)]
pub struct Workers(Arc<Mutex<Vec<tokio::task::AbortHandle>>>);

impl Workers {
    /// Stops every worker.
    pub fn abort(&self) {
        for worker in self.0.lock().unwrap_or_else(PoisonError::into_inner).iter() {
            worker.abort();
        }
    }
}

/// Keys remembered as delivered per destination (the oldest are forgotten past this many).
const REMEMBERED: usize = 65_536;

/// One notification in one destination's queue.
struct Job {
    n: Arc<Notification>,
    ticket: Arc<Ticket>,
}

/// One accepted offer, shared by the destinations it went to: the last of them to
/// finish reports it.
struct Ticket {
    remaining: AtomicUsize,
    failed: AtomicBool,
    /// Delivered somewhere for the first time (not a repeat everywhere).
    fresh: AtomicBool,
}

/// What every worker shares.
#[derive(Clone)]
struct Shared {
    options: OutboxOptions,
    stats: Arc<OutboxStats>,
    done: mpsc::UnboundedSender<(NotificationKey, bool)>,
}

impl Ticket {
    fn finish(&self, key: &NotificationKey, delivered: bool, fresh: bool, shared: &Shared) {
        if !delivered {
            self.failed.store(true, Ordering::SeqCst);
        }
        if fresh {
            self.fresh.store(true, Ordering::SeqCst);
        }
        if self.remaining.fetch_sub(1, Ordering::SeqCst) != 1 {
            return;
        }
        let stats = &shared.stats;
        stats.depth.fetch_sub(1, Ordering::Relaxed);
        let delivered = !self.failed.load(Ordering::SeqCst);
        if !delivered {
            stats.failed.fetch_add(1, Ordering::Relaxed);
        } else if self.fresh.load(Ordering::SeqCst) {
            stats.delivered.fetch_add(1, Ordering::Relaxed);
        }
        let _ = shared.done.send((key.clone(), delivered));
    }
}

impl Outbox {
    /// Starts the outbox; each destination's worker starts with its first notification.
    pub fn start<D: Destinations>(destinations: Arc<D>, options: OutboxOptions) -> Outbox {
        let (done_tx, done) = mpsc::unbounded_channel();
        let stats = Arc::new(OutboxStats::default());
        let capacity = options.capacity.max(1);
        let shared = Shared { options, stats: stats.clone(), done: done_tx };
        let (router, for_workers) = (destinations.clone(), shared.clone());
        Outbox {
            route: Box::new(move |n| router.destinations(n)),
            spawn: Box::new(move |to, queue| {
                tokio::spawn(work(destinations.clone(), to, queue, for_workers.clone())).abort_handle()
            }),
            queues: Mutex::new(HashMap::new()),
            capacity,
            shared,
            done,
            stats,
            worker: Workers::default(),
        }
    }

    /// Queues `n` for every destination that wants it, without waiting; `false` if one
    /// of their queues is full or closed (counted as a drop; the daemon offers it again
    /// later). It goes to all of them or to none.
    pub fn offer(&self, n: Notification) -> bool {
        let destinations = (self.route)(&n);
        if destinations.is_empty() {
            // Nothing wants it (e.g. below every target's severity): told as it is.
            let _ = self.shared.done.send((n.key, true));
            return true;
        }
        // Held while offering: the room checked is the room there is.
        let mut queues = self.queues.lock().unwrap_or_else(PoisonError::into_inner);
        let senders: Vec<mpsc::Sender<Job>> = destinations
            .into_iter()
            .map(|to| {
                queues
                    .entry(to)
                    .or_insert_with_key(|to| {
                        let (tx, rx) = mpsc::channel(self.capacity);
                        let worker = (self.spawn)(to.clone(), rx);
                        self.worker.0.lock().unwrap_or_else(PoisonError::into_inner).push(worker);
                        tx
                    })
                    .clone()
            })
            .collect();
        if senders.iter().any(|tx| tx.is_closed() || tx.capacity() == 0) {
            self.stats.dropped.fetch_add(1, Ordering::Relaxed);
            tracing::warn!(key = %n.key, "outbox full: notification dropped for now");
            return false;
        }
        self.stats.depth.fetch_add(1, Ordering::Relaxed);
        let ticket = Arc::new(Ticket {
            remaining: AtomicUsize::new(senders.len()),
            failed: AtomicBool::new(false),
            fresh: AtomicBool::new(false),
        });
        let n = Arc::new(n);
        for tx in senders {
            if tx.try_send(Job { n: n.clone(), ticket: ticket.clone() }).is_err() {
                // Its worker is gone (the outbox is stopping): given up there.
                ticket.finish(&n.key, false, false, &self.shared);
            }
        }
        true
    }

    /// Outcomes since the last call: each key, and whether every destination that
    /// wanted it delivered it.
    pub fn outcomes(&mut self) -> Vec<(NotificationKey, bool)> {
        let mut out = Vec::new();
        while let Ok(o) = self.done.try_recv() {
            out.push(o);
        }
        out
    }

    /// Waits until everything queued has been delivered or given up, or `deadline`
    /// passes. Returns whether the queues drained.
    pub async fn drain(&self, deadline: Duration) -> bool {
        let waiting = async {
            while self.stats.depth.load(Ordering::Relaxed) > 0 {
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        };
        tokio::time::timeout(deadline, waiting).await.is_ok()
    }
}

/// One destination's worker: its queue in order, each notification retried until
/// delivered or given up.
async fn work<D: Destinations>(
    destinations: Arc<D>,
    to: Destination,
    mut queue: mpsc::Receiver<Job>,
    shared: Shared,
) {
    let mut seen: HashSet<NotificationKey> = HashSet::new();
    let mut order: VecDeque<NotificationKey> = VecDeque::new();
    while let Some(Job { n, ticket }) = queue.recv().await {
        let repeat = seen.contains(&n.key);
        let delivered = repeat || deliver(&*destinations, &to, &n, &shared.options).await;
        if delivered && !repeat && seen.insert(n.key.clone()) {
            order.push_back(n.key.clone());
            if order.len() > REMEMBERED
                && let Some(old) = order.pop_front()
            {
                seen.remove(&old);
            }
        }
        ticket.finish(&n.key, delivered, delivered && !repeat, &shared);
        if shared.done.is_closed() {
            break;
        }
    }
}

async fn deliver<D: Destinations>(
    destinations: &D,
    to: &Destination,
    n: &Notification,
    options: &OutboxOptions,
) -> bool {
    let mut delay = options.backoff;
    for attempt in 1..=options.attempts.max(1) {
        match destinations.deliver_to(to, n).await {
            Ok(()) => return true,
            Err(e) => {
                tracing::warn!(key = %n.key, destination = ?to, attempt, error = %e, "notification not delivered");
                if attempt < options.attempts {
                    tokio::time::sleep(retry_delay(delay, &e)).await;
                    delay = (delay * 2).min(options.max_backoff);
                }
            }
        }
    }
    false
}
