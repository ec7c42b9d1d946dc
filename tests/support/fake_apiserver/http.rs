//! The HTTP face of the fake: authenticates the bearer token, parses the API paths
//! (`/api/v1/…`, `/apis/{group}/{version}/…`, namespaced or not, with subresources),
//! maps methods to verbs, answers from the store, and logs every request with its
//! status code.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::extract::State;
use axum::http::{HeaderMap, Method, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::Value;

use super::discovery;
use super::patch::PatchType;
use super::resources::ResourceType;
use super::selector::{FieldSelector, LabelSelector, supported_fields};
use super::status::ApiError;
use super::store::{Key, ListOptions, Propagation, Store};
use super::watch::{self, WatchContext, WatchRequest};
use super::{Request, ResourceRef};

/// The prefix of every bearer token the fake issues: `fake-token-<client name>`.
pub const TOKEN_PREFIX: &str = "fake-token-";

/// What every request handler shares.
pub struct Shared {
    pub store: Arc<Mutex<Store>>,
    pub log: Mutex<Vec<Request>>,
    pub drops: tokio::sync::watch::Sender<u64>,
    pub bookmark_every: Mutex<Duration>,
    pub address: String,
    /// RBAC for the clients whose names start with a prefix.
    pub authorized: Mutex<Vec<(String, super::rbac::Grants)>>,
    /// Requests of (client, plural) held unanswered while the set holds them.
    pub holds: tokio::sync::watch::Sender<Vec<(String, String)>>,
}

impl Shared {
    pub fn store(&self) -> std::sync::MutexGuard<'_, Store> {
        self.store.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// The one handler: every path goes through it.
pub async fn handle(State(shared): State<Arc<Shared>>, request: axum::extract::Request) -> Response {
    let (parts, body) = request.into_parts();
    let path = parts.uri.path().to_string();
    let query = parts.uri.query().unwrap_or_default().to_string();
    let params: Vec<(String, String)> = url::form_urlencoded::parse(query.as_bytes()).into_owned().collect();
    let client = client_of(&parts.headers);
    let target = parse_path(&path);
    let verb = verb_of(&parts.method, &target, &params);
    let body = axum::body::to_bytes(body, 64 << 20).await.unwrap_or_default();
    if let (Some(client), Some(plural)) = (&client, target.as_ref().map(|t| t.plural.clone())) {
        let held = |holds: &Vec<(String, String)>| holds.iter().any(|(c, p)| c == client && *p == plural);
        let _ = shared.holds.subscribe().wait_for(|holds| !held(holds)).await;
    }
    let denied = match (&client, &target) {
        (Some(client), Some(target)) => {
            let authorized = shared.authorized.lock().unwrap_or_else(|e| e.into_inner());
            authorized
                .iter()
                .find(|(prefix, _)| client.starts_with(prefix.as_str()))
                .filter(|(_, grants)| !grants.allows(verb, target))
                .map(|_| super::rbac::forbidden_message(client, verb, target))
        }
        _ => None,
    };
    let response = match (&client, anonymous_allowed(&path)) {
        (None, false) => error(ApiError::unauthorized()),
        _ if denied.is_some() => error(ApiError::rbac_forbidden(target.as_ref(), denied.unwrap_or_default())),
        _ => respond(&shared, &parts.method, &parts.headers, &path, target.as_ref(), &params, verb, &body),
    };
    shared.log.lock().unwrap_or_else(|e| e.into_inner()).push(Request {
        client: client.unwrap_or_else(|| "system:anonymous".into()),
        method: parts.method.to_string(),
        path,
        query,
        verb: verb.to_string(),
        resource: target,
        content_type: parts.headers.get(header::CONTENT_TYPE).and_then(|v| v.to_str().ok()).map(String::from),
        status: response.status().as_u16(),
    });
    response
}

fn anonymous_allowed(path: &str) -> bool {
    ["/version", "/healthz", "/livez", "/readyz"].contains(&path)
}

/// The client a request comes from: the name in a bearer token the fake issued, or,
/// without a token, the `Impersonate-User` the kubeconfig's `as:` sets (client-go, so
/// kubectl, sends no bearer token over plain HTTP).
fn client_of(headers: &HeaderMap) -> Option<String> {
    let text = |name| headers.get(name).and_then(|v: &header::HeaderValue| v.to_str().ok());
    match text(header::AUTHORIZATION) {
        Some(value) => {
            let token = value.strip_prefix("Bearer ")?;
            token.strip_prefix(TOKEN_PREFIX).filter(|n| !n.is_empty()).map(String::from)
        }
        None => text(header::HeaderName::from_static("impersonate-user"))
            .filter(|n| !n.is_empty())
            .map(String::from),
    }
}

/// The resource a path names, if it is an API resource path.
fn parse_path(path: &str) -> Option<ResourceRef> {
    let segments: Vec<&str> = path.trim_matches('/').split('/').collect();
    let (group, version, rest) = match segments.as_slice() {
        ["api", version, rest @ ..] if !rest.is_empty() => ("", *version, rest),
        ["apis", group, version, rest @ ..] if !rest.is_empty() => (*group, *version, rest),
        _ => return None,
    };
    let namespace_subresource =
        group.is_empty() && rest.len() == 3 && ["status", "finalize"].contains(&rest[2]);
    let (namespace, rest) = if rest.len() >= 3 && rest[0] == "namespaces" && !namespace_subresource {
        (Some(rest[1].to_string()), &rest[2..])
    } else {
        (None, rest)
    };
    if rest.len() > 3 || rest.iter().any(|s| s.is_empty()) {
        return None;
    }
    Some(ResourceRef {
        group: group.into(),
        version: version.into(),
        plural: rest[0].into(),
        namespace,
        name: rest.get(1).map(|s| s.to_string()),
        subresource: rest.get(2).map(|s| s.to_string()),
    })
}

fn param<'a>(params: &'a [(String, String)], name: &str) -> Option<&'a str> {
    params.iter().find(|(k, _)| k == name).map(|(_, v)| v.as_str())
}

