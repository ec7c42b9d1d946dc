//! The sharded row of `cargo bench --bench kubernetes`: three real `canaryd run`
//! replicas with `shards = 6` and the default Lease timings (15 s lease, 10 s renew
//! deadline, 2 s retry), N rollouts, against the fake API server with the same bulk
//! controller stand-ins as the single-daemon rows, and an empty real Prometheus (no
//! data: every interval is inconclusive, so the rollouts hold at 10%, which is enough to
//! measure the writes and the takeover).
//!
//! Measured: the time for the shards to spread (2, 2, 2); attaching all N and then
//! starting all N (the step to 10%), with each replica's writes and writes per second;
//! each replica's peak RSS; then one replica is killed with SIGKILL, and the time until
//! the survivors hold all 6 Leases, and until their APIs list all N rollouts again
//! (the dead replica's shards resumed from their CanaryRuns).

use std::collections::BTreeMap;
use std::path::Path;
use std::time::{Duration, Instant};

use super::support::fake_apiserver::{FakeApiServer, Gvr};
use super::support::prometheus::{PrometheusServer, free_port};
use super::support::scale;
use super::{attached, set_up_cluster, template};

const SHARDS: u32 = 6;
const REPLICAS: [&str; 3] = ["a", "b", "c"];
const LEASE_NAMESPACE: &str = "canaryd";

const POLICY: &str = "apiVersion: canaryd.io/v1alpha1
kind: CanaryPolicy
metadata: {name: bench, namespace: scale}
spec:
  selector: {matchLabels: {canary: enabled}}
  traffic: {router: gateway-api, steps: [10, 50, 100], stepDuration: 30s}
  analysis:
    interval: 30s
    inconclusiveLimit: 1000
    metrics:
      - {name: errors, template: http-error-rate, test: sequential, margin: 1.5}
";

fn holders(fake: &FakeApiServer) -> BTreeMap<String, usize> {
    let leases = Gvr::new("coordination.k8s.io", "v1", "leases");
    let mut held = BTreeMap::new();
    for k in 0..SHARDS {
        let lease = fake.get(&leases, LEASE_NAMESPACE, &format!("canaryd-shard-{k}"));
        if let Some(h) = lease.and_then(|l| l["spec"]["holderIdentity"].as_str().map(String::from))
            && !h.is_empty()
        {
            *held.entry(h).or_default() += 1;
        }
    }
    held
}

/// Each replica's writes (any verb but get, list and watch; its Leases left out) among
/// the requests from `from` on.
fn writes(fake: &FakeApiServer, from: usize) -> BTreeMap<String, usize> {
    let mut by = BTreeMap::new();
    for r in fake.requests_from(from) {
        let lease = r.resource.as_ref().is_some_and(|t| t.plural == "leases");
        if let Some(replica) = r.client.strip_prefix("canaryd-")
            && !lease
            && !["get", "list", "watch"].contains(&r.verb.as_str())
        {
            *by.entry(replica.to_string()).or_default() += 1;
        }
    }
    by
}

/// All replicas' writes among the requests from `from` on, by verb, resource (with its
/// subresource) and status, most first: where the writes of a phase went.
fn writes_by_kind(fake: &FakeApiServer, from: usize) -> String {
    let mut by: BTreeMap<String, usize> = BTreeMap::new();
    for r in fake.requests_from(from) {
        let Some(t) = r.resource.as_ref() else { continue };
        if r.client.starts_with("canaryd-")
            && t.plural != "leases"
            && !["get", "list", "watch"].contains(&r.verb.as_str())
        {
            let sub = t.subresource.as_deref().map(|s| format!("/{s}")).unwrap_or_default();
            *by.entry(format!("{} {}{sub} {}", r.verb, t.plural, r.status)).or_default() += 1;
        }
    }
    let mut most: Vec<(String, usize)> = by.into_iter().collect();
    most.sort_by_key(|b| std::cmp::Reverse(b.1));
    most.iter().take(8).map(|(k, n)| format!("{k}: {n}")).collect::<Vec<_>>().join(", ")
}

