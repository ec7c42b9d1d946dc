//! The objects canaryd keeps beside a managed Deployment `web`, built from it: the
//! Deployment `web-primary` that serves the promoted revision, and the Services
//! `web-primary` and `web-canary` that routers send traffic to. Also: whether a
//! Deployment has finished rolling out, judged from its status as `kubectl rollout
//! status` judges it, never from elapsed time.
//!
//! Selectors: `web-primary` copies **all** of `web`'s selector labels and suffixes the
//! value of one of them (`app: web` becomes `app: web-primary`), so that neither
//! Deployment's selector matches the other's pods, and every label the user's own
//! selectors, policies and dashboards rely on is still there. Pure: the platform sends
//! what these functions build.

use std::collections::BTreeMap;

use k8s_openapi::api::apps::v1::{Deployment, DeploymentSpec};
use k8s_openapi::api::core::v1::{Service, ServicePort, ServiceSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, ObjectMeta, OwnerReference};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;

use super::{PRIMARY_SUFFIX, primary_name};

/// Label on every object canaryd creates for a workload.
pub const MANAGED_BY: (&str, &str) = ("app.kubernetes.io/managed-by", "canaryd");
/// Label on `web-primary` naming the Deployment it serves for. canaryd never manages a
/// Deployment that carries it, whatever a policy selects.
pub const PRIMARY_OF: &str = "canaryd.io/primary-of";
/// Annotation on `web-primary`'s template: the revision it serves (not part of the hash).
pub const REVISION_ANNOTATION: &str = "canaryd.io/revision";
/// Label on the pods of a `replica`-router `web-primary` (value `primary`), which keep
/// every label of `web`'s pods besides.
pub const ARM_LABEL: &str = "canaryd.io/arm";
/// Suffix of the Service in front of the canary's pods.
pub const CANARY_SUFFIX: &str = "-canary";
/// Selector labels tried first for the suffix, in order: the conventional name labels.
const SUFFIX_PREFERENCE: [&str; 3] = ["app.kubernetes.io/name", "app", "name"];
/// A label value's limit (RFC 1123 label).
const MAX_LABEL_VALUE: usize = 63;

/// Why canaryd cannot manage a Deployment as it is, naming the field.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("Deployment {namespace}/{name}: {field}: {reason}")]
pub struct WorkloadError {
    /// The Deployment's namespace.
    pub namespace: String,
    /// The Deployment's name.
    pub name: String,
    /// The field at fault (`spec.selector.matchLabels`).
    pub field: &'static str,
    /// Why.
    pub reason: String,
}

/// The name of the Service in front of `name`'s canary pods.
pub fn canary_service_name(name: &str) -> String {
    format!("{name}{CANARY_SUFFIX}")
}

/// Which selector label `web-primary` suffixes, and the primary's selector labels.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PrimarySelector {
    /// The label whose value is suffixed.
    pub key: String,
    /// The canary's selector labels (`web`'s `matchLabels`, as they are).
    pub canary: BTreeMap<String, String>,
    /// The primary's: the same, with `key`'s value suffixed.
    pub primary: BTreeMap<String, String>,
}

/// Chooses the label to suffix: a conventional name label if the selector has one,
/// otherwise the first in name order, never one a `matchExpressions` entry reads.
pub fn primary_selector(web: &Deployment) -> Result<PrimarySelector, WorkloadError> {
    let fault = |field, reason: String| error(web, field, reason);
    let selector = &web.spec.selector;
    let canary = selector.match_labels.clone().unwrap_or_default();
    if canary.is_empty() {
        return Err(fault(
            "spec.selector.matchLabels",
            "is empty; canaryd's Services select pods by label equality, so the selector needs at least one matchLabels entry".into(),
        ));
    }
    let in_expressions: Vec<&str> =
        selector.match_expressions.iter().flatten().map(|e| e.key.as_str()).collect();
    let usable = |key: &&str| canary.contains_key(*key) && !in_expressions.contains(key);
    let key = SUFFIX_PREFERENCE
        .iter()
        .copied()
        .find(usable)
        .or_else(|| canary.keys().map(String::as_str).find(usable))
        .ok_or_else(|| {
            fault(
                "spec.selector.matchLabels",
                "every label is also in matchExpressions; canaryd needs one label it can suffix for web-primary".into(),
            )
        })?
        .to_string();
    let value = format!("{}{PRIMARY_SUFFIX}", canary[&key]);
    if value.len() > MAX_LABEL_VALUE {
        return Err(fault(
            "spec.selector.matchLabels",
            format!(
                "`{key}: {}` plus `{PRIMARY_SUFFIX}` is longer than {MAX_LABEL_VALUE} characters",
                canary[&key]
            ),
        ));
    }
    let mut primary = canary.clone();
    primary.insert(key.clone(), value);
    Ok(PrimarySelector { key, canary, primary })
}

