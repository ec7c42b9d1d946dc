//! Gates on steps and the bake at 100%, driven through the engine's public API on
//! traffic that looks like a service's: about a thousand requests per interval, varying
//! from one to the next, and intervals that end a few seconds early or late.
//!
//! Every run here starts at t = 0 and analyses interval `k` at `end(k)`: 31, 58, 92,
//! 119, 151, 183, 211, 238, 272, … s. With 1m steps, the 10% step passes at 92 s (58 s
//! is too early), and the 50% step, entered at 92 s, passes at 183 s (151 s is one
//! second short of its minute). The expected times below follow from that by hand.

mod support;

use canaryd::engine::plan::Gate;
use canaryd::engine::{
    Command, DecisionKind, Desired, EngineError, EventKind, GateAnswer, Input, IntervalObservations,
    IntervalRecord, Notification, Phase, RollbackReason, Rollout, RolloutId, Scale, step,
};
use canaryd::judge::Outcome;
use support::engine::{at, errors as counts, plan};

/// How many seconds each interval ends off the 30 s grid, by `k % 6`.
const JITTER: [i64; 6] = [3, 1, -2, 2, -1, 1];

/// When interval `k` (from 1) ends, in seconds after the start.
fn end(k: u64) -> i64 {
    30 * k as i64 + JITTER[(k % 6) as usize]
}

/// Requests the service takes in interval `k`: 940 to 1,070.
fn requests(k: u64) -> f64 {
    (940 + (k * 7919) % 131) as f64
}

/// Interval `k`'s counts for both metrics: the service's requests split at `weight`%,
/// the canary erring at `canary_rate`, the baseline at 1%, each a little off the exact
/// rate as real counts are.
fn traffic(k: u64, weight: u8, canary_rate: f64) -> IntervalObservations {
    let total = requests(k);
    let canary = (total * f64::from(weight) / 100.0).round();
    let wobble = (k % 3) as f64 - 1.0;
    let errors = |n: f64, rate: f64| ((n * rate).round() + wobble).clamp(0.0, n);
    counts((canary, errors(canary, canary_rate)), (total - canary, errors(total - canary, 0.01)))
}

/// A policy spec: steps 10/50/100 of a minute each, analysed every 30 s, with `traffic`
/// and `analysis` lines added to those sections and `metrics` judged.
fn spec(traffic: &str, analysis: &str, metrics: &str, triggers: &str) -> String {
    format!(
        "selector: {{matchLabels: {{app: web}}}}
traffic:
  steps: [10, 50, 100]
  stepDuration: 1m
{traffic}analysis:
  interval: 30s
  failureLimit: 2
  inconclusiveLimit: 3
  minSampleSize: 20
{analysis}  metrics:
{metrics}triggers:
  - {{name: budget, alert: ErrorBudgetBurn}}
  - {{name: hard-limit, metric: error-ratio, above: 0.2}}
{triggers}"
    )
}

/// A sequential test against the baseline and a ratio test on the same error counts.
const COMPARED: &str = "    - {name: errors, template: http-error-rate, test: sequential, alpha: 0.05}
    - {name: error-ratio, template: http-error-rate, test: ratio, max: 3.0}
";

/// The ratio test alone: only the failure limit (or a trigger) rolls it back.
const RATIO_ONLY: &str = "    - {name: error-ratio, template: http-error-rate, test: ratio, max: 3.0}\n";

/// A sequential bound on the canary alone (at most 5% errors) and the ratio test.
const BOUNDED: &str =
    "    - {name: errors, template: http-error-rate, test: sequential, alpha: 0.05, max: 0.05}
    - {name: error-ratio, template: http-error-rate, test: ratio, max: 3.0}
";

/// A threshold on the canary alone (at most 5% errors) and the ratio test.
const THRESHOLD: &str = "    - {name: errors, template: http-error-rate, test: threshold, max: 0.05}
    - {name: error-ratio, template: http-error-rate, test: ratio, max: 3.0}
";

fn approval_at(weight: u8, timeout: &str) -> String {
    spec(
        &format!("  gates: [{{at: {weight}, type: approval}}]\n  gateTimeout: {timeout}\n"),
        "",
        COMPARED,
        "",
    )
}

fn webhook_at_10() -> String {
    spec(
        "  gates: [{at: 10, type: webhook, url: 'http://127.0.0.1:9/gate', timeout: 5s}]\n  gateTimeout: 5m\n",
        "",
        COMPARED,
        "",
    )
}

/// A 10-minute bake, watched by `metrics`.
fn baked(metrics: &str) -> String {
    spec("", "  bake: 10m\n", metrics, "  - {name: relative, metric: error-ratio, ratioAbove: 3}\n")
}

/// The canary up, taking `weight` percent.
fn up(weight: u8) -> Desired {
    Desired { weight, canary: Scale::Up, promote: false }
}

/// No traffic to the canary, its pods scaled down.
const DOWN: Desired = Desired { weight: 0, canary: Scale::Down, promote: false };

