//! The daemon's surfaces against real parts: Slack messages (Block Kit content, retries
//! after a 500 and after a 429 with `Retry-After`, a rollback that moves traffic on time
//! while Slack hangs) through a Slack stand-in on loopback, and Debian's real
//! Alertmanager posting its webhook to canaryd's API: a firing alert a policy lists as a
//! trigger rolls back exactly the rollout of the workload it names.
//! And the command line over the API: a missing or refused token is explained as
//! `--token` / `CANARYD_TOKEN`, not as an HTTP header.

mod support;

use std::collections::BTreeMap;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::http::{HeaderMap, StatusCode};
use axum::response::IntoResponse;
use canaryd::config::{Secret, Settings};
use canaryd::daemon::metrics::LoopMetrics;
use canaryd::daemon::view::RolloutView;
use canaryd::daemon::{Daemon, Options, run_until};
use canaryd::engine::{Input, Notification, Rollout, RolloutId, Transition, step};
use canaryd::notify::DeliveryCounts;
use canaryd::notify::fanout::Fanout;
use canaryd::notify::outbox::{Outbox, OutboxOptions};
use canaryd::notify::slack::SlackNotifier;
use canaryd::notify::webhook::PolicyWebhookNotifier;
use canaryd::platform::{NewRevision, memory::MemoryPlatform};
use canaryd::source::alertmanager::{
    AlertQueryLabels, AlertmanagerMetrics, AlertmanagerSettings, AlertmanagerSource,
};
use canaryd::source::prometheus::PrometheusSource;
use canaryd::source::prometheus::QueryMetrics;
use canaryd::store::memory::MemoryStore;
use support::engine::{at, errors, plan};
use support::prometheus::poll;

/// The errors policy with a Slack target and an alert trigger.
fn spec(min_severity: &str) -> String {
    format!(
        "{}
  - {{name: canary-5xx, alert: WebCanaryErrors}}
notify:
  slack: {{channel: '#deploys', webhookEnv: SLACK_WEBHOOK_URL, minSeverity: {min_severity}}}",
        support::engine::ERRORS_SPEC
    )
}

/// What the stand-in answers, in turn; then 200.
#[derive(Clone, Copy)]
enum Answer {
    Status(u16),
    TooMany { retry_after: u64 },
    Hang,
}

/// A Slack incoming-webhook stand-in on loopback: records every POST body with when it
/// came, and answers from a script.
struct SlackStandIn {
    url: String,
    got: Arc<Mutex<Vec<(tokio::time::Instant, serde_json::Value)>>>,
}

