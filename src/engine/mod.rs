//! The rollout engine: a pure, deterministic state machine. Given a rollout's state,
//! the newest observations and the time, it returns the next state; what the platform
//! is to look like ([`Rollout::desired`]) and what people are told of each new decision
//! ([`Notification::of`]) are read from that state. No I/O, no clock, no randomness: the
//! daemon, `canaryd backtest`, the benchmarks and the tests all drive this one function.

pub mod action;
pub mod arms;
pub mod evidence;
pub mod input;
pub mod plan;
pub mod rollback;
pub mod rollout;
pub mod step;

pub use action::{EventKind, Notification, NotificationKey};
pub use arms::Arms;
pub use input::{Command, GateAnswer, Input, IntervalObservations};
pub use plan::Plan;
pub use rollback::RollbackReason;
pub use rollout::{
    Decision, DecisionKind, Desired, IntervalRecord, IntervalSummary, Phase, Rollout, RolloutId, Scale,
    TriggerHit,
};
pub use step::{EngineError, Transition, step};
