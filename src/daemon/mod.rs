//! The daemon loop: one loop drives every rollout. Each tick:
//!
//! 1. **Inputs**: platform confirmations and delivered notifications from the previous
//!    tick, new rollouts and revisions, operator commands, and the confirmations the
//!    persisted state implies (`PromotionDone`, `RollbackDone`).
//! 2. **Measure** every due rollout together: one batched observation per window (and,
//!    inside the source, per template shard), and the health probes, concurrently.
//! 3. **Decide**: `engine::step` for each.
//! 4. **Save** every changed state before any I/O.
//! 5. **Reconcile**: executors bring the platform to each rollout's desired world,
//!    doing only what the persisted `applied` record does not show as done; they run in
//!    the background, at most one per rollout, each call bounded by a timeout, and
//!    report back at the next tick. Repeating them after a crash is harmless.
//! 6. **Tell**: each decision's notification goes to the outbox (`try_send`).
//!
//! A slow or failing Prometheus shard, platform call or notifier holds up only its own
//! rollouts. A restart is the next tick reading the store.

pub mod health;
mod inbox;
pub mod metrics;
pub mod records;
pub mod view;

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use jiff::Timestamp;
use tokio::sync::mpsc;
use tracing::Instrument as _;

use crate::engine::{
    Command, DecisionKind, Input, IntervalObservations, Notification, Phase, RollbackReason, Rollout,
    RolloutId, Scale, Transition, step,
};
use crate::policy::{LoadedPolicy, selector};
use crate::record::{DeploymentRecord, Timeline, TimelinePoint};
use crate::source::MetricSource;
use crate::source::batch::{self, BatchOptions, Target};
use metrics::{
    AlertLabels, DecisionLabels, LoopMetrics, PhaseLabels, ReasonLabels, RolloutLabels, ValueLabels,
    VerdictLabels,
};

use crate::notify::Notifier;
use crate::notify::outbox::{Outbox, OutboxOptions};
use crate::platform::{Platform, PlatformError, RolloutEvent};
use crate::store::{Applied, RunState, RunStore, TimelineStore, Version};
use inbox::{Drained, Inbox, Report};
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
}

