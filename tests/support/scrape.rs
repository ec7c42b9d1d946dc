//! History written the way a real Prometheus would have scraped it: each pod is a target
//! scraped at its own phase and interval with jitter, its counters driven by Poisson
//! traffic, reset when the pod restarts, and series that appear mid-window (a pod added
//! late, an error series created by its first error). The simulator also keeps the
//! ground truth: the events each scrape showed, and those no scrape ever showed.

use std::collections::BTreeMap;
use std::fmt::Write;

use rand::rngs::StdRng;
use rand::{RngExt, SeedableRng};
use rand_distr::{Binomial, Distribution, Poisson};

/// Latency bucket bounds (seconds) of the simulated histogram, `+Inf` last.
pub const BUCKETS: [f64; 3] = [0.1, 0.5, f64::INFINITY];

/// One simulated pod (a scrape target).
#[derive(Clone, Debug)]
pub struct Pod {
    /// Namespace label.
    pub namespace: String,
    /// Workload label (the arm).
    pub workload: String,
    /// Pod name.
    pub pod: String,
    /// Requests per second.
    pub rate: f64,
    /// Chance that a request is an error.
    pub error_rate: f64,
    /// Share of requests slower than each finite bucket bound, by bucket.
    pub slow: [f64; 2],
    /// Scrape interval, seconds.
    pub scrape: f64,
    /// Jitter of each scrape, ± seconds.
    pub jitter: f64,
    /// When the pod starts (seconds since the history's origin).
    pub start: f64,
    /// When it goes away.
    pub end: f64,
    /// Restarts (counter resets), seconds since the origin.
    pub restarts: Vec<f64>,
    /// Whether the pod exports the latency histogram.
    pub histogram: bool,
}

/// Counts per series kind at one point: requests by code, and bucket counts.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct Counts {
    /// Successful requests.
    pub ok: u64,
    /// Errors (code 500).
    pub errors: u64,
    /// Cumulative bucket counts, as `BUCKETS`.
    pub buckets: [u64; 3],
}

impl Counts {
    fn add(&mut self, o: &Counts) {
        self.ok += o.ok;
        self.errors += o.errors;
        for (a, b) in self.buckets.iter_mut().zip(o.buckets) {
            *a += b;
        }
    }

    fn sub(&self, o: &Counts) -> Counts {
        Counts {
            ok: self.ok - o.ok,
            errors: self.errors - o.errors,
            buckets: [0, 1, 2].map(|i| self.buckets[i] - o.buckets[i]),
        }
    }

    /// All requests.
    pub fn requests(&self) -> u64 {
        self.ok + self.errors
    }
}

/// A scrape of one pod: when, the counters it showed (since the last restart), and the
/// pod's lifetime events up to then (what the truth counts).
#[derive(Clone, Debug)]
struct Scrape {
    at: f64,
    shown: Counts,
    lifetime: Counts,
    /// Whether any error had happened in this incarnation (the error series exists).
    has_errors: bool,
}

/// When a restart shows in the scraped series.
#[derive(Clone, Debug)]
struct ResetShown {
    /// The first scrape after the restart (every request and bucket series).
    first_scrape: Option<f64>,
    /// The first scrape after the restart that has the error series again, and the last
    /// scrape before the restart, if the error series existed before it.
    error_series: Option<(Option<f64>, f64)>,
}

/// A simulated pod's scrapes.
pub struct Scraped {
    /// The pod.
    pub pod: Pod,
    scrapes: Vec<Scrape>,
    /// Per restart, the events between the last scrape before it and the restart itself:
    /// no scrape ever shows them.
    pub unseen: Vec<(f64, Counts)>,
    shown_resets: Vec<ResetShown>,
}

/// Draws the pod's traffic and scrapes. `seed` makes it reproducible.
pub fn simulate(pod: Pod, seed: u64) -> Scraped {
    let mut rng = StdRng::seed_from_u64(seed);
    let phase = rng.random_range(0.0..pod.scrape);
    let mut times = Vec::new();
    let mut k = 0.0;
    loop {
        let t = pod.start + phase + k * pod.scrape + rng.random_range(-pod.jitter..=pod.jitter);
        if t > pod.end {
            break;
        }
        if t > pod.start {
            times.push(t);
        }
        k += 1.0;
    }
    // Points in time order: scrapes and restarts.
    let mut points: Vec<(f64, bool)> = times.iter().map(|t| (*t, false)).collect();
    points.extend(pod.restarts.iter().map(|t| (*t, true)));
    points.sort_by(|a, b| a.0.total_cmp(&b.0));
    let (mut shown, mut lifetime, mut unseen) = (Counts::default(), Counts::default(), Vec::new());
    let (mut last, mut since_scrape, mut has_errors) = (pod.start, Counts::default(), false);
    let mut scrapes: Vec<Scrape> = Vec::new();
    let mut shown_resets: Vec<ResetShown> = Vec::new();
    for (t, restart) in points {
        let inc = draw(&pod, t - last, &mut rng);
        last = t;
        shown.add(&inc);
        lifetime.add(&inc);
        since_scrape.add(&inc);
        has_errors |= inc.errors > 0;
        if restart {
            unseen.push((t, since_scrape));
            let last_scrape = scrapes.last().filter(|s| s.has_errors).map(|s| s.at);
            shown_resets
                .push(ResetShown { first_scrape: None, error_series: last_scrape.map(|at| (None, at)) });
            shown = Counts::default();
            has_errors = false;
        } else {
            for r in &mut shown_resets {
                r.first_scrape.get_or_insert(t);
                if let Some((back, _)) = &mut r.error_series
                    && has_errors
                {
                    back.get_or_insert(t);
                }
            }
            scrapes.push(Scrape { at: t, shown, lifetime, has_errors });
        }
        since_scrape = Counts::default();
    }
    Scraped { pod, scrapes, unseen, shown_resets }
}

