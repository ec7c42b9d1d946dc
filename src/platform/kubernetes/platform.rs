//! The Kubernetes platform: watches Deployments, attaches the ones a policy selects
//! (creating `web-primary` and its Services, adopting the HTTPRoute), reports a change
//! of a managed Deployment's pod template as a new revision, and carries out the
//! daemon's calls: weights through the Gateway API router, promotion by copying the
//! template to `web-primary`, rollback by scaling `web` to 0.
//!
//! Every call is idempotent and judged from what the API server reports (Deployment
//! status, the route's read-back weights and `Accepted` condition), never from elapsed
//! time. A call that awaits such progress answers [`PlatformError::not_yet`]. A
//! Deployment no policy selects is read, never written to.
//!
//! The watch keeps a small summary per Deployment (labels, the template's revision,
//! replicas, where its own rollout stands), not the objects: at 10,000 workloads a cache
//! of full Deployments would not fit the daemon's memory budget. What to do about each
//! Deployment is decided from the summaries (`decide.rs`). Calls read the objects they
//! change, except the weight calls, which judge the canary's pods from the summaries: a
//! step at 10,000 rollouts would otherwise read 20,000 Deployments.
//!
//! The calls on routes (adopt, set and read back a weight, finalize) are in
//! `route_calls.rs`; those of the replica router in `replica_calls.rs`.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::Service;
use kube::api::{Api, ApiResource, Patch, PatchParams, PostParams};
use kube::runtime::WatchStreamExt;
use kube::runtime::watcher;
use serde_json::json;
use tokio::sync::watch;

use super::decide::{
    Next, ROLLED_BACK_ANNOTATION, ROUTE_ANNOTATION, Standing, Summary, next, recorded_route, replica_service,
};
use k8s_openapi::api::autoscaling::v2::HorizontalPodAutoscaler;

use super::routers::gateway::Backends;
use super::routers::{RouteKind, RouteRef};
use super::shards::Shard;
use super::workloads::{self, RolloutProgress};
use super::{ROUTERS, arms, primary_name};
use crate::engine::plan::RouterKind;
use crate::engine::{RolloutId, Scale};
use crate::platform::{NewRevision, Platform, PlatformError, RolloutEvent};
use crate::policy::LoadedPolicy;
use crate::policy::model::RouteSpec;

/// How often attachments still under way are driven on.
const RECONCILE_EVERY: Duration = Duration::from_secs(2);
/// How soon after a watch event the Deployments are judged again.
const JUDGE_EVERY: Duration = Duration::from_millis(250);
/// How many Deployments are attached at once (each is a few API calls in sequence).
const ATTACHING_AT_ONCE: usize = 16;

#[derive(Default)]
struct Shared {
    events: Vec<RolloutEvent>,
    /// Managed-or-not Deployments (`web`s), by id.
    workloads: HashMap<RolloutId, Summary>,
    /// Primaries, by the id of the Deployment they serve for.
    primaries: HashMap<RolloutId, Summary>,
    /// The revision last reported per workload.
    reported: HashMap<RolloutId, String>,
    /// The revision whose failure to run was last reported, per workload.
    failed: HashMap<RolloutId, String>,
    /// Workloads whose detachment was reported.
    detached: HashSet<RolloutId>,
    /// Workloads attached (primary serving, route adopted, `web` at 0).
    attached: HashSet<RolloutId>,
    /// Seen in the re-list under way (to find what was deleted while the watch was down).
    relisted: Option<HashSet<RolloutId>>,
    /// Deleted workloads whose route is to be finalized: the route's name.
    finalize: Vec<(RolloutId, String)>,
}

/// The Kubernetes platform.
pub struct KubernetesPlatform {
    client: kube::Client,
    namespaces: Option<Vec<String>>,
    /// The shard whose Deployments this platform drives (`None`: every one).
    shard: Option<Shard>,
    shared: Mutex<Shared>,
    policies: Mutex<Option<watch::Receiver<Arc<Vec<LoadedPolicy>>>>>,
}

