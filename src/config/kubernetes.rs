//! The `[kubernetes]` settings section: its presence selects the Kubernetes platform.
//! The client itself comes from `kube::Config::infer` (in-cluster, or `KUBECONFIG`), so
//! nothing here names a server or a credential.

use std::time::Duration;

use serde::Deserialize;

use crate::duration;
use crate::platform::kubernetes::store::DEFAULT_CHECKPOINT;

/// The Kubernetes platform's settings.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KubernetesSettings {
    /// The namespaces watched (Deployments, CanaryRuns, CanaryPolicies); `None`: all.
    pub namespaces: Option<Vec<String>>,
    /// How often a rollout's state is written when only the judge's running sums
    /// changed (everything else is written at once).
    pub checkpoint: Duration,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, default)]
pub(super) struct RawKubernetes {
    namespaces: Vec<String>,
    checkpoint: String,
}

impl Default for RawKubernetes {
    fn default() -> Self {
        RawKubernetes {
            namespaces: Vec::new(),
            checkpoint: humantime::format_duration(DEFAULT_CHECKPOINT).to_string(),
        }
    }
}

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
        KubernetesSettings { namespaces, checkpoint }
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
