//! The daemon-wide JSON webhook, and the log for when nothing else is configured.

use std::time::Duration;

use crate::engine::Notification;
use crate::notify::{DeliveryError, Notifier};

/// Posts each notification as JSON to a URL, with its key as `Idempotency-Key`.
pub struct WebhookNotifier {
    client: reqwest::Client,
    url: String,
}

impl WebhookNotifier {
    /// A notifier posting to `url`, giving up on an attempt after `timeout`.
    pub fn new(url: &str, timeout: Duration) -> Result<WebhookNotifier, String> {
        let client = reqwest::Client::builder().timeout(timeout).build().map_err(|e| e.to_string())?;
        Ok(WebhookNotifier { client, url: url.to_string() })
    }
}

impl Notifier for WebhookNotifier {
    async fn deliver(&self, n: &Notification) -> Result<(), DeliveryError> {
        let response = self
            .client
            .post(&self.url)
            .header("Idempotency-Key", n.key.to_string())
            .json(n)
            .send()
            .await
            .map_err(|e| DeliveryError::from(crate::secret::without_userinfo(&e.to_string())))?;
        if response.status().is_success() {
            Ok(())
        } else {
            Err(format!("webhook answered HTTP {}", response.status()).into())
        }
    }
}

/// Notifications written to the log only: what the daemon uses when no webhook is set.
#[derive(Default)]
pub struct LogNotifier;

impl Notifier for LogNotifier {
    async fn deliver(&self, n: &Notification) -> Result<(), DeliveryError> {
        tracing::info!(key = %n.key, event = ?n.event, summary = %n.summary, "notification (no daemon.webhook_url and no Slack target)");
        Ok(())
    }
}
