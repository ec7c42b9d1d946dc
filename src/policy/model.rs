//! The policy resources as users write them: `CanaryPolicy` (namespaced) and
//! `ClusterCanaryPolicy`. The same types are the CRDs, `canaryd check` input and
//! `canaryd backtest` input.
//!
//! The model is strict in structure (unknown fields are errors) and lenient in values:
//! durations, test kinds and routers are kept as written so that validation can report
//! every bad value at once, with its field path, instead of stopping at the first.

use std::collections::BTreeMap;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;
use kube::CustomResource;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// API group and version of both policy kinds.
pub const API_VERSION: &str = "canaryd.io/v1alpha1";

/// What a canary policy says: which workloads it covers and how their rollouts are run.
// Several printer columns share a column type, which clippy takes for a repeated attribute.
#[allow(clippy::duplicated_attributes)]
#[derive(CustomResource, Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[kube(
    group = "canaryd.io",
    version = "v1alpha1",
    kind = "CanaryPolicy",
    plural = "canarypolicies",
    shortname = "cpol",
    namespaced,
    status = "PolicyStatus",
    doc = "Canary analysis policy for the Deployments it selects in its namespace",
    printcolumn(
        name = "Valid",
        type_ = "string",
        json_path = ".status.conditions[?(@.type==\"Valid\")].status"
    ),
    printcolumn(
        name = "Reason",
        type_ = "string",
        json_path = ".status.conditions[?(@.type==\"Valid\")].reason"
    ),
    printcolumn(name = "Age", type_ = "date", json_path = ".metadata.creationTimestamp")
)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct PolicySpec {
    /// Higher wins when several policies select one workload (default 0).
    #[serde(default, skip_serializing_if = "is_zero")]
    pub priority: i32,
    /// Deployments this policy attaches to. Must not be empty.
    pub selector: LabelSelector,
    /// How traffic moves to the canary.
    #[serde(default)]
    pub traffic: TrafficSpec,
    /// How each interval is judged.
    pub analysis: AnalysisSpec,
    /// Conditions that roll back at once, without waiting for the analysis.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub triggers: Vec<TriggerSpec>,
    /// Where events are sent.
    #[serde(default, skip_serializing_if = "NotifySpec::is_empty")]
    pub notify: NotifySpec,
}

/// The cluster-scoped policy: the same spec, selecting Deployments in every namespace.
#[allow(clippy::duplicated_attributes)]
#[derive(CustomResource, Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[kube(
    group = "canaryd.io",
    version = "v1alpha1",
    kind = "ClusterCanaryPolicy",
    plural = "clustercanarypolicies",
    shortname = "ccpol",
    status = "PolicyStatus",
    doc = "Canary analysis policy for the Deployments it selects in every namespace",
    printcolumn(
        name = "Valid",
        type_ = "string",
        json_path = ".status.conditions[?(@.type==\"Valid\")].status"
    ),
    printcolumn(
        name = "Reason",
        type_ = "string",
        json_path = ".status.conditions[?(@.type==\"Valid\")].reason"
    ),
    printcolumn(name = "Age", type_ = "date", json_path = ".metadata.creationTimestamp")
)]
#[serde(transparent)]
pub struct ClusterPolicySpec(pub PolicySpec);

/// What canaryd found when it read a policy object from the API server (written by
/// canaryd; policy files have none).
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema, Default)]
#[serde(rename_all = "camelCase")]
pub struct PolicyStatus {
    /// `Valid`: `True` when the policy is in force, `False` with every problem found
    /// (field and reason) in the message.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub conditions: Vec<k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition>,
}

fn is_zero(v: &i32) -> bool {
    *v == 0
}

/// Traffic shifting: router and weight steps.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct TrafficSpec {
    /// `gateway-api`, `istio`, `replica` (no mesh) or `nginx` (local platform).
    #[serde(default = "default_router")]
    pub router: String,
    /// Canary weights in percent, strictly increasing, ending at 100. Reaching 100 promotes.
    #[serde(default = "default_steps")]
    pub steps: Vec<i64>,
    /// Minimum time at each step, e.g. `5m`.
    #[serde(default = "default_step_duration")]
    pub step_duration: String,
    /// Gates: a step whose weight a gate names holds there, once its analysis passed,
    /// until the gate opens. The analysis goes on while it waits.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub gates: Vec<GateSpec>,
    /// How long a gate may stay closed before the rollout rolls back (default `24h`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gate_timeout: Option<String>,
    /// The `gateway-api` router's HTTPRoute, or the `istio` router's VirtualService.
    /// Without it, canaryd adopts the route named as the Deployment, which must exist.
    /// For the `replica` router, only `name`: the Service that selects both arms' pods.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub route: Option<RouteSpec>,
    /// The `replica` router only: how many percentage points a step's share of the
    /// pods may be off its weight (default 5). A step it cannot serve so closely with
    /// the primary's replicas is refused.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tolerance: Option<f64>,
}

