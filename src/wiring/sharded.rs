//! `canaryd run` on Kubernetes with `[kubernetes] shards = N` (N > 1): one daemon per
//! shard this replica holds (see `platform::kubernetes::shards` for how the rollouts
//! are split and how many shards a replica takes).
//!
//! - Every shard has its own Lease, `<lease.name>-shard-<k>`, elected as the single
//!   Lease is (`lease::elect_when`), taking it only while this replica holds fewer than
//!   its fair share. Its daemon's Kubernetes client is fenced by that Lease alone, so a
//!   replica paused past one shard's Lease writes nothing for that shard's rollouts.
//! - A shard's daemon is started when its Lease is taken. It resumes from the shard's
//!   CanaryRuns, as a new leader does, watches only the shard's Deployments, and batches
//!   its own Prometheus queries. It is stopped (as on SIGTERM) before its Lease is
//!   released, when this replica is above its fair share.
//! - Losing a shard's Lease to another replica exits the process, as with one Lease:
//!   what it holds in memory may be behind the new holder.
//! - The replicas count each other by their member Leases, `<lease.name>-member-<identity>`.
//! - Policies (files and objects) and Secrets are read once, for every shard. Policy
//!   verdicts are written by every replica; each write says the same and is skipped once
//!   the object says it.
//! - The API merges the views of the shards held here; a command for a rollout in a
//!   shard another replica holds is refused naming that replica.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::{Arc, Mutex};

use k8s_openapi::api::coordination::v1::Lease;
use tokio::sync::{Notify, mpsc, watch};
use tokio::task::JoinHandle;

use super::{Cluster, DaemonMetrics, Parts, WiringError, setting};
use crate::config::{KubernetesSettings, Settings};
use crate::daemon::view::RolloutView;
use crate::daemon::{CommandOutcome, FiringAlert, LoopSender, OperatorCommand};
use crate::platform::kubernetes::events::EventNotifier;
use crate::platform::kubernetes::lease::{self, Elections, Leadership, LeaseSettings, Outcome};
use crate::platform::kubernetes::platform::KubernetesPlatform;
use crate::platform::kubernetes::policies::PolicyObjects;
use crate::platform::kubernetes::secrets::SecretValues;
use crate::platform::kubernetes::shards::{self, Move, Shard};
use crate::platform::kubernetes::store::CanaryRunStore;
use crate::policy::LoadedPolicy;
use crate::policy::sources::PolicySources;
use crate::server::ApiMetrics;

/// What every shard's daemon shares.
struct Common {
    settings: Settings,
    kubernetes: KubernetesSettings,
    config: kube::Config,
    /// The policies in force (files and objects), as they change.
    policies: watch::Receiver<Arc<Vec<LoadedPolicy>>>,
    secrets: SecretValues,
    /// Each running shard's views, merged into `views`.
    shard_views: Mutex<BTreeMap<u32, Vec<RolloutView>>>,
    views: watch::Sender<Vec<RolloutView>>,
    /// The running shards' inboxes, for the API's commands and alerts.
    running: Mutex<BTreeMap<u32, Inboxes>>,
    /// Every shard's Leadership, by index (for the holder's name in a refusal).
    leaderships: Vec<Leadership>,
    /// Set once the replica has taken its first round (the loop of a shard sets it too).
    ticked: Arc<AtomicBool>,
}

#[derive(Clone)]
struct Inboxes {
    commands: LoopSender<OperatorCommand>,
    alerts: LoopSender<FiringAlert>,
    wake: Arc<Notify>,
}

impl Common {
    fn set_views(&self, shard: u32, views: Option<Vec<RolloutView>>) {
        let mut all = self.shard_views.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        match views {
            Some(v) => all.insert(shard, v),
            None => all.remove(&shard),
        };
        let merged: Vec<RolloutView> = all.values().flatten().cloned().collect();
        drop(all);
        self.views.send_replace(merged);
    }

    fn shard_of(&self, namespace: &str, name: &str) -> u32 {
        shards::shard_of(namespace, name, self.leaderships.len() as u32)
    }

    /// Why `rollout`, in `shard`, is not driven here: the replica that holds the shard.
    fn held_elsewhere(&self, shard: u32, rollout: &str) -> String {
        match self.leaderships[shard as usize].leader().filter(|h| !h.is_empty()) {
            Some(holder) => format!(
                "{rollout} is in shard {shard}, which replica {holder} drives: ask it (kubectl port-forward pod/{holder})"
            ),
            None => format!("{rollout} is in shard {shard}, which no replica holds now: retry"),
        }
    }

    fn inboxes(&self, shard: u32) -> Option<Inboxes> {
        self.running.lock().unwrap_or_else(std::sync::PoisonError::into_inner).get(&shard).cloned()
    }

