//! The validated, compiled form of a policy that the engine runs. A rollout keeps the
//! plan it started with, so a policy edited mid-rollout never changes a running one and
//! every decision can be explained from the rollout's own record.

use std::collections::BTreeMap;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::judge::{SampleKind, TestConfig};
use crate::source::templates::Signal;

/// A compiled policy.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct Plan {
    /// The policy it came from, `namespace/name` or `cluster/name`.
    pub policy: String,
    /// Traffic router name.
    pub router: String,
    /// Canary weights in percent; the last is 100 and means promotion.
    pub steps: Vec<u8>,
    /// Minimum time at each step.
    #[serde(with = "crate::duration::serde_text")]
    pub step_duration: Duration,
    /// Time between evaluations.
    #[serde(with = "crate::duration::serde_text")]
    pub interval: Duration,
    /// Failed checks that roll back.
    pub failure_limit: u32,
    /// Inconclusive intervals (no data, failed queries) in a row that roll back.
    pub inconclusive_limit: u32,
    /// Requests per arm needed: per interval for the point tests, per step for the
    /// sequential tests.
    pub min_sample_size: u64,
    /// Longest a step may wait for enough traffic to judge before rolling back.
    #[serde(with = "crate::duration::serde_text", default = "default_progress_deadline")]
    pub progress_deadline: Duration,
    /// Judged metrics.
    pub metrics: Vec<MetricPlan>,
    /// Immediate-rollback conditions.
    pub triggers: Vec<Trigger>,
}

fn default_progress_deadline() -> Duration {
    DEFAULT_PROGRESS_DEADLINE
}

/// A step waits this long for enough traffic unless the policy says otherwise: generous,
/// since low traffic only slows a verdict down.
pub const DEFAULT_PROGRESS_DEADLINE: Duration = Duration::from_secs(30 * 60);

/// How one metric is measured and judged.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct MetricPlan {
    /// The metric's name in the policy.
    pub name: String,
    /// Where its data comes from.
    pub query: MetricQuery,
    /// The signal read from recorded data.
    pub signal: Signal,
    /// The kind of samples it yields.
    pub kind: SampleKind,
    /// Quantile judged for histograms.
    pub quantile: Option<f64>,
    /// The test.
    pub test: TestConfig,
}

/// The source of a metric's samples.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase", tag = "type")]
pub enum MetricQuery {
    /// A built-in template, with extra label matchers.
    Template {
        /// Template name.
        name: String,
        /// Extra label matchers.
        labels: BTreeMap<String, String>,
    },
    /// Inline PromQL with placeholders.
    Inline {
        /// The PromQL.
        promql: String,
    },
}

/// A condition that rolls back at once.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct Trigger {
    /// Shown in events and records.
    pub name: String,
    /// The condition.
    pub condition: TriggerCondition,
}

/// What a trigger watches.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase", tag = "type")]
pub enum TriggerCondition {
    /// The canary's value of a judged metric against absolute bounds or the baseline.
    Metric {
        /// Metric name.
        metric: String,
        /// Upper bound on the canary value.
        above: Option<f64>,
        /// Lower bound on the canary value.
        below: Option<f64>,
        /// Upper bound on canary/baseline.
        ratio_above: Option<f64>,
    },
    /// An Alertmanager alert firing for the workload.
    Alert {
        /// Alert name.
        alert: String,
    },
    /// Consecutive failures of an HTTP health endpoint.
    HealthCheck {
        /// URL template.
        url: String,
        /// Healthy status.
        expected_status: u16,
        /// Failures in a row that roll back.
        consecutive_failures: u32,
        /// Probe timeout.
        #[serde(with = "crate::duration::serde_text")]
        timeout: Duration,
    },
}
