//! The whole daemon loop on the Kubernetes platform at scale: N rollouts (1,000 and
//! 10,000) driven by the real loop, the real `KubernetesPlatform` and the real
//! `CanaryRunStore`, in a child process of their own, against the fake API server (a
//! test double over real HTTP, in the parent) and a real Prometheus (Debian's package)
//! holding the rollouts' scraped series (bench/scale.rs's history: one canary and one
//! baseline pod per rollout, scraped every 15 s with jitter).
//!
//! The parent plays the cluster, in bulk and without processes: a **stand-in for the
//! Deployment controller** reports every Deployment rolled out once its spec changes
//! (status written straight into the fake), and a **stand-in for a Gateway API
//! implementation** accepts every HTTPRoute generation (`status.parents`). The user's
//! side is the parent too: N Deployments labelled for the policy, each with its Service
//! and HTTPRoute, and, once canaryd has attached them all, a new template on each.
//!
//! The child ticks the loop once per second of wall time on a simulated clock (so the
//! Prometheus history lines up), and settles each tick's platform calls before the
//! next. The policy steps 10/50/100 every 30 s with 30 s intervals. At each tick the
//! parent counts the fake's requests from canaryd (reads, watches, writes by resource)
//! and Prometheus' queries; the child reports its CPU seconds and peak RSS. After the
//! step to 50%, a second daemon (a new store and platform in the same process) resumes
//! from the CanaryRuns, as after a restart.
//!
//! Run: `cargo bench --bench kubernetes` (1,000 then 10,000 rollouts: about 5 minutes on
//! 2 cores), or `-- --rollouts N` for one size. Needs `prometheus` and `promtool`
//! (scripts/install-deps). `BENCH_LOG=canaryd=info` prints the daemon's log on stderr.
//!
//! Every rollout here steps in the same second: the step ticks are the worst case, the
//! whole population's API calls at once. The figures and what they mean are in
//! docs/benchmarks.md ("The loop on Kubernetes").

#[path = "../tests/support/mod.rs"]
mod support;

#[path = "kubernetes/sharded.rs"]
mod sharded;

use std::io::{BufRead, Write};
use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};
use std::time::{Duration, Instant};

use canaryd::config::Settings;
use canaryd::daemon::metrics::LoopMetrics;
use canaryd::daemon::{Daemon, Options};
use canaryd::engine::Notification;
use canaryd::notify::Notifier;
use canaryd::platform::kubernetes::canaryrun::CanaryRun;
use canaryd::platform::kubernetes::platform::KubernetesPlatform;
use canaryd::platform::kubernetes::store::{CanaryRunStore, DEFAULT_CHECKPOINT};
use canaryd::source::prometheus::{PrometheusSource, QueryMetrics};
use jiff::Timestamp;
use kube::CustomResourceExt;
use serde_json::{Value, json};
use support::fake_apiserver::{FakeApiServer, Gvr};
use support::prometheus::{PrometheusServer, load_openmetrics};
use support::scale;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt};

/// 2026-11-01T10:00:00Z.
const ORIGIN: i64 = 1_793_527_200;
/// The simulated second of the first tick after the new templates.
const FIRST_TICK: i64 = scale::SPAN as i64 - 40;
/// The last simulated second a tick may take (the history ends at `SPAN`).
const LAST_TICK: i64 = scale::SPAN as i64 + 5;
const CONTROLLERS_EVERY: Duration = Duration::from_millis(200);

const POLICY: &str = "apiVersion: canaryd.io/v1alpha1
kind: CanaryPolicy
metadata: {name: bench, namespace: scale}
spec:
  selector: {matchLabels: {canary: enabled}}
  traffic: {router: gateway-api, steps: [10, 50, 100], stepDuration: 30s}
  analysis:
    interval: 30s
    minSampleSize: 20
    metrics:
      - {name: errors, template: http-error-rate, test: sequential, margin: 1.5}
      - {name: p95, template: http-latency-p95, test: sequential, max: 0.5}
";

/// Drops notifications (the bench measures the loop, not delivery).
#[derive(Default)]
struct DroppingNotifier;

impl Notifier for DroppingNotifier {
    async fn deliver(&self, _: &Notification) -> Result<(), canaryd::notify::DeliveryError> {
        Ok(())
    }
}

