//! Rollout states in memory, for tests and benchmarks.

use std::collections::HashMap;
use std::sync::Mutex;

use crate::engine::RolloutId;
use crate::record::{Timeline, TimelinePoint};
use crate::store::{RunState, RunStore, StoreError, next_version};

/// States in memory: for tests and benchmarks.
#[derive(Default)]
pub struct MemoryStore {
    inner: Mutex<(HashMap<RolloutId, RunState>, HashMap<RolloutId, Timeline>)>,
    saves: std::sync::atomic::AtomicU64,
}

impl MemoryStore {
    fn lock(
        &self,
    ) -> std::sync::MutexGuard<'_, (HashMap<RolloutId, RunState>, HashMap<RolloutId, Timeline>)> {
        self.inner.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// The stored state of a rollout.
    pub fn get(&self, id: &RolloutId) -> Option<RunState> {
        self.lock().0.get(id).cloned()
    }

    /// Saves so far.
    pub fn saves(&self) -> u64 {
        self.saves.load(std::sync::atomic::Ordering::Relaxed)
    }
}

impl RunStore for MemoryStore {
    fn load_all(&self) -> (Vec<RunState>, Vec<StoreError>) {
        (self.lock().0.values().cloned().collect(), Vec::new())
    }

    fn save(&self, state: &RunState) -> Result<u64, StoreError> {
        let mut inner = self.lock();
        let saved = next_version(state, inner.0.get(&state.rollout.id).map_or(0, |s| s.version))?;
        inner.0.insert(state.rollout.id.clone(), saved);
        self.saves.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        Ok(state.version + 1)
    }

    fn remove(&self, id: &RolloutId) -> Result<(), StoreError> {
        let mut inner = self.lock();
        inner.0.remove(id);
        inner.1.remove(id);
        Ok(())
    }

    fn append_timeline(&self, id: &RolloutId, point: &TimelinePoint) -> Result<(), StoreError> {
        self.lock().1.entry(id.clone()).or_default().push(point.clone());
        Ok(())
    }

    fn timeline(&self, id: &RolloutId) -> Timeline {
        self.lock().1.get(id).cloned().unwrap_or_default()
    }
}
