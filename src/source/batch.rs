//! Batching: every rollout that uses one template (with the same extra labels and
//! window) is served by one query per shard of at most `shard_size` rollouts, grouped
//! `by` workload (and namespace); the result is split back per rollout and arm. The
//! number of queries per interval is the number of template shards: it grows with the
//! rollouts only by one query per `shard_size` of them. A query that cannot be built or
//! is refused makes only its own shard's metrics inconclusive.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::time::Duration;

use crate::engine::plan::{MetricPlan, MetricQuery, Plan};
use crate::engine::{Arms, RolloutId};
use crate::judge::{Histogram, Observation, Sample};
use crate::source::increments;
use crate::source::promql::{self, Placeholders};
use crate::source::scrape::ScrapeIntervals;
use crate::source::templates::{self, IdentityMatch, PART_LABEL, Queries, Template};

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

/// Which part of a batch's result a series belongs to, told apart by [`PART_LABEL`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Part {
    /// Requests per group.
    Requests,
    /// Errors per group.
    Errors,
    /// Bucket counts per group and `le`.
    Buckets,
    /// Counter series with a reset in the interval, per group.
    Resets,
    /// Gauge values per group (and pod).
    Values,
    /// Pods with usage and no limit, per group.
    Unlimited,
}

impl Part {
    /// The value of [`PART_LABEL`] for this part.
    pub fn label(self) -> &'static str {
        match self {
            Part::Requests => "requests",
            Part::Errors => "errors",
            Part::Buckets => "buckets",
            Part::Resets => "resets",
            Part::Values => "values",
            Part::Unlimited => "unlimited",
        }
    }

    fn parse(label: &str) -> Option<Part> {
        [Part::Requests, Part::Errors, Part::Buckets, Part::Resets, Part::Values, Part::Unlimited]
            .into_iter()
            .find(|p| p.label() == label)
    }
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

/// How batches are cut and what their queries need to know about scraping.
#[derive(Clone, Debug, PartialEq)]
pub struct BatchOptions {
    /// Scrape intervals, for the range gauges are read over.
    pub scrape: ScrapeIntervals,
    /// How far back a counter's last sample is looked for: a series silent for longer
    /// counts as gone, and as new when it returns.
    pub lookback: Duration,
    /// Most rollouts in one query. Keeps each query, its regex and the samples it loads
    /// small, and a refused query affects only its own shard.
    pub shard_size: usize,
    /// Shard queries in flight at once: a slow shard does not hold the others back.
    pub concurrency: usize,
}

impl Default for BatchOptions {
    fn default() -> Self {
        BatchOptions {
            scrape: ScrapeIntervals::default(),
            lookback: Duration::from_secs(300),
            shard_size: DEFAULT_SHARD_SIZE,
            concurrency: 4,
        }
    }
}

/// Rollouts per query unless configured: a histogram shard of 500 rollouts with three
/// pods per arm and a dozen buckets loads a few million samples, well inside
/// Prometheus' default `--query.max-samples` of 50 million.
pub const DEFAULT_SHARD_SIZE: usize = 500;

/// One batched query and the metrics it serves.
#[derive(Clone, Debug)]
pub struct Batch {
    /// The PromQL, or why it could not be built (only its own members suffer).
    pub query: Result<String, BatchError>,
    /// The parts its result holds.
    pub parts: Vec<Part>,
    /// How results are split.
    pub identity: Identity,
    /// The (rollout, metric name, arms) served.
    pub members: Vec<(RolloutId, String, Arms)>,
    /// The query for one member alone, rendered on demand for its evidence.
    source: Source,
    window: Duration,
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
    Unknown(String),
}

