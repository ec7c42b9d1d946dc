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
    /// The decision's action: started, advanced, promoting, rolled-back, …
    pub kind: String,
}

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
        Metrics {
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
