//! `deploy/`, the kustomize base, as the real `kubectl kustomize` renders it: every
//! object parses as its Kubernetes type, the CRDs are what `canaryd crd` prints, the
//! image, ports and probes agree with the settings it ships, the pod runs with least
//! privilege, and the RBAC rules grant exactly the API calls canaryd made in the
//! Kubernetes tests (`tests/kubernetes.rs` runs with those rules enforced by the fake
//! API server; the ignored test below checks the other direction after them).

mod support;

use std::collections::{BTreeMap, BTreeSet};

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{ConfigMap, Service};
use serde_json::Value;
use support::kubernetes::{CANARYD_NAMESPACE, calls_dir, rendered_deploy};

fn by_kind(objects: &[Value]) -> BTreeMap<(String, String), Value> {
    objects
        .iter()
        .map(|o| {
            let key = (
                o["kind"].as_str().unwrap_or("").to_string(),
                o["metadata"]["name"].as_str().unwrap_or("").to_string(),
            );
            (key, o.clone())
        })
        .collect()
}

fn one<T: serde::de::DeserializeOwned>(objects: &[Value], kind: &str, name: &str) -> T {
    let object = by_kind(objects).remove(&(kind.to_string(), name.to_string()));
    let object = object.unwrap_or_else(|| panic!("deploy/ renders {kind} {name}"));
    serde_json::from_value(object).unwrap_or_else(|e| panic!("{kind} {name} parses: {e}"))
}

#[test]
fn every_rendered_object_parses_as_its_type_in_canaryds_namespace() {
    let objects = rendered_deploy();
    let kinds: BTreeSet<String> =
        objects.iter().map(|o| o["kind"].as_str().unwrap_or("").to_string()).collect();
    let expected = [
        "ClusterRole",
        "ClusterRoleBinding",
        "ConfigMap",
        "CustomResourceDefinition",
        "Deployment",
        "Namespace",
        "PodDisruptionBudget",
        "Role",
        "RoleBinding",
        "Service",
        "ServiceAccount",
    ];
    assert_eq!(kinds, expected.iter().map(|k| k.to_string()).collect());
    for object in &objects {
        let (kind, name) = (object["kind"].as_str().unwrap_or(""), &object["metadata"]["name"]);
        let parsed = match kind {
            "ClusterRole" => {
                serde_json::from_value::<k8s_openapi::api::rbac::v1::ClusterRole>(object.clone()).err()
            }
            "ClusterRoleBinding" => {
                serde_json::from_value::<k8s_openapi::api::rbac::v1::ClusterRoleBinding>(object.clone()).err()
            }
            "Role" => serde_json::from_value::<k8s_openapi::api::rbac::v1::Role>(object.clone()).err(),
            "RoleBinding" => {
                serde_json::from_value::<k8s_openapi::api::rbac::v1::RoleBinding>(object.clone()).err()
            }
            "ConfigMap" => serde_json::from_value::<ConfigMap>(object.clone()).err(),
            "CustomResourceDefinition" => serde_json::from_value::<
                k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition,
            >(object.clone())
            .err(),
            "Deployment" => serde_json::from_value::<Deployment>(object.clone()).err(),
            "Namespace" => {
                serde_json::from_value::<k8s_openapi::api::core::v1::Namespace>(object.clone()).err()
            }
            "PodDisruptionBudget" => {
                serde_json::from_value::<k8s_openapi::api::policy::v1::PodDisruptionBudget>(object.clone())
                    .err()
            }
            "Service" => serde_json::from_value::<Service>(object.clone()).err(),
            "ServiceAccount" => {
                serde_json::from_value::<k8s_openapi::api::core::v1::ServiceAccount>(object.clone()).err()
            }
            other => panic!("unexpected kind {other}"),
        };
        assert!(parsed.is_none(), "{kind} {name}: {parsed:?}");
        let cluster_scoped = ["ClusterRole", "ClusterRoleBinding", "CustomResourceDefinition", "Namespace"];
        if !cluster_scoped.contains(&kind) {
            assert_eq!(object["metadata"]["namespace"], CANARYD_NAMESPACE, "{kind} {name}");
        }
    }
}

#[test]
fn the_crds_in_deploy_are_exactly_what_canaryd_crd_prints() {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_canaryd")).arg("crd").output().unwrap();
    assert!(out.status.success());
    let printed = String::from_utf8(out.stdout).unwrap();
    let file = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/deploy/crds.yaml")).unwrap();
    assert!(
        file == printed,
        "deploy/crds.yaml differs from `canaryd crd`: run `canaryd crd > deploy/crds.yaml`"
    );
}

