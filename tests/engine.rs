//! The rollout engine, driven through its public API: scenarios and properties.

mod support;

use canaryd::engine::{
    Command, DecisionKind, Desired, EngineError, EventKind, Input, IntervalObservations, IntervalRecord,
    Notification, Phase, RollbackReason, Rollout, RolloutId, Scale, Transition, step,
};
use proptest::prelude::*;
use support::engine::{ERRORS_SPEC, at, errors, plan};

fn new_rollout() -> Rollout {
    let id = RolloutId { namespace: "t".into(), name: "web".into() };
    Rollout::new(id, "v2", plan(ERRORS_SPEC))
}

/// What one transition asks of the outside world, read as the daemon reads it: the
/// platform is brought from the world the rollout wanted before to the one it wants
/// after, and people are told each new decision.
#[derive(Clone, Debug, PartialEq)]
struct Effect {
    /// `desired()` before the input.
    before: Desired,
    /// `desired()` after it.
    after: Desired,
    /// The notifications of the decisions it made.
    told: Vec<Notification>,
}

fn effect(before: &Rollout, t: &Transition) -> Effect {
    let r = &t.rollout;
    let new = r.decisions.iter().filter(|d| d.seq >= before.decisions_made);
    Effect {
        before: before.desired(),
        after: r.desired(),
        told: new.filter_map(|d| Notification::of(r, d)).collect(),
    }
}

/// Feeds inputs at 30 s spacing from t = 0; returns the final rollout and each accepted
/// input's effect.
fn run(inputs: &[Input]) -> (Rollout, Vec<Effect>) {
    let mut r = new_rollout();
    let mut effects = Vec::new();
    for (i, input) in inputs.iter().enumerate() {
        if let Ok(t) = step(&r, input, at(30 * i as i64)) {
            effects.push(effect(&r, &t));
            r = t.rollout;
        }
    }
    (r, effects)
}

/// The canary weights the platform was asked to set, in order.
fn weights(effects: &[Effect]) -> Vec<u8> {
    effects.iter().filter(|e| e.after.weight != e.before.weight).map(|e| e.after.weight).collect()
}

/// Whether an effect asks the platform to make the canary stable.
fn promotes(e: &Effect) -> bool {
    e.after.promote && !e.before.promote
}

/// Everything people were told, in order.
fn told(effects: &[Effect]) -> Vec<&Notification> {
    effects.iter().flat_map(|e| &e.told).collect()
}

/// The canary up, taking `weight` percent.
fn up(weight: u8) -> Desired {
    Desired { weight, canary: Scale::Up, promote: false }
}

/// No traffic to the canary, its pods scaled down.
const DOWN: Desired = Desired { weight: 0, canary: Scale::Down, promote: false };

fn healthy() -> Input {
    Input::Interval(errors((100.0, 1.0), (900.0, 9.0)))
}

#[test]
fn a_good_canary_walks_every_step_and_is_promoted() {
    let mut inputs = vec![Input::Start];
    inputs.extend(std::iter::repeat_with(healthy).take(8));
    let (r, effects) = run(&inputs);
    assert_eq!(r.phase, Phase::Promoting);
    assert_eq!(weights(&effects), [10, 50, 100]);
    assert_eq!(effects.iter().filter(|e| promotes(e)).count(), 1);
    assert_eq!(r.desired(), Desired { weight: 100, canary: Scale::Up, promote: true });
    let r = step(&r, &Input::PromotionDone, at(1000)).unwrap().rollout;
    assert_eq!(r.phase, Phase::Succeeded);
    let decisions: Vec<&str> = r.decisions.iter().map(|d| d.action.name()).collect();
    assert_eq!(decisions, ["started", "advanced", "promoting", "promoted"]);
    assert!(r.decisions[1].evidence.iter().all(|v| v.outcome == canaryd::judge::Outcome::Pass));
}

#[test]
fn a_step_waits_for_its_duration() {
    // 1m steps at 30s intervals: the first analysed interval (t=30s) cannot advance.
    let (r, effects) = run(&[Input::Start, healthy()]);
    assert_eq!((r.phase, r.weight), (Phase::Progressing, 10));
    assert_eq!(weights(&effects), [10]);
    let [start, interval] = &effects[..] else { panic!("two inputs taken: {effects:?}") };
    assert_eq!((start.before.weight, start.after), (0, up(10)));
    let [started] = &start.told[..] else { panic!("the start told people once: {start:?}") };
    assert_eq!(started.event, EventKind::Started);
    assert_eq!(
        interval,
        &Effect { before: up(10), after: up(10), told: vec![] },
        "the interval changed nothing"
    );
    // The next evaluation is derived from the persisted state: one interval after the last.
    assert_eq!(r.next_evaluation(), Some(at(60)));
    assert_eq!(r.last_evaluation, Some(at(30)));
}

