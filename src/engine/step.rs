//! The transition function: `step(rollout, input, now) -> next rollout`. What the world
//! is to do follows from the next rollout alone: the platform is brought to
//! [`Rollout::desired`], and each new decision is told through [`Notification::of`].
//!
//! [`Notification::of`]: crate::engine::Notification::of

use std::time::Duration;

use jiff::Timestamp;

use crate::engine::evidence::{self, immediate_rollback, not_judged_in_bake, reasons};
use crate::engine::input::{Command, Input, IntervalObservations};
use crate::engine::plan::{Gate, TriggerCondition};
use crate::engine::rollback::RollbackReason;
use crate::engine::rollout::{
    DECISION_LIMIT, Decision, DecisionKind, IntervalRecord, IntervalSummary, Phase, RECENT_INTERVALS,
    Rollout, TriggerHit,
};
use crate::judge::{self, MetricRule, Observation, Outcome, Verdict};

/// An input the rollout cannot take in its phase.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EngineError {
    /// The input is not valid in the current phase.
    #[error("cannot {input} rollout {rollout}: it is {phase:?}")]
    InvalidTransition {
        /// The rollout.
        rollout: String,
        /// What was attempted.
        input: String,
        /// Its phase.
        phase: Phase,
    },
    /// An operator's command does not apply in the current phase.
    #[error("rollout {rollout}: {why}")]
    Refused {
        /// The rollout.
        rollout: String,
        /// Why, e.g. "cannot promote a rollout that is rolled-back: only when …".
        why: String,
    },
}

/// The engine's answer: the next state, from which the world to bring about and the
/// decisions to tell are read.
#[derive(Debug, Clone, PartialEq)]
pub struct Transition {
    /// The rollout after the input.
    pub rollout: Rollout,
    /// The full analysis of the interval, when the input was one: the rollout keeps only
    /// a summary, the daemon's timeline and the backtest report keep this.
    pub interval: Option<IntervalRecord>,
}

/// Inconclusive intervals in a row after which a rollout is reported stalled on lack of
/// data (once per streak; one blip is not worth a message).
pub const STALLED_AFTER: u32 = 2;

/// Applies one input at time `now`. Pure and deterministic; its cost does not depend on
/// how many intervals the rollout has seen (the state is bounded).
pub fn step(rollout: &Rollout, input: &Input, now: Timestamp) -> Result<Transition, EngineError> {
    let mut t = Transition { rollout: rollout.clone(), interval: None };
    let phase = rollout.phase;
    let invalid = |what: &str| EngineError::InvalidTransition {
        rollout: rollout.id.to_string(),
        input: what.to_string(),
        phase,
    };
    match input {
        Input::Start if phase == Phase::Pending => t.start(now),
        Input::Start => return Err(invalid("start")),
        Input::Interval(obs)
            if matches!(phase, Phase::Progressing | Phase::Paused | Phase::Waiting | Phase::Baking) =>
        {
            t.interval(obs, now)
        }
        // Late observations of a rollout already leaving are of no use.
        Input::Interval(_) if matches!(phase, Phase::Promoting | Phase::RollingBack) => {}
        Input::Interval(_) => return Err(invalid("analyse")),
        Input::PromotionDone if phase == Phase::Promoting => t.promoted(now),
        Input::PromotionDone => return Err(invalid("finish promoting")),
        Input::RollbackDone if phase == Phase::RollingBack => t.rollback_finished(now),
        Input::RollbackDone => return Err(invalid("finish rolling back")),
        Input::Superseded { revision } if *revision == rollout.revision => {}
        Input::Superseded { revision } if !phase.is_terminal() => t.superseded(revision, now),
        Input::Superseded { .. } => return Err(invalid("supersede")),
        Input::PlatformFailed { call, error } if phase == Phase::Promoting => {
            let why = format!("promotion failed, the canary did not become stable: {call}: {error}");
            let reason = RollbackReason::PlatformFailed { call: call.clone(), error: error.clone() };
            t.roll_back(now, reason, why, vec![], vec![]);
        }
        Input::PlatformFailed { call, error } if phase == Phase::Baking => {
            let why = format!("the platform could not {call}: {error}; the canary cannot be baked at 100%");
            let reason = RollbackReason::PlatformFailed { call: call.clone(), error: error.clone() };
            t.roll_back(now, reason, why, vec![], vec![]);
        }
        Input::PlatformFailed { call, error } if matches!(phase, Phase::Progressing | Phase::Waiting) => {
            t.rollout.phase = Phase::Paused;
            let why = format!(
                "the platform could not {call}: {error}; traffic stays on what the platform last applied; the analysis holds until an operator resumes"
            );
            t.decide(now, DecisionKind::Paused, why, vec![], vec![]);
        }
        Input::PlatformFailed { .. } => return Err(invalid("take a platform failure")),
        Input::Command { command, by } => {
            if let Some(why) = command.refusal(phase) {
                return Err(EngineError::Refused { rollout: rollout.id.to_string(), why });
            }
            t.command(*command, by, now);
        }
        Input::Alert { alert, detail } => t.alert(alert, detail, now),
        Input::WorkloadGone { detail } if !phase.is_terminal() && phase != Phase::RollingBack => {
            let why = format!("the workload is gone ({detail}): traffic back to the stable version");
            t.roll_back(now, RollbackReason::WorkloadGone { detail: detail.clone() }, why, vec![], vec![]);
        }
        Input::CanaryFailed { detail } if !phase.is_terminal() && phase != Phase::RollingBack => {
            let why = format!("the canary never became ready ({detail}): traffic back to the stable version");
            t.roll_back(now, RollbackReason::CanaryFailed { detail: detail.clone() }, why, vec![], vec![]);
        }
        // Already leaving the canary, or finished: nothing left to undo.
        Input::WorkloadGone { .. } | Input::CanaryFailed { .. } => {}
    }
    Ok(t)
}