/// A rollout driven one input at a time, with everything it told and analysed.
struct Run {
    rollout: Rollout,
    /// Intervals fed so far: the next is `k + 1`.
    k: u64,
    told: Vec<Notification>,
    intervals: Vec<IntervalRecord>,
}

impl Run {
    /// A rollout of `spec`, started at t = 0.
    fn start(spec: &str) -> Run {
        let id = RolloutId { namespace: "shop".into(), name: "web".into() };
        Run::resume(Rollout::new(id, "v2", plan(spec)), 0).fed(Input::Start, 0)
    }

    /// Goes on with a rollout (as a restarted daemon does) after `k` intervals.
    fn resume(rollout: Rollout, k: u64) -> Run {
        Run { rollout, k, told: Vec::new(), intervals: Vec::new() }
    }

    fn fed(mut self, input: Input, t: i64) -> Run {
        self.feed(input, t).expect("accepted");
        self
    }

    /// Applies `input` at `t` seconds, keeping what it told and analysed.
    fn feed(&mut self, input: Input, t: i64) -> Result<(), EngineError> {
        let next = step(&self.rollout, &input, at(t))?;
        let r = &next.rollout;
        let new = r.decisions.iter().filter(|d| d.seq >= self.rollout.decisions_made);
        self.told.extend(new.filter_map(|d| Notification::of(r, d)));
        self.intervals.extend(next.interval);
        self.rollout = next.rollout;
        Ok(())
    }

    /// Feeds the next interval, observed as `obs`; returns when it ended.
    fn interval(&mut self, obs: IntervalObservations) -> i64 {
        self.k += 1;
        let t = end(self.k);
        self.feed(Input::Interval(obs), t).expect("an interval is taken");
        t
    }

    /// Feeds the next interval of traffic at the rollout's weight, the canary erring at
    /// `rate`.
    fn erring(&mut self, rate: f64) -> i64 {
        let obs = traffic(self.k + 1, self.rollout.weight, rate);
        self.interval(obs)
    }

    /// Feeds the next interval of healthy traffic: the canary errs as the baseline does.
    fn healthy(&mut self) -> i64 {
        self.erring(0.01)
    }

    /// Feeds healthy intervals while `keep` holds of the rollout, at most `n`.
    fn healthy_while(&mut self, n: usize, keep: impl Fn(&Rollout) -> bool) {
        for _ in 0..n {
            if !keep(&self.rollout) {
                return;
            }
            self.healthy();
        }
    }

    /// An operator's command at `t`.
    fn command(&mut self, command: Command, by: &str, t: i64) -> Result<(), EngineError> {
        self.feed(Input::Command { command, by: by.into() }, t)
    }

    /// The decisions so far, by name.
    fn actions(&self) -> Vec<&'static str> {
        self.rollout.decisions.iter().map(|d| d.action.name()).collect()
    }

    fn last(&self) -> &canaryd::engine::Decision {
        self.rollout.decisions.last().expect("a decision")
    }

    fn phase(&self) -> (Phase, u8) {
        (self.rollout.phase, self.rollout.weight)
    }
}

/// The reason a refused command gives.
fn refusal(result: Result<(), EngineError>) -> String {
    match result {
        Err(EngineError::Refused { why, .. }) => why,
        other => panic!("not refused: {other:?}"),
    }
}

/// A run of `spec` brought, on healthy traffic, to the gate its 50% step holds at.
fn waiting_at_50(spec: &str) -> Run {
    let mut run = Run::start(spec);
    for _ in 0..6 {
        run.healthy();
    }
    assert_eq!((run.phase(), run.k), ((Phase::Waiting, 50), 6), "{:?}", run.actions());
    run
}

#[test]
fn a_gated_step_waits_once_its_analysis_passed_and_the_analysis_goes_on() {
    let mut run = Run::start(&approval_at(50, "30m"));
    for _ in 0..5 {
        run.healthy();
    }
    // At 151 s the 50% step has held 59 s of its minute: not passed yet.
    assert_eq!(run.phase(), (Phase::Progressing, 50));
    assert_eq!(run.healthy(), 183);
    assert_eq!(run.phase(), (Phase::Waiting, 50));
    assert_eq!(run.actions(), ["started", "advanced", "waiting"]);
    let waiting = run.last();
    assert_eq!((waiting.at, waiting.weight), (at(183), 50));
    assert!(waiting.reason.contains("waiting for approval at 50%"), "{}", waiting.reason);
    // It waits because the step passed: its evidence is the passing interval.
    let passed: Vec<(&str, Outcome)> =
        waiting.evidence.iter().map(|v| (v.metric.as_str(), v.outcome)).collect();
    assert_eq!(passed, [("errors", Outcome::Pass), ("error-ratio", Outcome::Pass)]);
    let told = run.told.last().unwrap();
    assert_eq!((told.event, told.weight), (EventKind::Waiting, 50));
    assert_eq!(run.rollout.gate(), Some(&Gate::Approval));

    // Twenty minutes of healthy traffic, twenty times the step's duration: it neither
    // advances nor promotes, nor decides anything, and every interval is still judged.
    for _ in 0..40 {
        run.healthy();
        assert_eq!(run.phase(), (Phase::Waiting, 50), "at {}", end(run.k));
        assert_eq!(run.rollout.desired(), up(50));
    }
    assert_eq!(run.k, 46);
    assert_eq!(run.actions(), ["started", "advanced", "waiting"]);
    assert_eq!(run.rollout.intervals_analysed, 46);
    let waited = &run.intervals[6..];
    assert_eq!(waited.len(), 40);
    for interval in waited {
        let judged: Vec<(&str, Outcome)> =
            interval.verdicts.iter().map(|v| (v.metric.as_str(), v.outcome)).collect();
        assert_eq!(judged, [("errors", Outcome::Pass), ("error-ratio", Outcome::Pass)], "{interval:?}");
        assert_eq!(interval.weight, 50);
    }
    // The next interval is due one interval after the last: the analysis is scheduled on.
    assert_eq!(run.rollout.next_evaluation(), Some(at(end(46) + 30)));
}

