//! The Kubernetes platform's traffic routers, one file each, the same shape: the pure
//! patches that adopt a route object, set and read back its weights, and put it back.
//! - `gateway.rs`: Gateway API `HTTPRoute`;
//! - `istio.rs`: Istio `VirtualService`;
//! - `replica.rs`: no route object: replica counts behind one Service (the arithmetic).
//!
//! [`RouteRef`] names the object a workload's weights are set on, and [`RouteKind`]
//! dispatches to its router.

pub mod gateway;
pub mod istio;
pub mod replica;

use kube::api::{ApiResource, GroupVersionKind};
use serde_json::Value;

use self::gateway::{Backends, RouteError, Served};
use crate::engine::plan::RouterKind;
use crate::policy::model::RouteSpec;

/// The kind of object a router sets weights on.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum RouteKind {
    /// `gateway.networking.k8s.io/v1` `HTTPRoute` (router `gateway-api`).
    HttpRoute,
    /// `networking.istio.io/v1` `VirtualService` (router `istio`).
    VirtualService,
}

impl RouteKind {
    /// The route kind of `router`, if it sets weights on a route object.
    pub fn of(router: RouterKind) -> Option<RouteKind> {
        match router {
            RouterKind::GatewayApi => Some(RouteKind::HttpRoute),
            RouterKind::Istio => Some(RouteKind::VirtualService),
            RouterKind::Replica | RouterKind::Nginx => None,
        }
    }

    /// The Kind, as messages name it.
    pub fn kind(self) -> &'static str {
        match self {
            RouteKind::HttpRoute => "HTTPRoute",
            RouteKind::VirtualService => "VirtualService",
        }
    }

    /// The API resource, for a dynamic client.
    pub fn api_resource(self) -> ApiResource {
        match self {
            RouteKind::HttpRoute => ApiResource::from_gvk_with_plural(
                &GroupVersionKind::gvk("gateway.networking.k8s.io", "v1", "HTTPRoute"),
                "httproutes",
            ),
            RouteKind::VirtualService => ApiResource::from_gvk_with_plural(
                &GroupVersionKind::gvk("networking.istio.io", "v1", "VirtualService"),
                "virtualservices",
            ),
        }
    }

    /// A new route object for `backends`, or why the policy gives too little to make
    /// one: an HTTPRoute needs the Gateways (`parentRefs`); a VirtualService serves the
    /// mesh by default (`hostnames` are its hosts, `parentRefs` its gateways).
    pub fn created(self, metadata: Value, spec: Option<&RouteSpec>, backends: &Backends) -> Option<Value> {
        let spec = spec?;
        match self {
            RouteKind::HttpRoute => {
                if spec.parent_refs.is_empty() {
                    return None;
                }
                let parents = serde_json::to_value(&spec.parent_refs).ok()?;
                Some(gateway::created_route(metadata, &parents, &spec.hostnames, backends))
            }
            RouteKind::VirtualService => {
                let gateways: Vec<String> = spec
                    .parent_refs
                    .iter()
                    .map(|p| match &p.namespace {
                        Some(ns) => format!("{ns}/{}", p.name),
                        None => p.name.clone(),
                    })
                    .collect();
                Some(istio::created_virtual_service(metadata, &spec.hostnames, &gateways, backends))
            }
        }
    }

    /// What creating one needs, for the error when it cannot be created.
    pub fn to_create(self) -> &'static str {
        match self {
            RouteKind::HttpRoute => {
                "creates one when the policy's spec.traffic.route.parentRefs name its Gateways"
            }
            RouteKind::VirtualService => "creates one when the policy sets spec.traffic.route",
        }
    }

    /// The JSON patch that adopts `route` (`None`: adopted already).
    pub fn adopt_patch(self, route: &Value, backends: &Backends) -> Result<Option<Value>, RouteError> {
        match self {
            RouteKind::HttpRoute => gateway::adopt_patch(route, backends),
            RouteKind::VirtualService => istio::adopt_patch(route, backends),
        }
    }

    /// The JSON patch that sends `weight` percent to the canary.
    pub fn weight_patch(self, route: &Value, backends: &Backends, weight: u8) -> Result<Value, RouteError> {
        match self {
            RouteKind::HttpRoute => gateway::weight_patch(route, backends, weight),
            RouteKind::VirtualService => istio::weight_patch(route, backends, weight),
        }
    }

    /// The canary weight `route` serves.
    pub fn served_weight(self, route: &Value, backends: &Backends) -> Result<Served, RouteError> {
        match self {
            RouteKind::HttpRoute => gateway::served_weight(route, backends),
            RouteKind::VirtualService => istio::served_weight(route, backends),
        }
    }

    /// The JSON patch that puts an adopted route back as it was.
    pub fn restore_patch(self, route: &Value) -> Result<Option<Value>, RouteError> {
        match self {
            RouteKind::HttpRoute => gateway::restore_patch(route),
            RouteKind::VirtualService => istio::restore_patch(route),
        }
    }

    /// Whether canaryd created `route` for the workload.
    pub fn created_by_canaryd(self, route: &Value, backends: &Backends) -> bool {
        match self {
            RouteKind::HttpRoute => gateway::created_by_canaryd(route, backends),
            RouteKind::VirtualService => istio::created_by_canaryd(route, backends),
        }
    }
}

/// The route object a workload's weights are set on, as recorded on `web-primary`:
/// `web` (an HTTPRoute, as canaryd first recorded them) or `virtualservice/web`.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct RouteRef {
    pub kind: RouteKind,
    pub name: String,
}

impl RouteRef {
    /// The recorded form.
    pub fn recorded(&self) -> String {
        match self.kind {
            RouteKind::HttpRoute => self.name.clone(),
            RouteKind::VirtualService => format!("virtualservice/{}", self.name),
        }
    }

    /// Reads the recorded form (an object name holds no `/`).
    pub fn parse(recorded: &str) -> RouteRef {
        match recorded.split_once('/') {
            Some(("virtualservice", name)) => RouteRef { kind: RouteKind::VirtualService, name: name.into() },
            _ => RouteRef { kind: RouteKind::HttpRoute, name: recorded.into() },
        }
    }

    /// `HTTPRoute shop/web`.
    pub fn describe(&self, namespace: &str) -> String {
        format!("{} {namespace}/{}", self.kind.kind(), self.name)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_recorded_route_reads_back_and_a_bare_name_is_an_httproute() {
        for r in [
            RouteRef { kind: RouteKind::HttpRoute, name: "web".into() },
            RouteRef { kind: RouteKind::VirtualService, name: "web-split".into() },
        ] {
            assert_eq!(RouteRef::parse(&r.recorded()), r);
        }
        assert_eq!(RouteRef::parse("web").kind, RouteKind::HttpRoute);
        assert_eq!(RouteRef::parse("virtualservice/web").describe("shop"), "VirtualService shop/web");
    }
}
