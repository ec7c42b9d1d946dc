use std::collections::BTreeMap;
use std::time::Duration;

use promql_parser::label::Matcher;
use promql_parser::parser::{Expr, VectorSelector};
use promql_parser::util::visitor::{ExprVisitorMut, walk_expr_mut};

use super::*;
use crate::judge::{SampleKind, TestConfig};
use crate::source::templates::Signal;

fn metric(name: &str, template: &str, labels: &[(&str, &str)]) -> MetricPlan {
    let t = templates::find(template).unwrap();
    MetricPlan {
        name: name.into(),
        query: MetricQuery::Template {
            name: template.into(),
            labels: labels.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect(),
        },
        signal: t.signal,
        kind: t.kind(),
        quantile: t.quantile,
        test: TestConfig::Ratio { min: None, max: Some(2.0) },
    }
}

fn rollouts(n: usize) -> Vec<(RolloutId, Arms)> {
    (0..n)
        .map(|i| {
            let id = RolloutId { namespace: format!("ns{}", i % 3), name: format!("app{i}") };
            let arms = Arms::kubernetes(&id);
            (id, arms)
        })
        .collect()
}

fn labels(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
    pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
}

#[test]
fn fifty_rollouts_with_one_template_share_one_batch() {
    let m = metric("errors", "http-error-rate", &[]);
    let rs = rollouts(50);
    let targets: Vec<Target<'_>> =
        rs.iter().map(|(id, arms)| Target { rollout: id, arms, metric: &m }).collect();
    let batches = plan(&targets, Duration::from_secs(30)).unwrap();
    assert_eq!(batches.len(), 1);
    assert_eq!(batches[0].members.len(), 50);
    assert_eq!(batches[0].parts, [Part::Requests, Part::Errors]);
    let q = &batches[0].query;
    assert!(q.contains("sum by (workload, namespace)") && q.contains("[30s]"), "{q}");
    assert!(q.contains("app49-primary") && q.contains("namespace=~\"ns0|ns1|ns2\""), "{q}");
}

#[test]
fn metrics_sharing_a_template_share_its_query_and_labels_split_batches() {
    let a = metric("errors", "http-error-rate", &[]);
    let b = metric("error-target", "http-error-rate", &[]);
    let c = metric("checkout-errors", "http-error-rate", &[("route", "/checkout")]);
    let rs = rollouts(2);
    let mut targets = Vec::new();
    for (id, arms) in &rs {
        for m in [&a, &b, &c] {
            targets.push(Target { rollout: id, arms, metric: m });
        }
    }
    let batches = plan(&targets, Duration::from_secs(30)).unwrap();
    assert_eq!(batches.len(), 2);
    assert!(batches.iter().any(|b| b.query.contains("route=\"/checkout\"")));
}

#[test]
fn results_split_back_per_rollout_and_arm() {
    let m = metric("errors", "http-error-rate", &[]);
    let rs = rollouts(2);
    let targets: Vec<Target<'_>> =
        rs.iter().map(|(id, arms)| Target { rollout: id, arms, metric: &m }).collect();
    let batch = &plan(&targets, Duration::from_secs(30)).unwrap()[0];
    let series = |part: &str, workload: &str, namespace: &str, v: f64| {
        (labels(&[("workload", workload), ("namespace", namespace), (PART_LABEL, part)]), v)
    };
    let results: BatchResult = Ok(vec![
        series("requests", "app0", "ns0", 100.0),
        series("requests", "app0-primary", "ns0", 900.0),
        series("requests", "app1-primary", "ns1", 800.0),
        // Same workload name in another namespace belongs to nobody here.
        series("requests", "app0", "ns1", 5.0),
        series("errors", "app0", "ns0", 3.0),
    ]);
    let split: BTreeMap<_, _> = split(batch, &results).into_iter().collect();
    let app0 = &split[&(rs[0].0.clone(), "errors".to_string())];
    assert_eq!(app0.canary, Some(Sample::Counts { requests: 100.0, events: 3.0 }));
    assert_eq!(app0.baseline, Some(Sample::Counts { requests: 900.0, events: 0.0 }));
    let app1 = &split[&(rs[1].0.clone(), "errors".to_string())];
    assert_eq!(app1.canary, None, "no request series is no data, not zero");
    assert_eq!(app1.baseline, Some(Sample::Counts { requests: 800.0, events: 0.0 }));
}

#[test]
fn a_failed_query_makes_every_member_an_error_not_a_pass() {
    let m = metric("errors", "http-error-rate", &[]);
    let rs = rollouts(3);
    let targets: Vec<Target<'_>> =
        rs.iter().map(|(id, arms)| Target { rollout: id, arms, metric: &m }).collect();
    let batch = &plan(&targets, Duration::from_secs(30)).unwrap()[0];
    let results: BatchResult = Err("timeout".to_string());
    for (_, obs) in split(batch, &results) {
        assert_eq!(obs.error.as_deref(), Some("timeout"));
        assert!(obs.canary.is_none() && obs.baseline.is_none());
    }
}

#[test]
fn histograms_are_rebuilt_in_seconds() {
    let m = metric("p99", "istio-latency-p99", &[]);
    let rs = rollouts(1);
    let targets = [Target { rollout: &rs[0].0, arms: &rs[0].1, metric: &m }];
    let batch = &plan(&targets, Duration::from_secs(30)).unwrap()[0];
    assert!(batch.query.contains("sum by (destination_workload, destination_workload_namespace, le)"));
    let series = |le: &str, v: f64| {
        (
            labels(&[
                ("destination_workload", "app0"),
                ("destination_workload_namespace", "ns0"),
                ("le", le),
            ]),
            v,
        )
    };
    let results: BatchResult = Ok(vec![series("500", 90.0), series("100", 50.0), series("+Inf", 100.0)]);
    let obs = &split(batch, &results)[0].1;
    let Some(Sample::Histogram(h)) = &obs.canary else { panic!("{obs:?}") };
    assert_eq!(h.buckets, vec![(0.1, 50.0), (0.5, 90.0), (f64::INFINITY, 100.0)]);
    assert_eq!(obs.baseline, None);
}