// ---------------------------------------------------------------------------------
// The child: canaryd's loop. It talks to the parent by lines: `MARK <label>` on stdout,
// then it waits for the parent's line on stdin (the parent counts requests there).

fn mark(label: &str) {
    // Blocking here lets the loop's other tasks (the platform's watch) run on.
    tokio::task::block_in_place(|| {
        println!("MARK {label}");
        std::io::stdout().flush().expect("stdout");
        let mut ack = String::new();
        std::io::stdin().lock().read_line(&mut ack).expect("the parent answers");
    });
}

async fn daemon(
    client: kube::Client,
    url: &str,
    clock: Arc<AtomicI64>,
) -> (Daemon<PrometheusSource, KubernetesPlatform, CanaryRunStore>, tokio::task::JoinHandle<()>) {
    let env = [("CANARYD__PROMETHEUS__URL".to_string(), url.to_string())];
    let settings = Settings::load(None, env.into_iter().collect()).expect("settings");
    let source =
        PrometheusSource::new(&settings.prometheus, QueryMetrics::default(), Duration::from_millis(50))
            .expect("source");
    let policies = canaryd::policy::load_str("bench.yaml", POLICY).policies;
    assert_eq!(policies.len(), 1, "the bench policy loads");
    let namespaces = Some(vec![scale::NAMESPACE.to_string()]);
    let platform = Arc::new(KubernetesPlatform::new(client.clone(), namespaces.clone()));
    let store = CanaryRunStore::new(client, namespaces, DEFAULT_CHECKPOINT)
        .with_clock(Box::new(move || Timestamp::from_second(clock.load(Ordering::Relaxed)).expect("a time")));
    let options = Options { batching: settings.prometheus.batching.clone(), ..Default::default() };
    let daemon = Daemon::start(
        Arc::new(source),
        platform.clone(),
        Arc::new(store),
        Arc::new(DroppingNotifier),
        None,
        policies,
        options,
        LoopMetrics::default(),
    )
    .await;
    let watching = tokio::spawn(platform.run(daemon.policies()));
    (daemon, watching)
}

/// Rollouts at `weight`, applied.
fn applied_at(d: &Daemon<PrometheusSource, KubernetesPlatform, CanaryRunStore>, weight: u8) -> usize {
    d.rollouts().filter(|s| s.applied.weight == Some(weight) && s.rollout.weight == weight).count()
}

async fn child(n: usize, url: String, kubeconfig: String) {
    // The daemon's log, when asked for (BENCH_LOG=info), on the child's stderr.
    if let Ok(filter) = std::env::var("BENCH_LOG") {
        tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr).init();
    }
    let config = kube::config::Kubeconfig::read_from(&kubeconfig).expect("the kubeconfig");
    let config = kube::Config::from_custom_kubeconfig(config, &Default::default()).await.expect("config");
    let client = kube::Client::try_from(config).expect("client");
    let clock = Arc::new(AtomicI64::new(ORIGIN + FIRST_TICK));
    mark("attach");
    let cpu = scale::cpu_seconds();
    let (mut d, watching) = daemon(client.clone(), &url, clock.clone()).await;
    // The parent answers once every Deployment is attached (and then changes templates).
    mark(&format!("attached cpu={:.2}", scale::cpu_seconds() - cpu));
    let mut t = FIRST_TICK;
    let mut measured = 0;
    while t <= LAST_TICK {
        let began = Instant::now();
        clock.store(ORIGIN + t, Ordering::Relaxed);
        mark("tick");
        let cpu = scale::cpu_seconds();
        let report = d.tick(Timestamp::from_second(ORIGIN + t).expect("a time")).await;
        d.settle(Duration::from_secs(600)).await;
        measured += report.evaluated;
        let (at10, at50) = (applied_at(&d, 10), applied_at(&d, 50));
        mark(&format!(
            "tick-end t={t} cpu={:.3} wall={:.3} evaluated={} saved={} at10={at10} at50={at50} rollouts={}",
            scale::cpu_seconds() - cpu,
            began.elapsed().as_secs_f64(),
            report.evaluated,
            report.saved,
            d.rollouts().count(),
        ));
        t += 1;
        if at50 == n && measured >= n {
            break;
        }
        tokio::time::sleep(Duration::from_secs(1).saturating_sub(began.elapsed())).await;
    }
    watching.abort();
    drop(d);
    // A restart: a new store and platform list everything again.
    mark("resume");
    let (cpu, began) = (scale::cpu_seconds(), Instant::now());
    let (mut d, watching) = daemon(client, &url, clock.clone()).await;
    let loaded = d.rollouts().count();
    let start = began.elapsed();
    clock.store(ORIGIN + t, Ordering::Relaxed);
    d.tick(Timestamp::from_second(ORIGIN + t).expect("a time")).await;
    d.settle(Duration::from_secs(600)).await;
    mark(&format!(
        "resume-end cpu={:.3} start={:.3} first_tick_done={:.3} loaded={loaded} at50={} rss={:.0}",
        scale::cpu_seconds() - cpu,
        start.as_secs_f64(),
        began.elapsed().as_secs_f64(),
        applied_at(&d, 50),
        scale::peak_rss_mib()
    ));
    watching.abort();
}

