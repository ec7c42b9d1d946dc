//! Serving the HTTP surface with the limits a long-running daemon needs: a client that
//! never finishes its headers is dropped, a request that takes too long is answered
//! 503, connections beyond a limit are refused at once (so `/healthz` keeps answering
//! near the open-file limit), and a shutdown waits for requests in flight only up to a
//! deadline.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::extract::Request;
use axum::http::StatusCode;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use hyper_util::server::graceful::GracefulShutdown;
use hyper_util::service::TowerToHyperService;
use tokio::net::TcpListener;
use tokio::sync::Semaphore;

/// The server's limits.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Limits {
    /// Longest a client may take to send its request headers.
    pub header_read_timeout: Duration,
    /// Longest a request may take to be answered.
    pub request_timeout: Duration,
    /// Most connections open at once.
    pub max_connections: usize,
    /// Longest a shutdown waits for requests in flight.
    pub shutdown_deadline: Duration,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            header_read_timeout: Duration::from_secs(10),
            request_timeout: Duration::from_secs(30),
            max_connections: 512,
            shutdown_deadline: Duration::from_secs(10),
        }
    }
}

/// Serves `app` on `listener` until `shutdown` completes, then stops accepting and waits
/// for open requests up to the deadline.
pub async fn serve(listener: TcpListener, app: Router, limits: Limits, shutdown: impl Future<Output = ()>) {
    let timeout = limits.request_timeout;
    let app = app.layer(axum::middleware::from_fn(move |request: Request, next: Next| async move {
        match tokio::time::timeout(timeout, next.run(request)).await {
            Ok(response) => response,
            Err(_) => timed_out(),
        }
    }));
    let permits = Arc::new(Semaphore::new(limits.max_connections));
    let graceful = GracefulShutdown::new();
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder.http1().timer(TokioTimer::new()).header_read_timeout(limits.header_read_timeout);
    tokio::pin!(shutdown);
    loop {
        tokio::select! {
            accepted = listener.accept() => {
                let Ok((stream, _)) = accepted else { continue };
                // Over the limit: close at once rather than queue.
                let Ok(permit) = permits.clone().try_acquire_owned() else {
                    tracing::warn!(limit = limits.max_connections, "connection refused: too many open");
                    continue;
                };
                let service = TowerToHyperService::new(app.clone());
                let connection = builder.serve_connection_with_upgrades(TokioIo::new(stream), service).into_owned();
                let connection = graceful.watch(connection);
                tokio::spawn(async move {
                    let _ = connection.await;
                    drop(permit);
                });
            }
            () = &mut shutdown => break,
        }
    }
    drop(listener);
    tokio::select! {
        () = graceful.shutdown() => {}
        () = tokio::time::sleep(limits.shutdown_deadline) => {
            tracing::warn!(deadline = ?limits.shutdown_deadline, "requests still open at the shutdown deadline; closing");
        }
    }
}

fn timed_out() -> Response {
    (StatusCode::SERVICE_UNAVAILABLE, "request timed out\n").into_response()
}

#[cfg(test)]
#[path = "listen_tests.rs"]
mod tests;