#[test]
fn a_firing_alert_rolls_back_at_once() {
    let mut obs = errors((100.0, 1.0), (900.0, 9.0));
    obs.firing_alerts.insert("ErrorBudgetBurn".into());
    let (r, effects) = run(&[Input::Start, Input::Interval(obs)]);
    assert_eq!(r.phase, Phase::RollingBack);
    // The interval that saw the alert takes the traffic off and the canary down.
    let last = effects.last().unwrap();
    assert_eq!((last.before, last.after), (up(10), DOWN));
    assert_eq!(r.rollback, Some(RollbackReason::Trigger { triggers: vec!["budget".into()] }));
    let [rolled_back] = &last.told[..] else { panic!("one rollback told: {last:?}") };
    assert_eq!(rolled_back.event, EventKind::RolledBack);
    assert_eq!(rolled_back.triggers[0].trigger, "budget");
    assert_eq!(rolled_back.triggers[0].detail, "alert ErrorBudgetBurn is firing");
}

#[test]
fn a_metric_trigger_needs_enough_requests() {
    // 1 error in 2 requests is 50%, but two requests say nothing.
    let (r, _) = run(&[Input::Start, Input::Interval(errors((2.0, 1.0), (900.0, 9.0)))]);
    assert_eq!(r.phase, Phase::Progressing);
    let (r, _) = run(&[Input::Start, Input::Interval(errors((100.0, 30.0), (900.0, 9.0)))]);
    assert_eq!(r.phase, Phase::RollingBack);
    assert!(r.decisions.last().unwrap().reason.contains("hard-limit: error-ratio canary value 0.3000 > 0.2"));
}

#[test]
fn health_checks_roll_back_after_consecutive_failures_only() {
    let probe = |ok: bool| {
        let mut obs = errors((100.0, 1.0), (900.0, 9.0));
        obs.health.insert("health".into(), ok);
        Input::Interval(obs)
    };
    let (r, _) = run(&[Input::Start, probe(false), probe(false), probe(true), probe(false), probe(false)]);
    assert_ne!(r.phase, Phase::RollingBack, "the streak was broken");
    assert!(r.decisions.iter().all(|d| d.action != DecisionKind::RolledBack));
    let (r, _) = run(&[Input::Start, probe(false), probe(false), probe(false)]);
    assert_eq!(r.phase, Phase::RollingBack);
    assert!(r.decisions.last().unwrap().reason.contains("3 consecutive failed health checks"));
}

/// The errors policy with only its point (ratio) test: no sequential test can roll back
/// first, so the failure limit is the only way out.
fn ratio_only() -> Rollout {
    let spec = ERRORS_SPEC
        .replace("    - {name: errors, template: http-error-rate, test: sequential, alpha: 0.05}\n", "");
    Rollout::new(RolloutId { namespace: "t".into(), name: "web".into() }, "v2", plan(&spec))
}

/// Feeds inputs to `r` at the given times.
fn run_at(mut r: Rollout, inputs: &[(i64, Input)]) -> (Rollout, Vec<Effect>) {
    let mut effects = Vec::new();
    for (t, input) in inputs {
        let next = step(&r, input, at(*t)).unwrap();
        effects.push(effect(&r, &next));
        r = next.rollout;
    }
    (r, effects)
}

#[test]
fn failed_checks_reaching_the_limit_roll_back() {
    // 4x the baseline's error rate fails the ratio test (max 3) and stays under the
    // 20% hard limit.
    let bad = || Input::Interval(errors((100.0, 4.0), (900.0, 9.0)));
    let (r, _) = run_at(ratio_only(), &[(0, Input::Start), (30, bad())]);
    assert_eq!((r.phase, r.failed_checks), (Phase::Progressing, 1));
    let (r, effects) = run_at(ratio_only(), &[(0, Input::Start), (30, bad()), (60, healthy()), (90, bad())]);
    assert_eq!(r.phase, Phase::RollingBack);
    let downs: Vec<usize> = (0..effects.len()).filter(|i| effects[*i].after == DOWN).collect();
    assert_eq!(downs, [3], "the second failed check, and only it, took the canary out");
    let events: Vec<EventKind> = told(&effects).iter().map(|n| n.event).collect();
    assert_eq!(events, [EventKind::Started, EventKind::RolledBack]);
    assert_eq!(r.rollback, Some(RollbackReason::FailureLimit { failed_checks: 2 }));
    assert!(r.decisions.last().unwrap().reason.starts_with("2 failed checks reached the limit of 2"));
}

