//! Policy validation: checks a spec and compiles it into the engine's [`Plan`],
//! reporting every problem with its field path rather than stopping at the first.

mod gates;
mod metric;
mod notify;
mod problems;
mod route;
mod trigger;

use std::time::Duration;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;

use crate::engine::plan::{DEFAULT_PROGRESS_DEADLINE, NotifyPlan, Plan, RouterKind};
use crate::policy::model::{AnalysisSpec, PolicySpec};
use crate::source::scrape::ScrapeIntervals;
pub use metric::DEFAULT_ALPHA;
use metric::{check_interval, compile_metrics};
use notify::{compile_slack, compile_webhook};
pub use problems::FieldProblem;
use problems::Problems;
use trigger::compile_triggers;

/// The shortest analysis interval: Prometheus itself resolves no finer than seconds.
const MIN_INTERVAL: Duration = Duration::from_secs(1);

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
    route::check_route(&mut p, traffic.route.as_ref(), router);
    route::check_tolerance(&mut p, traffic.tolerance, router);
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
    let (gates, gate_timeout) = gates::compile_gates(&mut p, traffic, &steps, interval);
    let bake = gates::compile_bake(&mut p, analysis, router, interval, &metrics, &triggers);
    let notify = NotifyPlan {
        slack: spec.notify.slack.as_ref().and_then(|s| compile_slack(&mut p, policy, s)),
        webhook: spec.notify.webhook.as_ref().and_then(|w| compile_webhook(&mut p, policy, w)),
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
        gates,
        gate_timeout,
        bake,
    })
}

fn check_router(p: &mut Problems, router: &str) -> Option<RouterKind> {
    let kind = RouterKind::parse(router);
    if kind.is_none() {
        p.add(
            "spec.traffic.router",
            format!(
                "unknown router `{router}`{}; expected one of {}",
                crate::policy::suggest::did_you_mean(router, RouterKind::ALL.map(RouterKind::name)),
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

#[cfg(test)]
mod tests {
    use crate::policy::load_str;

    /// The problems found in a policy with `spec` below its selector, as `path: message`
    /// (the other validation modules' tests use it too).
    pub(super) fn problems(spec: &str) -> Vec<String> {
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
    fn a_policy_webhook_url_may_come_from_a_secret_in_the_policys_namespace_and_only_one_source_is_set() {
        let metrics = "  analysis: {metrics: [{name: e, template: http-error-rate, test: sequential}]}\n";
        let text = format!(
            "apiVersion: canaryd.io/v1alpha1\nkind: CanaryPolicy\nmetadata: {{name: p, namespace: shop}}\nspec:\n  selector: {{matchLabels: {{a: b}}}}\n{metrics}  notify: {{webhook: {{urlSecret: {{name: hooks, key: deploys}}}}}}\n"
        );
        let plan = &load_str("p.yaml", &text).policies[0].plan;
        let url = crate::engine::plan::SecretSource::KubernetesSecret {
            namespace: "shop".into(),
            name: "hooks".into(),
            key: "deploys".into(),
        };
        assert_eq!(plan.notify.webhook, Some(crate::engine::plan::WebhookRoute { url }));
        for both_or_none in ["{urlEnv: HOOK, urlSecret: {name: hooks, key: deploys}}", "{}"] {
            let found = problems(&format!("{metrics}  notify: {{webhook: {both_or_none}}}\n"));
            assert_eq!(
                found,
                ["spec.notify.webhook: set exactly one of urlSecret and urlEnv"],
                "{both_or_none}"
            );
        }
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
