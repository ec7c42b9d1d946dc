//! An in-memory platform for tests and benchmarks: events are pushed in, calls are
//! recorded, and calls for chosen rollouts can be made to fail or hang. It is built as
//! a real platform is: it implements [`Platform`], and moves traffic through a
//! [`TrafficRouter`] of its own ([`MemoryRouter`]), a weight counting as set once the
//! router reads it back. The loop cannot tell it apart from a real one.

use std::collections::{HashMap, HashSet};
use std::sync::Mutex;

use crate::engine::plan::RouterKind;
use crate::engine::{RolloutId, Scale};
use crate::platform::{NewRevision, Platform, PlatformError, RolloutEvent, TrafficRouter};

/// What [`MemoryPlatform`] is to do with a call for a rollout.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Fault {
    /// Fail every call.
    Fail,
    /// Never answer.
    Hang,
    /// Answer "not yet": the call is under way (a Deployment still rolling out).
    NotYet,
}

/// One call the in-memory platform carried out.
#[derive(Clone, Debug, PartialEq)]
pub struct Call {
    /// The rollout.
    pub id: RolloutId,
    /// `set-weight 10`, `promote v2`, `scale down`.
    pub what: String,
    /// Tokio's clock when the call was made, relative to the platform's creation.
    pub at: std::time::Duration,
}

/// Routes held in memory: each route's canary weight. What it serves is what it was
/// last told, unless told to hold a route at a weight (a router that takes a change but
/// does not apply it, as an nginx reading a stale include would).
#[derive(Default)]
pub struct MemoryRouter {
    routes: Mutex<HashMap<String, u8>>,
    stuck: Mutex<HashMap<String, u8>>,
}

impl MemoryRouter {
    fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
        m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Makes `route` serve `weight` whatever it is told (`None`: follow again).
    pub fn hold(&self, route: &str, weight: Option<u8>) {
        match weight {
            Some(w) => Self::lock(&self.stuck).insert(route.to_string(), w),
            None => Self::lock(&self.stuck).remove(route),
        };
    }
}

impl TrafficRouter for MemoryRouter {
    async fn set_weight(&self, route: &str, weight: u8) -> Result<(), PlatformError> {
        Self::lock(&self.routes).insert(route.to_string(), weight);
        Ok(())
    }

    async fn weight(&self, route: &str) -> Result<u8, PlatformError> {
        if let Some(w) = Self::lock(&self.stuck).get(route) {
            return Ok(*w);
        }
        Ok(Self::lock(&self.routes).get(route).copied().unwrap_or(0))
    }

    async fn finalize(&self, route: &str) -> Result<(), PlatformError> {
        Self::lock(&self.routes).remove(route);
        Ok(())
    }
}

/// The world as the in-memory platform holds it for a rollout.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct World {
    /// Canary weight, as the router serves it.
    pub weight: u8,
    /// The router the last weight was set through.
    pub router: Option<RouterKind>,
    /// Whether the canary's pods run.
    pub canary_up: bool,
    /// The promoted revision, if any.
    pub promoted: Option<String>,
}

/// An in-memory platform for tests and benchmarks: events are pushed in, calls are
/// recorded, and calls for chosen rollouts can be made to fail or hang.
pub struct MemoryPlatform {
    created: tokio::time::Instant,
    inner: Mutex<Inner>,
    router: MemoryRouter,
}

#[derive(Default)]
struct Inner {
    events: Vec<RolloutEvent>,
    calls: Vec<Call>,
    world: HashMap<RolloutId, World>,
    faults: HashMap<RolloutId, Fault>,
    record_calls: bool,
    hung: HashSet<RolloutId>,
}

impl Default for MemoryPlatform {
    fn default() -> Self {
        MemoryPlatform::new()
    }
}

impl MemoryPlatform {
    /// An empty platform that records every call.
    pub fn new() -> MemoryPlatform {
        let inner = Inner { record_calls: true, ..Default::default() };
        MemoryPlatform {
            created: tokio::time::Instant::now(),
            inner: Mutex::new(inner),
            router: MemoryRouter::default(),
        }
    }