impl KubernetesPlatform {
    /// A platform on `client`, watching `namespaces` (`None`: all).
    pub fn new(client: kube::Client, namespaces: Option<Vec<String>>) -> KubernetesPlatform {
        KubernetesPlatform {
            client,
            namespaces,
            shard: None,
            shared: Mutex::new(Shared::default()),
            policies: Mutex::new(None),
        }
    }

    /// The same, driving only the Deployments of `shard`: the others are not even
    /// summarised.
    pub fn with_shard(mut self, shard: Shard) -> KubernetesPlatform {
        self.shard = Some(shard);
        self
    }

    fn shared(&self) -> std::sync::MutexGuard<'_, Shared> {
        self.shared.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    pub(super) fn deployments(&self, namespace: &str) -> Api<Deployment> {
        Api::namespaced(self.client.clone(), namespace)
    }

    pub(super) fn client(&self) -> kube::Client {
        self.client.clone()
    }

    /// Whether `id` is attached for the replica router, as the watch shows its primary.
    fn replica_attached(&self, id: &RolloutId) -> bool {
        let shared = self.shared();
        shared.primaries.get(id).and_then(|p| p.route.as_deref()).and_then(replica_service).is_some()
    }

    /// Records that attaching `id` is done.
    pub(super) fn mark_attached(&self, id: &RolloutId) {
        self.shared().attached.insert(id.clone());
    }

    /// The replica router's tolerance in the policy that selects `web` now.
    pub(super) fn tolerance(&self, id: &RolloutId, web: &Summary) -> Option<f64> {
        let policies = self.policies.lock().unwrap_or_else(std::sync::PoisonError::into_inner).clone()?;
        let policies = policies.borrow().clone();
        crate::policy::selector::select(&policies, &id.namespace, &web.labels)?.chosen.spec.traffic.tolerance
    }

    /// Watches Deployments and drives attachments until the process ends, selecting
    /// with the policies `policies` holds as they change.
    pub async fn run(self: Arc<Self>, mut policies: watch::Receiver<Arc<Vec<LoadedPolicy>>>) {
        *self.policies.lock().unwrap_or_else(std::sync::PoisonError::into_inner) = Some(policies.clone());
        let apis: Vec<Api<Deployment>> = match &self.namespaces {
            None => vec![Api::all(self.client.clone())],
            Some(namespaces) => namespaces.iter().map(|ns| self.deployments(ns)).collect(),
        };
        let streams =
            apis.into_iter().map(|api| watcher(api, watcher::Config::default()).default_backoff().boxed());
        let mut events = futures::stream::select_all(streams);
        // A pass of `drive` can outlast both periods (attaching thousands of Deployments):
        // the ticks it missed are not fired in a burst after it, which would leave the
        // watch's events unread between passes.
        let mut reconcile = tokio::time::interval(RECONCILE_EVERY);
        reconcile.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut judge = tokio::time::interval(JUDGE_EVERY);
        judge.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut changed_since = false;
        loop {
            // Events only update the summaries; every Deployment is judged at most every
            // JUDGE_EVERY after some changed (not once per event: an initial list of N
            // Deployments would cost N² selector matches), on a policy change, and at each
            // reconcile, which also drives attachments under way.
            tokio::select! {
                event = events.next() => match event {
                    Some(Ok(event)) => {
                        self.take(event);
                        changed_since = true;
                        continue;
                    }
                    Some(Err(e)) => {
                        tracing::warn!(error = %e, "Deployment watch failed; retrying with backoff");
                        continue;
                    }
                    None => return,
                },
                changed = policies.changed() => {
                    if changed.is_err() {
                        return;
                    }
                    tracing::info!("policies changed: re-evaluating every Deployment");
                }
                _ = judge.tick() => {
                    if !changed_since {
                        continue;
                    }
                }
                _ = reconcile.tick() => {}
            }
            changed_since = false;
            // The watch is read while a pass runs: a pass over thousands of Deployments
            // takes seconds, and the next one must decide from what the cluster shows
            // now (the primaries it created), not from what it showed before.
            let pass = self.drive();
            tokio::pin!(pass);
            loop {
                tokio::select! {
                    () = &mut pass => break,
                    event = events.next() => match event {
                        Some(Ok(event)) => {
                            self.take(event);
                            changed_since = true;
                        }
                        Some(Err(e)) => {
                            tracing::warn!(error = %e, "Deployment watch failed; retrying with backoff");
                        }
                        None => return,
                    },
                }
            }
        }
    }

