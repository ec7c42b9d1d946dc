//! The Grafana dashboards in `dashboards/`: each is valid Grafana JSON (schemaVersion,
//! panels with targets, a Prometheus datasource variable every panel uses) and every
//! PromQL expression in it parses. That each `canaryd_*` name they use is one the
//! running daemon exports is checked in `tests/local_platform.rs`, against its
//! `/metrics`.

use std::path::PathBuf;

fn dashboards() -> Vec<(PathBuf, serde_json::Value)> {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("dashboards");
    let mut out: Vec<(PathBuf, serde_json::Value)> = std::fs::read_dir(&dir)
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|x| x == "json"))
        .map(|p| {
            let v = serde_json::from_str(&std::fs::read_to_string(&p).unwrap())
                .unwrap_or_else(|e| panic!("{}: not JSON: {e}", p.display()));
            (p, v)
        })
        .collect();
    out.sort_by(|a, b| a.0.cmp(&b.0));
    out
}

/// Every PromQL expression of a dashboard: panel targets and annotations.
pub fn expressions(d: &serde_json::Value) -> Vec<String> {
    let mut out = Vec::new();
    for p in d["panels"].as_array().into_iter().flatten() {
        for t in p["targets"].as_array().into_iter().flatten() {
            out.extend(t["expr"].as_str().map(str::to_string));
        }
    }
    for a in d["annotations"]["list"].as_array().into_iter().flatten() {
        out.extend(a["expr"].as_str().map(str::to_string));
    }
    out
}

/// Grafana's variables replaced by values of their kind, as Grafana does before sending.
fn substituted(expr: &str) -> String {
    expr.replace("$__rate_interval", "1m")
        .replace("$__interval", "30s")
        .replace("$rollout", "shop/web")
        .replace("$error_metric", "errors")
        .replace("$latency_metric", "p99")
}

#[test]
fn there_is_an_overview_and_a_per_rollout_dashboard() {
    let names: Vec<String> =
        dashboards().iter().map(|(p, _)| p.file_name().unwrap().to_string_lossy().into_owned()).collect();
    assert_eq!(names, ["overview.json", "rollout.json"]);
}

#[test]
fn every_dashboard_has_grafanas_structure_and_a_prometheus_datasource_variable() {
    let mut uids = Vec::new();
    for (path, d) in dashboards() {
        let at = path.display();
        assert!(d["schemaVersion"].as_u64().is_some_and(|v| v >= 30), "{at}: schemaVersion");
        assert!(d["title"].as_str().is_some_and(|t| !t.is_empty()), "{at}: title");
        let uid = d["uid"].as_str().unwrap_or_else(|| panic!("{at}: uid"));
        assert!(!uids.contains(&uid.to_string()), "{at}: uid {uid} used twice");
        uids.push(uid.to_string());
        let variables = d["templating"]["list"].as_array().unwrap_or_else(|| panic!("{at}: templating.list"));
        assert!(
            variables.iter().any(|v| v["type"] == "datasource"
                && v["query"] == "prometheus"
                && v["name"] == "datasource"),
            "{at}: a Prometheus datasource variable named datasource"
        );
        let panels = d["panels"].as_array().unwrap_or_else(|| panic!("{at}: panels"));
        assert!(!panels.is_empty(), "{at}: no panels");
        let mut ids = Vec::new();
        for p in panels {
            let title = p["title"].as_str().unwrap_or_else(|| panic!("{at}: a panel without a title"));
            assert!(p["type"].as_str().is_some(), "{at}: {title}: type");
            for k in ["x", "y", "w", "h"] {
                assert!(p["gridPos"][k].as_u64().is_some(), "{at}: {title}: gridPos.{k}");
            }
            let id = p["id"].as_u64().unwrap_or_else(|| panic!("{at}: {title}: id"));
            assert!(!ids.contains(&id), "{at}: panel id {id} twice");
            ids.push(id);
            assert_eq!(p["datasource"]["uid"], "${datasource}", "{at}: {title}: datasource");
            let targets = p["targets"].as_array().unwrap_or_else(|| panic!("{at}: {title}: targets"));
            assert!(!targets.is_empty(), "{at}: {title}: no targets");
            let mut refs = Vec::new();
            for t in targets {
                assert!(t["expr"].as_str().is_some_and(|e| !e.is_empty()), "{at}: {title}: expr");
                assert_eq!(t["datasource"]["uid"], "${datasource}", "{at}: {title}: target datasource");
                let r = t["refId"].as_str().unwrap_or_else(|| panic!("{at}: {title}: refId"));
                assert!(!refs.contains(&r), "{at}: {title}: refId {r} twice");
                refs.push(r);
            }
        }
    }
}

#[test]
fn every_expression_parses_as_promql() {
    let mut n = 0;
    for (path, d) in dashboards() {
        for expr in expressions(&d) {
            let e = substituted(&expr);
            assert!(!e.contains('$'), "{}: a variable left unreplaced in {e}", path.display());
            if let Err(why) = promql_parser::parser::parse(&e) {
                panic!("{}: `{expr}` does not parse: {why}", path.display());
            }
            n += 1;
        }
    }
    assert!(n >= 20, "only {n} expressions");
}

#[test]
fn a_broken_expression_is_caught() {
    // The parser the test relies on refuses what Grafana would refuse.
    assert!(promql_parser::parser::parse(&substituted("sum by (phase) (canaryd_rollouts")).is_err());
    assert!(
        promql_parser::parser::parse(&substituted("rate(canaryd_verdicts_total[$__rate_interval])")).is_ok()
    );
}
