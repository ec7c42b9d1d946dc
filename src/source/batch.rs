//! Batching: every rollout that uses one template (with the same extra labels and
//! window) is served by one query, grouped `by` workload (and namespace); the result is
//! split back per rollout and arm. The number of queries per interval depends on the
//! templates in use, never on the number of rollouts.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use crate::engine::RolloutId;
use crate::engine::plan::{MetricPlan, MetricQuery};
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

/// Which PromQL of a batch a result belongs to.
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

/// One batched query (one or two PromQL expressions) and the metrics it serves.
#[derive(Clone, Debug)]
pub struct Batch {
    /// The PromQL per part.
    pub queries: Vec<(Part, String)>,
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
    let fill = |q: &str| {
        q.replace("$matchers", &matchers.join(", "))
            .replace("$window", &prom_duration(window))
            .replace("$by", &by.join(", "))
    };
    let queries = match (inline, template.queries) {
        (Some(q), _) => vec![(Part::Values, fill(q))],
        (None, Queries::Counts { requests, errors }) => {
            vec![(Part::Requests, fill(requests)), (Part::Errors, fill(errors))]
        }
        (None, Queries::Histogram { buckets }) => vec![(Part::Buckets, fill(buckets))],
        (None, Queries::Values { value }) => vec![(Part::Values, fill(value))],
    };
    for (_, q) in &queries {
        if let Err(e) = promql_parser::parser::parse(q) {
            let metric = members.first().map(|t| t.metric.name.clone()).unwrap_or_default();
            return Err(BatchError { metric, message: format!("rendered query does not parse ({e}): {q}") });
        }
    }
    Ok(Batch {
        queries,
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

/// Results of one batch for one evaluation time, by part; an error stands for the part.
pub type PartResults = BTreeMap<Part, Result<Vec<Series>, String>>;

/// Splits a batch's results back into one observation per (rollout, metric).
pub fn split(batch: &Batch, results: &PartResults) -> Vec<((RolloutId, String), Observation)> {
    let query = batch.queries.iter().map(|(_, q)| q.as_str()).collect::<Vec<_>>().join("\n");
    let failure = results.values().find_map(|r| r.as_ref().err()).cloned();
    batch
        .members
        .iter()
        .map(|(rollout, metric, arms)| {
            let observation = match &failure {
                Some(error) => Observation {
                    query: Some(query.clone()),
                    error: Some(error.clone()),
                    ..Default::default()
                },
                None => Observation {
                    canary: arm_sample(batch, results, &arms.namespace, &arms.canary),
                    baseline: arm_sample(batch, results, &arms.namespace, &arms.baseline),
                    query: Some(query.clone()),
                    error: None,
                },
            };
            ((rollout.clone(), metric.clone()), observation)
        })
        .collect()
}

fn arm_sample(batch: &Batch, results: &PartResults, namespace: &str, workload: &str) -> Option<Sample> {
    let id = &batch.identity;
    let mine = |part: Part| -> Vec<&Series> {
        let Some(Ok(series)) = results.get(&part) else { return Vec::new() };
        series
            .iter()
            .filter(|(labels, value)| {
                value.is_finite()
                    && labels.get(&id.label).map(String::as_str) == Some(workload)
                    && id
                        .namespace_label
                        .as_ref()
                        .is_none_or(|ns| labels.get(ns).map(String::as_str) == Some(namespace))
            })
            .collect()
    };
    let sum = |series: &[&Series]| series.iter().map(|s| s.1).sum::<f64>();
    if results.contains_key(&Part::Requests) {
        let requests = mine(Part::Requests);
        if requests.is_empty() {
            return None;
        }
        // No error series while requests exist means no errors happened.
        return Some(Sample::Counts { requests: sum(&requests), events: sum(&mine(Part::Errors)) });
    }
    if results.contains_key(&Part::Buckets) {
        let mut buckets: BTreeMap<u64, (f64, f64)> = BTreeMap::new();
        for (labels, value) in mine(Part::Buckets) {
            let Some(le) = labels.get("le").and_then(|le| parse_le(le)) else { continue };
            let bound = if le.is_finite() { le * id.bucket_scale } else { le };
            buckets.entry(bound.to_bits()).or_insert((bound, 0.0)).1 += value;
        }
        let mut buckets: Vec<(f64, f64)> = buckets.into_values().collect();
        buckets.sort_by(|a, b| a.0.total_cmp(&b.0));
        return (!buckets.is_empty()).then_some(Sample::Histogram(Histogram { buckets }));
    }
    let values: Vec<f64> = mine(Part::Values).iter().map(|s| s.1).collect();
    (!values.is_empty()).then_some(Sample::Values { values })
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
