//! The local stack behind `scripts/demo` and the end-to-end tests: a real Prometheus,
//! nginx, wrk and `canaryd-demo-app` instances on free loopback ports, with generated
//! configs in a temporary directory, and `canaryd run` on the local platform in front of
//! them. Everything it starts is stopped when it is dropped (the demo drops it on
//! Ctrl-C too).
//!
//! The service `demo/web` has two stable servers (workload `web`) and two canary servers
//! (workload `web-canary`); Prometheus scrapes all four every second, and its relabel
//! rules give each arm its `workload` label. The hooks are shell scripts in the
//! directory: `pre-rollout` checks that the canary servers answer, `promote` restarts the
//! stable servers with the canary's flags, `rollback` stops the canary servers.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use anyhow::{Context, bail};

use crate::daemon::view::RolloutView;
use crate::engine::Notification;
use crate::server::api::StartRequest;

mod ports;
pub use ports::free_port;

/// The binaries the stack runs.
#[derive(Clone, Debug)]
pub struct Binaries {
    /// `canaryd`.
    pub canaryd: PathBuf,
    /// `canaryd-demo-app`.
    pub demo_app: PathBuf,
}

/// The demo's policy: 5 s intervals over 1 s scrapes, steps 10 → 50 → 100 of 10 s each.
pub const DEMO_POLICY: &str = include_str!("files/demo-policy.yaml");

// The stack's files, with `{{name}}` placeholders that [`fill`] replaces.
const PROMETHEUS_YML: &str = include_str!("files/prometheus.yml");
const NGINX_CONF: &str = include_str!("files/nginx.conf");
const APP_SH: &str = include_str!("files/app.sh");
const STOP_ROLE_SH: &str = include_str!("files/stop-role.sh");
const PRE_ROLLOUT_SH: &str = include_str!("files/pre-rollout.sh");
const PROMOTE_SH: &str = include_str!("files/promote.sh");
const ROLLBACK_SH: &str = include_str!("files/rollback.sh");
const POST_ROLLOUT_SH: &str = include_str!("files/post-rollout.sh");
const CANARYD_TOML: &str = include_str!("files/canaryd.toml");

/// `template` with every `{{name}}` replaced by its value; a placeholder left without
/// a value is an error naming the template, so no file is written half filled.
fn fill(name: &str, template: &str, values: &[(&str, String)]) -> anyhow::Result<String> {
    let mut out = template.to_string();
    for (key, value) in values {
        out = out.replace(&format!("{{{{{key}}}}}"), value);
    }
    match out.find("{{") {
        Some(at) => {
            let rest = &out[at..];
            let end = rest.find("}}").map_or(rest.len(), |e| e + 2);
            anyhow::bail!("demo file {name}: placeholder {} has no value", &rest[..end])
        }
        None => Ok(out),
    }
}

/// How the stack is set up.
#[derive(Clone, Debug)]
pub struct Options {
    /// The policy (YAML).
    pub policy: String,
    /// The `promote` hook's command, replacing the demo's (e.g. one that fails).
    pub promote_hook: Option<Vec<String>>,
    /// The `promote` hook's time limit.
    pub promote_timeout: String,
    /// Stable servers' error rate.
    pub stable_error_rate: f64,
    /// Latency every demo server adds, in milliseconds (it also bounds wrk's rate).
    pub latency_ms: u64,
    /// wrk connections.
    pub connections: u32,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            policy: DEMO_POLICY.to_string(),
            promote_hook: None,
            promote_timeout: "15s".into(),
            stable_error_rate: 0.005,
            latency_ms: 5,
            connections: 8,
        }
    }
}

/// The loopback ports in use.
#[derive(Clone, Copy, Debug)]
pub struct Ports {
    /// nginx: where the load goes.
    pub nginx: u16,
    /// nginx's status server (canaryd reads the served weights back from it).
    pub status: u16,
    /// canaryd's HTTP server and API.
    pub canaryd: u16,
    /// Prometheus.
    pub prometheus: u16,
    /// The webhook receiver.
    pub receiver: u16,
    /// The stable servers.
    pub stable: [u16; 2],
    /// The canary servers.
    pub canary: [u16; 2],
}

