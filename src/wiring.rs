//! `canaryd run`: builds the daemon from its settings and runs it beside the HTTP
//! server until SIGTERM or SIGINT. The platform is chosen here, by an exhaustive match
//! on [`PlatformChoice`]; the loop, the engine and the surfaces do not know which.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use prometheus_client::registry::Registry;
use tokio::sync::{mpsc, watch};

use crate::config::{KubernetesSettings, LocalSettings, Settings};
use crate::daemon::metrics::LoopMetrics;
use crate::daemon::records::{RecordStore, Retention};
use crate::daemon::{Daemon, LoopSender, Options};
use crate::notify::fanout::Fanout;
use crate::notify::slack::SlackNotifier;
use crate::notify::webhook::{PolicyWebhookNotifier, WebhookNotifier};
use crate::platform::kubernetes::events::EventNotifier;
use crate::platform::kubernetes::lease::{self, Leadership};
use crate::platform::kubernetes::platform::KubernetesPlatform;
use crate::platform::kubernetes::policies::PolicyObjects;
use crate::platform::kubernetes::secrets::SecretValues;
use crate::platform::kubernetes::store::CanaryRunStore;
use crate::platform::local::LocalPlatform;
use crate::policy::LoadedPolicy;
use crate::policy::sources::PolicySources;
use crate::server::{ApiMetrics, AppState};
use crate::source::alertmanager::{AlertmanagerMetrics, AlertmanagerSource};
use crate::source::prometheus::{PrometheusSource, QueryMetrics};
use crate::store::file::FileStore;

mod follower;
mod sharded;

/// Why the daemon could not start; each names the setting at fault.
#[derive(Debug, thiserror::Error)]
pub enum WiringError {
    /// The API's address cannot be listened on.
    #[error("server.listen: cannot listen on {addr}: {reason}")]
    Listen {
        /// The address.
        addr: std::net::SocketAddr,
        /// Why.
        reason: String,
    },
    /// A part could not be opened from its settings.
    #[error("{setting}: {reason}")]
    Setting {
        /// The setting (`nginx.include`, `daemon.state_dir`, …).
        setting: &'static str,
        /// Why.
        reason: String,
    },
}

/// Maps an error opening a part to a [`WiringError`] naming `setting`.
fn setting<E: std::fmt::Display>(setting: &'static str) -> impl FnOnce(E) -> WiringError {
    move |e| WiringError::Setting { setting, reason: e.to_string() }
}

