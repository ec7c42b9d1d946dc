//! The validated, compiled form of a policy that the engine runs. A rollout keeps the
//! plan it started with, so a policy edited mid-rollout never changes a running one and
//! every decision can be explained from the rollout's own record.

use std::collections::BTreeMap;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::judge::{SampleKind, TestConfig};

/// The traffic routers a policy may name. Each platform serves some of them; a policy
/// naming a router its platform cannot serve is refused, never silently routed by
/// another.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
#[serde(rename_all = "kebab-case")]
pub enum RouterKind {
    /// Gateway API `HTTPRoute` backend weights (Kubernetes).
    GatewayApi,
    /// Istio `VirtualService` route weights (Kubernetes).
    Istio,
    /// Replica ratio: one Service over both Deployments, no mesh (Kubernetes).
    Replica,
    /// nginx weighted upstreams (the local platform).
    Nginx,
}

impl RouterKind {
    /// Every router, in the order the docs list them.
    pub const ALL: [RouterKind; 4] =
        [RouterKind::GatewayApi, RouterKind::Istio, RouterKind::Replica, RouterKind::Nginx];

    /// The name a policy writes.
    pub fn name(self) -> &'static str {
        match self {
            RouterKind::GatewayApi => "gateway-api",
            RouterKind::Istio => "istio",
            RouterKind::Replica => "replica",
            RouterKind::Nginx => "nginx",
        }
    }

    /// The router a policy's `spec.traffic.router` names, if any.
    pub fn parse(name: &str) -> Option<RouterKind> {
        RouterKind::ALL.into_iter().find(|r| r.name() == name)
    }
}

impl std::fmt::Display for RouterKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// A compiled policy.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct Plan {
    /// The policy it came from, `namespace/name` or `cluster/name`.
    pub policy: String,
    /// The traffic router the policy names.
    pub router: RouterKind,
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
    /// Where this policy's notifications go besides the daemon-wide webhook.
    #[serde(default, skip_serializing_if = "NotifyPlan::is_empty")]
    pub notify: NotifyPlan,
    /// Gates, by the index of the step they hold: once that step passed its analysis the
    /// rollout waits there (analysing on) until the gate opens.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub gates: BTreeMap<usize, Gate>,
    /// How long a gate may stay closed before the rollout rolls back.
    #[serde(with = "crate::duration::serde_text", default = "default_gate_timeout")]
    pub gate_timeout: Duration,
    /// How long the canary is analysed at 100% after its last step, with the previous
    /// revision kept to be restored, before the platform promotes it; `None`: no bake.
    #[serde(default, skip_serializing_if = "Option::is_none", with = "crate::duration::serde_option")]
    pub bake: Option<Duration>,
}

/// What opens a gate.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
#[serde(rename_all = "camelCase", tag = "type")]
pub enum Gate {
    /// A person: `canaryd rollout approve`, or `POST …/approve`.
    Approval,
    /// A URL that answers 2xx to a POST once the rollout may go on (Flagger's
    /// confirm-promotion), asked once per interval while the rollout waits.
    Webhook {
        /// Where to POST.
        url: String,
        /// Longest wait for one answer.
        #[serde(with = "crate::duration::serde_text")]
        timeout: Duration,
    },
}

impl Gate {
    /// Every kind of gate, as [`Gate::kind`] spells them.
    pub const KINDS: [&'static str; 2] = ["approval", "webhook"];

    /// The gate's kind, as policies spell it and `canaryd_rollouts_at_gate{gate}` labels it.
    pub fn kind(&self) -> &'static str {
        match self {
            Gate::Approval => "approval",
            Gate::Webhook { .. } => "webhook",
        }
    }

    /// What opens it, for messages: `approval` or `the webhook's 2xx`.
    pub fn waits_for(&self) -> &'static str {
        match self {
            Gate::Approval => "approval",
            Gate::Webhook { .. } => "the gate webhook's 2xx",
        }
    }
}

