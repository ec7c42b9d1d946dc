//! A rollout's persisted state stays small whatever its history: after 2,000 intervals
//! of `policies/web-default.yaml` it is no larger than after 100 (within a few hundred
//! bytes) and under 16 KiB, so it fits a Kubernetes status and is cheap to save every
//! tick. The full timeline is the transition's `interval`, kept outside the state.

mod support;

use canaryd::engine::{Command, DecisionKind, Input, IntervalObservations, Phase, Rollout, RolloutId, step};
use canaryd::judge::{Histogram, Observation, Sample};
use rand::rngs::StdRng;
use rand::{RngExt as _, SeedableRng};
use support::engine::at;

fn web_default() -> canaryd::engine::Plan {
    let loaded = canaryd::policy::load_paths(&["policies/web-default.yaml".into()]);
    assert!(loaded.problems.is_empty(), "{:?}", loaded.problems);
    loaded.policies[0].plan.clone()
}

/// One interval of a healthy service with three pods per arm: counts that vary, a
/// latency histogram with the usual buckets, CPU and memory readings per pod.
fn interval(rng: &mut StdRng) -> IntervalObservations {
    let counts = |rng: &mut StdRng, rate: f64| {
        let requests = (rate * 30.0 * rng.random_range(0.8..1.2)).round();
        // About 0.04% errors: well inside the 0.1% target.
        let events = f64::from(u8::from(rng.random_bool((requests * 0.0004).min(1.0))));
        Sample::Counts { requests, events }
    };
    let histogram = |rng: &mut StdRng, rate: f64| {
        let total = (rate * 30.0 * rng.random_range(0.8..1.2)).round();
        let bounds = [0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, f64::INFINITY];
        let shares = [0.05, 0.15, 0.35, 0.6, 0.8, 0.93, 0.997, 0.999, 1.0, 1.0, 1.0, 1.0];
        let buckets = bounds.iter().zip(shares).map(|(b, s)| (*b, (total * s).round())).collect();
        Sample::Histogram(Histogram { buckets })
    };
    let gauges =
        |rng: &mut StdRng| Sample::Values { values: (0..3).map(|_| rng.random_range(0.2..0.6)).collect() };
    let mut obs = IntervalObservations::default();
    for (name, kind) in [
        ("errors-vs-baseline", 0),
        ("errors-above-5-percent", 0),
        ("error-target", 0),
        ("p95-vs-baseline", 1),
        ("p99-target", 1),
        ("cpu-limit", 2),
        ("memory-limit", 2),
    ] {
        let (canary, baseline) = match kind {
            0 => (counts(rng, 10.0), counts(rng, 90.0)),
            1 => (histogram(rng, 10.0), histogram(rng, 90.0)),
            _ => (gauges(rng), gauges(rng)),
        };
        let o = Observation { canary: Some(canary), baseline: Some(baseline), ..Default::default() };
        obs.metrics.insert(name.to_string(), o);
    }
    obs.health.insert("health".into(), true);
    obs
}

fn size(r: &Rollout) -> usize {
    serde_json::to_vec(r).unwrap().len()
}

#[test]
fn the_state_after_2000_intervals_is_as_small_as_after_100_and_under_16_kib() {
    let id = RolloutId { namespace: "shop".into(), name: "web".into() };
    let mut r = Rollout::new(id, "v2", web_default());
    r = step(&r, &Input::Start, at(0)).unwrap().rollout;
    // Held by an operator: every interval is still analysed, but the rollout never ends.
    let pause = Input::Command { command: Command::Pause, by: "sre".into() };
    r = step(&r, &pause, at(1)).unwrap().rollout;
    let mut rng = StdRng::seed_from_u64(7);
    let mut sizes = Vec::new();
    for i in 1..=2000 {
        let t = step(&r, &Input::Interval(interval(&mut rng)), at(30 * i)).unwrap();
        assert!(t.interval.is_some(), "each interval's full analysis is handed out");
        r = t.rollout;
        assert_eq!(r.phase, Phase::Paused, "interval {i}: {:?}", r.decisions.last());
        if i == 100 || i == 2000 {
            eprintln!("interval {i}: {} bytes", size(&r));
            sizes.push(size(&r));
        }
    }
    assert_eq!(r.intervals_analysed, 2000);
    let (at_100, at_2000) = (sizes[0], sizes[1]);
    assert!(at_2000 <= at_100 + 300, "grew from {at_100} to {at_2000} bytes");
    assert!(at_2000 < 16 * 1024, "{at_2000} bytes");
}

#[test]
fn repeated_pauses_do_not_grow_the_state_and_keep_every_other_decision() {
    let id = RolloutId { namespace: "shop".into(), name: "web".into() };
    let mut r = Rollout::new(id, "v2", web_default());
    r = step(&r, &Input::Start, at(0)).unwrap().rollout;
    for i in 0..500 {
        let command = if i % 2 == 0 { Command::Pause } else { Command::Resume };
        r = step(&r, &Input::Command { command, by: "sre".into() }, at(1 + i)).unwrap().rollout;
    }
    assert_eq!(r.decisions_made, 501);
    assert_eq!(r.decisions.len(), canaryd::engine::rollout::DECISION_LIMIT);
    assert_eq!(r.decisions[0].action, DecisionKind::Started, "the start is never dropped");
    assert_eq!(r.decisions.last().unwrap().seq, 500, "the newest are kept");
}