/// The platform the settings select.
pub enum PlatformChoice<'a> {
    /// No platform: only `/healthz`, `/readyz` and `/metrics` are served.
    None,
    /// Services behind nginx (`[[services]]`).
    Local(&'a LocalSettings),
    /// Deployments on Kubernetes (`[kubernetes]`).
    Kubernetes(&'a KubernetesSettings),
}

impl<'a> PlatformChoice<'a> {
    /// The platform `settings` select (settings validation refuses both at once).
    pub fn of(settings: &'a Settings) -> PlatformChoice<'a> {
        match (&settings.local, &settings.kubernetes) {
            (Some(local), _) => PlatformChoice::Local(local),
            (None, Some(kubernetes)) => PlatformChoice::Kubernetes(kubernetes),
            (None, None) => PlatformChoice::None,
        }
    }
}

/// Runs the daemon until a signal stops it.
pub async fn run(settings: Settings) -> Result<(), WiringError> {
    crate::telemetry::init_logging(&settings.log);
    let access = crate::server::api::Access {
        tokens: Arc::new(settings.server.tokens.clone()),
        read_requires_token: settings.server.read_requires_token,
    };
    let state = AppState { access, max_body_bytes: settings.server.max_body_bytes, ..Default::default() };
    let policies = load_policies(&settings);
    state.ready.store(!policies.is_empty(), Ordering::Relaxed);
    let listener = tokio::net::TcpListener::bind(settings.server.listen)
        .await
        .map_err(|e| WiringError::Listen { addr: settings.server.listen, reason: e.to_string() })?;
    let (stop_tx, stop) = watch::channel(false);
    match PlatformChoice::of(&settings) {
        PlatformChoice::None => {
            tracing::warn!(listen = %settings.server.listen, "no platform configured ([[services]] or [kubernetes]): serving /healthz, /readyz and /metrics only");
            let serve = serve(&state, listener, stop);
            tokio::join!(serve, signals(&settings, &state, None, stop_tx));
        }
        PlatformChoice::Local(local) => {
            let mut registry = crate::telemetry::registry();
            let platform = Arc::new(
                LocalPlatform::open(local, crate::platform::local::register_router_failures(&mut registry))
                    .map_err(setting("nginx.include"))?,
            );
            let store =
                Arc::new(FileStore::open(&settings.daemon.state_dir).map_err(setting("daemon.state_dir"))?);
            let daemon = daemon(
                &settings,
                DaemonMetrics::register(&settings, &mut registry),
                platform.clone(),
                store.clone(),
                policies,
                Cluster { events: None, leadership: &Leadership::unconditional(), secrets: None },
            )
            .await?;
            let starts: Arc<dyn crate::platform::StartsRollouts> = platform;
            let parts =
                Parts { state, listener, stop, stop_tx, registry, starts: Some(starts), objects: None };
            run_loop(&settings, daemon, store, parts).await;
        }
        PlatformChoice::Kubernetes(kubernetes) if kubernetes.shards > 1 && kubernetes.lease.is_some() => {
            let lease = kubernetes.lease.as_ref().expect("checked");
            let registry = crate::telemetry::registry();
            let parts = Parts { state, listener, stop, stop_tx, registry, starts: None, objects: None };
            sharded::run(&settings, kubernetes, lease, policies, parts).await?;
        }
        PlatformChoice::Kubernetes(kubernetes) => {
            let mut registry = crate::telemetry::registry();
            let config = kube_config().await.map_err(setting("kubernetes"))?;
            let leadership = match &kubernetes.lease {
                Some(_) => Leadership::elected(),
                None => Leadership::unconditional(),
            };
            let identity = kubernetes.lease.as_ref().map_or("unelected", |l| l.identity.as_str());
            let leader_gauge = lease::register_leader(&mut registry, &leadership, identity);
            if let Some(lease) = &kubernetes.lease {
                let elections = lease::Elections::start(config.clone()).map_err(setting("kubernetes"))?;
                let api = elections.leases(&lease.namespace);
                let elected =
                    elections.spawn(lease::elect(api, lease.clone(), leadership.clone(), stop.clone()));
                tokio::spawn(async move {
                    if let Ok(lease::Outcome::Lost) = elected.await {
                        // Everything in memory may be behind the new leader: exit, and
                        // come back (the pod restarts) as a follower.
                        tracing::error!("exiting: this replica lost the Lease");
                        std::process::exit(1);
                    }
                });
                let standby = AppState { standby: Some(leadership.clone()), ..state.clone() };
                let reader = kube::Client::try_from(config.clone())
                    .map_err(|e| setting("kubernetes")(format!("cannot build the Kubernetes client: {e}")))?;
                let follower = Follower { client: reader, kubernetes, policies: &policies };
                let gauge = (identity, leader_gauge);
                if !stand_by(standby, &listener, &leadership, gauge, follower, stop.clone()).await {
                    tracing::info!("stopped while standing by");
                    return Ok(());
                }
            }
            let client = kube::client::ClientBuilder::try_from(config)
                .map_err(|e| setting("kubernetes")(format!("cannot build the Kubernetes client: {e}")))?
                .with_layer(&lease::FenceLayer(leadership.clone()))
                .build();
            let platform = Arc::new(KubernetesPlatform::new(client.clone(), kubernetes.namespaces.clone()));
            let store = Arc::new(CanaryRunStore::new(
                client.clone(),
                kubernetes.namespaces.clone(),
                kubernetes.checkpoint,
            ));
            let events = Some(EventNotifier::new(client.clone()));
            let secret_values = SecretValues::default();
            let client_for_secrets = client.clone();
            let objects = PolicyObjects::new(
                client,
                kubernetes.namespaces.clone(),
                settings.prometheus.batching.scrape.clone(),
            );
            let daemon = daemon(
                &settings,
                DaemonMetrics::register(&settings, &mut registry),
                platform.clone(),
                store.clone(),
                policies,
                Cluster { events, leadership: &leadership, secrets: Some(&secret_values) },
            )
            .await?;
            tokio::spawn(platform.run(daemon.policies()));
            let own_namespace = kubernetes.lease.as_ref().map_or_else(
                || std::env::var("POD_NAMESPACE").unwrap_or_else(|_| "default".into()),
                |l| l.namespace.clone(),
            );
            tokio::spawn(crate::platform::kubernetes::secrets::run(
                client_for_secrets,
                own_namespace,
                secret_values,
                daemon.policies(),
            ));
            let parts =
                Parts { state, listener, stop, stop_tx, registry, starts: None, objects: Some(objects) };
            run_loop(&settings, daemon, store, parts).await;
        }
    }
    tracing::info!("stopped");
    Ok(())
}

/// The Kubernetes client's configuration, as `kubectl` finds it: in-cluster, or from
/// `KUBECONFIG` (`~/.kube/config`).
async fn kube_config() -> Result<kube::Config, String> {
    kube::Config::infer().await.map_err(|e| format!("no Kubernetes client configuration: {e}"))
}

/// Serves `/healthz`, `/readyz`, `/metrics` and a 503 API on `listener` while another
/// replica holds the Lease. True once this replica leads; false when stopped first.
async fn stand_by(
    state: AppState,
    listener: &tokio::net::TcpListener,
    leadership: &Leadership,
    (identity, leader_gauge): (&str, prometheus_client::metrics::gauge::Gauge),
    follower: Follower<'_>,
    stop: watch::Receiver<bool>,
) -> bool {
    let mut leading = leadership.subscribe();
    if *leading.borrow() {
        return true;
    }
    let mut registry = crate::telemetry::registry();
    registry.sub_registry_with_label(("identity".into(), identity.to_string().into())).register(
        "leader",
        "1 while this replica holds the Lease and acts, else 0",
        leader_gauge,
    );
    let (serve_stop_tx, serve_stop) = watch::channel(false);
    let api = follower.api(&mut registry, serve_stop.clone());
    let state = AppState { registry: Arc::new(registry), api: Some(api), ..state };
    tracing::info!(
        "standing by: another replica holds the Lease (or none was read yet); the API reads the rollouts from their CanaryRuns"
    );
    let copy = listener_copy(listener);
    let mut stop_signal = stop.clone();
    let mut term = match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
        Ok(term) => term,
        Err(_) => return false,
    };
    let serving = async {
        match copy {
            Some(copy) => serve(&state, copy, serve_stop).await,
            None => std::future::pending().await,
        }
    };
    let led = tokio::select! {
        led = leading.wait_for(|l| *l) => led.is_ok(),
        _ = stop_signal.wait_for(|s| *s) => false,
        _ = term.recv() => false,
        _ = tokio::signal::ctrl_c() => false,
        () = serving => false,
    };
    let _ = serve_stop_tx.send(true);
    led
}

/// What a follower's read-only API reads: the CanaryRuns the leader writes.
struct Follower<'a> {
    /// Not fenced: it only reads.
    client: kube::Client,
    kubernetes: &'a KubernetesSettings,
    policies: &'a [LoadedPolicy],
}