fn default_gate_timeout() -> Duration {
    DEFAULT_GATE_TIMEOUT
}

/// A gate closed this long rolls back, unless the policy says otherwise.
pub const DEFAULT_GATE_TIMEOUT: Duration = Duration::from_secs(24 * 3600);

/// How bad an event is: what a notification target filters on.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
#[serde(rename_all = "kebab-case")]
pub enum Severity {
    /// Progress: started, advanced, promoting, promoted, resumed, superseded.
    #[default]
    Info,
    /// Needs a look: paused, stalled on lack of data.
    Warning,
    /// Traffic was taken off the canary: rolled back, aborted.
    Critical,
}

impl Severity {
    /// The name as policies spell it.
    pub fn name(self) -> &'static str {
        match self {
            Severity::Info => "info",
            Severity::Warning => "warning",
            Severity::Critical => "critical",
        }
    }
}

/// A policy's notification targets.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
#[serde(rename_all = "camelCase")]
pub struct NotifyPlan {
    /// The Slack incoming webhook, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub slack: Option<SlackRoute>,
    /// The policy's own JSON webhook, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub webhook: Option<WebhookRoute>,
}

impl NotifyPlan {
    fn is_empty(&self) -> bool {
        self.slack.is_none() && self.webhook.is_none()
    }
}

/// Where a policy posts its notifications as JSON, besides the daemon-wide webhook. The
/// URL is a secret (it often carries a token) and is read only when a notification is
/// sent.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, Hash)]
#[serde(rename_all = "camelCase")]
pub struct WebhookRoute {
    /// Where the URL is kept.
    pub url: SecretSource,
}

/// Where and what a policy posts to Slack. The webhook URL itself is a secret and is
/// read only when a message is sent.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, Hash)]
#[serde(rename_all = "camelCase")]
pub struct SlackRoute {
    /// Channel, e.g. `#deploys` (shown in the message; the webhook decides where it lands).
    pub channel: String,
    /// Where the webhook URL is kept.
    pub webhook: SecretSource,
    /// Events below this severity are not posted.
    #[serde(default)]
    pub min_severity: Severity,
    /// Post every step advanced (off by default: the start and the outcome are enough).
    #[serde(default)]
    pub step_advanced: bool,
}

/// Where a secret value is kept.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, Hash)]
#[serde(rename_all = "camelCase", tag = "from")]
pub enum SecretSource {
    /// An environment variable of the daemon.
    Env {
        /// The variable's name.
        name: String,
    },
    /// A key of a Kubernetes Secret in the policy's namespace.
    KubernetesSecret {
        /// The Secret's namespace.
        namespace: String,
        /// The Secret's name.
        name: String,
        /// The key.
        key: String,
    },
}

fn default_progress_deadline() -> Duration {
    DEFAULT_PROGRESS_DEADLINE
}

/// A step waits at least this long for enough traffic unless the policy says otherwise
/// (twice the step duration when that is longer): generous, since low traffic only slows
/// a verdict down.
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

/// Which recorded signal a template reads; also the column of backtest data it uses.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
#[serde(rename_all = "kebab-case")]
pub enum Signal {
    /// Requests and errors.
    Errors,
    /// Request latency histogram.
    Latency,
    /// CPU cores used.
    Cpu,
    /// Working-set memory bytes.
    Memory,
    /// CPU used as a fraction of the limit.
    CpuUtilisation,
    /// Memory used as a fraction of the limit.
    MemoryUtilisation,
    /// An inline query, recorded under the metric's own name.
    Custom,
}

impl Signal {
    /// The name used in records and evidence (as serialised).
    pub fn name(self) -> &'static str {
        match self {
            Signal::Errors => "errors",
            Signal::Latency => "latency",
            Signal::Cpu => "cpu",
            Signal::Memory => "memory",
            Signal::CpuUtilisation => "cpu-utilisation",
            Signal::MemoryUtilisation => "memory-utilisation",
            Signal::Custom => "custom",
        }
    }
}
