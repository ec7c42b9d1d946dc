//! Where each rollout stands, for the API (`GET /api/v1/rollouts`) and the demo's
//! progress lines: a small summary built from the persisted state after every tick.

use jiff::Timestamp;
use serde::{Deserialize, Serialize};

use crate::daemon::store::RunState;

/// One rollout, as the API shows it.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct RolloutView {
    /// Namespace.
    pub namespace: String,
    /// Name (on the local platform, the service).
    pub name: String,
    /// The canary's revision.
    pub revision: String,
    /// The policy that runs it.
    pub policy: String,
    /// `progressing`, `paused`, `promoting`, `succeeded`, `rolling-back`, …
    pub phase: String,
    /// Step, from 1.
    pub step: usize,
    /// The plan's steps (canary weights).
    pub steps: Vec<u8>,
    /// The canary weight the engine wants now.
    pub weight: u8,
    /// The canary weight the platform last confirmed (none yet: not applied).
    pub applied_weight: Option<u8>,
    /// The last interval's verdict per metric, in the plan's order.
    pub metrics: Vec<MetricView>,
    /// Triggers met in the last interval.
    pub triggers: Vec<String>,
    /// Intervals analysed.
    pub intervals: u64,
    /// The last decision.
    pub last_decision: Option<DecisionView>,
    /// When traffic first moved.
    pub started_at: Option<Timestamp>,
    /// When it ended.
    pub finished_at: Option<Timestamp>,
}

/// A metric's last verdict.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
pub struct MetricView {
    /// The metric's name in the policy.
    pub name: String,
    /// `pass`, `fail`, `fail (conclusive)`, `inconclusive`, `waiting` (for traffic), or
    /// `-` before the first interval.
    pub verdict: String,
}

/// A decision, in short.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
pub struct DecisionView {
    /// Its sequence number.
    pub seq: u64,
    /// `started`, `advanced`, `rolled-back`, …
    pub action: String,
    /// Canary weight after it.
    pub weight: u8,
    /// Why.
    pub reason: String,
    /// When.
    pub at: Timestamp,
}

fn verdict(letter: char) -> &'static str {
    match letter {
        'p' => "pass",
        'f' => "fail",
        'F' => "fail (conclusive)",
        'i' => "inconclusive",
        'w' => "waiting",
        _ => "?",
    }
}

impl RolloutView {
    /// The view of a persisted state.
    pub fn of(state: &RunState) -> RolloutView {
        let r = &state.rollout;
        let last = r.recent.last();
        let letters: Vec<char> = last.map(|s| s.outcomes.chars().collect()).unwrap_or_default();
        let metrics = r
            .plan
            .metrics
            .iter()
            .enumerate()
            .map(|(i, m)| MetricView {
                name: m.name.clone(),
                verdict: letters.get(i).map_or("-", |c| verdict(*c)).to_string(),
            })
            .collect();
        RolloutView {
            namespace: r.id.namespace.clone(),
            name: r.id.name.clone(),
            revision: r.revision.clone(),
            policy: r.plan.policy.clone(),
            phase: r.phase.name().to_string(),
            step: r.step + 1,
            steps: r.plan.steps.clone(),
            weight: r.desired().weight,
            applied_weight: state.applied.weight,
            metrics,
            triggers: last.map(|s| s.triggers.clone()).unwrap_or_default(),
            intervals: r.intervals_analysed,
            last_decision: r.decisions.last().map(|d| DecisionView {
                seq: d.seq,
                action: d.action.clone(),
                weight: d.weight,
                reason: d.reason.clone(),
                at: d.at,
            }),
            started_at: r.started_at,
            finished_at: r.finished_at,
        }
    }
}
