//! The holds a policy puts on a rollout: gates on steps (`spec.traffic.gates`, with
//! `spec.traffic.gateTimeout`) and the bake after the last step (`spec.analysis.bake`).

use std::collections::BTreeMap;
use std::time::Duration;

use super::problems::Problems;
use crate::engine::plan::{DEFAULT_GATE_TIMEOUT, Gate, MetricPlan, RouterKind, Trigger, TriggerCondition};
use crate::policy::model::{AnalysisSpec, TrafficSpec};

/// Longest wait for one answer of a gate webhook, unless the gate says otherwise.
pub const DEFAULT_GATE_WEBHOOK_TIMEOUT: Duration = Duration::from_secs(5);

/// The gates by step index, and the gate timeout. `steps` are the checked weights.
pub(super) fn compile_gates(
    p: &mut Problems,
    traffic: &TrafficSpec,
    steps: &[u8],
    interval: Duration,
) -> (BTreeMap<usize, Gate>, Duration) {
    let mut gates = BTreeMap::new();
    // Steps already gated, by a gate that compiled or not: a second gate on one is a
    // duplicate either way.
    let mut gated = std::collections::BTreeSet::new();
    for (i, g) in traffic.gates.iter().enumerate() {
        let path = format!("spec.traffic.gates[{i}]");
        // Where the gate stands is checked even when what opens it is wrong: every
        // problem is reported, not only the first.
        let step = match steps.iter().position(|w| i64::from(*w) == g.at) {
            None => {
                let weights: Vec<String> = steps.iter().map(u8::to_string).collect();
                p.add(
                    format!("{path}.at"),
                    format!("{} is not the weight of a step (steps: {})", g.at, weights.join(", ")),
                );
                None
            }
            Some(s) if s + 1 == steps.len() => {
                p.add(
                    format!("{path}.at"),
                    format!(
                        "{} is the last step, the promotion itself; to hold before promotion, gate the step before it",
                        g.at
                    ),
                );
                None
            }
            Some(s) if !gated.insert(s) => {
                p.add(format!("{path}.at"), format!("the step at {}% already has a gate", g.at));
                None
            }
            Some(s) => Some(s),
        };
        let gate = compile_gate(p, &path, g);
        if let Some(Gate::Webhook { timeout, .. }) = &gate
            && !interval.is_zero()
            && *timeout >= interval
        {
            p.add(
                format!("{path}.timeout"),
                format!(
                    "{} is not shorter than the analysis interval ({}): the webhook is asked once per interval",
                    humantime::format_duration(*timeout),
                    humantime::format_duration(interval)
                ),
            );
        }
        if let (Some(s), Some(gate)) = (step, gate) {
            gates.insert(s, gate);
        }
    }
    let timeout = match &traffic.gate_timeout {
        None => DEFAULT_GATE_TIMEOUT,
        Some(_) if traffic.gates.is_empty() => {
            p.add("spec.traffic.gateTimeout", "set, but there is no gate: add spec.traffic.gates or drop it");
            DEFAULT_GATE_TIMEOUT
        }
        Some(text) => {
            let d = p.duration("spec.traffic.gateTimeout", text);
            if !d.is_zero() && !interval.is_zero() && d < interval {
                p.add(
                    "spec.traffic.gateTimeout",
                    format!(
                        "`{text}` is shorter than the analysis interval: a gate is asked once per interval"
                    ),
                );
            }
            d
        }
    };
    (gates, timeout)
}

