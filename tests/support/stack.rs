//! The local stack for end-to-end tests: one stack at a time (each keeps wrk's load
//! running on the machine's two cores), and the waits and reads the tests share.

use std::time::Duration;

use canaryd::daemon::records;
use canaryd::daemon::view::RolloutView;
use canaryd::demo::{Binaries, Options, Stack, wait_until};
use canaryd::record::DeploymentRecord;

/// Held by the test whose stack runs.
pub static ONE_STACK_AT_A_TIME: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// The binaries under test.
pub fn binaries() -> Binaries {
    Binaries {
        canaryd: env!("CARGO_BIN_EXE_canaryd").into(),
        demo_app: env!("CARGO_BIN_EXE_canaryd-demo-app").into(),
    }
}

/// Time any one rollout may take here; the demo's take 10–40 s.
pub const ROLLOUT: Duration = Duration::from_secs(150);

/// Starts a stack once no other runs; the guard is the turn.
pub async fn start(options: Options) -> (Stack, tokio::sync::MutexGuard<'static, ()>) {
    let turn = ONE_STACK_AT_A_TIME.lock().await;
    let stack = Stack::start(binaries(), options).await.expect("the stack starts");
    (stack, turn)
}

/// The record canaryd wrote for `revision` (once every notification of the ended
/// rollout was delivered: a tick or so after it ended).
pub async fn record(stack: &Stack, revision: &str) -> DeploymentRecord {
    let find = || {
        records::list(&stack.path("records"))
            .iter()
            .filter_map(|f| records::read(f).ok())
            .find(|r| r.revision == revision)
    };
    let waited =
        wait_until(Duration::from_secs(20), "the record is written", || async { find().is_some() }).await;
    waited.unwrap_or_else(|e| panic!("{e}: a record of {revision}; canaryd log:\n{}", stack.canaryd_log()));
    find().expect("found")
}

/// Waits until the view of the rollout passes `check` (what: what is waited for).
pub async fn wait_view(stack: &Stack, what: &str, check: impl Fn(&RolloutView) -> bool) -> RolloutView {
    let found = std::sync::Mutex::new(None);
    let waited = wait_until(ROLLOUT, what, || async {
        let v = stack.view().await;
        let hit = v.as_ref().is_some_and(&check);
        *found.lock().unwrap() = v;
        hit
    })
    .await;
    let last = found.into_inner().unwrap();
    if let Err(e) = waited {
        panic!("{e}; last view: {last:#?}\ncanaryd log:\n{}", stack.canaryd_log());
    }
    last.expect("a view")
}

/// `canaryd rollout ARGS…` against the stack's daemon, with its token in the environment.
pub fn cli(stack: &Stack, args: &[&str]) -> std::process::Output {
    std::process::Command::new(binaries().canaryd)
        .arg("rollout")
        .args(args)
        .args(["--server", &stack.api()])
        .env("CANARYD_TOKEN", &stack.token)
        .env_remove("CANARYD_CONFIG")
        .output()
        .expect("canaryd runs")
}

/// Everything a command printed.
pub fn out(o: &std::process::Output) -> String {
    format!("{}{}", String::from_utf8_lossy(&o.stdout), String::from_utf8_lossy(&o.stderr))
}
