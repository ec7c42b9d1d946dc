//! Leader election on a `coordination.k8s.io/v1` Lease, so that several replicas of
//! canaryd run and exactly one acts: writes CanaryRuns, Deployments, Services, routes
//! and Events, and sends notifications. The others stand by and take over when the
//! holder stops renewing.
//!
//! The algorithm is client-go's `leaderelection` on a Lease:
//! - A candidate reads the Lease. It takes it when nobody holds it, or when its record
//!   (holder, renew time, resourceVersion) has not changed for the lease's duration,
//!   measured on the candidate's own clock from when it first saw that record. No
//!   clocks are compared across machines.
//! - The holder renews it every `retry`. Every write is an update guarded by the
//!   resourceVersion it read, so two candidates cannot both win: the second gets 409.
//! - On shutdown the holder releases the Lease (empty holder), and a follower takes it
//!   at its next try instead of after the lease's duration.
//!
//! **Fencing.** Being the holder is not a flag that another task must remember to
//! clear. [`Leadership::may_act`] is true only until `renew_deadline` after the
//! *sending* of the last renewal that succeeded, on the monotonic clock. A replica
//! paused past its lease (SIGSTOP, a frozen VM) wakes with that deadline behind it and
//! refuses its own next write before it has even asked the API server who holds the
//! Lease. Every write of the Kubernetes client goes through [`Fence`], and the
//! notifications check `may_act` before sending. `renew_deadline` is shorter than the
//! lease's duration: the difference is the margin for a write already on the wire.
//!
//! The decision is [`decide`], pure over an injected `now`; [`elect`] does the I/O.

use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use futures::future::{Either, Ready, ready};
use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::MicroTime;
use kube::api::{ObjectMeta, PostParams};
use kube::{Api, ResourceExt};
use tokio::sync::watch;

/// Where the Lease is and how it is held (`[kubernetes.lease]`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LeaseSettings {
    /// The Lease's name.
    pub name: String,
    /// The Lease's namespace.
    pub namespace: String,
    /// This replica's identity in `holderIdentity` (the pod's name in a cluster).
    pub identity: String,
    /// How long a Lease not renewed stays held: a follower waits this long, from when it
    /// first saw the holder's last renewal, before taking it.
    pub duration: Duration,
    /// How long after sending its last successful renewal the holder still acts.
    /// Shorter than `duration`.
    pub renew_deadline: Duration,
    /// How often the holder renews and a follower tries.
    pub retry: Duration,
}

/// Whether this replica acts, shared by the elector (which renews it) and everything
/// that writes (which checks it just before writing). Cheap to clone.
#[derive(Clone)]
pub struct Leadership {
    state: Arc<Mutex<State>>,
    leading: watch::Sender<bool>,
}

struct State {
    /// `None`: acts unconditionally (no election configured).
    until: Option<Instant>,
    unconditional: bool,
    /// The holder last seen, when it is another replica.
    leader: Option<String>,
}

impl Leadership {
    /// Acts always: one replica, no Lease (the local platform, or `lease.enabled = false`).
    pub fn unconditional() -> Leadership {
        Leadership {
            state: Arc::new(Mutex::new(State { until: None, unconditional: true, leader: None })),
            leading: watch::channel(true).0,
        }
    }

    /// Does not act until [`elect`] takes the Lease.
    pub fn elected() -> Leadership {
        Leadership {
            state: Arc::new(Mutex::new(State { until: None, unconditional: false, leader: None })),
            leading: watch::channel(false).0,
        }
    }

    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Whether this replica may write now.
    pub fn may_act(&self) -> bool {
        let state = self.state();
        state.unconditional || state.until.is_some_and(|until| Instant::now() < until)
    }

    /// The other replica that holds the Lease, when one does and this one follows.
    pub fn leader(&self) -> Option<String> {
        self.state().leader.clone()
    }

    /// True while this replica leads; changes when it takes or loses the Lease.
    pub fn subscribe(&self) -> watch::Receiver<bool> {
        self.leading.subscribe()
    }

