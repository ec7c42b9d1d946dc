//! The `canaryd` command line. Thin: every subcommand calls into the library.
//!
//! Exit codes: 0 ok (or promoted), 1 a verdict or failure (rolled back, daemon error),
//! 2 usage or invalid input.

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::atomic::Ordering;

use anyhow::Context;
use clap::{Parser, Subcommand};

use canaryd::config::Settings;
use canaryd::policy;

/// Exit code for a verdict against the input (e.g. rolled back) or a runtime failure.
const EXIT_FAILURE: u8 = 1;
/// Exit code for bad usage or invalid input.
const EXIT_INVALID: u8 = 2;

#[derive(Parser)]
#[command(name = "canaryd", version, about = "Canary releases on evidence", long_about = None)]
#[command(after_help = "Exit codes: 0 ok, 1 verdict/failure, 2 usage or invalid input.")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the daemon.
    Run {
        /// Settings file (TOML). `CANARYD__SECTION__KEY` variables override it.
        #[arg(long, env = "CANARYD_CONFIG")]
        config: Option<PathBuf>,
    },
    /// Validate policy files; prints every problem and exits 2 if there is any.
    Check {
        /// Policy files or directories (YAML).
        #[arg(required = true)]
        paths: Vec<PathBuf>,
    },
    /// Print the CustomResourceDefinitions (YAML) generated from the policy types.
    Crd,
    /// List the built-in metric templates.
    Templates,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Command::Check { paths } => check(&paths),
        Command::Crd => match canaryd::crd::crds_yaml() {
            Ok(yaml) => {
                print!("{yaml}");
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("error: cannot render the CRDs: {e}");
                ExitCode::from(EXIT_FAILURE)
            }
        },
        Command::Templates => {
            for t in canaryd::source::templates::TEMPLATES {
                println!("{:<30} {:<10?} {}", t.name, t.kind(), t.description);
            }
            ExitCode::SUCCESS
        }
        Command::Run { config } => {
            let settings = match Settings::load_from_process(config.as_deref()) {
                Ok(s) => s,
                Err(e) => {
                    eprintln!("error: {e}");
                    return ExitCode::from(EXIT_INVALID);
                }
            };
            match run(settings) {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    eprintln!("error: {e:#}");
                    ExitCode::from(EXIT_FAILURE)
                }
            }
        }
    }
}

fn check(paths: &[PathBuf]) -> ExitCode {
    let loaded = policy::load_paths(paths);
    for p in &loaded.policies {
        println!("ok: {} ({})", p.reference, p.origin);
    }
    for problem in &loaded.problems {
        eprintln!("error: {problem}");
    }
    if loaded.problems.is_empty() {
        println!("{} policies valid", loaded.policies.len());
        ExitCode::SUCCESS
    } else {
        eprintln!("{} problems; {} policies valid", loaded.problems.len(), loaded.policies.len());
        ExitCode::from(EXIT_INVALID)
    }
}

#[tokio::main]
async fn run(settings: Settings) -> anyhow::Result<()> {
    canaryd::telemetry::init_logging(&settings.log);
    let loaded = policy::load_paths(&settings.policy_paths);
    for problem in &loaded.problems {
        tracing::error!(%problem, "policy rejected; the other policies stay in force");
    }
    tracing::info!(policies = loaded.policies.len(), "policies loaded");

    let state = canaryd::server::AppState::default();
    let listener = tokio::net::TcpListener::bind(settings.server.listen)
        .await
        .with_context(|| format!("cannot listen on {}", settings.server.listen))?;
    tracing::info!(listen = %settings.server.listen, "serving /healthz and /readyz");
    state.ready.store(true, Ordering::Relaxed);
    axum::serve(listener, canaryd::server::app(state))
        .with_graceful_shutdown(async {
            let _ = tokio::signal::ctrl_c().await;
            tracing::info!("shutting down");
        })
        .await
        .context("HTTP server failed")
}
