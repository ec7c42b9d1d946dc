//! The recorded-data format `canaryd backtest` reads (documented in docs/backtests.md), and its
//! translation into the observations the engine takes.
//!
//! ```json
//! {"workload": {"namespace": "shop", "name": "checkout"}, "revision": "v2",
//!  "start": "2026-11-01T10:00:00Z", "interval": "30s",
//!  "intervals": [
//!    {"canary":   {"requests": 300, "errors": 3,
//!                  "latency": {"0.1": 250, "0.5": 299, "+Inf": 300},
//!                  "memory": [2.1e8, 2.0e8]},
//!     "baseline": {"requests": 2700, "errors": 27, "latency": {...}, "memory": [...]},
//!     "alerts": ["ErrorBudgetBurn"], "health": {"health": true}},
//!    {"error": "Prometheus unreachable"}
//!  ]}
//! ```
//!
//! Each entry is one analysis interval ending at `start + (i + 1) · interval` (or its
//! own `at`). Counts are increments over the interval; latency buckets are cumulative
//! (`le` in seconds, `+Inf` last); gauges are the readings of the interval (one per pod).
//! A missing arm or field is "no data" for the metrics that read it, and `error` makes
//! the whole interval inconclusive, as a failed query would.

use std::collections::BTreeMap;
use std::time::Duration;

use jiff::Timestamp;
use serde::{Deserialize, Serialize};

use crate::engine::IntervalObservations;
use crate::engine::plan::Signal;
use crate::engine::plan::{MetricPlan, Plan};
use crate::judge::{Histogram, Observation, Sample};

/// A recorded rollout.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Recording {
    /// The workload the data is from.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub workload: Option<RecordedWorkload>,
    /// The canary's revision.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub revision: Option<String>,
    /// When the rollout started (traffic first moved).
    pub start: Timestamp,
    /// Interval length; defaults to the policy's.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub interval: Option<String>,
    /// One entry per analysis interval.
    pub intervals: Vec<RecordedInterval>,
}

/// Which workload.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct RecordedWorkload {
    /// Namespace.
    pub namespace: String,
    /// Name.
    pub name: String,
}

/// One interval of recorded data.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct RecordedInterval {
    /// End of the interval, if not at the regular spacing.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub at: Option<Timestamp>,
    /// The canary weight (percent) the interval was recorded at, if known.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub weight: Option<u8>,
    /// The canary's data.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub canary: Option<RecordedArm>,
    /// The baseline's data.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub baseline: Option<RecordedArm>,
    /// The data could not be fetched (the interval is inconclusive).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// Alerts firing for the workload.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub alerts: Vec<String>,
    /// Health-check results per trigger name.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub health: BTreeMap<String, bool>,
}

/// One arm's data for one interval.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct RecordedArm {
    /// Requests served.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub requests: Option<f64>,
    /// Errors among them.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub errors: Option<f64>,
    /// Cumulative latency buckets: `le` (seconds, or `+Inf`) to count.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub latency: Option<BTreeMap<String, f64>>,
    /// CPU cores per pod.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cpu: Option<Vec<f64>>,
    /// Working-set bytes per pod.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub memory: Option<Vec<f64>>,
    /// CPU as a fraction of the limit, per pod.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cpu_utilisation: Option<Vec<f64>>,
    /// Memory as a fraction of the limit, per pod.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub memory_utilisation: Option<Vec<f64>>,
    /// Values of inline-query metrics, by metric name.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub custom: BTreeMap<String, Vec<f64>>,
}

/// A problem in a recording: the field path (and line where known) and the reason.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("{file}{}: {path}: {message}", location.map(|(l, c)| format!(":{l}:{c}")).unwrap_or_default())]
pub struct RecordingError {
    /// The file.
    pub file: String,
    /// Line and column, when the parser knows them.
    pub location: Option<(usize, usize)>,
    /// Field path, e.g. `intervals[3].canary.errors`.
    pub path: String,
    /// The reason.
    pub message: String,
}

