//! Rollout states in files: one per rollout, written atomically, with its timeline as
//! JSON lines beside it.

use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use crate::engine::RolloutId;
use crate::record::{Timeline, TimelinePoint};
use crate::store::{RunState, RunStore, StoreError, TimelineStore, Version, next_version};

/// One JSON file per rollout in a directory, written atomically; the timeline is a
/// JSON-lines file beside it, appended to and compacted when it doubles its bound.
pub struct FileStore {
    dir: PathBuf,
    lock: Mutex<()>,
}

fn io_error(path: &Path, e: impl std::fmt::Display) -> StoreError {
    StoreError::Io { path: path.display().to_string(), message: e.to_string() }
}

/// Writes `bytes` to `path` atomically: a temporary file beside it, fsync, rename.
pub fn write_atomically(path: &Path, bytes: &[u8]) -> Result<(), StoreError> {
    let tmp = path.with_extension("tmp");
    let mut file = std::fs::File::create(&tmp).map_err(|e| io_error(&tmp, e))?;
    file.write_all(bytes).map_err(|e| io_error(&tmp, e))?;
    file.sync_all().map_err(|e| io_error(&tmp, e))?;
    std::fs::rename(&tmp, path).map_err(|e| io_error(path, e))?;
    if let Some(dir) = path.parent().and_then(|d| std::fs::File::open(d).ok()) {
        // The rename itself is durable only once the directory is synced.
        let _ = dir.sync_all();
    }
    Ok(())
}

impl FileStore {
    /// A store in `dir`, created if missing.
    pub fn open(dir: impl Into<PathBuf>) -> Result<FileStore, StoreError> {
        let dir = dir.into();
        std::fs::create_dir_all(&dir).map_err(|e| io_error(&dir, e))?;
        Ok(FileStore { dir, lock: Mutex::new(()) })
    }

    fn stem(id: &RolloutId) -> String {
        // Kubernetes names hold no `_`, so `namespace_name` cannot collide.
        format!("{}_{}", id.namespace, id.name)
    }

    fn state_path(&self, id: &RolloutId) -> PathBuf {
        self.dir.join(format!("{}.json", Self::stem(id)))
    }

    fn timeline_path(&self, id: &RolloutId) -> PathBuf {
        self.dir.join(format!("{}.timeline.jsonl", Self::stem(id)))
    }

    /// One rollout's stored state, if there is one (what the API shows in detail).
    pub fn load(&self, id: &RolloutId) -> Result<Option<RunState>, StoreError> {
        let path = self.state_path(id);
        if !path.exists() {
            return Ok(None);
        }
        Self::read(&path).map(Some)
    }

    fn read(path: &Path) -> Result<RunState, StoreError> {
        let text = std::fs::read_to_string(path).map_err(|e| io_error(path, e))?;
        serde_json::from_str(&text).map_err(|e| io_error(path, format!("not a rollout state: {e}")))
    }
}

/// Whether a non-empty file's last byte is not a newline.
fn ends_mid_line(file: &mut std::fs::File) -> std::io::Result<bool> {
    use std::io::{Read as _, Seek as _, SeekFrom};
    if file.metadata()?.len() == 0 {
        return Ok(false);
    }
    file.seek(SeekFrom::End(-1))?;
    let mut last = [0u8; 1];
    file.read_exact(&mut last)?;
    Ok(last[0] != b'\n')
}

impl FileStore {
    fn load_every(&self) -> (Vec<RunState>, Vec<StoreError>) {
        let (mut states, mut problems) = (Vec::new(), Vec::new());
        let entries = match std::fs::read_dir(&self.dir) {
            Ok(entries) => entries,
            Err(e) => return (states, vec![io_error(&self.dir, e)]),
        };
        for entry in entries.flatten() {
            let path = entry.path();
            let name = path.file_name().and_then(|n| n.to_str()).unwrap_or_default();
            if !name.ends_with(".json") || name.starts_with('.') {
                continue;
            }
            match Self::read(&path) {
                Ok(s) => states.push(s),
                Err(e) => problems.push(e),
            }
        }
        states.sort_by(|a, b| a.rollout.id.cmp(&b.rollout.id));
        (states, problems)
    }

