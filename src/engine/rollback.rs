//! Why a rollout was rolled back: the reason a rollback decision carries, kept in the
//! rollout's state and shown in records, notifications and metrics.

use serde::{Deserialize, Serialize};

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
    /// A gate stayed closed for the whole gate timeout.
    GateTimeout {
        /// The gate's kind (`approval`, `webhook`).
        gate: String,
        /// Seconds the rollout waited at it.
        waited_seconds: u64,
    },
    /// An operator reverted the rollout during its bake.
    Reverted,
    /// The workload is gone (deleted, or no longer managed).
    WorkloadGone {
        /// What the platform saw.
        detail: String,
    },
    /// The canary never became ready (its Deployment's progress deadline passed).
    CanaryFailed {
        /// What the platform saw.
        detail: String,
    },
    /// The platform could not carry out a call (e.g. the promote hook failed).
    PlatformFailed {
        /// The call, e.g. `promote v2`.
        call: String,
        /// Why it failed, as the platform said.
        error: String,
    },
}

impl RollbackReason {
    /// A short label, as in `canaryd_rollbacks_total{reason}`.
    pub fn label(&self) -> &'static str {
        match self {
            RollbackReason::Trigger { .. } => "trigger",
            RollbackReason::Regression { .. } => "regression",
            RollbackReason::FailureLimit { .. } => "failure-limit",
            RollbackReason::InconclusiveLimit { .. } => "inconclusive-limit",
            RollbackReason::NotEnoughTraffic { .. } => "not-enough-traffic",
            RollbackReason::Aborted => "aborted",
            RollbackReason::GateTimeout { .. } => "gate-timeout",
            RollbackReason::Reverted => "reverted",
            RollbackReason::WorkloadGone { .. } => "workload-gone",
            RollbackReason::CanaryFailed { .. } => "canary-failed",
            RollbackReason::PlatformFailed { .. } => "platform-failed",
        }
    }
}
