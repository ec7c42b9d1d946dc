//! A real Prometheus (Debian's package) started on a free loopback port for a test, and
//! helpers to load deterministic history into it with promtool.

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

/// A running Prometheus, killed on drop.
pub struct PrometheusServer {
    child: Option<Child>,
    /// Base URL, e.g. `http://127.0.0.1:41234`.
    pub url: String,
    _dir: tempfile::TempDir,
}

/// A loopback port nobody listens on now, out of the kernel's ephemeral range (see
/// [`canaryd::demo::free_port`]).
pub fn free_port() -> u16 {
    canaryd::demo::free_port().expect("a free port")
}

impl PrometheusServer {
    /// Starts Prometheus with `scrape_config` (YAML list items under `scrape_configs:`,
    /// may be empty) over `tsdb` (a directory of blocks), or an empty one.
    pub async fn start(scrape_configs: &str, tsdb: Option<&Path>) -> PrometheusServer {
        Self::start_with(scrape_configs, tsdb, &[]).await
    }

    /// As [`PrometheusServer::start`], with extra command-line flags.
    pub async fn start_with(scrape_configs: &str, tsdb: Option<&Path>, flags: &[String]) -> PrometheusServer {
        let dir = tempfile::tempdir().expect("temp dir");
        let config = dir.path().join("prometheus.yml");
        let scrape = if scrape_configs.is_empty() { "[]".to_string() } else { format!("\n{scrape_configs}") };
        std::fs::write(
            &config,
            format!("global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\nscrape_configs: {scrape}\n"),
        )
        .expect("write config");
        let data = tsdb.map(Path::to_path_buf).unwrap_or_else(|| dir.path().join("data"));
        let port = free_port();
        let child = Command::new("prometheus")
            .arg(format!("--config.file={}", config.display()))
            .arg(format!("--storage.tsdb.path={}", data.display()))
            .arg("--storage.tsdb.retention.time=100y")
            .arg(format!("--web.listen-address=127.0.0.1:{port}"))
            .args(flags)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("prometheus starts (scripts/install-deps installs it)");
        let server =
            PrometheusServer { child: Some(child), url: format!("http://127.0.0.1:{port}"), _dir: dir };
        let ready = format!("{}/-/ready", server.url);
        poll(Duration::from_secs(60), || async {
            reqwest::get(&ready).await.is_ok_and(|r| r.status().is_success())
        })
        .await
        .expect("Prometheus becomes ready within 60 s");
        server
    }

    /// Stops the server (an outage).
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Prometheus' own count of HTTP requests to `handler` (e.g. `/api/v1/query`).
    pub async fn requests_to(&self, handler: &str) -> f64 {
        self.own_metric(&format!("prometheus_http_requests_total{{code=\"200\",handler=\"{handler}\"}}"))
            .await
    }

    /// One of Prometheus' own metrics, by its exact series text; 0 when absent.
    pub async fn own_metric(&self, series: &str) -> f64 {
        let text = reqwest::get(format!("{}/metrics", self.url)).await.unwrap().text().await.unwrap();
        let needle = format!("{series} ");
        text.lines().find_map(|l| l.strip_prefix(&needle)).map_or(0.0, |v| v.trim().parse().unwrap())
    }

    /// The most samples `promql` held in memory at once when evaluated at `at` (Prometheus'
    /// query statistics): what `--query.max-samples` limits.
    pub async fn peak_samples(&self, promql: &str, at: i64) -> f64 {
        let response: serde_json::Value = reqwest::Client::new()
            .post(format!("{}/api/v1/query", self.url))
            .form(&[("query", promql), ("time", &at.to_string()), ("stats", "all")])
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        response["data"]["stats"]["samples"]["peakSamples"].as_f64().unwrap_or_else(|| panic!("{response}"))
    }
}

impl Drop for PrometheusServer {
    fn drop(&mut self) {
        self.stop();
    }
}

/// Polls `check` every 200 ms until it holds or `deadline` passes.
pub async fn poll<F, Fut>(deadline: Duration, mut check: F) -> Result<(), String>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    let until = tokio::time::Instant::now() + deadline;
    loop {
        if check().await {
            return Ok(());
        }
        if tokio::time::Instant::now() > until {
            return Err(format!("condition not met within {deadline:?}"));
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Writes OpenMetrics text into a fresh TSDB with `promtool tsdb create-blocks-from`.
pub fn load_openmetrics(text: &str) -> tempfile::TempDir {
    let dir = tempfile::tempdir().expect("temp dir");
    let input = dir.path().join("history.om");
    std::fs::write(&input, text).expect("write OpenMetrics");
    let tsdb = dir.path().join("tsdb");
    let out = Command::new("promtool")
        .args(["tsdb", "create-blocks-from", "openmetrics"])
        .arg(&input)
        .arg(&tsdb)
        .output()
        .expect("promtool runs");
    assert!(out.status.success(), "promtool failed: {}", String::from_utf8_lossy(&out.stderr));
    dir
}
