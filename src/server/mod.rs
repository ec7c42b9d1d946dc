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

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::registry::Registry;

use crate::daemon::metrics::AlertLabels;

/// Labels of the commands counter.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct CommandLabels {
    /// `promote`, `abort`, `pause` or `resume`.
    pub command: &'static str,
}

/// The API's own metrics.
#[derive(Clone, Default)]
pub struct ApiMetrics {
    /// `canaryd_api_commands_total{command}`: operator commands accepted by the API.
    pub commands: Family<CommandLabels, Counter>,
    /// The loop's `canaryd_alerts_total{result}`: the API counts the alerts it does not
    /// hand on (resolved, malformed).
    pub alerts: Family<AlertLabels, Counter>,
}

impl ApiMetrics {
    /// The API's metrics, registered in `registry`, counting alerts into `alerts`.
    pub fn register(registry: &mut Registry, alerts: Family<AlertLabels, Counter>) -> ApiMetrics {
        let commands = Family::default();
        registry.register("api_commands", "Operator commands accepted by the API", commands.clone());
        ApiMetrics { commands, alerts }
    }
}

/// State shared with the HTTP handlers.
#[derive(Clone)]
pub struct AppState {
    /// Set once policies are loaded and the daemon can act.
    pub ready: Arc<AtomicBool>,
    /// Every metric of the daemon, served on `/metrics`.
    pub registry: Arc<Registry>,
    /// Who may call the control API (checked whether or not a loop runs).
    pub access: api::Access,
    /// The control API, when a platform runs.
    pub api: Option<api::Api>,
    /// Set once the loop has run its first tick, when a loop runs.
    pub loop_ready: Option<Arc<AtomicBool>>,
    /// Largest request body accepted (413 above it).
    pub max_body_bytes: usize,
    /// Set while this replica stands by for the Lease another replica holds: `/readyz`
    /// is 200 (it is ready to take over) and `/api/v1` answers 503 naming the leader.
    pub standby: Option<crate::platform::kubernetes::lease::Leadership>,
}

impl Default for AppState {
    fn default() -> Self {
        AppState {
            ready: Arc::default(),
            registry: Arc::new(crate::telemetry::registry()),
            access: api::Access::default(),
            api: None,
            loop_ready: None,
            max_body_bytes: 256 * 1024,
            standby: None,
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
                .method_not_allowed_fallback(api::method_not_allowed)
                .layer(axum::middleware::from_fn_with_state(state.clone(), api::standing_by))
                .with_state(state.clone()),
        )
        .layer(axum::extract::DefaultBodyLimit::max(state.max_body_bytes))
}

/// What a daemon without a platform is missing, in `/readyz` and every `/api/v1` answer.
pub const NO_PLATFORM: &str =
    "no platform is configured: declare [[services]] (the local platform) or [kubernetes] in the settings";

/// Ready means the loop has ticked with at least one valid policy; otherwise 503 with
/// the reason.
async fn readyz(State(state): State<AppState>) -> (StatusCode, String) {
    let not_ready = |why: &str| (StatusCode::SERVICE_UNAVAILABLE, format!("not ready: {why}\n"));
    if let Some(standby) = &state.standby {
        let leader = standby.leader().unwrap_or_else(|| "no replica yet".into());
        return (StatusCode::OK, format!("ready: standing by ({leader} holds the Lease)\n"));
    }
    let Some(ticked) = &state.loop_ready else { return not_ready(NO_PLATFORM) };
    if !state.ready.load(Ordering::Relaxed) {
        return not_ready("no valid policy is loaded");
    }
    if !ticked.load(Ordering::Relaxed) {
        return not_ready("the loop has not ticked yet");
    }
    (StatusCode::OK, "ready\n".to_string())
}

async fn metrics(State(state): State<AppState>) -> ([(axum::http::HeaderName, &'static str); 1], String) {
    let content_type = "application/openmetrics-text; version=1.0.0; charset=utf-8";
    ([(axum::http::header::CONTENT_TYPE, content_type)], crate::telemetry::encode(&state.registry))
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
        let ticked = Arc::new(AtomicBool::new(false));
        let state = AppState { loop_ready: Some(ticked.clone()), ..AppState::default() };
        assert_eq!(status(app(state.clone()), "/healthz").await, StatusCode::OK);
        assert_eq!(status(app(state.clone()), "/readyz").await, StatusCode::SERVICE_UNAVAILABLE);
        state.ready.store(true, Ordering::Relaxed);
        assert_eq!(
            status(app(state.clone()), "/readyz").await,
            StatusCode::SERVICE_UNAVAILABLE,
            "not ticked"
        );
        ticked.store(true, Ordering::Relaxed);
        assert_eq!(status(app(state), "/readyz").await, StatusCode::OK);
    }

    #[tokio::test]
    async fn without_a_platform_readyz_is_503_and_names_what_is_missing_even_with_policies() {
        let state = AppState::default();
        state.ready.store(true, Ordering::Relaxed);
        let response =
            app(state).oneshot(Request::get("/readyz").body(Body::empty()).unwrap()).await.unwrap();
        assert_eq!(response.status(), StatusCode::SERVICE_UNAVAILABLE);
        let body = axum::body::to_bytes(response.into_body(), 1 << 16).await.unwrap();
        let text = String::from_utf8_lossy(&body);
        assert!(text.contains("[[services]]") && text.contains("no platform"), "{text}");
    }

    #[tokio::test]
    async fn metrics_are_served_in_the_text_format() {
        let mut registry = crate::telemetry::registry();
        let source = crate::source::prometheus::QueryMetrics::register(&mut registry);
        let state = AppState { registry: Arc::new(registry), ..AppState::default() };
        let before =
            app(state.clone()).oneshot(Request::get("/metrics").body(Body::empty()).unwrap()).await.unwrap();
        let before = axum::body::to_bytes(before.into_body(), 1 << 20).await.unwrap();
        assert!(
            !String::from_utf8(before.to_vec()).unwrap().contains("canaryd_prometheus_up 0"),
            "no query yet: unknown, not down"
        );
        source.set_up(true);
        let response =
            app(state).oneshot(Request::get("/metrics").body(Body::empty()).unwrap()).await.unwrap();
        assert_eq!(response.status(), StatusCode::OK);
        let body = axum::body::to_bytes(response.into_body(), 1 << 20).await.unwrap();
        let text = String::from_utf8(body.to_vec()).unwrap();
        assert!(text.contains("canaryd_prometheus_up 1"), "{text}");
        assert!(text.ends_with("# EOF\n"), "{text}");
    }
}
