//! Where the daemon keeps each rollout's state between ticks and across restarts: a
//! small, bounded [`RunState`] saved with a compare-and-swap version, and the rollout's
//! timeline beside it. Each platform brings its store: [`file::FileStore`] writes one
//! file per rollout atomically (temporary file, fsync, rename) for the local platform;
//! [`memory::MemoryStore`] serves tests and benchmarks, and survives a simulated crash
//! because it outlives the daemon.

pub mod file;
pub mod memory;

use serde::{Deserialize, Serialize};

use crate::engine::{Arms, Rollout, RolloutId, Scale};
use crate::record::{Timeline, TimelinePoint};

/// What the platform has confirmed for a rollout: executors compare it with the desired
/// world and do only the difference.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct Applied {
    /// Canary weight last confirmed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub weight: Option<u8>,
    /// Canary scale last confirmed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub canary: Option<Scale>,
    /// Revision whose promotion was confirmed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub promoted: Option<String>,
}

/// Everything persisted about one rollout.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct RunState {
    /// The engine's state.
    pub rollout: Rollout,
    /// The workloads measured as canary and baseline.
    pub arms: Arms,
    /// What the platform has confirmed.
    #[serde(default)]
    pub applied: Applied,
    /// Decisions whose notifications were delivered: every `seq` below this.
    #[serde(default)]
    pub notified: u64,
    /// Whether the deployment record of the finished rollout was written.
    #[serde(default)]
    pub recorded: bool,
    /// Compare-and-swap version: the store's, bumped by every save.
    #[serde(default)]
    pub version: u64,
}

/// Why the store refused or failed.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// Someone else saved a newer version.
    #[error("{id}: stored version is {stored}, expected {expected}")]
    Conflict {
        /// The rollout.
        id: String,
        /// Version found.
        stored: u64,
        /// Version the writer had.
        expected: u64,
    },
    /// Reading or writing failed.
    #[error("{path}: {message}")]
    Io {
        /// The file.
        path: String,
        /// What went wrong.
        message: String,
    },
}

/// `state` with its version bumped, if `stored` is the version it was read at.
pub(crate) fn next_version(state: &RunState, stored: u64) -> Result<RunState, StoreError> {
    if stored != state.version {
        return Err(StoreError::Conflict {
            id: state.rollout.id.to_string(),
            stored,
            expected: state.version,
        });
    }
    let mut saved = state.clone();
    saved.version += 1;
    Ok(saved)
}

/// Persisted rollout states.
pub trait RunStore: Send + Sync + 'static {
    /// Every stored state, and a problem per entry that could not be read (the others
    /// load regardless).
    fn load_all(&self) -> (Vec<RunState>, Vec<StoreError>);
    /// Saves `state` if the stored version is still `state.version`; returns the new
    /// version.
    fn save(&self, state: &RunState) -> Result<u64, StoreError>;
    /// Forgets a rollout (after its record is written).
    fn remove(&self, id: &RolloutId) -> Result<(), StoreError>;
    /// Appends a point to a rollout's timeline.
    fn append_timeline(&self, id: &RolloutId, point: &TimelinePoint) -> Result<(), StoreError>;
    /// A rollout's timeline (bounded).
    fn timeline(&self, id: &RolloutId) -> Timeline;
}
