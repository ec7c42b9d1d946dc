//! Batching: every rollout that uses one template (with the same extra labels and
//! window) is served by one query, grouped `by` workload (and namespace); the result is
//! split back per rollout and arm. The number of queries per interval depends on the
//! templates in use, never on the number of rollouts.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use crate::engine::RolloutId;
use crate::engine::plan::{MetricPlan, MetricQuery, Plan};
use crate::judge::{Histogram, Observation, Sample};
use crate::source::promql;
use crate::source::templates::{self, IdentityMatch, Queries, Template};

/// The workloads whose series are a rollout's two arms.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct Arms {
    /// Namespace of both workloads.
    pub namespace: String,
    /// The canary's workload name (on Kubernetes: the Deployment, e.g. `web`).
    pub canary: String,
    /// The baseline's workload name (on Kubernetes: `web-primary`).
    pub baseline: String,
}

impl Arms {
    /// The Kubernetes convention: canary `name`, baseline `name-primary`.
    pub fn kubernetes(id: &RolloutId) -> Arms {
        Arms {
            namespace: id.namespace.clone(),
            canary: id.name.clone(),
            baseline: format!("{}-primary", id.name),
        }
    }
}

/// One metric of one rollout to measure.
#[derive(Clone, Debug)]
pub struct Target<'a> {
    /// The rollout.
    pub rollout: &'a RolloutId,
    /// Its arms.
    pub arms: &'a Arms,
    /// The metric.
    pub metric: &'a MetricPlan,
}

impl<'a> Target<'a> {
    /// One target per metric of `plan`.
    pub fn for_plan(plan: &'a Plan, rollout: &'a RolloutId, arms: &'a Arms) -> Vec<Target<'a>> {
        plan.metrics.iter().map(|metric| Target { rollout, arms, metric }).collect()
    }
}

/// Which part of a batch's result a series belongs to.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Part {
    /// Requests per group.
    Requests,
    /// Errors per group.
    Errors,
    /// Bucket counts per group and `le`.
    Buckets,
    /// Gauge values per group (and pod).
    Values,
}

/// How the series of a batch are told apart.
#[derive(Clone, Debug, PartialEq)]
pub struct Identity {
    /// Label naming the workload in results.
    pub label: String,
    /// Label naming the namespace, if the series carry one.
    pub namespace_label: Option<String>,
    /// Seconds per unit of `le`.
    pub bucket_scale: f64,
}

/// Label that tells the parts of a counts query apart in its one result.
pub const PART_LABEL: &str = "canaryd_part";

/// One batched query and the metrics it serves. A counts template's requests and errors
/// travel in one query, told apart by [`PART_LABEL`].
#[derive(Clone, Debug)]
pub struct Batch {
    /// The PromQL.
    pub query: String,
    /// What its series are: one part, or requests and errors by [`PART_LABEL`].
    pub parts: Vec<Part>,
    /// How results are split.
    pub identity: Identity,
    /// The (rollout, metric name, arms) served.
    pub members: Vec<(RolloutId, String, Arms)>,
}

/// A labelled value from a query result.
pub type Series = (BTreeMap<String, String>, f64);

/// A query could not be built; only inline queries can fail here.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("metric {metric}: {message}")]
pub struct BatchError {
    /// The metric.
    pub metric: String,
    /// Why.
    pub message: String,
}

#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum Source {
    Template(&'static str, BTreeMap<String, String>),
    Inline(String),
}

