//! The outbox and the JSON webhook: delivery with the key as `Idempotency-Key`, retries
//! with backoff while the receiver fails, a key delivered once is not delivered again,
//! and a full queue refuses at once (counted) instead of holding up the tick.

use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::http::{HeaderMap, StatusCode};
use canaryd::engine::{EventKind, Notification, NotificationKey};
use canaryd::notify::{
    memory::MemoryNotifier,
    outbox::{Outbox, OutboxOptions},
    webhook::WebhookNotifier,
};

fn note(decision: u64) -> Notification {
    Notification {
        key: NotificationKey { rollout: "shop/web".into(), revision: "v2".into(), decision },
        event: EventKind::RolledBack,
        severity: EventKind::RolledBack.severity(),
        policy: "shop/web-default".into(),
        step: 1,
        weight: 0,
        reason: "errors regressed".into(),
        summary: "shop/web revision v2: rolled back".into(),
        evidence: vec![],
        triggers: vec![],
        slack: None,
        webhook: None,
    }
}

/// A webhook receiver on loopback that fails its first `failures` requests with 503.
async fn receiver(failures: usize) -> (String, Arc<Mutex<Vec<(String, serde_json::Value)>>>) {
    let got: Arc<Mutex<Vec<(String, serde_json::Value)>>> = Arc::default();
    let seen = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let (g, s) = (got.clone(), seen.clone());
    let app = axum::Router::new().route(
        "/hook",
        axum::routing::post(move |headers: HeaderMap, body: axum::Json<serde_json::Value>| {
            let (got, seen) = (g.clone(), s.clone());
            async move {
                if seen.fetch_add(1, Ordering::SeqCst) < failures {
                    return StatusCode::SERVICE_UNAVAILABLE;
                }
                let key = headers
                    .get("idempotency-key")
                    .map(|v| v.to_str().unwrap().to_string())
                    .unwrap_or_default();
                got.lock().unwrap().push((key, body.0));
                StatusCode::OK
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/hook", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await });
    (url, got)
}

#[tokio::test]
async fn the_webhook_gets_the_json_and_its_key_after_retries_and_a_repeat_is_dropped() {
    let (url, got) = receiver(2).await;
    let notifier = Arc::new(WebhookNotifier::new(&url, Duration::from_secs(5)).unwrap());
    let options = OutboxOptions { backoff: Duration::from_millis(10), attempts: 5, ..Default::default() };
    let mut outbox = Outbox::start(notifier, options);
    assert!(outbox.offer(note(1)));
    assert!(outbox.drain(Duration::from_secs(30)).await);
    assert!(outbox.offer(note(1)), "a repeat (a replay after a restart) is accepted…");
    assert!(outbox.drain(Duration::from_secs(30)).await);
    let got = got.lock().unwrap().clone();
    assert_eq!(got.len(), 1, "…and not delivered twice: {got:?}");
    assert_eq!(got[0].0, "shop/web@v2#1");
    assert_eq!(got[0].1["key"]["decision"], 1);
    assert_eq!(got[0].1["event"], "rolled-back");
    assert_eq!(outbox.outcomes(), vec![(note(1).key, true), (note(1).key, true)]);
    assert_eq!(outbox.stats.delivered.load(Ordering::Relaxed), 1);
}

#[tokio::test]
async fn a_full_outbox_refuses_at_once_and_counts_the_drop() {
    let notifier = Arc::new(MemoryNotifier::default());
    notifier.set_down(true);
    let options =
        OutboxOptions { capacity: 1, attempts: 2, backoff: Duration::from_millis(10), ..Default::default() };
    let mut outbox = Outbox::start(notifier.clone(), options);
    // The worker takes the first and retries it; the second fills the queue; the third
    // is refused without waiting.
    let offered: Vec<bool> = (0..3).map(|i| outbox.offer(note(i))).collect();
    assert!(offered.iter().any(|ok| !ok), "{offered:?}");
    assert!(outbox.stats.dropped.load(Ordering::Relaxed) >= 1);
    assert!(outbox.drain(Duration::from_secs(30)).await);
    let given_up: Vec<bool> = outbox.outcomes().into_iter().map(|(_, delivered)| delivered).collect();
    assert!(
        !given_up.is_empty() && given_up.iter().all(|d| !d),
        "a down notifier delivers nothing: {given_up:?}"
    );
    assert!(notifier.received().is_empty());
}