fn is_true(value: Option<&str>) -> bool {
    matches!(value, Some("true" | "1"))
}

/// The Kubernetes verb of a request (`get` for discovery).
fn verb_of(method: &Method, target: &Option<ResourceRef>, params: &[(String, String)]) -> &'static str {
    let named = target.as_ref().is_some_and(|t| t.name.is_some());
    match *method {
        Method::GET if target.is_some() && !named && is_true(param(params, "watch")) => "watch",
        Method::GET if target.is_some() && !named => "list",
        Method::GET => "get",
        Method::POST => "create",
        Method::PUT => "update",
        Method::PATCH => "patch",
        Method::DELETE if target.is_some() && !named => "deletecollection",
        Method::DELETE => "delete",
        _ => "unknown",
    }
}

fn json_response(code: u16, body: &Value) -> Response {
    let status = StatusCode::from_u16(code).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    (status, [(header::CONTENT_TYPE, "application/json")], body.to_string()).into_response()
}

fn error(e: ApiError) -> Response {
    json_response(e.code, &e.body())
}

fn answer(result: Result<Value, ApiError>, code: u16) -> Response {
    match result {
        Ok(body) => json_response(code, &body),
        Err(e) => error(e),
    }
}

#[allow(clippy::too_many_arguments)]
fn respond(
    shared: &Arc<Shared>,
    method: &Method,
    headers: &HeaderMap,
    path: &str,
    target: Option<&ResourceRef>,
    params: &[(String, String)],
    verb: &str,
    body: &[u8],
) -> Response {
    if let Some(target) = target {
        return resource(shared, method, headers, target, params, verb, body);
    }
    if method != Method::GET {
        return error(ApiError::method_not_allowed(method.as_str()));
    }
    let store = shared.store();
    let found = match path.trim_end_matches('/') {
        "/version" => Some(discovery::version()),
        "/healthz" | "/livez" | "/readyz" => {
            return (StatusCode::OK, [(header::CONTENT_TYPE, "text/plain")], "ok").into_response();
        }
        "/api" => Some(discovery::core_versions(&shared.address)),
        "/apis" => Some(discovery::groups(store.types())),
        p => match p.trim_matches('/').split('/').collect::<Vec<_>>().as_slice() {
            ["api", version] => discovery::resources(store.types(), "", version),
            ["apis", group] => discovery::group(store.types(), group),
            ["apis", group, version] => discovery::resources(store.types(), group, version),
            _ => None,
        },
    };
    match found {
        Some(doc) => json_response(200, &doc),
        None => error(ApiError::no_such_path()),
    }
}

