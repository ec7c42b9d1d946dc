//! The deployment record: what a finished (or running) rollout leaves for audit — who,
//! what, when, the outcome, how far it got, and the evidence of every decision.

use jiff::Timestamp;
use serde::{Deserialize, Serialize};

use crate::engine::{Decision, Phase, Rollout, RolloutId};

/// A rollout's record, as served by the API and printed by `canaryd backtest`.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct DeploymentRecord {
    /// `namespace/name@revision`.
    pub id: String,
    /// The workload.
    pub workload: RolloutId,
    /// The canary's revision.
    pub revision: String,
    /// The policy that ran it.
    pub policy: String,
    /// When traffic first moved.
    pub started_at: Option<Timestamp>,
    /// When it ended.
    pub finished_at: Option<Timestamp>,
    /// Final (or current) phase.
    pub outcome: Phase,
    /// Highest step reached, counting from 1 (0: traffic never moved).
    pub step_reached: usize,
    /// Highest canary weight reached before the end.
    pub max_weight: u8,
    /// Every decision, with its evidence.
    pub decisions: Vec<Decision>,
}

impl DeploymentRecord {
    /// The record of `rollout` as it stands.
    pub fn of(rollout: &Rollout) -> DeploymentRecord {
        let max_weight =
            rollout.decisions.iter().map(|d| d.weight).chain([rollout.weight]).max().unwrap_or(0);
        let highest = rollout.intervals.iter().map(|i| i.step).chain([rollout.step]).max().unwrap_or(0);
        let step_reached = if rollout.started_at.is_some() { highest + 1 } else { 0 };
        DeploymentRecord {
            id: format!("{}@{}", rollout.id, rollout.revision),
            workload: rollout.id.clone(),
            revision: rollout.revision.clone(),
            policy: rollout.plan.policy.clone(),
            started_at: rollout.started_at,
            finished_at: rollout.finished_at,
            outcome: rollout.phase,
            step_reached,
            max_weight,
            decisions: rollout.decisions.clone(),
        }
    }
}
