//! Where notifications go: the daemon-wide JSON webhook, each policy's Slack incoming
//! webhook, or the log. [`Fanout`] sends one notification to every target that wants it
//! and, when one target fails, retries only the targets still owed it. Delivery itself,
//! with retries, backoff and `Retry-After`, is the outbox's (`daemon::outbox`).

pub mod slack;

use std::collections::{HashMap, HashSet};
use std::sync::{Mutex, PoisonError};

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;

use crate::daemon::outbox::{DeliveryError, LogNotifier, Notifier, WebhookNotifier};
use crate::engine::{Notification, NotificationKey};

/// Labels of `canaryd_notifications_total`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct DeliveryLabels {
    /// `slack`, `webhook` or `log`.
    pub channel: &'static str,
    /// `delivered`, `failed` (an attempt failed; it is retried), `throttled` (429),
    /// or `filtered` (below the target's severity, or an event it does not post).
    pub result: &'static str,
}

/// Per-attempt delivery counts, by channel and result.
pub type DeliveryCounts = Family<DeliveryLabels, Counter>;

/// Every target of the daemon: the generic webhook if set, Slack for policies that
/// name it, and the log when nothing else is configured.
pub struct Fanout {
    webhook: Option<WebhookNotifier>,
    slack: slack::SlackNotifier,
    counts: DeliveryCounts,
    /// Targets already served per notification still being retried.
    done: Mutex<HashMap<NotificationKey, HashSet<&'static str>>>,
}

/// Entries kept for notifications whose delivery was given up (a bound, not a cache).
const DONE_LIMIT: usize = 4096;

impl Fanout {
    /// A fan-out to `webhook` (if any) and Slack.
    pub fn new(
        webhook: Option<WebhookNotifier>,
        slack: slack::SlackNotifier,
        counts: DeliveryCounts,
    ) -> Fanout {
        Fanout { webhook, slack, counts, done: Mutex::new(HashMap::new()) }
    }

    fn count(&self, channel: &'static str, result: &'static str) {
        self.counts.get_or_create(&DeliveryLabels { channel, result }).inc();
    }

    fn served(&self, key: &NotificationKey) -> HashSet<&'static str> {
        self.done.lock().unwrap_or_else(PoisonError::into_inner).get(key).cloned().unwrap_or_default()
    }

    fn remember(&self, key: &NotificationKey, served: Option<HashSet<&'static str>>) {
        let mut done = self.done.lock().unwrap_or_else(PoisonError::into_inner);
        match served {
            Some(s) => {
                if done.len() >= DONE_LIMIT && !done.contains_key(key) {
                    done.clear();
                }
                done.insert(key.clone(), s);
            }
            None => {
                done.remove(key);
            }
        }
    }
}

impl Notifier for Fanout {
    async fn deliver(&self, n: &Notification) -> Result<(), DeliveryError> {
        let mut served = self.served(&n.key);
        let mut failure: Option<DeliveryError> = None;
        let mut note = |channel: &'static str, result: Result<(), DeliveryError>, served: &mut HashSet<_>| {
            match result {
                Ok(()) => {
                    self.count(channel, "delivered");
                    served.insert(channel);
                }
                Err(e) => {
                    self.count(channel, if e.retry_after.is_some() { "throttled" } else { "failed" });
                    let e = DeliveryError { reason: format!("{channel}: {}", e.reason), ..e };
                    failure = Some(match failure.take() {
                        Some(f) => DeliveryError {
                            reason: format!("{}; {}", f.reason, e.reason),
                            retry_after: f.retry_after.max(e.retry_after),
                        },
                        None => e,
                    });
                }
            }
        };
        if let Some(webhook) = &self.webhook
            && !served.contains("webhook")
        {
            let result = webhook.deliver(n).await;
            note("webhook", result, &mut served);
        }
        if let Some(route) = &n.slack
            && !served.contains("slack")
        {
            if slack::wants(route, n) {
                let result = self.slack.deliver(route, n).await;
                note("slack", result, &mut served);
            } else {
                self.count("slack", "filtered");
                served.insert("slack");
            }
        }
        if self.webhook.is_none() && n.slack.is_none() {
            let result = LogNotifier.deliver(n).await;
            note("log", result, &mut served);
        }
        match failure {
            Some(e) => {
                self.remember(&n.key, Some(served));
                Err(e)
            }
            None => {
                self.remember(&n.key, None);
                Ok(())
            }
        }
    }
}
