//! The documentation against what it documents: the policy reference against the CRD
//! schema generated from the policy types, the local platform's example against the
//! settings and policy loaders, and every relative link against the files and headings
//! it points to.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use kube::CustomResourceExt;
use serde_json::Value;

fn root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

fn read(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// A field of the policy's `spec`, as the schema has it.
#[derive(Debug)]
struct Field {
    /// Not an object with properties, nor a list of them: a value the reference describes.
    leaf: bool,
    required: bool,
    default: Option<Value>,
}

/// Every field under `node`, by dotted path (`traffic.stepDuration`,
/// `analysis.metrics[].name`).
fn fields(node: &Value, prefix: &str, out: &mut BTreeMap<String, Field>) {
    let Some(properties) = node.get("properties").and_then(Value::as_object) else { return };
    let required: BTreeSet<&str> = node
        .get("required")
        .and_then(Value::as_array)
        .map(|r| r.iter().filter_map(Value::as_str).collect())
        .unwrap_or_default();
    for (name, child) in properties {
        let path = if prefix.is_empty() { name.clone() } else { format!("{prefix}.{name}") };
        let items = child.get("items").filter(|i| i.get("properties").is_some());
        let leaf = child.get("properties").is_none() && items.is_none();
        out.insert(
            path.clone(),
            Field {
                leaf,
                required: required.contains(name.as_str()),
                default: child.get("default").cloned(),
            },
        );
        match items {
            Some(items) => fields(items, &format!("{path}[]"), out),
            None => fields(child, &path, out),
        }
    }
}

fn spec_fields(crd: &impl serde::Serialize) -> BTreeMap<String, Field> {
    let crd = serde_json::to_value(crd).unwrap();
    let spec = &crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["spec"];
    let mut out = BTreeMap::new();
    fields(spec, "", &mut out);
    assert!(out.len() > 20, "the schema walk found only {out:?}");
    out
}

/// The rows of the reference table of docs/policies.md: field path → default cell.
fn reference_rows(doc: &str) -> Vec<(String, String)> {
    let section =
        doc.split("\n## Reference\n").nth(1).expect("docs/policies.md has a `## Reference` section");
    let section = section.split("\n## ").next().unwrap();
    let mut rows = Vec::new();
    for line in section.lines().filter(|l| l.starts_with("| `")) {
        let cells: Vec<&str> = line.split(" | ").map(str::trim).collect();
        let field = cells[0].trim_start_matches("| ");
        let path = field.strip_prefix('`').and_then(|f| f.strip_suffix('`'));
        let path = path.filter(|p| !p.contains('`')).unwrap_or_else(|| {
            panic!("a reference row names one field, in backticks: {line}");
        });
        rows.push((path.to_string(), cells.get(1).copied().unwrap_or_default().to_string()));
    }
    assert!(!rows.is_empty(), "no rows in the reference table");
    rows
}

/// A schema default as the reference writes it: `5m`, `[10, 50, 100]`, 2, false.
fn written(default: &Value) -> String {
    match default {
        Value::String(s) => format!("`{s}`"),
        Value::Array(items) => {
            format!("`[{}]`", items.iter().map(Value::to_string).collect::<Vec<_>>().join(", "))
        }
        other => other.to_string(),
    }
}

#[test]
fn the_policy_reference_lists_every_field_of_the_schema_and_no_other() {
    let schema = spec_fields(&canaryd::policy::CanaryPolicy::crd());
    let cluster = spec_fields(&canaryd::policy::ClusterCanaryPolicy::crd());
    assert_eq!(
        schema.keys().collect::<Vec<_>>(),
        cluster.keys().collect::<Vec<_>>(),
        "both kinds share one spec"
    );
    let doc = read(&root().join("docs/policies.md"));
    let rows = reference_rows(&doc);
    let mut listed = BTreeMap::new();
    for (path, default) in &rows {
        assert!(listed.insert(path.as_str(), default.as_str()).is_none(), "`{path}` is listed twice");
    }
    let unknown: Vec<&&str> = listed.keys().filter(|p| !schema.contains_key(**p)).collect();
    assert!(unknown.is_empty(), "docs/policies.md lists fields the policy types do not have: {unknown:?}");
    let missing: Vec<&String> =
        schema.iter().filter(|(p, f)| f.leaf && !listed.contains_key(p.as_str())).map(|(p, _)| p).collect();
    assert!(missing.is_empty(), "docs/policies.md's reference does not list {missing:?}");
    for (path, field) in schema.iter().filter(|(_, f)| f.leaf) {
        let cell = listed[path.as_str()];
        if field.required {
            assert!(cell.starts_with("required"), "`{path}` is required; the reference says `{cell}`");
        }
        if let Some(default) = &field.default {
            let expected = written(default);
            assert_eq!(cell, expected, "`{path}`'s default in the reference");
        }
    }
}

/// The fenced blocks of `lang` in `doc`, in order.
fn blocks<'a>(doc: &'a str, lang: &str) -> Vec<&'a str> {
    doc.split(&format!("```{lang}\n")).skip(1).map(|b| b.split("```").next().unwrap()).collect()
}

