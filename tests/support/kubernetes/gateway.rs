//! A **stand-in for a Gateway API implementation**, for tests against the fake API
//! server. It is not a gateway controller: it polls the HTTPRoutes of one namespace,
//! takes the first rule's `backendRefs` (a Service each, with a weight), finds the ready
//! pods each Service selects (from the kubelet stand-in), and applies the split to a
//! real nginx with the local platform's nginx writer (`render`). Once nginx serves the
//! route's generation it sets `status.parents[].conditions[Accepted]` to True with that
//! `observedGeneration`, as a real implementation does. Traffic from wrk through that
//! nginx then follows the weights canaryd patched.
//!
//! It stands in for an Istio mesh the same way: a `VirtualService`'s first `http`
//! route's destinations (Service hosts, with weights) are applied to the same nginx.
//! Istio reports no acceptance on the object, so none is written.
//!
//! nginx has one front server, proxying to upstream `web`: each route the stand-in
//! applies becomes that upstream, so a test has one route taking traffic at a time. Its
//! first backend plays the "stable" arm of the writer and its second the "canary" arm.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;

use canaryd::platform::kubernetes::platform::http_route;
use canaryd::platform::kubernetes::routers::RouteKind;
use canaryd::platform::local::nginx::{Routes, Upstreams, render};
use k8s_openapi::api::core::v1::Service;
use kube::api::{Api, DynamicObject, ListParams, Patch, PatchParams};
use serde_json::{Value, json};

use super::kubelet::Pods;

const EVERY: Duration = Duration::from_millis(250);
/// The upstream nginx's front server proxies to.
pub const FRONT: &str = "web";
/// The controller name it reports in route status.
pub const CONTROLLER: &str = "stand-in.canaryd.io/gateway";

/// The nginx the stand-in writes to.
pub struct Nginx {
    /// The include file (upstreams).
    pub include: PathBuf,
    /// `nginx` arguments selecting its prefix and config (`-p`, `-c`, `-e`).
    pub args: Vec<String>,
    /// Its status server, for the writer's read-back location.
    pub status: std::net::SocketAddr,
}

/// The running stand-in.
pub struct Gateway {
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Gateway {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl Gateway {
    /// Starts the stand-in on `namespace`'s routes, serving through `nginx`.
    pub fn start(client: kube::Client, namespace: &str, pods: Pods, nginx: Nginx) -> Gateway {
        let routes: Api<DynamicObject> = Api::namespaced_with(client.clone(), namespace, &http_route());
        let meshes: Api<DynamicObject> =
            Api::namespaced_with(client.clone(), namespace, &RouteKind::VirtualService.api_resource());
        let services: Api<Service> = Api::namespaced(client, namespace);
        let task = tokio::spawn(async move {
            let mut served: BTreeMap<String, String> = BTreeMap::new();
            let mut generation = 0u64;
            loop {
                let http_routes =
                    routes.list(&ListParams::default()).await.map(|l| l.items).unwrap_or_default();
                // Absent until a test installs the VirtualService CRD.
                let virtual_services =
                    meshes.list(&ListParams::default()).await.map(|l| l.items).unwrap_or_default();
                {
                    let objects = http_routes
                        .iter()
                        .map(|r| (r, false))
                        .chain(virtual_services.iter().map(|v| (v, true)));
                    for (route, mesh) in objects {
                        let value = serde_json::to_value(route).unwrap_or_default();
                        let name = route.metadata.name.clone().unwrap_or_default();
                        let Some(upstreams) = upstreams(&value, mesh, FRONT, &services, &pods).await else {
                            continue;
                        };
                        let (upstreams, weight) = upstreams;
                        let mut routes_file = Routes::default();
                        generation += 1;
                        routes_file.generation = generation;
                        routes_file.weights.insert(FRONT.to_string(), weight);
                        let config = render(std::slice::from_ref(&upstreams), &routes_file, nginx.status);
                        let key = format!("{name} {upstreams:?} {weight}");
                        if served.get(FRONT) != Some(&key) {
                            if std::fs::write(&nginx.include, &config).is_err() || !reload(&nginx) {
                                continue;
                            }
                            served.insert(FRONT.to_string(), key);
                        }
                        if !mesh {
                            accept(&routes, &value).await;
                        }
                    }
                }
                tokio::time::sleep(EVERY).await;
            }
        });
        Gateway { task }
    }
}

/// The route's first rule (a VirtualService's first http route, when `mesh`) as nginx upstreams, and the second backend's share in
/// percent; `None` while a backend has no ready pod and takes traffic.
async fn upstreams(
    route: &Value,
    mesh: bool,
    name: &str,
    services: &Api<Service>,
    pods: &Pods,
) -> Option<(Upstreams, u8)> {
    let refs: Vec<Value> = match mesh {
        // Istio: `destination.host` (a Service's short name here), a lone destination
        // without a weight taking everything.
        true => route["spec"]["http"][0]["route"]
            .as_array()?
            .iter()
            .map(|d| json!({"name": d["destination"]["host"], "weight": d.get("weight").cloned().unwrap_or(json!(1))}))
            .collect(),
        false => route["spec"]["rules"][0]["backendRefs"].as_array()?.clone(),
    };
    let mut arms = Vec::new();
    for backend in refs.iter().take(2) {
        let service = services.get(backend["name"].as_str()?).await.ok()?;
        let selector = service.spec.and_then(|s| s.selector).unwrap_or_default();
        let weight = backend.get("weight").map_or(Some(1), Value::as_u64)?;
        arms.push((pods.endpoints(&selector), weight));
    }
    let (first, second) = match arms.as_slice() {
        [one] => (one.clone(), (Vec::new(), 0)),
        [one, two] => (one.clone(), two.clone()),
        _ => return None,
    };
    let total = first.1 + second.1;
    if total == 0 {
        return None;
    }
    let share = ((second.1 * 100 + total / 2) / total) as u8;
    // An arm that takes traffic needs a pod to send it to.
    if (share < 100 && first.0.is_empty()) || (share > 0 && second.0.is_empty()) {
        return None;
    }
    Some((Upstreams { name: name.to_string(), stable: first.0, canary: second.0 }, share))
}

fn reload(nginx: &Nginx) -> bool {
    let run = |extra: &[&str]| {
        Command::new("nginx").args(&nginx.args).args(extra).output().is_ok_and(|o| o.status.success())
    };
    run(&["-t"]) && run(&["-s", "reload"])
}

/// Reports every parent as having accepted the route's current generation.
async fn accept(routes: &Api<DynamicObject>, route: &Value) {
    let generation = route["metadata"]["generation"].as_i64().unwrap_or(0);
    let parents: Vec<Value> = route["spec"]["parentRefs"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|parent| {
            json!({
                "parentRef": parent,
                "controllerName": CONTROLLER,
                "conditions": [{
                    "type": "Accepted", "status": "True", "reason": "Accepted",
                    "message": "served by the gateway stand-in's nginx",
                    "observedGeneration": generation,
                    "lastTransitionTime": "2026-01-01T00:00:00Z",
                }],
            })
        })
        .collect();
    if route["status"]["parents"] == json!(parents) {
        return;
    }
    let name = route["metadata"]["name"].as_str().unwrap_or_default();
    let patch = json!({"status": {"parents": parents}});
    let _ = routes.patch_status(name, &PatchParams::default(), &Patch::Merge(&patch)).await;
}