    fn all_inboxes(&self) -> Vec<Inboxes> {
        self.running.lock().unwrap_or_else(std::sync::PoisonError::into_inner).values().cloned().collect()
    }
}

/// One shard as this replica sees it.
struct Slot {
    shard: Shard,
    leadership: Leadership,
    metrics: DaemonMetrics,
    /// The election for the shard's Lease: stop it to release the Lease.
    elector: Option<(watch::Sender<bool>, JoinHandle<Outcome>)>,
    /// The shard's daemon while this replica holds it: stop it before releasing.
    daemon: Option<(watch::Sender<bool>, JoinHandle<()>)>,
}

/// Runs the sharded replica until a signal stops it.
pub(super) async fn run(
    settings: &Settings,
    kubernetes: &KubernetesSettings,
    lease: &LeaseSettings,
    policies: Vec<LoadedPolicy>,
    parts: Parts,
) -> Result<(), WiringError> {
    let Parts { mut state, listener, stop, stop_tx, mut registry, .. } = parts;
    let count = kubernetes.shards;
    let config = super::kube_config().await.map_err(setting("kubernetes"))?;
    let client = kube::Client::try_from(config.clone())
        .map_err(|e| setting("kubernetes")(format!("cannot build the Kubernetes client: {e}")))?;
    let elections = Elections::start(config.clone()).map_err(setting("kubernetes"))?;
    let leases: kube::Api<Lease> = elections.leases(&lease.namespace);

    let mut slots = Vec::new();
    for index in 0..count {
        let shard = Shard { index, count };
        let leadership = Leadership::elected();
        let sub = registry.sub_registry_with_label(("shard".into(), index.to_string().into()));
        lease::register_leader(sub, &leadership, &lease.identity);
        let metrics = DaemonMetrics::register(settings, sub);
        slots.push(Slot { shard, leadership, metrics, elector: None, daemon: None });
    }
    let (policies_tx, policies_rx) = watch::channel(Arc::new(policies.clone()));
    let common = Arc::new(Common {
        settings: settings.clone(),
        kubernetes: kubernetes.clone(),
        config,
        policies: policies_rx.clone(),
        secrets: SecretValues::default(),
        shard_views: Mutex::new(BTreeMap::new()),
        views: watch::channel(Vec::new()).0,
        running: Mutex::new(BTreeMap::new()),
        leaderships: slots.iter().map(|s| s.leadership.clone()).collect(),
        ticked: Arc::new(AtomicBool::new(false)),
    });

    // Policies and Secrets, read for every shard.
    let ready = state.ready.clone();
    let sources = Arc::new(PolicySources::new(
        policies,
        Box::new(move |policies| {
            ready.store(!policies.is_empty(), Ordering::Relaxed);
            policies_tx.send_replace(Arc::new(policies));
        }),
    ));
    let objects = PolicyObjects::new(
        client.clone(),
        kubernetes.namespaces.clone(),
        settings.prometheus.batching.scrape.clone(),
    );
    tokio::spawn(objects.run(sources.clone()));
    tokio::spawn(crate::platform::kubernetes::secrets::run(
        client.clone(),
        lease.namespace.clone(),
        common.secrets.clone(),
        policies_rx.clone(),
    ));

    // The API: the held shards' views; commands and alerts to the shard of their rollout.
    let (commands_tx, commands) = mpsc::unbounded_channel();
    let (alerts_tx, alerts) = mpsc::unbounded_channel();
    tokio::spawn(route_commands(common.clone(), commands));
    tokio::spawn(route_alerts(common.clone(), alerts));
    let reader = CanaryRunStore::new(client.clone(), kubernetes.namespaces.clone(), kubernetes.checkpoint);
    state.api = Some(crate::server::api::Api {
        platform: None,
        views: common.views.subscribe(),
        policies: policies_rx,
        commands: LoopSender::from(commands_tx),
        alerts: LoopSender::from(alerts_tx),
        // The routers wake the shard's loop themselves.
        wake: Arc::new(Notify::new()),
        store: Some(Arc::new(reader)),
        records_dir: Some(settings.daemon.records_dir.clone()),
        metrics: ApiMetrics::register(&mut registry, slots[0].metrics.looped.alerts.clone()),
        elsewhere: Some(elsewhere(common.clone())),
    });
    state.registry = Arc::new(registry);
    state.loop_ready = Some(common.ticked.clone());
    tracing::info!(shards = count, identity = %lease.identity, listen = %settings.server.listen, "running sharded: each shard has its own Lease and daemon");

    // This replica's member Lease, which the others count.
    let member =
        LeaseSettings { name: shards::member_lease_name(&lease.name, &lease.identity), ..lease.clone() };
    let (member_stop_tx, member_stop) = watch::channel(false);
    let membership =
        elections.spawn(lease::elect(leases.clone(), member, Leadership::elected(), member_stop));

    let coordinate = coordinate(common.clone(), elections, lease.clone(), slots, stop.clone());
    let serve = super::serve(&state, listener, stop);
    tokio::join!(serve, coordinate, super::signals(settings, &state, Some(sources), stop_tx));
    let _ = member_stop_tx.send(true);
    let _ = membership.await;
    Ok(())
}