#[test]
fn a_failed_check_restarts_the_steps_clock() {
    // 1m steps: without a failure the step would advance at t = 60; a failure at t = 60
    // restarts its clock, so the next chance is a passing interval at t >= 120.
    let bad = Input::Interval(errors((100.0, 4.0), (900.0, 9.0)));
    let inputs = [(0, Input::Start), (30, healthy()), (60, bad), (90, healthy()), (120, healthy())];
    let (r, _) = run_at(ratio_only(), &inputs[..4]);
    assert_eq!((r.step, r.weight), (0, 10), "not advanced at t = 90");
    let (r, _) = run_at(ratio_only(), &inputs);
    assert_eq!((r.step, r.weight), (1, 50));
    assert_eq!(r.decisions.last().unwrap().at, at(120));
}

#[test]
fn a_sequential_regression_rolls_back_conclusively_with_its_evidence() {
    // 2x errors: the ratio test passes (max 3), only the sequential test can see it.
    let doubled = || Input::Interval(errors((2000.0, 40.0), (2000.0, 20.0)));
    let mut inputs = vec![Input::Start];
    inputs.extend(std::iter::repeat_with(doubled).take(30));
    let (r, effects) = run(&inputs);
    assert_eq!(r.phase, Phase::RollingBack);
    assert_eq!(effects.last().unwrap().after, DOWN);
    let Some(rollback) = told(&effects).into_iter().find(|n| n.event == EventKind::RolledBack) else {
        panic!("no rollback told")
    };
    assert_eq!(r.rollback, Some(RollbackReason::Regression { metrics: vec!["errors".into()] }));
    let v = rollback.evidence.iter().find(|v| v.metric == "errors").unwrap();
    assert!(v.conclusive);
    assert!(v.evidence.p_value.unwrap() <= 0.05);
    assert!(
        v.evidence.cumulative.as_ref().unwrap().canary_events
            > v.evidence.cumulative.as_ref().unwrap().baseline_events
    );
}

#[test]
fn no_data_is_never_a_pass_and_rolls_back_at_the_inconclusive_limit() {
    use canaryd::judge::Outcome;
    let silent = || Input::Interval(IntervalObservations::default());
    let mut inputs = vec![Input::Start];
    inputs.extend(std::iter::repeat_with(silent).take(10));
    // Every interval judged, metric by metric: each of the two tests (sequential and
    // ratio) finds no data and says so; neither ever passes. The policy's
    // inconclusiveLimit is 3, so the third such interval is the last one judged.
    let judged: Vec<IntervalRecord> = transitions(&inputs).into_iter().filter_map(|t| t.3).collect();
    assert_eq!(judged.iter().map(|i| i.at).collect::<Vec<_>>(), [at(30), at(60), at(90)]);
    for interval in &judged {
        let outcomes: Vec<(&str, Outcome)> =
            interval.verdicts.iter().map(|v| (v.metric.as_str(), v.outcome)).collect();
        assert_eq!(
            outcomes,
            [("errors", Outcome::Inconclusive), ("error-ratio", Outcome::Inconclusive)],
            "at {}: {:?}",
            interval.at,
            interval.verdicts
        );
        for v in &interval.verdicts {
            assert!(v.reason.starts_with("no data"), "{} at {}: {}", v.metric, interval.at, v.reason);
        }
    }
    let (r, effects) = run(&inputs);
    assert_eq!(r.phase, Phase::RollingBack);
    assert_eq!(weights(&effects), [10, 0]);
    assert_eq!(effects.last().unwrap().after, DOWN);
    assert_eq!(r.rollback, Some(RollbackReason::InconclusiveLimit { intervals: 3 }));
    assert!(told(&effects).iter().any(|n| n.event == EventKind::RolledBack));
}

