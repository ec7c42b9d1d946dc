//! `canaryd rollout …`: the operator commands, as calls to the daemon's API with their
//! answers printed, and `watch`, which follows rollouts live.

use std::process::ExitCode;

use clap::Subcommand;

use crate::{EXIT_FAILURE, EXIT_INVALID, Format};

/// What `canaryd rollout` does. A ROLLOUT is `namespace/name`, or a name only one
/// rollout has.
#[derive(Subcommand)]
pub enum RolloutAction {
    /// One line per rollout: phase, step, weight, each metric's last verdict.
    List,
    /// One rollout in detail: each metric's latest values and the decisions with their reasons.
    Status {
        /// The rollout.
        rollout: String,
        /// Output format.
        #[arg(long, value_enum, default_value_t = Format::Text)]
        format: Format,
    },
    /// Follow rollouts live: a line on each change of phase, step, weight or verdict, and
    /// each decision with its reason. With a ROLLOUT, exits when it ends (0 promoted,
    /// 1 rolled back or aborted).
    Watch {
        /// The rollout (all of them if absent).
        rollout: Option<String>,
        /// Plain lines, one per change, even on a terminal (the default when not a terminal).
        #[arg(long)]
        plain: bool,
        /// How often to ask the daemon.
        #[arg(long, default_value = "1s")]
        every: humantime::Duration,
    },
    /// Start rolling out a revision of a service (local platform).
    Start {
        /// The service, as declared in the settings.
        service: String,
        /// The canary's revision.
        #[arg(long)]
        revision: String,
    },
    /// Skip the remaining analysis and promote.
    Promote {
        /// The rollout.
        rollout: String,
    },
    /// Stop and roll back.
    Abort {
        /// The rollout.
        rollout: String,
    },
    /// Hold at the current step (the analysis goes on; triggers still roll back).
    Pause {
        /// The rollout.
        rollout: String,
    },
    /// Continue after a pause (the step's full duration is required again).
    Resume {
        /// The rollout.
        rollout: String,
    },
    /// Open the gate the rollout waits at (recorded with your token's name).
    Approve {
        /// The rollout.
        rollout: String,
    },
    /// Restore the previous revision, during the bake after promotion.
    Revert {
        /// The rollout.
        rollout: String,
    },
}

/// `canaryd rollout …`: API calls, their answers printed.
#[tokio::main(flavor = "current_thread")]
pub async fn rollout(base: &str, token: Option<String>, action: RolloutAction) -> ExitCode {
    use canaryd::client::{Client, ClientError};
    let token_given = token.is_some();
    let fail = |e: ClientError| {
        eprintln!("error: {}", explained(&e, token_given));
        match e {
            ClientError::Refused { status, .. } if status.is_client_error() => ExitCode::from(EXIT_INVALID),
            _ => ExitCode::from(EXIT_FAILURE),
        }
    };
    let client = match Client::new(base, token) {
        Ok(c) => c,
        Err(e) => return fail(e),
    };
    let (rollout, verb) = match action {
        RolloutAction::List => {
            return match client.list().await {
                Ok(views) => {
                    for v in &views {
                        println!("{:<28} {:<10} {}", v.id(), v.revision, v.progress());
                    }
                    if views.is_empty() {
                        println!("no rollouts");
                    }
                    ExitCode::SUCCESS
                }
                Err(e) => fail(e),
            };
        }
        RolloutAction::Status { rollout, format } => {
            let detail = match client.resolve(&rollout).await {
                Ok((namespace, name)) => client.detail(&namespace, &name).await,
                Err(e) => Err(e),
            };
            return match detail {
                Ok(d) if format == Format::Json => {
                    println!("{}", serde_json::to_string_pretty(&d).unwrap_or_default());
                    ExitCode::SUCCESS
                }
                Ok(d) => {
                    print_detail(&d);
                    ExitCode::SUCCESS
                }
                Err(e) => fail(e),
            };
        }
        RolloutAction::Watch { rollout, plain, every } => {
            return watch(&client, token_given, rollout.as_deref(), plain, every.into()).await;
        }
        RolloutAction::Start { service, revision } => {
            return match client.start(&service, &revision).await {
                Ok(a) => {
                    println!("{} {}: {}", a.rollout, a.revision, a.status);
                    ExitCode::SUCCESS
                }
                Err(e) => fail(e),
            };
        }
        RolloutAction::Promote { rollout } => (rollout, "promote"),
        RolloutAction::Abort { rollout } => (rollout, "abort"),
        RolloutAction::Pause { rollout } => (rollout, "pause"),
        RolloutAction::Resume { rollout } => (rollout, "resume"),
        RolloutAction::Approve { rollout } => (rollout, "approve"),
        RolloutAction::Revert { rollout } => (rollout, "revert"),
    };
    let answer = match client.resolve(&rollout).await {
        Ok((namespace, name)) => client.command(&namespace, &name, verb).await,
        Err(e) => Err(e),
    };
    match answer {
        Ok(a) => {
            println!("{} {}: {} (as {})", a.rollout, a.command, a.status, a.by);
            ExitCode::SUCCESS
        }
        Err(e) => fail(e),
    }
}

