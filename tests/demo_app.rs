//! `canaryd-demo-app` serves at the error rate it is given, exactly, and exports the
//! series the `http-*` templates read.

mod support;

use std::process::{Child, Command, Stdio};
use std::time::Duration;

use support::prometheus::{free_port, poll};

struct App(Child, String);

impl Drop for App {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

async fn start(args: &[&str]) -> App {
    let port = free_port();
    let child = Command::new(env!("CARGO_BIN_EXE_canaryd-demo-app"))
        .args(["--listen", &format!("127.0.0.1:{port}")])
        .args(args)
        .stderr(Stdio::null())
        .spawn()
        .expect("the demo app starts");
    let url = format!("http://127.0.0.1:{port}");
    let health = format!("{url}/healthz");
    poll(Duration::from_secs(30), || async { reqwest::get(&health).await.is_ok_and(|r| r.status() == 200) })
        .await
        .expect("the demo app answers within 30 s");
    App(child, url)
}

fn sample(metrics: &str, series: &str) -> f64 {
    let needle = format!("{series} ");
    metrics.lines().find_map(|l| l.strip_prefix(&needle)).map_or(0.0, |v| v.trim().parse().unwrap())
}

#[tokio::test]
async fn it_fails_exactly_the_share_it_is_told_and_counts_every_request() {
    let app = start(&["--version", "v2", "--error-rate", "0.05"]).await;
    let mut failed = 0;
    for _ in 0..200 {
        let response = reqwest::get(&app.1).await.unwrap();
        failed += usize::from(response.status() == 500);
        assert_eq!(response.text().await.unwrap(), "v2\n");
    }
    assert_eq!(failed, 10, "one in twenty");
    let metrics = reqwest::get(format!("{}/metrics", app.1)).await.unwrap().text().await.unwrap();
    assert_eq!(sample(&metrics, "http_requests_total{code=\"500\"}"), 10.0, "{metrics}");
    assert_eq!(sample(&metrics, "http_requests_total{code=\"200\"}"), 190.0);
    assert_eq!(sample(&metrics, "http_request_duration_seconds_count"), 200.0);
    assert_eq!(sample(&metrics, "http_request_duration_seconds_bucket{le=\"+Inf\"}"), 200.0);
    assert_eq!(sample(&metrics, "demo_app_info{version=\"v2\"}"), 1.0);
}

#[tokio::test]
async fn a_running_app_starts_failing_at_the_rate_it_is_given_without_losing_its_counts() {
    let app = start(&["--version", "v2"]).await;
    for _ in 0..40 {
        assert_eq!(reqwest::get(&app.1).await.unwrap().status(), 200);
    }
    let client = reqwest::Client::new();
    let set = client.put(format!("{}/error-rate", app.1)).body("0.25").send().await.unwrap();
    assert_eq!(set.status(), 200);
    let refused = client.put(format!("{}/error-rate", app.1)).body("1.5").send().await.unwrap();
    assert_eq!(refused.status(), 400, "a share outside 0-1 is refused");
    let mut failed = 0;
    for _ in 0..40 {
        failed += usize::from(reqwest::get(&app.1).await.unwrap().status() == 500);
    }
    // One in four of the 40 after the change (requests 41..80: floor(80/4) - floor(40/4)).
    assert_eq!(failed, 10);
    let metrics = reqwest::get(format!("{}/metrics", app.1)).await.unwrap().text().await.unwrap();
    assert_eq!(sample(&metrics, "http_requests_total{code=\"200\"}"), 70.0, "{metrics}");
    assert_eq!(sample(&metrics, "http_requests_total{code=\"500\"}"), 10.0);
}

#[tokio::test]
async fn added_latency_shows_in_the_histogram() {
    let app = start(&["--latency-ms", "30"]).await;
    for _ in 0..5 {
        reqwest::get(&app.1).await.unwrap();
    }
    let metrics = reqwest::get(format!("{}/metrics", app.1)).await.unwrap().text().await.unwrap();
    // Every request took at least the added 30 ms: none fits the 25 ms bucket.
    assert_eq!(sample(&metrics, "http_request_duration_seconds_bucket{le=\"0.025\"}"), 0.0, "{metrics}");
    assert_eq!(sample(&metrics, "http_request_duration_seconds_count"), 5.0);
}

#[test]
fn a_share_outside_0_to_1_is_refused_naming_the_flag() {
    let out =
        Command::new(env!("CARGO_BIN_EXE_canaryd-demo-app")).args(["--error-rate", "1.5"]).output().unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("--error-rate") && err.contains("not a share between 0 and 1"), "{err}");
}

#[tokio::test]
async fn a_real_prometheus_scrapes_its_series_with_the_arm_label_the_templates_read() {
    let app = start(&["--error-rate", "0.1"]).await;
    for _ in 0..100 {
        reqwest::get(&app.1).await.unwrap();
    }
    let target = app.1.trim_start_matches("http://");
    let scrape = format!(
        "  - job_name: demo\n    static_configs:\n      - targets: ['{target}']\n        labels: {{workload: web, namespace: demo}}\n"
    );
    let prometheus = support::prometheus::PrometheusServer::start(&scrape, None).await;
    let query = format!("{}/api/v1/query", prometheus.url);
    let total = |expr: &'static str| {
        let query = query.clone();
        async move {
            let body: serde_json::Value = reqwest::Client::new()
                .get(&query)
                .query(&[("query", expr)])
                .send()
                .await
                .ok()?
                .json()
                .await
                .ok()?;
            body["data"]["result"][0]["value"][1].as_str()?.parse::<f64>().ok()
        }
    };
    poll(Duration::from_secs(60), || async {
        total("sum(http_requests_total{workload=\"web\",namespace=\"demo\"})").await == Some(100.0)
    })
    .await
    .expect("Prometheus sees the 100 requests");
    assert_eq!(total("sum(http_requests_total{workload=\"web\",code=\"500\"})").await, Some(10.0));
    assert_eq!(total("sum(http_request_duration_seconds_count{workload=\"web\"})").await, Some(100.0));
}

#[test]
fn the_demo_answers_help_with_its_usage_and_starts_nothing() {
    let dir = tempfile::tempdir().unwrap();
    // Run from an empty directory: a demo that started would write target/demo-records here.
    let out = Command::new(env!("CARGO_BIN_EXE_canaryd-demo"))
        .arg("--help")
        .current_dir(dir.path())
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{stdout}{}", String::from_utf8_lossy(&out.stderr));
    assert!(stdout.contains("Usage: canaryd-demo"), "{stdout}");
    assert!(!stdout.contains("Starting Prometheus"), "nothing is started: {stdout}");
    assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0, "nothing written");
    let unknown = Command::new(env!("CARGO_BIN_EXE_canaryd-demo"))
        .arg("--bogus")
        .current_dir(dir.path())
        .output()
        .unwrap();
    assert_eq!(unknown.status.code(), Some(2), "an unknown flag is refused before anything starts");
}
