//! The deployment record: what a finished (or running) rollout leaves for audit — who,
//! what, when, the outcome, how far it got, the evidence of every decision, and the
//! timeline of its intervals.

use std::collections::VecDeque;

use jiff::Timestamp;
use serde::{Deserialize, Serialize};

use crate::engine::{Decision, IntervalRecord, Phase, Rollout, RolloutId};
use crate::judge::Verdict;

/// One interval of a rollout's timeline: a compact row of numbers, kept outside the
/// rollout's hot state.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct TimelinePoint {
    /// End of the interval.
    pub at: Timestamp,
    /// Step index.
    pub step: usize,
    /// Canary weight.
    pub weight: u8,
    /// One letter per metric in the plan's order (see `IntervalSummary::outcomes`).
    pub outcomes: String,
    /// Canary and baseline value per metric, in the plan's order.
    pub values: Vec<(Option<f64>, Option<f64>)>,
    /// Triggers met.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub triggers: Vec<String>,
}

impl TimelinePoint {
    /// The compact row of an interval's full analysis.
    pub fn of(interval: &IntervalRecord) -> TimelinePoint {
        TimelinePoint {
            at: interval.at,
            step: interval.step,
            weight: interval.weight,
            outcomes: interval.verdicts.iter().map(Verdict::letter).collect(),
            values: interval
                .verdicts
                .iter()
                .map(|v| (v.evidence.canary.value, v.evidence.baseline.value))
                .collect(),
            triggers: interval.triggers.iter().map(|h| h.trigger.clone()).collect(),
        }
    }
}

/// A rollout's interval timeline, bounded: past `limit` points the oldest are dropped
/// and counted.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
#[serde(rename_all = "camelCase")]
pub struct Timeline {
    /// The most recent points, oldest first.
    pub points: VecDeque<TimelinePoint>,
    /// Points dropped from the front.
    #[serde(default)]
    pub dropped: u64,
}

/// Points a timeline keeps: a day of 30 s intervals.
pub const TIMELINE_LIMIT: usize = 2_880;

impl Timeline {
    /// Appends a point, dropping the oldest past [`TIMELINE_LIMIT`].
    pub fn push(&mut self, point: TimelinePoint) {
        self.points.push_back(point);
        while self.points.len() > TIMELINE_LIMIT {
            self.points.pop_front();
            self.dropped += 1;
        }
    }
}

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
    /// Whether it was reverted: rolled back during its bake, after every step passed.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub reverted: bool,
    /// Highest step reached, counting from 1 (0: traffic never moved).
    pub step_reached: usize,
    /// Highest canary weight reached before the end.
    pub max_weight: u8,
    /// Every decision, with its evidence.
    pub decisions: Vec<Decision>,
    /// Metric names, in the order of the timeline's outcomes and values.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub metrics: Vec<String>,
    /// The interval timeline.
    #[serde(default, skip_serializing_if = "Timeline::is_empty")]
    pub timeline: Timeline,
}

impl Timeline {
    /// Whether it has no points.
    pub fn is_empty(&self) -> bool {
        self.points.is_empty() && self.dropped == 0
    }
}

impl DeploymentRecord {
    /// The outcome in one word: the final phase, or `reverted` for a rollback during the
    /// bake, after every step passed.
    pub fn outcome_word(&self) -> &'static str {
        if self.reverted { "reverted" } else { self.outcome.name() }
    }

    /// The reason of the last decision that rested on evidence or triggers: why it ended
    /// as it did ("" when none did).
    pub fn deciding_reason(&self) -> &str {
        let last = self.decisions.iter().rev().find(|d| !d.evidence.is_empty() || !d.triggers.is_empty());
        last.map_or("", |d| d.reason.as_str())
    }

    /// The record of `rollout` as it stands, with its timeline.
    pub fn of(rollout: &Rollout, timeline: Timeline) -> DeploymentRecord {
        let max_weight =
            rollout.decisions.iter().map(|d| d.weight).chain([rollout.weight]).max().unwrap_or(0);
        // Steps only move forward (a superseded rollout restarts, and its record says so).
        let highest = timeline.points.iter().map(|p| p.step).chain([rollout.step]).max().unwrap_or(0);
        let step_reached = if rollout.started_at.is_some() { highest + 1 } else { 0 };
        DeploymentRecord {
            id: format!("{}@{}", rollout.id, rollout.revision),
            workload: rollout.id.clone(),
            revision: rollout.revision.clone(),
            policy: rollout.plan.policy.clone(),
            started_at: rollout.started_at,
            finished_at: rollout.finished_at,
            outcome: rollout.phase,
            reverted: rollout.reverted(),
            step_reached,
            max_weight,
            decisions: rollout.decisions.clone(),
            metrics: rollout.plan.metrics.iter().map(|m| m.name.clone()).collect(),
            timeline,
        }
    }
}