/// `web-primary` serving `web`'s current template as revision `revision`: the template
/// with its labels, annotations and spec, the selector label suffixed, `replicas` pods,
/// owned by `web` (deleting `web` deletes it).
pub fn primary_deployment(
    web: &Deployment,
    revision: &str,
    replicas: i32,
) -> Result<Deployment, WorkloadError> {
    let selector = primary_selector(web)?;
    let spec = web.spec.clone();
    let mut template = spec.template.clone();
    let metadata = template.metadata.get_or_insert_with(ObjectMeta::default);
    let labels = metadata.labels.get_or_insert_with(BTreeMap::new);
    labels.insert(selector.key.clone(), selector.primary[&selector.key].clone());
    metadata
        .annotations
        .get_or_insert_with(BTreeMap::new)
        .insert(REVISION_ANNOTATION.into(), revision.into());
    let name = web_name(web);
    let mut object_labels = web.metadata.labels.clone().unwrap_or_default();
    object_labels.insert(PRIMARY_OF.into(), name.clone());
    object_labels.insert(MANAGED_BY.0.into(), MANAGED_BY.1.into());
    Ok(Deployment {
        metadata: owned_metadata(web, primary_name(&name), object_labels)?,
        spec: DeploymentSpec {
            replicas: Some(replicas),
            selector: LabelSelector {
                match_labels: Some(selector.primary),
                match_expressions: spec.selector.match_expressions.clone(),
            },
            template,
            strategy: spec.strategy,
            min_ready_seconds: spec.min_ready_seconds,
            progress_deadline_seconds: spec.progress_deadline_seconds,
            revision_history_limit: spec.revision_history_limit,
            paused: None,
        },
        status: None,
    })
}

/// `web-primary` for the `replica` router: as [`primary_deployment`], but its pods keep
/// every label of `web`'s and add `canaryd.io/arm: primary`, which its selector adds to
/// `web`'s. So a Service selecting `web`'s pods selects both arms' pods, and each arm's
/// share of its requests is its share of the pods. `web`'s selector matches the
/// primary's pods too; the Deployment controller keeps them apart by owner (each
/// ReplicaSet is owned by one Deployment and selects by its pod-template hash), as it
/// does for Argo Rollouts' basic canary.
pub fn shared_primary_deployment(
    web: &Deployment,
    revision: &str,
    replicas: i32,
) -> Result<Deployment, WorkloadError> {
    let mut primary = primary_deployment(web, revision, replicas)?;
    let mut selects = web.spec.selector.match_labels.clone().unwrap_or_default();
    selects.insert(ARM_LABEL.into(), "primary".into());
    primary.spec.selector.match_labels = Some(selects);
    let mut labels = web.spec.template.metadata.as_ref().and_then(|m| m.labels.clone()).unwrap_or_default();
    labels.insert(ARM_LABEL.into(), "primary".into());
    primary.spec.template.metadata.get_or_insert_with(ObjectMeta::default).labels = Some(labels);
    Ok(primary)
}

