use std::sync::{Arc, Mutex};

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
    (serve(app).await, seen)
}

/// Serves `app` on a free loopback port; returns its base URL.
async fn serve(app: axum::Router) -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await });
    url
}

fn source(settings: &Settings, metrics: QueryMetrics) -> PrometheusSource {
    PrometheusSource::new(&settings.prometheus, metrics, Duration::from_millis(1)).unwrap()
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
    let src = source(&s, QueryMetrics::default());
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
    let src = source(&s, QueryMetrics::default());
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
    let url = serve(app).await;
    let metrics = QueryMetrics::default();
    let src = source(&settings(&url, &[]), metrics.clone());
    let err = src.instant("sum(", Timestamp::UNIX_EPOCH).await.unwrap_err();
    assert!(matches!(err, SourceError::BadQuery(_)), "{err:?}");
    let failed =
        metrics.failed_attempts.get_or_create(&QueryLabels { kind: "instant", outcome: "bad-query" }).get();
    assert_eq!(failed, 1, "a 4xx is not retried");
}

#[tokio::test]
async fn an_unreachable_server_is_retried_then_reported() {
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let s = settings(&format!("http://127.0.0.1:{port}"), &[("CANARYD__PROMETHEUS__RETRIES", "2")]);
    let metrics = QueryMetrics::default();
    let src = source(&s, metrics.clone());
    let err = src.instant("up", Timestamp::UNIX_EPOCH).await.unwrap_err();
    assert!(matches!(err, SourceError::Unreachable(_)), "{err:?}");
    let failed =
        metrics.failed_attempts.get_or_create(&QueryLabels { kind: "instant", outcome: "unreachable" }).get();
    assert_eq!(failed, 3, "one attempt and two retries");
    assert_eq!(metrics.up(), Some(false));
}

/// A stand-in endpoint answering every query with `status`, `content_type` and `body`.
async fn answering(status: u16, content_type: &'static str, body: &'static str) -> String {
    let app = axum::Router::new().route(
        "/api/v1/query",
        axum::routing::post(move || async move {
            (
                axum::http::StatusCode::from_u16(status).unwrap(),
                [(axum::http::header::CONTENT_TYPE, content_type)],
                body,
            )
        }),
    );
    serve(app).await
}

async fn failed_attempts(metrics: &QueryMetrics, outcome: &'static str) -> i64 {
    metrics.failed_attempts.get_or_create(&QueryLabels { kind: "instant", outcome }).get() as i64
}

#[tokio::test]
async fn a_refused_credential_is_an_auth_failure_and_is_not_retried() {
    let url = answering(401, "text/plain", "Unauthorized").await;
    let metrics = QueryMetrics::default();
    let src = source(&settings(&url, &[("CANARYD__PROMETHEUS__RETRIES", "2")]), metrics.clone());
    let err = src.instant("up", Timestamp::UNIX_EPOCH).await.unwrap_err();
    assert!(matches!(err, SourceError::Auth(_)), "{err:?}");
    assert!(err.to_string().contains("check prometheus.bearer_token"), "{err}");
    assert_eq!(failed_attempts(&metrics, "auth").await, 1, "not retried");
    assert_eq!(metrics.up(), Some(true), "it was reached");
}

#[tokio::test]
async fn an_html_error_page_is_a_server_error_and_is_retried() {
    let url = answering(500, "text/html", "<html><body>Internal Server Error</body></html>").await;
    let metrics = QueryMetrics::default();
    let src = source(&settings(&url, &[("CANARYD__PROMETHEUS__RETRIES", "2")]), metrics.clone());
    let err = src.instant("up", Timestamp::UNIX_EPOCH).await.unwrap_err();
    assert!(matches!(err, SourceError::Server(_)), "{err:?}");
    assert_eq!(failed_attempts(&metrics, "server-error").await, 3, "one attempt and two retries");
}

#[tokio::test]
async fn json_that_is_not_the_prometheus_api_is_a_server_error_not_unreachable() {
    let url = answering(200, "application/json", "{\"hello\": \"proxy\"}").await;
    let metrics = QueryMetrics::default();
    let src = source(&settings(&url, &[]), metrics.clone());
    let err = src.instant("up", Timestamp::UNIX_EPOCH).await.unwrap_err();
    assert!(matches!(err, SourceError::Server(_)), "{err:?}");
    assert!(err.to_string().contains("not a Prometheus API response"), "{err}");
}
