//! A Deployment's revision: a stable hash of its pod template. A change to the template
//! (image, args, env, resources, labels) is a new revision and starts a rollout; a
//! change canaryd makes itself (its own `canaryd.io/` annotations) is not, and neither is
//! a return to a template already promoted, which hashes the same.
//!
//! The hash is SHA-256 (aws-lc-rs, the crypto provider the Kubernetes client already
//! uses) over a canonical JSON form of the template: object keys sorted, no whitespace.
//! It is stable across canaryd releases and machines, unlike std's `DefaultHasher`, and
//! does not depend on the order in which the API server or a serializer wrote the keys.

use serde_json::Value;

/// Annotations under this prefix are canaryd's own and never part of a revision.
pub const OWN_ANNOTATION_PREFIX: &str = "canaryd.io/";

/// How many hex digits of the SHA-256 a revision keeps: 64 bits, as collision-free as
/// a rollout needs and short enough to read in a table.
const REVISION_HEX_DIGITS: usize = 16;

/// The revision of a pod template (a Deployment's `spec.template`, as JSON).
pub fn template_revision(template: &Value) -> String {
    let mut canonical = String::new();
    write_canonical(&without_own_annotations(template), &mut canonical);
    let digest = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, canonical.as_bytes());
    let mut hex = String::with_capacity(REVISION_HEX_DIGITS);
    for byte in digest.as_ref() {
        hex.push_str(&format!("{byte:02x}"));
        if hex.len() >= REVISION_HEX_DIGITS {
            break;
        }
    }
    hex
}

/// The template without canaryd's own annotations (and without an annotations map
/// that held only those, so that adding and removing one leaves the hash as it was).
fn without_own_annotations(template: &Value) -> Value {
    let mut template = template.clone();
    if let Some(metadata) = template.get_mut("metadata").and_then(Value::as_object_mut) {
        if let Some(annotations) = metadata.get_mut("annotations").and_then(Value::as_object_mut) {
            annotations.retain(|key, _| !key.starts_with(OWN_ANNOTATION_PREFIX));
            if annotations.is_empty() {
                metadata.remove("annotations");
            }
        }
        if metadata.is_empty() {
            template.as_object_mut().map(|t| t.remove("metadata"));
        }
    }
    template
}

/// Writes `value` as JSON with every object's keys in sorted order.
fn write_canonical(value: &Value, out: &mut String) {
    match value {
        Value::Object(map) => {
            let mut keys: Vec<&String> = map.keys().collect();
            keys.sort();
            out.push('{');
            for (i, key) in keys.into_iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                out.push_str(&Value::String(key.clone()).to_string());
                out.push(':');
                write_canonical(&map[key], out);
            }
            out.push('}');
        }
        Value::Array(items) => {
            out.push('[');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                write_canonical(item, out);
            }
            out.push(']');
        }
        scalar => out.push_str(&scalar.to_string()),
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn template(image: &str) -> Value {
        json!({
            "metadata": {"labels": {"app": "web"}},
            "spec": {"containers": [{"name": "app", "image": image, "args": ["--port", "8080"]}]}
        })
    }

    #[test]
    fn the_revision_is_the_sha256_of_the_canonical_template() {
        // Expected value from an independent tool: the canonical form below hashed with
        // `printf '%s' '<canonical>' | sha256sum`, first 16 hex digits.
        let canonical = r#"{"metadata":{"labels":{"app":"web"}},"spec":{"containers":[{"args":["--port","8080"],"image":"shop/web:v2","name":"app"}]}}"#;
        let mut written = String::new();
        write_canonical(&template("shop/web:v2"), &mut written);
        assert_eq!(written, canonical);
        assert_eq!(template_revision(&template("shop/web:v2")), "12e7cda6c94dea99");
    }

    #[test]
    fn key_order_does_not_change_the_revision() {
        let reordered: Value = serde_json::from_str(
            r#"{"spec": {"containers": [{"image": "shop/web:v2", "args": ["--port", "8080"], "name": "app"}]},
                "metadata": {"labels": {"app": "web"}}}"#,
        )
        .unwrap();
        assert_eq!(template_revision(&reordered), template_revision(&template("shop/web:v2")));
    }

    #[test]
    fn a_template_change_is_a_new_revision() {
        assert_ne!(template_revision(&template("shop/web:v2")), template_revision(&template("shop/web:v3")));
        let mut env = template("shop/web:v2");
        env["spec"]["containers"][0]["env"] = json!([{"name": "ERROR_RATE", "value": "0.05"}]);
        assert_ne!(template_revision(&env), template_revision(&template("shop/web:v2")));
        // Array order is meaningful (container args), unlike key order.
        let mut args = template("shop/web:v2");
        args["spec"]["containers"][0]["args"] = json!(["8080", "--port"]);
        assert_ne!(template_revision(&args), template_revision(&template("shop/web:v2")));
    }

    #[test]
    fn canaryds_own_annotations_are_not_part_of_the_revision() {
        let plain = template("shop/web:v2");
        let mut annotated = plain.clone();
        annotated["metadata"]["annotations"] =
            json!({"canaryd.io/revision": "abc", "canaryd.io/promoted-at": "x"});
        assert_eq!(template_revision(&annotated), template_revision(&plain));
        // Someone else's annotation is part of the template.
        annotated["metadata"]["annotations"]["kubectl.kubernetes.io/restartedAt"] =
            json!("2026-12-02T10:00:00Z");
        assert_ne!(template_revision(&annotated), template_revision(&plain));
    }
}
