//! The Prometheus metric source (prometheus-http-query): instant and range queries with
//! auth, timeouts and retries, errors classified, and batched observation of rollouts.
//! It returns raw samples only; the judge decides.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use base64::Engine as _;
use jiff::Timestamp;
use prometheus_http_query::{Client, Error as PromError};
use reqwest::header::{AUTHORIZATION, HeaderMap, HeaderName, HeaderValue};

use crate::config::PrometheusSettings;
use crate::engine::RolloutId;
use crate::judge::Observation;
use crate::source::batch::{self, Series, Target};
use crate::telemetry::{Metrics, QueryLabels};

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
            Some(r) => match r.status() {
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

/// Where raw samples come from. Implemented by Prometheus; recorded data feeds the
/// engine directly in backtests.
pub trait MetricSource {
    /// Measures every target over the `window` ending at `at`.
    fn observe(
        &self,
        targets: &[Target<'_>],
        at: Timestamp,
        window: Duration,
    ) -> impl Future<Output = BTreeMap<(RolloutId, String), Observation>> + Send;
}

/// A Prometheus server.
#[derive(Clone)]
pub struct PrometheusSource {
    client: Client,
    retries: u32,
    backoff: Duration,
    metrics: Arc<Metrics>,
}

impl PrometheusSource {
    /// A client for the configured server; `backoff` is the first retry's delay (doubled
    /// each retry, no jitter, so runs are reproducible).
    pub fn new(
        settings: &PrometheusSettings,
        metrics: Arc<Metrics>,
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
        Ok(PrometheusSource { client, retries: settings.retries, backoff, metrics })
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
                        .prometheus_failed_attempts
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
        self.metrics.prometheus_query_seconds.observe(started.elapsed().as_secs_f64());
        let outcome = result.as_ref().map_or_else(SourceError::label, |_| "ok");
        self.metrics.prometheus_queries.get_or_create(&QueryLabels { kind, outcome }).inc();
        let reached = !matches!(result, Err(SourceError::Unreachable(_) | SourceError::Timeout(_)));
        self.metrics.prometheus_up.set(i64::from(reached));
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
    pub async fn observe_range(
        &self,
        targets: &[Target<'_>],
        start: Timestamp,
        end: Timestamp,
        step: Duration,
    ) -> Result<BTreeMap<i64, BTreeMap<(RolloutId, String), Observation>>, batch::BatchError> {
        let mut out: BTreeMap<i64, BTreeMap<(RolloutId, String), Observation>> = BTreeMap::new();
        let mut times = Vec::new();
        let mut t = start;
        while t <= end {
            times.push(t.as_second());
            t = t.checked_add(step).unwrap_or(Timestamp::MAX);
        }
        for b in batch::plan(targets, step)? {
            let result = self.range(&b.query, start, end, step).await.map_err(|e| e.to_string());
            for &t in &times {
                let at_t = result.as_ref().map_err(Clone::clone).map(|series| {
                    series
                        .iter()
                        .filter_map(|(labels, points)| {
                            points.iter().find(|p| p.0 == t).map(|p| (labels.clone(), p.1))
                        })
                        .collect()
                });
                out.entry(t).or_default().extend(batch::split(&b, &at_t));
            }
        }
        Ok(out)
    }
}

impl MetricSource for PrometheusSource {
    async fn observe(
        &self,
        targets: &[Target<'_>],
        at: Timestamp,
        window: Duration,
    ) -> BTreeMap<(RolloutId, String), Observation> {
        let batches = match batch::plan(targets, window) {
            Ok(b) => b,
            Err(e) => {
                // Only an inline query can fail to render; every target gets the error.
                return targets
                    .iter()
                    .map(|t| {
                        let obs = Observation { error: Some(e.to_string()), ..Observation::default() };
                        ((t.rollout.clone(), t.metric.name.clone()), obs)
                    })
                    .collect();
            }
        };
        let mut out = BTreeMap::new();
        for b in &batches {
            let result = self.instant(&b.query, at).await.map_err(|e| e.to_string());
            out.extend(batch::split(b, &result));
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Mutex;

    use axum::http::HeaderMap as AxumHeaders;

    use super::*;
    use crate::config::Settings;

    /// A stand-in HTTP endpoint that records request headers and answers like Prometheus.
    async fn recorder() -> (String, Arc<Mutex<Vec<AxumHeaders>>>) {
        let seen = Arc::new(Mutex::new(Vec::new()));
        let log = seen.clone();
        let app = axum::Router::new().route(
            "/api/v1/query",
            axum::routing::post(move |headers: AxumHeaders| {
                log.lock().unwrap().push(headers);
                async {
                    (
                        [(axum::http::header::CONTENT_TYPE, "application/json")],
                        r#"{"status":"success","data":{"resultType":"vector","result":[{"metric":{"workload":"web"},"value":[1,"42"]}]}}"#,
                    )
                }
            }),
        );
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        tokio::spawn(async move { axum::serve(listener, app).await });
        (url, seen)
    }

    fn settings(url: &str, extra: &[(&str, &str)]) -> Settings {
        let mut env: BTreeMap<String, String> =
            extra.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
        env.insert("CANARYD__PROMETHEUS__URL".into(), url.into());
        Settings::load(None, env).unwrap()
    }

    #[tokio::test]
    async fn bearer_token_and_extra_headers_are_sent() {
        let (url, seen) = recorder().await;
        let s = settings(
            &url,
            &[
                ("CANARYD__PROMETHEUS__BEARER_TOKEN", "t0ken"),
                ("CANARYD__PROMETHEUS__HEADERS__X-SCOPE-ORGID", "tenant-a"),
            ],
        );
        let src =
            PrometheusSource::new(&s.prometheus, Arc::new(Metrics::new()), Duration::from_millis(1)).unwrap();
        let series = src.instant("up", Timestamp::UNIX_EPOCH).await.unwrap();
        assert_eq!(series, vec![(BTreeMap::from([("workload".to_string(), "web".to_string())]), 42.0)]);
        let headers = seen.lock().unwrap()[0].clone();
        assert_eq!(headers.get("authorization").unwrap(), "Bearer t0ken");
        assert_eq!(headers.get("x-scope-orgid").unwrap(), "tenant-a");
    }

    #[tokio::test]
    async fn basic_auth_is_sent_encoded() {
        let (url, seen) = recorder().await;
        let s = settings(
            &url,
            &[
                ("CANARYD__PROMETHEUS__BASIC_AUTH_USER", "ops"),
                ("CANARYD__PROMETHEUS__BASIC_AUTH_PASSWORD", "pw"),
            ],
        );
        let src =
            PrometheusSource::new(&s.prometheus, Arc::new(Metrics::new()), Duration::from_millis(1)).unwrap();
        src.instant("up", Timestamp::UNIX_EPOCH).await.unwrap();
        assert_eq!(seen.lock().unwrap()[0].get("authorization").unwrap(), "Basic b3BzOnB3");
    }

    #[tokio::test]
    async fn a_refused_query_is_a_bad_query_and_is_not_retried() {
        let app = axum::Router::new().route(
            "/api/v1/query",
            axum::routing::post(|| async {
                (
                    axum::http::StatusCode::BAD_REQUEST,
                    [(axum::http::header::CONTENT_TYPE, "application/json")],
                    r#"{"status":"error","errorType":"bad_data","error":"parse error"}"#,
                )
            }),
        );
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        tokio::spawn(async move { axum::serve(listener, app).await });
        let metrics = Arc::new(Metrics::new());
        let src =
            PrometheusSource::new(&settings(&url, &[]).prometheus, metrics.clone(), Duration::from_millis(1))
                .unwrap();
        let err = src.instant("sum(", Timestamp::UNIX_EPOCH).await.unwrap_err();
        assert!(matches!(err, SourceError::BadQuery(_)), "{err:?}");
        let failed = metrics
            .prometheus_failed_attempts
            .get_or_create(&QueryLabels { kind: "instant", outcome: "bad-query" })
            .get();
        assert_eq!(failed, 1, "a 4xx is not retried");
    }

    #[tokio::test]
    async fn an_unreachable_server_is_retried_then_reported() {
        let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        let s = settings(&format!("http://127.0.0.1:{port}"), &[("CANARYD__PROMETHEUS__RETRIES", "2")]);
        let metrics = Arc::new(Metrics::new());
        let src = PrometheusSource::new(&s.prometheus, metrics.clone(), Duration::from_millis(1)).unwrap();
        let err = src.instant("up", Timestamp::UNIX_EPOCH).await.unwrap_err();
        assert!(matches!(err, SourceError::Unreachable(_)), "{err:?}");
        let failed = metrics
            .prometheus_failed_attempts
            .get_or_create(&QueryLabels { kind: "instant", outcome: "unreachable" })
            .get();
        assert_eq!(failed, 3, "one attempt and two retries");
        assert_eq!(metrics.prometheus_up.get(), 0);
    }
}
