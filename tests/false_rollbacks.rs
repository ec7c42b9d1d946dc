//! A/A simulation: 2,000 rollouts of a canary exactly as good as its baseline, judged at
//! every interval. The sequential test must keep false rollbacks at or under alpha; a
//! fixed-horizon test re-run at every interval on the same data must not.

mod support;

use canaryd::engine::{Input, Phase, Rollout, RolloutId, step};
use rand::SeedableRng;
use rand::rngs::StdRng;
use rand_distr::{Binomial, Distribution};
use statrs::distribution::{ContinuousCDF, Normal};
use support::engine::{at, plan};

const ROLLOUTS: usize = 2000;
/// The alpha the tests are held to, by a limit of alpha + 3 standard errors over 2,000
/// runs (0.0167). The limit flags a test whose real false-rollback rate is 2.4 alpha
/// with probability 0.99 (2 alpha: 0.85): it guards the promise of at most alpha, not
/// that the judge uses the alpha it is given. The sequential tests are conservative: at
/// alpha they roll back 0.05%-0.3% of these A/A rollouts, at twice alpha 0.2%-0.65%, at
/// ten times 1.65%-2.7%, so a judge run at twice its alpha passes here. That the limit
/// catches a test that is not calibrated is checked against a fixed-horizon test re-run
/// every interval (in the first test) and the judge at [`MISCALIBRATED_ALPHA`] (in the
/// others).
const ALPHA: f64 = 0.01;
/// Twenty times [`ALPHA`]: a judge calibrated for this, held to `ALPHA`, rolls back
/// 3%-6.6% of the rollouts each test generates, over the limit.
const MISCALIBRATED_ALPHA: f64 = 0.2;
/// Requests per 30 s interval across both arms, and the shared error rate.
const REQUESTS: u64 = 3000;
const ERROR_RATE: f64 = 0.01;
/// 10 minutes at 10%, then 10 minutes at 50%: 40 looks at the data.
const STEPS: [(f64, usize); 2] = [(0.10, 20), (0.50, 20)];

/// One interval: (canary requests, canary errors, baseline requests, baseline errors).
type Counts = (f64, f64, f64, f64);

/// One rollout's data, per interval.
fn a_a_rollout(rng: &mut StdRng) -> Vec<Counts> {
    let mut out = Vec::new();
    for (share, intervals) in STEPS {
        for _ in 0..intervals {
            let canary = Binomial::new(REQUESTS, share).unwrap().sample(rng);
            let baseline = REQUESTS - canary;
            let ce = Binomial::new(canary, ERROR_RATE).unwrap().sample(rng);
            let be = Binomial::new(baseline, ERROR_RATE).unwrap().sample(rng);
            out.push((canary as f64, ce as f64, baseline as f64, be as f64));
        }
    }
    out
}

/// Runs the data through the engine with a sequential-only policy; true if rolled back.
fn sequential_rolls_back(data: &[Counts]) -> bool {
    let spec = format!(
        "selector: {{matchLabels: {{app: web}}}}
traffic: {{steps: [10, 50, 100], stepDuration: 10m}}
analysis:
  interval: 30s
  minSampleSize: 1
  inconclusiveLimit: 100
  metrics:
    - {{name: errors, template: http-error-rate, test: sequential, alpha: {ALPHA}}}"
    );
    let id = RolloutId { namespace: "sim".into(), name: "web".into() };
    let mut r = Rollout::new(id, "v2", plan(&spec));
    r = step(&r, &Input::Start, at(0)).unwrap().rollout;
    for (i, &(cr, ce, br, be)) in data.iter().enumerate() {
        let mut obs = support::engine::errors((cr, ce), (br, be));
        obs.metrics.retain(|name, _| name == "errors");
        r = step(&r, &Input::Interval(obs), at(30 * (i as i64 + 1))).unwrap().rollout;
        if r.phase != Phase::Progressing {
            break;
        }
    }
    r.rolled_back()
}

