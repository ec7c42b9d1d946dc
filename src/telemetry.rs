//! Logging setup, and the registry of the daemon's own metrics (prometheus-client, no
//! global registry). Each part of the daemon registers its metrics beside the code that
//! measures them: the loop (`daemon::metrics`), the Prometheus source
//! (`source::prometheus::QueryMetrics`), notifications (`notify::DeliveryCounts`), the
//! local platform's router and the API. Dashboards in `dashboards/` use exactly these
//! names.

use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

/// The label set of a metric that has none but may be absent (a `Family` with one
/// empty series once set).
pub type NoLabels = Vec<(String, String)>;

/// A gauge holding a float.
pub type FloatGauge = Gauge<f64, std::sync::atomic::AtomicU64>;

/// Log output.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LogFormat {
    /// Human-readable lines.
    Text,
    /// One JSON object per line.
    Json,
}

/// Logging settings.
#[derive(Clone, Debug)]
pub struct LogSettings {
    /// Output format.
    pub format: LogFormat,
    /// `tracing` filter directive, e.g. `info,canaryd=debug`.
    pub level: String,
}

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

/// A registry for the daemon's own metrics: every name gets the `canaryd_` prefix.
pub fn registry() -> Registry {
    Registry::with_prefix("canaryd")
}

/// The metrics of `registry` in the Prometheus text format.
pub fn encode(registry: &Registry) -> String {
    let mut out = String::new();
    // Writing to a String cannot fail.
    let _ = prometheus_client::encoding::text::encode(&mut out, registry);
    out
}
