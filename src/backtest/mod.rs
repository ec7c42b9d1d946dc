//! `canaryd backtest`: runs a policy through the same engine over recorded data, and
//! reports the timeline and the outcome the policy would have reached.

mod recording;
pub mod report;

use serde::{Deserialize, Serialize};

pub use recording::{RecordedArm, RecordedInterval, RecordedWorkload, Recording, RecordingError};

use jiff::Timestamp;

use crate::engine::Arms;
use crate::engine::{
    Command, Input, IntervalObservations, IntervalRecord, Phase, Plan, Rollout, RolloutId, step,
};
use crate::record::{DeploymentRecord, Timeline, TimelinePoint};
use crate::source::batch::Target;
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
    /// Every analysed interval, in order, however many there are.
    pub timeline: Vec<TimelineEntry>,
    /// How its gates were opened.
    #[serde(default)]
    pub gates: Gates,
}

/// One analysed interval of a backtest, with the traffic split the data was recorded at.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct TimelineEntry {
    /// The engine's analysis of the interval (`weight` is the engine's canary weight).
    #[serde(flatten)]
    pub interval: IntervalRecord,
    /// The canary weight the data was recorded at, when the recording says.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub recorded_weight: Option<u8>,
    /// The canary's measured share of the interval's requests, in percent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub measured_share: Option<f64>,
    /// Why this interval's data does not match the engine's weight, if it does not: the
    /// verdicts from here on are not quite what this policy would have seen.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mismatch: Option<String>,
}

/// What the backtest's operator does at a gate: a recording holds no approvals and no
/// gate webhook's answers, so the replay is told how its gates open.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Default)]
#[serde(rename_all = "kebab-case")]
pub enum Gates {
    /// Every gate, approval or webhook, is approved (by `backtest`) as soon as the
    /// rollout waits at it: the replay shows what the analysis alone would decide.
    #[default]
    Approve,
    /// No gate ever opens: the rollout waits, analysing on, and rolls back at the gate
    /// timeout if the data lasts that long.
    Never,
}

impl Gates {
    /// Who approves the gates a backtest opens, as its decisions name them.
    pub const APPROVER: &'static str = "backtest";
}

/// One interval fed to a backtest: its end, the observations, and the canary weight the
/// data was recorded at (if known).
pub type ReplayedInterval = (Timestamp, IntervalObservations, Option<u8>);

/// Runs `plan` over `recording` (read from `source`, named in the evidence), approving
/// its gates as soon as it waits at one.
pub fn run(plan: &Plan, recording: &Recording, source: &str) -> BacktestResult {
    run_gated(plan, recording, source, Gates::Approve)
}

/// Runs `plan` over `recording` (read from `source`, named in the evidence), its gates
/// opened as `gates` says.
pub fn run_gated(plan: &Plan, recording: &Recording, source: &str, gates: Gates) -> BacktestResult {
    let id = recording.workload.as_ref().map_or_else(
        || RolloutId { namespace: "backtest".into(), name: "workload".into() },
        |w| RolloutId { namespace: w.namespace.clone(), name: w.name.clone() },
    );
    let revision = recording.revision.clone().unwrap_or_else(|| "recorded".into());
    let intervals = (0..recording.intervals.len()).map(|i| {
        let weight = recording.intervals[i].weight;
        (recording.interval_end(i, plan.interval), recording.observations(i, plan, source), weight)
    });
    replay(plan, id, &revision, recording.start, intervals, gates)
}

