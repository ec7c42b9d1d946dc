//! `canaryd-demo-app`: the service the local demo and the end-to-end tests roll out. It
//! serves HTTP on `/`, answers `/healthz`, and exports `http_requests_total{code}` and the
//! `http_request_duration_seconds` histogram on `/metrics`, the series canaryd's
//! `http-*` templates read. Flags set its version, its error rate and added latency.
//!
//! With `--webhook-receiver` it is instead the demo's notification receiver: it prints
//! the body of every POST on one line of stdout and answers 200.
//!
//! Errors are spread evenly, not drawn at random: with `--error-rate 0.05` exactly one
//! request in twenty fails, so what a test expects is known in advance. `PUT /error-rate`
//! with a share as its body changes the rate from then on, without a restart: a version
//! that starts failing while it runs, as a bad release does some minutes after its start.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use axum::Router;
use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::get;
use clap::Parser;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;

#[derive(Parser)]
#[command(name = "canaryd-demo-app", about = "A demo HTTP service for canary rollouts")]
struct Args {
    /// Address to serve on.
    #[arg(long, default_value = "127.0.0.1:8080")]
    listen: SocketAddr,
    /// Version it reports (in `demo_app_info` and every response).
    #[arg(long, default_value = "v1")]
    version: String,
    /// Share of requests answered 500, from 0 to 1.
    #[arg(long, default_value_t = 0.0, value_parser = share)]
    error_rate: f64,
    /// Latency added to every request, in milliseconds.
    #[arg(long, default_value_t = 0)]
    latency_ms: u64,
    /// Be a webhook receiver instead: print each POST's body on one line, answer 200.
    #[arg(long)]
    webhook_receiver: bool,
}

/// Prints a received notification on one line.
async fn receive(body: String) -> StatusCode {
    use std::io::Write as _;
    let line = body.split_whitespace().collect::<Vec<_>>().join(" ");
    let mut out = std::io::stdout().lock();
    if writeln!(out, "{line}").and_then(|()| out.flush()).is_err() {
        return StatusCode::INTERNAL_SERVER_ERROR;
    }
    StatusCode::OK
}

fn share(text: &str) -> Result<f64, String> {
    match text.parse::<f64>() {
        Ok(v) if (0.0..=1.0).contains(&v) => Ok(v),
        _ => Err(format!("`{text}` is not a share between 0 and 1")),
    }
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct Code {
    code: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct Info {
    version: String,
}

struct App {
    version: String,
    /// The error rate's bits (`f64::to_bits`), changed by `PUT /error-rate`.
    error_rate: AtomicU64,
    latency: Duration,
    served: AtomicU64,
    requests: Family<Code, Counter>,
    duration: Histogram,
    registry: Registry,
}

/// Buckets of the latency histogram, in seconds.
const BUCKETS: [f64; 10] = [0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0];

impl App {
    fn new(args: &Args) -> App {
        let mut registry = Registry::default();
        let requests = Family::<Code, Counter>::default();
        registry.register("http_requests", "Requests served, by status code", requests.clone());
        let duration = Histogram::new(BUCKETS);
        registry.register("http_request_duration_seconds", "Time to serve a request", duration.clone());
        let info = Family::<Info, Gauge>::default();
        info.get_or_create(&Info { version: args.version.clone() }).set(1);
        registry.register("demo_app_info", "The version this instance serves", info);
        App {
            version: args.version.clone(),
            error_rate: AtomicU64::new(args.error_rate.to_bits()),
            latency: Duration::from_millis(args.latency_ms),
            served: AtomicU64::new(0),
            requests,
            duration,
            registry,
        }
    }

    /// Whether the `n`-th request (from 0) fails: the count of failures up to it is
    /// `floor((n + 1) · rate)`, so failures are spread evenly at exactly that rate.
    fn fails(&self, n: u64) -> bool {
        let rate = f64::from_bits(self.error_rate.load(Ordering::Relaxed));
        ((n + 1) as f64 * rate).floor() > (n as f64 * rate).floor()
    }
}

async fn serve(State(app): State<Arc<App>>) -> (StatusCode, String) {
    let started = Instant::now();
    let n = app.served.fetch_add(1, Ordering::Relaxed);
    if !app.latency.is_zero() {
        tokio::time::sleep(app.latency).await;
    }
    let status = if app.fails(n) { StatusCode::INTERNAL_SERVER_ERROR } else { StatusCode::OK };
    app.requests.get_or_create(&Code { code: status.as_u16().to_string() }).inc();
    app.duration.observe(started.elapsed().as_secs_f64());
    (status, format!("{}\n", app.version))
}

/// `PUT /error-rate`: answers from now on fail at the share in the body.
async fn set_error_rate(State(app): State<Arc<App>>, body: String) -> (StatusCode, String) {
    match share(body.trim()) {
        Ok(rate) => {
            app.error_rate.store(rate.to_bits(), Ordering::Relaxed);
            (StatusCode::OK, format!("error rate {rate}\n"))
        }
        Err(e) => (StatusCode::BAD_REQUEST, format!("{e}\n")),
    }
}

async fn metrics(State(app): State<Arc<App>>) -> ([(axum::http::HeaderName, &'static str); 1], String) {
    let mut out = String::new();
    // Writing to a String cannot fail.
    let _ = prometheus_client::encoding::text::encode(&mut out, &app.registry);
    let content_type = "application/openmetrics-text; version=1.0.0; charset=utf-8";
    ([(axum::http::header::CONTENT_TYPE, content_type)], out)
}

#[tokio::main]
async fn main() -> std::process::ExitCode {
    let args = Args::parse();
    let app = Arc::new(App::new(&args));
    let router = if args.webhook_receiver {
        Router::new().fallback(axum::routing::post(receive))
    } else {
        Router::new()
            .route("/", get(serve))
            .route("/healthz", get(|| async { "ok\n" }))
            .route("/error-rate", axum::routing::put(set_error_rate))
            .route("/metrics", get(metrics))
            .with_state(app)
    };
    let listener = match tokio::net::TcpListener::bind(args.listen).await {
        Ok(l) => l,
        Err(e) => {
            eprintln!("error: cannot listen on {}: {e}", args.listen);
            return std::process::ExitCode::from(2);
        }
    };
    let shutdown = async {
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()).ok();
        tokio::select! {
            _ = tokio::signal::ctrl_c() => {}
            _ = async { if let Some(t) = term.as_mut() { t.recv().await; } else { std::future::pending::<()>().await } } => {}
        }
    };
    match axum::serve(listener, router).with_graceful_shutdown(shutdown).await {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            std::process::ExitCode::from(1)
        }
    }
}
