//! The Kubernetes platform. For a managed Deployment `web`, canaryd keeps `web-primary`
//! serving the stable revision, and `web` itself is the canary while a rollout runs.
//! This module holds that naming convention; the watch, workloads, CanaryRun store and
//! routers are built on it.

use crate::engine::plan::RouterKind;
use crate::engine::{Arms, RolloutId};

/// The routers the Kubernetes platform serves.
pub const ROUTERS: [RouterKind; 3] = [RouterKind::GatewayApi, RouterKind::Istio, RouterKind::Replica];

/// Suffix of the Deployment (and Service) that serves the promoted revision.
pub const PRIMARY_SUFFIX: &str = "-primary";

/// The primary's name for a managed Deployment `name`.
pub fn primary_name(name: &str) -> String {
    format!("{name}{PRIMARY_SUFFIX}")
}

/// The arms of a managed Deployment: canary `name`, baseline `name-primary`.
pub fn arms(id: &RolloutId) -> Arms {
    Arms { namespace: id.namespace.clone(), canary: id.name.clone(), baseline: primary_name(&id.name) }
}
