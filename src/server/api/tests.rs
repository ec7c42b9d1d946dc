//! The API's handlers, driven through the router: authentication, status codes, bodies.

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
    commands: UnboundedReceiver<OperatorCommand>,
    policies: tokio::sync::watch::Sender<Arc<Vec<LoadedPolicy>>>,
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
        gate: None,
        bake_until: None,
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
    let (policies, policies_rx) = tokio::sync::watch::channel(Arc::new(web_policy("local")));
    let (commands_tx, commands) = tokio::sync::mpsc::unbounded_channel();
    let (alerts_tx, alerts) = tokio::sync::mpsc::unbounded_channel();
    let tokens = tokens.iter().map(|(n, t)| (n.to_string(), Secret::new(*t))).collect();
    let state = crate::server::AppState {
        api: Some(Api {
            platform: Some(platform.clone()),
            views: views_rx,
            policies: policies_rx,
            commands: commands_tx.into(),
            alerts: alerts_tx.into(),
            wake: Arc::default(),
            store: None,
            records_dir: Some(dir.path().join("records")),
            metrics: ApiMetrics::default(),
            elsewhere: None,
        }),
        access: Access { tokens: Arc::new(tokens), read_requires_token },
        max_body_bytes: 4096,
        ..Default::default()
    };
    Fixture { state, platform, views, policies, commands, alerts, _dir: dir }
}

async fn call(
    state: &crate::server::AppState,
    method: &str,
    path: &str,
    auth: Option<&str>,
    body: &str,
) -> (StatusCode, String) {
    let mut request = Request::builder().method(method).uri(path).header("content-type", "application/json");
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
    state.rollout = crate::engine::step(&state.rollout, &crate::engine::Input::Start, at).unwrap().rollout;
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
    // A stand-in for the loop: takes the command and says it was saved as decision 7.
    let mut commands = f.commands;
    let looped = tokio::spawn(async move {
        let c = commands.recv().await.expect("the command reaches the loop");
        let seen = (c.id.to_string(), c.command, c.by.clone());
        c.done.expect("the API waits for its outcome").send(CommandOutcome::Applied { decision: 7 }).unwrap();
        seen
    });
    let (status, text) = call(&f.state, "POST", path, Some(ALICE), "").await;
    assert_eq!(status, StatusCode::OK, "{text}");
    let answer: CommandAnswer = serde_json::from_str(&text).unwrap();
    assert_eq!((answer.by.as_str(), answer.status.as_str(), answer.decision), ("alice", "applied", Some(7)));
    let seen = looped.await.unwrap();
    assert_eq!(seen, ("local/web".into(), Command::Pause, "alice".to_string()));
}

#[tokio::test]
async fn a_command_the_loop_refuses_is_a_409_with_the_engines_reason() {
    let f = fixture(&[("alice", ALICE)], false);
    f.views.send_replace(vec![view("waiting")]);
    let mut commands = f.commands;
    tokio::spawn(async move {
        let c = commands.recv().await.expect("the command reaches the loop");
        // The rollout moved on between the API's look and the loop's.
        let why = "cannot approve a rollout that is progressing: it waits at no gate yet".to_string();
        c.done.unwrap().send(CommandOutcome::Refused(why)).unwrap();
    });
    let (status, text) = call(&f.state, "POST", "/api/v1/rollouts/local/web/approve", Some(ALICE), "").await;
    assert_eq!(status, StatusCode::CONFLICT, "{text}");
    assert!(text.contains("rollout local/web") && text.contains("waits at no gate yet"), "{text}");
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
    let (status, text) = call(&f.state, "POST", "/api/v1/rollouts/local/web/resume", Some(ALICE), "").await;
    assert_eq!(status, StatusCode::CONFLICT, "{text}");
    assert!(text.contains("only when paused"), "{text}");
    assert!(f.commands.try_recv().is_err(), "no refused command reaches the loop");
}

#[tokio::test]
async fn an_unknown_rollout_or_command_or_path_is_a_404_in_json() {
    let f = fixture(&[("alice", ALICE)], false);
    f.views.send_replace(vec![view("progressing")]);
    let (status, text) = call(&f.state, "POST", "/api/v1/rollouts/local/api/abort", Some(ALICE), "").await;
    assert_eq!(status, StatusCode::NOT_FOUND, "{text}");
    assert!(text.contains("no rollout local/api"), "{text}");
    let (status, text) = call(&f.state, "GET", "/api/v1/rollouts/shop/web", None, "").await;
    assert_eq!(status, StatusCode::NOT_FOUND, "{text}");
    let (status, text) = call(&f.state, "POST", "/api/v1/rollouts/local/web/explode", Some(ALICE), "").await;
    assert_eq!(status, StatusCode::NOT_FOUND, "{text}");
    assert!(text.contains("promote, abort, pause, resume, approve, revert"), "{text}");
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
    let (status, text) =
        call(&f.state, "POST", "/api/v1/rollouts", Some(ALICE), r#"{"service": "web", "revision": "v2"}"#)
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
    let (status, text) =
        call(&f.state, "POST", "/api/v1/rollouts", Some(ALICE), r#"{"service": "api", "revision": "v2"}"#)
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

/// A policy in `namespace` selecting `app: web`, loaded.
fn web_policy(namespace: &str) -> Vec<LoadedPolicy> {
    let text = format!(
        "apiVersion: canaryd.io/v1alpha1
kind: CanaryPolicy
metadata: {{name: web-default, namespace: {namespace}}}
spec:
  selector: {{matchLabels: {{app: web}}}}
  traffic: {{router: nginx}}
  analysis:
    metrics:
      - {{name: errors, template: http-error-rate, test: sequential, margin: 1.5}}
"
    );
    let loaded = crate::policy::load_str("web.yaml", &text);
    assert!(loaded.problems.is_empty(), "{:?}", loaded.problems);
    loaded.policies
}

#[tokio::test]
async fn a_rollout_no_policy_selects_is_refused_at_once_naming_the_namespace_labels_and_the_closest_policy() {
    let f = fixture(&[("alice", ALICE)], false);
    // The policy selects `app: web`, but in namespace shop; the service is in local.
    f.policies.send_replace(Arc::new(web_policy("shop")));
    let body = r#"{"service": "web", "revision": "v5"}"#;
    let (status, text) = call(&f.state, "POST", "/api/v1/rollouts", Some(ALICE), body).await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{text}");
    assert!(text.contains("no policy selects local/web (namespace local, labels app=web)"), "{text}");
    assert!(text.contains("shop/web-default would select its labels"), "{text}");
    assert!(text.contains("only in its own namespace"), "{text}");
    assert!(f.platform.events().is_empty(), "nothing reaches the loop");
    // With the policy in the service's namespace, the same request starts a rollout.
    f.policies.send_replace(Arc::new(web_policy("local")));
    let (status, text) = call(&f.state, "POST", "/api/v1/rollouts", Some(ALICE), body).await;
    assert_eq!(status, StatusCode::ACCEPTED, "{text}");
    assert_eq!(f.platform.events().len(), 1);
}

#[tokio::test]
async fn a_route_called_with_the_wrong_method_is_a_405_in_json_naming_the_methods() {
    let f = fixture(&[("alice", ALICE)], false);
    let (status, text) = call(&f.state, "GET", "/api/v1/alertmanager", None, "").await;
    assert_eq!(status, StatusCode::METHOD_NOT_ALLOWED, "{text}");
    let error =
        serde_json::from_str::<serde_json::Value>(&text).unwrap()["error"].as_str().unwrap().to_string();
    assert!(error.contains("does not take that method"), "{error}");
}
