//! Measurements that hold on real data: history scraped the way Prometheus scrapes it
//! (15 s and 30 s intervals, unaligned with the analysis ticks, with jitter, restarts,
//! a pod added and one removed mid-rollout, error series born with their first error),
//! queried through the real source from a real Prometheus 2 and a real VictoriaMetrics.

mod support;

use std::collections::BTreeMap;
use std::time::Duration;

use canaryd::config::Settings;
use canaryd::engine::Arms;
use canaryd::engine::{Plan, RolloutId};
use canaryd::judge::{self, MetricRule, MetricState, Observation, Outcome, Sample, TestConfig};
use canaryd::source::MetricSource;
use canaryd::source::batch::Target;
use canaryd::source::prometheus::PrometheusSource;
use canaryd::source::prometheus::QueryMetrics;
use jiff::Timestamp;
use support::prometheus::{PrometheusServer, load_openmetrics};
use support::scrape::{Counts, Pod, Scraped, openmetrics, simulate};
use support::victoria::VictoriaServer;

/// The history's origin: 2026-11-01T10:00:00Z.
const ORIGIN: i64 = 1_793_527_200;
/// The analysis interval.
const INTERVAL: f64 = 30.0;
/// The first tick, seconds after the origin: not a multiple of any scrape interval.
const FIRST_TICK: f64 = 127.0;
const TICKS: usize = 28;

const POLICY: &str = "apiVersion: canaryd.io/v1alpha1
kind: CanaryPolicy
metadata: {name: measure, namespace: exact}
spec:
  selector: {matchLabels: {app: x}}
  analysis:
    interval: 30s
    metrics:
      - {name: errors, template: http-error-rate, test: sequential}
      - {name: p99, template: http-latency-p99, test: sequential}
";

fn plan() -> Plan {
    let loaded = canaryd::policy::load_str("measure.yaml", POLICY);
    assert!(loaded.problems.is_empty(), "{:?}", loaded.problems);
    loaded.policies[0].plan.clone()
}

fn source(url: &str) -> PrometheusSource {
    let env = [("CANARYD__PROMETHEUS__URL".to_string(), url.to_string())];
    let settings = Settings::load(None, env.into_iter().collect()).unwrap();
    PrometheusSource::new(&settings.prometheus, QueryMetrics::default(), Duration::from_millis(50)).unwrap()
}

fn at(seconds: f64) -> Timestamp {
    Timestamp::from_second(ORIGIN + seconds as i64).unwrap()
}

fn pod(workload: &str, name: &str, rate: f64, scrape: f64) -> Pod {
    Pod {
        namespace: "exact".into(),
        workload: workload.into(),
        pod: name.into(),
        rate,
        error_rate: 0.02,
        slow: [0.1, 0.01],
        scrape,
        jitter: scrape / 10.0,
        start: 0.0,
        end: 2000.0,
        restarts: vec![],
        histogram: true,
    }
}

/// Three rollouts: steady at a 15 s scrape, steady at a 30 s scrape (one scrape per
/// interval), and one with churn of every kind.
fn pods() -> Vec<Scraped> {
    let mut pods = vec![
        pod("steady", "steady-a", 5.0, 15.0),
        pod("steady-primary", "steady-primary-a", 20.0, 15.0),
        pod("steady-primary", "steady-primary-b", 20.0, 15.0),
        pod("slow", "slow-a", 5.0, 30.0),
        pod("slow-primary", "slow-primary-a", 40.0, 30.0),
    ];
    // Churn: restarts, a canary pod added mid-rollout, a baseline pod replaced, and error
    // series that appear only with their first (rare) error.
    let mut restarting = pod("churn", "churn-a", 6.0, 15.0);
    restarting.restarts = vec![400.3, 731.9];
    restarting.error_rate = 0.003;
    let mut added = pod("churn", "churn-b", 6.0, 15.0);
    added.start = 520.0;
    added.error_rate = 0.003;
    let mut leaving = pod("churn-primary", "churn-primary-c", 20.0, 15.0);
    leaving.end = 650.0;
    let mut restarting_base = pod("churn-primary", "churn-primary-d", 20.0, 15.0);
    restarting_base.restarts = vec![555.5];
    let mut replacement = pod("churn-primary", "churn-primary-e", 20.0, 15.0);
    replacement.start = 640.0;
    pods.extend([restarting, added, leaving, restarting_base, replacement]);
    pods.into_iter().enumerate().map(|(i, p)| simulate(p, 7 + i as u64)).collect()
}