#[test]
fn commands_are_valid_only_from_their_phases() {
    let r = new_rollout();
    let cmd = |c| Input::Command { command: c, by: "alice".into() };
    let err = step(&r, &cmd(Command::Pause), at(0)).unwrap_err();
    assert_eq!(
        err.to_string(),
        "rollout t/web: cannot pause a rollout that is pending: only when progressing"
    );
    assert!(matches!(err, EngineError::Refused { .. }));
    let r = step(&r, &Input::Start, at(0)).unwrap().rollout;
    let paused = step(&r, &cmd(Command::Pause), at(10)).unwrap().rollout;
    assert_eq!(paused.phase, Phase::Paused);
    assert!(step(&paused, &cmd(Command::Pause), at(11)).is_err());
    // Paused: analysis does not advance, even after the step duration.
    let still = step(&paused, &healthy(), at(500)).unwrap().rollout;
    assert_eq!((still.phase, still.weight), (Phase::Paused, 10));
    let resumed = step(&still, &cmd(Command::Resume), at(510)).unwrap();
    assert_eq!(resumed.rollout.phase, Phase::Progressing);
    let promoted = step(&resumed.rollout, &cmd(Command::Promote), at(520)).unwrap();
    assert_eq!(promoted.rollout.phase, Phase::Promoting);
    assert!(promotes(&effect(&resumed.rollout, &promoted)));
    assert!(step(&promoted.rollout, &cmd(Command::Abort), at(530)).is_err());
    let aborted = step(&r, &cmd(Command::Abort), at(20)).unwrap();
    assert_eq!(aborted.rollout.phase, Phase::RollingBack);
    assert_eq!(aborted.rollout.decisions.last().unwrap().reason, "aborted by alice");
    assert!(step(&aborted.rollout, &Input::Start, at(30)).is_err());
    // The platform's confirmation ends it as an abort, not as a rollback.
    let done = step(&aborted.rollout, &Input::RollbackDone, at(40)).unwrap().rollout;
    assert_eq!((done.phase, done.finished_at), (Phase::Aborted, Some(at(40))));
    assert!(!done.rolled_back());
}

#[test]
fn a_paused_rollout_still_rolls_back_on_a_trigger() {
    let r = step(&new_rollout(), &Input::Start, at(0)).unwrap().rollout;
    let r = step(&r, &Input::Command { command: Command::Pause, by: "bob".into() }, at(1)).unwrap().rollout;
    let mut obs = errors((100.0, 1.0), (900.0, 9.0));
    obs.firing_alerts.insert("ErrorBudgetBurn".into());
    assert_eq!(step(&r, &Input::Interval(obs), at(30)).unwrap().rollout.phase, Phase::RollingBack);
}

#[test]
fn a_workload_gone_rolls_back_a_rollout_still_carrying_traffic_and_leaves_one_leaving_or_done() {
    let gone = || Input::WorkloadGone { detail: "Deployment t/web deleted".into() };
    let cmd = |command| Input::Command { command, by: "bob".into() };
    let started = step(&new_rollout(), &Input::Start, at(0)).unwrap().rollout;
    let paused = step(&started, &cmd(Command::Pause), at(1)).unwrap().rollout;
    let promoting = step(&started, &cmd(Command::Promote), at(1)).unwrap().rollout;
    assert_eq!(promoting.phase, Phase::Promoting);
    for r in [&new_rollout(), &started, &paused, &promoting] {
        let t = step(r, &gone(), at(30)).unwrap();
        assert_eq!(t.rollout.phase, Phase::RollingBack, "from {:?}", r.phase);
        assert_eq!(t.rollout.desired(), DOWN, "from {:?}", r.phase);
        let reason = RollbackReason::WorkloadGone { detail: "Deployment t/web deleted".into() };
        assert_eq!(t.rollout.rollback, Some(reason));
        let decision = t.rollout.decisions.last().unwrap();
        assert_eq!(decision.action, DecisionKind::RolledBack);
        assert!(decision.reason.contains("Deployment t/web deleted"), "{}", decision.reason);
        let told: Vec<EventKind> = effect(r, &t).told.iter().map(|n| n.event).collect();
        assert_eq!(told, [EventKind::RolledBack], "from {:?}", r.phase);
    }
    // Already leaving, or finished: nothing to undo, nothing decided.
    let rolling_back = step(&started, &cmd(Command::Abort), at(1)).unwrap().rollout;
    let rolled_back = step(&rolling_back, &Input::RollbackDone, at(2)).unwrap().rollout;
    let promoted = step(&promoting, &Input::PromotionDone, at(2)).unwrap().rollout;
    for r in [&rolling_back, &rolled_back, &promoted] {
        assert_eq!(&step(r, &gone(), at(30)).unwrap().rollout, r, "from {:?}", r.phase);
    }
}

