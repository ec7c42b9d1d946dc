//! What people are told of a rollout's decisions: each decision's notification is
//! derived from the decision and the rollout, so a replay after a crash tells the same.

use serde::{Deserialize, Serialize};

use crate::engine::plan::{Severity, SlackRoute, WebhookRoute};
use crate::engine::rollout::{Decision, DecisionKind, Rollout, TriggerHit};
use crate::judge::Verdict;

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
    /// Intervals in a row had no usable data; the rollout rolls back if it goes on.
    Stalled,
    /// Holding at a gate: waiting for approval, or for the gate webhook.
    Waiting,
    /// The gate opened.
    Approved,
    /// The bake at 100% began, the previous revision kept.
    Baking,
    /// Reverted during the bake: the previous revision serves all traffic again.
    Reverted,
}

impl EventKind {
    /// The event of a decision; `None` for decisions nobody needs to hear about (the
    /// platform finishing a rollback already announced).
    pub fn of_decision(kind: DecisionKind) -> Option<EventKind> {
        Some(match kind {
            DecisionKind::Started => EventKind::Started,
            DecisionKind::Advanced => EventKind::Advanced,
            DecisionKind::Promoting => EventKind::Promoting,
            DecisionKind::Promoted => EventKind::Promoted,
            DecisionKind::RolledBack => EventKind::RolledBack,
            DecisionKind::Aborted => EventKind::Aborted,
            DecisionKind::Paused => EventKind::Paused,
            DecisionKind::Resumed => EventKind::Resumed,
            DecisionKind::Superseded => EventKind::Superseded,
            DecisionKind::Stalled => EventKind::Stalled,
            DecisionKind::Waiting => EventKind::Waiting,
            DecisionKind::Approved => EventKind::Approved,
            DecisionKind::Baking => EventKind::Baking,
            DecisionKind::Reverted => EventKind::Reverted,
            DecisionKind::RollbackFinished => return None,
        })
    }

    /// How bad it is.
    pub fn severity(self) -> Severity {
        match self {
            EventKind::RolledBack | EventKind::Aborted | EventKind::Reverted => Severity::Critical,
            EventKind::Paused | EventKind::Stalled | EventKind::Waiting => Severity::Warning,
            _ => Severity::Info,
        }
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
    /// How bad it is.
    #[serde(default)]
    pub severity: Severity,
    /// The policy that runs the rollout.
    #[serde(default)]
    pub policy: String,
    /// Step (from 1) and canary weight after the decision.
    #[serde(default)]
    pub step: usize,
    /// Canary weight after the decision.
    #[serde(default)]
    pub weight: u8,
    /// Why, in one sentence.
    #[serde(default)]
    pub reason: String,
    /// One line.
    pub summary: String,
    /// The verdicts the decision rested on.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub evidence: Vec<Verdict>,
    /// The triggers it rested on.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub triggers: Vec<TriggerHit>,
    /// The policy's Slack target, if it has one (not sent to webhooks).
    #[serde(default, skip_serializing)]
    pub slack: Option<SlackRoute>,
    /// The policy's own JSON webhook, if it has one (not sent: its URL is a secret).
    #[serde(default, skip_serializing)]
    pub webhook: Option<WebhookRoute>,
}

impl Notification {
    /// The notification of `decision` of `rollout`, if the decision is one to tell.
    pub fn of(rollout: &Rollout, decision: &Decision) -> Option<Notification> {
        let event = EventKind::of_decision(decision.action)?;
        let verb = decision.action.name().replace('-', " ");
        let id = &rollout.id;
        Some(Notification {
            key: NotificationKey {
                rollout: id.to_string(),
                revision: decision.revision.clone(),
                decision: decision.seq,
            },
            event,
            severity: event.severity(),
            policy: rollout.plan.policy.clone(),
            step: step_of(rollout, decision.weight),
            weight: decision.weight,
            reason: decision.reason.clone(),
            summary: format!(
                "{id} revision {}: {verb}, canary at {}%: {}",
                decision.revision, decision.weight, decision.reason
            ),
            evidence: decision.evidence.clone(),
            triggers: decision.triggers.clone(),
            slack: rollout.plan.notify.slack.clone(),
            webhook: rollout.plan.notify.webhook.clone(),
        })
    }
}

/// The step (from 1) whose weight is `weight`; the current one for a weight of 0.
fn step_of(rollout: &Rollout, weight: u8) -> usize {
    rollout.plan.steps.iter().position(|w| *w == weight).unwrap_or(rollout.step) + 1
}
