//! The judge: turns canary and baseline samples into a verdict per metric, with the
//! evidence behind it. Pure: no I/O, no clock.

pub mod mann_whitney;
mod sample;
pub mod sequential;
mod test_kind;
mod verdict;

use serde::{Deserialize, Serialize};

pub use sample::{Histogram, Observation, Sample, SampleKind};
pub use test_kind::{DEFAULT_WINDOW, Direction, KAYENTA_TOLERANCE, TEST_NAMES, TestConfig};
pub use verdict::{ArmEvidence, Cumulative, Evidence, Outcome, Verdict};

use mann_whitney::Alternative;
use sequential::SequentialState;

/// Points per arm before a Mann-Whitney verdict is given.
const MIN_POINTS: usize = 5;

/// The running state a metric's test keeps between intervals.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
#[serde(rename_all = "camelCase")]
pub struct MetricState {
    /// Canary values of past intervals (Mann-Whitney).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub canary_history: Vec<f64>,
    /// Baseline values of past intervals (Mann-Whitney).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub baseline_history: Vec<f64>,
    /// Sequential test state.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sequential: Option<SequentialState>,
    /// Requests of each arm since the current step began: a sequential test needs
    /// `min_sample_size` of them before its step can pass.
    #[serde(default)]
    pub step_requests: (f64, f64),
}

impl MetricState {
    /// Starts counting a new step's evidence (the running test goes on).
    pub fn start_step(&mut self) {
        self.step_requests = (0.0, 0.0);
    }
}

/// Why an arm cannot be judged this interval.
#[derive(Clone, Debug)]
enum Short {
    /// No sample, or none that gives a value: counts towards the inconclusive limit.
    NoData(String),
    /// Fewer requests than the minimum: the step holds.
    TooFew(String),
}

impl Short {
    fn outcome(&self) -> Outcome {
        match self {
            Short::NoData(_) => Outcome::Inconclusive,
            Short::TooFew(_) => Outcome::Insufficient,
        }
    }

    fn reason(&self) -> String {
        match self {
            Short::NoData(r) | Short::TooFew(r) => r.clone(),
        }
    }
}

/// What the judge needs to know about a metric.
#[derive(Clone, Copy, Debug)]
pub struct MetricRule<'a> {
    /// The metric's name.
    pub name: &'a str,
    /// The test.
    pub test: &'a TestConfig,
    /// Quantile judged for histograms.
    pub quantile: Option<f64>,
    /// Requests per arm needed: in an interval for the point tests, since the step
    /// began for the sequential tests.
    pub min_sample_size: u64,
}

/// The value a sample stands for: a rate, a quantile or a mean.
pub fn arm_value(sample: &Sample, quantile: Option<f64>) -> Option<f64> {
    match sample {
        Sample::Counts { requests, events } => (*requests > 0.0).then(|| events / requests),
        Sample::Histogram(h) => h.quantile(quantile.unwrap_or(0.99)),
        Sample::Values { values } => {
            let finite: Vec<f64> = values.iter().copied().filter(|v| v.is_finite()).collect();
            (!finite.is_empty()).then(|| finite.iter().sum::<f64>() / finite.len() as f64)
        }
    }
}

/// What one arm's sample shows: its value, requests and events.
pub fn arm_evidence(sample: Option<&Sample>, quantile: Option<f64>) -> ArmEvidence {
    let Some(sample) = sample else { return ArmEvidence::default() };
    let value = arm_value(sample, quantile);
    match sample {
        Sample::Counts { requests, events } => {
            ArmEvidence { value, requests: Some(*requests), events: Some(*events), points: None, query: None }
        }
        Sample::Histogram(h) => {
            ArmEvidence { value, requests: Some(h.total()), events: None, points: None, query: None }
        }
        Sample::Values { values } => {
            ArmEvidence { value, requests: None, events: None, points: Some(values.len()), query: None }
        }
    }
}

/// Why an arm cannot be judged this interval, if it cannot.
fn shortfall(arm: &str, sample: Option<&Sample>, value: Option<f64>, min: u64) -> Option<Short> {
    let Some(sample) = sample else { return Some(Short::NoData(format!("no data for the {arm}"))) };
    if let Some(requests) = sample.requests()
        && requests < min as f64
    {
        return Some(Short::TooFew(format!(
            "{arm} served {requests:.0} requests, fewer than the {min} needed"
        )));
    }
    value.is_none().then(|| Short::NoData(format!("no usable {arm} value")))
}

