//! The control API, under `/api/v1`:
//!
//! - `GET rollouts` and `GET rollouts/{namespace}/{name}`: where each rollout stands; the
//!   detail adds each metric's latest verdict with its canary and baseline values, and
//!   the decisions with their evidence.
//! - `POST rollouts` starts a rollout of a declared service (local platform).
//! - `POST rollouts/{namespace}/{name}/{promote|abort|pause|resume}`: operator commands,
//!   recorded with the caller the token names.
//! - `GET records` and `GET records/{id}`: the deployment records.
//! - `POST alertmanager`: Alertmanager's webhook; a firing alert that a policy lists as a
//!   trigger rolls back the rollout of the workload its labels name.
//!
//! Calls that change something need `Authorization: Bearer <token>`: 401 without one,
//! 403 with one that is not configured (or when none is), before any other answer, 503
//! included. Reads are open unless `server.read_requires_token`. Errors are `{"error": "..."}` and never carry internal
//! detail (paths, addresses, secrets).

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;

use axum::Json;
use axum::extract::rejection::JsonRejection;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Serialize};
use subtle::ConstantTimeEq;

use crate::config::Secret;
use crate::daemon::metrics::AlertLabels;
use crate::daemon::view::RolloutView;
use crate::daemon::{FiringAlert, LoopSender};
use crate::engine::{Command, Decision, Phase, RolloutId};
use crate::platform::{StartError, StartsRollouts};
use crate::server::{ApiMetrics, AppState, CommandLabels};
use crate::store::RolloutReader;

/// Who may call the API. It is checked before anything else, so it is known whether
/// or not a loop runs.
#[derive(Clone, Default)]
pub struct Access {
    /// Bearer tokens by caller name; none makes the API read-only.
    pub tokens: Arc<BTreeMap<String, Secret>>,
    /// Whether reads need a token too.
    pub read_requires_token: bool,
}

/// What the API needs from the running daemon.
#[derive(Clone)]
pub struct Api {
    /// Where `POST rollouts` starts rollouts: the local platform (none: not offered).
    pub platform: Option<Arc<dyn StartsRollouts>>,
    /// Where each rollout stands (refreshed every tick).
    pub views: tokio::sync::watch::Receiver<Vec<RolloutView>>,
    /// Operator commands to the loop: rollout, command, caller.
    pub commands: LoopSender<(RolloutId, Command, String)>,
    /// Firing alerts to the loop.
    pub alerts: LoopSender<FiringAlert>,
    /// Wakes the loop, so that a command or an alert is taken at once.
    pub wake: Arc<tokio::sync::Notify>,
    /// The rollouts' stored states and timelines (for the detail view).
    pub store: Option<Arc<dyn RolloutReader>>,
    /// Where the deployment records are.
    pub records_dir: Option<PathBuf>,
    /// The API's own metrics.
    pub metrics: ApiMetrics,
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

/// A command's answer.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
pub struct CommandAnswer {
    /// `namespace/name`.
    pub rollout: String,
    /// `promote`, `abort`, `pause` or `resume`.
    pub command: String,
    /// The caller, as its token names it (recorded in the decision).
    pub by: String,
    /// `accepted`: the loop takes it at once (its decision then shows in the rollout).
    pub status: String,
}

/// One metric's latest verdict with the values behind it.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
pub struct LatestValue {
    /// The metric's name in the policy.
    pub metric: String,
    /// `pass`, `fail`, `fail (conclusive)`, `inconclusive`, `insufficient`.
    pub verdict: String,
    /// The canary's value (none: no data).
    pub canary: Option<f64>,
    /// The baseline's value (none: no data).
    pub baseline: Option<f64>,
}

/// `GET /api/v1/rollouts/{namespace}/{name}`.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct RolloutDetail {
    /// Where it stands.
    #[serde(flatten)]
    pub view: RolloutView,
    /// Each metric's latest verdict and values (empty before the first interval).
    pub latest: Vec<LatestValue>,
    /// When the latest interval ended.
    pub latest_at: Option<jiff::Timestamp>,
    /// The decisions, with their evidence.
    pub decisions: Vec<Decision>,
}

/// A line of `GET /api/v1/records`.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct RecordSummary {
    /// `namespace/name@revision`.
    pub id: String,
    /// Final phase.
    pub outcome: String,
    /// The policy.
    pub policy: String,
    /// When traffic first moved.
    pub started_at: Option<jiff::Timestamp>,
    /// When it ended.
    pub finished_at: Option<jiff::Timestamp>,
    /// The reason of the last decision that rested on evidence or triggers.
    pub reason: String,
}

/// A refusal, boxed (a response is large).
type Refused = Box<Response>;

/// An error answer: `{"error": "..."}`.
fn error(status: StatusCode, message: impl Into<String>) -> Response {
    (status, Json(serde_json::json!({ "error": message.into() }))).into_response()
}

