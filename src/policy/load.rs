//! Reading policies from files: multi-document YAML, each document parsed and validated
//! on its own so that one bad policy never hides or stops the others.

use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};

use serde::Deserialize;

use crate::engine::plan::{Plan, RouterKind};
use crate::policy::locate;
use crate::policy::model::{API_VERSION, CanaryPolicy, ClusterCanaryPolicy, PolicySpec};
use crate::policy::validate::{self, FieldProblem};
use crate::source::scrape::ScrapeIntervals;

/// The two policy kinds.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum PolicyKind {
    /// Namespaced `CanaryPolicy`.
    Namespaced,
    /// Cluster-scoped `ClusterCanaryPolicy`.
    Cluster,
}

/// Identity of a policy object.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct PolicyRef {
    /// Kind.
    pub kind: PolicyKind,
    /// Namespace of a namespaced policy.
    pub namespace: Option<String>,
    /// Name.
    pub name: String,
}

impl PolicyRef {
    /// `namespace/name` or `cluster/name`, as recorded in plans.
    pub fn key(&self) -> String {
        format!("{}/{}", self.namespace.as_deref().unwrap_or("cluster"), self.name)
    }
}

impl fmt::Display for PolicyRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match (&self.kind, &self.namespace) {
            (PolicyKind::Namespaced, Some(ns)) => write!(f, "CanaryPolicy {ns}/{}", self.name),
            _ => write!(f, "ClusterCanaryPolicy {}", self.name),
        }
    }
}

/// A policy that parsed and validated.
#[derive(Clone, Debug)]
pub struct LoadedPolicy {
    /// Which object it is.
    pub reference: PolicyRef,
    /// Where it was read from (`file#document`).
    pub origin: String,
    /// Line and column of its `metadata.name`.
    pub location: Option<(u64, u64)>,
    /// The spec as written.
    pub spec: PolicySpec,
    /// The compiled plan.
    pub plan: Plan,
}

/// A problem found while loading: names the file, the object, the field and the reason.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Problem {
    /// File it was found in.
    pub file: String,
    /// The object (`CanaryPolicy ns/name`) or `document N` when it has no name yet.
    pub object: String,
    /// Field path, when known.
    pub path: Option<String>,
    /// Line and column, when the parser knows them.
    pub location: Option<(u64, u64)>,
    /// The reason.
    pub message: String,
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.file)?;
        if let Some((line, col)) = self.location {
            write!(f, ":{line}:{col}")?;
        }
        write!(f, ": {}: ", self.object)?;
        if let Some(path) = &self.path {
            write!(f, "{path}: ")?;
        }
        write!(f, "{}", self.message)
    }
}

/// Everything read from a set of files.
#[derive(Debug, Default)]
pub struct Loaded {
    /// Valid policies.
    pub policies: Vec<LoadedPolicy>,
    /// Problems, in file and document order.
    pub problems: Vec<Problem>,
}

impl Loaded {
    /// Refuses every policy whose router the `platform` (serving `served`) cannot drive:
    /// it moves to the problems, naming `spec.traffic.router`, and the others stay.
    pub fn refuse_unserved_routers(&mut self, platform: &str, served: &[RouterKind]) {
        let (kept, refused): (Vec<_>, Vec<_>) =
            std::mem::take(&mut self.policies).into_iter().partition(|p| served.contains(&p.plan.router));
        self.policies = kept;
        for p in refused {
            let names: Vec<&str> = served.iter().map(|r| r.name()).collect();
            self.problems.push(Problem {
                file: p.origin.split_once('#').map_or(p.origin.as_str(), |(file, _)| file).to_string(),
                object: p.reference.to_string(),
                path: Some("spec.traffic.router".into()),
                location: p.location,
                message: format!(
                    "router `{}` is not served by the {platform} platform (it serves: {})",
                    p.plan.router,
                    names.join(", ")
                ),
            });
        }
    }
}

