//! The shipped policies on generated rollouts: how often each rolls back a canary exactly
//! as good as its baseline (A/A), and how fast it catches five regressions, at 1, 10 and
//! 100 requests per second of canary traffic at the first step.
//!
//! Traffic is non-stationary: the total rate swings ±50% over a 20-minute cycle and
//! doubles for one minute in ten; the canary's share follows the weight the engine set.
//! Every metric of a policy gets data of its kind: request and error counts (0.05% errors,
//! inside the policies' 0.1% target), a latency histogram (log-normal, p99 about 280 ms),
//! per-pod CPU, memory and their utilisation of the limits. Each rollout runs through the
//! same engine as the daemon, for at most two hours; a promotion ends it.
//!
//! Rows beside the shipped policies: the same runbook rules as point rules (`ratio`,
//! `threshold`), and a Flagger-style absolute bound (error rate over 1% in a 1 m interval,
//! 5 failures).
//!
//! Run: `cargo bench --bench policies` (200 rollouts per cell; `-- --runs N` to change;
//! `CANARYD_BENCH_REASONS=1` prints every rollback's reason to stderr).
//! Under `cargo test` it runs a small smoke sample.

use canaryd::engine::plan::Signal;
use canaryd::engine::{Input, IntervalObservations, Phase, Plan, Rollout, RolloutId, step};
use canaryd::judge::{Histogram, Observation, Sample};
use jiff::Timestamp;
use rand::rngs::StdRng;
use rand::{RngExt, SeedableRng};
use rand_distr::{Binomial, Distribution, Normal, Poisson};

const HORIZON_S: i64 = 2 * 3600;
const BUCKETS: [f64; 6] = [0.05, 0.1, 0.25, 0.5, 1.0, 2.5];
const ERROR_RATE: f64 = 0.0005;
/// Log-normal latency: median 60 ms, σ 0.66 (p99 ≈ 280 ms).
const LATENCY_MU: f64 = -2.813;
const LATENCY_SIGMA: f64 = 0.66;

/// What differs in the canary.
#[derive(Clone, Copy)]
enum Scenario {
    Same,
    Errors(f64),
    Latency(f64),
    Memory(f64),
}

impl Scenario {
    fn name(self) -> String {
        match self {
            Scenario::Same => "A/A".into(),
            Scenario::Errors(f) => format!("errors x{f}"),
            Scenario::Latency(f) => format!("p99 +{:.0}%", (f - 1.0) * 100.0),
            Scenario::Memory(f) => format!("memory +{:.0}%", (f - 1.0) * 100.0),
        }
    }
}

fn load(file: &str) -> Plan {
    let loaded = canaryd::policy::load_paths(&[file.into()]);
    assert!(loaded.problems.is_empty(), "{:?}", loaded.problems);
    loaded.policies[0].plan.clone()
}

fn inline(spec: &str) -> Plan {
    let text = format!(
        "apiVersion: canaryd.io/v1alpha1\nkind: CanaryPolicy\nmetadata: {{name: bench, namespace: b}}\nspec:\n  selector: {{matchLabels: {{a: b}}}}\n{spec}"
    );
    let loaded = canaryd::policy::load_str("bench.yaml", &text);
    assert!(loaded.problems.is_empty(), "{:?}", loaded.problems);
    loaded.policies[0].plan.clone()
}

/// The web-default rules as point tests, as they are commonly written.
const POINT_RULES: &str = "  traffic: {steps: [10, 50, 100], stepDuration: 5m}
  analysis:
    interval: 30s
    failureLimit: 2
    metrics:
      - {name: errors-vs-baseline, template: http-error-rate, test: ratio, max: 1.5}
      - {name: p95-vs-baseline, template: http-latency-p95, test: ratio, max: 2.0}
      - {name: p99-target, template: http-latency-p99, test: threshold, max: 0.5}
      - {name: error-target, template: http-error-rate, test: threshold, max: 0.001}
      - {name: memory-limit, template: container-memory-utilisation, test: threshold, max: 0.9}
";

/// Flagger's documented form: request success rate over 99% (errors under 1%) in a 1 m
/// interval, 5 failed checks.
const FLAGGER: &str = "  traffic: {steps: [10, 50, 100], stepDuration: 5m}
  analysis:
    interval: 1m
    failureLimit: 5
    minSampleSize: 1
    metrics:
      - {name: errors, template: http-error-rate, test: threshold, max: 0.01}