async fn slack_stand_in(script: Vec<Answer>) -> SlackStandIn {
    let got: Arc<Mutex<Vec<(tokio::time::Instant, serde_json::Value)>>> = Arc::default();
    let script = Arc::new(Mutex::new(std::collections::VecDeque::from(script)));
    let g = got.clone();
    let app = axum::Router::new().route(
        "/services/T000/B000/XXXX",
        axum::routing::post(move |body: axum::Json<serde_json::Value>| {
            let (got, script) = (g.clone(), script.clone());
            async move {
                got.lock().unwrap().push((tokio::time::Instant::now(), body.0));
                let next = script.lock().unwrap().pop_front();
                match next {
                    None => (StatusCode::OK, "ok").into_response(),
                    Some(Answer::Status(code)) => {
                        (StatusCode::from_u16(code).unwrap(), "internal_error").into_response()
                    }
                    Some(Answer::TooMany { retry_after }) => {
                        let mut h = HeaderMap::new();
                        h.insert("retry-after", retry_after.to_string().parse().unwrap());
                        (StatusCode::TOO_MANY_REQUESTS, h, "rate_limited").into_response()
                    }
                    Some(Answer::Hang) => {
                        std::future::pending::<()>().await;
                        unreachable!()
                    }
                }
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/services/T000/B000/XXXX", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    SlackStandIn { url, got }
}

fn slack_to(url: &str) -> SlackNotifier {
    let url = url.to_string();
    SlackNotifier::new(
        Duration::from_secs(2),
        Box::new(move |source| match source {
            canaryd::engine::plan::SecretSource::Env { name } if name == "SLACK_WEBHOOK_URL" => {
                Ok(url.clone())
            }
            other => Err(format!("unexpected secret source {other:?}")),
        }),
    )
    .unwrap()
}

/// Policy webhooks whose URLs are in the environment variables of `urls`.
fn policy_webhooks_to(urls: &[(&str, &str)]) -> PolicyWebhookNotifier {
    let urls: BTreeMap<String, String> = urls.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
    PolicyWebhookNotifier::new(
        Duration::from_secs(2),
        Box::new(move |source| match source {
            canaryd::engine::plan::SecretSource::Env { name } if urls.contains_key(name) => {
                Ok(urls[name].clone())
            }
            other => Err(format!("unexpected secret source {other:?}")),
        }),
    )
    .unwrap()
}

fn no_policy_webhooks() -> PolicyWebhookNotifier {
    policy_webhooks_to(&[])
}

/// The notifications a rollout of `spec` makes: started, then rolled back by the
/// `hard-limit` trigger on a canary at 30% errors against 1% on the baseline.
fn rolled_back(spec: &str) -> (Notification, Notification) {
    let id = RolloutId { namespace: "shop".into(), name: "web".into() };
    let r = Rollout::new(id, "v2", plan(spec));
    let started = step(&r, &Input::Start, at(0)).unwrap();
    let bad =
        step(&started.rollout, &Input::Interval(errors((400.0, 120.0), (4000.0, 40.0))), at(30)).unwrap();
    // Each input made one decision: its notification is what the daemon sends.
    let note = |t: &Transition| {
        let decision = t.rollout.decisions.last().expect("a decision");
        Notification::of(&t.rollout, decision).expect("a notification")
    };
    (note(&started), note(&bad))
}

fn text_of(message: &serde_json::Value) -> String {
    let mut out = String::new();
    fn walk(v: &serde_json::Value, out: &mut String) {
        match v {
            serde_json::Value::String(s) => {
                out.push_str(s);
                out.push('\n');
            }
            serde_json::Value::Array(a) => a.iter().for_each(|x| walk(x, out)),
            serde_json::Value::Object(o) => o.values().for_each(|x| walk(x, out)),
            _ => {}
        }
    }
    walk(&message["blocks"], &mut out);
    out
}

fn counted(deliveries: &DeliveryCounts, result: &'static str) -> u64 {
    let labels = canaryd::notify::DeliveryLabels { channel: "slack", result };
    deliveries.get(&labels).map_or(0, |c| c.get())
}

#[tokio::test]
async fn a_rollback_message_names_the_trigger_values_and_workload_and_is_retried_after_500_and_429() {
    let slack = slack_stand_in(vec![Answer::Status(500), Answer::TooMany { retry_after: 2 }]).await;
    let metrics = DeliveryCounts::default();
    let fanout = Fanout::new(None, no_policy_webhooks(), slack_to(&slack.url), metrics.clone());
    let options = OutboxOptions { backoff: Duration::from_millis(100), attempts: 5, ..Default::default() };
    let outbox = Outbox::start(Arc::new(fanout), options);
    let (_, rollback) = rolled_back(&spec("info"));
    assert!(outbox.offer(rollback.clone()));
    assert!(outbox.drain(Duration::from_secs(30)).await, "delivered in the end");

    let got = slack.got.lock().unwrap().clone();
    assert_eq!(got.len(), 3, "a 500, a 429, then delivered");
    assert!(got.windows(2).all(|w| w[0].1 == w[1].1), "each attempt posts the same message");
    // The 500 is retried after the backoff; the 429 after its Retry-After (2 s), which is
    // longer than the doubled backoff (200 ms) would have been.
    assert!(got[1].0 - got[0].0 >= Duration::from_millis(100));
    assert!(got[2].0 - got[1].0 >= Duration::from_secs(2), "Retry-After honoured: {:?}", got[2].0 - got[1].0);
    assert_eq!(
        (counted(&metrics, "failed"), counted(&metrics, "throttled"), counted(&metrics, "delivered")),
        (1, 1, 1)
    );

    let message = &got[2].1;
    let text = text_of(message);
    assert_eq!(message["channel"], "#deploys");
    assert_eq!(message["blocks"][0]["type"], "header");
    assert!(text.contains("Canary rolled back: shop/web v2"), "{text}");
    // The trigger that fired, with the canary's value and the limit.
    assert!(text.contains("*Trigger fired:* `hard-limit`: error-ratio canary value 0.3000 > 0.2"), "{text}");
    // Each metric's canary and baseline values: 120/400 and 40/4000.
    assert!(text.contains("canary 0.3000 · baseline 0.0100"), "{text}");
    assert!(text.contains("*Workload*\nshop/web") && text.contains("*Revision*\nv2"), "{text}");
    assert!(text.contains("step 1 at 0%"), "{text}");
    assert!(message["text"].as_str().unwrap().contains("shop/web revision v2: rolled back"));
}

#[tokio::test]
async fn a_policy_severity_filter_keeps_progress_out_of_slack_but_not_rollbacks() {
    let slack = slack_stand_in(vec![]).await;
    let metrics = DeliveryCounts::default();
    let fanout = Fanout::new(None, no_policy_webhooks(), slack_to(&slack.url), metrics.clone());
    let outbox = Outbox::start(Arc::new(fanout), OutboxOptions::default());
    let (started, rollback) = rolled_back(&spec("critical"));
    assert!(outbox.offer(started) && outbox.offer(rollback));
    assert!(outbox.drain(Duration::from_secs(10)).await);
    let got = slack.got.lock().unwrap().clone();
    assert_eq!(got.len(), 1, "only the rollback is posted");
    assert!(text_of(&got[0].1).contains("Canary rolled back"));
    assert_eq!((counted(&metrics, "filtered"), counted(&metrics, "delivered")), (1, 1));
}

/// What a webhook stand-in received: when, the `Idempotency-Key`, the body.
type Received = Arc<Mutex<Vec<(tokio::time::Instant, String, serde_json::Value)>>>;

/// A JSON webhook stand-in on loopback that answers 200 at once: records each POST's
/// `Idempotency-Key` and body with when it came.
struct WebhookStandIn {
    url: String,
    got: Received,
}

async fn webhook_stand_in() -> WebhookStandIn {
    let got: Received = Arc::default();
    let g = got.clone();
    let app = axum::Router::new().route(
        "/hook",
        axum::routing::post(move |headers: HeaderMap, body: axum::Json<serde_json::Value>| {
            let got = g.clone();
            async move {
                let key = headers.get("idempotency-key").map(|v| v.to_str().unwrap().to_string());
                got.lock().unwrap().push((tokio::time::Instant::now(), key.unwrap_or_default(), body.0));
                StatusCode::OK
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/hook", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    WebhookStandIn { url, got }
}

/// `n` as decision `decision` of the same rollout (a distinct key).
fn as_decision(n: &Notification, decision: u64) -> Notification {
    let mut n = n.clone();
    n.key.decision = decision;
    n
}

#[tokio::test]
async fn slack_throttling_holds_up_only_slack_not_the_webhook() {
    const RETRY_AFTER: u64 = 3;
    let slack = slack_stand_in(vec![Answer::TooMany { retry_after: RETRY_AFTER }]).await;
    let webhook = webhook_stand_in().await;
    let metrics = DeliveryCounts::default();
    let fanout = Fanout::new(
        Some(canaryd::notify::webhook::WebhookNotifier::new(&webhook.url, Duration::from_secs(2)).unwrap()),
        no_policy_webhooks(),
        slack_to(&slack.url),
        metrics.clone(),
    );
    let options = OutboxOptions { backoff: Duration::from_millis(100), attempts: 5, ..Default::default() };
    let mut outbox = Outbox::start(Arc::new(fanout), options);
    let (_, rollback) = rolled_back(&spec("info"));
    let first = as_decision(&rollback, 1);
    assert!(outbox.offer(first.clone()));
    poll(Duration::from_secs(10), || async { !slack.got.lock().unwrap().is_empty() }).await.unwrap();

    // Slack has answered 429 with Retry-After: the next two go to the webhook at once.
    let later = [as_decision(&rollback, 2), as_decision(&rollback, 3)];
    for n in &later {
        assert!(outbox.offer(n.clone()));
    }
    let keys: Vec<String> = later.iter().map(|n| n.key.to_string()).collect();
    let webhook_has = |keys: &[String]| {
        let got = webhook.got.lock().unwrap();
        keys.iter().all(|k| got.iter().any(|(_, g, _)| g == k))
    };
    poll(Duration::from_secs(30), || async { webhook_has(&keys) }).await.unwrap();
    assert!(outbox.drain(Duration::from_secs(30)).await, "delivered in the end");

    let slack_got = slack.got.lock().unwrap().clone();
    assert_eq!(slack_got.len(), 4, "the 429, its retry, then the two later ones");
    let retried_at = slack_got[1].0;
    assert!(retried_at - slack_got[0].0 >= Duration::from_secs(RETRY_AFTER), "Retry-After honoured");
    let webhook_got = webhook.got.lock().unwrap().clone();
    for key in &keys {
        let (came, _, _) = webhook_got.iter().find(|(_, k, _)| k == key).unwrap();
        assert!(*came < retried_at, "{key} reached the webhook before Slack's retry, not after it");
    }
    assert_eq!(webhook_got.len(), 3, "each notification once: {webhook_got:?}");
    // Each counts as delivered once Slack has it too.
    let mut outcomes = outbox.outcomes();
    outcomes.sort_by_key(|(k, _)| k.decision);
    let expected: Vec<_> = [&first, &later[0], &later[1]].iter().map(|n| (n.key.clone(), true)).collect();
    assert_eq!(outcomes, expected);
    assert_eq!((counted(&metrics, "throttled"), counted(&metrics, "delivered")), (1, 3));
}

#[tokio::test]
async fn a_notification_offered_again_after_slack_gave_up_goes_only_to_slack() {
    let slack = slack_stand_in(vec![Answer::Status(500), Answer::Status(500)]).await;
    let webhook = webhook_stand_in().await;
    let metrics = DeliveryCounts::default();
    let fanout = Fanout::new(
        Some(canaryd::notify::webhook::WebhookNotifier::new(&webhook.url, Duration::from_secs(2)).unwrap()),
        no_policy_webhooks(),
        slack_to(&slack.url),
        metrics.clone(),
    );
    let options = OutboxOptions { backoff: Duration::from_millis(50), attempts: 2, ..Default::default() };
    let mut outbox = Outbox::start(Arc::new(fanout), options);
    let (_, rollback) = rolled_back(&spec("info"));
    assert!(outbox.offer(rollback.clone()));
    assert!(outbox.drain(Duration::from_secs(10)).await);
    assert_eq!(outbox.outcomes(), vec![(rollback.key.clone(), false)], "Slack gave up: not delivered");
    assert_eq!((webhook.got.lock().unwrap().len(), slack.got.lock().unwrap().len()), (1, 2));
    // Offered again (the daemon does so at a later tick): Slack only.
    assert!(outbox.offer(rollback.clone()));
    assert!(outbox.drain(Duration::from_secs(10)).await);
    assert_eq!(outbox.outcomes(), vec![(rollback.key.clone(), true)]);
    assert_eq!((webhook.got.lock().unwrap().len(), slack.got.lock().unwrap().len()), (1, 3));
    assert_eq!(outbox.stats.depth.load(std::sync::atomic::Ordering::Relaxed), 0);
}

type Parts =
    (Daemon<PrometheusSource, MemoryPlatform, MemoryStore>, Arc<MemoryPlatform>, LoopMetrics, DeliveryCounts);

/// A daemon over a memory platform and store, with Prometheus unreachable (nothing is
/// ever judged a pass: rollouts hold at their first step) and Slack at `slack_url`.
async fn daemon(slack_url: &str, spec: &str) -> Parts {
    let (platform, store) = (Arc::new(MemoryPlatform::new()), Arc::new(MemoryStore::default()));
    daemon_with(spec, no_policy_webhooks(), slack_url, platform, store).await
}

/// The same, with policy webhooks, on `platform` and `store`.
async fn daemon_with(
    spec: &str,
    policy_webhooks: PolicyWebhookNotifier,
    slack_url: &str,
    platform: Arc<MemoryPlatform>,
    store: Arc<MemoryStore>,
) -> Parts {
    let env = [("CANARYD__PROMETHEUS__URL".to_string(), "http://127.0.0.1:9".to_string())];
    let settings = Settings::load(None, env.into_iter().collect()).unwrap();
    let metrics = LoopMetrics::default();
    let source =
        PrometheusSource::new(&settings.prometheus, QueryMetrics::default(), Duration::from_millis(20))
            .unwrap();
    let deliveries = DeliveryCounts::default();
    let fanout = Fanout::new(None, policy_webhooks, slack_to(slack_url), deliveries.clone());
    let options = Options {
        tick: Duration::from_millis(200),
        platform_timeout: Duration::from_secs(2),
        outbox: OutboxOptions { backoff: Duration::from_millis(50), attempts: 2, ..Default::default() },
        ..Default::default()
    };
    let d = Daemon::start(
        Arc::new(source),
        platform.clone(),
        store,
        Arc::new(fanout),
        None,
        vec![support::engine::policy("shop", "web", spec)],
        options,
        metrics.clone(),
    )
    .await;
    (d, platform, metrics, deliveries)
}

fn deploy(platform: &MemoryPlatform, name: &str) -> RolloutId {
    let id = RolloutId { namespace: "shop".into(), name: name.into() };
    platform.push(NewRevision {
        id: id.clone(),
        revision: format!("{name}-v2"),
        labels: [("app".to_string(), "web".to_string())].into(),
        arms: canaryd::platform::kubernetes::arms(&id),
    });
    id
}

#[tokio::test]
async fn a_rollback_moves_traffic_at_once_while_slack_hangs() {
    let slack = slack_stand_in(vec![Answer::Hang; 16]).await;
    let (mut daemon, platform, _, deliveries) = daemon(&slack.url, &spec("info")).await;
    let web = deploy(&platform, "web");
    let now = jiff::Timestamp::now();
    daemon.tick(now).await;
    poll(Duration::from_secs(10), || async { platform.world(&web).weight == 10 }).await.unwrap();
    // Slack now holds the "started" message and does not answer.
    poll(Duration::from_secs(10), || async { !slack.got.lock().unwrap().is_empty() }).await.unwrap();
    daemon
        .alerts()
        .send(canaryd::daemon::FiringAlert {
            alert: "WebCanaryErrors".into(),
            namespace: Some("shop".into()),
            workloads: vec!["web".into()],
            detail: "5xx above 5%".into(),
        })
        .unwrap();
    daemon.tick(now + Duration::from_secs(1)).await;
    assert_eq!(daemon.state(&web).unwrap().rollout.phase.name(), "rolling-back");
    // The traffic change does not wait for Slack: it lands while the first message hangs.
    poll(Duration::from_secs(10), || async { platform.world(&web).weight == 0 }).await.unwrap();
    assert_eq!(slack.got.lock().unwrap().len(), 1, "Slack still holds the first message");
    assert_eq!(counted(&deliveries, "delivered"), 0);
}

fn web_canary_errors() -> canaryd::daemon::FiringAlert {
    canaryd::daemon::FiringAlert {
        alert: "WebCanaryErrors".into(),
        namespace: Some("shop".into()),
        workloads: vec!["web".into()],
        detail: "5xx above 5%".into(),
    }
}

#[tokio::test]
async fn a_policy_webhook_gets_its_rollouts_decisions_as_json_with_their_keys() {
    let slack = slack_stand_in(vec![]).await;
    let hook = webhook_stand_in().await;
    let spec = format!(
        "{}\n  - {{name: canary-5xx, alert: WebCanaryErrors}}\nnotify:\n  webhook: {{urlEnv: SHOP_DEPLOYS_WEBHOOK}}",
        support::engine::ERRORS_SPEC
    );
    let webhooks = policy_webhooks_to(&[("SHOP_DEPLOYS_WEBHOOK", &hook.url)]);
    let (mut daemon, platform, _, deliveries) = daemon_with(
        &spec,
        webhooks,
        &slack.url,
        Arc::new(MemoryPlatform::new()),
        Arc::new(MemoryStore::default()),
    )
    .await;
    let web = deploy(&platform, "web");
    let now = jiff::Timestamp::now();
    daemon.tick(now).await;
    poll(Duration::from_secs(10), || async { hook.got.lock().unwrap().len() == 1 }).await.unwrap();
    daemon.alerts().send(web_canary_errors()).unwrap();
    daemon.tick(now + Duration::from_secs(1)).await;
    assert_eq!(daemon.state(&web).unwrap().rollout.phase.name(), "rolling-back");
    poll(Duration::from_secs(10), || async { hook.got.lock().unwrap().len() == 2 }).await.unwrap();

    let got = hook.got.lock().unwrap().clone();
    let keys: Vec<&str> = got.iter().map(|(_, k, _)| k.as_str()).collect();
    assert_eq!(keys, ["shop/web@web-v2#0", "shop/web@web-v2#1"]);
    let events: Vec<&serde_json::Value> = got.iter().map(|(_, _, body)| &body["event"]).collect();
    assert_eq!(events, ["started", "rolled-back"]);
    let rollback = &got[1].2;
    assert_eq!(
        rollback["key"],
        serde_json::json!({"rollout": "shop/web", "revision": "web-v2", "decision": 1})
    );
    assert_eq!(rollback["triggers"][0]["trigger"], "canary-5xx");
    assert!(rollback.get("webhook").is_none() && rollback.get("slack").is_none(), "no target in the body");
    assert!(slack.got.lock().unwrap().is_empty(), "the policy has no Slack");
    let webhook = canaryd::notify::DeliveryLabels { channel: "webhook", result: "delivered" };
    assert_eq!(deliveries.get(&webhook).map(|c| c.get()), Some(2));
    // The deliveries are reported back: every decision is told (the rollback's end has
    // nothing to tell).
    assert!(daemon.settle(Duration::from_secs(10)).await);
    daemon.tick(now + Duration::from_secs(2)).await;
    let state = daemon.state(&web).unwrap();
    let made: Vec<&str> = state.rollout.decisions.iter().map(|d| d.action.name()).collect();
    assert_eq!(made, ["started", "rolled-back", "rollback-finished"]);
    assert_eq!(state.notified, 3);
}

/// Debian's Alertmanager on a loopback port, with a webhook receiver pointing at `url`.
struct Alertmanager {
    child: Child,
    url: String,
    _dir: tempfile::TempDir,
}

impl Drop for Alertmanager {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn free_port() -> u16 {
    canaryd::demo::free_port().unwrap()
}

async fn alertmanager(webhook: &str, token: &str) -> Alertmanager {
    let dir = tempfile::tempdir().unwrap();
    let config = format!(
        "route:
  receiver: canaryd
  group_by: [alertname, namespace, deployment]
  group_wait: 0s
  group_interval: 1s
  repeat_interval: 1h
receivers:
  - name: canaryd
    webhook_configs:
      - url: {webhook}
        send_resolved: true
        http_config:
          authorization: {{type: Bearer, credentials: {token}}}
"
    );
    std::fs::write(dir.path().join("alertmanager.yml"), config).unwrap();
    let port = free_port();
    let child = Command::new("prometheus-alertmanager")
        .arg(format!("--config.file={}", dir.path().join("alertmanager.yml").display()))
        .arg(format!("--storage.path={}", dir.path().join("data").display()))
        .arg(format!("--web.listen-address=127.0.0.1:{port}"))
        .arg("--cluster.listen-address=")
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(dir.path().join("alertmanager.log")).unwrap())
        .spawn()
        .expect("prometheus-alertmanager runs (scripts/install-deps installs it)");
    let url = format!("http://127.0.0.1:{port}");
    let ready = format!("{url}/-/ready");
    poll(Duration::from_secs(30), || async {
        reqwest::get(&ready).await.is_ok_and(|r| r.status().is_success())
    })
    .await
    .expect("Alertmanager is ready");
    Alertmanager { child, url, _dir: dir }
}

impl Alertmanager {
    /// Posts one alert to Alertmanager's API; `resolved` sets its end to now.
    async fn post(&self, name: &str, deployment: &str, resolved: bool) {
        let mut alert = serde_json::json!({
            "labels": {"alertname": name, "namespace": "shop", "deployment": deployment, "severity": "page"},
            "annotations": {"summary": format!("{name} on {deployment}")},
            "startsAt": jiff::Timestamp::now().checked_sub(jiff::SignedDuration::from_secs(60)).unwrap().to_string(),
        });
        if resolved {
            alert["endsAt"] = jiff::Timestamp::now().to_string().into();
        }
        let r = reqwest::Client::new()
            .post(format!("{}/api/v2/alerts", self.url))
            .json(&[alert])
            .send()
            .await
            .unwrap();
        assert!(r.status().is_success(), "Alertmanager took the alert: {}", r.status());
    }
}

fn alerts_counted(metrics: &LoopMetrics, result: &'static str) -> u64 {
    metrics.alerts.get(&canaryd::daemon::metrics::AlertLabels { result }).map_or(0, |c| c.get())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_real_alertmanager_rolls_back_exactly_the_rollout_its_firing_alert_names() {
    const TOKEN: &str = "alertmanager-token-0123456789";
    let slack = slack_stand_in(vec![]).await;
    let (mut daemon, platform, metrics, _) = daemon(&slack.url, &spec("critical")).await;
    let (web, api) = (deploy(&platform, "web"), deploy(&platform, "api"));
    // canaryd's HTTP surface on loopback, with the loop running on the wall clock.
    let state = canaryd::server::AppState {
        api: Some(canaryd::server::api::Api {
            platform: None,
            views: daemon.views(),
            policies: daemon.policies(),
            commands: daemon.commands(),
            alerts: daemon.alerts(),
            wake: daemon.waker(),
            store: None,
            records_dir: None,
            metrics: canaryd::server::ApiMetrics { alerts: metrics.alerts.clone(), ..Default::default() },
            elsewhere: None,
        }),
        access: canaryd::server::api::Access {
            tokens: Arc::new(BTreeMap::from([("alertmanager".to_string(), Secret::new(TOKEN))])),
            read_requires_token: false,
        },
        ..Default::default()
    };
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, canaryd::server::app(state)).await.unwrap() });
    let mut views = daemon.views();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let ready = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let looping = tokio::spawn(async move {
        run_until(
            &mut daemon,
            Duration::from_millis(200),
            jiff::Timestamp::now,
            &ready,
            async {
                let _ = stopped.await;
            },
            Duration::from_secs(2),
        )
        .await;
    });
    let phase_of = |views: &[RolloutView], id: &RolloutId| {
        views.iter().find(|v| v.namespace == id.namespace && v.name == id.name).map(|v| v.phase.clone())
    };
    let both_progressing = |v: &[RolloutView]| {
        phase_of(v, &web).as_deref() == Some("progressing")
            && phase_of(v, &api).as_deref() == Some("progressing")
    };
    tokio::time::timeout(Duration::from_secs(20), views.wait_for(|v| both_progressing(v)))
        .await
        .unwrap()
        .unwrap();

    let am = alertmanager(&format!("{base}/api/v1/alertmanager"), TOKEN).await;
    // A trigger's alert for a workload without a rollout, and an alert no policy lists
    // for `api`: canaryd hears both and changes nothing.
    am.post("WebCanaryErrors", "checkout", false).await;
    am.post("DiskFilling", "api", false).await;
    poll(Duration::from_secs(30), || async {
        alerts_counted(&metrics, "no-rollout") >= 1 && alerts_counted(&metrics, "no-trigger") >= 1
    })
    .await
    .expect("Alertmanager delivered both alerts");
    assert!(both_progressing(&views.borrow()), "{:#?}", views.borrow());

    // The trigger's alert for `web`: web rolls back, api does not.
    am.post("WebCanaryErrors", "web", false).await;
    tokio::time::timeout(
        Duration::from_secs(30),
        views.wait_for(|v| phase_of(v, &web).as_deref() == Some("rolled-back")),
    )
    .await
    .expect("web rolled back")
    .unwrap();
    poll(Duration::from_secs(10), || async { platform.world(&web).weight == 0 }).await.unwrap();
    assert_eq!(phase_of(&views.borrow(), &api).as_deref(), Some("progressing"));
    assert_eq!(alerts_counted(&metrics, "rolled-back"), 1);

    // Both alerts resolve: Alertmanager sends them as resolved; nothing changes.
    am.post("DiskFilling", "api", true).await;
    am.post("WebCanaryErrors", "web", true).await;
    poll(Duration::from_secs(30), || async { alerts_counted(&metrics, "resolved") >= 2 })
        .await
        .expect("Alertmanager delivered the resolved alerts");
    assert_eq!(phase_of(&views.borrow(), &api).as_deref(), Some("progressing"));
    assert_eq!(platform.world(&api).weight, 10);
    // The rollback reached Slack with the alert as its trigger.
    poll(Duration::from_secs(10), || async { !slack.got.lock().unwrap().is_empty() }).await.unwrap();
    let text = text_of(&slack.got.lock().unwrap()[0].1);
    assert!(text.contains("`canary-5xx`: alert WebCanaryErrors is firing: WebCanaryErrors on web"), "{text}");
    let _ = stop.send(());
    looping.await.unwrap();
}

/// `canaryd rollout ARGS` against the API at `base`, with nothing from this process's
/// environment (no settings, no token) but `env`.
async fn rollout_cli(base: &str, args: &[&str], env: &[(&str, &str)]) -> (Option<i32>, String) {
    let out = tokio::process::Command::new(env!("CARGO_BIN_EXE_canaryd"))
        .arg("rollout")
        .args(args)
        .args(["--server", base])
        .env_clear()
        .envs(env.iter().copied())
        .current_dir(tempfile::tempdir().unwrap().path())
        .output()
        .await
        .unwrap();
    (out.status.code(), String::from_utf8_lossy(&out.stderr).into_owned())
}

#[tokio::test]
async fn a_refused_token_is_explained_in_the_command_lines_terms() {
    const TOKEN: &str = "operator-token-0123456789";
    let (_views_tx, views) = tokio::sync::watch::channel(Vec::new());
    let (commands, _commands_rx) = tokio::sync::mpsc::unbounded_channel();
    let (alerts, _alerts_rx) = tokio::sync::mpsc::unbounded_channel();
    let state = canaryd::server::AppState {
        api: Some(canaryd::server::api::Api {
            platform: None,
            views,
            policies: tokio::sync::watch::channel(Arc::new(Vec::new())).1,
            commands: commands.into(),
            alerts: alerts.into(),
            wake: Arc::default(),
            store: None,
            records_dir: None,
            metrics: Default::default(),
            elsewhere: None,
        }),
        access: canaryd::server::api::Access {
            tokens: Arc::new(BTreeMap::from([("ops".to_string(), Secret::new(TOKEN))])),
            read_requires_token: false,
        },
        ..Default::default()
    };
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, canaryd::server::app(state)).await.unwrap() });

    // No token: the daemon answers 401; the user is told the flag and the variable.
    let (code, err) = rollout_cli(&base, &["pause", "shop/web"], &[]).await;
    assert_eq!(code, Some(2), "{err}");
    assert!(err.contains("401"), "{err}");
    assert!(err.contains("--token") && err.contains("CANARYD_TOKEN"), "{err}");
    assert!(!err.contains("Authorization"), "an HTTP header is not what a user of the CLI sets: {err}");

    // A token the daemon does not hold: 403, said to be the token's fault.
    let (code, err) = rollout_cli(&base, &["pause", "shop/web"], &[("CANARYD_TOKEN", "not-the-token")]).await;
    assert_eq!(code, Some(2), "{err}");
    assert!(err.contains("403") && err.contains("not one the daemon accepts"), "{err}");

    // The daemon's token gets past both: what is left is that no such rollout runs.
    let (code, err) = rollout_cli(&base, &["pause", "shop/web", "--token", TOKEN], &[]).await;
    assert_eq!(code, Some(2), "{err}");
    assert!(err.contains("404") && !err.contains("token"), "{err}");
}

/// A reader of the Alertmanager at `url`.
fn alertmanager_source(url: &str, metrics: &AlertmanagerMetrics) -> Arc<AlertmanagerSource> {
    let settings = AlertmanagerSettings { url: url.parse().unwrap(), timeout: Duration::from_secs(5) };
    Arc::new(AlertmanagerSource::new(&settings, metrics.clone()).unwrap())
}

fn reads(metrics: &AlertmanagerMetrics, outcome: &'static str) -> u64 {
    metrics.queries.get(&AlertQueryLabels { outcome }).map_or(0, |c| c.get())
}

/// Debian's Alertmanager whose only receiver is a closed port, not canaryd: whatever
/// canaryd learns of its alerts, it learns by asking.
async fn alertmanager_not_posting_to_canaryd() -> Alertmanager {
    alertmanager(&format!("http://127.0.0.1:{}/nowhere", free_port()), "alertmanager-token-0123456789").await
}

impl Alertmanager {
    /// Waits until Alertmanager's API lists `name` for `deployment` as active.
    async fn lists(&self, name: &str, deployment: &str) {
        let url = format!("{}/api/v2/alerts?active=true", self.url);
        poll(Duration::from_secs(10), || async {
            let Ok(r) = reqwest::get(&url).await else { return false };
            let alerts: Vec<serde_json::Value> = r.json().await.unwrap_or_default();
            alerts.iter().any(|a| a["labels"]["alertname"] == name && a["labels"]["deployment"] == deployment)
        })
        .await
        .expect("Alertmanager lists the alert");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_alert_already_firing_when_a_rollout_starts_rolls_it_back_from_the_first_interval() {
    let am = alertmanager_not_posting_to_canaryd().await;
    am.post("WebCanaryErrors", "web", false).await;
    am.lists("WebCanaryErrors", "web").await;
    let slack = slack_stand_in(vec![]).await;
    let (mut daemon, platform, metrics, _) = daemon(&slack.url, &spec("critical")).await;
    let read_metrics = AlertmanagerMetrics::default();
    daemon.read_alerts_from(alertmanager_source(&am.url, &read_metrics));
    let (web, api, wake) = (deploy(&platform, "web"), deploy(&platform, "api"), daemon.waker());
    let now = jiff::Timestamp::now();
    daemon.tick(now).await;
    let state = daemon.state(&web).unwrap();
    assert_eq!(state.rollout.phase.name(), "progressing");
    assert_eq!(state.rollout.next_evaluation(), Some(now + Duration::from_secs(30)), "the first interval");
    // The read runs beside the loop and wakes it with what it found.
    tokio::time::timeout(Duration::from_secs(10), wake.notified()).await.expect("woken by the read");
    daemon.tick(now + Duration::from_secs(1)).await;
    let state = daemon.state(&web).unwrap();
    assert_eq!(state.rollout.phase.name(), "rolling-back");
    let decision = state.rollout.decisions.last().unwrap();
    assert_eq!(decision.triggers[0].trigger, "canary-5xx");
    assert!(decision.triggers[0].detail.contains("WebCanaryErrors on web"), "{:?}", decision.triggers);
    assert_eq!(daemon.state(&api).unwrap().rollout.phase.name(), "progressing", "the alert names web only");
    // One read for both rollouts started in the same tick.
    assert_eq!((reads(&read_metrics, "ok"), alerts_counted(&metrics, "rolled-back")), (1, 1));
    poll(Duration::from_secs(10), || async { platform.world(&web).weight == 0 }).await.unwrap();
}

#[tokio::test]
async fn a_read_that_alertmanager_does_not_answer_is_given_up_at_its_timeout() {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let hang = axum::Router::new().route("/api/v2/alerts", axum::routing::get(std::future::pending::<()>));
    tokio::spawn(async move { axum::serve(listener, hang).await.unwrap() });
    let slack = slack_stand_in(vec![]).await;
    let (mut daemon, platform, _, _) = daemon(&slack.url, &spec("critical")).await;
    let read_metrics = AlertmanagerMetrics::default();
    let settings = AlertmanagerSettings { url: url.parse().unwrap(), timeout: Duration::from_millis(500) };
    daemon.read_alerts_from(Arc::new(AlertmanagerSource::new(&settings, read_metrics.clone()).unwrap()));
    let web = deploy(&platform, "web");
    let now = jiff::Timestamp::now();
    daemon.tick(now).await;
    poll(Duration::from_secs(10), || async { reads(&read_metrics, "timeout") == 1 }).await.unwrap();
    daemon.tick(now + Duration::from_secs(1)).await;
    assert_eq!(daemon.state(&web).unwrap().rollout.phase.name(), "progressing");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_alert_that_fired_while_the_daemon_was_down_is_read_when_it_resumes() {
    let am = alertmanager_not_posting_to_canaryd().await;
    let slack = slack_stand_in(vec![]).await;
    let (platform, store) = (Arc::new(MemoryPlatform::new()), Arc::new(MemoryStore::default()));
    let critical = spec("critical");
    let start = || daemon_with(&critical, no_policy_webhooks(), &slack.url, platform.clone(), store.clone());
    let read_metrics = AlertmanagerMetrics::default();
    let (mut first, ..) = start().await;
    first.read_alerts_from(alertmanager_source(&am.url, &read_metrics));
    let web = deploy(&platform, "web");
    let now = jiff::Timestamp::now();
    first.tick(now).await;
    // Nothing fires yet: the read at the start finds nothing.
    poll(Duration::from_secs(10), || async { reads(&read_metrics, "ok") == 1 }).await.unwrap();
    poll(Duration::from_secs(10), || async { platform.world(&web).weight == 10 }).await.unwrap();
    first.tick(now + Duration::from_secs(1)).await;
    assert_eq!(first.state(&web).unwrap().rollout.phase.name(), "progressing");
    drop(first);

    am.post("WebCanaryErrors", "web", false).await;
    am.lists("WebCanaryErrors", "web").await;
    let (mut second, _, metrics, _) = start().await;
    second.read_alerts_from(alertmanager_source(&am.url, &read_metrics));
    let wake = second.waker();
    second.tick(now + Duration::from_secs(2)).await;
    assert_eq!(second.state(&web).unwrap().rollout.phase.name(), "progressing", "resumed");
    tokio::time::timeout(Duration::from_secs(10), wake.notified()).await.expect("woken by the read");
    second.tick(now + Duration::from_secs(3)).await;
    assert_eq!(second.state(&web).unwrap().rollout.phase.name(), "rolling-back");
    assert_eq!((reads(&read_metrics, "ok"), alerts_counted(&metrics, "rolled-back")), (2, 1));
}

#[tokio::test]
async fn an_unreachable_alertmanager_is_counted_and_the_rollout_goes_on() {
    let slack = slack_stand_in(vec![]).await;
    let (mut daemon, platform, _, _) = daemon(&slack.url, &spec("critical")).await;
    let read_metrics = AlertmanagerMetrics::default();
    daemon.read_alerts_from(alertmanager_source(&format!("http://127.0.0.1:{}", free_port()), &read_metrics));
    let web = deploy(&platform, "web");
    let now = jiff::Timestamp::now();
    daemon.tick(now).await;
    poll(Duration::from_secs(10), || async { reads(&read_metrics, "unreachable") == 1 }).await.unwrap();
    daemon.tick(now + Duration::from_secs(1)).await;
    assert_eq!(daemon.state(&web).unwrap().rollout.phase.name(), "progressing");
    poll(Duration::from_secs(10), || async { platform.world(&web).weight == 10 }).await.unwrap();
    // An alert from the webhook is still taken.
    daemon.alerts().send(web_canary_errors()).unwrap();
    daemon.tick(now + Duration::from_secs(2)).await;
    assert_eq!(daemon.state(&web).unwrap().rollout.phase.name(), "rolling-back");
    assert_eq!(reads(&read_metrics, "unreachable"), 1, "one read: nothing new started");
}

/// The notifications of a gated, baking rollout: waiting at its 50% gate, and reverted
/// by the error trigger during its bake.
fn waited_and_reverted() -> (Notification, Notification) {
    let spec = spec("info")
        .replace("stepDuration: 1m}", "stepDuration: 1m, gates: [{at: 50, type: approval}]}")
        .replace("  interval: 30s", "  interval: 30s\n  bake: 2m");
    let id = RolloutId { namespace: "shop".into(), name: "web".into() };
    let mut r = step(&Rollout::new(id, "v2", plan(&spec)), &Input::Start, at(0)).unwrap().rollout;
    let good = errors((400.0, 2.0), (4000.0, 20.0));
    let mut t = 0;
    let mut waiting = None;
    while r.phase != canaryd::engine::Phase::Baking {
        t += 31;
        assert!(t < 3600, "reaches the bake: {:?}", r.decisions);
        r = step(&r, &Input::Interval(good.clone()), at(t)).unwrap().rollout;
        if r.phase == canaryd::engine::Phase::Waiting && waiting.is_none() {
            let d = r.decisions.last().unwrap();
            waiting = Some(Notification::of(&r, d).unwrap());
            let approve = Input::Command { command: canaryd::engine::Command::Approve, by: "alice".into() };
            r = step(&r, &approve, at(t + 5)).unwrap().rollout;
        }
    }
    let bad = step(&r, &Input::Interval(errors((400.0, 120.0), (0.0, 0.0))), at(t + 31)).unwrap().rollout;
    let reverted = Notification::of(&bad, bad.decisions.last().unwrap()).unwrap();
    (waiting.expect("it waited at the gate"), reverted)
}

#[tokio::test]
async fn slack_says_a_rollout_waits_for_approval_at_its_gate_and_why_a_bake_reverted() {
    let slack = slack_stand_in(vec![]).await;
    let fanout = Fanout::new(None, no_policy_webhooks(), slack_to(&slack.url), DeliveryCounts::default());
    let outbox = Outbox::start(Arc::new(fanout), OutboxOptions::default());
    let (waiting, reverted) = waited_and_reverted();
    assert!(outbox.offer(waiting) && outbox.offer(reverted));
    assert!(outbox.drain(Duration::from_secs(10)).await);
    let got = slack.got.lock().unwrap().clone();
    assert_eq!(got.len(), 2);
    let waited = text_of(&got[0].1);
    assert!(waited.contains("Canary waiting at a gate at 50%: shop/web v2"), "{waited}");
    assert!(waited.contains("waiting for approval at 50%"), "{waited}");
    let reverted = text_of(&got[1].1);
    assert!(reverted.contains("Canary reverted after promotion: shop/web v2"), "{reverted}");
    // Why: the trigger that fired, with the canary's value and the limit (120/400 > 0.2).
    assert!(
        reverted.contains("*Trigger fired:* `hard-limit`: error-ratio canary value 0.3000 > 0.2"),
        "{reverted}"
    );
    assert!(reverted.contains("the previous revision serves all traffic again"), "{reverted}");
}
