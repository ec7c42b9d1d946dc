//! Rollout states in the API server: each rollout's [`RunState`] in the status of its
//! `CanaryRun`, written compare-and-swap on `resourceVersion` (the state's
//! [`Version`]), and a restarted daemon lists them to resume.
//!
//! **Write budget.** The judge's running sums change at every interval: writing each
//! would be one status write per rollout per interval (333 writes/s at 10,000 rollouts
//! on 30 s). So a state is written at once when anything the platform acts on or a
//! person reads changes (phase, step, weight, decisions, confirmed actions, counters
//! that lead to a rollback), and otherwise at most once per checkpoint period
//! ([`Checkpoints`]). A daemon restarted from a checkpoint loses only intervals of
//! running sums: its next measurement covers the time since the checkpoint's last
//! evaluation, so no traffic goes uncounted and none is counted twice.
//!
//! **Conflicts.** A 409 re-reads the object. If the stored state is not ahead of ours
//! (same revision, no more decisions), the write is retried on the new
//! `resourceVersion`: someone else's edit of the status is overwritten, and nothing of
//! ours is lost. A stored state that is ahead (another daemon ran this rollout further)
//! is a [`StoreError::Conflict`].
//!
//! Timelines are kept in memory (bounded per rollout): on Kubernetes the record of a
//! finished rollout is written from what this process saw.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;

use jiff::Timestamp;
use k8s_openapi::api::apps::v1::Deployment;
use kube::api::{Api, ListParams, PostParams};
use serde_json::Value;

use super::canaryrun::{CanaryRun, new_run, state_of, status_of};
use super::shards::Shard;
use crate::engine::RolloutId;
use crate::record::{Timeline, TimelinePoint};
use crate::store::{RunState, RunStore, StoreError, TimelineStore, Version};

/// How often a state whose only changes are the judge's running sums is written.
pub const DEFAULT_CHECKPOINT: Duration = Duration::from_secs(300);
/// Status writes in flight at once.
const WRITES_IN_FLIGHT: usize = 64;
/// Writes retried after a 409 whose stored state is not ahead of ours.
const CONFLICT_RETRIES: usize = 3;

/// Which saves are written, and which wait for the next checkpoint. Pure: the clock is
/// passed in.
#[derive(Debug, Default)]
pub struct Checkpoints {
    period: Duration,
    /// Per rollout: a fingerprint of the significant part last written, and when. A
    /// fingerprint, not the part itself: at 10,000 rollouts a copy of each state as a
    /// JSON value would hold hundreds of megabytes.
    written: HashMap<RolloutId, (u64, Timestamp)>,
}

impl Checkpoints {
    /// Sums-only changes are written at most once per `period`.
    pub fn new(period: Duration) -> Checkpoints {
        Checkpoints { period, written: HashMap::new() }
    }

    /// Whether `state` must be written at `now`: never written, something significant
    /// changed, or the last write is a period old.
    pub fn due(&self, state: &RunState, now: Timestamp) -> bool {
        match self.written.get(&state.rollout.id) {
            None => true,
            Some((significant, at)) => {
                *significant != significant_part(state)
                    || now.duration_since(*at).unsigned_abs() >= self.period
            }
        }
    }

    /// Notes that `state` was written at `now`.
    pub fn wrote(&mut self, state: &RunState, now: Timestamp) {
        self.written.insert(state.rollout.id.clone(), (significant_part(state), now));
    }

    /// Forgets a rollout.
    pub fn forget(&mut self, id: &RolloutId) {
        self.written.remove(id);
    }
}

/// A fingerprint of the state without what changes at every interval and can be
/// rebuilt from Prometheus after a restart: the judge's running sums, the
/// recent-interval summary and the evaluation clock. Everything else is written at once.
/// The part is hashed in its JSON form (object keys sorted, so the same state always
/// hashes the same within this process). Two different parts share a 64-bit fingerprint
/// with a chance of about 1 in 2^64; the worst a collision does is delay that one write
/// to the next checkpoint.
fn significant_part(state: &RunState) -> u64 {
    use std::hash::{Hash, Hasher};
    let mut hasher = std::hash::DefaultHasher::new();
    serde_json::to_vec(&significant_value(state)).unwrap_or_default().hash(&mut hasher);
    hasher.finish()
}

