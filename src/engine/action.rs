//! What the engine asks the outside world to do. Executors (traffic routers, scalers,
//! notifiers, the scheduler) carry these out; the engine never does I/O itself.

use serde::{Deserialize, Serialize};

use crate::engine::rollout::{Decision, RolloutId, TriggerHit};
use crate::judge::Verdict;

/// Why a rollout was rolled back.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "kebab-case", tag = "kind")]
pub enum RollbackReason {
    /// A trigger was met.
    Trigger {
        /// Triggers met.
        triggers: Vec<String>,
    },
    /// A sequential test found a regression (conclusive).
    Regression {
        /// Metrics that regressed.
        metrics: Vec<String>,
    },
    /// Failed checks reached the failure limit.
    FailureLimit {
        /// Failed checks.
        failed_checks: u32,
    },
    /// Inconclusive intervals in a row reached the limit.
    InconclusiveLimit {
        /// Intervals in a row.
        intervals: u32,
    },
    /// A step waited its whole progress deadline without enough traffic to judge.
    NotEnoughTraffic {
        /// Seconds the step waited.
        waited_seconds: u64,
    },
    /// An operator aborted the rollout.
    Aborted,
    /// The platform could not carry out a call (e.g. the promote hook failed).
    PlatformFailed {
        /// The call, e.g. `promote v2`.
        call: String,
        /// Why it failed, as the platform said.
        error: String,
    },
}

/// Events worth telling people about.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq)]
#[serde(rename_all = "kebab-case")]
pub enum EventKind {
    /// Traffic started moving.
    Started,
    /// Moved to the next step.
    Advanced,
    /// Promotion started.
    Promoting,
    /// Promotion finished.
    Promoted,
    /// Rolled back.
    RolledBack,
    /// Aborted by an operator.
    Aborted,
    /// Paused by an operator.
    Paused,
    /// Resumed by an operator.
    Resumed,
    /// A new revision replaced the canary mid-rollout; the analysis restarted.
    Superseded,
}

impl EventKind {
    /// The event of a decision, by the decision's action; `None` for decisions nobody
    /// needs to hear about (the platform finishing a rollback already announced).
    pub fn of_decision(action: &str) -> Option<EventKind> {
        Some(match action {
            "started" => EventKind::Started,
            "advanced" => EventKind::Advanced,
            "promoting" => EventKind::Promoting,
            "promoted" => EventKind::Promoted,
            "rolled-back" => EventKind::RolledBack,
            "aborted" => EventKind::Aborted,
            "paused" => EventKind::Paused,
            "resumed" => EventKind::Resumed,
            "superseded" => EventKind::Superseded,
            _ => return None,
        })
    }
}

/// What identifies a notification: a replay after a crash carries the same key, so a
/// receiver (and the outbox) can drop the repeat.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
#[serde(rename_all = "camelCase")]
pub struct NotificationKey {
    /// `namespace/name` of the rollout.
    pub rollout: String,
    /// The revision the decision was about.
    pub revision: String,
    /// The decision's `seq`.
    pub decision: u64,
}

impl std::fmt::Display for NotificationKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}@{}#{}", self.rollout, self.revision, self.decision)
    }
}

/// A message about a decision, with the evidence it rested on.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct Notification {
    /// Deduplication key.
    pub key: NotificationKey,
    /// What happened.
    pub event: EventKind,
    /// One line.
    pub summary: String,
    /// The verdicts the decision rested on.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub evidence: Vec<Verdict>,
    /// The triggers it rested on.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub triggers: Vec<TriggerHit>,
}

impl Notification {
    /// The notification of `decision` of `rollout`, if the decision is one to tell.
    pub fn of(rollout: &RolloutId, decision: &Decision) -> Option<Notification> {
        let event = EventKind::of_decision(&decision.action)?;
        let verb = decision.action.replace('-', " ");
        Some(Notification {
            key: NotificationKey {
                rollout: rollout.to_string(),
                revision: decision.revision.clone(),
                decision: decision.seq,
            },
            event,
            summary: format!(
                "{rollout} revision {}: {verb}, canary at {}%: {}",
                decision.revision, decision.weight, decision.reason
            ),
            evidence: decision.evidence.clone(),
            triggers: decision.triggers.clone(),
        })
    }
}

/// An instruction to the executors.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "kebab-case", tag = "action")]
pub enum Action {
    /// Route this share of traffic (percent) to the canary.
    SetWeight {
        /// Canary weight.
        canary: u8,
    },
    /// Make the canary the new stable version.
    Promote,
    /// Take the canary out: traffic is already at 0; scale it down.
    RollBack {
        /// Why.
        reason: RollbackReason,
        /// The verdicts of the deciding interval.
        evidence: Vec<Verdict>,
        /// Triggers met.
        triggers: Vec<TriggerHit>,
    },
    /// Tell people.
    Notify(Notification),
}
