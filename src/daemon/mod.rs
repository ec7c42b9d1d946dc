//! The daemon loop: one loop drives every rollout. Each tick:
//!
//! 1. **Inputs** (`inputs.rs`): what arrived in the inbox since the last tick
//!    (platform confirmations, operator commands, policy reloads, firing alerts), the
//!    outbox's delivered notifications, new rollouts and revisions, and the
//!    confirmations the persisted state implies (`PromotionDone`, `RollbackDone`).
//! 2. **Measure** (`measure.rs`) every due rollout together: one batched observation
//!    per window (and, inside the source, per template shard), the health probes and
//!    the gate webhooks (`gates.rs`) of rollouts waiting at one, concurrently.
//! 3. **Decide**: `engine::step` for each.
//! 4. **Save** every changed state, in one call to the store, before any I/O.
//! 5. **Reconcile** (`executor.rs`): executors bring the platform to each rollout's
//!    desired world, doing only what the persisted `applied` record does not show as
//!    done; they run in the background, at most one per rollout, each call bounded by
//!    a timeout, and report back through the inbox. Repeating them after a crash is
//!    harmless. Only saved states are acted on.
//! 6. **Tell**: each decision's notification goes to the outbox (`try_send`), never
//!    waited for.
//!
//! A slow or failing Prometheus shard, platform call, store write or notifier holds up
//! only its own rollouts. A restart is the next tick reading the store.

mod alert_reads;
mod executor;
pub mod gates;
pub mod health;
mod inbox;
mod inputs;
mod measure;
pub mod metrics;
pub mod records;
pub mod view;

use std::collections::{BTreeMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use jiff::Timestamp;
use tokio::sync::mpsc;

use crate::engine::{Notification, RolloutId};
use crate::notify::Destinations;
use crate::notify::outbox::{Outbox, OutboxOptions};
use crate::platform::Platform;
use crate::policy::LoadedPolicy;
use crate::record::Timeline;
use crate::source::MetricSource;
use crate::source::batch::{self, BatchOptions};
use crate::store::{RunState, RunStore, TimelineStore};
pub use inbox::{CommandOutcome, OperatorCommand};
use inbox::{Drained, Inbox};
use metrics::{LoopMetrics, RolloutLabels, ValueSeries};
use records::RecordStore;

pub use inbox::{FiringAlert, LoopSender, LoopStopped};

/// How the loop runs.
#[derive(Clone, Debug)]
pub struct Options {
    /// Time between ticks. Rollouts are evaluated on the first tick at or after their
    /// next evaluation time.
    pub tick: Duration,
    /// Longest a platform call may take before it counts as failed (and is retried).
    pub platform_timeout: Duration,
    /// How batches are cut; also renders the evidence queries of decisions.
    pub batching: BatchOptions,
    /// The outbox.
    pub outbox: OutboxOptions,
    /// Failures in a row of one rollout's platform calls after which the engine is told
    /// (a failed promotion then rolls back, a weight that cannot be set pauses). The
    /// calls go on being retried either way.
    pub platform_attempts: u32,
    /// Which rollouts get `canaryd_metric_value` series.
    pub metric_values: ValueSeries,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            tick: Duration::from_secs(5),
            platform_timeout: Duration::from_secs(10),
            batching: BatchOptions::default(),
            outbox: OutboxOptions::default(),
            platform_attempts: 3,
            metric_values: ValueSeries::default(),
        }
    }
}

/// A rollout as the loop holds it.
struct Run {
    state: RunState,
    /// Notification keys (decision seqs) offered and not yet reported.
    offered: HashSet<u64>,
    /// Delivered past `notified` (a gap before them is still being delivered).
    delivered: std::collections::BTreeSet<u64>,
    /// Changed since the last save.
    dirty: bool,
    /// An executor is working on it.
    busy: bool,
    /// Platform calls failed in a row (not persisted: a restart retries afresh).
    failures: u32,
}

impl Run {
    fn new(state: RunState, dirty: bool) -> Run {
        Run { state, offered: HashSet::new(), delivered: Default::default(), dirty, busy: false, failures: 0 }
    }

    /// Moves `notified` past every decision told (or with nothing to tell), in order.
    fn advance_notified(&mut self) {
        let r = &self.state.rollout;
        while self.state.notified < r.decisions_made {
            let seq = self.state.notified;
            let pending = r
                .decisions
                .iter()
                .find(|d| d.seq == seq)
                .is_some_and(|d| Notification::of(r, d).is_some() && !self.delivered.remove(&seq));
            if pending {
                break;
            }
            self.state.notified += 1;
            self.dirty = true;
        }
    }
}

