use std::io::Write;

use super::*;

fn env(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
    pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
}

fn file(text: &str) -> tempfile::NamedTempFile {
    let mut f = tempfile::Builder::new().suffix(".toml").tempfile().unwrap();
    f.write_all(text.as_bytes()).unwrap();
    f
}

#[test]
fn environment_overrides_the_file() {
    let f = file("[server]\nlisten = \"127.0.0.1:1000\"\n[prometheus]\nurl = \"http://prom:9090\"\n");
    let s = Settings::load(Some(f.path()), env(&[("CANARYD__SERVER__LISTEN", "127.0.0.1:2000")])).unwrap();
    assert_eq!(s.server.listen.port(), 2000);
    assert_eq!(s.prometheus.url.as_str(), "http://prom:9090/");
}

#[test]
fn every_invalid_setting_is_reported_with_its_key() {
    let f = file(
        "[server]\nlisten = \"nowhere\"\n[prometheus]\nurl = \"not a url\"\ntimeout = \"soon\"\n[log]\nformat = \"xml\"\n",
    );
    let e = Settings::load(Some(f.path()), BTreeMap::new()).unwrap_err();
    let text = e.to_string();
    for key in ["server.listen", "prometheus.url", "prometheus.timeout", "log.format"] {
        assert!(text.contains(key), "{key} missing from: {text}");
    }
    assert!(text.contains(&f.path().display().to_string()));
}

#[test]
fn unknown_keys_are_errors() {
    let f = file("[server]\nlisen = \"127.0.0.1:1\"\n");
    let e = Settings::load(Some(f.path()), BTreeMap::new()).unwrap_err();
    assert!(e.to_string().contains("lisen"), "{e}");
}

#[test]
fn secrets_never_show_in_debug_output() {
    let s = Settings::load(
        None,
        env(&[
            ("CANARYD__SERVER__API_TOKEN", "hunter2-token-0123456789"),
            ("CANARYD__PROMETHEUS__BEARER_TOKEN", "prom-s3cret"),
        ]),
    )
    .unwrap();
    let debug = format!("{s:?}");
    assert!(!debug.contains("hunter2-token-0123456789") && !debug.contains("prom-s3cret"), "{debug}");
    assert!(debug.contains("redacted"));
    assert_eq!(s.server.tokens.get("operator").map(Secret::expose), Some("hunter2-token-0123456789"));
}

#[test]
fn a_missing_file_is_named() {
    let e = Settings::load(Some(Path::new("/nonexistent/canaryd.toml")), BTreeMap::new()).unwrap_err();
    assert!(e.to_string().contains("/nonexistent/canaryd.toml: no such file"));
}

#[test]
fn a_directory_given_as_the_settings_file_is_named_as_one() {
    let dir = tempfile::tempdir().unwrap();
    let err = Settings::load(Some(dir.path()), BTreeMap::new()).unwrap_err();
    assert!(err.to_string().contains("is a directory, not a settings file"), "{err}");
}

#[test]
fn every_type_error_and_unknown_key_is_reported_not_only_the_first() {
    let f = file(
        "[server]\nlisen = \"x\"\nlisten = 7\n[prometheus]\nretries = \"many\"\nshard_size = \"lots\"\ntimeout = 5\n",
    );
    let text = Settings::load(Some(f.path()), BTreeMap::new()).unwrap_err().to_string();
    for expected in [
        "server.lisen: unknown field `lisen`",
        "prometheus.retries: invalid type: string \"many\"",
        "prometheus.shard_size: invalid type: string \"lots\"",
        "server.listen: `7` is not an address",
        "prometheus.timeout: `5` is not a duration",
    ] {
        assert!(text.contains(expected), "missing {expected} in:\n{text}");
    }
}