/// The caller whose configured token `given` is. Every token is compared, each in
/// constant time, so the time taken says neither which one came close nor how close. A
/// token of another length never matches (`subtle` tells only that the lengths differ).
fn owner<'a>(tokens: &'a BTreeMap<String, Secret>, given: &[u8]) -> Option<&'a str> {
    let mut found = None;
    for (name, token) in tokens {
        if bool::from(given.ct_eq(token.expose().as_bytes())) {
            found = Some(name.as_str());
        }
    }
    found
}

/// The caller the request's token names; else the refusal.
fn caller(access: &Access, headers: &HeaderMap) -> Result<String, Refused> {
    if access.tokens.is_empty() {
        return Err(Box::new(error(
            StatusCode::FORBIDDEN,
            "the API is read-only: no token is configured (server.api_token or server.tokens)",
        )));
    }
    let given = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .map(str::trim);
    let Some(given) = given else {
        let mut response = error(
            StatusCode::UNAUTHORIZED,
            "send a token of server.tokens as `Authorization: Bearer <token>`",
        );
        response.headers_mut().insert(header::WWW_AUTHENTICATE, "Bearer".parse().expect("a header value"));
        return Err(Box::new(response));
    };
    owner(&access.tokens, given.as_bytes())
        .map(str::to_string)
        .ok_or_else(|| Box::new(error(StatusCode::FORBIDDEN, "the bearer token is not one of server.tokens")))
}

fn readable(access: &Access, headers: &HeaderMap) -> Result<(), Refused> {
    if access.read_requires_token { caller(access, headers).map(|_| ()) } else { Ok(()) }
}

/// The body, or the answer to a bad one: 413 when too large, 400 otherwise.
fn body<T>(body: Result<Json<T>, JsonRejection>, expected: &str) -> Result<T, Refused> {
    match body {
        Ok(Json(body)) => Ok(body),
        Err(e) if e.status() == StatusCode::PAYLOAD_TOO_LARGE => Err(Box::new(error(
            StatusCode::PAYLOAD_TOO_LARGE,
            "the body is larger than server.max_body_bytes",
        ))),
        Err(e) => Err(Box::new(error(
            StatusCode::BAD_REQUEST,
            format!("body: {}; expected {expected}", e.body_text()),
        ))),
    }
}