/// Groups targets into batches for an interval of length `window`.
pub fn plan(targets: &[Target<'_>], window: Duration) -> Result<Vec<Batch>, BatchError> {
    let mut groups: BTreeMap<Source, Vec<&Target<'_>>> = BTreeMap::new();
    for t in targets {
        let source = match &t.metric.query {
            MetricQuery::Template { name, labels } => {
                let template = templates::find(name).ok_or_else(|| BatchError {
                    metric: t.metric.name.clone(),
                    message: format!("unknown template `{name}`"),
                })?;
                Source::Template(template.name, labels.clone())
            }
            MetricQuery::Inline { promql } => Source::Inline(promql.clone()),
        };
        groups.entry(source).or_default().push(t);
    }
    groups.into_iter().map(|(source, members)| build(source, &members, window)).collect()
}

const INLINE: Template = Template {
    name: "inline",
    description: "inline query",
    signal: templates::Signal::Custom,
    quantile: None,
    identity_label: "workload",
    identity_match: IdentityMatch::Label,
    namespace_label: Some("namespace"),
    bucket_scale: 1.0,
    queries: Queries::Values { value: "" },
};

fn build(source: Source, members: &[&Target<'_>], window: Duration) -> Result<Batch, BatchError> {
    let (template, labels, inline) = match &source {
        Source::Template(name, labels) => (templates::find(name).unwrap_or(&INLINE), labels.clone(), None),
        Source::Inline(q) => (&INLINE, BTreeMap::new(), Some(q.as_str())),
    };
    let workloads: BTreeSet<&str> =
        members.iter().flat_map(|t| [t.arms.canary.as_str(), t.arms.baseline.as_str()]).collect();
    let namespaces: BTreeSet<&str> = members.iter().map(|t| t.arms.namespace.as_str()).collect();
    let alternatives =
        |set: &BTreeSet<&str>| set.iter().map(|w| promql::escape_regex(w)).collect::<Vec<_>>().join("|");
    let mut matchers = vec![match template.identity_match {
        IdentityMatch::Label => format!("{}=~\"{}\"", template.identity_label, alternatives(&workloads)),
        IdentityMatch::PodName => format!("pod=~\"({})-[a-z0-9]+-[a-z0-9]+\"", alternatives(&workloads)),
    }];
    let mut by = vec![template.identity_label.to_string()];
    if let Some(ns) = template.namespace_label {
        matchers.push(format!("{ns}=~\"{}\"", alternatives(&namespaces)));
        by.push(ns.to_string());
    }
    for (k, v) in &labels {
        matchers.push(format!("{k}=\"{}\"", promql::escape(v)));
    }
    let (matchers, window, by) = (matchers.join(", "), prom_duration(window), by.join(", "));
    let fill = |q: &str| promql::fill(q, &matchers, &window, &by);
    let (query, parts) = match (inline, template.queries) {
        (Some(q), _) => (fill(q), vec![Part::Values]),
        (None, Queries::Counts { requests, errors }) => (
            format!(
                "label_replace({}, \"{PART_LABEL}\", \"requests\", \"\", \"\") or label_replace({}, \"{PART_LABEL}\", \"errors\", \"\", \"\")",
                fill(requests),
                fill(errors)
            ),
            vec![Part::Requests, Part::Errors],
        ),
        (None, Queries::Histogram { buckets }) => (fill(buckets), vec![Part::Buckets]),
        (None, Queries::Values { value }) => (fill(value), vec![Part::Values]),
    };
    if let Err(e) = promql_parser::parser::parse(&query) {
        let metric = members.first().map(|t| t.metric.name.clone()).unwrap_or_default();
        return Err(BatchError { metric, message: format!("rendered query does not parse ({e}): {query}") });
    }
    Ok(Batch {
        query,
        parts,
        identity: Identity {
            label: template.identity_label.into(),
            namespace_label: template.namespace_label.map(String::from),
            bucket_scale: template.bucket_scale,
        },
        members: members.iter().map(|t| (t.rollout.clone(), t.metric.name.clone(), t.arms.clone())).collect(),
    })
}

/// A duration as PromQL writes it (whole seconds or milliseconds).
pub fn prom_duration(d: Duration) -> String {
    if d.subsec_millis() == 0 { format!("{}s", d.as_secs()) } else { format!("{}ms", d.as_millis()) }
}

/// The result of a batch's query at one evaluation time, or why it failed.
pub type BatchResult = Result<Vec<Series>, String>;

/// Splits a batch's result back into one observation per (rollout, metric).
pub fn split(batch: &Batch, result: &BatchResult) -> Vec<((RolloutId, String), Observation)> {
    batch
        .members
        .iter()
        .map(|(rollout, metric, arms)| {
            let observation = match result {
                Err(error) => Observation {
                    query: Some(batch.query.clone()),
                    error: Some(error.clone()),
                    ..Default::default()
                },
                Ok(series) => Observation {
                    canary: arm_sample(batch, series, &arms.namespace, &arms.canary),
                    baseline: arm_sample(batch, series, &arms.namespace, &arms.baseline),
                    query: Some(batch.query.clone()),
                    error: None,
                },
            };
            ((rollout.clone(), metric.clone()), observation)
        })
        .collect()
}

fn part_of(batch: &Batch, labels: &BTreeMap<String, String>) -> Option<Part> {
    match batch.parts.as_slice() {
        [single] => Some(*single),
        _ => match labels.get(PART_LABEL).map(String::as_str) {
            Some("requests") => Some(Part::Requests),
            Some("errors") => Some(Part::Errors),
            _ => None,
        },
    }
}

fn arm_sample(batch: &Batch, series: &[Series], namespace: &str, workload: &str) -> Option<Sample> {
    let id = &batch.identity;
    let mine = |part: Part| -> Vec<&Series> {
        series
            .iter()
            .filter(|(labels, value)| {
                value.is_finite()
                    && part_of(batch, labels) == Some(part)
                    && labels.get(&id.label).map(String::as_str) == Some(workload)
                    && id
                        .namespace_label
                        .as_ref()
                        .is_none_or(|ns| labels.get(ns).map(String::as_str) == Some(namespace))
            })
            .collect()
    };
    let sum = |series: &[&Series]| series.iter().map(|s| s.1).sum::<f64>();
    match batch.parts.first() {
        Some(Part::Requests) => {
            let requests = mine(Part::Requests);
            if requests.is_empty() {
                return None;
            }
            // No error series while requests exist means no errors happened.
            Some(Sample::Counts { requests: sum(&requests), events: sum(&mine(Part::Errors)) })
        }
        Some(Part::Buckets) => {
            let mut buckets: BTreeMap<u64, (f64, f64)> = BTreeMap::new();
            for (labels, value) in mine(Part::Buckets) {
                let Some(le) = labels.get("le").and_then(|le| parse_le(le)) else { continue };
                let bound = if le.is_finite() { le * id.bucket_scale } else { le };
                buckets.entry(bound.to_bits()).or_insert((bound, 0.0)).1 += value;
            }
            let mut buckets: Vec<(f64, f64)> = buckets.into_values().collect();
            buckets.sort_by(|a, b| a.0.total_cmp(&b.0));
            (!buckets.is_empty()).then_some(Sample::Histogram(Histogram { buckets }))
        }
        _ => {
            let values: Vec<f64> = mine(Part::Values).iter().map(|s| s.1).collect();
            (!values.is_empty()).then_some(Sample::Values { values })
        }
    }
}

fn parse_le(le: &str) -> Option<f64> {
    match le {
        "+Inf" | "Inf" | "inf" => Some(f64::INFINITY),
        other => other.parse().ok(),
    }
}

#[cfg(test)]
#[path = "batch_tests.rs"]
mod tests;
