//! The Grafana dashboards in `dashboards/`: each is valid Grafana JSON (schemaVersion,
//! panels with targets, a Prometheus datasource variable every query uses, `__inputs` so
//! that import asks for the data source), every PromQL expression in it parses, and every
//! query has data in a real Prometheus scraping the daemon's metrics (registered by the
//! library's own code). Table panels show last values; the variable defaults are metrics
//! of a shipped policy. That each `canaryd_*` name they use is one the running daemon
//! exports is checked in `tests/local_platform.rs`, against its `/metrics`.

mod support;

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use support::prometheus::{PrometheusServer, poll};

/// The rollout whose series the test Prometheus holds (a tier=web workload in `shop`).
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

/// The daemon's metrics, registered as the daemon registers them, with every series the
/// dashboards read: one rollout (`shop/web`, under `policies/web-default.yaml`) part way
/// through its analysis.
#[derive(Clone)]
struct DaemonMetrics {
    registry: Arc<prometheus_client::registry::Registry>,
    looped: canaryd::daemon::metrics::LoopMetrics,
    queries: canaryd::source::prometheus::QueryMetrics,
    deliveries: canaryd::notify::DeliveryCounts,
    router_failures: prometheus_client::metrics::counter::Counter,
    api: canaryd::server::ApiMetrics,
    judged: Vec<String>,
}

impl DaemonMetrics {
    fn new() -> DaemonMetrics {
        use canaryd::daemon::metrics::{GateLabels, LoopMetrics, PhaseLabels, RolloutLabels, ValueLabels};
        let policy = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("policies/web-default.yaml");
        let loaded = canaryd::policy::load_paths(&[policy]);
        assert!(loaded.problems.is_empty(), "{:?}", loaded.problems);
        let judged: Vec<String> = loaded.policies[0].plan.metrics.iter().map(|m| m.name.clone()).collect();
        let mut registry = canaryd::telemetry::registry();
        let looped = LoopMetrics::register(&mut registry);
        let queries = canaryd::source::prometheus::QueryMetrics::register(&mut registry);
        let deliveries = canaryd::notify::register_deliveries(&mut registry);
        let router_failures = canaryd::platform::local::register_router_failures(&mut registry);
        let api = canaryd::server::ApiMetrics::register(&mut registry, looped.alerts.clone());
        looped.rollouts.get_or_create(&PhaseLabels { phase: "progressing" }).set(1);
        looped.rollouts.get_or_create(&PhaseLabels { phase: "succeeded" }).set(2);
        looped.at_gate.get_or_create(&GateLabels { gate: "approval" }).set(1);
        looped.canary_weight.get_or_create(&RolloutLabels { rollout: ROLLOUT.into() }).set(10);
        for metric in &judged {
            for (arm, value) in [("canary", 0.011), ("baseline", 0.01)] {
                let labels = ValueLabels { rollout: ROLLOUT.into(), metric: metric.clone(), arm };
                looped.metric_value.get_or_create(&labels).set(value);
            }
        }
        looped.outbox_depth.set(3);
        queries.set_up(true);
        DaemonMetrics {
            registry: Arc::new(registry),
            looped,
            queries,
            deliveries,
            router_failures,
            api,
            judged,
        }
    }

    /// What happens between two scrapes: every counter moves, every histogram observes.
    fn work(&self) {
        use canaryd::daemon::metrics::{AlertLabels, DecisionLabels, ReasonLabels, VerdictLabels};
        let m = &self.looped;
        m.tick_seconds.observe(0.004);
        m.analysis_seconds.observe(0.002);
        m.decisions.get_or_create(&DecisionLabels { kind: "advanced" }).inc();
        for metric in &self.judged {
            m.verdicts.get_or_create(&VerdictLabels { metric: metric.clone(), outcome: "pass" }).inc();
        }
        m.rollbacks.get_or_create(&ReasonLabels { reason: "regression" }).inc();
        m.promotions.inc();
        m.outbox_dropped.inc();
        m.platform_failures.inc();
        m.alerts.get_or_create(&AlertLabels { result: "no-rollout" }).inc();
        let ok = canaryd::source::prometheus::QueryLabels { kind: "range", outcome: "ok" };
        self.queries.queries.get_or_create(&ok).inc();
        self.queries.query_seconds.observe(0.03);
        self.deliveries
            .get_or_create(&canaryd::notify::DeliveryLabels { channel: "slack", result: "delivered" })
            .inc();
        self.router_failures.inc();
        self.api.commands.get_or_create(&canaryd::server::CommandLabels { command: "pause" }).inc();
    }
}

