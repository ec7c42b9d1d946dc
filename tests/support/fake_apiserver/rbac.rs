//! RBAC, as the API server authorizes a resource request: allowed when a rule of a
//! ClusterRole bound cluster-wide, or of a Role bound in the request's namespace, names
//! its API group, its resource (`deployments`, or `deployments/scale` for a
//! subresource), its verb, and (when the rule lists `resourceNames`) its object's name,
//! so never a create or a list. Non-resource paths (discovery, `/version`) are allowed,
//! as the default `system:discovery` binding allows them. Only the clients a test binds
//! are authorized; the others (the test itself, the stand-ins) act as cluster admins.

use serde_json::Value;

use super::ResourceRef;

/// One policy rule.
#[derive(Debug, Clone)]
pub struct Rule {
    pub groups: Vec<String>,
    pub resources: Vec<String>,
    pub verbs: Vec<String>,
    pub names: Vec<String>,
}

impl Rule {
    fn of(rule: &Value) -> Rule {
        let strings = |field: &str| -> Vec<String> {
            rule[field]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(|v| v.as_str().map(String::from))
                .collect()
        };
        Rule {
            groups: strings("apiGroups"),
            resources: strings("resources"),
            verbs: strings("verbs"),
            names: strings("resourceNames"),
        }
    }

    fn allows(&self, verb: &str, r: &ResourceRef) -> bool {
        let resource = match &r.subresource {
            Some(sub) => format!("{}/{sub}", r.plural),
            None => r.plural.clone(),
        };
        self.groups.contains(&r.group)
            && self.resources.contains(&resource)
            && self.verbs.iter().any(|v| v == verb)
            && (self.names.is_empty() || r.name.as_ref().is_some_and(|n| self.names.contains(n)))
    }
}

/// What one service account is granted by a set of manifests.
#[derive(Debug, Clone, Default)]
pub struct Grants {
    /// Rules of ClusterRoles bound by ClusterRoleBindings: in every namespace.
    pub cluster: Vec<Rule>,
    /// Rules of Roles bound by RoleBindings, with their namespace.
    pub namespaced: Vec<(String, Rule)>,
}

impl Grants {
    /// The grants of service account `namespace/name` in `objects` (rendered manifests,
    /// each with its namespace set, as `kubectl kustomize` prints them).
    pub fn of(objects: &[Value], namespace: &str, name: &str) -> Grants {
        let binds_it =
            |binding: &Value| {
                binding["subjects"].as_array().into_iter().flatten().any(|s| {
                    s["kind"] == "ServiceAccount" && s["name"] == name && s["namespace"] == namespace
                })
            };
        let rules_of = |kind: &str, role: &str, ns: Option<&str>| -> Vec<Rule> {
            objects
                .iter()
                .filter(|o| o["kind"] == kind && o["metadata"]["name"] == role)
                .filter(|o| ns.is_none_or(|ns| o["metadata"]["namespace"] == ns))
                .flat_map(|o| o["rules"].as_array().cloned().unwrap_or_default())
                .map(|r| Rule::of(&r))
                .collect()
        };
        let mut grants = Grants::default();
        for binding in objects.iter().filter(|o| binds_it(o)) {
            let role = binding["roleRef"]["name"].as_str().unwrap_or_default();
            let role_kind = binding["roleRef"]["kind"].as_str().unwrap_or_default();
            match binding["kind"].as_str() {
                Some("ClusterRoleBinding") => grants.cluster.extend(rules_of("ClusterRole", role, None)),
                Some("RoleBinding") => {
                    let ns = binding["metadata"]["namespace"].as_str().unwrap_or_default().to_string();
                    let rules = match role_kind {
                        "ClusterRole" => rules_of("ClusterRole", role, None),
                        _ => rules_of("Role", role, Some(&ns)),
                    };
                    grants.namespaced.extend(rules.into_iter().map(|r| (ns.clone(), r)));
                }
                _ => {}
            }
        }
        grants
    }

