//! A real VictoriaMetrics (Debian's `victoria-metrics`) started on a free loopback port,
//! with history imported through its Prometheus text import API.

use std::process::{Child, Command, Stdio};
use std::time::Duration;

use super::prometheus::{free_port, poll};

/// A running VictoriaMetrics, killed on drop.
pub struct VictoriaServer {
    child: Child,
    /// Base URL; it serves the Prometheus query API under it.
    pub url: String,
    _dir: tempfile::TempDir,
}

impl VictoriaServer {
    /// Starts an empty server and waits until it answers.
    pub async fn start() -> VictoriaServer {
        let dir = tempfile::tempdir().expect("temp dir");
        let port = free_port();
        let child = Command::new("victoria-metrics")
            .arg(format!("-storageDataPath={}", dir.path().display()))
            .arg(format!("-httpListenAddr=127.0.0.1:{port}"))
            .arg("-retentionPeriod=100y")
            .arg("-search.disableCache")
            .arg("-search.latencyOffset=0s")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("victoria-metrics starts (scripts/install-deps installs it)");
        let server = VictoriaServer { child, url: format!("http://127.0.0.1:{port}"), _dir: dir };
        let health = format!("{}/health", server.url);
        poll(Duration::from_secs(60), || async {
            reqwest::get(&health).await.is_ok_and(|r| r.status().is_success())
        })
        .await
        .expect("VictoriaMetrics becomes ready within 60 s");
        server
    }

    /// Imports OpenMetrics-style text (`name{labels} value seconds` lines, `#` lines
    /// ignored), then waits until `expected_series` series from `since` (unix seconds)
    /// on are searchable.
    pub async fn import(&self, openmetrics: &str, expected_series: usize, since: i64) {
        let mut body = String::with_capacity(openmetrics.len());
        for line in openmetrics.lines().filter(|l| !l.starts_with('#') && !l.is_empty()) {
            let (rest, seconds) = line.rsplit_once(' ').expect("a timestamp");
            let millis = (seconds.parse::<f64>().expect("seconds") * 1000.0).round() as i64;
            body.push_str(&format!("{rest} {millis}\n"));
        }
        let client = reqwest::Client::new();
        let response = client
            .post(format!("{}/api/v1/import/prometheus", self.url))
            .body(body)
            .send()
            .await
            .expect("import request");
        assert!(response.status().is_success(), "import failed: {}", response.status());
        let flush = format!("{}/internal/force_flush", self.url);
        let series = format!("{}/api/v1/series", self.url);
        let query = [("match[]", "{__name__!=\"\"}".to_string()), ("start", since.to_string())];
        poll(Duration::from_secs(60), || async {
            let _ = reqwest::get(&flush).await;
            let Ok(r) = client.get(&series).query(&query).send().await else { return false };
            let v: serde_json::Value = r.json().await.unwrap_or_default();
            v["data"].as_array().is_some_and(|a| a.len() >= expected_series)
        })
        .await
        .expect("imported series become searchable");
    }
}

impl Drop for VictoriaServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
