//! Built-in metric templates: PromQL kept as data, apart from the code that runs it.
//!
//! A template yields the raw per-arm measurements the judge needs, never a verdict.
//! Placeholders, filled in by [`crate::source::query`]:
//! - `$matchers`: the label matchers selecting the rollouts' workloads (and extra labels),
//! - `$window`: the range of the interval, e.g. `30s`,
//! - `$by`: the grouping labels that tell the rollouts and their arms apart.
//!
//! Arms are told apart by the template's identity label (e.g. Istio's
//! `destination_workload`): the canary is the workload `web`, the baseline `web-primary`
//! on Kubernetes, or the values set in the local platform's config.

use serde::{Deserialize, Serialize};

use crate::judge::SampleKind;

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

/// How a template's selectors pick the series of the rollouts' workloads.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum IdentityMatch {
    /// The identity label carries the workload name.
    Label,
    /// Only pod names carry it (cAdvisor): `pod` must match `<workload>-<hash>-<id>`,
    /// and the query derives the identity label from the pod name.
    PodName,
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

/// The PromQL of a template, by the kind of sample it yields.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Queries {
    /// Requests and errors increments over the window.
    Counts {
        /// Requests per group.
        requests: &'static str,
        /// Errors per group.
        errors: &'static str,
    },
    /// Bucket increments over the window, grouped also by `le`.
    Histogram {
        /// Bucket counts per group and `le`.
        buckets: &'static str,
    },
    /// One gauge value per group (per pod where the template keeps pods apart).
    Values {
        /// Values per group.
        value: &'static str,
    },
}

/// A built-in template.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Template {
    /// Name used in policies.
    pub name: &'static str,
    /// One line for `canaryd templates` and the docs.
    pub description: &'static str,
    /// What it measures.
    pub signal: Signal,
    /// The quantile judged by default (latency templates).
    pub quantile: Option<f64>,
    /// Label whose value names the workload (and so the arm) in the query's result.
    pub identity_label: &'static str,
    /// How the query's selectors pick the workloads' series.
    pub identity_match: IdentityMatch,
    /// Label holding the namespace, if the series carry one.
    pub namespace_label: Option<&'static str>,
    /// Seconds per unit of the histogram's `le` (0.001 where it is in milliseconds).
    pub bucket_scale: f64,
    /// The PromQL.
    pub queries: Queries,
}

impl Template {
    /// The kind of sample the template yields.
    pub fn kind(&self) -> SampleKind {
        match self.queries {
            Queries::Counts { .. } => SampleKind::Counts,
            Queries::Histogram { .. } => SampleKind::Histogram,
            Queries::Values { .. } => SampleKind::Values,
        }
    }
}

const HTTP_REQUESTS: &str = "sum by ($by) (increase(http_requests_total{$matchers}[$window]))";
const HTTP_ERRORS: &str = "sum by ($by) (increase(http_requests_total{$matchers, code=~\"5..\"}[$window]))";
const HTTP_BUCKETS: &str =
    "sum by ($by, le) (increase(http_request_duration_seconds_bucket{$matchers}[$window]))";
const ISTIO_REQUESTS: &str =
    "sum by ($by) (increase(istio_requests_total{$matchers, reporter=\"destination\"}[$window]))";
const ISTIO_ERRORS: &str = "sum by ($by) (increase(istio_requests_total{$matchers, reporter=\"destination\", response_code=~\"5..\"}[$window]))";
const ISTIO_BUCKETS: &str = "sum by ($by, le) (increase(istio_request_duration_milliseconds_bucket{$matchers, reporter=\"destination\"}[$window]))";
const LINKERD_REQUESTS: &str =
    "sum by ($by) (increase(response_total{$matchers, direction=\"inbound\"}[$window]))";
