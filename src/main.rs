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
    /// Run a policy over recorded data: exit 0 if it would promote, 1 if it would roll
    /// back (or the data ends first), 2 on invalid input.
    Backtest {
        /// Policy file (YAML).
        #[arg(long)]
        policy: PathBuf,
        /// Which policy of the file, by name (needed when it holds several).
        #[arg(long)]
        name: Option<String>,
        /// Recorded data (JSON; format in README.md).
        #[arg(long)]
        data: PathBuf,
        /// Output format.
        #[arg(long, value_enum, default_value_t = Format::Text)]
        format: Format,
    },
}

/// Output formats.
#[derive(Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum Format {
    /// For people.
    Text,
    /// For machines.
    Json,
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
        Command::Backtest { policy, name, data, format } => backtest(&policy, name.as_deref(), &data, format),
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

/// Reads the one policy a backtest runs, reporting problems as `check` does.
fn policy_plan(file: &std::path::Path, name: Option<&str>) -> Result<canaryd::engine::Plan, String> {
    let loaded = policy::load_paths(&[file.to_path_buf()]);
    if !loaded.problems.is_empty() {
        return Err(loaded.problems.iter().map(ToString::to_string).collect::<Vec<_>>().join("\n"));
    }
    let mut matching = loaded.policies.iter().filter(|p| name.is_none_or(|n| p.reference.name == n));
    match (matching.next(), matching.next()) {
        (Some(p), None) => Ok(p.plan.clone()),
        (None, _) => Err(format!(
            "{}: no policy{} found",
            file.display(),
            name.map(|n| format!(" named {n}")).unwrap_or_default()
        )),
        (Some(_), Some(_)) => {
            Err(format!("{}: holds several policies; choose one with --name", file.display()))
        }
    }
}

fn backtest(
    policy_file: &std::path::Path,
    name: Option<&str>,
    data: &std::path::Path,
    format: Format,
) -> ExitCode {
    let invalid = |message: String| {
        eprintln!("error: {message}");
        ExitCode::from(EXIT_INVALID)
    };
    let plan = match policy_plan(policy_file, name) {
        Ok(plan) => plan,
        Err(e) => return invalid(e),
    };
    let source = data.display().to_string();
    let text = match std::fs::read_to_string(data) {
        Ok(t) => t,
        Err(e) => return invalid(format!("{source}: cannot read: {e}")),
    };
    let recording = match canaryd::backtest::Recording::parse(&source, &text) {
        Ok(r) => r,
        Err(problems) => {
            return invalid(problems.iter().map(ToString::to_string).collect::<Vec<_>>().join("\nerror: "));
        }
    };
    let result = canaryd::backtest::run(&plan, &recording, &source);
    match format {
        Format::Text => print!("{}", canaryd::backtest::render_text(&result, &source)),
        Format::Json => match serde_json::to_string_pretty(&result) {
            Ok(json) => println!("{json}"),
            Err(e) => {
                eprintln!("error: cannot write JSON: {e}");
                return ExitCode::from(EXIT_FAILURE);
            }
        },
    }
    match result.outcome {
        canaryd::backtest::BacktestOutcome::Promoted => ExitCode::SUCCESS,
        _ => ExitCode::from(EXIT_FAILURE),
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
