//! `canaryd records list|show` reads what the daemon wrote.

use std::process::Command;

use canaryd::daemon::records::{RecordStore, Retention};
use canaryd::engine::{Input, Rollout, RolloutId, step};
use canaryd::record::{DeploymentRecord, Timeline};
use jiff::Timestamp;

fn canaryd(args: &[&str]) -> (Option<i32>, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_canaryd")).args(args).output().unwrap();
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stdout).into(),
        String::from_utf8_lossy(&out.stderr).into(),
    )
}

fn aborted_record() -> DeploymentRecord {
    let loaded = canaryd::policy::load_paths(&["policies/web-default.yaml".into()]);
    let id = RolloutId { namespace: "shop".into(), name: "web".into() };
    let at = |s: i64| Timestamp::from_second(1_793_527_200 + s).unwrap();
    let r = Rollout::new(id, "v7", loaded.policies[0].plan.clone());
    let r = step(&r, &Input::Start, at(0)).unwrap().rollout;
    let abort = Input::Command { command: canaryd::engine::Command::Abort, by: "alice".into() };
    let r = step(&r, &abort, at(60)).unwrap().rollout;
    let r = step(&r, &Input::RollbackDone, at(70)).unwrap().rollout;
    DeploymentRecord::of(&r, Timeline::default())
}

#[test]
fn records_are_listed_and_shown_and_a_missing_one_is_named() {
    let dir = tempfile::tempdir().unwrap();
    let store = RecordStore::open(dir.path(), Retention::default()).unwrap();
    let record = aborted_record();
    store.write(&record, record.finished_at.unwrap()).unwrap();
    let d = dir.path().to_str().unwrap();

    let (code, out, _) = canaryd(&["records", "--dir", d, "list"]);
    assert_eq!(code, Some(0));
    assert!(out.contains("shop/web@v7") && out.contains("aborted"), "{out}");

    let (code, out, _) = canaryd(&["records", "--dir", d, "show", "shop/web@v7"]);
    assert_eq!(code, Some(0));
    let shown: DeploymentRecord = serde_json::from_str(&out).unwrap();
    assert_eq!(shown, record);

    let (code, _, err) = canaryd(&["records", "--dir", d, "show", "shop/web@v8"]);
    assert_eq!(code, Some(2));
    assert!(err.contains("no record `shop/web@v8`"), "{err}");

    let (code, _, err) = canaryd(&["records", "--dir", "/nonexistent/records", "list"]);
    assert_eq!(code, Some(2));
    assert!(err.contains("/nonexistent/records: no records directory"), "{err}");
}

#[test]
fn records_past_the_count_or_the_age_are_pruned_oldest_first() {
    let dir = tempfile::tempdir().unwrap();
    let day = std::time::Duration::from_secs(86_400);
    let store = RecordStore::open(dir.path(), Retention { max_count: 2, max_age: day * 30 }).unwrap();
    let base = aborted_record();
    let end = base.finished_at.unwrap();
    for (i, age_days) in [(1, 40), (2, 3), (3, 2), (4, 1)] {
        let mut r = base.clone();
        r.id = format!("shop/web@v{i}");
        r.finished_at = Some(end - jiff::SignedDuration::from_hours(24 * age_days));
        store.write(&r, end).unwrap();
    }
    let kept: Vec<String> =
        store.files().iter().map(|f| f.file_name().unwrap().to_string_lossy().into()).collect();
    assert_eq!(kept.len(), 2, "{kept:?}");
    assert!(kept[0].contains("v3") && kept[1].contains("v4"), "the newest two stay: {kept:?}");
}

#[test]
fn the_directory_may_follow_the_subcommand() {
    let dir = tempfile::tempdir().unwrap();
    let store = RecordStore::open(dir.path(), Retention::default()).unwrap();
    let record = aborted_record();
    store.write(&record, record.finished_at.unwrap()).unwrap();
    let d = dir.path().to_str().unwrap();

    let (code, out, err) = canaryd(&["records", "list", "--dir", d]);
    assert_eq!(code, Some(0), "{err}");
    assert!(out.contains("shop/web@v7"), "{out}");

    let (code, out, err) = canaryd(&["records", "show", "shop/web@v7", "--dir", d]);
    assert_eq!(code, Some(0), "{err}");
    let shown: DeploymentRecord = serde_json::from_str(&out).unwrap();
    assert_eq!(shown, record);
}

#[test]
fn without_a_records_directory_the_error_says_how_to_name_one() {
    let empty = tempfile::tempdir().unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_canaryd"))
        .args(["records", "list"])
        .current_dir(empty.path())
        .env_remove("CANARYD_CONFIG")
        .env_remove("CANARYD__DAEMON__RECORDS_DIR")
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(err.contains("no records directory"), "{err}");
    assert!(err.contains("--dir DIR") && err.contains("daemon.records_dir"), "{err}");
}
