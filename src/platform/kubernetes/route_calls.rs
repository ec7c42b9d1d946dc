//! The Kubernetes platform's calls on its routes (a Gateway API `HTTPRoute`, an Istio
//! `VirtualService`): adopting one (or creating it), setting the canary's weight with a
//! JSON patch guarded by `test` ops and reading it back until it is served, and putting
//! an adopted route back as it was once its Deployment is deleted. What the patches say
//! is `routers/`; this is where they are sent.

use std::time::Duration;

use k8s_openapi::api::apps::v1::Deployment;
use kube::api::{Api, DynamicObject, Patch, PatchParams, PostParams};
use serde_json::Value;

use super::decide::{recorded_route, replica_service};
use super::platform::{KubernetesPlatform, api_error, backends_of, failed, get, refused};
use super::primary_name;
use super::routers::gateway::{Backends, Served};
use super::routers::{RouteKind, RouteRef};
use super::workloads;
use crate::engine::RolloutId;
use crate::platform::PlatformError;
use crate::policy::model::RouteSpec;

/// How long a call polls the API server for a change to show before it answers
/// "not yet".
const READ_BACK_FOR: Duration = Duration::from_secs(3);
const READ_BACK_EVERY: Duration = Duration::from_millis(100);

impl KubernetesPlatform {
    fn routes(&self, namespace: &str, kind: RouteKind) -> Api<DynamicObject> {
        Api::namespaced_with(self.client(), namespace, &kind.api_resource())
    }

    /// Splits the workload's route between the primary and the canary (all traffic to
    /// the primary), unless that is done. A missing route is created when the policy
    /// says enough to make one (see [`RouteKind::created`]), owned by `web`.
    pub(super) async fn adopt_route(
        &self,
        web: &Deployment,
        route: &RouteRef,
        spec: Option<&RouteSpec>,
        backends: &Backends,
    ) -> Result<(), PlatformError> {
        let namespace = web.metadata.namespace.clone().unwrap_or_default();
        let routes = self.routes(&namespace, route.kind);
        let what = route.describe(&namespace);
        let found = routes.get_opt(&route.name).await.map_err(|e| api_error(&what, &e))?;
        let Some(found) = found else {
            let metadata = workloads::route_metadata(web, &route.name).map_err(refused)?;
            let metadata = serde_json::to_value(metadata).map_err(failed)?;
            let Some(created) = route.kind.created(metadata, spec, backends) else {
                return Err(PlatformError::failed(format!(
                    "no {what}: canaryd adopts an existing one sending traffic to Service {}, or {}",
                    backends.original,
                    route.kind.to_create()
                )));
            };
            let created: DynamicObject = serde_json::from_value(created).map_err(failed)?;
            return match routes.create(&PostParams::default(), &created).await {
                Ok(_) => {
                    tracing::info!(%what, "created, owned by Deployment {}", backends.original);
                    Ok(())
                }
                Err(kube::Error::Api(status)) if status.is_already_exists() => Err(PlatformError::not_yet(
                    format!("{what} appeared while canaryd created it; adopting it next pass"),
                )),
                Err(e) => Err(api_error(&format!("create {what}"), &e)),
            };
        };
        let found = serde_json::to_value(&found).map_err(failed)?;
        if let Some(patch) = route.kind.adopt_patch(&found, backends).map_err(failed)? {
            json_patch(&routes, &route.name, patch).await?;
        }
        Ok(())
    }

    /// After `web` was deleted: puts an adopted route back as it was. A route canaryd
    /// created is left to the garbage collector (`web` owns it).
    pub(super) async fn finalize_route(&self, id: &RolloutId, route: &RouteRef) -> Result<(), PlatformError> {
        let routes = self.routes(&id.namespace, route.kind);
        let what = route.describe(&id.namespace);
        let Some(found) = routes.get_opt(&route.name).await.map_err(|e| api_error(&what, &e))? else {
            return Ok(());
        };
        let found = serde_json::to_value(&found).map_err(failed)?;
        if route.kind.created_by_canaryd(&found, &Backends::of(&id.name, 0)) {
            // Owned by the Deployment just deleted: the garbage collector deletes it.
            return Ok(());
        }
        if let Some(patch) = route.kind.restore_patch(&found).map_err(failed)? {
            json_patch(&routes, &route.name, patch).await?;
            tracing::info!(%what, "put back as it was before canaryd adopted it");
        }
        Ok(())
    }

