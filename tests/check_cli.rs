//! `canaryd check` end to end: the binary, real files, exit codes and messages.

use std::process::{Command, Output};

fn canaryd(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_canaryd"))
        .args(args)
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output()
        .expect("canaryd runs")
}

#[test]
fn shipped_policies_are_valid() {
    let out = canaryd(&["check", "policies/"]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(0), "{stdout}{}", String::from_utf8_lossy(&out.stderr));
    assert!(stdout.contains("4 policies valid"), "{stdout}");
}

#[test]
fn broken_policies_exit_2_with_every_problem_named() {
    let out = canaryd(&["check", "tests/data/invalid/"]);
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&out.stderr);
    let expected = [
        // steps not increasing, outside 1-100, not ending at 100
        "steps.yaml:7:46: CanaryPolicy shop/bad-steps: spec.traffic.steps[1]: weight 5 does not increase on the previous step (10)",
        "steps.yaml:7:49: CanaryPolicy shop/bad-steps: spec.traffic.steps[2]: weight 150 is outside 1-100",
        "steps.yaml:7:41: CanaryPolicy shop/bad-steps: spec.traffic.steps: the last step must be 100 (promotion)",
        // every problem of one policy, not only the first, each with its line and column
        "values.yaml:6:13: CanaryPolicy shop/bad-values: spec.selector: empty selector would match every Deployment",
        "values.yaml:7:21: CanaryPolicy shop/bad-values: spec.traffic.router: unknown router `carrier-pigeon`",
        "values.yaml:7:73: CanaryPolicy shop/bad-values: spec.traffic.stepDuration: `five minutes` is not a duration",
        "values.yaml:11:57: CanaryPolicy shop/bad-values: spec.analysis.metrics[0].test: unknown test `bayesian-magic`",
        "values.yaml:12:81: CanaryPolicy shop/bad-values: spec.analysis.metrics[1].alpha: 1.5 is outside (0, 1)",
        "values.yaml:17:25: CanaryPolicy shop/bad-values: spec.analysis.metrics[2].labels.route: value `/checkout\\\"} or vector(1) #` contains '\"', which could break the PromQL query",
        "values.yaml:19:16: CanaryPolicy shop/bad-values: spec.triggers[0].metric: `latency` is not a metric of spec.analysis.metrics",
        // duplicates within one file
        "duplicate.yaml:12:18: CanaryPolicy shop/twin: metadata.name: defined twice; the first definition is tests/data/invalid/duplicate.yaml#1",
        // syntax error with line and column
        "syntax.yaml:9:17: document 1: spec.traffic.steps: illegal placement of ':' indicator",
        // unknown field, in the second document, with its own line, and the key meant
        "typo.yaml:16:18: CanaryPolicy shop/typo: spec.analysis.failureLimt: unknown field `failureLimt` (did you mean `failureLimit`?)",
    ];
    for message in expected {
        assert!(stderr.contains(message), "missing: {message}\n--- stderr:\n{stderr}");
    }
    assert!(stderr.contains("14 problems; 2 policies valid"), "{stderr}");
}

#[test]
fn a_bad_policy_does_not_hide_the_good_ones_beside_it() {
    let out = canaryd(&["check", "tests/data/invalid/typo.yaml"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stdout).contains("ok: CanaryPolicy shop/fine"));
}

#[test]
fn missing_paths_and_usage_errors_exit_2() {
    let out = canaryd(&["check", "no/such/dir"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("no/such/dir: file: no such file or directory"));
    assert_eq!(canaryd(&["check"]).status.code(), Some(2));
    assert_eq!(canaryd(&["frobnicate"]).status.code(), Some(2));
}

#[test]
fn every_subcommand_has_help() {
    for sub in ["run", "check", "crd", "templates"] {
        let out = canaryd(&[sub, "--help"]);
        assert_eq!(out.status.code(), Some(0), "{sub}");
        assert!(String::from_utf8_lossy(&out.stdout).contains("Usage: canaryd"), "{sub}");
    }
}

#[test]
fn run_reports_invalid_settings_before_binding_and_exits_2() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("canaryd.toml");
    std::fs::write(&file, "[server]\nlisten = \"not-an-address\"\n").unwrap();
    let out = canaryd(&["run", "--config", file.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(2));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("server.listen: `not-an-address` is not an address")
    );
}

