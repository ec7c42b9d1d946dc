//! Compiling a policy's notification routes: its Slack channel and its own webhook, with
//! where their URLs are read from.

use crate::engine::plan::{SecretSource, Severity, SlackRoute, WebhookRoute};
use crate::policy::model::{SecretKeyRef, SlackSpec, WebhookSpec};
use crate::policy::validate::problems::Problems;

/// A policy's own JSON webhook: its URL is read at send time from the variable it
/// names, or from a Secret in the policy's namespace.
pub(super) fn compile_webhook(p: &mut Problems, policy: &str, webhook: &WebhookSpec) -> Option<WebhookRoute> {
    let url = match (&webhook.url_env, &webhook.url_secret) {
        (Some(name), None) if is_env_name(name) => SecretSource::Env { name: name.clone() },
        (Some(name), None) => {
            p.add(
                "spec.notify.webhook.urlEnv",
                format!("`{name}` is not an environment variable name (letters, digits, `_`)"),
            );
            return None;
        }
        (None, Some(secret)) => secret_source(policy, secret),
        _ => {
            p.add("spec.notify.webhook", "set exactly one of urlSecret and urlEnv");
            return None;
        }
    };
    Some(WebhookRoute { url })
}

/// A Secret key in the policy's namespace (none for a cluster policy: canaryd's own).
fn secret_source(policy: &str, secret: &SecretKeyRef) -> SecretSource {
    SecretSource::KubernetesSecret {
        namespace: policy
            .split_once('/')
            .map(|(ns, _)| ns)
            .filter(|ns| *ns != "cluster")
            .unwrap_or("")
            .into(),
        name: secret.name.clone(),
        key: secret.key.clone(),
    }
}

/// The policy's Slack route; `None` (and a problem) when its webhook is not set right.
pub(super) fn compile_slack(p: &mut Problems, policy: &str, slack: &SlackSpec) -> Option<SlackRoute> {
    if !(slack.channel.starts_with('#') || slack.channel.starts_with('C')) {
        p.add("spec.notify.slack.channel", "expected a channel such as `#deploys` or an ID");
    }
    let min_severity = match slack.min_severity.as_deref() {
        None | Some("info") => Severity::Info,
        Some("warning") => Severity::Warning,
        Some("critical") => Severity::Critical,
        Some(other) => {
            p.add(
                "spec.notify.slack.minSeverity",
                format!("`{other}` is not a severity; expected info, warning or critical"),
            );
            Severity::Info
        }
    };
    let webhook = slack_webhook(p, policy, slack)?;
    Some(SlackRoute {
        channel: slack.channel.clone(),
        webhook,
        min_severity,
        step_advanced: slack.step_advanced,
    })
}

/// Where the Slack webhook's URL is read from: an environment variable, or a Secret in
/// the policy's namespace.
fn slack_webhook(p: &mut Problems, policy: &str, slack: &SlackSpec) -> Option<SecretSource> {
    match (&slack.webhook_env, &slack.webhook_secret) {
        (Some(name), None) if is_env_name(name) => Some(SecretSource::Env { name: name.clone() }),
        (Some(name), None) => {
            p.add(
                "spec.notify.slack.webhookEnv",
                format!("`{name}` is not an environment variable name (letters, digits, `_`)"),
            );
            None
        }
        (None, Some(secret)) => Some(secret_source(policy, secret)),
        _ => {
            p.add("spec.notify.slack", "set exactly one of webhookSecret and webhookEnv");
            None
        }
    }
}

fn is_env_name(name: &str) -> bool {
    !name.is_empty()
        && !name.starts_with(|c: char| c.is_ascii_digit())
        && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
}