impl Loaded {
    /// Refuses each policy on the `replica` router with a step it cannot serve, within
    /// its tolerance, with `primary` replicas for the primary (see
    /// [`replica`](crate::platform::kubernetes::routers::replica)): one problem per step,
    /// naming the nearest shares it can do.
    pub fn refuse_unachievable_replica_steps(&mut self, primary: u32) {
        use crate::platform::kubernetes::routers::replica;
        let mut kept = Vec::new();
        for p in std::mem::take(&mut self.policies) {
            if p.plan.router != RouterKind::Replica {
                kept.push(p);
                continue;
            }
            let tolerance = p.spec.traffic.tolerance.unwrap_or(replica::DEFAULT_TOLERANCE);
            let refused = replica::unachievable_steps(&p.plan.steps, primary, tolerance);
            if refused.is_empty() {
                kept.push(p);
                continue;
            }
            for (i, why) in refused {
                self.problems.push(Problem {
                    file: p.origin.split_once('#').map_or(p.origin.as_str(), |(file, _)| file).to_string(),
                    object: p.reference.to_string(),
                    path: Some(format!("spec.traffic.steps[{i}]")),
                    location: p.location,
                    message: why,
                });
            }
        }
        self.policies = kept;
    }
}

/// Reads every `.yaml`/`.yml` file under the given files and directories, without
/// checking intervals against scrape intervals (for replaying recorded data).
pub fn load_paths(paths: &[PathBuf]) -> Loaded {
    load_paths_with(paths, None)
}

/// Reads every `.yaml`/`.yml` file under the given files and directories; with `scrape`,
/// an analysis interval too short for a template's scrape interval is a problem.
pub fn load_paths_with(paths: &[PathBuf], scrape: Option<&ScrapeIntervals>) -> Loaded {
    let mut loaded = Loaded::default();
    for file in expand(paths, &mut loaded.problems) {
        let name = file.display().to_string();
        match read_limited(&file) {
            Ok(text) => {
                let one = load_str_with(&name, &text, scrape);
                loaded.policies.extend(one.policies);
                loaded.problems.extend(one.problems);
            }
            Err(e) => loaded.problems.push(file_problem(&name, e)),
        }
    }
    reject_duplicates(&mut loaded);
    loaded
}

fn file_problem(file: &str, message: String) -> Problem {
    Problem { file: file.into(), object: "file".into(), path: None, location: None, message }
}

/// Largest policy file read; a policy is a few kilobytes.
pub const MAX_POLICY_FILE: u64 = 1024 * 1024;

/// The policy files under `paths`. Directories given by the caller are walked, but a
/// directory reached through a symbolic link inside one is not (so a link to `.` cannot
/// loop), and hidden entries are skipped (a Kubernetes ConfigMap mount's `..data`
/// directory, whose files the visible links already name). Only regular files are read.
fn expand(paths: &[PathBuf], problems: &mut Vec<Problem>) -> Vec<PathBuf> {
    let mut files = Vec::new();
    for path in paths {
        walk(path, true, &mut files, problems);
    }
    files
}

fn walk(path: &Path, given: bool, files: &mut Vec<PathBuf>, problems: &mut Vec<Problem>) {
    let name = path.display().to_string();
    let linked = std::fs::symlink_metadata(path).is_ok_and(|m| m.file_type().is_symlink());
    let Ok(meta) = std::fs::metadata(path) else {
        return problems.push(file_problem(&name, "no such file or directory".into()));
    };
    if meta.is_dir() {
        if linked && !given {
            return;
        }
        let mut found: Vec<PathBuf> = match std::fs::read_dir(path) {
            Ok(entries) => entries
                .filter_map(|e| e.ok().map(|e| e.path()))
                .filter(|p| !p.file_name().and_then(|n| n.to_str()).is_some_and(|n| n.starts_with('.')))
                .filter(|p| is_yaml(p) || p.is_dir())
                .collect(),
            Err(e) => return problems.push(file_problem(&name, format!("cannot list: {e}"))),
        };
        found.sort();
        for entry in found {
            walk(&entry, false, files, problems);
        }
    } else if !meta.is_file() {
        problems.push(file_problem(&name, "not a regular file (a pipe, socket or device); not read".into()));
    } else if meta.len() > MAX_POLICY_FILE {
        problems.push(file_problem(
            &name,
            format!("{} bytes is more than a policy file may hold ({MAX_POLICY_FILE}); not read", meta.len()),
        ));
    } else {
        files.push(path.to_path_buf());
    }
}

