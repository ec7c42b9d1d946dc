//! `canaryd crd`: the policy CRDs and the CanaryRun CRD, valid YAML, with their OpenAPI
//! schemas, ready for `kubectl apply -f -`.

use std::process::Command;

fn crds() -> Vec<serde_json::Value> {
    let out = Command::new(env!("CARGO_BIN_EXE_canaryd")).arg("crd").output().unwrap();
    assert_eq!(out.status.code(), Some(0));
    let text = String::from_utf8(out.stdout).unwrap();
    serde_saphyr::from_str_multiple(&text).expect("valid YAML")
}

#[test]
fn crd_output_is_yaml_with_the_policy_crds_and_their_schemas() {
    let docs = crds();
    let mut kinds = Vec::new();
    for doc in &docs {
        assert_eq!(doc["kind"], "CustomResourceDefinition");
        assert_eq!(doc["spec"]["group"], "canaryd.io");
        assert_eq!(doc["spec"]["versions"][0]["name"], "v1alpha1");
        kinds.push((doc["spec"]["names"]["kind"].clone(), doc["spec"]["scope"].clone()));
    }
    assert_eq!(
        kinds,
        vec![
            ("CanaryPolicy".into(), "Namespaced".into()),
            ("ClusterCanaryPolicy".into(), "Cluster".into()),
            ("CanaryRun".into(), "Namespaced".into())
        ]
    );
    for doc in &docs[..2] {
        let spec =
            &doc["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["spec"]["properties"];
        for field in ["selector", "traffic", "analysis", "triggers", "notify"] {
            assert!(
                spec.get(field).is_some(),
                "{field} missing from the schema of {}",
                doc["metadata"]["name"]
            );
        }
        assert_eq!(spec["traffic"]["properties"]["steps"]["type"], "array");
    }
}

#[test]
fn the_canaryrun_crd_has_a_status_subresource_and_the_columns_kubectl_shows() {
    let docs = crds();
    let run = &docs[2];
    assert_eq!(run["metadata"]["name"], "canaryruns.canaryd.io");
    let version = &run["spec"]["versions"][0];
    assert_eq!(version["subresources"]["status"], serde_json::json!({}));
    let columns: Vec<(&str, &str)> = version["additionalPrinterColumns"]
        .as_array()
        .expect("printer columns")
        .iter()
        .map(|c| (c["name"].as_str().unwrap(), c["jsonPath"].as_str().unwrap()))
        .collect();
    assert_eq!(
        columns,
        [
            ("Phase", ".status.phase"),
            ("Weight", ".status.weight"),
            ("Step", ".status.step"),
            ("Last-Decision", ".status.lastDecision"),
            ("Reason", ".status.reason"),
            ("Age", ".metadata.creationTimestamp")
        ]
    );
    let status = &version["schema"]["openAPIV3Schema"]["properties"]["status"]["properties"];
    assert_eq!(status["state"]["x-kubernetes-preserve-unknown-fields"], true);
}