fn significant_value(state: &RunState) -> Value {
    let mut value = serde_json::to_value(state).unwrap_or(Value::Null);
    if let Some(rollout) = value.get_mut("rollout").and_then(Value::as_object_mut) {
        for running in ["metrics", "recent", "intervalsAnalysed", "lastEvaluation", "nextEvaluation"] {
            rollout.remove(running);
        }
    }
    value.as_object_mut().map(|v| v.remove("version"));
    value
}

/// A clock for the checkpoints (injected in tests).
pub type Clock = Box<dyn Fn() -> Timestamp + Send + Sync>;

/// [`RunStore`] on `CanaryRun` objects, with timelines in memory.
pub struct CanaryRunStore {
    client: kube::Client,
    /// The namespaces whose CanaryRuns are loaded (`None`: every namespace).
    namespaces: Option<Vec<String>>,
    /// The shard whose CanaryRuns are loaded (`None`: every rollout).
    shard: Option<Shard>,
    checkpoints: Mutex<Checkpoints>,
    clock: Clock,
    timelines: Mutex<HashMap<RolloutId, Timeline>>,
}

impl CanaryRunStore {
    /// A store on `client`, for the CanaryRuns of `namespaces` (`None`: all).
    pub fn new(
        client: kube::Client,
        namespaces: Option<Vec<String>>,
        checkpoint: Duration,
    ) -> CanaryRunStore {
        CanaryRunStore {
            client,
            namespaces,
            shard: None,
            checkpoints: Mutex::new(Checkpoints::new(checkpoint)),
            clock: Box::new(Timestamp::now),
            timelines: Mutex::new(HashMap::new()),
        }
    }

    /// The same, loading only the rollouts of `shard`.
    pub fn with_shard(mut self, shard: Shard) -> CanaryRunStore {
        self.shard = Some(shard);
        self
    }

    /// The same with another clock.
    pub fn with_clock(mut self, clock: Clock) -> CanaryRunStore {
        self.clock = clock;
        self
    }

    fn runs(&self, namespace: &str) -> Api<CanaryRun> {
        Api::namespaced(self.client.clone(), namespace)
    }

    fn checkpoints(&self) -> std::sync::MutexGuard<'_, Checkpoints> {
        self.checkpoints.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn timelines(&self) -> std::sync::MutexGuard<'_, HashMap<RolloutId, Timeline>> {
        self.timelines.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Writes one state: creates its CanaryRun if it was never saved, then its status,
    /// compare-and-swap.
    async fn save(&self, state: &RunState) -> Result<Version, StoreError> {
        let id = &state.rollout.id;
        let api = self.runs(&id.namespace);
        let mut expected = state.version.clone();
        if expected.as_str().is_empty() {
            expected = self.create(state).await?;
        }
        let mut run = new_run(state, &Deployment::default());
        run.metadata.owner_references = None;
        run.status = Some(status_of(state));
        for _ in 0..=CONFLICT_RETRIES {
            run.metadata.resource_version = Some(expected.as_str().to_string());
            match api.replace_status(&id.name, &PostParams::default(), &run).await {
                Ok(written) => {
                    return Ok(Version::new(written.metadata.resource_version.unwrap_or_default()));
                }
                Err(kube::Error::Api(status)) if status.is_conflict() => {
                    let stored = api.get(&id.name).await.map_err(|e| unavailable(id, &e))?;
                    let stored_version =
                        Version::new(stored.metadata.resource_version.clone().unwrap_or_default());
                    if let Ok(Some(theirs)) = state_of(&stored)
                        && ahead_of(&theirs, state)
                    {
                        return Err(StoreError::Conflict {
                            id: id.to_string(),
                            stored: stored_version,
                            expected,
                        });
                    }
                    tracing::info!(rollout = %id, "CanaryRun status changed by someone else; writing ours again on the new resourceVersion");
                    expected = stored_version;
                }
                Err(e) => return Err(unavailable(id, &e)),
            }
        }
        Err(StoreError::Unavailable {
            id: id.to_string(),
            message: format!("status write conflicted {} times in a row", CONFLICT_RETRIES + 1),
        })
    }

