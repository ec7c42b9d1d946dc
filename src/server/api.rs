//! The control API, under `/api/v1`:
//!
//! - `GET rollouts` and `GET rollouts/{namespace}/{name}`: where each rollout stands; the
//!   detail adds each metric's latest verdict with its canary and baseline values, and
//!   the decisions with their evidence.
//! - `POST rollouts` starts a rollout of a declared service (local platform).
//! - `POST rollouts/{namespace}/{name}/{promote|abort|pause|resume|approve|revert}`: operator commands,
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
use crate::daemon::{CommandOutcome, OperatorCommand};
use crate::daemon::{FiringAlert, LoopSender};
use crate::engine::{Command, Decision, Phase, RolloutId};
use crate::platform::{StartError, StartsRollouts};
use crate::policy::LoadedPolicy;
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
    /// The policies in force: a rollout none selects is refused at once.
    pub policies: tokio::sync::watch::Receiver<Arc<Vec<LoadedPolicy>>>,
    /// Operator commands to the loop, each told back once its decision is saved.
    pub commands: LoopSender<OperatorCommand>,
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
    /// With shards: where a rollout this replica does not drive is driven, if another
    /// replica holds its shard (`None`: every rollout is here).
    pub elsewhere: Option<Elsewhere>,
}

/// Names the replica that drives rollout (`namespace`, `name`) when it is not this one.
pub type Elsewhere = Arc<dyn Fn(&str, &str) -> Option<String> + Send + Sync>;

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
    /// `promote`, `abort`, `pause`, `resume`, `approve` or `revert`.
    pub command: String,
    /// The caller, as its token names it (recorded in the decision).
    pub by: String,
    /// `applied`: taken and saved (a restart keeps it); `accepted`: handed to the loop,
    /// which had not confirmed it within the wait (its decision then shows in the
    /// rollout).
    pub status: String,
    /// The `seq` of the decision it made, once applied.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub decision: Option<u64>,
}

/// How long a command's answer waits for the loop to take and save it: a few ticks.
const COMMAND_CONFIRM_WITHIN: std::time::Duration = std::time::Duration::from_secs(10);

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
    // A rollout no policy selects would never start: say so now, and why.
    if let (Some(id), Some(labels)) =
        (platform.rollout_of(&request.service), platform.labels_of(&request.service))
    {
        let policies = api.policies.borrow().clone();
        if crate::policy::selector::select(&policies, &id.namespace, &labels).is_none() {
            let why = crate::policy::selector::unselected(&policies, &id, &labels);
            return error(StatusCode::UNPROCESSABLE_ENTITY, format!("{why}; the rollout did not start"));
        }
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
    if found.is_none()
        && let Some(there) = api.elsewhere.as_ref().and_then(|e| e(namespace, name))
    {
        return Err(Box::new(error(StatusCode::SERVICE_UNAVAILABLE, there)));
    }
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
    let Some(command) = Command::ALL.into_iter().find(|c| c.verb() == verb) else {
        let verbs: Vec<&str> = Command::ALL.iter().map(|c| c.verb()).collect();
        return error(StatusCode::NOT_FOUND, format!("no command `{verb}`: {}", verbs.join(", ")));
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
    let (message, done) = OperatorCommand::confirmed(id.clone(), command, by.clone());
    if api.commands.send(message).is_err() {
        return no_loop();
    }
    api.wake.notify_one();
    tracing::info!(rollout = %id, command = command.verb(), by, "operator command sent to the loop");
    let mut answer = CommandAnswer {
        rollout: id.to_string(),
        command: command.verb().into(),
        by,
        status: "accepted".into(),
        decision: None,
    };
    // The answer says what became of it: saved, refused, or (a loop too busy to say)
    // handed over.
    let status = match tokio::time::timeout(COMMAND_CONFIRM_WITHIN, done).await {
        Ok(Ok(CommandOutcome::Applied { decision })) => {
            answer.status = "applied".into();
            answer.decision = Some(decision);
            StatusCode::OK
        }
        Ok(Ok(CommandOutcome::Refused(why))) => {
            return error(StatusCode::CONFLICT, format!("rollout {id} revision {}: {why}", view.revision));
        }
        Ok(Ok(CommandOutcome::Unknown)) => {
            return error(StatusCode::NOT_FOUND, format!("no rollout {id}"));
        }
        Ok(Err(_)) => return no_loop(),
        Err(_) => StatusCode::ACCEPTED,
    };
    api.metrics.commands.get_or_create(&CommandLabels { command: command.verb() }).inc();
    (status, Json(answer)).into_response()
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
                outcome: r.outcome_word().into(),
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

/// A route called with a method it does not take.
pub async fn method_not_allowed() -> Response {
    error(
        StatusCode::METHOD_NOT_ALLOWED,
        "this route does not take that method: reads are GET, commands and starts POST",
    )
}

/// While this replica stands by, reads of the rollouts are answered from their
/// CanaryRuns (when the stand-by serves them: `Api` set), and every other `/api/v1`
/// request (commands, alerts, records) is answered 503 naming the replica that holds
/// the Lease (after authentication, as any other answer).
pub async fn standing_by(
    State(state): State<AppState>,
    headers: HeaderMap,
    request: axum::extract::Request,
    next: axum::middleware::Next,
) -> Response {
    let Some(standby) = &state.standby else { return next.run(request).await };
    let read = request.method() == axum::http::Method::GET;
    let allowed =
        if read { readable(&state.access, &headers) } else { caller(&state.access, &headers).map(|_| ()) };
    if let Err(refusal) = allowed {
        return *refusal;
    }
    if read && state.api.is_some() && request.uri().path().starts_with("/api/v1/rollouts") {
        return next.run(request).await;
    }
    let leader = standby.leader().unwrap_or_else(|| "no replica yet".into());
    error(
        StatusCode::SERVICE_UNAVAILABLE,
        format!(
            "this replica stands by: {leader} holds the Lease and runs the rollouts; ask it (kubectl port-forward pod/{leader})"
        ),
    )
}

fn no_loop() -> Response {
    error(StatusCode::SERVICE_UNAVAILABLE, crate::server::NO_PLATFORM)
}

#[cfg(test)]
mod tests;
