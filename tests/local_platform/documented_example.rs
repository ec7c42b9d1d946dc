//! The local platform as a new user sets it up from the docs alone: the files of
//! docs/local-platform.md's complete example (servers, Prometheus' scrape config, nginx's
//! `http` block, canaryd's settings and policy) and the README's "your own service"
//! commands, run in the order the docs give, until a rollout started through the CLI is
//! promoted and nginx serves the new revision from the stable servers.
//!
//! What the test changes in the documented text, and nothing else (each change must find
//! its text, or the test fails: the docs moved on without it):
//! - the ports (8080, 8081, …) become free loopback ports, and the system paths (`/etc/`,
//!   `/var/`, `/srv/`) move under a temporary directory;
//! - the durations are scaled (a 5-minute step to 20 s, Prometheus scraping every 1 s
//!   rather than 15 s), so that a promotion takes about a minute;
//! - nginx gets its own pid file, error log and temporary directories, and no access log,
//!   so that it runs beside any system nginx, as any user.
//!
//! The promote hook, `/srv/deploy-stable` in the example, is the user's own deploy: here a
//! script that restarts each stable server on the revision canaryd names.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use canaryd::demo::{terminate, wait_until};

use super::support::prometheus::free_port;
use super::support::stack::{ONE_STACK_AT_A_TIME, ROLLOUT, binaries};

fn read(path: &str) -> String {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join(path);
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// The fenced blocks of `lang` in `doc`, in order.
fn blocks<'a>(doc: &'a str, lang: &str) -> Vec<&'a str> {
    doc.split(&format!("```{lang}\n")).skip(1).map(|b| b.split("```").next().unwrap()).collect()
}

/// Replacements made in one pass over a text (a replacement's output is never read again),
/// counting how often each one matched.
struct Substitutions {
    pairs: Vec<(String, String, usize)>,
}

impl Substitutions {
    fn apply(&mut self, text: &str) -> String {
        let mut out = String::with_capacity(text.len());
        let mut rest = text;
        'next: while let Some(c) = rest.chars().next() {
            for (from, to, used) in &mut self.pairs {
                if let Some(after) = rest.strip_prefix(from.as_str()) {
                    out.push_str(to);
                    *used += 1;
                    rest = after;
                    continue 'next;
                }
            }
            out.push(c);
            rest = &rest[c.len_utf8()..];
        }
        out
    }

    /// Fails naming each replacement that found nothing to replace.
    fn all_used(&self) {
        let unused: Vec<&str> = self.pairs.iter().filter(|p| p.2 == 0).map(|p| p.0.as_str()).collect();
        assert!(unused.is_empty(), "the docs no longer hold {unused:?}: update this test with them");
    }
}

/// The processes the test started, and the pid files of those a script started; all are
/// stopped on drop, whatever the test's outcome.
struct Processes {
    children: Vec<std::process::Child>,
    pid_files: Vec<PathBuf>,
}

impl Drop for Processes {
    fn drop(&mut self) {
        for child in self.children.iter_mut().rev() {
            terminate(child);
        }
        for file in &self.pid_files {
            if let Some(pid) = std::fs::read_to_string(file).ok().and_then(|p| p.trim().parse::<i32>().ok()) {
                // SIGTERM: nginx's master stops its workers; a demo server just exits.
                let _ = Command::new("kill").arg(pid.to_string()).status();
            }
        }
    }
}

/// The README's "your own service" commands, each as its words.
fn readme_commands(change: &mut Substitutions) -> Vec<Vec<String>> {
    let readme = read("README.md");
    let section = readme.split("**Your own service.**").nth(1).expect("README has \"Your own service\"");
    let commands: Vec<Vec<String>> = change
        .apply(blocks(section, "sh")[0])
        .lines()
        .map(|l| l.split('#').next().unwrap().split_whitespace().map(String::from).collect())
        .filter(|words: &Vec<String>| !words.is_empty())
        .collect();
    assert!(commands.len() >= 5, "the README's commands: {commands:?}");
    commands
}

