//! Notification URLs kept in Kubernetes Secrets (`notify.slack.webhookSecret`): read
//! with a GET of each Secret the policies in force name, at once when the policies
//! change and again every [`REFRESH`], so that a changed Secret takes effect within
//! that. Only `get` on Secrets is needed: canaryd never lists or watches them, and
//! reads only the ones a policy names.
//!
//! A ClusterCanaryPolicy has no namespace: its Secrets are read from canaryd's own.
//!
//! The notifiers resolve a URL synchronously, from what was last read. A Secret that is
//! missing, or lacks its key, is reported as an error and as a Warning Event on the
//! policy object that names it; the notification fails, and is retried by the outbox,
//! while the rollout's decisions (a rollback among them) go on regardless.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use k8s_openapi::api::core::v1::{ObjectReference, Secret};
use k8s_openapi::api::events::v1::Event;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::MicroTime;
use kube::Api;
use kube::api::ObjectMeta;
use tokio::sync::watch;

use crate::engine::plan::SecretSource;
use crate::notify::slack::Resolver;
use crate::policy::LoadedPolicy;

/// How often the Secrets in use are read again.
pub const REFRESH: Duration = Duration::from_secs(10);

/// A Secret's key: (namespace, name, key).
type Key = (String, String, String);

/// What was last read of each Secret key in use: its value, or why there is none.
#[derive(Clone, Default)]
pub struct SecretValues {
    read: Arc<Mutex<BTreeMap<Key, Result<String, String>>>>,
}

impl SecretValues {
    fn lock(&self) -> std::sync::MutexGuard<'_, BTreeMap<Key, Result<String, String>>> {
        self.read.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// A resolver for the notifiers: environment variables through `env`, Secrets from
    /// what was last read.
    pub fn resolver(&self, env: fn(&SecretSource) -> Result<String, String>) -> Resolver {
        let values = self.clone();
        Box::new(move |source| match source {
            SecretSource::Env { .. } => env(source),
            SecretSource::KubernetesSecret { namespace, name, key } => {
                match values.lock().get(&(namespace.clone(), name.clone(), key.clone())) {
                    Some(Ok(value)) => Ok(value.clone()),
                    Some(Err(why)) => Err(why.clone()),
                    None => Err(format!("Secret {namespace}/{name} (key {key}) has not been read yet")),
                }
            }
        })
    }
}

/// Every Secret key the policies name, with the policies naming each.
fn in_use(policies: &[LoadedPolicy]) -> BTreeMap<Key, Vec<&LoadedPolicy>> {
    let mut keys: BTreeMap<Key, Vec<&LoadedPolicy>> = BTreeMap::new();
    for policy in policies {
        let notify = &policy.plan.notify;
        let sources = notify.slack.iter().map(|s| &s.webhook).chain(notify.webhook.iter().map(|w| &w.url));
        for source in sources {
            if let SecretSource::KubernetesSecret { namespace, name, key } = source {
                keys.entry((namespace.clone(), name.clone(), key.clone())).or_default().push(policy);
            }
        }
    }
    keys
}

/// Reads the Secrets the policies in `policies` name into `values`, until the process
/// ends.
pub async fn run(
    client: kube::Client,
    own_namespace: String,
    values: SecretValues,
    mut policies: watch::Receiver<Arc<Vec<LoadedPolicy>>>,
) {
    let mut reported: BTreeSet<(Key, String)> = BTreeSet::new();
    loop {
        let current = policies.borrow_and_update().clone();
        let keys = in_use(&current);
        let mut read = BTreeMap::new();
        for (key, naming) in &keys {
            let (namespace, name, field) = key;
            let namespace = if namespace.is_empty() { &own_namespace } else { namespace };
            let api: Api<Secret> = Api::namespaced(client.clone(), namespace);
            let value = match api.get_opt(name).await {
                Ok(Some(secret)) => match secret.data.as_ref().and_then(|d| d.get(field)) {
                    Some(bytes) => String::from_utf8(bytes.0.clone())
                        .map(|s| s.trim().to_string())
                        .map_err(|_| format!("Secret {namespace}/{name}: key {field} is not UTF-8 text")),
                    None => Err(format!("Secret {namespace}/{name} has no key {field}")),
                },
                Ok(None) => Err(format!("Secret {namespace}/{name} does not exist")),
                Err(e) => match values.lock().get(key) {
                    // Unreachable for now: keep what was read, say why it is not fresh.
                    Some(Ok(previous)) => {
                        tracing::warn!(secret = %format!("{namespace}/{name}"), error = %e, "cannot read the Secret again; using what was read before");
                        Ok(previous.clone())
                    }
                    _ => Err(format!("Secret {namespace}/{name}: {e}")),
                },
            };
            if let Err(why) = &value {
                for policy in naming {
                    if reported.insert((key.clone(), policy.plan.policy.clone())) {
                        tracing::error!(policy = %policy.plan.policy, problem = %why, "a Secret the policy names cannot be read: its notifications fail until it can (rollouts go on)");
                        report(&client, policy, why).await;
                    }
                }
            } else {
                reported.retain(|(k, _)| k != key);
            }
            read.insert(key.clone(), value);
        }
        *values.lock() = read;
        tokio::select! {
            _ = tokio::time::sleep(REFRESH) => {}
            changed = policies.changed() => if changed.is_err() { return },
        }
    }
}

/// A Warning Event `SecretMissing` on the policy object (a policy from a file has no
/// object: the log says it).
async fn report(client: &kube::Client, policy: &LoadedPolicy, why: &str) {
    if !policy.origin.contains("in the API server") {
        return;
    }
    let reference = &policy.reference;
    let (kind, namespace) = match &reference.namespace {
        Some(ns) => ("CanaryPolicy", ns.clone()),
        None => ("ClusterCanaryPolicy", "default".to_string()),
    };
    let event = Event {
        metadata: ObjectMeta {
            generate_name: Some(format!("{}.{}.secret-", reference.name, super::events::REPORTER)),
            ..Default::default()
        },
        event_time: Some(MicroTime(jiff::Timestamp::now())),
        type_: Some("Warning".into()),
        reason: Some("SecretMissing".into()),
        action: Some("Notify".into()),
        note: Some(format!("{why}: this policy's notifications fail until it can be read")),
        regarding: Some(ObjectReference {
            api_version: Some(crate::policy::model::API_VERSION.into()),
            kind: Some(kind.into()),
            namespace: reference.namespace.clone(),
            name: Some(reference.name.clone()),
            ..Default::default()
        }),
        reporting_controller: Some(super::events::REPORTER.into()),
        reporting_instance: Some(super::events::instance()),
        ..Event::default()
    };
    if let Err(e) = super::events::post(client, &namespace, &event).await {
        tracing::warn!(policy = %policy.plan.policy, error = %e, "cannot post the SecretMissing Event");
    }
}
