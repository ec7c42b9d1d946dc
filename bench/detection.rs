//! Detection benchmark: how fast each judge finds a real regression, and how often it
//! rolls back a canary that is no worse, on the reference scenario of docs/judge.md, driven
//! through the same engine the daemon runs.
//!
//! Scenario: the canary serves 10 req/s (at a 10% split the baseline serves 90 req/s, at
//! 50/50 it serves 10), its error rate rises from 1% to 2%; analysis every 30 s (every
//! minute for the Flagger rows) for at most 30 minutes; alpha 0.01.
//! The other tools as their users configure them: Flagger's documented form (an absolute
//! error-rate bound over a 1 m interval, threshold 5 failed checks), and Kayenta's (one
//! Mann-Whitney judgement over the window at 98%, at 50/50).
//! The bounds: Wald's SPRT knowing both rates (108 s), and Wald's SPRT on which arm each
//! error came from, the information the sequential test uses (124 s at 10/90, 246 s at
//! 50/50).
//!
//! Run: `cargo bench --bench detection` (1,000 rollouts per row; `-- --runs N` to change).
//! Under `cargo test` it runs a small smoke sample.

use canaryd::engine::{Input, IntervalObservations, Plan, Rollout, RolloutId, step};
use canaryd::judge::{Observation, Sample};
use jiff::Timestamp;
use rand::SeedableRng;
use rand::rngs::StdRng;
use rand_distr::{Binomial, Distribution};

/// Kayenta's analysis: one judgement over a window of one-minute points.
const KAYENTA_WINDOW_MIN: usize = 30;
const HORIZON_S: i64 = 30 * 60;
/// The canary's traffic in every row; the baseline's follows from the split.
const CANARY_RPS: f64 = 10.0;

struct Row {
    name: &'static str,
    metric: &'static str,
    canary_share: f64,
    failure_limit: u32,
    interval_s: i64,
}

fn plan(row: &Row) -> Plan {
    let text = format!(
        "apiVersion: canaryd.io/v1alpha1\nkind: CanaryPolicy\nmetadata: {{name: bench}}\nspec:\n  selector: {{matchLabels: {{app: bench}}}}\n  traffic: {{steps: [10, 100], stepDuration: 1h}}\n  analysis:\n    interval: {}s\n    failureLimit: {}\n    inconclusiveLimit: 1000\n    minSampleSize: 1\n    progressDeadline: 2h\n    metrics:\n      - {}\n",
        row.interval_s, row.failure_limit, row.metric
    );
    let loaded = canaryd::policy::load_str("bench.yaml", &text);
    assert!(loaded.problems.is_empty(), "{:?}", loaded.problems);
    loaded.policies[0].plan.clone()
}

/// One interval's error counts of both arms over `seconds`.
fn counts(seconds: i64, share: f64, canary_rate: f64, rng: &mut StdRng) -> Option<Observation> {
    let requests = (CANARY_RPS / share * seconds as f64).round() as u64;
    let canary = Binomial::new(requests, share).ok()?.sample(rng);
    let baseline = requests - canary;
    let ce = Binomial::new(canary, canary_rate).ok()?.sample(rng) as f64;
    let be = Binomial::new(baseline, 0.01).ok()?.sample(rng) as f64;
    Some(Observation {
        canary: Some(Sample::Counts { requests: canary as f64, events: ce }),
        baseline: Some(Sample::Counts { requests: baseline as f64, events: be }),
        ..Observation::default()
    })
}

/// Seconds until rollback, or `None` if the rollout survived the horizon.
fn time_to_rollback(plan: &Plan, share: f64, canary_rate: f64, rng: &mut StdRng) -> Option<i64> {
    let id = RolloutId { namespace: "bench".into(), name: "web".into() };
    let t0 = Timestamp::from_second(1_800_000_000).ok()?;
    let mut r = step(&Rollout::new(id, "v2", plan.clone()), &Input::Start, t0).ok()?.rollout;
    let interval_s = plan.interval.as_secs() as i64;
    let mut t = 0;
    while t < HORIZON_S {
        t += interval_s;
        let obs = counts(interval_s, share, canary_rate, rng)?;
        let input =
            IntervalObservations { metrics: [("errors".to_string(), obs)].into(), ..Default::default() };
        r = step(&r, &Input::Interval(input), t0.checked_add(jiff::SignedDuration::from_secs(t)).ok()?)
            .ok()?
            .rollout;
        if r.rolled_back() {
            return Some(t);
        }
    }
    None
}

