//! `spec.traffic.route`: the HTTPRoute the `gateway-api` router, or the VirtualService
//! the `istio` router, sets weights on, or the Service the `replica` router's pods are
//! served by; and the replica router's `spec.traffic.tolerance`. Names
//! follow the API server's rules for object names (RFC 1123 subdomains), hostnames the
//! Gateway API's (RFC 1123 hostnames, optionally one leading `*.` label), so that a bad
//! value is refused when the policy is loaded, not when the first rollout creates the
//! route.

use super::problems::Problems;
use crate::engine::plan::RouterKind;
use crate::policy::model::{ROUTE_NAME_PLACEHOLDER, RouteSpec};

/// The longest object name the API server takes.
const MAX_NAME: usize = 253;

pub(super) fn check_route(p: &mut Problems, route: Option<&RouteSpec>, router: Option<RouterKind>) {
    let Some(route) = route else { return };
    if router == Some(RouterKind::Nginx) {
        p.add(
            "spec.traffic.route",
            "only the Kubernetes routers (gateway-api, istio, replica) name a route; this policy's router is nginx",
        );
        return;
    }
    if router == Some(RouterKind::Replica) {
        for (field, set) in
            [("parentRefs", !route.parent_refs.is_empty()), ("hostnames", !route.hostnames.is_empty())]
        {
            if set {
                p.add(
                    format!("spec.traffic.route.{field}"),
                    "the replica router reads the Service `name` names and creates no route; parentRefs and hostnames are for a route canaryd creates (gateway-api, istio)",
                );
            }
        }
    }
    let istio = router == Some(RouterKind::Istio);
    // A name stands for many: checked with the shortest Deployment name in its place.
    let example = route.name_for("a");
    if route.name.matches('{').count() != route.name.matches(ROUTE_NAME_PLACEHOLDER).count() {
        p.add(
            "spec.traffic.route.name",
            format!(
                "`{}`: the only placeholder is {ROUTE_NAME_PLACEHOLDER} (the Deployment's name)",
                route.name
            ),
        );
    } else if let Err(why) = subdomain(&example) {
        p.add("spec.traffic.route.name", format!("`{}` is not an object name: {why}", route.name));
    }
    for (i, parent) in route.parent_refs.iter().enumerate() {
        let path = format!("spec.traffic.route.parentRefs[{i}]");
        if let Err(why) = subdomain(&parent.name) {
            p.add(format!("{path}.name"), format!("`{}` is not an object name: {why}", parent.name));
        }
        if let Some(ns) = &parent.namespace
            && let Err(why) = label(ns)
        {
            p.add(format!("{path}.namespace"), format!("`{ns}` is not a namespace name: {why}"));
        }
        if let Some(port) = parent.port
            && !(1..=65535).contains(&port)
        {
            p.add(format!("{path}.port"), format!("{port} is not a port (1 to 65535)"));
        }
    }
    // A VirtualService serves the mesh without gateways; an HTTPRoute needs its Gateways.
    let replica = router == Some(RouterKind::Replica);
    if !istio && !replica && route.parent_refs.is_empty() && !route.hostnames.is_empty() {
        p.add(
            "spec.traffic.route.hostnames",
            "set, but there are no parentRefs: hostnames are for a route canaryd creates, and it creates one only with parentRefs",
        );
    }
    for (i, host) in route.hostnames.iter().enumerate() {
        let bare = host.strip_prefix("*.").unwrap_or(host);
        let valid = !bare.contains('*') && subdomain(bare).is_ok();
        if !valid || host.parse::<std::net::IpAddr>().is_ok() {
            p.add(
                format!("spec.traffic.route.hostnames[{i}]"),
                format!("`{host}` is not a hostname (lowercase DNS labels, optionally one leading `*.`; no IP address)"),
            );
        }
    }
}

/// `spec.traffic.tolerance`: the replica router's, in percentage points.
pub(super) fn check_tolerance(p: &mut Problems, tolerance: Option<f64>, router: Option<RouterKind>) {
    let Some(tolerance) = tolerance else { return };
    if router.is_some_and(|r| r != RouterKind::Replica) {
        p.add(
            "spec.traffic.tolerance",
            "only the replica router approximates a step's weight (by replica counts); the other routers set it exactly",
        );
    } else if !(0.0..=50.0).contains(&tolerance) {
        p.add(
            "spec.traffic.tolerance",
            format!("{tolerance} is not a tolerance in percentage points (0 to 50)"),
        );
    }
}

/// An RFC 1123 subdomain, as the API server requires of most object names.
fn subdomain(name: &str) -> Result<(), String> {
    if name.is_empty() {
        return Err("empty".into());
    }
    if name.len() > MAX_NAME {
        return Err(format!("longer than {MAX_NAME} characters"));
    }
    name.split('.').try_for_each(|part| label_chars(part).map_err(|why| format!("{why} (in `{part}`)")))
}

/// An RFC 1123 label (namespace names).
fn label(name: &str) -> Result<(), String> {
    if name.len() > 63 {
        return Err("longer than 63 characters".into());
    }
    label_chars(name)
}

