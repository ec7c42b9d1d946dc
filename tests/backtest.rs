//! `canaryd backtest` on the shipped recorded scenarios, through the binary.

use std::process::{Command, Output};

fn backtest(data: &str, extra: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_canaryd"))
        .args(["backtest", "--policy", "tests/data/backtest/policy.yaml", "--data", data])
        .args(extra)
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output()
        .expect("canaryd runs")
}

fn json(scenario: &str) -> (Option<i32>, serde_json::Value) {
    let out = backtest(&format!("tests/data/backtest/{scenario}.json"), &["--format", "json"]);
    let value = serde_json::from_slice(&out.stdout).expect("JSON output");
    (out.status.code(), value)
}

/// The last decision of the analysis (the platform finishing a rollback follows it).
fn last_decision(v: &serde_json::Value) -> &serde_json::Value {
    let decisions = v["record"]["decisions"].as_array().unwrap();
    decisions.iter().rev().find(|d| d["action"] != "rollback-finished").unwrap()
}

#[test]
fn a_good_canary_is_promoted() {
    let (code, v) = json("good");
    assert_eq!(code, Some(0));
    assert_eq!(v["outcome"], "promoted");
    assert_eq!(v["record"]["maxWeight"], 100);
    assert_eq!(last_decision(&v)["action"], "promoted");
}

#[test]
fn a_shipped_promotion_rests_on_no_interval_recorded_at_another_split() {
    let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/data/backtest");
    let mut promoted = Vec::new();
    for entry in std::fs::read_dir(dir).unwrap() {
        let name = entry.unwrap().file_name().to_string_lossy().into_owned();
        let Some(scenario) = name.strip_suffix(".json") else { continue };
        let (_, v) = json(scenario);
        if v["outcome"] != "promoted" {
            continue;
        }
        // The replay stops at the promotion: every interval of the timeline led to it.
        let split: Vec<&serde_json::Value> =
            v["timeline"].as_array().unwrap().iter().filter(|i| i.get("mismatch").is_some()).collect();
        assert!(split.is_empty(), "{name} is promoted on data the policy would not have seen: {split:?}");
        promoted.push(scenario.to_string());
    }
    assert!(promoted.contains(&"good".to_string()), "good.json is promoted: {promoted:?}");
}

#[test]
fn doubled_errors_are_rolled_back_with_metric_p_value_and_counts() {
    let (code, v) = json("error-2x");
    assert_eq!(code, Some(1));
    assert_eq!(v["outcome"], "rolled-back");
    let decision = last_decision(&v);
    assert_eq!(decision["action"], "rolled-back");
    let verdict = decision["evidence"].as_array().unwrap().iter().find(|e| e["metric"] == "errors").unwrap();
    assert_eq!(verdict["outcome"], "fail");
    let evidence = &verdict["evidence"];
    let p = evidence["pValue"].as_f64().unwrap();
    assert!(p <= evidence["bound"].as_f64().unwrap(), "p = {p}");
    let cumulative = &evidence["cumulative"];
    assert!(cumulative["canaryEvents"].as_f64().unwrap() > 0.0);
    assert!(cumulative["baselineRequests"].as_f64().unwrap() > 0.0);
    let reason = decision["reason"].as_str().unwrap();
    assert!(reason.starts_with("errors: regression: canary "), "{reason}");
    assert!(reason.contains("always-valid p = "), "{reason}");
    // The timeline shows the same verdict on the last interval.
    let last = v["timeline"].as_array().unwrap().last().unwrap();
    assert!(
        last["verdicts"]
            .as_array()
            .unwrap()
            .iter()
            .any(|x| x["metric"] == "errors" && x["outcome"] == "fail")
    );
}

#[test]
fn a_p99_regression_is_rolled_back_on_slow_requests() {
    let (code, v) = json("p99-regression");
    assert_eq!(code, Some(1));
    let reason = last_decision(&v)["reason"].as_str().unwrap().to_string();
    assert!(reason.contains("slow-requests: regression"), "{reason}");
}

