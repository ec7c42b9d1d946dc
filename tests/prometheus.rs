//! The Prometheus source against a real Prometheus (Debian's package, started per test
//! on a free loopback port): deterministic history loaded with promtool, a live scrape,
//! an outage, empty results, batching, and backtests from Prometheus. Realistically
//! scraped history (jitter, resets, churn) is in `measurement.rs`.

mod support;

use std::process::Command;
use std::sync::Arc;
use std::time::Duration;

use canaryd::backtest::Recording;
use canaryd::config::Settings;
use canaryd::engine::Arms;
use canaryd::engine::{Plan, RolloutId};
use canaryd::judge::{self, MetricRule, MetricState, Observation, Outcome, Sample};
use canaryd::source::MetricSource;
use canaryd::source::batch::Target;
use canaryd::source::prometheus::PrometheusSource;
use canaryd::source::prometheus::QueryMetrics;
use jiff::Timestamp;
use support::prometheus::{PrometheusServer, load_openmetrics};

const POLICY: &str = "tests/data/backtest/policy.yaml";

fn plan() -> Plan {
    let loaded = canaryd::policy::load_paths(&[POLICY.into()]);
    assert!(loaded.problems.is_empty(), "{:?}", loaded.problems);
    loaded.policies[0].plan.clone()
}

fn recording(scenario: &str) -> Recording {
    let path = format!("tests/data/backtest/{scenario}.json");
    Recording::parse(&path, &std::fs::read_to_string(&path).unwrap()).unwrap()
}

fn source(url: &str, metrics: QueryMetrics) -> PrometheusSource {
    let env = [
        ("CANARYD__PROMETHEUS__URL".to_string(), url.to_string()),
        ("CANARYD__PROMETHEUS__RETRIES".into(), "1".into()),
        ("CANARYD__PROMETHEUS__SCRAPE_INTERVAL".into(), support::openmetrics::SCRAPE_INTERVAL.into()),
    ];
    let settings = Settings::load(None, env.into_iter().collect()).unwrap();
    PrometheusSource::new(&settings.prometheus, metrics, Duration::from_millis(50)).unwrap()
}

/// Loads two scenarios as workloads `good` and `bad` in namespace `shop`.
async fn history() -> (PrometheusServer, tempfile::TempDir) {
    let mut text = support::openmetrics::from_recording(&recording("good"), "shop", "good");
    let bad = support::openmetrics::from_recording(&recording("error-2x"), "shop", "bad");
    // Merge the two files family by family: both list the same families in the same order.
    text = merge(&text, &bad);
    let dir = load_openmetrics(&text);
    let server = PrometheusServer::start("", Some(&dir.path().join("tsdb"))).await;
    (server, dir)
}

fn merge(a: &str, b: &str) -> String {
    let families = |t: &str| -> Vec<String> {
        t.trim_end_matches("# EOF\n").split("# TYPE ").filter(|s| !s.is_empty()).map(String::from).collect()
    };
    let (fa, fb) = (families(a), families(b));
    let mut out = String::new();
    for (x, y) in fa.iter().zip(&fb) {
        out.push_str("# TYPE ");
        out.push_str(x);
        out.push_str(y.split_once('\n').map_or("", |(_, rest)| rest));
    }
    out + "# EOF\n"
}

fn id(name: &str) -> RolloutId {
    RolloutId { namespace: "shop".into(), name: name.into() }
}

fn end_of_interval(k: i64) -> Timestamp {
    recording("good").start.checked_add(Duration::from_secs(30 * (k as u64 + 1))).unwrap()
}

