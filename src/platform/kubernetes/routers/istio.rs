//! The Istio router's pure half: what canaryd writes to a `VirtualService`
//! (`networking.istio.io/v1`) and how it reads the weights back.
//!
//! The VirtualService's `http` routes are lists, and so is each route's `route` (its
//! weighted destinations). A merge patch would replace a whole list and undo whatever
//! someone else changed beside us. So every weight change is a JSON patch (RFC 6902)
//! that first `test`s the destination hosts at the indices it writes, and the API
//! server refuses the whole patch if the VirtualService changed under it.
//!
//! Istio reports no per-object acceptance as a Gateway does (its `status` carries only
//! optional validation messages), so a weight counts as applied once the object, read
//! back, says it. VirtualServices are handled as `serde_json::Value`, as HTTPRoutes are.

use serde_json::{Value, json};

use super::gateway::{ADOPTED_RULES, Backends, CREATED_FOR, RouteError, Served};

/// The JSON pointer of an annotation (`/` escaped as `~1`, RFC 6901).
fn annotation_path(key: &str) -> String {
    format!("/metadata/annotations/{}", key.replace('~', "~0").replace('/', "~1"))
}

fn annotation<'a>(vs: &'a Value, key: &str) -> Option<&'a str> {
    vs["metadata"]["annotations"][key].as_str()
}

fn fault(vs: &Value, field: &str, reason: String) -> RouteError {
    let meta = &vs["metadata"];
    RouteError {
        route: format!(
            "VirtualService {}/{}",
            meta["namespace"].as_str().unwrap_or(""),
            meta["name"].as_str().unwrap_or("")
        ),
        field: field.into(),
        reason,
    }
}

/// Whether `host` names Service `service` of `namespace`: its short name, or
/// `service.namespace[.svc[.cluster.local]]`.
fn names_service(host: &str, service: &str, namespace: &str) -> bool {
    let qualified = format!("{service}.{namespace}");
    [
        service.to_string(),
        qualified.clone(),
        format!("{qualified}.svc"),
        format!("{qualified}.svc.cluster.local"),
    ]
    .iter()
    .any(|name| name == host)
}

fn destinations(backends: &Backends, weight: u8) -> Value {
    let weight = i64::from(weight.min(100));
    json!([
        {"destination": {"host": backends.primary, "port": {"number": backends.port}}, "weight": 100 - weight},
        {"destination": {"host": backends.canary, "port": {"number": backends.port}}, "weight": weight},
    ])
}

fn http(vs: &Value) -> Result<&[Value], RouteError> {
    vs["spec"]["http"]
        .as_array()
        .map(Vec::as_slice)
        .ok_or_else(|| fault(vs, "spec.http", "is missing".into()))
}

/// A new VirtualService for `backends` with `metadata` (name, namespace, owner,
/// labels): `hosts` (the workload's Service when empty), bound to `gateways` (the mesh
/// when empty), all traffic to the primary. It is marked as created for the workload.
pub fn created_virtual_service(
    metadata: Value,
    hosts: &[String],
    gateways: &[String],
    backends: &Backends,
) -> Value {
    let hosts: Vec<String> = if hosts.is_empty() { vec![backends.original.clone()] } else { hosts.to_vec() };
    let mut vs = json!({
        "apiVersion": "networking.istio.io/v1",
        "kind": "VirtualService",
        "metadata": metadata,
        "spec": {"hosts": hosts, "http": [{"route": destinations(backends, 0)}]},
    });
    if !gateways.is_empty() {
        vs["spec"]["gateways"] = json!(gateways);
    }
    vs["metadata"]["annotations"][CREATED_FOR] = json!(backends.original);
    vs
}

/// The JSON patch that adopts an existing VirtualService: every `http` route whose only
/// destination is the workload's Service (`web`) is split between `web-primary` (100)
/// and `web-canary` (0), and the `http` routes as they were are kept in an annotation.
/// One already adopted needs no patch (`None`).
pub fn adopt_patch(vs: &Value, backends: &Backends) -> Result<Option<Value>, RouteError> {
    if annotation(vs, ADOPTED_RULES).is_some() || annotation(vs, CREATED_FOR).is_some() {
        return Ok(None);
    }
    let namespace = vs["metadata"]["namespace"].as_str().unwrap_or("");
    let routes = http(vs)?;
    let mut ops = vec![
        json!({"op": "test", "path": "/metadata/resourceVersion", "value": vs["metadata"]["resourceVersion"]}),
    ];
    for (i, route) in routes.iter().enumerate() {
        let to = route["route"].as_array().map(Vec::as_slice).unwrap_or_default();
        if let [only] = to
            && only["destination"].get("subset").is_none()
            && only["destination"]["host"]
                .as_str()
                .is_some_and(|h| names_service(h, &backends.original, namespace))
        {
            ops.push(json!({"op": "replace", "path": format!("/spec/http/{i}/route"), "value": destinations(backends, 0)}));
        }
    }
    if ops.len() == 1 {
        return Err(fault(
            vs,
            "spec.http[].route",
            format!(
                "no http route sends its traffic to Service `{}` alone (without a subset); canaryd adopts routes whose only destination is the workload's Service",
                backends.original
            ),
        ));
    }
    let saved = serde_json::to_string(&Value::Array(routes.to_vec())).unwrap_or_default();
    if vs["metadata"].get("annotations").is_none() {
        ops.push(json!({"op": "add", "path": "/metadata/annotations", "value": {}}));
    }
    ops.push(json!({"op": "add", "path": annotation_path(ADOPTED_RULES), "value": saved}));
    Ok(Some(Value::Array(ops)))
}