/// Groups targets into batches for an interval of length `window`: one per template
/// (with its extra labels) or inline query, cut into shards of at most
/// `options.shard_size` rollouts.
pub fn plan(targets: &[Target<'_>], window: Duration, options: &BatchOptions) -> Vec<Batch> {
    let mut groups: BTreeMap<Source, BTreeMap<&RolloutId, Vec<&Target<'_>>>> = BTreeMap::new();
    for t in targets {
        groups.entry(source_of(t.metric)).or_default().entry(t.rollout).or_default().push(t);
    }
    let shard_size = options.shard_size.max(1);
    let mut batches = Vec::new();
    for (source, by_rollout) in groups {
        let rollouts: Vec<Vec<&Target<'_>>> = by_rollout.into_values().collect();
        for shard in rollouts.chunks(shard_size) {
            let members: Vec<&Target<'_>> = shard.iter().flatten().copied().collect();
            batches.push(build(&source, &members, window, options));
        }
    }
    batches
}

fn source_of(metric: &MetricPlan) -> Source {
    match &metric.query {
        MetricQuery::Template { name, labels } => match templates::find(name) {
            Some(template) => Source::Template(template.name, labels.clone()),
            None => Source::Unknown(name.clone()),
        },
        MetricQuery::Inline { promql } => Source::Inline(promql.clone()),
    }
}

const INLINE: Template = Template {
    name: "inline",
    description: "inline query",
    signal: crate::engine::plan::Signal::Custom,
    quantile: None,
    identity_label: "workload",
    identity_match: IdentityMatch::Label,
    namespace_label: Some("namespace"),
    bucket_scale: 1.0,
    queries: Queries::Values { value: "", unlimited: None },
};

fn template_of(source: &Source) -> &'static Template {
    match source {
        Source::Template(name, _) => templates::find(name).unwrap_or(&INLINE),
        Source::Inline(_) | Source::Unknown(_) => &INLINE,
    }
}