/// Drives the engine from `start` over observed intervals, confirming promotions at once
/// and opening gates as `gates` says, until the rollout ends or the data does. The
/// timeline keeps every interval (the rollout's own state keeps only a bounded summary).
pub fn replay(
    plan: &Plan,
    id: RolloutId,
    revision: &str,
    start: Timestamp,
    intervals: impl IntoIterator<Item = ReplayedInterval>,
    gates: Gates,
) -> BacktestResult {
    let mut timeline = Vec::new();
    let mut points = Timeline::default();
    let mut rollout = Rollout::new(id, revision, plan.clone());
    let feed = |rollout: &mut Rollout, input: Input, at| match step(rollout, &input, at) {
        Ok(t) => {
            *rollout = t.rollout;
            t.interval
        }
        // Only valid inputs are fed; a refusal ends the replay where it stands.
        Err(e) => {
            tracing::warn!(error = %e, "backtest input refused");
            None
        }
    };
    feed(&mut rollout, Input::Start, start);
    for (at, observations, recorded_weight) in intervals {
        if rollout.phase.is_terminal() {
            break;
        }
        let measured = measured_share(&observations);
        if let Some(record) = feed(&mut rollout, Input::Interval(observations), at) {
            points.push(TimelinePoint::of(&record));
            timeline.push(TimelineEntry {
                mismatch: mismatch(record.weight, recorded_weight, measured),
                recorded_weight,
                measured_share: measured.map(|(share, _)| share * 100.0),
                interval: record,
            });
        }
        // The backtest's operator opens a gate at once, when told to: the interval that
        // brought the rollout to it is the one it is approved on.
        if rollout.phase == Phase::Waiting && gates == Gates::Approve {
            let approve = Input::Command { command: Command::Approve, by: Gates::APPROVER.into() };
            feed(&mut rollout, approve, at);
        }
        // The backtest's platform carries out promotions and rollbacks at once.
        match rollout.phase {
            Phase::Promoting => feed(&mut rollout, Input::PromotionDone, at),
            Phase::RollingBack => feed(&mut rollout, Input::RollbackDone, at),
            _ => None,
        };
    }
    let outcome = match rollout.phase {
        Phase::Succeeded => BacktestOutcome::Promoted,
        Phase::RolledBack | Phase::Aborted | Phase::RollingBack => BacktestOutcome::RolledBack,
        _ => BacktestOutcome::Unfinished,
    };
    BacktestResult { outcome, record: DeploymentRecord::of(&rollout, points), timeline, gates }
}

/// The canary's share of the interval's requests and the requests it rests on, from the
/// first metric that counts requests in both arms.
fn measured_share(observations: &IntervalObservations) -> Option<(f64, f64)> {
    observations.metrics.values().find_map(|o| {
        let (c, b) = (o.canary.as_ref()?.requests()?, o.baseline.as_ref()?.requests()?);
        (c + b > 0.0).then(|| (c / (c + b), c + b))
    })
}

/// Why the engine's weight and the data's traffic split disagree, if they do: the
/// recorded weight differs, or the measured share is more than 5 points and 4 standard
/// errors away from the engine's weight.
fn mismatch(engine: u8, recorded: Option<u8>, measured: Option<(f64, f64)>) -> Option<String> {
    if let Some(recorded) = recorded {
        return (recorded != engine).then(|| {
            format!("the engine had the canary at {engine}% but the data was recorded at {recorded}%")
        });
    }
    let (share, requests) = measured?;
    let expected = f64::from(engine) / 100.0;
    let se = (expected * (1.0 - expected) / requests).sqrt();
    let off = (share - expected).abs();
    (off > 0.05 && off > 4.0 * se).then(|| {
        format!(
            "the engine had the canary at {engine}% but it served {:.1}% of the recorded requests",
            share * 100.0
        )
    })
}

/// Runs `plan` over what Prometheus recorded for `id` between `from` and `to`, with the
/// same batched queries the daemon uses, as range queries; its gates opened as `gates`
/// says.
pub async fn from_prometheus(
    source: &PrometheusSource,
    plan: &Plan,
    id: &RolloutId,
    arms: &Arms,
    from: Timestamp,
    to: Timestamp,
    gates: Gates,
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
        Some((at, IntervalObservations { metrics, ..IntervalObservations::default() }, None))
    });
    Ok(replay(plan, id.clone(), "recorded", from, intervals, gates))
}
