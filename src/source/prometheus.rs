//! The Prometheus metric source (prometheus-http-query): instant and range queries with
//! auth, timeouts and retries, errors classified, and batched observation of rollouts.
//! It returns raw samples only; the judge decides.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use base64::Engine as _;
use futures::StreamExt as _;
use jiff::Timestamp;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;
use prometheus_http_query::{Client, Error as PromError};
use reqwest::header::{AUTHORIZATION, HeaderMap, HeaderName, HeaderValue};

use crate::engine::RolloutId;
use crate::judge::Observation;
use crate::secret::Secret;
use crate::source::MetricSource;
use crate::source::batch::{self, BatchOptions, Series, Target};
use crate::telemetry::NoLabels;

/// Prometheus connection settings.
#[derive(Clone, Debug)]
pub struct PrometheusSettings {
    /// Base URL.
    pub url: url::Url,
    /// Per-query timeout.
    pub timeout: Duration,
    /// Retries after a failed query, with exponential backoff.
    pub retries: u32,
    /// Bearer token.
    pub bearer_token: Option<Secret>,
    /// Basic auth `(user, password)`.
    pub basic_auth: Option<(String, Secret)>,
    /// Extra headers (values are secret: they often carry tenant tokens).
    pub headers: BTreeMap<String, Secret>,
    /// Scrape intervals, lookback and shard size for batched queries.
    pub batching: BatchOptions,
}

/// Why a query failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SourceError {
    /// Prometheus could not be reached.
    #[error("Prometheus unreachable: {0}")]
    Unreachable(String),
    /// The query took too long.
    #[error("Prometheus query timed out: {0}")]
    Timeout(String),
    /// Prometheus refused the query (4xx): retrying will not help.
    #[error("bad query: {0}")]
    BadQuery(String),
    /// Prometheus (or a proxy before it) refused the credentials (401, 403).
    #[error("Prometheus refused the credentials: {0}")]
    Auth(String),
    /// Prometheus failed (5xx).
    #[error("Prometheus server error: {0}")]
    Server(String),
    /// The client could not be built from the settings.
    #[error("invalid Prometheus settings: {0}")]
    Settings(String),
}

impl SourceError {
    /// The metric label of this kind of failure.
    pub fn label(&self) -> &'static str {
        match self {
            SourceError::Unreachable(_) => "unreachable",
            SourceError::Timeout(_) => "timeout",
            SourceError::BadQuery(_) => "bad-query",
            SourceError::Auth(_) => "auth",
            SourceError::Server(_) => "server-error",
            SourceError::Settings(_) => "settings",
        }
    }

    fn retryable(&self) -> bool {
        matches!(self, SourceError::Unreachable(_) | SourceError::Timeout(_) | SourceError::Server(_))
    }
}

fn classify(e: PromError) -> SourceError {
    match e {
        PromError::Client(c) => match c.inner() {
            Some(r) if r.is_timeout() => SourceError::Timeout(r.to_string()),
            Some(r) if r.is_connect() => SourceError::Unreachable(r.to_string()),
            // It answered, but not with its API's JSON (a proxy's page, a truncated body).
            Some(r) if r.is_decode() => SourceError::Server(format!("not a Prometheus API response: {c}")),
            Some(r) => match r.status() {
                Some(s) if s.as_u16() == 401 || s.as_u16() == 403 => SourceError::Auth(format!(
                    "HTTP {s}; check prometheus.bearer_token, the basic auth settings or the headers"
                )),
                Some(s) if s.is_client_error() => SourceError::BadQuery(format!("HTTP {s}: {c}")),
                Some(s) => SourceError::Server(format!("HTTP {s}: {c}")),
                None => SourceError::Unreachable(r.to_string()),
            },
            None => SourceError::Server(c.to_string()),
        },
        PromError::Prometheus(p) if p.is_timeout() || p.is_canceled() => SourceError::Timeout(p.to_string()),
        PromError::Prometheus(p) if p.is_bad_data() || p.is_execution() || p.is_not_found() => {
            SourceError::BadQuery(p.to_string())
        }
        PromError::Prometheus(p) => SourceError::Server(p.to_string()),
        other => SourceError::Settings(other.to_string()),
    }
}

