//! The loop's own metrics: ticks, phases, decisions, verdicts, weights and values per
//! rollout, rollbacks, promotions, the outbox, platform calls and alerts.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

use std::collections::HashSet;
use std::sync::{Arc, Mutex};

use crate::engine::{Phase, Rollout};
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
    /// The decision, as `DecisionKind::name` spells it.
    pub kind: &'static str,
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
    /// The verdict, as `Outcome::name` spells it.
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

/// Labels of `canaryd_rollouts_at_gate`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct GateLabels {
    /// The gate's kind, as `Gate::kind` spells it.
    pub gate: &'static str,
}

/// The loop's metrics, registered by [`LoopMetrics::register`].
#[derive(Clone)]
pub struct LoopMetrics {
    /// `canaryd_tick_duration_seconds`: wall time of a tick, from inputs to hand-off.
    pub tick_seconds: Histogram,
    /// `canaryd_rollouts{phase}`: rollouts held, by phase.
    pub rollouts: Family<PhaseLabels, Gauge>,
    /// `canaryd_rollouts_at_gate{gate}`: rollouts waiting at a gate, by its kind.
    pub at_gate: Family<GateLabels, Gauge>,
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
    /// canary and baseline, for the rollouts [`ValueSeries`] admits.
    pub metric_value: MetricValues,
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
            at_gate: Family::default(),
            decisions: Family::default(),
            outbox_depth: Gauge::default(),
            outbox_dropped: Counter::default(),
            platform_failures: Counter::default(),
            canary_weight: Family::default(),
            metric_value: MetricValues::default(),
            verdicts: Family::default(),
            rollbacks: Family::default(),
            promotions: Counter::default(),
            analysis_seconds: Histogram::new(exponential_buckets(0.001, 2.0, 16)),
            alerts: Family::default(),
        };
        registry.register("tick_duration_seconds", "Wall time of a daemon tick", m.tick_seconds.clone());
        registry.register("rollouts", "Rollouts held, by phase", m.rollouts.clone());
        registry.register(
            "rollouts_at_gate",
            "Rollouts waiting at a gate (for approval, or for its webhook), by the gate's kind",
            m.at_gate.clone(),
        );
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
            m.metric_value.family.clone(),
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

/// Which rollouts get `canaryd_metric_value` series (one per rollout, metric and arm:
/// 140,000 at 10,000 rollouts of 7 metrics, were every rollout to have them).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ValueSeries {
    /// At most this many rollouts at once, first measured first: a rollout keeps its
    /// series until its record is written, and the next one measured takes the place.
    /// 0: none.
    pub max_rollouts: usize,
    /// Only rollouts in these namespaces (empty: every namespace).
    pub namespaces: Vec<String>,
}

/// Rollouts with value series by default: 14,000 series at 7 metrics.
pub const DEFAULT_VALUE_ROLLOUTS: usize = 1000;

impl Default for ValueSeries {
    fn default() -> Self {
        ValueSeries { max_rollouts: DEFAULT_VALUE_ROLLOUTS, namespaces: Vec::new() }
    }
}

impl ValueSeries {
    fn takes(&self, rollout: &str) -> bool {
        self.namespaces.is_empty()
            || rollout
                .split_once('/')
                .is_some_and(|(namespace, _)| self.namespaces.iter().any(|n| n == namespace))
    }
}

/// The `canaryd_metric_value` family, bounded by a [`ValueSeries`]: a rollout not
/// admitted gets no series.
#[derive(Clone, Debug, Default)]
pub struct MetricValues {
    family: Family<ValueLabels, FloatGauge>,
    admitted: Arc<Mutex<Admitted>>,
}

#[derive(Debug, Default)]
struct Admitted {
    bound: ValueSeries,
    rollouts: HashSet<String>,
}

/// A value's gauge, or nowhere for a rollout without series.
pub struct ValueGauge(Option<FloatGauge>);

impl ValueGauge {
    /// Sets the value (if the rollout has series).
    pub fn set(&self, value: f64) {
        if let Some(gauge) = &self.0 {
            gauge.set(value);
        }
    }
}

impl MetricValues {
    fn lock(&self) -> std::sync::MutexGuard<'_, Admitted> {
        self.admitted.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Bounds the series from now on (rollouts already admitted keep theirs).
    pub fn bound(&self, bound: ValueSeries) {
        self.lock().bound = bound;
    }

    /// The gauge of `labels`, admitting its rollout if the bound has room.
    pub fn get_or_create(&self, labels: &ValueLabels) -> ValueGauge {
        let mut admitted = self.lock();
        if !admitted.rollouts.contains(&labels.rollout) {
            let room = admitted.rollouts.len() < admitted.bound.max_rollouts;
            if !room || !admitted.bound.takes(&labels.rollout) {
                return ValueGauge(None);
            }
            admitted.rollouts.insert(labels.rollout.clone());
        }
        ValueGauge(Some(self.family.get_or_create(labels).clone()))
    }

