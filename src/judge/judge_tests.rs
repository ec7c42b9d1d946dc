use super::*;

fn counts(requests: f64, events: f64) -> Option<Sample> {
    Some(Sample::Counts { requests, events })
}

fn obs(canary: Option<Sample>, baseline: Option<Sample>) -> Observation {
    Observation { canary, baseline, query: Some("q".into()), ..Observation::default() }
}

fn rule(test: &TestConfig) -> MetricRule<'_> {
    MetricRule { name: "m", test, quantile: Some(0.99), min_sample_size: 50 }
}

#[test]
fn threshold_fails_above_max_and_passes_below() {
    let t = TestConfig::Threshold { min: None, max: Some(0.01) };
    let v = judge(rule(&t), &obs(counts(1000.0, 20.0), None), &mut MetricState::default());
    assert_eq!(v.outcome, Outcome::Fail);
    assert_eq!(v.evidence.canary.value, Some(0.02));
    assert_eq!(v.evidence.bound, Some(0.01));
    assert_eq!(v.evidence.query.as_deref(), Some("q"));
    let v = judge(rule(&t), &obs(counts(1000.0, 5.0), None), &mut MetricState::default());
    assert_eq!(v.outcome, Outcome::Pass);
}

#[test]
fn no_data_is_inconclusive_and_too_few_requests_insufficient_never_a_pass() {
    let t = TestConfig::Threshold { min: None, max: Some(0.01) };
    let v = judge(rule(&t), &obs(None, counts(1000.0, 0.0)), &mut MetricState::default());
    assert_eq!((v.outcome, v.reason.as_str()), (Outcome::Inconclusive, "no data for the canary"));
    let v = judge(rule(&t), &obs(counts(10.0, 0.0), None), &mut MetricState::default());
    assert_eq!(v.outcome, Outcome::Insufficient);
    assert!(v.reason.contains("fewer than the 50 needed"), "{}", v.reason);
    let failed = Observation { error: Some("Prometheus unreachable".into()), ..Observation::default() };
    let v = judge(rule(&t), &failed, &mut MetricState::default());
    assert_eq!((v.outcome, v.reason.as_str()), (Outcome::Inconclusive, "no data: Prometheus unreachable"));
}

#[test]
fn ratio_compares_canary_with_baseline() {
    let t = TestConfig::Ratio { min: None, max: Some(1.5) };
    let v = judge(rule(&t), &obs(counts(100.0, 4.0), counts(900.0, 18.0)), &mut MetricState::default());
    assert_eq!(v.outcome, Outcome::Fail);
    assert!((v.evidence.statistic.unwrap() - 2.0).abs() < 1e-12);
    let v = judge(rule(&t), &obs(counts(100.0, 0.0), counts(900.0, 0.0)), &mut MetricState::default());
    assert_eq!((v.outcome, v.evidence.statistic), (Outcome::Pass, Some(1.0)));
    let v = judge(rule(&t), &obs(counts(100.0, 1.0), None), &mut MetricState::default());
    assert_eq!((v.outcome, v.reason.as_str()), (Outcome::Inconclusive, "no data for the baseline"));
}

#[test]
fn ratio_on_latency_uses_the_quantile() {
    let t = TestConfig::Ratio { min: None, max: Some(2.0) };
    let hist = |fast: f64, medium: f64| {
        Some(Sample::Histogram(Histogram {
            buckets: vec![(0.1, fast), (0.5, medium), (1.0, 100.0), (f64::INFINITY, 100.0)],
        }))
    };
    // Canary p99 = 0.95 s (interpolated in (0.5, 1]); baseline p99 ≈ 0.0995 s.
    let v = judge(rule(&t), &obs(hist(50.0, 90.0), hist(99.5, 100.0)), &mut MetricState::default());
    assert_eq!(v.outcome, Outcome::Fail, "{}", v.reason);
    assert!((v.evidence.canary.value.unwrap() - 0.95).abs() < 1e-12);
    assert!(v.evidence.canary.value.unwrap() > 2.0 * v.evidence.baseline.value.unwrap());
}