    /// Takes one watch event into the summaries.
    fn take(&self, event: watcher::Event<Deployment>) {
        let mut shared = self.shared();
        match event {
            watcher::Event::Init => shared.relisted = Some(HashSet::new()),
            watcher::Event::InitApply(d) | watcher::Event::Apply(d) => {
                let Some(id) = id_of(&d) else { return };
                let summary = Summary::of(&d);
                let key = match &summary.primary_of {
                    Some(web) => RolloutId { namespace: id.namespace.clone(), name: web.clone() },
                    None => id.clone(),
                };
                if self.shard.is_some_and(|s| !s.owns(&key)) {
                    return;
                }
                if let Some(seen) = shared.relisted.as_mut() {
                    seen.insert(id.clone());
                }
                if summary.primary_of.is_some() {
                    shared.primaries.insert(key, summary);
                } else {
                    shared.workloads.insert(key, summary);
                }
            }
            watcher::Event::Delete(d) => {
                if let Some(id) = id_of(&d) {
                    let primary_of = Summary::of(&d).primary_of;
                    let key = RolloutId {
                        namespace: id.namespace.clone(),
                        name: primary_of.clone().unwrap_or_else(|| id.name.clone()),
                    };
                    if self.shard.is_none_or(|s| s.owns(&key)) {
                        forget(&mut shared, &id, primary_of.as_deref());
                    }
                }
            }
            watcher::Event::InitDone => {
                // What the re-list did not return was deleted while the watch was down.
                let Some(seen) = shared.relisted.take() else { return };
                let gone: Vec<RolloutId> =
                    shared.workloads.keys().filter(|id| !seen.contains(*id)).cloned().collect();
                for id in gone {
                    forget(&mut shared, &id, None);
                }
            }
        }
    }