#[test]
fn failed_checks_while_waiting_count_to_the_failure_limit() {
    let mut run = waiting_at_50(&spec("  gates: [{at: 50, type: approval}]\n", "", RATIO_ONLY, ""));
    // 4% canary errors against the baseline's 1%: 4x fails the ratio test (max 3) and
    // stays under the 20% hard limit.
    run.erring(0.04);
    assert_eq!((run.phase(), run.rollout.failed_checks), ((Phase::Waiting, 50), 1));
    run.healthy();
    assert_eq!(run.phase(), (Phase::Waiting, 50), "a healthy interval keeps it waiting");
    let t = run.erring(0.04);
    assert_eq!(run.phase(), (Phase::RollingBack, 0));
    assert_eq!(run.rollout.rollback, Some(RollbackReason::FailureLimit { failed_checks: 2 }));
    assert_eq!((run.last().action, run.last().at), (DecisionKind::RolledBack, at(t)));
    assert_eq!(run.rollout.desired(), DOWN);
    assert!(!run.actions().contains(&"approved"));
}

#[test]
fn a_canary_turning_bad_while_waiting_rolls_back_without_approval() {
    let spec = approval_at(50, "30m");
    // A regression the sequential test proves: 2.5x the baseline's errors. The ratio
    // test (max 3) and the hard limit (20%) let it through; only the running test can
    // see it, and it must before the 30-minute gate timeout (interval 66).
    let mut run = waiting_at_50(&spec);
    while run.rollout.phase == Phase::Waiting && run.k < 65 {
        run.erring(0.025);
    }
    assert_eq!(run.phase(), (Phase::RollingBack, 0), "after interval {}", run.k);
    assert_eq!(run.rollout.rollback, Some(RollbackReason::Regression { metrics: vec!["errors".into()] }));
    let rollback = run.last();
    assert_eq!(rollback.action, DecisionKind::RolledBack);
    let errors = rollback.evidence.iter().find(|v| v.metric == "errors").unwrap();
    assert!(errors.conclusive && errors.evidence.p_value.unwrap() <= 0.05, "{errors:?}");
    assert_eq!(run.rollout.desired(), DOWN);
    assert_eq!(run.told.last().unwrap().event, EventKind::RolledBack);
    assert_eq!(run.actions(), ["started", "advanced", "waiting", "rolled-back"]);

    // A firing alert rolls back at once.
    let mut run = waiting_at_50(&spec);
    let mut obs = traffic(7, 50, 0.01);
    obs.firing_alerts.insert("ErrorBudgetBurn".into());
    run.interval(obs);
    assert_eq!(run.phase(), (Phase::RollingBack, 0));
    assert_eq!(run.rollout.rollback, Some(RollbackReason::Trigger { triggers: vec!["budget".into()] }));
    assert_eq!(run.actions(), ["started", "advanced", "waiting", "rolled-back"]);

    // So does a canary over the hard limit: 30% errors.
    let mut run = waiting_at_50(&spec);
    run.erring(0.3);
    assert_eq!(run.phase(), (Phase::RollingBack, 0));
    assert_eq!(run.rollout.rollback, Some(RollbackReason::Trigger { triggers: vec!["hard-limit".into()] }));
    assert_eq!(run.rollout.desired(), DOWN);

    // And an alert arriving between intervals.
    let mut run = waiting_at_50(&spec);
    run.feed(Input::Alert { alert: "ErrorBudgetBurn".into(), detail: "burning 14x".into() }, 190).unwrap();
    assert_eq!(run.phase(), (Phase::RollingBack, 0));
    assert!(
        run.last().reason.contains("alert ErrorBudgetBurn is firing: burning 14x"),
        "{}",
        run.last().reason
    );
}