#[test]
fn a_canary_without_traffic_is_never_promoted_and_the_data_ends_first() {
    // 20 minutes without a canary request: the step holds (no data is never a pass), and
    // the 30-minute progress deadline is not reached before the recording ends.
    let (code, v) = json("no-traffic");
    assert_eq!(code, Some(3), "exit 3: the data ended before a verdict");
    assert_eq!(v["outcome"], "unfinished");
    assert_eq!(last_decision(&v)["action"], "started");
    for interval in v["timeline"].as_array().unwrap() {
        let errors =
            interval["verdicts"].as_array().unwrap().iter().find(|x| x["metric"] == "errors").unwrap();
        assert_eq!(errors["outcome"], "insufficient", "{errors}");
    }
}

#[test]
fn a_canary_with_little_traffic_holds_until_its_progress_deadline_then_names_it() {
    // 2 canary requests per interval for 35 minutes, otherwise healthy.
    let (code, v) = json("low-traffic");
    assert_eq!(code, Some(1));
    assert_eq!(v["outcome"], "rolled-back");
    let decisions = v["record"]["decisions"].as_array().unwrap();
    assert_eq!(decisions.len(), 3, "started, the one rollback, its end: {decisions:?}");
    assert_eq!(decisions[2]["action"], "rollback-finished");
    let rollback = &decisions[1];
    // Not before the deadline: 30 minutes after the start at 10:00.
    assert_eq!(rollback["at"], "2026-11-01T10:30:00Z");
    let reason = rollback["reason"].as_str().unwrap();
    assert!(reason.starts_with("not enough traffic to judge: 30m at 10%"), "{reason}");
    assert!(reason.contains("served 2 requests, fewer than the 50 needed"), "{reason}");
}

#[test]
fn a_prometheus_gap_holds_the_step_and_is_never_counted_as_a_pass() {
    let (code, v) = json("prometheus-gap");
    let timeline = v["timeline"].as_array().unwrap();
    // Intervals 8-11 of the recording are the outage.
    for interval in &timeline[8..12] {
        for verdict in interval["verdicts"].as_array().unwrap() {
            assert_eq!(verdict["outcome"], "inconclusive");
            assert!(verdict["reason"].as_str().unwrap().contains("Prometheus unreachable"));
        }
    }
    // Inside the gap (10:04:30 to 10:06:00) the step waits for data: the one decision is
    // the warning that the rollout is stalled, after two silent intervals; traffic stays.
    let gap = ("2026-11-01T10:04:30Z", "2026-11-01T10:06:00Z");
    let decisions = v["record"]["decisions"].as_array().unwrap();
    let inside: Vec<&serde_json::Value> = decisions
        .iter()
        .filter(|d| {
            let at = d["at"].as_str().unwrap();
            gap.0 <= at && at <= gap.1
        })
        .collect();
    assert_eq!(inside.len(), 1, "{inside:?}");
    assert_eq!(inside[0]["action"], "stalled");
    assert!(inside[0]["reason"].as_str().unwrap().starts_with("stalled on lack of data: 2 inconclusive"));
    let before = decisions.iter().rev().find(|d| d["at"].as_str().unwrap() < gap.0).unwrap();
    assert_eq!(inside[0]["weight"], before["weight"], "a stall moves no traffic");
    // Four silent intervals stay under inconclusiveLimit (6): the canary goes on and is promoted.
    assert_eq!((code, v["outcome"].as_str()), (Some(0), Some("promoted")));
}

#[test]
fn the_text_report_names_the_reasons() {
    let out = backtest("tests/data/backtest/error-2x.json", &[]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("rolled-back       weight   0%  errors: regression"), "{text}");
    assert!(text.contains("outcome: ROLLED BACK"), "{text}");
}

