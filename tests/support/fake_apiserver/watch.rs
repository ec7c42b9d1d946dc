//! Watch streams: newline-delimited JSON `{"type","object"}` events from a
//! resourceVersion on (or the current objects as ADDED first), selector transitions as
//! ADDED/DELETED, periodic BOOKMARKs, an in-stream 410 `Expired` ERROR for a compacted
//! resourceVersion, and the end of the stream at `timeoutSeconds` or when the test drops
//! every watch.

use std::convert::Infallible;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::{Body, Bytes};
use futures::StreamExt;
use futures::channel::mpsc;
use serde_json::{Value, json};
use tokio::sync::broadcast::error::RecvError;

use super::resources::ResourceType;
use super::selector::{FieldSelector, LabelSelector};
use super::status::ApiError;
use super::store::{Event, EventKind, Store, served};

/// What a watch asks for.
pub struct WatchRequest {
    pub ty: ResourceType,
    pub version: String,
    pub namespace: Option<String>,
    pub labels: LabelSelector,
    pub fields: FieldSelector,
    /// `None` (or "0"): the current objects as ADDED, then changes from now.
    pub resource_version: Option<u64>,
    pub timeout: Duration,
    pub bookmarks: bool,
    /// `sendInitialEvents=true`: the initial ADDED events end with a bookmark saying so.
    pub send_initial_events: bool,
}

/// What the watch task needs besides the request.
pub struct WatchContext {
    pub store: Arc<Mutex<Store>>,
    pub drops: tokio::sync::watch::Receiver<u64>,
    pub bookmark_every: Duration,
}

/// Starts a watch; the body streams its events.
pub fn start(context: WatchContext, request: WatchRequest) -> Body {
    let (tx, rx) = mpsc::channel::<Bytes>(64);
    let opened = {
        let store = context.store.lock().unwrap_or_else(|e| e.into_inner());
        open(&store, &request)
    };
    tokio::spawn(run(context, request, opened, tx));
    Body::from_stream(rx.map(Ok::<_, Infallible>))
}

/// The backlog a watch starts with and where it starts, read under the store's lock.
enum Opened {
    Expired(u64, u64),
    From { backlog: Vec<Event>, rv: u64, live: tokio::sync::broadcast::Receiver<Event> },
}

fn open(store: &Store, request: &WatchRequest) -> Opened {
    let live = store.subscribe();
    match request.resource_version {
        Some(rv) if rv > 0 => match store.events_after(rv) {
            Some(backlog) => Opened::From { backlog, rv: store.resource_version().max(rv), live },
            None => Opened::Expired(rv, store.resource_version()),
        },
        _ => {
            let backlog = store
                .objects_of(&request.ty)
                .into_iter()
                .map(|(key, object)| Event {
                    rv: object["metadata"]["resourceVersion"]
                        .as_str()
                        .and_then(|r| r.parse().ok())
                        .unwrap_or(0),
                    kind: EventKind::Added,
                    key,
                    object,
                    previous: None,
                })
                .collect();
            Opened::From { backlog, rv: store.resource_version(), live }
        }
    }
}

async fn run(mut context: WatchContext, request: WatchRequest, opened: Opened, mut tx: mpsc::Sender<Bytes>) {
    let (backlog, mut rv, mut live) = match opened {
        Opened::Expired(asked, now) => {
            let status = ApiError::expired(format!("too old resource version: {asked} ({now})")).body();
            let _ = send(&mut tx, "ERROR", status).await;
            return;
        }
        Opened::From { backlog, rv, live } => (backlog, rv, live),
    };
    for event in &backlog {
        if let Some((kind, object)) = translate(&request, event)
            && send(&mut tx, kind, object).await.is_err()
        {
            return;
        }
    }
    if request.send_initial_events && request.resource_version.unwrap_or(0) == 0 {
        let mut mark = bookmark(&request, rv);
        mark["metadata"]["annotations"] = json!({"k8s.io/initial-events-end": "true"});
        if send(&mut tx, "BOOKMARK", mark).await.is_err() {
            return;
        }
    }
    let deadline = tokio::time::sleep(request.timeout);
    tokio::pin!(deadline);
    let mut ticks = tokio::time::interval(context.bookmark_every);
    ticks.tick().await;
    loop {
        tokio::select! {
            _ = &mut deadline => return,
            // Subscribed when the watch was asked for: any drop since then ends it.
            _ = context.drops.changed() => return,
            _ = ticks.tick(), if request.bookmarks => {
                if send(&mut tx, "BOOKMARK", bookmark(&request, rv)).await.is_err() {
                    return;
                }
            }
            received = live.recv() => match received {
                Ok(event) => {
                    rv = rv.max(event.rv);
                    if let Some((kind, object)) = translate(&request, &event)
                        && send(&mut tx, kind, object).await.is_err()
                    {
                        return;
                    }
                }
                // A watch that falls behind is closed; its client resumes from its last rv.
                Err(RecvError::Lagged(_) | RecvError::Closed) => return,
            },
        }
    }
}

/// The event a watch delivers for a change, if any: a change that makes an object match
/// the selectors is ADDED, one that makes it stop matching is DELETED (the previous
/// content at the change's resourceVersion).
fn translate(request: &WatchRequest, event: &Event) -> Option<(&'static str, Value)> {
    let ty = &request.ty;
    if (event.key.group.as_str(), event.key.plural.as_str()) != ty.storage() {
        return None;
    }
    if request.namespace.as_ref().is_some_and(|ns| &event.key.namespace != ns) {
        return None;
    }
    let output = |o: &Value| served(ty, &request.version, o);
    let matches = |o: &Value| {
        let seen = output(o);
        request.labels.matches(&seen) && request.fields.matches(&seen)
    };
    let now = matches(&event.object);
    match event.kind {
        EventKind::Added => now.then(|| ("ADDED", output(&event.object))),
        EventKind::Deleted => now.then(|| ("DELETED", output(&event.object))),
        EventKind::Modified => {
            let before = event.previous.as_ref().is_some_and(matches);
            match (before, now) {
                (true, true) => Some(("MODIFIED", output(&event.object))),
                (false, true) => Some(("ADDED", output(&event.object))),
                (true, false) => {
                    let mut last = output(event.previous.as_ref()?);
                    last["metadata"]["resourceVersion"] = json!(event.rv.to_string());
                    Some(("DELETED", last))
                }
                (false, false) => None,
            }
        }
    }
}

fn bookmark(request: &WatchRequest, rv: u64) -> Value {
    json!({
        "kind": request.ty.kind,
        "apiVersion": request.ty.api_version(&request.version),
        "metadata": {"resourceVersion": rv.to_string()},
    })
}

async fn send(tx: &mut mpsc::Sender<Bytes>, kind: &str, object: Value) -> Result<(), mpsc::SendError> {
    use futures::SinkExt;
    let mut line = json!({"type": kind, "object": object}).to_string();
    line.push('\n');
    tx.send(Bytes::from(line)).await
}
