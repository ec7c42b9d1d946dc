//! Mann-Whitney U test with Kayenta's confidence interval on the shift.
//!
//! p-values: exact (by counting rank arrangements) for small samples without ties, as R
//! and SciPy do; otherwise the normal approximation with tie and continuity correction.
//! statrs 0.19 is not used here: its exact p-values are wrong when len(x) ≤ len(y).
//! The shift interval follows R's `wilcox.test(conf.int = TRUE, exact = FALSE)` (the
//! method of Kayenta's NetflixACAJudge); the estimate is the Hodges–Lehmann median of
//! pairwise differences.

use std::collections::HashMap;
use std::sync::{Arc, LazyLock, Mutex};

use statrs::distribution::{ContinuousCDF, Normal};

/// Samples below which (each arm) the exact distribution is used when there are no ties.
const EXACT_LIMIT: usize = 50;

/// Which alternative a p-value is for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Alternative {
    /// x differs from y.
    TwoSided,
    /// x is stochastically greater than y.
    Greater,
    /// x is stochastically less than y.
    Less,
}

/// Result of a comparison of x (canary) against y (baseline).
#[derive(Clone, Debug, PartialEq)]
pub struct MannWhitney {
    /// U statistic of x.
    pub u: f64,
    /// p-value for the requested alternative.
    pub p_value: f64,
    /// Hodges–Lehmann estimate of the shift x − y.
    pub estimate: f64,
    /// Confidence interval of the shift (two-sided).
    pub interval: (f64, f64),
}

/// Average ranks (1-based) of `values`, ties sharing their mean rank.
fn ranks(values: &[f64]) -> Vec<f64> {
    let mut order: Vec<usize> = (0..values.len()).collect();
    order.sort_by(|&a, &b| values[a].total_cmp(&values[b]));
    let mut out = vec![0.0; values.len()];
    let mut i = 0;
    while i < order.len() {
        let mut j = i;
        while j + 1 < order.len() && values[order[j + 1]] == values[order[i]] {
            j += 1;
        }
        let rank = (i + j) as f64 / 2.0 + 1.0;
        for &k in &order[i..=j] {
            out[k] = rank;
        }
        i = j + 1;
    }
    out
}

/// Sizes of the groups of tied values.
fn tie_groups(values: &[f64]) -> Vec<f64> {
    let mut sorted = values.to_vec();
    sorted.sort_by(f64::total_cmp);
    sorted.chunk_by(|a, b| a == b).map(|g| g.len() as f64).collect()
}

fn u_statistic(x: &[f64], y: &[f64]) -> f64 {
    let all: Vec<f64> = x.iter().chain(y).copied().collect();
    let r = ranks(&all);
    let nx = x.len() as f64;
    r[..x.len()].iter().sum::<f64>() - nx * (nx + 1.0) / 2.0
}

/// σ of U under H0 with the tie correction.
fn sigma(nx: f64, ny: f64, ties: &[f64]) -> f64 {
    let n = nx + ny;
    let tie_term: f64 = ties.iter().map(|t| t * t * t - t).sum::<f64>() / (n * (n - 1.0));
    ((nx * ny / 12.0) * ((n + 1.0) - tie_term)).sqrt()
}

fn normal_tail(z: f64) -> f64 {
    Normal::standard().sf(z)
}

/// Exact P(U ≤ u) for sizes (m, n) without ties, from the cached distribution.
fn exact_cdf(u: f64, m: usize, n: usize) -> f64 {
    let cdf = exact_distribution(m, n);
    let upto = u.floor().max(0.0) as usize;
    cdf.get(upto.min(cdf.len().saturating_sub(1))).copied().unwrap_or(if u < 0.0 { 0.0 } else { 1.0 })
}

/// The exact distributions computed so far, by sizes: a policy's window fixes the sizes,
/// so each is computed once rather than at every judgement (O(m·n·mn) each).
static EXACT: LazyLock<Mutex<ExactCache>> = LazyLock::new(Default::default);

/// Cumulative exact distributions by (m, n).
type ExactCache = HashMap<(usize, usize), Arc<Vec<f64>>>;

/// Distributions kept at most (sizes below `EXACT_LIMIT`: at most 2,401 floats each).
const EXACT_CACHE: usize = 64;

