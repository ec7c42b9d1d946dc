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
const ALPHA: f64 = 0.05;
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
    r.phase == Phase::RolledBack
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