#[test]
fn sequential_fails_conclusively_on_a_doubled_error_rate() {
    let t = TestConfig::Sequential { alpha: 0.01, slower_than: None, margin: None, max: None };
    let mut state = MetricState::default();
    let mut last = None;
    for _ in 0..30 {
        let v = judge(rule(&t), &obs(counts(100.0, 2.0), counts(900.0, 9.0)), &mut state);
        if v.outcome == Outcome::Fail {
            last = Some(v);
            break;
        }
        assert_eq!(v.outcome, Outcome::Pass);
    }
    let v = last.expect("the regression is found");
    assert!(v.conclusive);
    assert!(v.evidence.p_value.unwrap() <= 0.01);
    let c = v.evidence.cumulative.unwrap();
    assert!(c.canary_events > 0.0 && c.baseline_requests > 0.0);
    assert!(v.reason.contains("always-valid p"), "{}", v.reason);
}

#[test]
fn sequential_on_latency_counts_requests_above_the_baseline_bucket() {
    let t = TestConfig::Sequential { alpha: 0.05, slower_than: None, margin: None, max: None };
    let hist = |total: f64, slow: f64| {
        Some(Sample::Histogram(Histogram {
            buckets: vec![
                (0.1, total * 0.5),
                (0.25, total * 0.98),
                (0.5, total - slow),
                (f64::INFINITY, total),
            ],
        }))
    };
    let mut state = MetricState::default();
    let v = judge(rule(&t), &obs(hist(100.0, 1.0), hist(900.0, 9.0)), &mut state);
    // The baseline's p99 falls in the (0.25, 0.5] bucket.
    assert_eq!(v.evidence.slower_than, Some(0.5));
    assert_eq!(v.evidence.canary.events, Some(1.0));
    let mut failed = false;
    for _ in 0..30 {
        failed |=
            judge(rule(&t), &obs(hist(100.0, 5.0), hist(900.0, 9.0)), &mut state).outcome == Outcome::Fail;
    }
    assert!(failed, "5x more slow requests on the canary must be found");
}

#[test]
fn sequential_accumulates_the_steps_requests_until_they_meet_the_minimum() {
    let t = TestConfig::Sequential { alpha: 0.05, slower_than: None, margin: None, max: None };
    let mut state = MetricState::default();
    // 10 canary requests an interval: 50 are needed, so four intervals hold and the fifth passes.
    for _ in 0..4 {
        let v = judge(rule(&t), &obs(counts(10.0, 0.0), counts(90.0, 1.0)), &mut state);
        assert_eq!(v.outcome, Outcome::Insufficient, "{}", v.reason);
        assert!(v.reason.contains("collecting evidence: the canary served"), "{}", v.reason);
    }
    let v = judge(rule(&t), &obs(counts(10.0, 0.0), counts(90.0, 1.0)), &mut state);
    assert_eq!(v.outcome, Outcome::Pass, "{}", v.reason);
    assert_eq!(state.sequential.as_ref().unwrap().baseline_requests, 450.0);
    // A new step counts again; the running test goes on.
    state.start_step();
    let v = judge(rule(&t), &obs(counts(10.0, 0.0), counts(90.0, 1.0)), &mut state);
    assert_eq!(v.outcome, Outcome::Insufficient);
    assert_eq!(state.sequential.as_ref().unwrap().canary_requests, 60.0);
    // No data at all is not low traffic: it counts towards the inconclusive limit.
    let v = judge(rule(&t), &obs(None, counts(90.0, 1.0)), &mut state);
    assert_eq!(v.outcome, Outcome::Inconclusive);
}

