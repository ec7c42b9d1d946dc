//! Unknown keys of a policy's spec, every one of them at once: the typed parse stops at
//! the first, so the spec is first walked against the CRD's own schema. Each unknown key
//! is reported with the nearest known one; where that key is absent, the value is read as
//! if it had been written under it (so `matchLabel` is still checked as `matchLabels`,
//! and its absence reports nothing more), else the key is dropped.

use std::sync::OnceLock;

use kube::CustomResourceExt;
use serde_json::Value;

use crate::policy::model::CanaryPolicy;
use crate::policy::suggest::{mention, nearest};
use crate::policy::validate::FieldProblem;

/// The schema of `spec`, as the CRD states it.
fn spec_schema() -> &'static Value {
    static SCHEMA: OnceLock<Value> = OnceLock::new();
    SCHEMA.get_or_init(|| {
        let crd = CanaryPolicy::crd();
        let root = crd
            .spec
            .versions
            .first()
            .and_then(|v| v.schema.as_ref())
            .and_then(|s| s.open_api_v3_schema.as_ref());
        let root = root.and_then(|r| serde_json::to_value(r).ok()).unwrap_or(Value::Null);
        root["properties"]["spec"].clone()
    })
}

/// Reports and removes (or renames to the key meant) every key of the document's `spec`
/// that its schema does not know.
pub fn strip(document: &mut Value) -> Vec<FieldProblem> {
    let mut problems = Vec::new();
    if let Some(spec) = document.get_mut("spec") {
        walk(spec, spec_schema(), "spec", &mut problems);
    }
    problems
}

fn walk(value: &mut Value, schema: &Value, path: &str, problems: &mut Vec<FieldProblem>) {
    match value {
        Value::Object(map) => {
            let Some(properties) = schema.get("properties").and_then(Value::as_object) else { return };
            let known: Vec<&str> = properties.keys().map(String::as_str).collect();
            let unknown: Vec<String> = map.keys().filter(|k| !properties.contains_key(*k)).cloned().collect();
            for key in unknown {
                let Some(v) = map.remove(&key) else { continue };
                let meant = nearest(&key, known.iter().copied());
                let suggestion = mention(meant);
                problems.push(FieldProblem {
                    path: format!("{path}.{key}"),
                    message: format!(
                        "unknown field `{key}`{suggestion}; expected one of {}",
                        known.join(", ")
                    ),
                });
                if let Some(meant) = meant.filter(|m| !map.contains_key(*m)) {
                    map.insert(meant.to_string(), v);
                }
            }
            for (key, v) in map.iter_mut() {
                walk(v, &properties[key], &format!("{path}.{key}"), problems);
            }
        }
        Value::Array(items) => {
            let Some(item) = schema.get("items") else { return };
            for (i, v) in items.iter_mut().enumerate() {
                walk(v, item, &format!("{path}[{i}]"), problems);
            }
        }
        _ => {}
    }
}
