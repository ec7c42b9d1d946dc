use std::collections::{BTreeMap, BTreeSet};

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, LabelSelectorRequirement};
use proptest::prelude::*;

use super::*;
use crate::policy::load_str;

/// Kubernetes' definitions, written as set membership over the label map
/// (k8s.io/apimachinery labels.Requirement.Matches).
fn reference(selector: &LabelSelector, labels: &BTreeMap<String, String>) -> bool {
    let mut ok = true;
    for (k, v) in selector.match_labels.iter().flatten() {
        ok &= labels.get(k).map(String::as_str) == Some(v.as_str());
    }
    for r in selector.match_expressions.iter().flatten() {
        let set: BTreeSet<&str> = r.values.iter().flatten().map(String::as_str).collect();
        let has = labels.contains_key(&r.key);
        let value_in = has && set.contains(labels[&r.key].as_str());
        ok &= match r.operator.as_str() {
            "In" => value_in,
            "NotIn" => !value_in,
            "Exists" => has,
            "DoesNotExist" => !has,
            _ => unreachable!(),
        };
    }
    ok
}

fn key() -> impl Strategy<Value = String> {
    prop::sample::select(vec!["app", "tier", "team", "mesh"]).prop_map(String::from)
}
fn value() -> impl Strategy<Value = String> {
    prop::sample::select(vec!["a", "b", "c"]).prop_map(String::from)
}

fn requirement() -> impl Strategy<Value = LabelSelectorRequirement> {
    (
        key(),
        prop::sample::select(vec!["In", "NotIn", "Exists", "DoesNotExist"]),
        prop::collection::vec(value(), 1..3),
    )
        .prop_map(|(key, op, values)| LabelSelectorRequirement {
            key,
            values: matches!(op, "In" | "NotIn").then_some(values),
            operator: op.into(),
        })
}

proptest! {
    #[test]
    fn matching_agrees_with_kubernetes_semantics(
        match_labels in prop::collection::btree_map(key(), value(), 0..2),
        exprs in prop::collection::vec(requirement(), 0..4),
        labels in prop::collection::btree_map(key(), value(), 0..4),
    ) {
        let selector = LabelSelector { match_labels: Some(match_labels), match_expressions: Some(exprs) };
        prop_assert_eq!(matches(&selector, &labels), reference(&selector, &labels));
    }
}

fn policy(name: &str, namespace: Option<&str>, priority: i32, selector: &str) -> String {
    let (kind, ns) = match namespace {
        Some(ns) => ("CanaryPolicy", format!(", namespace: {ns}")),
        None => ("ClusterCanaryPolicy", String::new()),
    };
    format!(
        "apiVersion: canaryd.io/v1alpha1\nkind: {kind}\nmetadata: {{name: {name}{ns}}}\nspec:\n  priority: {priority}\n  selector: {selector}\n  analysis:\n    metrics: [{{name: e, template: http-error-rate, test: sequential}}]\n---\n"
    )
}

#[test]
fn the_choice_is_priority_then_namespaced_then_name_and_is_explained() {
    let text = [
        policy("zeta", Some("shop"), 0, "{matchLabels: {tier: web}}"),
        policy("alpha", Some("shop"), 0, "{matchLabels: {tier: web}}"),
        policy("global", None, 0, "{matchLabels: {tier: web}}"),
        policy("urgent", None, 5, "{matchLabels: {tier: web}}"),
        policy("elsewhere", Some("other"), 50, "{matchLabels: {tier: web}}"),
        policy("unrelated", Some("shop"), 90, "{matchLabels: {tier: db}}"),
    ]
    .concat();
    let loaded = load_str("test.yaml", &text);
    assert!(loaded.problems.is_empty(), "{:?}", loaded.problems);
    let labels = BTreeMap::from([("tier".to_string(), "web".to_string())]);
    let s = select(&loaded.policies, "shop", &labels).unwrap();
    let order: Vec<String> =
        std::iter::once(s.chosen).chain(s.passed_over.iter().copied()).map(|p| p.reference.key()).collect();
    assert_eq!(order, ["cluster/urgent", "shop/alpha", "shop/zeta", "cluster/global"]);
    assert!(
        s.explain()
            .starts_with("ClusterCanaryPolicy urgent chosen (priority 5) over CanaryPolicy shop/alpha")
    );
    assert!(select(&loaded.policies, "shop", &BTreeMap::new()).is_none());
}
