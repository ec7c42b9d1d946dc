//! Gates and bakes end to end on the local platform: real Prometheus, nginx, wrk, demo
//! servers and `canaryd run` (the binary), with a stand-in gate webhook served by the
//! test. An approval gate holds a rollout at 50% while the analysis goes on, survives a
//! SIGKILL of the daemon, and opens once on `canaryd rollout approve`; a webhook gate
//! opens on the stand-in's 2xx and times out when it never comes; a bake reverts a canary
//! that turns bad after promotion, promotes a healthy one after its window, and is
//! reverted by hand within it.
//!
//! The policies run the demo's steps faster (3 s intervals, 6 s steps), a gate timeout of
//! 10 s and a bake of 20 s: the runbooks' hours and minutes, shrunk so the suite stays
//! short.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

use canaryd::demo::{Options, Stack, wait_until};
use canaryd::engine::{DecisionKind, EventKind};

mod support;
use support::stack::{ROLLOUT, cli, out, record, start, wait_view};

/// The demo's policy, faster, with `traffic_extra` added to `spec.traffic` and
/// `analysis_extra` to `spec.analysis`.
fn policy(traffic_extra: &str, analysis_extra: &str) -> String {
    format!(
        "apiVersion: canaryd.io/v1alpha1
kind: CanaryPolicy
metadata: {{name: demo, namespace: demo}}
spec:
  selector: {{matchLabels: {{app: web}}}}
  traffic:
    router: nginx
    steps: [10, 50, 100]
    stepDuration: 6s
{traffic_extra}
  analysis:
    interval: 3s
    inconclusiveLimit: 4
    minSampleSize: 100
{analysis_extra}
    metrics:
      - {{name: errors, template: http-error-rate, test: sequential, margin: 1.5}}
      - {{name: p95, template: http-latency-p95, test: sequential, max: 0.25}}
  triggers:
    - {{metric: errors, above: 0.1}}
"
    )
}

/// The caller the API recorded a command under, from the CLI's `… (as NAME)` answer.
fn caller(answer: &str) -> String {
    let after = answer.rsplit_once("(as ").map(|(_, rest)| rest).unwrap_or_default();
    after.split(')').next().unwrap_or_default().to_string()
}

/// The requests nginx serves all go to `version`: ten in a row, within a few seconds
/// (after a reload, nginx's old workers finish the connections they hold).
async fn front_is(stack: &Stack, version: &str) {
    let ten_in_a_row = || async {
        for _ in 0..10 {
            if stack.get_front().await.as_deref() != Some(version) {
                return false;
            }
        }
        true
    };
    let waited = wait_until(Duration::from_secs(10), "nginx serves one version", ten_in_a_row).await;
    let last = stack.get_front().await;
    assert!(waited.is_ok(), "not all {version}: last {last:?}; canaryd log:\n{}", stack.canaryd_log());
}