#[test]
fn a_canary_that_cannot_run_rolls_back_with_the_platforms_reason_unless_already_leaving_or_done() {
    let detail = "canary Deployment t/web: progress deadline exceeded: ReplicaSet \"web-5d9\" has timed out progressing.";
    let failed = || Input::CanaryFailed { detail: detail.into() };
    let cmd = |command| Input::Command { command, by: "bob".into() };
    let started = step(&new_rollout(), &Input::Start, at(0)).unwrap().rollout;
    let paused = step(&started, &cmd(Command::Pause), at(1)).unwrap().rollout;
    for r in [&started, &paused] {
        let t = step(r, &failed(), at(30)).unwrap();
        assert_eq!(t.rollout.phase, Phase::RollingBack, "from {:?}", r.phase);
        assert_eq!(t.rollout.desired(), DOWN, "from {:?}", r.phase);
        assert_eq!(t.rollout.rollback, Some(RollbackReason::CanaryFailed { detail: detail.into() }));
        assert_eq!(t.rollout.rollback.as_ref().unwrap().label(), "canary-failed");
        let decision = t.rollout.decisions.last().unwrap();
        assert_eq!(decision.action, DecisionKind::RolledBack);
        assert!(
            decision.reason.contains("never became ready") && decision.reason.contains(detail),
            "{}",
            decision.reason
        );
        let told: Vec<EventKind> = effect(r, &t).told.iter().map(|n| n.event).collect();
        assert_eq!(told, [EventKind::RolledBack], "from {:?}", r.phase);
    }
    let rolling_back = step(&started, &cmd(Command::Abort), at(1)).unwrap().rollout;
    let rolled_back = step(&rolling_back, &Input::RollbackDone, at(2)).unwrap().rollout;
    for r in [&rolling_back, &rolled_back] {
        assert_eq!(&step(r, &failed(), at(30)).unwrap().rollout, r, "from {:?}", r.phase);
    }
}

#[test]
fn a_rollback_holds_weight_zero_with_the_canary_down_until_the_platform_confirms() {
    let mut obs = errors((100.0, 1.0), (900.0, 9.0));
    obs.firing_alerts.insert("ErrorBudgetBurn".into());
    let (r, _) = run(&[Input::Start, Input::Interval(obs)]);
    assert_eq!(r.phase, Phase::RollingBack);
    assert_eq!(r.desired(), DOWN);
    assert_eq!(r.next_evaluation(), None, "nothing is analysed while rolling back");
    // Late observations change nothing; only the confirmation ends the phase.
    let late = step(&r, &healthy(), at(90)).unwrap();
    assert_eq!(late.rollout, r, "late observations change nothing");
    assert!(step(&r, &Input::PromotionDone, at(90)).is_err());
    let done = step(&r, &Input::RollbackDone, at(95)).unwrap();
    assert_eq!(done.rollout.phase, Phase::RolledBack);
    assert!(done.rollout.rolled_back());
    assert_eq!(done.rollout.desired(), DOWN);
    assert_eq!(done.rollout.decisions.last().unwrap().action, DecisionKind::RollbackFinished);
    assert!(effect(&r, &done).told.is_empty(), "the rollback was announced when decided, not again");
    assert!(step(&done.rollout, &Input::RollbackDone, at(96)).is_err());
}

#[test]
fn a_new_revision_mid_rollout_restarts_the_analysis_and_says_why() {
    let mut inputs = vec![Input::Start];
    inputs.extend(std::iter::repeat_with(healthy).take(3));
    let (r, _) = run(&inputs);
    assert_eq!((r.phase, r.weight), (Phase::Progressing, 50));
    let t = step(&r, &Input::Superseded { revision: "v3".into() }, at(200)).unwrap();
    let n = &t.rollout;
    assert_eq!((n.phase, n.step, n.weight, n.revision.as_str()), (Phase::Progressing, 0, 10, "v3"));
    assert!(n.metrics.is_empty() && n.failed_checks == 0, "no evidence carries over to the new revision");
    let e = effect(&r, &t);
    assert_eq!((e.before, e.after), (up(50), up(10)), "traffic back to step 1");
    let d = n.decisions.last().unwrap();
    assert_eq!((d.action, d.revision.as_str()), (DecisionKind::Superseded, "v3"));
    assert!(d.reason.contains("v3 replaced v2 while progressing at 50%"), "{}", d.reason);
    assert_eq!(n.next_evaluation(), Some(at(230)));
    // The same revision again is no news.
    let same = step(n, &Input::Superseded { revision: "v3".into() }, at(201)).unwrap();
    assert_eq!(&same.rollout, n);
    // A rollback in progress is also superseded: the new canary gets its own analysis.
    let mut obs = errors((100.0, 1.0), (900.0, 9.0));
    obs.firing_alerts.insert("ErrorBudgetBurn".into());
    let rolling = step(n, &Input::Interval(obs), at(230)).unwrap().rollout;
    let again = step(&rolling, &Input::Superseded { revision: "v4".into() }, at(240)).unwrap().rollout;
    assert_eq!((again.phase, again.weight, again.rollback.is_none()), (Phase::Progressing, 10, true));
}