impl Follower<'_> {
    /// The API a follower serves until `stop`: the rollouts' views and states from
    /// their CanaryRuns (`wiring/follower.rs`); nothing reaches a loop, as
    /// the stand-by refuses every command before it would.
    fn api(self, registry: &mut Registry, stop: watch::Receiver<bool>) -> crate::server::api::Api {
        let (views_tx, views) = watch::channel(Vec::new());
        let namespaces = self.kubernetes.namespaces.clone();
        tokio::spawn(follower::watch_views(self.client.clone(), namespaces.clone(), views_tx, stop));
        let store = CanaryRunStore::new(self.client, namespaces, self.kubernetes.checkpoint);
        crate::server::api::Api {
            platform: None,
            views,
            policies: watch::channel(Arc::new(self.policies.to_vec())).1,
            commands: LoopSender::from(mpsc::unbounded_channel().0),
            alerts: LoopSender::from(mpsc::unbounded_channel().0),
            wake: Arc::new(tokio::sync::Notify::new()),
            store: Some(Arc::new(store)),
            records_dir: None,
            metrics: ApiMetrics::register(registry, Default::default()),
            elsewhere: None,
        }
    }
}

/// A second handle on `listener`'s socket, to serve on while standing by without
/// closing the port the leader's server then takes over.
fn listener_copy(listener: &tokio::net::TcpListener) -> Option<tokio::net::TcpListener> {
    let fd = std::os::fd::AsFd::as_fd(listener).try_clone_to_owned().ok()?;
    let std = std::net::TcpListener::from(fd);
    tokio::net::TcpListener::from_std(std).ok()
}

