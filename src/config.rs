//! Daemon settings: a TOML file, then `CANARYD__SECTION__KEY` environment variables on
//! top, read through the `config` crate. Every problem is reported before any port is
//! bound, and secrets never appear in output, debug output included.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

use crate::daemon::metrics::{DEFAULT_VALUE_ROLLOUTS, ValueSeries};
use crate::duration;
use crate::source::batch::{BatchOptions, DEFAULT_SHARD_SIZE};
use crate::source::scrape::ScrapeIntervals;
use crate::source::templates;

pub mod kubernetes;
pub mod local;

pub use crate::secret::{Secret, without_userinfo};
pub use crate::source::alertmanager::AlertmanagerSettings;
pub use crate::source::prometheus::PrometheusSettings;
pub use crate::telemetry::{LogFormat, LogSettings};
pub use kubernetes::KubernetesSettings;
pub use local::{Hook, HookAction, Hooks, LocalSettings, NginxSettings, ServiceSettings};

/// Settings could not be read or are invalid; lists every problem.
#[derive(Debug, thiserror::Error)]
#[error("invalid settings in {source_name}:\n  {}", problems.join("\n  "))]
pub struct ConfigError {
    /// The file (and environment) the settings came from.
    pub source_name: String,
    /// One line per problem, each naming the key.
    pub problems: Vec<String>,
}

/// The daemon's settings, validated.
#[derive(Clone, Debug)]
pub struct Settings {
    /// HTTP server.
    pub server: ServerSettings,
    /// Prometheus connection.
    pub prometheus: PrometheusSettings,
    /// Files and directories holding policies.
    pub policy_paths: Vec<PathBuf>,
    /// Logging.
    pub log: LogSettings,
    /// The loop: where state and records live, how often it ticks.
    pub daemon: DaemonSettings,
    /// The local platform (nginx and declared services), when services are declared.
    pub local: Option<LocalSettings>,
    /// The Kubernetes platform, when `[kubernetes]` is present.
    pub kubernetes: Option<KubernetesSettings>,
    /// Alertmanager, read for the alerts already firing when a rollout starts or resumes.
    pub alertmanager: Option<AlertmanagerSettings>,
}

/// The daemon loop's settings.
#[derive(Clone, Debug)]
pub struct DaemonSettings {
    /// Directory of the rollouts' state files (one per rollout, written atomically).
    pub state_dir: PathBuf,
    /// Directory of the deployment records.
    pub records_dir: PathBuf,
    /// Time between ticks.
    pub tick: Duration,
    /// Longest a platform call may take before it is retried.
    pub platform_timeout: Duration,
    /// Records kept, at most.
    pub records_max_count: usize,
    /// Records kept for at most this long.
    pub records_max_age: Duration,
    /// On SIGTERM, how long to wait for platform calls and notifications in flight.
    pub shutdown_deadline: Duration,
    /// Where decisions are posted as JSON (a secret: webhook URLs carry tokens).
    pub webhook_url: Option<Secret>,
    /// Which rollouts get `canaryd_metric_value` series (`metric_value_rollouts`,
    /// `metric_value_namespaces`).
    pub metric_values: ValueSeries,
}

/// HTTP server settings.
#[derive(Clone, Debug)]
pub struct ServerSettings {
    /// Address to listen on.
    pub listen: SocketAddr,
    /// Bearer tokens of the API, by the caller's name (recorded with each command).
    /// `api_token` is the caller `operator`. Without any, mutating calls are refused.
    pub tokens: BTreeMap<String, Secret>,
    /// Whether the read endpoints (`GET /api/v1/…`) need a token too (default false).
    pub read_requires_token: bool,
    /// Largest request body accepted, in bytes (default 256 KiB); larger gets 413.
    pub max_body_bytes: usize,
}

impl ServerSettings {
    /// The token to send as a client: `api_token`'s, else the only one configured.
    pub fn client_token(&self) -> Option<&Secret> {
        self.tokens
            .get(OPERATOR)
            .or_else(|| (self.tokens.len() == 1).then(|| self.tokens.values().next()).flatten())
    }
}

/// The caller name of `server.api_token`.
pub const OPERATOR: &str = "operator";

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields, default)]
struct RawSettings {
    server: RawServer,
    prometheus: RawPrometheus,
    policies: RawPolicies,
    log: RawLog,
    daemon: RawDaemon,
    nginx: local::RawNginx,
    services: Vec<local::RawService>,
    kubernetes: Option<kubernetes::RawKubernetes>,
    alertmanager: RawAlertmanager,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, default)]