";

/// The latency histogram of `n` requests: bucket counts drawn as a multinomial over the
/// log-normal's bucket probabilities (the exact counts a real histogram would hold).
fn histogram(rng: &mut StdRng, n: u64, scale: f64) -> Histogram {
    use statrs::distribution::{ContinuousCDF, LogNormal as Cdf};
    let cdf = Cdf::new(LATENCY_MU + scale.ln(), LATENCY_SIGMA).unwrap();
    let (mut left, mut below, mut cumulative) = (n, 0.0, 0.0);
    let mut buckets = Vec::new();
    for le in BUCKETS {
        let p = cdf.cdf(le);
        let share = if below < 1.0 { ((p - below) / (1.0 - below)).clamp(0.0, 1.0) } else { 0.0 };
        let got = if left > 0 { Binomial::new(left, share).unwrap().sample(rng) } else { 0 };
        left -= got;
        cumulative += got as f64;
        below = p;
        buckets.push((le, cumulative));
    }
    buckets.push((f64::INFINITY, n as f64));
    Histogram { buckets }
}

fn arm(rng: &mut StdRng, requests: u64, scenario: Scenario, canary: bool, signal: Signal) -> Option<Sample> {
    let factor = |s: Scenario| match (s, canary) {
        (_, false) => 1.0,
        (s, true) => match s {
            Scenario::Errors(f) | Scenario::Latency(f) | Scenario::Memory(f) => f,
            Scenario::Same => 1.0,
        },
    };
    let errors = if matches!(scenario, Scenario::Errors(_)) { factor(scenario) } else { 1.0 };
    let latency = if matches!(scenario, Scenario::Latency(_)) { factor(scenario) } else { 1.0 };
    let memory = if matches!(scenario, Scenario::Memory(_)) { factor(scenario) } else { 1.0 };
    let pods = |rng: &mut StdRng, mean: f64| {
        let n = Normal::new(mean, mean * 0.02).unwrap();
        Some(Sample::Values { values: (0..2).map(|_| n.sample(rng)).collect() })
    };
    match signal {
        Signal::Errors => Some(Sample::Counts {
            requests: requests as f64,
            events: Binomial::new(requests, (ERROR_RATE * errors).min(1.0)).unwrap().sample(rng) as f64,
        }),
        Signal::Latency => Some(Sample::Histogram(histogram(rng, requests, latency))),
        Signal::Memory => pods(rng, 2.0e8 * memory),
        Signal::MemoryUtilisation => pods(rng, 0.5 * memory),
        Signal::Cpu => pods(rng, 0.3),
        Signal::CpuUtilisation => pods(rng, 0.3),
        Signal::Custom => None,
    }
}

/// One rollout; the time of its rollback, if it was rolled back.
fn run(plan: &Plan, canary_rps: f64, scenario: Scenario, rng: &mut StdRng) -> Option<i64> {
    let t0 = Timestamp::UNIX_EPOCH;
    let id = RolloutId { namespace: "bench".into(), name: "web".into() };
    let mut r = step(&Rollout::new(id, "v2", plan.clone()), &Input::Start, t0).ok()?.rollout;
    let interval = plan.interval.as_secs() as i64;
    let phase = rng.random_range(0.0..1.0);
    let total_rps = canary_rps / (f64::from(r.weight) / 100.0);
    let mut t = 0;
    while t < HORIZON_S {
        t += interval;
        let cycle = 1.0 + 0.5 * (std::f64::consts::TAU * (t as f64 / 1200.0 + phase)).sin();
        let burst = if (t / 60) % 10 == 3 { 2.0 } else { 1.0 };
        let share = f64::from(r.weight) / 100.0;
        let lambda = total_rps * cycle * burst * interval as f64;
        let canary = Poisson::new(lambda * share).unwrap().sample(rng) as u64;
        let baseline = Poisson::new(lambda * (1.0 - share)).unwrap().sample(rng) as u64;
        let mut obs = IntervalObservations::default();
        for m in &plan.metrics {
            let o = Observation {
                canary: arm(rng, canary, scenario, true, m.signal),
                baseline: arm(rng, baseline, scenario, false, m.signal),
                ..Observation::default()
            };
            obs.metrics.insert(m.name.clone(), o);
        }
        for trigger in &plan.triggers {
            obs.health.insert(trigger.name.clone(), true);
        }
        let at = t0.checked_add(jiff::SignedDuration::from_secs(t)).ok()?;
        r = step(&r, &Input::Interval(obs), at).ok()?.rollout;
        match r.phase {
            Phase::RollingBack | Phase::RolledBack => {
                if std::env::var_os("CANARYD_BENCH_REASONS").is_some() {
                    eprintln!("rolled back: {}", r.decisions.last().map_or("", |d| d.reason.as_str()));
                }
                return Some(t);
            }
            Phase::Promoting | Phase::Succeeded => return None,
            _ => {}
        }
    }
    None
}

