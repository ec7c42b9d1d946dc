//! The local platform: services declared in the settings, each with a stable and a
//! canary upstream behind nginx. Rollouts start through the API (`POST
//! /api/v1/rollouts`, or `canaryd rollout start`); the daemon's store keeps their state,
//! so a restarted daemon resumes them.
//!
//! What each platform call does here:
//! - **set weight**: the nginx router writes, tests, reloads and reads back the split.
//! - **promote**: runs the service's `promote` hook, which brings the stable servers to
//!   the new revision; then probes `health_path` on every stable server, and routes 100%
//!   to stable and 0% to the canary. The hook is required (the settings refuse a service
//!   without one): nothing else could bring the stable servers to the new revision.
//!   Then the `post-rollout` hook runs.
//! - **scale down** (rollback, after traffic is at 0%): runs the `rollback` hook (e.g.
//!   stops the canary servers), then the `post-rollout` hook. Without a `rollback` hook
//!   the canary servers keep running, taking no traffic.
//! - **scale up**: nothing; the canary servers are the user's (or a hook's) to run.
//!
//! A `pre-rollout` hook runs when a rollout is asked for; if it fails, the request is
//! refused and no traffic moves. Every call may be repeated after a crash, so hooks
//! must be idempotent.

pub mod hooks;
pub mod nginx;

use std::collections::BTreeMap;
use std::sync::Mutex;
use std::time::Duration;

use crate::config::{LocalSettings, ServiceSettings};
use crate::engine::Arms;
use crate::engine::plan::RouterKind;
use crate::engine::{RolloutId, Scale};
use crate::platform::{
    NewRevision, Platform, PlatformError, RolloutEvent, StartError, StartsRollouts, TrafficRouter,
};
use hooks::HookContext;
use nginx::{Router, Upstreams};
use prometheus_client::metrics::counter::Counter;

/// The routers the local platform serves.
pub const ROUTERS: [RouterKind; 1] = [RouterKind::Nginx];

/// The local platform.
pub struct LocalPlatform {
    services: BTreeMap<RolloutId, ServiceSettings>,
    router: Router,
    events: Mutex<Vec<RolloutEvent>>,
    client: reqwest::Client,
    router_failures: Counter,
}

/// `canaryd_router_failures_total`, registered in `registry`: router changes refused
/// (nginx test or reload failed, or the new weights were not served).
pub fn register_router_failures(registry: &mut prometheus_client::registry::Registry) -> Counter {
    let failures = Counter::default();
    registry.register(
        "router_failures",
        "Router changes refused (nginx test or reload failed, or not served); traffic stayed on the last good config",
        failures.clone(),
    );
    failures
}

impl StartsRollouts for LocalPlatform {
    fn rollout_of(&self, service: &str) -> Option<RolloutId> {
        self.service(service).map(Self::id_of)
    }

    fn labels_of(&self, service: &str) -> Option<BTreeMap<String, String>> {
        self.service(service).map(|s| s.labels.clone())
    }

    fn start<'a>(
        &'a self,
        service: &'a str,
        revision: &'a str,
    ) -> std::pin::Pin<Box<dyn std::future::Future<Output = Result<RolloutId, StartError>> + Send + 'a>> {
        Box::pin(LocalPlatform::start(self, service, revision))
    }
}

impl LocalPlatform {
    /// Opens the platform: reads the routes nginx serves from the include file (or
    /// writes one with every canary at 0%).
    pub fn open(settings: &LocalSettings, router_failures: Counter) -> Result<LocalPlatform, String> {
        let upstreams = settings.services.iter().map(Upstreams::from).collect();
        let router = Router::open(&settings.nginx, upstreams).map_err(|e| e.to_string())?;
        let services = settings.services.iter().map(|s| (Self::id_of(s), s.clone())).collect();
        Ok(LocalPlatform {
            services,
            router,
            events: Mutex::new(Vec::new()),
            client: reqwest::Client::new(),
            router_failures,
        })
    }

    /// A service's rollout id: `namespace/name`.
    pub fn id_of(s: &ServiceSettings) -> RolloutId {
        RolloutId { namespace: s.namespace.clone(), name: s.name.clone() }
    }

    /// The service called `name`.
    pub fn service(&self, name: &str) -> Option<&ServiceSettings> {
        self.services.values().find(|s| s.name == name)
    }

    /// The router (to read the served routes).
    pub fn router(&self) -> &Router {
        &self.router
    }

    /// Asks for a rollout of `revision` of `service`: runs the `pre-rollout` hook, then
    /// hands the rollout to the daemon at its next tick.
    pub async fn start(&self, service: &str, revision: &str) -> Result<RolloutId, StartError> {
        let s = self.service(service).ok_or_else(|| StartError::UnknownService(service.to_string()))?;
        if revision.is_empty() || revision.len() > 128 || revision.chars().any(char::is_control) {
            return Err(StartError::BadRevision(format!("`{revision}` must be 1-128 printable characters")));
        }
        if let Some(hook) = &s.hooks.pre_rollout {
            let ctx = context(s, revision, "pre-rollout", None);
            hooks::run(hook, &ctx, &self.client).await.map_err(StartError::PreRollout)?;
        }
        let id = Self::id_of(s);
        let event = NewRevision {
            id: id.clone(),
            revision: revision.to_string(),
            labels: s.labels.clone(),
            arms: Arms {
                namespace: s.namespace.clone(),
                canary: s.canary_workload.clone(),
                baseline: s.stable_workload.clone(),
            },
        };
        self.events.lock().unwrap_or_else(std::sync::PoisonError::into_inner).push(event.into());
        Ok(id)
    }