/// The HTTPRoute a rollout's weights are set on. canaryd adopts the route when it
/// exists (and puts its rules back when the Deployment is deleted), or creates it when
/// `parentRefs` are given (owned by the Deployment, deleted with it).
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct RouteSpec {
    /// The route's name; `{name}` stands for the Deployment's name (default `{name}`).
    #[serde(default = "default_route_name")]
    pub name: String,
    /// The Gateways a route canaryd creates attaches to. Without them, a missing route
    /// is an error, never created.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub parent_refs: Vec<ParentRef>,
    /// The hostnames of a route canaryd creates.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub hostnames: Vec<String>,
}

/// A Gateway a created route attaches to, as the Gateway API's `parentRefs` write it.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, JsonSchema, Default)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ParentRef {
    /// The Gateway's name.
    pub name: String,
    /// Its namespace (default: the route's).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespace: Option<String>,
    /// The listener's name on it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub section_name: Option<String>,
    /// The listener's port on it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub port: Option<i32>,
    /// The parent's API group (default `gateway.networking.k8s.io`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub group: Option<String>,
    /// The parent's kind (default `Gateway`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kind: Option<String>,
}

/// The placeholder for the Deployment's name in a route name.
pub const ROUTE_NAME_PLACEHOLDER: &str = "{name}";

impl RouteSpec {
    /// The route's name for Deployment `deployment`.
    pub fn name_for(&self, deployment: &str) -> String {
        self.name.replace(ROUTE_NAME_PLACEHOLDER, deployment)
    }
}

impl Default for TrafficSpec {
    fn default() -> Self {
        Self {
            router: default_router(),
            steps: default_steps(),
            step_duration: default_step_duration(),
            gates: Vec::new(),
            gate_timeout: None,
            route: None,
            tolerance: None,
        }
    }
}

/// A gate on a step, e.g. `{at: 50, type: approval}`.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema, Default)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct GateSpec {
    /// The weight of the step it holds (one of `steps`, not the last: 100 is promotion).
    pub at: i64,
    /// `approval` (a person: `canaryd rollout approve`) or `webhook` (a URL that answers
    /// 2xx to open).
    #[serde(rename = "type")]
    pub kind: String,
    /// Webhook gates: the URL POSTed once per interval while the rollout waits.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub url: Option<String>,
    /// Webhook gates: the longest wait for one answer (default `5s`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout: Option<String>,
}

fn default_route_name() -> String {
    ROUTE_NAME_PLACEHOLDER.into()
}
fn default_router() -> String {
    "gateway-api".into()
}
fn default_steps() -> Vec<i64> {
    vec![10, 50, 100]
}
fn default_step_duration() -> String {
    "5m".into()
}

/// The analysis run at every interval.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct AnalysisSpec {
    /// Time between two evaluations, e.g. `30s`.
    #[serde(default = "default_interval")]
    pub interval: String,
    /// Failed checks (counted over the rollout) that roll back.
    #[serde(default = "default_failure_limit")]
    pub failure_limit: u32,
    /// Inconclusive intervals in a row (no data, query errors) that roll back.
    #[serde(default = "default_inconclusive_limit")]
    pub inconclusive_limit: u32,
    /// Requests each arm must have served in an interval before it can be judged.
    #[serde(default = "default_min_sample_size")]
    pub min_sample_size: u64,
    /// Longest a step may wait for enough traffic to judge before rolling back with that
    /// reason. At least the step duration; by default the larger of 30m and twice the step
    /// duration.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub progress_deadline: Option<String>,
    /// How long to keep analysing after the last step, at 100%, before the platform
    /// promotes, with the previous revision kept deployed and restored on a trigger or a
    /// regression (e.g. `1h`; default: no bake). Only the tests that bound the canary
    /// alone (threshold, sequential `max`) and the triggers run during it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bake: Option<String>,
    /// The metrics judged at every interval. At least one.
    pub metrics: Vec<MetricSpec>,
}

fn default_interval() -> String {
    "30s".into()
}
fn default_failure_limit() -> u32 {
    2
}
fn default_inconclusive_limit() -> u32 {
    6
}

fn default_min_sample_size() -> u64 {
    50
}

