//! The Grafana dashboards in `dashboards/`: each is valid Grafana JSON (schemaVersion,
//! panels with targets, a Prometheus datasource variable every query uses, `__inputs` so
//! that import asks for the data source) and every PromQL expression in it parses. Table
//! panels show last values; the variable defaults are metrics of a shipped policy. That each `canaryd_*` name they use is one the running daemon
//! exports is checked in `tests/local_platform.rs`, against its `/metrics`.

use std::collections::BTreeMap;
use std::path::PathBuf;

/// A rollout's name, as the daemon labels its series (a tier=web workload in `shop`).
const ROLLOUT: &str = "shop/web";

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

/// Grafana's variables replaced by values of their kind, as Grafana does before sending:
/// `$rollout` by a rollout's name, the others by their defaults.
fn substituted(d: &serde_json::Value, expr: &str) -> String {
    let mut values = BTreeMap::from([("rollout".to_string(), ROLLOUT.to_string())]);
    for v in variables(d) {
        if let (Some(name), Some(default)) = (v["name"].as_str(), v["current"]["value"].as_str()) {
            values.insert(name.to_string(), default.to_string());
        }
    }
    with_values(expr, &values)
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
            let e = substituted(&d, &expr);
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
    assert!(
        promql_parser::parser::parse(&substituted(
            &serde_json::json!({}),
            "sum by (phase) (canaryd_rollouts"
        ))
        .is_err()
    );
    assert!(
        promql_parser::parser::parse(&substituted(
            &serde_json::json!({}),
            "rate(canaryd_verdicts_total[$__rate_interval])"
        ))
        .is_ok()
    );
}

/// The dashboard's variables (templating.list).
fn variables(d: &serde_json::Value) -> &[serde_json::Value] {
    d["templating"]["list"].as_array().map_or(&[], Vec::as_slice)
}

/// The default (`current.value`) of the variable `name`, if the dashboard has one.
fn default_of(d: &serde_json::Value, name: &str) -> Option<String> {
    variables(d).iter().find(|v| v["name"] == name)?["current"]["value"].as_str().map(str::to_string)
}

/// Every `canaryd_*` name an expression uses.
fn names_in(expr: &str) -> Vec<String> {
    expr.match_indices("canaryd_")
        .map(|(i, _)| expr[i..].chars().take_while(|c| c.is_ascii_alphanumeric() || *c == '_').collect())
        .collect()
}

#[test]
fn table_panels_show_last_values_instant_or_reduced() {
    let mut tables = 0;
    for (path, d) in dashboards() {
        for p in d["panels"].as_array().into_iter().flatten().filter(|p| p["type"] == "table") {
            tables += 1;
            let title = p["title"].as_str().unwrap_or_default();
            let reduced =
                p["transformations"].as_array().is_some_and(|ts| ts.iter().any(|t| t["id"] == "reduce"));
            for t in p["targets"].as_array().into_iter().flatten() {
                let instant_table = t["instant"] == true && t["format"] == "table" && t["range"] != true;
                assert!(
                    instant_table || reduced,
                    "{}: {title}: target {} is a range query with no reduction: a table of time \
                     series, not of last values (want \"instant\": true, \"format\": \"table\", or a \
                     reduce transformation)",
                    path.display(),
                    t["refId"]
                );
            }
        }
    }
    assert!(tables >= 1, "no table panel");
}

#[test]
fn variable_defaults_are_the_error_and_latency_metrics_of_one_shipped_policy() {
    use canaryd::engine::plan::Signal;
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("policies");
    let loaded = canaryd::policy::load_paths(&[dir]);
    assert!(loaded.problems.is_empty(), "{:?}", loaded.problems);
    assert!(loaded.policies.len() >= 4, "{} policies", loaded.policies.len());
    let (_, rollout) = dashboards().into_iter().find(|(p, _)| p.ends_with("rollout.json")).unwrap();
    let error = default_of(&rollout, "error_metric").expect("error_metric has a default");
    let latency = default_of(&rollout, "latency_metric").expect("latency_metric has a default");
    let signal_of = |plan: &canaryd::engine::plan::Plan, name: &str| {
        plan.metrics.iter().find(|m| m.name == name).map(|m| m.signal)
    };
    let both: Vec<String> = loaded
        .policies
        .iter()
        .filter(|p| {
            signal_of(&p.plan, &error) == Some(Signal::Errors)
                && signal_of(&p.plan, &latency) == Some(Signal::Latency)
        })
        .map(|p| p.reference.key())
        .collect();
    let named: Vec<String> = loaded
        .policies
        .iter()
        .map(|p| {
            let metrics: Vec<&str> = p.plan.metrics.iter().map(|m| m.name.as_str()).collect();
            format!("{}: {metrics:?}", p.reference.key())
        })
        .collect();
    assert!(
        !both.is_empty(),
        "rollout.json: defaults error_metric={error} (an error-rate metric) and \
         latency_metric={latency} (a latency metric) are not both in any shipped policy:\n{}",
        named.join("\n")
    );
}

