//! Policy validation: checks a spec and compiles it into the engine's [`Plan`],
//! reporting every problem with its field path rather than stopping at the first.

use std::collections::BTreeSet;
use std::time::Duration;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;

use crate::duration;
use crate::engine::plan::{
    DEFAULT_PROGRESS_DEADLINE, MetricPlan, MetricQuery, NotifyPlan, Plan, RouterKind, SecretSource, Severity,
    Signal, SlackRoute, Trigger, TriggerCondition, WebhookRoute,
};
use crate::judge::{DEFAULT_WINDOW, Direction, KAYENTA_TOLERANCE, SampleKind, TEST_NAMES, TestConfig};
use crate::policy::model::{AnalysisSpec, MetricSpec, PolicySpec, SlackSpec, TriggerSpec, WebhookSpec};
use crate::source::promql;
use crate::source::scrape::ScrapeIntervals;
use crate::source::templates;

/// Default false rollback budget of a sequential metric.
const DEFAULT_ALPHA: f64 = 0.05;
/// The longest duration a policy may state (a step, an interval, a deadline).
const MAX_DURATION: Duration = Duration::from_secs(30 * 24 * 3600);
/// The shortest analysis interval: Prometheus itself resolves no finer than seconds.
const MIN_INTERVAL: Duration = Duration::from_secs(1);

/// Kayenta's confidence for the Mann-Whitney shift interval.
const MANN_WHITNEY_CONFIDENCE: f64 = 0.98;
/// Most points per arm a Mann-Whitney window may keep: bounds each judgement's cost.
const MAX_WINDOW: usize = 200;

/// One problem in a spec: the field path and what is wrong with it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FieldProblem {
    /// Path such as `spec.traffic.steps[1]`.
    pub path: String,
    /// Why the value is wrong.
    pub message: String,
}

/// Collects problems while walking a spec.
#[derive(Default)]
struct Problems(Vec<FieldProblem>);

impl Problems {
    fn add(&mut self, path: impl Into<String>, message: impl Into<String>) {
        self.0.push(FieldProblem { path: path.into(), message: message.into() });
    }

    fn duration(&mut self, path: &str, text: &str) -> std::time::Duration {
        match duration::parse(text) {
            Ok(d) if d > MAX_DURATION => {
                self.add(
                    path,
                    format!("`{text}` is longer than {}: surely a typo", duration::format(MAX_DURATION)),
                );
                d
            }
            Ok(d) => d,
            Err(e) => {
                self.add(path, e);
                std::time::Duration::ZERO
            }
        }
    }
}

/// Validates `spec` and compiles it. `policy` names it in the plan (`ns/name`). With
/// `scrape`, an analysis interval shorter than a template's scrape interval is refused.
pub fn compile(
    policy: &str,
    spec: &PolicySpec,
    scrape: Option<&ScrapeIntervals>,
) -> Result<Plan, Vec<FieldProblem>> {
    let mut p = Problems::default();
    check_selector(&mut p, &spec.selector);

    let traffic = &spec.traffic;
    let router = check_router(&mut p, &traffic.router);
    let steps = check_steps(&mut p, &traffic.steps);
    let step_duration = p.duration("spec.traffic.stepDuration", &traffic.step_duration);

    let analysis = &spec.analysis;
    let interval = p.duration("spec.analysis.interval", &analysis.interval);
    if !interval.is_zero() && interval < MIN_INTERVAL {
        p.add("spec.analysis.interval", format!("`{}` is shorter than 1s", analysis.interval));
    }
    // Durations that did not parse are zero and already reported: compare only the others.
    if !interval.is_zero() && !step_duration.is_zero() && step_duration < interval {
        p.add(
            "spec.traffic.stepDuration",
            format!(
                "{} is shorter than the analysis interval ({}): a step must hold at least one analysed interval",
                traffic.step_duration, analysis.interval
            ),
        );
    }
    let progress_deadline = check_progress_deadline(
        &mut p,
        analysis.progress_deadline.as_deref(),
        step_duration,
        &traffic.step_duration,
    );
    check_limits(&mut p, analysis);
    let (metrics, names) = compile_metrics(&mut p, &analysis.metrics);

    if let Some(scrape) = scrape {
        check_interval(&mut p, scrape, interval, &metrics);
    }

    let triggers = compile_triggers(&mut p, &spec.triggers, &names);
    let notify = NotifyPlan {
        slack: spec.notify.slack.as_ref().and_then(|s| compile_slack(&mut p, policy, s)),
        webhook: spec.notify.webhook.as_ref().and_then(|w| compile_webhook(&mut p, w)),
    };

    // An unknown router is among the problems.
    let (Some(router), true) = (router, p.0.is_empty()) else {
        return Err(p.0);
    };
    Ok(Plan {
        policy: policy.to_string(),
        router,
        steps,
        step_duration,
        interval,
        failure_limit: analysis.failure_limit,
        inconclusive_limit: analysis.inconclusive_limit,
        min_sample_size: analysis.min_sample_size,
        progress_deadline,
        metrics,
        triggers,
        notify,
    })
}