#[test]
fn an_approval_opens_the_gate_once_and_the_record_names_who_approved() {
    let mut run = Run::start(&approval_at(10, "30m"));
    run.healthy();
    // Before its step passed, there is nothing to approve.
    let why = refusal(run.command(Command::Approve, "alice@example.com", 40));
    assert!(
        why.starts_with("cannot approve a rollout that is progressing: it waits at no gate yet"),
        "{why}"
    );
    run.healthy();
    assert_eq!(run.healthy(), 92);
    assert_eq!(run.phase(), (Phase::Waiting, 10));

    run.command(Command::Approve, "alice@example.com", 100).unwrap();
    assert_eq!(run.actions(), ["started", "waiting", "approved", "advanced"]);
    let approved = &run.rollout.decisions[2];
    assert_eq!((approved.at, approved.weight), (at(100), 10));
    assert!(approved.reason.contains("approved by alice@example.com"), "{}", approved.reason);
    assert_eq!(run.phase(), (Phase::Progressing, 50));
    assert_eq!(run.rollout.desired(), up(50));
    let told: Vec<EventKind> = run.told.iter().map(|n| n.event).collect();
    assert_eq!(told, [EventKind::Started, EventKind::Waiting, EventKind::Approved, EventKind::Advanced]);
    assert!(run.told[2].summary.contains("alice@example.com"), "{}", run.told[2].summary);
    // The deployment record keeps who approved.
    let record = canaryd::record::DeploymentRecord::of(&run.rollout, Default::default());
    let json = serde_json::to_string(&record).unwrap();
    assert!(json.contains("\"action\":\"approved\"") && json.contains("approved by alice@example.com"));

    // The gate opened once: a second approval is refused, and changes nothing.
    let before = run.rollout.clone();
    let why = refusal(run.command(Command::Approve, "bob", 105));
    assert!(why.starts_with("cannot approve a rollout that is progressing"), "{why}");
    assert_eq!(run.rollout, before);

    // The 50% step, entered at 100 s, holds its own full minute: passed at 183 s, not
    // at 151 s (51 s); no gate holds it, so it goes on to the promotion.
    run.healthy();
    run.healthy();
    assert_eq!(run.phase(), (Phase::Progressing, 50));
    assert_eq!(run.healthy(), 183);
    assert_eq!(run.phase(), (Phase::Promoting, 100));
    assert_eq!(run.actions(), ["started", "waiting", "approved", "advanced", "promoting"]);
    let why = refusal(run.command(Command::Approve, "bob", 190));
    assert!(why.contains("promoting"), "{why}");
}

#[test]
fn a_webhook_gate_opens_on_an_open_answer_after_no_failed_check() {
    let answer = |open: bool, detail: &str| GateAnswer { open, detail: detail.into() };
    let with = |mut obs: IntervalObservations, gate: GateAnswer| {
        obs.gate = Some(gate);
        obs
    };
    let mut run = Run::start(&webhook_at_10());
    run.healthy();
    run.healthy();
    run.healthy();
    assert_eq!(run.phase(), (Phase::Waiting, 10));
    assert!(
        matches!(run.rollout.gate(), Some(Gate::Webhook { url, .. }) if url == "http://127.0.0.1:9/gate")
    );
    assert!(run.last().reason.contains("waiting for the gate webhook's 2xx at 10%"), "{}", run.last().reason);

    // Closed: it waits on, keeping what the webhook said.
    run.interval(with(traffic(4, 10, 0.01), answer(false, "answered 403 Forbidden")));
    assert_eq!(run.phase(), (Phase::Waiting, 10));
    assert_eq!(run.rollout.gate_answer.as_deref(), Some("answered 403 Forbidden"));
    // Open, but the interval failed a check (4x the baseline's errors): it stays shut.
    run.interval(with(traffic(5, 10, 0.04), answer(true, "answered 200 OK")));
    assert_eq!((run.phase(), run.rollout.failed_checks), ((Phase::Waiting, 10), 1));
    assert_eq!(run.actions(), ["started", "waiting"]);
    // Open after a clean interval: the gate opens and the rollout moves on at once.
    assert_eq!(run.interval(with(traffic(6, 10, 0.01), answer(true, "answered 204 No Content"))), 183);
    assert_eq!(run.actions(), ["started", "waiting", "approved", "advanced"]);
    let approved = &run.rollout.decisions[2];
    assert_eq!(approved.at, at(183));
    assert_eq!(approved.reason, "the gate at 10% opened: its webhook answered 204 No Content");
    assert_eq!(run.phase(), (Phase::Progressing, 50));
    assert_eq!(run.rollout.gate_answer, None);
    // The 50% step has no gate: entered at 183 s, it passes at 272 s (238 s is 55 s in).
    run.healthy();
    run.healthy();
    assert_eq!(run.phase(), (Phase::Progressing, 50));
    assert_eq!(run.healthy(), 272);
    assert_eq!(run.phase(), (Phase::Promoting, 100));
}

