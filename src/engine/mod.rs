//! The rollout engine: a pure, deterministic state machine. Given a rollout's state,
//! the newest observations and the time, it returns the next state and the actions to
//! carry out. No I/O, no clock, no randomness.

pub mod plan;
