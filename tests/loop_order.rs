//! The loop's order of work, on the in-memory platform, store and notifier with tokio's
//! paused clock: a state is saved before anything it implies is carried out or told (a
//! rollout whose save fails gets no platform call and no notification until a save
//! lands, while the others go on; every call and notification comes after the save of
//! a state that asks for it), and a rollback's traffic change is made on the tick of
//! its decision while the notifier hangs. No rollout comes due for measurement within
//! these ticks, so Prometheus is never asked.

mod support;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use canaryd::config::Settings;
use canaryd::daemon::metrics::LoopMetrics;
use canaryd::daemon::{Daemon, FiringAlert, Options};
use canaryd::engine::{Command, Notification, Phase, RolloutId, Scale};
use canaryd::notify::memory::MemoryNotifier;
use canaryd::notify::{DeliveryError, Notifier};
use canaryd::platform::{NewRevision, memory::MemoryPlatform};
use canaryd::source::prometheus::{PrometheusSource, QueryMetrics};
use canaryd::store::memory::{MemoryStore, StoreFault};
use support::engine::{ERRORS_SPEC, at};
use support::prometheus::poll;

/// Long enough for any executor or delivery here (the clock is tokio's, paused).
const SETTLE: Duration = Duration::from_secs(30);

type Loop = Daemon<PrometheusSource, MemoryPlatform, MemoryStore>;

async fn daemon<N: Notifier>(
    platform: &Arc<MemoryPlatform>,
    store: &Arc<MemoryStore>,
    notifier: Arc<N>,
) -> Loop {
    let env = [("CANARYD__PROMETHEUS__URL".to_string(), "http://127.0.0.1:9".to_string())];
    let settings = Settings::load(None, env.into_iter().collect()).unwrap();
    let source =
        PrometheusSource::new(&settings.prometheus, QueryMetrics::default(), Duration::from_millis(20))
            .unwrap();
    Daemon::start(
        Arc::new(source),
        platform.clone(),
        store.clone(),
        notifier,
        None,
        vec![support::engine::policy("shop", "web", ERRORS_SPEC)],
        Options::default(),
        LoopMetrics::default(),
    )
    .await
}

fn deploy(platform: &MemoryPlatform, name: &str) -> RolloutId {
    let id = RolloutId { namespace: "shop".into(), name: name.into() };
    platform.push(NewRevision {
        id: id.clone(),
        revision: format!("{name}-v2"),
        labels: [("app".to_string(), "web".to_string())].into(),
        arms: canaryd::platform::kubernetes::arms(&id),
    });
    id
}

fn calls_of(platform: &MemoryPlatform, id: &RolloutId) -> Vec<String> {
    platform.calls().into_iter().filter(|c| &c.id == id).map(|c| c.what).collect()
}

/// The decisions (by seq) whose notifications reached the notifier, in order.
fn told(notifier: &MemoryNotifier, id: &RolloutId) -> Vec<u64> {
    notifier.received().iter().filter(|n| n.key.rollout == id.to_string()).map(|n| n.key.decision).collect()
}

/// The alert the policy's `budget` trigger names, firing for `workloads`.
fn budget_burn(workloads: &[&RolloutId]) -> FiringAlert {
    FiringAlert {
        alert: "ErrorBudgetBurn".into(),
        namespace: Some("shop".into()),
        workloads: workloads.iter().map(|id| id.name.clone()).collect(),
        detail: "burning 14x".into(),
    }
}

async fn tick(daemon: &mut Loop, t: i64) {
    daemon.tick(at(t)).await;
    assert!(daemon.settle(SETTLE).await, "executors and outbox settle");
}