fn later(t: Timestamp, d: Duration) -> Timestamp {
    t.checked_add(d).unwrap_or(Timestamp::MAX)
}

impl Transition {
    /// Records a decision; what people are told of it is derived from it.
    fn decide(
        &mut self,
        now: Timestamp,
        action: DecisionKind,
        reason: String,
        evidence: Vec<Verdict>,
        triggers: Vec<TriggerHit>,
    ) {
        let r = &mut self.rollout;
        let decision = Decision {
            seq: r.decisions_made,
            revision: r.revision.clone(),
            at: now,
            action,
            weight: r.weight,
            reason,
            evidence,
            triggers,
            window_seconds: None,
        };
        r.decisions_made += 1;
        r.decisions.push(decision);
        if r.decisions.len() > DECISION_LIMIT {
            // Only pauses, resumes and stalls repeat without bound; every other decision stays.
            let repeatable = |d: &Decision| {
                matches!(d.action, DecisionKind::Paused | DecisionKind::Resumed | DecisionKind::Stalled)
            };
            if let Some(oldest) = r.decisions.iter().position(repeatable) {
                r.decisions.remove(oldest);
            }
        }
    }

    /// The interval ending `now` is done; the next is due one interval later.
    fn schedule(&mut self, now: Timestamp) {
        let r = &mut self.rollout;
        r.last_evaluation = Some(now);
        r.next_evaluation = Some(later(now, r.plan.interval));
    }

    fn start(&mut self, now: Timestamp) {
        let r = &mut self.rollout;
        r.phase = Phase::Progressing;
        r.step = 0;
        r.weight = r.plan.steps.first().copied().unwrap_or(100);
        r.started_at = Some(now);
        r.step_started_at = Some(now);
        r.step_entered_at = Some(now);
        self.decide(
            now,
            DecisionKind::Started,
            format!("policy {}", self.rollout.plan.policy),
            vec![],
            vec![],
        );
        self.schedule(now);
    }

    fn interval(&mut self, obs: &IntervalObservations, now: Timestamp) {
        let verdicts = self.judge_all(obs);
        let triggers = evidence::met(&mut self.rollout, obs, &verdicts);
        self.record(now, &verdicts, &triggers);
        // Triggers and conclusive regressions roll back even a paused, waiting or baking
        // rollout: neither a hold nor a gate shields a bad canary.
        if let Some((reason, why)) = immediate_rollback(&verdicts, &triggers) {
            return self.roll_back(now, reason, why, verdicts, triggers);
        }
        match self.rollout.phase {
            Phase::Paused => return self.schedule(now),
            Phase::Waiting => return self.wait(obs, now, verdicts),
            Phase::Baking => return self.bake(now, verdicts),
            _ => {}
        }
        if let Some((reason, why)) = self.tally(now, &verdicts) {
            return self.roll_back(now, reason, why, verdicts, vec![]);
        }
        self.report_stall(now, &verdicts);
        if let Some((reason, why)) = self.past_progress_deadline(now, &verdicts) {
            return self.roll_back(now, reason, why, verdicts, vec![]);
        }
        let r = &self.rollout;
        let all_passed = verdicts.iter().all(|v| v.outcome == Outcome::Pass);
        let step_done = r.step_started_at.is_some_and(|s| now >= later(s, r.plan.step_duration));
        if all_passed && step_done {
            self.advance(now, verdicts);
        } else {
            self.schedule(now);
        }
    }

