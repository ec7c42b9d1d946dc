//! The Kubernetes platform end to end: the real `canaryd run` binary against the fake
//! API server (a test double), with the kubelet stand-in running real demo-app pods, a
//! real Prometheus scraping them with the documented relabelling, the gateway stand-in
//! applying route weights to a real nginx, and wrk's load through it.

mod support;

use std::time::Duration;

use k8s_openapi::api::apps::v1::Deployment;
use kube::api::{Api, PostParams};
use serde_json::{Value, json};
use support::kubernetes::{KubeStack, NAMESPACE, deployment};
use support::prometheus::poll;

/// One Kubernetes stack at a time: each runs wrk and a dozen processes on two cores.
static ONE_AT_A_TIME: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// Time a whole rollout may take here (its steps take about 30 s).
const ROLLOUT: Duration = Duration::from_secs(180);

const POLICY: &str = r#"
apiVersion: canaryd.io/v1alpha1
kind: CanaryPolicy
metadata: {name: web, namespace: shop}
spec:
  selector: {matchLabels: {canary: enabled}}
  traffic: {router: gateway-api, steps: [10, 50, 100], stepDuration: 8s}
  analysis:
    interval: 4s
    inconclusiveLimit: 5
    minSampleSize: 100
    metrics:
      - {name: errors, template: http-error-rate, test: sequential, margin: 1.5}
  triggers:
    - {metric: errors, above: 0.04}
"#;

fn bins() -> (std::path::PathBuf, std::path::PathBuf) {
    (env!("CARGO_BIN_EXE_canaryd").into(), env!("CARGO_BIN_EXE_canaryd-demo-app").into())
}

/// Starts the stack, waits until canaryd attached `web` (web-primary serves v1, `web`
/// is at 0 replicas, the route split with 100% to the primary).
async fn attached() -> (KubeStack, tokio::sync::MutexGuard<'static, ()>) {
    let turn = ONE_AT_A_TIME.lock().await;
    let (canaryd, demo_app) = bins();
    let mut stack = KubeStack::start(POLICY, demo_app, &canaryd).await;
    stack.start_canaryd(&canaryd);
    stack.start_load();
    wait_attached(&stack, || stack.canaryd_log()).await;
    (stack, turn)
}

/// Waits until `web` is attached: web-primary available with 2 pods, `web` at 0.
async fn wait_attached(stack: &KubeStack, log: impl Fn() -> String) {
    let deployments = stack.deployments();
    let waited = poll(Duration::from_secs(60), || async {
        let web = deployments.get("web").await.ok();
        let primary = deployments.get("web-primary").await.ok();
        let web_at_zero = web.is_some_and(|w| w.spec.replicas == Some(0));
        web_at_zero && primary.is_some_and(|p| p.status.and_then(|s| s.available_replicas) == Some(2))
    })
    .await;
    if let Err(e) = waited {
        panic!("{e}: web attached; canaryd log:\n{}", log());
    }
}

/// The canary's share in the route's first rule, and the backend names.
fn split(route: &Value) -> Vec<(String, i64)> {
    route["spec"]["rules"][0]["backendRefs"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|b| (b["name"].as_str().unwrap_or("").to_string(), b["weight"].as_i64().unwrap_or(1)))
        .collect()
}

/// Waits until `web` is at 0 replicas and the route sends all traffic to the primary.
async fn wait_back_on_primary(stack: &KubeStack) {
    let deployments = stack.deployments();
    let waited = poll(Duration::from_secs(30), || async {
        let web = deployments.get("web").await.ok();
        web.is_some_and(|w| w.spec.replicas == Some(0)) && split(&stack.route("web").await)[0].1 == 100
    })
    .await;
    waited.unwrap_or_else(|e| panic!("{e}: web at 0 and the route at 100/0; log:\n{}", stack.canaryd_log()));
}

/// The CanaryRun's status, once it exists.
async fn canary_run(stack: &KubeStack) -> Option<Value> {
    stack
        .fake
        .get(&support::fake_apiserver::Gvr::new("canaryd.io", "v1alpha1", "canaryruns"), NAMESPACE, "web")
        .map(|run| run["status"].clone())
}