/// What the scrapes show for an arm in `(from, to]`, what no scrape could show, and
/// whether a reset shows in its request series and in its bucket series.
fn truth(pods: &[Scraped], workload: &str, from: f64, to: f64) -> (Counts, Counts, [bool; 2]) {
    let (mut seen, mut unseen, mut resets) = (Counts::default(), Counts::default(), [false; 2]);
    for p in pods.iter().filter(|p| p.pod.workload == workload) {
        seen = sum(seen, p.seen_between(from, to));
        unseen = sum(unseen, p.unseen_between(from, to).0);
        resets[0] |= p.reset_shows_between(from, to, true, LOOKBACK);
        resets[1] |= p.reset_shows_between(from, to, false, LOOKBACK);
    }
    (seen, unseen, resets)
}

/// The source's default lookback for a counter's last sample, seconds.
const LOOKBACK: f64 = 300.0;

fn sum(a: Counts, b: Counts) -> Counts {
    Counts {
        ok: a.ok + b.ok,
        errors: a.errors + b.errors,
        buckets: [0, 1, 2].map(|i| a.buckets[i] + b.buckets[i]),
    }
}

fn minus(a: Counts, b: Counts) -> Counts {
    Counts {
        ok: a.ok - b.ok,
        errors: a.errors - b.errors,
        buckets: [0, 1, 2].map(|i| a.buckets[i] - b.buckets[i]),
    }
}

/// The counts an observation reports for one arm: requests, errors, bucket counts.
fn reported(errors: &Observation, latency: &Observation, canary: bool) -> Counts {
    let pick = |o: &Observation| if canary { o.canary.clone() } else { o.baseline.clone() };
    let (requests, events) = match pick(errors) {
        Some(Sample::Counts { requests, events }) => (requests, events),
        other => panic!("counts expected, got {other:?}"),
    };
    let buckets = match pick(latency) {
        Some(Sample::Histogram(h)) => {
            assert_eq!(h.buckets.len(), 3, "{h:?}");
            [0, 1, 2].map(|i| h.buckets[i].1)
        }
        other => panic!("a histogram expected, got {other:?}"),
    };
    for v in [requests, events].iter().chain(&buckets) {
        assert_eq!(v.fract(), 0.0, "counts are whole numbers, never extrapolated: {v}");
    }
    Counts { ok: (requests - events) as u64, errors: events as u64, buckets: buckets.map(|b| b as u64) }
}

/// Every interval's counts equal what the scrapes show, except for the events no scrape
/// saw before a restart; intervals with a restart are marked approximate. Over the
/// rollout, the counts add up to the true totals less those unseen events.
async fn counts_are_exact(url: &str, pods: &[Scraped]) {
    let src = source(url);
    let plan = plan();
    let ids: Vec<RolloutId> =
        ["steady", "slow", "churn"].map(|n| RolloutId { namespace: "exact".into(), name: n.into() }).into();
    let arms: Vec<Arms> = ids.iter().map(canaryd::platform::kubernetes::arms).collect();
    let targets: Vec<Target<'_>> =
        ids.iter().zip(&arms).flat_map(|(id, arms)| Target::for_plan(&plan, id, arms)).collect();
    let mut totals: BTreeMap<String, (Counts, Counts, Counts)> = BTreeMap::new();
    let mut approximate_intervals = 0;
    for k in 0..TICKS {
        let to = FIRST_TICK + INTERVAL * k as f64;
        let from = to - INTERVAL;
        let observed = src.observe(&targets, at(to), Duration::from_secs(30)).await;
        for (id, arms) in ids.iter().zip(&arms) {
            let errors = &observed[&(id.clone(), "errors".to_string())];
            let latency = &observed[&(id.clone(), "p99".to_string())];
            assert_eq!(errors.error, None, "{id} at {to}");
            let mut resets = [false; 2];
            for (workload, canary) in [(&arms.canary, true), (&arms.baseline, false)] {
                let (seen, unseen, shown) = truth(pods, workload, from, to);
                resets = [resets[0] | shown[0], resets[1] | shown[1]];
                let got = reported(errors, latency, canary);
                assert_eq!(
                    got,
                    minus(seen, unseen),
                    "{workload} in ({from}, {to}]: reported vs scraped truth"
                );
                let total = totals.entry(workload.clone()).or_default();
                *total = (sum(total.0, got), sum(total.1, seen), sum(total.2, unseen));
            }
            assert_eq!(errors.approximate.is_some(), resets[0], "{id} at {to}: {:?}", errors.approximate);
            assert_eq!(latency.approximate.is_some(), resets[1], "{id} at {to}: {:?}", latency.approximate);
            approximate_intervals += usize::from(resets[1]);
        }
    }
    assert_eq!(approximate_intervals, 3, "the three restarts show in three intervals");
    for (workload, (got, truth, unseen)) in totals {
        assert_eq!(got, minus(truth, unseen), "{workload}: totals over the rollout");
        // At most one scrape's worth of traffic is lost per restart.
        let per_scrape = pods.iter().find(|p| p.pod.workload == workload).map(|p| p.pod.rate * 15.0).unwrap();
        assert!((unseen.requests() as f64) < 3.0 * per_scrape * 2.0, "{workload}: {unseen:?}");
    }
}