fn draw(pod: &Pod, dt: f64, rng: &mut StdRng) -> Counts {
    let lambda = pod.rate * dt.max(0.0);
    let n = if lambda > 0.0 { Poisson::new(lambda).unwrap().sample(rng) as u64 } else { 0 };
    let binomial = |n: u64, p: f64, rng: &mut StdRng| {
        if n == 0 || p <= 0.0 { 0 } else { Binomial::new(n, p.min(1.0)).unwrap().sample(rng) }
    };
    let errors = binomial(n, pod.error_rate, rng);
    let above_first = binomial(n, pod.slow[0], rng);
    let above_second = binomial(above_first, pod.slow[1] / pod.slow[0].max(f64::MIN_POSITIVE), rng);
    Counts { ok: n - errors, errors, buckets: [n - above_first, n - above_second, n] }
}

impl Scraped {
    /// Whether a reset shows in `(from, to]` in the request series (`errors`: any code)
    /// or the bucket series: a series' first sample after a restart, if its sample before
    /// the restart is still within `lookback` seconds of the interval's start.
    pub fn reset_shows_between(&self, from: f64, to: f64, errors: bool, lookback: f64) -> bool {
        let inside = |t: Option<f64>| t.is_some_and(|t| t > from && t <= to);
        self.shown_resets.iter().any(|r| {
            inside(r.first_scrape)
                || (errors
                    && r.error_series.is_some_and(|(back, before)| inside(back) && before >= from - lookback))
        })
    }

    /// Lifetime events shown by the last scrape at or before `t` (zero before the first).
    pub fn seen_by(&self, t: f64) -> Counts {
        self.scrapes.iter().take_while(|s| s.at <= t).last().map_or(Counts::default(), |s| s.lifetime)
    }

    /// Events the scrapes show in `(from, to]`: the truth an exact source reports.
    pub fn seen_between(&self, from: f64, to: f64) -> Counts {
        self.seen_by(to).sub(&self.seen_by(from))
    }

    /// Events of restarts in `(from, to]` that no scrape showed, and whether there was one.
    pub fn unseen_between(&self, from: f64, to: f64) -> (Counts, bool) {
        let mut total = Counts::default();
        let mut any = false;
        for (_, c) in self.unseen.iter().filter(|(r, _)| *r > from && *r <= to) {
            total.add(c);
            any = true;
        }
        (total, any)
    }
}

/// Series name (with labels) → `(seconds, value)` points.
pub type Family = BTreeMap<String, Vec<(f64, f64)>>;

/// OpenMetrics text for the pods' scrapes, timestamps at `origin + t`.
pub fn openmetrics(pods: &[Scraped], origin: i64) -> String {
    let (mut requests, mut buckets) = (Family::new(), Family::new());
    for p in pods {
        let base = format!(
            "namespace=\"{}\",workload=\"{}\",pod=\"{}\"",
            p.pod.namespace, p.pod.workload, p.pod.pod
        );
        for s in &p.scrapes {
            requests.entry(format!("{base},code=\"200\"")).or_default().push((s.at, s.shown.ok as f64));
            if s.has_errors {
                requests
                    .entry(format!("{base},code=\"500\""))
                    .or_default()
                    .push((s.at, s.shown.errors as f64));
            }
            for (le, count) in BUCKETS.iter().zip(s.shown.buckets).filter(|_| p.pod.histogram) {
                let le = if le.is_finite() { le.to_string() } else { "+Inf".into() };
                buckets.entry(format!("{base},le=\"{le}\"")).or_default().push((s.at, count as f64));
            }
        }
    }
    let mut out = String::new();
    write_family(&mut out, "http_requests", "counter", "http_requests_total", &requests, origin);
    write_family(
        &mut out,
        "http_request_duration_seconds",
        "histogram",
        "http_request_duration_seconds_bucket",
        &buckets,
        origin,
    );
    out.push_str("# EOF\n");
    out
}

/// Writes one family; points of a series in time order.
pub fn write_family(out: &mut String, name: &str, kind: &str, sample: &str, series: &Family, origin: i64) {
    let _ = writeln!(out, "# TYPE {name} {kind}");
    for (labels, points) in series {
        for (t, v) in points {
            let _ = writeln!(out, "{sample}{{{labels}}} {v} {:.3}", origin as f64 + t);
        }
    }
}