    /// A renewal sent at `sent` succeeded: act until `sent + renew_deadline`.
    fn renewed(&self, sent: Instant, renew_deadline: Duration) {
        let mut state = self.state();
        state.until = Some(sent + renew_deadline);
        state.leader = None;
        drop(state);
        self.leading.send_if_modified(|l| !std::mem::replace(l, true));
    }

    /// Another replica holds the Lease (`None`: it is not known which).
    fn follow(&self, leader: Option<String>) {
        let mut state = self.state();
        state.until = None;
        state.leader = leader;
        drop(state);
        self.leading.send_if_modified(|l| std::mem::replace(l, false));
    }

    /// The deadline passed without a renewal (the API server unreachable, or this
    /// process paused): stop acting.
    fn expire_if_past(&self, now: Instant) {
        let mut state = self.state();
        if state.until.is_some_and(|until| now >= until) {
            state.until = None;
            drop(state);
            self.leading.send_if_modified(|l| std::mem::replace(l, false));
        }
    }
}

/// Registers `canaryd_leader{identity}` (1 while this replica acts, else 0) and keeps it
/// current. Returns the gauge, to serve it from a second registry too.
pub fn register_leader(
    registry: &mut prometheus_client::registry::Registry,
    leadership: &Leadership,
    identity: &str,
) -> prometheus_client::metrics::gauge::Gauge {
    let gauge = prometheus_client::metrics::gauge::Gauge::default();
    registry.sub_registry_with_label(("identity".into(), identity.to_string().into())).register(
        "leader",
        "1 while this replica holds the Lease and acts, else 0",
        gauge.clone(),
    );
    let mut leading = leadership.subscribe();
    let set = gauge.clone();
    set.set(i64::from(*leading.borrow_and_update()));
    tokio::spawn(async move {
        while leading.changed().await.is_ok() {
            set.set(i64::from(*leading.borrow_and_update()));
        }
    });
    gauge
}

/// What a candidate does with the Lease it just read.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Decision {
    /// Nobody holds it, or its holder stopped renewing: take it.
    Take,
    /// This replica holds it: renew it.
    Renew,
    /// Another replica holds it and renews it.
    Follow(String),
}

/// A Lease record and when this replica first saw it (its own monotonic clock).
#[derive(Clone, Debug)]
pub struct Observed {
    /// The Lease's resourceVersion: any write changes it.
    pub version: String,
    /// When this replica first read that version.
    pub at: Instant,
}

/// What to do with `spec`, read at version `version` at `now`, given what was observed
/// before (updated here when the record changed). Pure: the caller supplies the clock.
pub fn decide(
    spec: Option<&LeaseSpec>,
    version: &str,
    me: &str,
    observed: &mut Option<Observed>,
    now: Instant,
) -> Decision {
    if observed.as_ref().is_none_or(|o| o.version != version) {
        *observed = Some(Observed { version: version.to_string(), at: now });
    }
    let seen_at = observed.as_ref().map_or(now, |o| o.at);
    let holder = spec.and_then(|s| s.holder_identity.as_deref()).filter(|h| !h.is_empty());
    let duration = spec.and_then(|s| s.lease_duration_seconds).unwrap_or(0).max(0);
    match holder {
        None => Decision::Take,
        Some(holder) if holder == me => Decision::Renew,
        Some(holder) => {
            if now.saturating_duration_since(seen_at) >= Duration::from_secs(duration as u64) {
                Decision::Take
            } else {
                Decision::Follow(holder.to_string())
            }
        }
    }
}

/// Why a lease write failed.
#[derive(Debug, thiserror::Error)]
enum LeaseError {
    #[error("Lease {0}: {1}")]
    Api(String, kube::Error),
    #[error("Lease {0}: no answer within the renew deadline ({1:?})")]
    Slow(String, Duration),
}

/// Holds the Lease for `leadership` until `stop` is set, then releases it if held.
/// Returns when `stop` is set, or when another replica has held the Lease since this
/// one last wrote it (the caller exits: a restart comes back as a follower with nothing
/// stale in memory).
///
/// A renewal that fails (the API server down) only stops this replica acting once its
/// deadline passes; it acts again when a renewal succeeds on the very record it last
/// wrote, which proves no other replica held the Lease in between.
pub async fn elect(
    api: Api<Lease>,
    settings: LeaseSettings,
    leadership: Leadership,
    stop: watch::Receiver<bool>,
) -> Outcome {
    elect_when(api, settings, leadership, stop, Arc::new(|| true)).await
}

