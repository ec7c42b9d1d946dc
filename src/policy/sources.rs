//! The policies in force, from two sources: policy files (read at start and again on
//! SIGHUP) and, on Kubernetes, the `CanaryPolicy` and `ClusterCanaryPolicy` objects in
//! the API server (watched). A change of either publishes the merged set to the loop,
//! where it applies to new rollouts; a running rollout keeps the plan it started with.
//!
//! A policy defined both in a file and as an object (same kind, namespace and name) is
//! the object's: it is what `kubectl get canarypolicies` shows and what its status
//! reports on. The file's definition is set aside with a problem naming both.

use std::sync::Mutex;

use crate::policy::{LoadedPolicy, Problem};

/// Where the merged set goes: the loop, and the readiness flag.
pub type Publish = Box<dyn Fn(Vec<LoadedPolicy>) + Send + Sync>;

/// The two sources and the last set published.
pub struct PolicySources {
    held: Mutex<Held>,
    publish: Publish,
}

#[derive(Default)]
struct Held {
    files: Vec<LoadedPolicy>,
    objects: Vec<LoadedPolicy>,
}

impl PolicySources {
    /// Sources holding `files` (already handed to the loop at its start) and no object
    /// yet; later changes go to `publish`.
    pub fn new(files: Vec<LoadedPolicy>, publish: Publish) -> PolicySources {
        PolicySources { held: Mutex::new(Held { files, objects: Vec::new() }), publish }
    }

    /// The files were read again.
    pub fn set_files(&self, files: Vec<LoadedPolicy>) {
        let mut held = self.held.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        held.files = files;
        self.publish_merged(&held);
    }

    /// The valid policy objects changed.
    pub fn set_objects(&self, objects: Vec<LoadedPolicy>) {
        let mut held = self.held.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        held.objects = objects;
        self.publish_merged(&held);
    }

    fn publish_merged(&self, held: &Held) {
        let (merged, shadowed) = merge(&held.files, &held.objects);
        for problem in &shadowed {
            tracing::error!(%problem, "policy file definition set aside");
        }
        tracing::info!(
            policies = merged.len(),
            from_files = held.files.len(),
            from_objects = held.objects.len(),
            "policies in force"
        );
        (self.publish)(merged);
    }
}

/// The policies in force: every object, and every file policy no object redefines; the
/// redefined file policies as problems.
pub fn merge(files: &[LoadedPolicy], objects: &[LoadedPolicy]) -> (Vec<LoadedPolicy>, Vec<Problem>) {
    let mut merged: Vec<LoadedPolicy> = objects.to_vec();
    let mut shadowed = Vec::new();
    for file in files {
        match objects.iter().find(|o| o.reference == file.reference) {
            Some(object) => shadowed.push(Problem {
                file: file.origin.split('#').next().unwrap_or_default().into(),
                object: file.reference.to_string(),
                path: Some("metadata.name".into()),
                location: file.location,
                message: format!("also defined as {}; that definition is in force", object.origin),
            }),
            None => merged.push(file.clone()),
        }
    }
    (merged, shadowed)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policies(origin: &str, names: &[&str]) -> Vec<LoadedPolicy> {
        let text: String = names
            .iter()
            .map(|n| {
                format!(
                    "apiVersion: canaryd.io/v1alpha1\nkind: CanaryPolicy\nmetadata: {{name: {n}, namespace: shop}}\nspec:\n  selector: {{matchLabels: {{app: {n}}}}}\n  analysis:\n    metrics: [{{name: e, template: http-error-rate, test: sequential}}]\n---\n"
                )
            })
            .collect();
        let loaded = crate::policy::load_str(origin, &text);
        assert!(loaded.problems.is_empty(), "{:?}", loaded.problems);
        loaded.policies
    }

    #[test]
    fn an_object_redefining_a_file_policy_is_in_force_and_the_file_one_is_reported() {
        let files = policies("policies.yaml", &["web", "api"]);
        let objects = policies("api-server", &["web", "cart"]);
        let (merged, shadowed) = merge(&files, &objects);
        let mut names: Vec<(String, String)> =
            merged.iter().map(|p| (p.reference.name.clone(), p.origin.clone())).collect();
        names.sort();
        assert_eq!(
            names,
            [
                ("api".to_string(), "policies.yaml#2".to_string()),
                ("cart".to_string(), "api-server#2".to_string()),
                ("web".to_string(), "api-server#1".to_string()),
            ]
        );
        assert_eq!(shadowed.len(), 1);
        assert_eq!(shadowed[0].object, "CanaryPolicy shop/web");
        assert_eq!(shadowed[0].file, "policies.yaml");
        assert!(shadowed[0].message.contains("api-server#1"), "{}", shadowed[0].message);
    }

    #[test]
    fn either_source_changing_publishes_both() {
        let seen = std::sync::Arc::new(Mutex::new(Vec::<usize>::new()));
        let sink = seen.clone();
        let sources = PolicySources::new(
            policies("f.yaml", &["a"]),
            Box::new(move |p| sink.lock().unwrap().push(p.len())),
        );
        sources.set_objects(policies("api-server", &["b", "c"]));
        sources.set_files(policies("f.yaml", &["a", "d"]));
        sources.set_objects(Vec::new());
        assert_eq!(*seen.lock().unwrap(), [3, 4, 2]);
    }
}
