//! The daemon loop at scale: N rollouts (N = 100, 1,000 and 10,000) driven by the real
//! loop with the in-memory platform, against a real Prometheus (Debian's package)
//! holding their scraped series: each rollout one canary and one baseline pod scraped
//! every 15 s with jitter, exporting request counters and a latency histogram. The
//! policy judges errors and p95 with the sequential tests, steps 10/50/100 with 30 s
//! steps, so the second tick measures every rollout and moves every one to 50%.
//!
//! Each N runs in a child process of its own, so its peak RSS is its own. Per N it
//! prints: queries per tick (from Prometheus' own request counter), CPU seconds of the
//! daemon process per tick, peak RSS, and the time from the tick's start to the last
//! set-weight call. The store serialises every changed state (the cost of saving) and
//! keeps none of it; the notifier counts and drops.
//!
//! Run: `cargo bench --bench scale` (all three sizes; under 15 minutes on 2 cores), or
//! `cargo bench --bench scale -- --rollouts N` for one. Needs `prometheus` and
//! `promtool` (scripts/install-deps).

#[path = "../tests/support/mod.rs"]
mod support;

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use canaryd::config::Settings;
use canaryd::daemon::metrics::LoopMetrics;
use canaryd::daemon::{Daemon, Options};
use canaryd::engine::{Notification, RolloutId};
use canaryd::notify::Notifier;
use canaryd::platform::{NewRevision, memory::MemoryPlatform};
use canaryd::record::{Timeline, TimelinePoint};
use canaryd::source::prometheus::PrometheusSource;
use canaryd::source::prometheus::QueryMetrics;
use canaryd::store::{RunState, RunStore, StoreError, TimelineStore, Version};
use jiff::Timestamp;
use support::prometheus::{PrometheusServer, load_openmetrics};
use support::scale;

/// 2026-11-01T10:00:00Z.
const ORIGIN: i64 = 1_793_527_200;

const POLICY: &str = "apiVersion: canaryd.io/v1alpha1
kind: CanaryPolicy
metadata: {name: bench, namespace: scale}
spec:
  selector: {matchLabels: {app: x}}
  traffic: {steps: [10, 50, 100], stepDuration: 30s}
  analysis:
    interval: 30s
    minSampleSize: 20
    metrics:
      - {name: errors, template: http-error-rate, test: sequential, margin: 1.5}
      - {name: p95, template: http-latency-p95, test: sequential, max: 0.5}
";

/// Serialises every save like a real store, keeps nothing.
#[derive(Default)]
struct SerialisingStore {
    bytes: AtomicU64,
    saves: AtomicU64,
}

impl RunStore for SerialisingStore {
    async fn load_all(&self) -> (Vec<RunState>, Vec<StoreError>) {
        (Vec::new(), Vec::new())
    }
    async fn save_all(&self, states: &[&RunState]) -> Vec<Result<Version, StoreError>> {
        states
            .iter()
            .map(|state| {
                let bytes = serde_json::to_vec(state).map(|b| b.len()).unwrap_or(0);
                self.bytes.fetch_add(bytes as u64, Ordering::Relaxed);
                let n = self.saves.fetch_add(1, Ordering::Relaxed);
                Ok(Version::new((n + 1).to_string()))
            })
            .collect()
    }
    async fn load(&self, _: &RolloutId) -> Result<Option<RunState>, StoreError> {
        Ok(None)
    }
    async fn remove(&self, _: &RolloutId) -> Result<(), StoreError> {
        Ok(())
    }
}

impl TimelineStore for SerialisingStore {
    fn append_timeline(&self, _: &RolloutId, point: &TimelinePoint) -> Result<(), StoreError> {
        let bytes = serde_json::to_vec(point).map(|b| b.len()).unwrap_or(0);
        self.bytes.fetch_add(bytes as u64, Ordering::Relaxed);
        Ok(())
    }
    fn timeline(&self, _: &RolloutId) -> Timeline {
        Timeline::default()
    }
    fn forget_timeline(&self, _: &RolloutId) -> Result<(), StoreError> {
        Ok(())
    }
}

/// Counts notifications and drops them.
#[derive(Default)]
struct CountingNotifier(AtomicU64);

impl Notifier for CountingNotifier {
    async fn deliver(&self, _: &Notification) -> Result<(), canaryd::notify::DeliveryError> {
        self.0.fetch_add(1, Ordering::Relaxed);
        Ok(())
    }
}

struct TickFigures {
    queries: f64,
    cpu: f64,
    to_last_weight: Option<Duration>,
    evaluated: usize,
    weights: usize,
}

/// Prometheus' own count of instant queries served (from its `/metrics`).
async fn queries_served(url: &str) -> f64 {
    let text =
        reqwest::get(format!("{url}/metrics")).await.expect("Prometheus answers").text().await.unwrap();
    let needle = "prometheus_http_requests_total{code=\"200\",handler=\"/api/v1/query\"} ";
    text.lines().find_map(|l| l.strip_prefix(needle)).map_or(0.0, |v| v.trim().parse().unwrap_or(0.0))
}