/// Whether a candidate may take a Lease it does not hold now (a shard's, when the
/// replica is below its fair share). Renewing a Lease held is never gated.
pub type MayTake = Arc<dyn Fn() -> bool + Send + Sync>;

/// [`elect`], taking the Lease only while `may_take` says so.
pub async fn elect_when(
    api: Api<Lease>,
    settings: LeaseSettings,
    leadership: Leadership,
    mut stop: watch::Receiver<bool>,
    may_take: MayTake,
) -> Outcome {
    let mut observed = None;
    // This replica's last successful write of the Lease.
    let mut written: Option<Written> = None;
    let mut fenced_logged = false;
    loop {
        let sent = Instant::now();
        let allowed = written.is_some() || may_take();
        // A try that outlives the renew deadline could not keep this replica acting
        // anyway: give up on it and try again (client-go bounds its tries the same way).
        let tried = tokio::time::timeout(
            settings.renew_deadline,
            try_once(&api, &settings, &mut observed, sent, allowed),
        )
        .await
        .unwrap_or_else(|_| {
            Err(LeaseError::Slow(
                format!("{}/{}", settings.namespace, settings.name),
                settings.renew_deadline,
            ))
        });
        match tried {
            Ok(Tried { decision: Decision::Take | Decision::Renew, read, wrote }) => {
                if let Some(ours) = &written
                    && !ours.still_ours(&read)
                {
                    tracing::error!(lease = %settings.name, "another replica held the Lease since this one last renewed it");
                    leadership.follow(None);
                    return Outcome::Lost;
                }
                if written.is_none() {
                    tracing::info!(lease = %settings.name, namespace = %settings.namespace, identity = %settings.identity, "took the Lease: this replica acts");
                } else if fenced_logged {
                    tracing::info!(lease = %settings.name, "renewed the Lease: this replica acts again");
                }
                fenced_logged = false;
                written = Some(wrote);
                leadership.renewed(sent, settings.renew_deadline);
            }
            Ok(Tried { decision: Decision::Follow(holder), .. }) => {
                leadership.follow(Some(holder.clone()));
                if written.is_some() {
                    tracing::error!(lease = %settings.name, holder = %holder, "lost the Lease to another replica");
                    return Outcome::Lost;
                }
            }
            Err(e) => tracing::warn!(error = %e, "cannot renew or take the Lease; retrying"),
        }
        leadership.expire_if_past(Instant::now());
        if written.is_some() && !leadership.may_act() && !fenced_logged {
            tracing::error!(lease = %settings.name, deadline = ?settings.renew_deadline, "the Lease was not renewed within its deadline: this replica stops acting until it is");
            fenced_logged = true;
        }
        let stopped = tokio::select! {
            _ = tokio::time::sleep(settings.retry) => false,
            _ = stop.wait_for(|s| *s) => true,
        };
        if stopped {
            if written.is_some() && leadership.may_act() {
                release(&api, &settings).await;
            }
            leadership.follow(None);
            return Outcome::Stopped;
        }
    }
}

/// How [`elect`] ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// Asked to stop (the Lease was released if held).
    Stopped,
    /// Another replica held the Lease since this one did: it must not act again in
    /// this process.
    Lost,
}

/// One try: the decision, the record read (`None`: there was no Lease) and, when the
/// Lease was taken or renewed, the record written.
struct Tried {
    decision: Decision,
    read: Option<Written>,
    wrote: Written,
}

/// A Lease record as far as tenure goes: its resourceVersion and its holder's
/// `leaseTransitions` count.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
struct Written {
    version: String,
    holder: String,
    transitions: i32,
}

impl Written {
    fn of(lease: &Lease) -> Written {
        let spec = lease.spec.as_ref();
        Written {
            version: lease.resource_version().unwrap_or_default(),
            holder: spec.and_then(|s| s.holder_identity.clone()).unwrap_or_default(),
            transitions: spec.and_then(|s| s.lease_transitions).unwrap_or(0),
        }
    }