/// Requests one demo server has served, by its own metrics.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Served {
    /// Its port.
    pub port: u16,
    /// Whether it is a canary server.
    pub canary: bool,
    /// `sum(http_requests_total)`.
    pub requests: f64,
}

/// The running stack.
pub struct Stack {
    /// The temporary directory with every config, log, state and record.
    pub dir: tempfile::TempDir,
    /// Ports.
    pub ports: Ports,
    /// The API's bearer token.
    pub token: String,
    bins: Binaries,
    prometheus: Option<Child>,
    nginx: Option<Child>,
    receiver: Option<Child>,
    wrk: Option<Child>,
    canaryd: Option<Child>,
    client: reqwest::Client,
}

/// Polls `check` every 100 ms until it holds, or fails after `within` naming `what`.
pub async fn wait_until<F, Fut>(within: Duration, what: &str, mut check: F) -> anyhow::Result<()>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = tokio::time::Instant::now() + within;
    loop {
        if check().await {
            return Ok(());
        }
        if tokio::time::Instant::now() >= deadline {
            bail!("{what}: not within {}", humantime::format_duration(within));
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Sends `signal` to `pid` (with the `kill` command: the crate forbids unsafe code).
fn signal(pid: u32, signal: &str) {
    let _ = Command::new("kill").args([signal, &pid.to_string()]).stderr(Stdio::null()).status();
}

/// Stops a child: SIGTERM, then SIGKILL after 5 s.
fn stop(child: &mut Option<Child>) {
    let Some(mut c) = child.take() else { return };
    terminate(&mut c);
}

/// Stops `c` with SIGTERM, polling for its exit for 5 s, then SIGKILL. nginx needs the
/// SIGTERM: its master stops its workers then, while a SIGKILLed master leaves them
/// running, orphaned, on the port.
pub fn terminate(c: &mut Child) {
    signal(c.id(), "-TERM");
    for _ in 0..50 {
        if c.try_wait().ok().flatten().is_some() {
            return;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    let _ = c.kill();
    let _ = c.wait();
}

fn write(path: &Path, text: &str) -> anyhow::Result<()> {
    std::fs::write(path, text).with_context(|| format!("cannot write {}", path.display()))
}

impl Stack {
    /// Starts Prometheus, the stable servers, the receiver, nginx, canaryd and wrk, and
    /// waits until each is ready.
    pub async fn start(bins: Binaries, options: Options) -> anyhow::Result<Stack> {
        let dir = tempfile::Builder::new().prefix("canaryd-demo-").tempdir()?;
        let ports = Ports {
            nginx: free_port()?,
            status: free_port()?,
            canaryd: free_port()?,
            prometheus: free_port()?,
            receiver: free_port()?,
            stable: [free_port()?, free_port()?],
            canary: [free_port()?, free_port()?],
        };
        let mut stack = Stack {
            dir,
            ports,
            token: format!("canaryd-demo-token-{}", std::process::id()),
            bins,
            prometheus: None,
            nginx: None,
            receiver: None,
            wrk: None,
            canaryd: None,
            client: reqwest::Client::builder().timeout(Duration::from_secs(5)).build()?,
        };
        stack.write_files(&options)?;
        stack.start_prometheus().await?;
        let stable_args = format!(
            "--version v1 --error-rate {} --latency-ms {}",
            options.stable_error_rate, options.latency_ms
        );
        for port in ports.stable {
            stack.run_app("stable", port, &stable_args)?;
        }
        let receiver_log = std::fs::File::create(stack.path("notifications.jsonl"))?;
        stack.receiver = Some(
            Command::new(&stack.bins.demo_app)
                .args(["--webhook-receiver", "--listen", &format!("127.0.0.1:{}", ports.receiver)])
                .stdout(receiver_log)
                .stderr(Stdio::null())
                .spawn()
                .context("cannot start the webhook receiver")?,
        );
        for port in ports.stable {
            stack.wait_healthy(port).await?;
        }
        // nginx includes the upstreams file: it is written before nginx starts.
        let upstreams = crate::platform::local::nginx::Upstreams {
            name: "web".into(),
            stable: ports.stable.iter().map(|p| format!("127.0.0.1:{p}")).collect(),
            canary: ports.canary.iter().map(|p| format!("127.0.0.1:{p}")).collect(),
        };
        let status = std::net::SocketAddr::from(([127, 0, 0, 1], ports.status));
        let routes = crate::platform::local::nginx::Routes::default();
        write(
            &stack.path("upstreams.conf"),
            &crate::platform::local::nginx::render(&[upstreams], &routes, status),
        )?;
        let mut nginx = Command::new("nginx");
        nginx
            .args(stack.nginx_args())
            .args(["-g", "daemon off;"])
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        stack.nginx = Some(nginx.spawn().context("cannot start nginx (scripts/install-deps installs it)")?);
        let front = format!("http://127.0.0.1:{}/", ports.nginx);
        stack.wait_ok(&front, Duration::from_secs(10), "nginx serves the stable servers").await?;
        stack.start_canaryd().await?;
        stack.start_load(options.connections)?;
        Ok(stack)
    }

    /// A file in the stack's directory.
    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    fn nginx_args(&self) -> Vec<String> {
        let d = self.dir.path().display();
        vec![
            "-p".into(),
            format!("{d}/"),
            "-c".into(),
            format!("{d}/nginx.conf"),
            "-e".into(),
            format!("{d}/nginx-error.log"),
        ]
    }

    fn write_files(&self, options: &Options) -> anyhow::Result<()> {
        let d = self.dir.path().display().to_string();
        let p = self.ports;
        std::fs::create_dir_all(self.path("policies"))?;
        std::fs::create_dir_all(self.path("nginx-tmp"))?;
        write(&self.path("policies/demo.yaml"), &options.policy)?;
        let regex = |ports: [u16; 2]| format!("127\\\\.0\\\\.0\\\\.1:({}|{})", ports[0], ports[1]);
        let ports = [
            ("s0", p.stable[0].to_string()),
            ("s1", p.stable[1].to_string()),
            ("c0", p.canary[0].to_string()),
            ("c1", p.canary[1].to_string()),
        ];
        let with = |extra: &[(&'static str, String)]| -> Vec<(&'static str, String)> {
            ports.iter().cloned().chain([("d", d.clone())]).chain(extra.iter().cloned()).collect()
        };
        let prometheus = with(&[("stable", regex(p.stable)), ("canary", regex(p.canary))]);
        write(&self.path("prometheus.yml"), &fill("prometheus.yml", PROMETHEUS_YML, &prometheus)?)?;
        write(
            &self.path("nginx.conf"),
            &fill("nginx.conf", NGINX_CONF, &with(&[("nginx", p.nginx.to_string())]))?,
        )?;
        // Demo servers are started detached (their parent exits at once), with a pid file.
        let app = with(&[("app", self.bins.demo_app.display().to_string())]);
        write(&self.path("app.sh"), &fill("app.sh", APP_SH, &app)?)?;
        let stop_role = |role: &'static str, ports: [u16; 2]| {
            let vars = with(&[
                ("role", role.to_string()),
                ("p0", ports[0].to_string()),
                ("p1", ports[1].to_string()),
            ]);
            fill("stop-role.sh", STOP_ROLE_SH, &vars)
        };
        write(&self.path("pre-rollout.sh"), &fill("pre-rollout.sh", PRE_ROLLOUT_SH, &with(&[]))?)?;
        let promote_vars = with(&[("stop", stop_role("stable", p.stable)?)]);
        write(&self.path("promote.sh"), &fill("promote.sh", PROMOTE_SH, &promote_vars)?)?;
        let rollback_vars = with(&[("stop", stop_role("canary", p.canary)?)]);
        write(&self.path("rollback.sh"), &fill("rollback.sh", ROLLBACK_SH, &rollback_vars)?)?;
        write(&self.path("post-rollout.sh"), &fill("post-rollout.sh", POST_ROLLOUT_SH, &with(&[]))?)?;
        let hook = |script: &str, timeout: &str| {
            format!("{{ command = [\"sh\", \"{d}/{script}\"], timeout = \"{timeout}\" }}")
        };
        let promote = match &options.promote_hook {
            Some(argv) => format!("{{ command = {argv:?}, timeout = \"{}\" }}", options.promote_timeout),
            None => hook("promote.sh", &options.promote_timeout),
        };
        let settings = with(&[
            ("api", p.canaryd.to_string()),
            ("token", self.token.clone()),
            ("prom", p.prometheus.to_string()),
            ("receiver", p.receiver.to_string()),
            ("status", p.status.to_string()),
            ("nginx_args", format!("{:?}", self.nginx_args())),
            ("pre", hook("pre-rollout.sh", "5s")),
            ("promote", promote),
            ("rollback", hook("rollback.sh", "10s")),
            ("post", hook("post-rollout.sh", "5s")),
        ]);
        write(&self.path("canaryd.toml"), &fill("canaryd.toml", CANARYD_TOML, &settings)?)?;
        Ok(())
    }

    /// Starts a demo server on `port` (detached, pid in `ROLE-PORT.pid`).
    fn run_app(&self, role: &str, port: u16, args: &str) -> anyhow::Result<()> {
        let status = Command::new("sh")
            .arg(self.path("app.sh"))
            .args([role, &port.to_string()])
            .args(args.split_whitespace())
            .status()?;
        if !status.success() {
            bail!("cannot start the {role} server on port {port}");
        }
        Ok(())
    }

    async fn wait_healthy(&self, port: u16) -> anyhow::Result<()> {
        let url = format!("http://127.0.0.1:{port}/healthz");
        self.wait_ok(&url, Duration::from_secs(10), &format!("demo server on {port} answers")).await
    }

    /// Waits until a GET of `url` answers 2xx.
    async fn wait_ok(&self, url: &str, within: Duration, what: &str) -> anyhow::Result<()> {
        wait_until(within, what, || async {
            self.client.get(url).send().await.is_ok_and(|r| r.status().is_success())
        })
        .await
    }

    /// Starts Prometheus (again, after [`Stack::kill_prometheus`], on the same port and data).
    pub async fn start_prometheus(&mut self) -> anyhow::Result<()> {
        let d = self.dir.path();
        let child = Command::new("prometheus")
            .arg(format!("--config.file={}", d.join("prometheus.yml").display()))
            .arg(format!("--storage.tsdb.path={}", d.join("prometheus-data").display()))
            .arg(format!("--web.listen-address=127.0.0.1:{}", self.ports.prometheus))
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(d.join("prometheus.log"))?)
            .spawn()
            .context("cannot start prometheus (scripts/install-deps installs it)")?;
        self.prometheus = Some(child);
        let ready = format!("http://127.0.0.1:{}/-/ready", self.ports.prometheus);
        self.wait_ok(&ready, Duration::from_secs(60), "Prometheus is ready").await
    }

    /// Kills Prometheus (SIGKILL), as an outage.
    pub fn kill_prometheus(&mut self) {
        if let Some(mut c) = self.prometheus.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Starts `canaryd run` and waits until it is ready.
    pub async fn start_canaryd(&mut self) -> anyhow::Result<()> {
        let log = std::fs::OpenOptions::new().create(true).append(true).open(self.path("canaryd.log"))?;
        let child = Command::new(&self.bins.canaryd)
            .args(["run", "--config"])
            .arg(self.path("canaryd.toml"))
            .stdout(log.try_clone()?)
            .stderr(log)
            .spawn()
            .context("cannot start canaryd")?;
        self.canaryd = Some(child);
        let ready = format!("{}/readyz", self.api());
        let waited = self.wait_ok(&ready, Duration::from_secs(30), "canaryd is ready").await;
        // The directory goes with the stack: the log's end is kept in the error itself.
        waited.with_context(|| {
            let log = self.canaryd_log();
            let tail: Vec<&str> = log.lines().rev().take(20).collect();
            let tail: Vec<&str> = tail.into_iter().rev().collect();
            format!("canaryd's log ends:\n{}", tail.join("\n"))
        })
    }

    /// Kills canaryd with SIGKILL: nothing is saved on the way out.
    pub fn kill_canaryd(&mut self) {
        if let Some(mut c) = self.canaryd.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    fn start_load(&mut self, connections: u32) -> anyhow::Result<()> {
        let child = Command::new("wrk")
            .args([
                "-t1",
                &format!("-c{connections}"),
                "-d1h",
                &format!("http://127.0.0.1:{}/", self.ports.nginx),
            ])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .context("cannot start wrk (scripts/install-deps installs it)")?;
        self.wrk = Some(child);
        Ok(())
    }

    /// canaryd's base URL.
    pub fn api(&self) -> String {
        format!("http://127.0.0.1:{}", self.ports.canaryd)
    }

    /// (Re)starts the two canary servers with `revision` and `error_rate`, and keeps
    /// their flags for the promote hook.
    pub async fn deploy_canary(
        &self,
        revision: &str,
        error_rate: f64,
        latency_ms: u64,
    ) -> anyhow::Result<()> {
        let status = Command::new("sh").arg(self.path("rollback.sh")).status()?;
        if !status.success() {
            bail!("cannot stop the previous canary servers");
        }
        let args = format!("--version {revision} --error-rate {error_rate} --latency-ms {latency_ms}");
        write(&self.path("canary.args"), &args)?;
        for port in self.ports.canary {
            self.run_app("canary", port, &args)?;
        }
        for port in self.ports.canary {
            self.wait_healthy(port).await?;
        }
        Ok(())
    }

    /// Makes the running canary servers answer errors at `error_rate` from now on (no
    /// restart: their counters and series go on).
    pub async fn set_canary_error_rate(&self, error_rate: f64) -> anyhow::Result<()> {
        for port in self.ports.canary {
            let url = format!("http://127.0.0.1:{port}/error-rate");
            let r = self.client.put(url).body(error_rate.to_string()).send().await?;
            if !r.status().is_success() {
                bail!("canary server {port}: {}", r.text().await.unwrap_or_default());
            }
        }
        Ok(())
    }

    /// `POST /api/v1/rollouts` for `web`: `Err` holds the API's error.
    pub async fn start_rollout(&self, revision: &str) -> anyhow::Result<()> {
        let body = StartRequest { service: "web".into(), revision: revision.into() };
        let r = self
            .client
            .post(format!("{}/api/v1/rollouts", self.api()))
            .bearer_auth(&self.token)
            .json(&body)
            .timeout(Duration::from_secs(30))
            .send()
            .await?;
        if !r.status().is_success() {
            let status = r.status();
            bail!("{status}: {}", r.text().await.unwrap_or_default());
        }
        Ok(())
    }

    /// Where the `web` rollout stands (`None` before the first, or canaryd down).
    pub async fn view(&self) -> Option<RolloutView> {
        let r = self.client.get(format!("{}/api/v1/rollouts/demo/web", self.api())).send().await.ok()?;
        if !r.status().is_success() {
            return None;
        }
        r.json().await.ok()
    }

    /// Follows the rollout of `revision` until it ends, calling `progress` on every
    /// change; returns its last view.
    pub async fn follow(
        &self,
        revision: &str,
        within: Duration,
        mut progress: impl FnMut(&RolloutView),
    ) -> anyhow::Result<RolloutView> {
        let deadline = tokio::time::Instant::now() + within;
        let mut last: Option<RolloutView> = None;
        loop {
            if let Some(v) = self.view().await.filter(|v| v.revision == revision) {
                if last.as_ref() != Some(&v) {
                    progress(&v);
                }
                let ended = v.finished_at.is_some();
                last = Some(v);
                if ended {
                    return Ok(last.expect("just set"));
                }
            }
            if tokio::time::Instant::now() >= deadline {
                bail!(
                    "the rollout of {revision} did not end within {}; last: {last:?}",
                    humantime::format_duration(within)
                );
            }
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
    }

    /// The notifications the receiver printed, in order.
    pub fn notifications(&self) -> Vec<Notification> {
        let text = std::fs::read_to_string(self.path("notifications.jsonl")).unwrap_or_default();
        text.lines().filter_map(|l| serde_json::from_str(l).ok()).collect()
    }

    /// Requests each demo server has served, read from its own `/metrics`.
    pub async fn served(&self) -> Vec<Served> {
        let mut out = Vec::new();
        let arms =
            self.ports.stable.iter().map(|p| (*p, false)).chain(self.ports.canary.iter().map(|p| (*p, true)));
        for (port, canary) in arms {
            let text = match self.client.get(format!("http://127.0.0.1:{port}/metrics")).send().await {
                Ok(r) => r.text().await.unwrap_or_default(),
                Err(_) => continue,
            };
            let requests = text
                .lines()
                .filter(|l| l.starts_with("http_requests_total{"))
                .filter_map(|l| l.rsplit(' ').next().and_then(|v| v.parse::<f64>().ok()))
                .sum();
            out.push(Served { port, canary, requests });
        }
        out
    }

    /// nginx's status answer for `web`: `web WEIGHT GENERATION`.
    pub async fn nginx_serves(&self) -> Option<String> {
        let url = format!("http://127.0.0.1:{}/canaryd/web", self.ports.status);
        let r = self.client.get(url).send().await.ok()?;
        r.text().await.ok().map(|t| t.trim().to_string())
    }

    /// One request through nginx: the version that answered it.
    pub async fn get_front(&self) -> Option<String> {
        let r = self.client.get(format!("http://127.0.0.1:{}/", self.ports.nginx)).send().await.ok()?;
        r.text().await.ok().map(|t| t.trim().to_string())
    }

    /// Copies the deployment records into `to` (the stack's directory goes away on exit),
    /// once canaryd has written one for each of `revisions`: it writes a record a tick or
    /// two after its rollout ends, when the last decision is told. Returns the copies; an
    /// error names the path.
    pub async fn keep_records(
        &self,
        to: &Path,
        revisions: &[&str],
        within: Duration,
    ) -> anyhow::Result<Vec<PathBuf>> {
        use crate::daemon::records;
        let from = self.path("records");
        let written = || -> Vec<String> {
            records::list(&from).iter().filter_map(|f| records::read(f).ok()).map(|r| r.revision).collect()
        };
        let what = format!("a record of each of {} in {}", revisions.join(", "), from.display());
        wait_until(within, &what, || async {
            let written = written();
            revisions.iter().all(|r| written.iter().any(|w| w == r))
        })
        .await?;
        std::fs::create_dir_all(to).with_context(|| format!("cannot create {}", to.display()))?;
        let mut kept = Vec::new();
        for file in records::list(&from) {
            let copy = to.join(file.file_name().unwrap_or_default());
            std::fs::copy(&file, &copy)
                .with_context(|| format!("cannot copy {} to {}", file.display(), copy.display()))?;
            kept.push(copy);
        }
        Ok(kept)
    }

    /// The canaryd log so far (for failure messages).
    pub fn canaryd_log(&self) -> String {
        std::fs::read_to_string(self.path("canaryd.log")).unwrap_or_default()
    }
}

impl Drop for Stack {
    fn drop(&mut self) {
        stop(&mut self.wrk);
        stop(&mut self.canaryd);
        stop(&mut self.nginx);
        stop(&mut self.prometheus);
        stop(&mut self.receiver);
        // The demo servers, started detached: by their pid files.
        if let Ok(entries) = std::fs::read_dir(self.dir.path()) {
            for entry in entries.flatten() {
                let ours =
                    entry.path().extension().is_some_and(|e| e == "pid") && entry.file_name() != "nginx.pid";
                if ours
                    && let Some(pid) =
                        std::fs::read_to_string(entry.path()).ok().and_then(|t| t.trim().parse::<u32>().ok())
                {
                    signal(pid, "-KILL");
                }
            }
        }
    }
}

#[cfg(test)]
mod fill_tests {
    use super::*;

    #[test]
    fn every_placeholder_of_the_settings_template_is_filled_or_named() {
        let keys = [
            "api",
            "token",
            "prom",
            "receiver",
            "status",
            "nginx_args",
            "pre",
            "promote",
            "rollback",
            "post",
            "d",
            "s0",
            "s1",
            "c0",
            "c1",
        ];
        let values: Vec<(&str, String)> = keys.iter().map(|k| (*k, format!("<{k}>"))).collect();
        let text = fill("canaryd.toml", CANARYD_TOML, &values).unwrap();
        assert!(text.contains("listen = \"127.0.0.1:<api>\"") && !text.contains("{{"), "{text}");
        let missing = fill("canaryd.toml", CANARYD_TOML, &values[1..]).unwrap_err().to_string();
        assert_eq!(missing, "demo file canaryd.toml: placeholder {{api}} has no value");
    }
}
