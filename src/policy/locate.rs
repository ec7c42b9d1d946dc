//! Where each field of a YAML document is: field paths (`spec.traffic.steps[1]`, as
//! validation names them) mapped to line and column, so that every problem, not only a
//! parse error, points at its place in the file.

use std::collections::BTreeMap;

use serde_saphyr::granit_parser::{Event, Parser};

enum Frame {
    Map { path: String, key: Option<String> },
    Seq { path: String, next: usize },
}

/// Line and column (both 1-based) of every node, by field path. A document that does
/// not parse gives what was read before the error.
pub fn locations(doc: &str) -> BTreeMap<String, (u64, u64)> {
    let mut found = BTreeMap::new();
    let mut stack: Vec<Frame> = Vec::new();
    for item in Parser::new_from_str(doc) {
        let Ok((event, span)) = item else { break };
        let at = (span.start.line() as u64, span.start.col() as u64 + 1);
        let starts = matches!(
            event,
            Event::Scalar(..) | Event::Alias(_) | Event::MappingStart(..) | Event::SequenceStart(..)
        );
        if starts {
            // A scalar where a mapping expects a key is that key, not a node.
            if let (Some(Frame::Map { key: key @ None, path }), Event::Scalar(text, ..)) =
                (stack.last_mut(), &event)
            {
                let name = text.to_string();
                found.insert(join(path, &name), at);
                *key = Some(name);
                continue;
            }
            let path = match stack.last_mut() {
                None => String::new(),
                Some(Frame::Map { path, key }) => join(path, key.as_deref().unwrap_or_default()),
                Some(Frame::Seq { path, next }) => {
                    *next += 1;
                    format!("{path}[{}]", *next - 1)
                }
            };
            found.insert(path.clone(), at);
            match event {
                Event::MappingStart(..) => stack.push(Frame::Map { path, key: None }),
                Event::SequenceStart(..) => stack.push(Frame::Seq { path, next: 0 }),
                _ => value_done(&mut stack),
            }
        } else if matches!(event, Event::MappingEnd | Event::SequenceEnd) {
            stack.pop();
            value_done(&mut stack);
        }
    }
    found
}

/// After a mapping's value, the mapping expects its next key.
fn value_done(stack: &mut [Frame]) {
    if let Some(Frame::Map { key, .. }) = stack.last_mut() {
        *key = None;
    }
}

fn join(path: &str, key: &str) -> String {
    if path.is_empty() { key.to_string() } else { format!("{path}.{key}") }
}

/// The location of `path`, or of its nearest ancestor that has one.
pub fn find(locations: &BTreeMap<String, (u64, u64)>, path: &str) -> Option<(u64, u64)> {
    let mut p = path;
    loop {
        if let Some(at) = locations.get(p) {
            return Some(*at);
        }
        let cut = p.rfind(['.', '['])?;
        p = &p[..cut];
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn block_and_flow_nodes_are_located() {
        let doc = "spec:\n  traffic: {router: x, steps: [10, 5]}\n  analysis:\n    metrics:\n      - name: a\n        test: t\n";
        let at = locations(doc);
        assert_eq!(at["spec.traffic.router"], (2, 21));
        assert_eq!(at["spec.traffic.steps[1]"], (2, 36));
        assert_eq!(at["spec.analysis.metrics[0].test"], (6, 15));
        assert_eq!(find(&at, "spec.analysis.metrics[0].alpha"), Some((5, 9)));
    }
}
