//! Slack incoming webhooks with Block Kit messages.
//!
//! A message names the workload, revision, policy, step and weight, says why, and for a
//! rollback lists each trigger that fired and each metric's canary and baseline values
//! with the p-value or bound it was judged against. The webhook URL is a secret: it is
//! read from where the policy says when a message is sent, and never printed (errors
//! name the variable, not the value).

use std::time::Duration;

use serde_json::{Value, json};

use crate::engine::plan::{SecretSource, SlackRoute};
use crate::engine::{EventKind, Notification};
use crate::judge::{Outcome, Verdict};
use crate::notify::DeliveryError;

/// Finds a secret's value.
pub type Resolver = Box<dyn Fn(&SecretSource) -> Result<String, String> + Send + Sync>;

/// The daemon's resolver: environment variables. Kubernetes Secrets are not read yet
/// (a `webhookSecret` fails at delivery, saying so; the rollback goes on regardless).
pub fn from_env(source: &SecretSource) -> Result<String, String> {
    match source {
        SecretSource::Env { name } => std::env::var(name)
            .map_err(|_| format!("environment variable {name} (the Slack webhook URL) is not set")),
        SecretSource::KubernetesSecret { namespace, name, key } => Err(format!(
            "the Slack webhook URL is in Kubernetes Secret {namespace}/{name} key {key}, which only the Kubernetes platform reads; use webhookEnv here"
        )),
    }
}

/// Posts to Slack incoming webhooks.
pub struct SlackNotifier {
    client: reqwest::Client,
    resolve: Resolver,
}

/// Longest `Retry-After` honoured; a longer one is cut to this.
pub const MAX_RETRY_AFTER: Duration = Duration::from_secs(600);

impl SlackNotifier {
    /// A notifier whose calls give up after `timeout`, reading webhook URLs with `resolve`.
    pub fn new(timeout: Duration, resolve: Resolver) -> Result<SlackNotifier, String> {
        let client = reqwest::Client::builder().timeout(timeout).build().map_err(|e| e.to_string())?;
        Ok(SlackNotifier { client, resolve })
    }

    /// Posts `n` to `route`'s webhook. A 429 carries Slack's `Retry-After`.
    pub async fn deliver(&self, route: &SlackRoute, n: &Notification) -> Result<(), DeliveryError> {
        let url = (self.resolve)(&route.webhook).map_err(DeliveryError::from)?;
        let response = self
            .client
            .post(&url)
            .json(&message(route, n))
            .send()
            .await
            // reqwest's errors quote the URL; the URL is the secret.
            .map_err(|e| DeliveryError::from(describe(&e)))?;
        let status = response.status();
        if status.is_success() {
            return Ok(());
        }
        let retry_after = response
            .headers()
            .get(reqwest::header::RETRY_AFTER)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.trim().parse::<u64>().ok())
            .map(|s| Duration::from_secs(s).min(MAX_RETRY_AFTER));
        let retry_after = if status == reqwest::StatusCode::TOO_MANY_REQUESTS {
            Some(retry_after.unwrap_or(Duration::from_secs(1)))
        } else {
            retry_after
        };
        Err(DeliveryError { reason: format!("Slack answered HTTP {status}"), retry_after })
    }
}

fn describe(e: &reqwest::Error) -> String {
    format!("Slack webhook: {}", crate::notify::failure(e))
}

/// Whether `route` posts `n`: at or above its severity, and step advances only when asked.
pub fn wants(route: &SlackRoute, n: &Notification) -> bool {
    n.severity >= route.min_severity && (n.event != EventKind::Advanced || route.step_advanced)
}

fn emoji(event: EventKind) -> &'static str {
    match event {
        EventKind::RolledBack | EventKind::Aborted | EventKind::Reverted => ":rotating_light:",
        EventKind::Promoted => ":white_check_mark:",
        EventKind::Paused | EventKind::Stalled => ":warning:",
        EventKind::Waiting => ":raised_hand:",
        _ => ":arrow_forward:",
    }
}

fn title(n: &Notification) -> String {
    let title = match n.event {
        EventKind::Started => "Canary started",
        EventKind::Advanced => "Canary advanced",
        EventKind::Promoting => "Canary promoting",
        EventKind::Promoted => "Canary promoted",
        EventKind::RolledBack => "Canary rolled back",
        EventKind::Aborted => "Canary aborted",
        EventKind::Paused => "Canary paused",
        EventKind::Resumed => "Canary resumed",
        EventKind::Superseded => "Canary superseded",
        EventKind::Stalled => "Canary stalled: no data",
        EventKind::Waiting => return format!("Canary waiting at a gate at {}%", n.weight),
        EventKind::Approved => "Canary gate opened",
        EventKind::Baking => "Canary baking at 100%",
        EventKind::Reverted => "Canary reverted after promotion",
    };
    title.to_string()
}