impl Recording {
    /// Parses and checks a recording; `file` names it in errors.
    pub fn parse(file: &str, text: &str) -> Result<Recording, Vec<RecordingError>> {
        let de = &mut serde_json::Deserializer::from_str(text);
        let recording: Recording = serde_path_to_error::deserialize(de).map_err(|e| {
            let path = e.path().to_string();
            let inner = e.into_inner();
            let message = inner.to_string();
            let message = message.split(" at line ").next().unwrap_or(&message).to_string();
            vec![RecordingError {
                file: file.into(),
                location: Some((inner.line(), inner.column())),
                path: if path == "." { "(document)".into() } else { path },
                message,
            }]
        })?;
        let problems = recording.check(file);
        if problems.is_empty() { Ok(recording) } else { Err(problems) }
    }

    fn check(&self, file: &str) -> Vec<RecordingError> {
        let mut problems = Vec::new();
        let mut add = |path: String, message: String| {
            problems.push(RecordingError { file: file.into(), location: None, path, message })
        };
        if let Some(Err(e)) = self.interval.as_deref().map(crate::duration::parse) {
            add("interval".into(), e);
        }
        if self.intervals.is_empty() {
            add("intervals".into(), "no intervals recorded".into());
        }
        let mut previous = self.start;
        let spacing = self.interval.as_deref().and_then(|d| crate::duration::parse(d).ok());
        for (i, interval) in self.intervals.iter().enumerate() {
            // An interval without `at` ends at its place in the regular spacing.
            let regular =
                || spacing.and_then(|s| self.start.checked_add(s.saturating_mul(i as u32 + 1)).ok());
            if let Some(at) = interval.at.or_else(regular) {
                if at <= previous {
                    add(
                        format!("intervals[{i}].at"),
                        format!("{at} is not after the previous interval ({previous})"),
                    );
                }
                previous = at;
            }
            for (name, arm) in [("canary", &interval.canary), ("baseline", &interval.baseline)] {
                if let Some(arm) = arm {
                    arm.check(&format!("intervals[{i}].{name}"), &mut add);
                }
            }
        }
        problems
    }

    /// When interval `i` ends.
    pub fn interval_end(&self, i: usize, default_interval: Duration) -> Timestamp {
        if let Some(at) = self.intervals.get(i).and_then(|r| r.at) {
            return at;
        }
        let step =
            self.interval.as_deref().and_then(|d| crate::duration::parse(d).ok()).unwrap_or(default_interval);
        let offset = step.saturating_mul(i as u32 + 1);
        self.start.checked_add(offset).unwrap_or(Timestamp::MAX)
    }

    /// The observations of interval `i` for the metrics of `plan`.
    pub fn observations(&self, i: usize, plan: &Plan, file: &str) -> IntervalObservations {
        let Some(row) = self.intervals.get(i) else { return IntervalObservations::default() };
        let metrics = plan
            .metrics
            .iter()
            .map(|m| {
                let obs = match &row.error {
                    Some(e) => Observation { error: Some(e.clone()), ..Observation::default() },
                    None => Observation {
                        canary: row.canary.as_ref().and_then(|a| a.sample(m)),
                        baseline: row.baseline.as_ref().and_then(|a| a.sample(m)),
                        query: Some(format!("recorded {} from {file}", signal_name(m))),
                        ..Observation::default()
                    },
                };
                (m.name.clone(), obs)
            })
            .collect();
        IntervalObservations {
            metrics,
            firing_alerts: row.alerts.iter().cloned().collect(),
            health: row.health.clone(),
            gate: None,
        }
    }
}

fn signal_name(m: &MetricPlan) -> String {
    match m.signal {
        Signal::Custom => format!("custom.{}", m.name),
        s => s.name().to_string(),
    }
}