/// Waits until the CanaryRun's phase is `phase`, noting every weight seen on the way.
async fn wait_phase(stack: &KubeStack, phase: &str) -> (Value, Vec<i64>) {
    let weights = std::sync::Mutex::new(Vec::<i64>::new());
    let last = std::sync::Mutex::new(Value::Null);
    let waited = poll(ROLLOUT, || async {
        let status = canary_run(stack).await.unwrap_or(Value::Null);
        if let Some(w) = status["weight"].as_i64() {
            let mut seen = weights.lock().unwrap();
            if seen.last() != Some(&w) {
                seen.push(w);
            }
        }
        let hit = status["phase"] == phase;
        *last.lock().unwrap() = status;
        hit
    })
    .await;
    let last = last.into_inner().unwrap();
    if let Err(e) = waited {
        panic!("{e}: CanaryRun phase {phase}; last status: {last:#}\ncanaryd log:\n{}", stack.canaryd_log());
    }
    (last, weights.into_inner().unwrap())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_good_template_change_goes_10_50_100_and_is_promoted_to_the_primary() {
    let (stack, _turn) = attached().await;
    let route = stack.route("web").await;
    assert_eq!(split(&route), [("web-primary".to_string(), 100), ("web-canary".to_string(), 0)]);
    assert_eq!(
        route["metadata"]["annotations"]["canaryd.io/adopted-rules"].as_str().map(|s| s.contains("\"web\"")),
        Some(true)
    );

    stack.change_template("web", "v2", 0.0).await;
    let (status, weights) = wait_phase(&stack, "Succeeded").await;
    assert_eq!(status["lastDecision"], "promoted", "{status:#}");
    for step in [10, 50] {
        assert!(weights.contains(&step), "the CanaryRun went through {step}%: {weights:?}");
    }
    // Promoted: web-primary carries the new template, web is at 0, the route sends all
    // traffic to the primary, and nginx answers with v2.
    let deployments = stack.deployments();
    let primary = deployments.get("web-primary").await.expect("web-primary");
    let args = primary.spec.template.spec.as_ref().unwrap().containers[0].args.clone().unwrap();
    assert_eq!(args[..2], ["--version".to_string(), "v2".to_string()]);
    assert_eq!(primary.spec.selector.match_labels.as_ref().unwrap()["app"], "web-primary");
    wait_back_on_primary(&stack).await;
    let versions = stack.versions(20).await;
    assert_eq!(versions.get("v2"), Some(&20), "nginx answers with the new version: {versions:?}");

    // The next release: the finished rollout's CanaryRun gives way to the new one's.
    let runs = canaryruns();
    let uid_of = || stack.fake.get(&runs, NAMESPACE, "web").map(|r| r["metadata"]["uid"].clone());
    let finished = uid_of().expect("the finished rollout's CanaryRun");
    stack.change_template("web", "v3", 0.0).await;
    let replaced = poll(Duration::from_secs(60), || async {
        let status = canary_run(&stack).await.unwrap_or(Value::Null);
        uid_of().is_some_and(|uid| uid != finished) && status["phase"] == "Progressing"
    })
    .await;
    replaced.unwrap_or_else(|e| panic!("{e}: a new CanaryRun for v3; log:\n{}", stack.canaryd_log()));

    // Deleting the Deployment finalizes the route it adopted: its rules are put back as
    // the user wrote them (KubeStack::start), and canaryd's annotation is gone.
    stack.deployments().delete("web", &Default::default()).await.expect("Deployment web deleted");
    let restored = poll(Duration::from_secs(30), || async {
        let route = stack.route("web").await;
        route["spec"]["rules"] == json!([{"backendRefs": [{"name": "web", "port": 8080}]}])
            && route["metadata"]["annotations"].get("canaryd.io/adopted-rules").is_none()
    })
    .await;
    if let Err(e) = restored {
        let route = stack.route("web").await;
        panic!("{e}: the route put back; route: {route:#}\nlog:\n{}", stack.canaryd_log());
    }
}

/// [`POLICY`] with a route canaryd creates: `web-split`, on Gateway `public`.
fn route_policy() -> String {
    let plain = "traffic: {router: gateway-api, steps: [10, 50, 100], stepDuration: 8s}";
    assert!(POLICY.contains(plain), "POLICY's traffic line");
    POLICY.replace(
        plain,
        "traffic:\n    router: gateway-api\n    steps: [10, 50, 100]\n    stepDuration: 8s\n    route: {name: \"{name}-split\", parentRefs: [{name: public}], hostnames: [shop.example.com]}",
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_route_the_policy_names_is_created_owned_by_the_deployment_and_carries_the_rollout() {
    let turn = ONE_AT_A_TIME.lock().await;
    let (canaryd, demo_app) = bins();
    let mut stack = KubeStack::start(&route_policy(), demo_app, &canaryd).await;
    // This user has no route of their own: canaryd creates the one its policy names.
    let routes = support::fake_apiserver::Gvr::new("gateway.networking.k8s.io", "v1", "httproutes");
    stack.fake.delete(&routes, NAMESPACE, "web").expect("the user's route deleted");
    stack.start_canaryd(&canaryd);
    stack.start_load();
    let created = poll(Duration::from_secs(60), || async {
        let route = stack.fake.get(&routes, NAMESPACE, "web-split");
        let web = stack.deployments().get("web").await.ok();
        route.is_some() && web.is_some_and(|w| w.spec.replicas == Some(0))
    })
    .await;
    created
        .unwrap_or_else(|e| panic!("{e}: route web-split created, web at 0; log:\n{}", stack.canaryd_log()));
    let route = stack.route("web-split").await;
    let web = stack.deployments().get("web").await.expect("web");
    let owner = &route["metadata"]["ownerReferences"][0];
    assert_eq!(
        (owner["kind"].as_str(), owner["name"].as_str()),
        (Some("Deployment"), Some("web")),
        "{route:#}"
    );
    assert_eq!(owner["uid"].as_str(), web.metadata.uid.as_deref(), "owned by this Deployment web: {route:#}");
    assert_eq!(route["metadata"]["labels"]["app.kubernetes.io/managed-by"], "canaryd", "{route:#}");
    assert_eq!(route["spec"]["parentRefs"], json!([{"name": "public"}]), "{route:#}");
    assert_eq!(route["spec"]["hostnames"], json!(["shop.example.com"]), "{route:#}");
    assert_eq!(split(&route), [("web-primary".to_string(), 100), ("web-canary".to_string(), 0)]);
    let primary = stack.deployments().get("web-primary").await.expect("web-primary");
    assert_eq!(
        primary.metadata.annotations.unwrap_or_default().get("canaryd.io/route").map(String::as_str),
        Some("web-split"),
        "the route is recorded on the primary"
    );

    // A rollout runs through the created route: its weights are set on it, and nginx
    // (through the gateway stand-in) answers with the promoted version.
    stack.change_template("web", "v2", 0.0).await;
    let (status, weights) = wait_phase(&stack, "Succeeded").await;
    assert_eq!(status["lastDecision"], "promoted", "{status:#}");
    assert!(weights.contains(&50), "the CanaryRun went through 50%: {weights:?}");
    let route = stack.route("web-split").await;
    assert_eq!(split(&route)[0], ("web-primary".to_string(), 100), "{route:#}");
    let versions = stack.versions(20).await;
    assert_eq!(versions.get("v2"), Some(&20), "nginx answers with the new version: {versions:?}");

    // Deleting the Deployment deletes the route created for it.
    stack.deployments().delete("web", &Default::default()).await.expect("Deployment web deleted");
    let gone =
        poll(Duration::from_secs(30), || async { stack.fake.get(&routes, NAMESPACE, "web-split").is_none() })
            .await;
    gone.unwrap_or_else(|e| panic!("{e}: route web-split deleted; log:\n{}", stack.canaryd_log()));
    drop(turn);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_canary_answering_5_percent_errors_is_rolled_back_at_10_percent() {
    let (stack, _turn) = attached().await;
    stack.change_template("web", "v2", 0.05).await;
    let (status, weights) = wait_phase(&stack, "RolledBack").await;
    assert!(!weights.contains(&50), "rolled back before 50%: {weights:?}");
    let reason = status["reason"].as_str().unwrap_or("");
    assert!(reason.contains("errors"), "the reason names the failing metric: {status:#}");
    let decisions = status["state"]["rollout"]["decisions"].as_array().cloned().unwrap_or_default();
    let rolled_back =
        decisions.iter().find(|d| d["action"] == "rolled-back").expect("a rolled-back decision");
    assert_eq!(rolled_back["weight"], 0, "{rolled_back:#}");
    assert!(rolled_back.to_string().contains("errors"), "its evidence names the metric: {rolled_back:#}");
    // And an Event on the Deployment says so, with the reason.
    let events = support::fake_apiserver::Gvr::new("events.k8s.io", "v1", "events");
    let found = poll(Duration::from_secs(20), || async {
        stack.fake.list(&events, Some(NAMESPACE)).iter().any(|e| {
            e["regarding"]["kind"] == "Deployment"
                && e["regarding"]["name"] == "web"
                && e["reason"] == "RolledBack"
                && e["type"] == "Warning"
                && e["note"].as_str().is_some_and(|n| n.contains("errors"))
        })
    })
    .await;
    found.unwrap_or_else(|e| {
        let asked: Vec<String> = stack
            .fake
            .requests()
            .into_iter()
            .filter(|r| r.is_for("events"))
            .map(|r| format!("{} {} {} {}", r.client, r.method, r.path, r.status))
            .collect();
        let events = stack.fake.list(&events, Some(NAMESPACE));
        let log: Vec<String> =
            stack.canaryd_log().lines().filter(|l| !l.contains("tick report")).map(String::from).collect();
        panic!(
            "{e}: a RolledBack Event on web; events: {events:#?}; requests: {asked:#?}\nlog:\n{}",
            log.join("\n")
        )
    });
    let deployments = stack.deployments();
    wait_back_on_primary(&stack).await;
    let primary = deployments.get("web-primary").await.expect("web-primary");
    let args = primary.spec.template.spec.as_ref().unwrap().containers[0].args.clone().unwrap();
    assert_eq!(args[1], "v1", "the primary still serves v1");
    let versions = stack.versions(20).await;
    assert_eq!(versions.get("v1"), Some(&20), "{versions:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_deployment_no_policy_selects_is_never_written_to() {
    let (stack, _turn) = attached().await;
    let deployments: Api<Deployment> = stack.deployments();
    let other = deployment("other", json!({"team": "x"}), "v1", 0.0);
    deployments.create(&PostParams::default(), &other).await.expect("other");
    stack.change_template("other", "v2", 0.0).await;
    let runs = poll(Duration::from_secs(20), || async { stack.kubelet.pods.count("other") == 2 }).await;
    runs.expect("the other Deployment runs");
    // Then a change canaryd does act on: it takes the watch's events in order, so once
    // web's rollout shows, `other`'s change had been seen and judged.
    stack.change_template("web", "v2", 0.0).await;
    let started = poll(Duration::from_secs(30), || async { canary_run(&stack).await.is_some() }).await;
    started.unwrap_or_else(|e| panic!("{e}: web's rollout starts; log:\n{}", stack.canaryd_log()));
    let writes: Vec<String> = stack
        .fake
        .requests()
        .into_iter()
        .filter(|r| r.client == "canaryd" && !matches!(r.verb.as_str(), "get" | "list" | "watch"))
        .filter_map(|r| {
            r.resource.map(|res| format!("{} {} {}", r.verb, res.plural, res.name.unwrap_or_default()))
        })
        .collect();
    // Named writes: none to `other`; creates carry their name in the body, so what they
    // made is read back from the fake: nothing for `other`.
    assert!(
        writes.iter().all(|w| !w.ends_with(" other")),
        "canaryd wrote to an unselected Deployment: {writes:?}"
    );
    assert!(
        writes.iter().any(|w| w == "patch deployments web"),
        "canaryd did write to what it manages: {writes:?}"
    );
    let gvr = |group: &str, plural: &str| support::fake_apiserver::Gvr::new(group, "v1", plural);
    for (kind, name) in
        [("deployments", "other-primary"), ("services", "other-primary"), ("services", "other-canary")]
    {
        let group = if kind == "deployments" { "apps" } else { "" };
        assert!(stack.fake.get(&gvr(group, kind), NAMESPACE, name).is_none(), "{kind} {name} was created");
    }
    let other = stack.fake.get(&gvr("apps", "deployments"), NAMESPACE, "other").expect("other");
    assert_eq!(other["spec"]["replicas"], 2, "{other:#}");
    assert!(other["metadata"].get("annotations").is_none(), "{other:#}");
}

/// Waits until the CanaryRun's weight is at least `weight` while progressing.
async fn wait_weight(stack: &KubeStack, weight: i64) {
    let waited = poll(ROLLOUT, || async {
        let status = canary_run(stack).await.unwrap_or(Value::Null);
        status["phase"] == "Progressing" && status["weight"].as_i64().is_some_and(|w| w >= weight)
    })
    .await;
    waited.unwrap_or_else(|e| panic!("{e}: weight {weight}%; log:\n{}", stack.canaryd_log()));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_daemon_killed_mid_rollout_resumes_from_the_canaryrun_without_repeating_a_step() {
    let (mut stack, _turn) = attached().await;
    let (canaryd, _) = bins();
    stack.change_template("web", "v2", 0.0).await;
    // Killed at 10%, and again at 50%: each time a new daemon resumes from the CanaryRun.
    let mut started_at = Value::Null;
    for weight in [10, 50] {
        wait_weight(&stack, weight).await;
        let status = canary_run(&stack).await.expect("the CanaryRun");
        started_at = status["state"]["rollout"]["decisions"][0]["at"].clone();
        stack.kill_canaryd();
        stack.start_canaryd(&canaryd);
    }
    let (status, _) = wait_phase(&stack, "Succeeded").await;
    // The same rollout went on: its start is the one recorded before the kills.
    assert_one_uninterrupted_run(&status, &started_at);
    let versions = stack.versions(20).await;
    assert_eq!(versions.get("v2"), Some(&20), "{versions:?}");
}

/// The canary's weight in the route's first rule (the `web-canary` backend).
fn route_canary_weight(route: &Value) -> Option<i64> {
    split(route).into_iter().find(|(name, _)| name == "web-canary").map(|(_, w)| w)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_daemon_killed_between_a_status_write_and_the_route_patch_applies_the_step_once_on_restart() {
    let (mut stack, _turn) = attached().await;
    let (canaryd, _) = bins();
    stack.change_template("web", "v2", 0.0).await;
    wait_weight(&stack, 10).await;
    let at_10 = poll(Duration::from_secs(30), || async {
        route_canary_weight(&stack.route("web").await) == Some(10)
    });
    at_10.await.unwrap_or_else(|e| panic!("{e}: the route at 10%; log:\n{}", stack.canaryd_log()));
    // The route refuses writes (as a failing admission webhook would): the step to 50%
    // is decided and its status written, and the route patch that follows fails.
    let routes = support::fake_apiserver::Gvr::new("gateway.networking.k8s.io", "v1", "httproutes");
    stack.fake.refuse_writes(&routes, NAMESPACE, "web", None, true);
    let between = poll(ROLLOUT, || async {
        // Killed at once: before three refusals in a row, which would pause the rollout.
        let status = canary_run(&stack).await.unwrap_or(Value::Null);
        let refused = stack.fake.requests().iter().any(|r| r.is_for("httproutes") && r.status == 500);
        status["weight"] == 50 && refused && route_canary_weight(&stack.route("web").await) == Some(10)
    })
    .await;
    between.unwrap_or_else(|e| panic!("{e}: status at 50%, route at 10%; log:\n{}", stack.canaryd_log()));
    stack.kill_canaryd();
    let status = canary_run(&stack).await.expect("the CanaryRun");
    assert_eq!(status["state"]["applied"]["weight"], 10, "50% is decided, not confirmed: {status:#}");
    stack.fake.refuse_writes(&routes, NAMESPACE, "web", None, false);
    stack.start_canaryd(&canaryd);

    // The new daemon applies the step it finds decided: the route goes to 50%, then on.
    let route_weights = std::sync::Mutex::new(Vec::<i64>::new());
    let ended = poll(ROLLOUT, || async {
        if let Some(w) = route_canary_weight(&stack.route("web").await) {
            let mut seen = route_weights.lock().unwrap();
            if seen.last() != Some(&w) {
                seen.push(w);
            }
        }
        canary_run(&stack).await.is_some_and(|s| s["phase"] == "Succeeded")
    })
    .await;
    ended.unwrap_or_else(|e| panic!("{e}: promoted after the restart; log:\n{}", stack.canaryd_log()));
    let route_weights = route_weights.into_inner().unwrap();
    assert_eq!(route_weights.first(), Some(&10), "{route_weights:?}");
    assert!(route_weights.contains(&50), "the step to 50% was applied, not skipped: {route_weights:?}");
    let status = canary_run(&stack).await.expect("the CanaryRun");
    let decisions = status["state"]["rollout"]["decisions"].as_array().cloned().unwrap_or_default();
    let actions: Vec<(String, i64)> = decisions
        .iter()
        .map(|d| (d["action"].as_str().unwrap_or("").to_string(), d["weight"].as_i64().unwrap_or(-1)))
        .collect();
    let count =
        |action: &str, weight: i64| actions.iter().filter(|(a, w)| a == action && *w == weight).count();
    assert_eq!(count("started", 10), 1, "one start: {actions:?}");
    assert_eq!(count("advanced", 50), 1, "one step to 50%, not decided again: {actions:?}");
    assert_eq!(count("promoting", 100) + count("promoted", 100), 2, "promoted once: {actions:?}");
    let seqs: Vec<i64> = decisions.iter().map(|d| d["seq"].as_i64().unwrap_or(-1)).collect();
    assert_eq!(seqs, (0..seqs.len() as i64).collect::<Vec<_>>(), "no decision lost or repeated");
    wait_back_on_primary(&stack).await;
    let versions = stack.versions(20).await;
    assert_eq!(versions.get("v2"), Some(&20), "{versions:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_canary_that_never_becomes_ready_is_rolled_back_at_its_progress_deadline_with_that_reason() {
    let (stack, _turn) = attached().await;
    // A template whose container exits at start (an argument it does not take), with a
    // 6 s progress deadline: its pods never become ready, and the Deployment controller
    // stand-in reports ProgressDeadlineExceeded.
    let patch = json!({"spec": {"progressDeadlineSeconds": 6, "template": {"spec": {"containers": [{
        "name": "app", "image": "demo-app:v2",
        "args": ["--version", "v2", "--no-such-flag"],
        "ports": [{"name": "http", "containerPort": 8080}]
    }]}}}});
    stack
        .deployments()
        .patch("web", &kube::api::PatchParams::default(), &kube::api::Patch::Merge(&patch))
        .await
        .expect("template changed");
    let (status, _) = wait_phase(&stack, "RolledBack").await;
    let reason = status["reason"].as_str().unwrap_or("");
    assert!(reason.contains("never became ready"), "{status:#}");
    assert!(
        reason.contains("progress deadline exceeded") && reason.contains("timed out progressing"),
        "{status:#}"
    );
    let rollback = status["state"]["rollout"]["rollback"].clone();
    assert!(rollback.to_string().contains("canary"), "the rollback's reason is recorded: {rollback:#}");
    wait_back_on_primary(&stack).await;
    let versions = stack.versions(20).await;
    assert_eq!(versions.get("v1"), Some(&20), "the primary keeps serving v1: {versions:?}");
    let events = support::fake_apiserver::Gvr::new("events.k8s.io", "v1", "events");
    let found = poll(Duration::from_secs(20), || async {
        stack.fake.list(&events, Some(NAMESPACE)).iter().any(|e| {
            e["regarding"]["name"] == "web"
                && e["reason"] == "RolledBack"
                && e["note"].as_str().is_some_and(|n| n.contains("never became ready"))
        })
    })
    .await;
    found.unwrap_or_else(|e| panic!("{e}: a RolledBack Event saying why; log:\n{}", stack.canaryd_log()));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn removing_the_label_mid_rollout_rolls_the_canary_back_and_the_app_keeps_serving() {
    let (stack, _turn) = attached().await;
    stack.change_template("web", "v2", 0.0).await;
    wait_weight(&stack, 10).await;
    let unlabel = json!({"metadata": {"labels": {"canary": null}}});
    let patch = kube::api::Patch::Merge(&unlabel);
    stack
        .deployments()
        .patch("web", &kube::api::PatchParams::default(), &patch)
        .await
        .expect("label removed");
    let (status, _) = wait_phase(&stack, "RolledBack").await;
    let reason = status["reason"].as_str().unwrap_or("");
    assert!(reason.contains("no policy selects Deployment shop/web"), "{status:#}");
    wait_back_on_primary(&stack).await;
    let versions = stack.versions(20).await;
    assert_eq!(versions.get("v1"), Some(&20), "the primary keeps serving v1: {versions:?}");
}

/// Runs the real kubectl against the fake as client `kubectl`; its stdout.
async fn kubectl(stack: &KubeStack, args: &[&str]) -> String {
    let config = stack.fake.kubeconfig(&stack.path(""), "kubectl");
    let output = tokio::time::timeout(
        Duration::from_secs(60),
        tokio::process::Command::new("kubectl")
            .arg("--kubeconfig")
            .arg(&config)
            .arg("--cache-dir")
            .arg(stack.path("kubectl-cache"))
            .args(args)
            .kill_on_drop(true)
            .output(),
    )
    .await
    .expect("kubectl finishes in time")
    .expect("kubectl runs (scripts/install-deps installs it)");
    let (stdout, stderr) = (String::from_utf8_lossy(&output.stdout), String::from_utf8_lossy(&output.stderr));
    assert!(output.status.success(), "kubectl {args:?} failed: {stdout}{stderr}");
    stdout.into_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kubectl_patch_of_the_template_starts_a_rollout_that_kubectl_get_canaryruns_shows() {
    let (stack, _turn) = attached().await;
    // kubectl patch sends a strategic merge patch: the container is merged by name.
    let patch = r#"{"spec":{"template":{"spec":{"containers":[{"name":"app","args":["--version","v2","--error-rate","0"]}]}}}}"#;
    kubectl(&stack, &["-n", NAMESPACE, "patch", "deployment", "web", "-p", patch]).await;
    wait_weight(&stack, 10).await;
    let listed = kubectl(&stack, &["-n", NAMESPACE, "get", "canaryruns"]).await;
    assert!(listed.lines().any(|l| l.split_whitespace().next() == Some("web")), "{listed}");
    let run: Value = serde_json::from_str(
        &kubectl(&stack, &["-n", NAMESPACE, "get", "canaryrun", "web", "-o", "json"]).await,
    )
    .expect("json");
    assert_eq!(run["spec"]["deployment"], "web");
    assert_eq!(run["metadata"]["ownerReferences"][0]["name"], "web", "owned by its Deployment: {run:#}");
    assert!(run["status"]["weight"].as_i64().is_some_and(|w| w >= 10), "{run:#}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_new_template_mid_rollout_supersedes_it_and_the_analysis_restarts_on_the_new_revision() {
    let (stack, _turn) = attached().await;
    stack.change_template("web", "v2", 0.0).await;
    wait_weight(&stack, 10).await;
    let first = canary_run(&stack).await.expect("the CanaryRun")["revision"].clone();
    stack.change_template("web", "v3", 0.0).await;
    let (status, _) = wait_phase(&stack, "Succeeded").await;
    assert_ne!(status["revision"], first, "the new revision ran: {status:#}");
    let decisions = status["state"]["rollout"]["decisions"].as_array().cloned().unwrap_or_default();
    // The rollout goes on under the new revision, its analysis back at step 1: every
    // decision after the supersession is about the new revision, and it went through
    // 10% again before 50%.
    let at = decisions.iter().position(|d| d["action"] == "superseded").expect("a superseded decision");
    let superseded = &decisions[at];
    assert_eq!(superseded["revision"], status["revision"], "{superseded:#}");
    assert!(
        superseded["reason"].as_str().is_some_and(|r| r.contains("restarts at step 1")),
        "{superseded:#}"
    );
    assert!(decisions[at..].iter().all(|d| d["revision"] == status["revision"]), "{decisions:#?}");
    let after: Vec<i64> = decisions[at..].iter().filter_map(|d| d["weight"].as_i64()).collect();
    assert_eq!(after.first(), Some(&10), "restarted at 10%: {after:?}");
    assert!(after.contains(&50), "{after:?}");
    let versions = stack.versions(20).await;
    assert_eq!(versions.get("v3"), Some(&20), "{versions:?}");
}

fn canaryruns() -> support::fake_apiserver::Gvr {
    support::fake_apiserver::Gvr::new("canaryd.io", "v1alpha1", "canaryruns")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_conflicting_status_write_is_read_again_and_retried_and_nothing_is_lost() {
    let (stack, _turn) = attached().await;
    stack.change_template("web", "v2", 0.0).await;
    wait_weight(&stack, 10).await;
    // Someone else writes the CanaryRun just before canaryd's next status write.
    stack.fake.conflict_next(&canaryruns(), NAMESPACE, "web", Some("status"));
    let (status, weights) = wait_phase(&stack, "Succeeded").await;
    assert!(weights.contains(&50), "{weights:?}");
    let conflicted = stack
        .fake
        .requests()
        .iter()
        .any(|r| r.client == "canaryd" && r.is_for("canaryruns") && r.status == 409);
    assert!(conflicted, "canaryd's status write met the 409");
    assert!(stack.canaryd_log().contains("writing ours again"), "{}", stack.canaryd_log());
    let seqs: Vec<i64> = status["state"]["rollout"]["decisions"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|d| d["seq"].as_i64().unwrap_or(-1))
        .collect();
    assert_eq!(seqs, (0..seqs.len() as i64).collect::<Vec<_>>(), "no decision lost");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn after_dropped_watches_and_an_expired_version_canaryd_relists_and_misses_no_revision() {
    let (stack, _turn) = attached().await;
    let lists_before =
        stack.fake.requests().iter().filter(|r| r.client == "canaryd" && r.verb == "list").count();
    // The server goes away; meanwhile the template changes (written inside the fake) and
    // history is compacted, so a watch resumed from its last version gets 410 Expired.
    stack.fake.set_down(true).await;
    let deployments = support::fake_apiserver::Gvr::deployments();
    let mut web = stack.fake.get(&deployments, NAMESPACE, "web").expect("web");
    web["spec"]["template"]["spec"]["containers"][0]["args"] =
        json!(["--version", "v2", "--error-rate", "0"]);
    stack.fake.put(&deployments, NAMESPACE, web).expect("template changed");
    stack.fake.compact();
    stack.fake.set_down(false).await;
    let (status, _) = wait_phase(&stack, "Succeeded").await;
    assert_eq!(status["lastDecision"], "promoted", "{status:#}");
    let lists_after =
        stack.fake.requests().iter().filter(|r| r.client == "canaryd" && r.verb == "list").count();
    assert!(lists_after > lists_before, "canaryd listed again after the 410");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_the_api_server_down_mid_step_nothing_is_promoted_and_the_rollout_goes_on_when_it_returns() {
    let (stack, _turn) = attached().await;
    stack.change_template("web", "v2", 0.0).await;
    wait_weight(&stack, 10).await;
    stack.fake.set_down(true).await;
    // Down for 20 s, more than two step durations: while down, nothing is written.
    let down_at = stack.fake.requests().len();
    // The outage itself lasts 20 s (no condition to wait for: it is the scenario).
    tokio::time::sleep(Duration::from_secs(20)).await;
    assert_eq!(stack.fake.requests().len(), down_at, "no request reached a server that is down");
    let primary = stack.deployments();
    stack.fake.set_down(false).await;
    let web_primary = primary.get("web-primary").await.expect("web-primary");
    let args = web_primary.spec.template.spec.as_ref().unwrap().containers[0].args.clone().unwrap();
    assert_eq!(args[1], "v1", "nothing promoted while the API server was down");
    let (status, weights) = wait_phase(&stack, "Succeeded").await;
    assert!(weights.contains(&50), "{weights:?}");
    assert_eq!(status["lastDecision"], "promoted", "{status:#}");
}

/// A policy object's `Valid` condition, once canaryd wrote it.
fn valid_condition(stack: &KubeStack, plural: &str, namespace: &str, name: &str) -> Option<Value> {
    let gvr = support::fake_apiserver::Gvr::new("canaryd.io", "v1alpha1", plural);
    let object = stack.fake.get(&gvr, namespace, name)?;
    object["status"]["conditions"].as_array()?.iter().find(|c| c["type"] == "Valid").cloned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bad_policy_object_is_reported_on_it_and_the_valid_policies_stay_in_force() {
    let (stack, _turn) = attached().await;
    // Applied with the real kubectl. `broken` would win every choice (priority 20) were
    // it valid; its errors are values, which a real API server's schema lets through.
    let objects = r#"
apiVersion: canaryd.io/v1alpha1
kind: CanaryPolicy
metadata: {name: broken, namespace: shop}
spec:
  priority: 20
  selector: {matchLabels: {canary: enabled}}
  traffic: {router: gateway-api, stepDuration: 8x}
  analysis:
    interval: 4s
    metrics: [{name: errors, template: http-eror-rate, test: sequential}]
---
apiVersion: canaryd.io/v1alpha1
kind: ClusterCanaryPolicy
metadata: {name: everywhere}
spec:
  priority: 10
  selector: {matchLabels: {canary: enabled}}
  traffic: {router: gateway-api, steps: [10, 50, 100], stepDuration: 8s}
  analysis:
    interval: 4s
    minSampleSize: 100
    metrics: [{name: errors, template: http-error-rate, test: sequential, margin: 1.5}]
"#;
    support::kubernetes::kubectl_apply(&stack.fake, &stack.path(""), objects).await;
    let reported = poll(Duration::from_secs(30), || async {
        let broken = valid_condition(&stack, "canarypolicies", NAMESPACE, "broken");
        let everywhere = valid_condition(&stack, "clustercanarypolicies", "", "everywhere");
        broken.is_some_and(|c| c["status"] == "False") && everywhere.is_some_and(|c| c["status"] == "True")
    })
    .await;
    reported.unwrap_or_else(|e| panic!("{e}: both objects' Valid condition; log:\n{}", stack.canaryd_log()));
    let broken = valid_condition(&stack, "canarypolicies", NAMESPACE, "broken").expect("the condition");
    let message = broken["message"].as_str().unwrap_or("");
    assert!(message.contains("spec.traffic.stepDuration: "), "{broken:#}");
    assert!(message.contains("spec.analysis.metrics[0].template: "), "{broken:#}");
    assert!(message.contains("http-error-rate"), "the nearest template is suggested: {broken:#}");
    assert_eq!(broken["reason"], "Invalid");
    assert_eq!(broken["observedGeneration"], 1);
    // The Event on the object says the same.
    let events = support::fake_apiserver::Gvr::new("events.k8s.io", "v1", "events");
    let posted = stack.fake.list(&events, Some(NAMESPACE));
    let on_broken: Vec<&Value> = posted.iter().filter(|e| e["regarding"]["name"] == "broken").collect();
    assert_eq!(on_broken.len(), 1, "one Event on the bad object: {on_broken:#?}");
    assert_eq!(on_broken[0]["type"], "Warning");
    assert_eq!(on_broken[0]["reason"], "InvalidPolicy");
    assert_eq!(on_broken[0]["regarding"]["kind"], "CanaryPolicy");
    assert!(on_broken[0]["note"].as_str().is_some_and(|n| n.contains("spec.traffic.stepDuration")));

    // The next rollout runs under the valid object, which outranks the file's policy;
    // the bad one, which would outrank both, is not in force.
    let taken = poll(Duration::from_secs(30), || async {
        stack.canaryd_log().lines().any(|l| l.contains("policies replaced") && l.contains("policies=2"))
    })
    .await;
    taken.unwrap_or_else(|e| panic!("{e}: the loop took the object in; log:\n{}", stack.canaryd_log()));
    stack.change_template("web", "v2", 0.0).await;
    wait_weight(&stack, 10).await;
    let run = stack
        .fake
        .get(&support::fake_apiserver::Gvr::new("canaryd.io", "v1alpha1", "canaryruns"), NAMESPACE, "web")
        .expect("the CanaryRun");
    assert_eq!(run["spec"]["policy"], "cluster/everywhere", "{run:#}");

    // Fixing the bad object brings it into force, and its condition says so.
    let fixed = objects.replace("8x", "8s").replace("http-eror-rate", "http-error-rate");
    support::kubernetes::kubectl_apply(&stack.fake, &stack.path(""), &fixed).await;
    let valid = poll(Duration::from_secs(30), || async {
        valid_condition(&stack, "canarypolicies", NAMESPACE, "broken")
            .is_some_and(|c| c["status"] == "True" && c["observedGeneration"] == 2)
    })
    .await;
    valid.unwrap_or_else(|e| panic!("{e}: the fixed object is valid; log:\n{}", stack.canaryd_log()));
    let taken = poll(Duration::from_secs(30), || async {
        stack.canaryd_log().lines().any(|l| l.contains("policies replaced") && l.contains("policies=3"))
    })
    .await;
    taken.unwrap_or_else(|e| panic!("{e}: the fixed object taken in; log:\n{}", stack.canaryd_log()));
    // No status write loop: once judged, the objects are not written again (checked
    // over the seconds the rollout takes to end).
    let writes = || {
        let verbs = ["create", "update", "patch"];
        let requests = stack.fake.requests();
        requests
            .iter()
            .filter(|r| {
                r.client == "canaryd" && r.is_for("canarypolicies") && verbs.contains(&r.verb.as_str())
            })
            .count()
    };
    let settled = writes();
    wait_phase(&stack, "Succeeded").await;
    assert_eq!(writes(), settled, "policy objects written again after their verdict");
}

/// The Lease's holder, if any.
fn lease_holder(stack: &KubeStack) -> Option<String> {
    let leases = support::fake_apiserver::Gvr::new("coordination.k8s.io", "v1", "leases");
    stack
        .fake
        .get(&leases, support::kubernetes::CANARYD_NAMESPACE, "canaryd")
        .and_then(|l| l["spec"]["holderIdentity"].as_str().map(String::from))
}

/// Every write (any verb but get, list and watch) replica `identity` made from request
/// `from` of the fake's log on, but those to its Lease: `METHOD path -> status`.
fn writes_by(stack: &KubeStack, identity: &str, from: usize) -> Vec<String> {
    let client = support::kubernetes::replica_client(identity);
    stack
        .fake
        .requests_from(from)
        .into_iter()
        .filter(|r| {
            r.client == client && !["get", "list", "watch"].contains(&r.verb.as_str()) && !r.is_for("leases")
        })
        .map(|r| format!("{} {} -> {}", r.method, r.path, r.status))
        .collect()
}

/// Waits until replica `identity` holds the Lease.
async fn wait_holder(stack: &KubeStack, identity: &str, within: Duration) {
    let waited = poll(within, || async { lease_holder(stack).as_deref() == Some(identity) }).await;
    waited.unwrap_or_else(|e| {
        panic!("{e}: {identity} holds the Lease ({:?}); logs:\n{}", lease_holder(stack), stack.replica_logs())
    });
}

/// The stack with replicas `a` (which took the Lease first) and `b` (standing by, as
/// its `/readyz` says), `web` attached by `a`; and `b`'s API port.
async fn two_replicas_attached() -> (KubeStack, tokio::sync::MutexGuard<'static, ()>, u16) {
    let turn = ONE_AT_A_TIME.lock().await;
    let (canaryd, demo_app) = bins();
    let mut stack = KubeStack::start(POLICY, demo_app, &canaryd).await;
    stack.start_replica(&canaryd, "a");
    wait_holder(&stack, "a", Duration::from_secs(30)).await;
    let b = stack.start_replica(&canaryd, "b");
    stack.start_load();
    wait_attached(&stack, || stack.replica_logs()).await;
    let readyz = format!("http://127.0.0.1:{b}/readyz");
    let standing_by = poll(Duration::from_secs(30), || async {
        match reqwest::get(&readyz).await {
            Ok(r) => {
                r.status() == 200
                    && r.text().await.is_ok_and(|t| t.contains("standing by (a holds the Lease)"))
            }
            Err(_) => false,
        }
    })
    .await;
    standing_by.unwrap_or_else(|e| panic!("{e}: b stands by; logs:\n{}", stack.replica_logs()));
    (stack, turn, b)
}

/// The decisions of a finished rollout that resumed: one start, one step to 50%, one
/// promotion, numbered without a gap or a repeat, and the start the one recorded before.
fn assert_one_uninterrupted_run(status: &Value, started_at: &Value) {
    let decisions = status["state"]["rollout"]["decisions"].as_array().cloned().unwrap_or_default();
    assert!(started_at.is_string(), "{started_at}");
    assert_eq!(&decisions[0]["at"], started_at, "resumed, not started over");
    let actions: Vec<(String, i64)> = decisions
        .iter()
        .map(|d| (d["action"].as_str().unwrap_or("").to_string(), d["weight"].as_i64().unwrap_or(-1)))
        .collect();
    let count =
        |action: &str, weight: i64| actions.iter().filter(|(a, w)| a == action && *w == weight).count();
    assert_eq!(count("started", 10), 1, "one start: {actions:?}");
    assert_eq!(count("advanced", 50), 1, "one step to 50%: {actions:?}");
    assert_eq!(count("promoting", 100) + count("promoted", 100), 2, "promoted once: {actions:?}");
    let seqs: Vec<i64> = decisions.iter().map(|d| d["seq"].as_i64().unwrap_or(-1)).collect();
    assert_eq!(seqs, (0..seqs.len() as i64).collect::<Vec<_>>(), "no decision lost or repeated");
}

/// The notes of the Events on Deployment `web`, each with how many Events carry it.
fn event_notes(stack: &KubeStack) -> std::collections::BTreeMap<String, usize> {
    let mut notes = std::collections::BTreeMap::new();
    for event in stack.fake.list(&support::fake_apiserver::Gvr::core("events"), Some(NAMESPACE)) {
        let on_web = event["involvedObject"]["name"] == "web" || event["regarding"]["name"] == "web";
        let note = event["note"].as_str().or(event["message"].as_str()).unwrap_or_default().to_string();
        if on_web && !note.is_empty() {
            *notes.entry(note).or_default() += 1;
        }
    }
    notes
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn of_two_replicas_only_the_lease_holder_writes_and_when_it_is_killed_the_other_finishes_the_rollout_once()
 {
    let (mut stack, _turn, b) = two_replicas_attached().await;
    stack.change_template("web", "v2", 0.0).await;
    wait_weight(&stack, 10).await;
    let started_at =
        canary_run(&stack).await.expect("the CanaryRun")["state"]["rollout"]["decisions"][0]["at"].clone();
    // The follower answers reads from the CanaryRun the leader wrote, and sends commands
    // to the leader.
    let http = reqwest::Client::new();
    let rollout = format!("http://127.0.0.1:{b}/api/v1/rollouts/{NAMESPACE}/web");
    let seen = std::sync::Mutex::new(String::new());
    let shown = poll(Duration::from_secs(30), || async {
        let Ok(r) = http.get(&rollout).bearer_auth("kube-stack-token").send().await else { return false };
        let (status, text) = (r.status(), r.text().await.unwrap_or_default());
        let detail: Value = serde_json::from_str(&text).unwrap_or_default();
        *seen.lock().unwrap() = format!("{status} {text}");
        // It lags the leader by a checkpoint at most: at 10% still, or already at 50%.
        status == 200
            && detail["phase"] == "progressing"
            && (detail["appliedWeight"] == 10 || detail["appliedWeight"] == 50)
            && detail["decisions"][0]["action"] == "started"
    })
    .await;
    shown.unwrap_or_else(|e| panic!("{e}: b shows the rollout under way: {}", seen.lock().unwrap()));
    let listed: Vec<Value> = http
        .get(format!("http://127.0.0.1:{b}/api/v1/rollouts"))
        .bearer_auth("kube-stack-token")
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(listed.iter().map(|v| v["name"].clone()).collect::<Vec<_>>(), [json!("web")], "{listed:?}");
    let paused = http.post(format!("{rollout}/pause")).bearer_auth("kube-stack-token").send().await.unwrap();
    assert_eq!(paused.status(), 503);
    let why = paused.text().await.unwrap();
    assert!(why.contains("a holds the Lease"), "{why}");
    assert!(!writes_by(&stack, "a", 0).is_empty(), "the leader attached and stepped");
    assert_eq!(
        writes_by(&stack, "b", 0),
        Vec::<String>::new(),
        "the follower wrote nothing but its Lease reads"
    );

    stack.signal_replica("a", "KILL");
    let killed = stack.fake.request_count();
    let since = std::time::Instant::now();
    wait_holder(&stack, "b", Duration::from_secs(30)).await;
    eprintln!("b took the Lease {:?} after a was killed (lease duration 4 s, retry 1 s)", since.elapsed());
    let (status, _) = wait_phase(&stack, "Succeeded").await;
    assert_one_uninterrupted_run(&status, &started_at);
    assert!(!writes_by(&stack, "b", killed).is_empty(), "b drove the rest of the rollout");
    let versions = stack.versions(20).await;
    assert_eq!(versions.get("v2"), Some(&20), "{versions:?}");
    // Each decision was posted as one Event, though two replicas posted them.
    let notes = event_notes(&stack);
    assert!(notes.len() >= 3, "the rollout's decisions as Events: {notes:#?}");
    let twice: Vec<_> = notes.iter().filter(|(_, n)| **n > 1).collect();
    assert!(twice.is_empty(), "Events posted twice: {twice:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_leader_paused_past_its_lease_writes_nothing_once_resumed_and_exits() {
    let (mut stack, _turn, _) = two_replicas_attached().await;
    stack.change_template("web", "v2", 0.0).await;
    wait_weight(&stack, 10).await;
    let started_at =
        canary_run(&stack).await.expect("the CanaryRun")["state"]["rollout"]["decisions"][0]["at"].clone();
    stack.signal_replica("a", "STOP");
    wait_holder(&stack, "b", Duration::from_secs(30)).await;
    let taken = stack.fake.request_count();
    // Paused well past the point where a's every timer (its tick, its renewal, the
    // platform's reconcile) is overdue, so each fires at once when it resumes.
    wait_weight(&stack, 50).await;
    // When a resumes, its Lease requests are held (a slow path to the API server for
    // them): it cannot learn that it lost the Lease, and its overdue tick and reconcile
    // try to write. Only its own deadline stops them.
    let a = support::kubernetes::replica_client("a");
    stack.fake.hold_requests(&a, "leases", true);
    stack.signal_replica("a", "CONT");
    let tried = poll(Duration::from_secs(30), || async {
        stack.replica_log("a").contains("write refused: not the leader")
            || !writes_by(&stack, "a", taken).is_empty()
    })
    .await;
    tried.unwrap_or_else(|e| panic!("{e}: a tried to write; log:\n{}", stack.replica_log("a")));
    stack.fake.hold_requests(&a, "leases", false);
    let until = std::time::Instant::now() + Duration::from_secs(30);
    while stack.replica_exit("a").is_none() {
        assert!(
            std::time::Instant::now() < until,
            "a exits once it finds the Lease lost; logs:\n{}",
            stack.replica_logs()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(writes_by(&stack, "a", taken), Vec::<String>::new(), "a wrote after b took the Lease");
    assert!(stack.replica_log("a").contains("lost the Lease"), "{}", stack.replica_log("a"));
    let (status, _) = wait_phase(&stack, "Succeeded").await;
    assert_one_uninterrupted_run(&status, &started_at);
}

/// [`POLICY`] on the Istio router, with the VirtualService `web-mesh` canaryd creates.
fn istio_policy() -> String {
    let plain = "traffic: {router: gateway-api, steps: [10, 50, 100], stepDuration: 8s}";
    assert!(POLICY.contains(plain), "POLICY's traffic line");
    POLICY.replace(
        plain,
        "traffic: {router: istio, steps: [10, 50, 100], stepDuration: 8s, route: {name: \"{name}-mesh\"}}",
    )
}

/// Installs a VirtualService CRD (`networking.istio.io/v1`), as Istio's install does
/// (its schema left open here).
async fn install_virtual_service_crd(stack: &KubeStack) {
    use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
    let crd: CustomResourceDefinition = serde_json::from_value(json!({
        "apiVersion": "apiextensions.k8s.io/v1", "kind": "CustomResourceDefinition",
        "metadata": {"name": "virtualservices.networking.istio.io"},
        "spec": {
            "group": "networking.istio.io", "scope": "Namespaced",
            "names": {"plural": "virtualservices", "singular": "virtualservice", "kind": "VirtualService", "shortNames": ["vs"]},
            "versions": [{"name": "v1", "served": true, "storage": true,
                "schema": {"openAPIV3Schema": {"type": "object", "x-kubernetes-preserve-unknown-fields": true}}}]
        }
    }))
    .expect("a CRD");
    let crds: Api<CustomResourceDefinition> = Api::all(stack.client.clone());
    crds.create(&PostParams::default(), &crd).await.expect("the VirtualService CRD");
}

/// The canary's weight in VirtualService `name`'s first http route.
fn mesh_canary_weight(stack: &KubeStack, name: &str) -> Option<i64> {
    let vs = stack.fake.get(
        &support::fake_apiserver::Gvr::new("networking.istio.io", "v1", "virtualservices"),
        NAMESPACE,
        name,
    )?;
    vs["spec"]["http"][0]["route"]
        .as_array()?
        .iter()
        .find(|d| d["destination"]["host"] == "web-canary")
        .and_then(|d| d["weight"].as_i64())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn on_istio_a_good_canary_is_promoted_and_a_bad_one_rolled_back_through_virtual_service_weights() {
    let turn = ONE_AT_A_TIME.lock().await;
    let (canaryd, demo_app) = bins();
    let mut stack = KubeStack::start(&istio_policy(), demo_app, &canaryd).await;
    install_virtual_service_crd(&stack).await;
    // This user's traffic goes through the mesh: no HTTPRoute.
    let routes: Api<kube::api::DynamicObject> = Api::namespaced_with(
        stack.client.clone(),
        NAMESPACE,
        &canaryd::platform::kubernetes::platform::http_route(),
    );
    routes.delete("web", &Default::default()).await.expect("the HTTPRoute deleted");
    stack.start_canaryd(&canaryd);
    stack.start_load();
    wait_attached(&stack, || stack.canaryd_log()).await;
    let created =
        poll(Duration::from_secs(30), || async { mesh_canary_weight(&stack, "web-mesh") == Some(0) }).await;
    created.unwrap_or_else(|e| {
        panic!("{e}: VirtualService web-mesh at 0% to the canary; log:\n{}", stack.canaryd_log())
    });
    let vs = stack
        .fake
        .get(
            &support::fake_apiserver::Gvr::new("networking.istio.io", "v1", "virtualservices"),
            NAMESPACE,
            "web-mesh",
        )
        .expect("web-mesh");
    assert_eq!(vs["spec"]["hosts"], json!(["web"]), "the mesh's host is the workload's Service");
    assert_eq!(vs["metadata"]["ownerReferences"][0]["name"], "web", "owned by the Deployment");

    // A good canary: 10, 50, 100 in the VirtualService's weights, then promoted.
    stack.change_template("web", "v2", 0.0).await;
    let seen = std::sync::Mutex::new(std::collections::BTreeSet::new());
    let promoted = poll(ROLLOUT, || async {
        if let Some(w) = mesh_canary_weight(&stack, "web-mesh") {
            seen.lock().unwrap().insert(w);
        }
        canary_run(&stack).await.is_some_and(|s| s["phase"] == "Succeeded")
    })
    .await;
    promoted.unwrap_or_else(|e| panic!("{e}: promoted; log:\n{}", stack.canaryd_log()));
    let seen = seen.into_inner().unwrap();
    for step in [10, 50] {
        assert!(seen.contains(&step), "the VirtualService went through {step}%: {seen:?}");
    }
    assert_eq!(mesh_canary_weight(&stack, "web-mesh"), Some(0), "back on the primary after promotion");
    let versions = stack.versions(20).await;
    assert_eq!(versions.get("v2"), Some(&20), "{versions:?}");

    // A bad canary: rolled back at 10%, the VirtualService back at 0, v2 still served.
    stack.change_template("web", "v3", 0.05).await;
    let (status, _) = wait_phase(&stack, "RolledBack").await;
    assert!(status["reason"].as_str().unwrap_or("").contains("errors"), "{status:#}");
    let back =
        poll(Duration::from_secs(30), || async { mesh_canary_weight(&stack, "web-mesh") == Some(0) }).await;
    back.unwrap_or_else(|e| panic!("{e}: VirtualService back at 0; log:\n{}", stack.canaryd_log()));
    let versions = stack.versions(20).await;
    assert_eq!(versions.get("v2"), Some(&20), "{versions:?}");
    drop(turn);
}

/// A Slack stand-in on loopback: an incoming-webhook receiver answering 200 and
/// recording each message's path and body.
async fn slack_stand_in() -> (String, std::sync::Arc<std::sync::Mutex<Vec<(String, String)>>>) {
    let got: std::sync::Arc<std::sync::Mutex<Vec<(String, String)>>> = Default::default();
    let record = got.clone();
    let app = axum::Router::new().fallback(move |uri: axum::http::Uri, body: String| {
        let record = record.clone();
        async move {
            record.lock().unwrap().push((uri.path().to_string(), body));
            "ok"
        }
    });
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("a port");
    let url = format!("http://{}", listener.local_addr().expect("an address"));
    tokio::spawn(async move { axum::serve(listener, app).await });
    (url, got)
}

/// Secret `hooks` in `shop` with key `slack` = `url` and key `webhook` = `url` + `-hook`
/// (the policy's own JSON webhook), created or replaced.
async fn set_hooks_secret(stack: &KubeStack, url: &str) {
    use k8s_openapi::api::core::v1::Secret;
    let secrets: Api<Secret> = Api::namespaced(stack.client.clone(), NAMESPACE);
    let _ = secrets.delete("hooks", &Default::default()).await;
    let encode = |text: &str| base64::Engine::encode(&base64::engine::general_purpose::STANDARD, text);
    let secret: Secret = serde_json::from_value(json!({
        "metadata": {"name": "hooks", "namespace": NAMESPACE},
        "data": {"slack": encode(url), "webhook": encode(&format!("{url}-hook"))}
    }))
    .expect("a Secret");
    secrets.create(&PostParams::default(), &secret).await.expect("Secret hooks");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_slack_and_webhook_urls_come_from_the_secret_the_policy_names_follow_its_changes_and_a_missing_one_is_reported()
 {
    let turn = ONE_AT_A_TIME.lock().await;
    let (canaryd, demo_app) = bins();
    // The policy file selects nothing; the policy object notifies Slack and its own
    // webhook through Secret `hooks`.
    let unselecting = POLICY.replace("canary: enabled", "canary: never");
    let mut stack = KubeStack::start(&unselecting, demo_app, &canaryd).await;
    let object = POLICY
        .replace("metadata: {name: web, namespace: shop}", "metadata: {name: web-slack, namespace: shop}")
        .trim_end()
        .to_string()
        + "\n  notify:\n    slack: {channel: '#deploys', minSeverity: warning, webhookSecret: {name: hooks, key: slack}}\n    webhook: {urlSecret: {name: hooks, key: webhook}}\n";
    let (slack, got) = slack_stand_in().await;
    set_hooks_secret(&stack, &format!("{slack}/a")).await;
    support::kubernetes::kubectl_apply(&stack.fake, &stack.path(""), &object).await;
    stack.start_canaryd(&canaryd);
    stack.start_load();
    wait_attached(&stack, || stack.canaryd_log()).await;
    // Slack's message says "Canary rolled back"; the policy webhook's JSON names the event.
    let both_at = |path: &'static str| {
        let got = got.clone();
        move || {
            let got = got.clone();
            async move {
                let got = got.lock().unwrap();
                let hook = format!("{path}-hook");
                got.iter().any(|(p, body)| p == path && body.contains("Canary rolled back"))
                    && got.iter().any(|(p, body)| *p == hook && body.contains("\"event\":\"rolled-back\""))
            }
        }
    };

    // A rollback is posted to the URL in the Secret.
    stack.change_template("web", "v2", 0.05).await;
    wait_phase(&stack, "RolledBack").await;
    let posted = poll(Duration::from_secs(30), both_at("/a")).await;
    posted.unwrap_or_else(|e| {
        panic!(
            "{e}: the rollback posted to /a (Slack) and /a-hook (the policy's webhook): {:?}; log:\n{}",
            got.lock().unwrap(),
            stack.canaryd_log()
        )
    });

    // The Secret deleted: reported on the policy, and a rollback still happens.
    use k8s_openapi::api::core::v1::Secret;
    let secrets: Api<Secret> = Api::namespaced(stack.client.clone(), NAMESPACE);
    secrets.delete("hooks", &Default::default()).await.expect("Secret deleted");
    let reported = poll(Duration::from_secs(60), || async {
        stack.fake.list(&support::fake_apiserver::Gvr::core("events"), Some(NAMESPACE)).iter().any(|e| {
            e["reason"] == "SecretMissing"
                && (e["involvedObject"]["name"] == "web-slack" || e["regarding"]["name"] == "web-slack")
        })
    })
    .await;
    reported.unwrap_or_else(|e| {
        panic!("{e}: a SecretMissing Event on the policy; log:\n{}", stack.canaryd_log())
    });
    let runs = canaryruns();
    let uid_of = || stack.fake.get(&runs, NAMESPACE, "web").map(|r| r["metadata"]["uid"].clone());
    let first = uid_of();
    stack.change_template("web", "v3", 0.05).await;
    let rolled_back = poll(ROLLOUT, || async {
        let status = canary_run(&stack).await.unwrap_or(Value::Null);
        uid_of() != first && status["phase"] == "RolledBack"
    })
    .await;
    rolled_back
        .unwrap_or_else(|e| panic!("{e}: v3 rolled back without its Secret; log:\n{}", stack.canaryd_log()));

    // The Secret back, with another URL: the rollback the outbox kept retrying lands there.
    set_hooks_secret(&stack, &format!("{slack}/b")).await;
    let posted = poll(Duration::from_secs(90), both_at("/b")).await;
    posted.unwrap_or_else(|e| {
        panic!(
            "{e}: the rollback posted to /b and /b-hook: {:?}; log:\n{}",
            got.lock().unwrap(),
            stack.canaryd_log()
        )
    });
    drop(turn);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_hpa_on_web_gets_a_twin_for_web_primary_and_promotion_keeps_the_count_the_hpa_chose() {
    use k8s_openapi::api::autoscaling::v2::HorizontalPodAutoscaler;
    let turn = ONE_AT_A_TIME.lock().await;
    let (canaryd, demo_app) = bins();
    let mut stack = KubeStack::start(POLICY, demo_app, &canaryd).await;
    let autoscalers: Api<HorizontalPodAutoscaler> = Api::namespaced(stack.client.clone(), NAMESPACE);
    let theirs: HorizontalPodAutoscaler = serde_json::from_value(json!({
        "metadata": {"name": "web", "namespace": NAMESPACE},
        "spec": {
            "scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": "web"},
            "minReplicas": 2, "maxReplicas": 5,
            "metrics": [{"type": "Resource", "resource": {"name": "cpu", "target": {"type": "Utilization", "averageUtilization": 80}}}]
        }
    }))
    .expect("an HPA");
    autoscalers.create(&PostParams::default(), &theirs).await.expect("the user's HPA");
    stack.start_canaryd(&canaryd);
    stack.start_load();
    wait_attached(&stack, || stack.canaryd_log()).await;
    let ours = autoscalers.get("web-primary").await.expect("an HPA for web-primary");
    assert_eq!(ours.spec.scale_target_ref.name, "web-primary");
    assert_eq!((ours.spec.min_replicas, ours.spec.max_replicas), (Some(2), 5), "the user's bounds");
    assert_eq!(ours.spec.metrics, theirs.spec.metrics, "the user's metrics");
    let owner = ours.metadata.owner_references.unwrap_or_default();
    assert_eq!(owner.first().map(|o| o.name.as_str()), Some("web"), "owned by web");

    // The HPA (here, its stand-in: the test) scales the primary to 3.
    let scale = json!({"spec": {"replicas": 3}});
    stack
        .deployments()
        .patch("web-primary", &kube::api::PatchParams::default(), &kube::api::Patch::Merge(&scale))
        .await
        .expect("web-primary scaled to 3");
    stack.change_template("web", "v2", 0.0).await;
    let (status, _) = wait_phase(&stack, "Succeeded").await;
    assert_eq!(status["lastDecision"], "promoted", "{status:#}");
    let primary = stack.deployments().get("web-primary").await.expect("web-primary");
    assert_eq!(primary.spec.replicas, Some(3), "promotion kept the count the HPA chose");
    wait_back_on_primary(&stack).await;
    drop(turn);
}

/// [`POLICY`] on the replica router, with steps 2 primary replicas serve within the
/// default ±5 points (30% is 1 canary pod beside 2: 33.3%).
fn replica_policy() -> String {
    let plain = "traffic: {router: gateway-api, steps: [10, 50, 100], stepDuration: 8s}";
    assert!(POLICY.contains(plain), "POLICY's traffic line");
    POLICY.replace(plain, "traffic: {router: replica, steps: [30, 50, 100], stepDuration: 8s}")
}

/// `web`'s and `web-primary`'s `spec.replicas`, as the fake holds them.
fn replica_counts(stack: &KubeStack) -> Option<(i64, i64)> {
    let deployments = support::fake_apiserver::Gvr::new("apps", "v1", "deployments");
    let count = |name: &str| stack.fake.get(&deployments, NAMESPACE, name)?["spec"]["replicas"].as_i64();
    Some((count("web")?, count("web-primary")?))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn on_the_replica_router_the_pod_counts_follow_the_steps_behind_the_users_service_and_the_canary_is_promoted()
 {
    let turn = ONE_AT_A_TIME.lock().await;
    let (canaryd, demo_app) = bins();
    let mut stack = KubeStack::start(&replica_policy(), demo_app, &canaryd).await;
    stack.start_canaryd(&canaryd);
    stack.start_load();
    wait_attached(&stack, || stack.canaryd_log()).await;
    // The primary's pods keep web's labels, so the user's Service (app: web) selects
    // both arms; canaryd creates no Service of its own and leaves the route alone.
    let primary = stack.deployments().get("web-primary").await.expect("web-primary");
    let pod_labels = primary.spec.template.metadata.and_then(|m| m.labels).unwrap_or_default();
    assert_eq!(pod_labels.get("app").map(String::as_str), Some("web"), "{pod_labels:?}");
    assert_eq!(pod_labels.get("canaryd.io/arm").map(String::as_str), Some("primary"), "{pod_labels:?}");
    let services: Api<k8s_openapi::api::core::v1::Service> = Api::namespaced(stack.client.clone(), NAMESPACE);
    for ours in ["web-primary", "web-canary"] {
        assert!(services.get_opt(ours).await.expect("read").is_none(), "no Service {ours}");
    }
    assert_eq!(split(&stack.route("web").await), [("web".to_string(), 1)], "the route untouched");

    // Every (web, web-primary) replica count the rollout passes through, and the
    // versions answering through the user's Service meanwhile.
    stack.change_template("web", "v2", 0.0).await;
    let counts = std::sync::Mutex::new(vec![(0, 2)]);
    let served = std::sync::Mutex::new(std::collections::BTreeMap::<String, usize>::new());
    let promoted = poll(ROLLOUT, || async {
        if let Some(now) = replica_counts(&stack) {
            let mut seen = counts.lock().unwrap();
            if seen.last() != Some(&now) {
                seen.push(now);
            }
        }
        if canary_run(&stack).await.is_some_and(|s| s["weight"] == 50) {
            for (version, n) in stack.versions(4).await {
                *served.lock().unwrap().entry(version).or_default() += n;
            }
        }
        canary_run(&stack).await.is_some_and(|s| s["phase"] == "Succeeded")
            && replica_counts(&stack) == Some((0, 2))
    })
    .await;
    promoted.unwrap_or_else(|e| panic!("{e}: promoted, web at 0; log:\n{}", stack.canaryd_log()));
    // By hand, for 2 primary replicas: 30% is 1 canary pod, 50% is 2; 100% runs 2
    // canary pods and scales the primary to 0 (after the canary's are ready);
    // promotion brings the primary back at 2 with v2, then web to 0.
    assert_eq!(
        counts.into_inner().unwrap(),
        [(0, 2), (1, 2), (2, 2), (2, 0), (2, 2), (0, 2)],
        "the (web, web-primary) replicas, in order"
    );
    let served = served.into_inner().unwrap();
    assert!(
        served.get("v1").is_some_and(|n| *n > 0) && served.get("v2").is_some_and(|n| *n > 0),
        "at 50% both versions answer through the one Service: {served:?}"
    );
    let versions = stack.versions(20).await;
    assert_eq!(versions.get("v2"), Some(&20), "web-primary serves v2: {versions:?}");
    drop(turn);
}

/// The fleet of the shards test: no traffic needed, so the one metric is the canary's
/// pod count from its own `demo_app_info` series (data exists once its pods are scraped;
/// no data is inconclusive, never a pass).
const FLEET_POLICY: &str = r#"
apiVersion: canaryd.io/v1alpha1
kind: CanaryPolicy
metadata: {name: fleet, namespace: shop}
spec:
  selector: {matchLabels: {canary: enabled}}
  traffic: {router: replica, steps: [50, 100], stepDuration: 6s}
  analysis:
    interval: 3s
    inconclusiveLimit: 20
    metrics:
      - {name: pods, test: threshold, max: 100, query: 'sum by ($by) (demo_app_info{$matchers})'}
"#;

/// How many Deployments the shards test releases at once.
const FLEET: usize = 60;

/// The holder of each shard's Lease (`canaryd-shard-<k>`), by shard.
fn shard_holders(stack: &KubeStack, shards: u32) -> Vec<Option<String>> {
    let leases = support::fake_apiserver::Gvr::new("coordination.k8s.io", "v1", "leases");
    (0..shards)
        .map(|k| {
            let lease = stack.fake.get(
                &leases,
                support::kubernetes::CANARYD_NAMESPACE,
                &format!("canaryd-shard-{k}"),
            );
            lease.and_then(|l| {
                l["spec"]["holderIdentity"].as_str().filter(|h| !h.is_empty()).map(String::from)
            })
        })
        .collect()
}

/// How many shards each replica holds.
fn held_by(holders: &[Option<String>]) -> std::collections::BTreeMap<String, usize> {
    let mut held = std::collections::BTreeMap::new();
    for holder in holders.iter().flatten() {
        *held.entry(holder.clone()).or_default() += 1;
    }
    held
}

/// The rollout a write by canaryd is for (its Deployments and its CanaryRun), if any.
fn written_rollout(r: &support::fake_apiserver::Request) -> Option<String> {
    if !r.client.starts_with("canaryd-") || ["get", "list", "watch"].contains(&r.verb.as_str()) {
        return None;
    }
    let target = r.resource.as_ref()?;
    let name = target.name.as_ref()?;
    match target.plural.as_str() {
        "deployments" => Some(name.strip_suffix("-primary").unwrap_or(name).to_string()),
        "canaryruns" => Some(name.clone()),
        _ => None,
    }
}

/// Every write for a rollout that its writer made while another replica held the
/// rollout's shard, from the fake's log: a shard's holder at a request is the client of
/// the last successful update of its Lease before it (a take, a renewal, or the holder's
/// own release, after which its daemon has stopped), and before any update, the client
/// of the first one (the Lease's creator renews or releases its own Lease first).
fn writes_outside_the_shards_lease(stack: &KubeStack, shards: u32) -> Vec<String> {
    let requests = stack.fake.requests();
    let lease_update = |r: &support::fake_apiserver::Request| -> Option<u32> {
        let target = r.resource.as_ref()?;
        let shard = target.name.as_ref()?.strip_prefix("canaryd-shard-")?.parse().ok()?;
        (target.plural == "leases" && r.verb == "update" && r.status < 300).then_some(shard)
    };
    let mut holder: std::collections::BTreeMap<u32, String> = Default::default();
    for r in &requests {
        if let Some(shard) = lease_update(r) {
            holder.entry(shard).or_insert_with(|| r.client.clone());
        }
    }
    let mut outside = Vec::new();
    for (i, r) in requests.iter().enumerate() {
        if let Some(shard) = lease_update(r) {
            holder.insert(shard, r.client.clone());
        } else if let Some(rollout) = written_rollout(r) {
            let shard = canaryd::platform::kubernetes::shards::shard_of(NAMESPACE, &rollout, shards);
            if holder.get(&shard) != Some(&r.client) {
                outside.push(format!(
                    "#{i} {} {} {} while {:?} held shard {shard}",
                    r.client,
                    r.method,
                    r.path,
                    holder.get(&shard)
                ));
            }
        }
    }
    outside
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_replicas_on_six_shards_drive_each_rollout_from_one_replica_and_a_killed_ones_shards_move() {
    let turn = ONE_AT_A_TIME.lock().await;
    let (canaryd, demo_app) = bins();
    let mut stack = KubeStack::start(FLEET_POLICY, demo_app, &canaryd).await;
    stack.grant_component("shards");
    let settings = std::fs::read_to_string(stack.path("canaryd.toml")).unwrap();
    let sharded = settings.replacen("[kubernetes]\n", "[kubernetes]\nshards = 6\n", 1);
    assert_ne!(settings, sharded, "the stack's settings have a [kubernetes] section");
    std::fs::write(stack.path("canaryd.toml"), sharded).unwrap();
    // `web` (the stack's) and more Deployments, each behind its own Service.
    let names: Vec<String> =
        std::iter::once("web".to_string()).chain((1..FLEET).map(|i| format!("app-{i:02}"))).collect();
    let services: Api<k8s_openapi::api::core::v1::Service> = Api::namespaced(stack.client.clone(), NAMESPACE);
    for name in &names[1..] {
        let d = deployment(name, json!({"canary": "enabled"}), "v1", 0.0);
        stack.deployments().create(&PostParams::default(), &d).await.expect("a Deployment");
        let service = serde_json::from_value(json!({
            "metadata": {"name": name, "namespace": NAMESPACE},
            "spec": {"selector": {"app": name}, "ports": [{"name": "http", "port": 8080, "targetPort": 8080}]}
        }))
        .unwrap();
        services.create(&PostParams::default(), &service).await.expect("a Service");
    }
    let mut api_ports = std::collections::BTreeMap::new();
    for replica in ["a", "b", "c"] {
        api_ports.insert(replica, stack.start_replica(&canaryd, replica));
    }
    let fair = [("a".to_string(), 2), ("b".to_string(), 2), ("c".to_string(), 2)].into();
    let balanced =
        poll(Duration::from_secs(60), || async { held_by(&shard_holders(&stack, 6)) == fair }).await;
    balanced.unwrap_or_else(|e| {
        panic!(
            "{e}: each of 3 replicas holds 2 of the 6 shards: {:?}\n{}",
            shard_holders(&stack, 6),
            stack.replica_logs()
        )
    });

    // Every Deployment attached (its primary created, itself at 0), then all released.
    let deployments = support::fake_apiserver::Gvr::new("apps", "v1", "deployments");
    let replicas = |name: &str| {
        stack.fake.get(&deployments, NAMESPACE, name).and_then(|d| d["spec"]["replicas"].as_i64())
    };
    let attached = poll(Duration::from_secs(120), || async {
        names.iter().all(|n| replicas(n) == Some(0) && replicas(&format!("{n}-primary")) == Some(2))
    })
    .await;
    attached.unwrap_or_else(|e| panic!("{e}: all {FLEET} attached; logs:\n{}", stack.replica_logs()));
    for name in &names {
        stack.change_template(name, "v2", 0.0).await;
    }
    fn run_phase(stack: &KubeStack, name: &str) -> Option<String> {
        let runs = support::fake_apiserver::Gvr::new("canaryd.io", "v1alpha1", "canaryruns");
        stack.fake.get(&runs, NAMESPACE, name).and_then(|r| r["status"]["phase"].as_str().map(String::from))
    }
    let phase = |name: &str| run_phase(&stack, name);
    let started = poll(Duration::from_secs(120), || async { names.iter().all(|n| phase(n).is_some()) }).await;
    started.unwrap_or_else(|e| panic!("{e}: every rollout started; logs:\n{}", stack.replica_logs()));

    // a's API shows the rollouts of a's shards, and sends the others to their replica.
    let shard_of = |name: &str| canaryd::platform::kubernetes::shards::shard_of(NAMESPACE, name, 6) as usize;
    let holders = shard_holders(&stack, 6);
    let held_by_a = |name: &String| holders[shard_of(name)].as_deref() == Some("a");
    let expected: std::collections::BTreeSet<String> =
        names.iter().filter(|n| held_by_a(n)).cloned().collect();
    let api = format!("http://127.0.0.1:{}/api/v1/rollouts", api_ports["a"]);
    let http = reqwest::Client::new();
    let get = |url: String| http.get(url).bearer_auth("kube-stack-token").send();
    let shown = poll(Duration::from_secs(30), || async {
        let Ok(r) = get(api.clone()).await else { return false };
        let views: Vec<Value> = r.json().await.unwrap_or_default();
        views
            .iter()
            .filter_map(|v| v["name"].as_str().map(String::from))
            .collect::<std::collections::BTreeSet<_>>()
            == expected
    })
    .await;
    shown.unwrap_or_else(|e| {
        panic!("{e}: a's API lists its shards' {} rollouts {expected:?}", expected.len())
    });
    let of_c = names.iter().find(|n| holders[shard_of(n)].as_deref() == Some("c")).expect("a rollout of c's");
    let asked = get(format!("{api}/{NAMESPACE}/{of_c}")).await.expect("a answers");
    let status = asked.status();
    let text = asked.text().await.unwrap_or_default();
    assert_eq!(status, 503, "{text}");
    assert!(text.contains(&format!("shard {}, which replica c drives", shard_of(of_c))), "{text}");

    // b dies mid-rollout: a and c take its shards, 3 each, within the lease's duration.
    let before: Vec<Option<String>> = shard_holders(&stack, 6);
    let of_b: Vec<&String> = names
        .iter()
        .filter(|n| {
            before[canaryd::platform::kubernetes::shards::shard_of(NAMESPACE, n, 6) as usize].as_deref()
                == Some("b")
        })
        .collect();
    let unfinished = of_b.iter().filter(|n| phase(n).as_deref() != Some("Succeeded")).count();
    assert!(unfinished > 0, "b is killed mid-rollout: of its {} rollouts, none is left", of_b.len());
    eprintln!("b is killed with {unfinished} of its {} rollouts unfinished", of_b.len());
    stack.signal_replica("b", "KILL");
    let killed = stack.fake.request_count();
    let moved = [("a".to_string(), 3), ("c".to_string(), 3)].into();
    let taken = poll(Duration::from_secs(30), || async { held_by(&shard_holders(&stack, 6)) == moved }).await;
    taken.unwrap_or_else(|e| {
        panic!("{e}: a and c hold 3 each: {:?}\n{}", shard_holders(&stack, 6), stack.replica_logs())
    });
    let phase = |name: &str| run_phase(&stack, name);
    let finished = poll(Duration::from_secs(300), || async {
        names.iter().all(|n| phase(n).as_deref() == Some("Succeeded"))
    })
    .await;
    finished.unwrap_or_else(|e| {
        let phases: Vec<(String, Option<String>)> = names.iter().map(|n| (n.clone(), phase(n))).collect();
        panic!("{e}: all {FLEET} promoted: {phases:?}\nlogs:\n{}", stack.replica_logs())
    });

    // One replica at a time per rollout: each write for a rollout came from the replica
    // that held its shard's Lease then, and the rollouts of b's shards were finished by
    // their new holders.
    for name in &names {
        let run = stack.fake.get(
            &support::fake_apiserver::Gvr::new("canaryd.io", "v1alpha1", "canaryruns"),
            NAMESPACE,
            name,
        );
        let decisions = run.map(|r| r["status"]["state"]["rollout"]["decisions"].clone()).unwrap_or_default();
        let actions: Vec<(String, i64)> = decisions
            .as_array()
            .into_iter()
            .flatten()
            .map(|d| (d["action"].as_str().unwrap_or("").to_string(), d["weight"].as_i64().unwrap_or(-1)))
            .collect();
        let once = |action: &str, weight: i64| {
            actions.iter().filter(|a| a.0 == action && a.1 == weight).count() == 1
        };
        assert!(
            once("started", 50) && once("promoting", 100) && once("promoted", 100),
            "{name}: {actions:?}"
        );
    }
    let written: std::collections::BTreeSet<String> =
        stack.fake.requests().iter().filter_map(written_rollout).collect();
    assert_eq!(written.len(), FLEET, "every rollout was written: {written:?}");
    let outside = writes_outside_the_shards_lease(&stack, 6);
    assert!(outside.is_empty(), "writes by a replica not holding the shard: {outside:#?}");
    let after_kill: Vec<String> = stack
        .fake
        .requests_from(killed)
        .iter()
        .filter(|r| r.client == "canaryd-b")
        .map(|r| r.path.clone())
        .collect();
    assert!(after_kill.is_empty(), "b made requests after SIGKILL: {after_kill:?}");
    drop(turn);
}