    /// Keeps the interval's summary among the recent ones, and its full analysis for the
    /// transition.
    fn record(&mut self, now: Timestamp, verdicts: &[Verdict], triggers: &[TriggerHit]) {
        let r = &mut self.rollout;
        r.intervals_analysed += 1;
        r.recent.push(IntervalSummary {
            at: now,
            step: r.step,
            weight: r.weight,
            outcomes: verdicts.iter().map(Verdict::letter).collect(),
            triggers: triggers.iter().map(|h| h.trigger.clone()).collect(),
        });
        if r.recent.len() > RECENT_INTERVALS {
            r.recent.remove(0);
        }
        self.interval = Some(IntervalRecord {
            at: now,
            step: r.step,
            weight: r.weight,
            verdicts: verdicts.to_vec(),
            triggers: triggers.to_vec(),
        });
    }

    /// Counts the interval's failed checks and the inconclusive streak; the rollback,
    /// when either reaches its limit.
    fn tally(&mut self, now: Timestamp, verdicts: &[Verdict]) -> Option<(RollbackReason, String)> {
        let failed: Vec<&Verdict> = verdicts.iter().filter(|v| v.outcome == Outcome::Fail).collect();
        let inconclusive: Vec<&Verdict> =
            verdicts.iter().filter(|v| v.outcome == Outcome::Inconclusive).collect();
        let r = &mut self.rollout;
        r.inconclusive_streak = if inconclusive.is_empty() { 0 } else { r.inconclusive_streak + 1 };
        if !failed.is_empty() {
            r.failed_checks += 1;
            // A step advances only after its full duration with no failure.
            r.step_started_at = Some(now);
            if r.failed_checks >= r.plan.failure_limit {
                let failed_checks = r.failed_checks;
                let why = format!(
                    "{failed_checks} failed {} reached the limit of {}; last: {}",
                    if failed_checks == 1 { "check" } else { "checks" },
                    r.plan.failure_limit,
                    reasons(&failed)
                );
                return Some((RollbackReason::FailureLimit { failed_checks }, why));
            }
        }
        if r.inconclusive_streak >= r.plan.inconclusive_limit {
            let intervals = r.inconclusive_streak;
            let why = format!(
                "{intervals} inconclusive intervals in a row reached the limit; last: {}",
                reasons(&inconclusive)
            );
            return Some((RollbackReason::InconclusiveLimit { intervals }, why));
        }
        None
    }

    /// Tells of a stall once per streak, when it reaches [`STALLED_AFTER`].
    fn report_stall(&mut self, now: Timestamp, verdicts: &[Verdict]) {
        let r = &self.rollout;
        if r.inconclusive_streak == STALLED_AFTER {
            let inconclusive: Vec<&Verdict> =
                verdicts.iter().filter(|v| v.outcome == Outcome::Inconclusive).collect();
            let why = format!(
                "stalled on lack of data: {STALLED_AFTER} inconclusive intervals in a row at {}% (rolls back at {}); last: {}",
                r.weight,
                r.plan.inconclusive_limit,
                reasons(&inconclusive)
            );
            self.decide(now, DecisionKind::Stalled, why, verdicts.to_vec(), vec![]);
        }
    }

    /// The rollback when metrics still lack the samples to be judged after the progress
    /// deadline at this step.
    fn past_progress_deadline(
        &self,
        now: Timestamp,
        verdicts: &[Verdict],
    ) -> Option<(RollbackReason, String)> {
        let r = &self.rollout;
        let waiting: Vec<&Verdict> = verdicts.iter().filter(|v| v.outcome == Outcome::Insufficient).collect();
        let entered = r.step_entered_at.or(r.step_started_at);
        let deadline_passed = entered.is_some_and(|e| now >= later(e, r.plan.progress_deadline));
        if waiting.is_empty() || !deadline_passed {
            return None;
        }
        let waited = entered.map_or(0, |e| now.duration_since(e).as_secs().max(0) as u64);
        let why = format!(
            "not enough traffic to judge: {} at {}% without the evidence to advance (progress deadline {}); last: {}",
            humantime::format_duration(Duration::from_secs(waited)),
            r.weight,
            humantime::format_duration(r.plan.progress_deadline),
            reasons(&waiting)
        );
        Some((RollbackReason::NotEnoughTraffic { waited_seconds: waited }, why))
    }

