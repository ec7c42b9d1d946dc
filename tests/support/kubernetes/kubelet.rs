//! A **stand-in for the Deployment controller and the kubelet**, for tests against the
//! fake API server. It is not Kubernetes: it polls the Deployments of one namespace and,
//! for each, runs `spec.replicas` pods as real `canaryd-demo-app` processes with the
//! template's first container's `args` (`--version`, `--error-rate`, `--latency-ms`),
//! replacing them all when the template changes (a `Recreate` strategy), and writes the
//! Deployment's status as the real controller does: `observedGeneration`, `replicas`,
//! `updatedReplicas`, `readyReplicas` and `availableReplicas` (a pod is available once
//! its `/healthz` answers), and the `Progressing` condition: `ReplicaSetUpdated` while
//! pods come up, `NewReplicaSetAvailable` once all are, and `ProgressDeadlineExceeded`
//! (status `False`) when no pod became ready for `spec.progressDeadlineSeconds` (600 by
//! default). A pod whose process exits (a container that crashes at start) is never
//! ready and is not restarted.
//!
//! Prometheus scrapes the pods through file-based service discovery. Each target
//! carries the `__meta_kubernetes_*` labels Kubernetes service discovery gives a pod of a
//! Deployment (namespace, pod name, owning ReplicaSet, pod labels), so the test's
//! Prometheus applies the README's relabelling to them as a cluster's would.
//!
//! Gateways find the pods a Service selects with [`Pods::endpoints`].

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use k8s_openapi::api::apps::v1::Deployment;
use kube::api::{Api, ListParams, Patch, PatchParams};
use serde_json::json;

use crate::support::prometheus::free_port;

/// How often the stand-in looks at the Deployments.
const EVERY: Duration = Duration::from_millis(250);

/// One pod: a demo-app process.
struct Pod {
    name: String,
    labels: BTreeMap<String, String>,
    addr: String,
    template: String,
    ready: bool,
    child: Child,
}

