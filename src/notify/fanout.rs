//! One notification to every target that wants it: the daemon-wide webhook, the
//! policy's Slack, or the log when nothing else is set. When one target fails, a retry
//! goes only to the targets still owed it.

use std::collections::{HashMap, HashSet};
use std::sync::{Mutex, PoisonError};

use crate::engine::{Notification, NotificationKey};
use crate::notify::webhook::{LogNotifier, WebhookNotifier};
use crate::notify::{DeliveryCounts, DeliveryError, DeliveryLabels, Notifier, slack};

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