#[test]
fn notifications_carry_a_key_per_decision_and_its_evidence() {
    let mut obs = errors((100.0, 1.0), (900.0, 9.0));
    obs.firing_alerts.insert("ErrorBudgetBurn".into());
    let (r, effects) = run(&[Input::Start, healthy(), Input::Interval(obs)]);
    let notes = told(&effects);
    let keys: Vec<u64> = notes.iter().map(|n| n.key.decision).collect();
    assert_eq!(keys, [0, 1], "one notification per decision, keyed by its place");
    assert!(notes.iter().all(|n| n.key.rollout == "t/web" && n.key.revision == "v2"));
    let rollback = notes[1];
    assert_eq!(rollback.event, EventKind::RolledBack);
    assert_eq!(rollback.evidence, r.decisions[1].evidence);
    assert_eq!(rollback.triggers[0].trigger, "budget");
    assert!(!rollback.evidence.is_empty());
}

// ---- properties -------------------------------------------------------------------

fn arb_input() -> impl Strategy<Value = Input> {
    // Error counts are mostly realistic (up to ~3%), one interval in ten anything at all,
    // so that runs live long enough to reach every trigger and every step.
    let counts = (0u32..400, 0u32..30, 0u32..2000, 0u32..60, prop::bool::weighted(0.1)).prop_map(
        |(cr, ce, br, be, wild)| {
            if wild {
                (cr, ce.min(cr), br, be.min(br))
            } else {
                (cr, ce % (cr / 30 + 1), br, be % (br / 30 + 1))
            }
        },
    );
    prop_oneof![
        8 => (counts, any::<bool>(), any::<bool>(), prop::option::of(any::<bool>())).prop_map(
            |((cr, ce, br, be), missing, alert, health)| {
                let mut obs = if missing {
                    IntervalObservations::default()
                } else {
                    errors((cr as f64, ce as f64), (br as f64, be as f64))
                };
                if alert && cr % 7 == 0 {
                    obs.firing_alerts.insert("ErrorBudgetBurn".into());
                }
                if let Some(h) = health {
                    obs.health.insert("health".into(), h);
                }
                Input::Interval(obs)
            }
        ),
        8 => Just(healthy()),
        1 => prop::sample::select(vec![Command::Promote, Command::Abort, Command::Pause, Command::Resume])
            .prop_map(|command| Input::Command { command, by: "prop".into() }),
        1 => Just(Input::PromotionDone),
        1 => Just(Input::RollbackDone),
        1 => Just(Input::WorkloadGone { detail: "deleted".into() }),
        1 => Just(Input::CanaryFailed { detail: "progress deadline exceeded".into() }),
    ]
}

fn arb_run() -> impl Strategy<Value = Vec<Input>> {
    prop::collection::vec(arb_input(), 0..40).prop_map(|mut v| {
        v.insert(0, Input::Start);
        v
    })
}

/// Applies inputs, keeping each accepted transition with its effect.
fn transitions(inputs: &[Input]) -> Vec<(Input, Rollout, Effect, Option<IntervalRecord>)> {
    let mut r = new_rollout();
    let mut out = Vec::new();
    for (i, input) in inputs.iter().enumerate() {
        if let Ok(t) = step(&r, input, at(30 * i as i64)) {
            let e = effect(&r, &t);
            r = t.rollout.clone();
            out.push((input.clone(), t.rollout, e, t.interval));
        }
    }
    out
}

/// Steps through `inputs` and returns, per input, the rollout before it and the result.
fn every_step(inputs: &[Input]) -> Vec<(Rollout, Input, Result<canaryd::engine::Transition, EngineError>)> {
    let mut r = new_rollout();
    let mut out = Vec::new();
    for (i, input) in inputs.iter().enumerate() {
        let result = step(&r, input, at(30 * i as i64));
        let before = r.clone();
        if let Ok(t) = &result {
            r = t.rollout.clone();
        }
        out.push((before, input.clone(), result));
    }
    out
}