impl Drop for Pod {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The pods of every Deployment, by Deployment name.
#[derive(Clone, Default)]
pub struct Pods(Arc<Mutex<HashMap<String, Vec<Pod>>>>);

impl Pods {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Vec<Pod>>> {
        self.0.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Addresses of the ready pods whose labels `selector` matches (a Service's).
    pub fn endpoints(&self, selector: &BTreeMap<String, String>) -> Vec<String> {
        let pods = self.lock();
        let mut found: Vec<String> = pods
            .values()
            .flatten()
            .filter(|p| p.ready && selector.iter().all(|(k, v)| p.labels.get(k) == Some(v)))
            .map(|p| p.addr.clone())
            .collect();
        found.sort();
        found
    }

    /// How many pods of `deployment` run.
    pub fn count(&self, deployment: &str) -> usize {
        self.lock().get(deployment).map_or(0, Vec::len)
    }
}

/// When one Deployment last made progress, as the controller's deadline counts it.
struct Progress {
    template: String,
    desired: usize,
    ready: usize,
    since: tokio::time::Instant,
}

/// The running stand-in; its pods stop when it is dropped.
pub struct Kubelet {
    /// The pods it runs.
    pub pods: Pods,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Kubelet {
    fn drop(&mut self) {
        self.task.abort();
        self.pods.lock().clear();
    }
}

impl Kubelet {
    /// Starts the stand-in on `namespace`, running `demo_app`, with its file service
    /// discovery targets in `targets` (a JSON file Prometheus reads).
    pub fn start(client: kube::Client, namespace: &str, demo_app: PathBuf, targets: PathBuf) -> Kubelet {
        let pods = Pods::default();
        let api: Api<Deployment> = Api::namespaced(client, namespace);
        let (ns, running) = (namespace.to_string(), pods.clone());
        let task = tokio::spawn(async move {
            let http =
                reqwest::Client::builder().timeout(Duration::from_millis(500)).build().expect("client");
            let mut progress = HashMap::new();
            loop {
                if let Ok(list) = api.list(&ListParams::default()).await {
                    let mut seen = Vec::new();
                    for d in &list.items {
                        let name = d.metadata.name.clone().unwrap_or_default();
                        reconcile(&api, d, &running, &demo_app, &http, &mut progress).await;
                        seen.push(name);
                    }
                    running.lock().retain(|name, _| seen.contains(name));
                    write_targets(&targets, &ns, &running);
                }
                tokio::time::sleep(EVERY).await;
            }
        });
        Kubelet { pods, task }
    }
}

/// Brings one Deployment's pods to its spec and reports its status.
async fn reconcile(
    api: &Api<Deployment>,
    d: &Deployment,
    pods: &Pods,
    demo_app: &Path,
    http: &reqwest::Client,
    progress: &mut HashMap<String, Progress>,
) {
    let name = d.metadata.name.clone().unwrap_or_default();
    let template = serde_json::to_string(&d.spec.template).unwrap_or_default();
    let labels = d.spec.template.metadata.as_ref().and_then(|m| m.labels.clone()).unwrap_or_default();
    let desired = d.spec.replicas.unwrap_or(1).max(0) as usize;
    let args: Vec<String> = d
        .spec
        .template
        .spec
        .as_ref()
        .and_then(|s| s.containers.first())
        .and_then(|c| c.args.clone())
        .unwrap_or_default();
    let hash = short_hash(&template);
    {
        let mut all = pods.lock();
        let mine = all.entry(name.clone()).or_default();
        // Recreate: every pod of an older template goes; then the count is made up.
        mine.retain(|p| p.template == template);
        mine.truncate(desired);
        while mine.len() < desired {
            let port = free_port();
            let addr = format!("127.0.0.1:{port}");
            let child = Command::new(demo_app)
                .args(["--listen", &addr])
                .args(&args)
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .expect("the demo app starts");
            let pod_name = format!("{name}-{hash}-{}", mine.len());
            mine.push(Pod {
                name: pod_name,
                labels: labels.clone(),
                addr,
                template: template.clone(),
                ready: false,
                child,
            });
        }
    }
    // Readiness: a pod is ready once its /healthz answers.
    let unready: Vec<String> =
        pods.lock().get(&name).into_iter().flatten().filter(|p| !p.ready).map(|p| p.addr.clone()).collect();
    for addr in unready {
        let ok =
            http.get(format!("http://{addr}/healthz")).send().await.is_ok_and(|r| r.status().is_success());
        if ok && let Some(p) = pods.lock().get_mut(&name).into_iter().flatten().find(|p| p.addr == addr) {
            p.ready = true;
        }
    }
    let (total, ready) = {
        let all = pods.lock();
        let mine = all.get(&name).map(Vec::as_slice).unwrap_or_default();
        (mine.len() as i32, mine.iter().filter(|p| p.ready).count() as i32)
    };
    // Progress is a new template, a new replica count or one more pod ready.
    let now = tokio::time::Instant::now();
    let p = progress.entry(name.clone()).or_insert(Progress {
        template: template.clone(),
        desired,
        ready: 0,
        since: now,
    });
    if p.template != template || p.desired != desired || ready as usize > p.ready {
        *p = Progress { template: template.clone(), desired, ready: ready as usize, since: now };
    }
    let deadline = Duration::from_secs(d.spec.progress_deadline_seconds.unwrap_or(600).max(0) as u64);
    let replica_set = format!("{name}-{hash}");
    let (progressing, reason, message) = if ready as usize >= desired {
        (
            "True",
            "NewReplicaSetAvailable",
            format!("ReplicaSet \"{replica_set}\" has successfully progressed."),
        )
    } else if now.duration_since(p.since) > deadline {
        (
            "False",
            "ProgressDeadlineExceeded",
            format!("ReplicaSet \"{replica_set}\" has timed out progressing."),
        )
    } else {
        ("True", "ReplicaSetUpdated", format!("ReplicaSet \"{replica_set}\" is progressing."))
    };
    let stamp = jiff::Timestamp::now().round(jiff::Unit::Second).unwrap_or_default().to_string();
    let status = json!({
        "observedGeneration": d.metadata.generation.unwrap_or(0),
        "replicas": total,
        "updatedReplicas": total,
        "readyReplicas": ready,
        "availableReplicas": ready,
        "conditions": [{
            "type": "Progressing", "status": progressing, "reason": reason, "message": message,
            "lastUpdateTime": stamp, "lastTransitionTime": stamp,
        }],
    });
    let reported = d.status.as_ref().map(|s| serde_json::to_value(s).unwrap_or_default());
    let same = reported.as_ref().is_some_and(|r| {
        let counts =
            ["observedGeneration", "replicas", "updatedReplicas", "readyReplicas", "availableReplicas"]
                .iter()
                .all(|k| r.get(*k).cloned().unwrap_or(json!(0)) == status[*k]);
        counts && r["conditions"][0]["reason"] == reason && r["conditions"][0]["message"] == message.as_str()
    });
    if !same {
        let patch = json!({"status": status});
        let _ = api.patch_status(&name, &PatchParams::default(), &Patch::Merge(&patch)).await;
    }
}

/// The file service discovery targets: one per pod, with Kubernetes' pod labels.
fn write_targets(path: &Path, namespace: &str, pods: &Pods) {
    let all = pods.lock();
    let mut groups = Vec::new();
    for (deployment, mine) in all.iter() {
        for pod in mine {
            let mut labels = serde_json::Map::new();
            labels.insert("__meta_kubernetes_namespace".into(), json!(namespace));
            labels.insert("__meta_kubernetes_pod_name".into(), json!(pod.name));
            labels.insert("__meta_kubernetes_pod_controller_kind".into(), json!("ReplicaSet"));
            let replica_set = pod.name.rsplit_once('-').map_or(pod.name.as_str(), |(rs, _)| rs);
            labels.insert("__meta_kubernetes_pod_controller_name".into(), json!(replica_set));
            for (k, v) in &pod.labels {
                labels.insert(format!("__meta_kubernetes_pod_label_{}", sanitize(k)), json!(v));
            }
            let _ = deployment;
            groups.push(json!({"targets": [pod.addr], "labels": labels}));
        }
    }
    let text = serde_json::to_string_pretty(&groups).unwrap_or_default();
    let tmp = path.with_extension("tmp");
    if std::fs::write(&tmp, text).is_ok() {
        let _ = std::fs::rename(&tmp, path);
    }
}

/// A label name as Kubernetes service discovery spells it in `__meta_` labels.
fn sanitize(name: &str) -> String {
    name.chars().map(|c| if c.is_ascii_alphanumeric() { c } else { '_' }).collect()
}

/// Ten hex digits naming a template, as a ReplicaSet's `pod-template-hash` does.
fn short_hash(text: &str) -> String {
    use std::hash::{Hash, Hasher};
    let mut h = std::collections::hash_map::DefaultHasher::new();
    text.hash(&mut h);
    format!("{:010x}", h.finish() & 0xff_ffff_ffff)
}