#[test]
fn pod_identified_templates_match_pod_names_and_keep_one_value_per_pod() {
    let m = metric("memory", "container-memory", &[]);
    let rs = rollouts(1);
    let targets = [Target { rollout: &rs[0].0, arms: &rs[0].1, metric: &m }];
    let batch = &plan(&targets, Duration::from_secs(60)).unwrap()[0];
    let q = &batch.query;
    assert!(q.contains("pod=~\"(app0|app0-primary)-[a-z0-9]+-[a-z0-9]+\""), "{q}");
    let pod = |w: &str, p: &str, v: f64| (labels(&[("workload", w), ("namespace", "ns0"), ("pod", p)]), v);
    let results: BatchResult = Ok(vec![
        pod("app0", "app0-1-a", 1.0),
        pod("app0", "app0-1-b", 3.0),
        pod("app0-primary", "x", f64::NAN),
    ]);
    let obs = &split(batch, &results)[0].1;
    assert_eq!(obs.canary, Some(Sample::Values { values: vec![1.0, 3.0] }));
    assert_eq!(obs.baseline, None, "NaN is no data");
    assert_eq!(m.kind, SampleKind::Values);
    assert_eq!(m.signal, Signal::Memory);
}

/// Replaces every matcher value with `X`, so two queries compare by structure alone.
struct Normalise;

impl Normalise {
    fn selector(vs: &mut VectorSelector) {
        let blank = |m: &mut Matcher| m.value = "X".into();
        vs.matchers.matchers.iter_mut().for_each(blank);
        vs.matchers.or_matchers.iter_mut().flatten().for_each(blank);
    }
}

impl ExprVisitorMut for Normalise {
    type Error = ();
    fn pre_visit(&mut self, expr: &mut Expr) -> Result<bool, ()> {
        match expr {
            Expr::VectorSelector(vs) => Normalise::selector(vs),
            Expr::MatrixSelector(ms) => Normalise::selector(&mut ms.vs),
            _ => {}
        }
        Ok(true)
    }
}

fn structure(q: &str) -> String {
    let mut expr = promql_parser::parser::parse(q).unwrap_or_else(|e| panic!("does not parse: {e}\n{q}"));
    walk_expr_mut(&mut Normalise, &mut expr).unwrap();
    expr.to_string()
}

fn render(
    namespace: &str,
    name: &str,
    template: &str,
    extra: &[(&str, &str)],
) -> Result<Vec<String>, BatchError> {
    let m = metric("m", template, extra);
    let id = RolloutId { namespace: namespace.into(), name: name.into() };
    let arms = Arms::kubernetes(&id);
    let batches = plan(&[Target { rollout: &id, arms: &arms, metric: &m }], Duration::from_secs(30))?;
    Ok(vec![batches[0].query.clone()])
}

#[test]
fn hostile_values_never_change_the_query_structure() {
    let hostile = [
        "\"} or vector(1) #",
        "web\"}) or vector(1) or (x{a=\"",
        "a\\\"b",
        "back\\slash",
        "new\nline",
        "{braces}",
        "`backtick`",
        "a|.*",
        "quote\"",
    ];
    for template in ["http-error-rate", "http-latency-p99", "container-memory", "istio-error-rate"] {
        let reference: Vec<String> =
            render("shop", "web", template, &[]).unwrap().iter().map(|q| structure(q)).collect();
        for value in hostile {
            for (namespace, name) in [(value, "web"), ("shop", value)] {
                let queries = render(namespace, name, template, &[]).unwrap();
                let shapes: Vec<String> = queries.iter().map(|q| structure(q)).collect();
                assert_eq!(shapes, reference, "{template} with {value:?} changed structure:\n{queries:?}");
            }
            // Extra label values are escaped the same way (policies reject them earlier too).
            let queries = render("shop", "web", template, &[("route", value)]).unwrap();
            let with_label: Vec<String> = render("shop", "web", template, &[("route", "safe")])
                .unwrap()
                .iter()
                .map(|q| structure(q))
                .collect();
            assert_eq!(queries.iter().map(|q| structure(q)).collect::<Vec<_>>(), with_label, "{value:?}");
        }
    }
}

/// Collects every selector's matchers.
struct Matchers(Vec<Matcher>);

impl promql_parser::util::ExprVisitor for Matchers {
    type Error = ();
    fn pre_visit(&mut self, expr: &Expr) -> Result<bool, ()> {
        match expr {
            Expr::VectorSelector(vs) => self.0.extend(vs.matchers.matchers.iter().cloned()),
            Expr::MatrixSelector(ms) => self.0.extend(ms.vs.matchers.matchers.iter().cloned()),
            _ => {}
        }
        Ok(true)
    }
}

#[test]
fn hostile_values_survive_as_literal_matcher_values() {
    let value = "web\"} or vector(1) #";
    let queries = render("shop", value, "http-error-rate", &[]).unwrap();
    let expr = promql_parser::parser::parse(&queries[0]).unwrap();
    let mut found = Matchers(Vec::new());
    promql_parser::util::walk_expr(&mut found, &expr).unwrap();
    let workload = found.0.iter().find(|m| m.name == "workload").expect("a workload matcher");
    assert!(workload.is_match(value), "the regex must match the literal name");
    assert!(workload.is_match(&format!("{value}-primary")));
    assert!(!workload.is_match("web") && !workload.is_match("anything"), "nothing else may match");
}
