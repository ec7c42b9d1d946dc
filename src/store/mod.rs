//! Where the daemon keeps each rollout's state between ticks and across restarts: a
//! small, bounded [`RunState`] saved compare-and-swap with an opaque [`Version`]
//! ([`RunStore`], a tick's changes in one call), and the rollout's timeline beside it
//! ([`TimelineStore`]). Each platform brings its store: [`file::FileStore`] writes one
//! file per rollout atomically (temporary file, fsync, rename) for the local platform;
//! [`memory::MemoryStore`] serves tests and benchmarks, and survives a simulated crash
//! because it outlives the daemon.

pub mod file;
pub mod memory;

use std::pin::Pin;

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
    /// Compare-and-swap version: the store's, new at every save.
    #[serde(default)]
    pub version: Version,
}

/// A stored state's compare-and-swap version, opaque to the loop (a Kubernetes
/// `resourceVersion` is an opaque string). The default is "never saved".
#[derive(Serialize, Clone, Debug, Default, PartialEq, Eq, Hash)]
#[serde(transparent)]
pub struct Version(String);

impl Version {
    /// The version a store gave out.
    pub fn new(version: impl Into<String>) -> Version {
        Version(version.into())
    }

    /// As the store spelt it (empty: never saved).
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Display for Version {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.0.is_empty() { f.write_str("none (never saved)") } else { f.write_str(&self.0) }
    }
}

impl<'de> Deserialize<'de> for Version {
    /// A string, or the number state files held before versions were opaque (0 was
    /// "never saved").
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Version, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Stored {
            Opaque(String),
            Counter(u64),
        }
        Ok(match Stored::deserialize(deserializer)? {
            Stored::Opaque(s) => Version(s),
            Stored::Counter(0) => Version::default(),
            Stored::Counter(n) => Version(n.to_string()),
        })
    }
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
        stored: Version,
        /// Version the writer had.
        expected: Version,
    },
    /// Reading or writing failed.
    #[error("{path}: {message}")]
    Io {
        /// The file.
        path: String,
        /// What went wrong.
        message: String,
    },
    /// The store could not be reached or refused the write for another reason.
    #[error("{id}: {message}")]
    Unavailable {
        /// The rollout.
        id: String,
        /// What went wrong.
        message: String,
    },
}

/// The version after `stored` for a store that counts its saves (the file and memory
/// stores), if `state` was read at `stored`.
pub(crate) fn next_version(state: &RunState, stored: &Version) -> Result<Version, StoreError> {
    if *stored != state.version {
        return Err(StoreError::Conflict {
            id: state.rollout.id.to_string(),
            stored: stored.clone(),
            expected: state.version.clone(),
        });
    }
    // A counter that does not parse was written by hand or by another store: start over
    // above it rather than refuse every save.
    let count: u64 = stored.0.parse().unwrap_or(0);
    Ok(Version((count + 1).to_string()))
}

/// Persisted rollout states. Each call may be a network round trip (a Kubernetes
/// status write), so the loop hands over a tick's changed states in one call.
pub trait RunStore: Send + Sync + 'static {
    /// Every stored state, and a problem per entry that could not be read (the others
    /// load regardless).
    fn load_all(&self) -> impl Future<Output = (Vec<RunState>, Vec<StoreError>)> + Send;
    /// Saves each state if its stored version is still `state.version`: one result per
    /// state, in order, with the new version. A failure or conflict holds up only its
    /// own rollout.
    fn save_all(&self, states: &[&RunState])
    -> impl Future<Output = Vec<Result<Version, StoreError>>> + Send;
    /// One rollout's stored state, if there is one (for the API's detail view).
    fn load(&self, id: &RolloutId) -> impl Future<Output = Result<Option<RunState>, StoreError>> + Send;
    /// Forgets a rollout's state (after its record is written).
    fn remove(&self, id: &RolloutId) -> impl Future<Output = Result<(), StoreError>> + Send;
}

/// Each rollout's timeline: appended to at every interval, read back for its record.
/// Kept apart from the state: a long rollout's timeline is far larger than its state,
/// and is read only for records and the API.
pub trait TimelineStore: Send + Sync + 'static {
    /// Appends a point to a rollout's timeline.
    fn append_timeline(&self, id: &RolloutId, point: &TimelinePoint) -> Result<(), StoreError>;
    /// A rollout's timeline (bounded).
    fn timeline(&self, id: &RolloutId) -> Timeline;
    /// Forgets a rollout's timeline.
    fn forget_timeline(&self, id: &RolloutId) -> Result<(), StoreError>;
}

/// What the API reads of one rollout beyond its view: its stored decisions and its
/// latest timeline point. Every [`RunStore`] that is also a [`TimelineStore`] is one; the
/// API holds it as `dyn RolloutReader`, so the future is boxed.
pub trait RolloutReader: Send + Sync + 'static {
    /// The rollout's stored state, if there is one.
    fn state<'a>(
        &'a self,
        id: &'a RolloutId,
    ) -> Pin<Box<dyn Future<Output = Result<Option<RunState>, StoreError>> + Send + 'a>>;
    /// The rollout's latest timeline point, if it has one.
    fn latest(&self, id: &RolloutId) -> Option<TimelinePoint>;
}

impl<T: RunStore + TimelineStore> RolloutReader for T {
    fn state<'a>(
        &'a self,
        id: &'a RolloutId,
    ) -> Pin<Box<dyn Future<Output = Result<Option<RunState>, StoreError>> + Send + 'a>> {
        Box::pin(self.load(id))
    }

    fn latest(&self, id: &RolloutId) -> Option<TimelinePoint> {
        self.timeline(id).points.back().cloned()
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use crate::engine::Rollout;

    /// A never-saved state of rollout `shop/NAME` on `web-default`, for the stores' tests.
    pub(crate) fn state(name: &str) -> RunState {
        let loaded = crate::policy::load_paths(&["policies/web-default.yaml".into()]);
        let id = RolloutId { namespace: "shop".into(), name: name.into() };
        RunState {
            arms: crate::platform::kubernetes::arms(&id),
            rollout: Rollout::new(id, "v2", loaded.policies[0].plan.clone()),
            applied: Applied::default(),
            notified: 0,
            recorded: false,
            version: Version::default(),
        }
    }

    use super::*;

    #[derive(Deserialize)]
    struct Holder {
        #[serde(default)]
        version: Version,
    }

    #[test]
    fn a_version_reads_as_a_string_or_as_the_old_number() {
        let read = |json: &str| serde_json::from_str::<Holder>(json).unwrap().version;
        assert_eq!(read(r#"{"version": "17"}"#), Version::new("17"));
        assert_eq!(read(r#"{"version": "abc-9"}"#), Version::new("abc-9"));
        assert_eq!(read(r#"{"version": 4}"#), Version::new("4"));
        assert_eq!(read(r#"{"version": 0}"#), Version::default());
        assert_eq!(read("{}"), Version::default());
        assert!(serde_json::from_str::<Holder>(r#"{"version": [1]}"#).is_err());
        assert_eq!(serde_json::to_string(&Version::new("5")).unwrap(), r#""5""#);
    }
}
