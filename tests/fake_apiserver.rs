//! Tests of the fake Kubernetes API server (tests/support/fake_apiserver), each against
//! the behaviour the Kubernetes API conventions give the real server, through the real
//! kube-rs client, kube-runtime's watcher, and the real kubectl.

mod support;

use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{Namespace, Pod};
use kube::api::{
    Api, DeleteParams, DynamicObject, ListParams, Patch, PatchParams, PostParams, WatchEvent, WatchParams,
};
use kube::core::{ApiResource, GroupVersionKind, Status};
use kube::discovery::Discovery;
use kube::runtime::{WatchStreamExt, watcher};
use serde_json::{Value, json};
use support::fake_apiserver::{FakeApiServer, Gvr, Request};

/// How long any awaited change may take.
const DEADLINE: Duration = Duration::from_secs(20);

fn deployment(name: &str, labels: Value, image: &str) -> Deployment {
    serde_json::from_value(json!({
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": name, "labels": labels},
        "spec": {
            "selector": {"matchLabels": {"app": name}},
            "template": {
                "metadata": {"labels": {"app": name}},
                "spec": {"containers": [
                    {"name": "app", "image": image, "ports": [{"containerPort": 8080}]},
                    {"name": "sidecar", "image": "proxy:1"},
                ]},
            },
        },
    }))
    .expect("a deployment")
}

fn api_error(result: Result<impl std::fmt::Debug, kube::Error>) -> Status {
    match result {
        Err(kube::Error::Api(status)) => *status,
        other => panic!("expected an API error, got {other:?}"),
    }
}

