//! The API server's errors: `metav1.Status` bodies with the reasons and codes the real
//! server answers (api-conventions.md, "Response Status Kind").

use serde_json::{Value, json};

use super::resources::ResourceType;

/// A failed request, as the `Status` body it answers with.
#[derive(Debug, Clone)]
pub struct ApiError {
    pub code: u16,
    pub reason: &'static str,
    pub message: String,
    pub details: Value,
}

impl ApiError {
    fn new(code: u16, reason: &'static str, message: String, details: Value) -> Self {
        ApiError { code, reason, message, details }
    }

    /// The `Status` object of this error.
    pub fn body(&self) -> Value {
        let mut status = json!({
            "kind": "Status",
            "apiVersion": "v1",
            "metadata": {},
            "status": "Failure",
            "message": self.message,
            "reason": self.reason,
            "code": self.code,
        });
        if !self.details.as_object().is_some_and(|d| d.is_empty()) {
            status["details"] = self.details.clone();
        }
        status
    }

    pub fn not_found(ty: &ResourceType, name: &str) -> Self {
        Self::new(404, "NotFound", format!("{} \"{name}\" not found", ty.group_resource()), details(ty, name))
    }

    /// A namespace that does not exist, named by a create in it.
    pub fn namespace_not_found(namespace: &str) -> Self {
        Self::new(
            404,
            "NotFound",
            format!("namespaces \"{namespace}\" not found"),
            json!({"name": namespace, "kind": "namespaces"}),
        )
    }

    /// A path the server serves nothing at.
    pub fn no_such_path() -> Self {
        Self::new(404, "NotFound", "the server could not find the requested resource".into(), json!({}))
    }

    pub fn already_exists(ty: &ResourceType, name: &str) -> Self {
        Self::new(
            409,
            "AlreadyExists",
            format!("{} \"{name}\" already exists", ty.group_resource()),
            details(ty, name),
        )
    }

    pub fn conflict(ty: &ResourceType, name: &str) -> Self {
        Self::new(
            409,
            "Conflict",
            format!(
                "Operation cannot be fulfilled on {} \"{name}\": the object has been modified; please apply \
                 your changes to the latest version and try again",
                ty.group_resource()
            ),
            details(ty, name),
        )
    }

    /// A server-side apply that would take fields another manager owns.
    pub fn apply_conflict(ty: &ResourceType, name: &str, message: String) -> Self {
        let mut d = details(ty, name);
        d["causes"] = json!([{"reason": "FieldManagerConflict", "message": message}]);
        Self::new(409, "Conflict", format!("Apply failed with 1 conflict: {message}"), d)
    }

    /// 422: the object fails validation; one cause per invalid field.
    pub fn invalid(ty: &ResourceType, name: &str, causes: Vec<Cause>) -> Self {
        let listed: Vec<String> = causes.iter().map(|c| format!("{}: {}", c.field, c.message)).collect();
        let mut d = json!({"name": name, "group": ty.group, "kind": ty.kind});
        d["causes"] = causes
            .iter()
            .map(|c| json!({"reason": c.reason, "message": c.message, "field": c.field}))
            .collect();
        let qualified =
            if ty.group.is_empty() { ty.kind.clone() } else { format!("{}.{}", ty.kind, ty.group) };
        let message = format!("{qualified} \"{name}\" is invalid: {}", listed.join(", "));
        Self::new(422, "Invalid", message, d)
    }

    /// 422 without field causes (as a JSON patch whose `test` fails).
    pub fn unprocessable(message: String) -> Self {
        Self::new(422, "Invalid", message, json!({}))
    }

    /// 500, as an apiserver answers when storage or an admission webhook fails.
    pub fn internal(message: String) -> Self {
        Self::new(500, "InternalError", message, json!({}))
    }

    pub fn bad_request(message: impl Into<String>) -> Self {
        Self::new(400, "BadRequest", message.into(), json!({}))
    }

    pub fn method_not_allowed(method: &str) -> Self {
        Self::new(
            405,
            "MethodNotAllowed",
            format!("the server does not allow this method on the requested resource ({method})"),
            json!({}),
        )
    }

    pub fn unsupported_media_type(content_type: &str) -> Self {
        Self::new(
            415,
            "UnsupportedMediaType",
            format!(
                "the body of the request was in an unknown format - accepted media types include: application/json-patch+json, application/merge-patch+json, application/apply-patch+yaml (got {content_type})"
            ),
            json!({}),
        )
    }

    /// 410 Gone: a watch or continue token from a compacted resourceVersion.
    pub fn expired(message: impl Into<String>) -> Self {
        Self::new(410, "Expired", message.into(), json!({}))
    }

    pub fn forbidden(ty: &ResourceType, name: &str, why: &str) -> Self {
        Self::new(
            403,
            "Forbidden",
            format!("{} \"{name}\" is forbidden: {why}", ty.group_resource()),
            details(ty, name),
        )
    }

    /// RBAC's 403: `{resource} "name" is forbidden: User ... cannot ...`.
    pub fn rbac_forbidden(target: Option<&super::ResourceRef>, why: String) -> Self {
        let (resource, name) = match target {
            Some(t) if t.group.is_empty() => (t.plural.clone(), t.name.clone().unwrap_or_default()),
            Some(t) => (format!("{}.{}", t.plural, t.group), t.name.clone().unwrap_or_default()),
            None => (String::new(), String::new()),
        };
        let details = json!({"name": name, "kind": target.map(|t| t.plural.clone()).unwrap_or_default()});
        Self::new(403, "Forbidden", format!("{resource} \"{name}\" is forbidden: {why}"), details)
    }

    pub fn unauthorized() -> Self {
        Self::new(401, "Unauthorized", "Unauthorized".into(), json!({}))
    }
}

/// One invalid field of a 422.
#[derive(Debug, Clone)]
pub struct Cause {
    pub reason: &'static str,
    pub field: String,
    pub message: String,
}

impl Cause {
    pub fn invalid(field: &str, value: &str, why: &str) -> Self {
        Cause {
            reason: "FieldValueInvalid",
            field: field.into(),
            message: format!("Invalid value: \"{value}\": {why}"),
        }
    }

    pub fn required(field: &str) -> Self {
        Cause { reason: "FieldValueRequired", field: field.into(), message: "Required value".into() }
    }

    pub fn forbidden(field: &str, why: &str) -> Self {
        Cause { reason: "FieldValueForbidden", field: field.into(), message: format!("Forbidden: {why}") }
    }
}

/// `details` naming an object by its resource (the real server puts the plural in `kind`).
fn details(ty: &ResourceType, name: &str) -> Value {
    let mut d = json!({"name": name, "kind": ty.plural});
    if !ty.group.is_empty() {
        d["group"] = json!(ty.group);
    }
    d
}
