//! The `[kubernetes]` settings section: its presence selects the Kubernetes platform.
//! The client itself comes from `kube::Config::infer` (in-cluster, or `KUBECONFIG`), so
//! nothing here names a server or a credential.

use std::time::Duration;

use serde::Deserialize;

use crate::duration;
use crate::platform::kubernetes::lease::LeaseSettings;
use crate::platform::kubernetes::store::DEFAULT_CHECKPOINT;

/// The Kubernetes platform's settings.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KubernetesSettings {
    /// The namespaces watched (Deployments, CanaryRuns, CanaryPolicies); `None`: all.
    pub namespaces: Option<Vec<String>>,
    /// How often a rollout's state is written when only the judge's running sums
    /// changed (everything else is written at once).
    pub checkpoint: Duration,
    /// The Lease replicas elect their leader on; `None`: no election, this replica
    /// always acts (`lease.enabled = false`).
    pub lease: Option<LeaseSettings>,
    /// How many shards the rollouts are split into, each with its own Lease
    /// (`platform::kubernetes::shards`); 1: one Lease, one leader drives them all.
    pub shards: u32,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, default)]
pub(super) struct RawKubernetes {
    namespaces: Vec<String>,
    checkpoint: String,
    lease: RawLease,
    shards: u32,
}

impl Default for RawKubernetes {
    fn default() -> Self {
        RawKubernetes {
            namespaces: Vec::new(),
            checkpoint: humantime::format_duration(DEFAULT_CHECKPOINT).to_string(),
            lease: RawLease::default(),
            shards: 1,
        }
    }
}

/// `[kubernetes.lease]`: leader election among replicas.
#[derive(Deserialize)]
#[serde(deny_unknown_fields, default)]
pub(super) struct RawLease {
    enabled: bool,
    name: String,
    /// Empty: `$POD_NAMESPACE`, else `default`.
    namespace: String,
    /// Empty: `$POD_NAME`, else the host's name.
    identity: String,
    duration: String,
    renew_deadline: String,
    retry: String,
}

impl Default for RawLease {
    /// client-go's defaults: 15 s, 10 s, 2 s.
    fn default() -> Self {
        RawLease {
            enabled: true,
            name: "canaryd".into(),
            namespace: String::new(),
            identity: String::new(),
            duration: "15s".into(),
            renew_deadline: "10s".into(),
            retry: "2s".into(),
        }
    }
}

impl RawLease {
    fn validate(self, problems: &mut Vec<String>) -> Option<LeaseSettings> {
        let mut time = |field: &str, text: &str, default: u64| match duration::parse(text) {
            Ok(d) if d >= Duration::from_secs(1) => d,
            Ok(_) => {
                problems.push(format!("kubernetes.lease.{field}: `{text}` is shorter than 1s"));
                Duration::from_secs(default)
            }
            Err(e) => {
                problems.push(format!("kubernetes.lease.{field}: {e}"));
                Duration::from_secs(default)
            }
        };
        let duration = time("duration", &self.duration, 15);
        let renew_deadline = time("renew_deadline", &self.renew_deadline, 10);
        let retry = time("retry", &self.retry, 2);
        if renew_deadline >= duration {
            problems.push(format!(
                "kubernetes.lease.renew_deadline: `{}` must be shorter than lease.duration `{}`: the difference is the margin between the old leader's last write and the new leader's first",
                self.renew_deadline, self.duration
            ));
        } else if retry >= renew_deadline {
            problems.push(format!(
                "kubernetes.lease.retry: `{}` must be shorter than lease.renew_deadline `{}`, or the leader stops acting between two renewals",
                self.retry, self.renew_deadline
            ));
        }
        if let Some(why) = not_a_subdomain(&self.name) {
            problems.push(format!("kubernetes.lease.name: `{}` {why}", self.name));
        }
        let namespace = if self.namespace.is_empty() {
            std::env::var("POD_NAMESPACE").ok().filter(|n| !n.is_empty()).unwrap_or_else(|| "default".into())
        } else {
            self.namespace
        };
        if let Some(why) = not_a_namespace(&namespace) {
            problems.push(format!("kubernetes.lease.namespace: `{namespace}` {why}"));
        }
        let identity = if self.identity.is_empty() { default_identity() } else { self.identity };
        self.enabled.then_some(LeaseSettings {
            name: self.name,
            namespace,
            identity,
            duration,
            renew_deadline,
            retry,
        })
    }
}

