//! What the engine is told: observations of an interval, operator commands, and
//! confirmations from the platform.

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};

use crate::judge::Observation;

/// An operator command.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq)]
#[serde(rename_all = "kebab-case")]
pub enum Command {
    /// Skip the remaining analysis and promote.
    Promote,
    /// Stop and roll back.
    Abort,
    /// Hold at the current step.
    Pause,
    /// Continue after a pause.
    Resume,
    /// Open the gate the rollout waits at.
    Approve,
    /// Restore the previous revision, during the bake.
    Revert,
}

impl Command {
    /// The verb, as the API and the CLI spell it.
    pub fn verb(self) -> &'static str {
        match self {
            Command::Promote => "promote",
            Command::Abort => "abort",
            Command::Pause => "pause",
            Command::Resume => "resume",
            Command::Approve => "approve",
            Command::Revert => "revert",
        }
    }

    /// Every command.
    pub const ALL: [Command; 6] = [
        Command::Promote,
        Command::Abort,
        Command::Pause,
        Command::Resume,
        Command::Approve,
        Command::Revert,
    ];

    /// Why the command cannot be taken in `phase`; `None` if it can.
    pub fn refusal(self, phase: crate::engine::Phase) -> Option<String> {
        use crate::engine::Phase;
        let allowed: &[Phase] = match self {
            Command::Promote => &[Phase::Progressing, Phase::Paused, Phase::Waiting, Phase::Baking],
            Command::Abort => &[Phase::Pending, Phase::Progressing, Phase::Paused, Phase::Waiting],
            Command::Pause => &[Phase::Progressing],
            Command::Resume => &[Phase::Paused],
            Command::Approve => &[Phase::Waiting],
            Command::Revert => &[Phase::Baking],
        };
        if allowed.contains(&phase) {
            return None;
        }
        match (self, phase) {
            (Command::Revert, Phase::Promoting | Phase::Succeeded) => {
                return Some(format!(
                    "cannot revert a rollout that is {}: its bake window is over and the previous revision was released; roll forward with a new revision",
                    phase.name()
                ));
            }
            (Command::Revert, Phase::Pending | Phase::Progressing | Phase::Paused | Phase::Waiting) => {
                return Some(format!(
                    "cannot revert a rollout that is {}: only when baking, after promotion; before it, abort rolls back",
                    phase.name()
                ));
            }
            (Command::Abort, Phase::Baking) => {
                return Some(
                    "cannot abort a rollout that is baking: every step passed; revert restores the previous revision"
                        .to_string(),
                );
            }
            (Command::Approve, Phase::Paused) => {
                return Some(
                    "cannot approve a rollout that is paused: resume it first; its gate can be approved once its step passed its analysis"
                        .to_string(),
                );
            }
            (Command::Approve, Phase::Pending | Phase::Progressing) => {
                return Some(format!(
                    "cannot approve a rollout that is {}: it waits at no gate yet; a gate can be approved once its step passed its analysis",
                    phase.name()
                ));
            }
            _ => {}
        }
        let names: Vec<&str> = allowed.iter().map(|p| p.name()).collect();
        Some(format!(
            "cannot {} a rollout that is {}: only when {}",
            self.verb(),
            phase.name(),
            names.join(" or ")
        ))
    }
}

/// Everything observed about a rollout during one interval.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
#[serde(rename_all = "camelCase")]
pub struct IntervalObservations {
    /// Measurements per metric name. A metric missing here has no data.
    #[serde(default)]
    pub metrics: BTreeMap<String, Observation>,
    /// Alertmanager alerts firing for the workload.
    #[serde(default)]
    pub firing_alerts: BTreeSet<String>,
    /// Health-check results this interval, per trigger name: healthy or not.
    #[serde(default)]
    pub health: BTreeMap<String, bool>,
    /// The gate webhook's answer, when the rollout waits at a webhook gate.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gate: Option<GateAnswer>,
}

/// What a gate webhook answered.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct GateAnswer {
    /// Whether it answered 2xx: the gate opens.
    pub open: bool,
    /// What it answered (`answered 200 OK`, `answered 403 Forbidden`, `no answer within 5s`).
    pub detail: String,
}

/// One input to the engine.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "kebab-case", tag = "input")]
pub enum Input {
    /// Start moving traffic.
    Start,
    /// An interval ended; judge it.
    Interval(IntervalObservations),
    /// An operator's command.
    Command {
        /// The command.
        command: Command,
        /// Who gave it (recorded).
        by: String,
    },
    /// The platform finished promoting.
    PromotionDone,
    /// The platform took the canary out (traffic at 0, scaled down).
    RollbackDone,
    /// A new revision replaced the canary while the rollout ran.
    Superseded {
        /// The new revision.
        revision: String,
    },
    /// An Alertmanager alert fired for the workload. If a trigger of the plan names it,
    /// the rollout rolls back at once; otherwise nothing changes.
    Alert {
        /// The alert's name (its `alertname` label).
        alert: String,
        /// What the alert said (its summary or description), for the record.
        detail: String,
    },
    /// The workload is gone (deleted, or no longer managed): a rollout still running
    /// rolls back, so that routing returns to the stable version; one already leaving or
    /// finished is left as it is.
    WorkloadGone {
        /// What the platform saw, e.g. `Deployment shop/web deleted`.
        detail: String,
    },
    /// The canary cannot run: the platform gave up bringing it up (a Kubernetes
    /// Deployment past its `progressDeadlineSeconds`). A rollout still running rolls
    /// back; one already leaving or finished is left as it is.
    CanaryFailed {
        /// What the platform saw, e.g. `Deployment shop/web: progress deadline exceeded`.
        detail: String,
    },
    /// The platform failed a call again and again (the daemon gives up retrying in
    /// place): a failed promotion rolls back, a weight that cannot be set pauses.
    PlatformFailed {
        /// The call, e.g. `set weight 50%` or `promote v2`.
        call: String,
        /// Why it failed, as the platform said.
        error: String,
    },
}
