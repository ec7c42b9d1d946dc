//! Anytime-valid mixture tests on event counts (errors, slow requests).
//!
//! Each event comes from the canary or the baseline. If the canary is no worse, the
//! chance that an event is the canary's equals the canary's share of requests, ρ. The
//! test accumulates, per interval t with share ρ_t and event counts (x_c, x_b), the
//! likelihood ratio of a log rate ratio δ ≥ 0 (Lindon & Malek, NeurIPS 2022, generalised
//! to a share that changes with the traffic step):
//!
//! `L_t(δ) = (θ_t/ρ_t)^x_c · ((1−θ_t)/(1−ρ_t))^x_b`,  `θ_t = ρ_t e^δ / (ρ_t e^δ + 1 − ρ_t)`
//!
//! and mixes `Π_t L_t(δ)` over a prior on δ. The prior is discrete (a half-normal on a
//! grid), so the mixture is exactly a mixture of likelihood-ratio martingales: its
//! expectation under "canary no worse" is at most 1 at every interval, and by Ville's
//! inequality `p_n = min(p_{n−1}, 1/E_n)` is a p-value valid under continuous peeking.

use std::sync::LazyLock;

use serde::{Deserialize, Serialize};
use statrs::function::gamma::ln_gamma;

/// Largest log rate ratio on the prior's grid (e^4 ≈ 55× the baseline's rate).
const DELTA_MAX: f64 = 4.0;
/// Grid points of the prior.
const GRID_POINTS: usize = 201;
/// Scale of the half-normal prior on δ: centred on regressions of 1.5×–3×.
const PRIOR_SCALE: f64 = 1.0;

/// Running state of one sequential test, kept inside the rollout's state.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct SequentialState {
    /// `Σ_t log L_t(δ_j)` for each grid point δ_j.
    log_lr: Vec<f64>,
    /// The always-valid p-value so far.
    pub p_value: f64,
    /// Canary events counted so far.
    pub canary_events: f64,
    /// Baseline events counted so far.
    pub baseline_events: f64,
    /// Canary requests counted so far.
    pub canary_requests: f64,
    /// Baseline requests counted so far.
    pub baseline_requests: f64,
    /// For latency: the bucket bound (seconds) above which a request is an event.
    pub slower_than: Option<f64>,
}

impl Default for SequentialState {
    fn default() -> Self {
        Self {
            log_lr: vec![0.0; GRID_POINTS],
            p_value: 1.0,
            canary_events: 0.0,
            baseline_events: 0.0,
            canary_requests: 0.0,
            baseline_requests: 0.0,
            slower_than: None,
        }
    }
}

fn grid_delta(j: usize) -> f64 {
    DELTA_MAX * j as f64 / (GRID_POINTS - 1) as f64
}

/// Log prior weights of the grid points (half-normal, normalised to sum 1), computed once.
static LOG_PRIOR: LazyLock<Vec<f64>> = LazyLock::new(|| {
    let raw: Vec<f64> = (0..GRID_POINTS).map(|j| -0.5 * (grid_delta(j) / PRIOR_SCALE).powi(2)).collect();
    let norm = log_sum_exp(&raw);
    raw.into_iter().map(|w| w - norm).collect()
});

fn log_sum_exp(xs: &[f64]) -> f64 {
    let max = xs.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    if max == f64::NEG_INFINITY {
        return max;
    }
    max + xs.iter().map(|x| (x - max).exp()).sum::<f64>().ln()
}

impl SequentialState {
    /// Adds one interval: events and requests of each arm. Intervals where an arm served
    /// no requests carry no information about the split and change nothing.
    pub fn update(&mut self, canary: (f64, f64), baseline: (f64, f64)) {
        let ((c_req, c_ev), (b_req, b_ev)) = (canary, baseline);
        self.canary_requests += c_req;
        self.baseline_requests += b_req;
        self.canary_events += c_ev;
        self.baseline_events += b_ev;
        if c_req <= 0.0 || b_req <= 0.0 || c_ev + b_ev <= 0.0 {
            return;
        }
        let rho = c_req / (c_req + b_req);
        for (j, acc) in self.log_lr.iter_mut().enumerate() {
            let e = grid_delta(j).exp();
            let theta = rho * e / (rho * e + 1.0 - rho);
            *acc += c_ev * (theta / rho).ln() + b_ev * ((1.0 - theta) / (1.0 - rho)).ln();
        }
        self.p_value = self.p_value.min((-self.log_e_value()).exp().min(1.0));
    }

    /// Natural log of the e-value (the mixture likelihood ratio) so far; the log keeps
    /// overwhelming evidence finite.
    pub fn log_e_value(&self) -> f64 {
        let terms: Vec<f64> = self.log_lr.iter().zip(LOG_PRIOR.iter()).map(|(l, w)| l + w).collect();
        log_sum_exp(&terms)
    }
}

/// Log Bayes factor of the Dirichlet-multinomial mixture for counts `x` under fixed
/// category probabilities `rho`, with a Dirichlet(k·ρ) prior (Lindon & Malek):
/// `ln[ B(kρ + x) / B(kρ) ] − Σ x_i ln ρ_i`.
pub fn dirichlet_log_bayes_factor(x: &[f64], rho: &[f64], k: f64) -> f64 {
    let ln_beta = |a: &[f64]| a.iter().map(|&v| ln_gamma(v)).sum::<f64>() - ln_gamma(a.iter().sum());
    let prior: Vec<f64> = rho.iter().map(|r| k * r).collect();
    let posterior: Vec<f64> = prior.iter().zip(x).map(|(a, n)| a + n).collect();
    ln_beta(&posterior) - ln_beta(&prior) - x.iter().zip(rho).map(|(n, r)| n * r.ln()).sum::<f64>()
}

/// Always-valid p-value of counts `x` under `rho` (a single look): `min(1, 1/BF)`.
pub fn dirichlet_p_value(x: &[f64], rho: &[f64], k: f64) -> f64 {
    (-dirichlet_log_bayes_factor(x, rho, k)).exp().min(1.0)
}

#[cfg(test)]
#[path = "sequential_tests.rs"]
mod tests;