#[test]
fn the_text_report_words_each_verdict_as_the_json_does() {
    let text = |scenario: &str| {
        let out = backtest(&format!("tests/data/backtest/{scenario}.json"), &[]);
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    // The same runs as the JSON tests above: a regression, a step without canary traffic,
    // and a Prometheus outage.
    let regression = text("error-2x");
    assert!(regression.contains("errors=FAIL"), "{regression}");
    let no_traffic = text("no-traffic");
    assert!(no_traffic.contains("errors=insufficient"), "{no_traffic}");
    let gap = text("prometheus-gap");
    assert!(gap.contains("errors=inconclusive"), "{gap}");
    assert!(gap.contains("errors=pass"), "{gap}");
}

#[test]
fn bad_data_is_reported_with_its_line_or_field_and_exits_2() {
    let dir = tempfile::tempdir().unwrap();
    let write = |name: &str, text: &str| {
        let path = dir.path().join(name);
        std::fs::write(&path, text).unwrap();
        path.display().to_string()
    };
    let typed = write(
        "typed.json",
        "{\"start\": \"2026-11-01T10:00:00Z\",\n \"intervals\": [\n  {\"canary\": {\"requests\": \"many\"}}]}",
    );
    let out = backtest(&typed, &[]);
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("typed.json:3:") && stderr.contains("intervals[0].canary.requests: invalid type"),
        "{stderr}"
    );

    let semantic = write(
        "semantic.json",
        "{\"start\": \"2026-11-01T10:00:00Z\", \"intervals\": [{\"canary\": {\"requests\": 10, \"errors\": 20, \"latency\": {\"0.1\": 5, \"0.5\": 3, \"+Inf\": 10}}}]}",
    );
    let stderr = String::from_utf8_lossy(&backtest(&semantic, &[]).stderr).to_string();
    assert!(stderr.contains("intervals[0].canary.errors: 20 errors out of 10 requests"), "{stderr}");
    assert!(
        stderr.contains("intervals[0].canary.latency: cumulative counts fall from 5 (le 0.1) to 3 (le 0.5)"),
        "{stderr}"
    );

    let unknown =
        write("unknown.json", "{\"start\": \"2026-11-01T10:00:00Z\", \"intervals\": [{\"canry\": {}}]}");
    let stderr = String::from_utf8_lossy(&backtest(&unknown, &[]).stderr).to_string();
    assert!(stderr.contains("intervals[0].canry: unknown field `canry`"), "{stderr}");
}

#[test]
fn a_name_the_policy_file_does_not_hold_is_refused_listing_the_names_it_does() {
    let dir = tempfile::tempdir().unwrap();
    let shipped = std::fs::read_to_string("tests/data/backtest/policy.yaml").unwrap();
    let file = dir.path().join("two.yaml");
    let second = shipped.replace("name: checkout, namespace", "name: payments, namespace");
    std::fs::write(&file, format!("{shipped}---\n{second}")).unwrap();
    let run = |extra: &[&str]| {
        let out = Command::new(env!("CARGO_BIN_EXE_canaryd"))
            .args(["backtest", "--policy", file.to_str().unwrap(), "--data", "tests/data/backtest/good.json"])
            .args(extra)
            .current_dir(env!("CARGO_MANIFEST_DIR"))
            .output()
            .unwrap();
        (out.status.code(), String::from_utf8_lossy(&out.stderr).into_owned())
    };
    let (code, err) = run(&["--name", "nope"]);
    assert_eq!(code, Some(2), "{err}");
    assert!(err.contains("no policy named nope"), "{err}");
    assert!(err.contains("checkout") && err.contains("payments"), "the names it holds: {err}");
    let (code, err) = run(&[]);
    assert_eq!(code, Some(2), "{err}");
    assert!(err.contains("--name") && err.contains("checkout") && err.contains("payments"), "{err}");
    let (code, err) = run(&["--name", "payments"]);
    assert_eq!(code, Some(0), "{err}");
}