fn canary_runs(fake: &FakeApiServer) -> usize {
    let mut n = 0;
    fake.visit(&Gvr::new("canaryd.io", "v1alpha1", "canaryruns"), Some(scale::NAMESPACE), |_| n += 1);
    n
}

fn peak_rss_mib(pid: u32) -> f64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    let kib: f64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .unwrap_or(0.0);
    kib / 1024.0
}

async fn wait(what: &str, within: Duration, mut done: impl FnMut() -> bool) -> Duration {
    let began = Instant::now();
    while !done() {
        assert!(began.elapsed() < within, "{what}: not within {within:?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    began.elapsed()
}

/// How many rollouts the APIs on `ports` list together.
async fn listed(http: &reqwest::Client, ports: &[u16]) -> usize {
    listed_where(http, ports, |_| true).await
}

/// How many rollouts the replicas' APIs list whose weight the platform confirmed at
/// `weight`.
async fn applied_at(http: &reqwest::Client, ports: &[u16], weight: u8) -> usize {
    listed_where(http, ports, |v| v["appliedWeight"] == weight).await
}

async fn listed_where(
    http: &reqwest::Client,
    ports: &[u16],
    keep: impl Fn(&serde_json::Value) -> bool,
) -> usize {
    let mut n = 0;
    for port in ports {
        let url = format!("http://127.0.0.1:{port}/api/v1/rollouts");
        if let Ok(r) = http.get(url).bearer_auth("bench-token-of-16-chars").send().await
            && let Ok(views) = r.json::<Vec<serde_json::Value>>().await
        {
            n += views.iter().filter(|v| keep(v)).count();
        }
    }
    n
}

fn row(n: usize, what: &str, wall: Duration, by: &BTreeMap<String, usize>) {
    let seconds = wall.as_secs_f64().max(1e-3);
    let each: Vec<String> = REPLICAS.iter().map(|r| by.get(*r).copied().unwrap_or(0).to_string()).collect();
    let rates: Vec<String> = REPLICAS
        .iter()
        .map(|r| format!("{:.0}", by.get(*r).copied().unwrap_or(0) as f64 / seconds))
        .collect();
    println!(
        "| {n} | 3 × {SHARDS} | {what} | {seconds:.1} s | {} | {} |",
        each.join(" / "),
        rates.join(" / ")
    );
}

/// Runs the sharded scenario at `n` rollouts and prints its rows.
pub async fn run(n: usize, canaryd: &Path) {
    let started = Instant::now();
    let prometheus = PrometheusServer::start("", None).await;
    let fake = std::sync::Arc::new(FakeApiServer::start().await);
    let stand_ins = set_up_cluster(&fake, n, &[scale::NAMESPACE, LEASE_NAMESPACE]).await;
    let dir = tempfile::tempdir().expect("a temp dir");
    let d = dir.path().display().to_string();
    std::fs::create_dir_all(dir.path().join("policies")).expect("policies");
    std::fs::write(dir.path().join("policies/bench.yaml"), POLICY).expect("policy");
    let mut replicas = BTreeMap::new();
    let mut ports = BTreeMap::new();
    let log = std::env::var("BENCH_LOG").unwrap_or_else(|_| "warn".into());
    for id in REPLICAS {
        let port = free_port();
        let settings = format!(
            "[server]\nlisten = \"127.0.0.1:{port}\"\napi_token = \"bench-token-of-16-chars\"\n\
             [prometheus]\nurl = \"{}\"\ntimeout = \"2s\"\nretries = 0\nscrape_interval = \"15s\"\n\
             [policies]\npaths = [\"{d}/policies\"]\n[log]\nlevel = \"{log}\"\n\
             [daemon]\nstate_dir = \"{d}/state-{id}\"\nrecords_dir = \"{d}/records-{id}\"\ntick = \"1s\"\n\
             [kubernetes]\nnamespaces = [\"{}\"]\nshards = {SHARDS}\n\
             [kubernetes.lease]\nnamespace = \"{LEASE_NAMESPACE}\"\nidentity = \"{id}\"\n",
            prometheus.url,
            scale::NAMESPACE,
        );
        let config = dir.path().join(format!("canaryd-{id}.toml"));
        std::fs::write(&config, settings).expect("settings");
        let kubeconfig = fake.kubeconfig(dir.path(), &format!("canaryd-{id}"));
        let child = std::process::Command::new(canaryd)
            .args(["run", "--config"])
            .arg(&config)
            .env("KUBECONFIG", kubeconfig)
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::inherit())
            .spawn()
            .expect("canaryd runs");
        replicas.insert(id, child);
        ports.insert(id, port);
    }
    eprintln!("sharded, N = {n}: set up and 3 replicas started in {:.0} s", started.elapsed().as_secs_f64());

    let from = fake.request_count();
    let spread = [("a".to_string(), 2), ("b".to_string(), 2), ("c".to_string(), 2)].into();
    let balanced =
        wait("the shards spread 2/2/2", Duration::from_secs(300), || holders(&fake) == spread).await;
    row(n, "shards spread 2 / 2 / 2 (from start)", balanced, &writes(&fake, from));
    let attach =
        wait("every Deployment attached", Duration::from_secs(900), || attached(&fake, n) == n).await;
    row(n, "attach all (after the spread)", attach, &writes(&fake, from));

    let from = fake.request_count();
    for i in 0..n {
        let name = scale::name(i);
        let mut d = fake.get(&Gvr::deployments(), scale::NAMESPACE, &name).expect("the Deployment");
        d["spec"]["template"] = template(&name, "v2");
        fake.put(&Gvr::deployments(), scale::NAMESPACE, d).expect("a new template");
    }
    let began = wait("every rollout started", Duration::from_secs(900), || canary_runs(&fake) == n).await;
    row(n, "start all: every CanaryRun created", began, &writes(&fake, from));
    // Then until every rollout's 10% is confirmed (its route patched and read back).
    let http = reqwest::Client::new();
    let all = [ports["a"], ports["b"], ports["c"]];
    let settle = Instant::now();
    let mut at_10 = applied_at(&http, &all, 10).await;
    while at_10 < n && settle.elapsed() < Duration::from_secs(180) {
        tokio::time::sleep(Duration::from_millis(500)).await;
        at_10 = applied_at(&http, &all, 10).await;
    }
    let what = if at_10 == n {
        "start all: every rollout at 10% (from the new revisions)".to_string()
    } else {
        format!("start all: {at_10} of {n} at 10% when the bench stopped waiting (from the new revisions)")
    };
    row(n, &what, began + settle.elapsed(), &writes(&fake, from));
    eprintln!("sharded, N = {n}: the start's writes by kind: {}", writes_by_kind(&fake, from));
    let rss: Vec<String> =
        REPLICAS.iter().map(|r| format!("{:.0}", peak_rss_mib(replicas[r].id()))).collect();
    println!("| {n} | 3 × {SHARDS} | peak RSS per replica (MiB) | - | {} | - |", rss.join(" / "));

    let mut dead = replicas.remove("b").expect("b");
    let _ = dead.kill();
    let _ = dead.wait();
    let killed = Instant::now();
    let survivors = [("a".to_string(), 3), ("c".to_string(), 3)].into();
    let taken =
        wait("the survivors hold the 6 shards", Duration::from_secs(120), || holders(&fake) == survivors)
            .await;
    println!(
        "| {n} | 3 × {SHARDS} | b killed: a and c hold all 6 Leases | {:.1} s | - | - |",
        taken.as_secs_f64()
    );
    let alive = [ports["a"], ports["c"]];
    while listed(&http, &alive).await < n {
        assert!(killed.elapsed() < Duration::from_secs(300), "the survivors list every rollout within 300 s");
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    println!(
        "| {n} | 3 × {SHARDS} | b killed: a and c show all {n} rollouts (resumed) | {:.1} s | - | - |",
        killed.elapsed().as_secs_f64()
    );
    for (_, mut child) in replicas {
        let _ = child.kill();
        let _ = child.wait();
    }
    stand_ins.abort();
    eprintln!("sharded, N = {n}: {:.0} s in all", started.elapsed().as_secs_f64());
}
