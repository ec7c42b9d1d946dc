//! The `canaryd` command line. Thin: every subcommand calls into the library.
//!
//! Exit codes: 0 ok (or promoted), 1 a verdict or failure (rolled back, daemon error),
//! 2 usage or invalid input, 3 a backtest whose data ended before a verdict.

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::Ordering;

use anyhow::Context;
use clap::{Parser, Subcommand};

use canaryd::config::Settings;
use canaryd::policy;

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
    /// Talk to the running daemon's API: list, show, watch, start, promote, abort, pause
    /// or resume rollouts.
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
        /// `kubernetes`: gateway-api, istio, replica). Default: the settings' platform
        /// (`local` when `[[services]]` are declared), else any known router passes.
        #[arg(long, value_enum)]
        platform: Option<PlatformName>,
    },
    /// Print the CustomResourceDefinitions (YAML) generated from the policy types.
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
        #[arg(long, env = "CANARYD_CONFIG")]
        config: Option<PathBuf>,
        /// The records directory, overriding the settings.
        #[arg(long)]
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
        /// Recorded data (JSON; format in README.md).
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
    },
}

/// What `canaryd rollout` does. A ROLLOUT is `namespace/name`, or a name only one
/// rollout has.
#[derive(Subcommand)]
enum RolloutAction {
    /// One line per rollout: phase, step, weight, each metric's last verdict.
    List,
    /// One rollout in detail: each metric's latest values and the decisions with their reasons.
    Status {
        /// The rollout.
        rollout: String,
        /// Output format.
        #[arg(long, value_enum, default_value_t = Format::Text)]
        format: Format,
    },
    /// Follow rollouts live: a line on each change of phase, step, weight or verdict, and
    /// each decision with its reason. With a ROLLOUT, exits when it ends (0 promoted,
    /// 1 rolled back or aborted).
    Watch {
        /// The rollout (all of them if absent).
        rollout: Option<String>,
        /// Plain lines, one per change, even on a terminal (the default when not a terminal).
        #[arg(long)]
        plain: bool,
        /// How often to ask the daemon.
        #[arg(long, default_value = "1s")]
        every: humantime::Duration,
    },
    /// Start rolling out a revision of a service (local platform).
    Start {
        /// The service, as declared in the settings.
        service: String,
        /// The canary's revision.
        #[arg(long)]
        revision: String,
    },
    /// Skip the remaining analysis and promote.
    Promote {
        /// The rollout.
        rollout: String,
    },
    /// Stop and roll back.
    Abort {
        /// The rollout.
        rollout: String,
    },
    /// Hold at the current step (the analysis goes on; triggers still roll back).
    Pause {
        /// The rollout.
        rollout: String,
    },
    /// Continue after a pause (the step's full duration is required again).
    Resume {
        /// The rollout.
        rollout: String,
    },
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
        Command::Check { paths, config, scrape_interval, platform } => {
            let mut env: std::collections::BTreeMap<String, String> = std::env::vars().collect();
            if let Some(interval) = scrape_interval {
                env.insert("CANARYD__PROMETHEUS__SCRAPE_INTERVAL".into(), interval);
                env.retain(|k, _| !k.starts_with("CANARYD__PROMETHEUS__SCRAPE_INTERVAL_BY_TEMPLATE"));
            }
            match Settings::load(config.as_deref(), env) {
                Ok(settings) => {
                    let platform = platform.or(settings.local.is_some().then_some(PlatformName::Local));
                    check(&paths, &settings.prometheus.batching.scrape, platform)
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
                    println!("  {}\n", canaryd::source::batch::example_query(t));
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
        } => {
            let input = match (data, prometheus, from, to, workload) {
                (Some(file), ..) => BacktestInput::File(file),
                (None, Some(url), Some(from), Some(to), Some(workload)) => {
                    BacktestInput::Prometheus { url, from, to, workload, canary, baseline }
                }
                // clap enforces one complete input.
                _ => return ExitCode::from(EXIT_INVALID),
            };
            backtest(&policy, name.as_deref(), input, format)
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
) -> ExitCode {
    let mut loaded = policy::load_paths_with(paths, Some(scrape));
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

/// `1 policy`, `2 policies`.
/// `canaryd records list|show`.
fn records(dir: &std::path::Path, action: RecordsAction) -> ExitCode {
    use canaryd::daemon::records;
    if !dir.is_dir() {
        eprintln!("error: {}: no records directory (daemon.records_dir)", dir.display());
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
                            r.outcome.name(),
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
                Ok(recording) => (canaryd::backtest::run(&plan, &recording, &source), source),
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
            match backtest_prometheus(&settings, &plan, &id, &arms, from, to) {
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
) -> anyhow::Result<canaryd::backtest::BacktestResult> {
    let source = canaryd::source::prometheus::PrometheusSource::new(
        &settings.prometheus,
        canaryd::source::prometheus::QueryMetrics::default(),
        std::time::Duration::from_millis(500),
    )?;
    Ok(canaryd::backtest::from_prometheus(&source, plan, id, arms, from, to).await?)
}

#[tokio::main]
async fn run(settings: Settings) -> anyhow::Result<()> {
    canaryd::telemetry::init_logging(&settings.log);
    let mut state =
        canaryd::server::AppState { max_body_bytes: settings.server.max_body_bytes, ..Default::default() };
    let policies = load_policies(&settings, &state);
    let listener = tokio::net::TcpListener::bind(settings.server.listen)
        .await
        .with_context(|| format!("cannot listen on {}", settings.server.listen))?;
    let limits = canaryd::server::listen::Limits::default();
    let (stop_tx, stop) = tokio::sync::watch::channel(false);
    let stopped = |mut stop: tokio::sync::watch::Receiver<bool>| async move {
        let _ = stop.wait_for(|s| *s).await;
    };
    let Some(local) = &settings.local else {
        tracing::warn!(listen = %settings.server.listen, "no platform configured ([[services]]): serving /healthz, /readyz and /metrics only");
        let app = canaryd::server::app(state.clone());
        let serve = canaryd::server::listen::serve(listener, app, limits, stopped(stop));
        tokio::join!(serve, signals(&settings, &state, None, stop_tx));
        tracing::info!("stopped");
        return Ok(());
    };
    let mut registry = canaryd::telemetry::registry();
    let platform = Arc::new(
        canaryd::platform::local::LocalPlatform::open(
            local,
            canaryd::platform::local::register_router_failures(&mut registry),
        )
        .map_err(|e| anyhow::anyhow!("nginx.include: {e}"))?,
    );
    let store = Arc::new(
        canaryd::store::file::FileStore::open(&settings.daemon.state_dir)
            .with_context(|| "daemon.state_dir".to_string())?,
    );
    let retention = canaryd::daemon::records::Retention {
        max_count: settings.daemon.records_max_count,
        max_age: settings.daemon.records_max_age,
    };
    let records = canaryd::daemon::records::RecordStore::open(&settings.daemon.records_dir, retention)
        .with_context(|| "daemon.records_dir".to_string())?;
    let source = Arc::new(canaryd::source::prometheus::PrometheusSource::new(
        &settings.prometheus,
        canaryd::source::prometheus::QueryMetrics::register(&mut registry),
        std::time::Duration::from_millis(500),
    )?);
    let options = canaryd::daemon::Options {
        tick: settings.daemon.tick,
        platform_timeout: settings.daemon.platform_timeout,
        batching: settings.prometheus.batching.clone(),
        metric_values: settings.daemon.metric_values.clone(),
        ..Default::default()
    };
    let timeout = std::time::Duration::from_secs(10);
    let webhook = match &settings.daemon.webhook_url {
        Some(url) => Some(
            canaryd::notify::webhook::WebhookNotifier::new(url.expose(), timeout)
                .map_err(|e| anyhow::anyhow!("daemon.webhook_url: {e}"))?,
        ),
        None => None,
    };
    let slack =
        canaryd::notify::slack::SlackNotifier::new(timeout, Box::new(canaryd::notify::slack::from_env))
            .map_err(|e| anyhow::anyhow!("Slack client: {e}"))?;
    let deliveries = canaryd::notify::register_deliveries(&mut registry);
    let notifier = Arc::new(canaryd::notify::fanout::Fanout::new(webhook, slack, deliveries));
    let metrics = canaryd::daemon::metrics::LoopMetrics::register(&mut registry);
    let api_metrics = canaryd::server::ApiMetrics::register(&mut registry, metrics.alerts.clone());
    state.registry = Arc::new(registry);
    let parts =
        Parts { source, platform: platform.clone(), store, records, policies, options, metrics, api_metrics };
    run_local(&settings, &mut state, listener, parts, notifier, (stop_tx, stop)).await
}

/// What the local platform's loop is made of.
struct Parts {
    source: Arc<canaryd::source::prometheus::PrometheusSource>,
    platform: Arc<canaryd::platform::local::LocalPlatform>,
    store: Arc<canaryd::store::file::FileStore>,
    records: canaryd::daemon::records::RecordStore,
    policies: Vec<policy::LoadedPolicy>,
    options: canaryd::daemon::Options,
    metrics: canaryd::daemon::metrics::LoopMetrics,
    api_metrics: canaryd::server::ApiMetrics,
}

/// Runs the loop on the local platform next to the HTTP server, until a signal.
async fn run_local<N: canaryd::notify::Notifier>(
    settings: &Settings,
    state: &mut canaryd::server::AppState,
    listener: tokio::net::TcpListener,
    parts: Parts,
    notifier: Arc<N>,
    (stop_tx, stop): (tokio::sync::watch::Sender<bool>, tokio::sync::watch::Receiver<bool>),
) -> anyhow::Result<()> {
    let Parts { source, platform, store, records, policies, options, metrics, api_metrics } = parts;
    let mut daemon = canaryd::daemon::Daemon::start(
        source,
        platform.clone(),
        store.clone(),
        notifier,
        Some(records),
        policies,
        options,
        metrics,
    )
    .await;
    state.api = Some(canaryd::server::api::Api {
        platform: Some(platform),
        views: daemon.views(),
        tokens: Arc::new(settings.server.tokens.clone()),
        read_requires_token: settings.server.read_requires_token,
        commands: daemon.commands(),
        alerts: daemon.alerts(),
        wake: daemon.waker(),
        store: Some(store),
        records_dir: Some(settings.daemon.records_dir.clone()),
        metrics: api_metrics,
    });
    let ticked = Arc::new(std::sync::atomic::AtomicBool::new(false));
    state.loop_ready = Some(ticked.clone());
    let reload = daemon.policy_updates();
    tracing::info!(listen = %settings.server.listen, tick = ?settings.daemon.tick, "running: /healthz, /readyz, /metrics and /api/v1/rollouts");
    let app = canaryd::server::app(state.clone());
    let limits = canaryd::server::listen::Limits::default();
    let mut server_stop = stop.clone();
    let serve = canaryd::server::listen::serve(listener, app, limits, async move {
        let _ = server_stop.wait_for(|s| *s).await;
    });
    let mut loop_stop = stop;
    let run = canaryd::daemon::run_until(
        &mut daemon,
        settings.daemon.tick,
        jiff::Timestamp::now,
        &ticked,
        async move {
            let _ = loop_stop.wait_for(|s| *s).await;
        },
        settings.daemon.shutdown_deadline,
    );
    tokio::join!(serve, run, signals(settings, state, Some(reload), stop_tx));
    tracing::info!("stopped");
    Ok(())
}

/// Loads the policies; the daemon is ready only with at least one valid policy.
fn load_policies(settings: &Settings, state: &canaryd::server::AppState) -> Vec<policy::LoadedPolicy> {
    let mut loaded =
        policy::load_paths_with(&settings.policy_paths, Some(&settings.prometheus.batching.scrape));
    if settings.local.is_some() {
        loaded.refuse_unserved_routers("local", &canaryd::platform::local::ROUTERS);
    }
    for problem in &loaded.problems {
        tracing::error!(%problem, "policy rejected; the other policies stay in force");
    }
    let ready = !loaded.policies.is_empty();
    if !ready {
        tracing::warn!(paths = ?settings.policy_paths, "no valid policy loaded: not ready");
    }
    tracing::info!(policies = loaded.policies.len(), "policies loaded");
    state.ready.store(ready, Ordering::Relaxed);
    loaded.policies
}

/// Sets `stop` on SIGTERM (what Kubernetes sends) or SIGINT; SIGHUP reloads the
/// policies (and hands them to the loop, when one runs).
async fn signals(
    settings: &Settings,
    state: &canaryd::server::AppState,
    reload: Option<canaryd::daemon::LoopSender<Vec<policy::LoadedPolicy>>>,
    stop: tokio::sync::watch::Sender<bool>,
) {
    use tokio::signal::unix::{SignalKind, signal};
    let (Ok(mut term), Ok(mut hup)) = (signal(SignalKind::terminate()), signal(SignalKind::hangup())) else {
        tracing::error!("cannot listen for signals; stop with SIGKILL");
        return std::future::pending().await;
    };
    loop {
        tokio::select! {
            _ = term.recv() => {
                tracing::info!(signal = "SIGTERM", "shutting down");
                let _ = stop.send(true);
                return;
            }
            _ = tokio::signal::ctrl_c() => {
                tracing::info!(signal = "SIGINT", "shutting down");
                let _ = stop.send(true);
                return;
            }
            _ = hup.recv() => {
                tracing::info!(signal = "SIGHUP", "reloading policies");
                let policies = load_policies(settings, state);
                if let Some(reload) = &reload {
                    let _ = reload.send(policies);
                }
            }
        }
    }
}

/// The platforms `canaryd check --platform` knows.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
enum PlatformName {
    /// Services behind nginx.
    Local,
    /// Deployments on Kubernetes.
    Kubernetes,
}

/// `canaryd rollout …`: API calls, their answers printed.
#[tokio::main(flavor = "current_thread")]
async fn rollout(base: &str, token: Option<String>, action: RolloutAction) -> ExitCode {
    use canaryd::client::{Client, ClientError};
    let fail = |e: ClientError| {
        eprintln!("error: {e}");
        match e {
            ClientError::Refused { status, .. } if status.is_client_error() => ExitCode::from(EXIT_INVALID),
            _ => ExitCode::from(EXIT_FAILURE),
        }
    };
    let client = match Client::new(base, token) {
        Ok(c) => c,
        Err(e) => return fail(e),
    };
    let (rollout, verb) = match action {
        RolloutAction::List => {
            return match client.list().await {
                Ok(views) => {
                    for v in &views {
                        println!("{:<28} {:<10} {}", v.id(), v.revision, v.progress());
                    }
                    if views.is_empty() {
                        println!("no rollouts");
                    }
                    ExitCode::SUCCESS
                }
                Err(e) => fail(e),
            };
        }
        RolloutAction::Status { rollout, format } => {
            let detail = match client.resolve(&rollout).await {
                Ok((namespace, name)) => client.detail(&namespace, &name).await,
                Err(e) => Err(e),
            };
            return match detail {
                Ok(d) if format == Format::Json => {
                    println!("{}", serde_json::to_string_pretty(&d).unwrap_or_default());
                    ExitCode::SUCCESS
                }
                Ok(d) => {
                    print_detail(&d);
                    ExitCode::SUCCESS
                }
                Err(e) => fail(e),
            };
        }
        RolloutAction::Watch { rollout, plain, every } => {
            return watch(&client, rollout.as_deref(), plain, every.into()).await;
        }
        RolloutAction::Start { service, revision } => {
            return match client.start(&service, &revision).await {
                Ok(a) => {
                    println!("{} {}: {}", a.rollout, a.revision, a.status);
                    ExitCode::SUCCESS
                }
                Err(e) => fail(e),
            };
        }
        RolloutAction::Promote { rollout } => (rollout, "promote"),
        RolloutAction::Abort { rollout } => (rollout, "abort"),
        RolloutAction::Pause { rollout } => (rollout, "pause"),
        RolloutAction::Resume { rollout } => (rollout, "resume"),
    };
    let answer = match client.resolve(&rollout).await {
        Ok((namespace, name)) => client.command(&namespace, &name, verb).await,
        Err(e) => Err(e),
    };
    match answer {
        Ok(a) => {
            println!("{} {}: {} (as {})", a.rollout, a.command, a.status, a.by);
            ExitCode::SUCCESS
        }
        Err(e) => fail(e),
    }
}

fn print_detail(d: &canaryd::server::api::RolloutDetail) {
    let v = &d.view;
    println!("{} {} (policy {})", v.id(), v.revision, v.policy);
    println!("  {}", v.progress());
    if let Some(at) = d.latest_at {
        println!("  latest interval, ended {at}:");
    }
    let value = |x: Option<f64>| x.map_or_else(|| "no data".to_string(), |x| format!("{x:.4}"));
    for m in &d.latest {
        println!(
            "    {:<16} {:<18} canary {:<10} baseline {}",
            m.metric,
            m.verdict,
            value(m.canary),
            value(m.baseline)
        );
    }
    println!("  decisions:");
    for decision in &d.decisions {
        println!(
            "    #{} {} {} at {}%: {}",
            decision.seq, decision.at, decision.action, decision.weight, decision.reason
        );
    }
}

/// `canaryd rollout watch`: polls the daemon and prints what changed. On a terminal
/// (unless `plain`), each rollout's line is redrawn in place and decisions scroll above.
async fn watch(
    client: &canaryd::client::Client,
    rollout: Option<&str>,
    plain: bool,
    every: std::time::Duration,
) -> ExitCode {
    use std::io::Write as _;
    let id = match rollout {
        Some(r) => match client.resolve(r).await {
            Ok((namespace, name)) => Some(format!("{namespace}/{name}")),
            Err(e) => {
                eprintln!("error: {e}");
                return ExitCode::from(EXIT_INVALID);
            }
        },
        None => None,
    };
    let live = !plain && std::io::IsTerminal::is_terminal(&std::io::stdout());
    let mut progress: std::collections::BTreeMap<String, canaryd::daemon::view::Progress> =
        Default::default();
    let mut failures = 0u32;
    let mut ticker = tokio::time::interval(every);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        ticker.tick().await;
        let views = match client.list().await {
            Ok(v) => {
                failures = 0;
                v
            }
            Err(e) => {
                failures += 1;
                eprintln!("warning: {e} (retrying)");
                if failures >= 30 {
                    eprintln!("error: the daemon did not answer 30 times in a row");
                    return ExitCode::from(EXIT_FAILURE);
                }
                continue;
            }
        };
        let mut printed: Vec<(String, String)> = Vec::new();
        for v in views.iter().filter(|v| id.as_ref().is_none_or(|id| *id == v.id())) {
            let shown = progress.entry(v.id()).or_default();
            // Decisions made between two looks are read from the rollout's detail.
            let missed = shown.missed(v);
            let mut lines = Vec::new();
            if !missed.is_empty()
                && let Ok(detail) = client.detail(&v.namespace, &v.name).await
            {
                lines.extend(
                    detail
                        .decisions
                        .iter()
                        .filter(|d| d.revision == v.revision && missed.contains(&d.seq))
                        .map(|d| canaryd::daemon::view::decision_line(&d.action, d.weight, &d.reason)),
                );
            }
            lines.extend(shown.lines(v));
            printed.extend(lines.into_iter().map(|line| (format!("{} {}", v.id(), v.revision), line)));
        }
        let mut out = std::io::stdout().lock();
        for (who, line) in printed {
            // On a terminal the progress line is redrawn in place; decisions scroll.
            if live && !line.starts_with("  -> ") {
                let _ = write!(out, "\r\x1b[2K{who} {line}");
            } else {
                let _ = writeln!(out, "{}{who} {line}", if live { "\r\x1b[2K" } else { "" });
            }
        }
        let _ = out.flush();
        drop(out);
        if let Some(id) = &id
            && let Some(v) = views.iter().find(|v| v.id() == *id)
            && v.finished_at.is_some()
        {
            if live {
                println!();
            }
            return if v.phase == "succeeded" { ExitCode::SUCCESS } else { ExitCode::from(EXIT_FAILURE) };
        }
    }
}