    /// Whether `read` is still this tenure: the very record written, or a later one by
    /// the same holder with no transition since (a renewal whose answer was lost, e.g. a
    /// try given up at the deadline after the API server applied it). Any other replica
    /// taking the Lease in between counts a transition.
    fn still_ours(&self, read: &Option<Written>) -> bool {
        read.as_ref().is_some_and(|r| {
            r.version == self.version || (r.holder == self.holder && r.transitions == self.transitions)
        })
    }
}

/// One read and, when the decision is to hold it, one guarded write. `Follow` also when
/// another candidate won the race for the same version (409), and when the Lease is
/// free but taking it is not `allowed`.
async fn try_once(
    api: &Api<Lease>,
    settings: &LeaseSettings,
    observed: &mut Option<Observed>,
    now: Instant,
    allowed: bool,
) -> Result<Tried, LeaseError> {
    let name = &settings.name;
    let failed = |e| LeaseError::Api(format!("{}/{name}", settings.namespace), e);
    let follow =
        |holder: String, read| Tried { decision: Decision::Follow(holder), read, wrote: Written::default() };
    let Some(lease) = api.get_opt(name).await.map_err(failed)? else {
        if !allowed {
            return Ok(follow(String::new(), None));
        }
        let lease = Lease {
            metadata: ObjectMeta { name: Some(name.clone()), ..Default::default() },
            spec: Some(held_spec(settings, None)),
        };
        return match api.create(&PostParams::default(), &lease).await {
            Ok(created) => {
                let wrote = Written::of(&created);
                *observed = Some(Observed { version: wrote.version.clone(), at: now });
                Ok(Tried { decision: Decision::Take, read: None, wrote })
            }
            Err(kube::Error::Api(s)) if s.code == 409 => Ok(follow(String::new(), None)),
            Err(e) => Err(failed(e)),
        };
    };
    let read = Written::of(&lease);
    let decision = decide(lease.spec.as_ref(), &read.version, &settings.identity, observed, now);
    if let Decision::Follow(holder) = decision {
        return Ok(follow(holder, Some(read)));
    }
    if decision == Decision::Take && !allowed {
        return Ok(follow(read.holder.clone(), Some(read)));
    }
    let mut next = lease.clone();
    next.spec = Some(held_spec(settings, lease.spec.as_ref()));
    match api.replace(name, &PostParams::default(), &next).await {
        Ok(written) => {
            let wrote = Written::of(&written);
            *observed = Some(Observed { version: wrote.version.clone(), at: now });
            Ok(Tried { decision, read: Some(read), wrote })
        }
        Err(kube::Error::Api(s)) if s.code == 409 => Ok(follow(read.holder.clone(), Some(read))),
        Err(e) => Err(failed(e)),
    }
}

/// The spec that says this replica holds the Lease from now, after `before`.
fn held_spec(settings: &LeaseSettings, before: Option<&LeaseSpec>) -> LeaseSpec {
    let now = MicroTime(jiff::Timestamp::now());
    let ours = before.and_then(|b| b.holder_identity.as_deref()) == Some(settings.identity.as_str());
    let transitions = before.and_then(|b| b.lease_transitions).unwrap_or(0);
    LeaseSpec {
        holder_identity: Some(settings.identity.clone()),
        lease_duration_seconds: Some(settings.duration.as_secs().max(1) as i32),
        acquire_time: if ours { before.and_then(|b| b.acquire_time.clone()) } else { Some(now.clone()) },
        renew_time: Some(now),
        lease_transitions: Some(if ours || before.is_none() { transitions } else { transitions + 1 }),
        ..Default::default()
    }
}

/// Gives the Lease up on shutdown: no holder, so a follower takes it at its next try.
async fn release(api: &Api<Lease>, settings: &LeaseSettings) {
    let Ok(mut lease) = api.get(&settings.name).await else { return };
    if lease.spec.as_ref().and_then(|s| s.holder_identity.as_deref()) != Some(settings.identity.as_str()) {
        return;
    }
    if let Some(spec) = lease.spec.as_mut() {
        spec.holder_identity = None;
        spec.lease_duration_seconds = Some(1);
        spec.renew_time = Some(MicroTime(jiff::Timestamp::now()));
    }
    match api.replace(&settings.name, &PostParams::default(), &lease).await {
        Ok(_) => tracing::info!(lease = %settings.name, "released the Lease"),
        Err(e) => {
            tracing::warn!(error = %e, "could not release the Lease; a follower takes it when it expires")
        }
    }
}