    /// Creates the CanaryRun of a never-saved state, owned by its Deployment; the
    /// version to write its status on. One left by an earlier rollout of the same
    /// Deployment is taken over.
    async fn create(&self, state: &RunState) -> Result<Version, StoreError> {
        let id = &state.rollout.id;
        let deployments: Api<Deployment> = Api::namespaced(self.client.clone(), &id.namespace);
        let owner = deployments.get_opt(&id.name).await.map_err(|e| unavailable(id, &e))?.unwrap_or_default();
        let run = new_run(state, &owner);
        let api = self.runs(&id.namespace);
        let created = match api.create(&PostParams::default(), &run).await {
            Ok(created) => created,
            Err(kube::Error::Api(status)) if status.is_already_exists() => {
                api.get(&id.name).await.map_err(|e| unavailable(id, &e))?
            }
            Err(e) => return Err(unavailable(id, &e)),
        };
        Ok(Version::new(created.metadata.resource_version.unwrap_or_default()))
    }
}

/// Whether `stored` is further along than `ours`: the same rollout with more decisions.
fn ahead_of(stored: &RunState, ours: &RunState) -> bool {
    stored.rollout.revision == ours.rollout.revision
        && stored.rollout.decisions_made > ours.rollout.decisions_made
}

fn unavailable(id: &RolloutId, error: &kube::Error) -> StoreError {
    StoreError::Unavailable { id: id.to_string(), message: format!("CanaryRun {id}: {error}") }
}

impl RunStore for CanaryRunStore {
    async fn load_all(&self) -> (Vec<RunState>, Vec<StoreError>) {
        let apis: Vec<Api<CanaryRun>> = match &self.namespaces {
            None => vec![Api::all(self.client.clone())],
            Some(namespaces) => namespaces.iter().map(|ns| self.runs(ns)).collect(),
        };
        let (mut states, mut problems) = (Vec::new(), Vec::new());
        for api in apis {
            let mut params = ListParams::default().limit(500);
            loop {
                let page = match api.list(&params).await {
                    Ok(page) => page,
                    Err(e) => {
                        problems.push(StoreError::Unavailable {
                            id: "CanaryRuns".into(),
                            message: format!("list: {e}"),
                        });
                        break;
                    }
                };
                for run in &page.items {
                    match state_of(run) {
                        Ok(Some(state)) if self.shard.is_none_or(|s| s.owns(&state.rollout.id)) => {
                            states.push(state)
                        }
                        Ok(Some(_)) => {}
                        Ok(None) => {}
                        Err(e) => problems.push(StoreError::Unavailable {
                            id: format!("{}/{}", e.namespace, e.name),
                            message: e.to_string(),
                        }),
                    }
                }
                match page.metadata.continue_.filter(|c| !c.is_empty()) {
                    Some(token) => params = params.continue_token(&token),
                    None => break,
                }
            }
        }
        let now = (self.clock)();
        let mut checkpoints = self.checkpoints();
        for state in &states {
            checkpoints.wrote(state, now);
        }
        (states, problems)
    }

    async fn save_all(&self, states: &[&RunState]) -> Vec<Result<Version, StoreError>> {
        let now = (self.clock)();
        let due: Vec<bool> = {
            let checkpoints = self.checkpoints();
            states.iter().map(|s| checkpoints.due(s, now)).collect()
        };
        // At most WRITES_IN_FLIGHT at once: a daemon resuming 10,000 rollouts must not
        // open 10,000 connections to the API server. In order, one result per state.
        let mut written: Vec<Option<Result<Version, StoreError>>> = Vec::with_capacity(states.len());
        for (chunk, due) in states.chunks(WRITES_IN_FLIGHT).zip(due.chunks(WRITES_IN_FLIGHT)) {
            let writes = chunk
                .iter()
                .zip(due)
                .map(|(state, due)| async move { if *due { Some(self.save(state).await) } else { None } });
            written.extend(futures::future::join_all(writes).await);
        }
        let mut checkpoints = self.checkpoints();
        states
            .iter()
            .zip(written)
            .map(|(state, written)| match written {
                // Not due: the stored object is as it was, at the version we hold.
                None => Ok(state.version.clone()),
                Some(result) => {
                    if result.is_ok() {
                        checkpoints.wrote(state, now);
                    }
                    result
                }
            })
            .collect()
    }

