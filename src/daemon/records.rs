//! Deployment records on disk: one JSON file per finished rollout, kept within a count
//! and an age, read by `canaryd records`.

use std::path::{Path, PathBuf};
use std::time::Duration;

use jiff::Timestamp;

use crate::record::DeploymentRecord;
use crate::store::StoreError;
use crate::store::file::write_atomically;

/// How many records are kept, and for how long.
#[derive(Clone, Debug, PartialEq)]
pub struct Retention {
    /// Most records kept; the oldest go first.
    pub max_count: usize,
    /// Records older than this go.
    pub max_age: Duration,
}

impl Default for Retention {
    fn default() -> Self {
        Retention { max_count: 1000, max_age: Duration::from_secs(90 * 24 * 3600) }
    }
}

/// A directory of deployment records.
pub struct RecordStore {
    dir: PathBuf,
    retention: Retention,
}

/// A record's file name: sortable by end time, unique per rollout revision.
fn file_name(record: &DeploymentRecord) -> String {
    let end = record.finished_at.or(record.started_at).map_or(0, |t| t.as_second());
    let id = record.id.replace(['/', '@'], "_");
    format!("{end:012}-{id}.json")
}

impl RecordStore {
    /// Records in `dir`, created if missing.
    pub fn open(dir: impl Into<PathBuf>, retention: Retention) -> Result<RecordStore, StoreError> {
        let dir = dir.into();
        std::fs::create_dir_all(&dir)
            .map_err(|e| StoreError::Io { path: dir.display().to_string(), message: e.to_string() })?;
        Ok(RecordStore { dir, retention })
    }

    /// Writes `record` and prunes past the retention, as of `now`.
    pub fn write(&self, record: &DeploymentRecord, now: Timestamp) -> Result<PathBuf, StoreError> {
        let path = self.dir.join(file_name(record));
        let bytes = serde_json::to_vec_pretty(record)
            .map_err(|e| StoreError::Io { path: path.display().to_string(), message: e.to_string() })?;
        write_atomically(&path, &bytes)?;
        self.prune(now);
        Ok(path)
    }

    /// Record files, oldest first.
    pub fn files(&self) -> Vec<PathBuf> {
        list(&self.dir)
    }

    fn prune(&self, now: Timestamp) {
        let files = self.files();
        let cutoff = now.as_second() - self.retention.max_age.as_secs() as i64;
        let excess = files.len().saturating_sub(self.retention.max_count);
        for (i, path) in files.iter().enumerate() {
            let ended = ended_at(path).unwrap_or(i64::MAX);
            if (i < excess || ended < cutoff)
                && let Err(e) = std::fs::remove_file(path)
            {
                tracing::warn!(path = %path.display(), error = %e, "cannot prune a deployment record");
            }
        }
    }
}

fn ended_at(path: &Path) -> Option<i64> {
    path.file_name()?.to_str()?.split('-').next()?.parse().ok()
}

/// The record files in `dir`, oldest first.
pub fn list(dir: &Path) -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .map(|entries| {
            entries
                .flatten()
                .map(|e| e.path())
                .filter(|p| p.extension().is_some_and(|x| x == "json") && ended_at(p).is_some())
                .collect()
        })
        .unwrap_or_default();
    files.sort();
    files
}

/// Reads one record file.
pub fn read(path: &Path) -> Result<DeploymentRecord, String> {
    let text = std::fs::read_to_string(path).map_err(|e| format!("{}: {e}", path.display()))?;
    serde_json::from_str(&text).map_err(|e| format!("{}: not a deployment record: {e}", path.display()))
}