#[tokio::test(flavor = "multi_thread")]
async fn recorded_counts_buckets_and_memory_come_back_exactly() {
    let (server, _dir) = history().await;
    let src = source(&server.url, QueryMetrics::default());
    let plan = plan();
    let (good, arms) = (id("good"), canaryd::platform::kubernetes::arms(&id("good")));
    let targets = Target::for_plan(&plan, &good, &arms);
    let rec = recording("good");
    for k in [0usize, 7, 25] {
        let observed = src.observe(&targets, end_of_interval(k as i64), Duration::from_secs(30)).await;
        let row = &rec.intervals[k];
        let (canary, baseline) = (row.canary.as_ref().unwrap(), row.baseline.as_ref().unwrap());
        let errors = &observed[&(good.clone(), "errors".to_string())];
        assert_eq!(errors.error, None);
        assert_eq!(
            errors.canary,
            Some(Sample::Counts { requests: canary.requests.unwrap(), events: canary.errors.unwrap() }),
            "interval {k}"
        );
        assert_eq!(
            errors.baseline,
            Some(Sample::Counts { requests: baseline.requests.unwrap(), events: baseline.errors.unwrap() })
        );
        let Some(Sample::Histogram(h)) = &observed[&(good.clone(), "p99".to_string())].canary else {
            panic!("no canary histogram at interval {k}")
        };
        let written: Vec<f64> = {
            let mut b: Vec<(f64, f64)> = canary
                .latency
                .as_ref()
                .unwrap()
                .iter()
                .map(|(le, c)| (if le == "+Inf" { f64::INFINITY } else { le.parse().unwrap() }, *c))
                .collect();
            b.sort_by(|x, y| x.0.total_cmp(&y.0));
            b.into_iter().map(|x| x.1).collect()
        };
        assert_eq!(h.buckets.iter().map(|b| b.1).collect::<Vec<_>>(), written, "interval {k}");
        let Some(Sample::Values { values }) = &observed[&(good.clone(), "memory".to_string())].canary else {
            panic!("no canary memory at interval {k}")
        };
        assert_eq!(values, canary.memory.as_ref().unwrap(), "interval {k}");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn fifty_rollouts_with_one_template_make_one_query_per_interval() {
    let (server, _dir) = history().await;
    let src = source(&server.url, QueryMetrics::default());
    let plan = plan();
    let errors = plan.metrics.iter().find(|m| m.name == "errors").unwrap();
    let ids: Vec<RolloutId> = (0..49).map(|i| id(&format!("app{i}"))).chain([id("good")]).collect();
    let arms: Vec<Arms> = ids.iter().map(canaryd::platform::kubernetes::arms).collect();
    let targets: Vec<Target<'_>> =
        ids.iter().zip(&arms).map(|(rollout, arms)| Target { rollout, arms, metric: errors }).collect();
    let before = server.requests_to("/api/v1/query").await;
    let observed = src.observe(&targets, end_of_interval(3), Duration::from_secs(30)).await;
    let after = server.requests_to("/api/v1/query").await;
    assert_eq!(after - before, 1.0, "one HTTP query for 50 rollouts");
    assert_eq!(observed.len(), 50);
    // And the split is right: the one workload with data has it, the others have none.
    assert!(matches!(observed[&(id("good"), "errors".into())].canary, Some(Sample::Counts { .. })));
    assert_eq!(observed[&(id("app0"), "errors".into())].canary, None);
}

fn rule(plan: &Plan, name: &str) -> (String, canaryd::judge::TestConfig, Option<f64>) {
    let m = plan.metrics.iter().find(|m| m.name == name).unwrap();
    (m.name.clone(), m.test.clone(), m.quantile)
}

fn verdict(plan: &Plan, name: &str, obs: &Observation) -> judge::Verdict {
    let (n, test, quantile) = rule(plan, name);
    judge::judge(
        MetricRule { name: &n, test: &test, quantile, min_sample_size: plan.min_sample_size },
        obs,
        &mut MetricState::default(),
    )
}

#[tokio::test(flavor = "multi_thread")]
async fn an_empty_result_is_no_data() {
    let (server, _dir) = history().await;
    let src = source(&server.url, QueryMetrics::default());
    let plan = plan();
    let (ghost, arms) = (id("ghost"), canaryd::platform::kubernetes::arms(&id("ghost")));
    let targets = Target::for_plan(&plan, &ghost, &arms);
    let observed = src.observe(&targets, end_of_interval(3), Duration::from_secs(30)).await;
    for m in &plan.metrics {
        let obs = &observed[&(ghost.clone(), m.name.clone())];
        assert_eq!((obs.canary.as_ref(), obs.baseline.as_ref(), obs.error.as_ref()), (None, None, None));
        let v = verdict(&plan, &m.name, obs);
        assert_eq!(v.outcome, Outcome::Inconclusive, "{}", m.name);
        assert_eq!(v.reason, "no data for the canary");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn prometheus_stopped_mid_test_is_inconclusive_never_a_pass() {
    let (mut server, _dir) = history().await;
    let mut registry = canaryd::telemetry::registry();
    let metrics = QueryMetrics::register(&mut registry);
    let src = source(&server.url, metrics.clone());
    let plan = plan();
    let (good, arms) = (id("good"), canaryd::platform::kubernetes::arms(&id("good")));
    let targets = Target::for_plan(&plan, &good, &arms);
    let before = src.observe(&targets, end_of_interval(3), Duration::from_secs(30)).await;
    assert_eq!(verdict(&plan, "p99", &before[&(good.clone(), "p99".into())]).outcome, Outcome::Pass);
    assert_eq!(metrics.up(), Some(true));

    server.stop();
    let after = src.observe(&targets, end_of_interval(3), Duration::from_secs(30)).await;
    for m in &plan.metrics {
        let obs = &after[&(good.clone(), m.name.clone())];
        let error = obs.error.as_deref().unwrap_or_default();
        assert!(error.starts_with("Prometheus unreachable"), "{}: {error}", m.name);
        let v = verdict(&plan, &m.name, obs);
        assert_eq!(v.outcome, Outcome::Inconclusive, "{}", m.name);
    }
    // The outage shows in the daemon's own metrics.
    assert_eq!(metrics.up(), Some(false));
    let text = canaryd::telemetry::encode(&registry);
    assert!(
        text.contains("canaryd_prometheus_queries_total{kind=\"instant\",outcome=\"unreachable\"}"),
        "{text}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_live_scrape_of_a_test_exporter_is_observed() {
    // A tiny exporter: the canary serves 10 requests and 1 error per scrape, the baseline 90 and 1.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let scrapes = Arc::new(std::sync::atomic::AtomicU64::new(0));
    let counter = scrapes.clone();
    let exporter = axum::Router::new().route(
        "/metrics",
        axum::routing::get(move || {
            let n = counter.fetch_add(1, std::sync::atomic::Ordering::SeqCst) as f64 + 1.0;
            async move {
                format!(
                    "# TYPE http_requests_total counter\n\
                     http_requests_total{{namespace=\"live\",workload=\"web\",code=\"200\"}} {}\n\
                     http_requests_total{{namespace=\"live\",workload=\"web\",code=\"500\"}} {}\n\
                     http_requests_total{{namespace=\"live\",workload=\"web-primary\",code=\"200\"}} {}\n\
                     http_requests_total{{namespace=\"live\",workload=\"web-primary\",code=\"500\"}} {}\n",
                    9.0 * n,
                    n,
                    89.0 * n,
                    n
                )
            }
        }),
    );
    tokio::spawn(async move { axum::serve(listener, exporter).await });
    let scrape = format!(
        "  - job_name: exporter\n    honor_labels: true\n    static_configs:\n      - targets: ['127.0.0.1:{port}']\n"
    );
    let server = PrometheusServer::start(&scrape, None).await;
    let src = source(&server.url, QueryMetrics::default());
    let plan = plan();
    let errors = plan.metrics.iter().find(|m| m.name == "errors").unwrap();
    let (web, arms) = (
        RolloutId { namespace: "live".into(), name: "web".into() },
        canaryd::platform::kubernetes::arms(&RolloutId { namespace: "live".into(), name: "web".into() }),
    );
    let targets = [Target { rollout: &web, arms: &arms, metric: errors }];
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    let obs = loop {
        let observed = src.observe(&targets, Timestamp::now(), Duration::from_secs(10)).await;
        let obs = observed[&(web.clone(), "errors".to_string())].clone();
        if obs.canary.is_some() && obs.baseline.is_some() {
            break obs;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the scraped series did not reach the source: {obs:?}"
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    };
    let (
        Some(Sample::Counts { requests: cr, events: ce }),
        Some(Sample::Counts { requests: br, events: be }),
    ) = (obs.canary, obs.baseline)
    else {
        panic!("counts expected")
    };
    // Every scrape adds 9 requests and 1 error to the canary, 89 and 1 to the baseline:
    // exact counts are whole multiples of that, never extrapolated fractions.
    let scrapes_seen = ce;
    assert!(scrapes_seen >= 1.0 && scrapes_seen.fract() == 0.0, "canary errors {ce}");
    assert_eq!((cr, br, be), (10.0 * scrapes_seen, 90.0 * scrapes_seen, scrapes_seen), "exact increments");
    assert!(scrapes.load(std::sync::atomic::Ordering::SeqCst) >= 1);
}

fn cli_backtest(args: &[&str]) -> serde_json::Value {
    let out = Command::new(env!("CARGO_BIN_EXE_canaryd"))
        .env("CANARYD__PROMETHEUS__SCRAPE_INTERVAL", support::openmetrics::SCRAPE_INTERVAL)
        .args(["backtest", "--policy", POLICY, "--format", "json"])
        .args(args)
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output()
        .unwrap();
    serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("{e}: {}", String::from_utf8_lossy(&out.stderr)))
}

/// What must agree between two backtests: outcome, each decision `(at, action, reason)`
/// and each interval's verdicts `(metric, reason)`.
#[derive(Debug, PartialEq)]
struct Agreed {
    outcome: serde_json::Value,
    decisions: Vec<(String, String, String)>,
    timeline: Vec<Vec<(String, String)>>,
}

fn verdicts(v: &serde_json::Value) -> Agreed {
    let decisions = v["record"]["decisions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| (d["at"].to_string(), d["action"].to_string(), d["reason"].to_string()))
        .collect();
    let timeline = v["timeline"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| {
            i["verdicts"]
                .as_array()
                .unwrap()
                .iter()
                .map(|x| (x["metric"].to_string(), x["reason"].to_string()))
                .collect()
        })
        .collect();
    Agreed { outcome: v["outcome"].clone(), decisions, timeline }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_backtest_against_prometheus_matches_the_backtest_of_the_same_file() {
    let (server, _dir) = history().await;
    let start = recording("good").start;
    let end = start.checked_add(Duration::from_secs(30 * 40)).unwrap();
    for (scenario, workload) in [("good", "good"), ("error-2x", "bad")] {
        let from_file = cli_backtest(&["--data", &format!("tests/data/backtest/{scenario}.json")]);
        let from_prometheus = cli_backtest(&[
            "--prometheus",
            &server.url,
            "--from",
            &start.to_string(),
            "--to",
            &end.to_string(),
            "--workload",
            &format!("shop/{workload}"),
        ]);
        let (a, b) = (verdicts(&from_file), verdicts(&from_prometheus));
        assert_eq!(a.outcome, b.outcome, "{scenario}: outcome");
        assert_eq!(a.decisions, b.decisions, "{scenario}: decisions");
        assert_eq!(a.timeline, b.timeline, "{scenario}: verdicts");
        assert!(!a.timeline.is_empty());
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn the_judges_quantile_equals_prometheus_histogram_quantile() {
    let (server, _dir) = history().await;
    let src = source(&server.url, QueryMetrics::default());
    let plan = plan();
    let (good, arms) = (id("good"), canaryd::platform::kubernetes::arms(&id("good")));
    let p99 = plan.metrics.iter().find(|m| m.name == "p99").unwrap();
    let targets = [Target { rollout: &good, arms: &arms, metric: p99 }];
    for k in [2, 11, 30] {
        let at = end_of_interval(k);
        let observed = src.observe(&targets, at, Duration::from_secs(30)).await;
        for (workload, sample) in [
            ("good", &observed[&(good.clone(), "p99".into())].canary),
            ("good-primary", &observed[&(good.clone(), "p99".into())].baseline),
        ] {
            let Some(Sample::Histogram(h)) = sample else { panic!("no histogram for {workload}") };
            for q in [0.5, 0.95, 0.99] {
                let promql = format!(
                    "histogram_quantile({q}, sum by (le) (increase(http_request_duration_seconds_bucket{{workload=\"{workload}\"}}[30s])))"
                );
                let theirs = src.instant(&promql, at).await.unwrap()[0].1;
                let ours = h.quantile(q).unwrap();
                assert!(
                    (ours - theirs).abs() < 1e-9,
                    "{workload} q{q} at interval {k}: ours {ours}, Prometheus {theirs}"
                );
            }
        }
    }
}

/// The relabel rule of docs/prometheus.md, as written there, applied by a real Prometheus
/// to targets that carry the Kubernetes pod discovery labels: Deployment pods get their
/// Deployment's name (truncated pod names do not matter), other pods get none.
#[tokio::test(flavor = "multi_thread")]
async fn the_documented_relabel_rule_names_exactly_the_deployment() {
    let doc = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/docs/prometheus.md")).unwrap();
    let snippet = doc.split("```yaml\nrelabel_configs:\n").nth(1).unwrap().split("```").next().unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let exporter = axum::Router::new().route(
        "/metrics",
        axum::routing::get(|| async {
            "# TYPE http_requests_total counter\nhttp_requests_total{code=\"200\"} 1\n"
        }),
    );
    tokio::spawn(async move { axum::serve(listener, exporter).await });
    let long = "checkout-payments-reconciliation-worker-eu-01-primary";
    let targets = [
        ("ReplicaSet", "web-primary-7d9f8c6b5d", "a"),
        ("ReplicaSet", &format!("{long}-84c7d9b6f5") as &str, "b"),
        ("StatefulSet", "web-api", "c"),
        ("DaemonSet", "web-exporter", "d"),
        ("Job", "web-migrate", "e"),
    ];
    let mut scrape = String::from("  - job_name: pods\n    honor_labels: true\n    static_configs:\n");
    for (kind, controller, id) in targets {
        scrape.push_str(&format!(
            "      - targets: ['127.0.0.1:{port}']\n        labels: {{__meta_kubernetes_namespace: shop, __meta_kubernetes_pod_controller_kind: {kind}, __meta_kubernetes_pod_controller_name: {controller}, target: {id}}}\n"
        ));
    }
    scrape.push_str("    relabel_configs:\n");
    scrape.push_str(&snippet.lines().map(|l| format!("  {l}\n")).collect::<String>());
    let server = PrometheusServer::start(&scrape, None).await;
    let src = source(&server.url, QueryMetrics::default());
    let mut found = Vec::new();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    while found.len() < targets.len() {
        found = src.instant("http_requests_total", Timestamp::now()).await.unwrap();
        assert!(tokio::time::Instant::now() < deadline, "not all targets were scraped: {found:?}");
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    let workload = |id: &str| {
        let (labels, _) =
            found.iter().find(|(l, _)| l.get("target").map(String::as_str) == Some(id)).unwrap();
        assert_eq!(labels.get("namespace").map(String::as_str), Some("shop"));
        labels.get("workload").cloned()
    };
    assert_eq!(workload("a").as_deref(), Some("web-primary"));
    assert_eq!(workload("b").as_deref(), Some(long));
    for other in ["c", "d", "e"] {
        assert_eq!(workload(other), None, "target {other} is no Deployment's pod");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_backtest_window_over_prometheus_point_limit_is_read_in_pieces() {
    // 12,000 intervals of 30 s: over the 11,000 points Prometheus returns per series.
    let server = PrometheusServer::start("", None).await;
    let from = recording("good").start;
    let to = from.checked_add(Duration::from_secs(30 * 12_000)).unwrap();
    let before = server.requests_to("/api/v1/query_range").await;
    let v = cli_backtest(&[
        "--prometheus",
        &server.url,
        "--from",
        &from.to_string(),
        "--to",
        &to.to_string(),
        "--workload",
        "shop/nothing",
    ]);
    let queries = server.requests_to("/api/v1/query_range").await - before;
    // Three template batches (errors, the latency histogram, memory), two pieces each.
    assert_eq!(queries, 6.0);
    // No data at all: the backtest ran and says so, instead of failing to read the window.
    assert_eq!(v["outcome"], "rolled-back", "{v}");
}

#[test]
fn a_bad_prometheus_url_is_blamed_on_the_flag_without_its_credentials() {
    let out = Command::new(env!("CARGO_BIN_EXE_canaryd"))
        .args(["backtest", "--policy", POLICY, "--prometheus", "http://ops:pw-secret@[bad"])
        .args(["--from", "2026-11-01T10:00:00Z", "--to", "2026-11-01T11:00:00Z", "--workload", "shop/web"])
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("--prometheus: `http://<redacted>@[bad` is not a URL"), "{stderr}");
    assert!(!stderr.contains("pw-secret"), "{stderr}");
}