/// P(U ≤ k) for k = 0..=m·n.
fn exact_distribution(m: usize, n: usize) -> Arc<Vec<f64>> {
    let mut cache = EXACT.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
    if let Some(cdf) = cache.get(&(m, n)) {
        return cdf.clone();
    }
    let counts = exact_counts(m, n);
    let total: f64 = counts.iter().sum();
    let mut running = 0.0;
    let cdf: Arc<Vec<f64>> = Arc::new(
        counts
            .iter()
            .map(|c| {
                running += c;
                running / total
            })
            .collect(),
    );
    if cache.len() >= EXACT_CACHE {
        cache.clear();
    }
    cache.insert((m, n), cdf.clone());
    cdf
}

/// Arrangements with U = k, for k = 0..=m·n.
fn exact_counts(m: usize, n: usize) -> Vec<f64> {
    // counts[k] = arrangements with U = k, built up one x at a time (Mann & Whitney's recursion).
    let max_u = m * n;
    let mut table = vec![vec![0.0_f64; max_u + 1]; n + 1];
    for row in table.iter_mut() {
        row[0] = 1.0;
    }
    for _ in 1..=m {
        let mut next = vec![vec![0.0_f64; max_u + 1]; n + 1];
        for j in 0..=n {
            for k in 0..=max_u {
                // The largest element is an x (adds j to U) or a y (j − 1 y's remain).
                let with_x = if k >= j { table[j][k - j] } else { 0.0 };
                let with_y = if j > 0 { next[j - 1][k] } else { 0.0 };
                next[j][k] = with_x + with_y;
            }
        }
        table = next;
    }
    table.swap_remove(n)
}

/// p-value of U for `x` against `y`.
pub fn p_value(x: &[f64], y: &[f64], alternative: Alternative) -> f64 {
    let (nx, ny) = (x.len() as f64, y.len() as f64);
    let u = u_statistic(x, y);
    let all: Vec<f64> = x.iter().chain(y).copied().collect();
    let ties = tie_groups(&all);
    let has_ties = ties.iter().any(|&t| t > 1.0);
    if !has_ties && x.len() < EXACT_LIMIT && y.len() < EXACT_LIMIT {
        let (m, n) = (x.len(), y.len());
        let greater = 1.0 - exact_cdf(u - 1.0, m, n); // P(U ≥ u)
        let less = exact_cdf(u, m, n); // P(U ≤ u)
        return match alternative {
            Alternative::Greater => greater,
            Alternative::Less => less,
            Alternative::TwoSided => (2.0 * greater.min(less)).min(1.0),
        };
    }
    let mean = nx * ny / 2.0;
    let s = sigma(nx, ny, &ties);
    if s == 0.0 {
        return 1.0;
    }
    let d = u - mean;
    match alternative {
        Alternative::Greater => normal_tail((d - 0.5) / s),
        Alternative::Less => 1.0 - normal_tail((d + 0.5) / s),
        Alternative::TwoSided => (2.0 * normal_tail((d.abs() - 0.5) / s)).min(1.0),
    }
}

/// Hodges–Lehmann estimate: the median of all pairwise differences x_i − y_j, by
/// selection (linear in the m·n differences, no sort).
pub fn hodges_lehmann(x: &[f64], y: &[f64]) -> f64 {
    let mut d: Vec<f64> = x.iter().flat_map(|a| y.iter().map(move |b| a - b)).collect();
    let n = d.len();
    if n == 0 {
        return f64::NAN;
    }
    let (_, &mut upper, _) = d.select_nth_unstable_by(n / 2, f64::total_cmp);
    if n % 2 == 1 {
        return upper;
    }
    // The lower middle is the largest of the half below the upper one.
    let lower = d[..n / 2].iter().copied().fold(f64::NEG_INFINITY, f64::max);
    (lower + upper) / 2.0
}

/// R's `wdiff`: the continuity-corrected normal statistic of x − d against y, minus `zq`.
/// `xs` and `ys` are sorted: one merge finds U and the ties, O(m + n), no allocation.
fn wdiff(xs: &[f64], ys: &[f64], d: f64, zq: f64) -> f64 {
    let (nx, ny) = (xs.len() as f64, ys.len() as f64);
    let (mut i, mut j, mut below) = (0, 0, 0usize);
    let (mut x_ranks, mut tie_term) = (0.0, 0.0);
    while i < xs.len() || j < ys.len() {
        let next_x = xs.get(i).map(|v| v - d);
        let v = match (next_x, ys.get(j)) {
            (Some(a), Some(&b)) => a.min(b),
            (Some(a), None) => a,
            (None, Some(&b)) => b,
            (None, None) => break,
        };
        let cx = xs[i..].iter().take_while(|&&a| a - d == v).count();
        let cy = ys[j..].iter().take_while(|&&b| b == v).count();
        let t = (cx + cy) as f64;
        x_ranks += cx as f64 * (below as f64 + (t + 1.0) / 2.0);
        tie_term += t * t * t - t;
        below += cx + cy;
        (i, j) = (i + cx, j + cy);
    }
    let n = nx + ny;
    let s = ((nx * ny / 12.0) * ((n + 1.0) - tie_term / (n * (n - 1.0)))).sqrt();
    let dz = x_ranks - nx * (nx + 1.0) / 2.0 - nx * ny / 2.0;
    let correction = 0.5 * dz.signum();
    (dz - correction) / s - zq
}

