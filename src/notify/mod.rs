//! Where notifications go: the daemon-wide JSON webhook, each policy's Slack incoming
//! webhook, or the log. [`fanout::Fanout`] names the destinations that want each
//! notification and delivers to one of them. Delivery itself, with retries, backoff and
//! `Retry-After`, is the outbox's ([`outbox`]): one queue and worker per destination, so
//! a slow or throttling receiver holds up only its own notifications.

pub mod fanout;
pub mod memory;
pub mod outbox;
pub mod slack;
pub mod webhook;

use std::future::Future;
use std::time::Duration;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;

use crate::engine::Notification;
use crate::engine::plan::SecretSource;

/// Why a delivery failed, and when the receiver asked to be tried again.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DeliveryError {
    /// Why (never a secret: no webhook URL).
    pub reason: String,
    /// The receiver's `Retry-After`, when it gave one (e.g. Slack's 429).
    pub retry_after: Option<Duration>,
}

impl From<String> for DeliveryError {
    fn from(reason: String) -> Self {
        DeliveryError { reason, retry_after: None }
    }
}

impl std::fmt::Display for DeliveryError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.reason)?;
        if let Some(after) = self.retry_after {
            write!(f, " (retry after {}s)", after.as_secs())?;
        }
        Ok(())
    }
}

/// Delivers one notification somewhere.
pub trait Notifier: Send + Sync + 'static {
    /// Delivers `n`; `Err` says why it was not delivered (it will be retried).
    fn deliver(&self, n: &Notification) -> impl Future<Output = Result<(), DeliveryError>> + Send;
}

/// One place notifications go: each has its own queue and worker in the outbox.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum Destination {
    /// The one place of a plain [`Notifier`].
    Only,
    /// The daemon-wide JSON webhook.
    Webhook,
    /// A policy's own JSON webhook, by where its URL is read from.
    PolicyWebhook(SecretSource),
    /// A Slack incoming webhook, by where its URL is read from (Slack rate-limits each
    /// webhook on its own).
    Slack(SecretSource),
    /// Kubernetes Events on the rollout's Deployment (the Kubernetes platform).
    KubernetesEvents,
    /// The log, when nothing else is configured.
    Log,
}

/// Notifiers with several destinations, each delivered to on its own.
pub trait Destinations: Send + Sync + 'static {
    /// The destinations that want `n` (none: nothing to deliver).
    fn destinations(&self, n: &Notification) -> Vec<Destination>;

    /// Delivers `n` to `to`, one of its destinations; `Err` says why not (it will be
    /// retried).
    fn deliver_to(
        &self,
        to: &Destination,
        n: &Notification,
    ) -> impl Future<Output = Result<(), DeliveryError>> + Send;
}

/// A plain notifier is one destination.
impl<N: Notifier> Destinations for N {
    fn destinations(&self, _: &Notification) -> Vec<Destination> {
        vec![Destination::Only]
    }

    fn deliver_to(
        &self,
        _: &Destination,
        n: &Notification,
    ) -> impl Future<Output = Result<(), DeliveryError>> + Send {
        self.deliver(n)
    }
}

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

/// `canaryd_notifications_total{channel, result}`, registered in `registry`.
pub fn register_deliveries(registry: &mut prometheus_client::registry::Registry) -> DeliveryCounts {
    let counts = DeliveryCounts::default();
    registry.register(
        "notifications",
        "Notification delivery attempts by channel and result",
        counts.clone(),
    );
    counts
}

/// What went wrong with a request, in words that never quote its URL (a webhook's URL
/// is its secret, and reqwest's own messages include it).
pub(crate) fn failure(e: &reqwest::Error) -> &'static str {
    if e.is_timeout() {
        "timed out"
    } else if e.is_connect() {
        "cannot connect"
    } else {
        "request failed"
    }
}
