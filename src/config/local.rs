//! Settings of the local platform: nginx in front of services that each have a stable
//! and a canary upstream (`[nginx]` and `[[services]]`).

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use serde::Deserialize;

use crate::duration;

/// The local platform's settings: present when at least one service is declared.
#[derive(Clone, Debug)]
pub struct LocalSettings {
    /// The nginx that routes the services' traffic.
    pub nginx: NginxSettings,
    /// The services canaryd can roll out.
    pub services: Vec<ServiceSettings>,
}

/// How canaryd drives nginx.
#[derive(Clone, Debug)]
pub struct NginxSettings {
    /// The nginx binary.
    pub binary: PathBuf,
    /// Arguments given before `-t` and `-s reload` (e.g. `-p`, `-c`, `-e`), so that both
    /// act on the nginx that serves the traffic.
    pub args: Vec<String>,
    /// The file canaryd owns: one `upstream` block per service, and the server that
    /// answers the weights nginx serves. nginx's `http` block must include it.
    pub include: PathBuf,
    /// Where the included status server listens (loopback): canaryd reads back from it
    /// the weights nginx actually serves.
    pub status_listen: SocketAddr,
    /// How long a test, a reload, or the read-back may take.
    pub timeout: Duration,
}

/// One service with a stable and a canary upstream.
#[derive(Clone, Debug)]
pub struct ServiceSettings {
    /// The service's name: its nginx upstream and the rollout's name.
    pub name: String,
    /// The rollout's namespace, and the `namespace` label of its series.
    pub namespace: String,
    /// Labels matched against policy selectors.
    pub labels: BTreeMap<String, String>,
    /// The stable version's servers (`host:port`).
    pub stable: Vec<String>,
    /// The canary's servers (`host:port`).
    pub canary: Vec<String>,
    /// The `workload` label of the stable servers' series (the baseline arm).
    pub stable_workload: String,
    /// The `workload` label of the canary servers' series.
    pub canary_workload: String,
    /// Path probed on every stable server after a promotion, before traffic moves back.
    pub health_path: String,
    /// Commands or webhooks run around the rollout.
    pub hooks: Hooks,
}

/// The hooks of a service; `promote` is required, the others optional.
#[derive(Clone, Debug, Default)]
pub struct Hooks {
    /// Before any traffic moves; a failure stops the rollout.
    pub pre_rollout: Option<Hook>,
    /// Brings the stable servers to the promoted revision.
    pub promote: Option<Hook>,
    /// After traffic left a rolled-back canary (e.g. stops its servers).
    pub rollback: Option<Hook>,
    /// After the rollout ended, either way; a failure is logged only.
    pub post_rollout: Option<Hook>,
}

/// A command or a webhook, with a time limit.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Hook {
    /// What runs.
    pub action: HookAction,
    /// Longest it may take; then it is killed (or the request abandoned) and fails.
    pub timeout: Duration,
}

/// What a hook runs.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum HookAction {
    /// A program and its arguments, run without a shell. It gets `CANARYD_SERVICE`,
    /// `CANARYD_NAMESPACE`, `CANARYD_REVISION` and `CANARYD_HOOK` in its environment and
    /// succeeds by exiting 0.
    Command(Vec<String>),
    /// A POST of `{"service", "namespace", "revision", "hook"}`; succeeds on a 2xx.
    Webhook(url::Url),
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, default)]
pub(super) struct RawNginx {
    binary: PathBuf,
    args: Vec<String>,
    include: Option<PathBuf>,
    status_listen: String,
    timeout: String,
}

impl Default for RawNginx {
    fn default() -> Self {
        Self {
            binary: PathBuf::from("nginx"),
            args: Vec::new(),
            include: None,
            status_listen: "127.0.0.1:8482".into(),
            timeout: "5s".into(),
        }
    }
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields, default)]
pub(super) struct RawService {
    name: String,
    namespace: Option<String>,
    labels: BTreeMap<String, String>,
    stable: Vec<String>,
    canary: Vec<String>,
    stable_workload: Option<String>,
    canary_workload: Option<String>,
    health_path: Option<String>,
    hooks: RawHooks,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields, default)]
struct RawHooks {
    pre_rollout: Option<RawHook>,
    promote: Option<RawHook>,
    rollback: Option<RawHook>,
    post_rollout: Option<RawHook>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields, default)]
struct RawHook {
    command: Option<Vec<String>>,
    url: Option<String>,
    timeout: Option<String>,
}

/// Hooks time out after this unless told otherwise.
const DEFAULT_HOOK_TIMEOUT: Duration = Duration::from_secs(5);

/// A name nginx takes as an upstream and a file system takes as a file name.
fn valid_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 63
        && name.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && !name.starts_with('-')
}

/// `host:port`, with a port.
fn valid_server(server: &str) -> bool {
    server.rsplit_once(':').is_some_and(|(host, port)| {
        !host.is_empty()
            && !host.contains(char::is_whitespace)
            && !host.contains(';')
            && port.parse::<u16>().is_ok_and(|p| p > 0)
    })
}

