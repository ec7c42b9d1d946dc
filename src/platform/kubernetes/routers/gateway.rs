//! The Gateway API router's pure half: what canaryd writes to an `HTTPRoute`
//! (`gateway.networking.k8s.io/v1`) and how it reads the weights back. The route's
//! `rules` and each rule's `backendRefs` are atomic lists: a merge patch would replace a
//! whole list and undo whatever someone else changed beside us. So every weight change
//! is a JSON patch (RFC 6902) that first `test`s the backend names at the indices it
//! writes, and the API server refuses the whole patch if the route changed under it.
//!
//! A weight counts as applied only when the route serves it: the weights are read back
//! from the object, and every parent (Gateway) in `status.parents` reports `Accepted:
//! True` for `observedGeneration >= metadata.generation`. Routes are handled as
//! `serde_json::Value`: the `gateway-api` crate does not yet build with kube 5.

use serde_json::{Value, json};

use crate::platform::kubernetes::primary_name;
use crate::platform::kubernetes::workloads::canary_service_name;

/// Annotation holding the route's `spec.rules` as they were before canaryd adopted it,
/// so that finalizing restores them.
pub const ADOPTED_RULES: &str = "canaryd.io/adopted-rules";
/// Annotation on a route canaryd created (finalizing deletes it).
pub const CREATED_FOR: &str = "canaryd.io/created-for";

/// Why a route cannot be used or read as it is.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{route}: {field}: {reason}")]
pub struct RouteError {
    /// The route's kind and `namespace/name`: `HTTPRoute shop/web`.
    pub route: String,
    /// The field at fault.
    pub field: String,
    /// Why.
    pub reason: String,
}

/// The two backends canaryd splits a rule between, for Deployment `workload`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Backends {
    /// The Service the user's route sent traffic to before adoption (`web`).
    pub original: String,
    /// `web-primary`.
    pub primary: String,
    /// `web-canary`.
    pub canary: String,
    /// The Service port.
    pub port: i32,
}

impl Backends {
    /// The backends of Deployment `workload` on `port`.
    pub fn of(workload: &str, port: i32) -> Backends {
        Backends {
            original: workload.into(),
            primary: primary_name(workload),
            canary: canary_service_name(workload),
            port,
        }
    }

    fn refs(&self, weight: u8) -> Value {
        json!([
            {"name": self.primary, "port": self.port, "weight": 100 - i64::from(weight)},
            {"name": self.canary, "port": self.port, "weight": i64::from(weight)},
        ])
    }
}

/// Where a route's canary weight stands.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Served {
    /// Every parent accepted the current generation, which routes this percentage to
    /// the canary.
    Applied(u8),
    /// The weights say this much, but not every Gateway has accepted them yet: why not.
    Pending {
        /// The canary percentage in the spec.
        weight: u8,
        /// What is awaited.
        reason: String,
    },
}

/// A new route for `backends` with `metadata` (name, namespace, owner, labels), attached
/// to `parent_refs` and serving `hostnames`, all traffic to the primary. It is marked as
/// created for the workload, so that finalizing deletes it rather than restoring it.
pub fn created_route(
    metadata: Value,
    parent_refs: &Value,
    hostnames: &[String],
    backends: &Backends,
) -> Value {
    let mut route = json!({
        "apiVersion": "gateway.networking.k8s.io/v1",
        "kind": "HTTPRoute",
        "metadata": metadata,
        "spec": {"parentRefs": parent_refs, "rules": [{"backendRefs": backends.refs(0)}]},
    });
    route["metadata"]["annotations"][CREATED_FOR] = json!(backends.original);
    if !hostnames.is_empty() {
        route["spec"]["hostnames"] = json!(hostnames);
    }
    route
}

