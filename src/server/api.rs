//! The control API: `POST /api/v1/rollouts` starts a rollout on the local platform
//! (bearer token), `GET /api/v1/rollouts[/{service}]` shows where each stands.

use std::sync::Arc;

use axum::Json;
use axum::extract::rejection::JsonRejection;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Serialize};

use crate::config::Secret;
use crate::daemon::view::RolloutView;
use crate::platform::local::{LocalPlatform, StartError};

/// What the API needs from the running daemon.
#[derive(Clone)]
pub struct Api {
    /// The platform rollouts are started on.
    pub platform: Arc<LocalPlatform>,
    /// Where each rollout stands (refreshed every tick).
    pub views: tokio::sync::watch::Receiver<Vec<RolloutView>>,
    /// The bearer token of the calls that change something; none refuses them.
    pub token: Option<Secret>,
}

/// `POST /api/v1/rollouts`'s body.
#[derive(Serialize, Deserialize, Clone, Debug)]
pub struct StartRequest {
    /// The service, as declared in the settings.
    pub service: String,
    /// The canary's revision.
    pub revision: String,
}

/// `POST /api/v1/rollouts`'s answer.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
pub struct StartAnswer {
    /// `namespace/name`.
    pub rollout: String,
    /// The revision.
    pub revision: String,
    /// `accepted` (it starts at the next tick) or `running` (it already was).
    pub status: String,
}

/// An error answer: `{"error": "..."}`.
fn error(status: StatusCode, message: impl Into<String>) -> Response {
    (status, Json(serde_json::json!({ "error": message.into() }))).into_response()
}