#[tokio::test]
async fn run_loads_settings_and_policies_and_serves_healthz() {
    let dir = tempfile::tempdir().unwrap();
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let file = dir.path().join("canaryd.toml");
    let policies = format!("{}/policies", env!("CARGO_MANIFEST_DIR"));
    std::fs::write(
        &file,
        format!("[server]\nlisten = \"127.0.0.1:{port}\"\n[policies]\npaths = [\"{policies}\"]\n"),
    )
    .unwrap();
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_canaryd"))
        .args(["run", "--config", file.to_str().unwrap()])
        .envs(MARKED_SECRETS[..3].iter().copied())
        .env("RUST_LOG", "debug")
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let url = format!("http://127.0.0.1:{port}/healthz");
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(30);
    let body = loop {
        if let Ok(r) = reqwest::get(&url).await {
            break r.text().await.unwrap();
        }
        assert!(tokio::time::Instant::now() < deadline, "/healthz never answered");
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    };
    child.kill().unwrap();
    let out = child.wait_with_output().unwrap();
    assert_eq!(body, "ok\n");
    let log = String::from_utf8_lossy(&out.stderr);
    assert!(log.contains("policy files loaded") && log.contains("policies=4"), "{log}");
    assert!(!log.contains(MARKER), "a secret reached the log:\n{log}");
}

#[test]
fn run_without_a_policy_path_says_so_and_how_to_set_one() {
    use std::io::BufRead;
    let empty = tempfile::tempdir().unwrap();
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let mut child = Command::new(env!("CARGO_BIN_EXE_canaryd"))
        .arg("run")
        .current_dir(empty.path())
        .env_clear()
        .env("CANARYD__SERVER__LISTEN", format!("127.0.0.1:{port}"))
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let stderr = child.stderr.take().unwrap();
    let (lines_tx, lines) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in std::io::BufReader::new(stderr).lines().map_while(Result::ok) {
            if lines_tx.send(line).is_err() {
                return;
            }
        }
    });
    // Every policy line comes before the count of the policy files loaded.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    let mut log = Vec::new();
    while !log.iter().any(|l: &String| l.contains("policy files loaded")) {
        let left = deadline.saturating_duration_since(std::time::Instant::now());
        match lines.recv_timeout(left) {
            Ok(line) => log.push(line),
            Err(_) => break,
        }
    }
    child.kill().unwrap();
    child.wait().unwrap();
    let log = log.join("\n");
    assert!(log.contains("policy files loaded"), "the policies were never loaded:\n{log}");
    let line = log.lines().find(|l| l.contains("no policy path exists")).unwrap_or_else(|| panic!("{log}"));
    assert!(line.contains("[policies] paths") && line.contains("CANARYD__POLICIES__PATHS"), "{line}");
    assert!(!log.contains("the other policies stay in force"), "there are no other policies:\n{log}");
}

/// A value planted in every secret-bearing setting; it must never be printed.
const MARKER: &str = "S3CRET-MARKER-7f3a";

/// Every secret-bearing setting, through the environment, holding the marker (the first
/// three form valid settings; the password alone is half of basic auth).
const MARKED_SECRETS: [(&str, &str); 4] = [
    ("CANARYD__SERVER__API_TOKEN", "api-S3CRET-MARKER-7f3a"),
    ("CANARYD__PROMETHEUS__BEARER_TOKEN", "bearer-S3CRET-MARKER-7f3a"),
    ("CANARYD__PROMETHEUS__HEADERS__X-SCOPE-ORGID", "tenant-S3CRET-MARKER-7f3a"),
    ("CANARYD__PROMETHEUS__BASIC_AUTH_PASSWORD", "pw-S3CRET-MARKER-7f3a"),
];