fn compile_gate(p: &mut Problems, path: &str, g: &crate::policy::model::GateSpec) -> Option<Gate> {
    match g.kind.as_str() {
        "approval" => {
            for (field, set) in [("url", g.url.is_some()), ("timeout", g.timeout.is_some())] {
                if set {
                    p.add(
                        format!("{path}.{field}"),
                        "only a webhook gate takes it; an approval gate opens by hand",
                    );
                }
            }
            Some(Gate::Approval)
        }
        "webhook" => {
            let timeout = match &g.timeout {
                Some(text) => p.duration(&format!("{path}.timeout"), text),
                None => DEFAULT_GATE_WEBHOOK_TIMEOUT,
            };
            let Some(url) = &g.url else {
                p.add(format!("{path}.url"), "a webhook gate needs the URL it POSTs to");
                return None;
            };
            match url::Url::parse(url) {
                Ok(u) if matches!(u.scheme(), "http" | "https") && u.host().is_some() => {
                    Some(Gate::Webhook { url: url.clone(), timeout })
                }
                Ok(u) => {
                    p.add(
                        format!("{path}.url"),
                        format!("`{url}` is not an http(s) URL (scheme {})", u.scheme()),
                    );
                    None
                }
                Err(e) => {
                    p.add(format!("{path}.url"), format!("`{url}` is not a URL: {e}"));
                    None
                }
            }
        }
        other => {
            let why = format!(
                "unknown gate `{other}`{}; expected approval or webhook",
                crate::policy::suggest::did_you_mean(other, Gate::KINDS)
            );
            p.add(format!("{path}.type"), why);
            None
        }
    }
}

