//! `canaryd-demo`: the live demo `scripts/demo` runs. On real Prometheus, nginx and wrk,
//! it rolls out a canary with 5% errors (rolled back) and then a good one (promoted
//! 10% → 50% → 100%), printing each rollout's progress as it happens and, at the end,
//! each outcome with its reason, its evidence and the notification that was sent.
//! Everything it started is stopped on exit, on Ctrl-C too.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context;
use canaryd::daemon::view::{Progress, RolloutView};
use canaryd::demo::{Binaries, Options, Stack};
use canaryd::engine::Notification;

/// The binaries beside this one (`target/release/`).
fn binaries() -> Binaries {
    let here = std::env::current_exe().ok().and_then(|p| p.parent().map(PathBuf::from)).unwrap_or_default();
    Binaries { canaryd: here.join("canaryd"), demo_app: here.join("canaryd-demo-app") }
}

/// Prints progress lines: one per change of phase, step, weight or verdicts, and each
/// decision with its reason (the same lines as `canaryd rollout watch`).
fn progress() -> impl FnMut(&RolloutView) {
    let mut progress = Progress::default();
    move |v: &RolloutView| {
        for line in progress.lines(v) {
            println!("  {line}");
        }
    }
}

fn show_notification(n: &Notification) {
    println!("  notification {} ({:?}): {}", n.key, n.event, n.summary);
    for v in &n.evidence {
        let value = |x: Option<f64>| x.map_or_else(|| "-".to_string(), |x| format!("{x:.4}"));
        println!(
            "    evidence {}: {:?}{} canary {} vs baseline {}: {}",
            v.metric,
            v.outcome,
            if v.conclusive { " (conclusive)" } else { "" },
            value(v.evidence.canary.value),
            value(v.evidence.baseline.value),
            v.reason
        );
    }
    for t in &n.triggers {
        println!("    trigger {t:?}");
    }
}

async fn rollout(stack: &Stack, title: &str, revision: &str, error_rate: f64) -> anyhow::Result<RolloutView> {
    println!("\n== {title}: canary {revision} with {:.1}% errors", error_rate * 100.0);
    stack.deploy_canary(revision, error_rate, 5).await?;
    stack.start_rollout(revision).await?;
    stack.follow(revision, Duration::from_secs(180), progress()).await
}

async fn demo(stack: &Stack) -> anyhow::Result<bool> {
    let bad = rollout(stack, "rollout 1", "v2-bad", 0.05).await?;
    let good = rollout(stack, "rollout 2", "v3", 0.005).await?;
    println!("\n== outcomes");
    let notifications = stack.notifications();
    for v in [&bad, &good] {
        println!("{} {}: {}", v.name, v.revision, v.phase);
        use canaryd::engine::EventKind::{Promoted, Promoting, RolledBack};
        let mut told = notifications
            .iter()
            .filter(|n| n.key.revision == v.revision && matches!(n.event, RolledBack | Promoting | Promoted))
            .peekable();
        if told.peek().is_none() {
            println!("  (no notification received for it yet)");
        }
        told.for_each(show_notification);
    }
    // What nginx serves now: every request through it, counted by the version answering.
    let mut versions = std::collections::BTreeMap::<String, u32>::new();
    for _ in 0..20 {
        if let Some(version) = stack.get_front().await {
            *versions.entry(version).or_default() += 1;
        }
    }
    let serves = stack.nginx_serves().await.unwrap_or_default();
    let canary_share = serves.split_whitespace().nth(1).unwrap_or("?").to_string();
    println!(
        "\nnginx now sends {canary_share}% to the canary servers; 20 requests through it were answered by {versions:?}"
    );
    // The stack's directory goes away on exit: the records are kept, or the demo fails.
    let kept = PathBuf::from("target/demo-records");
    let revisions = [bad.revision.as_str(), good.revision.as_str()];
    stack
        .keep_records(&kept, &revisions, Duration::from_secs(30))
        .await
        .with_context(|| format!("cannot keep the deployment records in {}", kept.display()))?;
    println!(
        "Every decision with its evidence and each arm's query: target/release/canaryd records --dir {} list (or show ID)",
        kept.display()
    );
    Ok(bad.phase == "rolled-back" && good.phase == "succeeded")
}

/// The live demo on real local parts: Prometheus, nginx, wrk, two stable servers and
/// canaryd on loopback ports. A canary with 5% errors is rolled back, then a good one is
/// promoted 10% -> 50% -> 100%, each decision printed with its reason and evidence.
/// Ctrl-C stops everything it started; the deployment records are kept in
/// target/demo-records.
#[derive(clap::Parser)]
#[command(name = "canaryd-demo", version)]
struct Args {}

#[tokio::main]
async fn main() -> ExitCode {
    // `--help` and `--version` answer without starting anything.
    let Args {} = clap::Parser::parse();
    println!("Starting Prometheus, nginx, 2 stable servers, wrk and canaryd on loopback ports...");
    let stack = match Stack::start(binaries(), Options::default()).await {
        Ok(s) => s,
        Err(e) => {
            eprintln!("error: cannot start the demo stack: {e:#}");
            return ExitCode::from(1);
        }
    };
    println!(
        "nginx :{}  Prometheus :{}  canaryd :{}  (files in {})",
        stack.ports.nginx,
        stack.ports.prometheus,
        stack.ports.canaryd,
        stack.dir.path().display()
    );
    let code = tokio::select! {
        result = demo(&stack) => match result {
            Ok(true) => ExitCode::SUCCESS,
            Ok(false) => {
                eprintln!("error: the outcomes were not the expected ones; canaryd's log: {}", stack.path("canaryd.log").display());
                ExitCode::from(1)
            }
            Err(e) => {
                eprintln!("error: {e:#}\n--- canaryd log (last lines) ---");
                let log = stack.canaryd_log();
                for l in log.lines().rev().take(20).collect::<Vec<_>>().into_iter().rev() {
                    eprintln!("{l}");
                }
                ExitCode::from(1)
            }
        },
        _ = tokio::signal::ctrl_c() => {
            eprintln!("\ninterrupted: stopping everything");
            ExitCode::from(130)
        }
    };
    drop(stack);
    code
}
