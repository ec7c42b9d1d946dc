//! What the Kubernetes platform does about each Deployment, decided from what the
//! watch keeps of it (a [`Summary`]) and where the platform stands with it: nothing,
//! attach, start a rollout, report a canary that cannot run, or detach. Pure: no API
//! calls, no clock.

use std::collections::BTreeMap;

use k8s_openapi::api::apps::v1::Deployment;
use serde_json::Value;

use super::primary_name;
use super::revision::template_revision;
use super::workloads::{self, PRIMARY_OF, REVISION_ANNOTATION, RolloutProgress};
use crate::engine::RolloutId;

/// Annotation on `web-primary`: the revision last rolled back, which is not started
/// again until `web`'s template changes.
pub const ROLLED_BACK_ANNOTATION: &str = "canaryd.io/rolled-back-revision";
/// Annotation on `web-primary`: the HTTPRoute `web`'s rollouts set weights on, chosen
/// when it was attached (absent: the route named as the Deployment).
pub const ROUTE_ANNOTATION: &str = "canaryd.io/route";
/// Annotation on a `replica`-router `web-primary`: the replicas it serves with between
/// rollouts, which each step's split is computed from (the primary is at 0 at 100%).
pub const PRIMARY_REPLICAS_ANNOTATION: &str = "canaryd.io/primary-replicas";
/// The recorded route of a workload on the `replica` router: `service/<name>`.
pub const SERVICE_ROUTE_PREFIX: &str = "service/";

/// What the watch keeps of one Deployment.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Summary {
    /// The Deployment's labels.
    pub labels: BTreeMap<String, String>,
    /// Its pod template's revision.
    pub revision: String,
    /// For a `web-primary`: the Deployment it serves for.
    pub primary_of: Option<String>,
    /// For a `web-primary`: the revision its template serves.
    pub serves: Option<String>,
    /// For a `web-primary`: the revision last rolled back.
    pub rolled_back: Option<String>,
    /// For a `web-primary`: the HTTPRoute recorded at attach.
    pub route: Option<String>,
    /// Where its own rollout stands, from its status (past its progress deadline: why
    /// it stalled).
    pub progress: RolloutProgress,
    /// Its desired replicas (`spec.replicas`, unset: the API's default 1).
    pub replicas: i32,
    /// For a `replica`-router `web-primary`: the replicas it serves with between rollouts.
    pub serving_replicas: Option<i32>,
    /// The port its route's backends use (the Services' first port; `None` when its
    /// template gives no Services, which attaching reports).
    pub port: Option<i32>,
}

impl Summary {
    /// The summary of `deployment`.
    pub fn of(deployment: &Deployment) -> Summary {
        let template = serde_json::to_value(&deployment.spec.template).unwrap_or(Value::Null);
        let labels = deployment.metadata.labels.clone().unwrap_or_default();
        let annotations = deployment.metadata.annotations.clone().unwrap_or_default();
        let template_annotations = deployment
            .spec
            .template
            .metadata
            .as_ref()
            .and_then(|m| m.annotations.clone())
            .unwrap_or_default();
        Summary {
            primary_of: labels.get(PRIMARY_OF).cloned(),
            serves: template_annotations.get(REVISION_ANNOTATION).cloned(),
            rolled_back: annotations.get(ROLLED_BACK_ANNOTATION).cloned(),
            route: recorded_route(deployment),
            revision: template_revision(&template),
            progress: workloads::rollout_progress(deployment),
            replicas: deployment.spec.replicas.unwrap_or(1),
            serving_replicas: annotations.get(PRIMARY_REPLICAS_ANNOTATION).and_then(|r| r.parse().ok()),
            port: workloads::route_port(deployment).ok(),
            labels,
        }
    }
}

/// The HTTPRoute recorded on a `web-primary` at attach (read without summarising the
/// whole Deployment: no template hash).
pub fn recorded_route(primary: &Deployment) -> Option<String> {
    primary.metadata.annotations.as_ref()?.get(ROUTE_ANNOTATION).cloned()
}

/// The Service a `replica`-router workload's pods are served by, from its recorded
/// route (`None`: attached for a router with a route object).
pub fn replica_service(recorded: &str) -> Option<&str> {
    recorded.strip_prefix(SERVICE_ROUTE_PREFIX)
}

/// What the platform does about one managed-or-not Deployment, decided from the
/// summaries alone. Pure.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Next {
    /// Not selected and never managed, or nothing new: nothing.
    Nothing,
    /// Selected and not attached yet: create `web-primary`, its Services, adopt the
    /// route, then scale `web` to 0.
    Attach,
    /// A new revision to analyse.
    Rollout(String),
    /// Managed, and no policy selects it any more: a running rollout rolls back;
    /// traffic stays on the primary.
    Detach(String),
    /// The revision under analysis cannot run: its Deployment is past its progress
    /// deadline. Its rollout rolls back (the reason says why).
    CanaryFailed(String),
}

/// Where the platform stands with one workload, beside what the watch shows.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Standing<'a> {
    /// Whether a policy selects it.
    pub selected: bool,
    /// Whether this process finished attaching it (after a restart, attaching runs
    /// again: every step is skipped when done).
    pub attached: bool,
    /// Whether its detachment was reported.
    pub detached: bool,
    /// The revision last reported.
    pub reported: Option<&'a str>,
    /// The revision whose failure to run was last reported.
    pub failed: Option<&'a str>,
}

