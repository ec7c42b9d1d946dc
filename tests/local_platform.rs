//! End to end on the local platform, as the demo runs it: real Prometheus, nginx, wrk,
//! demo servers and `canaryd run` (the binary) on loopback ports. A bad canary is rolled
//! back and a good one promoted with the requests each server actually served following
//! the weights; then the faults: nginx refusing its config, Prometheus killed, canaryd
//! killed with SIGKILL, and a promote hook that fails or hangs; and the records a demo run
//! keeps. `documented_example` sets the platform up from the docs alone.
//!
//! Each test runs its own stack; they take turns (one stack at a time), since each
//! keeps wrk's load running on the machine's two cores.

use std::collections::BTreeMap;
use std::time::Duration;

use canaryd::daemon::view::RolloutView;
use canaryd::demo::{Options, Stack, wait_until};
use canaryd::engine::DecisionKind;

#[path = "local_platform/documented_example.rs"]
mod documented_example;
mod support;
use support::stack::{ROLLOUT, binaries, cli, out, record, start, wait_view};

/// How long after nginx first answers a new config generation its old worker may still
/// serve requests. On reload nginx's master starts the new workers, sleeps 100 ms, and only
/// then tells the old ones to quit; until then an old worker keeps serving the keepalive
/// connections it holds (wrk's), and afterwards it finishes the requests in flight. The
/// status server already answers from a new worker during that time.
const OLD_WORKERS_DRAIN: Duration = Duration::from_secs(1);

/// Requests served per nginx weight, from the demo servers' own counters: a sample is
/// kept only when nginx served the same config generation before and after it, and that
/// generation was first seen at least [`OLD_WORKERS_DRAIN`] before.
#[derive(Default)]
struct Split {
    /// weight -> (canary requests, all requests)
    by_weight: BTreeMap<u8, (f64, f64)>,
    last: Option<(String, f64, f64)>,
    /// The generation last seen, and when it was first seen.
    seen: Option<(String, tokio::time::Instant)>,
}

impl Split {
    async fn sample(&mut self, stack: &Stack) {
        let Some(before) = stack.nginx_serves().await else { return };
        if self.seen.as_ref().is_none_or(|(config, _)| *config != before) {
            self.seen = Some((before.clone(), tokio::time::Instant::now()));
        }
        let drained = self.seen.as_ref().is_some_and(|(_, since)| since.elapsed() >= OLD_WORKERS_DRAIN);
        let served = stack.served().await;
        let Some(after) = stack.nginx_serves().await else { return };
        if before != after || served.len() < 4 || !drained {
            self.last = None;
            return;
        }
        let canary: f64 = served.iter().filter(|s| s.canary).map(|s| s.requests).sum();
        let all: f64 = served.iter().map(|s| s.requests).sum();
        if let Some((config, c0, a0)) = &self.last
            && *config == after
            && canary >= *c0
            && all >= *a0
        {
            let weight: u8 = after.split_whitespace().nth(1).and_then(|w| w.parse().ok()).unwrap_or(0);
            let entry = self.by_weight.entry(weight).or_default();
            entry.0 += canary - c0;
            entry.1 += all - a0;
        }
        self.last = Some((after, canary, all));
    }
}