#[test]
fn a_gate_not_opened_within_the_gate_timeout_rolls_back_with_reason_gate_timeout() {
    // The webhook gate at 10% waits from 92 s with a 5-minute timeout: until 392 s.
    let mut run = Run::start(&webhook_at_10());
    for _ in 0..3 {
        run.healthy();
    }
    assert_eq!(run.phase(), (Phase::Waiting, 10));
    while run.k < 13 {
        let mut obs = traffic(run.k + 1, 10, 0.01);
        obs.gate = Some(GateAnswer { open: false, detail: "answered 503 Service Unavailable".into() });
        run.interval(obs);
    }
    // 391 s: one second short.
    assert_eq!((end(13), run.phase()), (391, (Phase::Waiting, 10)));
    let mut obs = traffic(14, 10, 0.01);
    obs.gate = Some(GateAnswer { open: false, detail: "answered 503 Service Unavailable".into() });
    assert_eq!(run.interval(obs), 418);
    assert_eq!(run.phase(), (Phase::RollingBack, 0));
    let reason = RollbackReason::GateTimeout { gate: "webhook".into(), waited_seconds: 418 - 92 };
    assert_eq!(run.rollout.rollback.as_ref(), Some(&reason));
    assert_eq!(reason.label(), "gate-timeout");
    let rollback = run.last();
    assert_eq!(rollback.action, DecisionKind::RolledBack);
    assert!(rollback.reason.contains("not opened within the gate timeout of 5m"), "{}", rollback.reason);
    assert!(
        rollback.reason.contains("its webhook last answered 503 Service Unavailable"),
        "{}",
        rollback.reason
    );
    assert_eq!(run.rollout.desired(), DOWN);
    run.feed(Input::RollbackDone, 420).unwrap();
    assert!(run.rollout.phase == Phase::RolledBack && run.rollout.rolled_back());

    // An approval gate at 50% waits from 183 s for 30 minutes: until 1983 s, which is
    // when interval 66 ends.
    let mut run = waiting_at_50(&approval_at(50, "30m"));
    run.healthy_while(59, |r| r.phase == Phase::Waiting);
    assert_eq!((run.k, end(65), run.phase()), (65, 1951, (Phase::Waiting, 50)));
    assert_eq!(run.healthy(), 1983);
    assert_eq!(run.phase(), (Phase::RollingBack, 0));
    let reason = RollbackReason::GateTimeout { gate: "approval".into(), waited_seconds: 1800 };
    assert_eq!(run.rollout.rollback, Some(reason));
    assert!(
        run.last().reason.contains("the approval gate at 50% was not opened within the gate timeout of 30m")
    );
    assert_eq!(run.actions(), ["started", "advanced", "waiting", "rolled-back"]);
}

#[test]
fn a_gate_survives_a_restart_mid_wait() {
    let mut run = Run::start(&webhook_at_10());
    for _ in 0..3 {
        run.healthy();
    }
    let mut obs = traffic(4, 10, 0.01);
    obs.gate = Some(GateAnswer { open: false, detail: "no answer within 5s".into() });
    run.interval(obs);
    assert_eq!(run.phase(), (Phase::Waiting, 10));

    // Stored as the daemon's file store writes it, and read back.
    let stored = serde_json::to_vec_pretty(&run.rollout).unwrap();
    let restored: Rollout = serde_json::from_slice(&stored).unwrap();
    assert_eq!(restored, run.rollout);
    assert_eq!(restored.phase, Phase::Waiting);
    assert_eq!(restored.waiting_since, Some(at(92)));
    assert_eq!(restored.gate_answer.as_deref(), Some("no answer within 5s"));
    let gate =
        Gate::Webhook { url: "http://127.0.0.1:9/gate".into(), timeout: std::time::Duration::from_secs(5) };
    assert_eq!(restored.gate(), Some(&gate));

    // The gate's clock did not restart with the daemon: it still times out at 418 s,
    // 5 minutes after it began waiting at 92 s, and names the answer from before.
    let mut after = Run::resume(restored.clone(), 4);
    after.healthy_while(20, |r| r.phase == Phase::Waiting);
    assert_eq!(after.k, 14);
    assert_eq!(
        after.rollout.rollback,
        Some(RollbackReason::GateTimeout { gate: "webhook".into(), waited_seconds: 326 })
    );
    assert!(after.last().reason.contains("its webhook last no answer within 5s"), "{}", after.last().reason);

    // An approval after the restart opens it, once.
    let mut after = Run::resume(restored, 4);
    after.command(Command::Approve, "carol", 130).unwrap();
    assert_eq!(after.actions(), ["started", "waiting", "approved", "advanced"]);
    assert!(after.rollout.decisions[2].reason.contains("approved by carol"));
    let stored = serde_json::to_vec_pretty(&after.rollout).unwrap();
    let mut again = Run::resume(serde_json::from_slice(&stored).unwrap(), 4);
    let why = refusal(again.command(Command::Approve, "carol", 131));
    assert!(why.starts_with("cannot approve a rollout that is progressing"), "{why}");
    assert_eq!(again.phase(), (Phase::Progressing, 50));
}

/// A run of `spec` brought, on healthy traffic, into its bake (at 183 s).
fn baking(spec: &str) -> Run {
    let mut run = Run::start(spec);
    for _ in 0..6 {
        run.healthy();
    }
    assert_eq!((run.phase(), run.k), ((Phase::Baking, 100), 6), "{:?}", run.actions());
    run
}