/// What the loop runs beside: the HTTP surface, its listener and the stop signal.
struct Parts {
    state: AppState,
    listener: tokio::net::TcpListener,
    stop: watch::Receiver<bool>,
    stop_tx: watch::Sender<bool>,
    registry: Registry,
    /// Where `POST /api/v1/rollouts` starts a rollout (the local platform only).
    starts: Option<Arc<dyn crate::platform::StartsRollouts>>,
    /// Policy objects in the API server, beside the files (the Kubernetes platform).
    objects: Option<PolicyObjects>,
}

/// Runs `daemon` beside the HTTP API until a signal stops it.
async fn run_loop<P: crate::platform::Platform, St: crate::store::RunStore + crate::store::TimelineStore>(
    settings: &Settings,
    mut daemon: Daemon<PrometheusSource, P, St>,
    store: Arc<St>,
    parts: Parts,
) {
    let Parts { mut state, listener, stop, stop_tx, mut registry, starts, objects } = parts;
    state.api = Some(crate::server::api::Api {
        platform: starts,
        views: daemon.views(),
        policies: daemon.policies(),
        commands: daemon.commands(),
        alerts: daemon.alerts(),
        wake: daemon.waker(),
        store: Some(store),
        records_dir: Some(settings.daemon.records_dir.clone()),
        metrics: ApiMetrics::register(&mut registry, daemon.metrics().alerts.clone()),
        elsewhere: None,
    });
    state.registry = Arc::new(registry);
    let ticked = Arc::new(AtomicBool::new(false));
    state.loop_ready = Some(ticked.clone());
    let reload = daemon.policy_updates();
    let ready = state.ready.clone();
    let sources = Arc::new(PolicySources::new(
        daemon.policies().borrow().to_vec(),
        Box::new(move |policies| {
            ready.store(!policies.is_empty(), Ordering::Relaxed);
            let _ = reload.send(policies);
        }),
    ));
    if let Some(objects) = objects {
        tokio::spawn(objects.run(sources.clone()));
    }
    tracing::info!(listen = %settings.server.listen, tick = ?settings.daemon.tick, "running: /healthz, /readyz, /metrics and /api/v1/rollouts");
    let mut loop_stop = stop.clone();
    let run = crate::daemon::run_until(
        &mut daemon,
        settings.daemon.tick,
        jiff::Timestamp::now,
        &ticked,
        async move {
            let _ = loop_stop.wait_for(|s| *s).await;
        },
        settings.daemon.shutdown_deadline,
    );
    let serve = serve(&state, listener, stop);
    tokio::join!(serve, run, signals(settings, &state, Some(sources), stop_tx));
}

/// What the daemon takes from a cluster (nothing on the local platform): Events for its
/// decisions, the Lease it acts under, the Secrets its notifications read.
struct Cluster<'a> {
    events: Option<EventNotifier>,
    leadership: &'a Leadership,
    secrets: Option<&'a SecretValues>,
}

