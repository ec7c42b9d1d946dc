use super::*;

fn close(a: f64, b: f64) -> bool {
    ((a - b) / b).abs() < 1e-6
}

#[test]
fn dirichlet_p_values_match_the_reference_table() {
    // STATS.md, k = 100, ρ = [0.5, 0.5].
    for (x, expected) in [([100.0, 150.0], 0.0515172), ([30.0, 60.0], 0.126322), ([1000.0, 1100.0], 0.483532)]
    {
        let p = dirichlet_p_value(&x, &[0.5, 0.5], 100.0);
        assert!(((p - expected) / expected).abs() < 1e-5, "{x:?}: {p} vs {expected}");
    }
}

#[test]
fn dirichlet_p_values_match_an_independent_implementation_to_1e6() {
    // Values printed by SciPy (gammaln) for the same formula.
    for (x, expected) in [
        ([100.0, 150.0], 0.05151723445362912),
        ([30.0, 60.0], 0.12632229567115852),
        ([1000.0, 1100.0], 0.48353216962851886),
    ] {
        assert!(close(dirichlet_p_value(&x, &[0.5, 0.5], 100.0), expected));
    }
}

#[test]
fn savvi_sequence_first_rejects_at_event_210() {
    // Events drawn with NumPy (seed 1, ρ = [0.8, 0.2], δ = [1.5, 2]); see tests/data/vectors.
    let events = include_str!("../../tests/data/vectors/savvi_events.txt").trim();
    assert_eq!(events.len(), 1000);
    let rho = [0.8, 0.2];
    let mut counts = [0.0, 0.0];
    let mut p: f64 = 1.0;
    let mut stop = None;
    for (n, c) in events.chars().enumerate() {
        counts[if c == '0' { 0 } else { 1 }] += 1.0;
        p = p.min(dirichlet_p_value(&counts, &rho, 100.0));
        if p <= 0.05 {
            stop = Some((n + 1, counts, p));
            break;
        }
    }
    let (n, counts, p) = stop.expect("the test rejects");
    assert_eq!(n, 210);
    assert_eq!(counts, [148.0, 62.0]);
    assert!(close(p, 0.045579631759249686), "p = {p}");
}

#[test]
fn no_events_or_one_empty_arm_leave_the_test_untouched() {
    let mut s = SequentialState::default();
    s.update((100.0, 0.0), (900.0, 0.0));
    s.update((0.0, 0.0), (900.0, 5.0));
    assert_eq!(s.p_value, 1.0);
    assert!(s.log_e_value().abs() < 1e-12);
    assert_eq!(s.baseline_events, 5.0);
}

#[test]
fn a_canary_with_a_fair_share_of_events_is_not_rejected() {
    let mut s = SequentialState::default();
    for _ in 0..50 {
        s.update((100.0, 1.0), (900.0, 9.0));
    }
    assert!(s.p_value > 0.5, "p = {}", s.p_value);
}

#[test]
fn a_doubled_error_rate_is_rejected_and_the_p_value_never_rises() {
    let mut s = SequentialState::default();
    let mut last = 1.0;
    for _ in 0..40 {
        s.update((100.0, 2.0), (900.0, 9.0));
        assert!(s.p_value <= last);
        last = s.p_value;
    }
    assert!(s.p_value < 0.01, "p = {}", s.p_value);
}

#[test]
fn fewer_canary_events_than_its_share_is_never_evidence_of_regression() {
    let mut s = SequentialState::default();
    for _ in 0..100 {
        s.update((500.0, 1.0), (500.0, 10.0));
    }
    assert!(s.p_value > 0.9, "one-sided: an improvement is not a regression (p = {})", s.p_value);
}

#[test]
fn the_share_may_change_between_intervals() {
    // 10% then 50% canary traffic, both with a 3x error rate.
    let mut s = SequentialState::default();
    for _ in 0..10 {
        s.update((100.0, 3.0), (900.0, 9.0));
    }
    let at_10 = s.p_value;
    for _ in 0..10 {
        s.update((500.0, 15.0), (500.0, 5.0));
    }
    assert!(s.p_value < at_10 && s.p_value < 1e-6, "{at_10} then {}", s.p_value);
}
