//! Compiling a policy's metrics: the query (template or inline), the statistical test
//! and its fields, and the analysis interval against the templates' scrape intervals.

use std::collections::BTreeSet;
use std::time::Duration;

use crate::engine::plan::{MetricPlan, MetricQuery, Signal};
use crate::judge::{DEFAULT_WINDOW, Direction, KAYENTA_TOLERANCE, SampleKind, TEST_NAMES, TestConfig};
use crate::policy::model::MetricSpec;
use crate::policy::suggest::did_you_mean;
use crate::policy::validate::problems::Problems;
use crate::source::promql;
use crate::source::scrape::ScrapeIntervals;
use crate::source::templates;

/// Default false rollback budget of a sequential metric.
pub const DEFAULT_ALPHA: f64 = 0.05;
/// Kayenta's confidence for the Mann-Whitney shift interval.
const MANN_WHITNEY_CONFIDENCE: f64 = 0.98;
/// Most points per arm a Mann-Whitney window may keep: bounds each judgement's cost.
const MAX_WINDOW: usize = 200;

/// The metrics that compile, and the names of all of them (a trigger may name any).
pub(super) fn compile_metrics<'a>(
    p: &mut Problems,
    specs: &'a [MetricSpec],
) -> (Vec<MetricPlan>, BTreeSet<&'a str>) {
    let sequential = specs.iter().filter(|m| m.test == "sequential").count().max(1);
    let mut names = BTreeSet::new();
    let metrics = specs
        .iter()
        .enumerate()
        .filter_map(|(i, m)| {
            let path = format!("spec.analysis.metrics[{i}]");
            if !names.insert(m.name.as_str()) {
                p.add(format!("{path}.name"), format!("metric `{}` is defined twice", m.name));
            }
            compile_metric(p, &path, m, sequential)
        })
        .collect();
    (metrics, names)
}

/// The interval must hold a scrape of every template it reads; the template with the
/// longest scrape interval decides.
pub(super) fn check_interval(
    p: &mut Problems,
    scrape: &ScrapeIntervals,
    interval: Duration,
    metrics: &[MetricPlan],
) {
    let slowest = metrics
        .iter()
        .map(|m| match &m.query {
            MetricQuery::Template { name, .. } => Some(name.as_str()),
            MetricQuery::Inline { .. } => None,
        })
        .max_by_key(|template| scrape.of(*template));
    if let Some(why) = slowest.and_then(|template| scrape.interval_problem(template, interval)) {
        p.add("spec.analysis.interval", why);
    }
}

fn compile_metric(p: &mut Problems, path: &str, m: &MetricSpec, sequential: usize) -> Option<MetricPlan> {
    let before = p.0.len();
    if let Err(why) = check_name(&m.name) {
        p.add(format!("{path}.name"), why);
    }
    let (query, signal, kind, default_quantile) = match (&m.template, &m.query) {
        (Some(name), None) => match templates::find(name) {
            Some(t) => (
                MetricQuery::Template { name: name.clone(), labels: m.labels.clone() },
                t.signal,
                t.kind(),
                t.quantile,
            ),
            None => {
                let names = templates::names();
                p.add(
                    format!("{path}.template"),
                    format!(
                        "unknown template `{name}`{}; expected one of {}",
                        did_you_mean(name, names.iter().copied()),
                        names.join(", ")
                    ),
                );
                // What does not depend on the template is still checked.
                check_test_name(p, path, m);
                check_alpha(p, path, m);
                return None;
            }
        },
        (None, Some(promql)) => {
            if let Err(e) = promql::check_inline(promql) {
                p.add(format!("{path}.query"), e);
            }
            (MetricQuery::Inline { promql: promql.clone() }, Signal::Custom, SampleKind::Values, None)
        }
        _ => {
            p.add(path, "set exactly one of template and query");
            return None;
        }
    };
    let matched = match &m.template {
        Some(name) => templates::find(name).map(|t| t.matched_labels()).unwrap_or_default(),
        None => Default::default(),
    };
    for (label, value) in &m.labels {
        if let Err(e) = promql::check_label(label, value) {
            p.add(format!("{path}.labels.{label}"), e);
        } else if matched.contains(label) {
            p.add(
                format!("{path}.labels.{label}"),
                format!(
                    "template {} already matches on `{label}`; another matcher on it would change what the template counts (use an inline query instead)",
                    m.template.as_deref().unwrap_or_default()
                ),
            );
        }
    }
    let quantile = match (m.quantile, kind) {
        (Some(q), SampleKind::Histogram) if !(q > 0.0 && q < 1.0) => {
            p.add(format!("{path}.quantile"), format!("{q} is outside (0, 1)"));
            None
        }
        (Some(_), k) if k != SampleKind::Histogram => {
            p.add(format!("{path}.quantile"), "only latency (histogram) metrics take a quantile");
            None
        }
        (q, _) => q.or(default_quantile),
    };
    // A test name that is a typo says nothing of which fields it takes.
    let known = TEST_NAMES.contains(&m.test.as_str());
    if known && m.alpha.is_some() && m.test != "sequential" {
        p.add(format!("{path}.alpha"), "only the sequential test takes alpha");
    }
    if known && m.margin.is_some() && m.test != "sequential" {
        p.add(format!("{path}.margin"), "only the sequential test takes a margin; ratio takes max");
    }
    let test = compile_test(p, path, m, kind, sequential);
    match test {
        Some(test) if p.0.len() == before => {
            Some(MetricPlan { name: m.name.clone(), query, signal, kind, quantile, test })
        }
        _ => None,
    }
}