/// The metrics of one daemon: its Prometheus queries, notifications, Alertmanager reads
/// and loop. Registered once (with shards, once per shard, under `shard="k"`), so that a
/// daemon started again counts on.
#[derive(Clone)]
struct DaemonMetrics {
    query: QueryMetrics,
    deliveries: crate::notify::DeliveryCounts,
    alertmanager: Option<AlertmanagerMetrics>,
    looped: LoopMetrics,
}

impl DaemonMetrics {
    fn register(settings: &Settings, registry: &mut Registry) -> DaemonMetrics {
        DaemonMetrics {
            query: QueryMetrics::register(registry),
            deliveries: crate::notify::register_deliveries(registry),
            alertmanager: settings.alertmanager.as_ref().map(|_| AlertmanagerMetrics::register(registry)),
            looped: LoopMetrics::register(registry),
        }
    }
}

/// The loop over `platform` and `store`: Prometheus, records, notifications, counted
/// in `metrics`.
async fn daemon<P: crate::platform::Platform, St: crate::store::RunStore + crate::store::TimelineStore>(
    settings: &Settings,
    metrics: DaemonMetrics,
    platform: Arc<P>,
    store: Arc<St>,
    policies: Vec<LoadedPolicy>,
    on: Cluster<'_>,
) -> Result<Daemon<PrometheusSource, P, St>, WiringError> {
    let Cluster { events, leadership, secrets } = on;
    let retention =
        Retention { max_count: settings.daemon.records_max_count, max_age: settings.daemon.records_max_age };
    let records =
        RecordStore::open(&settings.daemon.records_dir, retention).map_err(setting("daemon.records_dir"))?;
    let source =
        PrometheusSource::new(&settings.prometheus, metrics.query, std::time::Duration::from_millis(500))
            .map_err(setting("prometheus"))?;
    let options = Options {
        tick: settings.daemon.tick,
        platform_timeout: settings.daemon.platform_timeout,
        batching: settings.prometheus.batching.clone(),
        metric_values: settings.daemon.metric_values.clone(),
        ..Default::default()
    };
    let timeout = std::time::Duration::from_secs(10);
    let webhook = match &settings.daemon.webhook_url {
        Some(url) => {
            Some(WebhookNotifier::new(url.expose(), timeout).map_err(setting("daemon.webhook_url"))?)
        }
        None => None,
    };
    let (slack_urls, webhook_urls): (crate::notify::slack::Resolver, crate::notify::slack::Resolver) =
        match secrets {
            Some(secrets) => (
                secrets.resolver(crate::notify::slack::from_env),
                secrets.resolver(crate::notify::webhook::url_from_env),
            ),
            None => {
                (Box::new(crate::notify::slack::from_env), Box::new(crate::notify::webhook::url_from_env))
            }
        };
    let slack = SlackNotifier::new(timeout, slack_urls).map_err(setting("notify.slack"))?;
    let policy_webhooks =
        PolicyWebhookNotifier::new(timeout, webhook_urls).map_err(setting("notify.webhook"))?;
    let mut fanout =
        Fanout::new(webhook, policy_webhooks, slack, metrics.deliveries).fenced(leadership.clone());
    if let Some(events) = events {
        fanout = fanout.with_events(events);
    }
    let notifier = Arc::new(fanout);
    let alertmanager = match (&settings.alertmanager, metrics.alertmanager) {
        (Some(am), Some(counted)) => {
            Some(Arc::new(AlertmanagerSource::new(am, counted).map_err(setting("alertmanager"))?))
        }
        _ => None,
    };
    let mut daemon = Daemon::start(
        Arc::new(source),
        platform,
        store,
        notifier,
        Some(records),
        policies,
        options,
        metrics.looped,
    )
    .await;
    if let Some(alertmanager) = alertmanager {
        daemon.read_alerts_from(alertmanager);
    }
    Ok(daemon)
}