    async fn load(&self, id: &RolloutId) -> Result<Option<RunState>, StoreError> {
        let run = self.runs(&id.namespace).get_opt(&id.name).await.map_err(|e| unavailable(id, &e))?;
        match run {
            None => Ok(None),
            Some(run) => state_of(&run)
                .map_err(|e| StoreError::Unavailable { id: id.to_string(), message: e.to_string() }),
        }
    }

    async fn remove(&self, id: &RolloutId) -> Result<(), StoreError> {
        self.checkpoints().forget(id);
        match self.runs(&id.namespace).delete(&id.name, &Default::default()).await {
            Ok(_) => Ok(()),
            Err(kube::Error::Api(status)) if status.is_not_found() => Ok(()),
            Err(e) => Err(unavailable(id, &e)),
        }
    }
}

impl TimelineStore for CanaryRunStore {
    fn append_timeline(&self, id: &RolloutId, point: &TimelinePoint) -> Result<(), StoreError> {
        self.timelines().entry(id.clone()).or_default().push(point.clone());
        Ok(())
    }

    fn timeline(&self, id: &RolloutId) -> Timeline {
        self.timelines().get(id).cloned().unwrap_or_default()
    }

    fn forget_timeline(&self, id: &RolloutId) -> Result<(), StoreError> {
        self.timelines().remove(id);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::tests::state;

    fn at(seconds: i64) -> Timestamp {
        Timestamp::from_second(1_800_000_000 + seconds).unwrap()
    }

    #[test]
    fn running_sums_wait_for_the_checkpoint_and_everything_else_is_written_at_once() {
        let mut checkpoints = Checkpoints::new(Duration::from_secs(300));
        let mut s = state("web");
        assert!(checkpoints.due(&s, at(0)), "a state never written is written");
        checkpoints.wrote(&s, at(0));
        assert!(!checkpoints.due(&s, at(10)), "nothing changed");
        // An interval: the evaluation clock and the summary move, nothing else.
        s.rollout.intervals_analysed += 1;
        s.rollout.last_evaluation = Some(at(30));
        s.rollout.next_evaluation = Some(at(60));
        assert!(!checkpoints.due(&s, at(30)), "sums only: wait for the checkpoint");
        assert!(checkpoints.due(&s, at(300)), "a checkpoint period after the last write");
        // A new version from the store alone is not a change.
        let mut versioned = s.clone();
        versioned.version = Version::new("99");
        assert!(!checkpoints.due(&versioned, at(31)));
        // What the platform acts on is written at once.
        for change in [
            |s: &mut RunState| s.rollout.weight = 10,
            |s: &mut RunState| s.rollout.step = 1,
            |s: &mut RunState| s.applied.weight = Some(10),
            |s: &mut RunState| s.notified = 1,
            |s: &mut RunState| s.rollout.decisions_made = 1,
            |s: &mut RunState| s.rollout.failed_checks = 1,
        ] {
            let mut changed = s.clone();
            change(&mut changed);
            assert!(checkpoints.due(&changed, at(31)), "{changed:?}");
        }
        checkpoints.forget(&s.rollout.id);
        assert!(checkpoints.due(&s, at(31)));
    }

    #[test]
    fn a_stored_state_is_ahead_only_with_more_decisions_of_the_same_revision() {
        let ours = state("web");
        let mut theirs = ours.clone();
        assert!(!ahead_of(&theirs, &ours));
        theirs.rollout.decisions_made = 2;
        assert!(ahead_of(&theirs, &ours));
        theirs.rollout.revision = "other".into();
        assert!(!ahead_of(&theirs, &ours));
    }
}