fn compile_test(
    p: &mut Problems,
    path: &str,
    m: &MetricSpec,
    kind: SampleKind,
    sequential: usize,
) -> Option<TestConfig> {
    if TEST_NAMES.contains(&m.test.as_str()) {
        check_test_fields(p, path, m, kind);
    }
    match m.test.as_str() {
        "threshold" => {
            need_bound(p, path, m);
            bounds_in_order(p, path, m);
            Some(TestConfig::Threshold { min: m.min, max: m.max })
        }
        "ratio" => {
            need_bound(p, path, m);
            bounds_in_order(p, path, m);
            for (field, v) in [("min", m.min), ("max", m.max)] {
                if v.is_some_and(|v| v <= 0.0) {
                    p.add(format!("{path}.{field}"), "a ratio bound must be positive");
                }
            }
            Some(TestConfig::Ratio { min: m.min, max: m.max })
        }
        "mann-whitney" => Some(compile_mann_whitney(p, path, m)),
        "sequential" => Some(compile_sequential(p, path, m, kind, sequential)),
        _ => {
            check_test_name(p, path, m);
            check_alpha(p, path, m);
            None
        }
    }
}

/// An unknown test, with the nearest known one.
fn check_test_name(p: &mut Problems, path: &str, m: &MetricSpec) {
    if !TEST_NAMES.contains(&m.test.as_str()) {
        p.add(
            format!("{path}.test"),
            format!(
                "unknown test `{}`{}; expected one of {}",
                m.test,
                did_you_mean(&m.test, TEST_NAMES),
                TEST_NAMES.join(", ")
            ),
        );
    }
}

/// An `alpha` outside (0, 1), whatever the test.
fn check_alpha(p: &mut Problems, path: &str, m: &MetricSpec) {
    if let Some(alpha) = m.alpha
        && !(alpha > 0.0 && alpha < 1.0)
    {
        p.add(format!("{path}.alpha"), format!("{alpha} is outside (0, 1)"));
    }
}

/// Fields that only some tests take.
fn check_test_fields(p: &mut Problems, path: &str, m: &MetricSpec, kind: SampleKind) {
    if m.slower_than.is_some() && !(m.test == "sequential" && kind == SampleKind::Histogram) {
        p.add(format!("{path}.slowerThan"), "only sequential tests on latency metrics take slowerThan");
    }
    if m.window.is_some() && m.test != "mann-whitney" {
        p.add(format!("{path}.window"), "only the mann-whitney test takes a window");
    }
    if m.direction.is_some() && m.test != "mann-whitney" {
        p.add(format!("{path}.direction"), "only the mann-whitney test takes a direction");
    }
}

fn need_bound(p: &mut Problems, path: &str, m: &MetricSpec) {
    if m.min.is_none() && m.max.is_none() {
        p.add(path, format!("test {} needs min or max", m.test));
    }
}