// ---------------------------------------------------------------------------------
// The parent: the cluster.

/// canaryd's requests so far, by kind.
#[derive(Clone, Copy, Default, Debug)]
struct Counts {
    reads: usize,
    watches: usize,
    writes: usize,
    run_writes: usize,
    deployment_writes: usize,
    route_writes: usize,
    other_writes: usize,
}

impl std::ops::Sub for Counts {
    type Output = Counts;
    fn sub(self, o: Counts) -> Counts {
        Counts {
            reads: self.reads - o.reads,
            watches: self.watches - o.watches,
            writes: self.writes - o.writes,
            run_writes: self.run_writes - o.run_writes,
            deployment_writes: self.deployment_writes - o.deployment_writes,
            route_writes: self.route_writes - o.route_writes,
            other_writes: self.other_writes - o.other_writes,
        }
    }
}

/// canaryd's requests to the fake so far, counted as they come (the log is read from
/// where the last count ended: it holds hundreds of thousands of requests at 10,000).
#[derive(Default)]
struct Tally {
    seen: usize,
    counts: Counts,
}

impl Tally {
    fn now(&mut self, fake: &FakeApiServer) -> Counts {
        let new = fake.requests_from(self.seen);
        self.seen += new.len();
        let c = &mut self.counts;
        for r in new.iter().filter(|r| r.client == "canaryd") {
            match r.verb.as_str() {
                "get" | "list" => c.reads += 1,
                "watch" => c.watches += 1,
                "create" | "update" | "patch" | "delete" => {
                    c.writes += 1;
                    if r.is_for("canaryruns") {
                        c.run_writes += 1;
                    } else if r.is_for("deployments") {
                        c.deployment_writes += 1;
                    } else if r.is_for("httproutes") {
                        c.route_writes += 1;
                    } else {
                        c.other_writes += 1;
                    }
                }
                _ => {}
            }
        }
        *c
    }
}

/// Prometheus' own count of instant queries served.
async fn queries_served(url: &str) -> f64 {
    let text =
        reqwest::get(format!("{url}/metrics")).await.expect("Prometheus answers").text().await.unwrap();
    let needle = "prometheus_http_requests_total{code=\"200\",handler=\"/api/v1/query\"} ";
    text.lines().find_map(|l| l.strip_prefix(needle)).map_or(0.0, |v| v.trim().parse().unwrap_or(0.0))
}

fn route_gvr() -> Gvr {
    Gvr::new("gateway.networking.k8s.io", "v1", "httproutes")
}

pub(crate) fn template(name: &str, version: &str) -> Value {
    json!({
        "metadata": {"labels": {"app": name}},
        "spec": {"containers": [{
            "name": "app", "image": format!("demo-app:{version}"),
            "ports": [{"name": "http", "containerPort": 8080}]
        }]}
    })
}

