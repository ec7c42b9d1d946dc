//! A rollout's two arms: which workloads' series are the canary and the baseline. Each
//! platform names them its own way (the local platform from its settings, Kubernetes
//! from its primary/canary convention); the engine, the sources and the store only
//! carry them.

use serde::{Deserialize, Serialize};

/// The workloads whose series are a rollout's two arms.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub struct Arms {
    /// Namespace of both workloads.
    pub namespace: String,
    /// The canary's workload name (on Kubernetes: the Deployment, e.g. `web`).
    pub canary: String,
    /// The baseline's workload name (on Kubernetes: `web-primary`).
    pub baseline: String,
}