/// The JSON patch that adopts an existing route: every rule whose only backend is the
/// workload's own Service (`web`) is split between `web-primary` (100) and
/// `web-canary` (0), and the rules as they were are kept in an annotation. A route
/// already adopted needs no patch (`None`).
pub fn adopt_patch(route: &Value, backends: &Backends) -> Result<Option<Value>, RouteError> {
    if annotation(route, ADOPTED_RULES).is_some() || annotation(route, CREATED_FOR).is_some() {
        return Ok(None);
    }
    let rules = rules(route)?;
    let mut ops = vec![
        json!({"op": "test", "path": "/metadata/resourceVersion", "value": route["metadata"]["resourceVersion"]}),
    ];
    for (i, rule) in rules.iter().enumerate() {
        let refs = rule["backendRefs"].as_array().map(Vec::as_slice).unwrap_or_default();
        if let [only] = refs
            && only["name"] == backends.original.as_str()
            && is_service(only)
        {
            ops.push(json!({"op": "replace", "path": format!("/spec/rules/{i}/backendRefs"), "value": backends.refs(0)}));
        }
    }
    if ops.len() == 1 {
        return Err(fault(
            route,
            "spec.rules[].backendRefs",
            format!(
                "no rule sends its traffic to Service `{}` alone; canaryd adopts rules whose only backend is the workload's Service",
                backends.original
            ),
        ));
    }
    let saved = serde_json::to_string(&Value::Array(rules.to_vec())).unwrap_or_default();
    if route["metadata"].get("annotations").is_none() {
        ops.push(json!({"op": "add", "path": "/metadata/annotations", "value": {}}));
    }
    ops.push(json!({"op": "add", "path": annotation_path(ADOPTED_RULES), "value": saved}));
    Ok(Some(Value::Array(ops)))
}

/// The JSON patch that routes `weight` percent of every managed rule to the canary,
/// guarded by `test` ops on the backend names it writes beside.
pub fn weight_patch(route: &Value, backends: &Backends, weight: u8) -> Result<Value, RouteError> {
    let weight = weight.min(100);
    let mut ops = Vec::new();
    for (i, primary, canary) in managed_rules(route, backends)? {
        for (j, name, w) in [(primary, &backends.primary, 100 - weight), (canary, &backends.canary, weight)] {
            let base = format!("/spec/rules/{i}/backendRefs/{j}");
            ops.push(json!({"op": "test", "path": format!("{base}/name"), "value": name}));
            ops.push(json!({"op": "add", "path": format!("{base}/weight"), "value": w}));
        }
    }
    Ok(Value::Array(ops))
}

/// The canary weight `route` serves, read from its spec and status.
pub fn served_weight(route: &Value, backends: &Backends) -> Result<Served, RouteError> {
    let mut weight = None;
    for (i, primary, canary) in managed_rules(route, backends)? {
        let refs = &route["spec"]["rules"][i]["backendRefs"];
        let w = |j: usize| refs[j].get("weight").map_or(Some(1), Value::as_u64);
        let (Some(p), Some(c)) = (w(primary), w(canary)) else {
            return Err(fault(
                route,
                &format!("spec.rules[{i}].backendRefs[].weight"),
                "is not a whole number".into(),
            ));
        };
        if p + c == 0 {
            return Err(fault(
                route,
                &format!("spec.rules[{i}].backendRefs"),
                "both weights are 0: the rule serves nothing".into(),
            ));
        }
        let percent = ((c * 100 + (p + c) / 2) / (p + c)) as u8;
        match weight {
            None => weight = Some(percent),
            Some(seen) if seen != percent => {
                return Err(fault(
                    route,
                    "spec.rules",
                    format!("rules disagree: one sends {seen}% to the canary, rule {i} {percent}%"),
                ));
            }
            Some(_) => {}
        }
    }
    let weight = weight.unwrap_or(0);
    Ok(match acceptance(route) {
        Ok(()) => Served::Applied(weight),
        Err(reason) => Served::Pending { weight, reason },
    })
}

/// The JSON patch that puts an adopted route back as it was (`None` for a route
/// canaryd created, which is deleted instead, or one never adopted).
pub fn restore_patch(route: &Value) -> Result<Option<Value>, RouteError> {
    let Some(saved) = annotation(route, ADOPTED_RULES) else { return Ok(None) };
    let rules: Value = serde_json::from_str(saved).map_err(|e| {
        fault(route, &format!("metadata.annotations[{ADOPTED_RULES}]"), format!("does not parse: {e}"))
    })?;
    Ok(Some(json!([
        {"op": "test", "path": "/metadata/resourceVersion", "value": route["metadata"]["resourceVersion"]},
        {"op": "replace", "path": "/spec/rules", "value": rules},
        {"op": "remove", "path": annotation_path(ADOPTED_RULES)},
    ])))
}

