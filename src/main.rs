//! The `canaryd` command line. Thin: every subcommand calls into the library.
//!
//! Exit codes: 0 ok (or promoted), 1 a verdict or failure (rolled back, daemon error),
//! 2 usage or invalid input, 3 a backtest whose data ended before a verdict.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

use canaryd::config::Settings;
use canaryd::policy;

mod cli {
    pub mod rollout;
}
use cli::rollout::{RolloutAction, rollout};

/// Exit code for a verdict against the input (e.g. rolled back) or a runtime failure.
const EXIT_FAILURE: u8 = 1;
/// Exit code for bad usage or invalid input.
const EXIT_INVALID: u8 = 2;
/// Exit code of a backtest whose data ends before a verdict.
const EXIT_UNFINISHED: u8 = 3;

#[derive(Parser)]
#[command(name = "canaryd", version, about = "Canary releases on evidence", long_about = None)]
#[command(
    after_help = "Exit codes: 0 ok, 1 verdict/failure, 2 usage or invalid input, 3 backtest data ended first."
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Talk to the running daemon's API: list, status, watch, start, promote, abort,
    /// pause, resume, approve or revert rollouts.
    Rollout {
        /// Settings file (TOML): `server.listen` says where the daemon is.
        #[arg(long, env = "CANARYD_CONFIG", global = true)]
        config: Option<PathBuf>,
        /// The daemon's base URL, overriding the settings (e.g. `http://127.0.0.1:8480`).
        #[arg(long, global = true)]
        server: Option<String>,
        /// Bearer token for the calls that change something (else `server.api_token`).
        #[arg(long, env = "CANARYD_TOKEN", global = true, hide_env_values = true)]
        token: Option<String>,
        #[command(subcommand)]
        action: RolloutAction,
    },
    /// Run the daemon.
    Run {
        /// Settings file (TOML). `CANARYD__SECTION__KEY` variables override it.
        #[arg(long, env = "CANARYD_CONFIG")]
        config: Option<PathBuf>,
    },
    /// Validate policy files; prints every problem and exits 2 if there is any.
    /// Intervals are checked against the scrape interval of the settings (default 30s).
    Check {
        /// Policy files or directories (YAML).
        #[arg(required = true)]
        paths: Vec<PathBuf>,
        /// Settings file (TOML) whose `prometheus.scrape_interval*` apply.
        #[arg(long, env = "CANARYD_CONFIG")]
        config: Option<PathBuf>,
        /// Scrape interval of every template, overriding the settings (e.g. `60s`).
        #[arg(long)]
        scrape_interval: Option<String>,
        /// Refuse policies whose router this platform cannot serve (`local`: nginx;
        /// `kubernetes`: gateway-api, istio and replica). Default: the settings' platform
        /// (`local` when `[[services]]` are declared), else any known router passes.
        #[arg(long, value_enum)]
        platform: Option<PlatformName>,
        /// The primary's replica count to check `replica`-router steps against: a step
        /// whose share of the pods would be further than the policy's tolerance from its
        /// weight is a problem, with the nearest shares.
        #[arg(long, value_parser = clap::value_parser!(u32).range(1..))]
        replicas: Option<u32>,
    },
    /// Print the CustomResourceDefinitions (YAML) generated from the Rust types: the
    /// policies and the CanaryRun that holds a rollout's state.
    Crd,
    /// List the built-in metric templates.
    Templates {
        /// Also print each template's PromQL, as sent for one rollout (shop/web).
        #[arg(long, short)]
        verbose: bool,
    },
    /// Read the deployment records the daemon wrote.
    Records {
        /// Settings file (TOML) whose `daemon.records_dir` holds them.
        #[arg(long, env = "CANARYD_CONFIG", global = true)]
        config: Option<PathBuf>,
        /// The records directory, overriding the settings.
        #[arg(long, global = true)]
        dir: Option<PathBuf>,
        #[command(subcommand)]
        action: RecordsAction,
    },
    /// Run a policy over recorded data (a file, or Prometheus for a past window): exit 0
    /// if it would promote, 1 if it would roll back, 2 on invalid input, 3 if the data
    /// ends before a verdict.
    #[command(group(clap::ArgGroup::new("input").required(true).args(["data", "prometheus"])))]
    Backtest {
        /// Policy file (YAML).
        #[arg(long)]
        policy: PathBuf,
        /// Which policy of the file, by name (needed when it holds several).
        #[arg(long)]
        name: Option<String>,
        /// Recorded data (JSON; format in docs/backtests.md).
        #[arg(long)]
        data: Option<PathBuf>,
        /// Prometheus base URL to read the past window from (auth from CANARYD__PROMETHEUS__*).
        #[arg(long, requires_all = ["from", "to", "workload"])]
        prometheus: Option<String>,
        /// Start of the window (RFC 3339), when traffic first moved.
        #[arg(long)]
        from: Option<jiff::Timestamp>,
        /// End of the window (RFC 3339).
        #[arg(long)]
        to: Option<jiff::Timestamp>,
        /// The workload, `namespace/name`.
        #[arg(long)]
        workload: Option<String>,
        /// The canary's workload name in the metrics (default: the workload's name).
        #[arg(long)]
        canary: Option<String>,
        /// The baseline's workload name in the metrics (default: `<name>-primary`).
        #[arg(long)]
        baseline: Option<String>,
        /// Output format.
        #[arg(long, value_enum, default_value_t = Format::Text)]
        format: Format,
        /// What opens the policy's gates (approval and webhook alike), which a recording
        /// cannot hold: `approve` approves each as soon as the rollout waits at it;
        /// `never` leaves it shut, to roll back at the gate timeout if the data lasts.
        #[arg(long, value_enum, default_value_t = GateMode::Approve)]
        gates: GateMode,
    },
}