/// The user's objects: per rollout a Deployment labelled for the policy, its Service
/// and its HTTPRoute.
fn create_workloads(fake: &FakeApiServer, n: usize) {
    let ns = scale::NAMESPACE;
    for i in 0..n {
        let name = scale::name(i);
        fake.put(&Gvr::core("services"), ns, json!({
            "apiVersion": "v1", "kind": "Service",
            "metadata": {"name": name, "namespace": ns},
            "spec": {"selector": {"app": name}, "ports": [{"name": "http", "port": 8080, "targetPort": 8080}]}
        }))
        .expect("service");
        fake.put(&route_gvr(), ns, json!({
            "apiVersion": "gateway.networking.k8s.io/v1", "kind": "HTTPRoute",
            "metadata": {"name": name, "namespace": ns},
            "spec": {"parentRefs": [{"name": "public"}], "rules": [{"backendRefs": [{"name": name, "port": 8080}]}]}
        }))
        .expect("route");
        fake.put(&Gvr::deployments(), ns, json!({
            "apiVersion": "apps/v1", "kind": "Deployment",
            "metadata": {"name": name, "namespace": ns, "labels": {"canary": "enabled"}},
            "spec": {"replicas": 1, "selector": {"matchLabels": {"app": name}}, "template": template(&name, "v1")}
        }))
        .expect("deployment");
    }
}

/// One pass of the controller stand-ins: every Deployment whose spec changed is
/// reported rolled out, every HTTPRoute generation accepted.
fn controllers(fake: &FakeApiServer) {
    let ns = scale::NAMESPACE;
    // What needs a status is found without copying every object (at 10,000 rollouts a
    // copy of every Deployment each round would hold the fake's store most of the time).
    let mut deployments = Vec::new();
    fake.visit(&Gvr::deployments(), Some(ns), |d| {
        let generation = d["metadata"]["generation"].as_i64().unwrap_or(0);
        if d["status"]["observedGeneration"].as_i64() != Some(generation) {
            let replicas = d["spec"]["replicas"].as_i64().unwrap_or(1);
            let name = d["metadata"]["name"].as_str().unwrap_or("").to_string();
            deployments.push((name, generation, replicas));
        }
    });
    for (name, generation, replicas) in deployments {
        let status = json!({
            "observedGeneration": generation, "replicas": replicas, "updatedReplicas": replicas,
            "readyReplicas": replicas, "availableReplicas": replicas,
            "conditions": [{"type": "Progressing", "status": "True", "reason": "NewReplicaSetAvailable"}],
        });
        let _ = fake.put_status(&Gvr::deployments(), ns, &name, status);
    }
    let mut routes = Vec::new();
    fake.visit(&route_gvr(), Some(ns), |r| {
        let generation = r["metadata"]["generation"].as_i64().unwrap_or(0);
        if r["status"]["parents"][0]["conditions"][0]["observedGeneration"].as_i64() != Some(generation) {
            routes.push((r["metadata"]["name"].as_str().unwrap_or("").to_string(), generation));
        }
    });
    for (name, generation) in routes {
        let parents = json!([{
            "parentRef": {"name": "public"},
            "controllerName": "stand-in.canaryd.io/gateway",
            "conditions": [{
                "type": "Accepted", "status": "True", "reason": "Accepted",
                "observedGeneration": generation, "lastTransitionTime": "2026-01-01T00:00:00Z",
            }],
        }]);
        let _ = fake.put_status(&route_gvr(), ns, &name, json!({"parents": parents}));
    }
}

/// Every Deployment attached: its primary exists and it is at 0 replicas, its route
/// split in two.
pub(crate) fn attached(fake: &FakeApiServer, n: usize) -> usize {
    let (mut primaries, mut at_zero) = (std::collections::HashSet::new(), std::collections::HashSet::new());
    fake.visit(&Gvr::deployments(), Some(scale::NAMESPACE), |d| {
        let name = d["metadata"]["name"].as_str().unwrap_or("");
        match name.strip_suffix("-primary") {
            Some(web) => primaries.insert(web.to_string()),
            None if d["spec"]["replicas"] == 0 => at_zero.insert(name.to_string()),
            None => false,
        };
    });
    let mut split = std::collections::HashSet::new();
    fake.visit(&route_gvr(), Some(scale::NAMESPACE), |r| {
        if r["spec"]["rules"][0]["backendRefs"].as_array().map_or(0, Vec::len) == 2 {
            split.insert(r["metadata"]["name"].as_str().unwrap_or("").to_string());
        }
    });
    (0..n)
        .map(scale::name)
        .filter(|name| primaries.contains(name) && at_zero.contains(name) && split.contains(name))
        .count()
}

fn field<'a>(line: &'a str, key: &str) -> &'a str {
    line.split_whitespace().find_map(|w| w.strip_prefix(key)?.strip_prefix('=')).unwrap_or("")
}

