//! canaryd: canary releases on evidence.
//!
//! Layout: `policy` (what users write), `engine` and `judge` (the pure decision core),
//! `source` (where samples come from), `daemon` (the loop that drives every rollout:
//! platforms, store, outbox), `server` (HTTP surface), `config` and
//! `telemetry` (daemon plumbing). See README.md and docs/ for the whole picture.
#![forbid(unsafe_code)]

pub mod backtest;
pub mod client;
pub mod config;
pub mod crd;
pub mod daemon;
pub mod demo;
pub mod duration;
pub mod engine;
pub mod judge;
pub mod notify;
pub mod platform;
pub mod policy;
pub mod record;
pub mod secret;
pub mod server;
pub mod source;
pub mod store;
pub mod telemetry;
pub mod wiring;