/// A series of a range query: labels and `(unix seconds, value)` points.
pub type RangeSeries = (BTreeMap<String, String>, Vec<(i64, f64)>);

/// Labels of a Prometheus query count.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct QueryLabels {
    /// `instant` or `range`.
    pub kind: &'static str,
    /// `ok`, `unreachable`, `timeout`, `bad-query` or `server-error`.
    pub outcome: &'static str,
}

/// The source's own metrics: queries by outcome, failed attempts, latency, and whether
/// Prometheus was reached.
#[derive(Clone)]
pub struct QueryMetrics {
    /// `canaryd_prometheus_queries_total{kind, outcome}`: queries (after retries) by outcome.
    pub queries: Family<QueryLabels, Counter>,
    /// `canaryd_prometheus_query_attempts_failed_total{kind, outcome}`: failed attempts, retried or not.
    pub failed_attempts: Family<QueryLabels, Counter>,
    /// `canaryd_prometheus_query_duration_seconds`: time per query, retries included.
    pub query_seconds: Histogram,
    /// `canaryd_prometheus_up`: 1 if the last query reached Prometheus, else 0; absent
    /// until a query has been made (unknown is not down).
    pub up: Family<NoLabels, Gauge>,
}

impl QueryMetrics {
    /// The source's metrics, registered in `registry`.
    pub fn register(registry: &mut Registry) -> QueryMetrics {
        let m = QueryMetrics {
            queries: Family::default(),
            failed_attempts: Family::default(),
            query_seconds: Histogram::new(exponential_buckets(0.005, 2.0, 12)),
            up: Family::default(),
        };
        registry.register("prometheus_queries", "Prometheus queries by outcome", m.queries.clone());
        registry.register(
            "prometheus_query_attempts_failed",
            "Failed Prometheus query attempts, retried or not",
            m.failed_attempts.clone(),
        );
        registry.register(
            "prometheus_query_duration_seconds",
            "Time per Prometheus query, retries included",
            m.query_seconds.clone(),
        );
        registry.register("prometheus_up", "1 if the last query reached Prometheus", m.up.clone());
        m
    }

    /// Records whether the last query reached Prometheus.
    pub fn set_up(&self, up: bool) {
        self.up.get_or_create(&NoLabels::new()).set(i64::from(up));
    }

    /// Whether the last query reached Prometheus; `None` before any query.
    pub fn up(&self) -> Option<bool> {
        self.up.get(&NoLabels::new()).map(|g| g.get() == 1)
    }
}

impl Default for QueryMetrics {
    /// Metrics registered nowhere: for tests and tools that do not serve them.
    fn default() -> Self {
        QueryMetrics::register(&mut Registry::default())
    }
}

/// A Prometheus server.
#[derive(Clone)]
pub struct PrometheusSource {
    client: Client,
    retries: u32,
    backoff: Duration,
    metrics: QueryMetrics,
    batching: BatchOptions,
}