/// Counts of one tick, for logs and benchmarks.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct TickReport {
    /// Rollouts measured and stepped.
    pub evaluated: usize,
    /// States saved.
    pub saved: usize,
    /// Executors started.
    pub executors: usize,
    /// Notifications offered.
    pub offered: usize,
}

/// The daemon: sources, platform, store and outbox, and every rollout's state.
pub struct Daemon<S, P, St> {
    source: Arc<S>,
    platform: Arc<P>,
    store: Arc<St>,
    outbox: Outbox,
    outbox_worker: crate::notify::outbox::Workers,
    records: Option<RecordStore>,
    policies: Vec<LoadedPolicy>,
    runs: BTreeMap<RolloutId, Run>,
    options: Options,
    metrics: LoopMetrics,
    probe_client: reqwest::Client,
    /// Commands, executors' reports, policy reloads and alerts, taken in at each tick.
    inbox: mpsc::UnboundedReceiver<Inbox>,
    inbox_tx: mpsc::UnboundedSender<Inbox>,
    executors: tokio::task::JoinSet<()>,
    views: tokio::sync::watch::Sender<Vec<view::RolloutView>>,
    /// The policies in force, for the API to check a rollout it is asked to start.
    policy_view: tokio::sync::watch::Sender<Arc<Vec<LoadedPolicy>>>,
    /// Woken by a command or an alert, so the loop ticks at once instead of at the next
    /// period.
    wake: Arc<tokio::sync::Notify>,
    /// Reads of the alerts already firing when rollouts start or resume.
    alert_reads: alert_reads::AlertReads,
    /// Operator commands taken, told once their rollout's state is saved.
    unconfirmed: Vec<(RolloutId, u64, tokio::sync::oneshot::Sender<CommandOutcome>)>,
}

impl<S, P, St> Drop for Daemon<S, P, St> {
    fn drop(&mut self) {
        // Like a killed process: nothing in flight survives.
        self.outbox_worker.abort();
        self.executors.abort_all();
    }
}

