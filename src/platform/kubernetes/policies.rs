//! Policies from the API server: `CanaryPolicy` objects (in the watched namespaces) and
//! `ClusterCanaryPolicy` objects, watched with kube-runtime's watcher and reflector and
//! validated exactly as `canaryd check` validates a file, beside the policy files.
//!
//! Objects are read untyped, so that a bad spec reaches validation (and is reported with
//! every field at fault) instead of being dropped by deserialisation. Each object's
//! verdict is written back to it:
//! - its `status.conditions`: `Valid` `True`, or `False` with every problem (field and
//!   reason) in the message, and the `observedGeneration` it judged;
//! - a Kubernetes Event when the verdict changes: `Warning InvalidPolicy` naming the
//!   problems, `Normal PolicyValid` once a bad policy is fixed.
//!
//! A status is written only when the verdict differs from what the object already says,
//! so the write it causes (a new `resourceVersion`, no new `generation`) ends there, and
//! a restarted daemon rewrites nothing. The valid objects go to [`PolicySources`] once
//! every watch has listed, and again whenever the set (names and generations) changes.

use std::collections::{BTreeSet, HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::api::core::v1::ObjectReference;
use k8s_openapi::api::events::v1::Event;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::MicroTime;
use kube::api::ObjectMeta;
use kube::api::{Api, ApiResource, DynamicObject, Patch, PatchParams};
use kube::runtime::reflector::{self, Store, store::Writer};
use kube::runtime::{WatchStreamExt, watcher};
use kube::{CustomResourceExt, ResourceExt};
use serde_json::json;

use crate::policy::sources::PolicySources;
use crate::policy::{CanaryPolicy, ClusterCanaryPolicy, LoadedPolicy};
use crate::source::scrape::ScrapeIntervals;

/// The condition canaryd writes on a policy object.
pub const VALID: &str = "Valid";

/// Re-validation after a change waits this long for more changes (an initial list of
/// many objects is judged once, not once per object).
const SETTLE: Duration = Duration::from_millis(250);

/// Watches the policy objects and keeps [`PolicySources`] and their statuses current.
pub struct PolicyObjects {
    client: kube::Client,
    namespaces: Option<Vec<String>>,
    scrape: ScrapeIntervals,
    /// This replica's name, on the Events it posts.
    instance: String,
}

/// An object's verdict: in force, or its problems (`field: reason`).
#[derive(Clone, Debug)]
enum Verdict {
    Valid(Box<LoadedPolicy>),
    Invalid(Vec<String>),
}

impl Verdict {
    fn condition(&self) -> (&'static str, &'static str, String) {
        match self {
            Verdict::Valid(_) => ("True", "Accepted", "the policy is valid and in force".into()),
            Verdict::Invalid(problems) => ("False", "Invalid", problems.join("; ")),
        }
    }
}

/// What was last judged of one object.
struct Judged {
    generation: Option<i64>,
    verdict: Verdict,
}

impl PolicyObjects {
    /// Policy objects on `client`, namespaced ones in `namespaces` (`None`: all),
    /// checked against `scrape` as files are.
    pub fn new(
        client: kube::Client,
        namespaces: Option<Vec<String>>,
        scrape: ScrapeIntervals,
    ) -> PolicyObjects {
        PolicyObjects { client, namespaces, scrape, instance: super::events::instance() }
    }

    /// Runs until the process ends.
    pub async fn run(self, sources: Arc<PolicySources>) {
        let namespaced = CanaryPolicy::api_resource();
        let cluster = ClusterCanaryPolicy::api_resource();
        let mut apis: Vec<(Api<DynamicObject>, ApiResource)> = match &self.namespaces {
            None => vec![(Api::all_with(self.client.clone(), &namespaced), namespaced.clone())],
            Some(namespaces) => namespaces
                .iter()
                .map(|ns| (Api::namespaced_with(self.client.clone(), ns, &namespaced), namespaced.clone()))
                .collect(),
        };
        apis.push((Api::all_with(self.client.clone(), &cluster), cluster.clone()));
        let mut stores: Vec<Store<DynamicObject>> = Vec::new();
        let mut listed = vec![false; apis.len()];
        let streams = apis.into_iter().enumerate().map(|(i, (api, resource))| {
            let writer = Writer::new(resource.clone());
            stores.push(writer.as_reader());
            reflector::reflector(writer, watcher(api, watcher::Config::default()).default_backoff())
                .map(move |event| (i, resource.kind.clone(), event))
                .boxed()
        });
        let mut events = futures::stream::select_all(streams);
        let mut judged: HashMap<String, Judged> = HashMap::new();
        let mut published: Option<BTreeSet<String>> = None;
        let mut dirty = false;
        loop {
            let next = if dirty {
                tokio::time::timeout(SETTLE, events.next()).await
            } else {
                Ok(events.next().await)
            };
            match next {
                Ok(Some((i, _, Ok(event)))) => {
                    if matches!(event, watcher::Event::InitDone) {
                        listed[i] = true;
                    }
                    dirty = true;
                    continue;
                }
                Ok(Some((_, kind, Err(e)))) => {
                    tracing::warn!(error = %e, kind, "policy object watch failed (is the CRD installed? `canaryd crd | kubectl apply -f -`); retrying with backoff");
                    continue;
                }
                Ok(None) => return,
                Err(_settled) => {}
            }
            dirty = false;
            if !listed.iter().all(|l| *l) {
                continue;
            }
            let objects: Vec<Arc<DynamicObject>> = stores.iter().flat_map(Store::state).collect();
            let valid = self.judge_all(&objects, &mut judged).await;
            // Origins name the object and its generation: the set changed or it did not.
            let set: BTreeSet<String> = valid.iter().map(|p| p.origin.clone()).collect();
            if published.as_ref() != Some(&set) {
                sources.set_objects(valid);
                published = Some(set);
            }
        }
    }

    /// Judges every object (again only those whose generation changed), reports each
    /// changed verdict, and returns the valid ones.
    async fn judge_all(
        &self,
        objects: &[Arc<DynamicObject>],
        judged: &mut HashMap<String, Judged>,
    ) -> Vec<LoadedPolicy> {
        let present: HashSet<String> = objects.iter().map(|o| uid_key(o)).collect();
        judged.retain(|uid, _| present.contains(uid));
        let mut valid = Vec::new();
        for object in objects {
            let key = uid_key(object);
            let generation = object.metadata.generation;
            let fresh = judged.get(&key).is_none_or(|j| j.generation != generation);
            if fresh {
                let verdict = judge(object, &self.scrape);
                self.report(object, &verdict).await;
                judged.insert(key.clone(), Judged { generation, verdict });
            }
            if let Some(Judged { verdict: Verdict::Valid(policy), .. }) = judged.get(&key) {
                valid.push((**policy).clone());
            }
        }
        valid
    }

    /// Writes `verdict` into the object's `Valid` condition and, when it changed, posts
    /// an Event; nothing when the object already says it.
    async fn report(&self, object: &DynamicObject, verdict: &Verdict) {
        let (status, reason, message) = verdict.condition();
        let previous = object.data["status"]["conditions"]
            .as_array()
            .and_then(|c| c.iter().find(|c| c["type"] == VALID))
            .cloned();
        let said = |field: &str| previous.as_ref().and_then(|p| p[field].as_str().map(str::to_string));
        let generation = object.metadata.generation;
        let unchanged = said("status").as_deref() == Some(status)
            && said("message").as_deref() == Some(message.as_str())
            && previous.as_ref().and_then(|p| p["observedGeneration"].as_i64()) == generation;
        if unchanged {
            return;
        }
        let name = describe(object);
        if let Verdict::Invalid(_) = verdict {
            tracing::error!(policy = %name, problems = %message, "policy object rejected; the other policies stay in force");
        } else {
            tracing::info!(policy = %name, "policy object valid");
        }
        let transition = match said("status") {
            Some(s) if s == status => {
                previous.as_ref().and_then(|p| p["lastTransitionTime"].as_str().map(str::to_string))
            }
            _ => None,
        }
        .unwrap_or_else(|| jiff::Timestamp::now().round(jiff::Unit::Second).unwrap_or_default().to_string());
        let condition = json!({
            "type": VALID,
            "status": status,
            "reason": reason,
            "message": message,
            "observedGeneration": generation,
            "lastTransitionTime": transition,
        });
        let api = self.api_for(object);
        let patch = json!({"status": {"conditions": [condition]}});
        if let Err(e) =
            api.patch_status(&object.name_any(), &PatchParams::default(), &Patch::Merge(&patch)).await
        {
            tracing::warn!(policy = %name, error = %e, "cannot write the policy's status");
        }
        let event = match verdict {
            Verdict::Invalid(_) => Some(("Warning", "InvalidPolicy")),
            // Quiet for a policy valid from the start; a fixed one is worth a line.
            Verdict::Valid(_) if said("status").as_deref() == Some("False") => {
                Some(("Normal", "PolicyValid"))
            }
            Verdict::Valid(_) => None,
        };
        if let Some((type_, event_reason)) = event {
            // One Event per verdict of a generation, named so: a replica that takes over,
            // or a restarted daemon, judging the same generation posts the same Event.
            let object_name = object.name_any();
            let event_name = format!(
                "{object_name}.{}.{}.{}",
                super::events::REPORTER,
                generation.unwrap_or(0),
                event_reason.to_ascii_lowercase()
            );
            let event = Event {
                metadata: ObjectMeta { name: Some(event_name), ..Default::default() },
                event_time: Some(MicroTime(jiff::Timestamp::now())),
                type_: Some(type_.into()),
                reason: Some(event_reason.into()),
                note: Some(truncate(&message, 1024)),
                action: Some("Validate".into()),
                regarding: Some(reference(object)),
                reporting_controller: Some(super::events::REPORTER.into()),
                reporting_instance: Some(self.instance.clone()),
                ..Event::default()
            };
            // A cluster-scoped policy's Events go to `default`, as kube-runtime's did.
            let namespace = object.metadata.namespace.as_deref().unwrap_or("default");
            if let Err(e) = super::events::post(&self.client, namespace, &event).await {
                tracing::warn!(policy = %name, error = %e, "cannot post the policy's Event");
            }
        }
    }

    fn api_for(&self, object: &DynamicObject) -> Api<DynamicObject> {
        match &object.metadata.namespace {
            Some(ns) => Api::namespaced_with(self.client.clone(), ns, &CanaryPolicy::api_resource()),
            None => Api::all_with(self.client.clone(), &ClusterCanaryPolicy::api_resource()),
        }
    }
}

/// Judges one object as `canaryd check` judges a file holding only it.
fn judge(object: &DynamicObject, scrape: &ScrapeIntervals) -> Verdict {
    let name = describe(object);
    let kind = object.types.as_ref().map_or("", |t| t.kind.as_str());
    // The object as its author wrote it: the server's own fields (status, managed
    // fields, uid) are no part of the policy.
    let mut metadata = serde_json::Map::new();
    metadata.insert("name".into(), json!(object.metadata.name));
    if let Some(ns) = &object.metadata.namespace {
        metadata.insert("namespace".into(), json!(ns));
    }
    let mut doc =
        json!({"apiVersion": crate::policy::model::API_VERSION, "kind": kind, "metadata": metadata});
    if let Some(spec) = object.data.get("spec") {
        doc["spec"] = spec.clone();
    }
    // JSON is YAML: the policy loader reads it as it reads a file.
    let text = serde_json::to_string_pretty(&doc).unwrap_or_default();
    let mut loaded = crate::policy::load_str_with(&name, &text, Some(scrape));
    loaded.refuse_unserved_routers("kubernetes", &super::ROUTERS);
    match (loaded.policies.pop(), loaded.problems.is_empty()) {
        (Some(mut policy), true) => {
            policy.origin = format!(
                "{name} in the API server (generation {})",
                object.metadata.generation.unwrap_or_default()
            );
            policy.location = None;
            Verdict::Valid(Box::new(policy))
        }
        _ => Verdict::Invalid(
            loaded
                .problems
                .iter()
                .map(|p| match &p.path {
                    Some(path) => format!("{path}: {}", p.message),
                    None => p.message.clone(),
                })
                .collect(),
        ),
    }
}

/// `CanaryPolicy shop/web` or `ClusterCanaryPolicy web`.
fn describe(object: &DynamicObject) -> String {
    match &object.metadata.namespace {
        Some(ns) => format!("CanaryPolicy {ns}/{}", object.name_any()),
        None => format!("ClusterCanaryPolicy {}", object.name_any()),
    }
}

/// The object's identity across its versions.
fn uid_key(object: &DynamicObject) -> String {
    object.metadata.uid.clone().unwrap_or_else(|| describe(object))
}

fn reference(object: &DynamicObject) -> ObjectReference {
    let kind = if object.metadata.namespace.is_some() { "CanaryPolicy" } else { "ClusterCanaryPolicy" };
    ObjectReference {
        api_version: Some(crate::policy::model::API_VERSION.into()),
        kind: Some(kind.into()),
        namespace: object.metadata.namespace.clone(),
        name: object.metadata.name.clone(),
        uid: object.metadata.uid.clone(),
        resource_version: object.metadata.resource_version.clone(),
        ..ObjectReference::default()
    }
}

fn truncate(text: &str, max: usize) -> String {
    if text.len() <= max {
        return text.to_string();
    }
    let mut end = max - 3;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}...", &text[..end])
}

