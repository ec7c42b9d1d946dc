//! Shared helpers for the integration tests.
#![allow(dead_code)]

pub mod engine;
pub mod fake_apiserver;
pub mod kubernetes;
pub mod openmetrics;
pub mod prometheus;
pub mod scale;
pub mod scrape;
pub mod stack;
pub mod victoria;