/// Whether `service` selects the pods of both arms of a `replica`-router workload: a
/// selector of some of `web`'s pod labels (the primary's pods carry all of them), or
/// why not.
pub fn selects_both_arms(web: &Deployment, service: &Service) -> Result<(), String> {
    let selector = service.spec.as_ref().and_then(|s| s.selector.clone()).unwrap_or_default();
    if selector.is_empty() {
        return Err("has no selector; the replica router needs one selecting the Deployment's pods".into());
    }
    let labels = web.spec.template.metadata.as_ref().and_then(|m| m.labels.clone()).unwrap_or_default();
    let missing: Vec<String> = selector
        .iter()
        .filter(|(k, v)| labels.get(*k) != Some(*v))
        .map(|(k, v)| format!("{k}: {v}"))
        .collect();
    if missing.is_empty() {
        return Ok(());
    }
    Err(format!(
        "selects {}, which the pods of Deployment {} do not carry; the replica router needs a Service selecting the Deployment's pods",
        missing.join(", "),
        web_name(web)
    ))
}

/// The Services `web-primary` and `web-canary`, in that order: each selects its arm's
/// pods by the selector labels, with a port for each container port of the template.
pub fn services(web: &Deployment) -> Result<[Service; 2], WorkloadError> {
    let selector = primary_selector(web)?;
    let ports = service_ports(web)?;
    let name = web_name(web);
    let mut labels = BTreeMap::new();
    labels.insert(MANAGED_BY.0.to_string(), MANAGED_BY.1.to_string());
    let service =
        |service_name: String, selects: BTreeMap<String, String>| -> Result<Service, WorkloadError> {
            Ok(Service {
                metadata: owned_metadata(web, service_name, labels.clone())?,
                spec: Some(ServiceSpec {
                    selector: Some(selects),
                    ports: Some(ports.clone()),
                    ..ServiceSpec::default()
                }),
                status: None,
            })
        };
    Ok([
        service(primary_name(&name), selector.primary)?,
        service(canary_service_name(&name), selector.canary)?,
    ])
}

/// The port a route sends `web`'s traffic to: its Services' first port.
pub fn route_port(web: &Deployment) -> Result<i32, WorkloadError> {
    let [primary, _] = services(web)?;
    Ok(primary.spec.and_then(|s| s.ports).and_then(|p| p.first().map(|p| p.port)).unwrap_or(80))
}

/// A port for each container port, named as the container names it.
fn service_ports(web: &Deployment) -> Result<Vec<ServicePort>, WorkloadError> {
    let containers = web.spec.template.spec.as_ref().map(|s| &s.containers);
    let ports: Vec<ServicePort> = containers
        .into_iter()
        .flatten()
        .flat_map(|c| c.ports.iter().flatten())
        .map(|p| ServicePort {
            name: p.name.clone(),
            port: p.container_port,
            target_port: Some(IntOrString::Int(p.container_port)),
            protocol: p.protocol.clone(),
            ..ServicePort::default()
        })
        .collect();
    if ports.is_empty() {
        return Err(error(
            web,
            "spec.template.spec.containers[].ports",
            "no container declares a port; canaryd's Services web-primary and web-canary need one to route to".into(),
        ));
    }
    if ports.len() > 1 && ports.iter().any(|p| p.name.is_none()) {
        return Err(error(
            web,
            "spec.template.spec.containers[].ports[].name",
            "a Service with several ports needs every port named".into(),
        ));
    }
    Ok(ports)
}

/// Metadata of the HTTPRoute `name` canaryd creates for `web`: owned by it (deleted with
/// it by the garbage collector), labelled as canaryd's.
pub fn route_metadata(web: &Deployment, name: &str) -> Result<ObjectMeta, WorkloadError> {
    owned_by(web, name)
}

/// Metadata of an object `name` canaryd creates for `web`: owned by it, labelled as
/// managed by canaryd.
pub fn owned_by(web: &Deployment, name: &str) -> Result<ObjectMeta, WorkloadError> {
    owned_metadata(web, name.to_string(), [(MANAGED_BY.0.to_string(), MANAGED_BY.1.to_string())].into())
}