struct RawAlertmanager {
    url: Option<String>,
    timeout: String,
}

impl Default for RawAlertmanager {
    fn default() -> Self {
        Self { url: None, timeout: "5s".into() }
    }
}

impl RawAlertmanager {
    fn validate(self, problems: &mut Vec<String>) -> Option<AlertmanagerSettings> {
        let timeout = positive(problems, "alertmanager.timeout", &self.timeout);
        let text = self.url?;
        match url::Url::parse(&text) {
            Ok(url) if matches!(url.scheme(), "http" | "https") => {
                Some(AlertmanagerSettings { url, timeout })
            }
            Ok(_) => {
                problems
                    .push(format!("alertmanager.url: `{}` is not an http(s) URL", without_userinfo(&text)));
                None
            }
            Err(e) => {
                problems.push(format!("alertmanager.url: `{}` is not a URL ({e})", without_userinfo(&text)));
                None
            }
        }
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, default)]
struct RawDaemon {
    state_dir: PathBuf,
    records_dir: PathBuf,
    tick: String,
    platform_timeout: String,
    records_max_count: usize,
    records_max_age: String,
    shutdown_deadline: String,
    webhook_url: Option<Secret>,
    metric_value_rollouts: usize,
    metric_value_namespaces: Vec<String>,
}

impl Default for RawDaemon {
    fn default() -> Self {
        Self {
            state_dir: PathBuf::from("state"),
            records_dir: PathBuf::from("records"),
            tick: "5s".into(),
            platform_timeout: "30s".into(),
            records_max_count: 1000,
            records_max_age: "90d".into(),
            shutdown_deadline: "10s".into(),
            webhook_url: None,
            metric_value_rollouts: DEFAULT_VALUE_ROLLOUTS,
            metric_value_namespaces: Vec::new(),
        }
    }
}

impl RawDaemon {
    fn validate(self, problems: &mut Vec<String>) -> DaemonSettings {
        let tick = positive(problems, "daemon.tick", &self.tick);
        let platform_timeout = positive(problems, "daemon.platform_timeout", &self.platform_timeout);
        let records_max_age = positive(problems, "daemon.records_max_age", &self.records_max_age);
        let shutdown_deadline = positive(problems, "daemon.shutdown_deadline", &self.shutdown_deadline);
        if self.records_max_count == 0 {
            problems.push("daemon.records_max_count: must be at least 1".into());
        }
        if let Some(url) = &self.webhook_url
            && url::Url::parse(url.expose()).is_err()
        {
            problems.push("daemon.webhook_url: not a URL (value not shown: it is a secret)".into());
        }
        for (i, namespace) in self.metric_value_namespaces.iter().enumerate() {
            if namespace.trim().is_empty() || namespace.contains('/') {
                problems.push(format!(
                    "daemon.metric_value_namespaces[{i}]: {namespace:?} is not a namespace name"
                ));
            }
        }
        DaemonSettings {
            state_dir: self.state_dir,
            records_dir: self.records_dir,
            tick,
            platform_timeout,
            records_max_count: self.records_max_count.max(1),
            records_max_age,
            shutdown_deadline,
            webhook_url: self.webhook_url,
            metric_values: ValueSeries {
                max_rollouts: self.metric_value_rollouts,
                namespaces: self.metric_value_namespaces,
            },
        }
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, default)]
struct RawServer {
    listen: String,
    api_token: Option<Secret>,
    tokens: BTreeMap<String, Secret>,
    read_requires_token: bool,
    max_body_bytes: usize,
}

impl Default for RawServer {
    fn default() -> Self {
        Self {
            listen: "127.0.0.1:8480".into(),
            api_token: None,
            tokens: BTreeMap::new(),
            read_requires_token: false,
            max_body_bytes: 256 * 1024,
        }
    }
}