/// The settings file the ConfigMap carries, loaded as the daemon loads it (with the
/// environment the Deployment gives it).
fn shipped_settings(objects: &[Value]) -> canaryd::config::Settings {
    let config = objects
        .iter()
        .find(|o| {
            o["kind"] == "ConfigMap"
                && o["metadata"]["name"].as_str().is_some_and(|n| n.starts_with("canaryd-config"))
        })
        .expect("the settings ConfigMap");
    let text = config["data"]["canaryd.toml"].as_str().expect("canaryd.toml in the ConfigMap");
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("canaryd.toml");
    std::fs::write(&path, text).unwrap();
    let env =
        BTreeMap::from([("CANARYD__SERVER__API_TOKEN".to_string(), "a-token-of-sixteen-chars".to_string())]);
    canaryd::config::Settings::load(Some(&path), env).unwrap_or_else(|e| panic!("the shipped settings: {e}"))
}

#[test]
fn the_image_ports_probes_and_settings_agree_and_the_pod_runs_with_least_privilege() {
    let objects = rendered_deploy();
    let deployment: Deployment = one(&objects, "Deployment", "canaryd");
    let spec = deployment.spec;
    assert_eq!(spec.replicas, Some(2), "two replicas: one acts, one stands by");
    let pod = spec.template.spec.expect("pod spec");
    assert_eq!(pod.service_account_name.as_deref(), Some("canaryd"));
    let pod_security = pod.security_context.expect("a pod security context");
    assert_eq!(pod_security.run_as_non_root, Some(true));
    let [container] = pod.containers.as_slice() else { panic!("one container") };
    assert_eq!(container.image.as_deref(), Some("ghcr.io/canaryd/canaryd:0.1.0"));
    let security = container.security_context.clone().expect("a container security context");
    assert_eq!(security.read_only_root_filesystem, Some(true));
    assert_eq!(security.allow_privilege_escalation, Some(false));
    assert_eq!(security.capabilities.and_then(|c| c.drop), Some(vec!["ALL".to_string()]));
    let resources = container.resources.clone().expect("resources");
    assert!(resources.requests.is_some_and(|r| r.contains_key("cpu") && r.contains_key("memory")));
    assert!(resources.limits.is_some_and(|l| l.contains_key("memory")));
    // The probes are the daemon's health endpoints, on the port it listens on.
    let settings = shipped_settings(&objects);
    let port = settings.server.listen.port() as i32;
    let ports = container.ports.clone().unwrap_or_default();
    let [container_port] = ports.as_slice() else { panic!("one container port: {ports:?}") };
    assert_eq!((container_port.name.as_deref(), container_port.container_port), (Some("http"), port));
    let probe_path = |p: &Option<k8s_openapi::api::core::v1::Probe>| {
        p.as_ref().and_then(|p| p.http_get.as_ref()).and_then(|h| h.path.clone())
    };
    assert_eq!(probe_path(&container.liveness_probe).as_deref(), Some("/healthz"));
    assert_eq!(probe_path(&container.readiness_probe).as_deref(), Some("/readyz"));
    // The Lease's namespace and identity come from the downward API.
    let env: BTreeMap<String, String> = container
        .env
        .clone()
        .unwrap_or_default()
        .into_iter()
        .filter_map(|e| Some((e.name, e.value_from?.field_ref?.field_path)))
        .collect();
    assert_eq!(env.get("POD_NAME").map(String::as_str), Some("metadata.name"));
    assert_eq!(env.get("POD_NAMESPACE").map(String::as_str), Some("metadata.namespace"));
    let kubernetes = settings.kubernetes.expect("the shipped settings select Kubernetes");
    assert!(kubernetes.lease.is_some(), "leader election is on");
    // The writable paths are on a volume, not the read-only root.
    let mounts: Vec<String> =
        container.volume_mounts.clone().unwrap_or_default().into_iter().map(|m| m.mount_path).collect();
    for dir in [&settings.daemon.state_dir, &settings.daemon.records_dir] {
        assert!(
            mounts.iter().any(|m| dir.starts_with(m) && m != "/etc/canaryd"),
            "{} on a volume: {mounts:?}",
            dir.display()
        );
    }
    // The Service and the ServiceMonitor reach that port by name.
    let service: Service = one(&objects, "Service", "canaryd");
    let service_port = &service.spec.and_then(|s| s.ports).expect("ports")[0];
    assert_eq!(
        service_port.target_port,
        Some(k8s_openapi::apimachinery::pkg::util::intstr::IntOrString::String("http".into()))
    );
}