/// Compares without an early exit, so the time taken says nothing about the token.
fn same(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// `None` when the request carries the token; else the refusal.
fn refused(api: &Api, headers: &HeaderMap) -> Option<Response> {
    let Some(token) = &api.token else {
        return Some(error(
            StatusCode::FORBIDDEN,
            "no server.api_token is set: the API is read-only until one is",
        ));
    };
    let given = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "));
    match given {
        Some(given) if same(given.trim().as_bytes(), token.expose().as_bytes()) => None,
        Some(_) => Some(unauthorised("the bearer token is wrong")),
        None => Some(unauthorised("send the token (server.api_token) as `Authorization: Bearer <token>`")),
    }
}

fn unauthorised(message: &str) -> Response {
    let mut response = error(StatusCode::UNAUTHORIZED, message);
    response.headers_mut().insert(header::WWW_AUTHENTICATE, "Bearer".parse().expect("a header value"));
    response
}

/// `POST /api/v1/rollouts`.
pub async fn start(
    State(api): State<Option<Api>>,
    headers: HeaderMap,
    body: Result<Json<StartRequest>, JsonRejection>,
) -> Response {
    let Some(api) = api else { return no_platform() };
    if let Some(refusal) = refused(&api, &headers) {
        return refusal;
    }
    let Json(request) = match body {
        Ok(body) => body,
        Err(e) => {
            return error(
                StatusCode::BAD_REQUEST,
                format!("body: {}; expected {{\"service\": \"...\", \"revision\": \"...\"}}", e.body_text()),
            );
        }
    };
    let running = api
        .views
        .borrow()
        .iter()
        .any(|v| v.name == request.service && v.revision == request.revision && v.finished_at.is_none());
    let answer = |id: String, status: &str| StartAnswer {
        rollout: id,
        revision: request.revision.clone(),
        status: status.to_string(),
    };
    if running {
        let id = api.platform.service(&request.service).map(|s| LocalPlatform::id_of(s).to_string());
        return (StatusCode::OK, Json(answer(id.unwrap_or_default(), "running"))).into_response();
    }
    match api.platform.start(&request.service, &request.revision).await {
        Ok(id) => {
            tracing::info!(rollout = %id, revision = %request.revision, "rollout requested through the API");
            (StatusCode::ACCEPTED, Json(answer(id.to_string(), "accepted"))).into_response()
        }
        Err(e @ StartError::UnknownService(_)) => error(StatusCode::NOT_FOUND, e.to_string()),
        Err(e @ StartError::BadRevision(_)) => error(StatusCode::BAD_REQUEST, e.to_string()),
        Err(e @ StartError::PreRollout(_)) => {
            tracing::warn!(service = %request.service, revision = %request.revision, error = %e, "pre-rollout hook failed");
            error(StatusCode::UNPROCESSABLE_ENTITY, e.to_string())
        }
    }
}

/// `GET /api/v1/rollouts`.
pub async fn list(State(api): State<Option<Api>>) -> Response {
    let Some(api) = api else { return no_platform() };
    let views = api.views.borrow().clone();
    Json(views).into_response()
}

/// `GET /api/v1/rollouts/{service}`.
pub async fn one(State(api): State<Option<Api>>, Path(service): Path<String>) -> Response {
    let Some(api) = api else { return no_platform() };
    if api.platform.service(&service).is_none() {
        return error(
            StatusCode::NOT_FOUND,
            format!("no service `{service}` in the settings ([[services]])"),
        );
    }
    let found = api.views.borrow().iter().find(|v| v.name == service).cloned();
    match found {
        Some(view) => Json(view).into_response(),
        None => error(StatusCode::NOT_FOUND, format!("no rollout of `{service}` yet")),
    }
}

fn no_platform() -> Response {
    error(StatusCode::SERVICE_UNAVAILABLE, "no platform is configured ([[services]] in the settings)")
}

#[cfg(test)]
mod tests {
    use axum::body::Body;
    use axum::http::Request;
    use tower::ServiceExt;

    use super::*;
    use crate::config::{LocalSettings, NginxSettings, ServiceSettings};
    use crate::daemon::platform::Platform as _;

    fn api(dir: &std::path::Path, token: Option<&str>) -> (crate::server::AppState, Arc<LocalPlatform>) {
        let settings = LocalSettings {
            nginx: NginxSettings {
                binary: "nginx".into(),
                args: vec![],
                include: dir.join("up.conf"),
                status_listen: "127.0.0.1:9".parse().unwrap(),
                timeout: std::time::Duration::from_secs(1),
            },
            services: vec![ServiceSettings {
                name: "web".into(),
                namespace: "local".into(),
                labels: [("app".to_string(), "web".to_string())].into(),
                stable: vec!["127.0.0.1:1".into()],
                canary: vec!["127.0.0.1:2".into()],
                stable_workload: "web".into(),
                canary_workload: "web-canary".into(),
                health_path: "/healthz".into(),
                hooks: Default::default(),
            }],
        };
        let platform = Arc::new(LocalPlatform::open(&settings, Default::default()).unwrap());
        let (_tx, views) = tokio::sync::watch::channel(Vec::new());
        let state = crate::server::AppState {
            api: Some(Api { platform: platform.clone(), views, token: token.map(Secret::new) }),
            ..Default::default()
        };
        (state, platform)
    }

    async fn post(state: &crate::server::AppState, auth: Option<&str>, body: &str) -> (StatusCode, String) {
        let mut request = Request::post("/api/v1/rollouts").header("content-type", "application/json");
        if let Some(auth) = auth {
            request = request.header("authorization", auth);
        }
        let response = crate::server::app(state.clone())
            .oneshot(request.body(Body::from(body.to_string())).unwrap())
            .await
            .unwrap();
        let status = response.status();
        let bytes = axum::body::to_bytes(response.into_body(), 1 << 20).await.unwrap();
        (status, String::from_utf8(bytes.to_vec()).unwrap())
    }

    #[tokio::test]
    async fn starting_a_rollout_takes_the_token_and_a_known_service() {
        let dir = tempfile::tempdir().unwrap();
        let (state, platform) = api(dir.path(), Some("s3cret"));
        let body = r#"{"service": "web", "revision": "v2"}"#;
        let (status, text) = post(&state, None, body).await;
        assert_eq!(status, StatusCode::UNAUTHORIZED, "{text}");
        let (status, _) = post(&state, Some("Bearer wrong"), body).await;
        assert_eq!(status, StatusCode::UNAUTHORIZED);
        assert!(platform.events().is_empty(), "nothing started without the token");
        let (status, text) =
            post(&state, Some("Bearer s3cret"), r#"{"service": "api", "revision": "v2"}"#).await;
        assert_eq!(status, StatusCode::NOT_FOUND);
        assert!(text.contains("no service `api`"), "{text}");
        let (status, text) = post(&state, Some("Bearer s3cret"), r#"{"service": "web"}"#).await;
        assert_eq!(status, StatusCode::BAD_REQUEST);
        assert!(text.contains("revision"), "{text}");
        let (status, text) = post(&state, Some("Bearer s3cret"), body).await;
        assert_eq!(status, StatusCode::ACCEPTED, "{text}");
        let events = platform.events();
        assert_eq!(events.len(), 1);
        assert_eq!((events[0].id.to_string(), events[0].revision.as_str()), ("local/web".into(), "v2"));
        assert_eq!((events[0].arms.canary.as_str(), events[0].arms.baseline.as_str()), ("web-canary", "web"));
    }

    #[tokio::test]
    async fn without_a_token_the_api_is_read_only() {
        let dir = tempfile::tempdir().unwrap();
        let (state, platform) = api(dir.path(), None);
        let (status, text) =
            post(&state, Some("Bearer anything"), r#"{"service": "web", "revision": "v2"}"#).await;
        assert_eq!(status, StatusCode::FORBIDDEN);
        assert!(text.contains("server.api_token"), "{text}");
        assert!(platform.events().is_empty());
        let response = crate::server::app(state)
            .oneshot(Request::get("/api/v1/rollouts/web").body(Body::empty()).unwrap())
            .await
            .unwrap();
        assert_eq!(response.status(), StatusCode::NOT_FOUND, "no rollout of web yet");
    }
}
