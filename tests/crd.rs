//! `canaryd crd`: both CRDs, valid YAML, with their OpenAPI schemas.

use std::process::Command;

#[test]
fn crd_output_is_yaml_with_both_crds_and_schemas() {
    let out = Command::new(env!("CARGO_BIN_EXE_canaryd")).arg("crd").output().unwrap();
    assert_eq!(out.status.code(), Some(0));
    let text = String::from_utf8(out.stdout).unwrap();
    let docs: Vec<serde_json::Value> = serde_saphyr::from_str_multiple(&text).expect("valid YAML");
    assert_eq!(docs.len(), 2);
    let mut kinds = Vec::new();
    for doc in &docs {
        assert_eq!(doc["kind"], "CustomResourceDefinition");
        assert_eq!(doc["spec"]["group"], "canaryd.io");
        let version = &doc["spec"]["versions"][0];
        assert_eq!(version["name"], "v1alpha1");
        let spec = &version["schema"]["openAPIV3Schema"]["properties"]["spec"]["properties"];
        for field in ["selector", "traffic", "analysis", "triggers", "notify"] {
            assert!(
                spec.get(field).is_some(),
                "{field} missing from the schema of {}",
                doc["metadata"]["name"]
            );
        }
        let steps = &spec["traffic"]["properties"]["steps"];
        assert_eq!(steps["type"], "array");
        kinds.push((doc["spec"]["names"]["kind"].clone(), doc["spec"]["scope"].clone()));
    }
    assert_eq!(
        kinds,
        vec![("CanaryPolicy".into(), "Namespaced".into()), ("ClusterCanaryPolicy".into(), "Cluster".into())]
    );
}