/// Judges one metric for one interval, updating its running state.
pub fn judge(rule: MetricRule<'_>, obs: &Observation, state: &mut MetricState) -> Verdict {
    let mut evidence = Evidence {
        canary: arm_evidence(obs.canary.as_ref(), rule.quantile),
        baseline: arm_evidence(obs.baseline.as_ref(), rule.quantile),
        query: obs.query.clone(),
        ..Evidence::default()
    };
    let verdict = |outcome, reason: String, evidence| Verdict {
        metric: rule.name.to_string(),
        test: rule.test.name().to_string(),
        outcome,
        conclusive: false,
        reason,
        evidence,
    };
    if let Some(error) = &obs.error {
        return verdict(Outcome::Inconclusive, format!("no data: {error}"), evidence);
    }
    let (canary, baseline) = (evidence.canary.value, evidence.baseline.value);
    let canary_short = shortfall("canary", obs.canary.as_ref(), canary, rule.min_sample_size);
    let baseline_short = shortfall("baseline", obs.baseline.as_ref(), baseline, rule.min_sample_size);
    // Why a comparison of both arms cannot be judged, if it cannot.
    let either_short = canary_short.clone().or_else(|| baseline_short.clone());
    match rule.test {
        TestConfig::Threshold { min, max } => {
            let (Some(value), None) = (canary, &canary_short) else {
                let short = canary_short.unwrap_or(Short::NoData("no usable canary value".into()));
                return verdict(short.outcome(), short.reason(), evidence);
            };
            let (outcome, reason) = check_bounds("canary value", value, *min, *max);
            evidence.bound =
                if outcome == Outcome::Fail { max.filter(|m| value > *m).or(*min) } else { *max };
            verdict(outcome, reason, evidence)
        }
        TestConfig::Ratio { min, max } => {
            let (Some(c), Some(b), None) = (canary, baseline, &either_short) else {
                let short = either_short.unwrap_or(Short::NoData("no usable value".into()));
                return verdict(short.outcome(), short.reason(), evidence);
            };
            let ratio = ratio(c, b);
            // JSON has no infinity: a canary value over a zero baseline records no ratio.
            evidence.statistic = Some(ratio).filter(|r| r.is_finite());
            evidence.bound = *max;
            let (outcome, reason) = check_bounds("canary/baseline", ratio, *min, *max);
            verdict(outcome, reason, evidence)
        }
        TestConfig::MannWhitney { direction, max_effect, confidence, tolerance, window } => {
            let (Some(c), Some(b), None) = (canary, baseline, &either_short) else {
                let short = either_short.unwrap_or(Short::NoData("no usable value".into()));
                return verdict(short.outcome(), short.reason(), evidence);
            };
            push_bounded(&mut state.canary_history, c, *window);
            push_bounded(&mut state.baseline_history, b, *window);
            let test = KayentaRule {
                direction: *direction,
                max_effect: *max_effect,
                confidence: *confidence,
                tolerance: *tolerance,
            };
            judge_mann_whitney(state, &test, evidence, verdict)
        }
        TestConfig::Sequential { alpha, slower_than, margin, max } => {
            if let Some(why) = &obs.approximate {
                // The test's guarantee holds for exact counts only: skip, never guess.
                return verdict(
                    Outcome::Inconclusive,
                    format!("counts not exact, not taken by the sequential test: {why}"),
                    evidence,
                );
            }
            let test =
                SequentialTest { alpha: *alpha, slower_than: *slower_than, margin: *margin, max: *max };
            let shortfall =
                Shortfall { canary: canary_short, either: either_short, baseline: baseline_short };
            let SequentialVerdict { outcome, reason, conclusive } =
                judge_sequential(rule, &test, obs, state, &shortfall, &mut evidence);
            let mut v = verdict(outcome, reason, evidence);
            v.conclusive = conclusive;
            v
        }
    }
}

/// A sequential test's settings.
struct SequentialTest {
    alpha: f64,
    slower_than: Option<f64>,
    margin: Option<f64>,
    max: Option<f64>,
}

/// Why each arm, or the pair, cannot be judged this interval.
struct Shortfall {
    canary: Option<Short>,
    baseline: Option<Short>,
    either: Option<Short>,
}

/// What a sequential test compares.
enum Compared {
    /// The canary's share of the events, against its share of requests (with a margin).
    Arms { margin: f64 },
    /// The canary's events among its requests, against a bound on their probability.
    Bound { p0: f64, what: String },
}

/// A sequential test's verdict on one interval, before it is given the metric's name.
#[derive(Debug)]
struct SequentialVerdict {
    outcome: Outcome,
    /// One sentence a person can read.
    reason: String,
    /// A rejection: final, the always-valid p-value never rises again.
    conclusive: bool,
}