#[tokio::test(start_paused = true)]
async fn a_rollout_whose_save_fails_gets_no_platform_call_and_no_notification_until_a_save_lands() {
    let (platform, store) = (Arc::new(MemoryPlatform::new()), Arc::new(MemoryStore::default()));
    let notifier = Arc::new(MemoryNotifier::default());
    let mut daemon = daemon(&platform, &store, notifier.clone()).await;
    let (a, b) = (deploy(&platform, "a"), deploy(&platform, "b"));
    store.fault(&a, Some(StoreFault::Fail));

    // Both starts are decided; only b's is saved, so only b's is carried out and told.
    for t in [0, 1] {
        tick(&mut daemon, t).await;
        assert_eq!(daemon.state(&a).unwrap().rollout.decisions_made, 1, "a's start is decided");
        assert!(store.get(&a).is_none(), "and not saved");
        assert_eq!(calls_of(&platform, &a), Vec::<String>::new(), "tick {t}: no call for unsaved a");
        assert_eq!(told(&notifier, &a), Vec::<u64>::new(), "tick {t}: nothing told of unsaved a");
        assert_eq!(calls_of(&platform, &b), ["set-weight 10"], "tick {t}: b goes on");
        assert_eq!(told(&notifier, &b), [0], "tick {t}: b's start is told");
    }

    // The store takes a's state again: the next tick saves it, then acts.
    store.fault(&a, None);
    tick(&mut daemon, 2).await;
    assert_eq!(store.get(&a).unwrap().rollout.decisions_made, 1);
    assert_eq!(calls_of(&platform, &a), ["set-weight 10"]);
    assert_eq!(told(&notifier, &a), [0]);

    // A conflicting save holds up a's rollback the same way; b's, decided on the same
    // alert, is carried out.
    store.fault(&a, Some(StoreFault::Conflict));
    daemon.alerts().send(budget_burn(&[&a, &b])).unwrap();
    tick(&mut daemon, 3).await;
    assert_eq!(daemon.state(&a).unwrap().rollout.phase, Phase::RollingBack);
    assert_eq!(store.get(&a).unwrap().rollout.phase, Phase::Progressing, "a's rollback is not saved");
    assert_eq!(calls_of(&platform, &a), ["set-weight 10"], "a's traffic stays until its rollback is saved");
    assert_eq!(told(&notifier, &a), [0]);
    assert_eq!(calls_of(&platform, &b), ["set-weight 10", "set-weight 0", "scale down"]);
    assert_eq!(told(&notifier, &b), [0, 1]);

    store.fault(&a, None);
    tick(&mut daemon, 4).await;
    assert_eq!(store.get(&a).unwrap().rollout.phase, Phase::RollingBack);
    assert_eq!(calls_of(&platform, &a), ["set-weight 10", "set-weight 0", "scale down"]);
    assert_eq!(told(&notifier, &a), [0, 1]);
}

/// A state as the store saw it land, with how far the platform and the notifier had
/// got by then.
#[derive(Clone, Debug)]
struct Saved {
    id: RolloutId,
    weight: u8,
    canary: Scale,
    decisions_made: u64,
    calls_before: usize,
    told_before: usize,
}