impl RecordedArm {
    fn check(&self, path: &str, add: &mut impl FnMut(String, String)) {
        for (field, v) in [("requests", self.requests), ("errors", self.errors)] {
            if v.is_some_and(|v| !(v >= 0.0 && v.is_finite())) {
                add(format!("{path}.{field}"), "must be a count (0 or more)".into());
            } else if v.is_some_and(|v| v > MAX_COUNT) {
                add(
                    format!("{path}.{field}"),
                    format!("more than {MAX_COUNT:e} in one interval is not a real count"),
                );
            }
        }
        let gauges = [
            ("cpu", &self.cpu),
            ("memory", &self.memory),
            ("cpuUtilisation", &self.cpu_utilisation),
            ("memoryUtilisation", &self.memory_utilisation),
        ];
        let custom = self.custom.iter().map(|(name, v)| (name.as_str(), v));
        for (field, values) in
            gauges.into_iter().filter_map(|(f, v)| v.as_ref().map(|v| (f, v))).chain(custom)
        {
            if let Some(v) = values.iter().find(|v| !(**v >= 0.0 && v.is_finite())) {
                add(format!("{path}.{field}"), format!("{v} is not a reading (0 or more)"));
            }
        }
        match (self.requests, self.errors) {
            (Some(r), Some(e)) if e > r => {
                add(format!("{path}.errors"), format!("{e} errors out of {r} requests"));
            }
            (None, Some(_)) => {
                add(format!("{path}.requests"), "errors were recorded without requests".into())
            }
            _ => {}
        }
        match (self.latency.as_ref().map(parse_histogram), self.requests) {
            (Some(Err(e)), _) => add(format!("{path}.latency"), e),
            (Some(Ok(h)), Some(requests)) if h.total() != requests => add(
                format!("{path}.latency.+Inf"),
                format!("{} requests in the +Inf bucket, but {requests} requests recorded", h.total()),
            ),
            _ => {}
        }
    }

    fn sample(&self, metric: &MetricPlan) -> Option<Sample> {
        let values = |v: &Option<Vec<f64>>| v.clone().map(|values| Sample::Values { values });
        match metric.signal {
            Signal::Errors => Some(Sample::Counts { requests: self.requests?, events: self.errors? }),
            Signal::Latency => parse_histogram(self.latency.as_ref()?).ok().map(Sample::Histogram),
            Signal::Cpu => values(&self.cpu),
            Signal::Memory => values(&self.memory),
            Signal::CpuUtilisation => values(&self.cpu_utilisation),
            Signal::MemoryUtilisation => values(&self.memory_utilisation),
            Signal::Custom => self.custom.get(&metric.name).map(|v| Sample::Values { values: v.clone() }),
        }
    }
}

/// The largest count one interval may record: a billion requests in one analysis interval
/// is not a measurement, and sums of such counts would lose the exactness the tests need.
pub const MAX_COUNT: f64 = 1e9;

/// Reads cumulative `le` buckets; they must rise with the bound and end with `+Inf`.
fn parse_histogram(buckets: &BTreeMap<String, f64>) -> Result<Histogram, String> {
    let mut parsed = Vec::with_capacity(buckets.len());
    for (le, count) in buckets {
        let bound = match le.as_str() {
            "+Inf" | "Inf" | "inf" => f64::INFINITY,
            other => match other.parse::<f64>() {
                Ok(b) if b.is_finite() && b >= 0.0 => b,
                _ => {
                    return Err(format!(
                        "bucket bound `{other}` is not a number of seconds (0 or more) or +Inf"
                    ));
                }
            },
        };
        if !(*count >= 0.0 && count.is_finite() && *count <= MAX_COUNT) {
            return Err(format!("bucket `{le}` holds {count}, not a count"));
        }
        parsed.push((bound, *count));
    }
    parsed.sort_by(|a, b| a.0.total_cmp(&b.0));
    if parsed.last().is_none_or(|b| b.0.is_finite()) {
        return Err("the +Inf bucket is missing".into());
    }
    if let Some(w) = parsed.windows(2).find(|w| w[1].1 < w[0].1) {
        return Err(format!(
            "cumulative counts fall from {} (le {}) to {} (le {})",
            w[0].1, w[0].0, w[1].1, w[1].0
        ));
    }
    Ok(Histogram { buckets: parsed })
}