impl RawHook {
    fn validate(self, key: &str, platform_timeout: Duration, problems: &mut Vec<String>) -> Option<Hook> {
        let timeout = match self.timeout.as_deref().map(duration::parse) {
            None => DEFAULT_HOOK_TIMEOUT,
            Some(Ok(t)) => t,
            Some(Err(e)) => {
                problems.push(format!("{key}.timeout: {e}"));
                DEFAULT_HOOK_TIMEOUT
            }
        };
        if timeout >= platform_timeout {
            problems.push(format!(
                "{key}.timeout: {} must be shorter than daemon.platform_timeout ({}), which bounds the whole platform call",
                humantime::format_duration(timeout),
                humantime::format_duration(platform_timeout)
            ));
        }
        let action = match (self.command, self.url) {
            (Some(command), None) if command.first().is_some_and(|p| !p.is_empty()) => {
                HookAction::Command(command)
            }
            (Some(_), None) => {
                problems.push(format!("{key}.command: empty; give the program and its arguments"));
                return None;
            }
            (None, Some(url)) => match url::Url::parse(&url) {
                Ok(u) if matches!(u.scheme(), "http" | "https") => HookAction::Webhook(u),
                _ => {
                    let shown = super::without_userinfo(&url);
                    problems.push(format!("{key}.url: `{shown}` is not an http(s) URL"));
                    return None;
                }
            },
            (Some(_), Some(_)) => {
                problems.push(format!("{key}: set command or url, not both"));
                return None;
            }
            (None, None) => {
                problems.push(format!("{key}: set command (a program and its arguments) or url"));
                return None;
            }
        };
        Some(Hook { action, timeout })
    }
}

impl RawService {
    /// The settings of `services[i]`; `names`, the names declared before it, gains its own.
    fn validate(
        self,
        i: usize,
        names: &mut BTreeSet<String>,
        platform_timeout: Duration,
        problems: &mut Vec<String>,
    ) -> ServiceSettings {
        let key =
            if valid_name(&self.name) { format!("services.{}", self.name) } else { format!("services[{i}]") };
        if !valid_name(&self.name) {
            problems.push(format!(
                "{key}.name: `{}` must be 1-63 lowercase letters, digits or dashes (it names an nginx upstream)",
                self.name
            ));
        } else if !names.insert(self.name.clone()) {
            problems.push(format!("{key}.name: declared twice"));
        }
        for (arm, servers) in [("stable", &self.stable), ("canary", &self.canary)] {
            if servers.is_empty() {
                problems.push(format!("{key}.{arm}: needs at least one server (`host:port`)"));
            }
            for server in servers.iter().filter(|s| !valid_server(s)) {
                problems.push(format!("{key}.{arm}: `{server}` is not host:port"));
            }
        }
        let overlap: Vec<&String> = self.stable.iter().filter(|s| self.canary.contains(s)).collect();
        if !overlap.is_empty() {
            problems.push(format!("{key}: {overlap:?} are both stable and canary servers"));
        }
        let health_path = self.health_path.unwrap_or_else(|| "/healthz".into());
        if !health_path.starts_with('/') {
            problems.push(format!("{key}.health_path: `{health_path}` must start with /"));
        }
        let hook = |h: Option<RawHook>, name: &str, problems: &mut Vec<String>| {
            h.and_then(|h| h.validate(&format!("{key}.hooks.{name}"), platform_timeout, problems))
        };
        if self.hooks.promote.is_none() {
            problems.push(format!(
                "{key}.hooks.promote: required: only the promote hook brings the stable servers to the promoted revision; without it a promotion would leave the canary servers serving everything, and the next rollout would send most traffic back to the old version"
            ));
        }
        let hooks = Hooks {
            pre_rollout: hook(self.hooks.pre_rollout, "pre_rollout", problems),
            promote: hook(self.hooks.promote, "promote", problems),
            rollback: hook(self.hooks.rollback, "rollback", problems),
            post_rollout: hook(self.hooks.post_rollout, "post_rollout", problems),
        };
        let stable_workload = self.stable_workload.unwrap_or_else(|| self.name.clone());
        let canary_workload = self.canary_workload.unwrap_or_else(|| format!("{}-canary", self.name));
        if stable_workload == canary_workload {
            problems.push(format!(
                "{key}.canary_workload: equals stable_workload (`{stable_workload}`): the arms' series could not be told apart"
            ));
        }
        ServiceSettings {
            namespace: self.namespace.unwrap_or_else(|| "local".into()),
            name: self.name,
            labels: self.labels,
            stable: self.stable,
            canary: self.canary,
            stable_workload,
            canary_workload,
            health_path,
            hooks,
        }
    }
}

/// Validates `[nginx]` and `[[services]]`; `None` when no service is declared.
pub(super) fn validate(
    nginx: RawNginx,
    services: Vec<RawService>,
    platform_timeout: Duration,
    problems: &mut Vec<String>,
) -> Option<LocalSettings> {
    if services.is_empty() {
        return None;
    }
    let include = nginx.include.unwrap_or_else(|| {
        problems.push(
            "nginx.include: required with [[services]]: the file canaryd writes the upstreams to".into(),
        );
        PathBuf::new()
    });
    let status_listen = nginx
        .status_listen
        .parse::<SocketAddr>()
        .map_err(|e| {
            problems.push(format!("nginx.status_listen: `{}` is not an address ({e})", nginx.status_listen))
        })
        .unwrap_or_else(|()| SocketAddr::from(([127, 0, 0, 1], 8482)));
    let timeout = duration::parse(&nginx.timeout).unwrap_or_else(|e| {
        problems.push(format!("nginx.timeout: {e}"));
        Duration::from_secs(10)
    });
    if timeout >= platform_timeout {
        problems.push(format!(
            "nginx.timeout: {} must be shorter than daemon.platform_timeout ({})",
            humantime::format_duration(timeout),
            humantime::format_duration(platform_timeout)
        ));
    }
    let mut names = BTreeSet::new();
    let out = services
        .into_iter()
        .enumerate()
        .map(|(i, raw)| raw.validate(i, &mut names, platform_timeout, problems))
        .collect();
    Some(LocalSettings {
        nginx: NginxSettings { binary: nginx.binary, args: nginx.args, include, status_listen, timeout },
        services: out,
    })
}
