//! Every target of the daemon, each its own destination: the daemon-wide webhook, the
//! policy's Slack, or the log when nothing else is set. The outbox gives each
//! destination its own queue, so one target failing or throttling does not hold up the
//! others, and a retry goes only to the targets still owed it.

use crate::engine::Notification;
use crate::notify::webhook::{LogNotifier, WebhookNotifier};
use crate::notify::{
    DeliveryCounts, DeliveryError, DeliveryLabels, Destination, Destinations, Notifier, slack,
};

/// Every target of the daemon: the generic webhook if set, Slack for policies that
/// name it, and the log when nothing else is configured.
pub struct Fanout {
    webhook: Option<WebhookNotifier>,
    slack: slack::SlackNotifier,
    counts: DeliveryCounts,
}

impl Fanout {
    /// A fan-out to `webhook` (if any) and Slack.
    pub fn new(
        webhook: Option<WebhookNotifier>,
        slack: slack::SlackNotifier,
        counts: DeliveryCounts,
    ) -> Fanout {
        Fanout { webhook, slack, counts }
    }

    fn count(&self, channel: &'static str, result: &'static str) {
        self.counts.get_or_create(&DeliveryLabels { channel, result }).inc();
    }
}

impl Destinations for Fanout {
    /// The webhook if set, the policy's Slack if the notification is at or above its
    /// severity (else counted as filtered), and the log when neither is configured.
    fn destinations(&self, n: &Notification) -> Vec<Destination> {
        let mut to = Vec::new();
        if self.webhook.is_some() {
            to.push(Destination::Webhook);
        }
        if let Some(route) = &n.slack {
            if slack::wants(route, n) {
                to.push(Destination::Slack(route.webhook.clone()));
            } else {
                self.count("slack", "filtered");
            }
        }
        if self.webhook.is_none() && n.slack.is_none() {
            to.push(Destination::Log);
        }
        to
    }

    async fn deliver_to(&self, to: &Destination, n: &Notification) -> Result<(), DeliveryError> {
        let (channel, result) = match (to, &self.webhook, &n.slack) {
            (Destination::Webhook, Some(webhook), _) => ("webhook", webhook.deliver(n).await),
            (Destination::Slack(_), _, Some(route)) => ("slack", self.slack.deliver(route, n).await),
            (Destination::Log | Destination::Only, _, _) => ("log", LogNotifier.deliver(n).await),
            (other, _, _) => return Err(format!("{other:?} is not a target of this notification").into()),
        };
        match result {
            Ok(()) => {
                self.count(channel, "delivered");
                Ok(())
            }
            Err(e) => {
                self.count(channel, if e.retry_after.is_some() { "throttled" } else { "failed" });
                Err(DeliveryError { reason: format!("{channel}: {}", e.reason), ..e })
            }
        }
    }
}