/// Polls `check` until it answers Some, failing after DEADLINE.
async fn eventually<T>(what: &str, mut check: impl FnMut() -> Option<T>) -> T {
    let until = tokio::time::Instant::now() + DEADLINE;
    loop {
        if let Some(value) = check() {
            return value;
        }
        assert!(tokio::time::Instant::now() < until, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn rv_of(d: &Deployment) -> String {
    d.metadata.resource_version.clone().expect("a resourceVersion")
}

fn generation_of(d: &Deployment) -> i64 {
    d.metadata.generation.expect("a generation")
}

#[tokio::test]
async fn create_get_update_delete_follow_the_metadata_rules() {
    let server = FakeApiServer::start().await;
    let api: Api<Deployment> = Api::namespaced(server.client("test").await, "default");

    let created = api
        .create(&PostParams::default(), &deployment("web", json!({"app": "web"}), "v1"))
        .await
        .expect("created");
    assert!(
        created.metadata.uid.as_ref().is_some_and(|u| u.len() == 36),
        "a uid is set: {:?}",
        created.metadata.uid
    );
    assert!(created.metadata.creation_timestamp.is_some(), "creationTimestamp is set");
    assert_eq!(generation_of(&created), 1, "generation starts at 1");
    assert_eq!(created.spec.replicas, Some(1), "replicas default to 1");

    let got = api.get("web").await.expect("got");
    assert_eq!(got.metadata.uid, created.metadata.uid);
    assert_eq!(rv_of(&got), rv_of(&created), "a read does not change the resourceVersion");

    // A spec change bumps generation and resourceVersion.
    let mut changed = got.clone();
    changed.spec.replicas = Some(3);
    let updated = api.replace("web", &PostParams::default(), &changed).await.expect("updated");
    assert_eq!(generation_of(&updated), 2, "a spec change bumps generation");
    assert_ne!(rv_of(&updated), rv_of(&got), "a write bumps resourceVersion");

    // Status through the main resource is ignored.
    let mut with_status = updated.clone();
    with_status.status =
        Some(serde_json::from_value(json!({"replicas": 3, "readyReplicas": 3})).expect("a status"));
    let ignored = api.replace("web", &PostParams::default(), &with_status).await.expect("replaced");
    assert_eq!(ignored.status, None, "status written through the main resource is ignored");
    assert_eq!(rv_of(&ignored), rv_of(&updated), "an update that changes nothing keeps the resourceVersion");

    // Status through /status is written, and does not bump generation.
    let status = json!({"status": {"replicas": 3, "readyReplicas": 3, "observedGeneration": 2}});
    let patched = api
        .patch_status("web", &PatchParams::default(), &Patch::Merge(&status))
        .await
        .expect("status patched");
    assert_eq!(patched.status.as_ref().and_then(|s| s.ready_replicas), Some(3));
    assert_eq!(generation_of(&patched), 2, "a status change does not bump generation");
    assert_ne!(rv_of(&patched), rv_of(&updated), "a status change bumps resourceVersion");

    // /status ignores everything but status.
    let mut via_status = patched.clone();
    via_status.spec.replicas = Some(9);
    via_status.status.as_mut().expect("status").replicas = Some(4);
    let status_only =
        api.replace_status("web", &PostParams::default(), &via_status).await.expect("status replaced");
    assert_eq!(status_only.spec.replicas, Some(3), "/status ignores the spec");
    assert_eq!(status_only.status.as_ref().and_then(|s| s.replicas), Some(4));

    // A stale resourceVersion conflicts.
    let stale = api_error(api.replace("web", &PostParams::default(), &changed).await);
    assert_eq!((stale.code, stale.reason.as_str()), (409, "Conflict"));

    let deleted = api.delete("web", &DeleteParams::default()).await.expect("deleted");
    let status = deleted.right().expect("an immediate deletion answers a Status");
    assert_eq!(status.status, Some(kube::core::response::StatusSummary::Success));
    assert_eq!(
        status.details.map(|d| (d.name, d.kind, d.uid)),
        Some(("web".into(), "deployments".into(), created.metadata.uid.clone().unwrap_or_default()))
    );
    let gone = api_error(api.get("web").await);
    assert_eq!((gone.code, gone.reason.as_str()), (404, "NotFound"));
    assert_eq!(gone.message, "deployments.apps \"web\" not found");
}

#[tokio::test]
async fn creates_are_refused_for_duplicates_missing_namespaces_and_bad_names() {
    let server = FakeApiServer::start().await;
    let client = server.client("test").await;
    let api: Api<Deployment> = Api::namespaced(client.clone(), "default");
    api.create(&PostParams::default(), &deployment("web", json!({}), "v1")).await.expect("created");

    let twice = api_error(api.create(&PostParams::default(), &deployment("web", json!({}), "v1")).await);
    assert_eq!((twice.code, twice.reason.as_str()), (409, "AlreadyExists"));

    let elsewhere: Api<Deployment> = Api::namespaced(client.clone(), "nowhere");
    let missing =
        api_error(elsewhere.create(&PostParams::default(), &deployment("web", json!({}), "v1")).await);
    assert_eq!((missing.code, missing.reason.as_str()), (404, "NotFound"));
    assert_eq!(missing.message, "namespaces \"nowhere\" not found");

    let namespaces: Api<Namespace> = Api::all(client.clone());
    namespaces
        .create(
            &PostParams::default(),
            &serde_json::from_value(json!({"metadata": {"name": "nowhere"}})).expect("ns"),
        )
        .await
        .expect("namespace created");
    elsewhere
        .create(&PostParams::default(), &deployment("web", json!({}), "v1"))
        .await
        .expect("created once it exists");

    let bad_label = deployment("labelled", json!({"app": "not a label value"}), "v1");
    assert_eq!(
        api_error(api.create(&PostParams::default(), &bad_label).await).code,
        422,
        "label values are checked"
    );
    let mut bad_annotation = deployment("annotated", json!({}), "v1");
    bad_annotation.metadata.annotations =
        Some([("no spaces allowed".to_string(), "any value".to_string())].into());
    assert_eq!(
        api_error(api.create(&PostParams::default(), &bad_annotation).await).code,
        422,
        "annotation keys are checked"
    );

    let mut bad = deployment("Bad_Name", json!({}), "v1");
    bad.metadata.name = Some("Bad_Name".into());
    let invalid = api_error(api.create(&PostParams::default(), &bad).await);
    assert_eq!((invalid.code, invalid.reason.as_str()), (422, "Invalid"));
    let raw = server.requests().into_iter().rev().find(|r| r.verb == "create").expect("the create is logged");
    assert_eq!(raw.status, 422);

    let mut named = deployment("x", json!({}), "v1");
    named.metadata.name = None;
    named.metadata.generate_name = Some("web-".into());
    let made = api.create(&PostParams::default(), &named).await.expect("generateName creates");
    let name = made.metadata.name.expect("a name");
    assert!(name.starts_with("web-") && name.len() == 9, "generateName appends 5 characters: {name}");
}

#[tokio::test]
async fn invalid_names_carry_their_causes() {
    let server = FakeApiServer::start().await;
    let client = reqwest::Client::new();
    let response = client
        .post(format!("{}/apis/apps/v1/namespaces/default/deployments", server.url()))
        .bearer_auth(FakeApiServer::token("test"))
        .json(&serde_json::to_value(deployment("Bad_Name", json!({}), "v1")).expect("json"))
        .send()
        .await
        .expect("answered");
    assert_eq!(response.status().as_u16(), 422);
    let status: Value = response.json().await.expect("a Status");
    assert_eq!(status["kind"], "Status");
    assert_eq!(status["status"], "Failure");
    assert_eq!(status["reason"], "Invalid");
    assert_eq!(status["details"]["name"], "Bad_Name");
    assert_eq!(status["details"]["kind"], "Deployment");
    assert_eq!(status["details"]["causes"][0]["field"], "metadata.name");
    assert_eq!(status["details"]["causes"][0]["reason"], "FieldValueInvalid");
}

async fn three_labelled(api: &Api<Deployment>) {
    for (name, labels) in [
        ("a", json!({"tier": "web", "env": "prod"})),
        ("b", json!({"tier": "web", "env": "dev"})),
        ("c", json!({"tier": "db"})),
    ] {
        api.create(&PostParams::default(), &deployment(name, labels, "v1")).await.expect("created");
    }
}

fn names(list: &kube::api::ObjectList<Deployment>) -> Vec<String> {
    list.items.iter().filter_map(|d| d.metadata.name.clone()).collect()
}

#[tokio::test]
async fn lists_come_in_pages_with_a_continue_token() {
    let server = FakeApiServer::start().await;
    let api: Api<Deployment> = Api::namespaced(server.client("test").await, "default");
    three_labelled(&api).await;
    let selected = api.list(&ListParams::default().limit(1).labels("tier")).await.expect("a page");
    assert!(selected.metadata.continue_.is_some());
    assert_eq!(selected.metadata.remaining_item_count, None, "unknown with a selector");
    let first = api.list(&ListParams::default().limit(2)).await.expect("a page");
    assert_eq!(names(&first), ["a", "b"]);
    let token = first.metadata.continue_.clone().expect("a continue token");
    assert_eq!(first.metadata.remaining_item_count, Some(1));
    let second =
        api.list(&ListParams::default().limit(2).continue_token(&token)).await.expect("the next page");
    assert_eq!(names(&second), ["c"]);
    assert!(
        second.metadata.continue_.as_deref().unwrap_or_default().is_empty(),
        "the last page has no token"
    );
    assert_eq!(
        second.metadata.resource_version, first.metadata.resource_version,
        "one list, one resourceVersion"
    );
    let bad = api_error(api.list(&ListParams::default().continue_token("not-a-token")).await);
    assert_eq!(bad.code, 400);
    // A write after the first page, then a compaction past the page's resourceVersion.
    api.create(&PostParams::default(), &deployment("d", json!({}), "v1")).await.expect("created");
    server.compact();
    let expired = api_error(api.list(&ListParams::default().limit(2).continue_token(&token)).await);
    assert_eq!(
        (expired.code, expired.reason.as_str()),
        (410, "Expired"),
        "a token older than the compaction"
    );
}

#[tokio::test]
async fn label_selectors_support_every_operator() {
    let server = FakeApiServer::start().await;
    let api: Api<Deployment> = Api::namespaced(server.client("test").await, "default");
    three_labelled(&api).await;
    for (selector, expected) in [
        ("tier=web", vec!["a", "b"]),
        ("tier==web", vec!["a", "b"]),
        ("tier!=web", vec!["c"]),
        ("env in (prod,dev)", vec!["a", "b"]),
        ("env notin (prod)", vec!["b", "c"]),
        ("env", vec!["a", "b"]),
        ("!env", vec!["c"]),
        ("tier=web,env=dev", vec!["b"]),
        ("tier=web,!env", vec![]),
    ] {
        let list = api.list(&ListParams::default().labels(selector)).await.expect("listed");
        assert_eq!(names(&list), expected, "selector {selector}");
    }
    for malformed in
        ["tier in (web", "=web", "tier in web", "a b", "tier in ()", "tier!", "-x=y", "tier=web,"]
    {
        let refused = api_error(api.list(&ListParams::default().labels(malformed)).await);
        assert_eq!((refused.code, refused.reason.as_str()), (400, "BadRequest"), "selector {malformed:?}");
    }
}

#[tokio::test]
async fn field_selectors_match_name_and_namespace() {
    let server = FakeApiServer::start().await;
    let client = server.client("test").await;
    let api: Api<Deployment> = Api::namespaced(client.clone(), "default");
    three_labelled(&api).await;
    let by_name = api.list(&ListParams::default().fields("metadata.name=b")).await.expect("listed");
    assert_eq!(names(&by_name), ["b"]);
    let not_name = api.list(&ListParams::default().fields("metadata.name!=b")).await.expect("listed");
    assert_eq!(names(&not_name), ["a", "c"]);
    let all: Api<Deployment> = Api::all(client);
    let in_default =
        all.list(&ListParams::default().fields("metadata.namespace=default")).await.expect("listed");
    assert_eq!(in_default.items.len(), 3);
    let elsewhere =
        all.list(&ListParams::default().fields("metadata.namespace=other")).await.expect("listed");
    assert!(elsewhere.items.is_empty());
    let unsupported = api_error(all.list(&ListParams::default().fields("spec.replicas=1")).await);
    assert_eq!(unsupported.code, 400);
}

/// The events a raw watch delivers, collected as (type, name, resourceVersion).
fn collect_watch(
    stream: impl futures::Stream<Item = kube::Result<WatchEvent<Deployment>>> + Send + 'static,
) -> Arc<Mutex<Vec<(String, String)>>> {
    let seen: Arc<Mutex<Vec<(String, String)>>> = Arc::default();
    let into = seen.clone();
    tokio::spawn(async move {
        let mut stream = std::pin::pin!(stream);
        while let Some(event) = stream.next().await {
            let entry = match event {
                Ok(WatchEvent::Added(d)) => ("ADDED".to_string(), d.metadata.name.unwrap_or_default()),
                Ok(WatchEvent::Modified(d)) => ("MODIFIED".to_string(), d.metadata.name.unwrap_or_default()),
                Ok(WatchEvent::Deleted(d)) => ("DELETED".to_string(), d.metadata.name.unwrap_or_default()),
                Ok(WatchEvent::Bookmark(_)) => continue,
                Ok(WatchEvent::Error(e)) => (format!("ERROR {} {}", e.code, e.reason), String::new()),
                Err(e) => (format!("FAILED {e}"), String::new()),
            };
            into.lock().expect("the list").push(entry);
        }
        into.lock().expect("the list").push(("END".into(), String::new()));
    });
    seen
}

#[tokio::test]
async fn a_merge_patch_that_changes_nothing_keeps_the_version_and_emits_no_event() {
    let server = FakeApiServer::start().await;
    let api: Api<Deployment> = Api::namespaced(server.client("test").await, "default");
    let created = api
        .create(&PostParams::default(), &deployment("web", json!({"app": "web"}), "v1"))
        .await
        .expect("created");
    let seen = collect_watch(api.watch(&WatchParams::default(), &rv_of(&created)).await.expect("a watch"));

    let same = json!({"metadata": {"labels": {"app": "web"}}, "spec": {"replicas": 1}});
    let patched = api.patch("web", &PatchParams::default(), &Patch::Merge(&same)).await.expect("patched");
    assert_eq!(rv_of(&patched), rv_of(&created), "a no-op patch keeps the resourceVersion");

    // A real change afterwards is the first and only event the watch sees.
    let real = json!({"metadata": {"labels": {"app": "web", "touched": "yes"}}});
    api.patch("web", &PatchParams::default(), &Patch::Merge(&real)).await.expect("patched");
    let events = eventually("the change's event", || {
        let s = seen.lock().expect("the list");
        (!s.is_empty()).then(|| s.clone())
    })
    .await;
    assert_eq!(events, [("MODIFIED".to_string(), "web".to_string())]);
}

#[tokio::test]
async fn a_json_patch_whose_test_fails_is_refused_and_changes_nothing() {
    let server = FakeApiServer::start().await;
    let api: Api<Deployment> = Api::namespaced(server.client("test").await, "default");
    let created =
        api.create(&PostParams::default(), &deployment("web", json!({}), "v1")).await.expect("created");
    let patch: json_patch::Patch = serde_json::from_value(json!([
        {"op": "replace", "path": "/spec/replicas", "value": 5},
        {"op": "test", "path": "/spec/replicas", "value": 7},
    ]))
    .expect("a patch");
    let refused = api_error(api.patch("web", &PatchParams::default(), &Patch::Json::<()>(patch)).await);
    assert_eq!((refused.code, refused.reason.as_str()), (422, "Invalid"));
    let after = api.get("web").await.expect("got");
    assert_eq!(rv_of(&after), rv_of(&created));
    assert_eq!(after.spec.replicas, Some(1));

    let passing: json_patch::Patch = serde_json::from_value(json!([
        {"op": "test", "path": "/spec/replicas", "value": 1},
        {"op": "replace", "path": "/spec/replicas", "value": 5},
    ]))
    .expect("a patch");
    let applied =
        api.patch("web", &PatchParams::default(), &Patch::Json::<()>(passing)).await.expect("applied");
    assert_eq!(applied.spec.replicas, Some(5));
    assert_eq!(generation_of(&applied), 2);
}

#[tokio::test]
async fn a_strategic_merge_patch_merges_containers_by_name() {
    let server = FakeApiServer::start().await;
    let api: Api<Deployment> = Api::namespaced(server.client("test").await, "default");
    api.create(&PostParams::default(), &deployment("web", json!({}), "v1")).await.expect("created");
    let patch = json!({"spec": {"template": {"spec": {"containers": [
        {"name": "app", "image": "v2", "ports": [{"containerPort": 9090}]},
    ]}}}});
    let patched =
        api.patch("web", &PatchParams::default(), &Patch::Strategic(&patch)).await.expect("patched");
    let containers = patched.spec.template.spec.expect("pod spec").containers;
    let images: Vec<(String, Option<String>)> =
        containers.iter().map(|c| (c.name.clone(), c.image.clone())).collect();
    assert_eq!(images, [("app".into(), Some("v2".into())), ("sidecar".into(), Some("proxy:1".into()))]);
    let ports: Vec<i32> = containers[0].ports.iter().flatten().map(|p| p.container_port).collect();
    assert_eq!(ports, [8080, 9090], "container ports merge by containerPort");

    let delete =
        json!({"spec": {"template": {"spec": {"containers": [{"name": "sidecar", "$patch": "delete"}]}}}});
    let patched =
        api.patch("web", &PatchParams::default(), &Patch::Strategic(&delete)).await.expect("patched");
    let left: Vec<String> =
        patched.spec.template.spec.expect("pod spec").containers.into_iter().map(|c| c.name).collect();
    assert_eq!(left, ["app"]);
}

/// A kube-runtime watcher's events, as ("apply"|"delete"|"init-done", name).
fn run_watcher<K>(api: Api<K>, config: watcher::Config) -> Arc<Mutex<Vec<(String, String)>>>
where
    K: kube::Resource + Clone + serde::de::DeserializeOwned + std::fmt::Debug + Send + 'static,
{
    let seen: Arc<Mutex<Vec<(String, String)>>> = Arc::default();
    let into = seen.clone();
    tokio::spawn(async move {
        let mut stream = std::pin::pin!(watcher(api, config).default_backoff());
        while let Some(event) = stream.next().await {
            let entry = match event {
                Ok(watcher::Event::Apply(o) | watcher::Event::InitApply(o)) => {
                    ("apply", o.meta().name.clone().unwrap_or_default())
                }
                Ok(watcher::Event::Delete(o)) => ("delete", o.meta().name.clone().unwrap_or_default()),
                Ok(watcher::Event::InitDone) => ("init-done", String::new()),
                Ok(watcher::Event::Init) => continue,
                Err(_) => ("error", String::new()),
            };
            into.lock().expect("the list").push((entry.0.to_string(), entry.1));
        }
    });
    seen
}

async fn saw(seen: &Arc<Mutex<Vec<(String, String)>>>, kind: &str, name: &str) {
    eventually(&format!("{kind} {name}"), || {
        seen.lock().expect("the list").iter().any(|(k, n)| k == kind && n == name).then_some(())
    })
    .await
}

#[tokio::test]
async fn the_kube_watcher_sees_additions_changes_and_deletions() {
    let server = FakeApiServer::start().await;
    let api: Api<Deployment> = Api::namespaced(server.client("controller").await, "default");
    api.create(&PostParams::default(), &deployment("before", json!({}), "v1")).await.expect("created");
    let seen = run_watcher(api.clone(), watcher::Config::default());
    saw(&seen, "apply", "before").await;
    saw(&seen, "init-done", "").await;
    api.create(&PostParams::default(), &deployment("web", json!({}), "v1")).await.expect("created");
    saw(&seen, "apply", "web").await;
    let before = seen.lock().expect("the list").len();
    api.patch("web", &PatchParams::default(), &Patch::Merge(json!({"spec": {"replicas": 2}})))
        .await
        .expect("patched");
    eventually("the change", || (seen.lock().expect("the list").len() > before).then_some(())).await;
    api.delete("web", &DeleteParams::default()).await.expect("deleted");
    saw(&seen, "delete", "web").await;
    let watches: Vec<Request> = server.requests().into_iter().filter(|r| r.verb == "watch").collect();
    assert!(watches.iter().all(|r| r.client == "controller" && r.status == 200), "{watches:?}");
    assert_eq!(watches[0].param("allowWatchBookmarks").as_deref(), Some("true"));
}

fn lists_of(server: &FakeApiServer, plural: &str) -> usize {
    server.requests().iter().filter(|r| r.verb == "list" && r.is_for(plural)).count()
}

#[tokio::test]
async fn a_watcher_behind_a_compaction_relists_and_misses_nothing() {
    let server = FakeApiServer::start().await;
    let api: Api<Deployment> = Api::namespaced(server.client("controller").await, "default");
    let seen = run_watcher(api.clone(), watcher::Config::default());
    saw(&seen, "init-done", "").await;
    assert_eq!(lists_of(&server, "deployments"), 1);

    server.set_down(true).await;
    server
        .put(
            &Gvr::deployments(),
            "default",
            serde_json::to_value(deployment("meanwhile", json!({}), "v1")).expect("json"),
        )
        .expect("stored");
    server.compact();
    server.set_down(false).await;

    saw(&seen, "apply", "meanwhile").await;
    assert_eq!(lists_of(&server, "deployments"), 2, "the watcher re-listed after its 410");
}

#[tokio::test]
async fn dropped_watches_resume_and_compacted_ones_expire_in_stream() {
    let server = FakeApiServer::start().await;
    let client = server.client("controller").await;
    let api: Api<Deployment> = Api::namespaced(client.clone(), "default");
    let seen = run_watcher(api.clone(), watcher::Config::default());
    saw(&seen, "init-done", "").await;
    // Another type's changes move the resourceVersion past what the watcher has seen.
    let pods: Api<Pod> = Api::namespaced(client, "default");
    let pod: Pod = serde_json::from_value(
        json!({"metadata": {"name": "p"}, "spec": {"containers": [{"name": "c", "image": "i"}]}}),
    )
    .expect("a pod");
    pods.create(&PostParams::default(), &pod).await.expect("created");
    server.compact();
    server.drop_watches();
    eventually("a re-list", || (lists_of(&server, "deployments") == 2).then_some(())).await;

    // A raw watch from before the compaction gets an in-stream 410 Expired.
    let old = collect_watch(api.watch(&WatchParams::default(), "1").await.expect("answered 200"));
    let events = eventually("the stream's end", || {
        let s = old.lock().expect("the list");
        s.iter().any(|(k, _)| k == "END").then(|| s.clone())
    })
    .await;
    assert_eq!(events[0].0, "ERROR 410 Expired");

    // A dropped watch that is not behind resumes without a list.
    server.drop_watches();
    api.create(&PostParams::default(), &deployment("after", json!({}), "v1")).await.expect("created");
    saw(&seen, "apply", "after").await;
    assert_eq!(lists_of(&server, "deployments"), 2);
}

#[tokio::test]
async fn a_streaming_list_watcher_gets_its_initial_events_and_the_end_bookmark() {
    let server = FakeApiServer::start().await;
    let api: Api<Deployment> = Api::namespaced(server.client("controller").await, "default");
    api.create(&PostParams::default(), &deployment("web", json!({}), "v1")).await.expect("created");
    let seen = run_watcher(api.clone(), watcher::Config::default().streaming_lists());
    saw(&seen, "apply", "web").await;
    saw(&seen, "init-done", "").await;
    assert_eq!(lists_of(&server, "deployments"), 0, "a streaming list needs no list request");
    api.delete("web", &DeleteParams::default()).await.expect("deleted");
    saw(&seen, "delete", "web").await;
}

#[tokio::test]
async fn a_selector_watch_sees_an_object_leave_and_enter_its_selection() {
    let server = FakeApiServer::start().await;
    let api: Api<Deployment> = Api::namespaced(server.client("controller").await, "default");
    api.create(&PostParams::default(), &deployment("web", json!({"canary": "yes"}), "v1"))
        .await
        .expect("created");
    let seen = run_watcher(api.clone(), watcher::Config::default().labels("canary=yes"));
    saw(&seen, "apply", "web").await;
    saw(&seen, "init-done", "").await;
    api.patch(
        "web",
        &PatchParams::default(),
        &Patch::Merge(json!({"metadata": {"labels": {"canary": "no"}}})),
    )
    .await
    .expect("patched");
    saw(&seen, "delete", "web").await;
    let applies = || seen.lock().expect("the list").iter().filter(|(k, _)| k == "apply").count();
    assert_eq!(applies(), 1);
    api.patch(
        "web",
        &PatchParams::default(),
        &Patch::Merge(json!({"metadata": {"labels": {"canary": "yes"}}})),
    )
    .await
    .expect("patched");
    eventually("the object back in", || (applies() == 2).then_some(())).await;
}

#[tokio::test]
async fn finalizers_hold_a_deletion_until_the_last_is_removed() {
    let server = FakeApiServer::start().await;
    let api: Api<Deployment> = Api::namespaced(server.client("test").await, "default");
    let mut held = deployment("web", json!({}), "v1");
    held.metadata.finalizers = Some(vec!["canaryd.io/hold".into()]);
    let created = api.create(&PostParams::default(), &held).await.expect("created");
    let held_back = api.delete("web", &DeleteParams::default()).await.expect("deleted");
    assert!(held_back.is_left(), "a deletion finalizers hold answers the object");
    let deleting = api.get("web").await.expect("still there");
    assert!(deleting.metadata.deletion_timestamp.is_some(), "deletionTimestamp is set");
    assert_eq!(generation_of(&deleting), 2, "marking an object deleted bumps its generation");
    assert_ne!(rv_of(&deleting), rv_of(&created), "marking it deleted is a write");

    let add = json!({"metadata": {"finalizers": ["canaryd.io/hold", "other/x"]}});
    let refused = api_error(api.patch("web", &PatchParams::default(), &Patch::Merge(&add)).await);
    assert_eq!(refused.code, 422, "no finalizer may be added to an object being deleted");

    let release = json!({"metadata": {"finalizers": null}});
    api.patch("web", &PatchParams::default(), &Patch::Merge(&release)).await.expect("released");
    let gone = api_error(api.get("web").await);
    assert_eq!(gone.code, 404);
}

#[tokio::test]
async fn deleting_an_owner_deletes_its_dependents_and_a_namespace_its_content() {
    let server = FakeApiServer::start().await;
    let client = server.client("test").await;
    let deployments: Api<Deployment> = Api::namespaced(client.clone(), "default");
    let owner = deployments
        .create(&PostParams::default(), &deployment("web", json!({}), "v1"))
        .await
        .expect("created");
    let pods: Api<Pod> = Api::namespaced(client.clone(), "default");
    let owned = |name: &str, uid: &str| -> Pod {
        serde_json::from_value(json!({
            "metadata": {"name": name, "ownerReferences": [{"apiVersion": "apps/v1", "kind": "Deployment", "name": "web", "uid": uid}]},
            "spec": {"containers": [{"name": "c", "image": "i"}]},
        }))
        .expect("a pod")
    };
    let uid = owner.metadata.uid.clone().expect("a uid");
    pods.create(&PostParams::default(), &owned("dependent", &uid)).await.expect("created");
    pods.create(&PostParams::default(), &owned("stranger", "0000")).await.expect("created");
    deployments.delete("web", &DeleteParams::background()).await.expect("deleted");
    let left: Vec<String> = pods
        .list(&ListParams::default())
        .await
        .expect("listed")
        .items
        .into_iter()
        .filter_map(|p| p.metadata.name)
        .collect();
    assert_eq!(left, ["stranger"], "the dependent is collected, an object of another owner is not");

    let namespaces: Api<Namespace> = Api::all(client.clone());
    namespaces
        .create(
            &PostParams::default(),
            &serde_json::from_value(json!({"metadata": {"name": "doomed"}})).expect("ns"),
        )
        .await
        .expect("created");
    let inside: Api<Deployment> = Api::namespaced(client, "doomed");
    inside.create(&PostParams::default(), &deployment("web", json!({}), "v1")).await.expect("created");
    namespaces.delete("doomed", &DeleteParams::default()).await.expect("deleted");
    assert_eq!(api_error(inside.get("web").await).code, 404);
    assert_eq!(api_error(namespaces.get("doomed").await).code, 404);
    assert_eq!(api_error(namespaces.delete("default", &DeleteParams::default()).await).code, 403);
}

const CRD: &str = r#"{
  "apiVersion": "apiextensions.k8s.io/v1",
  "kind": "CustomResourceDefinition",
  "metadata": {"name": "canaries.example.io"},
  "spec": {
    "group": "example.io",
    "scope": "Namespaced",
    "names": {"plural": "canaries", "singular": "canary", "kind": "Canary", "shortNames": ["cn"]},
    "versions": [{
      "name": "v1", "served": true, "storage": true,
      "schema": {"openAPIV3Schema": {"type": "object", "x-kubernetes-preserve-unknown-fields": true}},
      "subresources": {"status": {}}
    }]
  }
}"#;

#[tokio::test]
async fn a_crd_registers_its_resource_with_status_semantics() {
    let server = FakeApiServer::start().await;
    let client = server.client("test").await;
    let crds: Api<DynamicObject> = Api::all_with(
        client.clone(),
        &ApiResource::from_gvk_with_plural(
            &GroupVersionKind::gvk("apiextensions.k8s.io", "v1", "CustomResourceDefinition"),
            "customresourcedefinitions",
        ),
    );
    let crd: DynamicObject = serde_json::from_str(CRD).expect("a crd");
    crds.create(&PostParams::default(), &crd).await.expect("created");
    let established = crds.get("canaries.example.io").await.expect("got");
    let conditions = established.data["status"]["conditions"].as_array().cloned().expect("conditions");
    for kind in ["Established", "NamesAccepted"] {
        assert!(
            conditions.iter().any(|c| c["type"] == kind && c["status"] == "True"),
            "{kind} is True: {conditions:?}"
        );
    }

    let discovery = Discovery::new(client.clone()).run().await.expect("discovery runs");
    let (resource, caps) = discovery
        .groups()
        .flat_map(|g| g.recommended_resources())
        .find(|(r, _)| r.plural == "canaries")
        .expect("discovery lists the custom resource");
    assert_eq!(
        (resource.group.as_str(), resource.version.as_str(), resource.kind.as_str()),
        ("example.io", "v1", "Canary")
    );
    assert_eq!(caps.scope, kube::discovery::Scope::Namespaced);
    assert!(caps.subresources.iter().any(|(r, _)| r.plural == "status"), "the status subresource is listed");

    let canaries: Api<DynamicObject> = Api::namespaced_with(client, "default", &resource);
    let canary: DynamicObject = serde_json::from_value(json!({
        "apiVersion": "example.io/v1", "kind": "Canary",
        "metadata": {"name": "one"}, "spec": {"weight": 10}, "status": {"phase": "ignored"},
    }))
    .expect("a canary");
    let created = canaries.create(&PostParams::default(), &canary).await.expect("created");
    assert_eq!(created.metadata.generation, Some(1));
    assert!(created.data.get("status").is_none(), "status is not written on create");

    let status = json!({"status": {"phase": "Progressing"}});
    let with_status =
        canaries.patch_status("one", &PatchParams::default(), &Patch::Merge(&status)).await.expect("patched");
    assert_eq!(with_status.data["status"]["phase"], "Progressing");
    assert_eq!(with_status.metadata.generation, Some(1), "a status change keeps generation");

    let spec = json!({"spec": {"weight": 50}, "status": {"phase": "ignored"}});
    let changed =
        canaries.patch("one", &PatchParams::default(), &Patch::Merge(&spec)).await.expect("patched");
    assert_eq!(changed.metadata.generation, Some(2), "a spec change bumps generation");
    assert_eq!(changed.data["status"]["phase"], "Progressing", "status through the main resource is ignored");

    let strategic = api_error(canaries.patch("one", &PatchParams::default(), &Patch::Strategic(&spec)).await);
    assert_eq!(strategic.code, 415, "custom resources take no strategic merge patch");

    let mut unversioned = changed.clone();
    unversioned.metadata.resource_version = None;
    let refused = api_error(canaries.replace("one", &PostParams::default(), &unversioned).await);
    assert_eq!(refused.code, 422, "an update of a custom resource must name its resourceVersion");

    canaries.delete("one", &DeleteParams::default()).await.expect("deleted");
    assert_eq!(api_error(canaries.get("one").await).code, 404);

    // Deleting the CRD deletes its custom resources and stops serving them.
    canaries.create(&PostParams::default(), &canary).await.expect("created again");
    crds.delete("canaries.example.io", &DeleteParams::default()).await.expect("the CRD deleted");
    assert!(server.list(&Gvr::new("example.io", "v1", "canaries"), None).is_empty());
    let unserved = api_error(canaries.list(&ListParams::default()).await);
    assert_eq!(unserved.code, 404);
    let discovery = Discovery::new(server.client("test").await).run().await.expect("discovery runs");
    assert!(!discovery.has_group("example.io"), "discovery no longer lists the group");
}

#[tokio::test]
async fn an_injected_conflict_bumps_the_object_and_answers_409_once() {
    let server = FakeApiServer::start().await;
    let api: Api<Deployment> = Api::namespaced(server.client("test").await, "default");
    let created =
        api.create(&PostParams::default(), &deployment("web", json!({}), "v1")).await.expect("created");
    server.conflict_next(&Gvr::deployments(), "default", "web", Some("status"));
    let status = json!({"status": {"replicas": 1}});
    let conflict = api_error(api.patch_status("web", &PatchParams::default(), &Patch::Merge(&status)).await);
    assert_eq!((conflict.code, conflict.reason.as_str()), (409, "Conflict"));
    let reread = api.get("web").await.expect("got");
    assert_ne!(rv_of(&reread), rv_of(&created), "someone else wrote first");
    api.patch_status("web", &PatchParams::default(), &Patch::Merge(&status))
        .await
        .expect("the retry succeeds");
}

#[tokio::test]
async fn a_down_server_refuses_connections_and_comes_back_on_its_port() {
    let server = FakeApiServer::start().await;
    let address = server.url().trim_start_matches("http://").to_string();
    server.set_down(true).await;
    assert!(std::net::TcpStream::connect(&address).is_err(), "connections are refused while down");
    server.set_down(false).await;
    let api: Api<Deployment> = Api::namespaced(server.client("test").await, "default");
    api.list(&ListParams::default()).await.expect("served again");
}

// --- kubectl ---------------------------------------------------------------------

/// Runs kubectl against the fake with a timeout; answers stdout, failing on an error.
async fn kubectl(kubeconfig: &Path, args: &[&str]) -> String {
    let output = tokio::time::timeout(
        DEADLINE,
        tokio::process::Command::new("kubectl")
            .arg("--kubeconfig")
            .arg(kubeconfig)
            // Discovery cached for this server only (not in ~/.kube/cache).
            .arg("--cache-dir")
            .arg(kubeconfig.with_extension("cache"))
            .args(args)
            .kill_on_drop(true)
            .output(),
    )
    .await
    .expect("kubectl finishes in time")
    .expect("kubectl runs");
    assert!(
        output.status.success(),
        "kubectl {args:?} failed: {}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8_lossy(&output.stdout).into_owned()
}

#[tokio::test]
async fn kubectl_reads_the_version_and_applies_and_lists_a_crd() {
    let server = FakeApiServer::start().await;
    let dir = tempfile::tempdir().expect("a temporary directory");
    let config = server.kubeconfig(dir.path(), "kubectl");
    let version = kubectl(&config, &["version", "-o", "json"]).await;
    let version: Value = serde_json::from_str(&version).expect("json");
    assert_eq!(version["serverVersion"]["gitVersion"], "v1.32.0-fake");

    let crd = dir.path().join("crd.yaml");
    std::fs::write(&crd, CRD).expect("written");
    kubectl(&config, &["apply", "-f", crd.to_str().expect("a path"), "--validate=false"]).await;
    assert!(
        server
            .get(
                &Gvr::new("apiextensions.k8s.io", "v1", "customresourcedefinitions"),
                "",
                "canaries.example.io"
            )
            .is_some()
    );
    kubectl(&config, &["wait", "--for=condition=Established", "crd/canaries.example.io", "--timeout=10s"])
        .await;
    let none = kubectl(&config, &["get", "canaries", "-o", "name"]).await;
    assert_eq!(none.trim(), "");
    server
        .put(
            &Gvr::new("example.io", "v1", "canaries"),
            "default",
            json!({"apiVersion": "example.io/v1", "kind": "Canary", "metadata": {"name": "one"}}),
        )
        .expect("stored");
    let listed = kubectl(&config, &["get", "canaries", "-o", "name"]).await;
    assert_eq!(listed.trim(), "canary.example.io/one");
    let by_short_name = kubectl(&config, &["get", "cn", "-o", "name"]).await;
    assert_eq!(by_short_name.trim(), "canary.example.io/one");
    let resources = kubectl(&config, &["api-resources", "--no-headers"]).await;
    let line = |name: &str| {
        resources
            .lines()
            .find(|l| l.split_whitespace().next() == Some(name))
            .map(|l| l.split_whitespace().collect::<Vec<_>>())
    };
    assert_eq!(line("deployments"), Some(vec!["deployments", "deploy", "apps/v1", "true", "Deployment"]));
    assert_eq!(line("canaries"), Some(vec!["canaries", "cn", "example.io/v1", "true", "Canary"]));
    assert_eq!(line("namespaces"), Some(vec!["namespaces", "ns", "v1", "false", "Namespace"]));

    // A second apply of a changed CRD patches it (kubectl computes the patch).
    std::fs::write(&crd, CRD.replace(r#""shortNames": ["cn"]"#, r#""shortNames": ["cn", "cny"]"#))
        .expect("written");
    kubectl(&config, &["apply", "-f", crd.to_str().expect("a path"), "--validate=false"]).await;
    let crd_gvr = Gvr::new("apiextensions.k8s.io", "v1", "customresourcedefinitions");
    let stored = server.get(&crd_gvr, "", "canaries.example.io").expect("stored");
    assert_eq!(stored["spec"]["names"]["shortNames"], json!(["cn", "cny"]));
    assert!(
        server
            .requests()
            .iter()
            .any(|r| r.verb == "patch" && r.is_for("customresourcedefinitions") && r.status == 200)
    );
    assert!(server.requests().iter().all(|r| r.client == "kubectl"));
}

#[tokio::test]
async fn kubectl_gets_patches_sets_images_and_deletes_deployments() {
    let server = FakeApiServer::start().await;
    let dir = tempfile::tempdir().expect("a temporary directory");
    let config = server.kubeconfig(dir.path(), "kubectl");
    let api: Api<Deployment> = Api::namespaced(server.client("test").await, "default");
    api.create(&PostParams::default(), &deployment("web", json!({}), "v1")).await.expect("created");

    let listed = kubectl(&config, &["get", "deployments", "-n", "default", "-o", "name"]).await;
    assert_eq!(listed.trim(), "deployment.apps/web");
    let table = kubectl(&config, &["get", "deployments", "-n", "default"]).await;
    assert!(table.contains("web"), "{table}");

    let images = |d: &Deployment| -> Vec<(String, String)> {
        d.spec
            .clone()
            .template
            .spec
            .expect("pod spec")
            .containers
            .into_iter()
            .map(|c| (c.name, c.image.unwrap_or_default()))
            .collect()
    };
    kubectl(
        &config,
        &[
            "patch",
            "deployment",
            "web",
            "-p",
            r#"{"spec":{"template":{"spec":{"containers":[{"name":"app","image":"v2"}]}}}}"#,
        ],
    )
    .await;
    let patched = api.get("web").await.expect("got");
    assert_eq!(images(&patched), [("app".into(), "v2".into()), ("sidecar".into(), "proxy:1".into())]);
    assert_eq!(generation_of(&patched), 2);
    let patch = server.requests().into_iter().find(|r| r.verb == "patch").expect("kubectl patched");
    assert_eq!((patch.client.as_str(), patch.status), ("kubectl", 200));
    assert_eq!(patch.content_type.as_deref(), Some("application/strategic-merge-patch+json"));

    kubectl(&config, &["set", "image", "deployment/web", "app=v3"]).await;
    let set = api.get("web").await.expect("got");
    assert_eq!(images(&set), [("app".into(), "v3".into()), ("sidecar".into(), "proxy:1".into())]);
    assert_eq!(generation_of(&set), 3);

    kubectl(&config, &["scale", "deployment/web", "--replicas=3"]).await;
    let replicas = kubectl(&config, &["get", "deployment", "web", "-o", "jsonpath={.spec.replicas}"]).await;
    assert_eq!(replicas, "3");
    assert!(
        server.requests().iter().any(|r| r.client == "kubectl"
            && r.resource.as_ref().is_some_and(|x| x.subresource.as_deref() == Some("scale"))),
        "kubectl scales through /scale"
    );

    // A test playing the deployment controller: once status reports the new generation
    // rolled out, kubectl's rollout status is satisfied.
    let generation = generation_of(&api.get("web").await.expect("got"));
    server
        .put_status(&Gvr::deployments(), "default", "web", json!({
            "observedGeneration": generation, "replicas": 3, "updatedReplicas": 3, "readyReplicas": 3, "availableReplicas": 3,
        }))
        .expect("status written");
    let rolled = kubectl(&config, &["rollout", "status", "deployment/web", "--timeout=10s"]).await;
    assert!(rolled.contains("successfully rolled out"), "{rolled}");

    kubectl(&config, &["delete", "deployment", "web"]).await;
    assert_eq!(api_error(api.get("web").await).code, 404);
}

/// The lines of a raw watch, read until the stream ends or DEADLINE passes.
async fn raw_watch_lines(
    server: &FakeApiServer,
    query: &str,
    until: impl Fn(&[Value]) -> bool,
) -> (Vec<Value>, bool) {
    let response = reqwest::Client::new()
        .get(format!("{}/apis/apps/v1/namespaces/default/deployments?{query}", server.url()))
        .bearer_auth(FakeApiServer::token("test"))
        .send()
        .await
        .expect("answered");
    assert_eq!(response.status().as_u16(), 200);
    assert_eq!(response.headers()["content-type"], "application/json");
    let mut response = response;
    let (mut buffer, mut lines) = (Vec::new(), Vec::new());
    let ended = tokio::time::timeout(DEADLINE, async {
        while let Some(chunk) = response.chunk().await.expect("a chunk") {
            buffer.extend_from_slice(&chunk);
            while let Some(at) = buffer.iter().position(|b| *b == b'\n') {
                let line: Vec<u8> = buffer.drain(..=at).collect();
                lines.push(serde_json::from_slice::<Value>(&line).expect("each line is one JSON event"));
            }
            if until(&lines) {
                return false;
            }
        }
        true
    })
    .await
    .unwrap_or(false);
    (lines, ended)
}

#[tokio::test]
async fn a_watch_sends_bookmarks_and_ends_at_its_timeout() {
    let server = FakeApiServer::start().await;
    server.set_bookmark_interval(Duration::from_millis(100));
    let api: Api<Deployment> = Api::namespaced(server.client("test").await, "default");
    api.create(&PostParams::default(), &deployment("web", json!({}), "v1")).await.expect("created");
    let rv = server.resource_version();
    let query = "watch=true&allowWatchBookmarks=true&timeoutSeconds=1";
    let (lines, ended) = raw_watch_lines(&server, query, |_| false).await;
    assert!(ended, "the stream ends at timeoutSeconds");
    assert_eq!(lines[0]["type"], "ADDED", "a watch without resourceVersion starts with the current objects");
    assert_eq!(lines[0]["object"]["metadata"]["name"], "web");
    let bookmark = lines.iter().find(|l| l["type"] == "BOOKMARK").expect("a bookmark within a second");
    assert_eq!(bookmark["object"]["kind"], "Deployment");
    assert_eq!(bookmark["object"]["apiVersion"], "apps/v1");
    assert_eq!(bookmark["object"]["metadata"]["resourceVersion"], rv.as_str());

    let (quiet, _) = raw_watch_lines(&server, "watch=true&timeoutSeconds=1", |_| false).await;
    assert!(quiet.iter().all(|l| l["type"] != "BOOKMARK"), "no bookmarks unless asked for");

    let from_now = format!("watch=true&resourceVersion={rv}&timeoutSeconds=1");
    let (none, _) = raw_watch_lines(&server, &from_now, |_| false).await;
    assert!(none.is_empty(), "a watch from the current resourceVersion replays nothing: {none:?}");
}

#[tokio::test]
async fn the_scale_subresource_reads_and_writes_replicas() {
    let server = FakeApiServer::start().await;
    let api: Api<Deployment> = Api::namespaced(server.client("test").await, "default");
    api.create(&PostParams::default(), &deployment("web", json!({}), "v1")).await.expect("created");
    let scale = api.get_scale("web").await.expect("a scale");
    assert_eq!(scale.spec.and_then(|s| s.replicas), Some(1));
    assert_eq!(scale.status.map(|s| s.selector), Some(Some("app=web".to_string())));
    let patch = json!({"spec": {"replicas": 4}});
    api.patch_scale("web", &PatchParams::default(), &Patch::Merge(&patch)).await.expect("scaled");
    let scaled = api.get("web").await.expect("got");
    assert_eq!(scaled.spec.replicas, Some(4));
    assert_eq!(generation_of(&scaled), 2, "replicas are spec");
}

#[tokio::test]
async fn updates_check_the_name_and_allow_no_resource_version_on_built_in_types() {
    let server = FakeApiServer::start().await;
    let api: Api<Deployment> = Api::namespaced(server.client("test").await, "default");
    let created =
        api.create(&PostParams::default(), &deployment("web", json!({}), "v1")).await.expect("created");
    let mut unconditional = created.clone();
    unconditional.metadata.resource_version = None;
    unconditional.spec.replicas = Some(2);
    let replaced =
        api.replace("web", &PostParams::default(), &unconditional).await.expect("an unconditional update");
    assert_eq!(replaced.spec.replicas, Some(2));
    let mut renamed = replaced.clone();
    renamed.metadata.name = Some("other".into());
    let refused = api_error(api.replace("web", &PostParams::default(), &renamed).await);
    assert_eq!((refused.code, refused.reason.as_str()), (400, "BadRequest"));
    let missing = api_error(
        api.replace("nothing", &PostParams::default(), &deployment("nothing", json!({}), "v1")).await,
    );
    assert_eq!(missing.code, 404, "PUT does not create");
}

#[tokio::test]
async fn leases_events_and_http_routes_are_served() {
    let server = FakeApiServer::start().await;
    let client = server.client("canaryd").await;
    let gvk = |g: &str, k: &str, plural: &str| {
        ApiResource::from_gvk_with_plural(&GroupVersionKind::gvk(g, "v1", k), plural)
    };
    let leases: Api<DynamicObject> =
        Api::namespaced_with(client.clone(), "default", &gvk("coordination.k8s.io", "Lease", "leases"));
    let lease: DynamicObject = serde_json::from_value(json!({
        "apiVersion": "coordination.k8s.io/v1", "kind": "Lease",
        "metadata": {"name": "canaryd"}, "spec": {"holderIdentity": "a", "leaseDurationSeconds": 15},
    }))
    .expect("a lease");
    let created = leases.create(&PostParams::default(), &lease).await.expect("created");
    let mut taken = created.clone();
    taken.data["spec"]["holderIdentity"] = json!("b");
    leases.replace("canaryd", &PostParams::default(), &taken).await.expect("taken over");
    let stale = api_error(leases.replace("canaryd", &PostParams::default(), &created).await);
    assert_eq!(stale.code, 409, "a second taker with the old version loses");

    let events: Api<DynamicObject> =
        Api::namespaced_with(client.clone(), "default", &gvk("", "Event", "events"));
    let event: DynamicObject = serde_json::from_value(json!({
        "apiVersion": "v1", "kind": "Event",
        "metadata": {"name": "web.1"}, "involvedObject": {"kind": "Deployment", "name": "web", "namespace": "default"},
        "reason": "CanaryStep", "message": "10%", "type": "Normal",
    }))
    .expect("an event");
    events.create(&PostParams::default(), &event).await.expect("created");
    let found = events
        .list(&ListParams::default().fields("involvedObject.name=web,reason=CanaryStep"))
        .await
        .expect("listed");
    assert_eq!(found.items.len(), 1);

    let routes: Api<DynamicObject> = Api::namespaced_with(
        client.clone(),
        "default",
        &gvk("gateway.networking.k8s.io", "HTTPRoute", "httproutes"),
    );
    let route: DynamicObject = serde_json::from_value(json!({
        "apiVersion": "gateway.networking.k8s.io/v1", "kind": "HTTPRoute",
        "metadata": {"name": "web"}, "spec": {"rules": [{"backendRefs": [{"name": "web", "weight": 90}, {"name": "web-canary", "weight": 10}]}]},
    }))
    .expect("a route");
    routes.create(&PostParams::default(), &route).await.expect("created");
    let weights = json!({"spec": {"rules": [{"backendRefs": [{"name": "web", "weight": 50}, {"name": "web-canary", "weight": 50}]}]}});
    let moved = routes.patch("web", &PatchParams::default(), &Patch::Merge(&weights)).await.expect("patched");
    assert_eq!(moved.data["spec"]["rules"][0]["backendRefs"][1]["weight"], 50);
    assert_eq!(moved.metadata.generation, Some(2));
    let status = json!({"status": {"parents": [{"parentRef": {"name": "gw"}, "controllerName": "example.io/gw", "conditions": []}]}});
    let with_status =
        routes.patch_status("web", &PatchParams::default(), &Patch::Merge(&status)).await.expect("status");
    assert_eq!(with_status.metadata.generation, Some(2));

    let log = server.requests();
    let create = log.iter().find(|r| r.verb == "create" && r.is_for("httproutes")).expect("logged");
    assert_eq!(create.client, "canaryd");
    assert_eq!(create.status, 201);
    let resource = create.resource.clone().expect("a resource");
    assert_eq!(
        (resource.group.as_str(), resource.version.as_str(), resource.namespace.as_deref()),
        ("gateway.networking.k8s.io", "v1", Some("default"))
    );
    let status_write = log.iter().find(|r| {
        r.verb == "patch"
            && r.is_for("httproutes")
            && r.resource.as_ref().is_some_and(|x| x.subresource.as_deref() == Some("status"))
    });
    assert!(status_write.is_some(), "the status write is logged with its subresource");
}

fn lease(holder: &str) -> Value {
    json!({
        "apiVersion": "coordination.k8s.io/v1", "kind": "Lease",
        "metadata": {"name": "leader"}, "spec": {"holderIdentity": holder, "leaseDurationSeconds": 15},
    })
}

#[tokio::test]
async fn server_side_apply_creates_merges_and_refuses_another_managers_fields() {
    let server = FakeApiServer::start().await;
    let resource = ApiResource::from_gvk_with_plural(
        &GroupVersionKind::gvk("coordination.k8s.io", "v1", "Lease"),
        "leases",
    );
    let leases: Api<DynamicObject> =
        Api::namespaced_with(server.client("canaryd").await, "default", &resource);

    let created =
        leases.patch("leader", &PatchParams::apply("a"), &Patch::Apply(lease("a"))).await.expect("applied");
    assert_eq!(created.data["spec"]["holderIdentity"], "a");
    let log = server.requests();
    assert_eq!(log.last().map(|r| r.status), Some(201), "an apply that creates answers 201");

    let again =
        leases.patch("leader", &PatchParams::apply("a"), &Patch::Apply(lease("a"))).await.expect("applied");
    assert_eq!(
        again.metadata.resource_version, created.metadata.resource_version,
        "the same apply changes nothing"
    );

    let taken = api_error(leases.patch("leader", &PatchParams::apply("b"), &Patch::Apply(lease("b"))).await);
    assert_eq!((taken.code, taken.reason.as_str()), (409, "Conflict"), "b may not take a's field unforced");
    assert!(taken.message.contains("conflict with \"a\""), "{}", taken.message);
    assert_eq!(leases.get("leader").await.expect("got").data["spec"]["holderIdentity"], "a");

    let forced = leases
        .patch("leader", &PatchParams::apply("b").force(), &Patch::Apply(lease("b")))
        .await
        .expect("forced");
    assert_eq!(forced.data["spec"]["holderIdentity"], "b");
    let back = api_error(leases.patch("leader", &PatchParams::apply("a"), &Patch::Apply(lease("a"))).await);
    assert_eq!(back.code, 409, "b owns the field now");

    // A field b no longer applies is removed; one it never applied stays.
    let fewer = json!({"apiVersion": "coordination.k8s.io/v1", "kind": "Lease", "metadata": {"name": "leader"}, "spec": {"holderIdentity": "b"}});
    let applied =
        leases.patch("leader", &PatchParams::apply("b"), &Patch::Apply(fewer)).await.expect("applied");
    assert!(applied.data["spec"].get("leaseDurationSeconds").is_none(), "{:?}", applied.data);

    // An update by another manager takes the fields it changes.
    let update = json!({"spec": {"holderIdentity": "c"}});
    leases
        .patch(
            "leader",
            &PatchParams { field_manager: Some("c".into()), ..Default::default() },
            &Patch::Merge(&update),
        )
        .await
        .expect("patched");
    let refused =
        api_error(leases.patch("leader", &PatchParams::apply("b"), &Patch::Apply(lease("b"))).await);
    assert_eq!(refused.code, 409);

    let no_manager = reqwest::Client::new()
        .patch(format!("{}/apis/coordination.k8s.io/v1/namespaces/default/leases/leader", server.url()))
        .bearer_auth(FakeApiServer::token("test"))
        .header("content-type", "application/apply-patch+yaml")
        .body("apiVersion: coordination.k8s.io/v1\nkind: Lease\nmetadata:\n  name: leader\n")
        .send()
        .await
        .expect("answered");
    assert_eq!(no_manager.status().as_u16(), 422, "an apply needs a fieldManager");
}

/// What kube-lease-manager does: apply without a name, strategic patches by the holder,
/// a release that nulls the holder's fields, then another holder's unforced apply.
#[tokio::test]
async fn a_lease_released_by_its_holder_can_be_applied_by_another_without_force() {
    let server = FakeApiServer::start().await;
    let leases: Api<k8s_openapi::api::coordination::v1::Lease> =
        Api::namespaced(server.client("canaryd").await, "default");
    let empty: k8s_openapi::api::coordination::v1::Lease =
        serde_json::from_value(json!({"metadata": {"name": "leader"}, "spec": {}})).expect("a lease");
    leases.create(&PostParams::default(), &empty).await.expect("created");
    let manager = |who: &str| PatchParams { field_manager: Some(who.into()), ..Default::default() };
    let acquire = |who: &str| {
        json!({"apiVersion": "coordination.k8s.io/v1", "kind": "Lease", "spec": {
            "holderIdentity": who, "acquireTime": "2026-01-01T00:00:00.000000Z",
            "renewTime": "2026-01-01T00:00:00.000000Z", "leaseDurationSeconds": 2,
        }})
    };
    leases.patch("leader", &manager("a"), &Patch::Apply(acquire("a"))).await.expect("a acquires");
    let transitions =
        json!({"apiVersion": "coordination.k8s.io/v1", "kind": "Lease", "spec": {"leaseTransitions": 1}});
    leases.patch("leader", &manager("a"), &Patch::Strategic(&transitions)).await.expect("a counts");

    let contested = api_error(leases.patch("leader", &manager("b"), &Patch::Apply(acquire("b"))).await);
    assert_eq!(contested.code, 409, "b may not take a held lease's fields");

    let release = json!({"apiVersion": "coordination.k8s.io/v1", "kind": "Lease", "spec": {
        "acquireTime": null, "renewTime": null, "holderIdentity": null, "leaseDurationSeconds": null,
    }});
    let released =
        leases.patch("leader", &manager("a"), &Patch::Strategic(&release)).await.expect("a releases");
    let spec = released.spec.expect("a spec");
    assert_eq!((spec.holder_identity, spec.lease_transitions), (None, Some(1)));

    let taken = leases.patch("leader", &manager("b"), &Patch::Apply(acquire("b"))).await.expect("b acquires");
    assert_eq!(taken.spec.and_then(|s| s.holder_identity).as_deref(), Some("b"));
}

#[tokio::test]
async fn events_written_through_events_k8s_io_are_read_as_core_events() {
    use k8s_openapi::api::core::v1::{Event as CoreEvent, ObjectReference};
    use kube::runtime::events::{Event, EventType, Recorder, Reporter};

    let server = FakeApiServer::start().await;
    let client = server.client("canaryd").await;
    let recorder = Recorder::new(
        client.clone(),
        Reporter { controller: "canaryd".into(), instance: Some("canaryd-0".into()) },
    );
    let reference = ObjectReference {
        api_version: Some("apps/v1".into()),
        kind: Some("Deployment".into()),
        name: Some("web".into()),
        namespace: Some("default".into()),
        ..Default::default()
    };
    let step = Event {
        type_: EventType::Normal,
        reason: "CanaryStep".into(),
        note: Some("10% to the canary".into()),
        action: "Promote".into(),
        secondary: None,
    };
    recorder.publish(&step, &reference).await.expect("published");
    recorder.publish(&step, &reference).await.expect("published again, as a series");

    let core: Api<CoreEvent> = Api::namespaced(client.clone(), "default");
    let listed = core.list(&ListParams::default().fields("involvedObject.name=web")).await.expect("listed");
    assert_eq!(listed.items.len(), 1, "one event, its repetition a series");
    let event = &listed.items[0];
    assert_eq!(event.message.as_deref(), Some("10% to the canary"), "note is message");
    assert_eq!(
        event.reporting_component.as_deref(),
        Some("canaryd"),
        "reportingController is reportingComponent"
    );
    assert_eq!(event.involved_object.kind.as_deref(), Some("Deployment"), "regarding is involvedObject");
    assert_eq!(event.series.as_ref().and_then(|s| s.count), Some(2));

    let new: Api<k8s_openapi::api::events::v1::Event> = Api::namespaced(client, "default");
    let by_regarding = new.list(&ListParams::default().fields("regarding.name=web")).await.expect("listed");
    assert_eq!(by_regarding.items[0].note.as_deref(), Some("10% to the canary"));

    let dir = tempfile::tempdir().expect("a temporary directory");
    let config = server.kubeconfig(dir.path(), "kubectl");
    let shown: Value =
        serde_json::from_str(&kubectl(&config, &["get", "events", "-o", "json"]).await).expect("json");
    assert_eq!(shown["items"][0]["reason"], "CanaryStep");
    assert_eq!(shown["items"][0]["message"], "10% to the canary");

    let incomplete =
        json!({"apiVersion": "events.k8s.io/v1", "kind": "Event", "metadata": {"name": "bare"}, "note": "x"});
    let refused = api_error(
        new.create(&PostParams::default(), &serde_json::from_value(incomplete).expect("an event")).await,
    );
    assert_eq!(
        refused.code, 422,
        "events.k8s.io/v1 requires eventTime, reportingController, reportingInstance, action and reason"
    );
}

#[tokio::test]
async fn services_get_a_cluster_ip_that_stays() {
    use k8s_openapi::api::core::v1::Service;
    let server = FakeApiServer::start().await;
    let api: Api<Service> = Api::namespaced(server.client("test").await, "default");
    let service = |name: &str| -> Service {
        serde_json::from_value(json!({"metadata": {"name": name}, "spec": {"selector": {"app": "web"}, "ports": [{"port": 80}]}}))
            .expect("a service")
    };
    let created = api.create(&PostParams::default(), &service("web")).await.expect("created");
    let spec = created.spec.clone().expect("a spec");
    let ip = spec.cluster_ip.clone().expect("a clusterIP is allocated");
    assert_eq!(spec.cluster_ips, Some(vec![ip.clone()]));
    assert_eq!(spec.type_.as_deref(), Some("ClusterIP"));
    let port = &spec.ports.expect("ports")[0];
    assert_eq!(
        (port.protocol.as_deref(), port.target_port.clone()),
        (Some("TCP"), Some(k8s_openapi::apimachinery::pkg::util::intstr::IntOrString::Int(80)))
    );
    let other = api.create(&PostParams::default(), &service("web-canary")).await.expect("created");
    assert_ne!(other.spec.and_then(|s| s.cluster_ip), Some(ip.clone()), "each service its own IP");

    let mut moved = created.clone();
    moved.spec.as_mut().expect("spec").cluster_ip = Some("10.0.0.1".into());
    let refused = api_error(api.replace("web", &PostParams::default(), &moved).await);
    assert_eq!(refused.code, 422, "clusterIP is immutable");
    let mut omitted = created.clone();
    let spec = omitted.spec.as_mut().expect("spec");
    (spec.cluster_ip, spec.cluster_ips) = (None, None);
    let kept = api.replace("web", &PostParams::default(), &omitted).await.expect("replaced");
    assert_eq!(kept.spec.and_then(|s| s.cluster_ip), Some(ip));

    let portless: Service =
        serde_json::from_value(json!({"metadata": {"name": "bare"}, "spec": {}})).expect("a service");
    assert_eq!(
        api_error(api.create(&PostParams::default(), &portless).await).code,
        422,
        "a ClusterIP service needs ports"
    );
    let bad_name = service("1web");
    assert_eq!(
        api_error(api.create(&PostParams::default(), &bad_name).await).code,
        422,
        "service names are DNS-1035 labels"
    );
}