/// Indices (http route, primary destination, canary destination) of the routes split
/// between the arms.
fn managed(vs: &Value, backends: &Backends) -> Result<Vec<(usize, usize, usize)>, RouteError> {
    let found: Vec<(usize, usize, usize)> = http(vs)?
        .iter()
        .enumerate()
        .filter_map(|(i, route)| {
            let to = route["route"].as_array()?;
            let at = |host: &str| to.iter().position(|d| d["destination"]["host"] == host);
            Some((i, at(&backends.primary)?, at(&backends.canary)?))
        })
        .collect();
    if found.is_empty() {
        return Err(fault(
            vs,
            "spec.http[].route",
            format!(
                "no http route has both `{}` and `{}` as destinations (not adopted yet, or changed by someone else)",
                backends.primary, backends.canary
            ),
        ));
    }
    Ok(found)
}

/// The JSON patch that sends `weight` percent of every managed route to the canary,
/// guarded by `test` ops on the destination hosts it writes beside.
pub fn weight_patch(vs: &Value, backends: &Backends, weight: u8) -> Result<Value, RouteError> {
    let weight = weight.min(100);
    let mut ops = Vec::new();
    for (i, primary, canary) in managed(vs, backends)? {
        for (j, host, w) in [(primary, &backends.primary, 100 - weight), (canary, &backends.canary, weight)] {
            let base = format!("/spec/http/{i}/route/{j}");
            ops.push(json!({"op": "test", "path": format!("{base}/destination/host"), "value": host}));
            ops.push(json!({"op": "add", "path": format!("{base}/weight"), "value": w}));
        }
    }
    Ok(Value::Array(ops))
}

/// The canary weight `vs` routes, read from its spec. Istio's rule: weights of a route
/// sum to 100; a lone destination without a weight takes everything.
pub fn served_weight(vs: &Value, backends: &Backends) -> Result<Served, RouteError> {
    let mut weight = None;
    for (i, primary, canary) in managed(vs, backends)? {
        let to = &vs["spec"]["http"][i]["route"];
        let w = |j: usize| to[j].get("weight").map_or(Some(0), Value::as_u64);
        let (Some(p), Some(c)) = (w(primary), w(canary)) else {
            return Err(fault(vs, &format!("spec.http[{i}].route[].weight"), "is not a whole number".into()));
        };
        if p + c != 100 {
            return Err(fault(
                vs,
                &format!("spec.http[{i}].route[].weight"),
                format!("the arms' weights add up to {}, not 100", p + c),
            ));
        }
        let percent = c as u8;
        match weight {
            None => weight = Some(percent),
            Some(seen) if seen != percent => {
                return Err(fault(
                    vs,
                    "spec.http",
                    format!("routes disagree: one sends {seen}% to the canary, route {i} {percent}%"),
                ));
            }
            Some(_) => {}
        }
    }
    Ok(Served::Applied(weight.unwrap_or(0)))
}

/// The JSON patch that puts an adopted VirtualService back as it was (`None` for one
/// canaryd created, which its Deployment owns, or one never adopted).
pub fn restore_patch(vs: &Value) -> Result<Option<Value>, RouteError> {
    let Some(saved) = annotation(vs, ADOPTED_RULES) else { return Ok(None) };
    let routes: Value = serde_json::from_str(saved).map_err(|e| {
        fault(vs, &format!("metadata.annotations[{ADOPTED_RULES}]"), format!("does not parse: {e}"))
    })?;
    Ok(Some(json!([
        {"op": "test", "path": "/metadata/resourceVersion", "value": vs["metadata"]["resourceVersion"]},
        {"op": "replace", "path": "/spec/http", "value": routes},
        {"op": "remove", "path": annotation_path(ADOPTED_RULES)},
    ])))
}

