//! Anytime-valid mixture tests on event counts (errors, slow requests). The formulas, the
//! references and the reference values are written up in `docs/judge.md`.
//!
//! Every test here is one construction: per interval t, `s_t` successes out of
//! `s_t + f_t` trials whose probability of success is at most `θ0_t` under the null
//! hypothesis. For a log odds ratio δ ≥ 0 the interval's likelihood ratio is
//!
//! `L_t(δ) = (θ_t/θ0_t)^s_t · ((1−θ_t)/(1−θ0_t))^f_t`,  `θ_t = θ0_t e^δ / (θ0_t e^δ + 1 − θ0_t)`
//!
//! and the e-process is the mixture `Σ_j w_j Π_t L_t(δ_j)` over a discrete half-normal
//! prior on a grid of δ. A discrete mixture of likelihood-ratio martingales is exactly a
//! martingale under `θ = θ0` (and a supermartingale under any `θ ≤ θ0`, since the
//! alternatives lie above), so by Ville's inequality `p_n = min(p_{n−1}, 1/E_n)` is a
//! p-value valid however often it is looked at (Lindon, Sanden & Shirikian, "Rapid
//! Regression Detection in Software Deployments through Sequential Testing", KDD 2022,
//! with the null share allowed to change every interval).
//!
//! - **Canary against baseline** (`update`): the successes are the canary's events, the
//!   failures the baseline's; `θ0_t = ρ_t m / (ρ_t m + 1 − ρ_t)`, where `ρ_t` is the
//!   canary's share of the interval's requests and `m` the margin ("the canary's rate
//!   more than m× the baseline's"; 1 for "any worse").
//! - **A bound on the canary** (`update_bound`): the successes are the canary's events,
//!   the failures its other requests; `θ0 = p0` ("errors above 5%": p0 = 0.05).

use std::sync::LazyLock;

use serde::{Deserialize, Serialize};

/// Largest log odds ratio on the prior's grid (e^4 ≈ 55×).
const DELTA_MAX: f64 = 4.0;
/// Grid points of the prior.
const GRID_POINTS: usize = 201;
/// Scale of the half-normal prior on δ: centred on regressions of 1.5×–3×.
const PRIOR_SCALE: f64 = 1.0;

/// Running state of one sequential test, kept inside the rollout's state.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct SequentialState {
    /// `Σ_t log L_t(δ_j)` for each grid point δ_j. Persisted exactly but compactly, as
    /// base64 of the little-endian bytes: a rollout saves this every tick.
    #[serde(with = "exact_floats")]
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

/// Floats as base64 of their little-endian bytes: exact, and about half the size of
/// their shortest decimal forms. Plain JSON arrays are read too.
mod exact_floats {
    use base64::Engine as _;
    use base64::engine::general_purpose::STANDARD;
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(values: &[f64], s: S) -> Result<S::Ok, S::Error> {
        let bytes: Vec<u8> = values.iter().flat_map(|v| v.to_le_bytes()).collect();
        s.serialize_str(&STANDARD.encode(bytes))
    }

    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Repr {
        Text(String),
        List(Vec<f64>),
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<f64>, D::Error> {
        match Repr::deserialize(d)? {
            Repr::List(values) => Ok(values),
            Repr::Text(text) => {
                let bytes = STANDARD.decode(text).map_err(serde::de::Error::custom)?;
                if bytes.len() % 8 != 0 {
                    return Err(serde::de::Error::custom("not a whole number of 8-byte floats"));
                }
                Ok(bytes
                    .chunks_exact(8)
                    .map(|c| f64::from_le_bytes(c.try_into().unwrap_or([0; 8])))
                    .collect())
            }
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

/// The null share of events of the canary, whose share of requests is `rho`, when its
/// event rate is `margin` times the baseline's.
pub fn null_share(rho: f64, margin: f64) -> f64 {
    rho * margin / (rho * margin + 1.0 - rho)
}

impl SequentialState {
    /// Adds one interval: `successes` out of `successes + failures` trials with null
    /// probability `theta0`. Nothing to learn without trials, or from a degenerate null.
    fn add(&mut self, successes: f64, failures: f64, theta0: f64) {
        if successes + failures <= 0.0 || !(theta0 > 0.0 && theta0 < 1.0) {
            return;
        }
        for (j, acc) in self.log_lr.iter_mut().enumerate() {
            let e = grid_delta(j).exp();
            let theta = theta0 * e / (theta0 * e + 1.0 - theta0);
            *acc += successes * (theta / theta0).ln() + failures * ((1.0 - theta) / (1.0 - theta0)).ln();
        }
        self.p_value = self.p_value.min((-self.log_e_value()).exp().min(1.0));
    }

    /// Canary against baseline: adds one interval's `(requests, events)` of each arm.
    /// `margin` ≥ 1 is the rate ratio the canary may reach before it counts as worse.
    /// Intervals where an arm served no requests carry no information about the split.
    pub fn update(&mut self, canary: (f64, f64), baseline: (f64, f64), margin: f64) {
        let ((c_req, c_ev), (b_req, b_ev)) = (canary, baseline);
        self.canary_requests += c_req;
        self.baseline_requests += b_req;
        self.canary_events += c_ev;
        self.baseline_events += b_ev;
        if c_req <= 0.0 || b_req <= 0.0 {
            return;
        }
        self.add(c_ev, b_ev, null_share(c_req / (c_req + b_req), margin));
    }

    /// A bound on the canary alone: adds one interval's `(requests, events)`; under the
    /// null hypothesis an event's probability is at most `p0`.
    pub fn update_bound(&mut self, canary: (f64, f64), p0: f64) {
        let (requests, events) = canary;
        self.canary_requests += requests;
        self.canary_events += events;
        self.add(events, (requests - events).max(0.0), p0);
    }

    /// Natural log of the e-value (the mixture likelihood ratio) so far; the log keeps
    /// overwhelming evidence finite.
    pub fn log_e_value(&self) -> f64 {
        let terms: Vec<f64> = self.log_lr.iter().zip(LOG_PRIOR.iter()).map(|(l, w)| l + w).collect();
        log_sum_exp(&terms)
    }
}

#[cfg(test)]
#[path = "sequential_tests.rs"]
mod tests;