/// Cuts `s` to at most `max` characters, marking the cut.
fn cut(s: &str, max: usize) -> String {
    if s.chars().count() <= max {
        return s.to_string();
    }
    let mut out: String = s.chars().take(max.saturating_sub(1)).collect();
    out.push('…');
    out
}

fn number(v: Option<f64>) -> String {
    match v {
        None => "no data".into(),
        Some(v) if v != 0.0 && (v.abs() < 1e-3 || v.abs() >= 1e6) => format!("{v:.3e}"),
        Some(v) => format!("{v:.4}"),
    }
}

fn outcome(v: &Verdict) -> String {
    // A regression the test has proven stands out among the other verdicts.
    match (v.outcome, v.conclusive) {
        (Outcome::Fail, true) => format!("{} (conclusive)", v.outcome.name().to_uppercase()),
        _ => v.outcome.name().to_string(),
    }
}

/// One verdict as Slack text: outcome, canary and baseline values, p-value or bound.
pub fn verdict_text(v: &Verdict) -> String {
    let e = &v.evidence;
    let mut line = format!(
        "*{}* ({}): {} · canary {} · baseline {}",
        v.metric,
        v.test,
        outcome(v),
        number(e.canary.value),
        number(e.baseline.value)
    );
    if let Some(p) = e.p_value {
        line.push_str(&format!(" · p = {p:.2e}"));
    }
    if let Some(b) = e.bound {
        line.push_str(&format!(" · bound {}", number(Some(b))));
    }
    format!("{line}\n{}", v.reason)
}

/// The Block Kit message of `n` for `route`.
pub fn message(route: &SlackRoute, n: &Notification) -> Value {
    let (rollout, revision) = (&n.key.rollout, &n.key.revision);
    let header = cut(&format!("{} {}: {rollout} {revision}", emoji(n.event), title(n)), 150);
    let fields = [
        ("Workload", rollout.clone()),
        ("Revision", revision.clone()),
        ("Step / weight", format!("step {} at {}%", n.step, n.weight)),
        ("Policy", n.policy.clone()),
    ];
    let mut blocks = vec![
        json!({"type": "header", "text": {"type": "plain_text", "text": header, "emoji": true}}),
        json!({
            "type": "section",
            "text": {"type": "mrkdwn", "text": cut(&format!("*Why:* {}", n.reason), 3000)},
            "fields": fields.iter().map(|(k, v)| json!({"type": "mrkdwn", "text": cut(&format!("*{k}*\n{v}"), 2000)})).collect::<Vec<_>>(),
        }),
    ];
    for t in &n.triggers {
        let text = format!("*Trigger fired:* `{}`: {}", t.trigger, t.detail);
        blocks.push(json!({"type": "section", "text": {"type": "mrkdwn", "text": cut(&text, 3000)}}));
    }
    // Failing metrics first; Slack takes at most 50 blocks.
    let mut evidence: Vec<&Verdict> = n.evidence.iter().collect();
    evidence.sort_by_key(|v| v.outcome != Outcome::Fail);
    for v in evidence.into_iter().take(40) {
        blocks.push(
            json!({"type": "section", "text": {"type": "mrkdwn", "text": cut(&verdict_text(v), 3000)}}),
        );
    }
    blocks.push(json!({
        "type": "context",
        "elements": [{"type": "mrkdwn", "text": format!("canaryd · {} · {} · {}", n.severity.name(), route.channel, n.key)}],
    }));
    json!({
        "channel": route.channel,
        "text": cut(&n.summary, 3000),
        "blocks": blocks,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::judge::Evidence;

    fn verdict(outcome: Outcome, conclusive: bool) -> Verdict {
        Verdict {
            metric: "errors".into(),
            test: "sequential".into(),
            outcome,
            conclusive,
            reason: "the reason".into(),
            evidence: Evidence::default(),
        }
    }

    #[test]
    fn a_verdict_is_told_in_the_judges_words_and_a_proven_regression_stands_out() {
        let first = |v: &Verdict| verdict_text(v).lines().next().unwrap_or_default().to_string();
        let line = |word: &str| format!("*errors* (sequential): {word} · canary no data · baseline no data");
        assert_eq!(first(&verdict(Outcome::Pass, false)), line("pass"));
        assert_eq!(first(&verdict(Outcome::Fail, false)), line("fail"));
        assert_eq!(first(&verdict(Outcome::Fail, true)), line("FAIL (conclusive)"));
        assert_eq!(first(&verdict(Outcome::Inconclusive, false)), line("inconclusive"));
        assert_eq!(first(&verdict(Outcome::Insufficient, false)), line("insufficient"));
        assert_eq!(verdict_text(&verdict(Outcome::Insufficient, false)).lines().nth(1), Some("the reason"));
    }
}