impl PrometheusSource {
    /// A client for the configured server; `backoff` is the first retry's delay (doubled
    /// each retry, no jitter, so runs are reproducible).
    pub fn new(
        settings: &PrometheusSettings,
        metrics: QueryMetrics,
        backoff: Duration,
    ) -> Result<Self, SourceError> {
        let mut headers = HeaderMap::new();
        let auth = match (&settings.bearer_token, &settings.basic_auth) {
            (Some(token), _) => Some(format!("Bearer {}", token.expose())),
            (None, Some((user, password))) => Some(format!(
                "Basic {}",
                base64::engine::general_purpose::STANDARD.encode(format!("{user}:{}", password.expose()))
            )),
            (None, None) => None,
        };
        if let Some(auth) = auth {
            let mut value =
                HeaderValue::from_str(&auth).map_err(|e| SourceError::Settings(format!("auth: {e}")))?;
            value.set_sensitive(true);
            headers.insert(AUTHORIZATION, value);
        }
        for (name, value) in &settings.headers {
            let name = HeaderName::from_bytes(name.as_bytes())
                .map_err(|e| SourceError::Settings(format!("header {name}: {e}")))?;
            let mut value = HeaderValue::from_str(value.expose())
                .map_err(|e| SourceError::Settings(format!("header {name}: {e}")))?;
            value.set_sensitive(true);
            headers.insert(name, value);
        }
        let http = reqwest::Client::builder()
            .timeout(settings.timeout)
            .default_headers(headers)
            .build()
            .map_err(|e| SourceError::Settings(e.to_string()))?;
        let client =
            Client::from(http, settings.url.as_str()).map_err(|e| SourceError::Settings(e.to_string()))?;
        Ok(PrometheusSource {
            client,
            retries: settings.retries,
            backoff,
            metrics,
            batching: settings.batching.clone(),
        })
    }

    async fn with_retries<T, F, Fut>(
        &self,
        kind: &'static str,
        promql: &str,
        attempt: F,
    ) -> Result<T, SourceError>
    where
        F: Fn() -> Fut,
        Fut: Future<Output = Result<T, PromError>>,
    {
        let started = Instant::now();
        let mut delay = self.backoff;
        let mut tries = 0;
        let result = loop {
            match attempt().await.map_err(classify) {
                Ok(v) => break Ok(v),
                Err(e) => {
                    self.metrics
                        .failed_attempts
                        .get_or_create(&QueryLabels { kind, outcome: e.label() })
                        .inc();
                    if !e.retryable() || tries >= self.retries {
                        break Err(e);
                    }
                    tracing::warn!(error = %e, attempt = tries + 1, retry_in = ?delay, "Prometheus query failed; retrying");
                    tokio::time::sleep(delay).await;
                    delay *= 2;
                    tries += 1;
                }
            }
        };
        self.metrics.query_seconds.observe(started.elapsed().as_secs_f64());
        let outcome = result.as_ref().map_or_else(SourceError::label, |_| "ok");
        self.metrics.queries.get_or_create(&QueryLabels { kind, outcome }).inc();
        let reached = !matches!(result, Err(SourceError::Unreachable(_) | SourceError::Timeout(_)));
        self.metrics.set_up(reached);
        if let Err(e) = &result {
            tracing::error!(error = %e, query = promql, "Prometheus query failed");
        }
        result
    }

    /// Runs an instant query at `at`.
    pub async fn instant(&self, promql: &str, at: Timestamp) -> Result<Vec<Series>, SourceError> {
        let data = self
            .with_retries("instant", promql, || self.client.query(promql).at(at.as_second()).post())
            .await?;
        let (data, _) = data.into_inner();
        Ok(match data {
            prometheus_http_query::response::Data::Vector(v) => v
                .into_iter()
                .map(|s| {
                    let (labels, sample) = s.into_inner();
                    (labels.into_iter().collect(), sample.value())
                })
                .collect(),
            prometheus_http_query::response::Data::Scalar(s) => vec![(BTreeMap::new(), s.value())],
            prometheus_http_query::response::Data::Matrix(_) => {
                return Err(SourceError::BadQuery("an instant query returned a range vector".into()));
            }
        })
    }