#[test]
fn approximate_counts_are_inconclusive_and_never_reach_the_sequential_test() {
    let t = TestConfig::Sequential { alpha: 0.05, slower_than: None, margin: None, max: None };
    let mut state = MetricState::default();
    let mut o = obs(counts(100.0, 50.0), counts(900.0, 1.0));
    o.approximate = Some("counter reset in the interval".into());
    let v = judge(rule(&t), &o, &mut state);
    assert_eq!(v.outcome, Outcome::Inconclusive);
    assert!(v.reason.contains("counter reset"), "{}", v.reason);
    assert_eq!(state.sequential, None, "nothing was added to the running sums");
    // A point test still reads them.
    let ratio = TestConfig::Ratio { min: None, max: Some(2.0) };
    assert_eq!(judge(rule(&ratio), &o, &mut MetricState::default()).outcome, Outcome::Fail);
}

#[test]
fn mann_whitney_collects_points_then_finds_a_shift() {
    let t = TestConfig::MannWhitney {
        direction: Direction::Increase,
        max_effect: 1.1,
        confidence: 0.98,
        tolerance: 0.25,
        window: 60,
    };
    let mut state = MetricState::default();
    let gauge = |v: f64| Some(Sample::Values { values: vec![v] });
    let mut outcomes = vec![];
    for i in 0..12 {
        let wobble = (i % 3) as f64 * 0.01;
        outcomes.push(judge(rule(&t), &obs(gauge(1.5 + wobble), gauge(1.0 + wobble)), &mut state));
    }
    assert_eq!(outcomes[0].outcome, Outcome::Inconclusive);
    let last = outcomes.last().unwrap();
    assert_eq!(last.outcome, Outcome::Fail, "{}", last.reason);
    assert!(last.evidence.interval.unwrap().0 > 0.0);
}

#[test]
fn mann_whitney_passes_equal_series() {
    let t = TestConfig::MannWhitney {
        direction: Direction::Increase,
        max_effect: 1.0,
        confidence: 0.98,
        tolerance: 0.25,
        window: 60,
    };
    let mut state = MetricState::default();
    let gauge = |v: f64| Some(Sample::Values { values: vec![v] });
    let mut last = None;
    for i in 0..10 {
        let v = (i % 4) as f64;
        last = Some(judge(rule(&t), &obs(gauge(v), gauge(3.0 - v)), &mut state));
    }
    assert_eq!(last.unwrap().outcome, Outcome::Pass);
}

fn sequential(margin: Option<f64>, max: Option<f64>) -> TestConfig {
    TestConfig::Sequential { alpha: 0.01, slower_than: None, margin, max }
}

/// Feeds the same interval `n` times; the last verdict.
fn repeat(t: &TestConfig, o: &Observation, n: usize) -> Verdict {
    let mut state = MetricState::default();
    let mut last = None;
    for _ in 0..n {
        let v = judge(rule(t), o, &mut state);
        let done = v.outcome == Outcome::Fail;
        last = Some(v);
        if done {
            break;
        }
    }
    last.unwrap()
}

#[test]
fn a_margin_on_errors_tolerates_up_to_its_ratio() {
    // The baseline errs at 1%; the canary at 1.4% and at 2.5%; allowed 1.5x.
    let t = sequential(Some(1.5), None);
    let within = repeat(&t, &obs(counts(1000.0, 14.0), counts(1000.0, 10.0)), 100);
    assert_eq!(within.outcome, Outcome::Pass, "{}", within.reason);
    assert!(within.reason.contains("allowed up to 1.5x"), "{}", within.reason);
    let beyond = repeat(&t, &obs(counts(1000.0, 25.0), counts(1000.0, 10.0)), 100);
    assert_eq!(beyond.outcome, Outcome::Fail, "{}", beyond.reason);
    assert!(beyond.conclusive);
}