fn build(source: &Source, members: &[&Target<'_>], window: Duration, options: &BatchOptions) -> Batch {
    let template = template_of(source);
    let arms: Vec<&Arms> = members.iter().map(|t| t.arms).collect();
    // Templates are fixed and tested; an inline query is checked at load with example
    // values, and here once per batch with the real ones (not again per member).
    let rendered = render(source, &arms, window, options).and_then(|(query, parts)| match source {
        Source::Inline(_) => promql_parser::parser::parse(&query)
            .map(|_| (query, parts))
            .map_err(|e| format!("rendered query does not parse: {e}")),
        _ => Ok((query, parts)),
    });
    let (query, parts) = match rendered {
        Ok((query, parts)) => (Ok(query), parts),
        Err(message) => {
            let metric = members.first().map(|t| t.metric.name.clone()).unwrap_or_default();
            (Err(BatchError { metric, message }), Vec::new())
        }
    };
    Batch {
        query,
        parts,
        identity: Identity {
            label: template.identity_label.into(),
            namespace_label: template.namespace_label.map(String::from),
            bucket_scale: template.bucket_scale,
        },
        members: members.iter().map(|t| (t.rollout.clone(), t.metric.name.clone(), t.arms.clone())).collect(),
        source: source.clone(),
        window,
    }
}

/// Renders the query of `source` for the workloads of `arms`, with the parts it yields.
fn render(
    source: &Source,
    arms: &[&Arms],
    window: Duration,
    options: &BatchOptions,
) -> Result<(String, Vec<Part>), String> {
    let template = template_of(source);
    let (labels, inline) = match source {
        Source::Template(_, labels) => (labels.clone(), None),
        Source::Inline(q) => (BTreeMap::new(), Some(q.as_str())),
        Source::Unknown(name) => return Err(format!("unknown template `{name}`")),
    };
    let workloads: BTreeSet<&str> =
        arms.iter().flat_map(|a| [a.canary.as_str(), a.baseline.as_str()]).collect();
    let namespaces: BTreeSet<&str> = arms.iter().map(|a| a.namespace.as_str()).collect();
    let alternatives =
        |set: &BTreeSet<&str>| set.iter().map(|w| promql::escape_regex(w)).collect::<Vec<_>>().join("|");
    let (workloads, namespaces) = (alternatives(&workloads), alternatives(&namespaces));
    let mut matchers = vec![format!("{}=~\"{workloads}\"", template.identity_label)];
    let mut by = vec![template.identity_label.to_string()];
    if let Some(ns) = template.namespace_label {
        matchers.push(format!("{ns}=~\"{namespaces}\""));
        by.push(ns.to_string());
    }
    let extra: String = labels.iter().map(|(k, v)| format!(", {k}=\"{}\"", promql::escape(v))).collect();
    let matchers = matchers.join(", ") + &extra;
    let scraped = match source {
        Source::Template(name, _) => Some(*name),
        _ => None,
    };
    let (window_text, range, lookback) = (
        prom_duration(window),
        prom_duration(options.scrape.gauge_range(scraped, window)),
        prom_duration(options.lookback.max(window * 2)),
    );
    let by = by.join(", ");
    let values = Placeholders {
        matchers: &matchers,
        namespaces: &namespaces,
        workloads: &workloads,
        extra: &extra,
        window: &window_text,
        range: &range,
        lookback: &lookback,
        by: &by,
    };
    let part = |part: Part, expr: String| {
        format!("label_replace({expr}, \"{PART_LABEL}\", \"{}\", \"\", \"\")", part.label())
    };
    let counted = |selector: &str, le: &str| format!("sum by ($by{le}) ({})", increments::events(selector));
    let resets = |selector: &str| format!("count by ($by) ({})", increments::reset(selector));
    let pieces: Vec<(Part, String)> = match (inline, template.queries) {
        (Some(q), _) => vec![(Part::Values, q.to_string())],
        (None, Queries::Counts { requests, errors }) => vec![
            (Part::Requests, counted(requests, "")),
            (Part::Errors, counted(errors, "")),
            (Part::Resets, resets(requests)),
        ],
        (None, Queries::Histogram { buckets }) => {
            vec![(Part::Buckets, counted(buckets, ", le")), (Part::Resets, resets(buckets))]
        }
        (None, Queries::Values { value, unlimited }) => {
            let mut pieces = vec![(Part::Values, value.to_string())];
            pieces.extend(unlimited.map(|u| (Part::Unlimited, u.to_string())));
            pieces
        }
    };
    let parts = pieces.iter().map(|(p, _)| *p).collect();
    let query = pieces.into_iter().map(|(p, expr)| part(p, promql::fill(&expr, &values))).collect::<Vec<_>>();
    Ok((query.join(" or "), parts))
}

/// The query `template` sends for one rollout, `shop/web` against `shop/web-primary`,
/// over a 30 s interval with the default options: what `canaryd templates --verbose` shows.
pub fn example_query(template: &'static Template) -> String {
    let arms = Arms { namespace: "shop".into(), canary: "web".into(), baseline: "web-primary".into() };
    let source = Source::Template(template.name, BTreeMap::new());
    match render(&source, &[&arms], Duration::from_secs(30), &BatchOptions::default()) {
        Ok((query, _)) => query,
        Err(e) => e,
    }
}

/// A duration as PromQL writes it (whole seconds or milliseconds).
pub fn prom_duration(d: Duration) -> String {
    if d.subsec_millis() == 0 { format!("{}s", d.as_secs()) } else { format!("{}ms", d.as_millis()) }
}

/// The result of a batch's query at one evaluation time, or why it failed.
pub type BatchResult = Result<Vec<Series>, String>;

impl Batch {
    /// The query that measures one member alone: what its evidence names (none when the
    /// batch's query could not be built; the observation's error says why).
    pub fn query_for(&self, arms: &Arms, options: &BatchOptions) -> Option<String> {
        self.query.as_ref().ok()?;
        render(&self.source, &[arms], self.window, options).ok().map(|(query, _)| query)
    }
}

/// The query that measures one arm of a rollout alone over `window`: what a decision's
/// evidence names for that arm. Rendered on demand, for the few verdicts a decision
/// keeps, never for every member of every batch on every tick. `None` when the metric's
/// query cannot be built (its observation's error says why).
pub fn arm_query(
    metric: &MetricPlan,
    namespace: &str,
    workload: &str,
    window: Duration,
    options: &BatchOptions,
) -> Option<String> {
    let arm = Arms { namespace: namespace.into(), canary: workload.into(), baseline: workload.into() };
    render(&source_of(metric), &[&arm], window, options).ok().map(|(query, _)| query)
}

/// The series of one workload in a batch's result, by part.
type Found<'s> = BTreeMap<Part, Vec<&'s Series>>;

/// Indexes a result by `(namespace, workload)` (namespace empty where the template has
/// none), dropping non-finite values (no data) and series of no known part.
fn index<'s>(identity: &Identity, series: &'s [Series]) -> HashMap<(&'s str, &'s str), Found<'s>> {
    let mut index: HashMap<(&str, &str), Found<'s>> = HashMap::new();
    for s in series {
        let (labels, value) = s;
        let part = labels.get(PART_LABEL).and_then(|p| Part::parse(p));
        let workload = labels.get(&identity.label);
        let namespace = match &identity.namespace_label {
            Some(ns) => labels.get(ns).map(String::as_str),
            None => Some(""),
        };
        if let (Some(part), Some(workload), Some(namespace), true) =
            (part, workload, namespace, value.is_finite())
        {
            index.entry((namespace, workload.as_str())).or_default().entry(part).or_default().push(s);
        }
    }
    index
}