impl<S: MetricSource + Send + Sync + 'static, P: Platform, St: RunStore + TimelineStore> Daemon<S, P, St> {
    /// Starts a daemon on `store`, resuming every rollout stored there. Entries that
    /// cannot be read are logged and skipped; the others resume.
    #[allow(clippy::too_many_arguments)]
    pub async fn start<N: Destinations>(
        source: Arc<S>,
        platform: Arc<P>,
        store: Arc<St>,
        notifier: Arc<N>,
        records: Option<RecordStore>,
        policies: Vec<LoadedPolicy>,
        options: Options,
        metrics: LoopMetrics,
    ) -> Daemon<S, P, St> {
        let outbox = Outbox::start(notifier, options.outbox.clone());
        let outbox_worker = outbox.worker.clone();
        metrics.metric_value.bound(options.metric_values.clone());
        let (inbox_tx, inbox) = mpsc::unbounded_channel();
        let policy_view = tokio::sync::watch::Sender::new(Arc::new(policies.clone()));
        let (states, problems) = store.load_all().await;
        for problem in problems {
            tracing::error!(%problem, "stored rollout state cannot be read; skipped");
        }
        let runs: BTreeMap<RolloutId, Run> = states
            .into_iter()
            .map(|state| {
                let run = Run::new(state, false);
                (run.state.rollout.id.clone(), run)
            })
            .collect();
        // The weights confirmed before a restart; later ones are set as they are confirmed.
        for (id, run) in runs.iter().filter(|(_, r)| !r.state.recorded) {
            if let Some(w) = run.state.applied.weight {
                metrics
                    .canary_weight
                    .get_or_create(&RolloutLabels { rollout: id.to_string() })
                    .set(i64::from(w));
            }
        }
        Daemon {
            source,
            platform,
            store,
            outbox,
            outbox_worker,
            records,
            policies,
            runs,
            options,
            metrics,
            probe_client: reqwest::Client::new(),
            inbox,
            inbox_tx,
            executors: tokio::task::JoinSet::new(),
            views: tokio::sync::watch::Sender::new(Vec::new()),
            policy_view,
            wake: Arc::new(tokio::sync::Notify::new()),
            alert_reads: alert_reads::AlertReads::default(),
            unconfirmed: Vec::new(),
        }
    }

    /// A handle to hand firing alerts to the loop with; each is taken in at the next
    /// tick (wake the loop with [`Daemon::waker`] to make that now).
    pub fn alerts(&self) -> LoopSender<FiringAlert> {
        LoopSender::to_inbox(self.inbox_tx.clone(), Inbox::Alert)
    }

    /// The loop's own metrics (the API counts the alerts it does not hand on there).
    pub fn metrics(&self) -> &LoopMetrics {
        &self.metrics
    }

    /// Notified, the running loop ticks at once.
    pub fn waker(&self) -> Arc<tokio::sync::Notify> {
        self.wake.clone()
    }

    /// A handle to replace the policies with from another task (on reload); taken in at
    /// the next tick.
    pub fn policy_updates(&self) -> LoopSender<Vec<LoadedPolicy>> {
        LoopSender::to_inbox(self.inbox_tx.clone(), Inbox::Policies)
    }

    /// Where every rollout stands, refreshed after each tick.
    pub fn views(&self) -> tokio::sync::watch::Receiver<Vec<view::RolloutView>> {
        self.views.subscribe()
    }

    /// A handle to send operator commands with.
    pub fn commands(&self) -> LoopSender<OperatorCommand> {
        LoopSender::to_inbox(self.inbox_tx.clone(), Inbox::Command)
    }

    /// Replaces the policies (on reload). Running rollouts keep the plan they started with.
    pub fn set_policies(&mut self, policies: Vec<LoadedPolicy>) {
        tracing::info!(policies = policies.len(), "policies replaced: new rollouts use them");
        self.policy_view.send_replace(Arc::new(policies.clone()));
        self.policies = policies;
    }

    /// The policies in force, as they change on reload.
    pub fn policies(&self) -> tokio::sync::watch::Receiver<Arc<Vec<LoadedPolicy>>> {
        self.policy_view.subscribe()
    }

    /// A rollout's persisted state as the loop holds it.
    pub fn state(&self, id: &RolloutId) -> Option<&RunState> {
        self.runs.get(id).map(|r| &r.state)
    }

    /// A rollout's timeline, read from the store: it is kept out of memory, since a
    /// long rollout's timeline is far larger than its state.
    pub fn timeline(&self, id: &RolloutId) -> Option<Timeline> {
        self.runs.contains_key(id).then(|| self.store.timeline(id))
    }

    /// Every rollout held.
    pub fn rollouts(&self) -> impl Iterator<Item = &RunState> {
        self.runs.values().map(|r| &r.state)
    }

    /// One whole tick at `now`.
    pub async fn tick(&mut self, now: Timestamp) -> TickReport {
        let started = std::time::Instant::now();
        let mut report = self.decide_and_save(now).await;
        self.act(now, &mut report).await;
        self.metrics.tick_seconds.observe(started.elapsed().as_secs_f64());
        report
    }

    /// The first half of a tick: inputs, measurements and decisions, saved. Nothing is
    /// carried out or told yet; a crash here loses nothing.
    pub async fn decide_and_save(&mut self, now: Timestamp) -> TickReport {
        let mut report = TickReport::default();
        self.take_inputs(now).await;
        report.evaluated = self.evaluate(now).await;
        report.saved = self.save().await;
        report
    }

    /// The second half of a tick: executors start and notifications are offered; what
    /// that changed (records written, notifications with nothing to tell) is saved.
    pub async fn act(&mut self, now: Timestamp, report: &mut TickReport) {
        report.executors = self.reconcile(now);
        report.offered = self.tell();
        report.saved += self.save().await;
        let depth = self.outbox.stats.depth.load(std::sync::atomic::Ordering::Relaxed);
        self.metrics.export(self.runs.values().map(|r| &r.state.rollout), depth);
        if !self.views.is_closed() {
            self.views.send_replace(self.runs.values().map(|r| view::RolloutView::of(&r.state)).collect());
        }
    }

    /// Stops: waits up to `deadline` for executors and the outbox, then takes in what
    /// they reported and saves. Called on SIGTERM.
    pub async fn shutdown(&mut self, deadline: Duration) {
        let executors = async { while self.executors.join_next().await.is_some() {} };
        if tokio::time::timeout(deadline, executors).await.is_err() {
            tracing::warn!(
                "platform calls still running at the shutdown deadline; they are repeated on restart"
            );
        }
        if !self.outbox.drain(deadline).await {
            tracing::warn!(
                "notifications still queued at the shutdown deadline; they are offered again on restart"
            );
        }
        // Only the reports count now: commands, reloads and alerts have no tick to act in.
        let reports = Drained::take(&mut self.inbox).reports;
        let _ = self.take_reports(reports);
        self.save().await;
    }

    /// Waits (up to `deadline`) until no executor is running and the outbox is empty.
    pub async fn settle(&mut self, deadline: Duration) -> bool {
        let executors = async { while self.executors.join_next().await.is_some() {} };
        let ok = tokio::time::timeout(deadline, executors).await.is_ok();
        ok && self.outbox.drain(deadline).await
    }

    // ---- 4. save ----------------------------------------------------------------------

    /// Saves every changed state in one call to the store.
    async fn save(&mut self) -> usize {
        let changed: Vec<&RunState> = self.runs.values().filter(|r| r.dirty).map(|r| &r.state).collect();
        if changed.is_empty() {
            self.confirm_commands();
            return 0;
        }
        let results = self.store.save_all(&changed).await;
        if results.len() != changed.len() {
            tracing::error!(
                states = changed.len(),
                results = results.len(),
                "the store answered a different number of saves; the unanswered are saved again next tick"
            );
        }
        let mut saved = 0;
        // The same order as `changed`: nothing changed in between.
        for ((id, run), result) in self.runs.iter_mut().filter(|(_, r)| r.dirty).zip(results) {
            match result {
                Ok(version) => {
                    run.state.version = version;
                    run.dirty = false;
                    saved += 1;
                }
                Err(e) => {
                    tracing::error!(rollout = %id, error = %e, "cannot save the rollout's state; no action is taken for it until it is saved")
                }
            }
        }
        self.confirm_commands();
        saved
    }

    /// Tells the callers of the commands whose decisions are now saved.
    fn confirm_commands(&mut self) {
        let runs = &self.runs;
        let (saved, waiting): (Vec<_>, Vec<_>) = std::mem::take(&mut self.unconfirmed)
            .into_iter()
            .partition(|(id, _, _)| runs.get(id).is_none_or(|r| !r.dirty));
        self.unconfirmed = waiting;
        for (_, decision, done) in saved {
            let _ = done.send(CommandOutcome::Applied { decision });
        }
    }

    // ---- 6. tell ----------------------------------------------------------------------

    fn tell(&mut self) -> usize {
        let mut offered = 0;
        for run in self.runs.values_mut() {
            if run.dirty {
                continue;
            }
            run.advance_notified();
            let r = &run.state.rollout;
            let (notified, offered_now, delivered) = (run.state.notified, &mut run.offered, &run.delivered);
            for d in r.decisions.iter().filter(|d| d.seq >= notified) {
                if offered_now.contains(&d.seq) || delivered.contains(&d.seq) {
                    continue;
                }
                let Some(n) = Notification::of(r, d) else { continue };
                if !self.outbox.offer(n) {
                    self.metrics.outbox_dropped.inc();
                    break;
                }
                offered_now.insert(d.seq);
                offered += 1;
            }
        }
        offered
    }
}

