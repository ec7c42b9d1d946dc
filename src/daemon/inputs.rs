//! Step 1 of a tick, inputs: executors' reports and the outbox's outcomes, policy
//! reloads, platform failures, new rollouts and revisions, firing alerts, operator
//! commands, and the confirmations the persisted state implies; and `apply`, which
//! takes every transition (these and the measured intervals) into a rollout's state.

use std::time::Duration;

use jiff::Timestamp;

use super::inbox::{CommandOutcome, Drained, FiringAlert, OperatorCommand, Report};
use super::metrics::{AlertLabels, DecisionLabels, ReasonLabels, RolloutLabels, ValueLabels, VerdictLabels};
use super::{Daemon, Run};
use crate::engine::{
    DecisionKind, EngineError, Input, Phase, RollbackReason, Rollout, RolloutId, Scale, Transition, step,
};
use crate::platform::{NewRevision, Platform, RolloutEvent};
use crate::policy::selector;
use crate::record::TimelinePoint;
use crate::source::MetricSource;
use crate::store::{Applied, RunState, RunStore, TimelineStore, Version};

impl<S: MetricSource + Send + Sync + 'static, P: Platform, St: RunStore + TimelineStore> Daemon<S, P, St> {
    /// Takes in the executors' reports and the outbox's outcomes; returns the platform
    /// failures to tell the engine.
    pub(super) fn take_reports(&mut self, reports: Vec<(RolloutId, Report)>) -> Vec<(RolloutId, Input)> {
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
                Report::NotYet { call, awaiting } => {
                    tracing::info!(rollout = %id, %call, %awaiting, "platform call under way; asked again next tick");
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

    pub(super) async fn take_inputs(&mut self, now: Timestamp) {
        let drained = Drained::take(&mut self.inbox);
        let failed = self.take_reports(drained.reports);
        if let Some(policies) = drained.policies {
            self.set_policies(policies);
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
        for OperatorCommand { id, command, by, done } in drained.commands {
            let input = Input::Command { command, by: by.clone() };
            // The seq its first decision will take; the caller is told it once saved.
            let taken = self
                .runs
                .get(&id)
                .map(|r| (r.state.rollout.decisions_made, step(&r.state.rollout, &input, now)));
            let outcome = match taken {
                Some((decision, Ok(t))) => {
                    self.apply(&id, t, None);
                    if let Some(done) = done {
                        self.unconfirmed.push((id, decision, done));
                    }
                    continue;
                }
                Some((_, Err(e))) => {
                    tracing::warn!(rollout = %id, by, error = %e, "command refused");
                    CommandOutcome::Refused(match e {
                        EngineError::Refused { why, .. } => why,
                        other => other.to_string(),
                    })
                }
                None => {
                    tracing::warn!(rollout = %id, by, "command for an unknown rollout");
                    CommandOutcome::Unknown
                }
            };
            if let Some(done) = done {
                let _ = done.send(outcome);
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
        self.read_firing_alerts();
    }

    /// A firing alert, given to every rollout of the workload it names: a rollout whose
    /// plan has a trigger on it rolls back; the others do not change.
    pub(super) fn take_alert(&mut self, alert: &FiringAlert, now: Timestamp) {
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

    pub(super) async fn take_event(&mut self, event: RolloutEvent, now: Timestamp) {
        match event {
            RolloutEvent::Revision(revision) => self.take_revision(revision, now).await,
            RolloutEvent::Gone { id, detail } => self.take_gone(&id, detail, now),
            RolloutEvent::CanaryFailed { id, revision, detail } => {
                self.take_canary_failed(&id, &revision, detail, now)
            }
        }
    }

    /// The canary of `revision` cannot run: its rollout, if that revision's and still
    /// running, rolls back.
    fn take_canary_failed(&mut self, id: &RolloutId, revision: &str, detail: String, now: Timestamp) {
        let Some(run) = self.runs.get(id).filter(|r| r.state.rollout.revision == revision) else {
            tracing::debug!(rollout = %id, %revision, %detail, "canary failed; no rollout of that revision");
            return;
        };
        let before = run.state.rollout.decisions_made;
        match step(&run.state.rollout, &Input::CanaryFailed { detail: detail.clone() }, now) {
            Ok(t) if t.rollout.decisions_made > before => {
                tracing::warn!(rollout = %id, %revision, %detail, "canary never became ready: rolling back");
                self.apply(id, t, None);
            }
            Ok(_) => tracing::info!(rollout = %id, %detail, "canary failed; its rollout had already ended"),
            Err(e) => tracing::warn!(rollout = %id, error = %e, "canary failed; not taken"),
        }
    }

    /// The workload went away: its running rollout rolls back (its record is written
    /// once it has); nothing happens for a workload without one.
    fn take_gone(&mut self, id: &RolloutId, detail: String, now: Timestamp) {
        let Some(run) = self.runs.get(id) else {
            tracing::debug!(rollout = %id, %detail, "workload gone; no rollout of it");
            return;
        };
        let before = run.state.rollout.decisions_made;
        match step(&run.state.rollout, &Input::WorkloadGone { detail: detail.clone() }, now) {
            Ok(t) if t.rollout.decisions_made > before => {
                tracing::warn!(rollout = %id, %detail, "workload gone mid-rollout: rolling back");
                self.apply(id, t, None);
            }
            Ok(_) => tracing::info!(rollout = %id, %detail, "workload gone; its rollout had already ended"),
            Err(e) => tracing::warn!(rollout = %id, error = %e, "workload gone; not taken"),
        }
    }

    async fn take_revision(&mut self, event: NewRevision, now: Timestamp) {
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
            tracing::warn!(rollout = %id, revision = %event.revision, why = %selector::unselected(&self.policies, &id, &event.labels), "no policy selects this workload: no rollout");
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
        self.alert_reads.want(&id, &event.arms);
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
    pub(super) fn apply(&mut self, id: &RolloutId, t: Transition, window: Option<Duration>) {
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
}