/// The daemon's side, in a process of its own: Prometheus (started by the parent) is
/// at `url`.
async fn child(n: usize, url: String) {
    let env = [("CANARYD__PROMETHEUS__URL".to_string(), url.clone())];
    let settings = Settings::load(None, env.into_iter().collect()).unwrap();
    let source =
        PrometheusSource::new(&settings.prometheus, QueryMetrics::default(), Duration::from_millis(50))
            .unwrap();
    let policies = canaryd::policy::load_str("bench.yaml", POLICY).policies;
    let platform = Arc::new(MemoryPlatform::new());
    let store = Arc::new(SerialisingStore::default());
    let notifier = Arc::new(CountingNotifier::default());
    let options = Options { batching: settings.prometheus.batching.clone(), ..Default::default() };
    let mut daemon = Daemon::start(
        Arc::new(source),
        platform.clone(),
        store.clone(),
        notifier.clone(),
        None,
        policies,
        options,
        LoopMetrics::default(),
    )
    .await;
    for i in 0..n {
        let id = RolloutId { namespace: scale::NAMESPACE.into(), name: scale::name(i) };
        platform.push(NewRevision {
            arms: canaryd::platform::kubernetes::arms(&id),
            id,
            revision: "v2".into(),
            labels: [("app".to_string(), "x".to_string())].into(),
        });
    }
    let mut figures = Vec::new();
    // Tick 1 starts every rollout at 10%; tick 2 (30 s later) measures every one and
    // moves it to 50%.
    for t in [scale::SPAN as i64 - 33, scale::SPAN as i64 - 3] {
        let queries_before = queries_served(&url).await;
        let calls_before = platform.calls().len();
        let (cpu_before, started) = (scale::cpu_seconds(), platform.elapsed());
        let report = daemon.tick(Timestamp::from_second(ORIGIN + t).unwrap()).await;
        daemon.settle(Duration::from_secs(600)).await;
        let cpu = scale::cpu_seconds() - cpu_before;
        let calls = platform.calls();
        let weights: Vec<_> =
            calls[calls_before..].iter().filter(|c| c.what.starts_with("set-weight")).collect();
        figures.push(TickFigures {
            queries: queries_served(&url).await - queries_before,
            cpu,
            to_last_weight: weights.iter().map(|c| c.at).max().map(|at| at.saturating_sub(started)),
            evaluated: report.evaluated,
            weights: weights.len(),
        });
    }
    let shards = n.div_ceil(settings.prometheus.batching.shard_size) * 2;
    for (i, f) in figures.iter().enumerate() {
        println!(
            "| {n} | {} | {} | {} ({shards} template shards) | {:.2} | {:.0} | {} | {} |",
            ["1 (start)", "2 (measure, advance)"][i],
            f.evaluated,
            f.queries,
            f.cpu,
            scale::peak_rss_mib(),
            f.to_last_weight.map_or("-".into(), |d| format!("{:.2} s", d.as_secs_f64())),
            f.weights,
        );
    }
    eprintln!(
        "store: {} saves, {:.1} MB serialised; notifications delivered: {}",
        store.saves.load(Ordering::Relaxed),
        store.bytes.load(Ordering::Relaxed) as f64 / 1e6,
        notifier.0.load(Ordering::Relaxed)
    );
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if !args.iter().any(|a| a == "--bench") {
        println!("scale benchmark: run with `cargo bench --bench scale`");
        return;
    }
    let rollouts = args.iter().position(|a| a == "--rollouts").and_then(|i| args.get(i + 1)?.parse().ok());
    let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
    if let Some(i) = args.iter().position(|a| a == "--child") {
        let url = args.get(i + 1).cloned().expect("--child URL");
        runtime.block_on(child(rollouts.expect("--rollouts N"), url));
        return;
    }
    let sizes: Vec<usize> = rollouts.map_or(vec![100, 1_000, 10_000], |n| vec![n]);
    println!(
        "The daemon loop, one process per size: 2 templates, 1 pod per arm, 15 s scrape, shards of 500."
    );
    println!(
        "| rollouts | tick | rollouts measured | queries | CPU s (daemon) | peak RSS MiB | tick start to last set-weight | set-weight calls |"
    );
    println!("|---|---|---|---|---|---|---|---|");
    let exe = std::env::current_exe().expect("the bench's own path");
    for n in sizes {
        let started = Instant::now();
        // The history and Prometheus are set up here, so the child's RSS is the daemon's.
        let dir = load_openmetrics(&support::scrape::openmetrics(&scale::pods(n, 0, true), ORIGIN));
        let server = runtime.block_on(PrometheusServer::start("", Some(&dir.path().join("tsdb"))));
        let status = std::process::Command::new(&exe)
            .args(["--bench", "--child", &server.url, "--rollouts", &n.to_string()])
            .status()
            .expect("the child runs");
        assert!(status.success(), "N = {n} failed");
        drop(server);
        eprintln!("N = {n}: {:.0} s including the history's set-up", started.elapsed().as_secs_f64());
    }
    println!("Goals at 10,000: at most 1 s of CPU per tick, at most 256 MiB, queries = template shards.");
    println!("Rerun: cargo bench --bench scale [-- --rollouts N]");
}