/// A one-sided two-proportion z-test on the cumulative counts, re-run at every interval
/// as a fixed-horizon test would be by someone watching a dashboard.
fn fixed_horizon_rolls_back(data: &[Counts]) -> bool {
    let z_crit = Normal::standard().inverse_cdf(1.0 - ALPHA);
    let (mut cr, mut ce, mut br, mut be) = (0.0, 0.0, 0.0, 0.0);
    data.iter().any(|&(a, b, c, d)| {
        (cr, ce, br, be) = (cr + a, ce + b, br + c, be + d);
        let pooled = (ce + be) / (cr + br);
        let se = (pooled * (1.0 - pooled) * (1.0 / cr + 1.0 / br)).sqrt();
        se > 0.0 && (ce / cr - be / br) / se > z_crit
    })
}

#[test]
fn sequential_test_keeps_false_rollbacks_under_alpha_while_peeking_does_not() {
    let mut rng = StdRng::seed_from_u64(20261121);
    let runs: Vec<_> = (0..ROLLOUTS).map(|_| a_a_rollout(&mut rng)).collect();
    let rate = |f: fn(&[Counts]) -> bool| runs.iter().filter(|d| f(d)).count() as f64 / ROLLOUTS as f64;
    let standard_error = (ALPHA * (1.0 - ALPHA) / ROLLOUTS as f64).sqrt();
    let limit = ALPHA + 3.0 * standard_error;

    let sequential = rate(sequential_rolls_back);
    let peeking = rate(fixed_horizon_rolls_back);
    println!("false rollback rate over {ROLLOUTS} A/A rollouts, 40 looks each:");
    println!("  sequential (anytime-valid)      {sequential:.4}  (limit {limit:.4})");
    println!("  fixed-horizon z-test, re-run    {peeking:.4}");
    assert!(sequential <= limit, "sequential false rollback rate {sequential} > {limit}");
    assert!(peeking > limit, "peeking with a fixed-horizon test should exceed alpha; got {peeking}");
}

/// Judges each of `ROLLOUTS` generated rollouts at every interval with `test`; returns the
/// share that was ever (falsely) rejected.
fn rejection_rate(
    test: &canaryd::judge::TestConfig,
    quantile: Option<f64>,
    mut interval: impl FnMut(&mut StdRng, f64) -> canaryd::judge::Observation,
) -> f64 {
    use canaryd::judge::{MetricRule, MetricState, Outcome, judge};
    let mut rng = StdRng::seed_from_u64(20261123);
    let rule = MetricRule { name: "m", test, quantile, min_sample_size: 1 };
    let mut rejected = 0;
    for _ in 0..ROLLOUTS {
        let mut state = MetricState::default();
        let shares = STEPS.iter().flat_map(|(share, n)| std::iter::repeat_n(*share, *n));
        if shares
            .map(|share| interval(&mut rng, share))
            .any(|o| judge(rule, &o, &mut state).outcome == Outcome::Fail)
        {
            rejected += 1;
        }
    }
    rejected as f64 / ROLLOUTS as f64
}

fn limit() -> f64 {
    ALPHA + 3.0 * (ALPHA * (1.0 - ALPHA) / ROLLOUTS as f64).sqrt()
}

fn sequential(alpha: f64, margin: Option<f64>, max: Option<f64>) -> canaryd::judge::TestConfig {
    canaryd::judge::TestConfig::Sequential { alpha, slower_than: None, margin, max }
}

/// Asserts that the sequential test with `margin` or `max` falsely rolls back at most
/// the limit's share of the rollouts `interval` generates at [`ALPHA`], and more than
/// that at [`MISCALIBRATED_ALPHA`]: the limit catches a test that is not calibrated.
fn assert_calibrated(
    what: &str,
    margin: Option<f64>,
    max: Option<f64>,
    quantile: Option<f64>,
    mut interval: impl FnMut(&mut StdRng, f64) -> canaryd::judge::Observation,
) {
    let rate = rejection_rate(&sequential(ALPHA, margin, max), quantile, &mut interval);
    let miscalibrated =
        rejection_rate(&sequential(MISCALIBRATED_ALPHA, margin, max), quantile, &mut interval);
    println!(
        "{what}: {rate:.4} at alpha {ALPHA}, {miscalibrated:.4} at {MISCALIBRATED_ALPHA} (limit {:.4})",
        limit()
    );
    assert!(rate <= limit(), "{what}: {rate}");
    assert!(
        miscalibrated > limit(),
        "{what}: the judge at alpha {MISCALIBRATED_ALPHA} stays under the limit ({miscalibrated}): the limit would not catch a test that is not calibrated"
    );
}

