//! Health probes for the `healthCheck` triggers: one HTTP GET per trigger and due
//! rollout each interval, all at once, each bounded by its own timeout, so a probe never
//! holds the tick longer than the slowest timeout. The results reach the engine as the
//! interval's health observations.

use std::collections::BTreeMap;
use std::time::Duration;

use futures::future::join_all;

use crate::engine::Arms;
use crate::engine::RolloutId;
use crate::engine::plan::{Plan, TriggerCondition};

/// One probe to run.
#[derive(Clone, Debug, PartialEq)]
pub struct Probe {
    /// The rollout.
    pub rollout: RolloutId,
    /// The trigger's name.
    pub trigger: String,
    /// The URL, placeholders filled for the canary.
    pub url: String,
    /// The status a healthy endpoint answers.
    pub expected_status: u16,
    /// How long to wait.
    pub timeout: Duration,
}

/// The probes of a rollout's health-check triggers, with `{{workload}}` and
/// `{{namespace}}` filled in for its canary.
pub fn probes(rollout: &RolloutId, plan: &Plan, arms: &Arms) -> Vec<Probe> {
    plan.triggers
        .iter()
        .filter_map(|t| match &t.condition {
            TriggerCondition::HealthCheck { url, expected_status, timeout, .. } => Some(Probe {
                rollout: rollout.clone(),
                trigger: t.name.clone(),
                url: url.replace("{{workload}}", &arms.canary).replace("{{namespace}}", &arms.namespace),
                expected_status: *expected_status,
                timeout: *timeout,
            }),
            _ => None,
        })
        .collect()
}

/// Runs every probe concurrently; healthy means the expected status within the timeout.
pub async fn run(
    client: &reqwest::Client,
    probes: Vec<Probe>,
) -> BTreeMap<RolloutId, BTreeMap<String, bool>> {
    let results = join_all(probes.into_iter().map(|p| async move {
        let answer = tokio::time::timeout(p.timeout, client.get(&p.url).send()).await;
        let healthy = match answer {
            Ok(Ok(response)) => response.status().as_u16() == p.expected_status,
            Ok(Err(e)) => {
                tracing::debug!(rollout = %p.rollout, url = %p.url, error = %e, "health probe failed");
                false
            }
            Err(_) => false,
        };
        (p.rollout, p.trigger, healthy)
    }))
    .await;
    let mut out: BTreeMap<RolloutId, BTreeMap<String, bool>> = BTreeMap::new();
    for (rollout, trigger, healthy) in results {
        out.entry(rollout).or_default().insert(trigger, healthy);
    }
    out
}
