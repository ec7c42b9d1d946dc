//! The judge: turns canary and baseline samples into a verdict per metric, with the
//! evidence behind it. Pure: no I/O, no clock.

mod sample;
mod test_kind;

pub use sample::{Histogram, Sample, SampleKind};
pub use test_kind::{Direction, TEST_NAMES, TestConfig};