fn split(rng: &mut StdRng, share: f64) -> (u64, u64) {
    let canary = Binomial::new(REQUESTS, share).unwrap().sample(rng);
    (canary, REQUESTS - canary)
}

fn counts(requests: u64, events: u64) -> Option<canaryd::judge::Sample> {
    Some(canaryd::judge::Sample::Counts { requests: requests as f64, events: events as f64 })
}

#[test]
fn a_canary_exactly_at_the_margin_is_rolled_back_at_most_alpha_of_the_time() {
    // "Errors 50% above the baseline": the canary errs at exactly 1.5x the baseline's 1%.
    assert_calibrated("margin 1.5, canary at exactly 1.5x", Some(1.5), None, None, |rng, share| {
        let (c, b) = split(rng, share);
        canaryd::judge::Observation {
            canary: counts(c, Binomial::new(c, 0.015).unwrap().sample(rng)),
            baseline: counts(b, Binomial::new(b, 0.01).unwrap().sample(rng)),
            ..Default::default()
        }
    });
}

#[test]
fn a_canary_exactly_at_an_error_bound_is_rolled_back_at_most_alpha_of_the_time() {
    // "Errors above 5%": the canary errs at exactly 5%, judged on its own counts.
    assert_calibrated("bound 5%, canary at exactly 5%", None, Some(0.05), None, |rng, share| {
        let (c, _) = split(rng, share);
        canaryd::judge::Observation {
            canary: counts(c, Binomial::new(c, 0.05).unwrap().sample(rng)),
            ..Default::default()
        }
    });
}

/// A histogram with buckets 0.1, 0.25, 0.5, 1 whose requests fall above 0.25 s and
/// above 0.5 s with the given probabilities.
fn latency(rng: &mut StdRng, n: u64, above_quarter: f64, above_half: f64) -> Option<canaryd::judge::Sample> {
    let slow = Binomial::new(n, above_quarter).unwrap().sample(rng);
    let slower = Binomial::new(slow, above_half / above_quarter).unwrap().sample(rng);
    let n = n as f64;
    Some(canaryd::judge::Sample::Histogram(canaryd::judge::Histogram {
        buckets: vec![
            (0.1, (n - slow as f64) * 0.6),
            (0.25, n - slow as f64),
            (0.5, n - slower as f64),
            (1.0, n),
            (f64::INFINITY, n),
        ],
    }))
}

#[test]
fn a_canary_exactly_at_a_latency_margin_is_rolled_back_at_most_alpha_of_the_time() {
    // "P95 more than 2x the baseline": the baseline's p95 lies in (0.1, 0.25]; at 2x the
    // bound is 0.5 s, and the canary has exactly 5% of its requests above it.
    let what = "latency margin 2x on p95, canary exactly at it";
    assert_calibrated(what, Some(2.0), None, Some(0.95), |rng, share| {
        let (c, b) = split(rng, share);
        canaryd::judge::Observation {
            canary: latency(rng, c, 0.2, 0.05),
            baseline: latency(rng, b, 0.02, 0.001),
            ..Default::default()
        }
    });
}

#[test]
fn a_canary_exactly_at_a_latency_bound_is_rolled_back_at_most_alpha_of_the_time() {
    // "p99 < 500 ms": exactly 1% of the canary's requests are slower than 0.5 s.
    let what = "latency bound 0.5 s on p99, canary exactly at it";
    assert_calibrated(what, None, Some(0.5), Some(0.99), |rng, share| {
        let (c, _) = split(rng, share);
        canaryd::judge::Observation { canary: latency(rng, c, 0.1, 0.01), ..Default::default() }
    });
}
