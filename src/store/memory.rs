//! Rollout states in memory, for tests and benchmarks, with faults to inject.

use std::collections::HashMap;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};

use crate::engine::RolloutId;
use crate::record::{Timeline, TimelinePoint};
use crate::store::{RunState, RunStore, StoreError, TimelineStore, Version, next_version};

/// What [`MemoryStore`] is to do with a save of a rollout.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StoreFault {
    /// Refuse it as if the store could not be reached.
    Fail,
    /// Refuse it as if another writer had saved a newer version.
    Conflict,
}

#[derive(Default)]
struct Inner {
    states: HashMap<RolloutId, RunState>,
    timelines: HashMap<RolloutId, Timeline>,
    faults: HashMap<RolloutId, StoreFault>,
}

/// Called with each state as it is saved.
type Witness = Box<dyn Fn(&RunState) + Send + Sync>;

/// States in memory: for tests and benchmarks. Saves of chosen rollouts can be made to
/// fail or conflict, and a witness can see each save as it lands. Like a store across
/// the network, a save gives way to the runtime's other tasks before it lands.
#[derive(Default)]
pub struct MemoryStore {
    inner: Mutex<Inner>,
    saves: AtomicU64,
    batches: AtomicU64,
    witness: Mutex<Option<Witness>>,
}

impl MemoryStore {
    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// The stored state of a rollout.
    pub fn get(&self, id: &RolloutId) -> Option<RunState> {
        self.lock().states.get(id).cloned()
    }

    /// States saved so far.
    pub fn saves(&self) -> u64 {
        self.saves.load(Ordering::Relaxed)
    }

    /// Calls of [`RunStore::save_all`] so far, each with at least one state.
    pub fn batches(&self) -> u64 {
        self.batches.load(Ordering::Relaxed)
    }

    /// Makes saves of `id` fail or conflict until cleared (`None`).
    pub fn fault(&self, id: &RolloutId, fault: Option<StoreFault>) {
        let mut inner = self.lock();
        match fault {
            Some(f) => inner.faults.insert(id.clone(), f),
            None => inner.faults.remove(id),
        };
    }

    /// Calls `witness` with every state saved from now on, as it lands (what else had
    /// happened by then is what a test wants to know).
    pub fn on_save(&self, witness: impl Fn(&RunState) + Send + Sync + 'static) {
        *self.witness.lock().unwrap_or_else(std::sync::PoisonError::into_inner) = Some(Box::new(witness));
    }

    /// Saves one state unless a fault says otherwise.
    fn save(inner: &mut Inner, state: &RunState) -> Result<Version, StoreError> {
        let id = &state.rollout.id;
        let stored = inner.states.get(id).map(|s| s.version.clone()).unwrap_or_default();
        match inner.faults.get(id) {
            Some(StoreFault::Fail) => {
                return Err(StoreError::Unavailable {
                    id: id.to_string(),
                    message: "the store is unreachable (injected failure)".into(),
                });
            }
            Some(StoreFault::Conflict) => {
                return Err(StoreError::Conflict {
                    id: id.to_string(),
                    stored: Version::new("another writer's (injected conflict)"),
                    expected: state.version.clone(),
                });
            }
            None => {}
        }
        let mut saved = state.clone();
        saved.version = next_version(state, &stored)?;
        let version = saved.version.clone();
        inner.states.insert(id.clone(), saved);
        Ok(version)
    }
}

impl RunStore for MemoryStore {
    async fn load_all(&self) -> (Vec<RunState>, Vec<StoreError>) {
        let mut states: Vec<RunState> = self.lock().states.values().cloned().collect();
        states.sort_by(|a, b| a.rollout.id.cmp(&b.rollout.id));
        (states, Vec::new())
    }

    async fn save_all(&self, states: &[&RunState]) -> Vec<Result<Version, StoreError>> {
        if !states.is_empty() {
            self.batches.fetch_add(1, Ordering::Relaxed);
        }
        // A network round trip: whatever the caller spawned before saving may run now.
        tokio::task::yield_now().await;
        let results: Vec<_> = {
            let mut inner = self.lock();
            states.iter().map(|state| Self::save(&mut inner, state)).collect()
        };
        self.saves.fetch_add(results.iter().filter(|r| r.is_ok()).count() as u64, Ordering::Relaxed);
        if let Some(witness) = &*self.witness.lock().unwrap_or_else(std::sync::PoisonError::into_inner) {
            for (state, _) in states.iter().zip(&results).filter(|(_, r)| r.is_ok()) {
                witness(state);
            }
        }
        results
    }

    async fn load(&self, id: &RolloutId) -> Result<Option<RunState>, StoreError> {
        Ok(self.lock().states.get(id).cloned())
    }

    async fn remove(&self, id: &RolloutId) -> Result<(), StoreError> {
        self.lock().states.remove(id);
        Ok(())
    }
}

impl TimelineStore for MemoryStore {
    fn append_timeline(&self, id: &RolloutId, point: &TimelinePoint) -> Result<(), StoreError> {
        self.lock().timelines.entry(id.clone()).or_default().push(point.clone());
        Ok(())
    }

    fn timeline(&self, id: &RolloutId) -> Timeline {
        self.lock().timelines.get(id).cloned().unwrap_or_default()
    }

    fn forget_timeline(&self, id: &RolloutId) -> Result<(), StoreError> {
        self.lock().timelines.remove(id);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    use crate::store::tests::state;

    #[tokio::test]
    async fn a_fault_refuses_only_its_rollout_until_cleared() {
        let store = MemoryStore::default();
        let witnessed = std::sync::Arc::new(Mutex::new(Vec::new()));
        let w = witnessed.clone();
        store.on_save(move |s| w.lock().unwrap().push(s.rollout.id.name.clone()));
        let (a, b) = (state("a"), state("b"));
        store.fault(&a.rollout.id, Some(StoreFault::Fail));
        let results = store.save_all(&[&a, &b]).await;
        assert!(matches!(results[0], Err(StoreError::Unavailable { .. })), "{results:?}");
        assert_eq!(results[1].as_ref().unwrap(), &Version::new("1"));
        assert_eq!((store.get(&a.rollout.id), store.saves(), store.batches()), (None, 1, 1));

        store.fault(&a.rollout.id, Some(StoreFault::Conflict));
        let results = store.save_all(&[&a]).await;
        assert!(
            matches!(&results[0], Err(StoreError::Conflict { expected, .. }) if *expected == Version::default()),
            "{results:?}"
        );
        assert_eq!(store.get(&a.rollout.id), None, "a conflict stores nothing");

        store.fault(&a.rollout.id, None);
        let results = store.save_all(&[&a]).await;
        assert_eq!(results[0].as_ref().unwrap(), &Version::new("1"));
        assert_eq!(store.get(&a.rollout.id).unwrap().version, Version::new("1"));
        // The saved version is compared: the unsaved copy is now stale.
        let results = store.save_all(&[&a]).await;
        assert!(matches!(results[0], Err(StoreError::Conflict { .. })), "{results:?}");
        assert_eq!(*witnessed.lock().unwrap(), ["b", "a"], "the witness sees the saves that landed");
    }
}