impl SequentialVerdict {
    fn open(outcome: Outcome, reason: impl Into<String>) -> SequentialVerdict {
        SequentialVerdict { outcome, reason: reason.into(), conclusive: false }
    }
}

/// One interval's counts, added to the running test.
struct Added {
    /// Why the step cannot pass yet: too few requests at this step.
    too_few: Option<String>,
    /// The running totals, in words.
    counts: String,
}

/// Why a latency test relative to the baseline cannot count slow requests yet.
const NO_SLOW_BOUND_YET: &str =
    "waiting for a baseline histogram with enough requests to fix the slow-request bound";

/// Runs one interval of a sequential test: adds the interval's counts to the running
/// e-process and says whether it rejects.
fn judge_sequential(
    rule: MetricRule<'_>,
    test: &SequentialTest,
    obs: &Observation,
    state: &mut MetricState,
    short: &Shortfall,
    evidence: &mut Evidence,
) -> SequentialVerdict {
    let quantile = rule.quantile.unwrap_or(0.99);
    let MetricState { sequential, step_requests, .. } = state;
    let seq = sequential.get_or_insert_with(SequentialState::default);
    let (canary_h, baseline_h) = (histogram(&obs.canary), histogram(&obs.baseline));
    let is_latency = canary_h.is_some() || baseline_h.is_some();
    if is_latency && seq.slower_than.is_none() {
        seq.slower_than = slow_request_bound(test, short, quantile, canary_h, baseline_h);
    }
    let adding = Adding {
        seq: &mut *seq,
        step_requests,
        obs,
        short,
        evidence: &mut *evidence,
        min: rule.min_sample_size as f64,
    };
    let added = match compared(test, quantile, is_latency) {
        Compared::Arms { margin } => adding.arms(margin),
        Compared::Bound { p0, what } => adding.bound(test, p0, &what),
    };
    let added = match added {
        Ok(added) => added,
        Err(verdict) => return verdict,
    };
    record_test(seq, test.alpha, evidence);
    conclude(seq, test.alpha, added)
}

fn histogram(sample: &Option<Sample>) -> Option<&Histogram> {
    match sample {
        Some(Sample::Histogram(h)) => Some(h),
        _ => None,
    }
}

/// The bound above which a request counts as slow, fixed once from the first histogram
/// that can fix it.
fn slow_request_bound(
    test: &SequentialTest,
    short: &Shortfall,
    quantile: f64,
    canary: Option<&Histogram>,
    baseline: Option<&Histogram>,
) -> Option<f64> {
    let baseline_ready = baseline.filter(|_| short.baseline.is_none());
    match (test.max, test.margin, test.slower_than) {
        (Some(max), _, _) => canary.and_then(|h| bucket_at_or_above(h, max)),
        (None, Some(k), _) => baseline_ready
            .and_then(|b| b.bucket_at_quantile(quantile).and_then(|bq| bucket_at_or_above(b, k * bq))),
        (None, None, Some(s)) => baseline.map(|b| snap_to_bucket(b, s)),
        (None, None, None) => baseline_ready.and_then(|b| b.bucket_at_quantile(quantile)),
    }
}

fn compared(test: &SequentialTest, quantile: f64, is_latency: bool) -> Compared {
    match (test.max, test.margin, is_latency) {
        (Some(max), _, false) => {
            Compared::Bound { p0: max, what: format!("errors against a bound of {max}") }
        }
        (Some(max), _, true) => Compared::Bound {
            p0: 1.0 - quantile,
            what: format!("requests slower than the p{} bound of {max} s", quantile * 100.0),
        },
        (None, Some(k), true) => Compared::Bound {
            p0: 1.0 - quantile,
            what: format!("requests slower than {k}x the baseline's p{}", quantile * 100.0),
        },
        (None, margin, _) => Compared::Arms { margin: margin.unwrap_or(1.0) },
    }
}

/// An arm's requests and events (errors, or requests slower than `slower_than`).
fn events(sample: &Option<Sample>, slower_than: Option<f64>) -> Option<(f64, f64)> {
    match sample {
        Some(Sample::Counts { requests, events }) => Some((*requests, *events)),
        Some(Sample::Histogram(h)) => slower_than.map(|b| (h.total(), h.count_above(b))),
        _ => None,
    }
}

/// Why the step cannot pass on `requests` of an arm, if it cannot.
fn step_short(arm: &str, requests: f64, min: f64) -> Option<String> {
    (requests < min).then(|| {
        format!("collecting evidence: the {arm} served {requests:.0} requests at this step, {min:.0} needed")
    })
}