#[tokio::test(start_paused = true)]
async fn every_platform_call_and_notification_comes_after_the_save_of_a_state_that_asks_for_it() {
    let (platform, store) = (Arc::new(MemoryPlatform::new()), Arc::new(MemoryStore::default()));
    let notifier = Arc::new(MemoryNotifier::default());
    let saves: Arc<Mutex<Vec<Saved>>> = Arc::default();
    let (log, p, n) = (saves.clone(), platform.clone(), notifier.clone());
    store.on_save(move |state| {
        let desired = state.rollout.desired();
        log.lock().unwrap().push(Saved {
            id: state.rollout.id.clone(),
            weight: desired.weight,
            canary: desired.canary,
            decisions_made: state.rollout.decisions_made,
            calls_before: p.calls().len(),
            told_before: n.received().len(),
        });
    });
    let mut daemon = daemon(&platform, &store, notifier.clone()).await;
    let ids = ["rolled", "aborted", "steady"].map(|name| deploy(&platform, name));

    tick(&mut daemon, 0).await;
    // Saved, then carried out, on the tick of the decision: every start in one save.
    assert_eq!(store.batches(), 1, "one save for the tick's changes");
    for id in &ids {
        assert_eq!(calls_of(&platform, id), ["set-weight 10"], "{id}: on the first tick");
    }
    daemon.alerts().send(budget_burn(&[&ids[0]])).unwrap();
    daemon
        .commands()
        .send(canaryd::daemon::OperatorCommand::new(ids[1].clone(), Command::Abort, "alice"))
        .unwrap();
    for t in 1..4 {
        tick(&mut daemon, t).await;
    }
    for (id, ended) in ids[..2].iter().zip([Phase::RolledBack, Phase::Aborted]) {
        assert_eq!(calls_of(&platform, id), ["set-weight 10", "set-weight 0", "scale down"], "{id}");
        assert_eq!(daemon.state(id).unwrap().rollout.phase, ended, "{id}");
    }

    let saves = saves.lock().unwrap().clone();
    let calls = platform.calls();
    assert!(calls.len() == 7 && saves.len() >= 6, "{calls:?} {saves:?}");
    for (i, call) in calls.iter().enumerate() {
        let asks = |s: &Saved| match call.what.strip_prefix("set-weight ") {
            Some(w) => w.parse() == Ok(s.weight),
            None => call.what == "scale down" && s.canary == Scale::Down,
        };
        assert!(
            saves.iter().any(|s| s.id == call.id && asks(s) && s.calls_before <= i),
            "call {i} ({} {}) made before any saved state of it asked for it: {saves:#?}",
            call.id,
            call.what
        );
    }
    let received: Vec<Notification> = notifier.received();
    assert!(received.len() >= 5, "{received:?}");
    for (j, note) in received.iter().enumerate() {
        assert!(
            saves.iter().any(|s| s.id.to_string() == note.key.rollout
                && s.decisions_made > note.key.decision
                && s.told_before <= j),
            "notification {} told before its decision was saved: {saves:#?}",
            note.key
        );
    }
}

/// A notifier that takes every notification and never answers.
#[derive(Default)]
struct Hanging(AtomicUsize);

impl Notifier for Hanging {
    async fn deliver(&self, _: &Notification) -> Result<(), DeliveryError> {
        self.0.fetch_add(1, Ordering::Relaxed);
        std::future::pending().await
    }
}

#[tokio::test(start_paused = true)]
async fn a_rollback_moves_traffic_on_the_tick_of_its_decision_while_the_notifier_hangs() {
    let (platform, store) = (Arc::new(MemoryPlatform::new()), Arc::new(MemoryStore::default()));
    let notifier = Arc::new(Hanging::default());
    let mut daemon = daemon(&platform, &store, notifier.clone()).await;
    let web = deploy(&platform, "web");
    daemon.tick(at(0)).await;
    poll(SETTLE, || async { platform.world(&web).weight == 10 }).await.unwrap();
    // The notifier holds the start's notification and never lets go.
    poll(SETTLE, || async { notifier.0.load(Ordering::Relaxed) == 1 }).await.unwrap();

    daemon.alerts().send(budget_burn(&[&web])).unwrap();
    let (tick_started, on_platform_clock) = (tokio::time::Instant::now(), platform.elapsed());
    daemon.tick(at(1)).await;
    // The clock is paused: it moves only while everything waits, so a tick that waited
    // for the outbox (or anything else) would have moved it.
    assert_eq!(tokio::time::Instant::now(), tick_started, "the tick waited for nothing");
    assert_eq!(daemon.state(&web).unwrap().rollout.phase, Phase::RollingBack);
    poll(SETTLE, || async { platform.world(&web).weight == 0 }).await.unwrap();
    let set_zero = platform.calls().into_iter().find(|c| c.what == "set-weight 0").unwrap();
    assert_eq!(set_zero.at, on_platform_clock, "the traffic moved on the tick of the decision");
    assert_eq!(notifier.0.load(Ordering::Relaxed), 1, "the notifier still hangs on the first message");
}
