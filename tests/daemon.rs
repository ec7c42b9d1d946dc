//! The daemon loop, driven tick by tick with an injected clock over history written into
//! a real Prometheus, with the in-memory platform, store and notifier: a bad canary is
//! rolled back and a good one promoted; a crash at any point between "state saved" and
//! "all actions confirmed" changes nothing in the end; a hanging platform call, a
//! failing Prometheus shard and a notifier that is down hold up only their own rollouts.

mod support;

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::Duration;

use canaryd::config::Settings;
use canaryd::daemon::metrics::{LoopMetrics, ValueSeries};
use canaryd::daemon::records::{self, RecordStore, Retention};
use canaryd::daemon::{Daemon, Options, run_until};
use canaryd::engine::{DecisionKind, Phase, RolloutId};
use canaryd::notify::{memory::MemoryNotifier, outbox::OutboxOptions};
use canaryd::platform::{
    NewRevision,
    memory::{Fault, MemoryPlatform},
};
use canaryd::policy::LoadedPolicy;
use canaryd::source::prometheus::PrometheusSource;
use canaryd::source::prometheus::QueryMetrics;
use canaryd::store::memory::MemoryStore;
use jiff::Timestamp;
use support::prometheus::{PrometheusServer, load_openmetrics, poll};
use support::scrape::{Pod, Scraped, openmetrics, simulate};

/// The history's origin: 2026-11-01T10:00:00Z.
const ORIGIN: i64 = 1_793_527_200;
/// Seconds of history.
const SPAN: f64 = 1500.0;
/// Ticks every 10 s from here: not aligned with the 15 s scrapes or the 30 s interval.
const FIRST_TICK: i64 = 97;
const TICK: i64 = 10;