/// A Prometheus scraping the daemon's `/metrics` route (the server's own handler) every
/// second; the counters move before each scrape.
async fn prometheus_scraping_the_daemon() -> (PrometheusServer, DaemonMetrics) {
    let metrics = DaemonMetrics::new();
    let state = canaryd::server::AppState { registry: metrics.registry.clone(), ..Default::default() };
    let working = metrics.clone();
    let app = canaryd::server::app(state).layer(axum::middleware::map_request(
        move |request: axum::extract::Request| {
            working.work();
            async move { request }
        },
    ));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    tokio::spawn(async move { axum::serve(listener, app).await });
    let scrape =
        format!("  - job_name: canaryd\n    static_configs:\n      - targets: ['127.0.0.1:{port}']\n");
    let server = PrometheusServer::start(&scrape, None).await;
    // Three good scrapes in the last minute: every rate and increase has two points.
    let enough =
        "count_over_time(up{job=\"canaryd\"}[1m]) >= 3 and min_over_time(up{job=\"canaryd\"}[1m]) == 1";
    poll(Duration::from_secs(60), || async {
        !instant(&server, enough, None).await["data"]["result"].as_array().is_none_or(Vec::is_empty)
    })
    .await
    .expect("Prometheus scrapes canaryd's /metrics three times within 60 s");
    (server, metrics)
}

/// Prometheus' answer to a form POST on `path` of its HTTP API.
async fn prometheus_api(server: &PrometheusServer, path: &str, form: &[(&str, String)]) -> serde_json::Value {
    let response = reqwest::Client::new()
        .post(format!("{}{path}", server.url))
        .form(form)
        .send()
        .await
        .unwrap_or_else(|e| panic!("{path}: {e}"));
    response.json().await.unwrap_or_else(|e| panic!("{path}: not JSON: {e}"))
}

/// An instant query at `at` (Unix seconds), or at Prometheus' now.
async fn instant(server: &PrometheusServer, query: &str, at: Option<f64>) -> serde_json::Value {
    let mut form = vec![("query", query.to_string())];
    form.extend(at.map(|t| ("time", format!("{t:.3}"))));
    prometheus_api(server, "/api/v1/query", &form).await
}

/// A range query over `[end - 300 s, end]`, a point every 15 s (the last at `end`).
async fn range(server: &PrometheusServer, query: &str, end: f64, step: &str) -> serde_json::Value {
    let form = [
        ("query", query.to_string()),
        ("start", format!("{:.3}", end - 300.0)),
        ("end", format!("{end:.3}")),
        ("step", step.to_string()),
    ];
    prometheus_api(server, "/api/v1/query_range", &form).await
}

