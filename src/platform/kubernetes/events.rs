//! Each decision as a Kubernetes Event (`events.k8s.io/v1`, through kube-runtime's
//! `Recorder`) on the rollout's Deployment, so that `kubectl describe deployment web`
//! and `kubectl get events` tell what canaryd decided and why. Delivered by the outbox
//! like every other notification: retried, and deduplicated by decision.

use k8s_openapi::api::core::v1::ObjectReference;
use kube::runtime::events::{Event, EventType, Recorder, Reporter};

use crate::engine::Notification;
use crate::engine::plan::Severity;
use crate::notify::DeliveryError;

/// The controller name Events are reported under.
pub const REPORTER: &str = "canaryd";

/// Posts decisions as Events on their Deployments.
pub struct EventNotifier {
    recorder: Recorder,
}

impl EventNotifier {
    /// A notifier on `client`, reporting as `canaryd` (instance: this pod's name when
    /// `POD_NAME` is set).
    pub fn new(client: kube::Client) -> EventNotifier {
        let reporter = Reporter { controller: REPORTER.into(), instance: std::env::var("POD_NAME").ok() };
        EventNotifier { recorder: Recorder::new(client, reporter) }
    }

    /// Posts `n` as an Event on its Deployment.
    pub async fn deliver(&self, n: &Notification) -> Result<(), DeliveryError> {
        let Some((namespace, name)) = n.key.rollout.split_once('/') else {
            return Err(format!("rollout `{}` is not namespace/name", n.key.rollout).into());
        };
        let reference = ObjectReference {
            api_version: Some("apps/v1".into()),
            kind: Some("Deployment".into()),
            namespace: Some(namespace.into()),
            name: Some(name.into()),
            ..ObjectReference::default()
        };
        self.recorder
            .publish(&event(n), &reference)
            .await
            .map_err(|e| DeliveryError::from(format!("Event on Deployment {}: {e}", n.key.rollout)))
    }
}

/// The Event of a decision: `Warning` when traffic was taken off the canary or it needs
/// a look, its kind as the reason (`RolledBack`), the decision's reason with the
/// revision as the note (at most 1 kB, as the API requires).
pub fn event(n: &Notification) -> Event {
    let kind =
        serde_json::to_value(n.event).ok().and_then(|v| v.as_str().map(pascal_case)).unwrap_or_default();
    let mut note = format!("{} (revision {}, {}% to the canary)", n.reason, n.key.revision, n.weight);
    if note.len() > 1024 {
        let mut end = 1021;
        while !note.is_char_boundary(end) {
            end -= 1;
        }
        note.truncate(end);
        note.push_str("...");
    }
    Event {
        type_: if n.severity == Severity::Info { EventType::Normal } else { EventType::Warning },
        reason: kind.clone(),
        note: Some(note),
        action: kind,
        secondary: None,
    }
}

/// `rolled-back` → `RolledBack`.
fn pascal_case(kebab: &str) -> String {
    kebab
        .split('-')
        .map(|w| {
            let mut c = w.chars();
            c.next().map(|f| f.to_ascii_uppercase().to_string() + c.as_str()).unwrap_or_default()
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kinds_are_pascal_case_reasons() {
        assert_eq!(pascal_case("rolled-back"), "RolledBack");
        assert_eq!(pascal_case("started"), "Started");
        assert_eq!(pascal_case("rollback-finished"), "RollbackFinished");
    }
}