/// The bake, if the policy asks for one that can be watched and undone.
pub(super) fn compile_bake(
    p: &mut Problems,
    analysis: &AnalysisSpec,
    router: Option<RouterKind>,
    interval: Duration,
    metrics: &[MetricPlan],
    triggers: &[Trigger],
) -> Option<Duration> {
    let text = analysis.bake.as_ref()?;
    let bake = p.duration("spec.analysis.bake", text);
    if bake.is_zero() {
        return None;
    }
    if !interval.is_zero() && bake < interval {
        p.add(
            "spec.analysis.bake",
            format!("`{text}` is shorter than the analysis interval: the bake would analyse nothing"),
        );
    }
    if router == Some(RouterKind::Replica) {
        p.add(
            "spec.analysis.bake",
            "the replica router serves 100% by scaling the stable version to zero, so the previous revision could not be restored at once; use gateway-api or istio to bake",
        );
    }
    let judged = metrics.iter().any(|m| !m.test.needs_baseline());
    let watched = triggers.iter().any(|t| match &t.condition {
        TriggerCondition::Metric { above, below, .. } => above.is_some() || below.is_some(),
        TriggerCondition::Alert { .. } | TriggerCondition::HealthCheck { .. } => true,
    });
    if !metrics.is_empty() && !judged && !watched {
        p.add(
            "spec.analysis.bake",
            "nothing would watch the bake: the previous revision takes no traffic during it, so only the tests that bound the canary alone (threshold, sequential with max) and the triggers (above, below, alert, healthCheck) run, and this policy has none",
        );
    }
    Some(bake)
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use crate::engine::plan::Gate;
    use crate::policy::load_str;

    /// A policy with steps 10/50/100 analysed every 30 s, `traffic` and `analysis` added
    /// to those sections, and `rest` (metrics, triggers) after them.
    fn text(traffic: &str, analysis: &str, rest: &str) -> String {
        format!(
            "apiVersion: canaryd.io/v1alpha1\nkind: CanaryPolicy\nmetadata: {{name: p, namespace: shop}}\nspec:\n  selector: {{matchLabels: {{app: web}}}}\n  traffic:\n    steps: [10, 50, 100]\n{traffic}  analysis:\n    interval: 30s\n{analysis}{rest}"
        )
    }

    const SEQUENTIAL: &str = "    metrics: [{name: e, template: http-error-rate, test: sequential}]\n";

    /// A test bounding the canary alone: one that watches a bake.
    const BOUNDED: &str =
        "    metrics: [{name: e, template: http-error-rate, test: sequential, max: 0.05}]\n";

    /// Every problem of the policy, as `path: message`.
    fn problems(traffic: &str, analysis: &str, rest: &str) -> Vec<String> {
        load_str("p.yaml", &text(traffic, analysis, rest))
            .problems
            .iter()
            .map(|p| format!("{}: {}", p.path.clone().unwrap_or_default(), p.message))
            .collect()
    }

    fn gates(gates: &str) -> Vec<String> {
        problems(&format!("    gates: {gates}\n"), "", SEQUENTIAL)
    }

    #[test]
    fn well_formed_gates_compile_onto_their_steps() {
        let loaded = load_str(
            "p.yaml",
            &text(
                "    gates:\n      - {at: 10, type: webhook, url: 'https://ci.example.com/gate'}\n      - {at: 50, type: approval}\n    gateTimeout: 2h\n",
                "",
                SEQUENTIAL,
            ),
        );
        assert!(loaded.problems.is_empty(), "{:?}", loaded.problems);
        let plan = &loaded.policies[0].plan;
        let webhook =
            Gate::Webhook { url: "https://ci.example.com/gate".into(), timeout: Duration::from_secs(5) };
        assert_eq!(plan.gates, [(0, webhook), (1, Gate::Approval)].into());
        assert_eq!(plan.gate_timeout, Duration::from_secs(2 * 3600));
        assert_eq!(plan.bake, None);
        // Without gateTimeout, a gate waits a day.
        let loaded = load_str("p.yaml", &text("    gates: [{at: 50, type: approval}]\n", "", SEQUENTIAL));
        assert_eq!(loaded.policies[0].plan.gate_timeout, Duration::from_secs(24 * 3600));
    }

    #[test]
    fn a_webhook_timeout_must_be_shorter_than_the_interval_it_is_asked_in() {
        assert_eq!(
            gates("[{at: 50, type: webhook, url: 'http://gate.ops/confirm', timeout: 30s}]"),
            [
                "spec.traffic.gates[0].timeout: 30s is not shorter than the analysis interval (30s): the webhook is asked once per interval"
            ]
        );
    }

    #[test]
    fn a_gate_of_an_unknown_type_is_refused_naming_the_types() {
        assert_eq!(
            gates("[{at: 50, type: manual}]"),
            ["spec.traffic.gates[0].type: unknown gate `manual`; expected approval or webhook"]
        );
    }

    #[test]
    fn a_gate_must_stand_on_a_step_below_100_and_one_to_a_step() {
        assert_eq!(
            gates("[{at: 30, type: approval}]"),
            ["spec.traffic.gates[0].at: 30 is not the weight of a step (steps: 10, 50, 100)"]
        );
        assert_eq!(
            gates("[{at: 100, type: approval}]"),
            [
                "spec.traffic.gates[0].at: 100 is the last step, the promotion itself; to hold before promotion, gate the step before it"
            ]
        );
        assert_eq!(
            gates("[{at: 50, type: approval}, {at: 50, type: webhook, url: 'http://ci/gate'}]"),
            ["spec.traffic.gates[1].at: the step at 50% already has a gate"]
        );
    }

    #[test]
    fn a_malformed_gate_on_a_wrong_step_reports_both() {
        // Every problem, not only the first: the step, and what opens the gate.
        assert_eq!(
            gates("[{at: 30, type: manual}, {at: 50, type: webhook}, {at: 50, type: approval}]"),
            [
                "spec.traffic.gates[0].at: 30 is not the weight of a step (steps: 10, 50, 100)",
                "spec.traffic.gates[0].type: unknown gate `manual`; expected approval or webhook",
                "spec.traffic.gates[1].url: a webhook gate needs the URL it POSTs to",
                "spec.traffic.gates[2].at: the step at 50% already has a gate",
            ]
        );
    }

    #[test]
    fn a_webhook_gate_needs_an_http_url() {
        assert_eq!(
            gates("[{at: 50, type: webhook}]"),
            ["spec.traffic.gates[0].url: a webhook gate needs the URL it POSTs to"]
        );
        assert_eq!(
            gates("[{at: 50, type: webhook, url: 'ftp://ci.example.com/gate'}]"),
            ["spec.traffic.gates[0].url: `ftp://ci.example.com/gate` is not an http(s) URL (scheme ftp)"]
        );
        assert_eq!(
            gates("[{at: 50, type: webhook, url: ci.example.com/gate}]"),
            ["spec.traffic.gates[0].url: `ci.example.com/gate` is not a URL: relative URL without a base"]
        );
        assert_eq!(
            gates("[{at: 50, type: webhook, url: 'http://ci/gate', timeout: soon}]"),
            [
                "spec.traffic.gates[0].timeout: `soon` is not a duration (expected number at 0); write e.g. 30s, 5m, 1h30m"
            ]
        );
    }

    #[test]
    fn an_approval_gate_takes_no_url_or_timeout() {
        assert_eq!(
            gates("[{at: 50, type: approval, url: 'http://ci/gate', timeout: 5s}]"),
            [
                "spec.traffic.gates[0].url: only a webhook gate takes it; an approval gate opens by hand",
                "spec.traffic.gates[0].timeout: only a webhook gate takes it; an approval gate opens by hand",
            ]
        );
    }

    #[test]
    fn a_gate_timeout_needs_a_gate_and_at_least_one_interval() {
        assert_eq!(
            problems("    gateTimeout: 1h\n", "", SEQUENTIAL),
            ["spec.traffic.gateTimeout: set, but there is no gate: add spec.traffic.gates or drop it"]
        );
        assert_eq!(
            problems("    gates: [{at: 50, type: approval}]\n    gateTimeout: 10s\n", "", SEQUENTIAL),
            [
                "spec.traffic.gateTimeout: `10s` is shorter than the analysis interval: a gate is asked once per interval"
            ]
        );
    }

    #[test]
    fn a_bake_shorter_than_the_interval_is_refused() {
        assert_eq!(
            problems("", "    bake: 10s\n", BOUNDED),
            [
                "spec.analysis.bake: `10s` is shorter than the analysis interval: the bake would analyse nothing"
            ]
        );
    }

    #[test]
    fn a_bake_is_refused_on_the_replica_router() {
        assert_eq!(
            problems("    router: replica\n", "    bake: 30m\n", BOUNDED),
            [
                "spec.analysis.bake: the replica router serves 100% by scaling the stable version to zero, so the previous revision could not be restored at once; use gateway-api or istio to bake"
            ]
        );
    }

    #[test]
    fn a_bake_nothing_could_watch_is_refused() {
        // Both tests compare with the baseline, which takes no traffic during the bake.
        let two_arm = "    metrics:\n      - {name: e, template: http-error-rate, test: sequential}\n      - {name: r, template: http-error-rate, test: ratio, max: 2}\n";
        let refused = "spec.analysis.bake: nothing would watch the bake: the previous revision takes no traffic during it, so only the tests that bound the canary alone (threshold, sequential with max) and the triggers (above, below, alert, healthCheck) run, and this policy has none";
        assert_eq!(problems("", "    bake: 30m\n", two_arm), [refused]);
        // A trigger on the ratio to the baseline cannot watch it either.
        let ratio_trigger = format!("{two_arm}  triggers: [{{metric: r, ratioAbove: 3}}]\n");
        assert_eq!(problems("", "    bake: 30m\n", &ratio_trigger), [refused]);
        // A bound on the canary's own value can, as can a test bounding the canary.
        let above = format!("{two_arm}  triggers: [{{metric: r, above: 0.2}}]\n");
        assert_eq!(problems("", "    bake: 30m\n", &above), Vec::<String>::new());
        let loaded = load_str("p.yaml", &text("", "    bake: 30m\n", BOUNDED));
        assert!(loaded.problems.is_empty(), "{:?}", loaded.problems);
        assert_eq!(loaded.policies[0].plan.bake, Some(Duration::from_secs(30 * 60)));
    }
}