    /// Whether `verb` on `r` is allowed.
    pub fn allows(&self, verb: &str, r: &ResourceRef) -> bool {
        self.cluster.iter().any(|rule| rule.allows(verb, r))
            || self
                .namespaced
                .iter()
                .any(|(ns, rule)| r.namespace.as_deref() == Some(ns.as_str()) && rule.allows(verb, r))
    }

    /// Every (verb, group, resource, resource name) these grants name, a name of `*`
    /// when a rule lists none.
    pub fn permissions(&self) -> Vec<(String, String, String, String)> {
        let rules = self.cluster.iter().chain(self.namespaced.iter().map(|(_, r)| r));
        let mut out = Vec::new();
        for rule in rules {
            let names = if rule.names.is_empty() { vec!["*".to_string()] } else { rule.names.clone() };
            for verb in &rule.verbs {
                for group in &rule.groups {
                    for resource in &rule.resources {
                        for name in &names {
                            out.push((verb.clone(), group.clone(), resource.clone(), name.clone()));
                        }
                    }
                }
            }
        }
        out.sort();
        out.dedup();
        out
    }
}

/// The message the API server's 403 gives.
pub fn forbidden_message(client: &str, verb: &str, r: &ResourceRef) -> String {
    let resource = match &r.subresource {
        Some(sub) => format!("{}/{sub}", r.plural),
        None => r.plural.clone(),
    };
    let scope = match &r.namespace {
        Some(ns) => format!(" in the namespace \"{ns}\""),
        None => " at the cluster scope".to_string(),
    };
    format!("User \"{client}\" cannot {verb} resource \"{resource}\" in API group \"{}\"{scope}", r.group)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(group: &str, plural: &str, ns: Option<&str>, name: Option<&str>, sub: Option<&str>) -> ResourceRef {
        ResourceRef {
            group: group.into(),
            version: "v1".into(),
            plural: plural.into(),
            namespace: ns.map(String::from),
            name: name.map(String::from),
            subresource: sub.map(String::from),
        }
    }

    #[test]
    fn a_role_allows_only_its_namespace_its_verbs_its_subresources_and_its_names() {
        let objects = vec![
            serde_json::json!({"kind": "ClusterRole", "metadata": {"name": "c"}, "rules": [
                {"apiGroups": ["apps"], "resources": ["deployments"], "verbs": ["get"]}]}),
            serde_json::json!({"kind": "ClusterRoleBinding", "metadata": {"name": "c"}, "roleRef": {"kind": "ClusterRole", "name": "c"},
                "subjects": [{"kind": "ServiceAccount", "name": "sa", "namespace": "ops"}]}),
            serde_json::json!({"kind": "Role", "metadata": {"name": "r", "namespace": "ops"}, "rules": [
                {"apiGroups": ["coordination.k8s.io"], "resources": ["leases"], "verbs": ["get"], "resourceNames": ["l"]}]}),
            serde_json::json!({"kind": "RoleBinding", "metadata": {"name": "r", "namespace": "ops"}, "roleRef": {"kind": "Role", "name": "r"},
                "subjects": [{"kind": "ServiceAccount", "name": "sa", "namespace": "ops"}]}),
        ];
        let g = Grants::of(&objects, "ops", "sa");
        assert!(g.allows("get", &at("apps", "deployments", Some("shop"), Some("web"), None)));
        assert!(!g.allows("patch", &at("apps", "deployments", Some("shop"), Some("web"), None)));
        assert!(!g.allows("get", &at("apps", "deployments", Some("shop"), Some("web"), Some("scale"))));
        assert!(g.allows("get", &at("coordination.k8s.io", "leases", Some("ops"), Some("l"), None)));
        assert!(!g.allows("get", &at("coordination.k8s.io", "leases", Some("ops"), Some("other"), None)));
        assert!(!g.allows("get", &at("coordination.k8s.io", "leases", Some("shop"), Some("l"), None)));
        assert!(Grants::of(&objects, "ops", "someone-else").cluster.is_empty());
    }
}
