//! Measurement at scale: one tick of N rollouts on one template (counts, then a latency
//! histogram of three buckets per pod), measured through
//! shards against a real Prometheus (Debian's package) holding their scraped series.
//! Prints, per N: queries per tick, shards, bytes sent and received, the slowest shard's
//! peak samples (what `--query.max-samples` limits) and the tick's wall time.
//!
//! Run: `cargo bench --bench shards` (N = 1,000 and 10,000; `-- --rollouts N` for one
//! size). Needs `prometheus` and `promtool` (scripts/install-deps).

#[path = "../tests/support/mod.rs"]
mod support;

use std::time::{Duration, Instant};

use canaryd::config::Settings;
use canaryd::engine::Arms;
use canaryd::engine::RolloutId;
use canaryd::source::MetricSource;
use canaryd::source::batch::{self, Target};
use canaryd::source::prometheus::PrometheusSource;
use canaryd::source::prometheus::QueryMetrics;
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
  analysis:
    metrics:
      - {name: errors, template: http-error-rate, test: sequential}
      - {name: p99, template: http-latency-p99, test: sequential}
";

struct Figures {
    template: &'static str,
    rollouts: usize,
    shards: usize,
    queries: f64,
    sent: usize,
    received: f64,
    peak: f64,
    seconds: f64,
    measured: usize,
}

/// One tick of `n` rollouts on the policy's metric `metric` (0: counts, 1: histogram).
async fn measure(n: usize, metric: usize) -> Figures {
    let pods = scale::pods(n, 0, metric == 1);
    let dir = load_openmetrics(&support::scrape::openmetrics(&pods, ORIGIN));
    let server = PrometheusServer::start("", Some(&dir.path().join("tsdb"))).await;
    let plan = canaryd::policy::load_str("bench.yaml", POLICY).policies.remove(0).plan;
    let ids: Vec<RolloutId> =
        (0..n).map(|i| RolloutId { namespace: scale::NAMESPACE.into(), name: scale::name(i) }).collect();
    let arms: Vec<Arms> = ids.iter().map(canaryd::platform::kubernetes::arms).collect();
    let targets: Vec<Target<'_>> = ids
        .iter()
        .zip(&arms)
        .map(|(rollout, arms)| Target { rollout, arms, metric: &plan.metrics[metric] })
        .collect();
    let window = Duration::from_secs(30);
    let tick = ORIGIN + scale::SPAN as i64 - 3;
    let batches = batch::plan(&targets, window, &Default::default());
    let sent = batches.iter().map(|b| b.query.as_ref().map_or(0, String::len)).sum();
    let mut peak: f64 = 0.0;
    for b in &batches {
        peak = peak.max(server.peak_samples(b.query.as_ref().unwrap(), tick).await);
    }
    let env = [("CANARYD__PROMETHEUS__URL".to_string(), server.url.clone())];
    let settings = Settings::load(None, env.into_iter().collect()).unwrap();
    let src = PrometheusSource::new(&settings.prometheus, QueryMetrics::default(), Duration::from_millis(50))
        .unwrap();
    let received_series = "prometheus_http_response_size_bytes_sum{handler=\"/api/v1/query\"}";
    let (queries_before, received_before) =
        (server.requests_to("/api/v1/query").await, server.own_metric(received_series).await);
    let started = Instant::now();
    let observed = src.observe(&targets, Timestamp::from_second(tick).unwrap(), window).await;
    let seconds = started.elapsed().as_secs_f64();
    Figures {
        template: ["http-error-rate", "http-latency-p99"][metric],
        rollouts: n,
        shards: batches.len(),
        queries: server.requests_to("/api/v1/query").await - queries_before,
        sent,
        received: server.own_metric(received_series).await - received_before,
        peak,
        seconds,
        measured: observed.values().filter(|o| o.canary.is_some() && o.error.is_none()).count(),
    }
}

#[tokio::main(flavor = "multi_thread")]
async fn main() {
    let args: Vec<String> = std::env::args().collect();
    if !args.iter().any(|a| a == "--bench") {
        // Under `cargo test` (no `--bench`): the scale test in tests/measurement.rs covers
        // the behaviour; the figures need `cargo bench`.
        println!("shards benchmark: run with `cargo bench --bench shards`");
        return;
    }
    let sizes: Vec<usize> = match args.iter().position(|a| a == "--rollouts") {
        Some(i) => vec![args.get(i + 1).and_then(|n| n.parse().ok()).expect("--rollouts N")],
        None => vec![1_000, 10_000],
    };
    println!(
        "One tick of one template, 30 s window, 15 s scrape, one pod per arm, shards of 500, 4 in flight."
    );
    println!(
        "| template | rollouts | shards | queries | query bytes sent | response bytes | peak samples (largest shard) | tick wall time | rollouts measured |"
    );
    println!("|---|---|---|---|---|---|---|---|---|");
    for n in sizes {
        for metric in [0, 1] {
            let f = measure(n, metric).await;
            println!(
                "| {} | {} | {} | {} | {} | {:.0} | {:.0} | {:.2} s | {} |",
                f.template,
                f.rollouts,
                f.shards,
                f.queries,
                f.sent,
                f.received,
                f.peak,
                f.seconds,
                f.measured
            );
        }
    }
    println!("Rerun: cargo bench --bench shards [-- --rollouts N]");
}
