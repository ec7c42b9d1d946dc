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

/// User plus system CPU seconds of this process so far (`/proc/self/stat`, in clock
/// ticks of 1/100 s, Linux' USER_HZ).
pub fn cpu_seconds() -> f64 {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    // Fields after the command name (which is in parentheses and may hold spaces).
    let rest = stat.rsplit_once(')').map_or("", |(_, r)| r);
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let ticks = |i: usize| fields.get(i).and_then(|f| f.parse::<f64>().ok()).unwrap_or(0.0);
    (ticks(11) + ticks(12)) / 100.0
}

/// Peak resident set size of this process, in MiB (`VmHWM`).
pub fn peak_rss_mib() -> f64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let kib = status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.split_whitespace().next()?.parse::<f64>().ok())
        .unwrap_or(0.0);
    kib / 1024.0
}