#[test]
fn a_healthy_canary_bakes_for_the_window_then_is_promoted() {
    let mut run = baking(&baked(BOUNDED));
    assert_eq!(run.actions(), ["started", "advanced", "baking"]);
    let bake = run.last();
    assert_eq!((bake.at, bake.weight), (at(183), 100));
    assert!(bake.reason.contains("baking at 100% for 10m"), "{}", bake.reason);
    // All traffic to the canary, the previous revision kept, not yet replaced.
    assert_eq!(run.rollout.desired(), up(100));
    assert_eq!(run.told.last().unwrap().event, EventKind::Baking);
    // The window ends at 783 s; interval 26 ends at 778 s, interval 27 at 812 s.
    run.healthy_while(19, |r| r.phase == Phase::Baking);
    assert_eq!((run.k, end(run.k)), (25, 751));
    assert_eq!(run.healthy(), 778);
    assert_eq!(run.phase(), (Phase::Baking, 100));
    assert_eq!(run.healthy(), 812);
    assert_eq!(run.phase(), (Phase::Promoting, 100));
    let done = run.last();
    assert_eq!((done.action, done.at), (DecisionKind::Promoting, at(812)));
    assert_eq!(done.reason, "the bake of 10m at 100% ended with no trigger or regression");
    assert_eq!(run.rollout.desired(), Desired { weight: 100, canary: Scale::Up, promote: true });
    run.feed(Input::PromotionDone, 815).unwrap();
    assert_eq!(run.rollout.phase, Phase::Succeeded);
    assert_eq!(run.actions(), ["started", "advanced", "baking", "promoting", "promoted"]);
    // The bake analysed intervals 7 to 27, the canary's bound judged in each.
    let baked: Vec<&IntervalRecord> = run.intervals.iter().filter(|i| i.at > at(183)).collect();
    assert_eq!(baked.len(), 21);
    assert!(baked.iter().all(|i| i.weight == 100 && i.verdicts[0].outcome == Outcome::Pass));
}

#[test]
fn a_canary_erring_above_its_bound_during_the_bake_is_reverted() {
    // 8% errors against a sequential bound of 5%: about 80 errors where 50 are allowed
    // in each interval's thousand requests. The running test needs a few such intervals
    // to outweigh the good ones before, far fewer than the 20 left in the window.
    let mut run = baking(&baked(BOUNDED));
    while run.rollout.phase == Phase::Baking && run.k < 26 {
        run.erring(0.08);
    }
    assert_eq!(run.phase(), (Phase::RollingBack, 0), "after interval {}", run.k);
    assert_eq!(run.rollout.rollback, Some(RollbackReason::Regression { metrics: vec!["errors".into()] }));
    let reverted = run.last();
    assert_eq!(reverted.action, DecisionKind::Reverted);
    assert!(
        reverted.reason.ends_with("; the previous revision serves all traffic again"),
        "{}",
        reverted.reason
    );
    assert_eq!(run.rollout.desired(), Desired { weight: 0, canary: Scale::Down, promote: false });
    let told = run.told.last().unwrap();
    assert_eq!((told.event, told.severity), (EventKind::Reverted, canaryd::engine::plan::Severity::Critical));
    assert_eq!(run.actions(), ["started", "advanced", "baking", "reverted"]);
    run.feed(Input::RollbackDone, end(run.k) + 2).unwrap();
    assert_eq!(run.rollout.phase, Phase::RolledBack);
    assert!(run.rollout.reverted() && run.rollout.rolled_back());

    // A threshold of 5% fails each such interval on its own; the second failed check is
    // the failure limit (2).
    let mut run = baking(&baked(THRESHOLD));
    run.erring(0.08);
    assert_eq!((run.phase(), run.rollout.failed_checks), ((Phase::Baking, 100), 1));
    assert_eq!(run.erring(0.08), 238);
    assert_eq!(run.phase(), (Phase::RollingBack, 0));
    assert_eq!(run.rollout.rollback, Some(RollbackReason::FailureLimit { failed_checks: 2 }));
    assert_eq!((run.last().action, run.last().at), (DecisionKind::Reverted, at(238)));
    assert_eq!(run.rollout.desired(), DOWN);
}

#[test]
fn a_trigger_during_the_bake_reverts_at_once() {
    let mut run = baking(&baked(BOUNDED));
    run.healthy();
    let mut obs = traffic(8, 100, 0.01);
    obs.firing_alerts.insert("ErrorBudgetBurn".into());
    assert_eq!(run.interval(obs), 238);
    assert_eq!(run.phase(), (Phase::RollingBack, 0));
    assert_eq!(run.rollout.rollback, Some(RollbackReason::Trigger { triggers: vec!["budget".into()] }));
    assert_eq!((run.last().action, run.last().at), (DecisionKind::Reverted, at(238)));
    assert_eq!(run.rollout.desired(), DOWN);
}

