//! Metric sources: where the judge's raw samples come from.

pub mod alertmanager;
pub mod batch;
pub mod increments;
pub mod layout;
pub mod prometheus;
pub mod promql;
pub mod scrape;
pub mod templates;

use std::collections::BTreeMap;
use std::future::Future;
use std::time::Duration;

use jiff::Timestamp;

use crate::engine::RolloutId;
use crate::judge::Observation;
use batch::Target;

/// Where raw samples come from. Implemented by Prometheus; recorded data feeds the
/// engine directly in backtests.
pub trait MetricSource {
    /// Measures every target over the `window` ending at `at`: counts are the exact
    /// increments between the last samples at or before `at − window` and `at`, so
    /// consecutive windows add up to the counters' growth.
    fn observe(
        &self,
        targets: &[Target<'_>],
        at: Timestamp,
        window: Duration,
    ) -> impl Future<Output = BTreeMap<(RolloutId, String), Observation>> + Send;
}