/// Follows a rollout to its end, sampling the traffic split all along.
async fn follow_sampling(stack: &Stack, revision: &str, split: &mut Split) -> RolloutView {
    let deadline = tokio::time::Instant::now() + ROLLOUT;
    loop {
        split.sample(stack).await;
        if let Some(v) = stack.view().await.filter(|v| v.revision == revision && v.finished_at.is_some()) {
            return v;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "{revision} did not end; log:\n{}",
            stack.canaryd_log()
        );
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bad_canary_is_rolled_back_and_a_good_one_promoted_with_traffic_following_the_weights() {
    let (stack, _turn) = start(Options::default()).await;
    let mut split = Split::default();

    stack.deploy_canary("v2-bad", 0.05, 5).await.unwrap();
    stack.start_rollout("v2-bad").await.unwrap();
    let bad = follow_sampling(&stack, "v2-bad", &mut split).await;
    assert_eq!(bad.phase, "rolled-back", "{bad:#?}");
    let upstreams = std::fs::read_to_string(stack.path("upstreams.conf")).unwrap();
    assert!(upstreams.contains("# canaryd weight web 0"), "{upstreams}");
    for port in stack.ports.canary {
        assert!(
            !upstreams.contains(&format!("127.0.0.1:{port} ")),
            "canary server {port} still routed:\n{upstreams}"
        );
    }
    let rolled_back = record(&stack, "v2-bad").await;
    let decision = rolled_back
        .decisions
        .iter()
        .find(|d| d.action == DecisionKind::RolledBack)
        .expect("a rollback decision");
    assert!(
        decision.evidence.iter().any(|v| v.metric == "errors" && v.conclusive)
            || decision.triggers.iter().any(|t| t.trigger.contains("errors")),
        "the rollback rests on the error metric: {decision:#?}"
    );
    assert!(decision.reason.contains("errors"), "{}", decision.reason);

    stack.deploy_canary("v3", 0.005, 5).await.unwrap();
    stack.start_rollout("v3").await.unwrap();
    let good = follow_sampling(&stack, "v3", &mut split).await;
    assert_eq!(good.phase, "succeeded", "{good:#?}");
    // The canary servers still run after the promotion: sample 0% for a while longer.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    while split.by_weight.get(&0).is_none_or(|(_, all)| *all < 3000.0)
        && tokio::time::Instant::now() < deadline
    {
        split.sample(&stack).await;
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    let promoted = record(&stack, "v3").await;
    // A stall notice (three data-poor intervals in a row, which a loaded machine's low
    // traffic can give at 10%) changes nothing in the rollout's course: left out here.
    let actions: Vec<(&str, u8)> = promoted
        .decisions
        .iter()
        .filter(|d| d.action != DecisionKind::Stalled)
        .map(|d| (d.action.name(), d.weight))
        .collect();
    assert_eq!(actions, [("started", 10), ("advanced", 50), ("promoting", 100), ("promoted", 100)]);
    // After promotion nginx sends everything to the stable servers, which run v3.
    assert!(stack.nginx_serves().await.unwrap().starts_with("web 0 "));
    for _ in 0..10 {
        assert_eq!(stack.get_front().await.as_deref(), Some("v3"));
    }
    let told: Vec<String> =
        stack.notifications().iter().map(|n| format!("{}:{:?}", n.key.revision, n.event)).collect();
    assert!(
        told.contains(&"v2-bad:RolledBack".to_string()) && told.contains(&"v3:Promoted".to_string()),
        "{told:?}"
    );
    // The post-rollout hook ran once for each, with its outcome.
    let post = std::fs::read_to_string(stack.path("post-rollout.log")).unwrap_or_default();
    assert_eq!(post.lines().collect::<Vec<_>>(), ["web v2-bad rolled-back", "web v3 promoted"], "{post}");

    // The split each weight was served with. nginx's smooth weighted round robin (one
    // worker) hands out exactly w of every 100 requests within each cycle of the reduced
    // server weights (20 requests at 10%, 4 at 50%), so a window is off by at most one
    // cycle; the four servers' counters are read one after another (a few ms at about
    // 1,500 requests/s: under 10 requests). With at least 1,000 requests per weight that
    // is under 3 percentage points.
    for weight in [10u8, 50] {
        let (canary, all) = split.by_weight.get(&weight).copied().unwrap_or_default();
        assert!(all >= 1000.0, "too few requests sampled at {weight}%: {all} ({:?})", split.by_weight);
        let share = canary / all;
        eprintln!("weight {weight}%: canary served {canary} of {all} requests = {:.2}%", share * 100.0);
        assert!(
            (share - f64::from(weight) / 100.0).abs() <= 0.03,
            "weight {weight}%: canary share {share:.4}"
        );
    }
    let (canary, all) = split.by_weight.get(&0).copied().unwrap_or_default();
    eprintln!("weight 0%: canary served {canary} of {all} requests");
    assert!(all >= 1000.0 && canary == 0.0, "at 0% no request reaches a canary server: {canary} of {all}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nginx_refusing_its_config_keeps_traffic_on_the_last_good_one_and_pauses_the_rollout() {
    let (stack, _turn) = start(Options::default()).await;
    stack.deploy_canary("v3", 0.005, 5).await.unwrap();
    stack.start_rollout("v3").await.unwrap();
    wait_view(&stack, "10% applied", |v| v.applied_weight == Some(10)).await;
    let good = stack.nginx_serves().await.unwrap();
    assert!(good.starts_with("web 10 "), "{good}");
    // nginx's own config now includes a file that does not exist: `nginx -t` fails.
    let conf = stack.path("nginx.conf");
    let original = std::fs::read_to_string(&conf).unwrap();
    std::fs::write(&conf, format!("include /nonexistent/canaryd-test.conf;\n{original}")).unwrap();

    let paused = wait_view(&stack, "paused", |v| v.phase == "paused").await;
    let reason = &paused.last_decision.as_ref().unwrap().reason;
    assert!(reason.contains("could not set weight 50%") && reason.contains("nginx -t"), "{reason}");
    assert!(
        reason.contains("/nonexistent/canaryd-test.conf"),
        "the reason names nginx's complaint: {reason}"
    );
    assert_eq!(stack.nginx_serves().await.unwrap(), good, "traffic stays on the last good config");
    // The paused rollout's weight is retried each tick, and each retry writes its
    // candidate for the moment of its test; between retries the last good file is back.
    let restored = wait_until(Duration::from_secs(20), "the last good file is back", || async {
        std::fs::read_to_string(stack.path("upstreams.conf"))
            .is_ok_and(|f| f.contains("# canaryd weight web 10"))
    })
    .await;
    let file = std::fs::read_to_string(stack.path("upstreams.conf")).unwrap();
    assert!(restored.is_ok(), "the last good file is back:\n{file}");
    let metrics = reqwest::get(format!("{}/metrics", stack.api())).await.unwrap().text().await.unwrap();
    let failures = metrics
        .lines()
        .find_map(|l| l.strip_prefix("canaryd_router_failures_total "))
        .and_then(|v| v.parse::<f64>().ok())
        .unwrap_or(0.0);
    assert!(failures >= 3.0, "canaryd_router_failures_total {failures}");

    // Fixed: the retries land the weight the engine decided; the rollout stays paused.
    std::fs::write(&conf, original).unwrap();
    let landed = wait_view(&stack, "50% applied", |v| v.applied_weight == Some(50)).await;
    assert_eq!(landed.phase, "paused");
    assert!(stack.nginx_serves().await.unwrap().starts_with("web 50 "));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn prometheus_killed_mid_rollout_never_promotes_and_rolls_back_at_the_inconclusive_limit() {
    let (mut stack, _turn) = start(Options::default()).await;
    stack.deploy_canary("v3", 0.005, 5).await.unwrap();
    stack.start_rollout("v3").await.unwrap();
    wait_view(&stack, "10% applied", |v| v.applied_weight == Some(10)).await;
    stack.kill_prometheus();
    let mut phases = Vec::new();
    let end =
        stack.follow("v3", ROLLOUT, |v| phases.push((v.phase.clone(), v.metrics.clone()))).await.unwrap();
    assert_eq!(end.phase, "rolled-back", "{end:#?}");
    assert!(phases.iter().all(|(p, _)| p != "promoting" && p != "succeeded"), "{phases:?}");
    let r = record(&stack, "v3").await;
    let decision = r.decisions.iter().find(|d| d.action == DecisionKind::RolledBack).unwrap();
    assert!(
        decision.reason.contains("inconclusive intervals in a row reached the limit"),
        "{}",
        decision.reason
    );
    assert!(
        r.decisions.iter().all(|d| d.action != DecisionKind::Advanced || d.weight <= 50),
        "no step past what was judged with data"
    );
    let last_points: Vec<&str> =
        r.timeline.points.iter().rev().take(3).map(|p| p.outcomes.as_str()).collect();
    assert!(last_points.iter().all(|o| o.chars().all(|c| c == 'i')), "{last_points:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn canaryd_killed_with_sigkill_resumes_from_its_store_without_skipping_or_repeating_a_step() {
    let (mut stack, _turn) = start(Options::default()).await;
    stack.deploy_canary("v3", 0.005, 5).await.unwrap();
    stack.start_rollout("v3").await.unwrap();
    wait_view(&stack, "step 2 at 50% applied", |v| v.step == 2 && v.applied_weight == Some(50)).await;
    stack.kill_canaryd();
    stack.start_canaryd().await.unwrap();
    let end = stack.follow("v3", ROLLOUT, |_| {}).await.unwrap();
    assert_eq!(end.phase, "succeeded", "{end:#?}");
    let r = record(&stack, "v3").await;
    let seqs: Vec<u64> = r.decisions.iter().map(|d| d.seq).collect();
    assert_eq!(seqs, (0..seqs.len() as u64).collect::<Vec<_>>(), "no decision lost or repeated");
    let actions: Vec<(&str, u8)> = r.decisions.iter().map(|d| (d.action.name(), d.weight)).collect();
    assert_eq!(actions, [("started", 10), ("advanced", 50), ("promoting", 100), ("promoted", 100)]);
    assert!(stack.nginx_serves().await.unwrap().starts_with("web 0 "), "promoted: all traffic to stable");
    assert_eq!(stack.get_front().await.as_deref(), Some("v3"));
    let promoted = stack.notifications().iter().filter(|n| n.key.revision == "v3").count();
    assert!(promoted >= 4, "every decision told");
}

async fn failed_promotion(hook: Vec<String>, timeout: &str, expected: &str) {
    let options = Options { promote_hook: Some(hook), promote_timeout: timeout.into(), ..Options::default() };
    let (stack, _turn) = start(options).await;
    // A pre-rollout hook that fails (no canary server answers yet) stops the rollout
    // before any traffic moves.
    let refused = stack.start_rollout("v3").await.unwrap_err().to_string();
    assert!(refused.contains("422") && refused.contains("does not answer"), "{refused}");
    assert_eq!(stack.nginx_serves().await.unwrap(), "web 0 0", "nginx untouched");

    stack.deploy_canary("v3", 0.005, 5).await.unwrap();
    stack.start_rollout("v3").await.unwrap();
    let end = stack.follow("v3", ROLLOUT, |_| {}).await.unwrap();
    assert_eq!(end.phase, "rolled-back", "{end:#?}");
    let r = record(&stack, "v3").await;
    let decision = r.decisions.iter().find(|d| d.action == DecisionKind::RolledBack).unwrap();
    assert!(
        decision.reason.contains("promotion failed, the canary did not become stable"),
        "{}",
        decision.reason
    );
    assert!(decision.reason.contains(expected), "{}", decision.reason);
    assert!(r.decisions.iter().all(|d| d.action != DecisionKind::Promoted));
    // The stable servers still run v1, and take all the traffic.
    assert!(stack.nginx_serves().await.unwrap().starts_with("web 0 "));
    for _ in 0..10 {
        assert_eq!(stack.get_front().await.as_deref(), Some("v1"));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_promote_hook_rolls_back_with_its_reason() {
    let hook = ["sh", "-c", "echo cannot deploy to the stable hosts >&2; exit 3"].map(String::from).to_vec();
    failed_promotion(hook, "5s", "exited with code 3: cannot deploy to the stable hosts").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_promote_hook_that_hangs_is_killed_at_its_limit_and_rolls_back() {
    let hook = ["sleep", "600"].map(String::from).to_vec();
    failed_promotion(hook, "1s", "no exit within 1s; killed").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_demo_run_keeps_a_record_of_each_finished_rollout_for_the_records_cli() {
    let (stack, _turn) = start(Options::default()).await;
    // As the demo runs them: each rollout starts as soon as the one before has ended. The
    // bad canary trips the errors trigger at the first interval; the good one is promoted
    // by hand at its first interval, to keep the test short.
    stack.deploy_canary("v2-bad", 0.5, 5).await.unwrap();
    stack.start_rollout("v2-bad").await.unwrap();
    let bad = stack.follow("v2-bad", ROLLOUT, |_| {}).await.unwrap();
    assert_eq!(bad.phase, "rolled-back", "{bad:#?}");
    stack.deploy_canary("v3", 0.005, 5).await.unwrap();
    stack.start_rollout("v3").await.unwrap();
    wait_view(&stack, "v3 at 10%", |v| v.revision == "v3" && v.applied_weight == Some(10)).await;
    let promoted = cli(&stack, &["promote", "web"]);
    assert!(promoted.status.success(), "{}", out(&promoted));
    let good = stack.follow("v3", ROLLOUT, |_| {}).await.unwrap();
    assert_eq!(good.phase, "succeeded", "{good:#?}");

    let kept = tempfile::tempdir().unwrap();
    let dir = kept.path().join("demo-records");
    let files = stack
        .keep_records(&dir, &["v2-bad", "v3"], Duration::from_secs(20))
        .await
        .unwrap_or_else(|e| panic!("{e:#}; canaryd log:\n{}", stack.canaryd_log()));
    let listed = std::process::Command::new(binaries().canaryd)
        .args(["records", "--dir"])
        .arg(&dir)
        .arg("list")
        .output()
        .unwrap();
    let text = out(&listed);
    assert!(listed.status.success(), "{text}");
    for (id, outcome) in [("demo/web@v2-bad", "rolled-back"), ("demo/web@v3", "succeeded")] {
        assert!(
            text.lines().any(|l| l.contains(id) && l.contains(outcome)),
            "no {id} {outcome} in `canaryd records list`:\n{text}\nkept {files:?}; canaryd log:\n{}",
            stack.canaryd_log()
        );
    }
    assert_eq!(text.lines().filter(|l| l.contains("demo/web@")).count(), 2, "{text}");
    // Where they cannot be kept, the error says where and why.
    let file = kept.path().join("a-file");
    std::fs::write(&file, "").unwrap();
    let blocked = file.join("demo-records");
    let err = stack.keep_records(&blocked, &["v3"], Duration::from_secs(1)).await.unwrap_err();
    let message = format!("{err:#}");
    assert!(
        message.contains(&blocked.display().to_string()) && message.contains("Not a directory"),
        "{message}"
    );
}

/// Every `canaryd_*` name the dashboards' expressions use.
fn dashboard_names() -> std::collections::BTreeSet<String> {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("dashboards");
    let mut names = std::collections::BTreeSet::new();
    fn walk(v: &serde_json::Value, names: &mut std::collections::BTreeSet<String>) {
        match v {
            serde_json::Value::Object(o) => {
                for (k, x) in o {
                    if k == "expr"
                        && let Some(e) = x.as_str()
                    {
                        for (i, _) in e.match_indices("canaryd_") {
                            let name: String = e[i..]
                                .chars()
                                .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                                .collect();
                            names.insert(name);
                        }
                    }
                    walk(x, names);
                }
            }
            serde_json::Value::Array(a) => a.iter().for_each(|x| walk(x, names)),
            _ => {}
        }
    }
    for f in std::fs::read_dir(dir)
        .unwrap()
        .flatten()
        .filter(|f| f.path().extension().is_some_and(|x| x == "json"))
    {
        walk(&serde_json::from_str(&std::fs::read_to_string(f.path()).unwrap()).unwrap(), &mut names);
    }
    names
}

/// Whether `/metrics` text exports `name`: as a sample, or as the series of a family of
/// the matching type (`_total` of a counter; `_bucket`, `_sum`, `_count` of a histogram).
fn exported(metrics: &str, name: &str) -> bool {
    let sample =
        metrics.lines().any(|l| l.starts_with(&format!("{name} ")) || l.starts_with(&format!("{name}{{")));
    let family = |base: &str, kind: &str| metrics.lines().any(|l| l == format!("# TYPE {base} {kind}"));
    let typed = name.strip_suffix("_total").is_some_and(|b| family(b, "counter"))
        || ["_bucket", "_sum", "_count"]
            .iter()
            .any(|s| name.strip_suffix(s).is_some_and(|b| family(b, "histogram")))
        || family(name, "gauge");
    sample && typed
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn operators_watch_pause_resume_promote_and_abort_with_the_cli_and_the_dashboards_names_are_exported() {
    let (stack, _turn) = start(Options::default()).await;
    let metrics_now =
        || async { reqwest::get(format!("{}/metrics", stack.api())).await.unwrap().text().await.unwrap() };
    stack.deploy_canary("v3", 0.005, 5).await.unwrap();
    stack.start_rollout("v3").await.unwrap();
    wait_view(&stack, "a first interval at 10%", |v| v.applied_weight == Some(10) && v.intervals >= 1).await;
    let watch = tokio::process::Command::new(binaries().canaryd)
        .args(["rollout", "watch", "web", "--plain", "--every", "300ms", "--server", &stack.api()])
        .env_remove("CANARYD_CONFIG")
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    // Its lines as they come; the pause waits for its first view, so that a slow start
    // of the watch cannot miss the progressing state.
    let mut watch = watch;
    let mut watch_lines =
        tokio::io::AsyncBufReadExt::lines(tokio::io::BufReader::new(watch.stdout.take().unwrap()));
    let lines = std::sync::Arc::new(std::sync::Mutex::new(Vec::<String>::new()));
    let reader = {
        let lines = lines.clone();
        tokio::spawn(async move {
            while let Ok(Some(line)) = watch_lines.next_line().await {
                lines.lock().unwrap().push(line);
            }
        })
    };
    let first_view = "demo/web v3 progressing  step 1/3  weight  10% (applied  10%)";
    let seen = support::prometheus::poll(Duration::from_secs(30), || async {
        lines.lock().unwrap().iter().any(|l| l.starts_with(first_view))
    })
    .await;
    seen.unwrap_or_else(|e| panic!("{e}: the watch's first view; it printed {:?}", lines.lock().unwrap()));
    let mut scraped = String::new();

    let paused = cli(&stack, &["pause", "web"]);
    assert!(paused.status.success(), "{}", out(&paused));
    assert!(out(&paused).contains("demo/web pause: applied (as operator)"), "{}", out(&paused));
    wait_view(&stack, "paused", |v| v.phase == "paused").await;
    // Mid-rollout, the per-rollout series exist. A paused rollout is still judged every
    // interval, so this waits (at 10%, with no step to race) for an interval with values
    // for both arms: the first interval may have had no data yet, and no data is no series.
    let mid = std::sync::Mutex::new(String::new());
    wait_until(Duration::from_secs(30), "a canaryd_metric_value series mid-rollout", || async {
        let now = metrics_now().await;
        let hit = now.contains("canaryd_metric_value{");
        *mid.lock().unwrap() = now;
        hit
    })
    .await
    .unwrap_or_else(|e| panic!("{e}:\n{}", mid.lock().unwrap()));
    scraped.push_str(&mid.lock().unwrap());
    let again = cli(&stack, &["pause", "demo/web"]);
    assert_eq!(again.status.code(), Some(2), "{}", out(&again));
    assert!(
        out(&again).contains("409") && out(&again).contains("cannot pause a rollout that is paused"),
        "{}",
        out(&again)
    );
    let resumed = cli(&stack, &["resume", "web"]);
    assert!(resumed.status.success(), "{}", out(&resumed));
    wait_view(&stack, "progressing again", |v| v.phase == "progressing").await;
    let promoted = cli(&stack, &["promote", "web"]);
    assert!(promoted.status.success(), "{}", out(&promoted));
    wait_view(&stack, "promoted by hand", |v| v.revision == "v3" && v.phase == "succeeded").await;

    // `watch` followed it all and exited 0 on the promotion.
    let watched =
        tokio::time::timeout(Duration::from_secs(30), watch.wait_with_output()).await.unwrap().unwrap();
    tokio::time::timeout(Duration::from_secs(30), reader).await.unwrap().unwrap();
    let text = lines.lock().unwrap().join("\n");
    assert!(watched.status.success(), "{text}{}", String::from_utf8_lossy(&watched.stderr));
    for line in [
        "demo/web v3 progressing  step 1/3  weight  10% (applied  10%)",
        "demo/web v3   -> started at 10%",
        "demo/web v3   -> paused at 10%: paused by operator",
        "demo/web v3   -> resumed at 10%: resumed by operator",
        "demo/web v3   -> promoting at 100%: promoted by hand by operator",
        "demo/web v3 succeeded",
    ] {
        assert!(text.lines().any(|l| l.starts_with(line)), "no line starting `{line}` in:\n{text}");
    }
    let record = record(&stack, "v3").await;
    let actions: Vec<&str> = record.decisions.iter().map(|d| d.action.name()).collect();
    assert_eq!(actions, ["started", "paused", "resumed", "promoting", "promoted"]);

    // An abort rolls the next canary back; `status` shows why.
    stack.deploy_canary("v4", 0.005, 5).await.unwrap();
    stack.start_rollout("v4").await.unwrap();
    wait_view(&stack, "v4 at 10%", |v| v.revision == "v4" && v.applied_weight == Some(10)).await;
    let aborted = cli(&stack, &["abort", "web"]);
    assert!(aborted.status.success(), "{}", out(&aborted));
    wait_view(&stack, "v4 aborted", |v| v.revision == "v4" && v.phase == "aborted").await;
    assert!(stack.nginx_serves().await.unwrap().starts_with("web 0 "));
    let status = cli(&stack, &["status", "web"]);
    assert!(out(&status).contains("aborted by operator"), "{}", out(&status));
    let late = cli(&stack, &["promote", "web"]);
    assert_eq!(late.status.code(), Some(2));
    assert!(out(&late).contains("cannot promote a rollout that is aborted"), "{}", out(&late));

    // An alert for a workload with no rollout is heard and changes nothing.
    let alert = serde_json::json!({"version": "4", "status": "firing", "alerts": [
        {"status": "firing", "labels": {"alertname": "Unrelated", "deployment": "billing"}, "annotations": {}}]});
    let r = reqwest::Client::new()
        .post(format!("{}/api/v1/alertmanager", stack.api()))
        .bearer_auth(&stack.token)
        .json(&alert)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    wait_until(Duration::from_secs(10), "the alert is counted", || async {
        metrics_now().await.contains("canaryd_alerts_total{result=\"no-rollout\"} 1")
    })
    .await
    .unwrap();
    scraped.push_str(&metrics_now().await);
    let names = dashboard_names();
    assert!(names.len() >= 15, "{names:?}");
    let missing: Vec<&String> = names.iter().filter(|n| !exported(&scraped, n)).collect();
    assert!(missing.is_empty(), "used by the dashboards, not in /metrics: {missing:?}\n{scraped}");
}
