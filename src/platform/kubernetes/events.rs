//! Each decision as a Kubernetes Event (`events.k8s.io/v1`) on the rollout's Deployment,
//! so that `kubectl describe deployment web` and `kubectl get events` tell what canaryd
//! decided and why. Delivered by the outbox like every other notification: retried, and
//! deduplicated by decision.
//!
//! An Event's name is its notification's key (Deployment, revision, decision), so a
//! resend is the same Event: when a replica that took over (or a restarted daemon)
//! delivers again a decision the one before had delivered and not yet recorded as
//! delivered, the API server answers 409 and nothing is posted twice.

use k8s_openapi::api::core::v1::ObjectReference;
use k8s_openapi::api::events::v1::Event;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::MicroTime;
use kube::api::{ObjectMeta, PostParams};

use crate::engine::Notification;
use crate::engine::plan::Severity;
use crate::notify::DeliveryError;

/// The controller name Events are reported under.
pub const REPORTER: &str = "canaryd";

/// Posts decisions as Events on their Deployments.
pub struct EventNotifier {
    client: kube::Client,
    /// This replica's name (`POD_NAME`), as `reportingInstance`.
    instance: String,
}

impl EventNotifier {
    /// A notifier on `client`, reporting as `canaryd` (instance: this pod's name when
    /// `POD_NAME` is set).
    pub fn new(client: kube::Client) -> EventNotifier {
        let instance =
            std::env::var("POD_NAME").ok().filter(|n| !n.is_empty()).unwrap_or_else(|| REPORTER.into());
        EventNotifier { client, instance }
    }

    /// Posts `n` as an Event on its Deployment; one already posted for the same key is
    /// delivered.
    pub async fn deliver(&self, n: &Notification) -> Result<(), DeliveryError> {
        let Some((namespace, name)) = n.key.rollout.split_once('/') else {
            return Err(format!("rollout `{}` is not namespace/name", n.key.rollout).into());
        };
        post(&self.client, namespace, &event(n, name, &self.instance))
            .await
            .map_err(|e| DeliveryError::from(format!("Event on Deployment {}: {e}", n.key.rollout)))
    }
}

/// This replica's name (`POD_NAME`) as an Event's `reportingInstance`.
pub fn instance() -> String {
    std::env::var("POD_NAME").ok().filter(|n| !n.is_empty()).unwrap_or_else(|| REPORTER.into())
}

/// Creates `event` in `namespace`; one of the same name already there is the same Event
/// (posted before a restart or by the replica before), so 409 is success.
pub async fn post(client: &kube::Client, namespace: &str, event: &Event) -> Result<(), kube::Error> {
    let api: kube::Api<Event> = kube::Api::namespaced(client.clone(), namespace);
    match api.create(&PostParams::default(), event).await {
        Ok(_) => Ok(()),
        Err(kube::Error::Api(s)) if s.code == 409 => Ok(()),
        Err(e) => Err(e),
    }
}

/// The Event of a decision on Deployment `name`: `Warning` when traffic was taken off
/// the canary or it needs a look, its kind as the reason (`RolledBack`), the decision's
/// reason with the revision as the note (at most 1 kB, as the API requires), named by
/// the notification's key.
pub fn event(n: &Notification, name: &str, instance: &str) -> Event {
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
        metadata: ObjectMeta {
            name: Some(event_name(name, &n.key.revision, n.key.decision)),
            ..Default::default()
        },
        event_time: Some(MicroTime(jiff::Timestamp::now())),
        type_: Some(if n.severity == Severity::Info { "Normal" } else { "Warning" }.into()),
        reason: Some(kind.clone()),
        action: Some(kind),
        note: Some(note),
        regarding: Some(ObjectReference {
            api_version: Some("apps/v1".into()),
            kind: Some("Deployment".into()),
            namespace: n.key.rollout.split_once('/').map(|(ns, _)| ns.to_string()),
            name: Some(name.into()),
            ..ObjectReference::default()
        }),
        reporting_controller: Some(REPORTER.into()),
        reporting_instance: Some(instance.into()),
        ..Event::default()
    }
}

/// `web.canaryd.<revision>.<seq>`: one name per decision (a revision is a hex hash; a
/// name longer than an object name may be is cut in its Deployment part).
fn event_name(deployment: &str, revision: &str, decision: u64) -> String {
    let revision: String = revision
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() { c.to_ascii_lowercase() } else { '-' })
        .take(40)
        .collect();
    let suffix = format!(".{REPORTER}.{}.{decision}", revision.trim_matches('-'));
    let room = 253 - suffix.len();
    format!("{}{suffix}", &deployment[..deployment.len().min(room)])
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
    fn an_events_name_is_its_decisions_key_and_a_valid_object_name() {
        assert_eq!(event_name("web", "d730ccb784292267", 3), "web.canaryd.d730ccb784292267.3");
        assert_eq!(event_name("web", "v2_rc/1", 0), "web.canaryd.v2-rc-1.0");
        let long = "w".repeat(253);
        let name = event_name(&long, "abc", 12);
        assert_eq!(name.len(), 253);
        assert!(name.ends_with(".canaryd.abc.12"), "{name}");
    }

    #[test]
    fn kinds_are_pascal_case_reasons() {
        assert_eq!(pascal_case("rolled-back"), "RolledBack");
        assert_eq!(pascal_case("started"), "Started");
        assert_eq!(pascal_case("rollback-finished"), "RollbackFinished");
    }
}
