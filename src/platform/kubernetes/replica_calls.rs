//! The Kubernetes platform's calls for the `replica` router (no mesh, no Gateway):
//! attaching a workload behind the user's own Service, setting a step as replica
//! counts, and promoting. The arithmetic is `routers/replica.rs`.
//!
//! - **Attach**: `web-primary` is created with `web`'s pod labels plus
//!   `canaryd.io/arm: primary` ([`workloads::shared_primary_deployment`]), so the
//!   Service (named as the Deployment, or `spec.traffic.route.name`) selects both arms'
//!   pods; canaryd checks that it does, and never writes it. The primary's replica count
//!   `P` is recorded on it. An HPA on `web` is refused: each step writes `web`'s replicas,
//!   which the HPA would fight.
//! - **A step** (`set_weight`): the split of [`replica::split`] for `P`. The arm that
//!   grows is scaled first and awaited ready, then the one that shrinks, so the Service
//!   never has fewer pods than it had. A step the split cannot serve within the policy's
//!   tolerance fails, naming the nearest shares.
//! - **Promotion**: the primary takes `web`'s template at `P` replicas; once it has
//!   rolled out, `web` goes to 0.

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::autoscaling::v2::HorizontalPodAutoscaler;
use k8s_openapi::api::core::v1::Service;
use kube::api::Api;

use super::decide::{PRIMARY_REPLICAS_ANNOTATION, ROUTE_ANNOTATION, SERVICE_ROUTE_PREFIX, Summary};
use super::decide::{recorded_route, replica_service};
use super::platform::{
    KubernetesPlatform, api_error, await_rollout, awaited, create_or_get, get, refused, replace_primary,
    scale_to,
};
use super::primary_name;
use super::routers::replica;
use super::workloads;
use crate::engine::RolloutId;
use crate::platform::PlatformError;
use crate::policy::model::RouteSpec;

impl KubernetesPlatform {
    /// One pass of attaching `web` for the replica router; each step is skipped when done.
    pub(super) async fn attach_replica(
        &self,
        id: &RolloutId,
        spec: Option<&RouteSpec>,
    ) -> Result<(), PlatformError> {
        let deployments = self.deployments(&id.namespace);
        let web = get(&deployments, &id.name).await?;
        let revision = Summary::of(&web).revision;
        let autoscalers: Api<HorizontalPodAutoscaler> = Api::namespaced(self.client(), &id.namespace);
        let hpa = format!("HorizontalPodAutoscaler {id}");
        if autoscalers.get_opt(&id.name).await.map_err(|e| api_error(&hpa, &e))?.is_some() {
            return Err(PlatformError::failed(format!(
                "{hpa} scales Deployment {id}; the replica router sets its replicas at every step, which the HPA would fight: use the gateway-api or istio router for an autoscaled workload"
            )));
        }
        let service_name = spec.map_or_else(|| id.name.clone(), |r| r.name_for(&id.name));
        let services: Api<Service> = Api::namespaced(self.client(), &id.namespace);
        let what = format!("Service {}/{service_name}", id.namespace);
        let service = services.get_opt(&service_name).await.map_err(|e| api_error(&what, &e))?.ok_or_else(|| {
            PlatformError::failed(format!(
                "{what} does not exist; the replica router serves both arms through the Service named as the Deployment, or the one spec.traffic.route.name names"
            ))
        })?;
        workloads::selects_both_arms(&web, &service)
            .map_err(|why| PlatformError::failed(format!("{what} {why}")))?;
        let replicas = web.spec.replicas.unwrap_or(1).max(1);
        let mut primary = workloads::shared_primary_deployment(&web, &revision, replicas).map_err(refused)?;
        let annotations = primary.metadata.annotations.get_or_insert_default();
        annotations.insert(ROUTE_ANNOTATION.into(), format!("{SERVICE_ROUTE_PREFIX}{service_name}"));
        annotations.insert(PRIMARY_REPLICAS_ANNOTATION.into(), replicas.to_string());
        let primary = create_or_get(&deployments, &primary).await?;
        if recorded_route(&primary).as_deref().and_then(replica_service).is_none() {
            return Err(PlatformError::failed(format!(
                "Deployment {} was attached for a router with a route object, and its selector cannot change: delete it (canaryd creates it again for the replica router, and traffic goes to {id}'s pods meanwhile only if {id} runs any)",
                primary_name(&id.name)
            )));
        }
        await_rollout(&primary)?;
        if Summary::of(&primary).serves.as_deref() == Some(revision.as_str()) && web.spec.replicas != Some(0)
        {
            scale_to(&deployments, &id.name, 0).await?;
        }
        tracing::info!(rollout = %id, %revision, service = %service_name, "attached for the replica router: {} serves revision {revision} with {replicas} replicas", primary_name(&id.name));
        self.mark_attached(id);
        Ok(())
    }

