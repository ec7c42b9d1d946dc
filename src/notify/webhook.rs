//! The JSON webhooks (the daemon-wide one, and each policy's own), and the log for when
//! nothing else is configured.

use std::time::Duration;

use crate::engine::Notification;
use crate::engine::plan::SecretSource;
use crate::notify::slack::Resolver;
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

/// Posts `n` as JSON to `url` with its key as `Idempotency-Key`; a failure to send is
/// described by `describe`.
async fn post(
    client: &reqwest::Client,
    url: &str,
    n: &Notification,
    describe: impl FnOnce(reqwest::Error) -> String,
) -> Result<(), DeliveryError> {
    let response = client
        .post(url)
        .header("Idempotency-Key", n.key.to_string())
        .json(n)
        .send()
        .await
        .map_err(|e| DeliveryError::from(describe(e)))?;
    if response.status().is_success() {
        Ok(())
    } else {
        Err(format!("webhook answered HTTP {}", response.status()).into())
    }
}

impl Notifier for WebhookNotifier {
    async fn deliver(&self, n: &Notification) -> Result<(), DeliveryError> {
        post(&self.client, &self.url, n, |e| crate::secret::without_userinfo(&e.to_string())).await
    }
}

/// The daemon's resolver of a policy's webhook URL: environment variables.
pub fn url_from_env(source: &SecretSource) -> Result<String, String> {
    match source {
        SecretSource::Env { name } => std::env::var(name).map_err(|_| {
            format!("environment variable {name} (the policy's notify.webhook.urlEnv) is not set")
        }),
        SecretSource::KubernetesSecret { namespace, name, key } => Err(format!(
            "the policy's webhook URL is in Kubernetes Secret {namespace}/{name} key {key}, which only the Kubernetes platform reads; use urlEnv here"
        )),
    }
}

/// Posts to each policy's own JSON webhook (`notify.webhook.urlEnv` or `urlSecret`): the same body and
/// `Idempotency-Key` as the daemon-wide webhook, the URL read when a notification is
/// sent and never shown (errors name where it is kept, not the URL).
pub struct PolicyWebhookNotifier {
    client: reqwest::Client,
    resolve: Resolver,
}

impl PolicyWebhookNotifier {
    /// A notifier whose calls give up after `timeout`, reading URLs with `resolve`.
    pub fn new(timeout: Duration, resolve: Resolver) -> Result<PolicyWebhookNotifier, String> {
        let client = reqwest::Client::builder().timeout(timeout).build().map_err(|e| e.to_string())?;
        Ok(PolicyWebhookNotifier { client, resolve })
    }

    /// Posts `n` to the webhook whose URL `url` keeps.
    pub async fn deliver(&self, url: &SecretSource, n: &Notification) -> Result<(), DeliveryError> {
        let address = (self.resolve)(url).map_err(DeliveryError::from)?;
        let kept = match url {
            SecretSource::Env { name } => format!("environment variable {name}"),
            SecretSource::KubernetesSecret { namespace, name, key } => {
                format!("Kubernetes Secret {namespace}/{name} key {key}")
            }
        };
        // reqwest's errors quote the URL; the URL is the secret.
        post(&self.client, &address, n, |e| format!("the webhook of {kept}: {}", crate::notify::failure(&e)))
            .await
    }
}

/// Notifications written to the log only: what the daemon uses when no webhook is set.
#[derive(Default)]
pub struct LogNotifier;

impl Notifier for LogNotifier {
    async fn deliver(&self, n: &Notification) -> Result<(), DeliveryError> {
        tracing::info!(key = %n.key, event = ?n.event, summary = %n.summary, "notification (no daemon.webhook_url, no Slack target and no policy webhook)");
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::{EventKind, NotificationKey};

    fn note() -> Notification {
        Notification {
            key: NotificationKey { rollout: "shop/web".into(), revision: "v2".into(), decision: 0 },
            event: EventKind::Started,
            severity: EventKind::Started.severity(),
            policy: "shop/web".into(),
            step: 1,
            weight: 10,
            reason: "started".into(),
            summary: "shop/web revision v2: started".into(),
            evidence: vec![],
            triggers: vec![],
            slack: None,
            webhook: None,
        }
    }

    #[tokio::test]
    async fn a_missing_variable_fails_the_delivery_naming_the_variable() {
        const NAME: &str = "CANARYD_TEST_POLICY_WEBHOOK_NEVER_SET";
        assert!(std::env::var(NAME).is_err(), "{NAME} is not set in the test's environment");
        let notifier = PolicyWebhookNotifier::new(Duration::from_secs(1), Box::new(url_from_env)).unwrap();
        let source = SecretSource::Env { name: NAME.into() };
        let e = notifier.deliver(&source, &note()).await.unwrap_err();
        assert_eq!(
            e.reason,
            format!("environment variable {NAME} (the policy's notify.webhook.urlEnv) is not set")
        );
    }

    #[tokio::test]
    async fn a_failed_post_names_where_the_url_is_kept_not_the_url() {
        // A port nothing listens on: the connection is refused.
        let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        let url = format!("http://127.0.0.1:{port}/hooks/token-0123456789");
        let notifier =
            PolicyWebhookNotifier::new(Duration::from_secs(5), Box::new(move |_| Ok(url.clone()))).unwrap();
        let source = SecretSource::Env { name: "SHOP_DEPLOYS_WEBHOOK".into() };
        let e = notifier.deliver(&source, &note()).await.unwrap_err();
        assert_eq!(e.reason, "the webhook of environment variable SHOP_DEPLOYS_WEBHOOK: cannot connect");
    }
}
