//! The `replica` router, for workloads without a mesh or a Gateway: one Service (the
//! user's, named as the Deployment unless the policy's `spec.traffic.route.name` says
//! otherwise) selects the pods of both `web-primary` and `web`, so each arm's share of
//! requests is its share of the Service's ready pods, and a step's weight is set by
//! replica counts.
//!
//! The primary keeps the replica count `P` it serves with, and the canary gets `c` pods
//! beside it: the canary's share is `c / (c + P)`. A weight `w` below 100 takes the `c`
//! (at least 1) whose share is nearest `w`, about `w·P / (100 − w)`; 100 runs `P` canary
//! pods and scales the primary to 0; 0 runs no canary pod. So 10% needs 9 primary
//! replicas (1 canary pod beside 9), 50% runs as many canary pods as primary ones, and
//! 75% three times as many. A step whose nearest share is more than the policy's
//! tolerance away (`spec.traffic.tolerance`, in percentage points, default
//! [`DEFAULT_TOLERANCE`]) is refused, with the nearest shares it can do.
//!
//! Pure arithmetic: `check --replicas N` and the Kubernetes platform both use it.

/// How many percentage points a step's share may be off the weight the policy asks for.
pub const DEFAULT_TOLERANCE: f64 = 5.0;

/// The most primary replicas searched for the fewest that serve a weight.
const MAX_PRIMARY: u32 = 10_000;

/// The pods of each arm at one step.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Split {
    /// `web`'s replicas.
    pub canary: u32,
    /// `web-primary`'s replicas.
    pub primary: u32,
}

impl Split {
    /// The canary's share of the pods, in percent.
    pub fn share(self) -> f64 {
        share(self.canary, self.primary)
    }
}

fn share(canary: u32, primary: u32) -> f64 {
    match canary + primary {
        0 => 0.0,
        all => 100.0 * f64::from(canary) / f64::from(all),
    }
}

/// The pods of each arm that serve `weight` with `primary` replicas for the primary
/// (at least 1).
pub fn split(weight: u8, primary: u32) -> Split {
    let primary = primary.max(1);
    match weight {
        0 => Split { canary: 0, primary },
        w if w >= 100 => Split { canary: primary, primary: 0 },
        w => {
            let exact = f64::from(w) * f64::from(primary) / f64::from(100 - w);
            let (low, high) = ((exact.floor() as u32).max(1), (exact.ceil() as u32).max(1));
            let off = |c: u32| (share(c, primary) - f64::from(w)).abs();
            // The nearer; on a tie, the fewer canary pods.
            let canary = if off(high) < off(low) { high } else { low };
            Split { canary, primary }
        }
    }
}

/// Why `weight` cannot be served within `tolerance` percentage points with `primary`
/// primary replicas: the nearest shares below and above it, and the fewest primary
/// replicas that would serve it. `None` when it can.
pub fn unachievable(weight: u8, primary: u32, tolerance: f64) -> Option<String> {
    let primary = primary.max(1);
    let near = split(weight, primary);
    if (near.share() - f64::from(weight)).abs() <= tolerance + 1e-9 {
        return None;
    }
    // Shares grow with the canary's pods: the last at or below the weight, and the
    // first above it.
    let exact = f64::from(weight) * f64::from(primary) / f64::from(100 - weight);
    let below = exact.floor() as u32;
    let above = below + 1;
    let pods = |c: u32| match c {
        0 => "no canary pod".to_string(),
        1 => format!("1 canary pod beside {primary}"),
        c => format!("{c} canary pods beside {primary}"),
    };
    let fewest = (primary + 1..=MAX_PRIMARY)
        .find(|&p| (split(weight, p).share() - f64::from(weight)).abs() <= tolerance + 1e-9);
    let needs = match fewest {
        Some(p) => format!("; {weight}% needs at least {p} primary replicas"),
        None => String::new(),
    };
    Some(format!(
        "{weight}% cannot be served by replica ratio with {primary} primary {} within ±{tolerance} points: the nearest shares are {} ({}) and {} ({}){needs}",
        if primary == 1 { "replica" } else { "replicas" },
        percent(share(below, primary)),
        pods(below),
        percent(share(above, primary)),
        pods(above),
    ))
}