const LINKERD_ERRORS: &str = "sum by ($by) (increase(response_total{$matchers, direction=\"inbound\", classification=\"failure\"}[$window]))";
const LINKERD_BUCKETS: &str =
    "sum by ($by, le) (increase(response_latency_ms_bucket{$matchers, direction=\"inbound\"}[$window]))";
const ENVOY_REQUESTS: &str = "sum by ($by) (increase(envoy_cluster_upstream_rq_total{$matchers}[$window]))";
const ENVOY_ERRORS: &str =
    "sum by ($by) (increase(envoy_cluster_upstream_rq{$matchers, envoy_response_code=~\"5..\"}[$window]))";
const ENVOY_BUCKETS: &str =
    "sum by ($by, le) (increase(envoy_cluster_upstream_rq_time_bucket{$matchers}[$window]))";
/// Deployment pods are named `<workload>-<replicaset hash>-<id>`; this recovers the workload.
macro_rules! by_workload {
    ($inner:literal) => {
        concat!("label_replace(", $inner, ", \"workload\", \"$1\", \"pod\", \"(.+)-[a-z0-9]+-[a-z0-9]+\")")
    };
}
const CADVISOR_CPU: &str = concat!(
    "sum by ($by, pod) (",
    by_workload!(
        "rate(container_cpu_usage_seconds_total{$matchers, container!=\"\", container!=\"POD\"}[$window])"
    ),
    ")"
);
const CADVISOR_MEMORY: &str = concat!(
    "sum by ($by, pod) (",
    by_workload!(
        "max_over_time(container_memory_working_set_bytes{$matchers, container!=\"\", container!=\"POD\"}[$window])"
    ),
    ")"
);
const CADVISOR_CPU_UTIL: &str = concat!(
    "sum by ($by, pod) (",
    by_workload!(
        "rate(container_cpu_usage_seconds_total{$matchers, container!=\"\", container!=\"POD\"}[$window])"
    ),
    ") / sum by ($by, pod) (",
    by_workload!("kube_pod_container_resource_limits{$matchers, resource=\"cpu\"}"),
    ")"
);
const CADVISOR_MEMORY_UTIL: &str = concat!(
    "sum by ($by, pod) (",
    by_workload!(
        "max_over_time(container_memory_working_set_bytes{$matchers, container!=\"\", container!=\"POD\"}[$window])"
    ),
    ") / sum by ($by, pod) (",
    by_workload!("kube_pod_container_resource_limits{$matchers, resource=\"memory\"}"),
    ")"
);

