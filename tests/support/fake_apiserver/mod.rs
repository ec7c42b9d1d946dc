//! A TEST DOUBLE: a stateful fake Kubernetes API server, served over real HTTP, for
//! testing canaryd's Kubernetes platform with the real kube-rs client and the real
//! `kubectl` where no real API server can run. It is not a Kubernetes API server: it
//! implements, following the Kubernetes API conventions, what those clients call —
//! discovery, CRUD with the server's metadata rules, lists with selectors and pages,
//! watches with bookmarks and 410 Expired, merge/JSON/strategic patches, a simplified
//! server-side apply, finalizers, cascading deletion and CRD registration — and lets a
//! test inject faults (dropped watches, compaction, an unreachable server, conflicts).
//!
//! Clients are named, not authorized: a bearer token `fake-token-<name>` is client
//! `<name>`; without a token (client-go, so kubectl, sends none over plain HTTP) the
//! `Impersonate-User` header the kubeconfig's `as:` sets names it; anything else is 401.
//!
//! Known deviations from the real server: plain HTTP only; no OpenAPI (`/openapi/v2` and
//! `/openapi/v3` answer 404, so kubectl needs `--validate=false` to apply); no aggregated
//! discovery (kubectl falls back to the legacy documents); no Table output (kubectl
//! prints NAME and AGE); no protobuf (always JSON); no dryRun (400); `fieldValidation` is
//! ignored; no `managedFields` in objects, and server-side apply treats lists as atomic;
//! events.k8s.io/v1 events are core/v1 events converted, but only a few of their
//! validations are made; a continued list reads current
//! state rather than its first page's snapshot; `resourceVersion`/`resourceVersionMatch`
//! on a list are ignored (always the latest); garbage collection and namespace deletion
//! happen at once, in the request, and foreground deletion is done as background; an
//! injected conflict also answers a patch without a resourceVersion (the real server
//! would retry it); only a few defaults are filled (namespace phase and finalizer,
//! deployment replicas, strategy, revisionHistoryLimit, progressDeadlineSeconds; service
//! type, ports and an allocated clusterIP); no controllers run (a deployment gets no
//! ReplicaSets, pods or status unless a test writes them); the only subresources are
//! `{plural}/status` and deployments/scale (no pods/log, no namespaces/finalize).
#![allow(dead_code)]

mod apply;
mod discovery;
mod events;
mod http;
mod patch;
pub mod rbac;
mod resources;
mod selector;
mod status;
mod store;
mod validate;
mod watch;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::service::TowerToHyperService;
use serde_json::Value;
use tokio::net::TcpListener;
use tokio::task::JoinHandle;

use self::http::{Shared, TOKEN_PREFIX};
pub use self::store::{ConflictTarget, Key};
use self::store::{Propagation, Store};

/// The resource a request named.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResourceRef {
    /// Empty for the core group.
    pub group: String,
    pub version: String,
    pub plural: String,
    pub namespace: Option<String>,
    pub name: Option<String>,
    pub subresource: Option<String>,
}

/// One request the fake answered.
#[derive(Debug, Clone)]
pub struct Request {
    /// The client the bearer token names (`system:anonymous` without one).
    pub client: String,
    pub method: String,
    pub path: String,
    pub query: String,
    /// get, list, watch, create, update, patch, delete, deletecollection.
    pub verb: String,
    /// None for discovery and other non-resource paths.
    pub resource: Option<ResourceRef>,
    /// The request body's Content-Type (a patch's says its patch type).
    pub content_type: Option<String>,
    /// The response's status code.
    pub status: u16,
}

impl Request {
    /// The value of a query parameter.
    pub fn param(&self, name: &str) -> Option<String> {
        url::form_urlencoded::parse(self.query.as_bytes())
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.into_owned())
    }

    /// Whether this request was about `plural` (any group).
    pub fn is_for(&self, plural: &str) -> bool {
        self.resource.as_ref().is_some_and(|r| r.plural == plural)
    }
}

/// A resource type by group, version and plural.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Gvr {
    pub group: String,
    pub version: String,
    pub plural: String,
}

impl Gvr {
    pub fn new(group: &str, version: &str, plural: &str) -> Self {
        Gvr { group: group.into(), version: version.into(), plural: plural.into() }
    }

    /// A core/v1 resource.
    pub fn core(plural: &str) -> Self {
        Gvr::new("", "v1", plural)
    }

