//! The Kubernetes platform. For a managed Deployment `web`, canaryd keeps `web-primary`
//! serving the stable revision, and `web` itself is the canary while a rollout runs.
//! This module holds that naming convention; the pieces are built on it:
//! - `revision.rs`: a Deployment's revision, a stable hash of its pod template;
//! - `workloads.rs`: `web-primary` and the Services `web-primary` and `web-canary`,
//!   and whether a Deployment has rolled out;
//! - `canaryrun.rs`: the `CanaryRun` custom resource that holds a rollout's state;
//! - `events.rs`: each decision as a Kubernetes Event on its Deployment;
//! - `lease.rs`: leader election on a Lease, and the fence on every write;
//! - `shards.rs`: which shard a rollout is in, and how many shards a replica takes;
//! - `decide.rs`: what to do about each Deployment, from the watch's summaries (pure);
//! - `platform.rs`: the platform itself: the Deployment watch, attaching, the calls
//!   (those on routes in `route_calls.rs`);
//! - `replica_calls.rs`: the calls of the `replica` router (replica counts behind the
//!   user's Service);
//! - `policies.rs`: policy objects from the API server, validated and reported on;
//! - `store.rs`: the rollout states in CanaryRun statuses, within a write budget;
//! - `secrets.rs`: notification URLs read from Secrets the policies name;
//! - `routers/`: the traffic routers (Gateway API `HTTPRoute`, Istio `VirtualService`,
//!   and the replica ratio's arithmetic).

pub mod canaryrun;
pub mod decide;
pub mod events;
pub mod lease;
pub mod platform;
pub mod policies;
pub mod replica_calls;
pub mod revision;
pub mod route_calls;
pub mod routers;
pub mod secrets;
pub mod shards;
pub mod store;
pub mod workloads;

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