#[test]
fn no_error_path_prints_a_secret() {
    let dir = tempfile::tempdir().unwrap();
    let file = |name: &str, text: String| {
        let path = dir.path().join(name);
        std::fs::write(&path, text).unwrap();
        path.display().to_string()
    };
    let unterminated = file("syntax.toml", format!("[prometheus]\nbearer_token = \"{MARKER}\n"));
    let with_tokens = file(
        "tokens.toml",
        format!(
            "[server]\napi_token = \"{MARKER}\"\n[prometheus]\nbearer_token = \"{MARKER}\"\ntimeout = \"soon\"\n[log]\nformat = \"xml\"\n"
        ),
    );
    let misspelt = file("misspelt.toml", format!("[prometheus]\nbearer_tokn = \"{MARKER}\"\n"));
    type Case = (Vec<String>, Vec<(&'static str, String)>);
    let cases: Vec<Case> = vec![
        // A header given as a string instead of a map.
        (vec![], vec![("CANARYD__PROMETHEUS__HEADERS", format!("Authorization=Bearer {MARKER}"))]),
        // A TOML syntax error on the token's own line.
        (vec!["--config".into(), unterminated], vec![]),
        // A URL that does not parse, with credentials in it.
        (vec![], vec![("CANARYD__PROMETHEUS__URL", format!("http://ops:{MARKER}@[bad"))]),
        // Valid tokens beside invalid settings, and a misspelt token key.
        (vec!["--config".into(), with_tokens], vec![]),
        (vec!["--config".into(), misspelt], vec![]),
        // Basic auth half set.
        (vec![], vec![("CANARYD__PROMETHEUS__BASIC_AUTH_PASSWORD", MARKER.to_string())]),
    ];
    for (args, env) in cases {
        for command in ["check", "run"] {
            let mut cmd = Command::new(env!("CARGO_BIN_EXE_canaryd"));
            cmd.arg(command).args(&args).envs(MARKED_SECRETS).envs(env.iter().map(|(k, v)| (*k, v.as_str())));
            if command == "check" {
                cmd.arg("policies/");
            }
            let out = cmd.current_dir(env!("CARGO_MANIFEST_DIR")).output().unwrap();
            let printed =
                format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
            assert_eq!(out.status.code(), Some(2), "{command} {args:?} {env:?}: {printed}");
            assert!(printed.contains("invalid settings"), "{printed}");
            assert!(!printed.contains(MARKER), "{command} {args:?} {env:?} printed a secret:\n{printed}");
        }
    }
}

#[test]
fn an_interval_shorter_than_the_scrape_interval_is_refused_with_the_smallest_that_works() {
    // The shipped web-default policy analyses every 30 s: fine over a 30 s scrape.
    let out = canaryd(&["check", "--scrape-interval", "30s", "policies/web-default.yaml"]);
    assert_eq!(out.status.code(), Some(0), "{}", String::from_utf8_lossy(&out.stderr));
    // Over a 60 s scrape (Prometheus' own default), half its intervals would hold no scrape.
    let out = canaryd(&["check", "--scrape-interval", "60s", "policies/web-default.yaml"]);
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains(
            "web-default.yaml:29:15: CanaryPolicy shop/web-default: spec.analysis.interval: 30s is shorter than the 1m scrape interval"
        ) && stderr.contains("the smallest interval that works is 1m"),
        "{stderr}"
    );
}

#[test]
fn extra_labels_may_not_override_what_a_template_matches() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("p.yaml");
    std::fs::write(
        &file,
        "apiVersion: canaryd.io/v1alpha1\nkind: CanaryPolicy\nmetadata: {name: p, namespace: shop}\nspec:\n  selector: {matchLabels: {app: x}}\n  analysis:\n    metrics:\n      - {name: e, template: http-error-rate, test: sequential, labels: {code: \"200\", route: /checkout}}\n",
    )
    .unwrap();
    let out = canaryd(&["check", file.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains(
            "spec.analysis.metrics[0].labels.code: template http-error-rate already matches on `code`"
        ),
        "{stderr}"
    );
    assert!(!stderr.contains("labels.route"), "route is the template's to narrow: {stderr}");
}

#[test]
fn check_names_every_problem_of_a_document_at_once_with_the_key_or_value_meant_and_no_consequence() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("typos.yaml");
    std::fs::write(
        &file,
        "apiVersion: canaryd.io/v1alpha1
kind: CanaryPolicy
metadata: {name: Typos_Here, namespace: shop}
spec:
  selector: {matchLabel: {app: web}}
  traffic: {router: ngnix, stepDuraton: 5m}
  analysis:
    interval: 30
    metrics:
      - {name: errors, template: http-eror-rate, test: sequentail, alpha: 2}
",
    )
    .unwrap();
    let out = canaryd(&["check", file.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&out.stderr);
    let policy = "CanaryPolicy shop/Typos_Here";
    let expected = [
        format!("{policy}: metadata.name: `Typos_Here` is not a name Kubernetes accepts"),
        format!(
            "{policy}: spec.selector.matchLabel: unknown field `matchLabel` (did you mean `matchLabels`?)"
        ),
        format!(
            "{policy}: spec.traffic.stepDuraton: unknown field `stepDuraton` (did you mean `stepDuration`?)"
        ),
        format!("{policy}: spec.traffic.router: unknown router `ngnix` (did you mean `nginx`?)"),
        format!("{policy}: spec.analysis.interval: `30` is not a duration"),
        format!(
            "{policy}: spec.analysis.metrics[0].template: unknown template `http-eror-rate` (did you mean `http-error-rate`?)"
        ),
        format!(
            "{policy}: spec.analysis.metrics[0].test: unknown test `sequentail` (did you mean `sequential`?)"
        ),
        format!("{policy}: spec.analysis.metrics[0].alpha: 2 is outside (0, 1)"),
    ];
    for message in &expected {
        assert!(stderr.contains(message.as_str()), "missing: {message}\n--- stderr:\n{stderr}");
    }
    // Nothing else: no consequence of these (an empty selector, a 0s interval shorter than
    // a scrape, "only the sequential test takes alpha") is reported as a problem of its own.
    assert!(stderr.contains(&format!("{} problems; 0 policies valid", expected.len())), "{stderr}");
}

#[test]
fn silently_accepted_nonsense_is_refused_with_field_and_reason() {
    let out = canaryd(&["check", "tests/data/nonsense/"]);
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&out.stderr);
    for message in [
        "CanaryPolicy shop/bounds: spec.analysis.metrics[0]: min 0.5 is above max 0.1: every value would fail",
        "CanaryPolicy shop/bounds: spec.triggers[0].ratioAbove: -1 is not above 0",
        "CanaryPolicy shop/durations: spec.traffic.stepDuration: `500000y` is longer than 30days",
        "CanaryPolicy shop/durations: spec.analysis.interval: `1ns` is shorter than 1s",
        "CanaryPolicy shop/short-steps: spec.traffic.stepDuration: 10s is shorter than the analysis interval (30s)",
        "CanaryPolicy shop/short-steps: spec.analysis.metrics[0].name: `err\\u{1b}[31mors` contains the control character '\\u{1b}'",
        "CanaryPolicy shop/Not_A_Name: metadata.name: `Not_A_Name` is not a name Kubernetes accepts",
        // A policy on the document-start line is read, not skipped.
        "CanaryPolicy Bad.Namespace/inline: metadata.namespace: `Bad.Namespace` is not a name Kubernetes accepts",
        "kind: kind List (the output of `kubectl get -o yaml`) is not read",
        "CanaryPolicy shop/lenient: spec.selector.matchExpression: unknown field `matchExpression` (did you mean `matchExpressions`?); expected one of matchExpressions, matchLabels",
        "CanaryPolicy shop/lenient: spec.traffic.steps[0]: \"10\" is a string; write the number itself",
        "spec.analysis.metrics[0].alpha: `.nan` is not a number a policy may hold (NaN and infinities are refused)",
        "`metadata` appears twice in the same mapping",
        "CanaryPolicy shop/renamed: spec.analysis.metrics[0].labels.__name__: template http-error-rate already matches on `__name__`",
    ] {
        assert!(stderr.contains(message), "missing: {message}\n--- stderr:\n{stderr}");
    }
    // The escape reaches the terminal escaped, never raw.
    assert!(!stderr.contains('\u{1b}'), "{stderr}");
}

