//! Mutation fuzzing of what users hand canaryd: policies and recordings. Seeds are every
//! shipped policy and recorded scenario; mutations flip, drop, duplicate and insert bytes
//! and lines, and splice in YAML and JSON tokens that parsers find hard. Whatever comes
//! out, loading and backtesting must return (a result or problems naming the file), never
//! panic, and never take long. Runs a bounded number of cases under `cargo test`
//! (`CANARYD_FUZZ_CASES` to change it).

use proptest::prelude::*;
use proptest::test_runner::{Config, TestRunner};

use canaryd::backtest::Recording;

/// Tokens that stress a YAML or JSON parser, or canaryd's own checks.
const TOKENS: &[&str] = &[
    "---",
    "--- {",
    "&a",
    "*a",
    "!!binary",
    "? ",
    ": ",
    "- ",
    "{",
    "}",
    "[",
    "]",
    "\"",
    "'",
    "\\",
    "\n",
    "\t",
    ".nan",
    ".inf",
    "-.inf",
    "1e308",
    "-1",
    "0",
    "18446744073709551616",
    "null",
    "~",
    "true",
    "\u{1b}[31m",
    "\u{0}",
    "\u{feff}",
    "NaN",
    "+Inf",
    "1e400",
    "\"at\": \"1970-01-01T00:00:00Z\"",
    "kind: List",
    "<<: *a",
];

fn cases() -> u32 {
    std::env::var("CANARYD_FUZZ_CASES").ok().and_then(|n| n.parse().ok()).unwrap_or(5000)
}

fn seeds(dir: &str, ext: &str) -> Vec<String> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(format!("{}/{dir}", env!("CARGO_MANIFEST_DIR"))).unwrap().flatten() {
        let path = entry.path();
        if path.extension().and_then(|e| e.to_str()) == Some(ext) {
            out.push(std::fs::read_to_string(path).unwrap());
        }
    }
    assert!(!out.is_empty(), "no seeds in {dir}");
    out
}

#[derive(Clone, Debug)]
enum Mutation {
    FlipByte(usize, u8),
    DropLine(usize),
    DuplicateLine(usize),
    Insert(usize, &'static str),
    Truncate(usize),
}

fn mutation() -> impl Strategy<Value = Mutation> {
    prop_oneof![
        (any::<usize>(), any::<u8>()).prop_map(|(i, b)| Mutation::FlipByte(i, b)),
        any::<usize>().prop_map(Mutation::DropLine),
        any::<usize>().prop_map(Mutation::DuplicateLine),
        (any::<usize>(), prop::sample::select(TOKENS)).prop_map(|(i, t)| Mutation::Insert(i, t)),
        any::<usize>().prop_map(Mutation::Truncate),
    ]
}

fn apply(text: &str, mutations: &[Mutation]) -> String {
    let mut bytes = text.as_bytes().to_vec();
    for m in mutations {
        let at = |i: usize, len: usize| if len == 0 { 0 } else { i % len };
        match m {
            Mutation::FlipByte(i, b) if !bytes.is_empty() => {
                let i = at(*i, bytes.len());
                bytes[i] ^= b | 1;
            }
            Mutation::Insert(i, token) => {
                let i = at(*i, bytes.len() + 1);
                bytes.splice(i..i, token.bytes());
            }
            Mutation::Truncate(i) => bytes.truncate(at(*i, bytes.len() + 1)),
            Mutation::DropLine(i) | Mutation::DuplicateLine(i) => {
                let text = String::from_utf8_lossy(&bytes).into_owned();
                let mut lines: Vec<&str> = text.lines().collect();
                if !lines.is_empty() {
                    let i = at(*i, lines.len());
                    if matches!(m, Mutation::DropLine(_)) {
                        lines.remove(i);
                    } else {
                        lines.insert(i, lines[i]);
                    }
                }
                bytes = lines.join("\n").into_bytes();
            }
            Mutation::FlipByte(..) => {}
        }
    }
    String::from_utf8_lossy(&bytes).into_owned()
}

fn runner() -> TestRunner {
    TestRunner::new(Config { cases: cases(), failure_persistence: None, ..Config::default() })
}

#[test]
fn mutated_policies_load_or_are_refused_never_panic() {
    let seeds = seeds("policies", "yaml");
    let strategy = (prop::sample::select(seeds), prop::collection::vec(mutation(), 1..6));
    let loaded = std::cell::Cell::new((0, 0));
    runner()
        .run(&strategy, |(seed, mutations)| {
            let text = apply(&seed, &mutations);
            let result = canaryd::policy::load_str("fuzz.yaml", &text);
            for problem in &result.problems {
                prop_assert!(problem.to_string().starts_with("fuzz.yaml"), "{problem}");
            }
            let (policies, problems) = loaded.get();
            loaded.set((policies + result.policies.len(), problems + result.problems.len()));
            Ok(())
        })
        .unwrap();
    let (policies, problems) = loaded.get();
    println!("mutated policies: {} cases, {policies} policies loaded, {problems} problems reported", cases());
    assert!(policies > 0 && problems > 0, "the mutations both keep and break policies");
}

#[test]
fn mutated_recordings_parse_or_are_refused_and_replay_without_panicking() {
    let seeds = seeds("tests/data/backtest", "json");
    let plan =
        canaryd::policy::load_paths(&["tests/data/backtest/policy.yaml".into()]).policies[0].plan.clone();
    let strategy = (prop::sample::select(seeds), prop::collection::vec(mutation(), 1..6));
    let replayed = std::cell::Cell::new(0);
    runner()
        .run(&strategy, |(seed, mutations)| {
            let text = apply(&seed, &mutations);
            if let Ok(recording) = Recording::parse("fuzz.json", &text) {
                let result = canaryd::backtest::run(&plan, &recording, "fuzz.json");
                prop_assert!(!result.record.decisions.is_empty());
                replayed.set(replayed.get() + 1);
            }
            Ok(())
        })
        .unwrap();
    println!("mutated recordings: {} cases, {} parsed and replayed", cases(), replayed.get());
    assert!(replayed.get() > 0, "some mutations keep a recording valid");
}
