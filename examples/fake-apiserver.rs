//! Runs the fake Kubernetes API server (a test double, see
//! tests/support/fake_apiserver/mod.rs) alone: `cargo run --example fake-apiserver --
//! --listen 127.0.0.1:PORT` prints its URL on the first line of stdout, then serves
//! until killed. Kubeconfigs for it take a bearer token `fake-token-<client name>`.

#[path = "../tests/support/fake_apiserver/mod.rs"]
mod fake_apiserver;

use std::io::Write;
use std::net::SocketAddr;

use clap::Parser;

/// The fake Kubernetes API server, for tests.
#[derive(Parser)]
struct Args {
    /// Address to listen on (port 0 picks a free port).
    #[arg(long, default_value = "127.0.0.1:0")]
    listen: SocketAddr,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let server = fake_apiserver::FakeApiServer::start_on(args.listen).await?;
    let mut stdout = std::io::stdout();
    writeln!(stdout, "{}", server.url())?;
    stdout.flush()?;
    std::future::pending::<()>().await;
    Ok(())
}