    /// Decides, for every Deployment, what is next, and does it.
    async fn drive(&self) {
        let policies = self.policies.lock().unwrap_or_else(std::sync::PoisonError::into_inner).clone();
        let Some(policies) = policies.map(|p| p.borrow().clone()) else { return };
        let mut attach = Vec::new();
        {
            let mut shared = self.shared();
            let ids: Vec<RolloutId> = shared.workloads.keys().cloned().collect();
            for id in ids {
                let web = shared.workloads[&id].clone();
                let selection = crate::policy::selector::select(&policies, &id.namespace, &web.labels);
                let selected = selection.is_some();
                let router = selection.as_ref().map(|s| s.chosen.plan.router);
                let route = selection.and_then(|s| s.chosen.spec.traffic.route.clone());
                let standing = Standing {
                    selected,
                    attached: shared.attached.contains(&id),
                    detached: shared.detached.contains(&id),
                    reported: shared.reported.get(&id).map(String::as_str),
                    failed: shared.failed.get(&id).map(String::as_str),
                };
                let decided = next(&id, &web, shared.primaries.get(&id), standing);
                if selected {
                    shared.detached.remove(&id);
                }
                match decided {
                    Next::Nothing => {}
                    Next::Attach => attach.push((id, router, route)),
                    Next::Rollout(revision) => {
                        let labels = web.labels.clone();
                        shared.reported.insert(id.clone(), revision.clone());
                        tracing::info!(rollout = %id, %revision, "new revision of a managed Deployment");
                        shared.events.push(RolloutEvent::Revision(NewRevision {
                            arms: arms(&id),
                            id,
                            revision,
                            labels,
                        }));
                    }
                    Next::CanaryFailed(detail) => {
                        tracing::warn!(rollout = %id, revision = %web.revision, %detail, "canary cannot run");
                        shared.failed.insert(id.clone(), web.revision.clone());
                        let revision = web.revision.clone();
                        shared.events.push(RolloutEvent::CanaryFailed { id, revision, detail });
                    }
                    Next::Detach(detail) => {
                        tracing::info!(rollout = %id, %detail, "detaching");
                        shared.detached.insert(id.clone());
                        shared.attached.remove(&id);
                        shared.events.push(RolloutEvent::Gone { id, detail });
                    }
                }
            }
        }
        // Attachments are independent: a bounded number run at once, so a pass over
        // thousands of new Deployments takes seconds, not minutes.
        futures::stream::iter(attach)
            .for_each_concurrent(ATTACHING_AT_ONCE, |(id, router, route)| async move {
                let attached = match router {
                    Some(RouterKind::Replica) => self.attach_replica(&id, route.as_ref()).await,
                    _ => {
                        let kind = router.and_then(RouteKind::of).unwrap_or(RouteKind::HttpRoute);
                        self.attach(&id, kind, route.as_ref()).await
                    }
                };
                if let Err(e) = attached {
                    tracing::info!(rollout = %id, awaiting = %e, "attaching");
                }
            })
            .await;
        let finalize = std::mem::take(&mut self.shared().finalize);
        for (id, route) in finalize {
            // Created again meanwhile (a delete and re-create): it keeps its route.
            if self.shared().workloads.contains_key(&id) || replica_service(&route).is_some() {
                continue;
            }
            if let Err(e) = self.finalize_route(&id, &RouteRef::parse(&route)).await {
                tracing::warn!(rollout = %id, %route, error = %e, "finalizing the route of a deleted Deployment; retrying");
                self.shared().finalize.push((id, route));
            }
        }
    }

    /// One pass of attaching `web`, with the route its policy names (`None`: the one
    /// named as the Deployment): each step is done once and skipped when done. The
    /// route's name is recorded on `web-primary` on the first attach and kept from then
    /// on, so that a restarted daemon sets weights on the same route before it attaches
    /// again, and a policy renaming its route moves no running workload.
    async fn attach(
        &self,
        id: &RolloutId,
        kind: RouteKind,
        spec: Option<&RouteSpec>,
    ) -> Result<(), PlatformError> {
        let deployments = self.deployments(&id.namespace);
        let web = get(&deployments, &id.name).await?;
        let revision = Summary::of(&web).revision;
        let replicas = web.spec.replicas.unwrap_or(1).max(1);
        let name = spec.map_or_else(|| id.name.clone(), |r| r.name_for(&id.name));
        let route = RouteRef { kind, name }.recorded();
        let mut primary = workloads::primary_deployment(&web, &revision, replicas).map_err(refused)?;
        primary.metadata.annotations.get_or_insert_default().insert(ROUTE_ANNOTATION.into(), route.clone());
        let mut primary = create_or_get(&deployments, &primary).await?;
        let recorded = recorded_route(&primary);
        let route = match recorded {
            Some(recorded) => recorded,
            // Attached before routes were recorded: the route named as the Deployment.
            None => {
                let mark = json!({"metadata": {"annotations": {ROUTE_ANNOTATION: id.name}}});
                primary = deployments
                    .patch(&primary_name(&id.name), &PatchParams::default(), &Patch::Merge(&mark))
                    .await
                    .map_err(|e| api_error(&format!("Deployment {}", primary_name(&id.name)), &e))?;
                id.name.clone()
            }
        };
        if replica_service(&route).is_some() {
            return Err(PlatformError::failed(format!(
                "Deployment {} was attached for the replica router, and its selector cannot change: delete it (canaryd creates it again for the {} router)",
                primary_name(&id.name),
                kind.kind()
            )));
        }
        let services: Api<Service> = Api::namespaced(self.client.clone(), &id.namespace);
        for service in workloads::services(&web).map_err(refused)? {
            create_or_get(&services, &service).await?;
        }
        self.adopt_autoscaler(&web).await?;
        await_rollout(&primary)?;
        let backends = backends_of(&web)?;
        self.adopt_route(&web, &RouteRef::parse(&route), spec, &backends).await?;
        // `web` goes to 0 only when the primary serves its template: on the first attach,
        // not when attaching again after a restart mid-rollout, where `web` is the canary.
        if Summary::of(&primary).serves.as_deref() == Some(revision.as_str()) && web.spec.replicas != Some(0)
        {
            scale_to(&deployments, &id.name, 0).await?;
        }
        tracing::info!(rollout = %id, %revision, "attached: {} serves revision {revision}", primary_name(&id.name));
        self.shared().attached.insert(id.clone());
        Ok(())
    }

