//! Events have two APIs over one storage, as in the real server: core/v1 `events` and
//! `events.k8s.io/v1` `events` are the same objects, stored in the core form and
//! converted field by field (pkg/apis/events/v1/conversion.go), so an event written
//! through one is read through the other. Also the checks events.k8s.io/v1 makes on a
//! new event.

use serde_json::Value;

use super::status::Cause;

/// Top-level fields: the core/v1 name, then the events.k8s.io/v1 name.
const RENAMES: [(&str, &str); 7] = [
    ("involvedObject", "regarding"),
    ("message", "note"),
    ("reportingComponent", "reportingController"),
    ("source", "deprecatedSource"),
    ("firstTimestamp", "deprecatedFirstTimestamp"),
    ("lastTimestamp", "deprecatedLastTimestamp"),
    ("count", "deprecatedCount"),
];

fn rename(object: &Value, from_core: bool) -> Value {
    let mut out = object.clone();
    let Some(map) = out.as_object_mut() else { return out };
    let moved: Vec<(String, Option<Value>)> = RENAMES
        .iter()
        .map(|(core, new)| if from_core { (core, new) } else { (new, core) })
        .map(|(from, to)| (to.to_string(), map.remove(*from)))
        .collect();
    for (to, value) in moved {
        if let Some(value) = value {
            map.insert(to, value);
        }
    }
    out
}

/// A stored (core/v1) event as events.k8s.io/v1 serves it.
pub fn to_events_v1(core: &Value) -> Value {
    rename(core, true)
}

/// An events.k8s.io/v1 event in its stored (core/v1) form.
pub fn to_core(event: &Value) -> Value {
    rename(event, false)
}

/// Why events.k8s.io/v1 refuses to create `event` (ValidateEventCreate): the fields a
/// new event must have, and its type.
pub fn creation_causes(event: &Value) -> Vec<Cause> {
    let mut causes: Vec<Cause> =
        ["eventTime", "reportingController", "reportingInstance", "action", "reason"]
            .into_iter()
            .filter(|field| event[*field].as_str().is_none_or(str::is_empty))
            .map(Cause::required)
            .collect();
    if let Some(kind) = event["type"].as_str()
        && kind != "Normal"
        && kind != "Warning"
    {
        causes.push(Cause::invalid("type", kind, "has invalid value, must be Normal or Warning"));
    }
    causes
}
