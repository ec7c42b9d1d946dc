//! The nginx router: canaryd owns one include file holding a weighted `upstream` block
//! per service and a small status server. To move traffic it writes the file atomically
//! (temporary file, then rename), runs `nginx -t`, and reloads nginx; a failed test or
//! reload puts the last good file back, so nginx never runs on an untested config. It
//! then reads the weights back from the status server until nginx serves the new
//! generation: what nginx serves is checked, not assumed.
//!
//! Weights: with `s` stable and `c` canary servers, a canary share of `w`% gives each
//! stable server `(100 - w)·c` and each canary server `w·s` (divided by their common
//! divisor), so the arms' totals are exactly `100 - w` to `w`. An arm at 0% is left out:
//! nginx refuses `weight=0`.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::Path;
use std::time::Duration;

use crate::config::{NginxSettings, ServiceSettings};
use crate::platform::{PlatformError, TrafficRouter};

/// Why the router could not move traffic. Traffic stays on the last good config.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct RouterError(pub String);

/// What the include file says: the generation and each service's canary weight.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Routes {
    /// Bumped by every write; the status server answers it back.
    pub generation: u64,
    /// Canary weight (percent) per service.
    pub weights: BTreeMap<String, u8>,
}

/// The upstreams of one service.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Upstreams {
    /// Service name (the nginx upstream's name).
    pub name: String,
    /// Stable servers.
    pub stable: Vec<String>,
    /// Canary servers.
    pub canary: Vec<String>,
}

impl From<&ServiceSettings> for Upstreams {
    fn from(s: &ServiceSettings) -> Self {
        Upstreams { name: s.name.clone(), stable: s.stable.clone(), canary: s.canary.clone() }
    }
}

fn gcd(a: u64, b: u64) -> u64 {
    if b == 0 { a } else { gcd(b, a % b) }
}

/// Per-server weights `(stable, canary)` for a canary share of `weight`%; 0 leaves the
/// arm out. At 0% the canary arm may have no server (and at 100% the stable arm): the
/// other arm then takes everything.
pub fn server_weights(weight: u8, stable: usize, canary: usize) -> (u64, u64) {
    let w = u64::from(weight.min(100));
    if w == 0 {
        return (1, 0);
    }
    if w == 100 {
        return (0, 1);
    }
    let (s, c) = ((100 - w) * canary as u64, w * stable as u64);
    let g = gcd(s, c).max(1);
    (s / g, c / g)
}

/// The status server's answer for a service: `name weight generation`.
fn status_line(name: &str, weight: u8, generation: u64) -> String {
    format!("{name} {weight} {generation}")
}

/// The include file for `routes`.
pub fn render(services: &[Upstreams], routes: &Routes, status_listen: std::net::SocketAddr) -> String {
    let mut out = String::from(
        "# Written by canaryd: one upstream per service and the status server it reads the\n\
         # served weights back from. canaryd rewrites this file; do not edit it.\n",
    );
    let _ = writeln!(out, "# canaryd generation {}", routes.generation);
    for s in services {
        let weight = routes.weights.get(&s.name).copied().unwrap_or(0);
        let _ = writeln!(out, "# canaryd weight {} {weight}", s.name);
    }
    for s in services {
        let weight = routes.weights.get(&s.name).copied().unwrap_or(0);
        let (stable, canary) = server_weights(weight, s.stable.len(), s.canary.len());
        let _ = writeln!(out, "\nupstream {} {{", s.name);
        for (servers, each, arm) in [(&s.stable, stable, "stable"), (&s.canary, canary, "canary")] {
            if each > 0 {
                for server in servers {
                    let _ = writeln!(out, "    server {server} weight={each};  # {arm}");
                }
            }
        }
        out.push_str("    keepalive 16;\n}\n");
    }
    let _ = writeln!(out, "\nserver {{\n    listen {status_listen};");
    for s in services {
        let weight = routes.weights.get(&s.name).copied().unwrap_or(0);
        let line = status_line(&s.name, weight, routes.generation);
        let _ = writeln!(
            out,
            "    location = /canaryd/{} {{ default_type text/plain; return 200 \"{line}\\n\"; }}",
            s.name
        );
    }
    out.push_str("}\n");
    out
}

/// Reads the generation and weights back from a file [`render`] wrote.
pub fn parse(text: &str) -> Routes {
    let mut routes = Routes::default();
    for line in text.lines() {
        let mut words = line.split_whitespace();
        match (words.next(), words.next(), words.next(), words.next(), words.next()) {
            (Some("#"), Some("canaryd"), Some("generation"), Some(g), None) => {
                routes.generation = g.parse().unwrap_or(0);
            }
            (Some("#"), Some("canaryd"), Some("weight"), Some(name), Some(w)) => {
                routes.weights.insert(name.to_string(), w.parse().unwrap_or(0));
            }
            _ => {}
        }
    }
    routes
}

