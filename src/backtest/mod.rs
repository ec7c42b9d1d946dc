//! `canaryd backtest`: runs a policy through the same engine over recorded data, and
//! reports the timeline and the outcome the policy would have reached.

mod recording;
mod report;

use serde::{Deserialize, Serialize};

pub use recording::{RecordedArm, RecordedInterval, RecordedWorkload, Recording, RecordingError};
pub use report::render_text;

use jiff::Timestamp;

use crate::engine::{Input, IntervalObservations, IntervalRecord, Phase, Plan, Rollout, RolloutId, step};
use crate::record::DeploymentRecord;
use crate::source::batch::{Arms, Target};
use crate::source::prometheus::{PrometheusSource, RangeError};

/// How a backtest ended.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq)]
#[serde(rename_all = "kebab-case")]
pub enum BacktestOutcome {
    /// The policy would have promoted the canary.
    Promoted,
    /// The policy would have rolled it back.
    RolledBack,
    /// The data ended before a decision.
    Unfinished,
}

/// The result of a backtest: outcome, deployment record and the interval timeline.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct BacktestResult {
    /// How it ended.
    pub outcome: BacktestOutcome,
    /// The deployment record, with the evidence of every decision.
    pub record: DeploymentRecord,
    /// Every analysed interval, in order.
    pub timeline: Vec<IntervalRecord>,
}

/// Runs `plan` over `recording` (read from `source`, named in the evidence).
pub fn run(plan: &Plan, recording: &Recording, source: &str) -> BacktestResult {
    let id = recording.workload.as_ref().map_or_else(
        || RolloutId { namespace: "backtest".into(), name: "workload".into() },
        |w| RolloutId { namespace: w.namespace.clone(), name: w.name.clone() },
    );
    let revision = recording.revision.clone().unwrap_or_else(|| "recorded".into());
    let intervals = (0..recording.intervals.len())
        .map(|i| (recording.interval_end(i, plan.interval), recording.observations(i, plan, source)));
    replay(plan, id, &revision, recording.start, intervals)
}

/// Drives the engine from `start` over observed intervals `(end time, observations)`,
/// confirming promotions at once, until the rollout ends or the data does.
pub fn replay(
    plan: &Plan,
    id: RolloutId,
    revision: &str,
    start: Timestamp,
    intervals: impl IntoIterator<Item = (Timestamp, IntervalObservations)>,
) -> BacktestResult {
    let mut rollout = Rollout::new(id, revision, plan.clone());
    let feed = |rollout: &mut Rollout, input: Input, at| match step(rollout, &input, at) {
        Ok(t) => *rollout = t.rollout,
        // Only valid inputs are fed; a refusal ends the replay where it stands.
        Err(e) => tracing::warn!(error = %e, "backtest input refused"),
    };
    feed(&mut rollout, Input::Start, start);
    for (at, observations) in intervals {
        if rollout.phase.is_terminal() {
            break;
        }
        feed(&mut rollout, Input::Interval(observations), at);
        if rollout.phase == Phase::Promoting {
            // The backtest's platform promotes at once.
            feed(&mut rollout, Input::PromotionDone, at);
        }
    }
    let outcome = match rollout.phase {
        Phase::Succeeded => BacktestOutcome::Promoted,
        Phase::RolledBack | Phase::Aborted => BacktestOutcome::RolledBack,
        _ => BacktestOutcome::Unfinished,
    };
    BacktestResult { outcome, record: DeploymentRecord::of(&rollout), timeline: rollout.intervals }
}

/// Runs `plan` over what Prometheus recorded for `id` between `from` and `to`, with the
/// same batched queries the daemon uses, as range queries.
pub async fn from_prometheus(
    source: &PrometheusSource,
    plan: &Plan,
    id: &RolloutId,
    arms: &Arms,
    from: Timestamp,
    to: Timestamp,
) -> Result<BacktestResult, RangeError> {
    let targets = Target::for_plan(plan, id, arms);
    let first = from.checked_add(plan.interval).unwrap_or(Timestamp::MAX);
    let by_time = source.observe_range(&targets, first, to, plan.interval).await?;
    let intervals = by_time.into_iter().filter_map(|(t, mut observed)| {
        let at = Timestamp::from_second(t).ok()?;
        let metrics = plan
            .metrics
            .iter()
            .filter_map(|m| observed.remove(&(id.clone(), m.name.clone())).map(|o| (m.name.clone(), o)))
            .collect();
        Some((at, IntervalObservations { metrics, ..IntervalObservations::default() }))
    });
    Ok(replay(plan, id.clone(), "recorded", from, intervals))
}
