//! The HTTP surface (axum): health, readiness, the daemon's own metrics, and the
//! control API.

pub mod api;
pub mod listen;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use axum::Router;
use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::{get, post};

use crate::telemetry::Metrics;

/// State shared with the HTTP handlers.
#[derive(Clone)]
pub struct AppState {
    /// Set once policies are loaded and the daemon can act.
    pub ready: Arc<AtomicBool>,
    /// The daemon's own metrics.
    pub metrics: Arc<Metrics>,
    /// Who may call the control API (checked whether or not a loop runs).
    pub access: api::Access,
    /// The control API, when a platform runs.
    pub api: Option<api::Api>,
    /// Set once the loop has run its first tick, when a loop runs.
    pub loop_ready: Option<Arc<AtomicBool>>,
    /// Largest request body accepted (413 above it).
    pub max_body_bytes: usize,
}

impl Default for AppState {
    fn default() -> Self {
        AppState {
            ready: Arc::default(),
            metrics: Arc::default(),
            access: api::Access::default(),
            api: None,
            loop_ready: None,
            max_body_bytes: 256 * 1024,
        }
    }
}

/// Builds the router.
pub fn app(state: AppState) -> Router {
    Router::new()
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
        .with_state(state.clone())
        .merge(
            Router::new()
                .route("/api/v1/rollouts", post(api::start).get(api::list))
                .route("/api/v1/rollouts/{namespace}/{name}", get(api::one))
                .route("/api/v1/rollouts/{namespace}/{name}/{command}", post(api::command))
                .route("/api/v1/records", get(api::records))
                .route("/api/v1/records/{*id}", get(api::record))
                .route("/api/v1/alertmanager", post(api::alertmanager))
                .fallback(api::not_found)
                .with_state(state.clone()),
        )
        .layer(axum::extract::DefaultBodyLimit::max(state.max_body_bytes))
}

async fn readyz(State(state): State<AppState>) -> (StatusCode, &'static str) {
    let looping = state.loop_ready.as_ref().is_none_or(|r| r.load(Ordering::Relaxed));
    if state.ready.load(Ordering::Relaxed) && looping {
        (StatusCode::OK, "ready\n")
    } else {
        (StatusCode::SERVICE_UNAVAILABLE, "not ready\n")
    }
}

async fn metrics(State(state): State<AppState>) -> ([(axum::http::HeaderName, &'static str); 1], String) {
    let content_type = "application/openmetrics-text; version=1.0.0; charset=utf-8";
    ([(axum::http::header::CONTENT_TYPE, content_type)], state.metrics.encode())
}

#[cfg(test)]
mod tests {
    use axum::body::Body;
    use axum::http::Request;
    use tower::ServiceExt;

    use super::*;

    async fn status(app: Router, path: &str) -> StatusCode {
        app.oneshot(Request::get(path).body(Body::empty()).unwrap()).await.unwrap().status()
    }

    #[tokio::test]
    async fn healthz_is_ok_and_readyz_follows_readiness() {
        let state = AppState::default();
        assert_eq!(status(app(state.clone()), "/healthz").await, StatusCode::OK);
        assert_eq!(status(app(state.clone()), "/readyz").await, StatusCode::SERVICE_UNAVAILABLE);
        state.ready.store(true, Ordering::Relaxed);
        assert_eq!(status(app(state), "/readyz").await, StatusCode::OK);
    }

    #[tokio::test]
    async fn metrics_are_served_in_the_text_format() {
        let state = AppState::default();
        let before =
            app(state.clone()).oneshot(Request::get("/metrics").body(Body::empty()).unwrap()).await.unwrap();
        let before = axum::body::to_bytes(before.into_body(), 1 << 20).await.unwrap();
        assert!(
            !String::from_utf8(before.to_vec()).unwrap().contains("canaryd_prometheus_up 0"),
            "no query yet: unknown, not down"
        );
        state.metrics.set_prometheus_up(true);
        let response =
            app(state).oneshot(Request::get("/metrics").body(Body::empty()).unwrap()).await.unwrap();
        assert_eq!(response.status(), StatusCode::OK);
        let body = axum::body::to_bytes(response.into_body(), 1 << 20).await.unwrap();
        let text = String::from_utf8(body.to_vec()).unwrap();
        assert!(text.contains("canaryd_prometheus_up 1"), "{text}");
        assert!(text.ends_with("# EOF\n"), "{text}");
    }
}