/// Every `lease.retry`: counts the live replicas, starts the daemon of each shard taken,
/// releases one shard above the fair share, and exits the process when a shard's Lease
/// was lost to another replica. On stop, stops every daemon, then releases the Leases.
async fn coordinate(
    common: Arc<Common>,
    elections: Elections,
    settings: LeaseSettings,
    mut slots: Vec<Slot>,
    mut stop: watch::Receiver<bool>,
) {
    let count = slots.len() as u32;
    let leases = elections.leases(&settings.namespace);
    let fair = Arc::new(AtomicU32::new(1));
    let may_take: lease::MayTake = {
        let (fair, common) = (fair.clone(), common.clone());
        Arc::new(move || {
            let held = common.leaderships.iter().filter(|l| l.may_act()).count() as u32;
            held < fair.load(Ordering::Relaxed)
        })
    };
    let mut live = 1;
    loop {
        if let Some(counted) = live_members(&leases, &settings.name).await {
            live = counted.max(1);
        }
        fair.store(shards::fair_share(count, live), Ordering::Relaxed);
        for slot in &mut slots {
            if slot.elector.as_ref().is_some_and(|(_, e)| e.is_finished()) {
                let (_, elector) = slot.elector.take().expect("checked");
                if let Ok(Outcome::Lost) = elector.await {
                    tracing::error!(shard = slot.shard.index, "exiting: this replica lost a shard's Lease");
                    std::process::exit(1);
                }
            }
            if slot.elector.is_none() {
                let lease = LeaseSettings { name: slot.shard.lease_name(&settings.name), ..settings.clone() };
                let (tx, rx) = watch::channel(false);
                let api = leases.clone();
                let elected = lease::elect_when(api, lease, slot.leadership.clone(), rx, may_take.clone());
                slot.elector = Some((tx, elections.spawn(elected)));
            }
            if slot.daemon.is_none() && slot.leadership.may_act() {
                tracing::info!(shard = slot.shard.index, "took the shard: its daemon starts");
                let (tx, rx) = watch::channel(false);
                let task =
                    drive(common.clone(), slot.shard, slot.leadership.clone(), slot.metrics.clone(), rx);
                slot.daemon = Some((tx, tokio::spawn(task)));
            }
        }
        let held: BTreeSet<u32> =
            slots.iter().filter(|s| s.daemon.is_some()).map(|s| s.shard.index).collect();
        if let Move::Release(index) = shards::next_move(&held, count, live) {
            tracing::info!(shard = index, held = held.len(), live, "above the fair share: releasing a shard");
            release(&mut slots[index as usize]).await;
        }
        common.ticked.store(true, Ordering::Relaxed);
        let stopped = tokio::select! {
            _ = tokio::time::sleep(settings.retry) => false,
            _ = stop.wait_for(|s| *s) => true,
        };
        if stopped {
            for slot in &mut slots {
                if let Some((tx, task)) = slot.daemon.take() {
                    let _ = tx.send(true);
                    let _ = task.await;
                }
            }
            for slot in &mut slots {
                release(slot).await;
            }
            return;
        }
    }
}

/// Stops the shard's daemon (as on SIGTERM), then its election, which releases the
/// Lease while it may still act.
async fn release(slot: &mut Slot) {
    if let Some((tx, task)) = slot.daemon.take() {
        let _ = tx.send(true);
        let _ = task.await;
    }
    if let Some((tx, elector)) = slot.elector.take() {
        let _ = tx.send(true);
        let _ = elector.await;
    }
}

/// How many replicas renew their member Lease now (`None`: the Leases cannot be read).
/// Compares renew times with this machine's clock: an error only skews the fair share,
/// never who holds a shard.
async fn live_members(leases: &kube::Api<Lease>, name: &str) -> Option<u32> {
    let prefix = shards::member_lease_name(name, "");
    let list = match leases.list(&kube::api::ListParams::default()).await {
        Ok(list) => list,
        Err(e) => {
            tracing::warn!(error = %e, "cannot count the replicas' member Leases; keeping the last count");
            return None;
        }
    };
    let now = jiff::Timestamp::now();
    let live = list
        .items
        .iter()
        .filter(|l| l.metadata.name.as_deref().is_some_and(|n| n.starts_with(&prefix)))
        .filter(|l| {
            let Some(spec) = &l.spec else { return false };
            let held = spec.holder_identity.as_deref().is_some_and(|h| !h.is_empty());
            let duration =
                jiff::SignedDuration::from_secs(i64::from(spec.lease_duration_seconds.unwrap_or(0)));
            held && spec.renew_time.as_ref().is_some_and(|t| t.0 + duration >= now)
        })
        .count();
    Some(live as u32)
}