#[test]
fn services_are_read_with_their_hooks_and_defaults() {
    let f = file(
        "[nginx]\ninclude = \"/tmp/up.conf\"\n\
         [[services]]\nname = \"web\"\nlabels = { app = \"web\" }\nstable = [\"127.0.0.1:81\"]\ncanary = [\"127.0.0.1:82\"]\n\
         [services.hooks]\npromote = { command = [\"deploy\", \"--stable\"], timeout = \"5s\" }\n\
         rollback = { url = \"http://hooks.local/rollback\" }\n",
    );
    let s = Settings::load(Some(f.path()), BTreeMap::new()).unwrap();
    let local = s.local.expect("services declared");
    let web = &local.services[0];
    assert_eq!((web.namespace.as_str(), web.stable_workload.as_str()), ("local", "web"));
    assert_eq!(web.canary_workload, "web-canary");
    assert_eq!(web.health_path, "/healthz");
    let promote = web.hooks.promote.as_ref().unwrap();
    assert_eq!(promote.action, HookAction::Command(vec!["deploy".into(), "--stable".into()]));
    assert_eq!(promote.timeout, Duration::from_secs(5));
    assert!(
        matches!(&web.hooks.rollback.as_ref().unwrap().action, HookAction::Webhook(u) if u.path() == "/rollback")
    );
    assert!(web.hooks.pre_rollout.is_none());
    assert_eq!(local.nginx.status_listen.port(), 8482);
    // No services, no local platform.
    assert!(Settings::load(None, BTreeMap::new()).unwrap().local.is_none());
}

#[test]
fn every_bad_service_setting_is_reported_with_its_key() {
    let f = file(
        "[daemon]\nplatform_timeout = \"10s\"\n\
         [[services]]\nname = \"Web!\"\nstable = []\ncanary = [\"nohost\"]\n\
         [[services]]\nname = \"api\"\nstable = [\"a:1\"]\ncanary = [\"a:1\"]\nstable_workload = \"x\"\ncanary_workload = \"x\"\n\
         [services.hooks]\npromote = { command = [\"deploy\"], timeout = \"30s\" }\nrollback = { command = [\"a\"], url = \"http://x\" }\n",
    );
    let text = Settings::load(Some(f.path()), BTreeMap::new()).unwrap_err().to_string();
    for expected in [
        "nginx.include: required",
        "services[0].name: `Web!` must be",
        "services[0].stable: needs at least one server",
        "services[0].canary: `nohost` is not host:port",
        "services.api: [\"a:1\"] are both stable and canary servers",
        "services.api.canary_workload: equals stable_workload",
        "services.api.hooks.promote.timeout: 30s must be shorter than daemon.platform_timeout (10s)",
        "services.api.hooks.rollback: set command or url, not both",
        // Without a promote hook, nothing would bring the stable servers to the new revision.
        "services[0].hooks.promote: required: only the promote hook brings the stable servers to the promoted revision",
    ] {
        assert!(text.contains(expected), "`{expected}` missing from:\n{text}");
    }
}

#[test]
fn a_bad_token_is_reported_under_the_key_it_was_written_as() {
    let short_api_token = file("[server]\napi_token = \"short\"\n");
    let short_named = file("[server.tokens]\nalice = \"short\"\n");
    let cases = [
        (Some(short_api_token.path()), vec![], "server.api_token"),
        (None, vec![("CANARYD__SERVER__API_TOKEN", "short")], "server.api_token"),
        (Some(short_named.path()), vec![], "server.tokens.alice"),
        (None, vec![("CANARYD__SERVER__TOKENS__ALICE", "short")], "server.tokens.alice"),
    ];
    for (path, vars, key) in cases {
        let text = Settings::load(path, env(&vars)).unwrap_err().to_string();
        assert!(
            text.contains(&format!("{key}: shorter than 16 characters")),
            "{path:?} {vars:?}: `{key}` not named in:\n{text}"
        );
        assert!(!text.contains("server.tokens.operator"), "{text}");
    }
    // The same token under both keys: each problem names a key that was written.
    let same = "same-token-0123456789";
    let text = Settings::load(
        None,
        env(&[("CANARYD__SERVER__API_TOKEN", same), ("CANARYD__SERVER__TOKENS__ALICE", same)]),
    )
    .unwrap_err()
    .to_string();
    assert!(
        text.contains("server.api_token: the same token as another caller (server.tokens.alice)"),
        "{text}"
    );
    assert!(!text.contains("server.tokens.operator"), "{text}");
}