/// Reads a file found by [`expand`], at most [`MAX_POLICY_FILE`] bytes (it may have grown).
fn read_limited(path: &Path) -> Result<String, String> {
    use std::io::Read;
    let mut text = String::new();
    std::fs::File::open(path)
        .and_then(|f| f.take(MAX_POLICY_FILE + 1).read_to_string(&mut text))
        .map_err(|e| format!("cannot read: {e}"))?;
    if text.len() as u64 > MAX_POLICY_FILE {
        return Err(format!("more than {MAX_POLICY_FILE} bytes; not read"));
    }
    Ok(text)
}

fn is_yaml(p: &Path) -> bool {
    matches!(p.extension().and_then(|e| e.to_str()), Some("yaml" | "yml"))
}

/// Parses and validates every policy document in `text`; `file` names it in problems.
pub fn load_str(file: &str, text: &str) -> Loaded {
    load_str_with(file, text, None)
}

/// As [`load_str`], checking intervals against `scrape` when given.
pub fn load_str_with(file: &str, text: &str, scrape: Option<&ScrapeIntervals>) -> Loaded {
    let mut loaded = Loaded::default();
    for (index, (first_line, doc)) in split_documents(text).into_iter().enumerate() {
        let label = format!("document {}", index + 1);
        // Locations inside a document, moved to the file's line numbering.
        let in_file = |(line, col): (u64, u64)| (line + first_line - 1, col);
        match parse_document(doc) {
            Ok(None) => {}
            Ok(Some((reference, spec, mut found))) => {
                // Every problem of the document at once: its keys, its values, its plan.
                if let Err(more) = strict(doc) {
                    found.extend(more);
                }
                match validate::compile(&reference.key(), &spec, scrape) {
                    Ok(plan) if found.is_empty() => {
                        let at = locate::find(&locate::locations(doc), "metadata.name");
                        loaded.policies.push(LoadedPolicy {
                            origin: format!("{file}#{}", index + 1),
                            location: at.map(in_file),
                            reference,
                            spec,
                            plan,
                        });
                        continue;
                    }
                    Ok(_) => {}
                    Err(more) => found.extend(more),
                }
                let at = locate::locations(doc);
                loaded.problems.extend(found.into_iter().map(|FieldProblem { path, message }| Problem {
                    file: file.into(),
                    object: reference.to_string(),
                    location: locate::find(&at, &path).map(in_file),
                    path: Some(path),
                    message,
                }))
            }
            Err(problems) => {
                for mut e in problems {
                    e.file = file.into();
                    e.location = e.location.map(in_file);
                    if e.object.is_empty() {
                        e.object = label.clone();
                    }
                    loaded.problems.push(e);
                }
            }
        }
    }
    reject_duplicates(&mut loaded);
    loaded
}

/// Whether `name` is one Kubernetes accepts: lowercase alphanumerics and `-` (and `.`
/// where `dots`), starting and ending alphanumeric, at most `max` characters.
fn kubernetes_name(name: &str, max: usize, dots: bool) -> Result<(), String> {
    let ok_char = |c: char| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || (dots && c == '.');
    let ends = |c: Option<char>| c.is_some_and(|c| c.is_ascii_lowercase() || c.is_ascii_digit());
    if name.len() <= max
        && name.chars().all(ok_char)
        && ends(name.chars().next())
        && ends(name.chars().last())
    {
        return Ok(());
    }
    Err(format!(
        "`{}` is not a name Kubernetes accepts: at most {max} lowercase letters, digits{}, and `-`, starting and ending with a letter or digit",
        name.escape_debug(),
        if dots { ", `.`" } else { "" }
    ))
}