/// The resource type a path names, checked against its scope and subresource.
fn resolve(store: &Store, target: &ResourceRef) -> Result<ResourceType, ApiError> {
    let ty =
        store.type_of(&target.group, &target.version, &target.plural).ok_or_else(ApiError::no_such_path)?;
    let scope_ok = match (&target.namespace, &target.name) {
        (Some(_), _) => ty.namespaced,
        (None, Some(_)) => !ty.namespaced,
        (None, None) => true,
    };
    let subresource_ok = match target.subresource.as_deref() {
        None => true,
        Some("status") => ty.status,
        Some("scale") => ty.scale,
        Some(_) => false,
    };
    if scope_ok && subresource_ok { Ok(ty) } else { Err(ApiError::no_such_path()) }
}

fn decode(body: &[u8]) -> Result<Value, ApiError> {
    serde_json::from_slice(body).map_err(|e| {
        ApiError::bad_request(format!("the body of the request could not be decoded as JSON: {e}"))
    })
}

#[allow(clippy::too_many_arguments)]
fn resource(
    shared: &Arc<Shared>,
    method: &Method,
    headers: &HeaderMap,
    target: &ResourceRef,
    params: &[(String, String)],
    verb: &str,
    body: &[u8],
) -> Response {
    if param(params, "dryRun").is_some() {
        return error(ApiError::bad_request("the fake API server does not support dryRun"));
    }
    let mut store = shared.store();
    let ty = match resolve(&store, target) {
        Ok(ty) => ty,
        Err(e) => return error(e),
    };
    let version = target.version.as_str();
    let ns = target.namespace.clone().unwrap_or_default();
    let name = target.name.clone().unwrap_or_default();
    let sub = target.subresource.as_deref();
    match verb {
        "get" if sub == Some("scale") => {
            answer(store.get(&ty, version, &ns, &name).map(|o| super::store::scale_of(&ty, &o)), 200)
        }
        "get" => answer(store.get(&ty, version, &ns, &name), 200),
        "list" => answer(list_options(&ty, target, params).and_then(|o| store.list(&ty, version, &o)), 200),
        "watch" => {
            let request = match watch_request(&ty, target, params) {
                Ok(r) => r,
                Err(e) => return error(e),
            };
            drop(store);
            let context = WatchContext {
                store: shared.store.clone(),
                drops: shared.drops.subscribe(),
                bookmark_every: *shared.bookmark_every.lock().unwrap_or_else(|e| e.into_inner()),
            };
            let body = watch::start(context, request);
            Response::builder()
                .status(200)
                .header(header::CONTENT_TYPE, "application/json")
                .body(body)
                .unwrap_or_else(|_| error(ApiError::bad_request("watch")))
        }
        "create" if target.name.is_none() => {
            if ty.namespaced && target.namespace.is_none() {
                return error(ApiError::method_not_allowed("POST"));
            }
            let created = decode(body).and_then(|b| store.create(&ty, version, &ns, b));
            answer(tracked(&mut store, &ty, &ns, None, &manager_of(headers, params), created), 201)
        }
        "update" => {
            let before = store.raw(&Key::new(&ty, &ns, &name)).cloned();
            let updated = decode(body).and_then(|b| store.update(&ty, version, &ns, &name, sub, b));
            answer(tracked(&mut store, &ty, &ns, before, &manager_of(headers, params), updated), 200)
        }
        "patch" => {
            let content_type =
                headers.get(header::CONTENT_TYPE).and_then(|v| v.to_str().ok()).unwrap_or_default();
            let kind = PatchType::from_content_type(content_type);
            if param(params, "force").is_some() && kind != Some(PatchType::Apply) {
                return error(ApiError::unprocessable(
                    "force: Forbidden: may not be specified for non-apply patch".into(),
                ));
            }
            match kind {
                None => error(ApiError::unsupported_media_type(content_type)),
                Some(PatchType::Apply) => server_side_apply(&mut store, &ty, target, params, body),
                Some(kind) => {
                    let before = store.raw(&Key::new(&ty, &ns, &name)).cloned();
                    let patched = store.patch(&ty, version, &ns, &name, sub, kind, body);
                    answer(tracked(&mut store, &ty, &ns, before, &manager_of(headers, params), patched), 200)
                }
            }
        }
        "delete" if sub.is_none() => {
            answer(propagation(params, body).and_then(|p| store.delete(&ty, version, &ns, &name, p)), 200)
        }
        "deletecollection" => answer(delete_collection(&mut store, &ty, target, params, body), 200),
        _ => error(ApiError::method_not_allowed(method.as_str())),
    }
}