/// One shard's daemon, until `release` is set.
async fn drive(
    common: Arc<Common>,
    shard: Shard,
    leadership: Leadership,
    metrics: DaemonMetrics,
    mut release: watch::Receiver<bool>,
) {
    let client = match kube::client::ClientBuilder::try_from(common.config.clone()) {
        Ok(builder) => builder.with_layer(&lease::FenceLayer(leadership.clone())).build(),
        Err(e) => {
            tracing::error!(shard = shard.index, error = %e, "cannot build the shard's Kubernetes client");
            return;
        }
    };
    let kubernetes = &common.kubernetes;
    let platform =
        Arc::new(KubernetesPlatform::new(client.clone(), kubernetes.namespaces.clone()).with_shard(shard));
    let store = Arc::new(
        CanaryRunStore::new(client.clone(), kubernetes.namespaces.clone(), kubernetes.checkpoint)
            .with_shard(shard),
    );
    let policies = common.policies.borrow().to_vec();
    let cluster = Cluster {
        events: Some(EventNotifier::new(client)),
        leadership: &leadership,
        secrets: Some(&common.secrets),
    };
    let mut daemon =
        match super::daemon(&common.settings, metrics, platform.clone(), store, policies, cluster).await {
            Ok(daemon) => daemon,
            Err(e) => {
                tracing::error!(shard = shard.index, error = %e, "cannot start the shard's daemon");
                return;
            }
        };
    let watching = tokio::spawn(platform.run(daemon.policies()));
    let updates = daemon.policy_updates();
    let mut policies = common.policies.clone();
    let forwarding = tokio::spawn(async move {
        while policies.changed().await.is_ok() {
            let now = policies.borrow_and_update().to_vec();
            if updates.send(now).is_err() {
                return;
            }
        }
    });
    let mut views = daemon.views();
    let publishing = {
        let common = common.clone();
        tokio::spawn(async move {
            loop {
                common.set_views(shard.index, Some(views.borrow_and_update().clone()));
                if views.changed().await.is_err() {
                    return;
                }
            }
        })
    };
    let inboxes = Inboxes { commands: daemon.commands(), alerts: daemon.alerts(), wake: daemon.waker() };
    common.running.lock().unwrap_or_else(std::sync::PoisonError::into_inner).insert(shard.index, inboxes);
    let settings = &common.settings;
    crate::daemon::run_until(
        &mut daemon,
        settings.daemon.tick,
        jiff::Timestamp::now,
        &common.ticked,
        async move {
            let _ = release.wait_for(|r| *r).await;
        },
        settings.daemon.shutdown_deadline,
    )
    .await;
    common.running.lock().unwrap_or_else(std::sync::PoisonError::into_inner).remove(&shard.index);
    for task in [watching, forwarding, publishing] {
        task.abort();
    }
    common.set_views(shard.index, None);
    tracing::info!(shard = shard.index, "the shard's daemon stopped");
}

/// Where a rollout not shown here is driven: the replica holding its shard, when it is
/// not this one.
fn elsewhere(common: Arc<Common>) -> crate::server::api::Elsewhere {
    Arc::new(move |namespace: &str, name: &str| {
        let shard = common.shard_of(namespace, name);
        common.inboxes(shard).is_none().then(|| common.held_elsewhere(shard, &format!("{namespace}/{name}")))
    })
}

/// Hands each operator command to the daemon of its rollout's shard, or refuses it
/// naming the replica that holds the shard.
async fn route_commands(common: Arc<Common>, mut commands: mpsc::UnboundedReceiver<OperatorCommand>) {
    while let Some(command) = commands.recv().await {
        let shard = common.shard_of(&command.id.namespace, &command.id.name);
        match common.inboxes(shard) {
            Some(inboxes) => {
                let _ = inboxes.commands.send(command);
                inboxes.wake.notify_one();
            }
            None => {
                let why = common.held_elsewhere(shard, &command.id.to_string());
                if let Some(done) = command.done {
                    let _ = done.send(CommandOutcome::Refused(why));
                }
            }
        }
    }
}

/// Hands each firing alert to every shard's daemon held here: each acts only on the
/// rollouts it drives.
async fn route_alerts(common: Arc<Common>, mut alerts: mpsc::UnboundedReceiver<FiringAlert>) {
    while let Some(alert) = alerts.recv().await {
        for inboxes in common.all_inboxes() {
            let _ = inboxes.alerts.send(alert.clone());
            inboxes.wake.notify_one();
        }
    }
}