#[cfg(test)]
mod tests {
    use super::*;

    fn object(value: serde_json::Value) -> DynamicObject {
        serde_json::from_value(value).expect("an object")
    }

    fn scrape() -> ScrapeIntervals {
        ScrapeIntervals::default()
    }

    #[test]
    fn a_valid_object_is_the_policy_a_file_would_give() {
        let o = object(json!({
            "apiVersion": "canaryd.io/v1alpha1", "kind": "CanaryPolicy",
            "metadata": {"name": "web", "namespace": "shop", "generation": 4, "uid": "u1", "resourceVersion": "9",
                         "managedFields": [{"manager": "kubectl"}]},
            "spec": {"selector": {"matchLabels": {"app": "web"}}, "traffic": {"router": "gateway-api"},
                     "analysis": {"metrics": [{"name": "e", "template": "http-error-rate", "test": "sequential"}]}},
            "status": {"conditions": [{"type": "Valid", "status": "True"}]}
        }));
        let Verdict::Valid(policy) = judge(&o, &scrape()) else { panic!("valid") };
        assert_eq!(policy.reference.to_string(), "CanaryPolicy shop/web");
        assert_eq!(policy.origin, "CanaryPolicy shop/web in the API server (generation 4)");
        let file = crate::policy::load_str(
            "f.yaml",
            "apiVersion: canaryd.io/v1alpha1\nkind: CanaryPolicy\nmetadata: {name: web, namespace: shop}\nspec:\n  selector: {matchLabels: {app: web}}\n  traffic: {router: gateway-api}\n  analysis:\n    metrics: [{name: e, template: http-error-rate, test: sequential}]\n",
        );
        assert_eq!(policy.spec, file.policies[0].spec);
    }

