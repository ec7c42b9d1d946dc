//! Where each rollout stands, for the API (`GET /api/v1/rollouts`) and the demo's
//! progress lines: a small summary built from the persisted state after every tick.

use jiff::Timestamp;
use serde::{Deserialize, Serialize};

use crate::engine::{DecisionKind, Phase};
use crate::judge::Outcome;
use crate::store::RunState;

/// One rollout, as the API shows it.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct RolloutView {
    /// Namespace.
    pub namespace: String,
    /// Name (on the local platform, the service).
    pub name: String,
    /// The canary's revision.
    pub revision: String,
    /// The policy that runs it.
    pub policy: String,
    /// `progressing`, `paused`, `promoting`, `succeeded`, `rolling-back`, …
    pub phase: String,
    /// Step, from 1.
    pub step: usize,
    /// The plan's steps (canary weights).
    pub steps: Vec<u8>,
    /// The canary weight the engine wants now.
    pub weight: u8,
    /// The canary weight the platform last confirmed (none yet: not applied).
    pub applied_weight: Option<u8>,
    /// The last interval's verdict per metric, in the plan's order.
    pub metrics: Vec<MetricView>,
    /// Triggers met in the last interval.
    pub triggers: Vec<String>,
    /// Intervals analysed.
    pub intervals: u64,
    /// The last decision.
    pub last_decision: Option<DecisionView>,
    /// When traffic first moved.
    pub started_at: Option<Timestamp>,
    /// When it ended.
    pub finished_at: Option<Timestamp>,
    /// The gate it waits at, while waiting.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gate: Option<GateView>,
    /// When its bake ends, while baking.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bake_until: Option<Timestamp>,
}

/// The gate a rollout waits at.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct GateView {
    /// `approval` or `webhook`.
    pub kind: String,
    /// Since when it waits.
    pub since: Option<Timestamp>,
    /// When it rolls back if the gate is still closed.
    pub times_out_at: Option<Timestamp>,
    /// The webhook's last answer, for a webhook gate asked at least once.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_answer: Option<String>,
}

/// A metric's last verdict.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
pub struct MetricView {
    /// The metric's name in the policy.
    pub name: String,
    /// `pass`, `fail`, `fail (conclusive)`, `inconclusive`, `insufficient` (waiting for
    /// traffic), or `-` before the first interval.
    pub verdict: String,
}

/// A decision, in short.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
pub struct DecisionView {
    /// Its sequence number.
    pub seq: u64,
    /// What was decided.
    pub action: DecisionKind,
    /// Canary weight after it.
    pub weight: u8,
    /// Why.
    pub reason: String,
    /// When.
    pub at: Timestamp,
}

/// The verdict a timeline letter stands for, in the judge's words.
pub fn verdict(letter: char) -> String {
    match Outcome::of_letter(letter) {
        Some((outcome, true)) => format!("{} (conclusive)", outcome.name()),
        Some((outcome, false)) => outcome.name().to_string(),
        None => "?".to_string(),
    }
}

impl RolloutView {
    /// The view of a persisted state.
    pub fn of(state: &RunState) -> RolloutView {
        let r = &state.rollout;
        let last = r.recent.last();
        let letters: Vec<char> = last.map(|s| s.outcomes.chars().collect()).unwrap_or_default();
        let metrics = r
            .plan
            .metrics
            .iter()
            .enumerate()
            .map(|(i, m)| MetricView {
                name: m.name.clone(),
                verdict: letters.get(i).map_or_else(|| "-".to_string(), |c| verdict(*c)),
            })
            .collect();
        RolloutView {
            namespace: r.id.namespace.clone(),
            name: r.id.name.clone(),
            revision: r.revision.clone(),
            policy: r.plan.policy.clone(),
            phase: r.phase.name().to_string(),
            step: r.step + 1,
            steps: r.plan.steps.clone(),
            weight: r.desired().weight,
            applied_weight: state.applied.weight,
            metrics,
            triggers: last.map(|s| s.triggers.clone()).unwrap_or_default(),
            intervals: r.intervals_analysed,
            last_decision: r.decisions.last().map(|d| DecisionView {
                seq: d.seq,
                action: d.action,
                weight: d.weight,
                reason: d.reason.clone(),
                at: d.at,
            }),
            started_at: r.started_at,
            finished_at: r.finished_at,
            gate: r.gate().map(|g| GateView {
                kind: g.kind().to_string(),
                since: r.waiting_since,
                times_out_at: r.waiting_since.and_then(|s| s.checked_add(r.plan.gate_timeout).ok()),
                last_answer: r.gate_answer.clone(),
            }),
            bake_until: (r.phase == Phase::Baking).then_some(r.bake_until).flatten(),
        }
    }

