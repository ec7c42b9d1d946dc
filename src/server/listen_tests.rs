use std::time::Duration;

use axum::routing::get;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::oneshot;

use super::*;

/// A router with `/healthz` and a handler that never answers in time.
fn router() -> Router {
    Router::new().route("/healthz", get(|| async { "ok\n" })).route(
        "/slow",
        get(|| async {
            tokio::time::sleep(Duration::from_secs(600)).await;
            "late\n"
        }),
    )
}

/// Starts the server; returns its address, the shutdown trigger and its task.
async fn start(limits: Limits) -> (String, oneshot::Sender<()>, tokio::task::JoinHandle<()>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    let (stop, stopped) = oneshot::channel::<()>();
    let task = tokio::spawn(serve(listener, router(), limits, async {
        let _ = stopped.await;
    }));
    (addr, stop, task)
}

/// Sends a GET and returns the response text.
async fn get_text(addr: &str, path: &str) -> String {
    let mut s = TcpStream::connect(addr).await.unwrap();
    s.write_all(format!("GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").as_bytes())
        .await
        .unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).await.unwrap();
    out
}

/// Opens a connection that sends half a request and stops.
async fn half_request(addr: &str) -> TcpStream {
    let mut s = TcpStream::connect(addr).await.unwrap();
    s.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n").await.unwrap();
    s
}

/// Whether the server closes `s` within `deadline` (reads return end of stream or fail).
async fn closed_within(s: &mut TcpStream, deadline: Duration) -> bool {
    let until = tokio::time::Instant::now() + deadline;
    let mut buf = [0u8; 256];
    loop {
        match tokio::time::timeout_at(until, s.read(&mut buf)).await {
            Ok(Ok(0) | Err(_)) => return true,
            Ok(Ok(_)) => continue,
            Err(_) => return false,
        }
    }
}

#[tokio::test]
async fn a_client_that_never_finishes_its_headers_is_dropped() {
    let limits = Limits { header_read_timeout: Duration::from_millis(200), ..Limits::default() };
    let (addr, _stop, _task) = start(limits).await;
    let mut stalled = half_request(&addr).await;
    assert!(closed_within(&mut stalled, Duration::from_secs(10)).await, "the stalled connection stayed open");
}

#[tokio::test]
async fn connections_over_the_limit_are_refused_and_a_freed_slot_serves_again() {
    let limits =
        Limits { max_connections: 4, header_read_timeout: Duration::from_secs(600), ..Limits::default() };
    let (addr, _stop, _task) = start(limits).await;
    let mut held = Vec::new();
    for _ in 0..4 {
        held.push(half_request(&addr).await);
    }
    // The accept loop takes connections in order; give it the four before the fifth.
    let mut fifth = TcpStream::connect(&addr).await.unwrap();
    assert!(closed_within(&mut fifth, Duration::from_secs(10)).await, "a fifth connection was kept");
    held.pop();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        if get_text(&addr, "/healthz").await.ends_with("ok\n") {
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "/healthz never answered once a slot was free");
        tokio::task::yield_now().await;
    }
}

#[tokio::test]
async fn a_request_over_its_time_is_answered_503() {
    let limits = Limits { request_timeout: Duration::from_millis(100), ..Limits::default() };
    let (addr, _stop, _task) = start(limits).await;
    let response = get_text(&addr, "/slow").await;
    assert!(response.starts_with("HTTP/1.1 503"), "{response}");
    assert!(response.ends_with("request timed out\n"), "{response}");
}

#[tokio::test]
async fn shutdown_does_not_wait_past_its_deadline_for_a_slow_request() {
    let limits = Limits {
        request_timeout: Duration::from_secs(600),
        shutdown_deadline: Duration::from_millis(200),
        ..Limits::default()
    };
    let (addr, stop, task) = start(limits).await;
    let mut slow = TcpStream::connect(&addr).await.unwrap();
    slow.write_all(b"GET /slow HTTP/1.1\r\nHost: x\r\n\r\n").await.unwrap();
    // The request is in flight once /healthz (a later connection) has been answered.
    assert!(get_text(&addr, "/healthz").await.ends_with("ok\n"));
    stop.send(()).unwrap();
    let finished = tokio::time::timeout(Duration::from_secs(10), task).await;
    assert!(finished.is_ok(), "the server waited for the 600 s request");
    assert!(TcpStream::connect(&addr).await.is_err(), "the listener is closed");
}
