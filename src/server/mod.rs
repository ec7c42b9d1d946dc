//! The HTTP surface (axum): health, readiness, and (in later parts) metrics and the API.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use axum::Router;
use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::get;

/// State shared with the HTTP handlers.
#[derive(Clone, Default)]
pub struct AppState {
    /// Set once policies are loaded and the daemon can act.
    pub ready: Arc<AtomicBool>,
}

/// Builds the router.
pub fn app(state: AppState) -> Router {
    Router::new().route("/healthz", get(|| async { "ok\n" })).route("/readyz", get(readyz)).with_state(state)
}

async fn readyz(State(state): State<AppState>) -> (StatusCode, &'static str) {
    if state.ready.load(Ordering::Relaxed) {
        (StatusCode::OK, "ready\n")
    } else {
        (StatusCode::SERVICE_UNAVAILABLE, "not ready\n")
    }
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
}