    /// Runs a range query from `start` to `end` every `step`.
    pub async fn range(
        &self,
        promql: &str,
        start: Timestamp,
        end: Timestamp,
        step: Duration,
    ) -> Result<Vec<RangeSeries>, SourceError> {
        let data = self
            .with_retries("range", promql, || {
                self.client.query_range(promql, start.as_second(), end.as_second(), step.as_secs_f64()).post()
            })
            .await?;
        let (data, _) = data.into_inner();
        let Some(matrix) = data.into_matrix().ok() else {
            return Err(SourceError::BadQuery("a range query did not return a range vector".into()));
        };
        Ok(matrix
            .into_iter()
            .map(|s| {
                let (labels, samples) = s.into_inner();
                let points = samples.iter().map(|p| (p.timestamp().round() as i64, p.value())).collect();
                (labels.into_iter().collect(), points)
            })
            .collect())
    }

    /// Measures every target at each step from `start` to `end`: the same batched
    /// queries as the daemon, as range queries. Returns observations by evaluation time.
    /// Unlike live observation, a failed query is an error: a backtest must not mistake a
    /// server it cannot read for a gap in the data.
    ///
    /// Each step's counts are the increments since the previous step, as live.
    pub async fn observe_range(
        &self,
        targets: &[Target<'_>],
        start: Timestamp,
        end: Timestamp,
        step: Duration,
    ) -> Result<BTreeMap<i64, BTreeMap<(RolloutId, String), Observation>>, RangeError> {
        let mut out: BTreeMap<i64, BTreeMap<(RolloutId, String), Observation>> = BTreeMap::new();
        let mut times = Vec::new();
        let mut t = start;
        while t <= end {
            times.push(t.as_second());
            t = t.checked_add(step).unwrap_or(Timestamp::MAX);
        }
        for b in batch::plan(targets, step, &self.batching) {
            let query = b.query.as_ref().map_err(Clone::clone)?;
            let mut by_time: BTreeMap<i64, Vec<Series>> = BTreeMap::new();
            // Prometheus answers at most 11,000 points per series: ask in pieces.
            for chunk in times.chunks(RANGE_POINTS) {
                let (Some(&first), Some(&last)) = (chunk.first(), chunk.last()) else { continue };
                let (from, to) = (Timestamp::from_second(first), Timestamp::from_second(last));
                let (Ok(from), Ok(to)) = (from, to) else { continue };
                for (labels, points) in self.range(query, from, to, step).await? {
                    for (t, v) in points {
                        by_time.entry(t).or_default().push((labels.clone(), v));
                    }
                }
            }
            for &t in &times {
                let at_t = by_time.remove(&t).unwrap_or_default();
                let observed = batch::split(&b, &Ok(at_t)).into_iter().zip(&b.members).map(
                    |((key, mut obs), (_, _, arms))| {
                        obs.query = b.query_for(arms, &self.batching);
                        (key, obs)
                    },
                );
                out.entry(t).or_default().extend(observed);
            }
        }
        Ok(out)
    }
}

/// Points per range query: under Prometheus' limit of 11,000 per series.
const RANGE_POINTS: usize = 10_000;

/// Why a window could not be read for a backtest.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum RangeError {
    /// A query could not be built.
    #[error(transparent)]
    Batch(#[from] batch::BatchError),
    /// A query failed.
    #[error("cannot read the window from Prometheus")]
    Source(#[from] SourceError),
}

impl MetricSource for PrometheusSource {
    async fn observe(
        &self,
        targets: &[Target<'_>],
        at: Timestamp,
        window: Duration,
    ) -> BTreeMap<(RolloutId, String), Observation> {
        let batches = batch::plan(targets, window, &self.batching);
        let results = futures::stream::iter(batches)
            .map(|b| async move {
                let result = match &b.query {
                    Ok(query) => self.instant(query, at).await.map_err(|e| e.to_string()),
                    // Only its own members learn that their query could not be built.
                    Err(e) => Err(e.to_string()),
                };
                batch::split(&b, &result)
            })
            .buffer_unordered(self.batching.concurrency)
            .collect::<Vec<_>>()
            .await;
        results.into_iter().flatten().collect()
    }
}

#[cfg(test)]
#[path = "prometheus_tests.rs"]
mod tests;
