use proptest::prelude::*;

use super::*;

fn close(a: f64, b: f64) -> bool {
    ((a - b) / b).abs() < 1e-6
}

#[test]
fn p_values_match_the_independent_scipy_implementation() {
    // tests/data/vectors/sequential.py computes the same construction with SciPy.
    let vectors: serde_json::Value =
        serde_json::from_str(include_str!("../../tests/data/vectors/sequential.json")).unwrap();
    let cases = vectors["cases"].as_array().unwrap();
    assert_eq!(cases.len(), 3);
    for case in cases {
        let mut s = SequentialState::default();
        let expected = case["pValues"].as_array().unwrap();
        for (row, p) in case["intervals"].as_array().unwrap().iter().zip(expected) {
            let v: Vec<f64> = row.as_array().unwrap().iter().map(|x| x.as_f64().unwrap()).collect();
            match case["kind"].as_str().unwrap() {
                "two-arm" => s.update((v[0], v[1]), (v[2], v[3]), case["margin"].as_f64().unwrap()),
                _ => s.update_bound((v[0], v[1]), case["p0"].as_f64().unwrap()),
            }
            let p = p.as_f64().unwrap();
            assert!(close(s.p_value, p), "{}: {} vs SciPy {p}", case["name"], s.p_value);
        }
        assert!(s.p_value < 0.05, "{}: each case ends rejecting", case["name"]);
    }
}

#[test]
fn no_events_or_one_empty_arm_leave_the_test_untouched() {
    let mut s = SequentialState::default();
    s.update((100.0, 0.0), (900.0, 0.0), 1.0);
    s.update((0.0, 0.0), (900.0, 5.0), 1.0);
    assert_eq!(s.p_value, 1.0);
    assert!(s.log_e_value().abs() < 1e-12);
    assert_eq!(s.baseline_events, 5.0);
}

#[test]
fn a_canary_with_a_fair_share_of_events_is_not_rejected() {
    let mut s = SequentialState::default();
    for _ in 0..50 {
        s.update((100.0, 1.0), (900.0, 9.0), 1.0);
    }
    assert!(s.p_value > 0.5, "p = {}", s.p_value);
}

#[test]
fn fewer_canary_events_than_its_share_is_never_evidence_of_regression() {
    let mut s = SequentialState::default();
    for _ in 0..100 {
        s.update((500.0, 1.0), (500.0, 10.0), 1.0);
    }
    assert!(s.p_value > 0.9, "one-sided: an improvement is not a regression (p = {})", s.p_value);
}

#[test]
fn the_share_may_change_between_intervals() {
    // 10% then 50% canary traffic, both with a 3x error rate.
    let mut s = SequentialState::default();
    for _ in 0..10 {
        s.update((100.0, 3.0), (900.0, 9.0), 1.0);
    }
    let at_10 = s.p_value;
    for _ in 0..10 {
        s.update((500.0, 15.0), (500.0, 5.0), 1.0);
    }
    assert!(s.p_value < at_10 && s.p_value < 1e-6, "{at_10} then {}", s.p_value);
}

#[test]
fn a_margin_tolerates_a_canary_within_it_and_rejects_one_beyond() {
    // The canary's error rate is 1.4x the baseline's: a regression without a margin, within 1.5x.
    let (mut strict, mut lenient, mut beyond) =
        (SequentialState::default(), SequentialState::default(), SequentialState::default());
    for _ in 0..200 {
        strict.update((1000.0, 14.0), (1000.0, 10.0), 1.0);
        lenient.update((1000.0, 14.0), (1000.0, 10.0), 1.5);
        beyond.update((1000.0, 20.0), (1000.0, 10.0), 1.5);
    }
    assert!(strict.p_value < 1e-6, "{}", strict.p_value);
    assert!(lenient.p_value > 0.5, "{}", lenient.p_value);
    assert!(beyond.p_value < 1e-6, "{}", beyond.p_value);
}

#[test]
fn a_bound_rejects_only_a_canary_above_it() {
    let (mut above, mut below) = (SequentialState::default(), SequentialState::default());
    for _ in 0..100 {
        above.update_bound((100.0, 8.0), 0.05);
        below.update_bound((100.0, 4.0), 0.05);
    }
    assert!(above.p_value < 1e-3, "{}", above.p_value);
    assert!(below.p_value > 0.5, "{}", below.p_value);
    assert_eq!(above.canary_requests, 10_000.0);
}

#[test]
fn the_null_share_follows_the_margin() {
    assert!((null_share(0.1, 1.0) - 0.1).abs() < 1e-15);
    // 10% of requests at 2x the baseline's rate: 0.2 / (0.2 + 0.9).
    assert!((null_share(0.1, 2.0) - 0.2 / 1.1).abs() < 1e-15);
}

proptest! {
    #[test]
    fn p_values_never_rise(
        rows in prop::collection::vec((0u32..2000, 0u32..60, 0u32..2000, 0u32..60), 1..40),
        margin in 1.0f64..3.0,
        p0 in 0.001f64..0.5,
    ) {
        let (mut two, mut one) = (SequentialState::default(), SequentialState::default());
        let (mut last_two, mut last_one) = (1.0, 1.0);
        for (cr, ce, br, be) in rows {
            let (cr, br) = (f64::from(cr), f64::from(br));
            let (ce, be) = (f64::from(ce).min(cr), f64::from(be).min(br));
            two.update((cr, ce), (br, be), margin);
            one.update_bound((cr, ce), p0);
            prop_assert!(two.p_value <= last_two && two.p_value >= 0.0);
            prop_assert!(one.p_value <= last_one && one.p_value >= 0.0);
            (last_two, last_one) = (two.p_value, one.p_value);
        }
    }
}
