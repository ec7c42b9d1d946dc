//! The human-readable backtest report: one line per interval, the reasons behind every
//! verdict that was not a pass, and every decision.

use std::fmt::Write;

use crate::backtest::{BacktestOutcome, BacktestResult};
use crate::engine::Phase;
use crate::judge::Outcome;

fn clock(t: jiff::Timestamp) -> String {
    t.strftime("%H:%M:%S").to_string()
}

/// Renders the timeline, decisions and outcome for a terminal.
pub fn render_text(result: &BacktestResult, source: &str) -> String {
    let r = &result.record;
    let mut out = String::new();
    let _ =
        writeln!(out, "backtest of policy {} on {} revision {} ({source})", r.policy, r.workload, r.revision);
    let _ = writeln!(out, "{:<9} {:>4} {:>6}  verdicts", "time", "step", "weight");
    for entry in &result.timeline {
        let interval = &entry.interval;
        let verdicts: Vec<String> = interval
            .verdicts
            .iter()
            .map(|v| {
                // A failure stands out in a column of passes.
                let mark = match v.outcome {
                    Outcome::Fail => v.outcome.name().to_uppercase(),
                    _ => v.outcome.name().to_string(),
                };
                format!("{}={mark}", v.metric)
            })
            .collect();
        let _ = writeln!(
            out,
            "{:<9} {:>4} {:>5}%  {}",
            clock(interval.at),
            interval.step + 1,
            interval.weight,
            verdicts.join(" ")
        );
        for v in interval.verdicts.iter().filter(|v| v.outcome != Outcome::Pass) {
            let _ = writeln!(out, "{:>24}{}: {}", "", v.metric, v.reason);
        }
        for hit in &interval.triggers {
            let _ = writeln!(out, "{:>24}TRIGGER {}: {}", "", hit.trigger, hit.detail);
        }
        if let Some(why) = &entry.mismatch {
            let _ = writeln!(out, "{:>24}SPLIT {why}", "");
        }
    }
    let _ = writeln!(out, "decisions:");
    for d in &r.decisions {
        let _ = writeln!(out, "  {} {:<17} weight {:>3}%  {}", clock(d.at), d.action, d.weight, d.reason);
    }
    let verdict = match (result.outcome, r.outcome) {
        (BacktestOutcome::Promoted, _) => "PROMOTED".to_string(),
        (BacktestOutcome::RolledBack, _) => "ROLLED BACK".to_string(),
        (BacktestOutcome::Unfinished, Phase::Waiting) => format!(
            "UNFINISHED (the data ended while it waited at the gate at {}%, which --gates never leaves shut)",
            r.decisions.last().map_or(0, |d| d.weight)
        ),
        (BacktestOutcome::Unfinished, Phase::Baking) => {
            "UNFINISHED (the data ended during the bake at 100%)".to_string()
        }
        (BacktestOutcome::Unfinished, _) => "UNFINISHED (the data ended before a decision)".to_string(),
    };
    let _ =
        writeln!(out, "outcome: {verdict} (reached step {}, max weight {}%)", r.step_reached, r.max_weight);
    out
}
