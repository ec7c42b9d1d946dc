//! What an interval's evidence amounts to, before the rollout's counts: the triggers
//! met, the rollback that needs no count (a trigger, or a conclusive regression), and the
//! verdict of a metric the bake cannot judge. Pure, like the rest of the engine.

use crate::engine::input::IntervalObservations;
use crate::engine::plan::{MetricPlan, TriggerCondition};
use crate::engine::rollback::RollbackReason;
use crate::engine::rollout::{Phase, Rollout, TriggerHit};
use crate::judge::{self, Observation, Outcome, Verdict};

/// `metric: reason` of each verdict, for decision texts.
pub fn reasons(verdicts: &[&Verdict]) -> String {
    verdicts.iter().map(|v| format!("{}: {}", v.metric, v.reason)).collect::<Vec<_>>().join("; ")
}

/// The rollback that needs no count: a trigger hit, or a conclusive regression.
pub fn immediate_rollback(verdicts: &[Verdict], triggers: &[TriggerHit]) -> Option<(RollbackReason, String)> {
    if !triggers.is_empty() {
        let names = triggers.iter().map(|h| h.trigger.clone()).collect();
        let why =
            triggers.iter().map(|h| format!("{}: {}", h.trigger, h.detail)).collect::<Vec<_>>().join("; ");
        return Some((RollbackReason::Trigger { triggers: names }, why));
    }
    let regressed: Vec<&Verdict> =
        verdicts.iter().filter(|v| v.outcome == Outcome::Fail && v.conclusive).collect();
    if regressed.is_empty() {
        return None;
    }
    let metrics = regressed.iter().map(|v| v.metric.clone()).collect();
    Some((RollbackReason::Regression { metrics }, reasons(&regressed)))
}

/// The triggers `obs` and `verdicts` meet, counting consecutive failed health checks in
/// the rollout's state.
pub fn met(r: &mut Rollout, obs: &IntervalObservations, verdicts: &[Verdict]) -> Vec<TriggerHit> {
    let min = r.plan.min_sample_size as f64;
    // During the bake the previous revision takes no traffic: no ratio to compare.
    let compare = r.phase != Phase::Baking;
    let mut hits = Vec::new();
    for trigger in &r.plan.triggers {
        let hit = |detail: String| TriggerHit { trigger: trigger.name.clone(), detail };
        match &trigger.condition {
            TriggerCondition::Metric { metric, above, below, ratio_above } => {
                let Some(v) = verdicts.iter().find(|v| &v.metric == metric) else { continue };
                let (c, b) = (&v.evidence.canary, &v.evidence.baseline);
                // A handful of requests says nothing: one error in two requests is not 50%.
                if c.requests.is_some_and(|n| n < min) {
                    continue;
                }
                let Some(value) = c.value else { continue };
                if let Some(a) = above.filter(|a| value > *a) {
                    hits.push(hit(format!("{metric} canary value {value:.4} > {a}")));
                } else if let Some(bl) = below.filter(|bl| value < *bl) {
                    hits.push(hit(format!("{metric} canary value {value:.4} < {bl}")));
                } else if let (true, Some(limit), Some(base)) = (compare, ratio_above, b.value) {
                    let enough = b.requests.is_none_or(|n| n >= min);
                    if enough && base > 0.0 && value / base > *limit {
                        hits.push(hit(format!(
                            "{metric} canary {value:.4} is {:.2}x the baseline {base:.4} (limit {limit}x)",
                            value / base
                        )));
                    }
                }
            }
            TriggerCondition::Alert { alert } => {
                if obs.firing_alerts.contains(alert) {
                    hits.push(hit(format!("alert {alert} is firing")));
                }
            }
            TriggerCondition::HealthCheck { url, consecutive_failures, .. } => {
                let Some(&healthy) = obs.health.get(&trigger.name) else { continue };
                let count = r.health_failures.entry(trigger.name.clone()).or_default();
                *count = if healthy { 0 } else { *count + 1 };
                if *count >= *consecutive_failures {
                    hits.push(hit(format!("{count} consecutive failed health checks of {url}")));
                }
            }
        }
    }
    hits
}

/// The verdict of a metric the bake cannot judge: its test compares the canary with a
/// concurrent baseline, and during the bake the previous revision takes no traffic. The
/// values measured are kept: a trigger bounding the canary's own value (`above`,
/// `below`) still watches the bake through them. Without them nothing watched the
/// interval: no data, which counts towards the inconclusive limit as anywhere else.
pub fn not_judged_in_bake(m: &MetricPlan, obs: &Observation) -> Verdict {
    let test = m.test.name();
    let (outcome, reason) = match (&obs.error, &obs.canary) {
        (Some(error), _) => (Outcome::Inconclusive, format!("no data: {error}")),
        (None, None) => (Outcome::Inconclusive, "no data for the canary".to_string()),
        (None, Some(_)) => (
            Outcome::Insufficient,
            format!(
                "not judged during the bake: the {test} test compares with the baseline, which takes no traffic"
            ),
        ),
    };
    Verdict {
        metric: m.name.clone(),
        test: test.to_string(),
        outcome,
        conclusive: false,
        reason,
        evidence: judge::Evidence {
            canary: judge::arm_evidence(obs.canary.as_ref(), m.quantile),
            baseline: judge::arm_evidence(obs.baseline.as_ref(), m.quantile),
            query: obs.query.clone(),
            ..Default::default()
        },
    }
}