/// The cluster every row runs against: the CanaryRun CRD, `namespaces`, N workloads
/// with their Services and route, and the bulk controller stand-ins, run every
/// [`CONTROLLERS_EVERY`] until the returned task is aborted.
pub(crate) async fn set_up_cluster(
    fake: &Arc<FakeApiServer>,
    n: usize,
    namespaces: &[&str],
) -> tokio::task::JoinHandle<()> {
    let setup = fake.client("setup").await;
    let crds: kube::Api<
        k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition,
    > = kube::Api::all(setup.clone());
    crds.create(&Default::default(), &CanaryRun::crd()).await.expect("the CanaryRun CRD");
    let api = kube::Api::<k8s_openapi::api::core::v1::Namespace>::all(setup);
    for name in namespaces {
        let ns = serde_json::from_value(json!({"metadata": {"name": name}})).expect("a namespace");
        api.create(&Default::default(), &ns).await.expect("the namespace");
    }
    create_workloads(fake, n);
    controllers(fake);
    let fake = fake.clone();
    tokio::spawn(async move {
        loop {
            controllers(&fake);
            tokio::time::sleep(CONTROLLERS_EVERY).await;
        }
    })
}

async fn parent(n: usize, exe: &std::path::Path) {
    let started = Instant::now();
    let history = load_openmetrics(&support::scrape::openmetrics(&scale::pods(n, 0, true), ORIGIN));
    let prometheus = PrometheusServer::start("", Some(&history.path().join("tsdb"))).await;
    let fake = Arc::new(FakeApiServer::start().await);
    let stand_ins = set_up_cluster(&fake, n, &[scale::NAMESPACE]).await;
    let dir = tempfile::tempdir().expect("a temp dir");
    let kubeconfig = fake.kubeconfig(dir.path(), "canaryd");
    eprintln!("N = {n}: cluster and history set up in {:.0} s", started.elapsed().as_secs_f64());
    let mut child = tokio::process::Command::new(exe)
        .args(["--bench", "--child", &prometheus.url, "--kubeconfig"])
        .arg(&kubeconfig)
        .args(["--rollouts", &n.to_string()])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("the child runs");
    let mut stdin = child.stdin.take().expect("stdin");
    let mut lines = tokio::io::BufReader::new(child.stdout.take().expect("stdout")).lines();
    let mut tally = Tally::default();
    let (mut before, mut queries_before, mut attach_began) = (tally.now(&fake), 0.0, Instant::now());
    let mut idle = (0usize, 0.0f64, Counts::default());
    while let Some(line) = lines.next_line().await.expect("the child's output") {
        let Some(label) = line.strip_prefix("MARK ") else {
            eprintln!("child: {line}");
            continue;
        };
        if label == "attach" {
            attach_began = Instant::now();
        } else if label.starts_with("attached") {
            let deadline = Instant::now() + Duration::from_secs(600);
            while attached(&fake, n) < n {
                assert!(Instant::now() < deadline, "not every Deployment was attached within 600 s");
                tokio::time::sleep(Duration::from_millis(250)).await;
            }
            let c = tally.now(&fake) - before;
            println!(
                "| {n} | attach all | {} | {:.1} s | - | {} | {} | {} ({} Deployments, {} routes, {} other) | - |",
                field(label, "cpu"),
                attach_began.elapsed().as_secs_f64(),
                c.reads,
                c.watches,
                c.writes,
                c.deployment_writes,
                c.route_writes,
                c.other_writes,
            );
            // The user's change: a new template on every Deployment.
            for i in 0..n {
                let name = scale::name(i);
                let mut d = fake.get(&Gvr::deployments(), scale::NAMESPACE, &name).expect("the Deployment");
                d["spec"]["template"] = template(&name, "v2");
                fake.put(&Gvr::deployments(), scale::NAMESPACE, d).expect("a new template");
            }
        } else if label.starts_with("tick-end") {
            let c = tally.now(&fake) - before;
            let queries = queries_served(&prometheus.url).await - queries_before;
            let cpu: f64 = field(label, "cpu").parse().unwrap_or(0.0);
            let busy = c.writes > 0 || queries > 0.0 || field(label, "evaluated") != "0";
            if busy {
                println!(
                    "| {n} | t={} s: {} at 10%, {} at 50% | {cpu:.2} | {} s | {queries} | {} | {} | {} ({} CanaryRuns, {} Deployments, {} routes, {} other) | {} |",
                    field(label, "t"),
                    field(label, "at10"),
                    field(label, "at50"),
                    field(label, "wall"),
                    c.reads,
                    c.watches,
                    c.writes,
                    c.run_writes,
                    c.deployment_writes,
                    c.route_writes,
                    c.other_writes,
                    field(label, "evaluated"),
                );
            } else {
                idle.0 += 1;
                idle.1 += cpu;
                idle.2.reads += c.reads;
                idle.2.watches += c.watches;
            }
        } else if label.starts_with("resume-end") {
            let c = tally.now(&fake) - before;
            if idle.0 > 0 {
                println!(
                    "| {n} | {} quiet ticks (mean) | {:.3} | - | 0 | {:.1} | {:.1} | 0 | 0 |",
                    idle.0,
                    idle.1 / idle.0 as f64,
                    idle.2.reads as f64 / idle.0 as f64,
                    idle.2.watches as f64 / idle.0 as f64,
                );
            }
            println!(
                "| {n} | resume: {} runs loaded in {} s, first tick done at {} s, {} at 50% | {} | {} s | - | {} | {} | {} | - |",
                field(label, "loaded"),
                field(label, "start"),
                field(label, "first_tick_done"),
                field(label, "at50"),
                field(label, "cpu"),
                field(label, "first_tick_done"),
                c.reads,
                c.watches,
                c.writes,
            );
            eprintln!("N = {n}: peak RSS of the daemon's process {} MiB", field(label, "rss"));
        }
        before = tally.now(&fake);
        queries_before = queries_served(&prometheus.url).await;
        stdin.write_all(b"ok\n").await.expect("the child's stdin");
        stdin.flush().await.expect("the child's stdin");
    }
    let status = child.wait().await.expect("the child ends");
    assert!(status.success(), "N = {n} failed");
    stand_ins.abort();
    eprintln!("N = {n}: {:.0} s in all", started.elapsed().as_secs_f64());
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if !args.iter().any(|a| a == "--bench") {
        println!("kubernetes benchmark: run with `cargo bench --bench kubernetes`");
        return;
    }
    let value = |flag: &str| args.iter().position(|a| a == flag).and_then(|i| args.get(i + 1).cloned());
    let rollouts: Option<usize> = value("--rollouts").and_then(|v| v.parse().ok());
    let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
    if let Some(url) = value("--child") {
        let kubeconfig = value("--kubeconfig").expect("--kubeconfig PATH");
        runtime.block_on(child(rollouts.expect("--rollouts N"), url, kubeconfig));
        return;
    }
    println!(
        "The loop on the Kubernetes platform (real KubernetesPlatform and CanaryRunStore in a child process) against the fake API server, with bulk stand-ins for the Deployment controller and a Gateway; 1 s ticks on a simulated clock, steps 10/50/100 every 30 s."
    );
    println!(
        "| rollouts | tick | CPU s (daemon) | wall | Prometheus queries | API reads | API watches | API writes | rollouts measured |"
    );
    println!("|---|---|---|---|---|---|---|---|---|");
    let exe = std::env::current_exe().expect("the bench's own path");
    let sharded_only = args.iter().any(|a| a == "--sharded");
    if !sharded_only {
        for n in rollouts.map_or(vec![1_000, 10_000], |n| vec![n]) {
            runtime.block_on(parent(n, &exe));
        }
        println!(
            "Goals at 10,000: at most 1 s of CPU per tick, at most 256 MiB; writes bounded by the steps, not the ticks."
        );
    }
    println!();
    println!(
        "Sharded: 3 `canaryd run` replicas, shards = 6, default Lease timings (15 s lease, 2 s retry), the same stand-ins; an empty Prometheus, so the rollouts hold at 10%. Writes exclude the replicas' Leases."
    );
    println!("| rollouts | replicas × shards | what | wall | writes a / b / c | writes/s a / b / c |");
    println!("|---|---|---|---|---|---|");
    let canaryd = std::path::Path::new(env!("CARGO_BIN_EXE_canaryd"));
    runtime.block_on(sharded::run(rollouts.unwrap_or(10_000), canaryd));
    println!("Rerun: cargo bench --bench kubernetes [-- --rollouts N] [--sharded: the sharded rows only]");
}
