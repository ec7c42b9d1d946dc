//! Step 5 of a tick, reconcile: the platform calls that bring a rollout from what is
//! applied to its desired world, run by one background executor per rollout, each call
//! bounded by a timeout and reported back through the inbox; and the deployment record
//! of a rollout with nothing left to do.

use std::time::Duration;

use jiff::Timestamp;
use tracing::Instrument as _;

use super::inbox::{Inbox, Report};
use super::metrics::{RolloutLabels, ValueLabels};
use super::{Daemon, name_queries};
use crate::engine::plan::RouterKind;
use crate::engine::{Rollout, RolloutId, Scale};
use crate::platform::{Platform, PlatformError};
use crate::record::DeploymentRecord;
use crate::source::MetricSource;
use crate::store::{Applied, RunStore, TimelineStore};

impl<S: MetricSource + Send + Sync + 'static, P: Platform, St: RunStore + TimelineStore> Daemon<S, P, St> {
    pub(super) fn reconcile(&mut self, now: Timestamp) -> usize {
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
                            Ok(Err(PlatformError { message, not_yet: true })) => {
                                Report::NotYet { call: call.describe(), awaiting: message }
                            }
                            Ok(Err(PlatformError { message, not_yet: false })) => {
                                Report::Failed { call: call.describe(), error: message }
                            }
                            Err(_) => Report::Failed {
                                call: call.describe(),
                                error: format!("no answer within {}", humantime::format_duration(timeout)),
                            },
                        };
                        let failed = matches!(report, Report::Failed { .. } | Report::NotYet { .. });
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
    pub(super) fn record(&mut self, id: &RolloutId, now: Timestamp) {
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
        self.metrics.metric_value.release(&rollout);
    }
}

/// One platform call an executor makes.
#[derive(Clone, Debug, PartialEq)]
enum Call {
    Weight(RouterKind, u8),
    Scale(Scale, String),
    Promote(String),
}

impl Call {
    async fn run<P: Platform>(&self, platform: &P, id: &RolloutId) -> Result<(), PlatformError> {
        match self {
            Call::Weight(router, w) => platform.set_weight(id, *router, *w).await,
            Call::Scale(s, revision) => platform.scale(id, revision, *s).await,
            Call::Promote(revision) => platform.promote(id, revision).await,
        }
    }

    fn confirmed(&self) -> Report {
        match self {
            Call::Weight(_, w) => Report::Weight(*w),
            Call::Scale(s, _) => Report::Scale(*s),
            Call::Promote(revision) => Report::Promoted(revision.clone()),
        }
    }

    fn describe(&self) -> String {
        match self {
            Call::Weight(_, w) => format!("set weight {w}%"),
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
        calls.push(Call::Weight(r.plan.router, desired.weight));
    }
    if desired.promote && applied.promoted.as_ref() != Some(&r.revision) {
        calls.push(Call::Promote(r.revision.clone()));
    }
    if desired.canary == Scale::Down && applied.canary != Some(Scale::Down) {
        calls.push(Call::Scale(Scale::Down, r.revision.clone()));
    }
    calls
}
