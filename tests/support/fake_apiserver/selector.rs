//! Label and field selectors, parsed as the API server parses them
//! (k8s.io/apimachinery/pkg/labels and fields): `=`, `==`, `!=`, `in (…)`, `notin (…)`,
//! `key`, `!key`, `key>n`, `key<n`, joined by commas (AND). A malformed one is an error
//! the server answers with 400 BadRequest.

use serde_json::Value;

/// One requirement of a label selector.
#[derive(Debug, Clone, PartialEq)]
enum Requirement {
    Equals(String, String),
    NotEquals(String, String),
    In(String, Vec<String>),
    NotIn(String, Vec<String>),
    Exists(String),
    NotExists(String),
    GreaterThan(String, i64),
    LessThan(String, i64),
}

/// A parsed label selector: every requirement must hold (empty matches everything).
#[derive(Debug, Clone, Default)]
pub struct LabelSelector(Vec<Requirement>);

impl LabelSelector {
    pub fn parse(text: &str) -> Result<Self, String> {
        if text.trim().is_empty() {
            return Ok(LabelSelector::default());
        }
        split_top_level(text)?
            .into_iter()
            .map(|part| requirement(part.trim()))
            .collect::<Result<Vec<_>, _>>()
            .map(LabelSelector)
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// Whether an object (its `metadata.labels`) satisfies the selector.
    pub fn matches(&self, object: &Value) -> bool {
        let labels = &object["metadata"]["labels"];
        let label = |k: &str| labels.get(k).and_then(Value::as_str);
        self.0.iter().all(|r| match r {
            Requirement::Equals(k, v) => label(k) == Some(v.as_str()),
            Requirement::NotEquals(k, v) => label(k) != Some(v.as_str()),
            Requirement::In(k, vs) => label(k).is_some_and(|l| vs.iter().any(|v| v == l)),
            Requirement::NotIn(k, vs) => !label(k).is_some_and(|l| vs.iter().any(|v| v == l)),
            Requirement::Exists(k) => label(k).is_some(),
            Requirement::NotExists(k) => label(k).is_none(),
            Requirement::GreaterThan(k, n) => {
                label(k).and_then(|l| l.parse::<i64>().ok()).is_some_and(|l| l > *n)
            }
            Requirement::LessThan(k, n) => {
                label(k).and_then(|l| l.parse::<i64>().ok()).is_some_and(|l| l < *n)
            }
        })
    }
}

/// Splits on the commas outside parentheses; an unbalanced parenthesis is an error.
fn split_top_level(text: &str) -> Result<Vec<&str>, String> {
    let (mut depth, mut start, mut parts) = (0i32, 0, Vec::new());
    for (i, c) in text.char_indices() {
        match c {
            '(' => depth += 1,
            ')' => depth -= 1,
            ',' if depth == 0 => {
                parts.push(&text[start..i]);
                start = i + 1;
            }
            _ => {}
        }
        if !(0..=1).contains(&depth) {
            return Err(format!("unable to parse requirement: unbalanced parentheses in {text:?}"));
        }
    }
    if depth != 0 {
        return Err(format!("unable to parse requirement: unbalanced parentheses in {text:?}"));
    }
    parts.push(&text[start..]);
    Ok(parts)
}

fn requirement(part: &str) -> Result<Requirement, String> {
    if part.is_empty() {
        return Err("unable to parse requirement: found '', expected: identifier".into());
    }
    if let Some(key) = part.strip_prefix('!') {
        return Ok(Requirement::NotExists(key_of(key.trim())?));
    }
    for (op, len) in [("==", 2), ("!=", 2), ("=", 1), (">", 1), ("<", 1)] {
        if let Some(at) = part.find(op) {
            let key = key_of(part[..at].trim())?;
            let value = part[at + len..].trim();
            return match op {
                ">" | "<" => {
                    let n = value.parse::<i64>().map_err(|_| format!("unable to parse requirement: for 'gt', 'lt' operators, the value must be an integer: {value:?}"))?;
                    Ok(if op == ">" {
                        Requirement::GreaterThan(key, n)
                    } else {
                        Requirement::LessThan(key, n)
                    })
                }
                "!=" => Ok(Requirement::NotEquals(key, value_of(value)?)),
                _ => Ok(Requirement::Equals(key, value_of(value)?)),
            };
        }
    }
    if let Some(open) = part.find('(') {
        let head = part[..open].trim();
        let close = part
            .rfind(')')
            .filter(|c| *c == part.len() - 1)
            .ok_or_else(|| format!("unable to parse requirement: {part:?}"))?;
        let values =
            part[open + 1..close].split(',').map(|v| value_of(v.trim())).collect::<Result<Vec<_>, _>>()?;
        let (key, op) = head
            .rsplit_once(char::is_whitespace)
            .ok_or_else(|| format!("unable to parse requirement: {part:?}"))?;
        let key = key_of(key.trim())?;
        if values.iter().all(String::is_empty) {
            return Err(format!(
                "unable to parse requirement: for 'in', 'notin' operators, values set can't be empty: {part:?}"
            ));
        }
        return match op {
            "in" => Ok(Requirement::In(key, values)),
            "notin" => Ok(Requirement::NotIn(key, values)),
            other => Err(format!(
                "unable to parse requirement: found '{other}', expected: in, notin, =, ==, !=, gt, lt"
            )),
        };
    }
    if part.contains(char::is_whitespace) {
        return Err(format!("unable to parse requirement: found '{part}', expected: ',', or an operator"));
    }
    Ok(Requirement::Exists(key_of(part)?))
}

/// A label key: an optional DNS subdomain prefix and `/`, then a name of at most 63
/// characters, alphanumeric at both ends, with `-`, `_`, `.` inside.
pub fn key_of(key: &str) -> Result<String, String> {
    let (prefix, name) = match key.rsplit_once('/') {
        Some((p, n)) => (Some(p), n),
        None => (None, key),
    };
    let prefix_ok = prefix.is_none_or(|p| super::validate::subdomain(p).is_none());
    if !prefix_ok || !qualified_name(name) {
        return Err(format!(
            "key: Invalid value: {key:?}: name part must consist of alphanumeric characters, '-', '_' or '.', and must start and end with an alphanumeric character"
        ));
    }
    Ok(key.to_string())
}

pub fn value_of(value: &str) -> Result<String, String> {
    if value.is_empty() || qualified_name(value) {
        Ok(value.to_string())
    } else {
        Err(format!(
            "values[0]: Invalid value: {value:?}: a valid label must be an empty string or consist of alphanumeric characters, '-', '_' or '.', and must start and end with an alphanumeric character"
        ))
    }
}

fn qualified_name(s: &str) -> bool {
    let alnum = |c: char| c.is_ascii_alphanumeric();
    !s.is_empty()
        && s.len() <= 63
        && s.starts_with(alnum)
        && s.ends_with(alnum)
        && s.chars().all(|c| alnum(c) || "-_.".contains(c))
}

/// A field selector: `field=value`, `field==value`, `field!=value`, joined by commas.
#[derive(Debug, Clone, Default)]
pub struct FieldSelector(Vec<(String, bool, String)>);

impl FieldSelector {
    /// Parses `text`, accepting the fields `supported` names (besides `metadata.name`
    /// and `metadata.namespace`, which every resource supports).
    pub fn parse(text: &str, supported: &[&str]) -> Result<Self, String> {
        let mut terms = Vec::new();
        for part in text.split(',').map(str::trim).filter(|p| !p.is_empty()) {
            let (field, equal, value) = if let Some((f, v)) = part.split_once("!=") {
                (f, false, v)
            } else if let Some((f, v)) = part.split_once("==") {
                (f, true, v)
            } else if let Some((f, v)) = part.split_once('=') {
                (f, true, v)
            } else {
                return Err(format!("invalid selector: '{part}'; can't understand '{part}'"));
            };
            let field = field.trim();
            if !["metadata.name", "metadata.namespace"].contains(&field) && !supported.contains(&field) {
                return Err(format!("field label not supported: {field}"));
            }
            terms.push((field.to_string(), equal, value.trim().to_string()));
        }
        Ok(FieldSelector(terms))
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    pub fn matches(&self, object: &Value) -> bool {
        self.0.iter().all(|(field, equal, value)| {
            let actual = field.split('.').fold(object, |v, k| &v[k]);
            let actual = actual.as_str().unwrap_or_default();
            (actual == value) == *equal
        })
    }
}

/// The fields a resource's field selectors may name besides name and namespace.
pub fn supported_fields(group: &str, plural: &str) -> &'static [&'static str] {
    match (group, plural) {
        ("", "pods") => &[
            "spec.nodeName",
            "spec.restartPolicy",
            "spec.schedulerName",
            "spec.serviceAccountName",
            "status.phase",
            "status.podIP",
        ],
        ("", "events") => &[
            "involvedObject.kind",
            "involvedObject.namespace",
            "involvedObject.name",
            "involvedObject.uid",
            "involvedObject.apiVersion",
            "involvedObject.resourceVersion",
            "involvedObject.fieldPath",
            "reason",
            "reportingComponent",
            "source",
            "type",
        ],
        ("events.k8s.io", "events") => {
            &["regarding.kind", "regarding.name", "regarding.namespace", "regarding.uid", "reason", "type"]
        }
        ("", "namespaces") => &["status.phase"],
        _ => &[],
    }
}
