//! What a follower (a replica that does not hold the Lease) shows: the rollouts as the
//! leader last saved them in their CanaryRuns, watched, so that `canaryd rollout list`,
//! `status` and `watch` answer from any replica behind the Service. The follower only
//! reads; a command sent to it is refused naming the leader (see `server::api`).
//!
//! The views are the leader's saved states, not its memory: decisions, steps and
//! confirmed weights show as soon as it saves them; interval counts and verdicts can lag
//! by its checkpoint period (`[kubernetes] checkpoint`); there is no timeline.

use std::collections::BTreeMap;
use std::time::Duration;

use futures::StreamExt;
use kube::Api;
use kube::runtime::{WatchStreamExt, watcher};
use tokio::sync::watch;

use crate::daemon::view::RolloutView;
use crate::platform::kubernetes::canaryrun::{CanaryRun, state_of};

/// How often the views are published while CanaryRuns change (at most).
const PUBLISH_EVERY: Duration = Duration::from_secs(1);

/// The rollout views of the CanaryRuns seen, by `namespace/name`, updated one event at
/// a time: an event costs the decoding of its one object, not of every CanaryRun.
#[derive(Default)]
pub struct RunViews {
    views: BTreeMap<(String, String), RolloutView>,
    /// Between a relist's start and its end: the objects it has listed so far.
    relisting: Option<BTreeMap<(String, String), RolloutView>>,
}

impl RunViews {
    /// Takes one watch event. True when the views changed.
    pub fn take(&mut self, event: watcher::Event<CanaryRun>) -> bool {
        match event {
            watcher::Event::Apply(run) => {
                let (key, view) = Self::view(&run);
                match view {
                    Some(v) => self.views.insert(key, v.clone()).as_ref() != Some(&v),
                    None => self.views.remove(&key).is_some(),
                }
            }
            watcher::Event::Delete(run) => self.views.remove(&key_of(&run)).is_some(),
            watcher::Event::Init => {
                self.relisting = Some(BTreeMap::new());
                false
            }
            watcher::Event::InitApply(run) => {
                let (key, view) = Self::view(&run);
                if let (Some(list), Some(v)) = (self.relisting.as_mut(), view) {
                    list.insert(key, v);
                }
                false
            }
            watcher::Event::InitDone => {
                // What the relist did not return was deleted while the watch was down.
                self.views = self.relisting.take().unwrap_or_default();
                true
            }
        }
    }

    /// The views, ordered by namespace and name.
    pub fn views(&self) -> Vec<RolloutView> {
        self.views.values().cloned().collect()
    }

    fn view(run: &CanaryRun) -> ((String, String), Option<RolloutView>) {
        let view = match state_of(run) {
            Ok(state) => state.map(|s| RolloutView::of(&s)),
            Err(e) => {
                tracing::warn!(error = %e, "a CanaryRun's state cannot be read; the follower does not show it");
                None
            }
        };
        (key_of(run), view)
    }
}

fn key_of(run: &CanaryRun) -> (String, String) {
    (run.metadata.namespace.clone().unwrap_or_default(), run.metadata.name.clone().unwrap_or_default())
}

/// Watches the CanaryRuns of `namespaces` (`None`: all) and publishes their views into
/// `views`, until `stop` is set.
pub async fn watch_views(
    client: kube::Client,
    namespaces: Option<Vec<String>>,
    views: watch::Sender<Vec<RolloutView>>,
    mut stop: watch::Receiver<bool>,
) {
    let apis: Vec<Api<CanaryRun>> = match namespaces {
        None => vec![Api::all(client)],
        Some(namespaces) => namespaces.iter().map(|ns| Api::namespaced(client.clone(), ns)).collect(),
    };
    // One RunViews per watch: each relists on its own.
    let mut seen: Vec<RunViews> = apis.iter().map(|_| RunViews::default()).collect();
    let streams = apis.into_iter().enumerate().map(|(i, api)| {
        watcher(api, watcher::Config::default()).default_backoff().map(move |e| (i, e)).boxed()
    });
    let mut events = futures::stream::select_all(streams);
    let mut publish = tokio::time::interval(PUBLISH_EVERY);
    publish.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut changed = false;
    loop {
        tokio::select! {
            event = events.next() => match event {
                Some((i, Ok(event))) => changed |= seen[i].take(event),
                Some((_, Err(e))) => tracing::warn!(error = %e, "CanaryRun watch failed; retrying with backoff"),
                None => return,
            },
            _ = publish.tick() => {
                if std::mem::take(&mut changed) {
                    views.send_replace(seen.iter().flat_map(RunViews::views).collect());
                }
            }
            _ = stop.wait_for(|s| *s) => return,
        }
    }
}

#[cfg(test)]
mod tests {
    use k8s_openapi::api::apps::v1::Deployment;
    use watcher::Event;

    use super::*;
    use crate::engine::Phase;
    use crate::platform::kubernetes::canaryrun::{new_run, status_of};
    use crate::store::tests::state;

    /// The CanaryRun the leader writes for rollout shop/`name` at `weight`.
    fn run(name: &str, weight: u8) -> CanaryRun {
        let mut saved = state(name);
        saved.rollout.phase = Phase::Progressing;
        saved.rollout.weight = weight;
        let mut run = new_run(&saved, &Deployment::default());
        run.status = Some(status_of(&saved));
        run
    }

    fn names(seen: &RunViews) -> Vec<(String, u8)> {
        seen.views().into_iter().map(|v| (v.name, v.weight)).collect()
    }

    #[test]
    fn the_views_follow_the_canary_runs_event_by_event_and_a_relist_drops_what_it_did_not_list() {
        let mut seen = RunViews::default();
        assert!(!seen.take(Event::Init));
        assert!(!seen.take(Event::InitApply(run("web", 10))));
        assert!(!seen.take(Event::InitApply(run("api", 50))));
        assert!(names(&seen).is_empty(), "nothing is shown before the list is whole");
        assert!(seen.take(Event::InitDone));
        assert_eq!(names(&seen), [("api".into(), 50), ("web".into(), 10)]);

        assert!(seen.take(Event::Apply(run("web", 50))), "a step is a change");
        assert!(!seen.take(Event::Apply(run("web", 50))), "the same state again is not");
        assert_eq!(names(&seen), [("api".into(), 50), ("web".into(), 50)]);
        assert!(seen.take(Event::Delete(run("api", 50))));
        assert_eq!(names(&seen), [("web".into(), 50)]);

        // The watch was down while web's CanaryRun was deleted and db's created.
        seen.take(Event::Init);
        seen.take(Event::InitApply(run("db", 10)));
        assert_eq!(names(&seen), [("web".into(), 50)], "the old views stand during the relist");
        seen.take(Event::InitDone);
        assert_eq!(names(&seen), [("db".into(), 10)]);

        // A CanaryRun created but never given a status shows nothing.
        let mut fresh = run("new", 10);
        fresh.status = None;
        assert!(!seen.take(Event::Apply(fresh)));
        assert_eq!(names(&seen), [("db".into(), 10)]);
    }
}