/// Metadata of an object canaryd creates for `web`, owned by it.
fn owned_metadata(
    web: &Deployment,
    name: String,
    labels: BTreeMap<String, String>,
) -> Result<ObjectMeta, WorkloadError> {
    let uid = web.metadata.uid.clone().ok_or_else(|| {
        error(
            web,
            "metadata.uid",
            "is missing; only a Deployment read from the API server can own objects".into(),
        )
    })?;
    Ok(ObjectMeta {
        name: Some(name),
        namespace: web.metadata.namespace.clone(),
        labels: Some(labels),
        owner_references: Some(vec![OwnerReference {
            api_version: "apps/v1".into(),
            kind: "Deployment".into(),
            name: web_name(web),
            uid,
            controller: Some(true),
            block_owner_deletion: Some(false),
        }]),
        ..ObjectMeta::default()
    })
}

fn web_name(web: &Deployment) -> String {
    web.metadata.name.clone().unwrap_or_default()
}

fn error(web: &Deployment, field: &'static str, reason: String) -> WorkloadError {
    WorkloadError {
        namespace: web.metadata.namespace.clone().unwrap_or_default(),
        name: web_name(web),
        field,
        reason,
    }
}

/// Where a Deployment's own rollout stands, from its status.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum RolloutProgress {
    /// Every replica runs the current template and is available.
    Complete,
    /// Still rolling out: what is awaited.
    Waiting(String),
    /// The Deployment controller gave up (`ProgressDeadlineExceeded`).
    Failed(String),
}

/// Whether `deployment` has rolled out its current template, judged as `kubectl rollout
/// status` judges it: the controller has observed the current generation, every desired
/// replica is updated and available, and no old replica is left.
pub fn rollout_progress(deployment: &Deployment) -> RolloutProgress {
    let generation = deployment.metadata.generation.unwrap_or(0);
    let desired = deployment.spec.replicas.unwrap_or(1);
    let Some(status) = deployment.status.as_ref() else {
        return RolloutProgress::Waiting("the Deployment controller has not reported a status yet".into());
    };
    let observed = status.observed_generation.unwrap_or(0);
    if observed < generation {
        return RolloutProgress::Waiting(format!(
            "the Deployment controller has observed generation {observed}, not yet {generation}"
        ));
    }
    let deadline = status.conditions.iter().flatten().find(|c| c.type_.as_deref() == Some("Progressing"));
    if let Some(c) = deadline.filter(|c| c.reason.as_deref() == Some("ProgressDeadlineExceeded")) {
        return RolloutProgress::Failed(format!(
            "progress deadline exceeded: {}",
            c.message.clone().unwrap_or_else(|| "the Deployment did not progress in time".into())
        ));
    }
    let updated = status.updated_replicas.unwrap_or(0);
    let total = status.replicas.unwrap_or(0);
    let available = status.available_replicas.unwrap_or(0);
    if updated < desired {
        return RolloutProgress::Waiting(format!("{updated} of {desired} replicas updated"));
    }
    if total > updated {
        return RolloutProgress::Waiting(format!("{} old replicas pending termination", total - updated));
    }
    if available < updated {
        return RolloutProgress::Waiting(format!("{available} of {updated} updated replicas available"));
    }
    RolloutProgress::Complete
}

/// The HorizontalPodAutoscaler for `web-primary` matching `theirs` (the user's, on
/// `web`): the same bounds and metrics, aimed at `web-primary`, owned by `web`. `None`
/// when `theirs` does not target Deployment `web`.
pub fn primary_autoscaler(
    web: &Deployment,
    theirs: &k8s_openapi::api::autoscaling::v2::HorizontalPodAutoscaler,
) -> Result<Option<k8s_openapi::api::autoscaling::v2::HorizontalPodAutoscaler>, WorkloadError> {
    let name = web.metadata.name.clone().unwrap_or_default();
    let spec = &theirs.spec;
    let target = &spec.scale_target_ref;
    if target.kind != "Deployment" || target.name != name {
        return Ok(None);
    }
    let mut spec = spec.clone();
    spec.scale_target_ref.name = super::primary_name(&name);
    Ok(Some(k8s_openapi::api::autoscaling::v2::HorizontalPodAutoscaler {
        metadata: owned_by(web, &super::primary_name(&name))?,
        spec,
        status: None,
    }))
}

#[cfg(test)]
mod tests {
    use k8s_openapi::api::apps::v1::{DeploymentCondition, DeploymentStatus};
    use serde_json::json;

