//! Metric sources: where the judge's raw samples come from.

pub mod batch;
pub mod increments;
pub mod prometheus;
pub mod promql;
pub mod scrape;
pub mod templates;
