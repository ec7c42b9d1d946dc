//! What the judge says about a metric for one interval, and the evidence behind it.

use serde::{Deserialize, Serialize};

/// The outcome of one metric's check.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq)]
#[serde(rename_all = "kebab-case")]
pub enum Outcome {
    /// Enough data, and the canary is within bounds.
    Pass,
    /// The canary is worse than allowed.
    Fail,
    /// No data, or the data could not be fetched. Never a pass; counts towards the
    /// inconclusive limit.
    Inconclusive,
    /// Too little traffic so far to judge. Never a pass: the step holds, and only the
    /// progress deadline turns it into a rollback.
    Insufficient,
}

impl Outcome {
    /// The outcome's word, as the docs, the metrics' `outcome` label, the reports, the
    /// API and Slack spell it (and as it is serialized).
    pub fn name(self) -> &'static str {
        match self {
            Outcome::Pass => "pass",
            Outcome::Fail => "fail",
            Outcome::Inconclusive => "inconclusive",
            Outcome::Insufficient => "insufficient",
        }
    }

    /// The outcome, and whether it was conclusive, that a letter of [`Verdict::letter`]
    /// stands for; `None` for any other character.
    pub fn of_letter(letter: char) -> Option<(Outcome, bool)> {
        Some(match letter {
            'p' => (Outcome::Pass, false),
            'F' => (Outcome::Fail, true),
            'f' => (Outcome::Fail, false),
            'i' => (Outcome::Inconclusive, false),
            'w' => (Outcome::Insufficient, false),
            _ => return None,
        })
    }
}

/// One arm's side of the evidence.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
#[serde(rename_all = "camelCase")]
pub struct ArmEvidence {
    /// The judged value this interval (rate, quantile in seconds, or mean).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub value: Option<f64>,
    /// Requests this interval.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub requests: Option<f64>,
    /// Events (errors, slow requests) this interval.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub events: Option<f64>,
    /// Gauge readings or series points the value was computed from.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub points: Option<usize>,
    /// The query that measures this arm alone: filled in for the decisions of a
    /// deployment record (the rollout's state keeps the window to render it from).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub query: Option<String>,
}

/// Totals a sequential test has accumulated, per arm.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct Cumulative {
    /// Canary requests so far.
    pub canary_requests: f64,
    /// Canary events so far.
    pub canary_events: f64,
    /// Baseline requests so far.
    pub baseline_requests: f64,
    /// Baseline events so far.
    pub baseline_events: f64,
}

/// Everything a verdict was based on.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
#[serde(rename_all = "camelCase")]
pub struct Evidence {
    /// The canary's side.
    pub canary: ArmEvidence,
    /// The baseline's side.
    pub baseline: ArmEvidence,
    /// The test statistic: canary/baseline ratio, U, or (sequential) the log e-value.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub statistic: Option<f64>,
    /// p-value (always-valid for the sequential test).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub p_value: Option<f64>,
    /// The bound compared against: alpha, a threshold, a ratio or an effect size.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub bound: Option<f64>,
    /// Totals behind a sequential test.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cumulative: Option<Cumulative>,
    /// Bucket bound (seconds) above which requests counted as slow.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub slower_than: Option<f64>,
    /// Shift interval (Mann-Whitney).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub interval: Option<(f64, f64)>,
    /// The query (or recorded series) the samples came from.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub query: Option<String>,
}

/// The judge's verdict on one metric for one interval.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct Verdict {
    /// The metric's name.
    pub metric: String,
    /// The test that decided.
    pub test: String,
    /// Pass, fail, inconclusive or insufficient.
    pub outcome: Outcome,
    /// A failure that cannot be undone by later data (a rejected sequential test).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub conclusive: bool,
    /// One sentence a person can read.
    pub reason: String,
    /// The numbers behind it.
    pub evidence: Evidence,
}

impl Verdict {
    /// The outcome in one letter, for compact summaries: `p` pass, `f` fail, `F`
    /// conclusive fail, `i` inconclusive, `w` insufficient (waiting for traffic).
    pub fn letter(&self) -> char {
        match self.outcome {
            Outcome::Pass => 'p',
            Outcome::Fail if self.conclusive => 'F',
            Outcome::Fail => 'f',
            Outcome::Inconclusive => 'i',
            Outcome::Insufficient => 'w',
        }
    }
}