/// A sequential test's running state, and the interval being added to it.
struct Adding<'a> {
    seq: &'a mut SequentialState,
    /// Requests of each arm since the step began.
    step_requests: &'a mut (f64, f64),
    obs: &'a Observation,
    short: &'a Shortfall,
    evidence: &'a mut Evidence,
    /// Requests per arm the step needs.
    min: f64,
}

impl Adding<'_> {
    /// Adds the interval's counts of both arms to a test of the canary's share of events.
    fn arms(self, margin: f64) -> Result<Added, SequentialVerdict> {
        let Adding { seq, step_requests, obs, short, evidence, min } = self;
        let (Some(c), Some(b)) =
            (events(&obs.canary, seq.slower_than), events(&obs.baseline, seq.slower_than))
        else {
            return Err(match &short.either {
                Some(Short::NoData(why)) => SequentialVerdict::open(Outcome::Inconclusive, why.clone()),
                _ => SequentialVerdict::open(Outcome::Insufficient, NO_SLOW_BOUND_YET),
            });
        };
        seq.update(c, b, margin);
        step_requests.0 += c.0;
        step_requests.1 += b.0;
        evidence.canary.events = Some(c.1);
        evidence.baseline.events = Some(b.1);
        let share = seq.canary_requests / (seq.canary_requests + seq.baseline_requests).max(1.0);
        let allowed = if margin > 1.0 {
            format!(", allowed up to {margin}x the baseline's rate")
        } else {
            String::new()
        };
        let counts = format!(
            "canary {:.0} of {:.0} events with {:.1}% of requests{allowed}",
            seq.canary_events,
            seq.canary_events + seq.baseline_events,
            share * 100.0
        );
        let too_few = step_short("canary", step_requests.0, min)
            .or_else(|| step_short("baseline", step_requests.1, min));
        Ok(Added { too_few, counts })
    }

    /// Adds the interval's canary counts to a test of the canary's events against a
    /// bound `p0` on their probability (`what` names the events).
    fn bound(self, test: &SequentialTest, p0: f64, what: &str) -> Result<Added, SequentialVerdict> {
        let Adding { seq, step_requests, obs, short, evidence, min } = self;
        let Some(c) = events(&obs.canary, seq.slower_than) else {
            return Err(match (&short.canary, test.margin) {
                (Some(Short::NoData(why)), _) => SequentialVerdict::open(Outcome::Inconclusive, why.clone()),
                (_, Some(_)) => SequentialVerdict::open(Outcome::Insufficient, NO_SLOW_BOUND_YET),
                _ => SequentialVerdict::open(
                    Outcome::Insufficient,
                    "no histogram bucket at or above the bound: cannot count slow requests",
                ),
            });
        };
        seq.update_bound(c, p0);
        step_requests.0 += c.0;
        evidence.canary.events = Some(c.1);
        let counts = format!(
            "canary {:.0} of {:.0} requests ({:.2}%) are {what}, {:.2}% allowed",
            seq.canary_events,
            seq.canary_requests,
            100.0 * seq.canary_events / seq.canary_requests.max(1.0),
            p0 * 100.0
        );
        Ok(Added { too_few: step_short("canary", step_requests.0, min), counts })
    }
}

/// The running test's state, as the verdict's evidence.
fn record_test(seq: &SequentialState, alpha: f64, evidence: &mut Evidence) {
    evidence.slower_than = seq.slower_than;
    evidence.statistic = Some(seq.log_e_value());
    evidence.p_value = Some(seq.p_value);
    evidence.bound = Some(alpha);
    evidence.cumulative = Some(Cumulative {
        canary_requests: seq.canary_requests,
        canary_events: seq.canary_events,
        baseline_requests: seq.baseline_requests,
        baseline_events: seq.baseline_events,
    });
}

/// A rejection fails conclusively; otherwise the step passes once it has the requests it
/// needs.
fn conclude(seq: &SequentialState, alpha: f64, added: Added) -> SequentialVerdict {
    let Added { too_few, counts } = added;
    if seq.p_value <= alpha {
        let reason =
            format!("regression: {counts}; always-valid p = {:.2e} <= alpha {alpha:.2e}", seq.p_value);
        return SequentialVerdict { outcome: Outcome::Fail, reason, conclusive: true };
    }
    match too_few {
        Some(why) => SequentialVerdict::open(Outcome::Insufficient, why),
        None => SequentialVerdict::open(
            Outcome::Pass,
            format!("no regression so far: {counts}; p = {:.3} > alpha {alpha:.2e}", seq.p_value),
        ),
    }
}