/// Splits a YAML stream at `---` markers, keeping each document's first line number. A
/// document may start on the marker's own line (`--- {kind: …}`).
fn split_documents(text: &str) -> Vec<(u64, &str)> {
    let mut docs = Vec::new();
    let (mut start, mut start_line, mut offset) = (0usize, 1u64, 0usize);
    for (n, line) in text.split_inclusive('\n').enumerate() {
        let bare = line.trim_end();
        if bare == "---" || bare.starts_with("--- ") {
            docs.push((start_line, &text[start..offset]));
            // What follows the marker on its line belongs to the next document.
            start = if bare == "---" { offset + line.len() } else { offset + 4 };
            start_line = if bare == "---" { n as u64 + 2 } else { n as u64 + 1 };
        }
        offset += line.len();
    }
    docs.push((start_line, &text[start..]));
    docs
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Header {
    api_version: Option<String>,
    kind: Option<String>,
    metadata: Option<HeaderMeta>,
}

#[derive(Deserialize)]
struct HeaderMeta {
    name: Option<String>,
    namespace: Option<String>,
}

/// A policy document read: what it is, its spec, and the problems found on the way that
/// did not stop the reading (a bad name, unknown keys).
type Parsed = (PolicyRef, PolicySpec, Vec<FieldProblem>);

/// Parses one document. `Ok(None)` for an empty document. Errors leave `file` empty.
fn parse_document(doc: &str) -> Result<Option<Parsed>, Vec<Problem>> {
    if doc.lines().all(|l| l.trim().is_empty() || l.trim_start().starts_with('#')) {
        return Ok(None);
    }
    let problem = |object: String, path: Option<String>, message: String| Problem {
        file: String::new(),
        object,
        path,
        location: None,
        message,
    };
    let header: Header = parse_typed(doc).map_err(|(path, loc, message)| {
        vec![Problem { location: loc, ..problem(String::new(), path, message) }]
    })?;
    if header.kind.as_deref() == Some("List") {
        return Err(vec![problem(
            String::new(),
            Some("kind".into()),
            "kind List (the output of `kubectl get -o yaml`) is not read: write each policy as its own document, separated by ---".into(),
        )]);
    }
    let meta = header.metadata.unwrap_or(HeaderMeta { name: None, namespace: None });
    let Some(name) = meta.name.filter(|n| !n.is_empty()) else {
        return Err(vec![problem(
            String::new(),
            Some("metadata.name".into()),
            "a policy needs a name".into(),
        )]);
    };
    let kind = match header.kind.as_deref() {
        Some("CanaryPolicy") => PolicyKind::Namespaced,
        Some("ClusterCanaryPolicy") => PolicyKind::Cluster,
        other => {
            return Err(vec![problem(
                format!("object {name}"),
                Some("kind".into()),
                format!("expected CanaryPolicy or ClusterCanaryPolicy, found {}", other.unwrap_or("nothing")),
            )]);
        }
    };
    let namespace = match kind {
        PolicyKind::Namespaced => Some(meta.namespace.unwrap_or_else(|| "default".into())),
        PolicyKind::Cluster => None,
    };
    // A bad name or namespace refuses the policy, but its spec is still checked.
    let mut found = Vec::new();
    if let Err(why) = kubernetes_name(&name, 253, true) {
        found.push(FieldProblem { path: "metadata.name".into(), message: why });
    }
    if let Some(Err(why)) = namespace.as_deref().map(|ns| kubernetes_name(ns, 63, false)) {
        found.push(FieldProblem { path: "metadata.namespace".into(), message: why });
    }
    let reference = PolicyRef { kind, namespace, name: name.escape_debug().to_string() };
    if header.api_version.as_deref() != Some(API_VERSION) {
        return Err(vec![problem(
            reference.to_string(),
            Some("apiVersion".into()),
            format!("expected {API_VERSION}, found {}", header.api_version.as_deref().unwrap_or("nothing")),
        )]);
    }
    // Unknown keys first, all of them, so the typed parse does not stop at the first.
    let mut cleaned = serde_saphyr::from_str::<serde_json::Value>(doc).ok();
    let unknown = cleaned.as_mut().map(crate::policy::unknown::strip).unwrap_or_default();
    let typed = match (unknown.is_empty(), cleaned) {
        (false, Some(value)) => from_value(kind, value),
        _ => match kind {
            PolicyKind::Namespaced => parse_typed::<CanaryPolicy>(doc).map(|p| p.spec),
            PolicyKind::Cluster => parse_typed::<ClusterCanaryPolicy>(doc).map(|p| p.spec.0),
        },
    };
    found.extend(unknown);
    match typed {
        Ok(spec) => Ok(Some((reference, spec, found))),
        Err((path, location, message)) => {
            let at = locate::locations(doc);
            let mut problems: Vec<Problem> = found
                .into_iter()
                .map(|FieldProblem { path, message }| Problem {
                    location: locate::find(&at, &path),
                    ..problem(reference.to_string(), Some(path), message)
                })
                .collect();
            let location = location.or_else(|| path.as_deref().and_then(|p| locate::find(&at, p)));
            problems.push(Problem { location, ..problem(reference.to_string(), path, message) });
            Err(problems)
        }
    }
}

/// The spec of a document already read and cleaned of unknown keys: written back as YAML
/// and read as the document would be, so its scalars mean what they meant there. The
/// text is not the user's, so no location is kept (the caller finds it by path).
fn from_value(kind: PolicyKind, value: serde_json::Value) -> Result<PolicySpec, ParseError> {
    let text = serde_saphyr::to_string(&value).map_err(|e| (None, None, e.to_string()))?;
    let spec = match kind {
        PolicyKind::Namespaced => parse_typed::<CanaryPolicy>(&text).map(|p| p.spec),
        PolicyKind::Cluster => parse_typed::<ClusterCanaryPolicy>(&text).map(|p| p.spec.0),
    };
    spec.map_err(|(path, _, message)| (path, None, message))
}

type ParseError = (Option<String>, Option<(u64, u64)>, String);

/// Deserialises with the field path of the first error and its line and column.
fn parse_typed<T: serde::de::DeserializeOwned>(doc: &str) -> Result<T, ParseError> {
    let mut path = None;
    serde_saphyr::with_deserializer_from_str(doc, |de| {
        serde_path_to_error::deserialize(de).map_err(|e| {
            let p = e.path().to_string();
            path = (p != "." && p != "?" && !p.is_empty()).then_some(p);
            e.into_inner()
        })
    })
    .map_err(|e| {
        let location = e.location().map(|l| (l.line(), l.column()));
        (path, location, short_message(&e.to_string()))
    })
}

/// The first line of a parser message, without its own `error: line X column Y:` prefix,
/// in the words of a policy rather than of the parser's options.
fn short_message(full: &str) -> String {
    let first = full.lines().next().unwrap_or(full).trim_start_matches("error: ");
    let message = match first.split_once(": ") {
        Some((head, rest)) if head.starts_with("line ") => rest.to_string(),
        _ => first.to_string(),
    };
    if let Some(value) = message.strip_prefix("non-finite float ").and_then(|r| r.split(' ').next()) {
        return format!("{value} is not a number a policy may hold (NaN and infinities are refused)");
    }
    if let Some(key) = message.strip_prefix("duplicate mapping key: ").and_then(|r| r.split(',').next()) {
        return format!("`{key}` appears twice in the same mapping");
    }
    if message.starts_with("budget breached") {
        return "the document is larger or more deeply nested than any policy (parser limit reached)".into();
    }
    message
}

/// Checks what the types read leniently: numbers written as strings (which the CRD
/// would refuse). Unknown keys, the label selector's included (Kubernetes' own type ignores
/// them, so `matchExpression` would silently widen a policy's reach), are found by
/// [`crate::policy::unknown`].
fn strict(doc: &str) -> Result<(), Vec<FieldProblem>> {
    let Ok(value) = serde_saphyr::from_str::<serde_json::Value>(doc) else { return Ok(()) };
    let mut problems = Vec::new();
    for (i, step) in value["spec"]["traffic"]["steps"].as_array().into_iter().flatten().enumerate() {
        if let Some(text) = step.as_str() {
            problems.push(FieldProblem {
                path: format!("spec.traffic.steps[{i}]"),
                message: format!("\"{text}\" is a string; write the number itself (the CRD refuses strings)"),
            });
        }
    }
    if problems.is_empty() { Ok(()) } else { Err(problems) }
}

fn reject_duplicates(loaded: &mut Loaded) {
    let mut seen: BTreeMap<PolicyRef, String> = BTreeMap::new();
    let mut kept = Vec::new();
    for p in std::mem::take(&mut loaded.policies) {
        if let Some(first) = seen.get(&p.reference) {
            loaded.problems.push(Problem {
                file: p.origin.split('#').next().unwrap_or_default().into(),
                object: p.reference.to_string(),
                path: Some("metadata.name".into()),
                location: p.location,
                message: format!("defined twice; the first definition is {first}"),
            });
        } else {
            seen.insert(p.reference.clone(), p.origin.clone());
            kept.push(p);
        }
    }
    loaded.policies = kept;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn syntax_errors_in_later_documents_carry_their_own_line() {
        let text = "apiVersion: canaryd.io/v1alpha1\nkind: CanaryPolicy\nmetadata: {name: a}\nspec:\n  selector: {matchLabels: {x: y}}\n  analysis: {metrics: [{name: e, template: http-error-rate, test: sequential}]}\n---\n# second\nkind: CanaryPolicy\nmetadata: {name: b\n";
        let loaded = load_str("f.yaml", text);
        assert_eq!(loaded.policies.len(), 1);
        assert_eq!(loaded.problems.len(), 1);
        let (line, _) = loaded.problems[0].location.expect("a location");
        assert!(line >= 10, "line {line} should point into the second document");
    }

    #[test]
    fn namespaced_policies_default_to_the_default_namespace() {
        let text = "apiVersion: canaryd.io/v1alpha1\nkind: CanaryPolicy\nmetadata: {name: a}\nspec:\n  selector: {matchLabels: {x: y}}\n  analysis: {metrics: [{name: e, template: http-error-rate, test: sequential}]}\n";
        let loaded = load_str("f.yaml", text);
        assert_eq!(loaded.policies[0].reference.key(), "default/a");
        assert_eq!(loaded.policies[0].plan.steps, vec![10, 50, 100]);
    }

    #[test]
    fn wrong_kind_and_api_version_are_named() {
        let text = "apiVersion: v1\nkind: CanaryPolicy\nmetadata: {name: a}\n---\nkind: Deployment\nmetadata: {name: b}\n";
        let loaded = load_str("f.yaml", text);
        let messages: Vec<String> = loaded.problems.iter().map(ToString::to_string).collect();
        assert_eq!(
            messages,
            [
                "f.yaml: CanaryPolicy default/a: apiVersion: expected canaryd.io/v1alpha1, found v1",
                "f.yaml: object b: kind: expected CanaryPolicy or ClusterCanaryPolicy, found Deployment",
            ]
        );
    }

    #[test]
    fn a_document_over_the_parser_budget_is_refused_in_plain_words() {
        let items = vec!["0"; 300_000].join(",");
        let text = format!(
            "apiVersion: canaryd.io/v1alpha1\nkind: CanaryPolicy\nmetadata: {{name: big, namespace: shop}}\nspec:\n  extra: [{items}]\n"
        );
        let loaded = load_str("big.yaml", &text);
        let message = loaded.problems[0].to_string();
        assert!(message.contains("larger or more deeply nested than any policy"), "{message}");
        assert!(!message.contains("Nodes {"), "{message}");
    }
}