/// The permissions of deploy/'s RBAC for canaryd's service account, as
/// `verb group resource name` lines (`core` for the core group, `*` for any name).
fn granted() -> BTreeSet<String> {
    let grants = support::fake_apiserver::rbac::Grants::of(&rendered_deploy(), CANARYD_NAMESPACE, "canaryd");
    grants
        .permissions()
        .into_iter()
        .map(|(verb, group, resource, name)| {
            let group = if group.is_empty() { "core".to_string() } else { group };
            format!("{verb} {group} {resource} {name}")
        })
        .collect()
}

#[test]
fn the_shards_component_adds_only_get_list_and_update_of_leases() {
    let with = support::fake_apiserver::rbac::Grants::of(
        &support::kubernetes::rendered_deploy_with("shards"),
        CANARYD_NAMESPACE,
        "canaryd",
    );
    let with: BTreeSet<String> = with
        .permissions()
        .into_iter()
        .map(|(verb, group, resource, name)| {
            let group = if group.is_empty() { "core".to_string() } else { group };
            format!("{verb} {group} {resource} {name}")
        })
        .collect();
    let base = granted();
    let added: Vec<&String> = with.difference(&base).collect();
    assert_eq!(
        added,
        [
            "get coordination.k8s.io leases *",
            "list coordination.k8s.io leases *",
            "update coordination.k8s.io leases *"
        ]
        .iter()
        .collect::<Vec<_>>(),
        "the Leases of every shard and member, by any name, in canaryd's namespace"
    );
}

#[test]
fn the_rbac_rules_name_no_wildcard() {
    for line in granted() {
        let (verb, rest) = line.split_once(' ').unwrap();
        assert_ne!(verb, "*", "{line}");
        let parts: Vec<&str> = rest.split(' ').collect();
        assert!(parts[0] != "*" && parts[1] != "*", "{line}");
    }
}

#[test]
#[ignore = "reads the calls the Kubernetes tests recorded: scripts/test runs it after them"]
fn the_rbac_rules_grant_nothing_canaryd_never_called_in_the_kubernetes_tests() {
    let dir = calls_dir();
    let mut called = BTreeSet::new();
    for entry in std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}: run the Kubernetes tests first", dir.display()))
    {
        let text = std::fs::read_to_string(entry.unwrap().path()).unwrap();
        called.extend(text.lines().filter(|l| !l.is_empty()).map(String::from));
    }
    assert!(called.len() > 5, "the Kubernetes tests recorded calls: {called:?}");
    // A call by name is covered by a grant for that name or for any name.
    let used = |grant: &str| {
        let (head, name) = grant.rsplit_once(' ').unwrap();
        called.iter().any(|c| {
            let (call_head, call_name) = c.rsplit_once(' ').unwrap();
            call_head == head && (name == "*" || call_name == name)
        })
    };
    let unused: Vec<String> = granted().into_iter().filter(|g| !used(g)).collect();
    assert!(unused.is_empty(), "granted and never called: {unused:#?}\ncalled: {called:#?}");
}

/// The YAML documents of a file under `deploy/e2e/`.
fn e2e(file: &str) -> Vec<Value> {
    let path = format!("{}/deploy/e2e/{file}", env!("CARGO_MANIFEST_DIR"));
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path}: {e}"));
    serde_saphyr::from_multiple::<Value>(&text).unwrap_or_else(|e| panic!("{path}: {e}"))
}

#[test]
fn the_e2e_scripts_manifests_parse_its_policy_passes_check_and_its_prometheus_relabels_as_documented() {
    // (deploy/e2e/run.sh itself needs a cluster: it is not run here.)
    let app = e2e("app.yaml");
    let deployment = app.iter().find(|o| o["kind"] == "Deployment").expect("the workload");
    let _: Deployment = serde_json::from_value(deployment.clone()).expect("the workload parses");
    let policy = app.iter().find(|o| o["kind"] == "CanaryPolicy").expect("its policy");
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("policy.yaml");
    std::fs::write(&file, serde_json::to_string(policy).unwrap()).unwrap();
    let out =
        std::process::Command::new(env!("CARGO_BIN_EXE_canaryd")).arg("check").arg(&file).output().unwrap();
    assert!(
        out.status.success(),
        "canaryd check: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let prometheus = e2e("prometheus.yaml");
    let config = prometheus.iter().find(|o| o["kind"] == "ConfigMap").expect("Prometheus' config");
    let scrape = config["data"]["prometheus.yml"].as_str().expect("prometheus.yml");
    let docs = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/docs/kubernetes.md")).unwrap();
    let block = docs
        .split("<!-- scrape-config -->\n```yaml\n")
        .nth(1)
        .and_then(|b| b.split("```").next())
        .expect("the documented scrape config");
    for line in block.lines().filter(|l| !l.trim().is_empty()) {
        assert!(
            scrape.contains(line.trim()),
            "deploy/e2e/prometheus.yaml lacks the documented `{}`",
            line.trim()
        );
    }
}
