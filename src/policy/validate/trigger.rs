//! Compiling a policy's triggers: metric bounds, alerts and health checks that roll a
//! canary back at once, each with a readable name.

use std::collections::BTreeSet;

use crate::engine::plan::{Trigger, TriggerCondition};
use crate::policy::model::TriggerSpec;
use crate::policy::validate::metric::check_name;
use crate::policy::validate::problems::Problems;
use crate::source::promql;

/// The triggers that compile, unnamed health checks named in order.
pub(super) fn compile_triggers(
    p: &mut Problems,
    specs: &[TriggerSpec],
    metrics: &BTreeSet<&str>,
) -> Vec<Trigger> {
    let mut triggers: Vec<Trigger> = specs
        .iter()
        .enumerate()
        .filter_map(|(i, t)| compile_trigger(p, &format!("spec.triggers[{i}]"), t, metrics))
        .collect();
    name_health_checks(&mut triggers, specs);
    triggers
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