/// The smallest finite bucket bound at or above `bound`: requests above it are surely
/// slower than `bound`, so counting them never overstates the slow requests.
fn bucket_at_or_above(h: &Histogram, bound: f64) -> Option<f64> {
    h.buckets.iter().map(|b| b.0).filter(|le| le.is_finite() && *le >= bound).reduce(f64::min)
}

/// canary/baseline, with 0/0 as 1 (equal) and x/0 as infinity.
fn ratio(canary: f64, baseline: f64) -> f64 {
    match (canary, baseline) {
        (c, b) if b > 0.0 => c / b,
        (c, _) if c <= 0.0 => 1.0,
        _ => f64::INFINITY,
    }
}

fn check_bounds(what: &str, value: f64, min: Option<f64>, max: Option<f64>) -> (Outcome, String) {
    if let Some(max) = max
        && value > max
    {
        return (Outcome::Fail, format!("{what} {value:.4} > max {max}"));
    }
    if let Some(min) = min
        && value < min
    {
        return (Outcome::Fail, format!("{what} {value:.4} < min {min}"));
    }
    (Outcome::Pass, format!("{what} {value:.4} within bounds"))
}

fn push_bounded(history: &mut Vec<f64>, value: f64, window: usize) {
    history.push(value);
    if history.len() > window {
        history.drain(..history.len() - window);
    }
}

/// How Kayenta's NetflixACAJudge classifies a metric by Mann-Whitney.
struct KayentaRule {
    direction: Direction,
    max_effect: f64,
    confidence: f64,
    tolerance: f64,
}

/// The largest bucket bound at or below `bound` (requests above it count as slow); the
/// smallest bucket when none is that low. Both arms use the same bound, so the test
/// stays valid whichever bucket it is.
fn snap_to_bucket(h: &Histogram, bound: f64) -> f64 {
    let finite = || h.buckets.iter().map(|b| b.0).filter(|le| le.is_finite());
    finite().filter(|le| *le <= bound).reduce(f64::max).or_else(|| finite().reduce(f64::min)).unwrap_or(bound)
}

/// Kayenta's rule: higher when the shift interval's lower bound is above
/// `tolerance × |estimate|`, lower when its upper bound is below the negative of that;
/// and, as a guard against tiny shifts of tight series, the mean ratio must pass
/// `max_effect` (or `1 / max_effect`) as well.
fn judge_mann_whitney(
    state: &MetricState,
    rule: &KayentaRule,
    mut evidence: Evidence,
    verdict: impl Fn(Outcome, String, Evidence) -> Verdict,
) -> Verdict {
    let KayentaRule { direction, max_effect, confidence, tolerance } = *rule;
    let (c, b) = (&state.canary_history, &state.baseline_history);
    evidence.canary.points = Some(c.len());
    evidence.baseline.points = Some(b.len());
    if c.len() < MIN_POINTS {
        return verdict(
            Outcome::Inconclusive,
            format!("collecting points: {} of {MIN_POINTS} per arm", c.len()),
            evidence,
        );
    }
    let alternative = match direction {
        Direction::Increase => Alternative::Greater,
        Direction::Decrease => Alternative::Less,
        Direction::Either => Alternative::TwoSided,
    };
    let Some(r) = mann_whitney::compare(c, b, confidence, alternative) else {
        return verdict(Outcome::Pass, "canary and baseline series are identical".into(), evidence);
    };
    let mean = |v: &[f64]| v.iter().sum::<f64>() / v.len() as f64;
    let effect = ratio(mean(c), mean(b));
    evidence.statistic = Some(r.u);
    evidence.p_value = Some(r.p_value);
    evidence.interval = Some(r.interval);
    evidence.bound = Some(max_effect);
    let critical = tolerance * r.estimate.abs();
    let higher = r.interval.0 > critical && effect > max_effect;
    let lower = r.interval.1 < -critical && effect < 1.0 / max_effect;
    let failed = match direction {
        Direction::Increase => higher,
        Direction::Decrease => lower,
        Direction::Either => higher || lower,
    };
    let summary = format!(
        "shift {:.4} ({:.0}% CI [{:.4}, {:.4}], must clear ±{critical:.4}), mean ratio {effect:.3}, bound {max_effect}",
        r.estimate,
        confidence * 100.0,
        r.interval.0,
        r.interval.1
    );
    if failed {
        verdict(Outcome::Fail, format!("canary differs significantly: {summary}"), evidence)
    } else {
        verdict(Outcome::Pass, format!("no significant regression: {summary}"), evidence)
    }
}

#[cfg(test)]
#[path = "judge_tests.rs"]
mod tests;