/// An error as the command line's user can act on it: the daemon's own refusals of a
/// token speak of HTTP headers, and the user gives a token with `--token`.
fn explained(e: &canaryd::client::ClientError, token_given: bool) -> String {
    use canaryd::client::ClientError;
    use reqwest::StatusCode;
    match e {
        ClientError::Refused { status, .. } if *status == StatusCode::UNAUTHORIZED => format!(
            "{status}: the daemon needs its API token for this; give it with --token TOKEN or the \
             CANARYD_TOKEN variable (or server.api_token in the settings, --config FILE)"
        ),
        ClientError::Refused { status, message } if *status == StatusCode::FORBIDDEN && token_given => {
            format!(
                "{status}: the token given (--token, CANARYD_TOKEN or server.api_token) is not one the \
             daemon accepts; the daemon says: {message}"
            )
        }
        _ => e.to_string(),
    }
}

/// A measured value as `rollout status` prints it; a zero never shows a sign.
fn shown(x: Option<f64>) -> String {
    // `-0.0 + 0.0` is `0.0`: a zero rate computed from negated counts prints as 0.
    x.map_or_else(|| "no data".to_string(), |x| format!("{:.4}", x + 0.0))
}

fn print_detail(d: &canaryd::server::api::RolloutDetail) {
    let v = &d.view;
    println!("{} {} (policy {})", v.id(), v.revision, v.policy);
    println!("  {}", v.progress());
    if let Some(at) = d.latest_at {
        println!("  latest interval, ended {at}:");
    }
    let value = shown;
    for m in &d.latest {
        println!(
            "    {:<16} {:<18} canary {:<10} baseline {}",
            m.metric,
            m.verdict,
            value(m.canary),
            value(m.baseline)
        );
    }
    println!("  decisions:");
    for decision in &d.decisions {
        println!(
            "    #{} {} {} at {}%: {}",
            decision.seq, decision.at, decision.action, decision.weight, decision.reason
        );
    }
}

/// `canaryd rollout watch`: polls the daemon and prints what changed. On a terminal
/// (unless `plain`), each rollout's line is redrawn in place and decisions scroll above.
async fn watch(
    client: &canaryd::client::Client,
    token_given: bool,
    rollout: Option<&str>,
    plain: bool,
    every: std::time::Duration,
) -> ExitCode {
    use std::io::Write as _;
    let id = match rollout {
        Some(r) => match client.resolve(r).await {
            Ok((namespace, name)) => Some(format!("{namespace}/{name}")),
            Err(e) => {
                eprintln!("error: {}", explained(&e, token_given));
                return ExitCode::from(EXIT_INVALID);
            }
        },
        None => None,
    };
    let live = !plain && std::io::IsTerminal::is_terminal(&std::io::stdout());
    let mut progress: std::collections::BTreeMap<String, canaryd::daemon::view::Progress> =
        Default::default();
    let mut failures = 0u32;
    let mut ticker = tokio::time::interval(every);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        ticker.tick().await;
        let views = match client.list().await {
            Ok(v) => {
                failures = 0;
                v
            }
            Err(e) => {
                failures += 1;
                eprintln!("warning: {} (retrying)", explained(&e, token_given));
                if failures >= 30 {
                    eprintln!("error: the daemon did not answer 30 times in a row");
                    return ExitCode::from(EXIT_FAILURE);
                }
                continue;
            }
        };
        let mut printed: Vec<(String, String)> = Vec::new();
        for v in views.iter().filter(|v| id.as_ref().is_none_or(|id| *id == v.id())) {
            let shown = progress.entry(v.id()).or_default();
            // Decisions made between two looks are read from the rollout's detail.
            let missed = shown.missed(v);
            let mut lines = Vec::new();
            if !missed.is_empty()
                && let Ok(detail) = client.detail(&v.namespace, &v.name).await
            {
                lines.extend(
                    detail
                        .decisions
                        .iter()
                        .filter(|d| d.revision == v.revision && missed.contains(&d.seq))
                        .map(|d| canaryd::daemon::view::decision_line(d.action, d.weight, &d.reason)),
                );
            }
            lines.extend(shown.lines(v));
            printed.extend(lines.into_iter().map(|line| (format!("{} {}", v.id(), v.revision), line)));
        }
        let mut out = std::io::stdout().lock();
        for (who, line) in printed {
            // On a terminal the progress line is redrawn in place; decisions scroll.
            if live && !line.starts_with("  -> ") {
                let _ = write!(out, "\r\x1b[2K{who} {line}");
            } else {
                let _ = writeln!(out, "{}{who} {line}", if live { "\r\x1b[2K" } else { "" });
            }
        }
        let _ = out.flush();
        drop(out);
        if let Some(id) = &id
            && let Some(v) = views.iter().find(|v| v.id() == *id)
            && v.finished_at.is_some()
        {
            if live {
                println!();
            }
            return if v.phase == "succeeded" { ExitCode::SUCCESS } else { ExitCode::from(EXIT_FAILURE) };
        }
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn a_zero_value_is_printed_without_a_sign_and_a_missing_one_as_no_data() {
        assert_eq!(super::shown(Some(-0.0)), "0.0000");
        assert_eq!(super::shown(Some(0.01234)), "0.0123");
        assert_eq!(super::shown(None), "no data");
    }
}