fn label_chars(part: &str) -> Result<(), String> {
    let ok = |c: char| c.is_ascii_lowercase() || c.is_ascii_digit();
    if part.is_empty() {
        return Err("an empty label".into());
    }
    if !part.chars().all(|c| ok(c) || c == '-') {
        return Err("only lowercase letters, digits and `-` are allowed".into());
    }
    if !part.starts_with(ok) || !part.ends_with(ok) {
        return Err("must start and end with a letter or digit".into());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    /// The problems of a policy with this `traffic` section (and one valid metric).
    fn problems(traffic: &str) -> Vec<String> {
        super::super::tests::problems(&format!(
            "  traffic:\n{traffic}  analysis: {{metrics: [{{name: e, template: http-error-rate, test: sequential}}]}}\n"
        ))
    }

    #[test]
    fn a_route_to_create_with_its_gateway_and_hostnames_is_accepted() {
        let found = problems(
            "    route:\n      name: \"{name}-canary-route\"\n      parentRefs: [{name: public, namespace: infra, sectionName: https, port: 443}]\n      hostnames: [shop.example.com, \"*.shop.example.com\"]\n",
        );
        assert_eq!(found, Vec::<String>::new());
    }

    #[test]
    fn bad_route_fields_are_each_named_with_the_reason() {
        let found = problems(
            "    route:\n      name: \"{app}-Route\"\n      parentRefs: [{name: Public_GW, namespace: infra.x, port: 0}]\n      hostnames: [\"shop.*.example.com\", 10.0.0.1, \"-bad.example.com\"]\n",
        );
        assert_eq!(
            found,
            [
                "spec.traffic.route.name: `{app}-Route`: the only placeholder is {name} (the Deployment's name)",
                "spec.traffic.route.parentRefs[0].name: `Public_GW` is not an object name: only lowercase letters, digits and `-` are allowed (in `Public_GW`)",
                "spec.traffic.route.parentRefs[0].namespace: `infra.x` is not a namespace name: only lowercase letters, digits and `-` are allowed",
                "spec.traffic.route.parentRefs[0].port: 0 is not a port (1 to 65535)",
                "spec.traffic.route.hostnames[0]: `shop.*.example.com` is not a hostname (lowercase DNS labels, optionally one leading `*.`; no IP address)",
                "spec.traffic.route.hostnames[1]: `10.0.0.1` is not a hostname (lowercase DNS labels, optionally one leading `*.`; no IP address)",
                "spec.traffic.route.hostnames[2]: `-bad.example.com` is not a hostname (lowercase DNS labels, optionally one leading `*.`; no IP address)",
            ]
        );
    }

    #[test]
    fn a_bad_name_with_the_placeholder_is_refused_and_hostnames_need_parent_refs() {
        let found = problems("    route: {name: \"{name}_route\", hostnames: [shop.example.com]}\n");
        assert_eq!(
            found,
            [
                "spec.traffic.route.name: `{name}_route` is not an object name: only lowercase letters, digits and `-` are allowed (in `a_route`)",
                "spec.traffic.route.hostnames: set, but there are no parentRefs: hostnames are for a route canaryd creates, and it creates one only with parentRefs",
            ]
        );
    }

    #[test]
    fn an_istio_route_may_name_hosts_without_gateways() {
        assert_eq!(
            problems("    router: istio\n    route: {name: web, hostnames: [web.example.com]}\n"),
            Vec::<String>::new()
        );
        assert_eq!(problems("    router: istio\n    route: {name: Web}\n").len(), 1);
    }

    #[test]
    fn a_route_is_refused_on_another_router() {
        let found = problems("    router: nginx\n    route: {name: web}\n");
        assert_eq!(
            found,
            [
                "spec.traffic.route: only the Kubernetes routers (gateway-api, istio, replica) name a route; this policy's router is nginx"
            ]
        );
    }

    #[test]
    fn the_replica_router_takes_a_service_name_and_a_tolerance_and_nothing_a_route_object_needs() {
        assert_eq!(
            problems("    router: replica\n    route: {name: web-svc}\n    tolerance: 2.5\n"),
            Vec::<String>::new()
        );
        assert_eq!(
            problems(
                "    router: replica\n    route: {name: web, parentRefs: [{name: public}], hostnames: [a.example.com]}\n    tolerance: 60\n"
            ),
            [
                "spec.traffic.route.parentRefs: the replica router reads the Service `name` names and creates no route; parentRefs and hostnames are for a route canaryd creates (gateway-api, istio)",
                "spec.traffic.route.hostnames: the replica router reads the Service `name` names and creates no route; parentRefs and hostnames are for a route canaryd creates (gateway-api, istio)",
                "spec.traffic.tolerance: 60 is not a tolerance in percentage points (0 to 50)",
            ]
        );
        assert_eq!(
            problems("    router: istio\n    tolerance: 5\n"),
            [
                "spec.traffic.tolerance: only the replica router approximates a step's weight (by replica counts); the other routers set it exactly"
            ]
        );
    }
}