/// What to do about Deployment `id` (`web`), given its summary, its primary's and
/// where the platform stands with it.
pub fn next(id: &RolloutId, web: &Summary, primary: Option<&Summary>, standing: Standing<'_>) -> Next {
    let Standing { selected, attached, detached, reported, failed } = standing;
    match (selected, primary) {
        (false, Some(_)) if !detached => Next::Detach(format!(
            "no policy selects Deployment {id} any more; traffic stays on {}",
            primary_name(&id.name)
        )),
        (false, _) => Next::Nothing,
        (true, None) => Next::Attach,
        (true, Some(p)) if p.serves.is_none() || !attached => Next::Attach,
        (true, Some(p)) => {
            let promoted = p.serves.as_deref() == Some(web.revision.as_str());
            let rejected = p.rolled_back.as_deref() == Some(web.revision.as_str());
            let current = Some(web.revision.as_str());
            if promoted || rejected {
                Next::Nothing
            } else if reported == current {
                match &web.progress {
                    RolloutProgress::Failed(why) if failed != current => {
                        Next::CanaryFailed(format!("canary Deployment {id}: {why}"))
                    }
                    _ => Next::Nothing,
                }
            } else {
                Next::Rollout(web.revision.clone())
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn summary(revision: &str) -> Summary {
        Summary {
            labels: BTreeMap::new(),
            revision: revision.into(),
            primary_of: None,
            serves: None,
            rolled_back: None,
            route: None,
            progress: RolloutProgress::Complete,
            replicas: 1,
            serving_replicas: None,
            port: Some(80),
        }
    }

    fn primary(serves: &str, rolled_back: Option<&str>) -> Summary {
        Summary {
            primary_of: Some("web".into()),
            serves: Some(serves.into()),
            rolled_back: rolled_back.map(String::from),
            ..summary("p")
        }
    }

    fn id() -> RolloutId {
        RolloutId { namespace: "shop".into(), name: "web".into() }
    }

    fn standing(selected: bool, reported: Option<&str>, detached: bool) -> Standing<'_> {
        Standing { selected, attached: true, detached, reported, failed: None }
    }

    #[test]
    fn a_canary_past_its_progress_deadline_is_reported_failed_once_while_its_rollout_runs() {
        let serving_a = primary("a", None);
        let stalled = Summary {
            progress: RolloutProgress::Failed("progress deadline exceeded: timed out".into()),
            ..summary("b")
        };
        // Its rollout was reported: the failure is reported, once.
        assert_eq!(
            next(&id(), &stalled, Some(&serving_a), standing(true, Some("b"), false)),
            Next::CanaryFailed("canary Deployment shop/web: progress deadline exceeded: timed out".into())
        );
        let told = Standing { failed: Some("b"), ..standing(true, Some("b"), false) };
        assert_eq!(next(&id(), &stalled, Some(&serving_a), told), Next::Nothing);
        // Not reported yet: the rollout comes first.
        assert_eq!(
            next(&id(), &stalled, Some(&serving_a), standing(true, None, false)),
            Next::Rollout("b".into())
        );
        // Rolled back already: nothing more.
        let rejected = primary("a", Some("b"));
        assert_eq!(next(&id(), &stalled, Some(&rejected), standing(true, Some("b"), false)), Next::Nothing);
        // A new template that stalls too is reported in its turn.
        let stalled_c = Summary { revision: "c".into(), ..stalled.clone() };
        let told_b = Standing { failed: Some("b"), ..standing(true, Some("c"), false) };
        assert!(matches!(next(&id(), &stalled_c, Some(&serving_a), told_b), Next::CanaryFailed(_)));
    }

    #[test]
    fn a_deployment_no_policy_selects_is_left_alone() {
        assert_eq!(next(&id(), &summary("a"), None, standing(false, None, false)), Next::Nothing);
    }

    #[test]
    fn a_selected_deployment_is_attached_first_and_a_new_template_is_a_rollout() {
        assert_eq!(next(&id(), &summary("a"), None, standing(true, None, false)), Next::Attach);
        let serving_a = primary("a", None);
        // The primary exists but this process has not finished attaching (a restart).
        let unattached = Standing { attached: false, ..standing(true, None, false) };
        assert_eq!(next(&id(), &summary("b"), Some(&serving_a), unattached), Next::Attach);
        assert_eq!(next(&id(), &summary("a"), Some(&serving_a), standing(true, None, false)), Next::Nothing);
        assert_eq!(
            next(&id(), &summary("b"), Some(&serving_a), standing(true, None, false)),
            Next::Rollout("b".into())
        );
        // Reported once.
        assert_eq!(
            next(&id(), &summary("b"), Some(&serving_a), standing(true, Some("b"), false)),
            Next::Nothing
        );
        // Back to the promoted template: nothing starts.
        assert_eq!(
            next(&id(), &summary("a"), Some(&serving_a), standing(true, Some("b"), false)),
            Next::Nothing
        );
    }

    #[test]
    fn a_rolled_back_template_is_not_started_again_until_it_changes() {
        let after_rollback = primary("a", Some("b"));
        assert_eq!(
            next(&id(), &summary("b"), Some(&after_rollback), standing(true, None, false)),
            Next::Nothing
        );
        assert_eq!(
            next(&id(), &summary("c"), Some(&after_rollback), standing(true, None, false)),
            Next::Rollout("c".into())
        );
    }

    #[test]
    fn a_deployment_that_stops_matching_is_detached_once() {
        let serving = primary("a", None);
        assert!(matches!(next(&id(), &summary("b"), Some(&serving), standing(false, Some("b"), false)),
            Next::Detach(d) if d.contains("no policy selects Deployment shop/web")));
        assert_eq!(
            next(&id(), &summary("b"), Some(&serving), standing(false, Some("b"), true)),
            Next::Nothing
        );
    }
}
