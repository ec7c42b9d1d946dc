//! Built-in metric templates: PromQL kept as data, apart from the code that runs it.
//!
//! A template yields the raw per-arm measurements the judge needs, never a verdict.
//! Placeholders are filled by [`crate::source::promql::fill`], in one pass (see
//! [`crate::source::promql::Placeholders`]). Counter templates name only their series
//! selectors: the batch wraps them in the exact-increment expression of
//! [`crate::source::increments`], never in `increase()`.
//!
//! Arms are told apart by the template's identity label (e.g. Istio's
//! `destination_workload`): the canary is the workload `web`, the baseline `web-primary`
//! on Kubernetes, or the values set in the local platform's config. cAdvisor series carry
//! no workload, so their pods are attributed through kube-state-metrics' owner series.
//!
//! There are no Envoy (Gateway API) templates: Envoy Gateway puts every backend of a
//! route rule in one upstream cluster, so its `envoy_cluster_*` series cannot tell the
//! canary from the baseline. Use the application's own metrics (`http-*`) or a mesh.

use std::collections::BTreeSet;

use crate::engine::plan::Signal;
use crate::judge::SampleKind;
use crate::source::promql;

/// How a template's series are attributed to workloads (and so to arms).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum IdentityMatch {
    /// The identity label carries the workload name (set by the exporter, the mesh, or a
    /// scrape relabel rule); `$matchers` selects the workloads by it.
    Label,
    /// Per-pod series (cAdvisor) are attributed through their owners, as
    /// kube-state-metrics reports them: pod → ReplicaSet → Deployment. No pod name is
    /// parsed, so StatefulSet, DaemonSet and Job pods named like a Deployment, and
    /// Deployments whose pod names Kubernetes truncated, end in the right arm or none.
    PodOwner,
}

/// The PromQL of a template, by the kind of sample it yields.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Queries {
    /// Requests and errors: two counter selectors, counted exactly per interval
    /// (see [`crate::source::increments`]).
    Counts {
        /// The selector of every request series.
        requests: &'static str,
        /// The selector of the error series.
        errors: &'static str,
    },
    /// A latency histogram: the selector of its `_bucket` counter series, counted exactly.
    Histogram {
        /// The bucket series selector.
        buckets: &'static str,
    },
    /// One gauge value per group (per pod where the template keeps pods apart).
    Values {
        /// Values per group, over `$range`.
        value: &'static str,
        /// Pods that have usage but no limit, counted per group: a utilisation template
        /// reports them as "no limit set" instead of as no data.
        unlimited: Option<&'static str>,
    },
}

/// Label that tells the parts of a batch apart in its one result.
pub const PART_LABEL: &str = "canaryd_part";

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
    /// The labels the template already matches on or groups by: a policy's extra
    /// `labels` may not name them, or they would change what the template counts.
    pub fn matched_labels(&self) -> BTreeSet<String> {
        let exprs: Vec<&str> = match self.queries {
            Queries::Counts { requests, errors } => vec![requests, errors],
            Queries::Histogram { buckets } => vec![buckets],
            Queries::Values { value, unlimited } => [Some(value), unlimited].into_iter().flatten().collect(),
        };
        let mut names: BTreeSet<String> = exprs
            .into_iter()
            .flat_map(|q| {
                promql::matcher_names(&promql::fill(q, &promql::example_placeholders())).unwrap_or_default()
            })
            .collect();
        names.extend([self.identity_label, "le", "pod", PART_LABEL].map(String::from));
        names.extend(self.namespace_label.map(String::from));
        names
    }

    /// The kind of sample the template yields.
    pub fn kind(&self) -> SampleKind {
        match self.queries {
            Queries::Counts { .. } => SampleKind::Counts,
            Queries::Histogram { .. } => SampleKind::Histogram,
            Queries::Values { .. } => SampleKind::Values,
        }
    }
}

const HTTP_REQUESTS: &str = "http_requests_total{$matchers}";
const HTTP_ERRORS: &str = "http_requests_total{$matchers, code=~\"5..\"}";
const HTTP_BUCKETS: &str = "http_request_duration_seconds_bucket{$matchers}";
const ISTIO_REQUESTS: &str = "istio_requests_total{$matchers, reporter=\"destination\"}";
const ISTIO_ERRORS: &str =
    "istio_requests_total{$matchers, reporter=\"destination\", response_code=~\"5..\"}";
const ISTIO_BUCKETS: &str = "istio_request_duration_milliseconds_bucket{$matchers, reporter=\"destination\"}";
const LINKERD_REQUESTS: &str = "response_total{$matchers, direction=\"inbound\"}";
const LINKERD_ERRORS: &str = "response_total{$matchers, direction=\"inbound\", classification=\"failure\"}";
const LINKERD_BUCKETS: &str = "response_latency_ms_bucket{$matchers, direction=\"inbound\"}";