    pub fn deployments() -> Self {
        Gvr::new("apps", "v1", "deployments")
    }
}

/// A running fake API server. Dropping it stops it.
pub struct FakeApiServer {
    shared: Arc<Shared>,
    address: SocketAddr,
    serving: Mutex<Option<Serving>>,
}

/// The listener's task and its connections' tasks, aborted together to go down.
struct Serving {
    accept: JoinHandle<()>,
    connections: Arc<Mutex<Vec<JoinHandle<()>>>>,
}

impl Serving {
    /// Aborts the tasks; they (and their sockets) are gone once the runtime drops them.
    fn abort(&self) -> Vec<JoinHandle<()>> {
        self.accept.abort();
        let connections: Vec<JoinHandle<()>> =
            self.connections.lock().unwrap_or_else(|e| e.into_inner()).drain(..).collect();
        for connection in &connections {
            connection.abort();
        }
        connections
    }

    /// Aborts the tasks and waits until the listener and every connection are closed.
    async fn stop(self) {
        let connections = self.abort();
        // A cancelled task's JoinError is what stopping it means.
        let _ = self.accept.await;
        for connection in connections {
            let _ = connection.await;
        }
    }
}

impl FakeApiServer {
    /// Starts a fake on 127.0.0.1 and a free port.
    pub async fn start() -> FakeApiServer {
        Self::start_on("127.0.0.1:0".parse().expect("a socket address"))
            .await
            .expect("the fake API server binds")
    }

    /// Starts a fake on `address`.
    pub async fn start_on(address: SocketAddr) -> std::io::Result<FakeApiServer> {
        let listener = TcpListener::bind(address).await?;
        let address = listener.local_addr()?;
        let (drops, _) = tokio::sync::watch::channel(0u64);
        let shared = Arc::new(Shared {
            store: Arc::new(Mutex::new(Store::new())),
            log: Mutex::new(Vec::new()),
            drops,
            bookmark_every: Mutex::new(Duration::from_secs(5)),
            address: address.to_string(),
            holds: tokio::sync::watch::channel(Vec::new()).0,
            authorized: Mutex::new(Vec::new()),
        });
        let serving = serve(listener, shared.clone());
        Ok(FakeApiServer { shared, address, serving: Mutex::new(Some(serving)) })
    }

    /// `http://127.0.0.1:PORT`.
    pub fn url(&self) -> String {
        format!("http://{}", self.address)
    }

    /// The bearer token a client name is known by.
    pub fn token(client_name: &str) -> String {
        format!("{TOKEN_PREFIX}{client_name}")
    }

    /// The kubeconfig of a client, as YAML (namespace `default`): its bearer token, and
    /// `as: <client name>` for kubectl, which sends no token over plain HTTP.
    pub fn kubeconfig_yaml(&self, client_name: &str) -> String {
        format!(
            "apiVersion: v1\nkind: Config\nclusters:\n- name: fake\n  cluster:\n    server: {url}\nusers:\n- name: \
             {client_name}\n  user:\n    token: {token}\n    as: {client_name}\ncontexts:\n- name: fake\n  context:\n    cluster: fake\n    \
             user: {client_name}\n    namespace: default\ncurrent-context: fake\n",
            url = self.url(),
            token = Self::token(client_name),
        )
    }

    /// Writes the kubeconfig of `client_name` in `dir`; returns its path.
    pub fn kubeconfig(&self, dir: &Path, client_name: &str) -> PathBuf {
        let path = dir.join(format!("kubeconfig-{client_name}"));
        std::fs::write(&path, self.kubeconfig_yaml(client_name)).expect("the kubeconfig is written");
        path
    }

    /// A kube client of `client_name`, configured from its kubeconfig.
    pub async fn client(&self, client_name: &str) -> kube::Client {
        let kubeconfig = kube::config::Kubeconfig::from_yaml(&self.kubeconfig_yaml(client_name))
            .expect("the kubeconfig parses");
        let config =
            kube::Config::from_custom_kubeconfig(kubeconfig, &kube::config::KubeConfigOptions::default())
                .await
                .expect("kube reads the kubeconfig");
        kube::Client::try_from(config).expect("kube builds a client")
    }