/// The root of the decreasing step function `wdiff(·, zq)` on [min, max], as R's
/// `uniroot` finds it: the boundary when it does not change sign, else its jump point,
/// bisected until the bracket holds no float between its ends (at most ~64 steps).
fn root(xs: &[f64], ys: &[f64], lo: f64, hi: f64, zq: f64) -> f64 {
    if wdiff(xs, ys, lo, zq) <= 0.0 {
        return lo;
    }
    if wdiff(xs, ys, hi, zq) >= 0.0 {
        return hi;
    }
    let (mut a, mut b) = (lo, hi);
    for _ in 0..200 {
        let mid = (a + b) / 2.0;
        if mid <= a || mid >= b {
            break;
        }
        if wdiff(xs, ys, mid, zq) > 0.0 {
            a = mid;
        } else {
            b = mid;
        }
    }
    (a + b) / 2.0
}

/// Compares `x` (canary) with `y` (baseline): p-value for `alternative`, the shift
/// estimate and its two-sided interval at `confidence`. Needs two values per arm.
pub fn compare(x: &[f64], y: &[f64], confidence: f64, alternative: Alternative) -> Option<MannWhitney> {
    if x.len() < 2 || y.len() < 2 {
        return None;
    }
    let all: Vec<f64> = x.iter().chain(y).copied().collect();
    if sigma(x.len() as f64, y.len() as f64, &tie_groups(&all)) == 0.0 {
        return None;
    }
    let lo =
        x.iter().copied().fold(f64::INFINITY, f64::min) - y.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    let hi =
        x.iter().copied().fold(f64::NEG_INFINITY, f64::max) - y.iter().copied().fold(f64::INFINITY, f64::min);
    let alpha = 1.0 - confidence;
    let zq = Normal::standard().inverse_cdf(1.0 - alpha / 2.0);
    let (mut xs, mut ys) = (x.to_vec(), y.to_vec());
    xs.sort_by(f64::total_cmp);
    ys.sort_by(f64::total_cmp);
    let interval = (root(&xs, &ys, lo, hi, zq), root(&xs, &ys, lo, hi, -zq));
    Some(MannWhitney {
        u: u_statistic(x, y),
        p_value: p_value(x, y, alternative),
        estimate: hodges_lehmann(x, y),
        interval,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn close(a: f64, b: f64) -> bool {
        ((a - b) / b).abs() < 1e-6
    }

    /// R's `uniroot` stops within `tol = .Machine$double.eps^0.25` ≈ 1.22e-4 of a root; this
    /// code bisects to machine precision. Both find the same jump of the same step
    /// function, so they agree within R's tolerance.
    const R_TOLERANCE: f64 = 1.25e-4;

    #[test]
    fn intervals_and_estimates_tie_out_with_rs_wilcox_test() {
        // tests/data/vectors/mann_whitney.R: R's wilcox.test(conf.int = TRUE, exact = FALSE).
        let vectors: serde_json::Value =
            serde_json::from_str(include_str!("../../tests/data/vectors/mann_whitney.json")).unwrap();
        let floats = |v: &serde_json::Value| -> Vec<f64> {
            v.as_array().unwrap().iter().map(|x| x.as_f64().unwrap()).collect()
        };
        let mut worst: f64 = 0.0;
        for case in vectors["cases"].as_array().unwrap() {
            let (x, y) = (floats(&case["x"]), floats(&case["y"]));
            let confidence = case["confidence"].as_f64().unwrap();
            let r = compare(&x, &y, confidence, Alternative::TwoSided).unwrap();
            let expected = floats(&case["interval"]);
            for (ours, theirs) in [(r.interval.0, expected[0]), (r.interval.1, expected[1])] {
                worst = worst.max((ours - theirs).abs());
                assert!(
                    (ours - theirs).abs() <= R_TOLERANCE,
                    "{} at {confidence}: {:?} vs R {expected:?}",
                    case["name"],
                    r.interval
                );
            }
            // R's asymptotic estimate is a root of the same step function at zero: any point
            // between the two middle pairwise differences (one point when their count is
            // odd). Ours is the Hodges-Lehmann median, the midpoint of the two.
            let mut d: Vec<f64> = x.iter().flat_map(|a| y.iter().map(move |b| a - b)).collect();
            d.sort_by(f64::total_cmp);
            let (lo, hi) = (d[(d.len() - 1) / 2], d[d.len() / 2]);
            let estimate = case["estimate"].as_f64().unwrap();
            assert!(
                estimate >= lo - R_TOLERANCE && estimate <= hi + R_TOLERANCE,
                "{}: R's {estimate} not in [{lo}, {hi}]",
                case["name"]
            );
            assert!((r.estimate - (lo + hi) / 2.0).abs() < 1e-12, "{}", case["name"]);
        }
        assert!(worst > 0.0, "the root finder ran: R's answers are not exact");
    }

    #[test]
    fn the_interval_widens_with_the_confidence() {
        let x = [3.1, 2.2, 5.5, 4.0, 6.1, 7.3, 1.9];
        let y = [1.0, 2.2, 0.5, 3.3, 2.8];
        let at_95 = compare(&x, &y, 0.95, Alternative::TwoSided).unwrap().interval;
        let at_98 = compare(&x, &y, 0.98, Alternative::TwoSided).unwrap().interval;
        assert!(at_98.0 < at_95.0 && at_98.1 > at_95.1, "{at_95:?} vs {at_98:?}");
        // Both inside the search range (min and max pairwise difference): the root finder decided.
        assert!(at_98.0 > 1.9 - 3.3 && at_98.1 < 7.3 - 0.5);
    }

    #[test]
    fn kayenta_reference_interval_and_estimate() {
        // Kayenta MannWhitneySuite: x = [10, 20, 30, 40], y = [1, 2, 3, 4].
        let r =
            compare(&[10.0, 20.0, 30.0, 40.0], &[1.0, 2.0, 3.0, 4.0], 0.98, Alternative::TwoSided).unwrap();
        assert!(close(r.interval.0, 6.0) && close(r.interval.1, 39.0), "{:?}", r.interval);
        assert!(close(r.estimate, 22.5));
    }

    #[test]
    fn small_samples_use_the_exact_distribution_where_statrs_does_not() {
        // statrs 0.19 gives 1.0 here; the exact two-sided value is 2/70.
        let p = p_value(&[1.0, 2.0, 3.0, 4.0], &[5.0, 6.0, 7.0, 8.0], Alternative::TwoSided);
        assert!(close(p, 0.02857142857142857), "p = {p}");
        // len(x) > len(y), one-sided, checked against SciPy's exact method.
        let p = p_value(&[5.1, 6.3, 7.7, 8.2, 9.9], &[1.2, 2.4, 3.3, 4.8], Alternative::Greater);
        assert!(close(p, 0.007936507936507936), "p = {p}");
    }

    #[test]
    fn ties_use_the_corrected_normal_approximation() {
        // SciPy mannwhitneyu(method="asymptotic", use_continuity=True).
        let x = [3.1, 2.2, 5.5, 4.0, 6.1];
        let y = [1.0, 2.2, 0.5, 3.3];
        assert!(close(p_value(&x, &y, Alternative::TwoSided), 0.08509993251567075));
        assert!(close(p_value(&x, &y, Alternative::Greater), 0.04254996625783537));
        let x = [1.0, 2.0, 2.0, 3.0, 3.0, 3.0, 4.0, 5.0, 9.0, 10.0, 12.0];
        let y = [2.0, 3.0, 4.0, 4.0, 5.0, 6.0, 7.0, 8.0, 8.0, 8.0, 11.0, 13.0, 14.0];
        assert!(close(p_value(&x, &y, Alternative::TwoSided), 0.11591175034582159));
        assert!(close(p_value(&x, &y, Alternative::Greater), 0.9484910586085145));
        let x = [0.12, 0.15, 0.11, 0.19, 0.22, 0.14];
        let y = [0.10, 0.09, 0.13, 0.08, 0.11, 0.12, 0.10];
        assert!(close(p_value(&x, &y, Alternative::Greater), 0.008968481923285197));
    }

    #[test]
    fn identical_arms_give_no_comparison() {
        assert_eq!(compare(&[1.0, 1.0, 1.0], &[1.0, 1.0], 0.98, Alternative::TwoSided), None);
        assert_eq!(compare(&[1.0], &[1.0, 2.0], 0.98, Alternative::TwoSided), None);
    }
}