#[test]
fn metric_value_series_are_bounded_by_default_and_as_set() {
    let s = Settings::load(None, BTreeMap::new()).unwrap();
    assert_eq!(s.daemon.metric_values.max_rollouts, 1000);
    assert!(s.daemon.metric_values.namespaces.is_empty());
    let f = file("[daemon]\nmetric_value_rollouts = 50\nmetric_value_namespaces = [\"shop\", \"pay\"]\n");
    let s = Settings::load(Some(f.path()), BTreeMap::new()).unwrap();
    assert_eq!(s.daemon.metric_values.max_rollouts, 50);
    assert_eq!(s.daemon.metric_values.namespaces, ["shop", "pay"]);
    let f = file("[daemon]\nmetric_value_namespaces = [\"shop\", \"\"]\n");
    let e = Settings::load(Some(f.path()), BTreeMap::new()).unwrap_err().to_string();
    assert!(e.contains("daemon.metric_value_namespaces[1]: \"\" is not a namespace name"), "{e}");
    let f = file("[daemon]\nmetric_value_rollouts = -1\n");
    let e = Settings::load(Some(f.path()), BTreeMap::new()).unwrap_err().to_string();
    assert!(e.contains("metric_value_rollouts"), "{e}");
}

#[test]
fn the_policy_paths_variable_is_a_colon_separated_list_over_the_file() {
    let f = file("[policies]\npaths = [\"from-the-file\"]\n");
    let s = Settings::load(
        Some(f.path()),
        env(&[("CANARYD__POLICIES__PATHS", "/etc/canaryd/policies:extra.yaml")]),
    )
    .unwrap();
    assert_eq!(s.policy_paths, [PathBuf::from("/etc/canaryd/policies"), PathBuf::from("extra.yaml")]);
    let s = Settings::load(None, env(&[("CANARYD__POLICIES__PATHS", "one")])).unwrap();
    assert_eq!(s.policy_paths, [PathBuf::from("one")]);
    let s = Settings::load(Some(f.path()), BTreeMap::new()).unwrap();
    assert_eq!(s.policy_paths, [PathBuf::from("from-the-file")]);
}

#[test]
fn alertmanager_is_optional_and_its_url_is_checked() {
    let none = Settings::load(None, BTreeMap::new()).unwrap();
    assert!(none.alertmanager.is_none());
    let f = file("[alertmanager]\nurl = \"http://127.0.0.1:9093\"\ntimeout = \"2s\"\n");
    let am = Settings::load(Some(f.path()), BTreeMap::new()).unwrap().alertmanager.unwrap();
    assert_eq!((am.url.as_str(), am.timeout), ("http://127.0.0.1:9093/", Duration::from_secs(2)));
    let e = Settings::load(None, env(&[("CANARYD__ALERTMANAGER__URL", "am:9093")])).unwrap_err();
    assert!(e.to_string().contains("alertmanager.url: `am:9093` is not an http(s) URL"), "{e}");
    let e = Settings::load(None, env(&[("CANARYD__ALERTMANAGER__URL", "not a url")])).unwrap_err();
    assert!(e.to_string().contains("alertmanager.url: `not a url` is not a URL"), "{e}");
}

#[test]
fn a_kubernetes_section_selects_the_platform_with_its_namespaces_and_checkpoint() {
    let none = Settings::load(Some(file("").path()), BTreeMap::new()).unwrap();
    assert_eq!(none.kubernetes, None, "no [kubernetes]: no Kubernetes platform");
    let all = Settings::load(Some(file("[kubernetes]\n").path()), BTreeMap::new()).unwrap();
    let all: KubernetesSettings = all.kubernetes.expect("[kubernetes] selects the platform");
    assert_eq!((all.namespaces, all.checkpoint), (None, Duration::from_secs(300)));
    let lease = all.lease.expect("leader election is on by default");
    // client-go's defaults.
    assert_eq!(lease.name, "canaryd");
    assert_eq!(
        (lease.duration, lease.renew_deadline, lease.retry),
        (Duration::from_secs(15), Duration::from_secs(10), Duration::from_secs(2))
    );
    assert!(!lease.identity.is_empty(), "an identity from the pod's or host's name");
    let f = file("[kubernetes]\nnamespaces = [\"shop\", \"payments\"]\ncheckpoint = \"2m\"\n");
    let some = Settings::load(Some(f.path()), BTreeMap::new()).unwrap().kubernetes.unwrap();
    assert_eq!(some.namespaces, Some(vec!["shop".to_string(), "payments".to_string()]));
    assert_eq!(some.checkpoint, Duration::from_secs(120));
}

