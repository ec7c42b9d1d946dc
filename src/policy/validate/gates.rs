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
    for (i, g) in traffic.gates.iter().enumerate() {
        let path = format!("spec.traffic.gates[{i}]");
        let Some(gate) = compile_gate(p, &path, g) else { continue };
        let step = steps.iter().position(|w| i64::from(*w) == g.at);
        match step {
            None => {
                let weights: Vec<String> = steps.iter().map(u8::to_string).collect();
                p.add(
                    format!("{path}.at"),
                    format!("{} is not the weight of a step (steps: {})", g.at, weights.join(", ")),
                );
            }
            Some(s) if s + 1 == steps.len() => p.add(
                format!("{path}.at"),
                format!(
                    "{} is the last step, the promotion itself; to hold before promotion, gate the step before it",
                    g.at
                ),
            ),
            Some(s) if gates.contains_key(&s) => {
                p.add(format!("{path}.at"), format!("the step at {}% already has a gate", g.at))
            }
            Some(s) => {
                gates.insert(s, gate);
            }
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