    /// Saves one state compare-and-swap; returns its new version.
    fn save(&self, state: &RunState) -> Result<Version, StoreError> {
        let _guard = self.lock.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        let path = self.state_path(&state.rollout.id);
        let stored = if path.exists() { Self::read(&path)?.version } else { Version::default() };
        let mut saved = state.clone();
        saved.version = next_version(state, &stored)?;
        let bytes = serde_json::to_vec_pretty(&saved).map_err(|e| io_error(&path, e))?;
        write_atomically(&path, &bytes)?;
        Ok(saved.version)
    }

    fn remove_file(path: &Path) -> Result<(), StoreError> {
        match std::fs::remove_file(path) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(io_error(path, e)),
        }
    }
}

/// The files are local: each call does its work before it returns, on the loop's
/// thread, as one fsync'd write per changed rollout.
impl RunStore for FileStore {
    async fn load_all(&self) -> (Vec<RunState>, Vec<StoreError>) {
        self.load_every()
    }

    async fn save_all(&self, states: &[&RunState]) -> Vec<Result<Version, StoreError>> {
        states.iter().map(|state| self.save(state)).collect()
    }

    async fn load(&self, id: &RolloutId) -> Result<Option<RunState>, StoreError> {
        FileStore::load(self, id)
    }

    async fn remove(&self, id: &RolloutId) -> Result<(), StoreError> {
        Self::remove_file(&self.state_path(id))
    }
}

impl TimelineStore for FileStore {
    fn append_timeline(&self, id: &RolloutId, point: &TimelinePoint) -> Result<(), StoreError> {
        let path = self.timeline_path(id);
        let mut line = serde_json::to_vec(point).map_err(|e| io_error(&path, e))?;
        line.push(b'\n');
        let mut file = std::fs::OpenOptions::new()
            .create(true)
            .read(true)
            .append(true)
            .open(&path)
            .map_err(|e| io_error(&path, e))?;
        // A line torn by a crash is closed first, so this one stands on its own.
        if ends_mid_line(&mut file).map_err(|e| io_error(&path, e))? {
            line.insert(0, b'\n');
        }
        file.write_all(&line).map_err(|e| io_error(&path, e))?;
        let len = file.metadata().map(|m| m.len()).unwrap_or(0);
        // Compact once the file holds about twice the bound (rows are ~100–300 bytes).
        if len > (crate::record::TIMELINE_LIMIT as u64) * 600 {
            let timeline = self.timeline(id);
            let mut text = Vec::new();
            for p in &timeline.points {
                text.extend(serde_json::to_vec(p).map_err(|e| io_error(&path, e))?);
                text.push(b'\n');
            }
            write_atomically(&path, &text)?;
        }
        Ok(())
    }

    fn timeline(&self, id: &RolloutId) -> Timeline {
        let mut timeline = Timeline::default();
        let Ok(text) = std::fs::read_to_string(self.timeline_path(id)) else { return timeline };
        // A line cut short by a crash is skipped; the others stand.
        for point in text.lines().filter_map(|l| serde_json::from_str::<TimelinePoint>(l).ok()) {
            timeline.push(point);
        }
        timeline
    }