/// Whether canaryd created `vs` for this workload.
pub fn created_by_canaryd(vs: &Value, backends: &Backends) -> bool {
    annotation(vs, CREATED_FOR) == Some(backends.original.as_str())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn users_vs() -> Value {
        json!({
            "apiVersion": "networking.istio.io/v1", "kind": "VirtualService",
            "metadata": {"name": "web", "namespace": "shop", "resourceVersion": "7"},
            "spec": {"hosts": ["web.example.com"], "gateways": ["public"], "http": [
                {"match": [{"uri": {"prefix": "/admin"}}], "route": [{"destination": {"host": "admin"}}]},
                {"route": [{"destination": {"host": "web.shop.svc.cluster.local", "port": {"number": 8080}}}]}
            ]}
        })
    }

    fn apply(vs: &Value, patch: &Value) -> Value {
        let mut out = vs.clone();
        let patch: json_patch::Patch = serde_json::from_value(patch.clone()).expect("a JSON patch");
        json_patch::patch(&mut out, &patch).expect("the patch applies");
        out
    }

    #[test]
    fn a_host_names_the_service_by_short_name_or_fqdn_only() {
        for host in ["web", "web.shop", "web.shop.svc", "web.shop.svc.cluster.local"] {
            assert!(names_service(host, "web", "shop"), "{host}");
        }
        for host in ["web2", "web.other", "web.shop.svc.cluster", "webshop", "api"] {
            assert!(!names_service(host, "web", "shop"), "{host}");
        }
    }

    #[test]
    fn adopting_splits_only_the_route_to_the_service_and_restoring_puts_it_back() {
        let backends = Backends::of("web", 8080);
        let vs = users_vs();
        let adopted = apply(&vs, &adopt_patch(&vs, &backends).unwrap().expect("a patch"));
        // The /admin route is untouched; the catch-all is split 100/0.
        assert_eq!(adopted["spec"]["http"][0], vs["spec"]["http"][0]);
        assert_eq!(served_weight(&adopted, &backends).unwrap(), Served::Applied(0));
        assert_eq!(adopt_patch(&adopted, &backends).unwrap(), None, "adopted once");
        let at_10 = apply(&adopted, &weight_patch(&adopted, &backends, 10).unwrap());
        assert_eq!(served_weight(&at_10, &backends).unwrap(), Served::Applied(10));
        assert_eq!(at_10["spec"]["http"][1]["route"][0]["weight"], 90);
        let mut restored = apply(&at_10, &restore_patch(&at_10).unwrap().expect("a patch"));
        restored["metadata"]["annotations"] = Value::Null;
        let mut original = vs.clone();
        original["metadata"]["annotations"] = Value::Null;
        assert_eq!(restored, original);
    }

    #[test]
    fn a_weight_patch_fails_if_the_destinations_moved() {
        let backends = Backends::of("web", 8080);
        let vs = users_vs();
        let adopted = apply(&vs, &adopt_patch(&vs, &backends).unwrap().unwrap());
        let patch = weight_patch(&adopted, &backends, 50).unwrap();
        // Someone swapped the destinations after canaryd read the object.
        let mut moved = adopted.clone();
        let route = moved["spec"]["http"][1]["route"].as_array_mut().unwrap();
        route.swap(0, 1);
        let patch: json_patch::Patch = serde_json::from_value(patch).unwrap();
        assert!(json_patch::patch(&mut moved, &patch).is_err(), "the test ops refuse the patch");
    }

    #[test]
    fn a_virtual_service_with_no_route_to_the_service_alone_is_refused_naming_the_field() {
        let backends = Backends::of("web", 8080);
        let mut vs = users_vs();
        vs["spec"]["http"][1]["route"][0]["destination"]["subset"] = json!("v1");
        let e = adopt_patch(&vs, &backends).unwrap_err();
        assert_eq!(e.field, "spec.http[].route");
        assert!(e.route.contains("VirtualService shop/web"), "{e}");
    }

    #[test]
    fn weights_that_do_not_add_up_to_100_are_refused() {
        let backends = Backends::of("web", 8080);
        let mut vs =
            created_virtual_service(json!({"name": "web", "namespace": "shop"}), &[], &[], &backends);
        vs["spec"]["http"][0]["route"][0]["weight"] = json!(50);
        let e = served_weight(&vs, &backends).unwrap_err();
        assert!(e.reason.contains("add up to 50"), "{e}");
    }

    #[test]
    fn a_created_virtual_service_serves_the_workloads_service_host_on_the_mesh() {
        let backends = Backends::of("web", 8080);
        let vs = created_virtual_service(json!({"name": "web", "namespace": "shop"}), &[], &[], &backends);
        assert_eq!(vs["spec"]["hosts"], json!(["web"]));
        assert!(vs["spec"].get("gateways").is_none());
        assert!(created_by_canaryd(&vs, &backends));
        assert_eq!(served_weight(&vs, &backends).unwrap(), Served::Applied(0));
    }
}
