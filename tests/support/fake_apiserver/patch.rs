//! The PATCH content types: JSON merge patch (RFC 7386), JSON patch (RFC 6902, through
//! the `json-patch` crate) and strategic merge patch for the built-in types, merging the
//! lists the Kubernetes types mark `patchStrategy: merge` by their `patchMergeKey`.

use serde_json::{Map, Value};

use super::status::ApiError;

/// The patch types the server accepts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PatchType {
    Merge,
    Json,
    Strategic,
    Apply,
}

impl PatchType {
    /// The patch type a `Content-Type` names (parameters ignored).
    pub fn from_content_type(content_type: &str) -> Option<Self> {
        match content_type.split(';').next().unwrap_or_default().trim() {
            "application/merge-patch+json" => Some(PatchType::Merge),
            "application/json-patch+json" => Some(PatchType::Json),
            "application/strategic-merge-patch+json" => Some(PatchType::Strategic),
            "application/apply-patch+yaml" | "application/apply-patch+json" => Some(PatchType::Apply),
            _ => None,
        }
    }
}

/// `current` with a merge, JSON or strategic patch applied (not apply patches).
pub fn apply(kind: PatchType, current: &Value, body: &[u8]) -> Result<Value, ApiError> {
    let patch: Value = serde_json::from_slice(body)
        .map_err(|e| ApiError::bad_request(format!("error decoding patch: {e}")))?;
    let mut doc = current.clone();
    match kind {
        PatchType::Merge => {
            if !patch.is_object() {
                return Err(ApiError::bad_request("a merge patch must be a JSON object"));
            }
            json_patch::merge(&mut doc, &patch)
        }
        PatchType::Json => {
            let ops: json_patch::Patch = serde_json::from_value(patch)
                .map_err(|e| ApiError::bad_request(format!("error decoding patch: {e}")))?;
            json_patch::patch(&mut doc, &ops).map_err(|e| ApiError::unprocessable(e.to_string()))?;
        }
        PatchType::Strategic => {
            let Value::Object(patch) = patch else {
                return Err(ApiError::bad_request("a strategic merge patch must be a JSON object"));
            };
            doc = strategic(&doc, &patch, &[]).map_err(ApiError::bad_request)?;
        }
        PatchType::Apply => return Err(ApiError::bad_request("apply patches are applied by the store")),
    }
    Ok(doc)
}

/// The merge key of a list at `path` (its field names from the root), if the built-in
/// types merge it; lists without one are replaced.
fn merge_key(path: &[String]) -> Option<&'static str> {
    let field = path.last()?.as_str();
    let parent_is_container = path.len() >= 2
        && ["containers", "initContainers", "ephemeralContainers"].contains(&path[path.len() - 2].as_str());
    match field {
        "containers" | "initContainers" | "ephemeralContainers" | "volumes" | "env" | "imagePullSecrets" => {
            Some("name")
        }
        "ports" if parent_is_container => Some("containerPort"),
        "ports" => Some("port"),
        "volumeMounts" => Some("mountPath"),
        "volumeDevices" => Some("devicePath"),
        "conditions" => Some("type"),
        "ownerReferences" => Some("uid"),
        "hostAliases" => Some("ip"),
        "topologySpreadConstraints" => Some("topologyKey"),
        _ => None,
    }
}

/// Lists of scalars the built-in types merge as sets.
fn merges_as_set(path: &[String]) -> bool {
    path.last().is_some_and(|f| f == "finalizers")
}

/// `current` with the strategic patch `patch` applied, `path` being where both are.
fn strategic(current: &Value, patch: &Map<String, Value>, path: &[String]) -> Result<Value, String> {
    if patch.get("$patch").and_then(Value::as_str) == Some("replace") {
        let mut replaced = patch.clone();
        replaced.remove("$patch");
        return Ok(Value::Object(replaced));
    }
    if patch.get("$patch").and_then(Value::as_str) == Some("delete") {
        return Ok(Value::Null);
    }
    let mut out = current.as_object().cloned().unwrap_or_default();
    for (key, value) in patch {
        if key.starts_with("$setElementOrder/") || key == "$retainKeys" || key == "$patch" {
            continue;
        }
        if let Some(field) = key.strip_prefix("$deleteFromPrimitiveList/") {
            let remove: Vec<&Value> = value.as_array().map(|a| a.iter().collect()).unwrap_or_default();
            if let Some(Value::Array(list)) = out.get_mut(field) {
                list.retain(|v| !remove.contains(&v));
            }
            continue;
        }
        let mut here = path.to_vec();
        here.push(key.clone());
        match value {
            Value::Null => {
                out.remove(key);
            }
            Value::Object(inner) => {
                let merged = strategic(out.get(key).unwrap_or(&Value::Null), inner, &here)?;
                if merged.is_null() {
                    out.remove(key);
                } else {
                    out.insert(key.clone(), merged);
                }
            }
            Value::Array(items) => {
                let merged = merge_list(out.get(key), items, &here)?;
                out.insert(key.clone(), merged);
            }
            scalar => {
                out.insert(key.clone(), scalar.clone());
            }
        }
    }
    Ok(Value::Object(out))
}

/// A list patched: merged by its merge key, merged as a set, or replaced.
fn merge_list(current: Option<&Value>, items: &[Value], path: &[String]) -> Result<Value, String> {
    let current: Vec<Value> = current.and_then(Value::as_array).cloned().unwrap_or_default();
    if items.iter().any(|i| i.get("$patch").and_then(Value::as_str) == Some("replace")) {
        return Ok(Value::Array(items.iter().filter(|i| i.get("$patch").is_none()).cloned().collect()));
    }
    if merges_as_set(path) {
        let mut out = current;
        for item in items {
            if !out.contains(item) {
                out.push(item.clone());
            }
        }
        return Ok(Value::Array(out));
    }
    let Some(key) = merge_key(path) else {
        return Ok(Value::Array(items.to_vec()));
    };
    let mut out = current;
    for item in items {
        let Some(patch) = item.as_object() else {
            return Err(format!("{}: the items of a list merged by {key} must be objects", path.join(".")));
        };
        let id = patch
            .get(key)
            .ok_or_else(|| format!("map: {patch:?} does not contain declared merge key: {key}"))?;
        let at = out.iter().position(|existing| existing.get(key) == Some(id));
        let deletes = patch.get("$patch").and_then(Value::as_str) == Some("delete");
        match (at, deletes) {
            (Some(i), true) => {
                out.remove(i);
            }
            (None, true) => {}
            (Some(i), false) => out[i] = strategic(&out[i], patch, path)?,
            (None, false) => out.push(strategic(&Value::Null, patch, path)?),
        }
    }
    Ok(Value::Array(out))
}
