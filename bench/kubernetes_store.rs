//! The Kubernetes platform's state in the API server at scale: the CanaryRun store
//! against the fake API server (a test double, in this process, over real HTTP), at
//! 1,000 and 10,000 rollouts. This measures the store alone (its write budget and a
//! restart's resume), not the whole loop on the Kubernetes platform, which
//! `cargo bench --bench kubernetes` measures.
//!
//! Each rollout is saved as the daemon saves it: at every 30 s interval its judge's
//! running sums and evaluation clock change; every `step` it moves a step (a decision,
//! then the platform's confirmation of the weight: two significant changes). Intervals
//! are spread evenly over the 30 s, and time is simulated: ten minutes of 1 s ticks, the
//! store's checkpoint clock driven by the simulation.
//!
//! Per size and step duration it prints: status writes per simulated second (from the
//! fake's request log), writes per tick, and the wall time and API reads to resume: a
//! new store listing every CanaryRun (pages of 500).
//!
//! Run: `cargo bench --bench kubernetes_store` (both sizes; a few minutes on 2 cores).

#[path = "../tests/support/mod.rs"]
mod support;

use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};
use std::time::{Duration, Instant};

use canaryd::engine::{Rollout, RolloutId};
use canaryd::platform::kubernetes::canaryrun::CanaryRun;
use canaryd::platform::kubernetes::store::{CanaryRunStore, DEFAULT_CHECKPOINT};
use canaryd::store::{Applied, RunState, RunStore, Version};
use jiff::Timestamp;
use k8s_openapi::api::core::v1::Namespace;
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::CustomResourceExt;
use kube::api::{Api, PostParams};
use support::fake_apiserver::FakeApiServer;

/// 2026-11-01T10:00:00Z.
const ORIGIN: i64 = 1_793_527_200;
const INTERVAL: i64 = 30;
const SIMULATED: i64 = 600;
const NAMESPACE: &str = "scale";

struct Figures {
    writes: usize,
    resume: Duration,
    resumed: usize,
    reads: usize,
}

fn states(n: usize) -> Vec<RunState> {
    let loaded = canaryd::policy::load_paths(&["policies/web-default.yaml".into()]);
    let plan = loaded.policies[0].plan.clone();
    (0..n)
        .map(|i| {
            let id = RolloutId { namespace: NAMESPACE.into(), name: format!("web-{i:05}") };
            RunState {
                arms: canaryd::platform::kubernetes::arms(&id),
                rollout: Rollout::new(id, "rev-1", plan.clone()),
                applied: Applied::default(),
                notified: 0,
                recorded: false,
                version: Version::default(),
            }
        })
        .collect()
}

async fn run(n: usize, step: i64) -> Figures {
    let fake = FakeApiServer::start().await;
    let client = fake.client("canaryd").await;
    let crds: Api<CustomResourceDefinition> = Api::all(client.clone());
    crds.create(&PostParams::default(), &CanaryRun::crd()).await.expect("the CanaryRun CRD");
    let ns: Namespace =
        serde_json::from_value(serde_json::json!({"metadata": {"name": NAMESPACE}})).expect("ns");
    Api::<Namespace>::all(client.clone()).create(&PostParams::default(), &ns).await.expect("namespace");
    let now = Arc::new(AtomicI64::new(ORIGIN));
    let clock = now.clone();
    let store = CanaryRunStore::new(client.clone(), Some(vec![NAMESPACE.into()]), DEFAULT_CHECKPOINT)
        .with_clock(Box::new(move || Timestamp::from_second(clock.load(Ordering::Relaxed)).expect("a time")));
    let mut states = states(n);
    // The first save of each (creating its CanaryRun) is not part of the steady state.
    let refs: Vec<&RunState> = states.iter().collect();
    let versions = store.save_all(&refs).await;
    for (s, v) in states.iter_mut().zip(versions) {
        s.version = v.expect("created");
    }
    let before = writes(&fake);
    for t in 1..=SIMULATED {
        now.store(ORIGIN + t, Ordering::Relaxed);
        let mut changed = Vec::new();
        for (i, s) in states.iter_mut().enumerate() {
            let offset = (i as i64 * INTERVAL) / n as i64;
            if (t + offset) % INTERVAL != 0 {
                continue;
            }
            let r = &mut s.rollout;
            r.intervals_analysed += 1;
            r.last_evaluation = Timestamp::from_second(ORIGIN + t).ok();
            r.next_evaluation = Timestamp::from_second(ORIGIN + t + INTERVAL).ok();
            if (t + offset) % step == 0 {
                // A step: the decision now, the platform's confirmation at once after.
                r.step += 1;
                r.weight = r.weight.saturating_add(10);
                r.decisions_made += 1;
                s.applied.weight = Some(r.weight);
            }
            changed.push(i);
        }
        let refs: Vec<&RunState> = changed.iter().map(|i| &states[*i]).collect();
        let versions = store.save_all(&refs).await;
        for (i, v) in changed.iter().zip(versions) {
            states[*i].version = v.expect("saved");
        }
    }
    let steady = writes(&fake) - before;
    let reads_before = reads(&fake);
    let started = Instant::now();
    let fresh = CanaryRunStore::new(client, Some(vec![NAMESPACE.into()]), DEFAULT_CHECKPOINT);
    let (resumed, problems) = fresh.load_all().await;
    assert!(problems.is_empty(), "{problems:?}");
    Figures {
        writes: steady,
        resume: started.elapsed(),
        resumed: resumed.len(),
        reads: reads(&fake) - reads_before,
    }
}

fn writes(fake: &FakeApiServer) -> usize {
    fake.requests()
        .iter()
        .filter(|r| r.is_for("canaryruns") && matches!(r.verb.as_str(), "update" | "patch" | "create"))
        .count()
}

fn reads(fake: &FakeApiServer) -> usize {
    fake.requests()
        .iter()
        .filter(|r| r.is_for("canaryruns") && matches!(r.verb.as_str(), "get" | "list"))
        .count()
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if !args.iter().any(|a| a == "--bench") {
        println!("kubernetes_store benchmark: run with `cargo bench --bench kubernetes_store`");
        return;
    }
    let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
    println!(
        "CanaryRun status writes over {SIMULATED} simulated s: {INTERVAL} s intervals, checkpoint {} s; goal at 10,000: at most 35 writes/s, resume within 60 s.",
        DEFAULT_CHECKPOINT.as_secs()
    );
    println!(
        "| rollouts | step every | writes | writes/s | writes/tick | writes/s if every interval were written | resume (list all) | rollouts resumed | API reads to resume |"
    );
    println!("|---|---|---|---|---|---|---|---|---|");
    for n in [1_000usize, 10_000] {
        for step in [120i64, 300] {
            let f = runtime.block_on(run(n, step));
            let per_second = f.writes as f64 / SIMULATED as f64;
            println!(
                "| {n} | {step} s | {} | {per_second:.1} | {per_second:.1} | {:.1} | {:.2} s | {} | {} |",
                f.writes,
                n as f64 / INTERVAL as f64,
                f.resume.as_secs_f64(),
                f.resumed,
                f.reads
            );
        }
    }
}
