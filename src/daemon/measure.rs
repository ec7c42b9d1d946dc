//! Steps 2 and 3 of a tick, measure and decide: the due rollouts grouped by their
//! window, one batched observation per window, the health probes and the gate webhooks,
//! all at once; then `engine::step` for each.

use std::collections::BTreeMap;
use std::time::Duration;

use jiff::Timestamp;

use super::{Daemon, gates, health};
use crate::engine::{Input, IntervalObservations, Phase, RolloutId, step};
use crate::platform::Platform;
use crate::source::MetricSource;
use crate::source::batch::Target;
use crate::store::{RunStore, TimelineStore};

impl<S: MetricSource + Send + Sync + 'static, P: Platform, St: RunStore + TimelineStore> Daemon<S, P, St> {
    pub(super) async fn evaluate(&mut self, now: Timestamp) -> usize {
        let started = std::time::Instant::now();
        let evaluated = self.measure_and_judge(now).await;
        if evaluated > 0 {
            self.metrics.analysis_seconds.observe(started.elapsed().as_secs_f64());
        }
        evaluated
    }

    pub(super) async fn measure_and_judge(&mut self, now: Timestamp) -> usize {
        // Due rollouts, grouped by the time since their last evaluation: each group's
        // counts are the exact increments over its own window.
        let mut groups: BTreeMap<Duration, Vec<RolloutId>> = BTreeMap::new();
        for (id, run) in &self.runs {
            let r = &run.state.rollout;
            // A step is judged on the traffic it was given: not before its weight landed.
            let moved = matches!(r.phase, Phase::Progressing | Phase::Baking);
            let landed = !moved || run.state.applied.weight == Some(r.weight);
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
        let asks: Vec<gates::Ask> = groups
            .values()
            .flatten()
            .filter_map(|id| runs.get(id).and_then(|run| gates::ask(id, &run.state.rollout)))
            .collect();
        let (measured, mut health, mut gate_answers) = futures::join!(
            measured,
            health::run(&self.probe_client, probes),
            gates::run(&self.probe_client, asks)
        );
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
                obs.gate = gate_answers.remove(id);
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
}