/// Each step that cannot be served with `primary` replicas, by its index, with why.
pub fn unachievable_steps(steps: &[u8], primary: u32, tolerance: f64) -> Vec<(usize, String)> {
    steps
        .iter()
        .enumerate()
        .filter_map(|(i, &w)| unachievable(w, primary, tolerance).map(|why| (i, why)))
        .collect()
}

/// What each step runs with `primary` replicas: `10% → 1 canary pod beside 9 (10%)`.
pub fn described(steps: &[u8], primary: u32) -> String {
    steps
        .iter()
        .map(|&w| {
            let s = split(w, primary);
            format!("{w}% → {} canary beside {} primary ({})", s.canary, s.primary, percent(s.share()))
        })
        .collect::<Vec<_>>()
        .join(", ")
}

/// `33.3%`, `50%`.
fn percent(share: f64) -> String {
    let rounded = (share * 10.0).round() / 10.0;
    if rounded.fract() == 0.0 { format!("{rounded:.0}%") } else { format!("{rounded:.1}%") }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_step_takes_the_canary_pods_whose_share_is_nearest_its_weight() {
        // By hand: c / (c + P).
        assert_eq!(split(10, 9), Split { canary: 1, primary: 9 }, "1 of 10 pods");
        assert_eq!(split(50, 2), Split { canary: 2, primary: 2 });
        assert_eq!(split(75, 2), Split { canary: 6, primary: 2 }, "6 of 8 pods");
        assert_eq!(split(30, 2), Split { canary: 1, primary: 2 }, "1 of 3 pods is 33.3%");
        // 25% of 4 primary pods: 1 canary pod is 20%, 2 are 33.3%; 20% is nearer.
        assert_eq!(split(25, 4), Split { canary: 1, primary: 4 });
        // A weight above 0 always runs a canary pod, however few the primary's.
        assert_eq!(split(1, 2), Split { canary: 1, primary: 2 });
        assert_eq!(split(0, 3), Split { canary: 0, primary: 3 });
        assert_eq!(split(100, 3), Split { canary: 3, primary: 0 }, "100%: the primary at 0");
    }

    #[test]
    fn ten_percent_with_two_primary_replicas_is_refused_with_the_nearest_shares_and_what_it_needs() {
        let why = unachievable(10, 2, DEFAULT_TOLERANCE).expect("10% of 2 replicas is refused");
        assert!(why.contains("0% (no canary pod)"), "{why}");
        assert!(why.contains("33.3% (1 canary pod beside 2)"), "{why}");
        // Within ±5 points: 1 / (1 + 6) = 14.3%; 1 / (1 + 5) = 16.7% is too far.
        assert!(why.contains("needs at least 6 primary replicas"), "{why}");
        assert_eq!(unachievable(10, 6, DEFAULT_TOLERANCE), None);
        assert_eq!(unachievable(10, 9, 0.0), None, "exactly 10% with 9");
        assert!(unachievable(10, 8, 0.0).unwrap().contains("needs at least 9 primary replicas"));
    }

    #[test]
    fn steps_0_and_100_are_always_served_and_each_refused_step_is_named_by_its_index() {
        assert!(unachievable_steps(&[0, 100], 1, 0.0).is_empty());
        let refused = unachievable_steps(&[10, 50, 100], 2, DEFAULT_TOLERANCE);
        assert_eq!(refused.iter().map(|(i, _)| *i).collect::<Vec<_>>(), [0]);
        assert_eq!(
            described(&[30, 50, 100], 2),
            "30% → 1 canary beside 2 primary (33.3%), 50% → 2 canary beside 2 primary (50%), 100% → 2 canary beside 0 primary (100%)"
        );
    }
}