/// Splits a batch's result back into one observation per (rollout, metric). Linear in
/// the result and the members: the result is indexed by workload once. Observations
/// name no query: a decision's evidence renders its own with [`arm_query`].
pub fn split(batch: &Batch, result: &BatchResult) -> Vec<((RolloutId, String), Observation)> {
    let series: Result<&[Series], String> = match (&batch.query, result) {
        (Err(e), _) => Err(e.to_string()),
        (Ok(_), Err(e)) => Err(e.clone()),
        (Ok(_), Ok(series)) => Ok(series),
    };
    let index = series.as_ref().map(|s| index(&batch.identity, s)).unwrap_or_default();
    batch
        .members
        .iter()
        .map(|(rollout, metric, arms)| {
            let observation = match &series {
                Err(error) => Observation { error: Some(error.clone()), ..Default::default() },
                Ok(_) => {
                    let namespace = if batch.identity.namespace_label.is_some() { arms.namespace.as_str() } else { "" };
                    let canary = ArmReading::of(batch, index.get(&(namespace, arms.canary.as_str())));
                    let baseline = ArmReading::of(batch, index.get(&(namespace, arms.baseline.as_str())));
                    let mut obs = Observation::default();
                    if canary.resets + baseline.resets > 0.0 {
                        obs.approximate = Some(format!(
                            "counter reset in the interval (canary {:.0}, baseline {:.0} series): events between the last scrape and a restart are unseen",
                            canary.resets, baseline.resets
                        ));
                    }
                    if canary.unlimited + baseline.unlimited > 0.0 {
                        obs.error = Some(format!(
                            "no limit set: {:.0} canary and {:.0} baseline pods have usage but no limit, so utilisation cannot be computed",
                            canary.unlimited, baseline.unlimited
                        ));
                    }
                    obs.canary = canary.sample;
                    obs.baseline = baseline.sample;
                    obs
                }
            };
            ((rollout.clone(), metric.clone()), observation)
        })
        .collect()
}

/// What a batch's result says about one arm.
struct ArmReading {
    sample: Option<Sample>,
    resets: f64,
    unlimited: f64,
}

impl ArmReading {
    fn of(batch: &Batch, found: Option<&Found<'_>>) -> ArmReading {
        let empty = Vec::new();
        let part = |p: Part| found.and_then(|f| f.get(&p)).unwrap_or(&empty);
        let sum = |p: Part| part(p).iter().map(|s| s.1).sum::<f64>();
        let sample = match batch.parts.first() {
            // No request series is no data; no error series while requests exist means
            // no errors happened.
            Some(Part::Requests) if !part(Part::Requests).is_empty() => {
                Some(Sample::Counts { requests: sum(Part::Requests), events: sum(Part::Errors) })
            }
            Some(Part::Buckets) => {
                let mut buckets: BTreeMap<u64, (f64, f64)> = BTreeMap::new();
                for (labels, value) in part(Part::Buckets).iter().copied() {
                    let Some(le) = labels.get("le").and_then(|le| parse_le(le)) else { continue };
                    let bound = if le.is_finite() { le * batch.identity.bucket_scale } else { le };
                    buckets.entry(bound.to_bits()).or_insert((bound, 0.0)).1 += value;
                }
                let mut buckets: Vec<(f64, f64)> = buckets.into_values().collect();
                buckets.sort_by(|a, b| a.0.total_cmp(&b.0));
                (!buckets.is_empty()).then_some(Sample::Histogram(Histogram { buckets }))
            }
            Some(Part::Values) => {
                let values: Vec<f64> = part(Part::Values).iter().map(|s| s.1).collect();
                (!values.is_empty()).then_some(Sample::Values { values })
            }
            _ => None,
        };
        ArmReading { sample, resets: sum(Part::Resets), unlimited: sum(Part::Unlimited) }
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
