//! A rollout's state: everything the engine needs to take the next step, and the record
//! of every decision with its evidence. Serialisable, so the daemon can persist it and a
//! restarted daemon resumes where it stood.

use std::collections::BTreeMap;
use std::fmt;

use jiff::Timestamp;
use serde::{Deserialize, Serialize};

use crate::engine::plan::Plan;
use crate::engine::rollback::RollbackReason;
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
    /// Held at a gate after its step passed: the analysis goes on (a regression still
    /// rolls back), and the rollout moves on once the gate opens, or rolls back at the
    /// gate timeout.
    Waiting,
    /// Every step passed: the canary serves all traffic while the previous revision
    /// stays deployed, taking none, to be restored at once. The canary alone is analysed
    /// for the bake window; a trigger or a regression reverts.
    Baking,
    /// All steps passed (or promoted by hand); the platform is promoting.
    Promoting,
    /// Promoted.
    Succeeded,
    /// Rollback (or abort) decided: traffic is at 0 and the platform is scaling the
    /// canary down. The platform's confirmation ends it.
    RollingBack,
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

    /// The phase's name as shown and exported.
    pub fn name(self) -> &'static str {
        match self {
            Phase::Pending => "pending",
            Phase::Progressing => "progressing",
            Phase::Paused => "paused",
            Phase::Waiting => "waiting",
            Phase::Baking => "baking",
            Phase::Promoting => "promoting",
            Phase::Succeeded => "succeeded",
            Phase::RollingBack => "rolling-back",
            Phase::RolledBack => "rolled-back",
            Phase::Aborted => "aborted",
        }
    }

    /// Every phase.
    pub const ALL: [Phase; 10] = [
        Phase::Pending,
        Phase::Progressing,
        Phase::Paused,
        Phase::Waiting,
        Phase::Baking,
        Phase::Promoting,
        Phase::Succeeded,
        Phase::RollingBack,
        Phase::RolledBack,
        Phase::Aborted,
    ];
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

/// What a decision decided: the one vocabulary of decisions, persisted in states and
/// records, shown by the API, the CLI and the notifications, and counted in
/// `canaryd_decisions_total{kind}`.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[serde(rename_all = "kebab-case")]
pub enum DecisionKind {
    /// Traffic started moving.
    Started,
    /// Moved to the next step.
    Advanced,
    /// Every step passed (or an operator promoted): the platform is promoting.
    Promoting,
    /// The platform finished promoting.
    Promoted,
    /// Rolled back by the analysis, a trigger or a failed promotion.
    RolledBack,
    /// Stopped by an operator.
    Aborted,
    /// The platform took the canary out after a rollback or an abort.
    RollbackFinished,
    /// Held by an operator, or by a platform that cannot set the weight.
    Paused,
    /// Resumed by an operator.
    Resumed,
    /// A new revision replaced the canary; the analysis restarted.
    Superseded,
    /// Intervals in a row had no usable data.
    Stalled,
    /// A step with a gate passed its analysis: the rollout waits for the gate.
    Waiting,
    /// The gate opened: approved by a person, or its webhook answered 2xx.
    Approved,
    /// Every step passed: the bake at 100% began, the previous revision kept.
    Baking,
    /// A trigger, a regression or an operator during the bake: the previous revision
    /// serves all traffic again.
    Reverted,
}

impl DecisionKind {
    /// The decision's name, as persisted, shown and exported.
    pub fn name(self) -> &'static str {
        match self {
            DecisionKind::Started => "started",
            DecisionKind::Advanced => "advanced",
            DecisionKind::Promoting => "promoting",
            DecisionKind::Promoted => "promoted",
            DecisionKind::RolledBack => "rolled-back",
            DecisionKind::Aborted => "aborted",
            DecisionKind::RollbackFinished => "rollback-finished",
            DecisionKind::Paused => "paused",
            DecisionKind::Resumed => "resumed",
            DecisionKind::Superseded => "superseded",
            DecisionKind::Stalled => "stalled",
            DecisionKind::Waiting => "waiting",
            DecisionKind::Approved => "approved",
            DecisionKind::Baking => "baking",
            DecisionKind::Reverted => "reverted",
        }
    }

    /// Every kind of decision.
    pub const ALL: [DecisionKind; 15] = [
        DecisionKind::Started,
        DecisionKind::Advanced,
        DecisionKind::Promoting,
        DecisionKind::Promoted,
        DecisionKind::RolledBack,
        DecisionKind::Aborted,
        DecisionKind::RollbackFinished,
        DecisionKind::Paused,
        DecisionKind::Resumed,
        DecisionKind::Superseded,
        DecisionKind::Stalled,
        DecisionKind::Waiting,
        DecisionKind::Approved,
        DecisionKind::Baking,
        DecisionKind::Reverted,
    ];
}

impl fmt::Display for DecisionKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // `pad`, so that widths in format strings line decisions up.
        f.pad(self.name())
    }
}