#[test]
fn an_unreadable_prometheus_fails_the_backtest_instead_of_judging_a_gap() {
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let out = Command::new(env!("CARGO_BIN_EXE_canaryd"))
        .args(["backtest", "--policy", "tests/data/backtest/policy.yaml", "--workload", "shop/checkout"])
        .args(["--prometheus", &format!("http://127.0.0.1:{port}")])
        .args(["--from", "2026-11-01T10:00:00Z", "--to", "2026-11-01T10:20:00Z"])
        .env("CANARYD__PROMETHEUS__RETRIES", "0")
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(out.stdout.is_empty(), "no verdict may be printed");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("cannot read the window from Prometheus: Prometheus unreachable"), "{stderr}");
}

/// A policy that holds its first step for ten hours, and a recording of `n` healthy
/// intervals, the first `at_ten` of them recorded at 10% and the rest at 50%.
fn long_run(dir: &std::path::Path, n: usize, at_ten: usize) -> (String, String) {
    let policy = dir.join("policy.yaml");
    std::fs::write(
        &policy,
        "apiVersion: canaryd.io/v1alpha1\nkind: CanaryPolicy\nmetadata: {name: long, namespace: shop}\nspec:\n  selector: {matchLabels: {app: x}}\n  traffic: {steps: [10, 50, 100], stepDuration: 10h}\n  analysis:\n    interval: 30s\n    progressDeadline: 10h\n    metrics:\n      - {name: errors, template: http-error-rate, test: sequential}\n",
    )
    .unwrap();
    let rows: Vec<String> = (0..n)
        .map(|i| {
            let weight = if i < at_ten { 10 } else { 50 };
            let canary = 30 * weight;
            format!(
                "{{\"weight\": {weight}, \"canary\": {{\"requests\": {canary}, \"errors\": {}}}, \"baseline\": {{\"requests\": {}, \"errors\": {}}}}}",
                canary / 100,
                3000 - canary,
                (3000 - canary) / 100
            )
        })
        .collect();
    let data = dir.join("data.json");
    std::fs::write(
        &data,
        format!(
            "{{\"start\": \"2026-11-01T10:00:00Z\", \"interval\": \"30s\", \"intervals\": [{}]}}",
            rows.join(",")
        ),
    )
    .unwrap();
    (policy.display().to_string(), data.display().to_string())
}

#[test]
fn the_timeline_keeps_every_interval_of_a_long_recording() {
    let dir = tempfile::tempdir().unwrap();
    let (policy, data) = long_run(dir.path(), 600, 600);
    let out = Command::new(env!("CARGO_BIN_EXE_canaryd"))
        .args(["backtest", "--policy", &policy, "--data", &data, "--format", "json"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(3), "{}", String::from_utf8_lossy(&out.stderr));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let timeline = v["timeline"].as_array().unwrap();
    assert_eq!(timeline.len(), 600, "not cut at 500");
    assert_eq!(timeline[599]["at"], "2026-11-01T15:00:00Z");
    assert!(timeline.iter().all(|i| i["mismatch"].is_null()), "recorded at the engine's 10% throughout");
}

#[test]
fn intervals_recorded_at_another_weight_than_the_engines_are_marked() {
    // The data moved to 50% after 20 intervals; this policy holds 10% for ten hours.
    let dir = tempfile::tempdir().unwrap();
    let (policy, data) = long_run(dir.path(), 40, 20);
    let out = Command::new(env!("CARGO_BIN_EXE_canaryd"))
        .args(["backtest", "--policy", &policy, "--data", &data, "--format", "json"])
        .output()
        .unwrap();
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let timeline = v["timeline"].as_array().unwrap();
    for (i, entry) in timeline.iter().enumerate() {
        assert_eq!(entry["weight"], 10);
        if i < 20 {
            assert!(entry["mismatch"].is_null(), "{entry}");
        } else {
            assert_eq!(entry["recordedWeight"], 50);
            assert_eq!(
                entry["mismatch"],
                "the engine had the canary at 10% but the data was recorded at 50%"
            );
        }
    }
    let text = Command::new(env!("CARGO_BIN_EXE_canaryd"))
        .args(["backtest", "--policy", &policy, "--data", &data])
        .output()
        .unwrap();
    assert!(String::from_utf8_lossy(&text.stdout).contains("SPLIT the engine had the canary at 10%"));
}

#[test]
fn recordings_with_impossible_values_are_refused_naming_the_field() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("bad.json");
    std::fs::write(
        &data,
        r#"{"start": "2026-11-01T10:00:00Z", "interval": "30s", "intervals": [
  {"canary": {"requests": 10, "errors": 1, "latency": {"NaN": 3, "+Inf": 10}}},
  {"canary": {"requests": 10, "latency": {"-0.5": 3, "+Inf": 10}}},
  {"canary": {"requests": 10, "latency": {"0.5": -3, "+Inf": 10}}},
  {"canary": {"requests": 10, "latency": {"0.5": 3, "+Inf": 12}}},
  {"canary": {"requests": 10, "memory": [2e8, -1]}},
  {"at": "2026-11-01T10:01:00Z", "canary": {"requests": 10}},
  {"canary": {"requests": 1e300, "errors": 8e298}}
]}"#,
    )
    .unwrap();
    let out = backtest(data.to_str().unwrap(), &[]);
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&out.stderr);
    for message in [
        "intervals[0].canary.latency: bucket bound `NaN` is not a number of seconds",
        "intervals[1].canary.latency: bucket bound `-0.5` is not a number of seconds",
        "intervals[2].canary.latency: bucket `0.5` holds -3, not a count",
        "intervals[3].canary.latency.+Inf: 12 requests in the +Inf bucket, but 10 requests recorded",
        "intervals[4].canary.memory: -1 is not a reading",
        "intervals[5].at: 2026-11-01T10:01:00Z is not after the previous interval (2026-11-01T10:02:30Z)",
        "intervals[6].canary.requests: more than 1e9 in one interval is not a real count",
    ] {
        assert!(stderr.contains(message), "missing: {message}\n--- stderr:\n{stderr}");
    }
}

