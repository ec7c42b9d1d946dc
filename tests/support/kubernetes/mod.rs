//! The Kubernetes test bed: the fake API server (a test double), a stand-in for the
//! Deployment controller and kubelet running real demo-app processes, a stand-in
//! gateway driving a real nginx, a real Prometheus scraping the pods through file
//! service discovery with the documented relabelling, wrk's load through nginx, and the
//! real `canaryd run` binary configured with `[kubernetes]` and a kubeconfig.
//!
//! Who writes what is told apart in the fake's request log by client name: `canaryd`,
//! `controller` (the kubelet stand-in), `gateway` (the gateway stand-in) and `test`.

pub mod gateway;
pub mod kubelet;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use canaryd::platform::kubernetes::platform::http_route;
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{Namespace, Service};
use kube::api::{Api, DynamicObject, Patch, PatchParams, PostParams};
use serde_json::{Value, json};

use crate::support::fake_apiserver::FakeApiServer;
use crate::support::prometheus::{free_port, poll};

/// The namespace the test bed's workloads live in.
pub const NAMESPACE: &str = "shop";

/// canaryd's own namespace, as `deploy/` installs it: its service account and its Lease.
pub const CANARYD_NAMESPACE: &str = "canaryd";

/// `deploy/` rendered by the real `kubectl kustomize`, each object as JSON.
pub fn rendered_deploy() -> Vec<Value> {
    let deploy = Path::new(env!("CARGO_MANIFEST_DIR")).join("deploy");
    let out = Command::new("kubectl")
        .arg("kustomize")
        .arg(&deploy)
        .output()
        .expect("kubectl runs (scripts/install-deps installs it)");
    assert!(out.status.success(), "kubectl kustomize deploy/: {}", String::from_utf8_lossy(&out.stderr));
    let text = String::from_utf8(out.stdout).expect("UTF-8");
    serde_saphyr::from_multiple::<Value>(&text).expect("the rendered manifests parse")
}