/// A decision that changed the rollout, with its evidence.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct Decision {
    /// Its place in the rollout's sequence of decisions, from 0: with the rollout and
    /// revision, the key its notification is deduplicated by.
    #[serde(default)]
    pub seq: u64,
    /// The revision it was about.
    #[serde(default)]
    pub revision: String,
    /// When.
    pub at: Timestamp,
    /// What was decided.
    pub action: DecisionKind,
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
    /// Seconds of the measurement window its evidence covers, when it rests on an
    /// interval: with the plan and the arms, this renders the exact query of each arm
    /// (`source::batch::arm_query`), so the state need not carry the queries' text.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub window_seconds: Option<u64>,
}

/// A one-line summary of an analysed interval, kept in the rollout's state for the most
/// recent intervals only. The full analysis is in the transition's `interval` and the
/// daemon's timeline.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct IntervalSummary {
    /// End of the interval.
    pub at: Timestamp,
    /// Step index.
    pub step: usize,
    /// Canary weight during the interval.
    pub weight: u8,
    /// One letter per metric, in the plan's order: `p` pass, `f` fail, `F` conclusive
    /// fail, `i` inconclusive, `w` insufficient (waiting for traffic).
    pub outcomes: String,
    /// Triggers met.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub triggers: Vec<String>,
}

/// Recent intervals summarised in the state.
pub const RECENT_INTERVALS: usize = 6;

/// Decisions kept in the state. Only operator pauses and resumes can repeat without
/// bound; past this many, the oldest of them is dropped (its `seq` shows the gap).
pub const DECISION_LIMIT: usize = 48;

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
    /// When the last interval ended (or traffic started): the next interval's
    /// observations cover the time since.
    #[serde(default)]
    pub last_evaluation: Option<Timestamp>,
    /// When the next interval is due; `None` when nothing is to be analysed.
    #[serde(default)]
    pub next_evaluation: Option<Timestamp>,
    /// Why it is rolling back (or rolled back), once decided.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rollback: Option<RollbackReason>,
    /// Intervals analysed so far.
    #[serde(default)]
    pub intervals_analysed: u64,
    /// The most recent intervals (at most `RECENT_INTERVALS`), oldest first.
    #[serde(default)]
    pub recent: Vec<IntervalSummary>,
    /// Decisions made so far (the next decision's `seq`).
    #[serde(default)]
    pub decisions_made: u64,
    /// The decisions, with their evidence (at most `DECISION_LIMIT`).
    #[serde(default)]
    pub decisions: Vec<Decision>,
    /// Since when it waits at the gate of its step, while `Waiting`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub waiting_since: Option<Timestamp>,
    /// The gate webhook's last answer, while `Waiting` at a webhook gate.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gate_answer: Option<String>,
    /// When the bake ends, once it began.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bake_until: Option<Timestamp>,
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
            last_evaluation: None,
            next_evaluation: None,
            rollback: None,
            intervals_analysed: 0,
            recent: Vec::new(),
            decisions_made: 0,
            decisions: Vec::new(),
            waiting_since: None,
            gate_answer: None,
            bake_until: None,
        }
    }

    /// Whether a rollback (not an operator's abort) was decided.
    pub fn rolled_back(&self) -> bool {
        self.rollback.as_ref().is_some_and(|r| *r != RollbackReason::Aborted)
    }

    /// Whether it was reverted: rolled back during its bake, after every step passed.
    pub fn reverted(&self) -> bool {
        self.decisions.iter().any(|d| d.action == DecisionKind::Reverted && d.revision == self.revision)
    }

    /// The gate it waits at, while `Waiting`.
    pub fn gate(&self) -> Option<&crate::engine::plan::Gate> {
        (self.phase == Phase::Waiting).then(|| self.plan.gates.get(&self.step)).flatten()
    }

    /// When the next interval is to be analysed, from the persisted state alone.
    pub fn next_evaluation(&self) -> Option<Timestamp> {
        match self.phase {
            Phase::Progressing | Phase::Paused | Phase::Waiting | Phase::Baking => self.next_evaluation,
            _ => None,
        }
    }

    /// The world the platform must be brought to, from the state alone.
    pub fn desired(&self) -> Desired {
        match self.phase {
            Phase::Pending => Desired { weight: 0, canary: Scale::Up, promote: false },
            Phase::Progressing | Phase::Paused | Phase::Waiting | Phase::Baking => {
                Desired { weight: self.weight, canary: Scale::Up, promote: false }
            }
            Phase::Promoting | Phase::Succeeded => Desired { weight: 100, canary: Scale::Up, promote: true },
            Phase::RollingBack | Phase::RolledBack | Phase::Aborted => {
                Desired { weight: 0, canary: Scale::Down, promote: false }
            }
        }
    }
}

/// Whether the canary's pods should run.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq)]
#[serde(rename_all = "kebab-case")]
pub enum Scale {
    /// Running, taking its share of traffic.
    Up,
    /// Scaled to zero: rolled back.
    Down,
}

/// What the platform should look like for a rollout: executors compare this with what
/// they last applied and act on the difference, so repeating them is harmless.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct Desired {
    /// Canary weight, percent.
    pub weight: u8,
    /// Canary pods up or down.
    pub canary: Scale,
    /// Whether the canary is to become the stable version.
    pub promote: bool,
}
