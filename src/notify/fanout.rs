//! Every target of the daemon, each its own destination: the daemon-wide webhook, the
//! policy's Slack and its own webhook, or the log when nothing else is set. The outbox gives each
//! destination its own queue, so one target failing or throttling does not hold up the
//! others, and a retry goes only to the targets still owed it.

use crate::engine::Notification;
use crate::notify::webhook::{LogNotifier, PolicyWebhookNotifier, WebhookNotifier};
use crate::notify::{
    DeliveryCounts, DeliveryError, DeliveryLabels, Destination, Destinations, Notifier, slack,
};
use crate::platform::kubernetes::events::EventNotifier;
use crate::platform::kubernetes::lease::Leadership;

/// Every target of the daemon: the generic webhook if set, Slack and their own webhook
/// for policies that name them, and the log when nothing else is configured.
pub struct Fanout {
    webhook: Option<WebhookNotifier>,
    policy_webhooks: PolicyWebhookNotifier,
    slack: slack::SlackNotifier,
    events: Option<EventNotifier>,
    counts: DeliveryCounts,
    /// Nothing is sent while this replica may not act (another holds the Lease).
    leadership: Leadership,
}

impl Fanout {
    /// A fan-out to `webhook` (if any), the policies' own webhooks and Slack.
    pub fn new(
        webhook: Option<WebhookNotifier>,
        policy_webhooks: PolicyWebhookNotifier,
        slack: slack::SlackNotifier,
        counts: DeliveryCounts,
    ) -> Fanout {
        Fanout {
            webhook,
            policy_webhooks,
            slack,
            events: None,
            counts,
            leadership: Leadership::unconditional(),
        }
    }

    /// Sends only while `leadership` may act.
    pub fn fenced(mut self, leadership: Leadership) -> Fanout {
        self.leadership = leadership;
        self
    }

    /// Also posts every decision as a Kubernetes Event on its Deployment.
    pub fn with_events(mut self, events: EventNotifier) -> Fanout {
        self.events = Some(events);
        self
    }

    fn count(&self, channel: &'static str, result: &'static str) {
        self.counts.get_or_create(&DeliveryLabels { channel, result }).inc();
    }
}

impl Destinations for Fanout {
    /// The webhook if set, the policy's own webhook, the policy's Slack if the
    /// notification is at or above its severity (else counted as filtered), and the log
    /// when none is configured.
    fn destinations(&self, n: &Notification) -> Vec<Destination> {
        let mut to = Vec::new();
        if self.webhook.is_some() {
            to.push(Destination::Webhook);
        }
        if let Some(route) = &n.webhook {
            to.push(Destination::PolicyWebhook(route.url.clone()));
        }
        if let Some(route) = &n.slack {
            if slack::wants(route, n) {
                to.push(Destination::Slack(route.webhook.clone()));
            } else {
                self.count("slack", "filtered");
            }
        }
        if self.events.is_some() {
            to.push(Destination::KubernetesEvents);
        }
        if self.webhook.is_none() && n.slack.is_none() && n.webhook.is_none() {
            to.push(Destination::Log);
        }
        to
    }

    async fn deliver_to(&self, to: &Destination, n: &Notification) -> Result<(), DeliveryError> {
        if !self.leadership.may_act() {
            return Err("not sent: this replica does not hold the Lease".to_string().into());
        }
        let (channel, result) = match (to, &self.webhook, &n.slack) {
            (Destination::Webhook, Some(webhook), _) => ("webhook", webhook.deliver(n).await),
            (Destination::PolicyWebhook(url), _, _) => {
                ("webhook", self.policy_webhooks.deliver(url, n).await)
            }
            (Destination::Slack(_), _, Some(route)) => ("slack", self.slack.deliver(route, n).await),
            (Destination::KubernetesEvents, _, _) => match &self.events {
                Some(events) => ("kubernetes-events", events.deliver(n).await),
                None => return Err("no Kubernetes client for Events".to_string().into()),
            },
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