/// Every built-in template.
pub const TEMPLATES: &[Template] = &[
    http("http-error-rate", "5xx share of http_requests_total{code}", Signal::Errors, None),
    http("http-latency-p95", "p95 of http_request_duration_seconds", Signal::Latency, Some(0.95)),
    http("http-latency-p99", "p99 of http_request_duration_seconds", Signal::Latency, Some(0.99)),
    Template {
        name: "istio-error-rate",
        description: "5xx share of istio_requests_total (destination reporter)",
        signal: Signal::Errors,
        quantile: None,
        identity_label: "destination_workload",
        identity_match: IdentityMatch::Label,
        namespace_label: Some("destination_workload_namespace"),
        bucket_scale: 1.0,
        queries: Queries::Counts { requests: ISTIO_REQUESTS, errors: ISTIO_ERRORS },
    },
    Template {
        name: "istio-latency-p99",
        description: "p99 of istio_request_duration_milliseconds (as seconds)",
        signal: Signal::Latency,
        quantile: Some(0.99),
        identity_label: "destination_workload",
        identity_match: IdentityMatch::Label,
        namespace_label: Some("destination_workload_namespace"),
        bucket_scale: 0.001,
        queries: Queries::Histogram { buckets: ISTIO_BUCKETS },
    },
    Template {
        name: "linkerd-error-rate",
        description: "failure share of Linkerd's inbound response_total",
        signal: Signal::Errors,
        quantile: None,
        identity_label: "deployment",
        identity_match: IdentityMatch::Label,
        namespace_label: Some("namespace"),
        bucket_scale: 1.0,
        queries: Queries::Counts { requests: LINKERD_REQUESTS, errors: LINKERD_ERRORS },
    },
    Template {
        name: "linkerd-latency-p99",
        description: "p99 of Linkerd's inbound response_latency_ms (as seconds)",
        signal: Signal::Latency,
        quantile: Some(0.99),
        identity_label: "deployment",
        identity_match: IdentityMatch::Label,
        namespace_label: Some("namespace"),
        bucket_scale: 0.001,
        queries: Queries::Histogram { buckets: LINKERD_BUCKETS },
    },
    Template {
        name: "envoy-error-rate",
        description: "5xx share of Envoy (Gateway API) upstream requests",
        signal: Signal::Errors,
        quantile: None,
        identity_label: "envoy_cluster_name",
        identity_match: IdentityMatch::Label,
        namespace_label: None,
        bucket_scale: 1.0,
        queries: Queries::Counts { requests: ENVOY_REQUESTS, errors: ENVOY_ERRORS },
    },
    Template {
        name: "envoy-latency-p99",
        description: "p99 of Envoy (Gateway API) upstream request time (as seconds)",
        signal: Signal::Latency,
        quantile: Some(0.99),
        identity_label: "envoy_cluster_name",
        identity_match: IdentityMatch::Label,
        namespace_label: None,
        bucket_scale: 0.001,
        queries: Queries::Histogram { buckets: ENVOY_BUCKETS },
    },
    cadvisor("container-cpu", "CPU cores per pod (cAdvisor)", Signal::Cpu, CADVISOR_CPU),
    cadvisor("container-memory", "working-set bytes per pod (cAdvisor)", Signal::Memory, CADVISOR_MEMORY),
    cadvisor(
        "container-cpu-utilisation",
        "CPU per pod as a fraction of its limit (cAdvisor + kube-state-metrics)",
        Signal::CpuUtilisation,
        CADVISOR_CPU_UTIL,
    ),
    cadvisor(
        "container-memory-utilisation",
        "memory per pod as a fraction of its limit (cAdvisor + kube-state-metrics)",
        Signal::MemoryUtilisation,
        CADVISOR_MEMORY_UTIL,
    ),
];

const fn http(
    name: &'static str,
    description: &'static str,
    signal: Signal,
    quantile: Option<f64>,
) -> Template {
    let queries = match signal {
        Signal::Errors => Queries::Counts { requests: HTTP_REQUESTS, errors: HTTP_ERRORS },
        _ => Queries::Histogram { buckets: HTTP_BUCKETS },
    };
    Template {
        name,
        description,
        signal,
        quantile,
        identity_label: "workload",
        identity_match: IdentityMatch::Label,
        namespace_label: Some("namespace"),
        bucket_scale: 1.0,
        queries,
    }
}

const fn cadvisor(
    name: &'static str,
    description: &'static str,
    signal: Signal,
    value: &'static str,
) -> Template {
    Template {
        name,
        description,
        signal,
        quantile: None,
        identity_label: "workload",
        identity_match: IdentityMatch::PodName,
        namespace_label: Some("namespace"),
        bucket_scale: 1.0,
        queries: Queries::Values { value },
    }
}

/// Looks a template up by name.
pub fn find(name: &str) -> Option<&'static Template> {
    TEMPLATES.iter().find(|t| t.name == name)
}

/// The names of all templates, for error messages.
pub fn names() -> Vec<&'static str> {
    TEMPLATES.iter().map(|t| t.name).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signal_names_are_their_serialised_form() {
        for t in TEMPLATES {
            assert_eq!(serde_json::to_value(t.signal).unwrap(), t.signal.name(), "{}", t.name);
        }
        assert_eq!(serde_json::to_value(Signal::Custom).unwrap(), Signal::Custom.name());
    }
}
