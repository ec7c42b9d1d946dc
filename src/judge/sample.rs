//! Raw measurements of one arm over one interval, as metric sources deliver them.

use serde::{Deserialize, Serialize};

/// What kind of measurement a metric yields; decides which tests apply.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq)]
#[serde(rename_all = "kebab-case")]
pub enum SampleKind {
    /// Events out of requests (errors).
    Counts,
    /// A latency histogram.
    Histogram,
    /// Gauge values (CPU, memory, any inline query).
    Values,
}

/// One arm's measurement for one interval. Absence (`None` where a `Sample` is expected)
/// means "no data" and is never read as zero.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(tag = "kind", rename_all = "kebab-case")]
pub enum Sample {
    /// Requests served and events (errors) among them, during the interval.
    Counts {
        /// Requests in the interval.
        requests: f64,
        /// Events (errors) in the interval.
        events: f64,
    },
    /// Latency histogram increments during the interval.
    Histogram(Histogram),
    /// Gauge readings (per pod or per scrape) during the interval.
    Values {
        /// The readings.
        values: Vec<f64>,
    },
}

impl Sample {
    /// The kind of this sample.
    pub fn kind(&self) -> SampleKind {
        match self {
            Sample::Counts { .. } => SampleKind::Counts,
            Sample::Histogram(_) => SampleKind::Histogram,
            Sample::Values { .. } => SampleKind::Values,
        }
    }

    /// Requests behind the sample, where it counts requests.
    pub fn requests(&self) -> Option<f64> {
        match self {
            Sample::Counts { requests, .. } => Some(*requests),
            Sample::Histogram(h) => Some(h.total()),
            Sample::Values { .. } => None,
        }
    }
}

/// Cumulative histogram buckets (Prometheus `le` semantics), sorted by bound, the last
/// being `+Inf`.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
pub struct Histogram {
    /// `(upper bound in seconds, cumulative count)`.
    pub buckets: Vec<(f64, f64)>,
}

impl Histogram {
    /// Observations in the histogram.
    pub fn total(&self) -> f64 {
        self.buckets.last().map_or(0.0, |b| b.1)
    }

    /// Observations strictly above `bound`, which should be one of the bucket bounds;
    /// otherwise the next bucket bound above it is used.
    pub fn count_above(&self, bound: f64) -> f64 {
        let at_or_below = self.buckets.iter().filter(|(le, _)| *le <= bound).map(|b| b.1).fold(0.0, f64::max);
        (self.total() - at_or_below).max(0.0)
    }

    /// The smallest finite bucket bound at or above the `q` quantile.
    pub fn bucket_at_quantile(&self, q: f64) -> Option<f64> {
        let rank = q * self.total();
        self.buckets.iter().find(|(le, c)| le.is_finite() && *c >= rank).map(|b| b.0)
    }

    /// The `q` quantile, interpolated linearly within its bucket as PromQL's
    /// `histogram_quantile` does. `None` without observations.
    pub fn quantile(&self, q: f64) -> Option<f64> {
        let total = self.total();
        if total <= 0.0 || self.buckets.len() < 2 {
            return None;
        }
        let rank = q * total;
        let mut prev = (0.0_f64, 0.0_f64);
        for (i, &(le, count)) in self.buckets.iter().enumerate() {
            if count >= rank {
                if le.is_infinite() {
                    // As PromQL: the upper bound of the last finite bucket.
                    return Some(self.buckets[i.saturating_sub(1)].0);
                }
                let (lower, below) = if i == 0 && le > 0.0 { (0.0, 0.0) } else { prev };
                if count - below <= 0.0 {
                    return Some(le);
                }
                return Some(lower + (le - lower) * (rank - below) / (count - below));
            }
            prev = (le, count);
        }
        None
    }
}

/// One metric's measurements of both arms for one interval, as a source delivers them.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
#[serde(rename_all = "camelCase")]
pub struct Observation {
    /// The canary's sample; `None` is no data.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub canary: Option<Sample>,
    /// The baseline's sample; `None` is no data.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub baseline: Option<Sample>,
    /// The query (or recorded series) behind the samples.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub query: Option<String>,
    /// Why the samples could not be fetched (outage, bad query).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// Why the counts are not exact (a counter reset in the interval), if they are not:
    /// tests that assume exact counts do not take them.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub approximate: Option<String>,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hist() -> Histogram {
        Histogram {
            buckets: vec![(0.1, 50.0), (0.2, 90.0), (0.5, 99.0), (1.0, 100.0), (f64::INFINITY, 100.0)],
        }
    }

    #[test]
    fn quantile_interpolates_within_the_bucket_like_promql() {
        let h = hist();
        // rank 50 lands exactly on the first bucket's count.
        assert!((h.quantile(0.5).unwrap() - 0.1).abs() < 1e-12);
        // rank 95 lies 5/9 of the way through (0.2, 0.5].
        assert!((h.quantile(0.95).unwrap() - (0.2 + 0.3 * 5.0 / 9.0)).abs() < 1e-12);
        assert_eq!(Histogram::default().quantile(0.99), None);
    }

    #[test]
    fn counts_above_a_bucket_bound() {
        let h = hist();
        assert_eq!(h.count_above(0.2), 10.0);
        assert_eq!(h.count_above(0.5), 1.0);
        assert_eq!(h.bucket_at_quantile(0.95), Some(0.5));
    }
}
