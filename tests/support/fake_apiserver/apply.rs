//! Server-side apply, simplified: which field manager owns which leaf fields of an
//! object, the conflicts an apply meets with another manager's fields, and the merge of
//! an applied configuration (lists are atomic: a list is one field).

use std::collections::{BTreeMap, BTreeSet};

use serde_json::{Map, Value};

/// A field: the keys from the object's root.
pub type Path = Vec<String>;

/// Who owns which fields of one object.
pub type Owners = BTreeMap<String, BTreeSet<Path>>;

/// Fields no manager owns: the server's and the object's identity.
fn untracked(path: &[String]) -> bool {
    match path {
        [first] => first == "apiVersion" || first == "kind",
        [meta, field, ..] if meta == "metadata" => [
            "name",
            "namespace",
            "uid",
            "resourceVersion",
            "generation",
            "creationTimestamp",
            "deletionTimestamp",
            "deletionGracePeriodSeconds",
            "managedFields",
            "generateName",
        ]
        .contains(&field.as_str()),
        _ => false,
    }
}

/// The leaf fields of a configuration and their values (objects are recursed into; an
/// empty object, a list or a scalar is a leaf).
pub fn leaves(value: &Value) -> BTreeMap<Path, Value> {
    fn walk(value: &Value, path: &mut Path, out: &mut BTreeMap<Path, Value>) {
        match value {
            Value::Object(map) if !map.is_empty() => {
                for (k, v) in map {
                    path.push(k.clone());
                    walk(v, path, out);
                    path.pop();
                }
            }
            leaf => {
                if !untracked(path) && !path.is_empty() {
                    out.insert(path.clone(), leaf.clone());
                }
            }
        }
    }
    let mut out = BTreeMap::new();
    walk(value, &mut Vec::new(), &mut out);
    out
}

pub fn get<'a>(value: &'a Value, path: &[String]) -> Option<&'a Value> {
    path.iter().try_fold(value, |v, k| v.get(k))
}

fn set(value: &mut Value, path: &[String], leaf: Value) {
    let Some((last, parents)) = path.split_last() else { return };
    let mut here = value;
    for key in parents {
        if !here.get(key).is_some_and(Value::is_object) {
            here[key.as_str()] = Value::Object(Map::new());
        }
        here = &mut here[key.as_str()];
    }
    here[last.as_str()] = leaf;
}

fn remove(value: &mut Value, path: &[String]) {
    let Some((last, parents)) = path.split_last() else { return };
    let mut here = value;
    for key in parents {
        match here.get_mut(key) {
            Some(next) => here = next,
            None => return,
        }
    }
    if let Some(map) = here.as_object_mut() {
        map.remove(last);
    }
}

/// Whether `field` is `path` or lies inside it. Owning a map's own path (an empty map)
/// is owning the map, not its future keys, so a field inside it is not covered.
fn within(field: &[String], path: &[String]) -> bool {
    field.starts_with(path)
}

/// The fields `manager` would take from others by applying `applied` to `current`:
/// those it sets to another value while another manager owns the same field.
pub fn conflicts(
    current: &Value,
    applied: &BTreeMap<Path, Value>,
    owners: &Owners,
    manager: &str,
) -> Vec<(String, Path)> {
    let mut found = Vec::new();
    for (path, value) in applied {
        if get(current, path) == Some(value) {
            continue;
        }
        for (other, fields) in owners.iter().filter(|(m, _)| m.as_str() != manager) {
            if fields.iter().any(|f| f == path) {
                found.push((other.clone(), path.clone()));
            }
        }
    }
    found
}

/// `current` with the applied fields set, and the fields `manager` applied before but no
/// longer does removed unless another manager owns them; `owners` updated.
pub fn merge(
    current: &Value,
    applied: &BTreeMap<Path, Value>,
    owners: &mut Owners,
    manager: &str,
    force: bool,
) -> Value {
    let mut out = current.clone();
    for (path, value) in applied {
        set(&mut out, path, value.clone());
    }
    let before = owners.remove(manager).unwrap_or_default();
    for dropped in before.iter().filter(|p| !applied.contains_key(*p)) {
        let kept = owners.values().any(|fields| fields.iter().any(|f| within(f, dropped)));
        if !kept {
            remove(&mut out, dropped);
        }
    }
    if force {
        for fields in owners.values_mut() {
            fields.retain(|f| !applied.keys().any(|p| within(f, p)));
        }
    }
    owners.insert(manager.to_string(), applied.keys().cloned().collect());
    owners.retain(|_, fields| !fields.is_empty());
    out
}

/// After a create, update or patch by `manager`: it owns every field it set or changed,
/// and nobody owns a field it removed.
pub fn track_update(before: Option<&Value>, after: &Value, owners: &mut Owners, manager: &str) {
    let now = leaves(after);
    let changed: BTreeSet<Path> = now
        .iter()
        .filter(|(path, value)| before.and_then(|b| get(b, path)) != Some(*value))
        .map(|(path, _)| path.clone())
        .collect();
    let removed: BTreeSet<Path> = before
        .map(leaves)
        .unwrap_or_default()
        .into_keys()
        .filter(|path| get(after, path).is_none())
        .collect();
    for fields in owners.values_mut() {
        fields.retain(|f| !changed.iter().chain(&removed).any(|c| within(f, c)));
    }
    if !changed.is_empty() {
        owners.entry(manager.to_string()).or_default().extend(changed);
    }
    owners.retain(|_, fields| !fields.is_empty());
}

/// How a conflict is worded: `conflict with "manager": .spec.holderIdentity`.
pub fn describe(conflicts: &[(String, Path)]) -> String {
    conflicts
        .iter()
        .map(|(manager, path)| format!("conflict with \"{manager}\": .{}", path.join(".")))
        .collect::<Vec<_>>()
        .join(", ")
}