/// Waits until the rollout of `revision` has analysed `more` intervals beyond `from`,
/// and checks it stayed in `phase` meanwhile.
async fn holds(stack: &Stack, revision: &str, phase: &str, more: u64) {
    let from = wait_view(stack, "a view", |v| v.revision == revision).await.intervals;
    let v = wait_view(stack, "more intervals analysed", |v| {
        v.revision == revision && (v.intervals >= from + more || v.phase != phase)
    })
    .await;
    assert_eq!(v.phase, phase, "held in {phase} while analysing on: {v:#?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_approval_gate_holds_at_50_percent_rolls_back_a_canary_gone_bad_and_opens_once_after_a_sigkill() {
    let gate = "    gates: [{at: 50, type: approval}]";
    let (mut stack, _turn) = start(Options { policy: policy(gate, ""), ..Options::default() }).await;

    // v2 reaches the gate and holds there, analysing on; then it turns bad.
    stack.deploy_canary("v2", 0.005, 5).await.unwrap();
    stack.start_rollout("v2").await.unwrap();
    let waiting = wait_view(&stack, "v2 waits at 50%", |v| {
        v.revision == "v2" && v.phase == "waiting" && v.applied_weight == Some(50)
    })
    .await;
    assert_eq!(waiting.gate.as_ref().map(|g| g.kind.as_str()), Some("approval"), "{waiting:#?}");
    assert!(waiting.progress().contains("waiting for approval at 50%"), "{}", waiting.progress());
    holds(&stack, "v2", "waiting", 2).await;
    let metrics = reqwest::get(format!("{}/metrics", stack.api())).await.unwrap().text().await.unwrap();
    assert!(
        metrics.lines().any(|l| l.starts_with("canaryd_rollouts_at_gate{gate=\"approval\"} 1")),
        "the wait is counted: {metrics}"
    );
    stack.set_canary_error_rate(0.3).await.unwrap();
    let end = stack.follow("v2", ROLLOUT, |_| {}).await.unwrap();
    assert_eq!(end.phase, "rolled-back", "{end:#?}");
    let r = record(&stack, "v2").await;
    assert!(r.decisions.iter().all(|d| d.action != DecisionKind::Approved), "never approved");
    let rolled = r.decisions.iter().find(|d| d.action == DecisionKind::RolledBack).unwrap();
    assert_eq!(rolled.weight, 0);
    assert!(!rolled.triggers.is_empty() || !rolled.evidence.is_empty(), "rests on evidence: {rolled:?}");
    let waited = r.decisions.iter().find(|d| d.action == DecisionKind::Waiting).unwrap();
    assert!(waited.reason.contains("waiting for approval at 50%"), "{}", waited.reason);
    assert!(stack.nginx_serves().await.unwrap().starts_with("web 0 "), "traffic back on stable");
    front_is(&stack, "v1").await;
    let told = stack.notifications();
    assert!(
        told.iter().any(|n| n.key.revision == "v2" && n.event == EventKind::Waiting),
        "the wait is told: {told:?}"
    );

    // v3 waits at the gate; canaryd is killed and started again; it still waits.
    stack.deploy_canary("v3", 0.005, 5).await.unwrap();
    stack.start_rollout("v3").await.unwrap();
    wait_view(&stack, "v3 waits at 50%", |v| v.revision == "v3" && v.phase == "waiting").await;
    stack.kill_canaryd();
    stack.start_canaryd().await.unwrap();
    let after = wait_view(&stack, "the restarted daemon's view", |v| v.revision == "v3").await;
    assert_eq!((after.phase.as_str(), after.weight), ("waiting", 50), "{after:#?}");
    holds(&stack, "v3", "waiting", 2).await;

    // One approval opens it; a second, sent at once, opens nothing more.
    let first = cli(&stack, &["approve", "web"]);
    assert!(first.status.success(), "{}", out(&first));
    let by = caller(&out(&first));
    assert!(!by.is_empty(), "{}", out(&first));
    let _second = cli(&stack, &["approve", "web"]);
    let end = stack.follow("v3", ROLLOUT, |_| {}).await.unwrap();
    assert_eq!(end.phase, "succeeded", "{end:#?}");
    let r = record(&stack, "v3").await;
    let approvals: Vec<_> = r.decisions.iter().filter(|d| d.action == DecisionKind::Approved).collect();
    assert_eq!(approvals.len(), 1, "approved once: {:?}", r.decisions);
    assert!(approvals[0].reason.contains(&format!("approved by {by}")), "{}", approvals[0].reason);
    assert_eq!(approvals[0].weight, 50);
    let seqs: Vec<u64> = r.decisions.iter().map(|d| d.seq).collect();
    assert_eq!(seqs, (0..seqs.len() as u64).collect::<Vec<_>>(), "no decision lost or repeated");
    front_is(&stack, "v3").await;
    let late = cli(&stack, &["approve", "web"]);
    assert!(!late.status.success(), "{}", out(&late));
    assert!(out(&late).contains("cannot approve a rollout that is succeeded"), "{}", out(&late));
}

/// A stand-in for a confirm webhook: answers 200 for `revision` once opened, 503 before
/// and for any other revision; counts the asks.
struct StandIn {
    open: AtomicBool,
    revision: &'static str,
    asks: AtomicUsize,
}

async fn serve_stand_in(stand_in: Arc<StandIn>) -> u16 {
    use axum::http::StatusCode;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let app = axum::Router::new().route(
        "/gate",
        axum::routing::post(move |axum::Json(body): axum::Json<serde_json::Value>| {
            let s = stand_in.clone();
            async move {
                s.asks.fetch_add(1, Ordering::SeqCst);
                let mine = body["revision"] == s.revision && body["rollout"] == "demo/web";
                if mine && s.open.load(Ordering::SeqCst) {
                    StatusCode::OK
                } else {
                    StatusCode::SERVICE_UNAVAILABLE
                }
            }
        }),
    );
    tokio::spawn(async move { axum::serve(listener, app).await });
    port
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_webhook_gate_opens_on_a_2xx_and_one_that_never_opens_rolls_back_at_the_gate_timeout() {
    let stand_in =
        Arc::new(StandIn { open: AtomicBool::new(false), revision: "v2", asks: AtomicUsize::new(0) });
    let port = serve_stand_in(stand_in.clone()).await;
    let gate = format!(
        "    gates: [{{at: 10, type: webhook, url: 'http://127.0.0.1:{port}/gate', timeout: 2s}}]\n    gateTimeout: 10s"
    );
    let (stack, _turn) = start(Options { policy: policy(&gate, ""), ..Options::default() }).await;

    stack.deploy_canary("v2", 0.005, 5).await.unwrap();
    stack.start_rollout("v2").await.unwrap();
    let closed = wait_view(&stack, "v2 waits at 10% and its webhook was asked", |v| {
        v.revision == "v2" && v.gate.as_ref().is_some_and(|g| g.last_answer.is_some())
    })
    .await;
    let answer = closed.gate.as_ref().and_then(|g| g.last_answer.clone()).unwrap();
    assert!(answer.contains("503"), "{answer}");
    assert_eq!((closed.phase.as_str(), closed.weight), ("waiting", 10));
    stand_in.open.store(true, Ordering::SeqCst);
    let end = stack.follow("v2", ROLLOUT, |_| {}).await.unwrap();
    assert_eq!(end.phase, "succeeded", "{end:#?}");
    let r = record(&stack, "v2").await;
    let opened = r.decisions.iter().find(|d| d.action == DecisionKind::Approved).unwrap();
    assert!(opened.reason.contains("webhook answered 200 OK"), "{}", opened.reason);
    assert!(stand_in.asks.load(Ordering::SeqCst) >= 2, "asked until it opened");

    // v3's gate never opens: at 10 s it rolls back with that reason.
    stack.deploy_canary("v3", 0.005, 5).await.unwrap();
    stack.start_rollout("v3").await.unwrap();
    let end = stack.follow("v3", ROLLOUT, |_| {}).await.unwrap();
    assert_eq!(end.phase, "rolled-back", "{end:#?}");
    let r = record(&stack, "v3").await;
    let rolled = r.decisions.iter().find(|d| d.action == DecisionKind::RolledBack).unwrap();
    assert!(rolled.reason.contains("was not opened within the gate timeout of 10s"), "{}", rolled.reason);
    assert!(rolled.reason.contains("503"), "names the webhook's last answer: {}", rolled.reason);
    let waited = r.decisions.iter().find(|d| d.action == DecisionKind::Waiting).unwrap();
    assert!(
        rolled.at.duration_since(waited.at).as_secs() >= 10,
        "not before the timeout: waited {} to {}",
        waited.at,
        rolled.at
    );
    front_is(&stack, "v2").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bake_reverts_a_canary_that_turns_bad_after_promotion_promotes_a_healthy_one_and_reverts_by_hand() {
    let options = Options { policy: policy("", "    bake: 20s"), ..Options::default() };
    let (stack, _turn) = start(options).await;

    // v2 passes every step and bakes at 100%, the stable servers still on v1; a few
    // intervals in, it starts failing, and the previous version takes all traffic back.
    stack.deploy_canary("v2", 0.005, 5).await.unwrap();
    stack.start_rollout("v2").await.unwrap();
    let baking = wait_view(&stack, "v2 bakes at 100%", |v| {
        v.revision == "v2" && v.phase == "baking" && v.applied_weight == Some(100)
    })
    .await;
    assert!(baking.bake_until.is_some(), "{baking:#?}");
    front_is(&stack, "v2").await;
    holds(&stack, "v2", "baking", 1).await;
    stack.set_canary_error_rate(0.3).await.unwrap();
    let end = stack.follow("v2", ROLLOUT, |_| {}).await.unwrap();
    assert_eq!(end.phase, "rolled-back", "{end:#?}");
    assert!(stack.nginx_serves().await.unwrap().starts_with("web 0 "), "traffic back on stable");
    front_is(&stack, "v1").await;
    let r = record(&stack, "v2").await;
    assert!(r.reverted, "{r:#?}");
    let listed = std::process::Command::new(support::stack::binaries().canaryd)
        .arg("records")
        .arg("--dir")
        .arg(stack.path("records"))
        .arg("list")
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&listed.stdout);
    let line = text.lines().find(|l| l.contains("demo/web@v2")).unwrap_or_default();
    assert!(line.contains(" reverted "), "the records list says reverted: {text}");
    let reverted = r.decisions.iter().find(|d| d.action == DecisionKind::Reverted).unwrap();
    assert!(
        !reverted.triggers.is_empty() || !reverted.evidence.is_empty(),
        "rests on evidence: {reverted:?}"
    );
    assert!(
        reverted.reason.contains("the previous revision serves all traffic again"),
        "{}",
        reverted.reason
    );
    let told = stack.notifications();
    let n = told.iter().find(|n| n.key.revision == "v2" && n.event == EventKind::Reverted).unwrap();
    assert_eq!(n.reason, reverted.reason, "the notification says why");

    // v3 stays healthy: promoted once its 20 s bake is over; a revert is refused after.
    stack.deploy_canary("v3", 0.005, 5).await.unwrap();
    stack.start_rollout("v3").await.unwrap();
    let end = stack.follow("v3", ROLLOUT, |_| {}).await.unwrap();
    assert_eq!(end.phase, "succeeded", "{end:#?}");
    let r = record(&stack, "v3").await;
    let began = r.decisions.iter().find(|d| d.action == DecisionKind::Baking).unwrap();
    let promoting = r.decisions.iter().find(|d| d.action == DecisionKind::Promoting).unwrap();
    assert!(promoting.at.duration_since(began.at).as_secs() >= 20, "baked 20 s: {began:?} {promoting:?}");
    assert!(!r.reverted);
    front_is(&stack, "v3").await;
    let late = cli(&stack, &["revert", "web"]);
    assert!(!late.status.success(), "{}", out(&late));
    assert!(out(&late).contains("bake window is over"), "{}", out(&late));

    // v4 is reverted by hand within its bake: v3, now stable, takes the traffic back.
    stack.deploy_canary("v4", 0.005, 5).await.unwrap();
    stack.start_rollout("v4").await.unwrap();
    wait_view(&stack, "v4 bakes", |v| v.revision == "v4" && v.phase == "baking").await;
    let revert = cli(&stack, &["revert", "web"]);
    assert!(revert.status.success(), "{}", out(&revert));
    let by = caller(&out(&revert));
    let end = stack.follow("v4", ROLLOUT, |_| {}).await.unwrap();
    assert_eq!(end.phase, "rolled-back", "{end:#?}");
    let r = record(&stack, "v4").await;
    let reverted = r.decisions.iter().find(|d| d.action == DecisionKind::Reverted).unwrap();
    assert!(reverted.reason.contains(&format!("reverted by {by} during the bake")), "{}", reverted.reason);
    wait_until(ROLLOUT, "nginx back on stable", || async {
        stack.nginx_serves().await.is_some_and(|s| s.starts_with("web 0 "))
    })
    .await
    .unwrap();
    front_is(&stack, "v3").await;
}