    /// When the HorizontalPodAutoscaler named as the Deployment targets `web`, creates one
    /// like it for `web-primary` (owned by `web`), so that the primary scales as the user
    /// asked. canaryd never writes the replicas of a Deployment an HPA scales beyond the
    /// transitions it owns: `web` from 0 for a rollout, and to 0 after one (an HPA leaves
    /// a Deployment at 0 alone); promotion keeps `web-primary`'s count.
    async fn adopt_autoscaler(&self, web: &Deployment) -> Result<(), PlatformError> {
        let namespace = web.metadata.namespace.clone().unwrap_or_default();
        let name = web.metadata.name.clone().unwrap_or_default();
        let autoscalers: Api<HorizontalPodAutoscaler> = Api::namespaced(self.client.clone(), &namespace);
        let what = format!("HorizontalPodAutoscaler {namespace}/{name}");
        let Some(theirs) = autoscalers.get_opt(&name).await.map_err(|e| api_error(&what, &e))? else {
            return Ok(());
        };
        if let Some(ours) = workloads::primary_autoscaler(web, &theirs).map_err(refused)? {
            create_or_get(&autoscalers, &ours).await?;
        }
        Ok(())
    }

    /// The route recorded on `web-primary`, as the watch shows it (`None`: the watch has
    /// not shown the primary).
    pub(super) fn watched_route(&self, id: &RolloutId) -> Option<Option<String>> {
        self.shared().primaries.get(id).map(|p| p.route.clone())
    }

    /// The port of `web`'s template, as the watch shows it.
    pub(super) fn watched_port(&self, id: &RolloutId) -> Option<i32> {
        self.shared().workloads.get(id).and_then(|web| web.port)
    }

    /// What the watch shows of `web` and its primary: the latest the API server sent,
    /// once it has sent both (not yet right after a restart).
    pub(super) fn watched(&self, id: &RolloutId) -> Option<(Summary, Summary)> {
        let shared = self.shared();
        Some((shared.workloads.get(id)?.clone(), shared.primaries.get(id)?.clone()))
    }

    /// Brings `web`'s pods up to the primary's count and waits until they are ready,
    /// judged from the watch's view (read from the API server when the watch has not
    /// shown both Deployments yet). A view behind the API server only shows an earlier
    /// state: `web` still at 0 (scaling it again changes nothing) or its new generation
    /// not yet observed (awaited).
    async fn canary_up(&self, id: &RolloutId) -> Result<(), PlatformError> {
        let deployments = self.deployments(&id.namespace);
        let (web, primary_replicas) = match self.watched(id) {
            Some((web, primary)) => (web, primary.replicas),
            None => {
                let primary = get(&deployments, &primary_name(&id.name)).await?;
                (Summary::of(&get(&deployments, &id.name).await?), primary.spec.replicas.unwrap_or(1))
            }
        };
        if web.replicas == 0 {
            let replicas = primary_replicas.max(1);
            scale_to(&deployments, &id.name, replicas).await?;
            return Err(PlatformError::not_yet(format!(
                "canary Deployment {id} scaled to {replicas}; awaiting its pods"
            )));
        }
        awaited(&id.name, web.progress)
            .map_err(|e| PlatformError { message: format!("canary Deployment {id}: {}", e.message), ..e })
    }
}