#[test]
fn an_above_trigger_on_a_metric_whose_test_needs_the_baseline_still_fires_during_the_bake() {
    // The ratio test cannot be judged in the bake, but the hard limit bounds the
    // canary's own error rate: the policy is valid because that trigger watches the
    // bake, and it must. 30% errors.
    let mut run = baking(&baked(RATIO_ONLY));
    assert_eq!(run.erring(0.3), 211);
    assert_eq!(run.phase(), (Phase::RollingBack, 0), "{:?}", run.intervals.last());
    assert_eq!(run.rollout.rollback, Some(RollbackReason::Trigger { triggers: vec!["hard-limit".into()] }));
    assert_eq!(run.last().action, DecisionKind::Reverted);
    assert!(
        run.last().reason.starts_with("hard-limit: error-ratio canary value 0.30"),
        "{}",
        run.last().reason
    );
}

#[test]
fn a_bake_watched_by_a_trigger_alone_does_not_end_without_data() {
    // Only the hard limit watches this bake: without data nothing does, so the
    // intervals past the window are no data, as anywhere else, not a quiet pass.
    let mut run = baking(&baked(RATIO_ONLY));
    run.healthy_while(20, |r| r.phase == Phase::Baking);
    assert_eq!((run.k, run.phase()), (26, (Phase::Baking, 100)));
    assert_eq!(run.interval(IntervalObservations::default()), 812);
    let ratio = &run.intervals.last().unwrap().verdicts[0];
    assert_eq!((ratio.outcome, ratio.reason.as_str()), (Outcome::Inconclusive, "no data for the canary"));
    assert_eq!(run.phase(), (Phase::Baking, 100), "past the window without data");
    let mut failed = traffic(28, 100, 0.01);
    failed.metrics.get_mut("error-ratio").unwrap().error = Some("Prometheus unreachable".into());
    assert_eq!(run.interval(failed), 839);
    assert_eq!(run.intervals.last().unwrap().verdicts[0].reason, "no data: Prometheus unreachable");
    assert_eq!(run.phase(), (Phase::Baking, 100));
    run.interval(IntervalObservations::default());
    assert_eq!(run.phase(), (Phase::RollingBack, 0));
    assert_eq!(run.rollout.rollback, Some(RollbackReason::InconclusiveLimit { intervals: 3 }));
    assert_eq!(run.last().action, DecisionKind::Reverted);
}

#[test]
fn no_data_during_the_bake_never_finishes_it() {
    let silent = IntervalObservations::default;
    // Healthy until the window ends at 783 s, then nothing: each silent interval past
    // the window keeps it baking, until the third in a row (inconclusiveLimit 3).
    let mut run = baking(&baked(BOUNDED));
    run.healthy_while(20, |r| r.phase == Phase::Baking);
    assert_eq!((run.k, end(run.k), run.phase()), (26, 778, (Phase::Baking, 100)));
    assert_eq!(run.interval(silent()), 812);
    assert_eq!(run.phase(), (Phase::Baking, 100), "past the window without data");
    assert_eq!(run.rollout.desired(), up(100));
    assert_eq!(run.interval(silent()), 839);
    assert_eq!(run.phase(), (Phase::Baking, 100));
    assert_eq!(run.last().action, DecisionKind::Stalled);
    assert_eq!(run.interval(silent()), 871);
    assert_eq!(run.phase(), (Phase::RollingBack, 0));
    assert_eq!(run.rollout.rollback, Some(RollbackReason::InconclusiveLimit { intervals: 3 }));
    assert_eq!(run.actions(), ["started", "advanced", "baking", "stalled", "reverted"]);
    assert_eq!(run.rollout.desired(), DOWN);

    // One silent interval past the window, then data: the bake ends on that data.
    let mut run = baking(&baked(BOUNDED));
    run.healthy_while(20, |r| r.phase == Phase::Baking);
    run.interval(silent());
    assert_eq!(run.phase(), (Phase::Baking, 100));
    assert_eq!(run.healthy(), 839);
    assert_eq!((run.phase(), run.last().at), ((Phase::Promoting, 100), at(839)));
    assert_eq!(run.actions(), ["started", "advanced", "baking", "promoting"]);
}