/// Wald's SPRT knowing both error rates: the fastest possible test at α = 0.01, β = 0.05.
fn wald_seconds(canary_rps: f64, factor: f64) -> f64 {
    let (l0, l1) = (canary_rps * ERROR_RATE, canary_rps * ERROR_RATE * factor);
    let drift = l1 * (l1 / l0).ln() - (l1 - l0);
    let (alpha, beta): (f64, f64) = (0.01, 0.05);
    let (a, b) = (((1.0 - beta) / alpha).ln(), (beta / (1.0 - alpha)).ln());
    ((1.0 - beta) * a + beta * b) / drift
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let benching = args.iter().any(|a| a == "--bench");
    let runs: usize = args
        .iter()
        .position(|a| a == "--runs")
        .and_then(|i| args.get(i + 1))
        .and_then(|n| n.parse().ok())
        .unwrap_or(if benching { 200 } else { 3 });
    let policies: Vec<(&str, Plan)> = vec![
        ("web-default", load("policies/web-default.yaml")),
        ("critical-strict", load("policies/critical-strict.yaml")),
        ("latency-sensitive", load("policies/latency-sensitive.yaml")),
        ("no-mesh", load("policies/no-mesh.yaml")),
        ("point rules (ratio/threshold)", inline(POINT_RULES)),
        ("Flagger-style errors < 1%, 1m x5", inline(FLAGGER)),
    ];
    let scenarios = [
        Scenario::Same,
        Scenario::Errors(1.5),
        Scenario::Errors(2.0),
        Scenario::Latency(1.3),
        Scenario::Latency(2.0),
        Scenario::Memory(1.5),
    ];
    println!("{runs} generated rollouts per cell; rolled back (share) and mean time to roll back (min).");
    println!(
        "A/A is a false rollback rate; the others are detection rates. Horizon 2 h; a promotion ends a run."
    );
    let mut header = String::from("| policy | canary req/s |");
    for s in scenarios {
        header.push_str(&format!(" {} |", s.name()));
    }
    println!("{header}");
    println!("|---|---|{}", "---|".repeat(scenarios.len()));
    for (name, plan) in &policies {
        for rps in [1.0, 10.0, 100.0] {
            let mut row = format!("| {name} | {rps} |");
            for (k, scenario) in scenarios.iter().enumerate() {
                let mut rng = StdRng::seed_from_u64(1000 * k as u64 + rps as u64);
                let times: Vec<i64> = (0..runs).filter_map(|_| run(plan, rps, *scenario, &mut rng)).collect();
                let rate = times.len() as f64 / runs as f64;
                if times.is_empty() {
                    row.push_str(&format!(" {rate:.3} |"));
                } else {
                    let mean = times.iter().sum::<i64>() as f64 / times.len() as f64 / 60.0;
                    row.push_str(&format!(" {rate:.3} ({mean:.1} min) |"));
                }
            }
            println!("{row}");
        }
    }
    println!("Oracle (Wald's SPRT knowing both error rates, alpha 0.01, beta 0.05), mean time to detect:");
    for rps in [1.0, 10.0, 100.0] {
        println!(
            "  {rps} req/s: errors x1.5 {:.1} min, errors x2 {:.1} min",
            wald_seconds(rps, 1.5) / 60.0,
            wald_seconds(rps, 2.0) / 60.0
        );
    }
    println!("rerun: cargo bench --bench policies [-- --runs N]");
}
