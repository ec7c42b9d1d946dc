//! Turns a backtest recording into OpenMetrics history: cumulative counters sampled at
//! every interval boundary, gauges scraped every 7.5 s (four times an interval, each
//! reading the interval's recorded value), and kube-state-metrics' owner series that
//! attribute each pod to its Deployment.
//!
//! Tests that read this history set the scrape interval to 7.5 s (`SCRAPE_INTERVAL`),
//! so a gauge is read over exactly one analysis interval.

use std::collections::BTreeMap;
use std::fmt::Write;

use canaryd::backtest::{RecordedArm, Recording};

/// Series: labels text -> (unix seconds, value) points.
type Family = BTreeMap<String, Vec<(f64, f64)>>;

/// The gauges' scrape interval in this history, as canaryd's setting spells it.
pub const SCRAPE_INTERVAL: &str = "7500ms";

/// OpenMetrics for `recording`, with the canary named `workload` and the baseline
/// `workload-primary` in `namespace`; two pods per arm for gauges.
pub fn from_recording(recording: &Recording, namespace: &str, workload: &str) -> String {
    let start = recording.start.as_second();
    let step = 30;
    let mut requests = Family::new();
    let mut buckets = Family::new();
    let mut memory = Family::new();
    let mut pod_owner = Family::new();
    let mut replicaset_owner = Family::new();
    let arms = [(workload.to_string(), true), (format!("{workload}-primary"), false)];
    for (name, is_canary) in &arms {
        let mut totals: BTreeMap<String, f64> = BTreeMap::new();
        let base = format!("namespace=\"{namespace}\",workload=\"{name}\"");
        for code in ["200", "500"] {
            requests.entry(format!("{base},code=\"{code}\"")).or_default().push((start as f64, 0.0));
        }
        for (i, row) in recording.intervals.iter().enumerate() {
            let t = (start + step * (i as i64 + 1)) as f64;
            let arm: Option<&RecordedArm> =
                if *is_canary { row.canary.as_ref() } else { row.baseline.as_ref() };
            let Some(arm) = arm else { continue };
            let (r, e) = (arm.requests.unwrap_or(0.0), arm.errors.unwrap_or(0.0));
            for (code, add) in [("200", r - e), ("500", e)] {
                let key = format!("{base},code=\"{code}\"");
                let total = totals.entry(key.clone()).or_default();
                *total += add;
                requests.entry(key).or_default().push((t, *total));
            }
            for (le, count) in arm.latency.iter().flatten() {
                let key = format!("{base},le=\"{le}\"");
                if !totals.contains_key(&key) {
                    buckets.entry(key.clone()).or_default().push((start as f64, 0.0));
                }
                let total = totals.entry(key.clone()).or_default();
                *total += count;
                buckets.entry(key).or_default().push((t, *total));
            }
            for (p, value) in arm.memory.iter().flatten().enumerate() {
                let replicaset = format!("{name}-5d8f7c");
                let pod = format!("{replicaset}-pod{p}");
                let key = format!("namespace=\"{namespace}\",pod=\"{pod}\",container=\"app\"");
                let owner = format!(
                    "namespace=\"{namespace}\",pod=\"{pod}\",owner_kind=\"ReplicaSet\",owner_name=\"{replicaset}\",owner_is_controller=\"true\""
                );
                let rs = format!(
                    "namespace=\"{namespace}\",replicaset=\"{replicaset}\",owner_kind=\"Deployment\",owner_name=\"{name}\",owner_is_controller=\"true\""
                );
                for j in 0..4 {
                    let at = t - step as f64 + 3.0 + 7.5 * j as f64;
                    memory.entry(key.clone()).or_default().push((at, *value));
                    pod_owner.entry(owner.clone()).or_default().push((at, 1.0));
                    if p == 0 {
                        replicaset_owner.entry(rs.clone()).or_default().push((at, 1.0));
                    }
                }
            }
        }
    }
    let mut out = String::new();
    family(&mut out, "http_requests", "counter", "http_requests_total", &requests);
    family(
        &mut out,
        "http_request_duration_seconds",
        "histogram",
        "http_request_duration_seconds_bucket",
        &buckets,
    );
    family(
        &mut out,
        "container_memory_working_set_bytes",
        "gauge",
        "container_memory_working_set_bytes",
        &memory,
    );
    family(&mut out, "kube_pod_owner", "gauge", "kube_pod_owner", &pod_owner);
    family(&mut out, "kube_replicaset_owner", "gauge", "kube_replicaset_owner", &replicaset_owner);
    out.push_str("# EOF\n");
    out
}

fn family(out: &mut String, name: &str, kind: &str, sample: &str, series: &Family) {
    let _ = writeln!(out, "# TYPE {name} {kind}");
    for (labels, points) in series {
        for (t, v) in points {
            let _ = writeln!(out, "{sample}{{{labels}}} {v} {t:.3}");
        }
    }
}