#[test]
fn gate_and_bake_problems_name_the_file_the_policy_the_field_and_the_reason() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("gated.yaml");
    std::fs::write(
        &file,
        "apiVersion: canaryd.io/v1alpha1
kind: CanaryPolicy
metadata: {name: gated, namespace: shop}
spec:
  selector: {matchLabels: {app: web}}
  traffic:
    steps: [10, 50, 100]
    gates:
      - {at: 100, type: approval}
      - {at: 10, type: webhook, url: 'ftp://ci.example.com/gate'}
    gateTimeout: 10s
  analysis:
    interval: 30s
    bake: 10s
    metrics:
      - {name: errors, template: http-error-rate, test: sequential}
",
    )
    .unwrap();
    let out = canaryd(&["check", file.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&out.stderr);
    let at = |line_col: &str| format!("{}:{line_col}: CanaryPolicy shop/gated: ", file.display());
    // Each at the line and column of the value in the file above.
    for message in [
        format!("{}spec.traffic.gates[0].at: 100 is the last step, the promotion itself", at("9:14")),
        format!(
            "{}spec.traffic.gates[1].url: `ftp://ci.example.com/gate` is not an http(s) URL (scheme ftp)",
            at("10:38")
        ),
        format!(
            "{}spec.traffic.gateTimeout: `10s` is shorter than the analysis interval: a gate is asked once per interval",
            at("11:18")
        ),
        format!(
            "{}spec.analysis.bake: `10s` is shorter than the analysis interval: the bake would analyse nothing",
            at("14:11")
        ),
        format!("{}spec.analysis.bake: nothing would watch the bake", at("14:11")),
    ] {
        assert!(stderr.contains(&message), "missing: {message}\n--- stderr:\n{stderr}");
    }
    assert!(stderr.contains("5 problems; 0 policies valid"), "{stderr}");
}

