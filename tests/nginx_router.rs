//! The nginx router against a real nginx (Debian's package) on loopback ports, without
//! the rest of the stack: a weight counts as applied only once nginx serves it (a reload
//! nginx takes without applying it is an error), and `nginx -t` stops a config that
//! `nginx -s reload` hands to the master without a word.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use canaryd::config::{LocalSettings, NginxSettings, ServiceSettings};
use canaryd::engine::RolloutId;
use canaryd::engine::plan::RouterKind;
use canaryd::platform::Platform as _;
use canaryd::platform::local::LocalPlatform;
use canaryd::platform::local::nginx::{Routes, parse};

/// How long a test, a reload or the read-back may take: a read-back that never sees the
/// new generation fails after this.
const TIMEOUT: Duration = Duration::from_secs(2);

fn free_port() -> u16 {
    canaryd::demo::free_port().unwrap()
}

/// One nginx's directory: `nginx.conf` includes `served.conf` in its `http` block.
struct Site {
    dir: tempfile::TempDir,
}

impl Site {
    fn new() -> Site {
        let site = Site { dir: tempfile::Builder::new().prefix("canaryd-nginx-").tempdir().unwrap() };
        std::fs::create_dir_all(site.path("tmp")).unwrap();
        site.write_conf("");
        site
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    /// Writes `nginx.conf` with `extra` in its `http` block.
    fn write_conf(&self, extra: &str) {
        let d = self.dir.path().display();
        let conf = format!(
            "worker_processes 1;
pid {d}/nginx.pid;
error_log {d}/error.log warn;
events {{ worker_connections 64; }}
http {{
    access_log off;
    client_body_temp_path {d}/tmp/body;
    proxy_temp_path {d}/tmp/proxy;
    fastcgi_temp_path {d}/tmp/fastcgi;
    uwsgi_temp_path {d}/tmp/uwsgi;
    scgi_temp_path {d}/tmp/scgi;
    {extra}
    include {d}/served.conf;
}}
"
        );
        std::fs::write(self.path("nginx.conf"), conf).unwrap();
    }

    /// The arguments that make `nginx` act on this site.
    fn args(&self) -> Vec<String> {
        let d = self.dir.path().display();
        [
            "-p".into(),
            format!("{d}/"),
            "-c".into(),
            format!("{d}/nginx.conf"),
            "-e".into(),
            format!("{d}/error.log"),
        ]
        .into()
    }

    /// The local platform's settings for service `web`, with canaryd's file at `include`.
    fn settings(&self, include: &Path, status: SocketAddr) -> LocalSettings {
        LocalSettings {
            nginx: NginxSettings {
                binary: "nginx".into(),
                args: self.args(),
                include: include.to_path_buf(),
                status_listen: status,
                timeout: TIMEOUT,
            },
            services: vec![ServiceSettings {
                name: "web".into(),
                namespace: "local".into(),
                labels: [("app".to_string(), "web".to_string())].into(),
                stable: vec!["127.0.0.1:1".into(), "127.0.0.1:2".into()],
                canary: vec!["127.0.0.1:3".into()],
                stable_workload: "web".into(),
                canary_workload: "web-canary".into(),
                health_path: "/healthz".into(),
                hooks: Default::default(),
            }],
        }
    }

    /// The platform over `served.conf`, the file this site's nginx reads.
    fn platform(&self, status: SocketAddr) -> LocalPlatform {
        LocalPlatform::open(&self.settings(&self.path("served.conf"), status), Default::default()).unwrap()
    }

    /// Starts this site's nginx in the foreground (its master is the child).
    fn start(&self) -> Nginx {
        let child = Command::new("nginx")
            .args(self.args())
            .args(["-g", "daemon off;"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("nginx starts (scripts/install-deps installs it)");
        Nginx { child }
    }
}

/// A running nginx master, stopped (with its workers) on drop.
struct Nginx {
    child: Child,
}

impl Nginx {
    /// Waits until the master runs one worker again. After a reload the old worker goes
    /// on taking new connections until the master tells it to quit (100 ms after the new
    /// one started): what nginx serves is read once it is gone.
    async fn settled(&self) {
        let children = format!("/proc/{0}/task/{0}/children", self.child.id());
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        loop {
            let workers = std::fs::read_to_string(&children).unwrap_or_default();
            if workers.split_whitespace().count() == 1 {
                return;
            }
            assert!(tokio::time::Instant::now() < deadline, "nginx workers: {workers}");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

impl Drop for Nginx {
    fn drop(&mut self) {
        // SIGTERM: the master stops its workers too (SIGKILL would leave them serving).
        let _ = Command::new("kill").args(["-TERM", &self.child.id().to_string()]).status();
        for _ in 0..100 {
            if self.child.try_wait().ok().flatten().is_some() {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// What `url` answers, trimmed; `None` while nothing answers.
async fn answer(url: &str) -> Option<String> {
    let r = reqwest::Client::new().get(url).timeout(Duration::from_secs(1)).send().await.ok()?;
    Some(r.text().await.ok()?.trim().to_string())
}

/// Polls `url` until it answers `expected`, for at most 10 s.
async fn wait_for(url: &str, expected: &str) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        let got = answer(url).await;
        if got.as_deref() == Some(expected) {
            return;
        }
        assert!(tokio::time::Instant::now() < deadline, "{url} answers {got:?}, expected `{expected}`");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn web() -> RolloutId {
    RolloutId { namespace: "local".into(), name: "web".into() }
}

/// A site whose nginx serves `web` at 10% (generation 1), set through `platform`.
struct Serving {
    site: Site,
    nginx: Nginx,
    platform: LocalPlatform,
    /// The status server's address.
    status: SocketAddr,
    /// Where the status server answers what nginx serves for `web`.
    url: String,
}

async fn serving_ten_percent() -> Serving {
    let site = Site::new();
    let status: SocketAddr = ([127, 0, 0, 1], free_port()).into();
    // Opening the platform writes canaryd's file (every canary at 0%) before nginx starts.
    let platform = site.platform(status);
    let nginx = site.start();
    let url = format!("http://{status}/canaryd/web");
    wait_for(&url, "web 0 0").await;
    platform
        .set_weight(&web(), RouterKind::Nginx, 10)
        .await
        .expect("the weight lands on a well-configured nginx");
    wait_for(&url, "web 10 1").await;
    nginx.settled().await;
    Serving { site, nginx, platform, status, url }
}

fn ten_percent() -> Routes {
    Routes { generation: 1, weights: [("web".to_string(), 10)].into() }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reload_of_a_file_nginx_does_not_read_is_not_counted_as_applied() {
    let Serving { site, url, status, .. } = &serving_ten_percent().await;
    // canaryd's settings name another file than the one nginx includes: `nginx -t` and
    // the reload both succeed (nginx's own config is unchanged and valid), and nginx goes
    // on serving what it read before.
    let settings = site.settings(&site.path("elsewhere.conf"), *status);
    let elsewhere = LocalPlatform::open(&settings, Default::default()).unwrap();
    let err = elsewhere
        .set_weight(&web(), RouterKind::Nginx, 50)
        .await
        .expect_err("a weight nginx does not serve is not applied");
    assert!(
        err.message.contains("nginx took the reload but does not serve it")
            && err.message.contains("answers `web 10 1`, expected `web 50 1`"),
        "the error names what nginx serves and what was expected: {err}"
    );
    assert_eq!(elsewhere.router().routes().await, Routes::default(), "not counted as served");
    assert_eq!(answer(url).await.as_deref(), Some("web 10 1"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_local_platform_moves_no_traffic_for_a_router_it_does_not_serve() {
    let Serving { platform, url, .. } = &serving_ten_percent().await;
    for router in [RouterKind::Istio, RouterKind::GatewayApi, RouterKind::Replica] {
        let err = platform.set_weight(&web(), router, 50).await.expect_err("only nginx is served");
        assert!(err.message.contains(router.name()) && err.message.contains("nginx"), "{err}");
    }
    assert_eq!(platform.router().routes().await, ten_percent(), "nothing written");
    assert_eq!(answer(url).await.as_deref(), Some("web 10 1"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reload_signalled_to_another_nginx_is_not_counted_as_applied() {
    let Serving { site, nginx, platform, url, .. } = &serving_ten_percent().await;
    // A stale pid file: it names another nginx master (of another site), which takes the
    // reload signal and reloads its own config; ours never reloads.
    let other = Site::new();
    let other_status: SocketAddr = ([127, 0, 0, 1], free_port()).into();
    let _other_platform = other.platform(other_status);
    let other_nginx = other.start();
    wait_for(&format!("http://{other_status}/canaryd/web"), "web 0 0").await;
    let ours = std::fs::read_to_string(site.path("nginx.pid")).unwrap();
    std::fs::write(site.path("nginx.pid"), format!("{}\n", other_nginx.child.id())).unwrap();

    let err = platform
        .set_weight(&web(), RouterKind::Nginx, 50)
        .await
        .expect_err("a weight nginx does not serve is not applied");
    assert!(
        err.message.contains("nginx took the reload but does not serve it")
            && err.message.contains("answers `web 10 1`, expected `web 50 2`"),
        "the error names what nginx serves and what was expected: {err}"
    );
    assert_eq!(platform.router().routes().await, ten_percent(), "the last weight nginx served is kept");
    assert_eq!(answer(url).await.as_deref(), Some("web 10 1"));

    // With the pid file right again, the same weight lands.
    std::fs::write(site.path("nginx.pid"), ours).unwrap();
    platform.set_weight(&web(), RouterKind::Nginx, 50).await.unwrap();
    assert_eq!(platform.router().routes().await.generation, 2);
    nginx.settled().await;
    assert_eq!(answer(url).await.as_deref(), Some("web 50 2"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nginx_t_stops_a_config_that_a_reload_would_hand_to_the_master_without_a_word() {
    let Serving { site, nginx, platform, url, .. } = &serving_ten_percent().await;
    // nginx's own config now logs into a directory that does not exist. The file parses,
    // so `nginx -s reload` signals the master and exits 0; the master fails to open the
    // log, keeps its old config, and says so only in its error log. `nginx -t` opens the
    // files too, and fails.
    let log = "/nonexistent/canaryd-test/access.log";
    site.write_conf(&format!("access_log {log};"));

    let err =
        platform.set_weight(&web(), RouterKind::Nginx, 50).await.expect_err("nginx -t refuses the config");
    assert!(err.message.starts_with("nginx -t refused the new upstreams: "), "{err}");
    assert!(err.message.contains(&format!("open() \"{log}\" failed")), "the error says why: {err}");
    assert!(err.message.contains("the last good file is back in place"), "{err}");
    let file = std::fs::read_to_string(site.path("served.conf")).unwrap();
    assert_eq!(parse(&file), ten_percent(), "the last good file is back:\n{file}");
    assert_eq!(platform.router().routes().await, ten_percent());
    assert_eq!(answer(url).await.as_deref(), Some("web 10 1"));

    // What a reload alone does with this config: exits 0, the refusal only in the log.
    let reload = Command::new("nginx").args(site.args()).args(["-s", "reload"]).output().unwrap();
    assert!(reload.status.success(), "{}", String::from_utf8_lossy(&reload.stderr));
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    // `nginx -t` logged its complaint there too: the master's line names its pid.
    let refused = format!("[emerg] {}#", nginx.child.id());
    loop {
        let errors = std::fs::read_to_string(site.path("error.log")).unwrap_or_default();
        if errors.lines().any(|l| l.contains(&refused) && l.contains(log)) {
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "the master's refusal is logged:\n{errors}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(answer(url).await.as_deref(), Some("web 10 1"), "the master kept its config");
}