/// The elections' own OS thread, runtime and Kubernetes client. A renewal must not wait
/// behind the work it fences: on the daemon's runtime, a burst of rollouts starting
/// (thousands of writes queued on two cores) delayed the renewals past their deadline
/// and fenced the very replica doing the work. Here a renewal waits only for the
/// thread's share of the CPU and the API server's answer.
#[derive(Clone)]
pub struct Elections {
    runtime: tokio::runtime::Handle,
    client: kube::Client,
}

impl Elections {
    /// Starts the thread and builds its client from `config` (inside its runtime, so the
    /// client's connections and buffer run there too).
    pub fn start(config: kube::Config) -> Result<Elections, String> {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|e| format!("cannot start the elections' runtime: {e}"))?;
        let handle = runtime.handle().clone();
        std::thread::Builder::new()
            .name("canaryd-leases".into())
            .spawn(move || runtime.block_on(std::future::pending::<()>()))
            .map_err(|e| format!("cannot start the elections' thread: {e}"))?;
        let _inside = handle.enter();
        let client = kube::Client::try_from(config)
            .map_err(|e| format!("cannot build the elections' Kubernetes client: {e}"))?;
        Ok(Elections { runtime: handle, client })
    }

    /// The Leases of `namespace`, through the elections' client.
    pub fn leases(&self, namespace: &str) -> Api<Lease> {
        Api::namespaced(self.client.clone(), namespace)
    }

    /// Runs an election (or any Lease work) on the elections' thread.
    pub fn spawn<F>(&self, work: F) -> tokio::task::JoinHandle<F::Output>
    where
        F: std::future::Future + Send + 'static,
        F::Output: Send + 'static,
    {
        self.runtime.spawn(work)
    }
}

/// A tower layer that refuses every write (any method but GET, HEAD and OPTIONS) of the
/// Kubernetes client while this replica may not act. The elector's own client is not
/// fenced.
#[derive(Clone)]
pub struct FenceLayer(pub Leadership);

impl<S> tower::Layer<S> for FenceLayer {
    type Service = Fence<S>;
    fn layer(&self, inner: S) -> Fence<S> {
        Fence { inner, leadership: self.0.clone() }
    }
}

/// The service [`FenceLayer`] wraps around the client's.
#[derive(Clone)]
pub struct Fence<S> {
    inner: S,
    leadership: Leadership,
}

/// The error a fenced write fails with.
#[derive(Debug, thiserror::Error)]
#[error("not acting: this replica does not hold the Lease (leader: {leader})")]
pub struct NotActing {
    leader: String,
}

