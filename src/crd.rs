//! The CustomResourceDefinitions, generated from the Rust types: the policies
//! (`CanaryPolicy`, `ClusterCanaryPolicy`) and the rollout state (`CanaryRun`).

use kube::CustomResourceExt;

use crate::platform::kubernetes::canaryrun::CanaryRun;
use crate::policy::{CanaryPolicy, ClusterCanaryPolicy};

/// The CRDs as one multi-document YAML stream, ready for `kubectl apply -f -`.
pub fn crds_yaml() -> Result<String, serde_saphyr::ser_error::Error> {
    let docs = [CanaryPolicy::crd(), ClusterCanaryPolicy::crd(), CanaryRun::crd()];
    let mut out = String::new();
    for crd in &docs {
        out.push_str("---\n");
        out.push_str(&serde_saphyr::to_string(crd)?);
    }
    Ok(out)
}