#[test]
fn bad_kubernetes_settings_are_each_named() {
    let f = file("[kubernetes]\nnamespaces = [\"shop\", \"Shop_2\", \"\"]\ncheckpoint = \"3h\"\n");
    let text = Settings::load(Some(f.path()), BTreeMap::new()).unwrap_err().to_string();
    assert!(text.contains("kubernetes.namespaces[1]: `Shop_2` may hold only lowercase letters"), "{text}");
    assert!(text.contains("kubernetes.namespaces[2]: `` is not 1 to 63 characters long"), "{text}");
    assert!(text.contains("kubernetes.checkpoint: `3h` is longer than 1h"), "{text}");
    let f = file("[kubernetes]\nnamespace = [\"shop\"]\n");
    let text = Settings::load(Some(f.path()), BTreeMap::new()).unwrap_err().to_string();
    assert!(text.contains("namespace"), "{text}");
}

#[test]
fn the_lease_is_configurable_can_be_turned_off_and_its_bad_values_are_named() {
    let f = file(
        "[kubernetes.lease]\nname = \"canaryd-shop\"\nnamespace = \"ops\"\nidentity = \"replica-a\"\nduration = \"30s\"\nrenew_deadline = \"20s\"\nretry = \"5s\"\n",
    );
    let lease = Settings::load(Some(f.path()), BTreeMap::new()).unwrap().kubernetes.unwrap().lease.unwrap();
    assert_eq!(
        (lease.name.as_str(), lease.namespace.as_str(), lease.identity.as_str()),
        ("canaryd-shop", "ops", "replica-a")
    );
    assert_eq!(
        (lease.duration, lease.renew_deadline, lease.retry),
        (Duration::from_secs(30), Duration::from_secs(20), Duration::from_secs(5))
    );
    let off = file("[kubernetes.lease]\nenabled = false\n");
    assert_eq!(Settings::load(Some(off.path()), BTreeMap::new()).unwrap().kubernetes.unwrap().lease, None);
    let f = file(
        "[kubernetes.lease]\nname = \"Canaryd\"\nnamespace = \"ops_1\"\nduration = \"10s\"\nrenew_deadline = \"10s\"\nretry = \"500ms\"\n",
    );
    let text = Settings::load(Some(f.path()), BTreeMap::new()).unwrap_err().to_string();
    assert!(text.contains("kubernetes.lease.name: `Canaryd` must be lowercase"), "{text}");
    assert!(text.contains("kubernetes.lease.namespace: `ops_1` may hold only lowercase"), "{text}");
    assert!(
        text.contains("kubernetes.lease.renew_deadline: `10s` must be shorter than lease.duration `10s`"),
        "{text}"
    );
    assert!(text.contains("kubernetes.lease.retry: `500ms` is shorter than 1s"), "{text}");
    let f = file("[kubernetes.lease]\nrenew_deadline = \"5s\"\nretry = \"5s\"\n");
    let text = Settings::load(Some(f.path()), BTreeMap::new()).unwrap_err().to_string();
    assert!(
        text.contains("kubernetes.lease.retry: `5s` must be shorter than lease.renew_deadline `5s`"),
        "{text}"
    );
}

#[test]
fn kubernetes_and_local_services_are_refused_together() {
    let f = file(
        "[kubernetes]\n[nginx]\ninclude = \"/tmp/x.conf\"\n[[services]]\nname = \"web\"\nstable = [\"127.0.0.1:1\"]\ncanary = [\"127.0.0.1:2\"]\n",
    );
    let text = Settings::load(Some(f.path()), BTreeMap::new()).unwrap_err().to_string();
    assert!(text.contains("select two platforms"), "{text}");
}

#[test]
fn shards_default_to_one_and_more_need_the_lease_and_a_bound() {
    let one = Settings::load(Some(file("[kubernetes]\n").path()), BTreeMap::new()).unwrap();
    assert_eq!(one.kubernetes.unwrap().shards, 1);
    let six = Settings::load(Some(file("[kubernetes]\nshards = 6\n").path()), BTreeMap::new()).unwrap();
    assert_eq!(six.kubernetes.unwrap().shards, 6);
    for (text, expected) in [
        ("[kubernetes]\nshards = 0\n", "kubernetes.shards: 0 is not between 1 and 64"),
        ("[kubernetes]\nshards = 65\n", "kubernetes.shards: 65 is not between 1 and 64"),
        (
            "[kubernetes]\nshards = 4\n[kubernetes.lease]\nenabled = false\n",
            "kubernetes.shards: 4 shards need leader election on Leases",
        ),
    ] {
        let error = Settings::load(Some(file(text).path()), BTreeMap::new()).unwrap_err().to_string();
        assert!(error.contains(expected), "{text}: {error}");
    }
}
