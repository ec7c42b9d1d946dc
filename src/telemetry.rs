//! Logging setup and the daemon's own metrics (prometheus-client, no global registry).

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

/// The label set of a metric that has none but may be absent (a `Family` with one
/// empty series once set).
type NoLabels = Vec<(String, String)>;

use crate::config::{LogFormat, LogSettings};

/// Installs the global tracing subscriber. Call once, from `main`.
pub fn init_logging(settings: &LogSettings) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .or_else(|_| tracing_subscriber::EnvFilter::try_new(&settings.level))
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr());
    let builder =
        tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr).with_ansi(ansi);
    match settings.format {
        LogFormat::Text => builder.init(),
        LogFormat::Json => builder.json().init(),
    }
}

/// Labels of a Prometheus query count.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct QueryLabels {
    /// `instant` or `range`.
    pub kind: &'static str,
    /// `ok`, `unreachable`, `timeout`, `bad-query` or `server-error`.
    pub outcome: &'static str,
}

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

/// A gauge holding a float.
pub type FloatGauge = Gauge<f64, std::sync::atomic::AtomicU64>;

/// The daemon's own metrics. Dashboards in `dashboards/` use exactly these names.
pub struct Metrics {
    /// The registry served on `/metrics`.
    pub registry: Registry,
    /// `canaryd_prometheus_queries_total{kind, outcome}`: queries (after retries) by outcome.
    pub prometheus_queries: Family<QueryLabels, Counter>,
    /// `canaryd_prometheus_query_attempts_failed_total{kind, outcome}`: failed attempts, retried or not.
    pub prometheus_failed_attempts: Family<QueryLabels, Counter>,
    /// `canaryd_prometheus_query_duration_seconds`: time per query, retries included.
    pub prometheus_query_seconds: Histogram,
    /// `canaryd_prometheus_up`: 1 if the last query reached Prometheus, else 0; absent
    /// until a query has been made (unknown is not down).
    pub prometheus_up: Family<NoLabels, Gauge>,
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
    /// `canaryd_router_failures_total`: router changes refused (nginx test or reload
    /// failed, or the new weights were not served); traffic stayed on the last good config.
    pub router_failures: Counter,
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
    /// `canaryd_notifications_total{channel, result}`: notification delivery attempts.
    pub notifications: crate::notify::DeliveryCounts,
    /// `canaryd_alerts_total{result}`: Alertmanager alerts received, by what they did.
    pub alerts: Family<AlertLabels, Counter>,
    /// `canaryd_api_commands_total{command}`: operator commands accepted by the API.
    pub commands: Family<CommandLabels, Counter>,
}

/// Labels of the commands counter.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct CommandLabels {
    /// `promote`, `abort`, `pause` or `resume`.
    pub command: &'static str,
}

impl Metrics {
    /// A fresh registry with every metric registered.
    pub fn new() -> Metrics {
        let mut registry = Registry::with_prefix("canaryd");
        let prometheus_queries = Family::<QueryLabels, Counter>::default();
        let prometheus_failed_attempts = Family::<QueryLabels, Counter>::default();
        let prometheus_query_seconds = Histogram::new(exponential_buckets(0.005, 2.0, 12));
        let prometheus_up = Family::<NoLabels, Gauge>::default();
        registry.register("prometheus_queries", "Prometheus queries by outcome", prometheus_queries.clone());
        registry.register(
            "prometheus_query_attempts_failed",
            "Failed Prometheus query attempts, retried or not",
            prometheus_failed_attempts.clone(),
        );
        registry.register(
            "prometheus_query_duration_seconds",
            "Time per Prometheus query, retries included",
            prometheus_query_seconds.clone(),
        );
        registry.register("prometheus_up", "1 if the last query reached Prometheus", prometheus_up.clone());
        let tick_seconds = Histogram::new(exponential_buckets(0.001, 2.0, 16));
        registry.register("tick_duration_seconds", "Wall time of a daemon tick", tick_seconds.clone());
        let rollouts = Family::<PhaseLabels, Gauge>::default();
        registry.register("rollouts", "Rollouts held, by phase", rollouts.clone());
        let decisions = Family::<DecisionLabels, Counter>::default();
        registry.register("decisions", "Decisions made, by kind", decisions.clone());
        let outbox_depth = Gauge::default();
        registry.register("outbox_depth", "Notifications waiting for delivery", outbox_depth.clone());
        let outbox_dropped = Counter::default();
        registry.register(
            "outbox_dropped",
            "Notifications refused by a full outbox (offered again later)",
            outbox_dropped.clone(),
        );
        let platform_failures = Counter::default();
        registry.register(
            "platform_call_failures",
            "Platform calls that failed or timed out (retried next tick)",
            platform_failures.clone(),
        );
        let router_failures = Counter::default();
        registry.register(
            "router_failures",
            "Router changes refused (nginx test or reload failed, or not served); traffic stayed on the last good config",
            router_failures.clone(),
        );
        let canary_weight = Family::<RolloutLabels, Gauge>::default();
        registry.register(
            "canary_weight",
            "Canary weight (percent) the platform last confirmed, per rollout",
            canary_weight.clone(),
        );
        let metric_value = Family::<ValueLabels, FloatGauge>::default();
        registry.register(
            "metric_value",
            "Each judged metric's last measured value, per rollout and arm (canary, baseline)",
            metric_value.clone(),
        );
        let verdicts = Family::<VerdictLabels, Counter>::default();
        registry.register("verdicts", "Verdicts by metric and outcome", verdicts.clone());
        let rollbacks = Family::<ReasonLabels, Counter>::default();
        registry.register("rollbacks", "Rollbacks (aborts included) by reason", rollbacks.clone());
        let promotions = Counter::default();
        registry.register("promotions", "Promotions finished", promotions.clone());
        let analysis_seconds = Histogram::new(exponential_buckets(0.001, 2.0, 16));
        registry.register(
            "analysis_duration_seconds",
            "Time to measure and judge a tick's due rollouts",
            analysis_seconds.clone(),
        );
        let notifications = crate::notify::DeliveryCounts::default();
        registry.register(
            "notifications",
            "Notification delivery attempts by channel and result",
            notifications.clone(),
        );
        let alerts = Family::<AlertLabels, Counter>::default();
        registry.register("alerts", "Alertmanager alerts received, by what they did", alerts.clone());
        let commands = Family::<CommandLabels, Counter>::default();
        registry.register("api_commands", "Operator commands accepted by the API", commands.clone());
        Metrics {
            canary_weight,
            metric_value,
            verdicts,
            rollbacks,
            promotions,
            analysis_seconds,
            notifications,
            alerts,
            commands,
            router_failures,
            tick_seconds,
            rollouts,
            decisions,
            outbox_depth,
            outbox_dropped,
            platform_failures,
            registry,
            prometheus_queries,
            prometheus_failed_attempts,
            prometheus_query_seconds,
            prometheus_up,
        }
    }

    /// Records whether the last query reached Prometheus.
    pub fn set_prometheus_up(&self, up: bool) {
        self.prometheus_up.get_or_create(&NoLabels::new()).set(i64::from(up));
    }

    /// Whether the last query reached Prometheus; `None` before any query.
    pub fn prometheus_up(&self) -> Option<bool> {
        self.prometheus_up.get(&NoLabels::new()).map(|g| g.get() == 1)
    }

    /// The metrics in the Prometheus text format.
    pub fn encode(&self) -> String {
        let mut out = String::new();
        // Writing to a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut out, &self.registry);
        out
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics::new()
    }
}