impl RawServer {
    fn tokens(&self, problems: &mut Vec<String>) -> BTreeMap<String, Secret> {
        // Each token with the key it was written under, so that a problem names that key.
        let mut written: Vec<(String, &str, &Secret)> =
            self.tokens.iter().map(|(name, t)| (format!("server.tokens.{name}"), name.as_str(), t)).collect();
        if let Some(token) = &self.api_token {
            if self.tokens.contains_key(OPERATOR) {
                problems.push(format!("server.tokens.{OPERATOR}: also set as server.api_token; keep one"));
            }
            written.push(("server.api_token".into(), OPERATOR, token));
        }
        let mut seen: Vec<(&str, &str)> = Vec::new();
        for (key, name, token) in &written {
            if name.is_empty() || !name.chars().all(|c| c.is_ascii_alphanumeric() || "-_.@".contains(c)) {
                problems.push(format!("{key}: a caller name is letters, digits and -_.@"));
            }
            if token.expose().len() < 16 {
                problems.push(format!("{key}: shorter than 16 characters (value not shown: it is a secret)"));
            }
            if let Some((other, _)) = seen.iter().find(|(_, t)| *t == token.expose()) {
                problems.push(format!(
                    "{key}: the same token as another caller ({other}); each caller needs its own"
                ));
            }
            seen.push((key, token.expose()));
        }
        if self.max_body_bytes < 1024 {
            problems.push(format!("server.max_body_bytes: {} is below 1024", self.max_body_bytes));
        }
        written.into_iter().map(|(_, name, token)| (name.to_string(), token.clone())).collect()
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, default)]
struct RawPrometheus {
    url: String,
    timeout: String,
    retries: u32,
    bearer_token: Option<Secret>,
    basic_auth_user: Option<String>,
    basic_auth_password: Option<Secret>,
    headers: BTreeMap<String, Secret>,
    scrape_interval: String,
    scrape_interval_by_template: BTreeMap<String, String>,
    lookback: String,
    shard_size: usize,
    concurrency: usize,
}

impl Default for RawPrometheus {
    fn default() -> Self {
        Self {
            url: "http://127.0.0.1:9090".into(),
            timeout: "10s".into(),
            retries: 2,
            bearer_token: None,
            basic_auth_user: None,
            basic_auth_password: None,
            headers: BTreeMap::new(),
            scrape_interval: "30s".into(),
            scrape_interval_by_template: BTreeMap::new(),
            lookback: "5m".into(),
            shard_size: DEFAULT_SHARD_SIZE,
            concurrency: 4,
        }
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, default)]
struct RawPolicies {
    paths: Vec<PathBuf>,
}

impl Default for RawPolicies {
    fn default() -> Self {
        Self { paths: vec![PathBuf::from("policies")] }
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, default)]
struct RawLog {
    format: String,
    level: String,
}

impl Default for RawLog {
    fn default() -> Self {
        Self { format: "text".into(), level: "info".into() }
    }
}

/// The variable that sets `policies.paths`: a `:`-separated list of files and directories.
pub const POLICY_PATHS_VARIABLE: &str = "CANARYD__POLICIES__PATHS";

impl Settings {
    /// Reads `file` (TOML), then `CANARYD__…` variables from `env` on top, and validates.
    pub fn load(file: Option<&Path>, env: BTreeMap<String, String>) -> Result<Settings, ConfigError> {
        let source_name = match file {
            Some(f) => format!("{} and CANARYD__* environment", f.display()),
            None => "defaults and CANARYD__* environment".into(),
        };
        let fail = |problems: Vec<String>| ConfigError { source_name: source_name.clone(), problems };
        let mut builder = config::Config::builder();
        if let Some(f) = file {
            if f.is_dir() {
                return Err(fail(vec![format!("{}: is a directory, not a settings file", f.display())]));
            }
            if !f.exists() {
                return Err(fail(vec![format!("{}: no such file", f.display())]));
            }
            builder = builder.add_source(config::File::from(f).format(config::FileFormat::Toml));
        }
        let mut env = env;
        // A list cannot be one variable in the environment source's syntax; the policy
        // paths, the one list a deployment sets from its environment, are `:`-separated
        // as PATH is.
        if let Some(paths) = env.remove(POLICY_PATHS_VARIABLE) {
            let paths: Vec<String> = std::env::split_paths(&paths)
                .filter(|p| !p.as_os_str().is_empty())
                .map(|p| p.display().to_string())
                .collect();
            builder = builder
                .set_override("policies.paths", paths)
                .map_err(|e| fail(vec![format!("{POLICY_PATHS_VARIABLE}: {e}")]))?;
        }
        let env_snapshot = env.clone();
        let environment = config::Environment::with_prefix("CANARYD")
            .prefix_separator("__")
            .separator("__")
            .source(Some(env.into_iter().collect()));
        let secrets = secret_values(&env_snapshot);
        let tree: config::Map<String, config::Value> = builder
            .add_source(environment)
            .build()
            .and_then(|c| c.try_deserialize())
            .map_err(|e| fail(vec![redact(&e.to_string(), &secrets)]))?;
        let (raw, mut problems) = every_type_error(tree, &secrets);
        match raw.map(RawSettings::validate) {
            Some(Ok(settings)) if problems.is_empty() => Ok(settings),
            Some(Err(more)) => {
                problems.extend(more);
                Err(fail(problems))
            }
            _ => Err(fail(problems)),
        }
    }