/// `POST /api/v1/rollouts`.
pub async fn start(
    State(AppState { access, api, .. }): State<AppState>,
    headers: HeaderMap,
    request: Result<Json<StartRequest>, JsonRejection>,
) -> Response {
    if let Err(refusal) = caller(&access, &headers) {
        return *refusal;
    }
    let Some(api) = api else { return no_loop() };
    let Some(platform) = api.platform.clone() else {
        return error(StatusCode::NOT_FOUND, "rollouts start from the platform here, not the API");
    };
    let request = match body(request, r#"{"service": "...", "revision": "..."}"#) {
        Ok(r) => r,
        Err(e) => return *e,
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
        let id = platform.rollout_of(&request.service).map(|id| id.to_string());
        return (StatusCode::OK, Json(answer(id.unwrap_or_default(), "running"))).into_response();
    }
    match platform.start(&request.service, &request.revision).await {
        Ok(id) => {
            tracing::info!(rollout = %id, revision = %request.revision, "rollout requested through the API");
            api.wake.notify_one();
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
pub async fn list(State(AppState { access, api, .. }): State<AppState>, headers: HeaderMap) -> Response {
    if let Err(refusal) = readable(&access, &headers) {
        return *refusal;
    }
    let Some(api) = api else { return no_loop() };
    let views = api.views.borrow().clone();
    Json(views).into_response()
}

fn find(api: &Api, namespace: &str, name: &str) -> Result<RolloutView, Refused> {
    let found = api.views.borrow().iter().find(|v| v.namespace == namespace && v.name == name).cloned();
    found.ok_or_else(|| Box::new(error(StatusCode::NOT_FOUND, format!("no rollout {namespace}/{name}"))))
}

/// `GET /api/v1/rollouts/{namespace}/{name}`.
pub async fn one(
    State(AppState { access, api, .. }): State<AppState>,
    headers: HeaderMap,
    Path((namespace, name)): Path<(String, String)>,
) -> Response {
    if let Err(refusal) = readable(&access, &headers) {
        return *refusal;
    }
    let Some(api) = api else { return no_loop() };
    let view = match find(&api, &namespace, &name) {
        Ok(v) => v,
        Err(e) => return *e,
    };
    let id = RolloutId { namespace, name };
    let (mut decisions, mut latest, mut latest_at) = (Vec::new(), Vec::new(), None);
    if let Some(store) = &api.store {
        match store.state(&id).await {
            Ok(Some(state)) if state.rollout.revision == view.revision => decisions = state.rollout.decisions,
            Ok(_) => {}
            Err(e) => {
                tracing::error!(rollout = %id, error = %e, "cannot read the rollout's state for the API")
            }
        }
        if let Some(point) = store.latest(&id) {
            latest_at = Some(point.at);
            latest = view
                .metrics
                .iter()
                .zip(point.outcomes.chars())
                .zip(&point.values)
                .map(|((m, letter), (canary, baseline))| LatestValue {
                    metric: m.name.clone(),
                    verdict: crate::daemon::view::verdict(letter),
                    canary: *canary,
                    baseline: *baseline,
                })
                .collect();
        }
    }
    Json(RolloutDetail { view, latest, latest_at, decisions }).into_response()
}

/// `POST /api/v1/rollouts/{namespace}/{name}/{command}`.
pub async fn command(
    State(AppState { access, api, .. }): State<AppState>,
    headers: HeaderMap,
    Path((namespace, name, verb)): Path<(String, String, String)>,
) -> Response {
    let by = match caller(&access, &headers) {
        Ok(by) => by,
        Err(refusal) => return *refusal,
    };
    let Some(api) = api else { return no_loop() };
    let commands = [Command::Promote, Command::Abort, Command::Pause, Command::Resume];
    let Some(command) = commands.into_iter().find(|c| c.verb() == verb) else {
        return error(StatusCode::NOT_FOUND, format!("no command `{verb}`: promote, abort, pause or resume"));
    };
    let view = match find(&api, &namespace, &name) {
        Ok(v) => v,
        Err(e) => return *e,
    };
    let phase = Phase::ALL.iter().copied().find(|p| p.name() == view.phase);
    if let Some(why) = phase.and_then(|p| command.refusal(p)) {
        return error(
            StatusCode::CONFLICT,
            format!("rollout {namespace}/{name} revision {}: {why}", view.revision),
        );
    }
    let id = RolloutId { namespace, name };
    if api.commands.send((id.clone(), command, by.clone())).is_err() {
        return no_loop();
    }
    api.wake.notify_one();
    api.metrics.commands.get_or_create(&CommandLabels { command: command.verb() }).inc();
    tracing::info!(rollout = %id, command = command.verb(), by, "operator command accepted");
    let answer = CommandAnswer {
        rollout: id.to_string(),
        command: command.verb().into(),
        by,
        status: "accepted".into(),
    };
    (StatusCode::ACCEPTED, Json(answer)).into_response()
}

/// `GET /api/v1/records`.
pub async fn records(State(AppState { access, api, .. }): State<AppState>, headers: HeaderMap) -> Response {
    if let Err(refusal) = readable(&access, &headers) {
        return *refusal;
    }
    let Some(api) = api else { return no_loop() };
    let Some(dir) = api.records_dir.clone() else { return Json(Vec::<RecordSummary>::new()).into_response() };
    let summaries = tokio::task::spawn_blocking(move || {
        crate::daemon::records::list(&dir)
            .iter()
            .filter_map(|f| crate::daemon::records::read(f).ok())
            .map(|r| RecordSummary {
                id: r.id.clone(),
                outcome: r.outcome.name().into(),
                policy: r.policy.clone(),
                started_at: r.started_at,
                finished_at: r.finished_at,
                reason: r.deciding_reason().to_string(),
            })
            .collect::<Vec<_>>()
    })
    .await
    .unwrap_or_default();
    Json(summaries).into_response()
}

/// `GET /api/v1/records/{id}`: by id (`namespace/name@revision`, the latest of that id).
pub async fn record(
    State(AppState { access, api, .. }): State<AppState>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Response {
    if let Err(refusal) = readable(&access, &headers) {
        return *refusal;
    }
    let Some(api) = api else { return no_loop() };
    let Some(dir) = api.records_dir.clone() else {
        return error(StatusCode::NOT_FOUND, format!("no record {id}"));
    };
    let wanted = id.clone();
    let found = tokio::task::spawn_blocking(move || {
        crate::daemon::records::list(&dir)
            .iter()
            .rev()
            .find_map(|f| crate::daemon::records::read(f).ok().filter(|r| r.id == wanted))
    })
    .await
    .ok()
    .flatten();
    match found {
        Some(r) => Json(r).into_response(),
        None => error(StatusCode::NOT_FOUND, format!("no record {id}")),
    }
}

/// Alertmanager's webhook body (version 4); fields canaryd does not use are ignored.
#[derive(Deserialize, Debug)]
pub struct AlertmanagerPayload {
    /// The alerts of the group.
    pub alerts: Vec<AlertmanagerAlert>,
}

/// One alert of the group.
#[derive(Deserialize, Debug)]
pub struct AlertmanagerAlert {
    /// `firing` or `resolved`.
    pub status: String,
    /// Its labels: `alertname`, and the workload's (`namespace`, and `rollout`,
    /// `workload`, `deployment` or `service`).
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
    /// Its annotations (`summary`, `description`).
    #[serde(default)]
    pub annotations: BTreeMap<String, String>,
}

pub use crate::source::alertmanager::WORKLOAD_LABELS;

/// `POST /api/v1/alertmanager`.
pub async fn alertmanager(
    State(AppState { access, api, .. }): State<AppState>,
    headers: HeaderMap,
    payload: Result<Json<AlertmanagerPayload>, JsonRejection>,
) -> Response {
    if let Err(refusal) = caller(&access, &headers) {
        return *refusal;
    }
    let Some(api) = api else { return no_loop() };
    let payload = match body(payload, "Alertmanager's webhook payload (version 4)") {
        Ok(p) => p,
        Err(e) => return *e,
    };
    let count = |result| api.metrics.alerts.get_or_create(&AlertLabels { result }).inc();
    let mut firing = 0;
    for alert in &payload.alerts {
        if alert.status != "firing" {
            count("resolved");
            continue;
        }
        let Some(name) = alert.labels.get("alertname") else {
            count("malformed");
            continue;
        };
        let workloads: Vec<String> =
            WORKLOAD_LABELS.iter().filter_map(|l| alert.labels.get(*l)).cloned().collect();
        if workloads.is_empty() {
            count("no-rollout");
            continue;
        }
        let detail = alert
            .annotations
            .get("summary")
            .or_else(|| alert.annotations.get("description"))
            .cloned()
            .unwrap_or_default();
        let firing_alert = FiringAlert {
            alert: name.clone(),
            namespace: alert.labels.get("namespace").cloned(),
            workloads,
            detail: detail.chars().take(500).collect(),
        };
        if api.alerts.send(firing_alert).is_err() {
            return no_loop();
        }
        firing += 1;
    }
    if firing > 0 {
        api.wake.notify_one();
    }
    Json(serde_json::json!({ "received": payload.alerts.len(), "firing": firing })).into_response()
}

/// Any other path.
pub async fn not_found() -> Response {
    error(StatusCode::NOT_FOUND, "no such endpoint; see /api/v1/rollouts")
}

fn no_loop() -> Response {
    error(StatusCode::SERVICE_UNAVAILABLE, crate::server::NO_PLATFORM)
}

#[cfg(test)]
mod tests {
    use axum::body::Body;
    use axum::http::Request;
    use tokio::sync::mpsc::UnboundedReceiver;
    use tower::ServiceExt;

    use super::*;
    use crate::config::{LocalSettings, NginxSettings, ServiceSettings};
    use crate::daemon::view::MetricView;
    use crate::platform::Platform as _;
    use crate::platform::local::LocalPlatform;

    const ALICE: &str = "alice-token-0123456789";
    const AM: &str = "alertmanager-token-0123";

    struct Fixture {
        state: crate::server::AppState,
        platform: Arc<LocalPlatform>,
        views: tokio::sync::watch::Sender<Vec<RolloutView>>,
        commands: UnboundedReceiver<(RolloutId, Command, String)>,
        alerts: UnboundedReceiver<FiringAlert>,
        _dir: tempfile::TempDir,
    }

    fn view(phase: &str) -> RolloutView {
        RolloutView {
            namespace: "local".into(),
            name: "web".into(),
            revision: "v2".into(),
            policy: "local/web".into(),
            phase: phase.into(),
            step: 1,
            steps: vec![10, 50, 100],
            weight: 10,
            applied_weight: Some(10),
            metrics: vec![MetricView { name: "errors".into(), verdict: "pass".into() }],
            triggers: vec![],
            intervals: 3,
            last_decision: None,
            started_at: None,
            finished_at: None,
        }
    }

    fn fixture(tokens: &[(&str, &str)], read_requires_token: bool) -> Fixture {
        let dir = tempfile::tempdir().unwrap();
        let settings = LocalSettings {
            nginx: NginxSettings {
                binary: "nginx".into(),
                args: vec![],
                include: dir.path().join("up.conf"),
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
        let (views, views_rx) = tokio::sync::watch::channel(Vec::new());
        let (commands_tx, commands) = tokio::sync::mpsc::unbounded_channel();
        let (alerts_tx, alerts) = tokio::sync::mpsc::unbounded_channel();
        let tokens = tokens.iter().map(|(n, t)| (n.to_string(), Secret::new(*t))).collect();
        let state = crate::server::AppState {
            api: Some(Api {
                platform: Some(platform.clone()),
                views: views_rx,
                commands: commands_tx.into(),
                alerts: alerts_tx.into(),
                wake: Arc::default(),
                store: None,
                records_dir: Some(dir.path().join("records")),
                metrics: ApiMetrics::default(),
            }),
            access: Access { tokens: Arc::new(tokens), read_requires_token },
            max_body_bytes: 4096,
            ..Default::default()
        };
        Fixture { state, platform, views, commands, alerts, _dir: dir }
    }

    async fn call(
        state: &crate::server::AppState,
        method: &str,
        path: &str,
        auth: Option<&str>,
        body: &str,
    ) -> (StatusCode, String) {
        let mut request =
            Request::builder().method(method).uri(path).header("content-type", "application/json");
        if let Some(token) = auth {
            request = request.header("authorization", format!("Bearer {token}"));
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
    async fn the_detail_view_reads_its_decisions_and_latest_values_through_the_store_seam() {
        use crate::store::{RunStore as _, TimelineStore as _};
        // The in-memory store, not the file store: the API holds any `RolloutReader`.
        let store = Arc::new(crate::store::memory::MemoryStore::default());
        let mut state = crate::store::tests::state("web");
        let at: jiff::Timestamp = "2026-12-02T10:00:00Z".parse().unwrap();
        state.rollout =
            crate::engine::step(&state.rollout, &crate::engine::Input::Start, at).unwrap().rollout;
        store.save_all(&[&state]).await.remove(0).unwrap();
        let point = crate::record::TimelinePoint {
            at,
            step: 0,
            weight: 10,
            outcomes: "F".into(),
            values: vec![(Some(0.031), Some(0.004))],
            triggers: vec![],
        };
        store.append_timeline(&state.rollout.id, &point).unwrap();
        let mut f = fixture(&[], false);
        f.state.api.as_mut().unwrap().store = Some(store);
        let shop_web = RolloutView { namespace: "shop".into(), ..view("progressing") };
        f.views.send(vec![shop_web]).unwrap();

        let (status, body) = call(&f.state, "GET", "/api/v1/rollouts/shop/web", None, "").await;
        assert_eq!(status, StatusCode::OK, "{body}");
        let detail: RolloutDetail = serde_json::from_str(&body).unwrap();
        let made: Vec<&str> = detail.decisions.iter().map(|d| d.action.name()).collect();
        assert_eq!(made, ["started"], "the stored decisions: {body}");
        assert_eq!(detail.latest_at, Some(at));
        assert_eq!(
            detail.latest,
            [LatestValue {
                metric: "errors".into(),
                verdict: "fail (conclusive)".into(),
                canary: Some(0.031),
                baseline: Some(0.004),
            }]
        );
    }

    #[tokio::test]
    async fn a_command_needs_a_token_401_without_one_403_with_a_wrong_one_and_names_the_caller() {
        let mut f = fixture(&[("alice", ALICE)], false);
        f.views.send_replace(vec![view("progressing")]);
        let path = "/api/v1/rollouts/local/web/pause";
        let (status, text) = call(&f.state, "POST", path, None, "").await;
        assert_eq!(status, StatusCode::UNAUTHORIZED, "{text}");
        let (status, text) = call(&f.state, "POST", path, Some("not-alices-token-000"), "").await;
        assert_eq!(status, StatusCode::FORBIDDEN, "{text}");
        assert!(f.commands.try_recv().is_err(), "nothing reaches the loop without the right token");
        let (status, text) = call(&f.state, "POST", path, Some(ALICE), "").await;
        assert_eq!(status, StatusCode::ACCEPTED, "{text}");
        let answer: CommandAnswer = serde_json::from_str(&text).unwrap();
        assert_eq!(answer.by, "alice");
        let (id, command, by) = f.commands.try_recv().expect("the command reaches the loop");
        assert_eq!((id.to_string(), command, by.as_str()), ("local/web".into(), Command::Pause, "alice"));
    }

    #[tokio::test]
    async fn a_command_the_phase_does_not_allow_is_a_409_saying_why() {
        let mut f = fixture(&[("alice", ALICE)], false);
        f.views.send_replace(vec![view("rolled-back")]);
        for verb in ["promote", "abort", "resume", "pause"] {
            let (status, text) =
                call(&f.state, "POST", &format!("/api/v1/rollouts/local/web/{verb}"), Some(ALICE), "").await;
            assert_eq!(status, StatusCode::CONFLICT, "{verb}: {text}");
            assert!(text.contains(&format!("cannot {verb} a rollout that is rolled-back")), "{text}");
        }
        f.views.send_replace(vec![view("progressing")]);
        let (status, text) =
            call(&f.state, "POST", "/api/v1/rollouts/local/web/resume", Some(ALICE), "").await;
        assert_eq!(status, StatusCode::CONFLICT, "{text}");
        assert!(text.contains("only when paused"), "{text}");
        assert!(f.commands.try_recv().is_err(), "no refused command reaches the loop");
    }

    #[tokio::test]
    async fn an_unknown_rollout_or_command_or_path_is_a_404_in_json() {
        let f = fixture(&[("alice", ALICE)], false);
        f.views.send_replace(vec![view("progressing")]);
        let (status, text) =
            call(&f.state, "POST", "/api/v1/rollouts/local/api/abort", Some(ALICE), "").await;
        assert_eq!(status, StatusCode::NOT_FOUND, "{text}");
        assert!(text.contains("no rollout local/api"), "{text}");
        let (status, text) = call(&f.state, "GET", "/api/v1/rollouts/shop/web", None, "").await;
        assert_eq!(status, StatusCode::NOT_FOUND, "{text}");
        let (status, text) =
            call(&f.state, "POST", "/api/v1/rollouts/local/web/explode", Some(ALICE), "").await;
        assert_eq!(status, StatusCode::NOT_FOUND, "{text}");
        assert!(text.contains("promote, abort, pause or resume"), "{text}");
        let (status, text) = call(&f.state, "GET", "/api/v2/anything", None, "").await;
        assert_eq!(status, StatusCode::NOT_FOUND);
        assert!(serde_json::from_str::<serde_json::Value>(&text).unwrap()["error"].is_string(), "{text}");
    }

    #[tokio::test]
    async fn an_oversized_body_is_a_413_and_an_invalid_one_a_400() {
        let f = fixture(&[("alice", ALICE)], false);
        let big = format!(r#"{{"service": "web", "revision": "{}"}}"#, "v".repeat(8192));
        let (status, text) = call(&f.state, "POST", "/api/v1/rollouts", Some(ALICE), &big).await;
        assert_eq!(status, StatusCode::PAYLOAD_TOO_LARGE, "{text}");
        let (status, _) = call(&f.state, "POST", "/api/v1/alertmanager", Some(ALICE), &big).await;
        assert_eq!(status, StatusCode::PAYLOAD_TOO_LARGE);
        let (status, text) = call(&f.state, "POST", "/api/v1/rollouts", Some(ALICE), "{not json").await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{text}");
        let (status, text) =
            call(&f.state, "POST", "/api/v1/alertmanager", Some(ALICE), r#"{"alerts": 3}"#).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{text}");
        assert!(f.platform.events().is_empty());
    }

    #[tokio::test]
    async fn reads_are_open_by_default_and_closed_when_configured() {
        let open = fixture(&[("alice", ALICE)], false);
        open.views.send_replace(vec![view("progressing")]);
        let (status, text) = call(&open.state, "GET", "/api/v1/rollouts", None, "").await;
        assert_eq!(status, StatusCode::OK, "{text}");
        let listed: Vec<RolloutView> = serde_json::from_str(&text).unwrap();
        assert_eq!(listed, vec![view("progressing")]);
        let (status, text) = call(&open.state, "GET", "/api/v1/rollouts/local/web", None, "").await;
        assert_eq!(status, StatusCode::OK, "{text}");
        let detail: RolloutDetail = serde_json::from_str(&text).unwrap();
        assert_eq!(detail.view, view("progressing"));

        let closed = fixture(&[("alice", ALICE)], true);
        for path in ["/api/v1/rollouts", "/api/v1/records", "/api/v1/rollouts/local/web"] {
            let (status, _) = call(&closed.state, "GET", path, None, "").await;
            assert_eq!(status, StatusCode::UNAUTHORIZED, "{path}");
        }
        let (status, _) = call(&closed.state, "GET", "/api/v1/rollouts", Some(ALICE), "").await;
        assert_eq!(status, StatusCode::OK);
    }

    #[test]
    fn a_token_is_known_only_when_every_byte_and_the_length_match() {
        let tokens: BTreeMap<String, Secret> = [("alice", ALICE), ("alertmanager", AM)]
            .iter()
            .map(|(n, t)| (n.to_string(), Secret::new(*t)))
            .collect();
        assert_eq!(owner(&tokens, ALICE.as_bytes()), Some("alice"));
        assert_eq!(owner(&tokens, AM.as_bytes()), Some("alertmanager"));
        let mut last_off = ALICE.as_bytes().to_vec();
        *last_off.last_mut().unwrap() ^= 1;
        let longer = format!("{ALICE}0");
        for wrong in [&ALICE.as_bytes()[..ALICE.len() - 1], &last_off, longer.as_bytes(), b"", b"alice"] {
            assert_eq!(owner(&tokens, wrong), None, "{:?}", String::from_utf8_lossy(wrong));
        }
        assert_eq!(owner(&BTreeMap::new(), ALICE.as_bytes()), None);
    }

    /// Every endpoint that changes something, with a body it would take.
    const COMMANDS: [(&str, &str); 6] = [
        ("/api/v1/rollouts/local/web/promote", ""),
        ("/api/v1/rollouts/local/web/abort", ""),
        ("/api/v1/rollouts/local/web/pause", ""),
        ("/api/v1/rollouts/local/web/resume", ""),
        ("/api/v1/rollouts", r#"{"service": "web", "revision": "v2"}"#),
        ("/api/v1/alertmanager", r#"{"alerts": []}"#),
    ];

    #[tokio::test]
    async fn without_a_loop_a_command_is_still_refused_401_or_403_before_the_503() {
        let mut f = fixture(&[("alice", ALICE)], false);
        f.state.api = None;
        for (path, body) in COMMANDS {
            let (status, text) = call(&f.state, "POST", path, None, body).await;
            assert_eq!(status, StatusCode::UNAUTHORIZED, "{path} without a token: {text}");
            let (status, text) = call(&f.state, "POST", path, Some("not-alices-token-000"), body).await;
            assert_eq!(status, StatusCode::FORBIDDEN, "{path} with a wrong token: {text}");
            let (status, text) = call(&f.state, "POST", path, Some(ALICE), body).await;
            assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{path} with alice's token: {text}");
        }
        let mut read_only = fixture(&[], false);
        read_only.state.api = None;
        for (path, body) in COMMANDS {
            let (status, text) = call(&read_only.state, "POST", path, Some(ALICE), body).await;
            assert_eq!(status, StatusCode::FORBIDDEN, "{path} with no token configured: {text}");
            assert!(text.contains("read-only"), "{text}");
        }
        let mut closed = fixture(&[("alice", ALICE)], true);
        closed.state.api = None;
        for path in ["/api/v1/rollouts", "/api/v1/records", "/api/v1/rollouts/local/web"] {
            let (status, text) = call(&closed.state, "GET", path, None, "").await;
            assert_eq!(status, StatusCode::UNAUTHORIZED, "{path} without a token: {text}");
        }
    }

    #[tokio::test]
    async fn a_command_is_refused_for_its_token_before_anything_about_its_target_or_body() {
        let mut f = fixture(&[("alice", ALICE)], false);
        f.views.send_replace(vec![view("rolled-back")]);
        let big = format!(r#"{{"service": "web", "revision": "{}"}}"#, "v".repeat(8192));
        // Each would be a 404, 409, 400 or 413 with alice's token.
        let cases = [
            ("/api/v1/rollouts/local/api/abort", ""),
            ("/api/v1/rollouts/local/web/explode", ""),
            ("/api/v1/rollouts/local/web/promote", ""),
            ("/api/v1/rollouts", "{not json"),
            ("/api/v1/rollouts", big.as_str()),
            ("/api/v1/rollouts", r#"{"service": "api", "revision": "v2"}"#),
            ("/api/v1/alertmanager", r#"{"alerts": 3}"#),
        ];
        let read_only = fixture(&[], false);
        read_only.views.send_replace(vec![view("rolled-back")]);
        for (path, body) in cases {
            let (status, text) = call(&f.state, "POST", path, None, body).await;
            assert_eq!(status, StatusCode::UNAUTHORIZED, "{path} without a token: {text}");
            let (status, text) = call(&f.state, "POST", path, Some("not-alices-token-000"), body).await;
            assert_eq!(status, StatusCode::FORBIDDEN, "{path} with a wrong token: {text}");
            let (status, text) = call(&read_only.state, "POST", path, Some(ALICE), body).await;
            assert_eq!(status, StatusCode::FORBIDDEN, "{path} with no token configured: {text}");
        }
        assert!(f.commands.try_recv().is_err() && f.alerts.try_recv().is_err());
        assert!(f.platform.events().is_empty() && read_only.platform.events().is_empty());
    }

    #[tokio::test]
    async fn without_tokens_the_api_is_read_only() {
        let f = fixture(&[], false);
        f.views.send_replace(vec![view("progressing")]);
        let (status, text) = call(
            &f.state,
            "POST",
            "/api/v1/rollouts",
            Some(ALICE),
            r#"{"service": "web", "revision": "v2"}"#,
        )
        .await;
        assert_eq!(status, StatusCode::FORBIDDEN);
        assert!(text.contains("read-only"), "{text}");
        let (status, _) = call(&f.state, "POST", "/api/v1/rollouts/local/web/abort", Some(ALICE), "").await;
        assert_eq!(status, StatusCode::FORBIDDEN);
        assert!(f.platform.events().is_empty());
    }

    #[tokio::test]
    async fn starting_a_rollout_takes_a_known_service() {
        let f = fixture(&[("alice", ALICE)], false);
        let body = r#"{"service": "web", "revision": "v2"}"#;
        let (status, text) = call(
            &f.state,
            "POST",
            "/api/v1/rollouts",
            Some(ALICE),
            r#"{"service": "api", "revision": "v2"}"#,
        )
        .await;
        assert_eq!(status, StatusCode::NOT_FOUND);
        assert!(text.contains("no service `api`"), "{text}");
        let (status, text) =
            call(&f.state, "POST", "/api/v1/rollouts", Some(ALICE), r#"{"service": "web"}"#).await;
        assert_eq!(status, StatusCode::BAD_REQUEST);
        assert!(text.contains("revision"), "{text}");
        let (status, text) = call(&f.state, "POST", "/api/v1/rollouts", Some(ALICE), body).await;
        assert_eq!(status, StatusCode::ACCEPTED, "{text}");
        let events = f.platform.events();
        let [crate::platform::RolloutEvent::Revision(event)] = &events[..] else {
            panic!("one new revision: {events:?}")
        };
        assert_eq!((event.id.to_string(), event.revision.as_str()), ("local/web".into(), "v2"));
        assert_eq!((event.arms.canary.as_str(), event.arms.baseline.as_str()), ("web-canary", "web"));
    }

    /// Alertmanager's webhook body, as its documentation gives it (version 4).
    type Alert<'a> = (&'a str, &'a str, &'a [(&'a str, &'a str)]);

    fn payload(alerts: &[Alert<'_>]) -> String {
        let alerts: Vec<serde_json::Value> = alerts
            .iter()
            .map(|(status, name, labels)| {
                let mut l: serde_json::Map<String, serde_json::Value> =
                    labels.iter().map(|(k, v)| (k.to_string(), (*v).into())).collect();
                l.insert("alertname".into(), (*name).into());
                serde_json::json!({
                    "status": status, "labels": l,
                    "annotations": {"summary": "5xx above 5% on web-canary"},
                    "startsAt": "2026-11-23T10:00:00Z", "endsAt": "0001-01-01T00:00:00Z",
                    "generatorURL": "http://prometheus/graph", "fingerprint": "0123456789abcdef"
                })
            })
            .collect();
        serde_json::json!({
            "version": "4", "groupKey": "{}:{alertname=\"X\"}", "truncatedAlerts": 0, "status": "firing",
            "receiver": "canaryd", "groupLabels": {}, "commonLabels": {}, "commonAnnotations": {},
            "externalURL": "http://alertmanager:9093", "alerts": alerts
        })
        .to_string()
    }

    #[tokio::test]
    async fn alertmanager_firing_alerts_reach_the_loop_and_resolved_ones_do_not() {
        let mut f = fixture(&[("alice", ALICE), ("alertmanager", AM)], false);
        let body = payload(&[
            ("firing", "WebCanaryErrors", &[("namespace", "local"), ("deployment", "web-canary")]),
            ("resolved", "WebCanaryErrors", &[("namespace", "local"), ("deployment", "web-canary")]),
            ("firing", "NoWorkload", &[("severity", "page")]),
        ]);
        let (status, _) = call(&f.state, "POST", "/api/v1/alertmanager", None, &body).await;
        assert_eq!(status, StatusCode::UNAUTHORIZED);
        let (status, text) = call(&f.state, "POST", "/api/v1/alertmanager", Some(AM), &body).await;
        assert_eq!(status, StatusCode::OK, "{text}");
        let got = f.alerts.try_recv().expect("the firing alert reaches the loop");
        assert_eq!(
            got,
            FiringAlert {
                alert: "WebCanaryErrors".into(),
                namespace: Some("local".into()),
                workloads: vec!["web-canary".into()],
                detail: "5xx above 5% on web-canary".into(),
            }
        );
        assert!(f.alerts.try_recv().is_err(), "the resolved alert and the one naming no workload do not");
    }

    #[tokio::test]
    async fn records_are_listed_and_shown_by_id() {
        let f = fixture(&[("alice", ALICE)], false);
        let policy = "apiVersion: canaryd.io/v1alpha1\nkind: CanaryPolicy\nmetadata: {name: web, namespace: local}\nspec:\n  selector: {matchLabels: {app: web}}\n  analysis:\n    metrics:\n      - {name: errors, template: http-error-rate, test: sequential}\n";
        let loaded = crate::policy::load_str("p.yaml", policy);
        assert!(loaded.problems.is_empty(), "{:?}", loaded.problems);
        let id = RolloutId { namespace: "local".into(), name: "web".into() };
        let mut rollout = crate::engine::Rollout::new(id, "v7", loaded.policies[0].plan.clone());
        rollout.finished_at = Some(jiff::Timestamp::now());
        let record = crate::record::DeploymentRecord::of(&rollout, Default::default());
        let store = crate::daemon::records::RecordStore::open(
            f.state.api.as_ref().unwrap().records_dir.clone().unwrap(),
            Default::default(),
        )
        .unwrap();
        store.write(&record, jiff::Timestamp::now()).unwrap();
        let (status, text) = call(&f.state, "GET", "/api/v1/records", None, "").await;
        assert_eq!(status, StatusCode::OK, "{text}");
        let listed: Vec<RecordSummary> = serde_json::from_str(&text).unwrap();
        assert_eq!(listed.iter().map(|r| r.id.as_str()).collect::<Vec<_>>(), ["local/web@v7"]);
        let (status, text) = call(&f.state, "GET", "/api/v1/records/local/web@v7", None, "").await;
        assert_eq!(status, StatusCode::OK, "{text}");
        let shown: crate::record::DeploymentRecord = serde_json::from_str(&text).unwrap();
        assert_eq!(shown.revision, "v7");
        let (status, _) = call(&f.state, "GET", "/api/v1/records/local/web@v8", None, "").await;
        assert_eq!(status, StatusCode::NOT_FOUND);
    }
}
