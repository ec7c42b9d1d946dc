//! The statistical tests a metric can be judged by, with their settings.

use serde::{Deserialize, Serialize};

/// A test and its settings, as compiled from a policy's metric.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(tag = "kind", rename_all = "kebab-case")]
pub enum TestConfig {
    /// Absolute bounds on the canary's value.
    Threshold {
        /// Lowest acceptable value.
        min: Option<f64>,
        /// Highest acceptable value.
        max: Option<f64>,
    },
    /// Bounds on canary value / baseline value.
    Ratio {
        /// Lowest acceptable ratio.
        min: Option<f64>,
        /// Highest acceptable ratio.
        max: Option<f64>,
    },
    /// Kayenta-style rank test over the window's per-interval values.
    MannWhitney {
        /// Which change is a regression.
        direction: Direction,
        /// Mean-ratio effect size that must also be exceeded to fail (1.0: any).
        max_effect: f64,
        /// Confidence of the shift interval (Kayenta: 0.98).
        confidence: f64,
        /// Kayenta's fraction: the interval must clear this share of |estimate| (0.25).
        #[serde(default = "kayenta_tolerance")]
        tolerance: f64,
        /// Points kept per arm: the analysis window, in intervals.
        #[serde(default = "default_window")]
        window: usize,
    },
    /// Anytime-valid mixture test on event counts (errors, slow requests).
    Sequential {
        /// This metric's share of the rollout's false rollback budget (already split).
        alpha: f64,
        /// Requests slower than this (seconds) are the events, for latency metrics.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        slower_than: Option<f64>,
        /// Canary against baseline with a margin: the canary's error rate (or quantile)
        /// may be up to this many times the baseline's.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        margin: Option<f64>,
        /// A bound on the canary alone: its error rate, or its quantile in seconds.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        max: Option<f64>,
    },
}

impl TestConfig {
    /// Whether the test compares the canary with the baseline (ratio, Mann-Whitney, a
    /// sequential margin), rather than bounding the canary alone (threshold, a
    /// sequential `max`). Only the latter can run when no baseline takes traffic, as
    /// during a bake.
    pub fn needs_baseline(&self) -> bool {
        match self {
            TestConfig::Threshold { .. } => false,
            TestConfig::Sequential { max, .. } => max.is_none(),
            TestConfig::Ratio { .. } | TestConfig::MannWhitney { .. } => true,
        }
    }

    /// The name used in policies.
    pub fn name(&self) -> &'static str {
        match self {
            TestConfig::Threshold { .. } => "threshold",
            TestConfig::Ratio { .. } => "ratio",
            TestConfig::MannWhitney { .. } => "mann-whitney",
            TestConfig::Sequential { .. } => "sequential",
        }
    }
}

/// The policy names of the tests.
pub const TEST_NAMES: [&str; 4] = ["threshold", "ratio", "mann-whitney", "sequential"];

/// Which direction of change counts as a regression.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq)]
#[serde(rename_all = "kebab-case")]
pub enum Direction {
    /// Higher is worse (errors, latency, memory).
    Increase,
    /// Lower is worse (throughput, success rate).
    Decrease,
    /// Any significant change is a regression.
    Either,
}

impl Direction {
    /// Reads the policy spelling.
    pub fn parse(text: &str) -> Option<Direction> {
        match text {
            "increase" => Some(Direction::Increase),
            "decrease" => Some(Direction::Decrease),
            "either" => Some(Direction::Either),
            _ => None,
        }
    }
}

/// Kayenta's fraction of |estimate| that a shift interval must clear (its
/// `MannWhitneyClassifier` default).
pub const KAYENTA_TOLERANCE: f64 = 0.25;

/// Points per arm a Mann-Whitney test keeps unless the policy says otherwise.
pub const DEFAULT_WINDOW: usize = 60;

fn kayenta_tolerance() -> f64 {
    KAYENTA_TOLERANCE
}

fn default_window() -> usize {
    DEFAULT_WINDOW
}