/// The namespace/name of a Deployment.
fn id_of(d: &Deployment) -> Option<RolloutId> {
    Some(RolloutId { namespace: d.metadata.namespace.clone()?, name: d.metadata.name.clone()? })
}

/// Forgets a deleted Deployment; a managed workload's deletion is reported.
fn forget(shared: &mut Shared, id: &RolloutId, primary_of: Option<&str>) {
    if let Some(web) = primary_of {
        shared.primaries.remove(&RolloutId { namespace: id.namespace.clone(), name: web.to_string() });
        return;
    }
    shared.workloads.remove(id);
    shared.reported.remove(id);
    shared.detached.remove(id);
    if shared.attached.remove(id) || shared.primaries.contains_key(id) {
        shared.events.push(RolloutEvent::Gone { id: id.clone(), detail: format!("Deployment {id} deleted") });
        let route = shared.primaries.get(id).and_then(|p| p.route.clone()).unwrap_or_else(|| id.name.clone());
        shared.finalize.push((id.clone(), route));
    }
}

/// The Gateway API `HTTPRoute` resource (`gateway.networking.k8s.io/v1`), handled as a
/// dynamic object.
pub fn http_route() -> ApiResource {
    RouteKind::HttpRoute.api_resource()
}

/// The backends of `web`'s route: its Services on the template's first port.
pub(super) fn backends_of(web: &Deployment) -> Result<Backends, PlatformError> {
    let port = workloads::route_port(web).map_err(refused)?;
    Ok(Backends::of(&web.metadata.name.clone().unwrap_or_default(), port))
}

/// `Ok` once `deployment` has rolled out, "not yet" while it is, failed past its
/// progress deadline.
pub(super) fn await_rollout(deployment: &Deployment) -> Result<(), PlatformError> {
    let name = deployment.metadata.name.clone().unwrap_or_default();
    awaited(&name, workloads::rollout_progress(deployment))
}

/// The same from where Deployment `name`'s rollout stands.
pub(super) fn awaited(name: &str, progress: RolloutProgress) -> Result<(), PlatformError> {
    match progress {
        RolloutProgress::Complete => Ok(()),
        RolloutProgress::Waiting(what) => {
            Err(PlatformError::not_yet(format!("Deployment {name} rolling out: {what}")))
        }
        RolloutProgress::Failed(why) => Err(PlatformError::failed(format!("Deployment {name}: {why}"))),
    }
}

/// A failed platform call, from any error (JSON, a route's shape).
pub(super) fn failed(e: impl std::fmt::Display) -> PlatformError {
    PlatformError::failed(e.to_string())
}

pub(super) fn refused(e: workloads::WorkloadError) -> PlatformError {
    PlatformError::failed(e.to_string())
}

pub(super) fn api_error(what: &str, e: &kube::Error) -> PlatformError {
    PlatformError::failed(format!("{what}: {e}"))
}

pub(super) async fn get(api: &Api<Deployment>, name: &str) -> Result<Deployment, PlatformError> {
    api.get(name).await.map_err(|e| api_error(&format!("Deployment {name}"), &e))
}

/// Creates `object`, or reads it if it exists.
pub(super) async fn create_or_get<K>(api: &Api<K>, object: &K) -> Result<K, PlatformError>
where
    K: kube::Resource + Clone + serde::de::DeserializeOwned + serde::Serialize + std::fmt::Debug,
{
    let name = object.meta().name.clone().unwrap_or_default();
    match api.create(&PostParams::default(), object).await {
        Ok(created) => Ok(created),
        Err(kube::Error::Api(status)) if status.is_already_exists() => {
            api.get(&name).await.map_err(|e| api_error(&name, &e))
        }
        Err(e) => Err(api_error(&format!("create {name}"), &e)),
    }
}

pub(super) async fn scale_to(api: &Api<Deployment>, name: &str, replicas: i32) -> Result<(), PlatformError> {
    let patch = json!({"spec": {"replicas": replicas}});
    api.patch(name, &PatchParams::default(), &Patch::Merge(&patch))
        .await
        .map(|_| ())
        .map_err(|e| api_error(&format!("scale Deployment {name} to {replicas}"), &e))
}

