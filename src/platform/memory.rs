//! An in-memory platform for tests and benchmarks: events are pushed in, calls are
//! recorded, and calls for chosen rollouts can be made to fail or hang. It implements
//! [`Platform`] exactly as a real platform does, so the loop cannot tell it apart.

use std::collections::{HashMap, HashSet};
use std::sync::Mutex;

use crate::engine::plan::RouterKind;
use crate::engine::{RolloutId, Scale};
use crate::platform::{NewRevision, Platform, PlatformError, RolloutEvent};

/// What [`MemoryPlatform`] is to do with a call for a rollout.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Fault {
    /// Fail every call.
    Fail,
    /// Never answer.
    Hang,
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

/// The world as the in-memory platform holds it for a rollout.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct World {
    /// Canary weight.
    pub weight: u8,
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
        MemoryPlatform { created: tokio::time::Instant::now(), inner: Mutex::new(inner) }
    }

    /// A platform that keeps only the world, not the call log (for benchmarks).
    pub fn without_call_log() -> MemoryPlatform {
        MemoryPlatform { created: tokio::time::Instant::now(), inner: Mutex::new(Inner::default()) }
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
                return Err(PlatformError(format!("{what} refused for {id} (injected failure)")));
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

    async fn set_weight(&self, id: &RolloutId, weight: u8) -> Result<(), PlatformError> {
        self.call(id, format!("set-weight {weight}"), |w| w.weight = weight).await
    }

    async fn promote(&self, id: &RolloutId, revision: &str) -> Result<(), PlatformError> {
        self.call(id, format!("promote {revision}"), |w| w.promoted = Some(revision.to_string())).await
    }

    async fn scale(&self, id: &RolloutId, _revision: &str, scale: Scale) -> Result<(), PlatformError> {
        let up = scale == Scale::Up;
        self.call(id, format!("scale {}", if up { "up" } else { "down" }), |w| w.canary_up = up).await
    }
}