fn percentile(sorted: &[i64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    sorted[((sorted.len() - 1) as f64 * p).round() as usize] as f64
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let benching = args.iter().any(|a| a == "--bench");
    let runs = args
        .iter()
        .position(|a| a == "--runs")
        .and_then(|i| args.get(i + 1))
        .and_then(|n| n.parse().ok())
        .unwrap_or(if benching { 1000 } else { 20 });
    let sequential = "{name: errors, template: http-error-rate, test: sequential, alpha: 0.01}";
    let flagger = |name: &'static str, metric: &'static str| Row {
        name,
        metric,
        canary_share: 0.1,
        failure_limit: 5,
        interval_s: 60,
    };
    let rows = [
        Row {
            name: "sequential, 10/90 split",
            metric: sequential,
            canary_share: 0.1,
            failure_limit: 2,
            interval_s: 30,
        },
        Row {
            name: "sequential, 50/50 split",
            metric: sequential,
            canary_share: 0.5,
            failure_limit: 2,
            interval_s: 30,
        },
        flagger(
            "Flagger: errors > 1% in 1m, threshold 5, 10/90",
            "{name: errors, template: http-error-rate, test: threshold, max: 0.01}",
        ),
        flagger(
            "Flagger: errors > 1.5% in 1m, threshold 5, 10/90",
            "{name: errors, template: http-error-rate, test: threshold, max: 0.015}",
        ),
        flagger(
            "Flagger: errors > 2% in 1m, threshold 5, 10/90",
            "{name: errors, template: http-error-rate, test: threshold, max: 0.02}",
        ),
        Row {
            name: "ratio > 1.5 every 30s, 2 failures, 10/90",
            metric: "{name: errors, template: http-error-rate, test: ratio, max: 1.5}",
            canary_share: 0.1,
            failure_limit: 2,
            interval_s: 30,
        },
    ];
    // Wald's SPRT knowing both rates, per second of canary traffic at 10 req/s.
    let (l0, l1, alpha, beta): (f64, f64, f64, f64) = (0.1, 0.2, 0.01, 0.05);
    let drift = l1 * (l1 / l0).ln() - (l1 - l0);
    let (a, b) = (((1.0 - beta) / alpha).ln(), (beta / (1.0 - alpha)).ln());
    let wald = ((1.0 - beta) * a + beta * b) / drift;
    // Wald's SPRT on which arm each error came from (the information the sequential test
    // uses): θ0 = ρ, θ1 = the canary's share of errors under the regression.
    let by_arm = |rho: f64| {
        let (canary, baseline) = (CANARY_RPS * 0.02, CANARY_RPS * (1.0 - rho) / rho * 0.01);
        let theta1 = canary / (canary + baseline);
        let kl = theta1 * (theta1 / rho).ln() + (1.0 - theta1) * ((1.0 - theta1) / (1.0 - rho)).ln();
        ((1.0 - beta) * a + beta * b) / kl / (canary + baseline)
    };

    println!(
        "detection of a 1% -> 2% error regression, canary at 10 req/s, {runs} rollouts per row, 30 s intervals, 30 min horizon"
    );
    println!(
        "{:<48} {:>9} {:>9} {:>9} {:>7} {:>12}",
        "judge", "mean s", "median s", "p95 s", "power", "false rb"
    );
    for (name, seconds) in [
        ("Wald SPRT, both rates known", wald),
        ("Wald SPRT on each error's arm, 10/90", by_arm(0.1)),
        ("Wald SPRT on each error's arm, 50/50", by_arm(0.5)),
    ] {
        println!("{:<48} {:>9.0} {:>9} {:>9} {:>7} {:>12}", name, seconds, "-", "-", "0.95", "0.01");
    }
    let mut rng = StdRng::seed_from_u64(7);
    for row in &rows {
        let plan = plan(row);
        let mut detected: Vec<i64> =
            (0..runs).filter_map(|_| time_to_rollback(&plan, row.canary_share, 0.02, &mut rng)).collect();
        detected.sort_unstable();
        let false_rollbacks =
            (0..runs).filter(|_| time_to_rollback(&plan, row.canary_share, 0.01, &mut rng).is_some()).count();
        let mean = detected.iter().sum::<i64>() as f64 / detected.len().max(1) as f64;
        println!(
            "{:<48} {:>9.0} {:>9.0} {:>9.0} {:>7.3} {:>12.3}",
            row.name,
            mean,
            percentile(&detected, 0.5),
            percentile(&detected, 0.95),
            detected.len() as f64 / runs as f64,
            false_rollbacks as f64 / runs as f64
        );
    }
    let (mut detected, mut false_rollbacks) = (0, 0);
    for _ in 0..runs {
        detected += usize::from(kayenta_fails(0.02, &mut rng));
        false_rollbacks += usize::from(kayenta_fails(0.01, &mut rng));
    }
    println!(
        "{:<48} {:>9} {:>9} {:>9} {:>7.3} {:>12.3}",
        format!("Kayenta: one judgement of {KAYENTA_WINDOW_MIN} 1-min points, 98%"),
        KAYENTA_WINDOW_MIN * 60,
        "-",
        "-",
        detected as f64 / runs as f64,
        false_rollbacks as f64 / runs as f64
    );
    println!("rerun: cargo bench --bench detection [-- --runs N]");
}

/// Kayenta as it is run: one Mann-Whitney judgement (98%, its rule) over a window of
/// one-minute error rates at a 50/50 split. Whether it classifies the canary as high.
fn kayenta_fails(canary_rate: f64, rng: &mut StdRng) -> bool {
    use canaryd::judge::{Direction, MetricRule, MetricState, Outcome, TestConfig, judge};
    let test = TestConfig::MannWhitney {
        direction: Direction::Increase,
        max_effect: 1.0,
        confidence: 0.98,
        tolerance: canaryd::judge::KAYENTA_TOLERANCE,
        window: KAYENTA_WINDOW_MIN,
    };
    let rule = MetricRule { name: "errors", test: &test, quantile: None, min_sample_size: 1 };
    let mut state = MetricState::default();
    let mut last = Outcome::Pass;
    // Every point enters the window; only the verdict at the window's end is the judgement.
    for _ in 0..KAYENTA_WINDOW_MIN {
        let Some(obs) = counts(60, 0.5, canary_rate, rng) else { return false };
        last = judge(rule, &obs, &mut state).outcome;
    }
    last == Outcome::Fail
}