    /// Removes one series (no data is not zero); the rollout keeps its place.
    pub fn remove(&self, labels: &ValueLabels) -> bool {
        self.family.remove(labels)
    }

    /// Gives up a finished rollout's place, once its series are removed.
    pub fn release(&self, rollout: &str) {
        self.lock().rollouts.remove(rollout);
    }
}

impl LoopMetrics {
    /// Sets the gauges of the whole loop, after each tick: rollouts by phase (every
    /// phase, none as 0), rollouts by the kind of gate they wait at, and the outbox's
    /// depth.
    pub fn export<'a>(&self, rollouts: impl Iterator<Item = &'a Rollout>, outbox_depth: u64) {
        let mut by_phase: std::collections::HashMap<&'static str, i64> =
            Phase::ALL.iter().map(|p| (p.name(), 0)).collect();
        let mut by_gate: std::collections::HashMap<&'static str, i64> =
            crate::engine::plan::Gate::KINDS.iter().map(|g| (*g, 0)).collect();
        for r in rollouts {
            *by_phase.entry(r.phase.name()).or_default() += 1;
            if let Some(gate) = r.gate() {
                *by_gate.entry(gate.kind()).or_default() += 1;
            }
        }
        for (gate, n) in by_gate {
            self.at_gate.get_or_create(&GateLabels { gate }).set(n);
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

#[cfg(test)]
mod tests {
    use super::*;

    /// The `canaryd_metric_value` series exported, by rollout.
    fn exported(registry: &Registry) -> std::collections::BTreeMap<String, usize> {
        let mut by_rollout = std::collections::BTreeMap::new();
        for line in crate::telemetry::encode(registry).lines() {
            if let Some(labels) = line.strip_prefix("canaryd_metric_value{") {
                let rollout = labels.split("rollout=\"").nth(1).and_then(|r| r.split('"').next());
                *by_rollout.entry(rollout.unwrap_or_default().to_string()).or_default() += 1;
            }
        }
        by_rollout
    }

    /// Sets every arm of `metrics` metrics of `rollout`.
    fn measure(m: &LoopMetrics, rollout: &str, metrics: usize) {
        for i in 0..metrics {
            for arm in ["canary", "baseline"] {
                let labels = ValueLabels { rollout: rollout.into(), metric: format!("m{i}"), arm };
                m.metric_value.get_or_create(&labels).set(0.5);
            }
        }
    }

    #[test]
    fn by_default_ten_thousand_rollouts_of_seven_metrics_export_under_twenty_thousand_value_series() {
        let mut registry = crate::telemetry::registry();
        let m = LoopMetrics::register(&mut registry);
        for i in 0..10_000 {
            measure(&m, &format!("shop/web-{i}"), 7);
        }
        let series: usize = exported(&registry).values().sum();
        // 1,000 rollouts × 7 metrics × 2 arms.
        assert_eq!(series, 14_000);
        assert!(exported(&registry).contains_key("shop/web-0"), "first come");
        assert!(!exported(&registry).contains_key("shop/web-1000"));
    }

    #[test]
    fn a_released_place_goes_to_the_next_rollout_measured_and_namespaces_filter() {
        let mut registry = crate::telemetry::registry();
        let m = LoopMetrics::register(&mut registry);
        m.metric_value.bound(ValueSeries { max_rollouts: 2, namespaces: vec!["shop".into(), "pay".into()] });
        for rollout in ["shop/a", "ops/x", "pay/b", "shop/c"] {
            measure(&m, rollout, 3);
        }
        let want = |pairs: &[(&str, usize)]| pairs.iter().map(|(r, n)| (r.to_string(), *n)).collect();
        assert_eq!(exported(&registry), want(&[("pay/b", 6), ("shop/a", 6)]));
        // A series without data goes; its rollout keeps the place.
        m.metric_value.remove(&ValueLabels { rollout: "shop/a".into(), metric: "m0".into(), arm: "canary" });
        measure(&m, "shop/c", 3);
        assert_eq!(exported(&registry), want(&[("pay/b", 6), ("shop/a", 5)]));
        // shop/a finishes: its series are removed and its place is given up.
        for i in 0..3 {
            for arm in ["canary", "baseline"] {
                m.metric_value.remove(&ValueLabels {
                    rollout: "shop/a".into(),
                    metric: format!("m{i}"),
                    arm,
                });
            }
        }
        m.metric_value.release("shop/a");
        measure(&m, "ops/x", 3);
        measure(&m, "shop/c", 3);
        assert_eq!(exported(&registry), want(&[("pay/b", 6), ("shop/c", 6)]));
        // None at all.
        let mut registry = crate::telemetry::registry();
        let none = LoopMetrics::register(&mut registry);
        none.metric_value.bound(ValueSeries { max_rollouts: 0, namespaces: vec![] });
        measure(&none, "shop/a", 3);
        assert!(exported(&registry).is_empty());
    }
}
