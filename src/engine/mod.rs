//! The rollout engine: a pure, deterministic state machine. Given a rollout's state,
//! the newest observations and the time, it returns the next state and the actions to
//! carry out. No I/O, no clock, no randomness: the daemon, `canaryd backtest`, the
//! benchmarks and the tests all drive this one function.

pub mod action;
pub mod arms;
pub mod input;
pub mod plan;
pub mod rollback;
pub mod rollout;
pub mod step;

pub use action::{Action, EventKind, Notification, NotificationKey};
pub use arms::Arms;
pub use input::{Command, Input, IntervalObservations};
pub use plan::Plan;
pub use rollback::RollbackReason;
pub use rollout::{
    Decision, DecisionKind, Desired, IntervalRecord, IntervalSummary, Phase, Rollout, RolloutId, Scale,
    TriggerHit,
};
pub use step::{EngineError, Transition, step};
