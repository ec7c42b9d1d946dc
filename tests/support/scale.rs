//! Many rollouts' worth of scraped history, for the scale test and benchmark: each
//! rollout a canary pod and a baseline pod scraped every 15 s, and one rollout whose
//! baseline has thousands of pods (a query for its shard loads far more samples).

use super::scrape::{Pod, Scraped, simulate};

/// Namespace of the scale history.
pub const NAMESPACE: &str = "scale";
/// Seconds of history; a tick at its end has every series' previous sample in reach.
pub const SPAN: f64 = 200.0;

/// The name of rollout `i`.
pub fn name(i: usize) -> String {
    format!("app{i:05}")
}

/// The heavy rollout, sorted into the middle of the shards (after `app05000`).
pub fn heavy() -> String {
    format!("{}-heavy", name(5000))
}

/// Pods of `n` rollouts and, with `heavy_pods > 0`, of the heavy one; with `histogram`,
/// each pod also exports a three-bucket latency histogram.
pub fn pods(n: usize, heavy_pods: usize, histogram: bool) -> Vec<Scraped> {
    let pod = |workload: String, pod: String, rate: f64| Pod {
        namespace: NAMESPACE.into(),
        workload,
        pod,
        rate,
        error_rate: 0.01,
        slow: [0.1, 0.01],
        scrape: 15.0,
        jitter: 1.5,
        start: 0.0,
        end: SPAN,
        restarts: vec![],
        histogram,
    };
    let mut pods = Vec::new();
    for i in 0..n {
        pods.push(pod(name(i), format!("{}-c", name(i)), 2.0));
        pods.push(pod(format!("{}-primary", name(i)), format!("{}-b", name(i)), 18.0));
    }
    if heavy_pods > 0 {
        pods.push(pod(heavy(), format!("{}-c", heavy()), 2.0));
        for p in 0..heavy_pods {
            pods.push(pod(format!("{}-primary", heavy()), format!("{}-b{p}", heavy()), 1.0));
        }
    }
    pods.into_iter().enumerate().map(|(i, p)| simulate(p, 500_000 + i as u64)).collect()
}