fn check_router(p: &mut Problems, router: &str) -> Option<RouterKind> {
    let kind = RouterKind::parse(router);
    if kind.is_none() {
        p.add(
            "spec.traffic.router",
            format!(
                "unknown router `{router}`; expected one of {}",
                RouterKind::ALL.map(RouterKind::name).join(", ")
            ),
        );
    }
    kind
}

/// The progress deadline written, or its default: the larger of 30m and twice the step,
/// so that a long step never gives up before it could pass.
fn check_progress_deadline(
    p: &mut Problems,
    written: Option<&str>,
    step: Duration,
    step_text: &str,
) -> Duration {
    let Some(text) = written else {
        return DEFAULT_PROGRESS_DEADLINE.max(step.saturating_mul(2));
    };
    let deadline = p.duration("spec.analysis.progressDeadline", text);
    if !deadline.is_zero() && deadline < step {
        p.add(
            "spec.analysis.progressDeadline",
            format!("{text} is shorter than the step duration ({step_text}): a step would give up before it could pass"),
        );
    }
    deadline
}

fn check_limits(p: &mut Problems, analysis: &AnalysisSpec) {
    if analysis.failure_limit == 0 {
        p.add("spec.analysis.failureLimit", "must be at least 1");
    }
    if analysis.inconclusive_limit == 0 {
        p.add("spec.analysis.inconclusiveLimit", "must be at least 1");
    }
    if analysis.metrics.is_empty() {
        p.add("spec.analysis.metrics", "at least one metric is needed: promotion requires evidence");
    }
}

