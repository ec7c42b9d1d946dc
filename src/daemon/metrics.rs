//! The loop's own metrics: ticks, phases, decisions, verdicts, weights and values per
//! rollout, rollbacks, promotions, the outbox, platform calls and alerts.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

use crate::engine::Phase;
use crate::telemetry::FloatGauge;

/// Labels of the rollouts gauge.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct PhaseLabels {
    /// The phase, as `Phase::name` spells it.
    pub phase: &'static str,
}

/// Labels of the decisions counter.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct DecisionLabels {
    /// The decision's action: started, advanced, promoting, rolled-back, …
    pub kind: String,
}

/// Labels of a per-rollout series (removed once the rollout's record is written).
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RolloutLabels {
    /// `namespace/name`.
    pub rollout: String,
}

/// Labels of the last measured value of a metric.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ValueLabels {
    /// `namespace/name`.
    pub rollout: String,
    /// The metric's name in the policy.
    pub metric: String,
    /// `canary` or `baseline`.
    pub arm: &'static str,
}

/// Labels of the verdicts counter.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct VerdictLabels {
    /// The metric's name in the policy.
    pub metric: String,
    /// `pass`, `fail`, `inconclusive` or `waiting`.
    pub outcome: &'static str,
}

/// Labels of the rollbacks counter.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ReasonLabels {
    /// `trigger`, `regression`, `failure-limit`, `inconclusive-limit`,
    /// `not-enough-traffic`, `aborted` or `platform-failed`.
    pub reason: &'static str,
}

/// Labels of the alerts counter.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct AlertLabels {
    /// `rolled-back` (a trigger named it), `no-trigger` (no policy of a matching rollout
    /// names it), `no-rollout` (no rollout of that workload), `resolved`, or `malformed`.
    pub result: &'static str,
}

/// The loop's metrics, registered by [`LoopMetrics::register`].
#[derive(Clone)]
pub struct LoopMetrics {
    /// `canaryd_tick_duration_seconds`: wall time of a tick, from inputs to hand-off.
    pub tick_seconds: Histogram,
    /// `canaryd_rollouts{phase}`: rollouts held, by phase.
    pub rollouts: Family<PhaseLabels, Gauge>,
    /// `canaryd_decisions_total{kind}`: decisions made, by kind.
    pub decisions: Family<DecisionLabels, Counter>,
    /// `canaryd_outbox_depth`: notifications waiting for delivery.
    pub outbox_depth: Gauge,
    /// `canaryd_outbox_dropped_total`: notifications refused by a full outbox (offered
    /// again later).
    pub outbox_dropped: Counter,
    /// `canaryd_platform_call_failures_total`: platform calls that failed or timed out.
    pub platform_failures: Counter,
    /// `canaryd_canary_weight{rollout}`: the canary weight the platform last confirmed.
    pub canary_weight: Family<RolloutLabels, Gauge>,
    /// `canaryd_metric_value{rollout, metric, arm}`: each metric's last measured value,
    /// canary and baseline.
    pub metric_value: Family<ValueLabels, FloatGauge>,
    /// `canaryd_verdicts_total{metric, outcome}`: verdicts by metric and outcome.
    pub verdicts: Family<VerdictLabels, Counter>,
    /// `canaryd_rollbacks_total{reason}`: rollbacks (aborts included) by reason.
    pub rollbacks: Family<ReasonLabels, Counter>,
    /// `canaryd_promotions_total`: promotions finished.
    pub promotions: Counter,
    /// `canaryd_analysis_duration_seconds`: time to measure and judge the due rollouts of a tick.
    pub analysis_seconds: Histogram,
    /// `canaryd_alerts_total{result}`: Alertmanager alerts received, by what they did.
    pub alerts: Family<AlertLabels, Counter>,
}

impl LoopMetrics {
    /// The loop's metrics, registered in `registry`.
    pub fn register(registry: &mut Registry) -> LoopMetrics {
        let m = LoopMetrics {
            tick_seconds: Histogram::new(exponential_buckets(0.001, 2.0, 16)),
            rollouts: Family::default(),
            decisions: Family::default(),
            outbox_depth: Gauge::default(),
            outbox_dropped: Counter::default(),
            platform_failures: Counter::default(),
            canary_weight: Family::default(),
            metric_value: Family::default(),
            verdicts: Family::default(),
            rollbacks: Family::default(),
            promotions: Counter::default(),
            analysis_seconds: Histogram::new(exponential_buckets(0.001, 2.0, 16)),
            alerts: Family::default(),
        };
        registry.register("tick_duration_seconds", "Wall time of a daemon tick", m.tick_seconds.clone());
        registry.register("rollouts", "Rollouts held, by phase", m.rollouts.clone());
        registry.register("decisions", "Decisions made, by kind", m.decisions.clone());
        registry.register("outbox_depth", "Notifications waiting for delivery", m.outbox_depth.clone());
        registry.register(
            "outbox_dropped",
            "Notifications refused by a full outbox (offered again later)",
            m.outbox_dropped.clone(),
        );
        registry.register(
            "platform_call_failures",
            "Platform calls that failed or timed out (retried next tick)",
            m.platform_failures.clone(),
        );
        registry.register(
            "canary_weight",
            "Canary weight (percent) the platform last confirmed, per rollout",
            m.canary_weight.clone(),
        );
        registry.register(
            "metric_value",
            "Each judged metric's last measured value, per rollout and arm (canary, baseline)",
            m.metric_value.clone(),
        );
        registry.register("verdicts", "Verdicts by metric and outcome", m.verdicts.clone());
        registry.register("rollbacks", "Rollbacks (aborts included) by reason", m.rollbacks.clone());
        registry.register("promotions", "Promotions finished", m.promotions.clone());
        registry.register(
            "analysis_duration_seconds",
            "Time to measure and judge a tick's due rollouts",
            m.analysis_seconds.clone(),
        );
        registry.register("alerts", "Alertmanager alerts received, by what they did", m.alerts.clone());
        m
    }
}

impl LoopMetrics {
    /// Sets the gauges of the whole loop, after each tick: rollouts by phase (every
    /// phase, none as 0) and the outbox's depth.
    pub fn export(&self, phases: impl Iterator<Item = Phase>, outbox_depth: u64) {
        let mut by_phase: std::collections::HashMap<&'static str, i64> =
            Phase::ALL.iter().map(|p| (p.name(), 0)).collect();
        for phase in phases {
            *by_phase.entry(phase.name()).or_default() += 1;
        }
        for (phase, n) in by_phase {
            self.rollouts.get_or_create(&PhaseLabels { phase }).set(n);
        }
        self.outbox_depth.set(i64::try_from(outbox_depth).unwrap_or(i64::MAX));
    }
}

impl Default for LoopMetrics {
    /// Metrics registered nowhere: for tests and benchmarks that do not read them.
    fn default() -> Self {
        LoopMetrics::register(&mut Registry::default())
    }
}