    fn judge_all(&mut self, obs: &IntervalObservations) -> Vec<Verdict> {
        let r = &mut self.rollout;
        let baking = r.phase == Phase::Baking;
        let missing = Observation::default();
        r.plan
            .metrics
            .iter()
            .map(|m| {
                let observed = obs.metrics.get(&m.name).unwrap_or(&missing);
                if baking && m.test.needs_baseline() {
                    return not_judged_in_bake(m, observed);
                }
                let rule = MetricRule {
                    name: &m.name,
                    test: &m.test,
                    quantile: m.quantile,
                    min_sample_size: r.plan.min_sample_size,
                };
                let state = r.metrics.entry(m.name.clone()).or_default();
                judge::judge(rule, observed, state)
            })
            .collect()
    }

    /// The step passed its analysis: on to the next, unless a gate holds it.
    fn advance(&mut self, now: Timestamp, evidence: Vec<Verdict>) {
        let r = &mut self.rollout;
        if let Some(gate) = r.plan.gates.get(&r.step) {
            let waits_for = gate.waits_for();
            let until = later(now, r.plan.gate_timeout);
            let why = format!(
                "step at {}% passed its analysis; waiting for {waits_for} at {}% (the analysis goes on; rolls back if not opened by {until})",
                r.weight, r.weight
            );
            r.phase = Phase::Waiting;
            r.waiting_since = Some(now);
            r.gate_answer = None;
            self.decide(now, DecisionKind::Waiting, why, evidence, vec![]);
            return self.schedule(now);
        }
        let why = format!("step at {}% passed its analysis", r.weight);
        self.move_on(now, why, evidence);
    }

    /// Leaves the current step for the next, or for the promotion after the last.
    fn move_on(&mut self, now: Timestamp, why: String, evidence: Vec<Verdict>) {
        let r = &mut self.rollout;
        r.phase = Phase::Progressing;
        r.waiting_since = None;
        r.gate_answer = None;
        let from = r.weight;
        let next = r.step + 1;
        let is_last = next + 1 >= r.plan.steps.len();
        if is_last {
            let reason = format!("every step passed its analysis; step at {from}% complete");
            self.begin_promotion(now, reason, evidence);
            return;
        }
        r.step = next;
        r.weight = r.plan.steps[next];
        r.step_started_at = Some(now);
        r.step_entered_at = Some(now);
        r.metrics.values_mut().for_each(crate::judge::MetricState::start_step);
        self.decide(now, DecisionKind::Advanced, why, evidence, vec![]);
        self.schedule(now);
    }

    /// An interval while waiting at a gate: failed checks still count, the webhook's
    /// 2xx opens the gate (when the interval had no failure), and the gate timeout
    /// rolls back.
    fn wait(&mut self, obs: &IntervalObservations, now: Timestamp, verdicts: Vec<Verdict>) {
        if let Some((reason, why)) = self.tally(now, &verdicts) {
            return self.roll_back(now, reason, why, verdicts, vec![]);
        }
        self.report_stall(now, &verdicts);
        let r = &mut self.rollout;
        let failed = verdicts.iter().any(|v| v.outcome == Outcome::Fail);
        // Only a webhook gate opens on a webhook's answer; an approval gate waits for a person.
        let webhook = matches!(r.plan.gates.get(&r.step), Some(Gate::Webhook { .. }));
        if let Some(answer) = obs.gate.as_ref().filter(|_| webhook) {
            r.gate_answer = Some(answer.detail.clone());
            if answer.open && !failed {
                let why = format!("the gate at {}% opened: its webhook {}", r.weight, answer.detail);
                self.decide(now, DecisionKind::Approved, why.clone(), vec![], vec![]);
                return self.move_on(
                    now,
                    format!("step at {}% passed its analysis and its gate", self.rollout.weight),
                    verdicts,
                );
            }
        }
        let r = &self.rollout;
        let since = r.waiting_since.unwrap_or(now);
        if now >= later(since, r.plan.gate_timeout) {
            let gate = r.plan.gates.get(&r.step).map_or("gate", |g| g.kind()).to_string();
            let waited = now.duration_since(since).as_secs().max(0) as u64;
            let last = r.gate_answer.as_ref().map(|a| format!("; its webhook last {a}")).unwrap_or_default();
            let why = format!(
                "the {gate} gate at {}% was not opened within the gate timeout of {}{last}",
                r.weight,
                humantime::format_duration(r.plan.gate_timeout)
            );
            let reason = RollbackReason::GateTimeout { gate, waited_seconds: waited };
            return self.roll_back(now, reason, why, verdicts, vec![]);
        }
        self.schedule(now);
    }

