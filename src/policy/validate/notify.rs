//! Compiling a policy's notification routes: its Slack channel and its own webhook, with
//! where their URLs are read from.

use crate::engine::plan::{SecretSource, Severity, SlackRoute, WebhookRoute};
use crate::policy::model::{SlackSpec, WebhookSpec};
use crate::policy::validate::problems::Problems;

/// A policy's own JSON webhook: its URL is read from the variable it names, at send time.
pub(super) fn compile_webhook(p: &mut Problems, webhook: &WebhookSpec) -> Option<WebhookRoute> {
    if is_env_name(&webhook.url_env) {
        return Some(WebhookRoute { url: SecretSource::Env { name: webhook.url_env.clone() } });
    }
    p.add(
        "spec.notify.webhook.urlEnv",
        format!("`{}` is not an environment variable name (letters, digits, `_`)", webhook.url_env),
    );
    None
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
        (None, Some(secret)) => Some(SecretSource::KubernetesSecret {
            namespace: policy
                .split_once('/')
                .map(|(ns, _)| ns)
                .filter(|ns| *ns != "cluster")
                .unwrap_or("")
                .into(),
            name: secret.name.clone(),
            key: secret.key.clone(),
        }),
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