#[test]
fn an_operator_reverts_during_the_bake_and_not_after() {
    let mut run = Run::start(&baked(BOUNDED));
    let why = refusal(run.command(Command::Revert, "bob", 10));
    assert!(why.starts_with("cannot revert a rollout that is progressing: only when baking"), "{why}");
    for _ in 0..6 {
        run.healthy();
    }
    assert_eq!(run.phase(), (Phase::Baking, 100));
    run.healthy();
    let why = refusal(run.command(Command::Abort, "bob", 220));
    assert!(why.contains("revert restores the previous revision"), "{why}");
    run.command(Command::Revert, "bob", 225).unwrap();
    assert_eq!(run.phase(), (Phase::RollingBack, 0));
    assert_eq!(run.rollout.rollback, Some(RollbackReason::Reverted));
    let reverted = run.last();
    assert_eq!((reverted.action, reverted.at), (DecisionKind::Reverted, at(225)));
    assert_eq!(
        reverted.reason,
        "reverted by bob during the bake; the previous revision serves all traffic again"
    );
    assert_eq!(run.rollout.desired(), DOWN);
    assert_eq!(run.told.last().unwrap().event, EventKind::Reverted);
    run.feed(Input::RollbackDone, 230).unwrap();
    assert_eq!(run.rollout.phase, Phase::RolledBack);

    // After the window the previous revision is released: too late to revert.
    let mut run = baking(&baked(BOUNDED));
    run.healthy_while(30, |r| r.phase == Phase::Baking);
    assert_eq!((run.k, run.rollout.phase), (27, Phase::Promoting));
    let why = refusal(run.command(Command::Revert, "bob", 813));
    assert_eq!(
        why,
        "cannot revert a rollout that is promoting: its bake window is over and the previous revision was released; roll forward with a new revision"
    );
    run.feed(Input::PromotionDone, 815).unwrap();
    let why = refusal(run.command(Command::Revert, "bob", 900));
    assert!(why.starts_with("cannot revert a rollout that is succeeded: its bake window is over"), "{why}");

    // A hand promotion during the bake ends it early, straight to the platform.
    let mut run = baking(&baked(BOUNDED));
    run.command(Command::Promote, "carol", 300).unwrap();
    assert_eq!(run.phase(), (Phase::Promoting, 100));
    assert_eq!(run.last().reason, "promoted by hand by carol, ending the bake early");
    assert_eq!(run.rollout.desired(), Desired { weight: 100, canary: Scale::Up, promote: true });
}

#[test]
fn a_hand_promotion_before_the_last_step_bakes_first() {
    let mut run = Run::start(&baked(BOUNDED));
    run.healthy();
    run.command(Command::Promote, "carol", 40).unwrap();
    assert_eq!(run.phase(), (Phase::Baking, 100));
    assert_eq!(run.rollout.bake_until, Some(at(640)));
    assert!(
        run.last().reason.starts_with("promoted by hand by carol; baking at 100% for 10m"),
        "{}",
        run.last().reason
    );
}

#[test]
fn tests_that_compare_with_the_baseline_are_not_judged_during_the_bake() {
    // The canary at 2% errors, and a trickle of stray requests to the previous revision
    // at 0.5%: 4x, which fails the ratio test (max 3) and the relative trigger
    // (ratioAbove 3) wherever they run, as at the 50% step here.
    let skewed =
        |k: u64| counts(((requests(k) - 200.0), ((requests(k) - 200.0) * 0.02).round()), (200.0, 1.0));
    let mut control = Run::start(&baked(BOUNDED));
    for _ in 0..3 {
        control.healthy();
    }
    assert_eq!(control.phase(), (Phase::Progressing, 50));
    control.interval(skewed(4));
    assert_eq!(control.rollout.rollback, Some(RollbackReason::Trigger { triggers: vec!["relative".into()] }));

    // During the bake the same counts leave the ratio unjudged, the trigger unasked, and
    // the bake ends as a healthy one does, at 812 s.
    let mut run = baking(&baked(BOUNDED));
    while run.rollout.phase == Phase::Baking && run.k < 30 {
        run.interval(skewed(run.k + 1));
        let interval = run.intervals.last().unwrap();
        assert!(interval.triggers.is_empty(), "{interval:?}");
        let [errors, ratio] = &interval.verdicts[..] else { panic!("two verdicts: {interval:?}") };
        assert_eq!(errors.outcome, Outcome::Pass, "the canary's own bound is judged: {errors:?}");
        assert_eq!(ratio.outcome, Outcome::Insufficient);
        assert_eq!(
            ratio.reason,
            "not judged during the bake: the ratio test compares with the baseline, which takes no traffic"
        );
    }
    assert_eq!((run.k, run.phase()), (27, (Phase::Promoting, 100)));
    assert_eq!(run.rollout.failed_checks, 0);
}

#[test]
fn an_approval_gate_ignores_a_webhook_answer_and_waits_for_a_person() {
    let mut run = waiting_at_50(&approval_at(50, "1h"));
    let mut obs = traffic(7, 50, 0.01);
    obs.gate = Some(GateAnswer { open: true, detail: "answered 200 OK".into() });
    run.interval(obs);
    assert_eq!(run.phase(), (Phase::Waiting, 50), "{:?}", run.actions());
    assert_eq!(run.rollout.gate_answer, None, "no webhook answer is kept for an approval gate");
}

#[test]
fn a_paused_rollout_is_not_approved_and_is_told_to_resume_first() {
    let mut run = Run::start(&approval_at(50, "1h"));
    let pause = Input::Command { command: Command::Pause, by: "alice".into() };
    run.rollout = step(&run.rollout, &pause, at(10)).unwrap().rollout;
    let approve = Input::Command { command: Command::Approve, by: "bob".into() };
    let why = match step(&run.rollout, &approve, at(11)) {
        Err(EngineError::Refused { why, .. }) => why,
        other => panic!("refused, not {other:?}"),
    };
    assert!(why.starts_with("cannot approve a rollout that is paused: resume it first"), "{why}");
}
