//! A rollout's state: everything the engine needs to take the next step, and the record
//! of every decision with its evidence. Serialisable, so the daemon can persist it and a
//! restarted daemon resumes where it stood.

use std::collections::BTreeMap;
use std::fmt;

use jiff::Timestamp;
use serde::{Deserialize, Serialize};

use crate::engine::plan::Plan;
use crate::judge::{MetricState, Verdict};

/// Which workload a rollout is for.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct RolloutId {
    /// Namespace (or the local platform's group).
    pub namespace: String,
    /// Workload name.
    pub name: String,
}

impl fmt::Display for RolloutId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.namespace, self.name)
    }
}

/// Where a rollout stands.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq)]
#[serde(rename_all = "kebab-case")]
pub enum Phase {
    /// Created, no traffic moved yet.
    Pending,
    /// Analysing at a traffic step.
    Progressing,
    /// Held by an operator: no advancing, but triggers still roll back.
    Paused,
    /// All steps passed (or promoted by hand); the platform is promoting.
    Promoting,
    /// Promoted.
    Succeeded,
    /// Rolled back by the analysis or a trigger.
    RolledBack,
    /// Stopped by an operator.
    Aborted,
}

impl Phase {
    /// Whether the rollout is over.
    pub fn is_terminal(self) -> bool {
        matches!(self, Phase::Succeeded | Phase::RolledBack | Phase::Aborted)
    }
}

/// A trigger that was met, and why.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
pub struct TriggerHit {
    /// The trigger's name.
    pub trigger: String,
    /// What was observed.
    pub detail: String,
}

/// The analysis of one interval.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct IntervalRecord {
    /// End of the interval.
    pub at: Timestamp,
    /// Step index.
    pub step: usize,
    /// Canary weight during the interval.
    pub weight: u8,
    /// One verdict per metric.
    pub verdicts: Vec<Verdict>,
    /// Triggers met.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub triggers: Vec<TriggerHit>,
}

/// A decision that changed the rollout, with its evidence.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct Decision {
    /// When.
    pub at: Timestamp,
    /// What was decided: started, advanced, promoting, promoted, rolled-back, aborted,
    /// paused, resumed.
    pub action: String,
    /// Canary weight after the decision.
    pub weight: u8,
    /// Why, in one sentence.
    pub reason: String,
    /// The verdicts it rested on.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub evidence: Vec<Verdict>,
    /// The triggers it rested on.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub triggers: Vec<TriggerHit>,
}

/// Interval records kept per rollout (decisions are always kept).
pub const INTERVAL_HISTORY_LIMIT: usize = 500;

/// One rollout.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct Rollout {
    /// The workload.
    pub id: RolloutId,
    /// The canary's revision (pod template hash, version).
    pub revision: String,
    /// The plan it runs, fixed at creation.
    pub plan: Plan,
    /// Where it stands.
    pub phase: Phase,
    /// Index into `plan.steps`.
    pub step: usize,
    /// Canary weight now.
    pub weight: u8,
    /// When it started progressing.
    pub started_at: Option<Timestamp>,
    /// When the current step's clock started (reset by a failed check or a resume).
    pub step_started_at: Option<Timestamp>,
    /// When the current step began (or the rollout last resumed): its progress deadline
    /// counts from here.
    #[serde(default)]
    pub step_entered_at: Option<Timestamp>,
    /// When it ended.
    pub finished_at: Option<Timestamp>,
    /// Failed checks so far.
    pub failed_checks: u32,
    /// Inconclusive intervals in a row.
    pub inconclusive_streak: u32,
    /// Consecutive failures per health-check trigger.
    #[serde(default)]
    pub health_failures: BTreeMap<String, u32>,
    /// The judge's running state per metric.
    #[serde(default)]
    pub metrics: BTreeMap<String, MetricState>,
    /// Analysed intervals (bounded by `INTERVAL_HISTORY_LIMIT`).
    #[serde(default)]
    pub intervals: Vec<IntervalRecord>,
    /// Every decision.
    #[serde(default)]
    pub decisions: Vec<Decision>,
}

impl Rollout {
    /// A new, pending rollout.
    pub fn new(id: RolloutId, revision: impl Into<String>, plan: Plan) -> Rollout {
        Rollout {
            id,
            revision: revision.into(),
            plan,
            phase: Phase::Pending,
            step: 0,
            weight: 0,
            started_at: None,
            step_started_at: None,
            step_entered_at: None,
            finished_at: None,
            failed_checks: 0,
            inconclusive_streak: 0,
            health_failures: BTreeMap::new(),
            metrics: BTreeMap::new(),
            intervals: Vec::new(),
            decisions: Vec::new(),
        }
    }
}