/// Fills in, for each verdict, the query that measures each arm alone over `window`:
/// what a record shows as the evidence's source.
pub fn name_queries(
    verdicts: &mut [crate::judge::Verdict],
    plan: &crate::engine::Plan,
    arms: &crate::engine::Arms,
    window: Duration,
    options: &BatchOptions,
) {
    for v in verdicts {
        let Some(metric) = plan.metrics.iter().find(|m| m.name == v.metric) else { continue };
        for (arm, workload) in
            [(&mut v.evidence.canary, &arms.canary), (&mut v.evidence.baseline, &arms.baseline)]
        {
            arm.query = batch::arm_query(metric, &arms.namespace, workload, window, options);
        }
    }
}

/// Runs the loop: a tick every `every` (at the clock's `now`), until `shutdown`
/// completes; then stops within `deadline`, with everything reported saved. `ready` is
/// set once the store is loaded and the first tick has run.
pub async fn run_until<S, P, St>(
    daemon: &mut Daemon<S, P, St>,
    every: Duration,
    clock: impl Fn() -> Timestamp,
    ready: &std::sync::atomic::AtomicBool,
    shutdown: impl std::future::Future<Output = ()>,
    deadline: Duration,
) where
    S: MetricSource + Send + Sync + 'static,
    P: Platform,
    St: RunStore + TimelineStore,
{
    let mut ticks = tokio::time::interval(every);
    // A tick that overruns delays the next one; ticks are never run back to back.
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    tokio::pin!(shutdown);
    let wake = daemon.waker();
    loop {
        tokio::select! {
            () = &mut shutdown => break,
            () = wake.notified() => {
                let report = daemon.tick(clock()).await;
                tracing::debug!(?report, "tick (woken by a command or an alert)");
            }
            _ = ticks.tick() => {
                let report = daemon.tick(clock()).await;
                ready.store(true, std::sync::atomic::Ordering::Relaxed);
                tracing::debug!(?report, "tick");
            }
        }
    }
    tracing::info!("stopping: waiting for platform calls and notifications in flight");
    daemon.shutdown(deadline).await;
}