    use super::*;

    /// `web` as a user writes it and the API server returns it (a uid, a generation).
    fn web(selector: serde_json::Value) -> Deployment {
        serde_json::from_value(json!({
            "apiVersion": "apps/v1", "kind": "Deployment",
            "metadata": {"name": "web", "namespace": "shop", "uid": "u-1", "generation": 3,
                         "labels": {"team": "checkout", "canary": "on"}},
            "spec": {
                "replicas": 3,
                "selector": selector,
                "template": {
                    "metadata": {"labels": {"app": "web", "tier": "front", "app.kubernetes.io/part-of": "shop"},
                                 "annotations": {"prometheus.io/scrape": "true"}},
                    "spec": {"containers": [{"name": "app", "image": "shop/web:v2",
                                             "ports": [{"name": "http", "containerPort": 8080}]}]}
                }
            }
        }))
        .unwrap()
    }

    fn labels(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
    }

    #[test]
    fn the_primary_keeps_every_selector_label_and_suffixes_the_name_label() {
        let web = web(json!({"matchLabels": {"app": "web", "tier": "front"}}));
        let primary = primary_deployment(&web, "rev1", 3).unwrap();
        let spec = &primary.spec;
        assert_eq!(spec.selector.match_labels, Some(labels(&[("app", "web-primary"), ("tier", "front")])));
        let template = spec.template.metadata.as_ref().unwrap();
        assert_eq!(
            template.labels,
            Some(labels(&[("app", "web-primary"), ("tier", "front"), ("app.kubernetes.io/part-of", "shop")]))
        );
        assert_eq!(template.annotations.as_ref().unwrap()["prometheus.io/scrape"], "true");
        assert_eq!(template.annotations.as_ref().unwrap()[REVISION_ANNOTATION], "rev1");
        assert_eq!(primary.metadata.name.as_deref(), Some("web-primary"));
        assert_eq!(primary.metadata.labels.as_ref().unwrap()[PRIMARY_OF], "web");
        assert_eq!(spec.replicas, Some(3));
        let owner = &primary.metadata.owner_references.as_ref().unwrap()[0];
        assert_eq!(
            (owner.kind.as_str(), owner.name.as_str(), owner.uid.as_str()),
            ("Deployment", "web", "u-1")
        );
        // The containers are web's.
        assert_eq!(spec.template.spec.as_ref().unwrap().containers[0].image.as_deref(), Some("shop/web:v2"));
    }

    #[test]
    fn neither_selector_matches_the_other_arms_pods() {
        let web = web(json!({"matchLabels": {"app": "web", "tier": "front"}}));
        let primary = primary_deployment(&web, "r", 1).unwrap();
        let selects = |selector: &BTreeMap<String, String>, pod: &BTreeMap<String, String>| {
            selector.iter().all(|(k, v)| pod.get(k) == Some(v))
        };
        let web_pods = web.spec.template.metadata.as_ref().unwrap().labels.clone().unwrap();
        let primary_pods = primary.spec.template.metadata.as_ref().unwrap().labels.clone().unwrap();
        let web_selector = web.spec.selector.match_labels.clone().unwrap();
        let primary_selector = primary.spec.selector.match_labels.clone().unwrap();
        assert!(selects(&web_selector, &web_pods) && selects(&primary_selector, &primary_pods));
        assert!(!selects(&web_selector, &primary_pods) && !selects(&primary_selector, &web_pods));
    }

    #[test]
    fn without_a_name_label_the_first_label_not_in_an_expression_is_suffixed() {
        let web = web(json!({"matchLabels": {"tier": "front", "component": "api"},
                             "matchExpressions": [{"key": "component", "operator": "Exists"}]}));
        let selector = primary_selector(&web).unwrap();
        assert_eq!(selector.key, "tier");
        assert_eq!(selector.primary, labels(&[("component", "api"), ("tier", "front-primary")]));
    }