/// Every kind of input, for probing a rollout that has ended.
fn every_kind_of_input() -> Vec<Input> {
    let mut all = vec![
        Input::Start,
        Input::PromotionDone,
        Input::RollbackDone,
        healthy(),
        Input::WorkloadGone { detail: "deleted".into() },
        Input::CanaryFailed { detail: "progress deadline exceeded".into() },
    ];
    let mut alert = errors((100.0, 1.0), (900.0, 9.0));
    alert.firing_alerts.insert("ErrorBudgetBurn".into());
    all.push(Input::Interval(alert));
    for command in [Command::Promote, Command::Abort, Command::Pause, Command::Resume] {
        all.push(Input::Command { command, by: "prop".into() });
    }
    all
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(300))]

    #[test]
    fn no_promotion_without_a_passing_analysis_at_every_step(inputs in arb_run()) {
        use canaryd::judge::Outcome;
        let mut intervals: Vec<IntervalRecord> = Vec::new();
        for (input, r, effect, interval) in transitions(&inputs) {
            intervals.extend(interval);
            let manual = matches!(input, Input::Command { command: Command::Promote, .. });
            if !promotes(&effect) || manual {
                continue;
            }
            // Each step was left on an interval where every metric passed, at least a step
            // duration after the step began and after its last failed check.
            let mut entered = r.started_at.unwrap();
            for d in r.decisions.iter().filter(|d| matches!(d.action, DecisionKind::Advanced | DecisionKind::Promoting)) {
                let interval = intervals.iter().find(|i| i.at == d.at).expect("the deciding interval");
                prop_assert!(interval.verdicts.iter().all(|v| v.outcome == Outcome::Pass));
                prop_assert_eq!(interval.verdicts.len(), r.plan.metrics.len());
                let last_failure = intervals
                    .iter()
                    .filter(|i| i.at > entered && i.at < d.at && i.verdicts.iter().any(|v| v.outcome == Outcome::Fail))
                    .map(|i| i.at)
                    .max();
                let clock = last_failure.unwrap_or(entered);
                let waited = d.at.duration_since(clock).as_secs();
                prop_assert!(waited >= r.plan.step_duration.as_secs() as i64, "left a step after {}s", waited);
                entered = d.at;
            }
        }
    }

    #[test]
    fn nothing_raises_the_weight_after_a_rollback(inputs in arb_run()) {
        let mut r = new_rollout();
        for (i, input) in inputs.iter().enumerate() {
            if let Ok(t) = step(&r, input, at(30 * i as i64)) {
                r = t.rollout;
            }
            if matches!(r.phase, Phase::RollingBack | Phase::RolledBack | Phase::Aborted) {
                // Probe the ended rollout with every kind of input, not only the run's own.
                for probe in every_kind_of_input() {
                    if let Ok(t) = step(&r, &probe, at(30 * i as i64 + 1)) {
                        prop_assert_eq!(effect(&r, &t).after, DOWN, "{:?} raised the weight", probe);
                        prop_assert_eq!(t.rollout.weight, 0);
                        prop_assert!(matches!(t.rollout.phase, Phase::RollingBack | Phase::RolledBack | Phase::Aborted));
                    }
                }
                break;
            }
        }
    }

    #[test]
    fn a_met_trigger_always_rolls_back_and_nothing_else_is_a_trigger(inputs in arb_run()) {
        // An independent model of the policy's three triggers: the alert firing, three
        // failed health checks in a row, and the canary's error rate above 20% on at least
        // minSampleSize (20) requests.
        let mut failures_in_a_row = 0;
        for (before, input, result) in every_step(&inputs) {
            let (Input::Interval(obs), Ok(t)) = (&input, &result) else { continue };
            if !matches!(before.phase, Phase::Progressing | Phase::Paused) {
                continue;
            }
            if let Some(&healthy) = obs.health.get("health") {
                failures_in_a_row = if healthy { 0 } else { failures_in_a_row + 1 };
            }
            let over_limit = obs.metrics.get("error-ratio").and_then(|o| o.canary.clone()).is_some_and(|c| {
                matches!(c, canaryd::judge::Sample::Counts { requests, events } if requests >= 20.0 && events / requests > 0.2)
            });
            let expected = obs.firing_alerts.contains("ErrorBudgetBurn") || failures_in_a_row >= 3 || over_limit;
            let told_rollback = effect(&before, t).told.iter().any(|n| n.event == EventKind::RolledBack);
            let by_trigger =
                told_rollback && matches!(t.rollout.rollback, Some(RollbackReason::Trigger { .. }));
            prop_assert_eq!(by_trigger, expected, "model and engine disagree on {:?}", obs);
            if expected {
                prop_assert_eq!(t.rollout.phase, Phase::RollingBack);
                prop_assert_eq!(t.rollout.desired(), DOWN);
            }
        }
    }

    #[test]
    fn state_round_trips_through_serde(inputs in arb_run()) {
        for (_, r, _, _) in transitions(&inputs) {
            let json = serde_json::to_string(&r).unwrap();
            let back: Rollout = serde_json::from_str(&json).unwrap();
            prop_assert_eq!(back, r);
        }
    }

    #[test]
    fn replaying_the_same_inputs_gives_the_same_effects(inputs in arb_run()) {
        let first: Vec<(Rollout, Effect)> = transitions(&inputs).into_iter().map(|t| (t.1, t.2)).collect();
        let second: Vec<(Rollout, Effect)> = transitions(&inputs).into_iter().map(|t| (t.1, t.2)).collect();
        prop_assert_eq!(first, second);
    }
}

