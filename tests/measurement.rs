//! Measurements that hold on real data: history scraped the way Prometheus scrapes it
//! (15 s and 30 s intervals, unaligned with the analysis ticks, with jitter, restarts,
//! a pod added and one removed mid-rollout, error series born with their first error),
//! queried through the real source from a real Prometheus 2 and a real VictoriaMetrics.

mod support;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use canaryd::config::Settings;
use canaryd::engine::{Plan, RolloutId};
use canaryd::judge::{Observation, Sample};
use canaryd::source::batch::{Arms, Target};
use canaryd::source::prometheus::{MetricSource, PrometheusSource};
use canaryd::telemetry::Metrics;
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
    PrometheusSource::new(&settings.prometheus, Arc::new(Metrics::new()), Duration::from_millis(50)).unwrap()
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
    let arms: Vec<Arms> = ids.iter().map(Arms::kubernetes).collect();
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
    let arms = Arms::kubernetes(&id);
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