    fn forget_timeline(&self, id: &RolloutId) -> Result<(), StoreError> {
        Self::remove_file(&self.timeline_path(id))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    use crate::store::tests::state;

    #[test]
    fn files_round_trip_and_a_stale_version_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let store = FileStore::open(dir.path().join("state")).unwrap();
        let mut s = state("web");
        s.version = store.save(&s).unwrap();
        assert_eq!(s.version, Version::new("1"));
        // A writer still holding the unsaved state (another replica, a stale copy) is refused.
        let mut stale = s.clone();
        stale.version = Version::default();
        let err = store.save(&stale).unwrap_err();
        assert!(
            matches!(&err, StoreError::Conflict { stored, expected, .. }
                if *stored == Version::new("1") && *expected == Version::default()),
            "{err}"
        );
        s.applied.weight = Some(10);
        let results = futures::executor::block_on(store.save_all(&[&s]));
        s.version = results.into_iter().next().unwrap().unwrap();
        assert_eq!(s.version, Version::new("2"));
        let (loaded, problems) = futures::executor::block_on(store.load_all());
        assert!(problems.is_empty(), "{problems:?}");
        assert_eq!(loaded, vec![s.clone()]);
        // No temporary file is left behind by the atomic writes.
        let names: Vec<String> = std::fs::read_dir(dir.path().join("state"))
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into())
            .collect();
        assert_eq!(names, ["shop_web.json"]);
    }

    #[test]
    fn an_unreadable_file_is_reported_by_path_and_the_others_load() {
        let dir = tempfile::tempdir().unwrap();
        let store = FileStore::open(dir.path()).unwrap();
        store.save(&state("good")).unwrap();
        std::fs::write(dir.path().join("shop_torn.json"), "{\"rollout\": {").unwrap();
        let (loaded, problems) = futures::executor::block_on(store.load_all());
        assert_eq!(loaded.len(), 1);
        assert_eq!(problems.len(), 1);
        let message = problems[0].to_string();
        assert!(message.contains("shop_torn.json") && message.contains("not a rollout state"), "{message}");
    }

    #[test]
    fn the_timeline_survives_a_torn_last_line_and_is_forgotten_with_its_rollout() {
        let dir = tempfile::tempdir().unwrap();
        let store = FileStore::open(dir.path()).unwrap();
        let id = state("web").rollout.id;
        let point = |i: i64| TimelinePoint {
            at: jiff::Timestamp::from_second(1_700_000_000 + 30 * i).unwrap(),
            step: 0,
            weight: 10,
            outcomes: "pp".into(),
            values: vec![(Some(0.01), Some(0.011)), (None, Some(0.2))],
            triggers: vec![],
        };
        for i in 0..3 {
            store.append_timeline(&id, &point(i)).unwrap();
        }
        // A crash in the middle of an append leaves half a line.
        let path = dir.path().join("shop_web.timeline.jsonl");
        let mut text = std::fs::read_to_string(&path).unwrap();
        text.push_str("{\"at\":\"2023");
        std::fs::write(&path, text).unwrap();
        // The next append after the restart starts on a line of its own.
        store.append_timeline(&id, &point(3)).unwrap();
        let timeline = store.timeline(&id);
        assert_eq!(
            timeline.points.iter().cloned().collect::<Vec<_>>(),
            (0..4).map(point).collect::<Vec<_>>()
        );
        store.forget_timeline(&id).unwrap();
        assert!(store.timeline(&id).points.is_empty() && !path.exists());
    }

    #[test]
    fn a_state_file_with_the_old_numeric_version_loads_and_is_saved_on_top() {
        let dir = tempfile::tempdir().unwrap();
        let store = FileStore::open(dir.path()).unwrap();
        // A file as the numeric-version format wrote it, after its third save.
        let mut old = serde_json::to_value(state("web")).unwrap();
        old["version"] = serde_json::json!(3);
        let path = dir.path().join("shop_web.json");
        std::fs::write(&path, serde_json::to_vec_pretty(&old).unwrap()).unwrap();
        let (mut loaded, problems) = futures::executor::block_on(store.load_all());
        assert!(problems.is_empty(), "{problems:?}");
        assert_eq!(loaded[0].version, Version::new("3"));
        // The loaded version is the one compared: the next save succeeds, a stale one not.
        loaded[0].applied.weight = Some(10);
        assert_eq!(store.save(&loaded[0]).unwrap(), Version::new("4"));
        assert!(matches!(store.save(&loaded[0]), Err(StoreError::Conflict { .. })));
        let text = std::fs::read_to_string(&path).unwrap();
        assert!(text.contains("\"version\": \"4\""), "{text}");
    }

    #[test]
    fn removing_a_rollout_forgets_its_state_not_its_timeline() {
        let dir = tempfile::tempdir().unwrap();
        let store = FileStore::open(dir.path()).unwrap();
        let s = state("web");
        store.save(&s).unwrap();
        let id = s.rollout.id.clone();
        let point = TimelinePoint {
            at: jiff::Timestamp::from_second(1_700_000_000).unwrap(),
            step: 0,
            weight: 10,
            outcomes: "p".into(),
            values: vec![(Some(0.01), Some(0.011))],
            triggers: vec![],
        };
        store.append_timeline(&id, &point).unwrap();
        futures::executor::block_on(store.remove(&id)).unwrap();
        assert_eq!(store.load(&id).unwrap(), None);
        assert_eq!(store.timeline(&id).points.len(), 1, "the timeline is its own store's");
        // Removing what is gone is not an error.
        futures::executor::block_on(store.remove(&id)).unwrap();
    }
}