fn compile_mann_whitney(p: &mut Problems, path: &str, m: &MetricSpec) -> TestConfig {
    let direction = match m.direction.as_deref().map(|d| (d, Direction::parse(d))) {
        None => Direction::Increase,
        Some((_, Some(d))) => d,
        Some((d, None)) => {
            p.add(
                format!("{path}.direction"),
                format!("unknown direction `{d}`; expected increase, decrease or either"),
            );
            Direction::Increase
        }
    };
    if m.min.is_some() {
        p.add(format!("{path}.min"), "mann-whitney takes max (effect size), not min");
    }
    let max_effect = m.max.unwrap_or(1.0);
    if max_effect < 1.0 {
        p.add(format!("{path}.max"), "the effect size bound is a ratio of at least 1");
    }
    let window = m.window.map_or(DEFAULT_WINDOW, |w| w as usize);
    if !(5..=MAX_WINDOW).contains(&window) {
        p.add(
            format!("{path}.window"),
            format!("{window} points is outside 5-{MAX_WINDOW}: fewer cannot be judged, more cost too much each interval"),
        );
    }
    TestConfig::MannWhitney {
        direction,
        max_effect,
        confidence: MANN_WHITNEY_CONFIDENCE,
        tolerance: KAYENTA_TOLERANCE,
        window,
    }
}

/// A sequential test, with its share (`1 / sequential`) of the policy's false rollback
/// budget.
fn compile_sequential(
    p: &mut Problems,
    path: &str,
    m: &MetricSpec,
    kind: SampleKind,
    sequential: usize,
) -> TestConfig {
    if kind == SampleKind::Values {
        p.add(
            format!("{path}.test"),
            "sequential tests need event counts (error or latency templates); use ratio or mann-whitney for gauges",
        );
    }
    if m.min.is_some() {
        p.add(
            format!("{path}.min"),
            "the sequential test takes max (a bound on the canary) or margin, not min",
        );
    }
    let alpha = m.alpha.unwrap_or(DEFAULT_ALPHA);
    if !(alpha > 0.0 && alpha < 1.0) {
        p.add(format!("{path}.alpha"), format!("{alpha} is outside (0, 1)"));
    }
    if let Some(margin) = m.margin
        && !(margin >= 1.0 && margin.is_finite())
    {
        p.add(
            format!("{path}.margin"),
            format!(
                "{margin} is below 1: a canary exactly as good as its baseline would count as a regression"
            ),
        );
    }
    check_sequential_bound(p, path, m, kind);
    if m.slower_than.is_some() && (m.max.is_some() || m.margin.is_some()) {
        p.add(
            format!("{path}.slowerThan"),
            "with max or margin the bound on slow requests follows from them; drop slowerThan",
        );
    }
    // A bad duration is reported here; the metric is then not compiled at all.
    let slower_than =
        m.slower_than.as_deref().map(|s| p.duration(&format!("{path}.slowerThan"), s).as_secs_f64());
    TestConfig::Sequential { alpha: alpha / sequential as f64, slower_than, margin: m.margin, max: m.max }
}

/// A sequential test's `max`: a bound on the canary's error rate or latency, not beside
/// a margin.
fn check_sequential_bound(p: &mut Problems, path: &str, m: &MetricSpec, kind: SampleKind) {
    match (m.max, kind) {
        (Some(_), _) if m.margin.is_some() => {
            p.add(path, "set max (a bound on the canary) or margin (against the baseline), not both")
        }
        (Some(max), SampleKind::Counts) if !(max > 0.0 && max < 1.0) => {
            p.add(format!("{path}.max"), format!("an error-rate bound must be in (0, 1), not {max}"))
        }
        (Some(max), SampleKind::Histogram) if !(max > 0.0 && max.is_finite()) => p.add(
            format!("{path}.max"),
            format!("a latency bound must be a positive number of seconds, not {max}"),
        ),
        _ => {}
    }
}

/// A name shown in events, logs and terminals: printable, at most 63 characters.
pub(super) fn check_name(name: &str) -> Result<(), String> {
    if name.is_empty() {
        return Err("must not be empty".into());
    }
    if let Some(c) = name.chars().find(|c| c.is_control()) {
        return Err(format!("`{}` contains the control character {c:?}", name.escape_debug()));
    }
    if name.chars().count() > 63 {
        return Err(format!("`{}` is longer than 63 characters", name.escape_debug()));
    }
    Ok(())
}

fn bounds_in_order(p: &mut Problems, path: &str, m: &MetricSpec) {
    if let (Some(min), Some(max)) = (m.min, m.max)
        && min > max
    {
        p.add(path, format!("min {min} is above max {max}: every value would fail"));
    }
}