/// Serves the HTTP surface until `stop` is set.
async fn serve(state: &AppState, listener: tokio::net::TcpListener, mut stop: watch::Receiver<bool>) {
    let app = crate::server::app(state.clone());
    let limits = crate::server::listen::Limits::default();
    crate::server::listen::serve(listener, app, limits, async move {
        let _ = stop.wait_for(|s| *s).await;
    })
    .await;
}

/// Loads the policy files, refusing the policies whose router the platform cannot serve.
/// (The daemon is ready only with at least one valid policy, from a file or, on
/// Kubernetes, an object.)
pub fn load_policies(settings: &Settings) -> Vec<LoadedPolicy> {
    const HOW: &str = "set the policy paths with `[policies] paths` in the settings (--config FILE) \
                       or CANARYD__POLICIES__PATHS (`:`-separated)";
    // A path that is not there holds no policy to reject: it is the setting that is wrong.
    let (present, missing): (Vec<_>, Vec<_>) =
        settings.policy_paths.iter().cloned().partition(|p| p.exists());
    if settings.policy_paths.is_empty() {
        // On Kubernetes, policies may all be objects: no path is a valid choice.
        tracing::info!("no policy paths are set: policies come from objects only");
    } else if present.is_empty() {
        let paths: Vec<String> = missing.iter().map(|p| p.display().to_string()).collect();
        tracing::error!(?paths, "no policy path exists, so no policy is loaded; {HOW}");
    } else {
        for path in &missing {
            tracing::error!(path = %path.display(), "policy path does not exist; {HOW}");
        }
    }
    let mut loaded = crate::policy::load_paths_with(&present, Some(&settings.prometheus.batching.scrape));
    match PlatformChoice::of(settings) {
        PlatformChoice::Local(_) => {
            loaded.refuse_unserved_routers("local", &crate::platform::local::ROUTERS);
        }
        PlatformChoice::Kubernetes(_) => {
            loaded.refuse_unserved_routers("kubernetes", &crate::platform::kubernetes::ROUTERS);
        }
        PlatformChoice::None => {}
    }
    for problem in &loaded.problems {
        if loaded.policies.is_empty() {
            tracing::error!(%problem, "policy rejected");
        } else {
            tracing::error!(%problem, "policy rejected; the other policies stay in force");
        }
    }
    if loaded.policies.is_empty() {
        match PlatformChoice::of(settings) {
            PlatformChoice::Kubernetes(_) => tracing::info!(
                paths = ?settings.policy_paths,
                "no valid policy in files: not ready until a CanaryPolicy or ClusterCanaryPolicy object is"
            ),
            _ => tracing::warn!(paths = ?settings.policy_paths, "no valid policy loaded: not ready"),
        }
    }
    tracing::info!(policies = loaded.policies.len(), "policy files loaded");
    loaded.policies
}

/// Sets `stop` on SIGTERM (what Kubernetes sends) or SIGINT; SIGHUP reloads the
/// policy files (and hands them, with the policy objects, to the loop when one runs).
async fn signals(
    settings: &Settings,
    state: &AppState,
    sources: Option<Arc<PolicySources>>,
    stop: watch::Sender<bool>,
) {
    use tokio::signal::unix::{SignalKind, signal};
    let (Ok(mut term), Ok(mut hup)) = (signal(SignalKind::terminate()), signal(SignalKind::hangup())) else {
        tracing::error!("cannot listen for signals; stop with SIGKILL");
        return std::future::pending().await;
    };
    loop {
        tokio::select! {
            _ = term.recv() => {
                tracing::info!(signal = "SIGTERM", "shutting down");
                let _ = stop.send(true);
                return;
            }
            _ = tokio::signal::ctrl_c() => {
                tracing::info!(signal = "SIGINT", "shutting down");
                let _ = stop.send(true);
                return;
            }
            _ = hup.recv() => {
                tracing::info!(signal = "SIGHUP", "reloading policies");
                let files = load_policies(settings);
                match &sources {
                    Some(sources) => sources.set_files(files),
                    None => state.ready.store(!files.is_empty(), Ordering::Relaxed),
                }
            }
        }
    }
}