    /// A platform that keeps only the world, not the call log (for benchmarks).
    pub fn without_call_log() -> MemoryPlatform {
        MemoryPlatform {
            created: tokio::time::Instant::now(),
            inner: Mutex::new(Inner::default()),
            router: MemoryRouter::default(),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// A new canary (or revision) appears.
    pub fn push(&self, event: NewRevision) {
        let mut inner = self.lock();
        inner.world.entry(event.id.clone()).or_default().canary_up = true;
        inner.events.push(event.into());
    }

    /// The workload `id` is gone (deleted, or no longer managed).
    pub fn gone(&self, id: &RolloutId, detail: &str) {
        self.lock().events.push(RolloutEvent::Gone { id: id.clone(), detail: detail.to_string() });
    }

    /// The canary of `revision` of `id` cannot run (its pods never became ready).
    pub fn canary_failed(&self, id: &RolloutId, revision: &str, detail: &str) {
        let event =
            RolloutEvent::CanaryFailed { id: id.clone(), revision: revision.into(), detail: detail.into() };
        self.lock().events.push(event);
    }

    /// Makes calls for `id` fail or hang (`None`: work again).
    pub fn fault(&self, id: &RolloutId, fault: Option<Fault>) {
        let mut inner = self.lock();
        match fault {
            Some(f) => inner.faults.insert(id.clone(), f),
            None => inner.faults.remove(id),
        };
    }

    /// Every call made so far, in order.
    pub fn calls(&self) -> Vec<Call> {
        self.lock().calls.clone()
    }

    /// The world of a rollout.
    pub fn world(&self, id: &RolloutId) -> World {
        self.lock().world.get(id).cloned().unwrap_or_default()
    }

    /// Tokio's clock now, relative to the platform's creation (as `Call::at`).
    pub fn elapsed(&self) -> std::time::Duration {
        self.created.elapsed()
    }

    /// The router the platform moves traffic with (to hold a route, see
    /// [`MemoryRouter::hold`]). A rollout's route is its id, `namespace/name`.
    pub fn router(&self) -> &MemoryRouter {
        &self.router
    }

    /// Calls that are hanging now.
    pub fn hanging(&self) -> usize {
        self.lock().hung.len()
    }

    async fn call(
        &self,
        id: &RolloutId,
        what: String,
        apply: impl FnOnce(&mut World),
    ) -> Result<(), PlatformError> {
        let fault = self.lock().faults.get(id).copied();
        match fault {
            Some(Fault::Fail) => {
                return Err(PlatformError::failed(format!("{what} refused for {id} (injected failure)")));
            }
            Some(Fault::NotYet) => {
                return Err(PlatformError::not_yet(format!(
                    "{what} for {id}: awaiting the platform (injected)"
                )));
            }
            Some(Fault::Hang) => {
                self.lock().hung.insert(id.clone());
                let _guard = Unhang(self, id.clone());
                return std::future::pending().await;
            }
            None => {}
        }
        let at = self.created.elapsed();
        let mut inner = self.lock();
        apply(inner.world.entry(id.clone()).or_default());
        if inner.record_calls {
            inner.calls.push(Call { id: id.clone(), what, at });
        }
        Ok(())
    }
}

/// Clears a hanging call's mark when its future is dropped (timed out).
struct Unhang<'a>(&'a MemoryPlatform, RolloutId);

impl Drop for Unhang<'_> {
    fn drop(&mut self) {
        self.0.lock().hung.remove(&self.1);
    }
}

impl Platform for MemoryPlatform {
    fn name(&self) -> &'static str {
        "memory"
    }

    /// Every router: the in-memory platform stands in for any real one.
    fn routers(&self) -> &'static [RouterKind] {
        &RouterKind::ALL
    }

    fn events(&self) -> Vec<RolloutEvent> {
        std::mem::take(&mut self.lock().events)
    }

    async fn set_weight(&self, id: &RolloutId, router: RouterKind, weight: u8) -> Result<(), PlatformError> {
        self.call(id, format!("set-weight {weight}"), |w| w.router = Some(router)).await?;
        let route = id.to_string();
        self.router.set_weight(&route, weight).await?;
        // What the router serves is checked, not assumed.
        let served = self.router.weight(&route).await?;
        self.lock().world.entry(id.clone()).or_default().weight = served;
        if served != weight {
            return Err(PlatformError::failed(format!(
                "the router serves {served}% to {id}'s canary, not {weight}%"
            )));
        }
        Ok(())
    }

    async fn promote(&self, id: &RolloutId, revision: &str) -> Result<(), PlatformError> {
        self.call(id, format!("promote {revision}"), |w| w.promoted = Some(revision.to_string())).await
    }

    async fn scale(&self, id: &RolloutId, _revision: &str, scale: Scale) -> Result<(), PlatformError> {
        let up = scale == Scale::Up;
        self.call(id, format!("scale {}", if up { "up" } else { "down" }), |w| w.canary_up = up).await
    }
}