    #[test]
    fn a_selector_canaryd_cannot_copy_is_refused_naming_the_field() {
        let err = primary_selector(&web(json!({"matchExpressions": [{"key": "app", "operator": "Exists"}]})))
            .unwrap_err();
        assert_eq!(err.field, "spec.selector.matchLabels");
        assert!(
            err.to_string().starts_with("Deployment shop/web: spec.selector.matchLabels: is empty"),
            "{err}"
        );
        let long = "x".repeat(60);
        let err = primary_selector(&web(json!({"matchLabels": {"app": long}}))).unwrap_err();
        assert!(err.reason.contains("longer than 63"), "{err}");
    }

    #[test]
    fn the_services_select_each_arm_and_carry_the_container_ports() {
        let [primary, canary] =
            services(&web(json!({"matchLabels": {"app": "web", "tier": "front"}}))).unwrap();
        assert_eq!(primary.metadata.name.as_deref(), Some("web-primary"));
        assert_eq!(canary.metadata.name.as_deref(), Some("web-canary"));
        let spec = |s: &Service| s.spec.clone().unwrap();
        assert_eq!(spec(&primary).selector, Some(labels(&[("app", "web-primary"), ("tier", "front")])));
        assert_eq!(spec(&canary).selector, Some(labels(&[("app", "web"), ("tier", "front")])));
        let port = &spec(&canary).ports.unwrap()[0];
        assert_eq!(
            (port.name.as_deref(), port.port, port.target_port.clone()),
            (Some("http"), 8080, Some(IntOrString::Int(8080)))
        );
    }

    #[test]
    fn a_template_without_ports_is_refused_for_the_services() {
        let mut web = web(json!({"matchLabels": {"app": "web"}}));
        web.spec.template.spec.as_mut().unwrap().containers[0].ports = None;
        assert_eq!(services(&web).unwrap_err().field, "spec.template.spec.containers[].ports");
    }

    fn with_status(generation: i64, replicas: i32, status: DeploymentStatus) -> Deployment {
        let mut d = web(json!({"matchLabels": {"app": "web"}}));
        d.metadata.generation = Some(generation);
        d.spec.replicas = Some(replicas);
        d.status = Some(status);
        d
    }

    #[test]
    fn a_rollout_is_complete_only_when_the_controller_says_so() {
        let status = |observed, total, updated, available| DeploymentStatus {
            observed_generation: Some(observed),
            replicas: Some(total),
            updated_replicas: Some(updated),
            available_replicas: Some(available),
            ..DeploymentStatus::default()
        };
        let progress = |d: &Deployment| rollout_progress(d);
        assert!(
            matches!(progress(&with_status(4, 2, status(3, 2, 2, 2))), RolloutProgress::Waiting(w) if w.contains("generation 3, not yet 4"))
        );
        assert!(
            matches!(progress(&with_status(4, 2, status(4, 3, 1, 2))), RolloutProgress::Waiting(w) if w == "1 of 2 replicas updated")
        );
        assert!(
            matches!(progress(&with_status(4, 2, status(4, 3, 2, 2))), RolloutProgress::Waiting(w) if w.contains("1 old replicas"))
        );
        assert!(
            matches!(progress(&with_status(4, 2, status(4, 2, 2, 1))), RolloutProgress::Waiting(w) if w.contains("1 of 2 updated replicas available"))
        );
        assert_eq!(progress(&with_status(4, 2, status(4, 2, 2, 2))), RolloutProgress::Complete);
        assert_eq!(progress(&with_status(4, 0, status(4, 0, 0, 0))), RolloutProgress::Complete);
        let mut failed = status(4, 2, 1, 1);
        failed.conditions = Some(vec![DeploymentCondition {
            type_: Some("Progressing".into()),
            status: Some("False".into()),
            reason: Some("ProgressDeadlineExceeded".into()),
            message: Some("ReplicaSet \"web-5d9\" has timed out progressing.".into()),
            ..DeploymentCondition::default()
        }]);
        assert!(
            matches!(progress(&with_status(4, 2, failed)), RolloutProgress::Failed(f) if f.contains("timed out progressing"))
        );
        let mut unreported = web(json!({"matchLabels": {"app": "web"}}));
        unreported.status = None;
        assert!(matches!(progress(&unreported), RolloutProgress::Waiting(_)));
    }
}