async fn get(client: &reqwest::Client, url: &str) -> Option<String> {
    let r = client.get(url).send().await.ok()?;
    if !r.status().is_success() {
        return None;
    }
    r.text().await.ok()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_documented_example_set_up_with_the_readme_commands_promotes_a_rollout_started_through_the_cli() {
    let _turn = ONE_STACK_AT_A_TIME.lock().await;
    let doc = read("docs/local-platform.md");
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path().display().to_string();
    let port = || free_port().to_string();
    // nginx's front, the two stable servers and the canary, Prometheus, canaryd's API, and
    // the status server canaryd reads nginx's weights from.
    let (front, servers, prometheus, api, status) =
        (port(), [port(), port(), port()], port(), port(), port());
    let nginx_own_args = format!(r#""-e", "{d}/nginx-error.log", "-g", "pid {d}/nginx.pid;", "-c", "#);
    let nginx_own_http = format!(
        "http {{\n    access_log off;\n{}",
        ["client_body", "proxy", "fastcgi", "uwsgi", "scgi"]
            .iter()
            .map(|t| format!("    {t}_temp_path {d}/nginx-tmp/{t};\n"))
            .collect::<String>()
    );
    let pairs = [
        ("8080", front.clone()),
        ("8081", servers[0].clone()),
        ("8082", servers[1].clone()),
        ("8083", servers[2].clone()),
        ("9090", prometheus.clone()),
        ("8480", api.clone()),
        ("8482", status.clone()),
        ("/etc/", format!("{d}/etc/")),
        ("/var/", format!("{d}/var/")),
        ("/srv/", format!("{d}/srv/")),
        ("stepDuration: 5m", "stepDuration: 20s".into()),
        ("scrape_interval: 15s", "scrape_interval: 1s".into()),
        ("scrape_interval = \"15s\"", "scrape_interval = \"1s\"".into()),
        ("interval: 30s", "interval: 5s".into()),
        ("http {\n", nginx_own_http),
        (r#""-c", "#, nginx_own_args),
    ];
    let mut change = Substitutions { pairs: pairs.into_iter().map(|(f, t)| (f.to_string(), t, 0)).collect() };

    // The files, where the example puts them (under the temporary directory).
    let files = [
        (blocks(&doc, "nginx")[0], "etc/nginx/nginx.conf"),
        (blocks(&doc, "yaml")[0], "prometheus.yml"),
        (blocks(&doc, "toml")[0], "etc/canaryd/canaryd.toml"),
        (blocks(&doc, "yaml")[1], "etc/canaryd/policies/web.yaml"),
    ];
    for (text, path) in files {
        let path = dir.path().join(path);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(&path, change.apply(text)).unwrap();
    }
    std::fs::create_dir_all(dir.path().join("nginx-tmp")).unwrap();
    std::fs::create_dir_all(dir.path().join("srv")).unwrap();
    let app = binaries().demo_app.display().to_string();
    // The user's deploy, the promote hook: each stable server restarted on the revision.
    let deploy = format!(
        "#!/bin/sh\nset -e\nfor port in {s0} {s1}; do\n  kill \"$(cat {d}/server-$port.pid)\"\n  \
         i=0; while curl -s -o /dev/null http://127.0.0.1:$port/healthz && [ $i -lt 50 ]; do sleep 0.1; i=$((i+1)); done\n  \
         nohup {app} --listen 127.0.0.1:$port --version \"$CANARYD_REVISION\" >/dev/null 2>&1 &\n  \
         echo $! > {d}/server-$port.pid\ndone\n",
        s0 = servers[0],
        s1 = servers[1],
    );
    let hook = dir.path().join("srv/deploy-stable");
    std::fs::write(&hook, deploy).unwrap();
    std::fs::set_permissions(&hook, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();

    let mut running = Processes {
        children: Vec::new(),
        pid_files: servers.iter().map(|p| dir.path().join(format!("server-{p}.pid"))).collect(),
    };
    running.pid_files.push(dir.path().join("nginx.pid"));
    let client = reqwest::Client::builder().timeout(Duration::from_secs(5)).build().unwrap();
    let up = |url: String, what: &'static str| {
        let client = client.clone();
        async move {
            let waited =
                wait_until(Duration::from_secs(60), what, || async { get(&client, &url).await.is_some() });
            waited.await.unwrap_or_else(|e| panic!("{e}"));
        }
    };

    // 1. The stable and canary servers, as the docs start them.
    let server_words = doc
        .split("run\n`canaryd-demo-app` (built by `cargo build --release`) as each server:\n`")
        .nth(1)
        .and_then(|rest| rest.split('`').next())
        .expect("the docs say how to start a server");
    let server_words = change.apply(server_words);
    let mut words = server_words.split_whitespace().skip(1).map(String::from).collect::<Vec<_>>();
    assert_eq!(words[..2], ["--listen".to_string(), format!("127.0.0.1:{}", servers[0])], "{server_words}");
    for (server, version) in servers.iter().zip(["v1", "v1", "v2"]) {
        words[1] = format!("127.0.0.1:{server}");
        let at = words.iter().position(|w| w == "--version").expect("a --version");
        words[at + 1] = version.into();
        let child =
            Command::new(&app).args(&words).stdout(Stdio::null()).stderr(Stdio::null()).spawn().unwrap();
        std::fs::write(dir.path().join(format!("server-{server}.pid")), child.id().to_string()).unwrap();
        // Held to be reaped: the promote hook stops the stable ones and starts their successors.
        running.children.push(child);
        up(format!("http://127.0.0.1:{server}/healthz"), "a server answers").await;
    }

    // 2. Prometheus, scraping them.
    let prometheus_log = std::fs::File::create(dir.path().join("prometheus.log")).unwrap();
    running.children.push(
        Command::new("prometheus")
            .arg(format!("--config.file={d}/prometheus.yml"))
            .arg(format!("--storage.tsdb.path={d}/prometheus-data"))
            .arg(format!("--web.listen-address=127.0.0.1:{prometheus}"))
            .stdout(Stdio::null())
            .stderr(prometheus_log)
            .spawn()
            .expect("prometheus starts (scripts/install-deps installs it)"),
    );
    up(format!("http://127.0.0.1:{prometheus}/-/ready"), "Prometheus is ready").await;

    // 3–5. The README's commands, in the settings' directory.
    let settings_dir = dir.path().join("etc/canaryd");
    let canaryd_log = dir.path().join("canaryd.log");
    let log = || std::fs::read_to_string(&canaryd_log).unwrap_or_default();
    let command = |words: &[String]| {
        let mut c = match words[0].as_str() {
            "canaryd" => Command::new(binaries().canaryd),
            "nginx" => {
                let mut c = Command::new("nginx");
                c.arg("-e").arg(format!("{d}/nginx-error.log")).arg("-g").arg(format!("pid {d}/nginx.pid;"));
                c
            }
            other => panic!("the README runs `{other}`, which this test does not know"),
        };
        c.args(&words[1..]);
        c.current_dir(&settings_dir).env_remove("CANARYD_CONFIG").env_remove("CANARYD_TOKEN");
        c
    };
    let mut watched = None;
    for words in readme_commands(&mut change) {
        let line = words.join(" ");
        match words.get(1).map(String::as_str) {
            Some("run") => {
                let file = std::fs::File::create(&canaryd_log).unwrap();
                let child = command(&words).stdout(file.try_clone().unwrap()).stderr(file).spawn().unwrap();
                running.children.push(child);
                up(format!("http://127.0.0.1:{api}/readyz"), "canaryd is ready").await;
                let include = dir.path().join("etc/nginx/canaryd.conf");
                assert!(include.exists(), "canaryd wrote nginx's include file; its log:\n{}", log());
            }
            Some("rollout") if words.contains(&"watch".to_string()) => {
                let mut watch = tokio::process::Command::from(command(&words));
                let output = tokio::time::timeout(ROLLOUT, watch.output()).await;
                let output =
                    output.unwrap_or_else(|_| panic!("`{line}` did not end; canaryd's log:\n{}", log()));
                watched = Some((line, output.unwrap()));
            }
            _ => {
                let output = command(&words).output().unwrap();
                let said = format!(
                    "{}{}",
                    String::from_utf8_lossy(&output.stdout),
                    String::from_utf8_lossy(&output.stderr)
                );
                assert!(output.status.success(), "`{line}` failed: {said}\ncanaryd's log:\n{}", log());
                if words[0] == "nginx" {
                    up(format!("http://127.0.0.1:{front}/"), "nginx serves the stable servers").await;
                    // The load a real service has, through nginx.
                    let wrk = Command::new("wrk")
                        .args(["-t1", "-c8", "-d1h", &format!("http://127.0.0.1:{front}/")])
                        .stdout(Stdio::null())
                        .stderr(Stdio::null())
                        .spawn()
                        .expect("wrk starts (scripts/install-deps installs it)");
                    running.children.push(wrk);
                }
            }
        }
    }
    change.all_used();

    let (line, output) = watched.expect("the README watches the rollout");
    let said = String::from_utf8_lossy(&output.stdout).to_string();
    assert!(
        output.status.success(),
        "`{line}` says the rollout was not promoted:\n{said}\ncanaryd's log:\n{}",
        log()
    );
    assert!(said.contains("promoted"), "{said}");

    // The promote hook moved the stable servers to v2, and nginx sends them everything.
    let mut answers = std::collections::BTreeMap::new();
    for _ in 0..20 {
        let version = get(&client, &format!("http://127.0.0.1:{front}/")).await.unwrap_or_default();
        *answers.entry(version.trim().to_string()).or_insert(0) += 1;
    }
    assert_eq!(answers, [("v2".to_string(), 20)].into(), "who answered through nginx after the promotion");
    let served = get(&client, &format!("http://127.0.0.1:{status}/canaryd/web")).await.unwrap_or_default();
    assert!(served.starts_with("web 0 "), "nginx's served weight for the canary after promotion: {served}");
}