    /// An interval of the bake: failed checks and no data count as in the analysis; the
    /// bake ends, and the platform promotes, at the first interval past its window that
    /// had data.
    fn bake(&mut self, now: Timestamp, verdicts: Vec<Verdict>) {
        if let Some((reason, why)) = self.tally(now, &verdicts) {
            return self.roll_back(now, reason, why, verdicts, vec![]);
        }
        self.report_stall(now, &verdicts);
        let r = &self.rollout;
        let over = r.bake_until.is_none_or(|until| now >= until);
        let had_data = !verdicts.iter().any(|v| v.outcome == Outcome::Inconclusive);
        if over && had_data {
            let bake = r.plan.bake.map(humantime::format_duration).map(|d| d.to_string()).unwrap_or_default();
            let why = format!("the bake of {bake} at 100% ended with no trigger or regression");
            return self.promote_now(now, why, verdicts);
        }
        self.schedule(now);
    }

    /// Every step passed (or an operator promoted): into the bake when the plan has one,
    /// else straight to the platform's promotion.
    fn begin_promotion(&mut self, now: Timestamp, reason: String, evidence: Vec<Verdict>) {
        let Some(bake) = self.rollout.plan.bake else {
            return self.promote_now(now, reason, evidence);
        };
        let r = &mut self.rollout;
        r.phase = Phase::Baking;
        r.step = r.plan.steps.len().saturating_sub(1);
        r.weight = 100;
        r.waiting_since = None;
        r.gate_answer = None;
        r.bake_until = Some(later(now, bake));
        r.step_started_at = Some(now);
        r.step_entered_at = Some(now);
        r.metrics.values_mut().for_each(crate::judge::MetricState::start_step);
        let why = format!(
            "{reason}; baking at 100% for {}: the previous revision stays deployed, taking no traffic, and is restored on a trigger or a regression",
            humantime::format_duration(bake)
        );
        self.decide(now, DecisionKind::Baking, why, evidence, vec![]);
        self.schedule(now);
    }

    /// The platform is to make the canary the stable version.
    fn promote_now(&mut self, now: Timestamp, reason: String, evidence: Vec<Verdict>) {
        let r = &mut self.rollout;
        r.phase = Phase::Promoting;
        r.step = r.plan.steps.len().saturating_sub(1);
        r.weight = 100;
        r.next_evaluation = None;
        self.decide(now, DecisionKind::Promoting, reason, evidence, vec![]);
    }

    fn promoted(&mut self, now: Timestamp) {
        let r = &mut self.rollout;
        r.phase = Phase::Succeeded;
        r.finished_at = Some(now);
        self.decide(now, DecisionKind::Promoted, "the platform finished promoting".into(), vec![], vec![]);
    }

    fn rollback_finished(&mut self, now: Timestamp) {
        let r = &mut self.rollout;
        let aborted = r.rollback == Some(RollbackReason::Aborted);
        r.phase = if aborted { Phase::Aborted } else { Phase::RolledBack };
        r.finished_at = Some(now);
        let reason = "the canary takes no traffic, and the platform confirmed the rollback".to_string();
        self.decide(now, DecisionKind::RollbackFinished, reason, vec![], vec![]);
    }

