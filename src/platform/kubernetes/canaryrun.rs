//! The `CanaryRun` custom resource (`canaryd.io/v1alpha1`): one per rollout, named as
//! its Deployment and owned by it, the rollout's state in its status subresource. The
//! status carries a summary for `kubectl get canaryruns` (phase, weight, step, last
//! decision and its reason) and the engine's whole [`RunState`] under `state`, which a
//! restarted daemon resumes from. The object's `resourceVersion` is the state's
//! compare-and-swap [`Version`].

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, OwnerReference};
use kube::CustomResource;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::engine::DecisionKind;
use crate::store::{RunState, Version};

use super::workloads::MANAGED_BY;

/// Which Deployment and revision a `CanaryRun` is about, set when it is created.
// Several printer columns share a column type, which clippy takes for a repeated attribute.
#[allow(clippy::duplicated_attributes)]
#[derive(CustomResource, Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[kube(
    group = "canaryd.io",
    version = "v1alpha1",
    kind = "CanaryRun",
    plural = "canaryruns",
    shortname = "crun",
    namespaced,
    status = "CanaryRunStatus",
    doc = "A canary rollout of one Deployment, as canaryd runs it; its status is the rollout's state",
    printcolumn(name = "Phase", type_ = "string", json_path = ".status.phase"),
    printcolumn(name = "Weight", type_ = "integer", json_path = ".status.weight"),
    printcolumn(name = "Step", type_ = "string", json_path = ".status.step"),
    printcolumn(name = "Last-Decision", type_ = "string", json_path = ".status.lastDecision"),
    printcolumn(name = "Reason", type_ = "string", json_path = ".status.reason", priority = "1"),
    printcolumn(name = "Age", type_ = "date", json_path = ".metadata.creationTimestamp")
)]
#[serde(rename_all = "camelCase")]
pub struct CanaryRunSpec {
    /// The Deployment whose rollout this is (the CanaryRun's own name).
    pub deployment: String,
    /// The policy that runs it, `namespace/name` or `cluster/name`.
    pub policy: String,
}

/// A rollout's state as the API server keeps it.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct CanaryRunStatus {
    /// `Pending`, `Progressing`, `Paused`, `Waiting`, `Baking`, `Promoting`,
    /// `Succeeded`, `RollingBack`, `RolledBack` or `Aborted`.
    #[serde(default)]
    pub phase: String,
    /// The canary's share of traffic in percent.
    #[serde(default)]
    pub weight: u8,
    /// The step, as `2/3`.
    #[serde(default)]
    pub step: String,
    /// The canary's revision (the pod template's hash).
    #[serde(default)]
    pub revision: String,
    /// The last decision (`advanced`, `rolled-back`, ...).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_decision: Option<String>,
    /// Why it stands where it stands, with the evidence: once rolled back, the
    /// rollback's reason (not the confirmation that it finished); else the last
    /// decision's.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// The whole state the daemon resumes from (engine state, confirmed actions,
    /// notifications delivered).
    #[schemars(schema_with = "preserved_object")]
    #[serde(default)]
    pub state: Value,
}

/// A free-form object: the API server keeps it as written.
fn preserved_object(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
    schemars::json_schema!({"type": "object", "x-kubernetes-preserve-unknown-fields": true})
}

/// Why a stored `CanaryRun` cannot be resumed from.
#[derive(Debug, thiserror::Error)]
#[error("CanaryRun {namespace}/{name}: status.state: {reason}")]
pub struct StateError {
    /// Its namespace.
    pub namespace: String,
    /// Its name.
    pub name: String,
    /// Why.
    pub reason: String,
}

/// The status that records `state`.
pub fn status_of(state: &RunState) -> CanaryRunStatus {
    let rollout = &state.rollout;
    let last = rollout.decisions.last();
    let why = match last {
        Some(d) if d.action == DecisionKind::RollbackFinished => {
            rollout.decisions.iter().rev().find(|d| d.action != DecisionKind::RollbackFinished)
        }
        other => other,
    };
    let mut saved = state.clone();
    saved.version = Version::default();
    CanaryRunStatus {
        phase: format!("{:?}", rollout.phase),
        weight: rollout.weight,
        step: format!("{}/{}", (rollout.step + 1).min(rollout.plan.steps.len()), rollout.plan.steps.len()),
        revision: rollout.revision.clone(),
        last_decision: last
            .and_then(|d| serde_json::to_value(d.action).ok())
            .and_then(|v| v.as_str().map(String::from)),
        reason: why.map(|d| d.reason.clone()),
        state: serde_json::to_value(&saved).unwrap_or(Value::Null),
    }
}