    /// The route `web`'s weights are set on: the one recorded on `web-primary` (from
    /// the watch, else read), or, recorded by none, the one named as the Deployment.
    pub(super) async fn route_of(&self, id: &RolloutId) -> Result<RouteRef, PlatformError> {
        let watched = self.watched_route(id);
        let recorded = match watched {
            Some(route) => route,
            None => recorded_route(&get(&self.deployments(&id.namespace), &primary_name(&id.name)).await?),
        };
        let recorded = recorded.unwrap_or_else(|| id.name.clone());
        if replica_service(&recorded).is_some() {
            return Err(PlatformError::failed(format!(
                "Deployment {id} was attached for the replica router; the policy now names another (detach and attach again to move it)"
            )));
        }
        Ok(RouteRef::parse(&recorded))
    }

    /// Sets the route's canary weight and reads it back until it is served.
    pub(super) async fn route_weight(
        &self,
        id: &RolloutId,
        router: RouteKind,
        backends: &Backends,
        weight: u8,
    ) -> Result<(), PlatformError> {
        let route = self.route_of(id).await?;
        if route.kind != router {
            return Err(PlatformError::failed(format!(
                "{} was attached for the {} router; the policy now names another (detach and attach again to move it)",
                route.describe(&id.namespace),
                route.kind.kind()
            )));
        }
        let (kind, name, what) = (route.kind, route.name.clone(), route.describe(&id.namespace));
        let routes = self.routes(&id.namespace, kind);
        let read = || async {
            let object = routes.get(&name).await.map_err(|e| api_error(&what, &e))?;
            serde_json::to_value(&object).map_err(failed)
        };
        // The route as it stands; after a patch, as the patch left it (the API server
        // answers with the object): read again only while a Gateway has not caught up.
        let mut object = read().await?;
        let served = kind.served_weight(&object, backends).map_err(failed)?;
        let in_spec = match &served {
            Served::Applied(w) | Served::Pending { weight: w, .. } => *w,
        };
        if in_spec != weight {
            let patch = kind.weight_patch(&object, backends, weight).map_err(failed)?;
            object = json_patch(&routes, &name, patch).await?;
        }
        let deadline = tokio::time::Instant::now() + READ_BACK_FOR;
        loop {
            match kind.served_weight(&object, backends).map_err(failed)? {
                Served::Applied(w) if w == weight => return Ok(()),
                Served::Applied(w) => {
                    return Err(PlatformError::failed(format!(
                        "{what} serves {w}% to the canary, not {weight}%"
                    )));
                }
                Served::Pending { reason, .. } if tokio::time::Instant::now() >= deadline => {
                    return Err(PlatformError::not_yet(format!("{what}: {reason}")));
                }
                Served::Pending { .. } => {
                    tokio::time::sleep(READ_BACK_EVERY).await;
                    object = read().await?;
                }
            }
        }
    }

    /// The backends of `web`'s route, from the watch's view (else from the API server).
    pub(super) async fn backends(&self, id: &RolloutId) -> Result<Backends, PlatformError> {
        let port = self.watched_port(id);
        match port {
            Some(port) => Ok(Backends::of(&id.name, port)),
            None => backends_of(&get(&self.deployments(&id.namespace), &id.name).await?),
        }
    }
}

/// Applies a JSON patch to a route: the route as patched, or "not yet" when a `test`
/// op failed (the route changed since it was read).
async fn json_patch(api: &Api<DynamicObject>, name: &str, patch: Value) -> Result<Value, PlatformError> {
    let patch: json_patch::Patch = serde_json::from_value(patch)
        .map_err(|e| PlatformError::failed(format!("HTTPRoute {name}: patch: {e}")))?;
    match api.patch(name, &PatchParams::default(), &Patch::<()>::Json(patch)).await {
        Ok(route) => serde_json::to_value(&route).map_err(failed),
        // A failed `test` op: the route changed since it was read. Read it again next time.
        Err(kube::Error::Api(status)) if status.code == 422 || status.is_conflict() => {
            Err(PlatformError::not_yet(format!(
                "HTTPRoute {name} changed while canaryd patched it ({}); read again next tick",
                status.message
            )))
        }
        Err(e) => Err(api_error(&format!("HTTPRoute {name}"), &e)),
    }
}