    /// Reads settings with the process environment.
    pub fn load_from_process(file: Option<&Path>) -> Result<Settings, ConfigError> {
        Settings::load(file, std::env::vars().collect())
    }
}

/// Reads the settings tree, reporting every value of the wrong type or unknown key, not
/// only the first: each failing key is noted and taken out, and the rest read again. Returns
/// the settings read without the failing keys (so their values can be checked too), and
/// the problems.
fn every_type_error(
    mut tree: config::Map<String, config::Value>,
    secrets: &[String],
) -> (Option<RawSettings>, Vec<String>) {
    let mut problems = Vec::new();
    loop {
        let value = config::Value::new(None, config::ValueKind::Table(tree.clone()));
        match serde_path_to_error::deserialize::<_, RawSettings>(value) {
            Ok(raw) => return (Some(raw), problems),
            Err(e) => {
                let mut path: Vec<String> = e.path().iter().map(ToString::to_string).collect();
                let message = e.into_inner().to_string();
                // An unknown key is reported at its table; name the key itself.
                if let Some(key) = message.strip_prefix("unknown field `").and_then(|r| r.split('`').next())
                    && path.last().map(String::as_str) != Some(key)
                {
                    path.push(key.to_string());
                }
                problems.push(redact(&format!("{}: {message}", path.join(".")), secrets));
                if problems.len() >= 32 || !remove(&mut tree, &path) {
                    return (None, problems);
                }
            }
        }
    }
}

/// Removes the value at `path` from the tree; whether there was one.
fn remove(tree: &mut config::Map<String, config::Value>, path: &[String]) -> bool {
    match path {
        [] => false,
        [key] => tree.remove(key).is_some(),
        [first, rest @ ..] => match tree.get_mut(first).map(|v| &mut v.kind) {
            Some(config::ValueKind::Table(inner)) => remove(inner, rest),
            _ => false,
        },
    }
}

/// Environment keys (after `CANARYD__`) whose values are secrets.
const SECRET_KEYS: [&str; 5] = [
    "SERVER__API_TOKEN",
    "DAEMON__WEBHOOK_URL",
    "PROMETHEUS__BEARER_TOKEN",
    "PROMETHEUS__BASIC_AUTH_PASSWORD",
    "PROMETHEUS__HEADERS",
];

/// The secret values set in the environment, to be kept out of error messages.
fn secret_values(env: &BTreeMap<String, String>) -> Vec<String> {
    env.iter()
        .filter(|(k, v)| {
            let key = k.strip_prefix("CANARYD__").unwrap_or_default().to_ascii_uppercase();
            !v.is_empty() && SECRET_KEYS.iter().any(|s| key.starts_with(s))
        })
        .map(|(_, v)| v.clone())
        .collect()
}

/// An error message fit to print: the secret values replaced, and no quoted source lines
/// (a TOML parse error quotes the offending line, which may hold a token).
fn redact(message: &str, secrets: &[String]) -> String {
    let mut out: String = message
        .lines()
        .filter(|line| {
            !line.trim_start().trim_start_matches(|c: char| c.is_ascii_digit()).trim_start().starts_with('|')
        })
        .collect::<Vec<_>>()
        .join(" ");
    for secret in secrets {
        out = out.replace(secret.as_str(), "<redacted>");
    }
    out
}

/// A positive duration read from `text`, or a problem naming `key` (and 1 s, so the
/// other values can still be checked).
fn positive(problems: &mut Vec<String>, key: &str, text: &str) -> Duration {
    duration::parse(text).unwrap_or_else(|e| {
        problems.push(format!("{key}: {e}"));
        Duration::from_secs(1)
    })
}