/// How `canaryd backtest` opens gates.
#[derive(Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum GateMode {
    /// Approved (by `backtest`) as soon as the rollout waits at them.
    Approve,
    /// Never opened.
    Never,
}

impl From<GateMode> for canaryd::backtest::Gates {
    fn from(mode: GateMode) -> Self {
        match mode {
            GateMode::Approve => canaryd::backtest::Gates::Approve,
            GateMode::Never => canaryd::backtest::Gates::Never,
        }
    }
}

/// What `canaryd records` does.
#[derive(Subcommand)]
enum RecordsAction {
    /// One line per record, oldest first.
    List,
    /// One record in full (JSON), by id (`namespace/name@revision`) or file name.
    Show {
        /// The record's id or file name.
        id: String,
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
        Command::Check { paths, config, scrape_interval, platform, replicas } => {
            let mut env: std::collections::BTreeMap<String, String> = std::env::vars().collect();
            if let Some(interval) = scrape_interval {
                env.insert("CANARYD__PROMETHEUS__SCRAPE_INTERVAL".into(), interval);
                env.retain(|k, _| !k.starts_with("CANARYD__PROMETHEUS__SCRAPE_INTERVAL_BY_TEMPLATE"));
            }
            match Settings::load(config.as_deref(), env) {
                Ok(settings) => {
                    let platform = platform.or(settings.local.is_some().then_some(PlatformName::Local));
                    check(&paths, &settings.prometheus.batching.scrape, platform, replicas)
                }
                Err(e) => {
                    eprintln!("error: {e}");
                    ExitCode::from(EXIT_INVALID)
                }
            }
        }
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
        Command::Templates { verbose } => {
            for t in canaryd::source::templates::TEMPLATES {
                println!("{:<30} {:<10?} {}", t.name, t.kind(), t.description);
                if verbose {
                    let query = canaryd::source::batch::example_query(t);
                    println!("{}\n", canaryd::source::layout::layout(&query, 2).join("\n"));
                }
            }
            ExitCode::SUCCESS
        }
        Command::Backtest {
            policy,
            name,
            data,
            prometheus,
            from,
            to,
            workload,
            canary,
            baseline,
            format,
            gates,
        } => {
            let input = match (data, prometheus, from, to, workload) {
                (Some(file), ..) => BacktestInput::File(file),
                (None, Some(url), Some(from), Some(to), Some(workload)) => {
                    BacktestInput::Prometheus { url, from, to, workload, canary, baseline }
                }
                // clap enforces one complete input.
                _ => return ExitCode::from(EXIT_INVALID),
            };
            backtest(&policy, name.as_deref(), input, format, gates.into())
        }
        Command::Records { config, dir, action } => {
            let dir = match dir {
                Some(dir) => dir,
                None => match Settings::load_from_process(config.as_deref()) {
                    Ok(s) => s.daemon.records_dir,
                    Err(e) => {
                        eprintln!("error: {e}");
                        return ExitCode::from(EXIT_INVALID);
                    }
                },
            };
            records(&dir, action)
        }
        Command::Rollout { config, server, token, action } => {
            let settings = match Settings::load_from_process(config.as_deref()) {
                Ok(s) => s,
                Err(e) => {
                    eprintln!("error: {e}");
                    return ExitCode::from(EXIT_INVALID);
                }
            };
            let base = server.unwrap_or_else(|| format!("http://{}", settings.server.listen));
            let token = token.or_else(|| settings.server.client_token().map(|t| t.expose().to_string()));
            rollout(&base, token, action)
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

fn check(
    paths: &[PathBuf],
    scrape: &canaryd::source::scrape::ScrapeIntervals,
    platform: Option<PlatformName>,
    replicas: Option<u32>,
) -> ExitCode {
    let mut loaded = policy::load_paths_with(paths, Some(scrape));
    if let Some(primary) = replicas {
        loaded.refuse_unachievable_replica_steps(primary);
    }
    match platform {
        Some(PlatformName::Local) => {
            loaded.refuse_unserved_routers("local", &canaryd::platform::local::ROUTERS)
        }
        Some(PlatformName::Kubernetes) => {
            loaded.refuse_unserved_routers("kubernetes", &canaryd::platform::kubernetes::ROUTERS)
        }
        None => {}
    }
    for p in &loaded.policies {
        println!("ok: {} ({})", p.reference, p.origin);
        if let Some(line) = alphas(p) {
            println!("    {line}");
        }
        if let Some(line) = replica_steps(p, replicas) {
            println!("    {line}");
        }
    }
    for problem in &loaded.problems {
        eprintln!("error: {problem}");
    }
    if loaded.problems.is_empty() && loaded.policies.is_empty() {
        let places = paths.iter().map(|p| p.display().to_string()).collect::<Vec<_>>().join(", ");
        eprintln!("error: no policies found in {places} (files ending in .yaml or .yml)");
        ExitCode::from(EXIT_INVALID)
    } else if loaded.problems.is_empty() {
        println!("{} valid", count(loaded.policies.len(), "policy", "policies"));
        ExitCode::SUCCESS
    } else {
        eprintln!(
            "{}; {} valid",
            count(loaded.problems.len(), "problem", "problems"),
            count(loaded.policies.len(), "policy", "policies")
        );
        ExitCode::from(EXIT_INVALID)
    }
}

/// What a `replica`-router policy's steps run: the pods of each arm with `replicas`
/// primary replicas, or, without, the fewest primary replicas every step needs.
fn replica_steps(p: &canaryd::policy::LoadedPolicy, replicas: Option<u32>) -> Option<String> {
    use canaryd::platform::kubernetes::routers::replica;
    if p.plan.router != canaryd::engine::plan::RouterKind::Replica {
        return None;
    }
    let tolerance = p.spec.traffic.tolerance.unwrap_or(replica::DEFAULT_TOLERANCE);
    Some(match replicas {
        Some(primary) => format!(
            "replica ratio with {primary} primary replicas: {}",
            replica::described(&p.plan.steps, primary)
        ),
        None => {
            let fewest = (1..=10_000u32)
                .find(|&n| replica::unachievable_steps(&p.plan.steps, n, tolerance).is_empty());
            match fewest {
                Some(n) => format!(
                    "replica ratio: the fewest primary replicas that serve every step within ±{tolerance} points: {n} (`--replicas N` checks a count)"
                ),
                None => format!(
                    "replica ratio: no primary replica count up to 10000 serves every step within ±{tolerance} points"
                ),
            }
        }
    })
}

/// How the policy's sequential metrics are tested: each metric's stated `alpha` split
/// evenly over them, so the rollout's false-rollback rate stays within the sum shown.
/// Nothing a user wrote is changed without being shown here.
fn alphas(p: &canaryd::policy::LoadedPolicy) -> Option<String> {
    use canaryd::judge::TestConfig;
    let tested: Vec<(&str, f64)> = p
        .plan
        .metrics
        .iter()
        .filter_map(|m| match m.test {
            TestConfig::Sequential { alpha, .. } => Some((m.name.as_str(), alpha)),
            _ => None,
        })
        .collect();
    if tested.is_empty() {
        return None;
    }
    let stated: Vec<String> = p
        .spec
        .analysis
        .metrics
        .iter()
        .filter(|m| m.test == "sequential")
        .map(|m| {
            m.alpha.map_or_else(
                || format!("{} (default)", canaryd::policy::validate::DEFAULT_ALPHA),
                |a| a.to_string(),
            )
        })
        .collect();
    let each: Vec<String> = tested.iter().map(|(name, a)| format!("{name} at {a:.3e}")).collect();
    let sum: f64 = tested.iter().map(|(_, a)| a).sum();
    Some(format!(
        "alpha: {} stated, split over {} sequential {}: tested {}; together they roll back at most {sum:.3} of healthy rollouts",
        stated.join(", "),
        tested.len(),
        if tested.len() == 1 { "metric" } else { "metrics" },
        each.join(", ")
    ))
}

/// `1 policy`, `2 policies`.
/// `canaryd records list|show`.
fn records(dir: &std::path::Path, action: RecordsAction) -> ExitCode {
    use canaryd::daemon::records;
    if !dir.is_dir() {
        eprintln!(
            "error: {}: no records directory; point at one with `--dir DIR` or with \
             `daemon.records_dir` in the settings (`--config FILE`)",
            dir.display()
        );
        return ExitCode::from(EXIT_INVALID);
    }
    let files = records::list(dir);
    match action {
        RecordsAction::List => {
            for file in &files {
                match records::read(file) {
                    Ok(r) => {
                        let ended = r.finished_at.map_or_else(|| "-".to_string(), |t| t.to_string());
                        let why = r.deciding_reason();
                        println!(
                            "{ended}  {:<40} {:<12} step {}  max {}%  {why}",
                            r.id,
                            r.outcome_word(),
                            r.step_reached,
                            r.max_weight
                        );
                    }
                    Err(e) => eprintln!("warning: {e}"),
                }
            }
            if files.is_empty() {
                eprintln!("no records in {}", dir.display());
            }
            ExitCode::SUCCESS
        }
        RecordsAction::Show { id } => {
            let found = files.iter().rev().find_map(|f| {
                let named = f.file_name().is_some_and(|n| n.to_string_lossy() == id);
                records::read(f).ok().filter(|r| named || r.id == id)
            });
            match found.map(|r| serde_json::to_string_pretty(&r)) {
                Some(Ok(json)) => {
                    println!("{json}");
                    ExitCode::SUCCESS
                }
                Some(Err(e)) => {
                    eprintln!("error: {e}");
                    ExitCode::from(EXIT_FAILURE)
                }
                None => {
                    eprintln!(
                        "error: no record `{id}` in {} (`canaryd records list` shows them)",
                        dir.display()
                    );
                    ExitCode::from(EXIT_INVALID)
                }
            }
        }
    }
}

fn count(n: usize, one: &str, many: &str) -> String {
    format!("{n} {}", if n == 1 { one } else { many })
}

/// Reads the one policy a backtest runs, reporting problems as `check` does.
fn policy_plan(file: &std::path::Path, name: Option<&str>) -> Result<canaryd::engine::Plan, String> {
    let loaded = policy::load_paths(&[file.to_path_buf()]);
    if !loaded.problems.is_empty() {
        return Err(loaded.problems.iter().map(ToString::to_string).collect::<Vec<_>>().join("\n"));
    }
    let mut matching = loaded.policies.iter().filter(|p| name.is_none_or(|n| p.reference.name == n));
    // What --name may be, for the errors that ask for one.
    let names = || loaded.policies.iter().map(|p| p.reference.name.as_str()).collect::<Vec<_>>().join(", ");
    match (matching.next(), matching.next()) {
        (Some(p), None) => Ok(p.plan.clone()),
        (None, _) if loaded.policies.is_empty() => Err(format!("{}: no policy found", file.display())),
        (None, _) => Err(format!(
            "{}: no policy named {}; it holds: {} (choose one with --name)",
            file.display(),
            name.unwrap_or_default(),
            names()
        )),
        (Some(_), Some(_)) => {
            Err(format!("{}: holds several policies; choose one with --name: {}", file.display(), names()))
        }
    }
}

/// The largest recording `canaryd backtest` reads: a day of 30 s intervals is a few
/// megabytes, so this leaves room for years without letting a stray file exhaust memory.
const MAX_RECORDING: u64 = 256 * 1024 * 1024;

/// Reads a recording, refusing anything but a regular file of at most `MAX_RECORDING`.
fn read_recording(path: &std::path::Path) -> Result<String, String> {
    let meta = std::fs::metadata(path).map_err(|e| format!("cannot read: {e}"))?;
    if !meta.is_file() {
        return Err("not a regular file".into());
    }
    if meta.len() > MAX_RECORDING {
        return Err(format!(
            "{} bytes is more than a recording may hold ({MAX_RECORDING}); split it by time",
            meta.len()
        ));
    }
    std::fs::read_to_string(path).map_err(|e| format!("cannot read: {e}"))
}

/// Where a backtest's data comes from.
enum BacktestInput {
    /// A recording file.
    File(PathBuf),
    /// Range queries against Prometheus.
    Prometheus {
        url: String,
        from: jiff::Timestamp,
        to: jiff::Timestamp,
        workload: String,
        canary: Option<String>,
        baseline: Option<String>,
    },
}

fn backtest(
    policy_file: &std::path::Path,
    name: Option<&str>,
    input: BacktestInput,
    format: Format,
    gates: canaryd::backtest::Gates,
) -> ExitCode {
    let invalid = |message: String| {
        eprintln!("error: {message}");
        ExitCode::from(EXIT_INVALID)
    };
    let plan = match policy_plan(policy_file, name) {
        Ok(plan) => plan,
        Err(e) => return invalid(e),
    };
    let (result, source) = match input {
        BacktestInput::File(data) => {
            let source = data.display().to_string();
            let text = match read_recording(&data) {
                Ok(t) => t,
                Err(e) => return invalid(format!("{source}: {e}")),
            };
            match canaryd::backtest::Recording::parse(&source, &text) {
                Ok(recording) => (canaryd::backtest::run_gated(&plan, &recording, &source, gates), source),
                Err(problems) => {
                    return invalid(
                        problems.iter().map(ToString::to_string).collect::<Vec<_>>().join("\nerror: "),
                    );
                }
            }
        }
        BacktestInput::Prometheus { url, from, to, workload, canary, baseline } => {
            if to <= from {
                return invalid(format!("--to ({to}) must be after --from ({from})"));
            }
            let Some((namespace, workload_name)) = workload.split_once('/') else {
                return invalid(format!("--workload: `{workload}` is not namespace/name"));
            };
            let id = canaryd::engine::RolloutId { namespace: namespace.into(), name: workload_name.into() };
            let mut arms = canaryd::platform::kubernetes::arms(&id);
            arms.canary = canary.unwrap_or(arms.canary);
            arms.baseline = baseline.unwrap_or(arms.baseline);
            if let Err(e) = url::Url::parse(&url) {
                let shown = canaryd::config::without_userinfo(&url);
                return invalid(format!("--prometheus: `{shown}` is not a URL ({e})"));
            }
            let mut env: std::collections::BTreeMap<String, String> = std::env::vars().collect();
            env.insert("CANARYD__PROMETHEUS__URL".into(), url.clone());
            let settings = match Settings::load(None, env) {
                Ok(s) => s,
                Err(e) => return invalid(e.to_string()),
            };
            match backtest_prometheus(&settings, &plan, &id, &arms, from, to, gates) {
                Ok(result) => (result, url),
                Err(e) => {
                    eprintln!("error: {e:#}");
                    // A query that cannot be built is invalid input, not a failure to read.
                    let invalid = matches!(
                        e.downcast_ref::<canaryd::source::prometheus::RangeError>(),
                        Some(canaryd::source::prometheus::RangeError::Batch(_))
                    );
                    return ExitCode::from(if invalid { EXIT_INVALID } else { EXIT_FAILURE });
                }
            }
        }
    };
    match format {
        Format::Text => print!("{}", canaryd::backtest::report::render_text(&result, &source)),
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
        canaryd::backtest::BacktestOutcome::Unfinished => ExitCode::from(EXIT_UNFINISHED),
        _ => ExitCode::from(EXIT_FAILURE),
    }
}

#[tokio::main(flavor = "current_thread")]
async fn backtest_prometheus(
    settings: &Settings,
    plan: &canaryd::engine::Plan,
    id: &canaryd::engine::RolloutId,
    arms: &canaryd::engine::Arms,
    from: jiff::Timestamp,
    to: jiff::Timestamp,
    gates: canaryd::backtest::Gates,
) -> anyhow::Result<canaryd::backtest::BacktestResult> {
    let source = canaryd::source::prometheus::PrometheusSource::new(
        &settings.prometheus,
        canaryd::source::prometheus::QueryMetrics::default(),
        std::time::Duration::from_millis(500),
    )?;
    Ok(canaryd::backtest::from_prometheus(&source, plan, id, arms, from, to, gates).await?)
}

/// `canaryd run`, on a multi-threaded runtime.
#[tokio::main]
async fn run(settings: Settings) -> anyhow::Result<()> {
    Ok(canaryd::wiring::run(settings).await?)
}

/// The platforms `canaryd check --platform` knows.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
enum PlatformName {
    /// Services behind nginx.
    Local,
    /// Deployments on Kubernetes.
    Kubernetes,
}