#[test]
fn a_bound_on_errors_needs_no_baseline() {
    let t = sequential(None, Some(0.05));
    let above = repeat(&t, &obs(counts(200.0, 16.0), None), 50);
    assert_eq!(above.outcome, Outcome::Fail, "{}", above.reason);
    assert!(above.reason.contains("errors against a bound of 0.05"), "{}", above.reason);
    let below = repeat(&t, &obs(counts(200.0, 6.0), None), 50);
    assert_eq!(below.outcome, Outcome::Pass, "{}", below.reason);
}

fn latency(total: f64, share_above: [f64; 3]) -> Option<Sample> {
    // Buckets 0.1, 0.25, 0.5, 1: `share_above[i]` of requests are slower than 0.25, 0.5, 1.
    Some(Sample::Histogram(Histogram {
        buckets: vec![
            (0.1, total * 0.5),
            (0.25, total * (1.0 - share_above[0])),
            (0.5, total * (1.0 - share_above[1])),
            (1.0, total * (1.0 - share_above[2])),
            (f64::INFINITY, total),
        ],
    }))
}

#[test]
fn a_latency_bound_tests_the_canarys_quantile_against_it() {
    // p99 < 500 ms: 3% of the canary's requests slower than 0.5 s breaks it; 0.5% does not.
    let t = sequential(None, Some(0.5));
    let slow = repeat(&t, &obs(latency(1000.0, [0.2, 0.03, 0.0]), None), 50);
    assert_eq!(slow.outcome, Outcome::Fail, "{}", slow.reason);
    assert_eq!(slow.evidence.slower_than, Some(0.5));
    let fast = repeat(&t, &obs(latency(1000.0, [0.2, 0.005, 0.0]), None), 50);
    assert_eq!(fast.outcome, Outcome::Pass, "{}", fast.reason);
}

#[test]
fn a_latency_margin_compares_the_canarys_quantile_with_a_multiple_of_the_baselines() {
    // The baseline's p95 lies in (0.1, 0.25]; 2x that is 0.5: the canary's p95 must stay at
    // or under 0.5 s, so at most 5% of its requests may be slower than 0.5 s.
    let t = sequential(Some(2.0), None);
    let mut r = rule(&t);
    r.quantile = Some(0.95);
    let baseline = latency(9000.0, [0.02, 0.0, 0.0]);
    let run = |canary: Option<Sample>| {
        let mut state = MetricState::default();
        let mut v = judge(r, &obs(canary.clone(), baseline.clone()), &mut state);
        for _ in 0..50 {
            if v.outcome == Outcome::Fail {
                break;
            }
            v = judge(r, &obs(canary.clone(), baseline.clone()), &mut state);
        }
        v
    };
    let three_times = run(latency(1000.0, [0.5, 0.2, 0.0]));
    assert_eq!(three_times.outcome, Outcome::Fail, "{}", three_times.reason);
    assert_eq!(three_times.evidence.slower_than, Some(0.5));
    let within = run(latency(1000.0, [0.1, 0.02, 0.0]));
    assert_eq!(within.outcome, Outcome::Pass, "{}", within.reason);
}

#[test]
fn a_latency_margin_fixes_its_bound_only_from_a_baseline_with_enough_requests() {
    let t = sequential(Some(2.0), None);
    let mut r = rule(&t);
    r.quantile = Some(0.95);
    let mut state = MetricState::default();
    let canary = latency(1000.0, [0.1, 0.02, 0.0]);
    // 20 baseline requests (50 needed), half slower than 0.25 s: their p95 bucket, 0.5 s,
    // would fix the bound at 2 x 0.5 = 1 s for the rest of the rollout.
    let few = judge(r, &obs(canary.clone(), latency(20.0, [0.5, 0.0, 0.0])), &mut state);
    assert_eq!(few.outcome, Outcome::Insufficient, "{}", few.reason);
    assert_eq!(
        few.reason,
        "waiting for a baseline histogram with enough requests to fix the slow-request bound"
    );
    // 9000 baseline requests with their p95 in (0.1, 0.25]: the bound is 2 x 0.25 = 0.5 s.
    let enough = judge(r, &obs(canary, latency(9000.0, [0.02, 0.0, 0.0])), &mut state);
    assert_eq!(enough.evidence.slower_than, Some(0.5), "{}", enough.reason);
}