fn policy(health_port: u16) -> String {
    format!(
        "apiVersion: canaryd.io/v1alpha1
kind: CanaryPolicy
metadata: {{name: web, namespace: shop}}
spec:
  selector: {{matchLabels: {{tier: web}}}}
  traffic: {{steps: [10, 50, 100], stepDuration: 1m}}
  analysis:
    interval: 30s
    minSampleSize: 50
    metrics:
      - {{name: errors, template: http-error-rate, test: sequential, margin: 1.5}}
      - {{name: p95, template: http-latency-p95, test: sequential, max: 0.5}}
  triggers:
    - healthCheck: {{url: \"http://127.0.0.1:{health_port}/{{{{workload}}}}/healthz\", consecutiveFailures: 3, timeout: 1s}}
---
apiVersion: canaryd.io/v1alpha1
kind: CanaryPolicy
metadata: {{name: broken-shard, namespace: shop}}
spec:
  selector: {{matchLabels: {{tier: broken}}}}
  traffic: {{steps: [10, 50, 100], stepDuration: 1m}}
  analysis:
    interval: 30s
    inconclusiveLimit: 1000
    metrics:
      - {{name: errors, template: http-error-rate, test: sequential, margin: 1.5}}
      - name: odd
        test: threshold
        max: 1
        query: 'sum by ($by) (http_requests_total{{$matchers}}) / on() group_left sum by ($by) (http_requests_total{{$matchers}})'
"
    )
}

fn pod(workload: &str, error_rate: f64, seed: u64) -> Scraped {
    let pod = Pod {
        namespace: "shop".into(),
        workload: workload.into(),
        pod: format!("{workload}-pod"),
        rate: 8.0,
        error_rate,
        slow: [0.1, 0.01],
        scrape: 15.0,
        jitter: 1.5,
        start: 0.0,
        end: SPAN,
        restarts: vec![],
        histogram: true,
    };
    simulate(pod, seed)
}

/// Good canaries err as often as their baselines; `bad` errs at 8% against 1%.
fn history(names: &[&str]) -> String {
    let mut pods = Vec::new();
    for (i, name) in names.iter().enumerate() {
        let canary_errors = if name.starts_with("bad") { 0.08 } else { 0.01 };
        pods.push(pod(name, canary_errors, 10 + 2 * i as u64));
        pods.push(pod(&format!("{name}-primary"), 0.01, 11 + 2 * i as u64));
    }
    openmetrics(&pods, ORIGIN)
}

/// A health endpoint on loopback: 500 for `sick-*` workloads, no answer ever for
/// `slow-*`, 200 for the others.
async fn health_server() -> u16 {
    use axum::extract::Path;
    use axum::http::StatusCode;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let health = |Path(workload): Path<String>| async move {
        if workload.starts_with("slow") {
            std::future::pending::<()>().await;
        }
        if workload.starts_with("sick") { StatusCode::INTERNAL_SERVER_ERROR } else { StatusCode::OK }
    };
    let app = axum::Router::new().route("/{workload}/healthz", axum::routing::get(health));
    tokio::spawn(async move { axum::serve(listener, app).await });
    port
}

struct World {
    _prometheus: PrometheusServer,
    _tsdb: tempfile::TempDir,
    records_dir: tempfile::TempDir,
    source: Arc<PrometheusSource>,
    platform: Arc<MemoryPlatform>,
    store: Arc<MemoryStore>,
    notifier: Arc<MemoryNotifier>,
    policies: Vec<LoadedPolicy>,
    registry: Arc<prometheus_client::registry::Registry>,
    metrics: LoopMetrics,
}

impl World {
    async fn new(names: &[&str]) -> World {
        let tsdb = load_openmetrics(&history(names));
        let prometheus = PrometheusServer::start("", Some(&tsdb.path().join("tsdb"))).await;
        let env = [("CANARYD__PROMETHEUS__URL".to_string(), prometheus.url.clone())];
        let settings = Settings::load(None, env.into_iter().collect()).unwrap();
        let source =
            PrometheusSource::new(&settings.prometheus, QueryMetrics::default(), Duration::from_millis(20))
                .unwrap();
        let loaded = canaryd::policy::load_str("web.yaml", &policy(health_server().await));
        assert!(loaded.problems.is_empty(), "{:?}", loaded.problems);
        let mut registry = canaryd::telemetry::registry();
        let metrics = LoopMetrics::register(&mut registry);
        World {
            _prometheus: prometheus,
            _tsdb: tsdb,
            records_dir: tempfile::tempdir().unwrap(),
            source: Arc::new(source),
            platform: Arc::new(MemoryPlatform::new()),
            store: Arc::new(MemoryStore::default()),
            notifier: Arc::new(MemoryNotifier::default()),
            policies: loaded.policies,
            registry: Arc::new(registry),
            metrics,
        }
    }

    /// A daemon on this world's store, as a (re)started process would be.
    async fn daemon(&self) -> Daemon<PrometheusSource, MemoryPlatform, MemoryStore> {
        self.daemon_with(options()).await
    }

    async fn daemon_with(&self, options: Options) -> Daemon<PrometheusSource, MemoryPlatform, MemoryStore> {
        let records = RecordStore::open(self.records_dir.path(), Retention::default()).unwrap();
        Daemon::start(
            self.source.clone(),
            self.platform.clone(),
            self.store.clone(),
            self.notifier.clone(),
            Some(records),
            self.policies.clone(),
            options,
            self.metrics.clone(),
        )
        .await
    }

    fn deploy(&self, name: &str, tier: &str) -> RolloutId {
        let id = RolloutId { namespace: "shop".into(), name: name.into() };
        self.platform.push(NewRevision {
            id: id.clone(),
            revision: format!("{name}-v2"),
            labels: [("tier".to_string(), tier.to_string())].into(),
            arms: canaryd::platform::kubernetes::arms(&id),
        });
        id
    }

    fn record(&self, id: &RolloutId) -> canaryd::record::DeploymentRecord {
        let files = records::list(self.records_dir.path());
        let file = files.iter().find(|f| f.to_string_lossy().contains(&format!("shop_{}_", id.name)));
        records::read(file.unwrap_or_else(|| panic!("a record for {id} among {files:?}"))).unwrap()
    }
}

fn options() -> Options {
    Options {
        platform_timeout: Duration::from_secs(1),
        outbox: OutboxOptions { backoff: Duration::from_millis(20), attempts: 3, ..Default::default() },
        ..Default::default()
    }
}

fn at(t: i64) -> Timestamp {
    Timestamp::from_second(ORIGIN + t).unwrap()
}

fn settled() -> Duration {
    Duration::from_secs(30)
}

fn calls_of(platform: &MemoryPlatform, id: &RolloutId) -> Vec<String> {
    platform.calls().into_iter().filter(|c| &c.id == id).map(|c| c.what).collect()
}

/// Ticks until every rollout has finished (its record written) or the history ends.
async fn run_to_the_end(world: &World, daemon: &mut Daemon<PrometheusSource, MemoryPlatform, MemoryStore>) {
    let mut t = FIRST_TICK;
    while t < SPAN as i64 - 60 {
        daemon.tick(at(t)).await;
        assert!(daemon.settle(settled()).await, "executors and outbox settle");
        if daemon.rollouts().all(|s| s.recorded) && daemon.rollouts().count() > 0 {
            break;
        }
        t += TICK;
    }
    let _ = world;
}

#[tokio::test]
async fn a_finished_rollout_replaced_by_the_next_revision_before_its_record_was_due_still_gets_it() {
    let world = World::new(&["web"]).await;
    let mut daemon = world.daemon().await;
    let id = world.deploy("web", "web");
    let mut t = FIRST_TICK;
    daemon.tick(at(t)).await;
    assert!(daemon.settle(settled()).await);
    daemon
        .commands()
        .send(canaryd::daemon::OperatorCommand::new(id.clone(), canaryd::engine::Command::Abort, "alice"))
        .unwrap();
    let ended = |d: &Daemon<_, _, _>| d.rollouts().any(|s| s.rollout.phase.is_terminal());
    while !ended(&daemon) {
        assert!(t < SPAN as i64 - 60, "the abort ends the rollout");
        t += TICK;
        daemon.tick(at(t)).await;
        assert!(daemon.settle(settled()).await);
    }
    // The tick it ended in had still to tell its last decision: no record yet.
    assert!(daemon.rollouts().all(|s| !s.recorded), "the case under test: ended, not yet recorded");
    assert!(records::list(world.records_dir.path()).is_empty());
    // The next revision of the workload arrives at once.
    world.platform.push(NewRevision {
        id: id.clone(),
        revision: "web-v3".into(),
        labels: [("tier".to_string(), "web".to_string())].into(),
        arms: canaryd::platform::kubernetes::arms(&id),
    });
    daemon.tick(at(t + TICK)).await;
    assert!(daemon.settle(settled()).await);
    let revisions: Vec<&str> = daemon.rollouts().map(|s| s.rollout.revision.as_str()).collect();
    assert_eq!(revisions, ["web-v3"]);
    let record = world.record(&id);
    assert_eq!((record.revision.as_str(), record.outcome), ("web-v2", Phase::Aborted));
    let actions: Vec<&str> = record.decisions.iter().map(|d| d.action.name()).collect();
    assert_eq!(actions, ["started", "aborted", "rollback-finished"]);
}

#[tokio::test]
async fn a_workload_gone_mid_rollout_is_rolled_back_and_recorded_and_a_gone_unknown_one_changes_nothing() {
    let world = World::new(&["web", "api"]).await;
    let mut daemon = world.daemon().await;
    let (web, api) = (world.deploy("web", "web"), world.deploy("api", "web"));
    let mut t = FIRST_TICK;
    daemon.tick(at(t)).await;
    assert!(daemon.settle(settled()).await);
    assert_eq!(world.platform.world(&web).weight, 10, "the rollout runs");

    world.platform.gone(&web, "Deployment shop/web deleted");
    world.platform.gone(&RolloutId { namespace: "shop".into(), name: "never-managed".into() }, "deleted");
    while !daemon.rollouts().any(|s| s.rollout.id == web && s.recorded) {
        assert!(t < SPAN as i64 - 60, "the rollout of the gone workload ends and is recorded");
        t += TICK;
        daemon.tick(at(t)).await;
        assert!(daemon.settle(settled()).await);
    }
    // Traffic back to the stable version first, then the canary taken out.
    let calls = calls_of(&world.platform, &web);
    assert_eq!(&calls[calls.len() - 2..], ["set-weight 0", "scale down"], "{calls:?}");
    let record = world.record(&web);
    assert_eq!(record.outcome, Phase::RolledBack);
    let decision = record.decisions.iter().find(|d| d.action == DecisionKind::RolledBack).unwrap();
    assert!(decision.reason.contains("Deployment shop/web deleted"), "{}", decision.reason);
    // The other rollout goes on; the workload that was never managed got no call.
    let other = daemon.rollouts().find(|s| s.rollout.id == api).unwrap();
    assert!(!other.rollout.phase.is_terminal(), "{:?}", other.rollout.phase);
    assert!(world.platform.calls().iter().all(|c| c.id.name != "never-managed"));
    assert_eq!(daemon.rollouts().count(), 2);
}

#[tokio::test]
async fn a_canary_that_cannot_run_is_rolled_back_with_the_reason_and_a_stale_report_changes_nothing() {
    let world = World::new(&["web", "api"]).await;
    let mut daemon = world.daemon().await;
    let (web, api) = (world.deploy("web", "web"), world.deploy("api", "web"));
    let mut t = FIRST_TICK;
    daemon.tick(at(t)).await;
    assert!(daemon.settle(settled()).await);
    let revision = daemon.rollouts().find(|s| s.rollout.id == web).unwrap().rollout.revision.clone();
    let api_revision = daemon.rollouts().find(|s| s.rollout.id == api).unwrap().rollout.revision.clone();
    // A report about another revision of api (an older template) is not about its rollout.
    world.platform.canary_failed(&api, &format!("{api_revision}-older"), "progress deadline exceeded");
    world.platform.canary_failed(&web, &revision, "canary Deployment shop/web: progress deadline exceeded");
    while !daemon.rollouts().any(|s| s.rollout.id == web && s.recorded) {
        assert!(t < SPAN as i64 - 60, "the rollout of the failed canary ends and is recorded");
        t += TICK;
        daemon.tick(at(t)).await;
        assert!(daemon.settle(settled()).await);
    }
    let calls = calls_of(&world.platform, &web);
    assert_eq!(&calls[calls.len() - 2..], ["set-weight 0", "scale down"], "{calls:?}");
    let record = world.record(&web);
    assert_eq!(record.outcome, Phase::RolledBack);
    let decision = record.decisions.iter().find(|d| d.action == DecisionKind::RolledBack).unwrap();
    assert!(decision.reason.contains("progress deadline exceeded"), "{}", decision.reason);
    let other = daemon.rollouts().find(|s| s.rollout.id == api).unwrap();
    assert!(!other.rollout.phase.is_terminal(), "{:?}", other.rollout.phase);
}

#[tokio::test]
async fn a_weight_the_router_does_not_serve_is_never_counted_as_applied_and_the_rollout_pauses() {
    let world = World::new(&["web"]).await;
    let mut daemon = world.daemon().await;
    let web = world.deploy("web", "web");
    // The router takes every change and goes on serving 0%.
    world.platform.router().hold(&web.to_string(), Some(0));
    let mut t = FIRST_TICK;
    for _ in 0..4 {
        daemon.tick(at(t)).await;
        assert!(daemon.settle(settled()).await);
        t += TICK;
    }
    let state = daemon.rollouts().find(|s| s.rollout.id == web).unwrap();
    assert_eq!(state.applied.weight, None, "10% was asked, 0% is served: not applied");
    assert_eq!(state.rollout.phase, Phase::Paused, "the platform could not set the weight");
    let paused = state.rollout.decisions.last().unwrap();
    assert!(paused.reason.contains("serves 0%") && paused.reason.contains("not 10%"), "{}", paused.reason);
    let asked = calls_of(&world.platform, &web).iter().filter(|c| *c == "set-weight 10").count();
    assert!(asked >= 3, "tried platform_attempts (3) times before pausing: {asked}");
    assert_eq!(world.platform.world(&web).router, Some(canaryd::engine::plan::RouterKind::GatewayApi));
}

#[tokio::test]
async fn a_call_the_platform_answers_not_yet_is_asked_again_without_counting_a_failure() {
    use canaryd::platform::memory::Fault;
    let world = World::new(&["web"]).await;
    let mut daemon = world.daemon().await;
    let web = world.deploy("web", "web");
    // The platform is still bringing the canary up: every call is "not yet", for more
    // ticks than the 3 failed attempts that pause a rollout.
    world.platform.fault(&web, Some(Fault::NotYet));
    let mut t = FIRST_TICK;
    for _ in 0..6 {
        daemon.tick(at(t)).await;
        assert!(daemon.settle(settled()).await);
        t += TICK;
    }
    let state = daemon.rollouts().find(|s| s.rollout.id == web).unwrap();
    assert_eq!(state.applied.weight, None, "nothing was applied while the platform said not yet");
    assert_eq!(state.rollout.phase, Phase::Progressing, "{:?}", state.rollout.decisions.last());
    assert!(state.rollout.decisions.iter().all(|d| d.action != DecisionKind::Paused));
    assert!(calls_of(&world.platform, &web).is_empty(), "no call was carried out meanwhile");
    // Once the platform is ready, the weight lands.
    // (An executor's report is taken in at the start of the next tick.)
    world.platform.fault(&web, None);
    for _ in 0..2 {
        daemon.tick(at(t)).await;
        assert!(daemon.settle(settled()).await);
        t += TICK;
    }
    let state = daemon.rollouts().find(|s| s.rollout.id == web).unwrap();
    assert!(state.applied.weight >= Some(10), "{:?}", state.applied);
    assert_eq!(calls_of(&world.platform, &web).first().map(String::as_str), Some("set-weight 10"));
}

#[tokio::test]
async fn the_loop_rolls_a_bad_canary_back_and_promotes_a_good_one_through_every_step() {
    let world = World::new(&["good", "bad"]).await;
    let mut daemon = world.daemon().await;
    let good = world.deploy("good", "web");
    let bad = world.deploy("bad", "web");
    run_to_the_end(&world, &mut daemon).await;

    // The bad canary: traffic back to 0, its pods scaled down, nothing promoted.
    let world_bad = world.platform.world(&bad);
    assert_eq!((world_bad.weight, world_bad.canary_up, world_bad.promoted.clone()), (0, false, None));
    let calls = calls_of(&world.platform, &bad);
    assert_eq!(calls.first().map(String::as_str), Some("set-weight 10"));
    assert_eq!(&calls[calls.len() - 2..], ["set-weight 0", "scale down"], "traffic out first: {calls:?}");
    let record = world.record(&bad);
    assert_eq!(record.outcome, Phase::RolledBack);
    let decision =
        record.decisions.iter().find(|d| d.action == DecisionKind::RolledBack).expect("a rollback decision");
    assert!(decision.reason.contains("errors"), "the record names the metric: {}", decision.reason);
    let errors = decision.evidence.iter().find(|v| v.metric == "errors").expect("the metric's evidence");
    assert!(errors.conclusive && errors.evidence.p_value.is_some_and(|p| p < 0.05), "{errors:?}");
    let cumulative = errors.evidence.cumulative.as_ref().expect("the counts behind the test");
    assert!(cumulative.canary_events / cumulative.canary_requests > 0.04, "{cumulative:?}");
    // Each arm's evidence names the query that measures that arm alone.
    let canary_query = errors.evidence.canary.query.as_deref().unwrap();
    assert!(canary_query.contains("workload=~\"bad\"") && !canary_query.contains("good"), "{canary_query}");
    let baseline_query = errors.evidence.baseline.query.as_deref().unwrap();
    assert!(baseline_query.contains("workload=~\"bad-primary\""), "{baseline_query}");
    assert!(!record.timeline.points.is_empty() && record.metrics == ["errors", "p95"]);

    // The good canary: 10, 50, then promoted at 100.
    assert_eq!(
        calls_of(&world.platform, &good),
        ["set-weight 10", "set-weight 50", "set-weight 100", "promote good-v2"]
    );
    let record = world.record(&good);
    assert_eq!((record.outcome, record.step_reached), (Phase::Succeeded, 3));
    let actions: Vec<&str> = record.decisions.iter().map(|d| d.action.name()).collect();
    assert_eq!(actions, ["started", "advanced", "promoting", "promoted"]);
    // Its persisted state, after every decision, stays small: the queries' text lives in
    // the record, the state keeps the window to render them from.
    let stored = serde_json::to_vec(&world.store.get(&good).unwrap()).unwrap().len();
    assert!(stored < 16 * 1024, "{stored} bytes");
    // Every health probe of the good canary answered: the trigger never counted a failure.
    assert!(record.timeline.points.iter().all(|p| p.triggers.is_empty()));

    // Every decision worth telling was told once, with its key.
    let received = world.notifier.received();
    let keys: Vec<String> = received.iter().map(|n| n.key.to_string()).collect();
    let unique: BTreeSet<&String> = keys.iter().collect();
    assert_eq!(unique.len(), keys.len(), "no notification twice: {keys:?}");
    assert_eq!(keys.len(), 4 + 2, "good: started, advanced, promoting, promoted; bad: started, rolled-back");

    // The loop's own metrics say the same.
    let exported = canaryd::telemetry::encode(&world.registry);
    for line in [
        "canaryd_decisions_total{kind=\"rolled-back\"} 1",
        "canaryd_decisions_total{kind=\"promoted\"} 1",
        "canaryd_rollouts{phase=\"succeeded\"} 1",
        "canaryd_rollouts{phase=\"rolled-back\"} 1",
        "canaryd_outbox_depth 0",
    ] {
        assert!(exported.lines().any(|l| l == line), "{line} in:\n{exported}");
    }
    assert!(exported.contains("canaryd_tick_duration_seconds_count"));
}

#[tokio::test]
async fn failing_and_hanging_health_probes_roll_back_after_three_in_a_row_without_holding_the_tick() {
    let world = World::new(&["sick-api", "slow-api", "well-api"]).await;
    let mut daemon = world.daemon().await;
    let ids = ["sick-api", "slow-api", "well-api"].map(|n| world.deploy(n, "web"));
    let mut t = FIRST_TICK;
    for _ in 0..12 {
        // Each probe gives up after its 1 s timeout: the tick ends.
        tokio::time::timeout(Duration::from_secs(60), daemon.tick(at(t))).await.expect("the tick ends");
        daemon.settle(settled()).await;
        t += TICK;
    }
    for id in &ids[..2] {
        let r = &daemon.state(id).unwrap().rollout;
        assert!(r.rolled_back(), "{id}: {:?}", r.phase);
        let d = r.decisions.iter().find(|d| d.action == DecisionKind::RolledBack).unwrap();
        assert_eq!(d.triggers[0].trigger, "health");
        assert!(
            d.triggers[0].detail.starts_with("3 consecutive failed health checks of http://127.0.0.1:"),
            "{:?}",
            d.triggers
        );
        // The detail names the policy's URL; each canary's own was probed (the healthy
        // one, on the same template, was not rolled back).
        assert!(d.triggers[0].detail.ends_with("/{{workload}}/healthz"), "{:?}", d.triggers);
        // Three intervals of 30 s: after the third probe, not before.
        assert_eq!(r.intervals_analysed, 3, "{id}");
    }
    assert!(!daemon.state(&ids[2]).unwrap().rollout.rolled_back(), "a healthy canary is not touched");
}

/// Where a test kills the loop.
#[derive(Clone, Copy, Debug)]
enum Kill {
    /// The tick saved its changes; nothing was carried out or offered.
    AfterSave,
    /// Executors and notifications were handed off but had not run.
    BeforeActionsRan,
    /// The platform confirmed the calls; the loop had not taken the confirmations in.
    AfterPlatformConfirmed,
    /// Notifications were delivered; the loop had not recorded it.
    AfterDelivery,
}

#[tokio::test]
async fn a_crash_anywhere_between_saving_and_confirming_changes_nothing_in_the_end() {
    // The reference: the same rollouts without a crash.
    let reference = World::new(&["good", "bad"]).await;
    let mut daemon = reference.daemon().await;
    let ids = [reference.deploy("good", "web"), reference.deploy("bad", "web")];
    run_to_the_end(&reference, &mut daemon).await;
    // Each decision with its time and reason, not only its action and weight: the same
    // step judged a tick later, on other data, would have both of those right.
    let decided = |record: &canaryd::record::DeploymentRecord| -> Vec<(String, u8, Timestamp, String)> {
        record
            .decisions
            .iter()
            .map(|d| (d.action.name().to_string(), d.weight, d.at, d.reason.clone()))
            .collect()
    };
    let expected: BTreeMap<&RolloutId, Vec<(String, u8, Timestamp, String)>> =
        ids.iter().map(|id| (id, decided(&reference.record(id)))).collect();
    drop(daemon);

    for kill in [Kill::AfterSave, Kill::BeforeActionsRan, Kill::AfterPlatformConfirmed, Kill::AfterDelivery] {
        let world = World::new(&["good", "bad"]).await;
        let mut daemon = world.daemon().await;
        let ids = [world.deploy("good", "web"), world.deploy("bad", "web")];
        let (mut t, mut crashes) = (FIRST_TICK, 0);
        let mut killed_at: BTreeSet<&str> = BTreeSet::new();
        while t < SPAN as i64 - 60
            && !(daemon.rollouts().count() == 2 && daemon.rollouts().all(|s| s.recorded))
        {
            let decisions = |d: &Daemon<_, _, _>| -> BTreeSet<(RolloutId, u64, &'static str)> {
                d.rollouts()
                    .flat_map(|s| {
                        s.rollout.decisions.iter().map(|d| (s.rollout.id.clone(), d.seq, d.action.name()))
                    })
                    .collect()
            };
            let before = decisions(&daemon);
            if let Kill::AfterPlatformConfirmed = kill {
                world.notifier.set_down(true);
            }
            let mut report = daemon.decide_and_save(at(t)).await;
            let new: Vec<&str> = decisions(&daemon).difference(&before).map(|d| d.2).collect();
            if new.is_empty() || !matches!(kill, Kill::AfterSave) {
                daemon.act(at(t), &mut report).await;
            }
            if !new.is_empty() {
                killed_at.extend(new);
                if let Kill::AfterPlatformConfirmed | Kill::AfterDelivery = kill {
                    // Executors and outbox finish; the loop does not take their reports in
                    // before the kill (that happens at a tick's start).
                    assert!(daemon.settle(settled()).await);
                }
                drop(daemon); // The kill: nothing in flight survives.
                crashes += 1;
                world.notifier.set_down(false);
                daemon = world.daemon().await;
            } else {
                world.notifier.set_down(false);
                assert!(daemon.settle(settled()).await);
            }
            t += TICK;
        }
        assert!(daemon.settle(settled()).await);
        let every = ["started", "advanced", "promoting", "promoted", "rolled-back", "rollback-finished"];
        assert_eq!(killed_at, every.into(), "{kill:?}: killed right after every kind of decision");
        assert!(crashes >= 4, "{kill:?}: {crashes} crashes");
        for id in &ids {
            let record = world.record(id);
            // Decisions on the analysis come at the same time, for the same reasons, as
            // without a crash. One on the platform's confirmation comes one tick later:
            // the crash came right after the decision that asked for the call, so its
            // confirmation (if any) died with the loop; the restarted loop makes the call
            // again at its first tick and takes the confirmation in at the next, where
            // the uninterrupted loop took it in at the first.
            let on_confirmation = ["promoted", "rollback-finished"];
            let want: Vec<(String, u8, Timestamp, String)> = expected[id]
                .iter()
                .map(|(action, weight, at, reason)| {
                    let delay = if on_confirmation.contains(&action.as_str()) { TICK } else { 0 };
                    let at = Timestamp::from_second(at.as_second() + delay).unwrap();
                    (action.clone(), *weight, at, reason.clone())
                })
                .collect();
            assert_eq!(decided(&record), want, "{kill:?}: {id} decided as without a crash");
            let seqs: Vec<u64> = record.decisions.iter().map(|d| d.seq).collect();
            assert_eq!(
                seqs,
                (0..seqs.len() as u64).collect::<Vec<_>>(),
                "{kill:?}: no decision skipped or repeated"
            );
            // The platform ended in the desired world.
            let w = world.platform.world(id);
            match record.outcome {
                Phase::Succeeded => assert_eq!((w.weight, w.promoted.as_deref()), (100, Some("good-v2"))),
                Phase::RolledBack => assert_eq!((w.weight, w.canary_up), (0, false)),
                other => panic!("{kill:?}: {id} ended {other:?}"),
            }
        }
        // Every notification reached the receiver; by key, exactly once.
        let received = world.notifier.received();
        let keys: BTreeSet<String> = received.iter().map(|n| n.key.to_string()).collect();
        assert_eq!(keys.len(), 6, "{kill:?}: {keys:?}");
        match kill {
            // Delivered but not yet recorded when the loop died: sent again, with the same
            // key, which is what the key is for. Nothing else is ever repeated.
            Kill::AfterDelivery => {
                assert!(received.len() > keys.len(), "{kill:?}: the repeat is the known case")
            }
            _ => assert_eq!(received.len(), keys.len(), "{kill:?}: no notification twice"),
        }
    }
}

#[tokio::test]
async fn a_hung_platform_call_a_failing_shard_and_a_down_notifier_hold_up_only_their_own() {
    let world = World::new(&["stuck", "fine-a", "fine-b", "odd"]).await;
    let mut daemon = world.daemon().await;
    let stuck = world.deploy("stuck", "web");
    let fine = [world.deploy("fine-a", "web"), world.deploy("fine-b", "web")];
    let odd = world.deploy("odd", "broken");
    world.platform.fault(&stuck, Some(Fault::Hang));
    world.notifier.set_down(true);
    let mut t = FIRST_TICK;
    while t < 600 {
        daemon.tick(at(t)).await;
        // The others' calls are made while the stuck one hangs: wait for them, not it.
        for id in &fine {
            let want = daemon.state(id).unwrap().rollout.desired().weight;
            poll(settled(), || async { world.platform.world(id).weight == want }).await.unwrap();
        }
        for id in fine.iter().chain([&odd]) {
            let r = &daemon.state(id).unwrap().rollout;
            if !r.phase.is_terminal() && r.phase != Phase::Promoting {
                // Measured and judged on time at every tick it was due.
                assert!(r.next_evaluation().is_some_and(|next| next > at(t)), "{id} at {t}");
            }
        }
        t += TICK;
    }
    for id in &fine {
        assert_eq!(daemon.state(id).unwrap().rollout.phase, Phase::Succeeded, "{id}");
    }
    assert!(world.platform.hanging() <= 1);
    assert_eq!(world.platform.world(&stuck).weight, 0, "the stuck rollout's calls never landed");
    let odd_state = &daemon.state(&odd).unwrap().rollout;
    assert_eq!(odd_state.phase, Phase::Progressing, "the failed shard's rollout waits, never passes");
    assert!(odd_state.recent.iter().all(|s| s.outcomes.ends_with('i')), "{:?}", odd_state.recent);
    assert!(world.notifier.received().is_empty());
    // The notifier comes back: everything that was waiting is delivered.
    world.notifier.set_down(false);
    world.platform.fault(&stuck, None);
    daemon.tick(at(t)).await;
    daemon.settle(settled()).await;
    daemon.tick(at(t + TICK)).await;
    assert!(daemon.settle(settled()).await);
    let keys: BTreeSet<String> = world.notifier.received().iter().map(|n| n.key.to_string()).collect();
    assert!(keys.iter().any(|k| k.starts_with("shop/fine-a@fine-a-v2#3")), "{keys:?}");
    assert_eq!(world.platform.world(&stuck).weight, daemon.state(&stuck).unwrap().rollout.desired().weight);
}

#[tokio::test(start_paused = true)]
async fn on_start_it_resumes_every_stored_rollout_and_on_shutdown_saves_what_was_confirmed() {
    use canaryd::engine::{Input, Rollout, step};
    use canaryd::store::{Applied, RunState, RunStore as _, Version};
    // A rollout a previous process had started and saved, then died before acting on it.
    let loaded = canaryd::policy::load_str("web.yaml", &policy(9));
    let id = RolloutId { namespace: "shop".into(), name: "web".into() };
    let started =
        step(&Rollout::new(id.clone(), "v2", loaded.policies[0].plan.clone()), &Input::Start, at(0));
    let store = Arc::new(MemoryStore::default());
    let state = RunState {
        rollout: started.unwrap().rollout,
        arms: canaryd::platform::kubernetes::arms(&id),
        applied: Applied::default(),
        notified: 0,
        recorded: false,
        version: Version::default(),
    };
    store.save_all(&[&state]).await.pop().unwrap().unwrap();
    let env = [("CANARYD__PROMETHEUS__URL".to_string(), "http://127.0.0.1:9".to_string())];
    let settings = Settings::load(None, env.into_iter().collect()).unwrap();
    let source =
        PrometheusSource::new(&settings.prometheus, QueryMetrics::default(), Duration::from_millis(20));
    let (platform, notifier) = (Arc::new(MemoryPlatform::new()), Arc::new(MemoryNotifier::default()));
    let mut daemon = Daemon::start(
        Arc::new(source.unwrap()),
        platform.clone(),
        store.clone(),
        notifier.clone(),
        None,
        loaded.policies,
        Options::default(),
        LoopMetrics::default(),
    )
    .await;
    assert!(daemon.state(&id).is_some(), "the stored rollout is resumed");
    let ready = std::sync::atomic::AtomicBool::new(false);
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    // The clock stands before the rollout's next evaluation: nothing is measured.
    let clock = || at(5);
    let running = run_until(
        &mut daemon,
        Duration::from_secs(5),
        clock,
        &ready,
        async { stopped.await.unwrap_or(()) },
        Duration::from_secs(10),
    );
    let check = async {
        poll(Duration::from_secs(60), || async { ready.load(std::sync::atomic::Ordering::Relaxed) })
            .await
            .unwrap();
        poll(Duration::from_secs(60), || async {
            platform.world(&id).weight == 10 && !notifier.received().is_empty()
        })
        .await
        .unwrap();
        stop.send(()).unwrap();
    };
    tokio::join!(running, check);
    // What the platform and the notifier confirmed is saved on the way out.
    let saved = store.get(&id).unwrap();
    assert_eq!(saved.applied.weight, Some(10));
    assert_eq!(saved.notified, 1, "the start's notification is recorded as delivered");
    assert_eq!(notifier.received().len(), 1);
}

#[tokio::test]
async fn value_series_go_to_as_many_rollouts_as_the_bound_and_a_finished_ones_place_to_the_next() {
    let world = World::new(&["good", "bad"]).await;
    let bound = ValueSeries { max_rollouts: 1, namespaces: vec![] };
    let mut daemon = world.daemon_with(Options { metric_values: bound, ..options() }).await;
    let (good, bad) = (world.deploy("good", "web"), world.deploy("bad", "web"));
    // The rollouts holding value series, tick after tick, each with its series count.
    let mut holders: Vec<BTreeMap<String, usize>> = Vec::new();
    let mut t = FIRST_TICK;
    while t < SPAN as i64 - 60 && !daemon.state(&good).is_some_and(|s| s.recorded) {
        daemon.tick(at(t)).await;
        assert!(daemon.settle(settled()).await);
        let mut by_rollout = BTreeMap::new();
        for line in canaryd::telemetry::encode(&world.registry).lines() {
            if let Some(labels) = line.strip_prefix("canaryd_metric_value{") {
                let rollout = labels.split("rollout=\"").nth(1).and_then(|r| r.split('"').next()).unwrap();
                *by_rollout.entry(rollout.to_string()).or_insert(0) += 1;
            }
        }
        assert!(by_rollout.len() <= 1, "at {t}: {by_rollout:?}");
        if holders.last() != Some(&by_rollout) {
            holders.push(by_rollout);
        }
        t += TICK;
    }
    assert!(daemon.state(&bad).unwrap().recorded, "the bad canary finished first");
    // Both are first measured on the same tick; the first in order (shop/bad) takes the
    // place, with its 2 metrics × 2 arms; once its record is written, shop/good's next
    // measurement takes it.
    let one = |rollout: &str| BTreeMap::from([(rollout.to_string(), 4)]);
    let taken: Vec<&BTreeMap<String, usize>> = holders.iter().filter(|h| !h.is_empty()).collect();
    assert_eq!(taken, [&one("shop/bad"), &one("shop/good")], "{holders:?}");
}

#[tokio::test]
async fn a_command_is_confirmed_only_once_its_decision_is_saved_and_a_refused_one_says_why() {
    use canaryd::daemon::{CommandOutcome, OperatorCommand};
    use canaryd::engine::Command;
    use canaryd::store::memory::StoreFault;
    let world = World::new(&["web"]).await;
    let mut daemon = world.daemon().await;
    let id = world.deploy("web", "web");
    let mut t = FIRST_TICK;
    daemon.tick(at(t)).await;
    assert!(daemon.settle(settled()).await);
    assert_eq!(daemon.state(&id).unwrap().rollout.phase, Phase::Progressing);

    // The store is down: the pause is taken, but not confirmed while it cannot be saved.
    world.store.fault(&id, Some(StoreFault::Fail));
    let (pause, mut done) = OperatorCommand::confirmed(id.clone(), Command::Pause, "alice");
    daemon.commands().send(pause).unwrap();
    t += TICK;
    daemon.tick(at(t)).await;
    assert!(done.try_recv().is_err(), "not confirmed before it is saved");
    assert!(world.store.get(&id).is_none_or(|s| s.rollout.phase != Phase::Paused));

    // Once the store takes it, the caller learns which decision it made.
    world.store.fault(&id, None);
    t += TICK;
    daemon.tick(at(t)).await;
    let saved = world.store.get(&id).unwrap();
    let paused = saved.rollout.decisions.iter().find(|d| d.action == DecisionKind::Paused).unwrap();
    assert_eq!(done.try_recv(), Ok(CommandOutcome::Applied { decision: paused.seq }));
    assert!(paused.reason.contains("alice"), "{}", paused.reason);

    // A command the phase does not allow is refused with the engine's reason.
    let (approve, mut done) = OperatorCommand::confirmed(id.clone(), Command::Approve, "bob");
    daemon.commands().send(approve).unwrap();
    t += TICK;
    daemon.tick(at(t)).await;
    match done.try_recv() {
        Ok(CommandOutcome::Refused(why)) => {
            assert!(why.contains("cannot approve a rollout that is paused"), "{why}")
        }
        other => panic!("refused, not {other:?}"),
    }
    let unknown = RolloutId { namespace: "nowhere".into(), name: "none".into() };
    let (abort, mut done) = OperatorCommand::confirmed(unknown, Command::Abort, "bob");
    daemon.commands().send(abort).unwrap();
    daemon.tick(at(t + TICK)).await;
    assert_eq!(done.try_recv(), Ok(CommandOutcome::Unknown));
}
