//! Building plans and observations for engine tests.

use canaryd::engine::{IntervalObservations, Plan};
use canaryd::judge::{Observation, Sample};
use canaryd::policy::LoadedPolicy;
use jiff::Timestamp;

/// A plan compiled from a policy spec written in YAML (the `spec:` body).
pub fn plan(spec: &str) -> Plan {
    policy("t", "test", spec).plan
}

/// The policy `namespace/name` with a spec written in YAML (the `spec:` body), loaded.
pub fn policy(namespace: &str, name: &str, spec: &str) -> LoadedPolicy {
    let text = format!(
        "apiVersion: canaryd.io/v1alpha1\nkind: CanaryPolicy\nmetadata: {{name: {name}, namespace: {namespace}}}\nspec:\n{}",
        spec.lines().map(|l| format!("  {l}\n")).collect::<String>()
    );
    let mut loaded = canaryd::policy::load_str("test.yaml", &text);
    assert!(loaded.problems.is_empty(), "{:?}", loaded.problems);
    loaded.policies.remove(0)
}

/// Errors-only policy: a sequential test and a ratio test, steps 10/50/100, 1m steps.
pub const ERRORS_SPEC: &str = "selector: {matchLabels: {app: web}}
traffic: {steps: [10, 50, 100], stepDuration: 1m}
analysis:
  interval: 30s
  failureLimit: 2
  inconclusiveLimit: 3
  minSampleSize: 20
  metrics:
    - {name: errors, template: http-error-rate, test: sequential, alpha: 0.05}
    - {name: error-ratio, template: http-error-rate, test: ratio, max: 3.0}
triggers:
  - {name: budget, alert: ErrorBudgetBurn}
  - {name: hard-limit, metric: error-ratio, above: 0.2}
  - name: health
    healthCheck: {url: 'http://127.0.0.1/healthz', consecutiveFailures: 3}";

/// The same counts for both metrics of `ERRORS_SPEC`.
pub fn errors(canary: (f64, f64), baseline: (f64, f64)) -> IntervalObservations {
    let obs = Observation {
        canary: Some(Sample::Counts { requests: canary.0, events: canary.1 }),
        baseline: Some(Sample::Counts { requests: baseline.0, events: baseline.1 }),
        query: Some("recorded".into()),
        ..Observation::default()
    };
    IntervalObservations {
        metrics: [("errors".to_string(), obs.clone()), ("error-ratio".to_string(), obs)].into(),
        ..Default::default()
    }
}

/// Time `secs` seconds after a fixed origin.
pub fn at(secs: i64) -> Timestamp {
    Timestamp::from_second(1_700_000_000 + secs).expect("in range")
}
