//! The resource types the fake serves: the built-in ones it starts with, and those a
//! CustomResourceDefinition registers (its group, served versions, scope, names and
//! status subresource).

use serde_json::Value;

/// How an object's name is validated.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NameRule {
    /// RFC 1123 subdomain (most resources).
    Subdomain,
    /// RFC 1123 label (namespaces).
    Label,
    /// RFC 1035 label (services).
    Rfc1035,
    /// Any path segment (events).
    PathSegment,
}

/// One resource type: a plural of a group, in the versions it is served at.
#[derive(Debug, Clone)]
pub struct ResourceType {
    pub group: String,
    /// Served versions, the preferred first.
    pub versions: Vec<String>,
    pub plural: String,
    pub singular: String,
    pub kind: String,
    pub namespaced: bool,
    pub short_names: Vec<String>,
    /// Has a `/status` subresource: status is written only through it.
    pub status: bool,
    /// Has a `/scale` subresource (deployments).
    pub scale: bool,
    /// A custom resource (no strategic merge patch; items of lists carry kind and
    /// apiVersion; an update must carry a resourceVersion).
    pub custom: bool,
    pub name_rule: NameRule,
    /// Stored as another type's objects (events.k8s.io/v1 events are core/v1 events).
    pub stored_as: Option<(String, String)>,
}

impl ResourceType {
    /// `deployments.apps`, or `pods` for the core group: how errors name the resource.
    pub fn group_resource(&self) -> String {
        if self.group.is_empty() { self.plural.clone() } else { format!("{}.{}", self.plural, self.group) }
    }

    /// `apps/v1`, or `v1` for the core group.
    pub fn api_version(&self, version: &str) -> String {
        if self.group.is_empty() { version.to_string() } else { format!("{}/{version}", self.group) }
    }

    /// The group and plural its objects are stored under.
    pub fn storage(&self) -> (&str, &str) {
        match &self.stored_as {
            Some((group, plural)) => (group, plural),
            None => (&self.group, &self.plural),
        }
    }

    /// Whether this type is the events.k8s.io/v1 view of core/v1 events.
    pub fn is_events_v1(&self) -> bool {
        self.stored_as.is_some()
    }

    pub fn serves(&self, version: &str) -> bool {
        self.versions.iter().any(|v| v == version)
    }
}

fn builtin(group: &str, plural: &str, kind: &str, namespaced: bool, short: &[&str]) -> ResourceType {
    ResourceType {
        group: group.into(),
        versions: vec!["v1".into()],
        plural: plural.into(),
        singular: kind.to_lowercase(),
        kind: kind.into(),
        namespaced,
        short_names: short.iter().map(|s| s.to_string()).collect(),
        status: false,
        scale: false,
        custom: false,
        name_rule: NameRule::Subdomain,
        stored_as: None,
    }
}

/// The types a fresh server serves.
pub fn builtins() -> Vec<ResourceType> {
    let with_status = |mut t: ResourceType| {
        t.status = true;
        t
    };
    let mut namespaces = with_status(builtin("", "namespaces", "Namespace", false, &["ns"]));
    namespaces.name_rule = NameRule::Label;
    let mut services = with_status(builtin("", "services", "Service", true, &["svc"]));
    services.name_rule = NameRule::Rfc1035;
    let mut events = builtin("", "events", "Event", true, &["ev"]);
    events.name_rule = NameRule::PathSegment;
    let mut new_events = builtin("events.k8s.io", "events", "Event", true, &["ev"]);
    new_events.name_rule = NameRule::PathSegment;
    new_events.stored_as = Some((String::new(), "events".into()));
    let mut deployments = with_status(builtin("apps", "deployments", "Deployment", true, &["deploy"]));
    deployments.scale = true;
    let mut httproutes =
        with_status(builtin("gateway.networking.k8s.io", "httproutes", "HTTPRoute", true, &[]));
    httproutes.custom = true;
    // autoscaling/v2 (v1 has no metrics list).
    let mut autoscalers = with_status(builtin(
        "autoscaling",
        "horizontalpodautoscalers",
        "HorizontalPodAutoscaler",
        true,
        &["hpa"],
    ));
    autoscalers.versions = vec!["v2".into()];
    vec![
        namespaces,
        with_status(builtin("", "pods", "Pod", true, &["po"])),
        services,
        events,
        deployments,
        new_events,
        builtin("coordination.k8s.io", "leases", "Lease", true, &[]),
        builtin("", "secrets", "Secret", true, &[]),
        autoscalers,
        with_status(builtin(
            "apiextensions.k8s.io",
            "customresourcedefinitions",
            "CustomResourceDefinition",
            false,
            &["crd", "crds"],
        )),
        httproutes,
    ]
}

/// The type a CustomResourceDefinition registers, if it serves any version.
pub fn from_crd(crd: &Value) -> Option<ResourceType> {
    let spec = &crd["spec"];
    let names = &spec["names"];
    let kind = names["kind"].as_str()?.to_string();
    let mut served: Vec<&Value> =
        spec["versions"].as_array()?.iter().filter(|v| v["served"].as_bool() == Some(true)).collect();
    served.sort_by(|a, b| version_priority(a["name"].as_str()).cmp(&version_priority(b["name"].as_str())));
    let versions: Vec<String> = served.iter().filter_map(|v| v["name"].as_str().map(String::from)).collect();
    if versions.is_empty() {
        return None;
    }
    let status = served.iter().any(|v| v["subresources"]["status"].is_object());
    Some(ResourceType {
        group: spec["group"].as_str()?.to_string(),
        versions,
        plural: names["plural"].as_str()?.to_string(),
        singular: names["singular"].as_str().map(String::from).unwrap_or_else(|| kind.to_lowercase()),
        kind,
        namespaced: spec["scope"].as_str() == Some("Namespaced"),
        short_names: names["shortNames"]
            .as_array()
            .map(|a| a.iter().filter_map(|s| s.as_str().map(String::from)).collect())
            .unwrap_or_default(),
        status,
        scale: false,
        custom: true,
        name_rule: NameRule::Subdomain,
        stored_as: None,
    })
}

/// Kubernetes version priority as a sort key (smaller sorts first): GA before beta before
/// alpha, higher numbers first; names that are not Kubernetes versions last, by name.
fn version_priority(name: Option<&str>) -> (u8, i64, i64, String) {
    let name = name.unwrap_or_default();
    let parsed = name.strip_prefix('v').and_then(|rest| {
        let digits: String = rest.chars().take_while(|c| c.is_ascii_digit()).collect();
        let major: i64 = digits.parse().ok()?;
        let tail = &rest[digits.len()..];
        let (stage, minor) = match tail {
            "" => (0, "0"),
            t if t.starts_with("beta") => (1, &t[4..]),
            t if t.starts_with("alpha") => (2, &t[5..]),
            _ => return None,
        };
        let minor: i64 = minor.parse().ok()?;
        Some((stage, -major, -minor))
    });
    match parsed {
        Some((stage, major, minor)) => (stage, major, minor, String::new()),
        None => (3, 0, 0, name.to_string()),
    }
}
