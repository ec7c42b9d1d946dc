//! What the engine asks the outside world to do. Executors (traffic routers, scalers,
//! notifiers, the scheduler) carry these out; the engine never does I/O itself.

use jiff::Timestamp;
use serde::{Deserialize, Serialize};

use crate::engine::rollout::TriggerHit;
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
    Notify {
        /// What happened.
        event: EventKind,
        /// One line.
        summary: String,
    },
    /// Evaluate again at this time.
    ScheduleEvaluation {
        /// When.
        at: Timestamp,
    },
}
