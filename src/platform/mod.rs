//! Platforms: where rollouts come from and where their actions land. The daemon sees
//! only the traits here; each platform implements them in its own folder: the local
//! platform (`local/`, services behind nginx), the in-memory one (`memory.rs`, for tests
//! and benchmarks), and Kubernetes (`kubernetes/`).

pub mod kubernetes;
pub mod local;
pub mod memory;

use std::collections::BTreeMap;
use std::future::Future;
use std::pin::Pin;

use crate::engine::plan::RouterKind;
use crate::engine::{Arms, RolloutId, Scale};

/// What the platform reports about the workloads it manages.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum RolloutEvent {
    /// A new canary to analyse, or a new revision of one already running.
    Revision(NewRevision),
    /// The workload is gone: deleted, or no longer managed (a Kubernetes Deployment
    /// that stopped matching, or was deleted). A running rollout of it rolls back, so
    /// that routing returns to the stable version.
    Gone {
        /// The workload.
        id: RolloutId,
        /// What happened, for the decision's reason (`Deployment shop/web deleted`).
        detail: String,
    },
    /// The canary of `revision` cannot run: the platform gave up bringing it up (a
    /// Deployment past its progress deadline). Its rollout, if still running, rolls back.
    CanaryFailed {
        /// The workload.
        id: RolloutId,
        /// The canary's revision.
        revision: String,
        /// What the platform saw, for the decision's reason.
        detail: String,
    },
}

/// A workload revision the platform has seen.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NewRevision {
    /// The workload.
    pub id: RolloutId,
    /// The canary's revision.
    pub revision: String,
    /// The workload's labels, matched against policy selectors.
    pub labels: BTreeMap<String, String>,
    /// The workloads whose series are the canary and the baseline.
    pub arms: Arms,
}

impl From<NewRevision> for RolloutEvent {
    fn from(revision: NewRevision) -> RolloutEvent {
        RolloutEvent::Revision(revision)
    }
}

/// Why a platform call did not complete.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct PlatformError {
    /// What went wrong, or what is awaited.
    pub message: String,
    /// Whether the call is under way and only awaits something the platform reports
    /// progress on (a Deployment rolling out, a Gateway accepting a route). The daemon
    /// asks again next tick without counting a failure; the step's progress deadline,
    /// and the platform's own (a Deployment's `progressDeadlineSeconds`), bound the wait.
    pub not_yet: bool,
}

impl PlatformError {
    /// The call failed.
    pub fn failed(message: impl Into<String>) -> PlatformError {
        PlatformError { message: message.into(), not_yet: false }
    }

    /// The call is under way: `awaiting` says what for.
    pub fn not_yet(awaiting: impl Into<String>) -> PlatformError {
        PlatformError { message: awaiting.into(), not_yet: true }
    }
}

/// Why a rollout could not be started on request.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum StartError {
    /// No such service in the settings.
    #[error("no service `{0}` in the settings ([[services]])")]
    UnknownService(String),
    /// The revision is not usable.
    #[error("revision: {0}")]
    BadRevision(String),
    /// The pre-rollout hook failed: the rollout did not start.
    #[error("{0}; the rollout did not start and no traffic moved")]
    PreRollout(String),
}

/// A platform on which a rollout starts when asked (`POST /api/v1/rollouts`,
/// `canaryd rollout start`): the local platform. On Kubernetes a rollout starts when a
/// Deployment's template changes, and nothing implements this.
///
/// The API holds it as `dyn StartsRollouts`, so the future is boxed.
pub trait StartsRollouts: Send + Sync + 'static {
    /// The rollout a service's rollouts run as, if the service exists.
    fn rollout_of(&self, service: &str) -> Option<RolloutId>;
    /// The service's labels, which policy selectors match, if the service exists.
    fn labels_of(&self, service: &str) -> Option<BTreeMap<String, String>>;
    /// Starts a rollout of `revision` of `service`: the platform's own checks and hooks
    /// first; then the rollout reaches the daemon as a [`RolloutEvent`].
    fn start<'a>(
        &'a self,
        service: &'a str,
        revision: &'a str,
    ) -> Pin<Box<dyn Future<Output = Result<RolloutId, StartError>> + Send + 'a>>;
}

/// Where rollouts are found and actions are carried out. Every call is confirmed by
/// returning `Ok` once the platform has done it, and must be harmless to repeat: after a
/// crash the daemon calls again whatever it had not recorded as done.
pub trait Platform: Send + Sync + 'static {
    /// The platform's name in messages (`local`, `kubernetes`, `memory`).
    fn name(&self) -> &'static str;
    /// The routers this platform serves; a policy naming another is refused.
    fn routers(&self) -> &'static [RouterKind];
    /// Rollout events since the last call (new canaries, new revisions). Never blocks.
    fn events(&self) -> Vec<RolloutEvent>;
    /// Routes `weight` percent of the traffic to the canary, through `router` (the
    /// policy's, one of [`Platform::routers`]).
    fn set_weight(
        &self,
        id: &RolloutId,
        router: RouterKind,
        weight: u8,
    ) -> impl Future<Output = Result<(), PlatformError>> + Send;
    /// Makes `revision` the stable version.
    fn promote(
        &self,
        id: &RolloutId,
        revision: &str,
    ) -> impl Future<Output = Result<(), PlatformError>> + Send;
    /// Scales the canary (of `revision`) up or down.
    fn scale(
        &self,
        id: &RolloutId,
        revision: &str,
        scale: Scale,
    ) -> impl Future<Output = Result<(), PlatformError>> + Send;
}

/// Moves one route's traffic between its stable and canary backends. A router sets a
/// weight *and reads it back*: a weight counts as applied only once the router serves
/// it. Each router is one file beside the platform that uses it (nginx for the local
/// platform; Gateway API, Istio and replica ratio for Kubernetes).
pub trait TrafficRouter: Send + Sync + 'static {
    /// Routes `weight` percent of `route`'s traffic to its canary; `Ok` once the router
    /// is seen to serve it.
    fn set_weight(&self, route: &str, weight: u8) -> impl Future<Output = Result<(), PlatformError>> + Send;
    /// The canary weight the router serves for `route` now, read from the router itself.
    fn weight(&self, route: &str) -> impl Future<Output = Result<u8, PlatformError>> + Send;
    /// Restores plain routing for `route`: every request to the stable backends.
    fn finalize(&self, route: &str) -> impl Future<Output = Result<(), PlatformError>> + Send;
}