#[test]
fn a_recording_larger_than_the_limit_is_refused_before_it_is_read() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("huge.json");
    // Sparse: takes no disk, and reading it would take 300 MiB of memory.
    std::fs::File::create(&data).unwrap().set_len(300 * 1024 * 1024).unwrap();
    let out = backtest(data.to_str().unwrap(), &[]);
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("314572800 bytes is more than a recording may hold (268435456)"), "{stderr}");
}

/// The first fenced block of `lang` in `doc` (a path from the crate's root).
fn doc_block(doc: &str, lang: &str) -> String {
    let path = format!("{}/{doc}", env!("CARGO_MANIFEST_DIR"));
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path}: {e}"));
    let Some(block) = text.split(&format!("```{lang}\n")).nth(1) else { panic!("{doc} has no {lang} block") };
    block.split("```").next().unwrap().to_string()
}

#[test]
fn the_backtest_docs_name_every_shipped_recording() {
    let doc = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/docs/backtests.md")).unwrap();
    let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/data/backtest");
    let mut recordings: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|name| name.ends_with(".json"))
        .collect();
    recordings.sort();
    assert!(!recordings.is_empty(), "no recordings in {dir}");
    let missing: Vec<&String> = recordings.iter().filter(|r| !doc.contains(&format!("`{r}`"))).collect();
    assert!(missing.is_empty(), "docs/backtests.md does not name {missing:?}");
}

