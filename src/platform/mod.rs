//! Platforms the daemon drives through [`crate::daemon::platform::Platform`]. The local
//! platform puts nginx in front of services declared in the settings; Kubernetes comes
//! next, on the same loop.

pub mod local;
