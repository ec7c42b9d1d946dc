//! Reads of the alerts already firing, for rollouts that start or resume: at most one
//! read under way, for every rollout that has asked since the last one (a batch, however
//! many started). It runs in the background; what it finds comes back to the loop as a
//! webhook's alerts do.

use std::future::Future;
use std::sync::Arc;

use super::{Daemon, FiringAlert};
use crate::engine::{Arms, RolloutId};
use crate::platform::Platform;
use crate::source::MetricSource;
use crate::source::alertmanager::AlertmanagerSource;
use crate::store::{RunStore, TimelineStore};

/// Rollouts waiting for a read, and the read under way.
#[derive(Default)]
pub struct AlertReads {
    source: Option<Arc<AlertmanagerSource>>,
    waiting: Vec<(RolloutId, Arms)>,
    running: Option<tokio::task::JoinHandle<()>>,
}

impl AlertReads {
    /// Reads from `source` from now on.
    pub fn read_from(&mut self, source: Arc<AlertmanagerSource>) {
        self.source = Some(source);
    }

    /// `id` (with `arms`) wants the alerts firing now (nothing without a source).
    pub fn want(&mut self, id: &RolloutId, arms: &Arms) {
        if self.source.is_some() {
            self.waiting.push((id.clone(), arms.clone()));
        }
    }

    /// Starts `read` for every rollout waiting, unless none is or a read is under way.
    pub fn start<F, Fut>(&mut self, read: F)
    where
        F: FnOnce(Arc<AlertmanagerSource>, Vec<(RolloutId, Arms)>) -> Fut,
        Fut: Future<Output = ()> + Send + 'static,
    {
        let busy = self.running.as_ref().is_some_and(|r| !r.is_finished());
        let Some(source) = self.source.as_ref().filter(|_| !busy && !self.waiting.is_empty()) else {
            return;
        };
        let batch = std::mem::take(&mut self.waiting);
        self.running = Some(tokio::spawn(read(source.clone(), batch)));
    }
}

impl Drop for AlertReads {
    fn drop(&mut self) {
        // Like a killed process: a read under way is not finished.
        if let Some(running) = &self.running {
            running.abort();
        }
    }
}

impl<S: MetricSource + Send + Sync + 'static, P: Platform, St: RunStore + TimelineStore> Daemon<S, P, St> {
    /// Reads the alerts already firing from `alertmanager` when a rollout starts, and
    /// now for every rollout resumed, at the next tick: an alert Alertmanager will not
    /// post again for hours still counts from the first interval.
    pub fn read_alerts_from(&mut self, alertmanager: Arc<AlertmanagerSource>) {
        self.alert_reads.read_from(alertmanager);
        for (id, run) in self.runs.iter().filter(|(_, r)| !r.state.rollout.phase.is_terminal()) {
            self.alert_reads.want(id, &run.state.arms);
        }
    }

    /// Starts a read of the alerts firing now for the rollouts started or resumed since
    /// the last one; those that name one of them come back through the inbox and wake
    /// the loop. A failed read is logged (and counted by the source).
    pub(super) fn read_firing_alerts(&mut self) {
        let (alerts, wake) = (self.alerts(), self.wake.clone());
        self.alert_reads.start(|source, batch| async move {
            let firing = match source.firing().await {
                Ok(firing) => firing,
                Err(e) => {
                    let rollouts = batch.len();
                    tracing::warn!(error = %e, rollouts, "cannot read the firing alerts from Alertmanager; its webhook still brings new ones");
                    return;
                }
            };
            let mut handed = 0;
            for a in &firing {
                let Some(name) = a.name() else { continue };
                let alert = FiringAlert {
                    alert: name.to_string(),
                    namespace: a.namespace().map(String::from),
                    workloads: a.workloads(),
                    detail: a.detail(),
                };
                if batch.iter().any(|(id, arms)| alert.names(id, arms)) && alerts.send(alert).is_ok() {
                    handed += 1;
                }
            }
            tracing::debug!(firing = firing.len(), handed, rollouts = batch.len(), "firing alerts read from Alertmanager");
            if handed > 0 {
                wake.notify_one();
            }
        });
    }
}