/// The example policy of docs/policies.md over the example recording of docs/backtests.md.
#[test]
fn the_documented_examples_work_as_written() {
    let dir = tempfile::tempdir().unwrap();
    let policy = dir.path().join("policy.yaml");
    std::fs::write(&policy, doc_block("docs/policies.md", "yaml")).unwrap();
    let recording: serde_json::Value = serde_json::from_str(&doc_block("docs/backtests.md", "json")).unwrap();
    let run = |data: &serde_json::Value| {
        let file = dir.path().join("data.json");
        std::fs::write(&file, data.to_string()).unwrap();
        let out = Command::new(env!("CARGO_BIN_EXE_canaryd"))
            .args([
                "backtest",
                "--policy",
                policy.to_str().unwrap(),
                "--data",
                file.to_str().unwrap(),
                "--format",
                "json",
            ])
            .output()
            .unwrap();
        let v: serde_json::Value = serde_json::from_slice(&out.stdout)
            .unwrap_or_else(|e| panic!("{e}: {}", String::from_utf8_lossy(&out.stderr)));
        (out.status.code(), last_decision(&v)["reason"].as_str().unwrap_or_default().to_string())
    };
    // As written: the first interval's firing alert rolls the canary back.
    let (code, reason) = run(&recording);
    assert_eq!(code, Some(1));
    assert!(reason.contains("alert ErrorBudgetBurn is firing"), "{reason}");
    // The recording's `"health": {"health": …}` reaches the policy's unnamed healthCheck.
    let mut failing = recording["intervals"][0].clone();
    failing.as_object_mut().unwrap().remove("alerts");
    failing["health"]["health"] = false.into();
    let mut data = recording.clone();
    data["intervals"] = serde_json::Value::Array(vec![failing; 4]);
    let (code, reason) = run(&data);
    assert_eq!(code, Some(1));
    assert!(reason.contains("health: 4 consecutive failed health checks"), "{reason}");
}

/// The shipped policy with `traffic` lines added (gates, gateTimeout), in `dir`.
fn gated_policy(dir: &std::path::Path, traffic: &str) -> String {
    let shipped = std::fs::read_to_string("tests/data/backtest/policy.yaml").unwrap();
    let steps = "  traffic: {router: gateway-api, steps: [10, 50, 100], stepDuration: 5m}\n";
    assert!(shipped.contains(steps), "the shipped policy's traffic line");
    let gated = shipped.replace(
        steps,
        &format!(
            "  traffic:\n    router: gateway-api\n    steps: [10, 50, 100]\n    stepDuration: 5m\n{traffic}"
        ),
    );
    let file = dir.join("gated.yaml");
    std::fs::write(&file, gated).unwrap();
    file.display().to_string()
}

/// `canaryd backtest` of `policy` over good.json with `extra` flags: exit code, JSON, text.
fn gated_run(policy: &str, extra: &[&str]) -> (Option<i32>, serde_json::Value, String) {
    let run = |format: &[&str]| {
        Command::new(env!("CARGO_BIN_EXE_canaryd"))
            .args(["backtest", "--policy", policy, "--data", "tests/data/backtest/good.json"])
            .args(extra)
            .args(format)
            .current_dir(env!("CARGO_MANIFEST_DIR"))
            .output()
            .unwrap()
    };
    let json = run(&["--format", "json"]);
    let v: serde_json::Value = serde_json::from_slice(&json.stdout)
        .unwrap_or_else(|e| panic!("{e}: {}", String::from_utf8_lossy(&json.stderr)));
    let text = run(&[]);
    assert_eq!(text.status.code(), json.status.code());
    (json.status.code(), v, String::from_utf8_lossy(&text.stdout).into_owned())
}

fn actions(v: &serde_json::Value) -> Vec<&str> {
    v["record"]["decisions"].as_array().unwrap().iter().map(|d| d["action"].as_str().unwrap()).collect()
}