    fn settings(&self, id: &RolloutId) -> Result<&ServiceSettings, PlatformError> {
        self.services
            .get(id)
            .ok_or_else(|| PlatformError::failed(format!("{id}: no such service in the settings")))
    }

    async fn route(&self, s: &ServiceSettings, weight: u8) -> Result<(), PlatformError> {
        self.router.set_weight(&s.name, weight).await.inspect_err(|e| {
            self.router_failures.inc();
            tracing::error!(service = %s.name, weight, error = %e, "nginx did not take the new weights");
        })
    }

    /// Runs the `post-rollout` hook; a failure is logged, not returned: the rollout has
    /// ended either way.
    async fn post_rollout(&self, s: &ServiceSettings, revision: &str, outcome: &str) {
        if let Some(hook) = &s.hooks.post_rollout {
            let ctx = context(s, revision, "post-rollout", Some(outcome));
            if let Err(error) = hooks::run(hook, &ctx, &self.client).await {
                tracing::warn!(service = %s.name, %error, "post-rollout hook failed");
            }
        }
    }

    /// Probes every stable server's health path until each answers 2xx, or `within`.
    async fn stable_healthy(&self, s: &ServiceSettings, within: Duration) -> Result<(), String> {
        let deadline = tokio::time::Instant::now() + within;
        for server in &s.stable {
            let url = format!("http://{server}{}", s.health_path);
            loop {
                let answer = self.client.get(&url).timeout(Duration::from_secs(1)).send().await;
                let last = match answer {
                    Ok(r) if r.status().is_success() => break,
                    Ok(r) => format!("answers {}", r.status()),
                    Err(e) => e.to_string(),
                };
                if tokio::time::Instant::now() >= deadline {
                    return Err(format!("stable server {url} is not healthy after the promote hook: {last}"));
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
        Ok(())
    }
}

fn context<'a>(
    s: &'a ServiceSettings,
    revision: &'a str,
    hook: &'a str,
    outcome: Option<&'a str>,
) -> HookContext<'a> {
    HookContext { service: &s.name, namespace: &s.namespace, revision, hook, outcome }
}

/// How long the stable servers have to become healthy after a promote hook.
const STABLE_HEALTH_WITHIN: Duration = Duration::from_secs(5);

impl Platform for LocalPlatform {
    fn name(&self) -> &'static str {
        "local"
    }

    fn routers(&self) -> &'static [RouterKind] {
        &ROUTERS
    }

    fn events(&self) -> Vec<RolloutEvent> {
        std::mem::take(&mut *self.events.lock().unwrap_or_else(std::sync::PoisonError::into_inner))
    }

    async fn set_weight(&self, id: &RolloutId, router: RouterKind, weight: u8) -> Result<(), PlatformError> {
        // A policy naming another router is refused at load (`Loaded::refuse_unserved_routers`).
        if !ROUTERS.contains(&router) {
            return Err(PlatformError::failed(format!(
                "the local platform routes with nginx, not {}",
                router.name()
            )));
        }
        let s = self.settings(id)?;
        self.route(s, weight).await
    }

    async fn promote(&self, id: &RolloutId, revision: &str) -> Result<(), PlatformError> {
        let s = self.settings(id)?;
        match &s.hooks.promote {
            Some(hook) => {
                let ctx = context(s, revision, "promote", None);
                hooks::run(hook, &ctx, &self.client).await.map_err(PlatformError::failed)?;
                self.stable_healthy(s, STABLE_HEALTH_WITHIN).await.map_err(PlatformError::failed)?;
                self.route(s, 0).await?;
            }
            // Refused when the settings are read; never promote without one.
            None => {
                return Err(PlatformError::failed(format!(
                    "service {}: no promote hook, so nothing can bring the stable servers to {revision}",
                    s.name
                )));
            }
        }
        self.post_rollout(s, revision, "promoted").await;
        Ok(())
    }

    async fn scale(&self, id: &RolloutId, revision: &str, scale: Scale) -> Result<(), PlatformError> {
        let s = self.settings(id)?;
        if scale == Scale::Up {
            return Ok(());
        }
        match &s.hooks.rollback {
            Some(hook) => {
                let ctx = context(s, revision, "rollback", None);
                hooks::run(hook, &ctx, &self.client).await.map_err(PlatformError::failed)?;
            }
            None => tracing::info!(
                service = %s.name,
                %revision,
                "no rollback hook: the canary servers keep running, taking no traffic"
            ),
        }
        self.post_rollout(s, revision, "rolled-back").await;
        Ok(())
    }
}