/// The metrics that compile, and the names of all of them (a trigger may name any).
fn compile_metrics<'a>(p: &mut Problems, specs: &'a [MetricSpec]) -> (Vec<MetricPlan>, BTreeSet<&'a str>) {
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

fn compile_triggers(p: &mut Problems, specs: &[TriggerSpec], metrics: &BTreeSet<&str>) -> Vec<Trigger> {
    let mut triggers: Vec<Trigger> = specs
        .iter()
        .enumerate()
        .filter_map(|(i, t)| compile_trigger(p, &format!("spec.triggers[{i}]"), t, metrics))
        .collect();
    name_health_checks(&mut triggers, specs);
    triggers
}

/// A policy's own JSON webhook: its URL is read from the variable it names, at send time.
fn compile_webhook(p: &mut Problems, webhook: &WebhookSpec) -> Option<WebhookRoute> {
    if is_env_name(&webhook.url_env) {
        return Some(WebhookRoute { url: SecretSource::Env { name: webhook.url_env.clone() } });
    }
    p.add(
        "spec.notify.webhook.urlEnv",
        format!("`{}` is not an environment variable name (letters, digits, `_`)", webhook.url_env),
    );
    None
}

/// The policy's Slack route; `None` (and a problem) when its webhook is not set right.
fn compile_slack(p: &mut Problems, policy: &str, slack: &SlackSpec) -> Option<SlackRoute> {
    if !(slack.channel.starts_with('#') || slack.channel.starts_with('C')) {
        p.add("spec.notify.slack.channel", "expected a channel such as `#deploys` or an ID");
    }
    let min_severity = match slack.min_severity.as_deref() {
        None | Some("info") => Severity::Info,
        Some("warning") => Severity::Warning,
        Some("critical") => Severity::Critical,
        Some(other) => {
            p.add(
                "spec.notify.slack.minSeverity",
                format!("`{other}` is not a severity; expected info, warning or critical"),
            );
            Severity::Info
        }
    };
    let webhook = slack_webhook(p, policy, slack)?;
    Some(SlackRoute {
        channel: slack.channel.clone(),
        webhook,
        min_severity,
        step_advanced: slack.step_advanced,
    })
}

/// Where the Slack webhook's URL is read from: an environment variable, or a Secret in
/// the policy's namespace.
fn slack_webhook(p: &mut Problems, policy: &str, slack: &SlackSpec) -> Option<SecretSource> {
    match (&slack.webhook_env, &slack.webhook_secret) {
        (Some(name), None) if is_env_name(name) => Some(SecretSource::Env { name: name.clone() }),
        (Some(name), None) => {
            p.add(
                "spec.notify.slack.webhookEnv",
                format!("`{name}` is not an environment variable name (letters, digits, `_`)"),
            );
            None
        }
        (None, Some(secret)) => Some(SecretSource::KubernetesSecret {
            namespace: policy
                .split_once('/')
                .map(|(ns, _)| ns)
                .filter(|ns| *ns != "cluster")
                .unwrap_or("")
                .into(),
            name: secret.name.clone(),
            key: secret.key.clone(),
        }),
        _ => {
            p.add("spec.notify.slack", "set exactly one of webhookSecret and webhookEnv");
            None
        }
    }
}

fn is_env_name(name: &str) -> bool {
    !name.is_empty()
        && !name.starts_with(|c: char| c.is_ascii_digit())
        && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
}

/// The interval must hold a scrape of every template it reads; the template with the
/// longest scrape interval decides.
fn check_interval(p: &mut Problems, scrape: &ScrapeIntervals, interval: Duration, metrics: &[MetricPlan]) {
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

fn check_selector(p: &mut Problems, selector: &LabelSelector) {
    let labels = selector.match_labels.as_ref().filter(|m| !m.is_empty());
    let exprs = selector.match_expressions.as_ref().filter(|e| !e.is_empty());
    if labels.is_none() && exprs.is_none() {
        p.add(
            "spec.selector",
            "empty selector would match every Deployment; add matchLabels or matchExpressions",
        );
    }
    for (key, value) in labels.into_iter().flatten() {
        let path = format!("spec.selector.matchLabels.{key}");
        if let Err(e) = check_label_key(key) {
            p.add(&path, e);
        }
        if let Err(e) = check_label_value(value) {
            p.add(&path, e);
        }
    }
    for (i, r) in exprs.into_iter().flatten().enumerate() {
        let path = format!("spec.selector.matchExpressions[{i}]");
        if let Err(e) = check_label_key(&r.key) {
            p.add(format!("{path}.key"), e);
        }
        let values = r.values.as_deref().unwrap_or_default();
        match r.operator.as_str() {
            "In" | "NotIn" if values.is_empty() => {
                p.add(format!("{path}.values"), format!("operator {} needs at least one value", r.operator))
            }
            "Exists" | "DoesNotExist" if !values.is_empty() => {
                p.add(format!("{path}.values"), format!("operator {} takes no values", r.operator))
            }
            "In" | "NotIn" | "Exists" | "DoesNotExist" => {}
            other => p.add(
                format!("{path}.operator"),
                format!("unknown operator `{other}`; expected In, NotIn, Exists or DoesNotExist"),
            ),
        }
        for (j, v) in values.iter().enumerate() {
            if let Err(e) = check_label_value(v) {
                p.add(format!("{path}.values[{j}]"), e);
            }
        }
    }
}

/// Kubernetes label key: optional DNS prefix, then a name of at most 63 characters.
fn check_label_key(key: &str) -> Result<(), String> {
    let name = key.rsplit_once('/').map_or(key, |(_, n)| n);
    if name.is_empty() || name.len() > 63 || !is_label_token(name) {
        return Err(format!("`{key}` is not a valid label key"));
    }
    Ok(())
}

/// Kubernetes label value: at most 63 alphanumerics, `-`, `_`, `.`, starting and ending
/// alphanumeric (or empty).
fn check_label_value(value: &str) -> Result<(), String> {
    if value.len() > 63 || !(value.is_empty() || is_label_token(value)) {
        return Err(format!("`{}` is not a valid label value", value.escape_debug()));
    }
    Ok(())
}

fn is_label_token(s: &str) -> bool {
    let ok_end = |c: Option<char>| c.is_some_and(|c| c.is_ascii_alphanumeric());
    ok_end(s.chars().next())
        && ok_end(s.chars().last())
        && s.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
}

fn check_steps(p: &mut Problems, steps: &[i64]) -> Vec<u8> {
    if steps.is_empty() {
        p.add("spec.traffic.steps", "at least one step is needed, ending at 100");
        return Vec::new();
    }
    for (i, &w) in steps.iter().enumerate() {
        if !(1..=100).contains(&w) {
            p.add(format!("spec.traffic.steps[{i}]"), format!("weight {w} is outside 1-100"));
        }
        if i > 0 && w <= steps[i - 1] {
            p.add(
                format!("spec.traffic.steps[{i}]"),
                format!("weight {w} does not increase on the previous step ({})", steps[i - 1]),
            );
        }
    }
    if steps.last() != Some(&100) {
        p.add("spec.traffic.steps", "the last step must be 100 (promotion)");
    } else if steps.len() < 2 {
        p.add("spec.traffic.steps", "at least one step below 100 is needed: the canary is analysed against a baseline that still serves traffic");
    }
    steps.iter().map(|&w| w.clamp(0, 100) as u8).collect()
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
                p.add(
                    format!("{path}.template"),
                    format!("unknown template `{name}`; expected one of {}", templates::names().join(", ")),
                );
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
    if m.alpha.is_some() && m.test != "sequential" {
        p.add(format!("{path}.alpha"), "only the sequential test takes alpha");
    }
    if m.margin.is_some() && m.test != "sequential" {
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
    check_test_fields(p, path, m, kind);
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
        other => {
            p.add(
                format!("{path}.test"),
                format!("unknown test `{other}`; expected one of {}", TEST_NAMES.join(", ")),
            );
            None
        }
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
fn check_name(name: &str) -> Result<(), String> {
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

fn compile_trigger(
    p: &mut Problems,
    path: &str,
    t: &TriggerSpec,
    metrics: &BTreeSet<&str>,
) -> Option<Trigger> {
    let kinds = [t.metric.is_some(), t.alert.is_some(), t.health_check.is_some()];
    if kinds.iter().filter(|k| **k).count() != 1 {
        p.add(path, "set exactly one of metric, alert and healthCheck");
        return None;
    }
    let bounds = [t.above, t.below, t.ratio_above];
    if let Some(Err(why)) = t.name.as_deref().map(check_name) {
        p.add(format!("{path}.name"), why);
    }
    if let Some(r) = t.ratio_above.filter(|r| r.is_nan() || *r <= 0.0) {
        p.add(
            format!("{path}.ratioAbove"),
            format!("{r} is not above 0: a ratio of two rates is never below it"),
        );
    }
    let condition = if let Some(metric) = &t.metric {
        if !metrics.contains(metric.as_str()) {
            p.add(format!("{path}.metric"), format!("`{metric}` is not a metric of spec.analysis.metrics"));
        }
        if bounds.iter().all(Option::is_none) {
            p.add(path, "a metric trigger needs above, below or ratioAbove");
        }
        TriggerCondition::Metric {
            metric: metric.clone(),
            above: t.above,
            below: t.below,
            ratio_above: t.ratio_above,
        }
    } else {
        if bounds.iter().any(Option::is_some) {
            p.add(path, "above, below and ratioAbove apply to metric triggers only");
        }
        if let Some(alert) = &t.alert {
            if !promql::is_metric_name(alert) {
                p.add(
                    format!("{path}.alert"),
                    format!("`{}` is not a valid alert name", alert.escape_debug()),
                );
            }
            TriggerCondition::Alert { alert: alert.clone() }
        } else {
            let h = t.health_check.as_ref()?;
            let probe = h.url.replace("{{workload}}", "w").replace("{{namespace}}", "n");
            match url::Url::parse(&probe) {
                Ok(u) if matches!(u.scheme(), "http" | "https") => {}
                _ => p.add(format!("{path}.healthCheck.url"), format!("`{}` is not an http(s) URL", h.url)),
            }
            if h.consecutive_failures == 0 {
                p.add(format!("{path}.healthCheck.consecutiveFailures"), "must be at least 1");
            }
            if !(100..=599).contains(&h.expected_status) {
                p.add(format!("{path}.healthCheck.expectedStatus"), "must be an HTTP status (100-599)");
            }
            let timeout = p.duration(&format!("{path}.healthCheck.timeout"), &h.timeout);
            TriggerCondition::HealthCheck {
                url: h.url.clone(),
                expected_status: h.expected_status,
                consecutive_failures: h.consecutive_failures,
                timeout,
            }
        }
    };
    let name = t.name.clone().unwrap_or_else(|| describe(&condition));
    Some(Trigger { name, condition })
}

/// Unnamed health checks are called `health` (then `health-2`, …): the name under which
/// their probe results are recorded and replayed. (A trigger that did not compile was
/// reported, and the plan is refused, so the two lists line up whenever it matters.)
fn name_health_checks(triggers: &mut [Trigger], specs: &[TriggerSpec]) {
    let mut n = 0;
    for (t, spec) in triggers.iter_mut().zip(specs) {
        if spec.name.is_none() && matches!(t.condition, TriggerCondition::HealthCheck { .. }) {
            n += 1;
            t.name = if n == 1 { "health".into() } else { format!("health-{n}") };
        }
    }
}

/// A readable name for an unnamed trigger.
fn describe(c: &TriggerCondition) -> String {
    match c {
        TriggerCondition::Metric { metric, above, below, ratio_above } => {
            let mut parts = vec![];
            if let Some(a) = above {
                parts.push(format!("{metric} > {a}"));
            }
            if let Some(b) = below {
                parts.push(format!("{metric} < {b}"));
            }
            if let Some(r) = ratio_above {
                parts.push(format!("{metric} > {r}x baseline"));
            }
            parts.join(" or ")
        }
        TriggerCondition::Alert { alert } => format!("alert {alert} firing"),
        TriggerCondition::HealthCheck { url, consecutive_failures, .. } => {
            format!("{consecutive_failures} failed health checks of {url}")
        }
    }
}

#[cfg(test)]
mod tests {
    use crate::policy::load_str;

    fn problems(spec: &str) -> Vec<String> {
        let text = format!(
            "apiVersion: canaryd.io/v1alpha1\nkind: CanaryPolicy\nmetadata: {{name: p}}\nspec:\n  selector: {{matchLabels: {{a: b}}}}\n{spec}"
        );
        load_str("p.yaml", &text)
            .problems
            .iter()
            .map(|p| format!("{}: {}", p.path.clone().unwrap_or_default(), p.message))
            .collect()
    }

    #[test]
    fn a_lone_100_step_is_refused() {
        let found = problems(
            "  traffic: {steps: [100]}\n  analysis: {metrics: [{name: e, template: http-error-rate, test: sequential}]}\n",
        );
        assert_eq!(found.len(), 1, "{found:?}");
        assert!(found[0].starts_with("spec.traffic.steps: at least one step below 100"), "{found:?}");
    }

    #[test]
    fn tests_must_fit_the_metric_kind() {
        let found = problems(
            "  analysis:\n    metrics:\n      - {name: m, template: container-memory, test: sequential}\n      - {name: q, template: http-error-rate, test: ratio, quantile: 0.9, max: 2}\n      - {name: r, template: http-error-rate, test: ratio}\n",
        );
        assert_eq!(
            found,
            [
                "spec.analysis.metrics[0].test: sequential tests need event counts (error or latency templates); use ratio or mann-whitney for gauges",
                "spec.analysis.metrics[1].quantile: only latency (histogram) metrics take a quantile",
                "spec.analysis.metrics[2]: test ratio needs min or max",
            ]
        );
    }

    const METRICS: &str = "    metrics: [{name: e, template: http-error-rate, test: sequential}]\n";

    #[test]
    fn without_a_progress_deadline_a_step_waits_the_larger_of_30m_and_twice_its_duration() {
        for (step, expected) in [("45m", 90 * 60), ("10m", 30 * 60), ("15m", 30 * 60), ("2h", 4 * 3600)] {
            let text = format!(
                "apiVersion: canaryd.io/v1alpha1\nkind: CanaryPolicy\nmetadata: {{name: p}}\nspec:\n  selector: {{matchLabels: {{a: b}}}}\n  traffic: {{stepDuration: {step}}}\n  analysis:\n{METRICS}"
            );
            let loaded = load_str("p.yaml", &text);
            assert!(loaded.problems.is_empty(), "a {step} step: {:?}", loaded.problems);
            let deadline = loaded.policies[0].plan.progress_deadline;
            assert_eq!(deadline, std::time::Duration::from_secs(expected), "a {step} step");
        }
    }

    #[test]
    fn an_explicit_progress_deadline_shorter_than_the_step_is_refused() {
        let found = problems(&format!(
            "  traffic: {{stepDuration: 45m}}\n  analysis:\n    progressDeadline: 20m\n{METRICS}"
        ));
        assert_eq!(
            found,
            [
                "spec.analysis.progressDeadline: 20m is shorter than the step duration (45m): a step would give up before it could pass"
            ]
        );
    }

    #[test]
    fn every_problem_of_a_spec_is_reported_with_its_field_in_spec_order() {
        let found = problems(
            "  traffic: {router: envoy, steps: [10, 100]}
  analysis:
    failureLimit: 0
    inconclusiveLimit: 0
    metrics:
      - {name: r, template: http-error-rate, test: ratio, min: -1, max: 2, window: 10}
      - {name: w, template: container-memory, test: mann-whitney, direction: up, min: 1, max: 0.5, window: 3}
      - {name: s, template: http-error-rate, test: sequential, min: 0.1, alpha: 1.5, margin: 0.5, max: 0.2}
  notify:
    slack: {channel: deploys, minSeverity: loud, webhookEnv: 1URL}
",
        );
        assert_eq!(
            found,
            [
                "spec.traffic.router: unknown router `envoy`; expected one of gateway-api, istio, replica, nginx",
                "spec.analysis.failureLimit: must be at least 1",
                "spec.analysis.inconclusiveLimit: must be at least 1",
                "spec.analysis.metrics[0].window: only the mann-whitney test takes a window",
                "spec.analysis.metrics[0].min: a ratio bound must be positive",
                "spec.analysis.metrics[1].direction: unknown direction `up`; expected increase, decrease or either",
                "spec.analysis.metrics[1].min: mann-whitney takes max (effect size), not min",
                "spec.analysis.metrics[1].max: the effect size bound is a ratio of at least 1",
                "spec.analysis.metrics[1].window: 3 points is outside 5-200: fewer cannot be judged, more cost too much each interval",
                "spec.analysis.metrics[2].min: the sequential test takes max (a bound on the canary) or margin, not min",
                "spec.analysis.metrics[2].alpha: 1.5 is outside (0, 1)",
                "spec.analysis.metrics[2].margin: 0.5 is below 1: a canary exactly as good as its baseline would count as a regression",
                "spec.analysis.metrics[2]: set max (a bound on the canary) or margin (against the baseline), not both",
                "spec.notify.slack.channel: expected a channel such as `#deploys` or an ID",
                "spec.notify.slack.minSeverity: `loud` is not a severity; expected info, warning or critical",
                "spec.notify.slack.webhookEnv: `1URL` is not an environment variable name (letters, digits, `_`)",
            ]
        );
    }

    #[test]
    fn a_slack_secret_is_read_from_the_policys_own_namespace() {
        use crate::engine::plan::{SecretSource, Severity};
        let route = |kind: &str, metadata: &str| {
            let text = format!(
                "apiVersion: canaryd.io/v1alpha1\nkind: {kind}\nmetadata: {metadata}\nspec:\n  selector: {{matchLabels: {{a: b}}}}\n  analysis: {{metrics: [{{name: e, template: http-error-rate, test: sequential}}]}}\n  notify: {{slack: {{channel: '#deploys', minSeverity: warning, webhookSecret: {{name: hooks, key: slack}}}}}}\n"
            );
            let loaded = load_str("p.yaml", &text);
            assert!(loaded.problems.is_empty(), "{:?}", loaded.problems);
            loaded.policies[0].plan.notify.slack.clone().expect("a Slack route")
        };
        let shop = route("CanaryPolicy", "{name: p, namespace: shop}");
        let secret = |namespace: &str| SecretSource::KubernetesSecret {
            namespace: namespace.into(),
            name: "hooks".into(),
            key: "slack".into(),
        };
        assert_eq!(
            (shop.channel.as_str(), shop.min_severity, shop.webhook),
            ("#deploys", Severity::Warning, secret("shop"))
        );
        // A cluster policy has no namespace of its own, and its route names none.
        assert_eq!(route("ClusterCanaryPolicy", "{name: p}").webhook, secret(""));
    }

    #[test]
    fn a_policy_webhook_names_the_variable_its_url_is_read_from() {
        let metrics = "  analysis: {metrics: [{name: e, template: http-error-rate, test: sequential}]}\n";
        let text = format!(
            "apiVersion: canaryd.io/v1alpha1\nkind: CanaryPolicy\nmetadata: {{name: p}}\nspec:\n  selector: {{matchLabels: {{a: b}}}}\n{metrics}  notify: {{webhook: {{urlEnv: SHOP_DEPLOYS_WEBHOOK}}}}\n"
        );
        let plan = &load_str("p.yaml", &text).policies[0].plan;
        let url = crate::engine::plan::SecretSource::Env { name: "SHOP_DEPLOYS_WEBHOOK".into() };
        assert_eq!(plan.notify.webhook, Some(crate::engine::plan::WebhookRoute { url }));
        let found = problems(&format!("{metrics}  notify: {{webhook: {{urlEnv: 'https://hooks/x'}}}}\n"));
        assert_eq!(
            found,
            [
                "spec.notify.webhook.urlEnv: `https://hooks/x` is not an environment variable name (letters, digits, `_`)"
            ]
        );
    }

    #[test]
    fn alpha_is_split_over_the_sequential_metrics() {
        let text = "apiVersion: canaryd.io/v1alpha1\nkind: CanaryPolicy\nmetadata: {name: p}\nspec:\n  selector: {matchLabels: {a: b}}\n  analysis:\n    metrics:\n      - {name: e, template: http-error-rate, test: sequential, alpha: 0.02}\n      - {name: l, template: http-latency-p99, test: sequential, alpha: 0.02}\n";
        let plan = &load_str("p.yaml", text).policies[0].plan;
        for m in &plan.metrics {
            assert_eq!(
                m.test,
                crate::judge::TestConfig::Sequential {
                    alpha: 0.01,
                    slower_than: None,
                    margin: None,
                    max: None
                }
            );
        }
    }
}