/// `$POD_NAME` (set from the downward API in `deploy/`), else the host's name: stable
/// across restarts of one pod, so a restarted container takes its own Lease back at once.
fn default_identity() -> String {
    let from_env = |name| std::env::var(name).ok().filter(|v: &String| !v.is_empty());
    from_env("POD_NAME")
        .or_else(|| from_env("HOSTNAME"))
        .or_else(|| std::fs::read_to_string("/etc/hostname").ok().map(|h| h.trim().to_string()))
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| format!("canaryd-{}", std::process::id()))
}

/// Most `kubernetes.shards`: each is a Lease renewed every `lease.retry` and a daemon.
const MAX_SHARDS: u32 = 64;

/// Longest `kubernetes.checkpoint`: a restart replays at most this much from Prometheus.
const MAX_CHECKPOINT: Duration = Duration::from_secs(3600);

impl RawKubernetes {
    pub(super) fn validate(self, problems: &mut Vec<String>) -> KubernetesSettings {
        for (i, namespace) in self.namespaces.iter().enumerate() {
            if let Some(why) = not_a_namespace(namespace) {
                problems.push(format!("kubernetes.namespaces[{i}]: `{namespace}` {why}"));
            }
        }
        let checkpoint = match duration::parse(&self.checkpoint) {
            Ok(d) if d > MAX_CHECKPOINT => {
                problems.push(format!(
                    "kubernetes.checkpoint: `{}` is longer than {}: a restart would replay that much from Prometheus",
                    self.checkpoint,
                    humantime::format_duration(MAX_CHECKPOINT)
                ));
                d
            }
            Ok(d) => d,
            Err(e) => {
                problems.push(format!("kubernetes.checkpoint: {e}"));
                DEFAULT_CHECKPOINT
            }
        };
        let namespaces = (!self.namespaces.is_empty()).then_some(self.namespaces);
        let lease = self.lease.validate(problems);
        if !(1..=MAX_SHARDS).contains(&self.shards) {
            problems.push(format!("kubernetes.shards: {} is not between 1 and {MAX_SHARDS}", self.shards));
        } else if self.shards > 1 && lease.is_none() {
            problems.push(format!(
                "kubernetes.shards: {} shards need leader election on Leases (kubernetes.lease.enabled = true): each shard is held through its own Lease",
                self.shards
            ));
        }
        KubernetesSettings { namespaces, checkpoint, lease, shards: self.shards.clamp(1, MAX_SHARDS) }
    }
}

/// Why `name` is not a namespace name (an RFC 1123 label), if it is not.
fn not_a_namespace(name: &str) -> Option<&'static str> {
    let valid_chars = name.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-');
    if name.is_empty() || name.len() > 63 {
        Some("is not 1 to 63 characters long")
    } else if !valid_chars {
        Some("may hold only lowercase letters, digits and `-`")
    } else if name.starts_with('-') || name.ends_with('-') {
        Some("may not start or end with `-`")
    } else {
        None
    }
}

/// Why `name` is not an object name (an RFC 1123 subdomain), if it is not.
fn not_a_subdomain(name: &str) -> Option<&'static str> {
    if name.is_empty() || name.len() > 253 {
        return Some("is not 1 to 253 characters long");
    }
    name.split('.').find_map(|label| {
        not_a_namespace(label).map(
            |_| "must be lowercase letters, digits, `-` and `.`, starting and ending with a letter or digit",
        )
    })
}
