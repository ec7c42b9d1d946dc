//! The loop's one inbox: everything other tasks hand to the loop (operator commands,
//! executors' reports, policy reloads, firing alerts) arrives on one unbounded channel
//! and is taken in at the start of the next tick. Senders hold a typed
//! [`LoopSender`], so each can send only its own kind.

use tokio::sync::{mpsc, oneshot};

use crate::engine::{Arms, Command, RolloutId, Scale};
use crate::policy::LoadedPolicy;

/// What an executor reports back.
pub(super) enum Report {
    Weight(u8),
    Scale(Scale),
    Promoted(String),
    Failed {
        call: String,
        error: String,
    },
    /// The call is under way (the platform awaits something it reports progress on).
    NotYet {
        call: String,
        awaiting: String,
    },
    Finished,
}

/// An operator command for the loop, with where to say what became of it.
#[derive(Debug)]
pub struct OperatorCommand {
    /// The rollout.
    pub id: RolloutId,
    /// The command.
    pub command: Command,
    /// Who gave it (recorded in the decision).
    pub by: String,
    /// Told once the command's decision is saved, or why it was not taken.
    pub done: Option<oneshot::Sender<CommandOutcome>>,
}

impl OperatorCommand {
    /// A command whose outcome nobody waits for.
    pub fn new(id: RolloutId, command: Command, by: impl Into<String>) -> OperatorCommand {
        OperatorCommand { id, command, by: by.into(), done: None }
    }

    /// A command, and where its outcome will be told.
    pub fn confirmed(
        id: RolloutId,
        command: Command,
        by: impl Into<String>,
    ) -> (OperatorCommand, oneshot::Receiver<CommandOutcome>) {
        let (tx, rx) = oneshot::channel();
        (OperatorCommand { id, command, by: by.into(), done: Some(tx) }, rx)
    }
}

/// What became of an operator command.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CommandOutcome {
    /// Taken, and its decision saved: a restart keeps it, and it is never taken twice.
    Applied {
        /// The decision's `seq`.
        decision: u64,
    },
    /// Not taken in the rollout's phase, and why.
    Refused(String),
    /// No such rollout.
    Unknown,
}

/// One message to the loop.
pub(super) enum Inbox {
    Command(OperatorCommand),
    Report { id: RolloutId, report: Report },
    Policies(Vec<LoadedPolicy>),
    Alert(FiringAlert),
}

/// An Alertmanager alert firing for a workload, as the API received it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FiringAlert {
    /// Its `alertname`.
    pub alert: String,
    /// Its `namespace` label, if it has one.
    pub namespace: Option<String>,
    /// The workload it names (its `rollout`, `workload`, `deployment` or `service`
    /// label): a rollout's name or its canary's workload.
    pub workloads: Vec<String>,
    /// Its summary or description annotation.
    pub detail: String,
}

impl FiringAlert {
    pub(super) fn names(&self, id: &RolloutId, arms: &Arms) -> bool {
        let namespace_ok =
            self.namespace.as_ref().is_none_or(|ns| *ns == id.namespace || *ns == arms.namespace);
        namespace_ok && self.workloads.iter().any(|w| *w == id.name || *w == arms.canary)
    }
}

/// The loop is gone (stopped or dropped): nothing sent reaches it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("the daemon loop has stopped")]
pub struct LoopStopped;

/// A handle to send one kind of input to the loop with: to its inbox, or to any
/// channel of that kind (what the API's tests read).
pub struct LoopSender<T> {
    route: Route<T>,
}

enum Route<T> {
    Inbox(mpsc::UnboundedSender<Inbox>, fn(T) -> Inbox),
    Channel(mpsc::UnboundedSender<T>),
}

impl<T> Clone for LoopSender<T> {
    fn clone(&self) -> Self {
        let route = match &self.route {
            Route::Inbox(tx, wrap) => Route::Inbox(tx.clone(), *wrap),
            Route::Channel(tx) => Route::Channel(tx.clone()),
        };
        LoopSender { route }
    }
}

impl<T> std::fmt::Debug for LoopSender<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("LoopSender")
    }
}

impl<T> LoopSender<T> {
    /// Sends into `inbox`, each value wrapped by `wrap`.
    pub(super) fn to_inbox(inbox: mpsc::UnboundedSender<Inbox>, wrap: fn(T) -> Inbox) -> LoopSender<T> {
        LoopSender { route: Route::Inbox(inbox, wrap) }
    }

    /// Hands `value` to the loop; taken in at its next tick.
    pub fn send(&self, value: T) -> Result<(), LoopStopped> {
        match &self.route {
            Route::Inbox(tx, wrap) => tx.send(wrap(value)).map_err(|_| LoopStopped),
            Route::Channel(tx) => tx.send(value).map_err(|_| LoopStopped),
        }
    }
}

impl<T> From<mpsc::UnboundedSender<T>> for LoopSender<T> {
    fn from(tx: mpsc::UnboundedSender<T>) -> Self {
        LoopSender { route: Route::Channel(tx) }
    }
}

/// The inbox's messages since the last look, by kind, each kind in arrival order.
#[derive(Default)]
pub(super) struct Drained {
    pub(super) reports: Vec<(RolloutId, Report)>,
    /// The last reload (each replaces all policies).
    pub(super) policies: Option<Vec<LoadedPolicy>>,
    pub(super) alerts: Vec<FiringAlert>,
    pub(super) commands: Vec<OperatorCommand>,
}

impl Drained {
    /// Everything waiting in `inbox` now.
    pub(super) fn take(inbox: &mut mpsc::UnboundedReceiver<Inbox>) -> Drained {
        let mut drained = Drained::default();
        while let Ok(message) = inbox.try_recv() {
            match message {
                Inbox::Command(command) => drained.commands.push(command),
                Inbox::Report { id, report } => drained.reports.push((id, report)),
                Inbox::Policies(policies) => drained.policies = Some(policies),
                Inbox::Alert(alert) => drained.alerts.push(alert),
            }
        }
        drained
    }
}