    /// A new revision replaced the canary: the analysis of the old one says nothing
    /// about it, so everything restarts from the first step.
    fn superseded(&mut self, revision: &str, now: Timestamp) {
        let r = &mut self.rollout;
        let old = std::mem::replace(&mut r.revision, revision.to_string());
        let (was, at) = (r.phase, r.weight);
        r.phase = Phase::Progressing;
        r.step = 0;
        r.weight = r.plan.steps.first().copied().unwrap_or(100);
        r.started_at.get_or_insert(now);
        r.step_started_at = Some(now);
        r.step_entered_at = Some(now);
        r.finished_at = None;
        r.failed_checks = 0;
        r.inconclusive_streak = 0;
        r.health_failures.clear();
        r.metrics.clear();
        r.rollback = None;
        r.recent.clear();
        r.waiting_since = None;
        r.gate_answer = None;
        r.bake_until = None;
        let reason = format!(
            "revision {revision} replaced {old} while {} at {at}%; the analysis restarts at step 1",
            was.name()
        );
        self.decide(now, DecisionKind::Superseded, reason, vec![], vec![]);
        self.schedule(now);
    }

    fn roll_back(
        &mut self,
        now: Timestamp,
        reason: RollbackReason,
        why: String,
        evidence: Vec<Verdict>,
        triggers: Vec<TriggerHit>,
    ) {
        let aborted = reason == RollbackReason::Aborted;
        let r = &mut self.rollout;
        let baking = r.phase == Phase::Baking;
        r.phase = Phase::RollingBack;
        r.rollback = Some(reason);
        r.weight = 0;
        r.next_evaluation = None;
        r.waiting_since = None;
        let (action, why) = match (aborted, baking) {
            (true, _) => (DecisionKind::Aborted, why),
            (false, true) => {
                (DecisionKind::Reverted, format!("{why}; the previous revision serves all traffic again"))
            }
            (false, false) => (DecisionKind::RolledBack, why),
        };
        self.decide(now, action, why, evidence, triggers);
    }

    /// An alert fired: a trigger naming it rolls back a rollout that still carries
    /// traffic to the canary; anything else is left as it is.
    fn alert(&mut self, alert: &str, detail: &str, now: Timestamp) {
        if !matches!(
            self.rollout.phase,
            Phase::Pending | Phase::Progressing | Phase::Paused | Phase::Waiting | Phase::Baking
        ) {
            return;
        }
        let named = self
            .rollout
            .plan
            .triggers
            .iter()
            .find(|t| matches!(&t.condition, TriggerCondition::Alert { alert: a } if a == alert));
        let Some(trigger) = named else { return };
        let said = if detail.is_empty() { String::new() } else { format!(": {detail}") };
        let hit =
            TriggerHit { trigger: trigger.name.clone(), detail: format!("alert {alert} is firing{said}") };
        let why = format!("{}: {}", hit.trigger, hit.detail);
        let reason = RollbackReason::Trigger { triggers: vec![hit.trigger.clone()] };
        self.roll_back(now, reason, why, vec![], vec![hit]);
    }

    /// Takes a command [`Command::refusal`] allows in the current phase.
    fn command(&mut self, command: Command, by: &str, now: Timestamp) {
        match command {
            Command::Promote if self.rollout.phase == Phase::Baking => {
                self.promote_now(now, format!("promoted by hand by {by}, ending the bake early"), vec![]);
            }
            Command::Promote => {
                self.begin_promotion(now, format!("promoted by hand by {by}"), vec![]);
            }
            Command::Approve => {
                let why = format!("the gate at {}% was approved by {by}", self.rollout.weight);
                self.decide(now, DecisionKind::Approved, why, vec![], vec![]);
                let why = format!("step at {}% passed its analysis and was approved", self.rollout.weight);
                self.move_on(now, why, vec![]);
            }
            Command::Revert => {
                let why = format!("reverted by {by} during the bake");
                self.roll_back(now, RollbackReason::Reverted, why, vec![], vec![]);
            }
            Command::Abort => {
                self.roll_back(now, RollbackReason::Aborted, format!("aborted by {by}"), vec![], vec![]);
            }
            Command::Pause => {
                self.rollout.phase = Phase::Paused;
                self.decide(now, DecisionKind::Paused, format!("paused by {by}"), vec![], vec![]);
            }
            Command::Resume => {
                self.rollout.phase = Phase::Progressing;
                // The step's full duration is required again after a pause, and its
                // progress deadline counts from the resume.
                self.rollout.step_started_at = Some(now);
                self.rollout.step_entered_at = Some(now);
                self.decide(now, DecisionKind::Resumed, format!("resumed by {by}"), vec![], vec![]);
                self.schedule(now);
            }
        }
    }
}