fn series_count(pods: &[Scraped]) -> usize {
    openmetrics(pods, ORIGIN)
        .lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| l.rsplit_once(' ').map(|(s, _)| s.rsplit_once(' ').map_or(s, |(s, _)| s).to_string()))
        .collect::<std::collections::BTreeSet<_>>()
        .len()
}

#[tokio::test(flavor = "multi_thread")]
async fn prometheus_counts_are_exact_on_realistically_scraped_history() {
    let pods = pods();
    let dir = load_openmetrics(&openmetrics(&pods, ORIGIN));
    let server = PrometheusServer::start("", Some(&dir.path().join("tsdb"))).await;
    counts_are_exact(&server.url, &pods).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn victoria_metrics_gives_the_same_exact_counts() {
    let pods = pods();
    let server = VictoriaServer::start().await;
    server.import(&openmetrics(&pods, ORIGIN), series_count(&pods), ORIGIN).await;
    counts_are_exact(&server.url, &pods).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_thirty_second_interval_over_a_thirty_second_scrape_has_data_every_interval() {
    let pods = pods();
    let dir = load_openmetrics(&openmetrics(&pods, ORIGIN));
    let server = PrometheusServer::start("", Some(&dir.path().join("tsdb"))).await;
    let src = source(&server.url);
    let plan = plan();
    let id = RolloutId { namespace: "exact".into(), name: "slow".into() };
    let arms = canaryd::platform::kubernetes::arms(&id);
    let targets = Target::for_plan(&plan, &id, &arms);
    let mut with_requests = 0;
    for k in 0..TICKS {
        let observed =
            src.observe(&targets, at(FIRST_TICK + INTERVAL * k as f64), Duration::from_secs(30)).await;
        let obs = &observed[&(id.clone(), "errors".to_string())];
        let Some(Sample::Counts { requests, .. }) = obs.canary else {
            panic!("no data at tick {k}: {obs:?}")
        };
        with_requests += usize::from(requests > 0.0);
    }
    // With jitter, a few intervals hold no scrape (and so zero requests, not no data) and
    // their neighbours hold two; most hold one.
    assert!(with_requests >= TICKS * 3 / 4, "{with_requests} of {TICKS} intervals saw requests");
}

/// Rollouts in the A/A test.
const AA_ROLLOUTS: usize = 1000;
/// Looks per A/A rollout (30 s apart).
const AA_TICKS: usize = 30;
/// The false rollback budget of the A/A test.
const AA_ALPHA: f64 = 0.05;

/// A/A rollouts: a canary pod at about 10 req/s beside two baseline pods at 45 req/s,
/// all with 1% errors, scraped every 15 s with jitter.
fn aa_pods() -> Vec<Scraped> {
    let mut pods = Vec::new();
    for i in 0..AA_ROLLOUTS {
        let arm = |workload: String, pod: String, rate: f64| Pod {
            namespace: "aa".into(),
            workload,
            pod,
            rate,
            error_rate: 0.01,
            slow: [0.0, 0.0],
            scrape: 15.0,
            jitter: 1.5,
            start: 0.0,
            end: 60.0 + INTERVAL * (AA_TICKS as f64 + 4.0),
            restarts: vec![],
            histogram: false,
        };
        pods.push(arm(format!("app{i}"), format!("app{i}-c"), 10.0));
        pods.push(arm(format!("app{i}-primary"), format!("app{i}-primary-a"), 45.0));
        pods.push(arm(format!("app{i}-primary"), format!("app{i}-primary-b"), 45.0));
    }
    pods.into_iter().enumerate().map(|(i, p)| simulate(p, 1_000_000 + i as u64)).collect()
}

/// Judges each rollout's observations, tick after tick, with the sequential test;
/// returns how many rollouts were (falsely) rolled back.
fn rolled_back(observations: &[BTreeMap<RolloutId, Observation>]) -> usize {
    let test = TestConfig::Sequential { alpha: AA_ALPHA, slower_than: None, margin: None, max: None };
    let rule = MetricRule { name: "errors", test: &test, quantile: None, min_sample_size: 0 };
    let mut states: BTreeMap<&RolloutId, (MetricState, bool)> = BTreeMap::new();
    for tick in observations {
        for (id, obs) in tick {
            let (state, failed) = states.entry(id).or_default();
            *failed |= judge::judge(rule, obs, state).outcome == Outcome::Fail;
        }
    }
    states.values().filter(|(_, failed)| *failed).count()
}

/// The old way: `increase()` per arm, extrapolated to the window's edges.
async fn increase_observations(src: &PrometheusSource, at: Timestamp) -> BTreeMap<RolloutId, Observation> {
    let by_workload = |promql: &'static str| async move {
        let series = src.instant(promql, at).await.unwrap();
        series.into_iter().map(|(labels, v)| (labels["workload"].clone(), v)).collect::<BTreeMap<_, _>>()
    };
    let requests =
        by_workload("sum by (workload) (increase(http_requests_total{namespace=\"aa\"}[30s]))").await;
    let errors =
        by_workload("sum by (workload) (increase(http_requests_total{namespace=\"aa\", code=\"500\"}[30s]))")
            .await;
    let sample = |w: &str| {
        requests
            .get(w)
            .map(|r| Sample::Counts { requests: *r, events: errors.get(w).copied().unwrap_or(0.0) })
    };
    (0..AA_ROLLOUTS)
        .map(|i| {
            let id = RolloutId { namespace: "aa".into(), name: format!("app{i}") };
            let obs = Observation {
                canary: sample(&format!("app{i}")),
                baseline: sample(&format!("app{i}-primary")),
                ..Observation::default()
            };
            (id, obs)
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn identical_canaries_through_a_real_prometheus_stay_within_alpha() {
    let pods = aa_pods();
    let dir = load_openmetrics(&openmetrics(&pods, ORIGIN));
    let server = PrometheusServer::start("", Some(&dir.path().join("tsdb"))).await;
    let src = source(&server.url);
    let plan = plan();
    let errors = plan.metrics.iter().find(|m| m.name == "errors").unwrap();
    let ids: Vec<RolloutId> =
        (0..AA_ROLLOUTS).map(|i| RolloutId { namespace: "aa".into(), name: format!("app{i}") }).collect();
    let arms: Vec<Arms> = ids.iter().map(canaryd::platform::kubernetes::arms).collect();
    let targets: Vec<Target<'_>> =
        ids.iter().zip(&arms).map(|(rollout, arms)| Target { rollout, arms, metric: errors }).collect();
    let (mut exact, mut extrapolated) = (Vec::new(), Vec::new());
    let before = server.requests_to("/api/v1/query").await;
    for k in 0..AA_TICKS {
        let t = at(97.0 + INTERVAL * k as f64);
        let observed = src.observe(&targets, t, Duration::from_secs(30)).await;
        exact.push(observed.into_iter().map(|((id, _), obs)| (id, obs)).collect::<BTreeMap<_, _>>());
        extrapolated.push(increase_observations(&src, t).await);
    }
    let queries = server.requests_to("/api/v1/query").await - before;
    // Two shards of 500 per tick for the exact path, two queries per tick for the old one.
    assert_eq!(queries, (AA_TICKS * (2 + 2)) as f64, "queries per tick do not grow with rollouts");
    let n = AA_ROLLOUTS as f64;
    let limit = AA_ALPHA + 3.0 * (AA_ALPHA * (1.0 - AA_ALPHA) / n).sqrt();
    let exact_rate = rolled_back(&exact) as f64 / n;
    let increase_rate = rolled_back(&extrapolated) as f64 / n;
    eprintln!(
        "A/A through Prometheus, {AA_ROLLOUTS} rollouts x {AA_TICKS} looks, alpha {AA_ALPHA}: exact counts {exact_rate:.3}, increase() {increase_rate:.3}, limit {limit:.4}"
    );
    assert!(exact_rate <= limit, "exact counts: false rollback rate {exact_rate} over {limit}");
    // The same data through extrapolated counts breaks the guarantee: the reason for all this.
    assert!(increase_rate > limit, "increase() was expected to exceed {limit}: {increase_rate}");
}

/// A Deployment name of 45 characters: Kubernetes truncates its `-primary` pods' names.
const LONG: &str = "checkout-payments-reconciliation-worker-eu-01";

/// Kubernetes' generated pod name: the owner's name and `-`, cut to 58 characters, then
/// five random characters.
fn pod_name(owner: &str, suffix: &str) -> String {
    let base = format!("{owner}-");
    format!("{}{suffix}", &base[..base.len().min(58)])
}

/// cAdvisor and kube-state-metrics history for the pod-identity cases: which pods exist,
/// who owns them, their containers' usage and limits. Returns the text and, per pod, its
/// memory usage of the `app` container (distinct, so each pod can be recognised).
fn identity_history() -> (String, BTreeMap<String, f64>) {
    use support::scrape::{Family, write_family};
    let mut pods: Vec<(String, &str, String)> = Vec::new(); // pod, owner kind, owner name
    let mut replicasets: Vec<(String, String)> = Vec::new(); // replicaset, deployment
    for (deployment, hash) in [
        ("web", "6b7c9d8f4"),
        ("web-primary", "7d9f8c6b5d"),
        (LONG, "5f6d7c8b9a"),
        (&format!("{LONG}-primary"), "84c7d9b6f5"),
        ("bare", "59d8c7b6a4"),
        ("bare-primary", "6c5d4b3a29"),
    ] {
        let rs = format!("{deployment}-{hash}");
        pods.push((pod_name(&rs, "abcde"), "ReplicaSet", rs.clone()));
        replicasets.push((rs, deployment.to_string()));
    }
    pods.push(("web-api-0".into(), "StatefulSet", "web-api".into()));
    pods.push(("web-exporter-x7k2p".into(), "DaemonSet", "web-exporter".into()));
    pods.push(("web-migrate-k2x9q".into(), "Job", "web-migrate".into()));
    let (mut memory, mut limits, mut owners, mut rs_owners) =
        (Family::new(), Family::new(), Family::new(), Family::new());
    let mut usage = BTreeMap::new();
    let times: Vec<f64> = (0..20).map(|i| 3.0 + 15.0 * i as f64).collect();
    for (i, (pod, kind, owner)) in pods.iter().enumerate() {
        let app = 1e8 * (i as f64 + 1.0);
        usage.insert(pod.clone(), app);
        let unlimited = pod.starts_with("bare");
        for (container, bytes, limit) in [
            ("app", app, (!unlimited).then_some(1e9)),
            ("sidecar", 5e7, (i % 2 == 1 && !unlimited).then_some(2e8)),
        ] {
            let labels = format!("namespace=\"ident\",pod=\"{pod}\",container=\"{container}\"");
            memory.insert(labels.clone(), times.iter().map(|t| (*t, bytes)).collect());
            if let Some(limit) = limit {
                limits.insert(
                    format!("{labels},resource=\"memory\""),
                    times.iter().map(|t| (*t, limit)).collect(),
                );
            }
        }
        // The pause container and the pod cgroup are not usage.
        memory.insert(
            format!("namespace=\"ident\",pod=\"{pod}\",container=\"POD\""),
            times.iter().map(|t| (*t, 9e9)).collect(),
        );
        owners.insert(
            format!("namespace=\"ident\",pod=\"{pod}\",owner_kind=\"{kind}\",owner_name=\"{owner}\",owner_is_controller=\"true\""),
            times.iter().map(|t| (*t, 1.0)).collect(),
        );
    }
    for (rs, deployment) in &replicasets {
        rs_owners.insert(
            format!("namespace=\"ident\",replicaset=\"{rs}\",owner_kind=\"Deployment\",owner_name=\"{deployment}\",owner_is_controller=\"true\""),
            times.iter().map(|t| (*t, 1.0)).collect(),
        );
    }
    let mut out = String::new();
    for (name, family) in [
        ("container_memory_working_set_bytes", &memory),
        ("kube_pod_container_resource_limits", &limits),
        ("kube_pod_owner", &owners),
        ("kube_replicaset_owner", &rs_owners),
    ] {
        write_family(&mut out, name, "gauge", name, family, ORIGIN);
    }
    out.push_str("# EOF\n");
    (out, usage)
}

#[tokio::test(flavor = "multi_thread")]
async fn pods_land_in_their_own_arm_or_in_none() {
    let (history, usage) = identity_history();
    let dir = load_openmetrics(&history);
    let server = PrometheusServer::start("", Some(&dir.path().join("tsdb"))).await;
    let env = [
        ("CANARYD__PROMETHEUS__URL".to_string(), server.url.clone()),
        ("CANARYD__PROMETHEUS__SCRAPE_INTERVAL".to_string(), "15s".to_string()),
    ];
    let settings = Settings::load(None, env.into_iter().collect()).unwrap();
    let src = PrometheusSource::new(&settings.prometheus, QueryMetrics::default(), Duration::from_millis(50))
        .unwrap();
    let policy = POLICY.replace(
        "      - {name: errors, template: http-error-rate, test: sequential}\n      - {name: p99, template: http-latency-p99, test: sequential}\n",
        "      - {name: memory, template: container-memory, test: ratio, max: 2}\n      - {name: memory-use, template: container-memory-utilisation, test: ratio, max: 2}\n",
    );
    let loaded = canaryd::policy::load_str("identity.yaml", &policy);
    assert!(loaded.problems.is_empty(), "{:?}", loaded.problems);
    let plan = loaded.policies[0].plan.clone();
    let ids: Vec<RolloutId> =
        ["web", LONG, "bare"].map(|n| RolloutId { namespace: "ident".into(), name: n.into() }).into();
    let arms: Vec<Arms> = ids.iter().map(canaryd::platform::kubernetes::arms).collect();
    let targets: Vec<Target<'_>> =
        ids.iter().zip(&arms).flat_map(|(id, arms)| Target::for_plan(&plan, id, arms)).collect();
    let observed = src.observe(&targets, at(250.0), Duration::from_secs(30)).await;
    let memory_of = |prefix: &str| {
        let pod = usage
            .keys()
            .find(|p| p.starts_with(prefix) && !p[prefix.len()..].starts_with("-primary"))
            .unwrap();
        usage[pod] + 5e7 // app and sidecar; never the pause container
    };
    for (id, canary, baseline) in [
        (&ids[0], "web-6b7c9d8f4", "web-primary-7d9f8c6b5d"),
        (&ids[1], &format!("{LONG}-5f6d"), &format!("{LONG}-primary-")),
    ] {
        let obs = &observed[&(id.clone(), "memory".to_string())];
        assert_eq!(obs.canary, Some(Sample::Values { values: vec![memory_of(canary)] }), "{id}: canary");
        assert_eq!(
            obs.baseline,
            Some(Sample::Values { values: vec![memory_of(baseline)] }),
            "{id}: baseline"
        );
    }
    // Sidecars without a limit are out of both sides; with one, in both.
    let web = &observed[&(ids[0].clone(), "memory-use".to_string())];
    let (canary_app, baseline_app) =
        (memory_of("web-6b7c9d8f4") - 5e7, memory_of("web-primary-7d9f8c6b5d") - 5e7);
    assert_eq!(web.canary, Some(Sample::Values { values: vec![canary_app / 1e9] }));
    assert_eq!(web.baseline, Some(Sample::Values { values: vec![(baseline_app + 5e7) / (1e9 + 2e8)] }));
    // Without limits: said so, not silent no data.
    let bare = &observed[&(ids[2].clone(), "memory-use".to_string())];
    assert!(
        bare.error.as_deref().unwrap_or_default().starts_with("no limit set: 1 canary and 1 baseline"),
        "{bare:?}"
    );
    // StatefulSet, DaemonSet and Job pods named like `web`: in no arm, whatever the name.
    for values in [&observed[&(ids[0].clone(), "memory".to_string())].canary] {
        let Some(Sample::Values { values }) = values else { panic!() };
        for other in ["web-api-0", "web-exporter-x7k2p", "web-migrate-k2x9q"] {
            assert!(!values.contains(&(usage[other] + 5e7)), "{other} counted in web");
        }
    }
}

/// 10,000 rollouts measured through shards; then, with Prometheus limiting the samples a
/// query may load, the one shard whose query loads too many is refused, and only its
/// own rollouts lose their measurement.
#[tokio::test(flavor = "multi_thread")]
async fn ten_thousand_rollouts_are_measured_in_shards_and_a_refused_shard_fails_alone() {
    use support::scale;
    const N: usize = 10_000;
    let pods = scale::pods(N, 3_000, false);
    let dir = load_openmetrics(&openmetrics(&pods, ORIGIN));
    let tsdb = dir.path().join("tsdb");
    let plan = plan();
    let errors = plan.metrics.iter().find(|m| m.name == "errors").unwrap();
    let ids: Vec<RolloutId> = (0..N)
        .map(scale::name)
        .chain([scale::heavy()])
        .map(|name| RolloutId { namespace: scale::NAMESPACE.into(), name })
        .collect();
    let arms: Vec<Arms> = ids.iter().map(canaryd::platform::kubernetes::arms).collect();
    let targets: Vec<Target<'_>> =
        ids.iter().zip(&arms).map(|(rollout, arms)| Target { rollout, arms, metric: errors }).collect();
    let tick = scale::SPAN - 3.0;
    let window = Duration::from_secs(30);
    let batches = canaryd::source::batch::plan(&targets, window, &Default::default());
    assert_eq!(batches.len(), N.div_ceil(500) + 1, "shards of at most 500 rollouts");

    let mut server = PrometheusServer::start("", Some(&tsdb)).await;
    let src = source(&server.url);
    let before = server.requests_to("/api/v1/query").await;
    let observed = src.observe(&targets, at(tick), window).await;
    assert_eq!(
        server.requests_to("/api/v1/query").await - before,
        batches.len() as f64,
        "one query per shard"
    );
    let truth = |workload: &str| {
        let arm: Vec<&Scraped> = pods.iter().filter(|p| p.pod.workload == workload).collect();
        arm.iter().map(|p| p.seen_between(tick - 30.0, tick).requests()).sum::<u64>() as f64
    };
    for (id, arms) in ids.iter().zip(&arms).step_by(97) {
        let obs = &observed[&(id.clone(), "errors".to_string())];
        let Some(Sample::Counts { requests, .. }) = obs.canary else { panic!("{id}: {obs:?}") };
        assert_eq!(requests, truth(&arms.canary), "{id}");
    }

    // Each shard's peak samples, as Prometheus counts them; the heavy one's is far above.
    let mut peaks = Vec::new();
    for b in &batches {
        peaks.push(server.peak_samples(b.query.as_ref().unwrap(), ORIGIN + tick as i64).await);
    }
    let heavy_shard =
        batches.iter().position(|b| b.members.iter().any(|m| m.0.name == scale::heavy())).unwrap();
    let normal =
        peaks.iter().enumerate().filter(|(i, _)| *i != heavy_shard).map(|(_, p)| *p).fold(0.0, f64::max);
    assert!(peaks[heavy_shard] > 2.0 * normal, "heavy {} vs normal {normal}", peaks[heavy_shard]);
    server.stop();
    let limit = ((normal + peaks[heavy_shard]) / 2.0) as u64;
    let server =
        PrometheusServer::start_with("", Some(&tsdb), &[format!("--query.max-samples={limit}")]).await;
    let observed = source(&server.url).observe(&targets, at(tick), window).await;
    let refused: std::collections::BTreeSet<&RolloutId> =
        batches[heavy_shard].members.iter().map(|m| &m.0).collect();
    for id in &ids {
        let obs = &observed[&(id.clone(), "errors".to_string())];
        if refused.contains(id) {
            assert!(obs.error.as_deref().unwrap_or_default().contains("too many samples"), "{id}: {obs:?}");
        } else {
            assert!(obs.error.is_none() && obs.canary.is_some(), "{id} lost its measurement: {obs:?}");
        }
    }
}