/// One judged metric.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema, Default)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct MetricSpec {
    /// Unique within the policy; triggers refer to it.
    pub name: String,
    /// A built-in template (see `canaryd templates`). Exactly one of `template`, `query`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub template: Option<String>,
    /// Inline PromQL returning one value per arm; placeholders as in templates.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub query: Option<String>,
    /// `threshold`, `ratio`, `mann-whitney` or `sequential`.
    pub test: String,
    /// Sequential test: false rollback budget of this metric (default 0.05), split
    /// evenly over the policy's sequential metrics.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub alpha: Option<f64>,
    /// Lower bound: canary value (threshold) or canary/baseline ratio (ratio).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub min: Option<f64>,
    /// Upper bound: canary value (threshold), canary/baseline ratio (ratio), mean
    /// ratio effect size (mann-whitney), or for sequential a bound on the canary alone:
    /// its error rate (e.g. 0.05) or its quantile in seconds (e.g. 0.5), tested
    /// anytime-valid.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max: Option<f64>,
    /// Sequential: how much worse than the baseline the canary may be before it counts
    /// as a regression: its error rate (or its quantile, for latency) up to `margin` ×
    /// the baseline's (e.g. 1.5 for "errors 50% above the baseline"). At least 1.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub margin: Option<f64>,
    /// Latency templates: the quantile judged, e.g. 0.99 (defaults from the template).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub quantile: Option<f64>,
    /// Mann-Whitney: points per arm in the analysis window, in intervals (default 60).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub window: Option<u32>,
    /// Mann-Whitney: which change is bad, `increase` (default), `decrease` or `either`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub direction: Option<String>,
    /// Sequential latency test: requests slower than this count as events, e.g. `500ms`.
    /// Default: the histogram bucket at the baseline's quantile, fixed at the first interval.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub slower_than: Option<String>,
    /// Extra label matchers added to the template's selectors, e.g. `{route: /checkout}`.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub labels: BTreeMap<String, String>,
}

/// A condition that rolls back immediately. Exactly one of `metric`, `alert`, `healthCheck`.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema, Default)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct TriggerSpec {
    /// Optional name shown in events (defaults to a description of the condition).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// A metric of `analysis.metrics`, compared with `above`/`below`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub metric: Option<String>,
    /// Roll back when the canary's value exceeds this.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub above: Option<f64>,
    /// Roll back when the canary's value falls below this.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub below: Option<f64>,
    /// Roll back when the canary/baseline ratio exceeds this (e.g. 2 for "P95 over 2x").
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ratio_above: Option<f64>,
    /// Roll back when this Alertmanager alert fires for the workload.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub alert: Option<String>,
    /// Roll back after consecutive failures of an HTTP health endpoint.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub health_check: Option<HealthCheckSpec>,
}

/// An HTTP health endpoint probed once per interval.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct HealthCheckSpec {
    /// URL of the canary's health endpoint; `{{workload}}` and `{{namespace}}` are filled in.
    pub url: String,
    /// Status that counts as healthy.
    #[serde(default = "default_expected_status")]
    pub expected_status: u16,
    /// Failures in a row that roll back (the runbooks' "more than 3" is 4).
    #[serde(default = "default_consecutive_failures")]
    pub consecutive_failures: u32,
    /// Per-probe timeout, e.g. `2s`.
    #[serde(default = "default_probe_timeout")]
    pub timeout: String,
}

fn default_expected_status() -> u16 {
    200
}
fn default_consecutive_failures() -> u32 {
    4
}
fn default_probe_timeout() -> String {
    "2s".into()
}

/// Notification targets.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema, Default)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct NotifySpec {
    /// Slack incoming webhook.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub slack: Option<SlackSpec>,
    /// Generic JSON webhook.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub webhook: Option<WebhookSpec>,
}

impl NotifySpec {
    fn is_empty(&self) -> bool {
        self.slack.is_none() && self.webhook.is_none()
    }
}

/// Slack target. The webhook URL is a secret and never appears in the policy itself.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct SlackSpec {
    /// Channel name, e.g. `#deploys`.
    pub channel: String,
    /// Kubernetes Secret holding the webhook URL (Kubernetes platform).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub webhook_secret: Option<SecretKeyRef>,
    /// Environment variable holding the webhook URL (local platform).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub webhook_env: Option<String>,
    /// Events below this severity are not posted: `info` (default: everything),
    /// `warning` (pauses, stalls, rollbacks) or `critical` (rollbacks and aborts only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub min_severity: Option<String>,
    /// Also post each step advanced (default false).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub step_advanced: bool,
}

/// A key of a Kubernetes Secret in the policy's namespace.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct SecretKeyRef {
    /// Secret name.
    pub name: String,
    /// Key within the Secret.
    pub key: String,
}

/// Generic webhook target.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct WebhookSpec {
    /// Environment variable holding the URL (kept out of the policy: URLs carry tokens).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub url_env: Option<String>,
    /// Kubernetes Secret holding the URL, in the policy's namespace (Kubernetes
    /// platform; canaryd's own namespace for a ClusterCanaryPolicy). Set exactly one of
    /// `urlEnv` and `urlSecret`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub url_secret: Option<SecretKeyRef>,
}
