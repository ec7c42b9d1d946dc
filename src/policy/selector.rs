//! Label-selector matching (Kubernetes semantics) and the deterministic choice of one
//! policy when several select the same workload.

use std::cmp::Reverse;
use std::collections::BTreeMap;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;

use crate::engine::RolloutId;
use crate::policy::load::{LoadedPolicy, PolicyKind};

/// Whether `selector` selects an object with `labels`. `matchLabels` and every
/// `matchExpressions` requirement must all hold. An unknown operator matches nothing
/// (validation rejects it earlier).
pub fn matches(selector: &LabelSelector, labels: &BTreeMap<String, String>) -> bool {
    let by_labels = selector.match_labels.iter().flatten().all(|(k, v)| labels.get(k) == Some(v));
    by_labels
        && selector.match_expressions.iter().flatten().all(|r| {
            let values = r.values.as_deref().unwrap_or_default();
            let value = labels.get(&r.key);
            match r.operator.as_str() {
                "In" => value.is_some_and(|v| values.contains(v)),
                "NotIn" => value.is_none_or(|v| !values.contains(v)),
                "Exists" => value.is_some(),
                "DoesNotExist" => value.is_none(),
                _ => false,
            }
        })
}

/// The policy chosen for a workload, and the others that also matched.
#[derive(Debug)]
pub struct Selection<'a> {
    /// The winner.
    pub chosen: &'a LoadedPolicy,
    /// Other matching policies, in order of preference.
    pub passed_over: Vec<&'a LoadedPolicy>,
}

impl Selection<'_> {
    /// One line explaining the choice, for logs and events.
    pub fn explain(&self) -> String {
        if self.passed_over.is_empty() {
            return format!("{} is the only matching policy", self.chosen.reference);
        }
        let others: Vec<String> = self.passed_over.iter().map(|p| p.reference.to_string()).collect();
        format!(
            "{} chosen (priority {}) over {} (order: priority, then namespaced over cluster, then name)",
            self.chosen.reference,
            self.chosen.spec.priority,
            others.join(", ")
        )
    }
}

/// Whether `policy` may select workloads in `namespace`: a namespaced policy only its own.
fn sees(policy: &LoadedPolicy, namespace: &str) -> bool {
    match policy.reference.kind {
        PolicyKind::Namespaced => policy.reference.namespace.as_deref() == Some(namespace),
        PolicyKind::Cluster => true,
    }
}

/// Picks the policy for a workload in `namespace` with `labels`: highest `priority`,
/// then namespaced over cluster, then name. Namespaced policies only see their namespace.
pub fn select<'a>(
    policies: &'a [LoadedPolicy],
    namespace: &str,
    labels: &BTreeMap<String, String>,
) -> Option<Selection<'a>> {
    let mut matching: Vec<&LoadedPolicy> = policies
        .iter()
        .filter(|p| sees(p, namespace))
        .filter(|p| matches(&p.spec.selector, labels))
        .collect();
    matching.sort_by_key(|p| (Reverse(p.spec.priority), p.reference.kind, p.reference.name.clone()));
    let mut it = matching.into_iter();
    it.next().map(|chosen| Selection { chosen, passed_over: it.collect() })
}

/// Why no policy selects the workload `id` with `labels`, naming the policies that came
/// closest: those whose selector matches the labels but that see another namespace, and
/// those of its namespace whose selector does not match.
pub fn unselected(policies: &[LoadedPolicy], id: &RolloutId, labels: &BTreeMap<String, String>) -> String {
    let shown: Vec<String> = labels.iter().map(|(k, v)| format!("{k}={v}")).collect();
    let mut why = format!(
        "no policy selects {id} (namespace {}, labels {})",
        id.namespace,
        if shown.is_empty() { "none".to_string() } else { shown.join(",") }
    );
    let (here, elsewhere): (Vec<&LoadedPolicy>, Vec<&LoadedPolicy>) =
        policies.iter().partition(|p| sees(p, &id.namespace));
    let elsewhere: Vec<String> = elsewhere
        .into_iter()
        .filter(|p| matches(&p.spec.selector, labels))
        .map(|p| p.reference.to_string())
        .collect();
    let here: Vec<String> =
        here.into_iter().map(|p| format!("{} selects {}", p.reference, describe(&p.spec.selector))).collect();
    if !elsewhere.is_empty() {
        why.push_str(&format!(
            "; {} would select its labels, but a CanaryPolicy selects only in its own namespace (a ClusterCanaryPolicy selects in every namespace)",
            elsewhere.join(", ")
        ));
    }
    if !here.is_empty() {
        why.push_str(&format!("; in its namespace, {}", here.join("; ")));
    }
    if policies.is_empty() {
        why.push_str("; no policy is loaded (policies.paths)");
    }
    why
}

/// A selector in a line: `app=web, tier in (a,b)`.
fn describe(selector: &LabelSelector) -> String {
    let mut parts: Vec<String> =
        selector.match_labels.iter().flatten().map(|(k, v)| format!("{k}={v}")).collect();
    for r in selector.match_expressions.iter().flatten() {
        let values = r.values.as_deref().unwrap_or_default().join(",");
        parts.push(match r.operator.as_str() {
            "Exists" => r.key.clone(),
            "DoesNotExist" => format!("!{}", r.key),
            op => format!("{} {} ({values})", r.key, op.to_lowercase()),
        });
    }
    parts.join(", ")
}

#[cfg(test)]
#[path = "selector_tests.rs"]
mod tests;
