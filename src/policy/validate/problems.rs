//! The problems found while validating a policy: each with its field path, collected
//! rather than stopping at the first.

use std::time::Duration;

use crate::duration;

/// The longest duration a policy may state (a step, an interval, a deadline).
const MAX_DURATION: Duration = Duration::from_secs(30 * 24 * 3600);

/// One problem in a spec: the field path and what is wrong with it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FieldProblem {
    /// Path such as `spec.traffic.steps[1]`.
    pub path: String,
    /// Why the value is wrong.
    pub message: String,
}

/// Collects problems while walking a spec.
#[derive(Default)]
pub(super) struct Problems(pub(super) Vec<FieldProblem>);

impl Problems {
    /// Records that the field at `path` is wrong, and why.
    pub(super) fn add(&mut self, path: impl Into<String>, message: impl Into<String>) {
        self.0.push(FieldProblem { path: path.into(), message: message.into() });
    }

    /// The duration `text` at `path`; zero (and a problem) when it does not parse.
    pub(super) fn duration(&mut self, path: &str, text: &str) -> std::time::Duration {
        match duration::parse(text) {
            Ok(d) if d > MAX_DURATION => {
                self.add(
                    path,
                    format!("`{text}` is longer than {}: surely a typo", duration::format(MAX_DURATION)),
                );
                d
            }
            Ok(d) => d,
            Err(e) => {
                self.add(path, e);
                std::time::Duration::ZERO
            }
        }
    }
}
