use std::collections::BTreeMap;
use std::time::Duration;

use promql_parser::label::Matcher;
use promql_parser::parser::{Expr, VectorSelector};
use promql_parser::util::visitor::{ExprVisitorMut, walk_expr_mut};

use std::collections::BTreeSet;

use super::*;
use crate::engine::plan::Signal;
use crate::judge::{SampleKind, TestConfig};

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
            let arms = crate::platform::kubernetes::arms(&id);
            (id, arms)
        })
        .collect()
}

fn plan30(targets: &[Target<'_>]) -> Vec<Batch> {
    plan(targets, Duration::from_secs(30), &BatchOptions::default())
}

fn query(batch: &Batch) -> &str {
    batch.query.as_deref().unwrap()
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
    let batches = plan30(&targets);
    assert_eq!(batches.len(), 1);
    assert_eq!(batches[0].members.len(), 50);
    assert_eq!(batches[0].parts, [Part::Requests, Part::Errors, Part::Resets]);
    let q = query(&batches[0]);
    assert!(q.contains("sum by (workload, namespace)") && q.contains("offset 30s"), "{q}");
    assert!(!q.contains("increase("), "counts are never extrapolated: {q}");
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
    let batches = plan30(&targets);
    assert_eq!(batches.len(), 2);
    assert!(batches.iter().any(|b| query(b).contains("route=\"/checkout\"")));
}

#[test]
fn results_split_back_per_rollout_and_arm() {
    let m = metric("errors", "http-error-rate", &[]);
    let rs = rollouts(2);
    let targets: Vec<Target<'_>> =
        rs.iter().map(|(id, arms)| Target { rollout: id, arms, metric: &m }).collect();
    let batch = &plan30(&targets)[0];
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
    let batch = &plan30(&targets)[0];
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
    let batch = &plan30(&targets)[0];
    assert!(query(batch).contains("sum by (destination_workload, destination_workload_namespace, le)"));
    let series = |le: &str, v: f64| {
        (
            labels(&[
                ("destination_workload", "app0"),
                ("destination_workload_namespace", "ns0"),
                ("le", le),
                (PART_LABEL, "buckets"),
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
fn cadvisor_templates_attribute_pods_by_owner_and_keep_one_value_per_pod() {
    let m = metric("memory", "container-memory", &[]);
    let rs = rollouts(1);
    let targets = [Target { rollout: &rs[0].0, arms: &rs[0].1, metric: &m }];
    let batch = &plan30(&targets)[0];
    let q = query(batch);
    assert!(!q.contains("pod=~"), "no pod-name regex decides the arm: {q}");
    assert!(q.contains("kube_replicaset_owner") && q.contains("owner_name=~\"app0|app0-primary\""), "{q}");
    assert!(q.contains("[120s]"), "a 30 s scrape gives a gauge range of four scrapes: {q}");
    let pod = |w: &str, p: &str, v: f64| {
        (labels(&[("workload", w), ("namespace", "ns0"), ("pod", p), (PART_LABEL, "values")]), v)
    };
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

#[test]
fn utilisation_without_limits_says_so_instead_of_no_data() {
    let m = metric("mem", "container-memory-utilisation", &[]);
    let rs = rollouts(1);
    let targets = [Target { rollout: &rs[0].0, arms: &rs[0].1, metric: &m }];
    let batch = &plan30(&targets)[0];
    assert_eq!(batch.parts, [Part::Values, Part::Unlimited]);
    let results: BatchResult =
        Ok(vec![(labels(&[("workload", "app0"), ("namespace", "ns0"), (PART_LABEL, "unlimited")]), 2.0)]);
    let obs = &split(batch, &results)[0].1;
    assert!(obs.error.as_deref().unwrap().starts_with("no limit set: 2 canary"), "{obs:?}");
}

#[test]
fn counter_resets_mark_the_counts_approximate() {
    let m = metric("errors", "http-error-rate", &[]);
    let rs = rollouts(1);
    let targets = [Target { rollout: &rs[0].0, arms: &rs[0].1, metric: &m }];
    let batch = &plan30(&targets)[0];
    let series = |part: &str, workload: &str, v: f64| {
        (labels(&[("workload", workload), ("namespace", "ns0"), (PART_LABEL, part)]), v)
    };
    let clean: BatchResult =
        Ok(vec![series("requests", "app0", 10.0), series("requests", "app0-primary", 90.0)]);
    assert_eq!(split(batch, &clean)[0].1.approximate, None);
    let reset: BatchResult = Ok(vec![
        series("requests", "app0", 10.0),
        series("requests", "app0-primary", 90.0),
        series("resets", "app0-primary", 1.0),
    ]);
    let obs = &split(batch, &reset)[0].1;
    assert!(obs.approximate.as_deref().unwrap().contains("baseline 1 series"), "{obs:?}");
}

#[test]
fn shards_hold_at_most_shard_size_rollouts_and_a_rollout_stays_in_one() {
    let a = metric("errors", "http-error-rate", &[]);
    let b = metric("error-budget", "http-error-rate", &[]);
    let rs = rollouts(1001);
    let targets: Vec<Target<'_>> = rs
        .iter()
        .flat_map(|(id, arms)| {
            [Target { rollout: id, arms, metric: &a }, Target { rollout: id, arms, metric: &b }]
        })
        .collect();
    let options = BatchOptions { shard_size: 500, ..BatchOptions::default() };
    let batches = plan(&targets, Duration::from_secs(30), &options);
    assert_eq!(batches.len(), 3, "1001 rollouts in shards of 500");
    let mut seen = BTreeMap::new();
    for (i, batch) in batches.iter().enumerate() {
        let rollouts: BTreeSet<&RolloutId> = batch.members.iter().map(|m| &m.0).collect();
        assert!(rollouts.len() <= 500);
        for r in rollouts {
            assert_eq!(seen.insert(r.clone(), i), None, "{r} is in two shards");
        }
        // Each shard's query names its own workloads only.
        let q = query(batch);
        for (rollout, _, arms) in &batch.members {
            assert!(
                q.contains(&format!("|{}|", arms.canary)) || q.contains(&format!("\"{}|", arms.canary)),
                "{rollout}"
            );
        }
    }
    assert_eq!(seen.len(), 1001);
}

#[test]
fn a_query_that_cannot_be_built_fails_only_its_own_members() {
    let good = metric("errors", "http-error-rate", &[]);
    let mut bad = metric("broken", "http-error-rate", &[]);
    bad.query = MetricQuery::Inline { promql: "sum by ($by) (rate(x{$matchers}[$window])".into() };
    let rs = rollouts(2);
    let targets = [
        Target { rollout: &rs[0].0, arms: &rs[0].1, metric: &good },
        Target { rollout: &rs[1].0, arms: &rs[1].1, metric: &good },
        Target { rollout: &rs[1].0, arms: &rs[1].1, metric: &bad },
    ];
    let batches = plan30(&targets);
    assert_eq!(batches.len(), 2);
    let broken = batches.iter().find(|b| b.query.is_err()).expect("the inline batch fails to build");
    assert_eq!(broken.members.len(), 1);
    let obs = split(broken, &Ok(vec![]));
    assert!(obs[0].1.error.as_deref().unwrap().contains("does not parse"), "{obs:?}");
    assert!(batches.iter().any(|b| b.query.is_ok() && b.members.len() == 2));
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
    let arms = crate::platform::kubernetes::arms(&id);
    let batches = plan30(&[Target { rollout: &id, arms: &arms, metric: &m }]);
    batches[0].query.clone().map(|q| vec![q])
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

#[test]
fn every_template_renders_a_query_that_parses() {
    let rs = rollouts(3);
    for t in templates::TEMPLATES {
        let m = metric("m", t.name, &[("route", "/a")]);
        let targets: Vec<Target<'_>> =
            rs.iter().map(|(id, arms)| Target { rollout: id, arms, metric: &m }).collect();
        let batch = &plan30(&targets)[0];
        structure(query(batch));
        structure(&batch.query_for(&rs[0].1, &BatchOptions::default()).unwrap());
    }
}

#[test]
fn evidence_names_the_query_of_one_arm_not_the_batch() {
    let m = metric("errors", "http-error-rate", &[]);
    let rs = rollouts(50);
    let targets: Vec<Target<'_>> =
        rs.iter().map(|(id, arms)| Target { rollout: id, arms, metric: &m }).collect();
    let batch = &plan30(&targets)[0];
    let q = arm_query(&m, "shop", "app7-primary", Duration::from_secs(30), &BatchOptions::default()).unwrap();
    assert!(q.contains("workload=~\"app7-primary\""), "{q}");
    assert!(!q.contains("app8") && !q.contains("\"app7|") && q.len() < query(batch).len(), "{q}");
    structure(&q);
    // Splitting renders nothing per member: that cost would grow with every tick.
    assert!(split(batch, &Ok(vec![])).iter().all(|(_, obs)| obs.query.is_none()));
}