    #[test]
    fn every_problem_of_a_bad_object_is_named_with_its_field() {
        let o = object(json!({
            "apiVersion": "canaryd.io/v1alpha1", "kind": "ClusterCanaryPolicy",
            "metadata": {"name": "everywhere", "generation": 1},
            "spec": {"selector": {"matchLabels": {"app": "web"}},
                     "traffic": {"stepDuration": "5x"},
                     "analysis": {"metrics": [{"name": "e", "template": "no-such-template", "test": "sequential"}]}}
        }));
        let Verdict::Invalid(problems) = judge(&o, &scrape()) else { panic!("invalid") };
        assert!(problems.iter().any(|p| p.starts_with("spec.traffic.stepDuration: ")), "{problems:?}");
        assert!(
            problems.iter().any(|p| p.starts_with("spec.analysis.metrics[0].template: ")),
            "{problems:?}"
        );
    }

    #[test]
    fn a_router_the_platform_cannot_serve_is_refused_on_the_object() {
        let o = object(json!({
            "apiVersion": "canaryd.io/v1alpha1", "kind": "CanaryPolicy",
            "metadata": {"name": "web", "namespace": "shop"},
            "spec": {"selector": {"matchLabels": {"app": "web"}}, "traffic": {"router": "nginx"},
                     "analysis": {"metrics": [{"name": "e", "template": "http-error-rate", "test": "sequential"}]}}
        }));
        let Verdict::Invalid(problems) = judge(&o, &scrape()) else { panic!("invalid") };
        assert_eq!(problems.len(), 1, "{problems:?}");
        assert!(
            problems[0]
                .starts_with("spec.traffic.router: router `nginx` is not served by the kubernetes platform")
        );
    }

    #[test]
    fn a_long_note_is_cut_at_a_character_boundary() {
        let text = "é".repeat(600);
        let cut = truncate(&text, 1024);
        assert!(cut.len() <= 1024 && cut.ends_with("..."), "{}", cut.len());
    }
}