impl<S, B> tower::Service<http::Request<B>> for Fence<S>
where
    S: tower::Service<http::Request<B>>,
    S::Error: Into<tower::BoxError>,
{
    type Response = S::Response;
    type Error = tower::BoxError;
    type Future = Either<
        Ready<Result<S::Response, tower::BoxError>>,
        futures::future::MapErr<S::Future, fn(S::Error) -> tower::BoxError>,
    >;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx).map_err(Into::into)
    }

    fn call(&mut self, request: http::Request<B>) -> Self::Future {
        use futures::TryFutureExt;
        let reads =
            matches!(*request.method(), http::Method::GET | http::Method::HEAD | http::Method::OPTIONS);
        if !reads && !self.leadership.may_act() {
            let leader = self.leadership.leader().unwrap_or_else(|| "unknown".into());
            tracing::debug!(method = %request.method(), path = %request.uri().path(), "write refused: not the leader");
            return Either::Left(ready(Err(Box::new(NotActing { leader }))));
        }
        Either::Right(
            self.inner
                .call(request)
                .map_err(<S::Error as Into<tower::BoxError>>::into as fn(S::Error) -> tower::BoxError),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(holder: Option<&str>, seconds: i32) -> LeaseSpec {
        LeaseSpec {
            holder_identity: holder.map(String::from),
            lease_duration_seconds: Some(seconds),
            ..Default::default()
        }
    }

    #[test]
    fn a_lease_nobody_holds_is_taken_and_ones_own_is_renewed() {
        let t0 = Instant::now();
        let mut seen = None;
        assert_eq!(decide(None, "1", "a", &mut seen, t0), Decision::Take);
        assert_eq!(decide(Some(&spec(Some(""), 15)), "2", "a", &mut seen, t0), Decision::Take);
        assert_eq!(decide(Some(&spec(Some("a"), 15)), "3", "a", &mut seen, t0), Decision::Renew);
    }

    #[test]
    fn another_holders_lease_is_taken_only_after_its_record_stood_still_for_its_duration() {
        let t0 = Instant::now();
        let s = spec(Some("b"), 15);
        let mut seen = None;
        assert_eq!(decide(Some(&s), "7", "a", &mut seen, t0), Decision::Follow("b".into()));
        let at = |secs| t0 + Duration::from_millis(secs);
        assert_eq!(decide(Some(&s), "7", "a", &mut seen, at(14_999)), Decision::Follow("b".into()));
        assert_eq!(decide(Some(&s), "7", "a", &mut seen, at(15_000)), Decision::Take);
    }

    #[test]
    fn a_renewal_seen_restarts_the_wait_whatever_the_holders_clock_says() {
        // The holder's renewTime is never compared with our clock: only a change of
        // version is evidence that it is alive.
        let t0 = Instant::now();
        let s = spec(Some("b"), 15);
        let mut seen = None;
        decide(Some(&s), "7", "a", &mut seen, t0);
        let t10 = t0 + Duration::from_secs(10);
        assert_eq!(decide(Some(&s), "8", "a", &mut seen, t10), Decision::Follow("b".into()));
        let t24 = t0 + Duration::from_secs(24);
        assert_eq!(decide(Some(&s), "8", "a", &mut seen, t24), Decision::Follow("b".into()));
        let t25 = t0 + Duration::from_secs(25);
        assert_eq!(decide(Some(&s), "8", "a", &mut seen, t25), Decision::Take);
    }

    #[test]
    fn a_holder_acts_until_its_renew_deadline_after_sending_and_not_after() {
        let leadership = Leadership::elected();
        assert!(!leadership.may_act(), "a candidate does not act before it takes the Lease");
        let sent = Instant::now();
        leadership.renewed(sent, Duration::from_secs(3600));
        assert!(leadership.may_act());
        assert!(*leadership.subscribe().borrow());
        // A renewal sent long enough ago (a process paused past it) no longer counts.
        let long_ago = Instant::now().checked_sub(Duration::from_secs(20)).expect("an instant 20 s ago");
        leadership.renewed(long_ago, Duration::from_secs(10));
        assert!(!leadership.may_act(), "the deadline is measured from when the renewal was sent");
        leadership.expire_if_past(Instant::now());
        assert!(!*leadership.subscribe().borrow());
    }

    #[test]
    fn following_names_the_leader_and_stops_acting() {
        let leadership = Leadership::elected();
        leadership.renewed(Instant::now(), Duration::from_secs(3600));
        leadership.follow(Some("b".into()));
        assert!(!leadership.may_act());
        assert_eq!(leadership.leader().as_deref(), Some("b"));
        assert!(Leadership::unconditional().may_act());
    }

    #[test]
    fn a_renewal_whose_answer_was_lost_is_still_this_tenure_and_anothers_take_between_is_not() {
        let record = |version: &str, holder: &str, transitions| Written {
            version: version.into(),
            holder: holder.into(),
            transitions,
        };
        let ours = record("7", "a", 2);
        assert!(ours.still_ours(&Some(record("7", "a", 2))));
        // The API server applied a renewal the client gave up on: a later version, same
        // holder, no transition.
        assert!(ours.still_ours(&Some(record("9", "a", 2))));
        // b took it (3) and a took it back (4): a's memory may be behind b's writes.
        assert!(!ours.still_ours(&Some(record("12", "a", 4))));
        assert!(!ours.still_ours(&Some(record("9", "b", 3))));
        assert!(!ours.still_ours(&None));
    }
}