/// What `kubectl kustomize` renders of deploy/ with `deploy/components/<component>`
/// added, as a user's overlay would add it.
pub fn rendered_deploy_with(component: &str) -> Vec<Value> {
    let deploy = Path::new(env!("CARGO_MANIFEST_DIR")).join("deploy");
    let overlay = tempfile::tempdir().expect("a temp dir");
    // kustomize takes relative paths only.
    let up = overlay.path().components().count() - 1;
    let relative = format!("{}{}", "../".repeat(up), deploy.display().to_string().trim_start_matches('/'));
    std::fs::write(
        overlay.path().join("kustomization.yaml"),
        format!("resources: [\"{relative}\"]\ncomponents: [\"{relative}/components/{component}\"]\n"),
    )
    .expect("the overlay");
    let out = Command::new("kubectl")
        .args(["kustomize", "--load-restrictor", "LoadRestrictionsNone"])
        .arg(overlay.path())
        .output()
        .expect("kubectl runs (scripts/install-deps installs it)");
    assert!(
        out.status.success(),
        "kubectl kustomize with {component}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8(out.stdout).expect("UTF-8");
    serde_saphyr::from_multiple::<Value>(&text).expect("the rendered manifests parse")
}

/// Where each stack writes the API calls canaryd made (read by the RBAC test that runs
/// after the Kubernetes tests, `scripts/test` clears it first).
pub fn calls_dir() -> PathBuf {
    Path::new(env!("CARGO_TARGET_TMPDIR")).join("canaryd-api-calls")
}

/// One API call as RBAC sees it: `verb group resource[/subresource] name` (`*`
/// without a name: a create, list or watch).
pub fn rbac_call(r: &crate::support::fake_apiserver::Request) -> Option<String> {
    let target = r.resource.as_ref()?;
    let resource = match &target.subresource {
        Some(sub) => format!("{}/{sub}", target.plural),
        None => target.plural.clone(),
    };
    let group = if target.group.is_empty() { "core" } else { target.group.as_str() };
    Some(format!("{} {group} {resource} {}", r.verb, target.name.as_deref().unwrap_or("*")))
}

/// The Prometheus scrape config of `docs/kubernetes.md` (the block after the
/// `scrape-config` marker), with `kubernetes_sd_configs` swapped for the file the
/// kubelet stand-in writes: the relabelling is the documented one, applied to the labels
/// Kubernetes service discovery gives.
pub fn documented_scrape_config(targets: &Path) -> String {
    let doc = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/docs/kubernetes.md"))
        .expect("docs/kubernetes.md");
    let after =
        doc.split("<!-- scrape-config -->").nth(1).expect("a scrape-config marker in docs/kubernetes.md");
    let block = after
        .split("```yaml\n")
        .nth(1)
        .and_then(|b| b.split("```").next())
        .expect("a yaml block after the marker");
    let sd = format!("file_sd_configs: [{{files: ['{}'], refresh_interval: 1s}}]", targets.display());
    let replaced = block.replace("kubernetes_sd_configs: [{role: pod}]", &sd);
    assert_ne!(replaced, block, "the documented scrape config uses `kubernetes_sd_configs: [{{role: pod}}]`");
    replaced
}

/// The test bed. Everything stops when it is dropped.
pub struct KubeStack {
    /// The fake API server.
    pub fake: FakeApiServer,
    /// The test's own client (`test` in the request log).
    pub client: kube::Client,
    /// The kubelet stand-in.
    pub kubelet: kubelet::Kubelet,
    _gateway: gateway::Gateway,
    prometheus: Child,
    /// Prometheus' base URL.
    pub prometheus_url: String,
    nginx: Child,
    nginx_port: u16,
    wrk: Option<Child>,
    canaryd: Option<Child>,
    /// More `canaryd run` replicas, by identity (see [`KubeStack::start_replica`]).
    replicas: std::collections::BTreeMap<String, Child>,
    /// canaryd's API port.
    pub api_port: u16,
    dir: tempfile::TempDir,
}

impl Drop for KubeStack {
    fn drop(&mut self) {
        // The calls canaryd's replicas made, for the RBAC test.
        let calls: std::collections::BTreeSet<String> = self
            .fake
            .requests()
            .iter()
            .filter(|r| r.client.starts_with("canaryd"))
            .filter_map(rbac_call)
            .collect();
        let dir = calls_dir();
        if std::fs::create_dir_all(&dir).is_ok() {
            let file = dir.join(format!("{}-{}.txt", std::process::id(), self.api_port));
            let _ = std::fs::write(file, calls.into_iter().collect::<Vec<_>>().join("\n"));
        }
        for child in [Some(&mut self.prometheus), self.wrk.as_mut(), self.canaryd.as_mut()]
            .into_iter()
            .flatten()
            .chain(self.replicas.values_mut())
        {
            // A replica a test stopped (SIGSTOP) is killed all the same.
            let _ = child.kill();
            let _ = child.wait();
        }
        canaryd::demo::terminate(&mut self.nginx);
    }
}

/// A Deployment `name` labelled `labels`, whose pods run the demo app at `version` and
/// `error_rate`, selected by `app: name`, on port 8080.
pub fn deployment(name: &str, labels: Value, version: &str, error_rate: f64) -> Deployment {
    serde_json::from_value(json!({
        "apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": {"name": name, "namespace": NAMESPACE, "labels": labels},
        "spec": {
            "replicas": 2,
            "selector": {"matchLabels": {"app": name}},
            "template": {
                "metadata": {"labels": {"app": name}},
                "spec": {"containers": [{
                    "name": "app", "image": format!("demo-app:{version}"),
                    "args": ["--version", version, "--error-rate", error_rate.to_string()],
                    "ports": [{"name": "http", "containerPort": 8080}]
                }]}
            }
        }
    }))
    .expect("a Deployment")
}

impl KubeStack {
    /// Starts everything but canaryd, with `policy` (a CanaryPolicy YAML) for it, the
    /// CRDs applied, namespace `shop`, the user's Service and HTTPRoute `web`, and
    /// Deployment `web` at v1.
    pub async fn start(policy: &str, demo_app: PathBuf, canaryd_bin: &Path) -> KubeStack {
        let dir = tempfile::Builder::new().prefix("canaryd-kube-").tempdir().expect("a temp dir");
        let fake = FakeApiServer::start().await;
        let client = fake.client("test").await;
        apply_crds(canaryd_bin, &fake, dir.path()).await;
        let namespaces: Api<Namespace> = Api::all(client.clone());
        let ns: Namespace =
            serde_json::from_value(json!({"metadata": {"name": NAMESPACE}})).expect("namespace");
        namespaces.create(&PostParams::default(), &ns).await.expect("namespace shop");
        let own: Namespace =
            serde_json::from_value(json!({"metadata": {"name": CANARYD_NAMESPACE}})).expect("namespace");
        namespaces.create(&PostParams::default(), &own).await.expect("namespace canaryd");
        // canaryd's clients get exactly what deploy/'s RBAC grants its service account.
        let grants = crate::support::fake_apiserver::rbac::Grants::of(
            &rendered_deploy(),
            CANARYD_NAMESPACE,
            "canaryd",
        );
        assert!(!grants.cluster.is_empty(), "deploy/ binds a ClusterRole to canaryd");
        fake.authorize("canaryd", grants);
        // The user's own Service and route, before canaryd adopts the route.
        let services: Api<Service> = Api::namespaced(client.clone(), NAMESPACE);
        let service: Service = serde_json::from_value(json!({
            "metadata": {"name": "web", "namespace": NAMESPACE},
            "spec": {"selector": {"app": "web"}, "ports": [{"name": "http", "port": 8080, "targetPort": 8080}]}
        }))
        .expect("service");
        services.create(&PostParams::default(), &service).await.expect("Service web");
        let routes: Api<DynamicObject> = Api::namespaced_with(client.clone(), NAMESPACE, &http_route());
        let route: DynamicObject = serde_json::from_value(json!({
            "apiVersion": "gateway.networking.k8s.io/v1", "kind": "HTTPRoute",
            "metadata": {"name": "web", "namespace": NAMESPACE},
            "spec": {"parentRefs": [{"name": "public"}], "rules": [{"backendRefs": [{"name": "web", "port": 8080}]}]}
        }))
        .expect("route");
        routes.create(&PostParams::default(), &route).await.expect("HTTPRoute web");
        let deployments: Api<Deployment> = Api::namespaced(client.clone(), NAMESPACE);
        let web = deployment("web", json!({"canary": "enabled"}), "v1", 0.0);
        deployments.create(&PostParams::default(), &web).await.expect("Deployment web");

        let targets = dir.path().join("targets.json");
        std::fs::write(&targets, "[]").expect("targets");
        let kubelet =
            kubelet::Kubelet::start(fake.client("controller").await, NAMESPACE, demo_app, targets.clone());

        // nginx, with the gateway stand-in writing its upstreams.
        let (nginx_port, status_port) = (free_port(), free_port());
        let d = dir.path().display().to_string();
        std::fs::create_dir_all(dir.path().join("nginx-tmp")).expect("nginx tmp");
        let include = dir.path().join("upstreams.conf");
        let status: std::net::SocketAddr = ([127, 0, 0, 1], status_port).into();
        let conf = format!(
            "worker_processes 1;\npid {d}/nginx.pid;\nerror_log {d}/nginx-error.log warn;\nevents {{ worker_connections 1024; }}\n\
             http {{\n access_log off;\n client_body_temp_path {d}/nginx-tmp/body;\n proxy_temp_path {d}/nginx-tmp/proxy;\n\
             fastcgi_temp_path {d}/nginx-tmp/fastcgi;\n uwsgi_temp_path {d}/nginx-tmp/uwsgi;\n scgi_temp_path {d}/nginx-tmp/scgi;\n\
             include {d}/upstreams.conf;\n server {{ listen 127.0.0.1:{nginx_port};\n  location / {{ proxy_pass http://web; proxy_http_version 1.1; proxy_set_header Connection \"\"; }} }}\n}}\n"
        );
        std::fs::write(dir.path().join("nginx.conf"), conf).expect("nginx.conf");
        let args: Vec<String> = vec![
            "-p".into(),
            format!("{d}/"),
            "-c".into(),
            format!("{d}/nginx.conf"),
            "-e".into(),
            format!("{d}/nginx-error.log"),
        ];
        // nginx refuses `proxy_pass http://web` without an upstream `web`: start it with
        // a placeholder upstream the gateway's first write replaces.
        std::fs::write(
            &include,
            format!("upstream web {{ server 127.0.0.1:{}; }}\nserver {{ listen {status}; }}\n", free_port()),
        )
        .expect("include");
        let nginx = Command::new("nginx")
            .args(&args)
            .args(["-g", "daemon off;"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("nginx starts (scripts/install-deps installs it)");
        let gateway = gateway::Gateway::start(
            fake.client("gateway").await,
            NAMESPACE,
            kubelet.pods.clone(),
            gateway::Nginx { include, args, status },
        );

        // Prometheus over the pods, with the documented relabelling.
        let prometheus_port = free_port();
        let config = format!(
            "global: {{scrape_interval: 1s, evaluation_interval: 1s}}\nscrape_configs:\n{}",
            documented_scrape_config(&targets)
        );
        std::fs::write(dir.path().join("prometheus.yml"), config).expect("prometheus.yml");
        let prometheus = Command::new("prometheus")
            .arg(format!("--config.file={d}/prometheus.yml"))
            .arg(format!("--storage.tsdb.path={d}/prometheus-data"))
            .arg(format!("--web.listen-address=127.0.0.1:{prometheus_port}"))
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(dir.path().join("prometheus.log")).expect("log"))
            .spawn()
            .expect("prometheus starts (scripts/install-deps installs it)");
        let prometheus_url = format!("http://127.0.0.1:{prometheus_port}");
        let ready = format!("{prometheus_url}/-/ready");
        poll(Duration::from_secs(60), || async {
            reqwest::get(&ready).await.is_ok_and(|r| r.status().is_success())
        })
        .await
        .expect("Prometheus is ready");

        std::fs::create_dir_all(dir.path().join("policies")).expect("policies dir");
        std::fs::write(dir.path().join("policies/policy.yaml"), policy).expect("policy");
        let kubeconfig = fake.kubeconfig(dir.path(), "canaryd");
        let api_port = free_port();
        let settings = format!(
            "[server]\nlisten = \"127.0.0.1:{api_port}\"\napi_token = \"kube-stack-token\"\n\
             [prometheus]\nurl = \"{prometheus_url}\"\ntimeout = \"2s\"\nretries = 1\nscrape_interval = \"1s\"\n\
             [policies]\npaths = [\"{d}/policies\"]\n[log]\nlevel = \"info,canaryd=debug\"\n\
             [daemon]\nstate_dir = \"{d}/state\"\nrecords_dir = \"{d}/records\"\ntick = \"1s\"\nplatform_timeout = \"10s\"\nshutdown_deadline = \"5s\"\n\
             [kubernetes]\nnamespaces = [\"{NAMESPACE}\"]\ncheckpoint = \"30s\"\n\
             [kubernetes.lease]\nnamespace = \"{CANARYD_NAMESPACE}\"\n"
        );
        std::fs::write(dir.path().join("canaryd.toml"), settings).expect("settings");
        std::fs::write(dir.path().join("kubeconfig.path"), kubeconfig.display().to_string()).expect("path");
        KubeStack {
            fake,
            client,
            kubelet,
            _gateway: gateway,
            prometheus,
            prometheus_url,
            nginx,
            nginx_port,
            wrk: None,
            canaryd: None,
            replicas: Default::default(),
            api_port,
            dir,
        }
    }

    /// From now on, canaryd's clients get what deploy/ grants with
    /// `deploy/components/<component>` added.
    pub fn grant_component(&self, component: &str) {
        let rendered = rendered_deploy_with(component);
        let grants =
            crate::support::fake_apiserver::rbac::Grants::of(&rendered, CANARYD_NAMESPACE, "canaryd");
        self.fake.authorize("canaryd", grants);
    }

    /// Starts a `canaryd run` replica `identity` with leader election on Lease
    /// `canaryd` in `canaryd` (a 4 s lease, renewed every second, acting for 3 s after a
    /// renewal is sent). Each replica has its own client in the request log
    /// (`canaryd-<identity>`), API port, state directory and log (`canaryd-<identity>.log`).
    pub fn start_replica(&mut self, canaryd_bin: &Path, identity: &str) -> u16 {
        let port = free_port();
        let settings = std::fs::read_to_string(self.path("canaryd.toml")).expect("settings");
        let d = self.dir.path().display().to_string();
        let settings = settings
            .replace(&format!("127.0.0.1:{}", self.api_port), &format!("127.0.0.1:{port}"))
            .replace(&format!("{d}/state"), &format!("{d}/state-{identity}"))
            .replace(&format!("{d}/records"), &format!("{d}/records-{identity}"));
        let settings = format!(
            "{settings}identity = \"{identity}\"\nduration = \"4s\"\nrenew_deadline = \"3s\"\nretry = \"1s\"\n"
        );
        let config = self.path(&format!("canaryd-{identity}.toml"));
        std::fs::write(&config, settings).expect("settings");
        let kubeconfig = self.fake.kubeconfig(self.dir.path(), &replica_client(identity));
        let log = std::fs::File::create(self.path(&format!("canaryd-{identity}.log"))).expect("log");
        let child = Command::new(canaryd_bin)
            .args(["run", "--config"])
            .arg(config)
            .env("KUBECONFIG", kubeconfig)
            .stdout(log.try_clone().expect("log"))
            .stderr(log)
            .spawn()
            .expect("canaryd starts");
        self.replicas.insert(identity.to_string(), child);
        port
    }

    /// Sends `signal` (`KILL`, `STOP`, `CONT`) to replica `identity`.
    pub fn signal_replica(&mut self, identity: &str, signal: &str) {
        let child = self.replicas.get_mut(identity).expect("a replica of that identity");
        let status = Command::new("kill")
            .args([&format!("-{signal}"), &child.id().to_string()])
            .status()
            .expect("kill runs");
        assert!(status.success(), "kill -{signal} {identity}");
        if signal == "KILL" {
            let _ = child.wait();
        }
    }

    /// Whether replica `identity` has exited, and how.
    pub fn replica_exit(&mut self, identity: &str) -> Option<std::process::ExitStatus> {
        self.replicas.get_mut(identity).and_then(|c| c.try_wait().ok().flatten())
    }

    /// Replica `identity`'s log so far.
    pub fn replica_log(&self, identity: &str) -> String {
        std::fs::read_to_string(self.path(&format!("canaryd-{identity}.log"))).unwrap_or_default()
    }

    /// Every replica's log, headed by its identity.
    pub fn replica_logs(&self) -> String {
        self.replicas.keys().map(|id| format!("--- {id}\n{}", self.replica_log(id))).collect()
    }

    /// A file in the stack's directory.
    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    /// Starts `canaryd run` (again, after [`KubeStack::kill_canaryd`]).
    pub fn start_canaryd(&mut self, canaryd_bin: &Path) {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.path("canaryd.log"))
            .expect("log");
        let kubeconfig = std::fs::read_to_string(self.path("kubeconfig.path")).expect("kubeconfig path");
        let child = Command::new(canaryd_bin)
            .args(["run", "--config"])
            .arg(self.path("canaryd.toml"))
            .env("KUBECONFIG", kubeconfig)
            .stdout(log.try_clone().expect("log"))
            .stderr(log)
            .spawn()
            .expect("canaryd starts");
        self.canaryd = Some(child);
    }

    /// Kills canaryd with SIGKILL.
    pub fn kill_canaryd(&mut self) {
        if let Some(mut child) = self.canaryd.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// canaryd's log so far.
    pub fn canaryd_log(&self) -> String {
        std::fs::read_to_string(self.path("canaryd.log")).unwrap_or_default()
    }

    /// Starts wrk's load through nginx.
    pub fn start_load(&mut self) {
        let child = Command::new("wrk")
            .args(["-t1", "-c8", "-d1h", &self.front()])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("wrk starts (scripts/install-deps installs it)");
        self.wrk = Some(child);
    }

    /// The URL wrk loads: nginx's front.
    pub fn front(&self) -> String {
        format!("http://127.0.0.1:{}/", self.nginx_port)
    }

    /// The versions answering through nginx, counted over `n` requests.
    pub async fn versions(&self, n: usize) -> std::collections::BTreeMap<String, usize> {
        let mut seen = std::collections::BTreeMap::new();
        let http = reqwest::Client::new();
        for _ in 0..n {
            if let Ok(r) = http.get(self.front()).send().await
                && let Ok(body) = r.text().await
            {
                let version = body.split_whitespace().find(|w| w.starts_with('v')).unwrap_or("?").to_string();
                *seen.entry(version).or_default() += 1;
            }
        }
        seen
    }

    /// Deployments in the namespace.
    pub fn deployments(&self) -> Api<Deployment> {
        Api::namespaced(self.client.clone(), NAMESPACE)
    }

    /// The route, as JSON.
    pub async fn route(&self, name: &str) -> Value {
        let routes: Api<DynamicObject> = Api::namespaced_with(self.client.clone(), NAMESPACE, &http_route());
        serde_json::to_value(routes.get(name).await.expect("the route")).expect("json")
    }

    /// Changes Deployment `name`'s pod template to `version` and `error_rate` (a new
    /// revision), as `kubectl set image`/`kubectl patch` would.
    pub async fn change_template(&self, name: &str, version: &str, error_rate: f64) {
        let patch = json!({"spec": {"template": {"spec": {"containers": [{
            "name": "app", "image": format!("demo-app:{version}"),
            "args": ["--version", version, "--error-rate", error_rate.to_string()],
            "ports": [{"name": "http", "containerPort": 8080}]
        }]}}}});
        self.deployments()
            .patch(name, &PatchParams::default(), &Patch::Merge(&patch))
            .await
            .expect("template changed");
    }
}

/// The request log's client name of replica `identity`.
pub fn replica_client(identity: &str) -> String {
    format!("canaryd-{identity}")
}

/// Applies `canaryd crd`'s CRDs as a user would: `canaryd crd | kubectl apply
/// --validate=false -f -` (the fake serves no OpenAPI document to validate against).
async fn apply_crds(canaryd_bin: &Path, fake: &FakeApiServer, dir: &Path) {
    let out = Command::new(canaryd_bin).arg("crd").output().expect("canaryd crd");
    assert!(out.status.success(), "canaryd crd: {}", String::from_utf8_lossy(&out.stderr));
    kubectl_apply(fake, dir, &String::from_utf8_lossy(&out.stdout)).await;
}

/// `kubectl apply --validate=false -f -` of `yaml` against the fake, as client
/// `kubectl`; its stdout. Panics with kubectl's output when it fails.
pub async fn kubectl_apply(fake: &FakeApiServer, dir: &Path, yaml: &str) -> String {
    use tokio::io::AsyncWriteExt;
    let config = fake.kubeconfig(dir, "kubectl");
    let mut child = tokio::process::Command::new("kubectl")
        .arg("--kubeconfig")
        .arg(&config)
        .arg("--cache-dir")
        .arg(dir.join("kubectl-cache"))
        .args(["apply", "--validate=false", "-f", "-"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("kubectl runs (scripts/install-deps installs it)");
    let mut stdin = child.stdin.take().expect("stdin");
    stdin.write_all(yaml.as_bytes()).await.expect("kubectl's stdin");
    drop(stdin);
    let out = tokio::time::timeout(Duration::from_secs(60), child.wait_with_output())
        .await
        .expect("kubectl finishes in time")
        .expect("kubectl runs");
    let (stdout, stderr) = (String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(out.status.success(), "kubectl apply failed: {stdout}{stderr}");
    stdout.into_owned()
}