/// Whether finalizing deletes the route: canaryd created it for this workload.
pub fn created_by_canaryd(route: &Value, backends: &Backends) -> bool {
    annotation(route, CREATED_FOR) == Some(backends.original.as_str())
}

/// Indices (rule, primary backend, canary backend) of the rules split between the arms.
fn managed_rules(route: &Value, backends: &Backends) -> Result<Vec<(usize, usize, usize)>, RouteError> {
    let found: Vec<(usize, usize, usize)> = rules(route)?
        .iter()
        .enumerate()
        .filter_map(|(i, rule)| {
            let refs = rule["backendRefs"].as_array()?;
            let at = |name: &str| refs.iter().position(|r| r["name"] == name && is_service(r));
            Some((i, at(&backends.primary)?, at(&backends.canary)?))
        })
        .collect();
    if found.is_empty() {
        return Err(fault(
            route,
            "spec.rules[].backendRefs",
            format!(
                "no rule has both `{}` and `{}` as backends (not adopted yet, or changed by someone else)",
                backends.primary, backends.canary
            ),
        ));
    }
    Ok(found)
}

/// `Ok` when every parent accepted the route's current generation.
fn acceptance(route: &Value) -> Result<(), String> {
    let generation = route["metadata"]["generation"].as_i64().unwrap_or(0);
    let parents = route["status"]["parents"].as_array().map(Vec::as_slice).unwrap_or_default();
    if parents.is_empty() {
        return Err("no Gateway has reported on the route yet (status.parents is empty)".into());
    }
    for parent in parents {
        let name = parent["parentRef"]["name"].as_str().unwrap_or("?");
        let accepted =
            parent["conditions"].as_array().into_iter().flatten().find(|c| c["type"] == "Accepted");
        let Some(accepted) = accepted else {
            return Err(format!("Gateway {name} has not reported an Accepted condition"));
        };
        let observed = accepted["observedGeneration"].as_i64().unwrap_or(0);
        if observed < generation {
            return Err(format!("Gateway {name} has seen generation {observed}, not yet {generation}"));
        }
        if accepted["status"] != "True" {
            let reason = accepted["reason"].as_str().unwrap_or("no reason given");
            let message = accepted["message"].as_str().unwrap_or("");
            return Err(format!("Gateway {name} does not accept the route: {reason} {message}")
                .trim_end()
                .to_string());
        }
    }
    Ok(())
}

fn rules(route: &Value) -> Result<&[Value], RouteError> {
    route["spec"]["rules"]
        .as_array()
        .map(Vec::as_slice)
        .ok_or_else(|| fault(route, "spec.rules", "is missing".into()))
}

/// A backendRef to a core Service (the default group and kind).
fn is_service(backend: &Value) -> bool {
    let group = backend.get("group").and_then(Value::as_str).unwrap_or("");
    let kind = backend.get("kind").and_then(Value::as_str).unwrap_or("Service");
    group.is_empty() && kind == "Service"
}

fn annotation<'a>(route: &'a Value, key: &str) -> Option<&'a str> {
    route["metadata"]["annotations"][key].as_str()
}

/// A JSON pointer to an annotation: `/` in the key is escaped as `~1` (RFC 6901).
fn annotation_path(key: &str) -> String {
    format!("/metadata/annotations/{}", key.replace('~', "~0").replace('/', "~1"))
}