impl RawPrometheus {
    fn batching(&self, problems: &mut Vec<String>) -> BatchOptions {
        let duration = |problems: &mut Vec<String>, key: &str, text: &str| {
            positive(problems, &format!("prometheus.{key}"), text)
        };
        let mut scrape =
            ScrapeIntervals::uniform(duration(problems, "scrape_interval", &self.scrape_interval));
        for (template, text) in &self.scrape_interval_by_template {
            let key = format!("scrape_interval_by_template.{template}");
            if templates::find(template).is_none() {
                problems.push(format!(
                    "prometheus.{key}: unknown template; expected one of {}",
                    templates::names().join(", ")
                ));
            }
            scrape.by_template.insert(template.clone(), duration(problems, &key, text));
        }
        let lookback = duration(problems, "lookback", &self.lookback);
        for (key, value) in [("shard_size", self.shard_size), ("concurrency", self.concurrency)] {
            if value == 0 {
                problems.push(format!("prometheus.{key}: must be at least 1"));
            }
        }
        BatchOptions {
            scrape,
            lookback,
            shard_size: self.shard_size.max(1),
            concurrency: self.concurrency.max(1),
        }
    }
}

impl RawSettings {
    fn validate(self) -> Result<Settings, Vec<String>> {
        let mut problems = Vec::new();
        let listen = self
            .server
            .listen
            .parse()
            .map_err(|e| {
                problems.push(format!("server.listen: `{}` is not an address ({e})", self.server.listen))
            })
            .ok();
        let tokens = self.server.tokens(&mut problems);
        let batching = self.prometheus.batching(&mut problems);
        let daemon = self.daemon.validate(&mut problems);
        let local = local::validate(self.nginx, self.services, daemon.platform_timeout, &mut problems);
        let kubernetes = self.kubernetes.map(|k| k.validate(&mut problems));
        if local.is_some() && kubernetes.is_some() {
            problems.push(
                "kubernetes: and [[services]] select two platforms; one daemon runs one: drop [kubernetes] or the services".into(),
            );
        }
        let alertmanager = self.alertmanager.validate(&mut problems);
        let url = url::Url::parse(&self.prometheus.url)
            .map_err(|e| {
                let shown = without_userinfo(&self.prometheus.url);
                problems.push(format!("prometheus.url: `{shown}` is not a URL ({e})"))
            })
            .ok();
        let timeout = duration::parse(&self.prometheus.timeout)
            .map_err(|e| problems.push(format!("prometheus.timeout: {e}")))
            .ok();
        let basic_auth = match (self.prometheus.basic_auth_user, self.prometheus.basic_auth_password) {
            (Some(u), Some(p)) => Some((u, p)),
            (None, None) => None,
            _ => {
                problems
                    .push("prometheus: set both basic_auth_user and basic_auth_password, or neither".into());
                None
            }
        };
        if basic_auth.is_some() && self.prometheus.bearer_token.is_some() {
            problems.push("prometheus: bearer_token and basic auth exclude each other".into());
        }
        for name in self.prometheus.headers.keys() {
            if reqwest::header::HeaderName::from_bytes(name.as_bytes()).is_err() {
                problems.push(format!("prometheus.headers.{name}: not a valid header name"));
            }
        }
        let format = match self.log.format.as_str() {
            "text" => Some(LogFormat::Text),
            "json" => Some(LogFormat::Json),
            other => {
                problems.push(format!("log.format: `{other}` is not text or json"));
                None
            }
        };
        if tracing_subscriber::EnvFilter::try_new(&self.log.level).is_err() {
            problems.push(format!("log.level: `{}` is not a valid filter", self.log.level));
        }
        match (listen, url, timeout, format) {
            (Some(listen), Some(url), Some(timeout), Some(format)) if problems.is_empty() => Ok(Settings {
                server: ServerSettings {
                    listen,
                    tokens,
                    read_requires_token: self.server.read_requires_token,
                    max_body_bytes: self.server.max_body_bytes,
                },
                prometheus: PrometheusSettings {
                    url,
                    timeout,
                    retries: self.prometheus.retries,
                    bearer_token: self.prometheus.bearer_token,
                    basic_auth,
                    headers: self.prometheus.headers,
                    batching,
                },
                policy_paths: self.policies.paths,
                log: LogSettings { format, level: self.log.level },
                daemon,
                local,
                kubernetes,
                alertmanager,
            }),
            _ => Err(problems),
        }
    }
}

#[cfg(test)]
mod tests;