    /// The replicas `web-primary` serves with between rollouts: recorded at attach.
    fn serving_replicas(primary: &Summary) -> u32 {
        let recorded = primary.serving_replicas.unwrap_or(primary.replicas);
        u32::try_from(recorded.max(1)).unwrap_or(1)
    }

    /// Brings both arms to the split of `weight`: the growing arm first, ready before
    /// the other shrinks. "Not yet" until both have rolled out at their counts.
    pub(super) async fn replica_weight(&self, id: &RolloutId, weight: u8) -> Result<(), PlatformError> {
        let deployments = self.deployments(&id.namespace);
        let (web, primary) = match self.watched(id) {
            Some(both) => both,
            None => (
                Summary::of(&get(&deployments, &id.name).await?),
                Summary::of(&get(&deployments, &primary_name(&id.name)).await?),
            ),
        };
        if primary.route.as_deref().and_then(replica_service).is_none() {
            return Err(PlatformError::failed(format!(
                "Deployment {} was attached for a router with a route object, not the replica router (detach and attach again to move it)",
                primary_name(&id.name)
            )));
        }
        let serving = Self::serving_replicas(&primary);
        let tolerance = self.tolerance(id, &web).unwrap_or(replica::DEFAULT_TOLERANCE);
        if let Some(why) = replica::unachievable(weight, serving, tolerance) {
            return Err(PlatformError::failed(format!("Deployment {id}: {why}")));
        }
        let target = replica::split(weight, serving);
        let (canary, stable) = (to_i32(target.canary), to_i32(target.primary));
        let primary_name = primary_name(&id.name);
        // Grow first, and wait until the grown arm is ready before the other shrinks.
        let mut scaled = false;
        if canary > web.replicas {
            scale_to(&deployments, &id.name, canary).await?;
            scaled = true;
        }
        if stable > primary.replicas {
            scale_to(&deployments, &primary_name, stable).await?;
            scaled = true;
        }
        if scaled {
            return Err(PlatformError::not_yet(format!(
                "{weight}%: scaling to {canary} canary and {stable} primary pods; awaiting them"
            )));
        }
        // Only an arm that keeps or gains pods is awaited: one that shrinks may be the
        // canary that never became ready, being rolled back.
        let ready = |arm: &Summary, name: &str, to: i32| match arm.replicas == to && to > 0 {
            true => awaited(name, arm.progress.clone()),
            false => Ok(()),
        };
        ready(&web, &id.name, canary)?;
        ready(&primary, &primary_name, stable)?;
        if canary < web.replicas {
            scale_to(&deployments, &id.name, canary).await?;
            scaled = true;
        }
        if stable < primary.replicas {
            scale_to(&deployments, &primary_name, stable).await?;
            scaled = true;
        }
        if scaled {
            return Err(PlatformError::not_yet(format!(
                "{weight}%: scaling to {canary} canary and {stable} primary pods"
            )));
        }
        Ok(())
    }

    /// Promotes `revision`: the primary takes `web`'s template at its serving replicas;
    /// once it has rolled out, `web` goes to 0.
    pub(super) async fn promote_replica(
        &self,
        id: &RolloutId,
        web: &Deployment,
        primary: Deployment,
        revision: &str,
    ) -> Result<(), PlatformError> {
        let deployments = self.deployments(&id.namespace);
        let serving = Self::serving_replicas(&Summary::of(&primary));
        let primary = if Summary::of(&primary).serves.as_deref() == Some(revision)
            && primary.spec.replicas == Some(to_i32(serving))
        {
            primary
        } else {
            let desired =
                workloads::shared_primary_deployment(web, revision, to_i32(serving)).map_err(refused)?;
            replace_primary(&deployments, &primary, desired).await?
        };
        await_rollout(&primary)?;
        scale_to(&deployments, &id.name, 0).await?;
        tracing::info!(rollout = %id, %revision, replicas = serving, "promoted: {} serves it", primary_name(&id.name));
        Ok(())
    }
}

fn to_i32(n: u32) -> i32 {
    i32::try_from(n).unwrap_or(i32::MAX)
}