#[test]
fn the_local_platform_example_is_consistent_and_loads() {
    let doc = read(&root().join("docs/local-platform.md"));
    let dir = tempfile::tempdir().unwrap();
    let toml = dir.path().join("canaryd.toml");
    std::fs::write(&toml, blocks(&doc, "toml")[0]).unwrap();
    let settings = canaryd::config::Settings::load(Some(&toml), BTreeMap::new())
        .unwrap_or_else(|e| panic!("the example's settings: {:?}", e.problems));
    let local = settings.local.as_ref().expect("the example declares [[services]]");
    let [service] = &local.services[..] else { panic!("one service: {:?}", local.services) };

    // nginx includes canaryd's file and proxies to the service's upstream.
    let nginx = blocks(&doc, "nginx")[0];
    assert!(nginx.contains(&format!("include {};", local.nginx.include.display())), "{nginx}");
    assert!(nginx.contains(&format!("proxy_pass http://{};", service.name)), "{nginx}");

    // Prometheus labels each server with its service's namespace and its arm's workload,
    // at the scrape interval the settings say.
    let yaml = blocks(&doc, "yaml");
    let prometheus: Value = serde_saphyr::from_str(yaml[0]).unwrap();
    let interval = prometheus["global"]["scrape_interval"].as_str().unwrap();
    assert_eq!(
        canaryd::duration::parse(interval).unwrap(),
        settings.prometheus.batching.scrape.of(Some("http-error-rate")),
        "Prometheus' scrape interval is the one the settings tell canaryd"
    );
    let mut labelled = BTreeMap::new();
    for job in prometheus["scrape_configs"].as_array().unwrap() {
        for group in job["static_configs"].as_array().unwrap() {
            for target in group["targets"].as_array().unwrap() {
                let labels = (group["labels"]["namespace"].clone(), group["labels"]["workload"].clone());
                labelled.insert(target.as_str().unwrap().to_string(), labels);
            }
        }
    }
    for (servers, workload) in
        [(&service.stable, &service.stable_workload), (&service.canary, &service.canary_workload)]
    {
        for server in servers {
            let labels = (Value::from(service.namespace.clone()), Value::from(workload.clone()));
            assert_eq!(labelled.get(server), Some(&labels), "Prometheus' labels of {server}");
        }
    }

    // The policy is valid for the local platform and selects the service in its namespace.
    let mut loaded =
        canaryd::policy::load_str_with("web.yaml", yaml[1], Some(&settings.prometheus.batching.scrape));
    loaded.refuse_unserved_routers("local", &canaryd::platform::local::ROUTERS);
    assert!(loaded.problems.is_empty(), "{:?}", loaded.problems);
    let [policy] = &loaded.policies[..] else { panic!("one policy") };
    assert_eq!(policy.reference.namespace.as_deref(), Some(service.namespace.as_str()));
    assert!(canaryd::policy::selector::matches(&policy.spec.selector, &service.labels));
}

#[test]
fn the_settings_reference_loads_as_written() {
    let doc = read(&root().join("docs/configuration.md"));
    let dir = tempfile::tempdir().unwrap();
    let toml = dir.path().join("canaryd.toml");
    std::fs::write(&toml, blocks(&doc, "toml")[0]).unwrap();
    if let Err(e) = canaryd::config::Settings::load(Some(&toml), BTreeMap::new()) {
        panic!("docs/configuration.md's settings: {:?}", e.problems);
    }
}

/// A heading's anchor as GitHub makes it: lower case, punctuation dropped, spaces to `-`.
fn anchor(heading: &str) -> String {
    heading
        .trim()
        .to_lowercase()
        .chars()
        .filter(|c| c.is_alphanumeric() || matches!(c, ' ' | '-' | '_'))
        .map(|c| if c == ' ' { '-' } else { c })
        .collect()
}

/// The text outside fenced blocks.
fn unfenced(doc: &str) -> String {
    doc.split("```").step_by(2).collect()
}

/// The text outside fenced blocks and inline code, where links are links.
fn prose(doc: &str) -> String {
    unfenced(doc).split('`').step_by(2).collect()
}

/// The anchors of a document's headings (inline code in a heading keeps its text).
fn anchors(doc: &str) -> BTreeSet<String> {
    unfenced(doc)
        .lines()
        .filter_map(|l| l.strip_prefix('#'))
        .map(|h| anchor(h.trim_start_matches('#')))
        .collect()
}

/// The targets of `[text](target)` links.
fn links(doc: &str) -> Vec<String> {
    let text = prose(doc);
    text.split("](").skip(1).filter_map(|rest| rest.split_once(')').map(|(t, _)| t.to_string())).collect()
}

fn documents() -> Vec<PathBuf> {
    let mut docs = vec![root().join("README.md")];
    let mut more: Vec<PathBuf> = std::fs::read_dir(root().join("docs"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "md"))
        .collect();
    more.sort();
    docs.extend(more);
    docs
}

#[test]
fn every_relative_link_points_to_an_existing_file_and_heading() {
    let mut broken = Vec::new();
    let mut checked = 0;
    for doc in documents() {
        let text = read(&doc);
        for target in links(&text) {
            if target.starts_with("http://")
                || target.starts_with("https://")
                || target.starts_with("mailto:")
            {
                continue;
            }
            checked += 1;
            let (file, fragment) = target.split_once('#').unwrap_or((&target, ""));
            let path = if file.is_empty() { doc.clone() } else { doc.parent().unwrap().join(file) };
            let name = doc.strip_prefix(root()).unwrap().display().to_string();
            if !path.exists() {
                broken.push(format!("{name}: {target}: no such file"));
            } else if !fragment.is_empty() && !anchors(&read(&path)).contains(fragment) {
                broken.push(format!("{name}: {target}: no such heading"));
            }
        }
    }
    assert!(checked > 20, "only {checked} relative links found: is the link parser broken?");
    assert!(broken.is_empty(), "broken links:\n{}", broken.join("\n"));
}