/// Feeds a Mann-Whitney test the baseline series `y` and the canary series `y + shift +
/// noise`, one point per interval; the last verdict.
fn kayenta(shift: f64, window: usize) -> (Verdict, MetricState) {
    let t = TestConfig::MannWhitney {
        direction: Direction::Increase,
        max_effect: 1.0,
        confidence: 0.98,
        tolerance: 0.25,
        window,
    };
    let y = [5., 9., 2., 7., 4., 8., 3., 6., 1., 10., 5., 9., 2., 7., 4., 8., 3., 6., 1., 10.];
    let noise = [3., -2., 1., -3., 2., 0., -1., 3., -2., 1., 0., 2., -3., 1., -1., 2., 0., -2., 3., -1.];
    let mut state = MetricState::default();
    let mut last = None;
    for (b, n) in y.iter().zip(noise) {
        let values = |v: f64| Some(Sample::Values { values: vec![v] });
        last = Some(judge(rule(&t), &obs(values(b + shift + n), values(*b)), &mut state));
    }
    (last.unwrap(), state)
}

#[test]
fn mann_whitney_fails_only_when_the_interval_clears_a_quarter_of_the_estimate() {
    // R, wilcox.test(conf.int = TRUE, exact = FALSE, conf.level = 0.98) on these series:
    // shift 3.5 gives the interval [0.50, 6.50] around 3.5: above zero, but not above
    // 0.25 x 3.5 = 0.875, so Kayenta passes it. Shift 4.5 gives [1.5, 7.5]: above 1.125.
    let (v, _) = kayenta(3.5, 20);
    assert_eq!(v.outcome, Outcome::Pass, "{}", v.reason);
    let (lo, _) = v.evidence.interval.unwrap();
    assert!((lo - 0.5).abs() < 1.25e-4, "{lo}");
    let (v, _) = kayenta(4.5, 20);
    assert_eq!(v.outcome, Outcome::Fail, "{}", v.reason);
}

#[test]
fn mann_whitney_keeps_the_configured_window() {
    let (v, state) = kayenta(4.5, 8);
    assert_eq!(state.canary_history.len(), 8);
    assert_eq!(v.evidence.canary.points, Some(8));
}

#[test]
fn each_outcome_has_one_word_the_docs_use_and_it_is_the_stored_one() {
    // The words of docs/policies.md: "pass, fail, inconclusive or insufficient".
    let words = [
        (Outcome::Pass, "pass"),
        (Outcome::Fail, "fail"),
        (Outcome::Inconclusive, "inconclusive"),
        (Outcome::Insufficient, "insufficient"),
    ];
    for (outcome, word) in words {
        assert_eq!(outcome.name(), word);
        assert_eq!(serde_json::to_value(outcome).unwrap(), word, "stored as it is named");
    }
}

#[test]
fn every_summary_letter_reads_back_as_its_outcome() {
    let verdict = |outcome, conclusive| Verdict {
        metric: "m".into(),
        test: "sequential".into(),
        outcome,
        conclusive,
        reason: String::new(),
        evidence: Evidence::default(),
    };
    // The letters stored in rollout states: p, F, f, i, w.
    for (letter, outcome, conclusive) in [
        ('p', Outcome::Pass, false),
        ('F', Outcome::Fail, true),
        ('f', Outcome::Fail, false),
        ('i', Outcome::Inconclusive, false),
        ('w', Outcome::Insufficient, false),
    ] {
        assert_eq!(verdict(outcome, conclusive).letter(), letter);
        assert_eq!(Outcome::of_letter(letter), Some((outcome, conclusive)));
    }
    assert_eq!(Outcome::of_letter('x'), None);
}