#[test]
fn a_directory_without_policies_is_an_error_not_a_pass() {
    let empty = tempfile::tempdir().unwrap();
    std::fs::write(empty.path().join("README.md"), "not a policy").unwrap();
    let out = canaryd(&["check", empty.path().to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("error: no policies found in"), "{stderr}");
    let none = tempfile::tempdir().unwrap();
    let out = canaryd(&["check", none.path().to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(2));
}

/// Runs `canaryd check` on `dir`, failing (not hanging) if it takes longer than 30 s.
fn check_within_deadline(dir: &std::path::Path) -> (Option<i32>, String, String) {
    use std::process::Stdio;
    let mut child = Command::new(env!("CARGO_BIN_EXE_canaryd"))
        .args(["check", dir.to_str().unwrap()])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    while child.try_wait().unwrap().is_none() {
        if std::time::Instant::now() > deadline {
            let _ = child.kill();
            panic!("canaryd check on {} did not finish within 30 s", dir.display());
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    let out = child.wait_with_output().unwrap();
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stdout).into(),
        String::from_utf8_lossy(&out.stderr).into(),
    )
}

#[test]
fn links_back_to_the_directory_pipes_and_devices_neither_hang_nor_duplicate() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::copy("policies/web-default.yaml", dir.path().join("web.yaml")).unwrap();
    std::os::unix::fs::symlink(".", dir.path().join("a")).unwrap();
    std::os::unix::fs::symlink(".", dir.path().join("b")).unwrap();
    std::os::unix::fs::symlink("/dev/zero", dir.path().join("zero.yaml")).unwrap();
    let fifo = dir.path().join("pipe.yaml");
    assert!(Command::new("mkfifo").arg(&fifo).status().unwrap().success());
    let (code, stdout, stderr) = check_within_deadline(dir.path());
    assert_eq!(code, Some(2), "{stdout}{stderr}");
    assert!(stdout.contains("ok: CanaryPolicy shop/web-default"), "{stdout}");
    assert!(!stderr.contains("defined twice"), "{stderr}");
    assert!(stderr.contains("zero.yaml: file: not a regular file"), "{stderr}");
    assert!(stderr.contains("pipe.yaml: file: not a regular file"), "{stderr}");
    assert!(stderr.contains("2 problems; 1 policy valid"), "{stderr}");
}

#[test]
fn a_configmap_mount_is_read_once_and_oversized_files_are_refused() {
    // Kubernetes mounts a ConfigMap as links to a hidden `..data` directory.
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("..2026_11_23_10_00_00.1");
    std::fs::create_dir(&data).unwrap();
    std::fs::copy("policies/web-default.yaml", data.join("web.yaml")).unwrap();
    std::os::unix::fs::symlink("..2026_11_23_10_00_00.1", dir.path().join("..data")).unwrap();
    std::os::unix::fs::symlink("..data/web.yaml", dir.path().join("web.yaml")).unwrap();
    let (code, stdout, stderr) = check_within_deadline(dir.path());
    assert_eq!(code, Some(0), "{stdout}{stderr}");
    assert!(stdout.contains("1 policy valid"), "{stdout}");
    std::fs::write(dir.path().join("huge.yaml"), vec![b'#'; 2 * 1024 * 1024]).unwrap();
    let (code, _, stderr) = check_within_deadline(dir.path());
    assert_eq!(code, Some(2));
    assert!(
        stderr.contains("huge.yaml: file: 2097152 bytes is more than a policy file may hold (1048576)"),
        "{stderr}"
    );
}

#[test]
fn templates_verbose_shows_each_templates_promql_over_short_lines() {
    let out = canaryd(&["templates", "--verbose"]);
    assert_eq!(out.status.code(), Some(0));
    let stdout = String::from_utf8_lossy(&out.stdout);
    let long: Vec<&str> = stdout.lines().filter(|l| l.chars().count() > 120).collect();
    assert!(long.is_empty(), "lines over 120 characters: {long:#?}");
    // A template's line, its query's indented lines, a blank line.
    let blocks: Vec<Vec<&str>> =
        stdout.split("\n\n").map(|b| b.lines().collect::<Vec<_>>()).filter(|b| !b.is_empty()).collect();
    let templates = canaryd::source::templates::TEMPLATES;
    assert_eq!(blocks.len(), templates.len(), "{stdout}");
    for (t, block) in templates.iter().zip(&blocks) {
        assert!(block[0].starts_with(t.name), "{block:?}");
        assert!(block[1..].iter().all(|l| l.starts_with("  ")), "{block:#?}");
        let shown = block[1..].iter().map(|l| l.trim()).collect::<Vec<_>>().join(" ");
        let sent = canaryd::source::batch::example_query(t);
        assert!(sent.chars().count() < 120 || block.len() > 2, "{}: one line of {}", t.name, sent.len());
        let parse =
            |q: &str| promql_parser::parser::parse(q).unwrap_or_else(|e| panic!("{}: {e}: {q}", t.name));
        assert_eq!(parse(&shown), parse(&sent), "{}: the query shown is not the query sent", t.name);
        assert!(shown.contains("web"), "{shown}");
    }
    assert!(stdout.contains("last_over_time(http_requests_total{workload=~\"web|web-primary\""), "{stdout}");
}

/// Polls `url` until it answers `status`, within 30 s.
async fn wait_for_status(url: &str, status: u16) {
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(30);
    loop {
        if reqwest::get(url).await.is_ok_and(|r| r.status().as_u16() == status) {
            return;
        }
        assert!(tokio::time::Instant::now() < deadline, "{url} never answered {status}");
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
}

fn signal(child: &std::process::Child, name: &str) {
    let sent = Command::new("kill").args([&format!("-{name}"), &child.id().to_string()]).status().unwrap();
    assert!(sent.success());
}

#[tokio::test]
async fn the_daemon_is_ready_only_with_policies_reloads_on_sighup_and_stops_on_sigterm() {
    let dir = tempfile::tempdir().unwrap();
    let policies = dir.path().join("policies");
    std::fs::create_dir(&policies).unwrap();
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let file = dir.path().join("canaryd.toml");
    // The local platform with one service: its loop runs without nginx or Prometheus
    // being reached, as long as no rollout starts.
    let d = dir.path().display();
    std::fs::write(
        &file,
        format!(
            "[server]\nlisten = \"127.0.0.1:{port}\"\n[policies]\npaths = [\"{}\"]\n\
             [daemon]\nstate_dir = \"{d}/state\"\nrecords_dir = \"{d}/records\"\n\
             [nginx]\ninclude = \"{d}/canaryd-upstreams.conf\"\n\
             [[services]]\nname = \"web\"\nnamespace = \"local\"\nlabels = {{ app = \"web\" }}\n\
             stable = [\"127.0.0.1:1\"]\ncanary = [\"127.0.0.1:2\"]\n\
             stable_workload = \"web\"\ncanary_workload = \"web-canary\"\n\
             [services.hooks]\npromote = {{ command = [\"true\"], timeout = \"5s\" }}\n",
            policies.display()
        ),
    )
    .unwrap();
    let mut child = Command::new(env!("CARGO_BIN_EXE_canaryd"))
        .args(["run", "--config", file.to_str().unwrap()])
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let base = format!("http://127.0.0.1:{port}");
    wait_for_status(&format!("{base}/healthz"), 200).await;
    // Alive, but with no policy there is nothing it can do: not ready.
    wait_for_status(&format!("{base}/readyz"), 503).await;
    // The local platform routes with nginx: the shipped policy, on its router.
    let policy = std::fs::read_to_string("policies/web-default.yaml").unwrap();
    assert!(policy.contains("router: gateway-api"), "the shipped policy names its router");
    std::fs::write(policies.join("web.yaml"), policy.replace("router: gateway-api", "router: nginx"))
        .unwrap();
    signal(&child, "HUP");
    wait_for_status(&format!("{base}/readyz"), 200).await;
    signal(&child, "TERM");
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        assert!(std::time::Instant::now() < deadline, "SIGTERM did not stop the daemon");
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    };
    let out = child.wait_with_output().unwrap();
    let log = String::from_utf8_lossy(&out.stderr);
    assert_eq!(status.code(), Some(0), "{log}");
    assert!(log.contains("no valid policy loaded: not ready"), "{log}");
    assert!(log.contains("reloading policies") && log.contains("policies=1"), "{log}");
    assert!(log.contains("shutting down") && log.contains("SIGTERM") && log.contains("stopped"), "{log}");
}

#[tokio::test]
async fn without_a_platform_the_daemon_is_never_ready_and_its_api_names_what_is_missing() {
    let dir = tempfile::tempdir().unwrap();
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let file = dir.path().join("canaryd.toml");
    // A valid policy, but no [[services]]: nothing can run a rollout.
    std::fs::write(
        &file,
        format!(
            "[server]\nlisten = \"127.0.0.1:{port}\"\n[policies]\npaths = [\"policies/web-default.yaml\"]\n"
        ),
    )
    .unwrap();
    let mut child = Command::new(env!("CARGO_BIN_EXE_canaryd"))
        .args(["run", "--config", file.to_str().unwrap()])
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let base = format!("http://127.0.0.1:{port}");
    wait_for_status(&format!("{base}/healthz"), 200).await;
    let ready = reqwest::get(format!("{base}/readyz")).await.unwrap();
    assert_eq!(ready.status().as_u16(), 503);
    let text = ready.text().await.unwrap();
    assert!(text.contains("no platform") && text.contains("[[services]]"), "{text}");
    let api = reqwest::get(format!("{base}/api/v1/rollouts")).await.unwrap();
    assert_eq!(api.status().as_u16(), 503);
    let text = api.text().await.unwrap();
    assert!(text.contains("[[services]]"), "{text}");
    child.kill().unwrap();
    child.wait().unwrap();
}

#[test]
fn check_shows_how_each_sequential_metrics_alpha_is_split_never_changing_it_unseen() {
    let out = canaryd(&["check", "policies/web-default.yaml"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let stdout = String::from_utf8_lossy(&out.stdout);
    // web-default states alpha 0.01 on each of its five sequential metrics: 0.01 / 5 each.
    assert!(
        stdout.contains("0.01, 0.01, 0.01, 0.01, 0.01 stated, split over 5 sequential metrics"),
        "{stdout}"
    );
    assert!(stdout.contains("errors-vs-baseline at 2.000e-3"), "{stdout}");
    assert!(stdout.contains("together they roll back at most 0.010 of healthy rollouts"), "{stdout}");
}

#[test]
fn a_replica_router_step_two_primary_replicas_cannot_serve_is_refused_with_the_nearest_shares() {
    let dir = tempfile::tempdir().expect("a temp dir");
    let path = dir.path().join("no-mesh.yaml");
    std::fs::write(
        &path,
        "apiVersion: canaryd.io/v1alpha1\nkind: CanaryPolicy\nmetadata: {name: web, namespace: shop}\nspec:\n  selector: {matchLabels: {app: web}}\n  traffic: {router: replica, steps: [10, 50, 100]}\n  analysis:\n    metrics: [{name: errors, template: http-error-rate, test: sequential}]\n",
    )
    .expect("policy");
    let file = path.to_str().expect("utf-8");
    let out = canaryd(&["check", "--replicas", "2", file]);
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&out.stderr);
    // By hand: 1 canary pod beside 2 primary ones is 1/3; none is 0. Within ±5 points
    // 10% needs 1 / (1 + 6) = 14.3%, so 6 primary replicas.
    for part in [
        "CanaryPolicy shop/web: spec.traffic.steps[0]: 10% cannot be served by replica ratio with 2 primary replicas within ±5 points",
        "the nearest shares are 0% (no canary pod) and 33.3% (1 canary pod beside 2)",
        "10% needs at least 6 primary replicas",
    ] {
        assert!(stderr.contains(part), "missing: {part}\n--- stderr:\n{stderr}");
    }
    assert!(!stderr.contains("steps[1]"), "50% is 2 canary pods beside 2: {stderr}");
    // With 9 primary replicas, 10% is 1 pod of 10; the split of each step is shown.
    let out = canaryd(&["check", "--replicas", "9", file]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(0), "{stdout}{}", String::from_utf8_lossy(&out.stderr));
    assert!(
        stdout.contains("10% → 1 canary beside 9 primary (10%), 50% → 9 canary beside 9 primary (50%)"),
        "{stdout}"
    );
    // Without a count, the fewest that serve every step.
    let out = canaryd(&["check", file]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        stdout.contains("the fewest primary replicas that serve every step within ±5 points: 6"),
        "{stdout}"
    );
}