impl Default for Options {
    fn default() -> Self {
        Options {
            tick: Duration::from_secs(5),
            platform_timeout: Duration::from_secs(10),
            batching: BatchOptions::default(),
            outbox: OutboxOptions::default(),
            platform_attempts: 3,
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
    outbox_worker: tokio::task::AbortHandle,
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
    /// Woken by a command or an alert, so the loop ticks at once instead of at the next
    /// period.
    wake: Arc<tokio::sync::Notify>,
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
    pub async fn start<N: Notifier>(
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
        let (inbox_tx, inbox) = mpsc::unbounded_channel();
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
            wake: Arc::new(tokio::sync::Notify::new()),
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

    /// A handle to send operator commands with: rollout, command, caller.
    pub fn commands(&self) -> LoopSender<(RolloutId, Command, String)> {
        LoopSender::to_inbox(self.inbox_tx.clone(), |(id, command, by)| Inbox::Command { id, command, by })
    }

    /// Replaces the policies (on reload). Running rollouts keep the plan they started with.
    pub fn set_policies(&mut self, policies: Vec<LoadedPolicy>) {
        self.policies = policies;
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
        self.export_metrics();
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

    // ---- 1. inputs --------------------------------------------------------------------

    /// Takes in the executors' reports and the outbox's outcomes; returns the platform
    /// failures to tell the engine.
    fn take_reports(&mut self, reports: Vec<(RolloutId, Report)>) -> Vec<(RolloutId, Input)> {
        let mut failed = Vec::new();
        for (id, report) in reports {
            let Some(run) = self.runs.get_mut(&id) else { continue };
            let applied = &mut run.state.applied;
            if matches!(report, Report::Weight(_) | Report::Scale(_) | Report::Promoted(_)) {
                run.failures = 0;
            }
            match report {
                Report::Weight(w) => {
                    applied.weight = Some(w);
                    let labels = RolloutLabels { rollout: id.to_string() };
                    self.metrics.canary_weight.get_or_create(&labels).set(i64::from(w));
                }
                Report::Scale(s) => applied.canary = Some(s),
                Report::Promoted(revision) => applied.promoted = Some(revision),
                Report::Failed { call, error } => {
                    self.metrics.platform_failures.inc();
                    run.failures += 1;
                    tracing::warn!(rollout = %id, %call, %error, failures = run.failures, "platform call failed; retried next tick");
                    if run.failures == self.options.platform_attempts {
                        failed.push((id, Input::PlatformFailed { call, error }));
                    }
                    continue;
                }
                Report::Finished => {
                    run.busy = false;
                    continue;
                }
            }
            run.dirty = true;
        }
        for (key, delivered) in self.outbox.outcomes() {
            let id = key.rollout.split_once('/').map(|(namespace, name)| RolloutId {
                namespace: namespace.to_string(),
                name: name.to_string(),
            });
            let Some(run) = id.and_then(|id| self.runs.get_mut(&id)) else { continue };
            // A key of a rollout this one replaced (same workload, seq from 0 again) is stale.
            let ours = |d: &crate::engine::Decision| d.seq == key.decision && d.revision == key.revision;
            if !run.state.rollout.decisions.iter().any(ours) {
                continue;
            }
            // Given up: offered again next tick.
            run.offered.remove(&key.decision);
            if delivered {
                run.delivered.insert(key.decision);
                run.advance_notified();
            }
        }
        failed
    }

    async fn take_inputs(&mut self, now: Timestamp) {
        let drained = Drained::take(&mut self.inbox);
        let failed = self.take_reports(drained.reports);
        if let Some(policies) = drained.policies {
            self.policies = policies;
        }
        for (id, input) in failed {
            match self.runs.get(&id).map(|r| step(&r.state.rollout, &input, now)) {
                Some(Ok(t)) => self.apply(&id, t, None),
                Some(Err(e)) => tracing::warn!(rollout = %id, error = %e, "platform failure not taken"),
                None => {}
            }
        }
        for event in self.platform.events() {
            self.take_event(event, now).await;
        }
        for alert in drained.alerts {
            self.take_alert(&alert, now);
        }
        for (id, command, by) in drained.commands {
            let input = Input::Command { command, by: by.clone() };
            match self.runs.get(&id).map(|r| step(&r.state.rollout, &input, now)) {
                Some(Ok(t)) => self.apply(&id, t, None),
                Some(Err(e)) => tracing::warn!(rollout = %id, by, error = %e, "command refused"),
                None => tracing::warn!(rollout = %id, by, "command for an unknown rollout"),
            }
        }
        // Confirmations the persisted state implies: the platform did what was asked.
        let confirmed: Vec<(RolloutId, Input)> = self
            .runs
            .iter()
            .filter_map(|(id, run)| {
                let (r, applied) = (&run.state.rollout, &run.state.applied);
                let input = match r.phase {
                    Phase::Promoting if applied.promoted.as_ref() == Some(&r.revision) => {
                        Input::PromotionDone
                    }
                    Phase::RollingBack
                        if applied.weight == Some(0) && applied.canary == Some(Scale::Down) =>
                    {
                        Input::RollbackDone
                    }
                    _ => return None,
                };
                Some((id.clone(), input))
            })
            .collect();
        for (id, input) in confirmed {
            if let Some(Ok(t)) = self.runs.get(&id).map(|r| step(&r.state.rollout, &input, now)) {
                self.apply(&id, t, None);
            }
        }
    }

    /// A firing alert, given to every rollout of the workload it names: a rollout whose
    /// plan has a trigger on it rolls back; the others do not change.
    fn take_alert(&mut self, alert: &FiringAlert, now: Timestamp) {
        let input = Input::Alert { alert: alert.alert.clone(), detail: alert.detail.clone() };
        let named: Vec<RolloutId> = self
            .runs
            .iter()
            .filter(|(id, run)| !run.state.rollout.phase.is_terminal() && alert.names(id, &run.state.arms))
            .map(|(id, _)| id.clone())
            .collect();
        let mut result = if named.is_empty() { "no-rollout" } else { "no-trigger" };
        for id in named {
            let Some(run) = self.runs.get(&id) else { continue };
            let before = run.state.rollout.decisions_made;
            match step(&run.state.rollout, &input, now) {
                Ok(t) if t.rollout.decisions_made > before => {
                    tracing::warn!(rollout = %id, alert = %alert.alert, "alert trigger fired: rolling back");
                    result = "rolled-back";
                    self.apply(&id, t, None);
                }
                Ok(_) => {
                    tracing::info!(rollout = %id, alert = %alert.alert, phase = run.state.rollout.phase.name(), "alert fired; not taken: no trigger of the rollout's policy names it, or the canary no longer carries traffic to take back")
                }
                Err(e) => tracing::warn!(rollout = %id, error = %e, "alert not taken"),
            }
        }
        self.metrics.alerts.get_or_create(&AlertLabels { result }).inc();
    }

    async fn take_event(&mut self, event: RolloutEvent, now: Timestamp) {
        let id = event.id.clone();
        if let Some(run) = self.runs.get(&id) {
            let r = &run.state.rollout;
            if r.revision == event.revision {
                return; // Seen before (a re-list after a restart, a repeated event).
            }
            if !r.phase.is_terminal() {
                let input = Input::Superseded { revision: event.revision.clone() };
                if let Ok(t) = step(r, &input, now) {
                    tracing::info!(rollout = %id, revision = %event.revision, "new revision mid-rollout: analysis restarts");
                    self.apply(&id, t, None);
                }
                return;
            }
        }
        let Some(selection) = selector::select(&self.policies, &id.namespace, &event.labels) else {
            tracing::debug!(rollout = %id, "no policy selects this workload");
            return;
        };
        tracing::info!(rollout = %id, revision = %event.revision, policy = %selection.chosen.reference, choice = %selection.explain(), "new rollout");
        let rollout = Rollout::new(id.clone(), event.revision, selection.chosen.plan.clone());
        let Ok(t) = step(&rollout, &Input::Start, now) else { return };
        // A finished rollout of this workload gives way. Its record is due once its last
        // decision is told, a tick or two after the end: the next revision can come sooner.
        if self.runs.get(&id).is_some_and(|old| !old.state.recorded) {
            self.record(&id, now);
        }
        if let Some(old) = self.runs.remove(&id) {
            if !old.state.recorded {
                tracing::error!(rollout = %id, revision = %old.state.rollout.revision, "the finished rollout's record could not be written before the next revision replaced it; it is lost");
            }
            let forgotten = self.store.remove(&id).await.and_then(|()| self.store.forget_timeline(&id));
            if let Err(e) = forgotten {
                tracing::error!(rollout = %id, error = %e, "cannot forget the finished rollout");
            }
        }
        let state = RunState {
            rollout,
            arms: event.arms,
            applied: Applied::default(),
            notified: 0,
            recorded: false,
            version: Version::default(),
        };
        self.runs.insert(id.clone(), Run::new(state, true));
        self.apply(&id, t, None);
    }

    /// Takes a transition into the rollout's state and its interval into the timeline;
    /// each new decision with evidence keeps the measurement window its queries are
    /// rendered from.
    fn apply(&mut self, id: &RolloutId, t: Transition, window: Option<Duration>) {
        let Some(run) = self.runs.get_mut(id) else { return };
        let before = run.state.rollout.decisions_made;
        run.state.rollout = t.rollout;
        run.dirty = true;
        let r = &mut run.state.rollout;
        for d in r.decisions.iter_mut().filter(|d| d.seq >= before) {
            self.metrics.decisions.get_or_create(&DecisionLabels { kind: d.action.name() }).inc();
            match d.action {
                DecisionKind::RolledBack | DecisionKind::Aborted => {
                    let reason = r.rollback.as_ref().map_or("aborted", RollbackReason::label);
                    self.metrics.rollbacks.get_or_create(&ReasonLabels { reason }).inc();
                }
                DecisionKind::Promoted => {
                    self.metrics.promotions.inc();
                }
                _ => {}
            }
            if !d.evidence.is_empty() {
                d.window_seconds = window.map(|w| w.as_secs());
            }
            tracing::info!(rollout = %id, revision = %r.revision, decision = %d.action, weight = d.weight, reason = %d.reason, "decision");
        }
        if let Some(interval) = t.interval {
            let rollout = id.to_string();
            for v in &interval.verdicts {
                let outcome = v.outcome.name();
                self.metrics
                    .verdicts
                    .get_or_create(&VerdictLabels { metric: v.metric.clone(), outcome })
                    .inc();
                for (arm, value) in
                    [("canary", v.evidence.canary.value), ("baseline", v.evidence.baseline.value)]
                {
                    let labels = ValueLabels { rollout: rollout.clone(), metric: v.metric.clone(), arm };
                    match value {
                        Some(value) => {
                            self.metrics.metric_value.get_or_create(&labels).set(value);
                        }
                        // No data is not zero: the series goes until there is some.
                        None => {
                            self.metrics.metric_value.remove(&labels);
                        }
                    }
                }
            }
            let point = TimelinePoint::of(&interval);
            if let Err(e) = self.store.append_timeline(id, &point) {
                tracing::error!(rollout = %id, error = %e, "cannot append to the timeline");
            }
        }
    }

    // ---- 2 and 3. measure and decide --------------------------------------------------

    async fn evaluate(&mut self, now: Timestamp) -> usize {
        let started = std::time::Instant::now();
        let evaluated = self.measure_and_judge(now).await;
        if evaluated > 0 {
            self.metrics.analysis_seconds.observe(started.elapsed().as_secs_f64());
        }
        evaluated
    }

    async fn measure_and_judge(&mut self, now: Timestamp) -> usize {
        // Due rollouts, grouped by the time since their last evaluation: each group's
        // counts are the exact increments over its own window.
        let mut groups: BTreeMap<Duration, Vec<RolloutId>> = BTreeMap::new();
        for (id, run) in &self.runs {
            let r = &run.state.rollout;
            // A step is judged on the traffic it was given: not before its weight landed.
            let landed = r.phase != Phase::Progressing || run.state.applied.weight == Some(r.weight);
            if landed && r.next_evaluation().is_some_and(|at| at <= now) {
                let since = r.last_evaluation.map_or(r.plan.interval, |last| {
                    Duration::from_secs(now.duration_since(last).as_secs().max(1) as u64)
                });
                groups.entry(since).or_default().push(id.clone());
            }
        }
        if groups.is_empty() {
            return 0;
        }
        let runs = &self.runs;
        let source = &self.source;
        let measured = futures::future::join_all(groups.iter().map(|(window, ids)| async move {
            let targets: Vec<Target<'_>> = ids
                .iter()
                .filter_map(|id| runs.get(id).map(|run| (id, run)))
                .flat_map(|(id, run)| Target::for_plan(&run.state.rollout.plan, id, &run.state.arms))
                .collect();
            (*window, source.observe(&targets, now, *window).await)
        }));
        let probes: Vec<health::Probe> = groups
            .values()
            .flatten()
            .filter_map(|id| runs.get(id).map(|run| (id, run)))
            .flat_map(|(id, run)| health::probes(id, &run.state.rollout.plan, &run.state.arms))
            .collect();
        let (measured, mut health) = futures::join!(measured, health::run(&self.probe_client, probes));
        let mut evaluated = 0;
        for (window, mut observed) in measured {
            for id in &groups[&window] {
                let Some(run) = self.runs.get(id) else { continue };
                let r = &run.state.rollout;
                let span = tracing::info_span!("rollout", rollout = %id, revision = %r.revision);
                let _entered = span.enter();
                let mut obs = IntervalObservations::default();
                for m in &r.plan.metrics {
                    if let Some(o) = observed.remove(&(id.clone(), m.name.clone())) {
                        obs.metrics.insert(m.name.clone(), o);
                    }
                }
                obs.health = health.remove(id).unwrap_or_default();
                match step(r, &Input::Interval(obs), now) {
                    Ok(t) => {
                        evaluated += 1;
                        self.apply(id, t, Some(window));
                    }
                    Err(e) => tracing::error!(error = %e, "interval refused"),
                }
            }
        }
        evaluated
    }

    // ---- 4. save ----------------------------------------------------------------------

    /// Saves every changed state in one call to the store.
    async fn save(&mut self) -> usize {
        let changed: Vec<&RunState> = self.runs.values().filter(|r| r.dirty).map(|r| &r.state).collect();
        if changed.is_empty() {
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
        saved
    }

    // ---- 5. reconcile -----------------------------------------------------------------

    fn reconcile(&mut self, now: Timestamp) -> usize {
        let mut started = 0;
        let mut finished = Vec::new();
        for (id, run) in self.runs.iter_mut() {
            // Act only on what is saved: an unsaved state could be lost to a crash.
            if run.busy || run.dirty {
                continue;
            }
            let r = &run.state.rollout;
            let calls = work(r, &run.state.applied);
            if calls.is_empty() {
                if r.phase.is_terminal() && run.state.notified >= r.decisions_made && !run.state.recorded {
                    finished.push(id.clone());
                }
                continue;
            }
            run.busy = true;
            started += 1;
            let (platform, inbox, timeout) =
                (self.platform.clone(), self.inbox_tx.clone(), self.options.platform_timeout);
            let id = id.clone();
            let span = tracing::info_span!("executor", rollout = %id, revision = %r.revision);
            self.executors.spawn(
                async move {
                    for call in calls {
                        let result = tokio::time::timeout(timeout, call.run(&*platform, &id)).await;
                        let report = match result {
                            Ok(Ok(())) => call.confirmed(),
                            Ok(Err(PlatformError(error))) => Report::Failed { call: call.describe(), error },
                            Err(_) => Report::Failed {
                                call: call.describe(),
                                error: format!("no answer within {}", humantime::format_duration(timeout)),
                            },
                        };
                        let failed = matches!(report, Report::Failed { .. });
                        let _ = inbox.send(Inbox::Report { id: id.clone(), report });
                        if failed {
                            break;
                        }
                    }
                    let _ = inbox.send(Inbox::Report { id, report: Report::Finished });
                }
                .instrument(span),
            );
        }
        for id in finished {
            self.record(&id, now);
        }
        started
    }

    /// Writes the deployment record of a finished rollout (once).
    fn record(&mut self, id: &RolloutId, now: Timestamp) {
        let Some(run) = self.runs.get_mut(id) else { return };
        if let Some(records) = &self.records {
            let mut record = DeploymentRecord::of(&run.state.rollout, self.store.timeline(id));
            let plan = &run.state.rollout.plan;
            for d in &mut record.decisions {
                let window = d.window_seconds.map_or(plan.interval, Duration::from_secs);
                name_queries(&mut d.evidence, plan, &run.state.arms, window, &self.options.batching);
            }
            match records.write(&record, now) {
                Ok(path) => {
                    tracing::info!(rollout = %id, path = %path.display(), outcome = record.outcome.name(), "deployment record written")
                }
                Err(e) => {
                    tracing::error!(rollout = %id, error = %e, "cannot write the deployment record; retried next tick");
                    return;
                }
            }
        }
        run.state.recorded = true;
        run.dirty = true;
        // The rollout's own series go with it.
        let rollout = id.to_string();
        self.metrics.canary_weight.remove(&RolloutLabels { rollout: rollout.clone() });
        for m in &run.state.rollout.plan.metrics {
            for arm in ["canary", "baseline"] {
                let labels = ValueLabels { rollout: rollout.clone(), metric: m.name.clone(), arm };
                self.metrics.metric_value.remove(&labels);
            }
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

    fn export_metrics(&self) {
        let mut by_phase: HashMap<&'static str, i64> = Phase::ALL.iter().map(|p| (p.name(), 0)).collect();
        for run in self.runs.values() {
            *by_phase.entry(run.state.rollout.phase.name()).or_default() += 1;
        }
        for (phase, n) in by_phase {
            self.metrics.rollouts.get_or_create(&PhaseLabels { phase }).set(n);
        }
        let depth = self.outbox.stats.depth.load(std::sync::atomic::Ordering::Relaxed);
        self.metrics.outbox_depth.set(i64::try_from(depth).unwrap_or(i64::MAX));
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

/// One platform call an executor makes.
#[derive(Clone, Debug, PartialEq)]
enum Call {
    Weight(u8),
    Scale(Scale, String),
    Promote(String),
}

impl Call {
    async fn run<P: Platform>(&self, platform: &P, id: &RolloutId) -> Result<(), PlatformError> {
        match self {
            Call::Weight(w) => platform.set_weight(id, *w).await,
            Call::Scale(s, revision) => platform.scale(id, revision, *s).await,
            Call::Promote(revision) => platform.promote(id, revision).await,
        }
    }

    fn confirmed(&self) -> Report {
        match self {
            Call::Weight(w) => Report::Weight(*w),
            Call::Scale(s, _) => Report::Scale(*s),
            Call::Promote(revision) => Report::Promoted(revision.clone()),
        }
    }

    fn describe(&self) -> String {
        match self {
            Call::Weight(w) => format!("set weight {w}%"),
            Call::Scale(Scale::Up, _) => "scale the canary up".into(),
            Call::Scale(Scale::Down, _) => "scale the canary down".into(),
            Call::Promote(revision) => format!("promote {revision}"),
        }
    }
}

/// The calls that bring the platform from `applied` to the desired world of `r`, in
/// order: a canary coming back is scaled up before it takes traffic, and taken out of
/// traffic before it is scaled down.
fn work(r: &Rollout, applied: &Applied) -> Vec<Call> {
    let desired = r.desired();
    let mut calls = Vec::new();
    // A canary is up as the platform created it; only one scaled down must come back.
    if desired.canary == Scale::Up && applied.canary == Some(Scale::Down) {
        calls.push(Call::Scale(Scale::Up, r.revision.clone()));
    }
    if applied.weight != Some(desired.weight) {
        calls.push(Call::Weight(desired.weight));
    }
    if desired.promote && applied.promoted.as_ref() != Some(&r.revision) {
        calls.push(Call::Promote(r.revision.clone()));
    }
    if desired.canary == Scale::Down && applied.canary != Some(Scale::Down) {
        calls.push(Call::Scale(Scale::Down, r.revision.clone()));
    }
    calls
}