#[test]
fn every_dashboard_asks_for_a_prometheus_datasource_on_import() {
    for (path, d) in dashboards() {
        let at = path.display();
        let inputs = d["__inputs"].as_array().unwrap_or_else(|| panic!("{at}: no __inputs"));
        let datasources: Vec<&serde_json::Value> =
            inputs.iter().filter(|i| i["type"] == "datasource").collect();
        assert_eq!(datasources.len(), 1, "{at}: one datasource input: {inputs:?}");
        let input = datasources[0];
        assert_eq!(input["pluginId"], "prometheus", "{at}: the input's pluginId");
        let name = input["name"].as_str().unwrap_or_else(|| panic!("{at}: the input's name"));
        assert!(input["label"].as_str().is_some_and(|l| !l.is_empty()), "{at}: the input's label");
        // Import replaces `${NAME}` of every input; the datasource variable's default is
        // where the chosen data source lands, and every query goes through the variable.
        let variable = variables(&d).iter().find(|v| v["name"] == "datasource").unwrap();
        assert_eq!(variable["current"]["value"], format!("${{{name}}}"), "{at}: datasource default");

        let requires = d["__requires"].as_array().unwrap_or_else(|| panic!("{at}: no __requires"));
        let required = |kind: &str, id: &str| requires.iter().any(|r| r["type"] == kind && r["id"] == id);
        assert!(required("grafana", "grafana"), "{at}: __requires names no Grafana version");
        assert!(required("datasource", "prometheus"), "{at}: __requires names no Prometheus datasource");
        for p in d["panels"].as_array().into_iter().flatten() {
            let kind = p["type"].as_str().unwrap_or_default();
            assert!(required("panel", kind), "{at}: __requires lacks the panel type {kind}");
        }

        // Every data source reference, wherever it is, is the variable; every `${…}` names
        // an input or a variable.
        let declared: Vec<String> = inputs
            .iter()
            .chain(variables(&d))
            .filter_map(|v| v["name"].as_str().map(str::to_string))
            .collect();
        fn walk(v: &serde_json::Value, at: &str, declared: &[String], refs: &mut usize) {
            match v {
                serde_json::Value::Object(o) => {
                    for (k, x) in o {
                        if k == "datasource" {
                            *refs += 1;
                            assert_eq!(
                                *x,
                                serde_json::json!({"type": "prometheus", "uid": "${datasource}"}),
                                "{at}: a datasource reference that is not the variable"
                            );
                        }
                        walk(x, at, declared, refs);
                    }
                }
                serde_json::Value::Array(a) => a.iter().for_each(|x| walk(x, at, declared, refs)),
                serde_json::Value::String(s) => {
                    for (i, _) in s.match_indices("${") {
                        let name: String =
                            s[i + 2..].chars().take_while(|c| *c != '}' && *c != ':').collect();
                        assert!(declared.contains(&name), "{at}: `${{{name}}}` names no input or variable");
                    }
                }
                _ => {}
            }
        }
        let mut refs = 0;
        walk(&d, &at.to_string(), &declared, &mut refs);
        assert!(refs >= 2, "{at}: {refs} datasource references");
    }
}

#[test]
fn the_up_gauge_is_not_drawn_on_the_axis_of_rates() {
    let mut seen = 0;
    for (path, d) in dashboards() {
        for p in d["panels"].as_array().into_iter().flatten() {
            let title = p["title"].as_str().unwrap_or_default();
            let targets = p["targets"].as_array().map_or(&[][..], Vec::as_slice);
            let is_up = |t: &serde_json::Value| {
                t["expr"].as_str().is_some_and(|e| names_in(e).iter().any(|n| n == "canaryd_prometheus_up"))
            };
            for t in targets.iter().filter(|t| is_up(t)) {
                seen += 1;
                let alone = targets.iter().all(is_up);
                let on_the_right = p["fieldConfig"]["overrides"].as_array().into_iter().flatten().any(|o| {
                    let m = &o["matcher"];
                    let matches = (m["id"] == "byName" && m["options"] == t["legendFormat"])
                        || (m["id"] == "byFrameRefID" && m["options"] == t["refId"]);
                    matches
                        && o["properties"]
                            .as_array()
                            .into_iter()
                            .flatten()
                            .any(|x| x["id"] == "custom.axisPlacement" && x["value"] == "right")
                });
                assert!(
                    alone || on_the_right,
                    "{}: {title}: the 0/1 `up` shares an axis with other queries",
                    path.display()
                );
            }
        }
    }
    assert!(seen >= 1, "no panel shows canaryd_prometheus_up");
}

#[test]
fn alerts_and_operator_commands_have_their_own_panels() {
    let (_, d) = dashboards().into_iter().find(|(p, _)| p.ends_with("overview.json")).unwrap();
    let mut found = (false, false);
    for p in d["panels"].as_array().into_iter().flatten() {
        let title = p["title"].as_str().unwrap_or_default();
        let names: Vec<String> = p["targets"]
            .as_array()
            .into_iter()
            .flatten()
            .flat_map(|t| names_in(t["expr"].as_str().unwrap_or_default()))
            .collect();
        let alerts = names.iter().any(|n| n == "canaryd_alerts_total");
        let commands = names.iter().any(|n| n == "canaryd_api_commands_total");
        assert!(!(alerts && commands), "overview.json: {title}: plots alerts and operator commands together");
        found.0 |= alerts;
        found.1 |= commands;
    }
    assert_eq!(found, (true, true), "overview.json: a panel of alerts and one of operator commands");
}

/// Grafana's built-in and dashboard variables replaced by `values` (name → value), and
/// the interval variables by durations, as Grafana does before it sends a query.
fn with_values(expr: &str, values: &BTreeMap<String, String>) -> String {
    let mut e = expr.replace("$__rate_interval", "1m").replace("$__interval", "15s");
    // Longer names first, so `$rollout` never eats the start of `$rollout_x`.
    let mut names: Vec<&String> = values.keys().collect();
    names.sort_by_key(|n| std::cmp::Reverse(n.len()));
    for name in names {
        e = e.replace(&format!("${{{name}}}"), &values[name]).replace(&format!("${name}"), &values[name]);
    }
    e
}