    /// Every request answered so far, in order.
    pub fn requests(&self) -> Vec<Request> {
        self.shared.log.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// The requests answered from the `from`-th on (0: all), in order.
    pub fn requests_from(&self, from: usize) -> Vec<Request> {
        let log = self.shared.log.lock().unwrap_or_else(|e| e.into_inner());
        log.get(from..).map(<[Request]>::to_vec).unwrap_or_default()
    }

    /// How many requests were answered so far.
    pub fn request_count(&self) -> usize {
        self.shared.log.lock().unwrap_or_else(|e| e.into_inner()).len()
    }

    /// Calls `visit` with every stored object of a type in a namespace (all namespaces
    /// for None), as stored (no `kind` or `apiVersion`), without copying them: for bulk
    /// stand-ins over thousands of objects.
    pub fn visit(&self, gvr: &Gvr, namespace: Option<&str>, mut visit: impl FnMut(&Value)) {
        let store = self.shared.store();
        let Some(ty) = store.type_of(&gvr.group, &gvr.version, &gvr.plural) else { return };
        for (key, object) in store.each_of(&ty) {
            if namespace.is_none_or(|ns| key.namespace == ns) {
                visit(object);
            }
        }
    }

    /// The current (global) resourceVersion.
    pub fn resource_version(&self) -> String {
        self.shared.store().resource_version().to_string()
    }

    /// How often watches asking for bookmarks get one (5 s at start).
    pub fn set_bookmark_interval(&self, every: Duration) {
        *self.shared.bookmark_every.lock().unwrap_or_else(|e| e.into_inner()) = every;
    }

    /// Closes every open watch stream (their clients see the stream end).
    pub fn drop_watches(&self) {
        self.shared.drops.send_modify(|n| *n += 1);
    }

    /// Forgets the event history: a watch from any resourceVersion before now gets an
    /// in-stream 410 Expired.
    pub fn compact(&self) {
        self.shared.store().compact();
    }

    /// Down: the listener and every connection closed (connections are refused); up:
    /// listening again on the same port.
    pub async fn set_down(&self, down: bool) {
        let current = self.serving.lock().unwrap_or_else(|e| e.into_inner()).take();
        if down {
            if let Some(serving) = current {
                serving.stop().await;
            }
            return;
        }
        let serving = match current {
            Some(serving) => serving,
            None => {
                let listener =
                    TcpListener::bind(self.address).await.expect("the fake API server binds its port again");
                serve(listener, self.shared.clone())
            }
        };
        *self.serving.lock().unwrap_or_else(|e| e.into_inner()) = Some(serving);
    }

    /// From now on, the requests of every client whose name starts with `prefix` are
    /// authorized by `grants` (403 Forbidden otherwise), as RBAC would.
    pub fn authorize(&self, prefix: &str, grants: rbac::Grants) {
        let mut authorized = self.shared.authorized.lock().unwrap_or_else(|e| e.into_inner());
        authorized.retain(|(p, _)| p != prefix);
        authorized.push((prefix.to_string(), grants));
    }

    /// While `hold`, every request of `client` about `plural` waits unanswered (a slow
    /// path to the API server for that one kind); released, they are answered.
    pub fn hold_requests(&self, client: &str, plural: &str, hold: bool) {
        self.shared.holds.send_modify(|holds| {
            holds.retain(|(c, p)| !(c == client && p == plural));
            if hold {
                holds.push((client.to_string(), plural.to_string()));
            }
        });
    }

    /// While `refuse`, every write (update, patch or delete) to an object, or to its
    /// subresource, answers 500 InternalError.
    pub fn refuse_writes(
        &self,
        gvr: &Gvr,
        namespace: &str,
        name: &str,
        subresource: Option<&str>,
        refuse: bool,
    ) {
        let mut store = self.shared.store();
        let Some(ty) = store.type_of(&gvr.group, &gvr.version, &gvr.plural) else {
            panic!("the fake serves no {gvr:?}");
        };
        let key = Key::new(&ty, namespace, name);
        store.refuse_writes(ConflictTarget { key, subresource: subresource.map(String::from) }, refuse);
    }

    /// Makes the next write (update, patch or delete) to an object, or to its
    /// subresource, answer 409 Conflict after bumping the object as another writer would.
    pub fn conflict_next(&self, gvr: &Gvr, namespace: &str, name: &str, subresource: Option<&str>) {
        let mut store = self.shared.store();
        let Some(ty) = store.type_of(&gvr.group, &gvr.version, &gvr.plural) else {
            panic!("the fake serves no {gvr:?}");
        };
        let key = Key::new(&ty, namespace, name);
        store.conflict_next(ConflictTarget { key, subresource: subresource.map(String::from) });
    }

    /// The stored object, as served at the gvr's version.
    pub fn get(&self, gvr: &Gvr, namespace: &str, name: &str) -> Option<Value> {
        let store = self.shared.store();
        let ty = store.type_of(&gvr.group, &gvr.version, &gvr.plural)?;
        store.get(&ty, &gvr.version, namespace, name).ok()
    }

    /// Every stored object of a type in a namespace (all namespaces for None).
    pub fn list(&self, gvr: &Gvr, namespace: Option<&str>) -> Vec<Value> {
        let store = self.shared.store();
        let Some(ty) = store.type_of(&gvr.group, &gvr.version, &gvr.plural) else { return Vec::new() };
        let options = store::ListOptions { namespace: namespace.map(String::from), ..Default::default() };
        store
            .list(&ty, &gvr.version, &options)
            .map(|l| l["items"].as_array().cloned().unwrap_or_default())
            .unwrap_or_default()
    }

    /// Creates the object, or replaces it (unconditionally) when it exists, with the rules
    /// of a create or an update; answers the stored object or the error's Status.
    pub fn put(&self, gvr: &Gvr, namespace: &str, object: Value) -> Result<Value, Value> {
        let mut store = self.shared.store();
        let ty = store
            .type_of(&gvr.group, &gvr.version, &gvr.plural)
            .ok_or_else(|| status::ApiError::no_such_path().body())?;
        let name = object["metadata"]["name"].as_str().unwrap_or_default().to_string();
        let result = match store.get(&ty, &gvr.version, namespace, &name) {
            Ok(current) => {
                let mut object = object;
                object["metadata"]["resourceVersion"] = current["metadata"]["resourceVersion"].clone();
                store.update(&ty, &gvr.version, namespace, &name, None, object)
            }
            Err(_) => store.create(&ty, &gvr.version, namespace, object),
        };
        result.map_err(|e| e.body())
    }

    /// Writes an object's status as a controller would (through the status subresource).
    pub fn put_status(&self, gvr: &Gvr, namespace: &str, name: &str, status: Value) -> Result<Value, Value> {
        let mut store = self.shared.store();
        let ty = store
            .type_of(&gvr.group, &gvr.version, &gvr.plural)
            .ok_or_else(|| status::ApiError::no_such_path().body())?;
        let mut current = store.get(&ty, &gvr.version, namespace, name).map_err(|e| e.body())?;
        current["status"] = status;
        let sub = if ty.status { Some("status") } else { None };
        store.update(&ty, &gvr.version, namespace, name, sub, current).map_err(|e| e.body())
    }

    /// Deletes an object (background propagation).
    pub fn delete(&self, gvr: &Gvr, namespace: &str, name: &str) -> Result<Value, Value> {
        let mut store = self.shared.store();
        let ty = store
            .type_of(&gvr.group, &gvr.version, &gvr.plural)
            .ok_or_else(|| status::ApiError::no_such_path().body())?;
        store.delete(&ty, &gvr.version, namespace, name, Propagation::Background).map_err(|e| e.body())
    }
}

impl Drop for FakeApiServer {
    fn drop(&mut self) {
        if let Some(serving) = self.serving.lock().unwrap_or_else(|e| e.into_inner()).take() {
            serving.abort();
        }
    }
}

/// Accepts connections on `listener` and serves each with the one handler.
fn serve(listener: TcpListener, shared: Arc<Shared>) -> Serving {
    let app = axum::Router::new().fallback(http::handle).with_state(shared);
    let connections: Arc<Mutex<Vec<JoinHandle<()>>>> = Arc::default();
    let tracked = connections.clone();
    let accept = tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else { continue };
            let service = TowerToHyperService::new(app.clone());
            let connection = tokio::spawn(async move {
                let builder = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new());
                // A connection's end (the client hung up) is no error of the server's.
                let _ = builder.serve_connection_with_upgrades(TokioIo::new(stream), service).await;
            });
            let mut open = tracked.lock().unwrap_or_else(|e| e.into_inner());
            open.retain(|c| !c.is_finished());
            open.push(connection);
        }
    });
    Serving { accept, connections }
}