/// Replaces `primary` (`web-primary`) with `desired`, keeping its annotations (the
/// route, the rolled-back revision) and guarded by its resourceVersion.
pub(super) async fn replace_primary(
    api: &Api<Deployment>,
    primary: &Deployment,
    mut desired: Deployment,
) -> Result<Deployment, PlatformError> {
    let name = primary.metadata.name.clone().unwrap_or_default();
    desired.metadata.resource_version = primary.metadata.resource_version.clone();
    desired.metadata.annotations = primary.metadata.annotations.clone();
    api.replace(&name, &PostParams::default(), &desired)
        .await
        .map_err(|e| api_error(&format!("Deployment {name}"), &e))
}

impl Platform for KubernetesPlatform {
    fn name(&self) -> &'static str {
        "kubernetes"
    }

    fn routers(&self) -> &'static [RouterKind] {
        &ROUTERS
    }

    fn events(&self) -> Vec<RolloutEvent> {
        std::mem::take(&mut self.shared().events)
    }

    async fn set_weight(&self, id: &RolloutId, router: RouterKind, weight: u8) -> Result<(), PlatformError> {
        if router == RouterKind::Replica {
            return self.replica_weight(id, weight).await;
        }
        let Some(kind) = RouteKind::of(router) else {
            return Err(PlatformError::failed(format!(
                "router {} is not served on Kubernetes",
                router.name()
            )));
        };
        if weight > 0 {
            self.canary_up(id).await?;
        }
        self.route_weight(id, kind, &self.backends(id).await?, weight).await
    }

    async fn promote(&self, id: &RolloutId, revision: &str) -> Result<(), PlatformError> {
        let deployments = self.deployments(&id.namespace);
        let web = get(&deployments, &id.name).await?;
        let now = Summary::of(&web).revision;
        if now != revision {
            return Err(PlatformError::failed(format!(
                "Deployment {id}'s template is now revision {now}, not {revision}: not promoted"
            )));
        }
        let primary = get(&deployments, &primary_name(&id.name)).await?;
        if recorded_route(&primary).as_deref().and_then(replica_service).is_some() {
            return self.promote_replica(id, &web, primary, revision).await;
        }
        let replicas = primary.spec.replicas.unwrap_or(1).max(1);
        let primary = if Summary::of(&primary).serves.as_deref() == Some(revision) {
            primary
        } else {
            let desired = workloads::primary_deployment(&web, revision, replicas).map_err(refused)?;
            replace_primary(&deployments, &primary, desired).await?
        };
        await_rollout(&primary)?;
        // Back on the primary, through the route the workload was attached with.
        let kind = self.route_of(id).await?.kind;
        self.route_weight(id, kind, &backends_of(&web)?, 0).await?;
        scale_to(&deployments, &id.name, 0).await?;
        tracing::info!(rollout = %id, %revision, "promoted: {} serves it", primary_name(&id.name));
        Ok(())
    }

    async fn scale(&self, id: &RolloutId, revision: &str, scale: Scale) -> Result<(), PlatformError> {
        let deployments = self.deployments(&id.namespace);
        match scale {
            // The replica router's steps set the canary's pods themselves.
            Scale::Up if self.replica_attached(id) => Ok(()),
            Scale::Up => self.canary_up(id).await,
            Scale::Down => {
                // Remembered on the primary, so that the same template is not started
                // again (after a restart, say) until it changes.
                let mark = json!({"metadata": {"annotations": {ROLLED_BACK_ANNOTATION: revision}}});
                deployments
                    .patch(&primary_name(&id.name), &PatchParams::default(), &Patch::Merge(&mark))
                    .await
                    .map_err(|e| api_error(&format!("Deployment {}", primary_name(&id.name)), &e))?;
                scale_to(&deployments, &id.name, 0).await
            }
        }
    }
}