/// Grafana's `label_values(selector, label)`, asked of Prometheus as Grafana's Prometheus
/// data source asks it: the label's values among the series the selector matches.
async fn label_values(server: &PrometheusServer, query: &str) -> Result<Vec<String>, String> {
    let inner = query
        .strip_prefix("label_values(")
        .and_then(|q| q.strip_suffix(')'))
        .ok_or_else(|| format!("`{query}` is not label_values(selector, label)"))?;
    let (selector, label) =
        inner.rsplit_once(',').ok_or_else(|| format!("`{query}` is not label_values(selector, label)"))?;
    let mut url = url::Url::parse(&format!("{}/api/v1/label/{}/values", server.url, label.trim())).unwrap();
    url.query_pairs_mut().append_pair("match[]", selector.trim());
    let answer: serde_json::Value = reqwest::get(url).await.unwrap().json().await.unwrap();
    if answer["status"] != "success" {
        return Err(format!("`{query}`: {answer}"));
    }
    let mut values: Vec<String> = answer["data"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|v| v.as_str().map(str::to_string))
        .collect();
    values.sort();
    Ok(values)
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

/// Each query variable is filled from Prometheus as Grafana fills it (its default must be
/// among the values), then each panel target runs as Grafana runs it (instant, range or
/// both) and each annotation as a range query: all succeed and all have data.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_query_has_data_in_a_prometheus_scraping_the_daemons_metrics() {
    let (server, _metrics) = prometheus_scraping_the_daemon().await;
    let end = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs_f64();
    let mut problems = Vec::new();
    let mut checked = 0;
    for (path, d) in dashboards() {
        let at = path.display().to_string();
        // Query variables in order, each from the values before it, as Grafana fills them.
        let mut values = BTreeMap::new();
        for v in variables(&d).iter().filter(|v| v["type"] == "query") {
            let name = v["name"].as_str().unwrap().to_string();
            let query = with_values(v["query"]["query"].as_str().unwrap_or_default(), &values);
            let found = match label_values(&server, &query).await {
                Ok(found) if !found.is_empty() => found,
                Ok(_) => {
                    problems.push(format!("{at}: variable {name}: `{query}` finds no value"));
                    continue;
                }
                Err(why) => {
                    problems.push(format!("{at}: variable {name}: {why}"));
                    continue;
                }
            };
            let value = match default_of(&d, &name) {
                Some(default) if found.contains(&default) => default,
                Some(default) => {
                    problems.push(format!("{at}: variable {name}: default {default} is not among {found:?}"));
                    default
                }
                None => found[0].clone(),
            };
            values.insert(name, value);
        }
        if d["uid"] == "canaryd-rollout" {
            assert_eq!(values.get("rollout").map(String::as_str), Some(ROLLOUT), "{at}: $rollout");
        }
        // Each panel target as Grafana runs it (instant, range, or both), then annotations.
        let mut runs = Vec::new();
        for p in d["panels"].as_array().into_iter().flatten() {
            for t in p["targets"].as_array().into_iter().flatten() {
                let title = format!("{}/{}", p["title"].as_str().unwrap_or_default(), t["refId"]);
                let is_instant = t["instant"] == true;
                let is_range = t["range"] == true || !is_instant;
                let expr = t["expr"].as_str().unwrap_or_default().to_string();
                if is_instant {
                    runs.push((title.clone(), expr.clone(), None));
                }
                if is_range {
                    runs.push((title, expr, Some("15s".to_string())));
                }
            }
        }
        for a in d["annotations"]["list"].as_array().into_iter().flatten().filter(|a| a["expr"].is_string()) {
            let step = a["step"].as_str().unwrap_or("15s").to_string();
            runs.push((
                format!("annotation {}", a["name"]),
                a["expr"].as_str().unwrap().to_string(),
                Some(step),
            ));
        }
        for (title, expr, step) in runs {
            let query = with_values(&expr, &values);
            if query.contains('$') {
                problems.push(format!("{at}: {title}: a variable left unreplaced in `{query}`"));
                continue;
            }
            let (answer, kind) = match &step {
                Some(step) => (range(&server, &query, end, step).await, "matrix"),
                None => (instant(&server, &query, Some(end)).await, "vector"),
            };
            checked += 1;
            if answer["status"] != "success" {
                problems.push(format!("{at}: {title}: `{query}` fails: {answer}"));
            } else if answer["data"]["resultType"] != kind {
                problems.push(format!("{at}: {title}: `{query}` gives a {}", answer["data"]["resultType"]));
            } else if answer["data"]["result"].as_array().is_none_or(Vec::is_empty) {
                problems.push(format!("{at}: {title}: `{query}` has no data"));
            }
        }
    }
    assert!(problems.is_empty(), "{} problems:\n{}", problems.len(), problems.join("\n"));
    assert!(checked >= 20, "only {checked} queries");
}
