//! A service's hooks: a command (run without a shell) or a webhook, each with a time
//! limit. A command that outlives its limit is killed with its whole process group.

use std::sync::{Arc, Mutex};

use tokio::io::AsyncReadExt as _;

use crate::config::{Hook, HookAction};

/// What a hook is told.
#[derive(Clone, Debug, serde::Serialize)]
pub struct HookContext<'a> {
    /// The service.
    pub service: &'a str,
    /// Its namespace.
    pub namespace: &'a str,
    /// The canary's revision.
    pub revision: &'a str,
    /// `pre-rollout`, `promote`, `rollback` or `post-rollout`.
    pub hook: &'a str,
    /// For `post-rollout`: `promoted` or `rolled-back`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub outcome: Option<&'a str>,
}

/// The most of a failing command's stderr kept for its error message.
const STDERR_KEPT: usize = 2048;

/// Runs `hook`; `Err` says why it failed, in one line.
pub async fn run(hook: &Hook, ctx: &HookContext<'_>, client: &reqwest::Client) -> Result<(), String> {
    let limit = humantime::format_duration(hook.timeout);
    match &hook.action {
        HookAction::Command(argv) => command(argv, hook.timeout, ctx)
            .await
            .map_err(|e| format!("{} hook `{}`: {e}", ctx.hook, argv.join(" ")))
            .and_then(|r| {
                r.ok_or_else(|| {
                    format!("{} hook `{}`: no exit within {limit}; killed", ctx.hook, argv.join(" "))
                })
            }),
        HookAction::Webhook(url) => {
            let shown = crate::secret::without_userinfo(url.as_str());
            let sent = client.post(url.clone()).json(ctx).timeout(hook.timeout).send().await;
            match sent {
                Ok(r) if r.status().is_success() => Ok(()),
                Ok(r) => Err(format!("{} hook {shown}: answered {}", ctx.hook, r.status())),
                Err(e) if e.is_timeout() => {
                    Err(format!("{} hook {shown}: no answer within {limit}", ctx.hook))
                }
                Err(e) => Err(format!("{} hook {shown}: {e}", ctx.hook)),
            }
        }
    }
}

/// Runs a command: `Ok(None)` when it timed out (and was killed).
async fn command(
    argv: &[String],
    timeout: std::time::Duration,
    ctx: &HookContext<'_>,
) -> Result<Option<()>, String> {
    let mut cmd = tokio::process::Command::new(&argv[0]);
    cmd.args(&argv[1..])
        .env("CANARYD_SERVICE", ctx.service)
        .env("CANARYD_NAMESPACE", ctx.namespace)
        .env("CANARYD_REVISION", ctx.revision)
        .env("CANARYD_HOOK", ctx.hook)
        .env("CANARYD_OUTCOME", ctx.outcome.unwrap_or(""))
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .process_group(0)
        .kill_on_drop(true);
    let mut child = cmd.spawn().map_err(|e| format!("cannot start: {e}"))?;
    // Read stderr on the side: a hook may leave background processes holding it open,
    // so its end is not awaited.
    let kept = Arc::new(Mutex::new(Vec::new()));
    let reader = child.stderr.take().map(|mut stderr| {
        let kept = kept.clone();
        tokio::spawn(async move {
            let mut chunk = [0u8; 512];
            while let Ok(n @ 1..) = stderr.read(&mut chunk).await {
                let mut kept = kept.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
                let room = STDERR_KEPT.saturating_sub(kept.len());
                kept.extend_from_slice(&chunk[..n.min(room)]);
            }
        })
    });
    let pid = child.id();
    let status = match tokio::time::timeout(timeout, child.wait()).await {
        Ok(status) => status.map_err(|e| format!("cannot wait for it: {e}"))?,
        Err(_) => {
            if let Some(pid) = pid {
                kill_group(pid);
            }
            if let Some(r) = reader {
                r.abort();
            }
            return Ok(None);
        }
    };
    if let Some(r) = reader {
        // What it wrote before exiting is in the pipe already.
        let _ = tokio::time::timeout(std::time::Duration::from_millis(200), r).await;
    }
    if status.success() {
        return Ok(Some(()));
    }
    let stderr = String::from_utf8_lossy(&kept.lock().unwrap_or_else(std::sync::PoisonError::into_inner))
        .split_whitespace()
        .collect::<Vec<_>>()
        .join(" ");
    let code = status.code().map_or_else(|| "a signal".to_string(), |c| format!("code {c}"));
    Err(if stderr.is_empty() {
        format!("exited with {code}")
    } else {
        format!("exited with {code}: {stderr}")
    })
}

/// Kills a timed-out hook's process group (the hook and whatever it started).
fn kill_group(pid: u32) {
    let killed = std::process::Command::new("kill")
        .args(["-KILL", "--", &format!("-{pid}")])
        .stderr(std::process::Stdio::null())
        .status();
    if !killed.is_ok_and(|s| s.success()) {
        tracing::warn!(pid, "cannot kill a timed-out hook's process group");
    }
}