    /// `namespace/name`.
    pub fn id(&self) -> String {
        format!("{}/{}", self.namespace, self.name)
    }

    /// One line: phase, step, the weight wanted and applied, each metric's last verdict;
    /// what it waits for at a gate, or when its bake ends.
    pub fn progress(&self) -> String {
        let metrics =
            self.metrics.iter().map(|m| format!("{}={}", m.name, m.verdict)).collect::<Vec<_>>().join(" ");
        let applied = self.applied_weight.map_or_else(|| "-".to_string(), |w| format!("{w}%"));
        let mut line = format!(
            "{:<12} step {}/{}  weight {:>3}% (applied {applied:>4})  {metrics}",
            self.phase,
            self.step,
            self.steps.len(),
            self.weight
        );
        if let Some(g) = &self.gate {
            let what = if g.kind == "approval" { "approval" } else { "its webhook" };
            line.push_str(&format!("  [waiting for {what} at {}%", self.weight));
            if let Some(t) = g.times_out_at {
                line.push_str(&format!(", rolls back at {t}"));
            }
            if let Some(a) = &g.last_answer {
                line.push_str(&format!("; webhook {a}"));
            }
            line.push(']');
        }
        if let Some(until) = self.bake_until {
            line.push_str(&format!("  [baking until {until}]"));
        }
        line
    }
}

/// Turns successive views of one rollout into the lines a person follows: the progress
/// line when it changes, and each new decision with its reason.
#[derive(Default)]
pub struct Progress {
    last: Option<String>,
    decision: Option<(String, u64)>,
}

/// A decision as a progress line.
pub fn decision_line(action: DecisionKind, weight: u8, reason: &str) -> String {
    format!("  -> {action} at {weight}%: {reason}")
}

impl Progress {
    /// The decisions made since the last view shown and before `v`'s last one, which a
    /// view alone does not carry (several decisions between two looks): their `seq`s.
    /// For a rollout not seen before, every earlier decision.
    pub fn missed(&self, v: &RolloutView) -> std::ops::Range<u64> {
        let Some(last) = &v.last_decision else { return 0..0 };
        let from = match &self.decision {
            Some((revision, seq)) if *revision == v.revision => seq + 1,
            _ => 0,
        };
        from..last.seq.max(from)
    }

    /// The lines `v` adds to what was shown (none when nothing changed).
    pub fn lines(&mut self, v: &RolloutView) -> Vec<String> {
        let mut out = Vec::new();
        let now = v.progress();
        if self.last.as_ref() != Some(&now) {
            out.push(now.clone());
            self.last = Some(now);
        }
        if let Some(d) = &v.last_decision {
            let key = (v.revision.clone(), d.seq);
            if self.decision.as_ref() != Some(&key) {
                out.push(decision_line(d.action, d.weight, &d.reason));
                self.decision = Some(key);
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn a_summary_letter_is_shown_in_the_judges_words() {
        let shown: Vec<String> = "pfFiwx".chars().map(super::verdict).collect();
        assert_eq!(shown, ["pass", "fail", "fail (conclusive)", "inconclusive", "insufficient", "?"]);
    }
}