/// A new `CanaryRun` for `state`, owned by Deployment `owner` (deleting the Deployment
/// deletes it). Its status is written separately, through the status subresource.
pub fn new_run(state: &RunState, owner: &Deployment) -> CanaryRun {
    let name = state.rollout.id.name.clone();
    let mut run = CanaryRun::new(
        &name,
        CanaryRunSpec { deployment: name.clone(), policy: state.rollout.plan.policy.clone() },
    );
    run.metadata = ObjectMeta {
        name: Some(name.clone()),
        namespace: Some(state.rollout.id.namespace.clone()),
        labels: Some([(MANAGED_BY.0.to_string(), MANAGED_BY.1.to_string())].into()),
        owner_references: owner.metadata.uid.clone().map(|uid| {
            vec![OwnerReference {
                api_version: "apps/v1".into(),
                kind: "Deployment".into(),
                name,
                uid,
                controller: Some(true),
                block_owner_deletion: Some(false),
            }]
        }),
        ..ObjectMeta::default()
    };
    run
}

/// The state a stored `CanaryRun` holds, at its `resourceVersion`; `None` for one
/// created but never given a status.
pub fn state_of(run: &CanaryRun) -> Result<Option<RunState>, StateError> {
    let Some(status) = run.status.as_ref().filter(|s| !s.state.is_null()) else { return Ok(None) };
    let fault = |reason: String| StateError {
        namespace: run.metadata.namespace.clone().unwrap_or_default(),
        name: run.metadata.name.clone().unwrap_or_default(),
        reason,
    };
    let mut state: RunState =
        serde_json::from_value(status.state.clone()).map_err(|e| fault(e.to_string()))?;
    let expected = (run.metadata.namespace.as_deref(), run.metadata.name.as_deref());
    if (Some(state.rollout.id.namespace.as_str()), Some(state.rollout.id.name.as_str())) != expected {
        return Err(fault(format!(
            "is the state of rollout {}, not of this CanaryRun's Deployment",
            state.rollout.id
        )));
    }
    state.version = Version::new(run.metadata.resource_version.clone().unwrap_or_default());
    Ok(Some(state))
}

#[cfg(test)]
mod tests {
    use kube::CustomResourceExt;

    use super::*;
    use crate::store::tests::state;

    #[test]
    fn a_state_survives_the_status_and_takes_the_objects_version() {
        let saved = state("web");
        let mut run = new_run(&saved, &Deployment::default());
        run.status = Some(status_of(&saved));
        // What the API server returns: the status as JSON, with a resourceVersion.
        let mut stored: CanaryRun = serde_json::from_value(serde_json::to_value(&run).unwrap()).unwrap();
        stored.metadata.resource_version = Some("4711".into());
        let resumed = state_of(&stored).unwrap().unwrap();
        assert_eq!(resumed.version, Version::new("4711"));
        assert_eq!(RunState { version: saved.version.clone(), ..resumed }, saved);
    }

    #[test]
    fn the_summary_is_what_kubectl_shows() {
        let mut saved = state("web");
        saved.rollout.step = 1;
        saved.rollout.weight = 50;
        let status = status_of(&saved);
        assert_eq!((status.phase.as_str(), status.weight, status.step.as_str()), ("Pending", 50, "2/3"));
        let crd = serde_json::to_value(CanaryRun::crd()).unwrap();
        let columns: Vec<&str> = crd["spec"]["versions"][0]["additionalPrinterColumns"]
            .as_array()
            .unwrap()
            .iter()
            .map(|c| c["name"].as_str().unwrap())
            .collect();
        assert_eq!(columns, ["Phase", "Weight", "Step", "Last-Decision", "Reason", "Age"]);
        assert_eq!(crd["spec"]["versions"][0]["subresources"]["status"], serde_json::json!({}));
        let state_schema = &crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["status"]["properties"]
            ["state"];
        assert_eq!(state_schema["x-kubernetes-preserve-unknown-fields"], true);
    }

    #[test]
    fn a_state_of_another_rollout_is_refused_naming_the_object() {
        let saved = state("web");
        let mut run = new_run(&saved, &Deployment::default());
        run.status = Some(status_of(&saved));
        run.metadata.name = Some("api".into());
        let err = state_of(&run).unwrap_err();
        assert!(
            err.to_string().starts_with("CanaryRun shop/api: status.state: is the state of rollout shop/web"),
            "{err}"
        );
        run.status.as_mut().unwrap().state = serde_json::json!({"rollout": 3});
        assert!(state_of(&run).is_err());
        run.status = None;
        assert!(state_of(&run).unwrap().is_none());
    }
}