/// The field manager of a write: `fieldManager`, or the program name of the User-Agent
/// (as the real server derives it).
fn manager_of(headers: &HeaderMap, params: &[(String, String)]) -> String {
    if let Some(manager) = param(params, "fieldManager").filter(|m| !m.is_empty()) {
        return manager.to_string();
    }
    let agent = headers.get(header::USER_AGENT).and_then(|v| v.to_str().ok()).unwrap_or("unknown");
    agent.split('/').next().unwrap_or("unknown").to_string()
}

/// A successful write's changed fields recorded as its manager's.
fn tracked(
    store: &mut Store,
    ty: &ResourceType,
    namespace: &str,
    before: Option<Value>,
    manager: &str,
    result: Result<Value, ApiError>,
) -> Result<Value, ApiError> {
    if let Ok(object) = &result {
        let name = object["metadata"]["name"].as_str().unwrap_or_default();
        store.track(&Key::new(ty, namespace, name), before.as_ref(), manager);
    }
    result
}

/// Server-side apply: the YAML (or JSON) configuration merged for `fieldManager`.
fn server_side_apply(
    store: &mut Store,
    ty: &ResourceType,
    target: &ResourceRef,
    params: &[(String, String)],
    body: &[u8],
) -> Response {
    let Some(manager) = param(params, "fieldManager").filter(|m| !m.is_empty()) else {
        return error(ApiError::unprocessable(
            "PatchOptions.meta.k8s.io \"\" is invalid: fieldManager: Required value: is required for apply patch".into(),
        ));
    };
    let parsed = std::str::from_utf8(body)
        .map_err(|e| e.to_string())
        .and_then(|text| serde_saphyr::from_str::<Value>(text).map_err(|e| e.to_string()));
    let configuration = match parsed {
        Ok(v) if v.is_object() => v,
        Ok(_) => return error(ApiError::bad_request("an apply patch must be an object")),
        Err(e) => return error(ApiError::bad_request(format!("error decoding YAML: {e}"))),
    };
    let (ns, name) = (target.namespace.clone().unwrap_or_default(), target.name.clone().unwrap_or_default());
    let force = is_true(param(params, "force"));
    match store.apply(
        ty,
        &target.version,
        &ns,
        &name,
        target.subresource.as_deref(),
        configuration,
        manager,
        force,
    ) {
        Ok((object, true)) => json_response(201, &object),
        Ok((object, false)) => json_response(200, &object),
        Err(e) => error(e),
    }
}