/// Drives one nginx. Calls are serialised: each writes the whole file.
pub struct Router {
    settings: NginxSettings,
    services: Vec<Upstreams>,
    client: reqwest::Client,
    /// The routes of the last file nginx accepted and serves.
    good: tokio::sync::Mutex<Routes>,
}

impl Router {
    /// Opens the router over `settings.include`: the routes there are taken as the ones
    /// nginx serves. A missing file is written with every canary at 0% (nginx is not
    /// touched: it may not be running yet).
    pub fn open(settings: &NginxSettings, services: Vec<Upstreams>) -> Result<Router, RouterError> {
        let path = &settings.include;
        let routes = match std::fs::read_to_string(path) {
            Ok(text) => parse(&text),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                let routes = Routes::default();
                write(path, &render(&services, &routes, settings.status_listen))?;
                routes
            }
            Err(e) => return Err(RouterError(format!("{}: cannot read: {e}", path.display()))),
        };
        Ok(Router {
            settings: settings.clone(),
            services,
            client: reqwest::Client::new(),
            good: routes.into(),
        })
    }

    /// The routes nginx was last confirmed to serve (or found at start).
    pub async fn routes(&self) -> Routes {
        self.good.lock().await.clone()
    }

    /// Routes `weight`% of `service`'s traffic to its canary: write, test, reload, read
    /// back. On any failure before the reload took, the last good file is put back.
    pub async fn set(&self, service: &str, weight: u8) -> Result<(), RouterError> {
        let mut good = self.good.lock().await;
        if !self.services.iter().any(|s| s.name == service) {
            return Err(RouterError(format!("no service `{service}` in the settings")));
        }
        let mut next = good.clone();
        next.generation += 1;
        next.weights.insert(service.to_string(), weight);
        let path = &self.settings.include;
        let listen = self.settings.status_listen;
        write(path, &render(&self.services, &next, listen))?;
        let restore = |why: String| {
            let back = write(path, &render(&self.services, &good, listen));
            let restored = match back {
                Ok(()) => "the last good file is back in place".to_string(),
                Err(e) => format!("and the last good file could not be put back: {e}"),
            };
            RouterError(format!("{why}; traffic stays as it was ({restored})"))
        };
        // `nginx -s reload` refuses a config that does not parse, but what the master does
        // to apply one (open its log files, bind its listen addresses) fails after the
        // signal: reload exits 0, the master keeps its old config and says why only in
        // its error log. `nginx -t` does those too, so such a config is refused here,
        // with nginx's reason, and the last good file goes back.
        if let Err(e) = self.nginx(&["-t"]).await {
            return Err(restore(format!("nginx -t refused the new upstreams: {e}")));
        }
        if let Err(e) = self.nginx(&["-s", "reload"]).await {
            return Err(restore(format!("nginx reload failed: {e}")));
        }
        self.read_back(service, weight, next.generation).await?;
        *good = next;
        Ok(())
    }

    /// Runs `nginx <args> <extra>` within the timeout; `Err` carries its stderr.
    async fn nginx(&self, extra: &[&str]) -> Result<(), String> {
        let mut cmd = tokio::process::Command::new(&self.settings.binary);
        cmd.args(&self.settings.args).args(extra).stdin(std::process::Stdio::null()).kill_on_drop(true);
        let out = tokio::time::timeout(self.settings.timeout, cmd.output())
            .await
            .map_err(|_| format!("no exit within {}", humantime::format_duration(self.settings.timeout)))?
            .map_err(|e| format!("cannot run {}: {e}", self.settings.binary.display()))?;
        if out.status.success() {
            return Ok(());
        }
        let stderr = String::from_utf8_lossy(&out.stderr);
        // nginx -t ends with "test failed"; the line before says why.
        let why = stderr
            .lines()
            .filter(|l| l.contains("[emerg]") || l.contains("[error]") || l.contains("[alert]"))
            .map(|l| l.split_once("] ").map_or(l, |(_, rest)| rest).trim())
            .collect::<Vec<_>>()
            .join("; ");
        Err(if why.is_empty() { stderr.trim().to_string() } else { why })
    }

    /// Polls the status server until nginx answers `generation` for `service`.
    async fn read_back(&self, service: &str, weight: u8, generation: u64) -> Result<(), RouterError> {
        let url = format!("http://{}/canaryd/{service}", self.settings.status_listen);
        let expected = status_line(service, weight, generation);
        let deadline = tokio::time::Instant::now() + self.settings.timeout;
        loop {
            let last = match self.client.get(&url).timeout(Duration::from_secs(1)).send().await {
                Ok(r) => match r.text().await {
                    Ok(body) if body.trim() == expected => return Ok(()),
                    Ok(body) => format!("`{}`", body.trim()),
                    Err(e) => e.to_string(),
                },
                Err(e) => e.to_string(),
            };
            if tokio::time::Instant::now() >= deadline {
                return Err(RouterError(format!(
                    "nginx took the reload but does not serve it: {url} answers {last}, expected `{expected}` within {}",
                    humantime::format_duration(self.settings.timeout)
                )));
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

impl TrafficRouter for Router {
    async fn set_weight(&self, route: &str, weight: u8) -> Result<(), PlatformError> {
        self.set(route, weight).await.map_err(|e| PlatformError::failed(e.0))
    }

    /// Asks nginx's status server, so the answer is what nginx serves, not what was written.
    async fn weight(&self, route: &str) -> Result<u8, PlatformError> {
        let url = format!("http://{}/canaryd/{route}", self.settings.status_listen);
        let body = async { self.client.get(&url).timeout(self.settings.timeout).send().await?.text().await };
        let body = body.await.map_err(|e| PlatformError::failed(format!("{url}: {e}")))?;
        // `name weight generation`, as `status_line` writes it.
        let mut fields = body.split_whitespace();
        match (fields.next(), fields.next().map(str::parse::<u8>)) {
            (Some(name), Some(Ok(weight))) if name == route => Ok(weight),
            _ => Err(PlatformError::failed(format!(
                "{url} answers `{}`, not `{route} WEIGHT GENERATION`",
                body.trim()
            ))),
        }
    }

    async fn finalize(&self, route: &str) -> Result<(), PlatformError> {
        self.set_weight(route, 0).await
    }
}

fn write(path: &Path, text: &str) -> Result<(), RouterError> {
    crate::store::file::write_atomically(path, text.as_bytes()).map_err(|e| RouterError(e.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn arm_totals_are_the_weights() {
        for (w, s, c) in [(10u8, 2usize, 2usize), (50, 2, 2), (10, 3, 1), (33, 1, 4), (100, 2, 2), (0, 2, 2)]
        {
            let (each_s, each_c) = server_weights(w, s, c);
            let (total_s, total_c) = (each_s * s as u64, each_c * c as u64);
            // The canary's share of the summed weights, by cross-multiplication.
            assert_eq!(total_c * 100, u64::from(w) * (total_s + total_c), "w={w} s={s} c={c}");
        }
        assert_eq!(server_weights(10, 2, 2), (9, 1));
        assert_eq!(server_weights(0, 2, 2), (1, 0));
    }

    #[test]
    fn an_arm_without_servers_at_its_end_of_the_split_leaves_the_other_all_traffic() {
        // A canary that never came up has no server; at 0% the stable arm still serves.
        let services =
            vec![Upstreams { name: "web".into(), stable: vec!["127.0.0.1:1".into()], canary: vec![] }];
        let mut routes = Routes::default();
        routes.weights.insert("web".into(), 0);
        let text = render(&services, &routes, "127.0.0.1:9".parse().unwrap());
        assert!(text.contains("server 127.0.0.1:1 weight=1;  # stable"), "{text}");
        let services =
            vec![Upstreams { name: "web".into(), stable: vec![], canary: vec!["127.0.0.1:3".into()] }];
        routes.weights.insert("web".into(), 100);
        let text = render(&services, &routes, "127.0.0.1:9".parse().unwrap());
        assert!(text.contains("server 127.0.0.1:3 weight=1;  # canary"), "{text}");
    }

    #[test]
    fn render_leaves_out_an_arm_at_zero_and_parse_reads_it_back() {
        let services = vec![Upstreams {
            name: "web".into(),
            stable: vec!["127.0.0.1:1".into(), "127.0.0.1:2".into()],
            canary: vec!["127.0.0.1:3".into()],
        }];
        let listen = "127.0.0.1:9".parse().unwrap();
        let zero = Routes { generation: 3, weights: [("web".to_string(), 0)].into() };
        let text = render(&services, &zero, listen);
        assert!(!text.contains("127.0.0.1:3"), "{text}");
        assert!(text.contains("return 200 \"web 0 3\\n\""), "{text}");
        assert_eq!(parse(&text), zero);
        let all = Routes { generation: 4, weights: [("web".to_string(), 100)].into() };
        let text = render(&services, &all, listen);
        assert!(!text.contains("127.0.0.1:1 ") && text.contains("server 127.0.0.1:3 weight=1;"), "{text}");
        assert_eq!(parse(&text), all);
    }
}