#[test]
fn a_failed_promotion_rolls_back_and_a_weight_that_cannot_be_set_pauses() {
    let failed =
        |call: &str| Input::PlatformFailed { call: call.into(), error: "hook exited with code 3".into() };
    let mut inputs = vec![Input::Start];
    inputs.extend(std::iter::repeat_with(healthy).take(8));
    let (promoting, _) = run(&inputs);
    assert_eq!(promoting.phase, Phase::Promoting);
    let t = step(&promoting, &failed("promote v2"), at(1000)).unwrap();
    assert_eq!(t.rollout.phase, Phase::RollingBack);
    assert_eq!(t.rollout.desired(), Desired { weight: 0, canary: Scale::Down, promote: false });
    assert_eq!(
        t.rollout.rollback,
        Some(RollbackReason::PlatformFailed {
            call: "promote v2".into(),
            error: "hook exited with code 3".into()
        })
    );
    let d = t.rollout.decisions.last().unwrap();
    assert_eq!(d.action, DecisionKind::RolledBack);
    assert_eq!(
        d.reason,
        "promotion failed, the canary did not become stable: promote v2: hook exited with code 3"
    );
    assert!(effect(&promoting, &t).told.iter().any(|n| n.event == EventKind::RolledBack));
    let done = step(&t.rollout, &Input::RollbackDone, at(1010)).unwrap().rollout;
    assert_eq!(done.phase, Phase::RolledBack);
    assert!(done.rolled_back());

    // Progressing: the weight could not be set, so the rollout holds where it is.
    let (progressing, _) = run(&[Input::Start]);
    let t = step(&progressing, &failed("set weight 10%"), at(40)).unwrap();
    assert_eq!(t.rollout.phase, Phase::Paused);
    assert_eq!(t.rollout.desired().weight, 10);
    assert!(
        t.rollout
            .decisions
            .last()
            .unwrap()
            .reason
            .starts_with("the platform could not set weight 10%: hook exited")
    );
    // Elsewhere it is refused: a rollback in progress keeps its course, a finished one is over.
    assert!(step(&t.rollout, &failed("set weight 10%"), at(50)).is_err());
    assert!(step(&done, &failed("scale down"), at(1020)).is_err());
}

#[test]
fn stored_decisions_load_and_are_written_back_with_the_same_names() {
    // Every name a decision was ever stored under, as states and records on disk have it.
    let stored = [
        "started",
        "advanced",
        "promoting",
        "promoted",
        "rolled-back",
        "aborted",
        "rollback-finished",
        "paused",
        "resumed",
        "superseded",
        "stalled",
        "waiting",
        "approved",
        "baking",
        "reverted",
    ];
    for name in stored {
        let text = format!(
            r#"{{"seq":3,"revision":"v2","at":"2024-05-01T12:00:00Z","action":"{name}","weight":10,"reason":"why"}}"#
        );
        let d: canaryd::engine::Decision = serde_json::from_str(&text).unwrap();
        assert_eq!(d.action.name(), name);
        assert_eq!(d.action.to_string(), name);
        assert_eq!(serde_json::to_string(&d).unwrap(), text, "written back unchanged");
    }
    assert_eq!(DecisionKind::ALL.map(DecisionKind::name), stored, "no kind without a stored name");
    let unknown = r#"{"at":"2024-05-01T12:00:00Z","action":"exploded","weight":0,"reason":""}"#;
    assert!(serde_json::from_str::<canaryd::engine::Decision>(unknown).is_err());
}