fn fault(route: &Value, field: &str, reason: String) -> RouteError {
    let meta = &route["metadata"];
    RouteError {
        route: format!(
            "HTTPRoute {}/{}",
            meta["namespace"].as_str().unwrap_or(""),
            meta["name"].as_str().unwrap_or("")
        ),
        field: field.into(),
        reason,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A user's route as the API server returns it: one rule to Service `web`, a second
    /// to something else, accepted by its Gateway.
    fn users_route() -> Value {
        json!({
            "apiVersion": "gateway.networking.k8s.io/v1", "kind": "HTTPRoute",
            "metadata": {"name": "web", "namespace": "shop", "generation": 4, "resourceVersion": "812"},
            "spec": {
                "parentRefs": [{"name": "public"}],
                "rules": [
                    {"matches": [{"path": {"type": "PathPrefix", "value": "/"}}], "backendRefs": [{"name": "web", "port": 80}]},
                    {"matches": [{"path": {"type": "PathPrefix", "value": "/static"}}], "backendRefs": [{"name": "cdn", "port": 80}]}
                ]
            },
            "status": {"parents": [{"parentRef": {"name": "public"}, "controllerName": "example.com/gw",
                                    "conditions": [{"type": "Accepted", "status": "True", "observedGeneration": 4}]}]}
        })
    }

    /// Applies an RFC 6902 patch the way the API server does, for the tests: `test`,
    /// `add`, `replace`, `remove` on object members and array indices.
    fn apply(doc: &mut Value, patch: &Value) -> Result<(), String> {
        let mut copy = doc.clone();
        for op in patch.as_array().unwrap() {
            let path = op["path"].as_str().unwrap();
            let (parent, last) = path.rsplit_once('/').unwrap();
            let last = last.replace("~1", "/").replace("~0", "~");
            match op["op"].as_str().unwrap() {
                "test" => {
                    if copy.pointer(path) != Some(&op["value"]) {
                        return Err(format!("test failed at {path}"));
                    }
                }
                "remove" => {
                    copy.pointer_mut(parent)
                        .unwrap()
                        .as_object_mut()
                        .unwrap()
                        .remove(&last)
                        .ok_or("absent")?;
                }
                "add" | "replace" => {
                    let target = copy.pointer_mut(parent).ok_or(format!("no parent {parent}"))?;
                    match target {
                        Value::Object(map) => {
                            map.insert(last, op["value"].clone());
                        }
                        Value::Array(items) => items[last.parse::<usize>().unwrap()] = op["value"].clone(),
                        _ => return Err("bad target".into()),
                    }
                }
                other => panic!("unexpected op {other}"),
            }
        }
        *doc = copy;
        Ok(())
    }

    #[test]
    fn adopting_splits_only_the_rule_that_sent_traffic_to_the_workload() {
        let backends = Backends::of("web", 80);
        let mut route = users_route();
        let patch = adopt_patch(&route, &backends).unwrap().unwrap();
        apply(&mut route, &patch).unwrap();
        assert_eq!(
            route["spec"]["rules"][0]["backendRefs"],
            json!([{"name": "web-primary", "port": 80, "weight": 100}, {"name": "web-canary", "port": 80, "weight": 0}])
        );
        assert_eq!(route["spec"]["rules"][1], users_route()["spec"]["rules"][1]);
        assert_eq!(route["spec"]["rules"][0]["matches"], users_route()["spec"]["rules"][0]["matches"]);
        // Adopting twice changes nothing.
        assert_eq!(adopt_patch(&route, &backends).unwrap(), None);
        // Finalizing restores the route exactly as it was adopted.
        let restore = restore_patch(&route).unwrap().unwrap();
        apply(&mut route, &restore).unwrap();
        assert_eq!(route["spec"], users_route()["spec"]);
        assert_eq!(route["metadata"]["annotations"], json!({}));
    }

    #[test]
    fn a_route_that_does_not_send_traffic_to_the_workload_is_refused() {
        let err = adopt_patch(&users_route(), &Backends::of("api", 80)).unwrap_err();
        assert_eq!(
            (err.route.as_str(), err.field.as_str()),
            ("HTTPRoute shop/web", "spec.rules[].backendRefs")
        );
        assert!(err.reason.contains("Service `api`"), "{err}");
    }

    #[test]
    fn a_weight_patch_sets_both_weights_and_is_refused_if_the_backends_moved() {
        let backends = Backends::of("web", 80);
        let mut route = users_route();
        let patch = adopt_patch(&route, &backends).unwrap().unwrap();
        apply(&mut route, &patch).unwrap();
        let patch = weight_patch(&route, &backends, 10).unwrap();
        let mut patched = route.clone();
        apply(&mut patched, &patch).unwrap();
        let refs = &patched["spec"]["rules"][0]["backendRefs"];
        assert_eq!((refs[0]["weight"].clone(), refs[1]["weight"].clone()), (json!(90), json!(10)));
        // Someone reordered the backends after we read the route: the test ops refuse
        // the whole patch instead of giving the canary the primary's share.
        let mut reordered = route.clone();
        reordered["spec"]["rules"][0]["backendRefs"].as_array_mut().unwrap().reverse();
        assert!(apply(&mut reordered, &patch).unwrap_err().contains("test failed"));
    }

    #[test]
    fn a_weight_counts_only_once_every_gateway_accepted_the_generation() {
        let backends = Backends::of("web", 80);
        let mut route = users_route();
        let patch = adopt_patch(&route, &backends).unwrap().unwrap();
        apply(&mut route, &patch).unwrap();
        let patch = weight_patch(&route, &backends, 50).unwrap();
        apply(&mut route, &patch).unwrap();
        route["metadata"]["generation"] = json!(5);
        assert!(matches!(served_weight(&route, &backends).unwrap(),
            Served::Pending { weight: 50, reason } if reason.contains("generation 4, not yet 5")));
        route["status"]["parents"][0]["conditions"][0]["observedGeneration"] = json!(5);
        assert_eq!(served_weight(&route, &backends).unwrap(), Served::Applied(50));
        route["status"]["parents"][0]["conditions"][0]["status"] = json!("False");
        route["status"]["parents"][0]["conditions"][0]["reason"] = json!("NoMatchingParent");
        assert!(matches!(served_weight(&route, &backends).unwrap(),
            Served::Pending { reason, .. } if reason.contains("NoMatchingParent")));
        route["status"] = json!({});
        assert!(
            matches!(served_weight(&route, &backends).unwrap(), Served::Pending { reason, .. } if reason.contains("status.parents is empty"))
        );
    }

    #[test]
    fn weights_read_back_as_a_percentage_of_their_sum() {
        // Gateway API weights are proportions: 1 and 3 send 75% to the second backend;
        // an absent weight is 1.
        let backends = Backends::of("web", 80);
        let metadata = json!({"name": "web", "namespace": "shop"});
        let mut route = created_route(metadata, &json!([{"name": "public"}]), &[], &backends);
        route["metadata"]["generation"] = json!(1);
        route["status"] = users_route()["status"].clone();
        route["spec"]["rules"][0]["backendRefs"] =
            json!([{"name": "web-primary", "weight": 1}, {"name": "web-canary", "weight": 3}]);
        assert_eq!(served_weight(&route, &backends).unwrap(), Served::Applied(75));
        route["spec"]["rules"][0]["backendRefs"] = json!([{"name": "web-primary"}, {"name": "web-canary"}]);
        assert_eq!(served_weight(&route, &backends).unwrap(), Served::Applied(50));
        route["spec"]["rules"][0]["backendRefs"] =
            json!([{"name": "web-primary", "weight": 0}, {"name": "web-canary", "weight": 0}]);
        assert!(served_weight(&route, &backends).unwrap_err().reason.contains("serves nothing"));
    }

    #[test]
    fn a_created_route_is_known_as_ours_and_starts_at_the_primary() {
        let backends = Backends::of("web", 8080);
        let metadata = json!({"name": "web-route", "namespace": "shop", "labels": {"app.kubernetes.io/managed-by": "canaryd"}});
        let parents = json!([{"name": "public", "namespace": "infra"}]);
        let route = created_route(metadata, &parents, &["shop.example.com".into()], &backends);
        assert!(created_by_canaryd(&route, &backends));
        assert_eq!(route["metadata"]["name"], "web-route");
        assert_eq!(route["spec"]["parentRefs"], parents);
        assert_eq!(route["spec"]["hostnames"], json!(["shop.example.com"]));
        assert!(!created_by_canaryd(&users_route(), &backends));
        assert_eq!(
            route["spec"]["rules"][0]["backendRefs"][0],
            json!({"name": "web-primary", "port": 8080, "weight": 100})
        );
        assert_eq!(restore_patch(&route).unwrap(), None);
    }
}