fn list_options(
    ty: &ResourceType,
    target: &ResourceRef,
    params: &[(String, String)],
) -> Result<ListOptions, ApiError> {
    let limit = match param(params, "limit") {
        Some(l) => {
            Some(l.parse::<usize>().map_err(|_| ApiError::bad_request(format!("invalid limit: {l}")))?)
        }
        None => None,
    };
    Ok(ListOptions {
        namespace: target.namespace.clone(),
        labels: LabelSelector::parse(param(params, "labelSelector").unwrap_or_default())
            .map_err(ApiError::bad_request)?,
        fields: FieldSelector::parse(
            param(params, "fieldSelector").unwrap_or_default(),
            supported_fields(&ty.group, &ty.plural),
        )
        .map_err(ApiError::bad_request)?,
        limit,
        continue_token: param(params, "continue").filter(|c| !c.is_empty()).map(String::from),
    })
}

fn watch_request(
    ty: &ResourceType,
    target: &ResourceRef,
    params: &[(String, String)],
) -> Result<WatchRequest, ApiError> {
    let options = list_options(ty, target, params)?;
    let resource_version = match param(params, "resourceVersion").filter(|v| !v.is_empty()) {
        Some(rv) => Some(
            rv.parse::<u64>()
                .map_err(|_| ApiError::bad_request(format!("invalid resource version: {rv}")))?,
        ),
        None => None,
    };
    let timeout = match param(params, "timeoutSeconds") {
        Some(t) => {
            t.parse::<u64>().map_err(|_| ApiError::bad_request(format!("invalid timeoutSeconds: {t}")))?
        }
        None => 1800,
    };
    Ok(WatchRequest {
        ty: ty.clone(),
        version: target.version.clone(),
        namespace: options.namespace,
        labels: options.labels,
        fields: options.fields,
        resource_version,
        timeout: Duration::from_secs(timeout),
        bookmarks: is_true(param(params, "allowWatchBookmarks")),
        send_initial_events: is_true(param(params, "sendInitialEvents")),
    })
}

/// The propagation policy of a delete: the query's, or the DeleteOptions body's.
fn propagation(params: &[(String, String)], body: &[u8]) -> Result<Propagation, ApiError> {
    let from_body: Option<String> = if body.iter().all(u8::is_ascii_whitespace) {
        None
    } else {
        decode(body)?["propagationPolicy"].as_str().map(String::from)
    };
    match param(params, "propagationPolicy").map(String::from).or(from_body).as_deref() {
        None | Some("Background") => Ok(Propagation::Background),
        Some("Foreground") => Ok(Propagation::Foreground),
        Some("Orphan") => Ok(Propagation::Orphan),
        Some(other) => {
            Err(ApiError::bad_request(format!("propagationPolicy: Unsupported value: \"{other}\"")))
        }
    }
}

/// DELETE on a collection: deletes every object the selectors match; answers the list
/// of what was deleted.
fn delete_collection(
    store: &mut Store,
    ty: &ResourceType,
    target: &ResourceRef,
    params: &[(String, String)],
    body: &[u8],
) -> Result<Value, ApiError> {
    let options = list_options(ty, target, params)?;
    let policy = propagation(params, body)?;
    let listed = store.list(ty, &target.version, &options)?;
    let mut deleted = Vec::new();
    for item in listed["items"].as_array().cloned().unwrap_or_default() {
        let ns = item["metadata"]["namespace"].as_str().unwrap_or_default().to_string();
        let name = item["metadata"]["name"].as_str().unwrap_or_default().to_string();
        if let Ok(last) = store.delete(ty, &target.version, &ns, &name, policy) {
            deleted.push(last);
        }
    }
    let mut out = listed;
    out["items"] = Value::Array(deleted);
    Ok(out)
}