/// Pods of the batch's Deployments, as `{namespace, pod, workload}` = 1, from
/// kube-state-metrics: each pod's owning ReplicaSet, and each ReplicaSet's Deployment.
macro_rules! pod_owners {
    () => {
        "max by (namespace, pod, workload) (label_replace(kube_pod_owner{namespace=~\"$namespaces\", owner_kind=\"ReplicaSet\"}, \"replicaset\", \"$1\", \"owner_name\", \"(.+)\") * on (namespace, replicaset) group_left (workload) max by (namespace, replicaset, workload) (label_replace(kube_replicaset_owner{namespace=~\"$namespaces\", owner_kind=\"Deployment\", owner_name=~\"$workloads\"}, \"workload\", \"$1\", \"owner_name\", \"(.+)\")))"
    };
}
/// Sums a per-`(namespace, pod)` expression into one value per pod of the batch's
/// workloads, labelled with its workload.
macro_rules! per_owned_pod {
    ($per_pod:expr) => {
        concat!(
            "sum by ($by, pod) ((",
            $per_pod,
            ") * on (namespace, pod) group_left (workload) ",
            pod_owners!(),
            ")"
        )
    };
}
/// Counts the pods of each workload that an expression keyed by `(namespace, pod)` holds.
macro_rules! count_owned_pods {
    ($per_pod:expr) => {
        concat!(
            "count by ($by) ((",
            $per_pod,
            ") * on (namespace, pod) group_left (workload) ",
            pod_owners!(),
            ")"
        )
    };
}
/// Application containers only: the pause container and the pod-level cgroup are not usage.
macro_rules! containers {
    ($metric:literal) => {
        concat!($metric, "{namespace=~\"$namespaces\", container!=\"\", container!=\"POD\"$extra}")
    };
}
macro_rules! cpu_usage {
    () => {
        concat!("rate(", containers!("container_cpu_usage_seconds_total"), "[$range])")
    };
}
macro_rules! memory_usage {
    () => {
        concat!("max_over_time(", containers!("container_memory_working_set_bytes"), "[$range])")
    };
}
macro_rules! limits {
    ($resource:literal) => {
        concat!(
            "kube_pod_container_resource_limits{namespace=~\"$namespaces\", resource=\"",
            $resource,
            "\"}"
        )
    };
}
/// Usage of the containers that have a limit, over the sum of those limits: sidecars
/// without a limit are left out of both sides, sidecars with one are in both.
macro_rules! utilisation {
    ($usage:expr, $resource:literal) => {
        per_owned_pod!(concat!(
            "sum by (namespace, pod) (",
            $usage,
            " and on (namespace, pod, container) ",
            limits!($resource),
            ") / sum by (namespace, pod) (",
            limits!($resource),
            ")"
        ))
    };
}
/// Pods with usage and no limit on any container.
macro_rules! unlimited {
    ($usage:expr, $resource:literal) => {
        count_owned_pods!(concat!(
            "sum by (namespace, pod) (",
            $usage,
            ") unless on (namespace, pod) ",
            limits!($resource)
        ))
    };
}

const CADVISOR_CPU: &str = per_owned_pod!(concat!("sum by (namespace, pod) (", cpu_usage!(), ")"));
const CADVISOR_MEMORY: &str = per_owned_pod!(concat!("sum by (namespace, pod) (", memory_usage!(), ")"));
const CADVISOR_CPU_UTIL: &str = utilisation!(cpu_usage!(), "cpu");
const CADVISOR_CPU_UNLIMITED: &str = unlimited!(cpu_usage!(), "cpu");
const CADVISOR_MEMORY_UTIL: &str = utilisation!(memory_usage!(), "memory");
const CADVISOR_MEMORY_UNLIMITED: &str = unlimited!(memory_usage!(), "memory");

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
    cadvisor(
        "container-cpu",
        "CPU cores per pod (cAdvisor + kube-state-metrics owners)",
        Signal::Cpu,
        CADVISOR_CPU,
        None,
    ),
    cadvisor(
        "container-memory",
        "working-set bytes per pod (cAdvisor + kube-state-metrics owners)",
        Signal::Memory,
        CADVISOR_MEMORY,
        None,
    ),
    cadvisor(
        "container-cpu-utilisation",
        "CPU per pod as a fraction of its limits (cAdvisor + kube-state-metrics)",
        Signal::CpuUtilisation,
        CADVISOR_CPU_UTIL,
        Some(CADVISOR_CPU_UNLIMITED),
    ),
    cadvisor(
        "container-memory-utilisation",
        "memory per pod as a fraction of its limits (cAdvisor + kube-state-metrics)",
        Signal::MemoryUtilisation,
        CADVISOR_MEMORY_UTIL,
        Some(CADVISOR_MEMORY_UNLIMITED),
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
    unlimited: Option<&'static str>,
) -> Template {
    Template {
        name,
        description,
        signal,
        quantile: None,
        identity_label: "workload",
        identity_match: IdentityMatch::PodOwner,
        namespace_label: Some("namespace"),
        bucket_scale: 1.0,
        queries: Queries::Values { value, unlimited },
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
    fn templates_name_the_labels_they_match_on() {
        let errors = find("http-error-rate").unwrap().matched_labels();
        for label in ["code", "workload", "namespace", "__name__"] {
            assert!(errors.contains(label), "{label}: {errors:?}");
        }
        assert!(!errors.contains("route"));
        let istio = find("istio-error-rate").unwrap().matched_labels();
        assert!(istio.contains("reporter") && istio.contains("response_code"), "{istio:?}");
        let memory = find("container-memory-utilisation").unwrap().matched_labels();
        assert!(memory.contains("container") && memory.contains("resource"), "{memory:?}");
    }

    #[test]
    fn signal_names_are_their_serialised_form() {
        for t in TEMPLATES {
            assert_eq!(serde_json::to_value(t.signal).unwrap(), t.signal.name(), "{}", t.name);
        }
        assert_eq!(serde_json::to_value(Signal::Custom).unwrap(), Signal::Custom.name());
    }
}