#[test]
fn a_gated_policy_is_backtested_with_its_gates_approved_or_never_opened() {
    // good.json, 30 s intervals from 10:00: the p99 ratio check fails once, at 10:01, which
    // restarts the 10% step's 5 minutes, so it passes at 10:06 (as the recording moves to
    // 50%) and the 50% step at 10:11, where the gate holds it.
    let dir = tempfile::tempdir().unwrap();
    let policy = gated_policy(dir.path(), "    gates: [{at: 50, type: approval}]\n    gateTimeout: 5m\n");
    for extra in [&[][..], &["--gates", "approve"][..]] {
        let (code, v, text) = gated_run(&policy, extra);
        assert_eq!((code, v["outcome"].as_str()), (Some(0), Some("promoted")), "{extra:?}");
        assert_eq!(actions(&v), ["started", "advanced", "waiting", "approved", "promoting", "promoted"]);
        let approved = &v["record"]["decisions"][3];
        assert_eq!(approved["at"], "2026-11-01T10:11:00Z", "approved on the interval it began waiting");
        assert_eq!(approved["reason"], "the gate at 50% was approved by backtest");
        assert_eq!(v["gates"], "approve");
        assert!(text.contains("approved by backtest") && text.contains("outcome: PROMOTED"), "{text}");
    }
    // Never opened: it waits at 50%, analysing on, and rolls back five minutes later,
    // at 10:16, with eight intervals of the recording left.
    let (code, v, text) = gated_run(&policy, &["--gates", "never"]);
    assert_eq!((code, v["outcome"].as_str()), (Some(1), Some("rolled-back")));
    assert_eq!(actions(&v), ["started", "advanced", "waiting", "rolled-back", "rollback-finished"]);
    let rollback = last_decision(&v);
    assert_eq!(rollback["at"], "2026-11-01T10:16:00Z");
    assert_eq!(rollback["reason"], "the approval gate at 50% was not opened within the gate timeout of 5m");
    let waited: Vec<&serde_json::Value> = v["timeline"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|i| ("2026-11-01T10:11:30Z".."2026-11-01T10:16:01Z").contains(&i["at"].as_str().unwrap()))
        .collect();
    assert_eq!(waited.len(), 10, "every interval while it waited was analysed");
    assert!(waited.iter().all(|i| i["weight"] == 50 && i["mismatch"].is_null()));
    assert_eq!(v["gates"], "never");
    assert!(text.contains("outcome: ROLLED BACK"), "{text}");

    // With the default timeout of a day the recording ends first: the report says the
    // rollout was still waiting.
    let policy = gated_policy(dir.path(), "    gates: [{at: 50, type: approval}]\n");
    let (code, v, text) = gated_run(&policy, &["--gates", "never"]);
    assert_eq!((code, v["outcome"].as_str()), (Some(3), Some("unfinished")));
    assert_eq!(v["record"]["outcome"], "waiting");
    assert_eq!(actions(&v), ["started", "advanced", "waiting"]);
    assert!(
        text.contains(
            "outcome: UNFINISHED (the data ended while it waited at the gate at 50%, which --gates never leaves shut)"
        ),
        "{text}"
    );
}

#[test]
fn a_webhook_gate_is_backtested_as_an_approval_gate() {
    // The gate holds the 10% step, passed at 10:06; the recording moves to 50% then.
    let dir = tempfile::tempdir().unwrap();
    let policy = gated_policy(
        dir.path(),
        "    gates: [{at: 10, type: webhook, url: 'http://127.0.0.1:9/gate'}]\n    gateTimeout: 5m\n",
    );
    let (code, v, _) = gated_run(&policy, &["--gates", "approve"]);
    assert_eq!((code, v["outcome"].as_str()), (Some(0), Some("promoted")));
    assert_eq!(actions(&v), ["started", "waiting", "approved", "advanced", "promoting", "promoted"]);
    assert_eq!(v["record"]["decisions"][2]["reason"], "the gate at 10% was approved by backtest");
    assert_eq!(v["record"]["decisions"][2]["at"], "2026-11-01T10:06:00Z");
    assert!(v["timeline"].as_array().unwrap().iter().all(|i| i["mismatch"].is_null()));
    let (code, v, _) = gated_run(&policy, &["--gates", "never"]);
    assert_eq!((code, v["outcome"].as_str()), (Some(1), Some("rolled-back")));
    let rollback = last_decision(&v);
    assert_eq!(rollback["at"], "2026-11-01T10:11:00Z");
    assert!(
        rollback["reason"].as_str().unwrap().starts_with("the webhook gate at 10% was not opened"),
        "{rollback}"
    );
}

#[test]
fn an_unknown_gates_setting_is_a_usage_error() {
    let out = backtest("tests/data/backtest/good.json", &["--gates", "sometimes"]);
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("invalid value 'sometimes' for '--gates") && stderr.contains("approve, never"),
        "{stderr}"
    );
}
