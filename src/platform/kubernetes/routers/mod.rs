//! The Kubernetes platform's traffic routers, one file each: the Gateway API
//! `HTTPRoute` router (`gateway.rs`). Istio `VirtualService` and the replica-ratio router
//! follow the same shape.

pub mod gateway;
