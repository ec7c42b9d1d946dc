//! Discovery documents: `/version`, `/api`, `/api/v1`, `/apis`, `/apis/{group}` and
//! `/apis/{group}/{version}` (the legacy, unaggregated forms, which kubectl falls back
//! to when the answer is plain `application/json`).

use serde_json::{Value, json};

use super::resources::ResourceType;

/// The server version kubectl and kube-rs read.
pub fn version() -> Value {
    json!({
        "major": "1",
        "minor": "32",
        "gitVersion": "v1.32.0-fake",
        "gitCommit": "0000000000000000000000000000000000000000",
        "gitTreeState": "clean",
        "buildDate": "2026-01-01T00:00:00Z",
        "goVersion": "go1.23.0",
        "compiler": "gc",
        "platform": "linux/amd64",
    })
}

/// `/api`: the core group's versions.
pub fn core_versions(server_address: &str) -> Value {
    json!({
        "kind": "APIVersions",
        "versions": ["v1"],
        "serverAddressByClientCIDRs": [{"clientCIDR": "0.0.0.0/0", "serverAddress": server_address}],
    })
}

/// The versions of `group` served by any type, preferred first.
fn group_versions(types: &[ResourceType], group: &str) -> Vec<String> {
    let mut versions: Vec<String> = Vec::new();
    for ty in types.iter().filter(|t| t.group == group) {
        for v in &ty.versions {
            if !versions.contains(v) {
                versions.push(v.clone());
            }
        }
    }
    versions
}

fn group_entry(types: &[ResourceType], group: &str) -> Value {
    let versions = group_versions(types, group);
    let entries: Vec<Value> =
        versions.iter().map(|v| json!({"groupVersion": format!("{group}/{v}"), "version": v})).collect();
    json!({
        "name": group,
        "versions": entries,
        "preferredVersion": entries.first().cloned().unwrap_or(Value::Null),
    })
}

/// `/apis`: every non-core group.
pub fn groups(types: &[ResourceType]) -> Value {
    let mut names: Vec<&str> = Vec::new();
    for ty in types.iter().filter(|t| !t.group.is_empty()) {
        if !names.contains(&ty.group.as_str()) {
            names.push(&ty.group);
        }
    }
    json!({
        "kind": "APIGroupList",
        "apiVersion": "v1",
        "groups": names.iter().map(|g| group_entry(types, g)).collect::<Vec<_>>(),
    })
}

/// `/apis/{group}`, if any type serves the group.
pub fn group(types: &[ResourceType], group: &str) -> Option<Value> {
    types.iter().any(|t| t.group == group).then(|| {
        let mut entry = group_entry(types, group);
        entry["kind"] = json!("APIGroup");
        entry["apiVersion"] = json!("v1");
        entry
    })
}

/// `/api/v1` or `/apis/{group}/{version}`: the resources served there, with their
/// subresources.
pub fn resources(types: &[ResourceType], group: &str, version: &str) -> Option<Value> {
    let served: Vec<&ResourceType> = types.iter().filter(|t| t.group == group && t.serves(version)).collect();
    if served.is_empty() {
        return None;
    }
    let mut entries = Vec::new();
    for ty in served {
        let mut entry = json!({
            "name": ty.plural,
            "singularName": ty.singular,
            "namespaced": ty.namespaced,
            "kind": ty.kind,
            "verbs": ["create", "delete", "deletecollection", "get", "list", "patch", "update", "watch"],
        });
        if !ty.short_names.is_empty() {
            entry["shortNames"] = json!(ty.short_names);
        }
        entries.push(entry);
        if ty.status {
            entries.push(json!({
                "name": format!("{}/status", ty.plural),
                "singularName": "",
                "namespaced": ty.namespaced,
                "kind": ty.kind,
                "verbs": ["get", "patch", "update"],
            }));
        }
        if ty.scale {
            entries.push(json!({
                "name": format!("{}/scale", ty.plural),
                "singularName": "",
                "namespaced": ty.namespaced,
                "group": "autoscaling",
                "version": "v1",
                "kind": "Scale",
                "verbs": ["get", "patch", "update"],
            }));
        }
    }
    let group_version = if group.is_empty() { version.to_string() } else { format!("{group}/{version}") };
    Some(json!({
        "kind": "APIResourceList",
        "apiVersion": "v1",
        "groupVersion": group_version,
        "resources": entries,
    }))
}
