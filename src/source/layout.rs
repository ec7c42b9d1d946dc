//! PromQL laid out for people: a long query over indented lines, broken at its top-level
//! operators and inside its largest brackets. The text is otherwise kept as it is (the
//! lines, joined with spaces, are the same query), so what is shown is what is sent.

/// Lines are broken until they fit this width, where the query's structure allows (a
/// single selector is never broken).
pub const WIDTH: usize = 100;

/// `query` over lines, each indented by `indent` spaces plus two per level of nesting.
pub fn layout(query: &str, indent: usize) -> Vec<String> {
    let mut lines = Vec::new();
    lay(query.trim(), indent, &mut lines);
    lines
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Kind {
    /// A name, number, duration or operator.
    Word,
    /// A quoted string.
    Text,
    /// `,` between arguments or matchers.
    Comma,
    /// A bracketed group, by its opening bracket.
    Group(char),
}

/// One top-level piece of a query, by byte range.
#[derive(Clone, Copy, Debug)]
struct Atom {
    start: usize,
    end: usize,
    kind: Kind,
}

fn lay(s: &str, indent: usize, lines: &mut Vec<String>) {
    let pad = " ".repeat(indent);
    if indent + s.chars().count() <= WIDTH {
        return lines.push(format!("{pad}{s}"));
    }
    let atoms = atoms_of(s);
    let operators = binary_operators(s, &atoms);
    if let Some(lowest) = operators.iter().map(|o| o.1).min() {
        // Only the loosest-binding operators split, so each operand is a whole expression.
        let mut from = 0;
        let mut pending: Option<String> = None;
        let splits: Vec<(usize, usize)> =
            operators.iter().filter(|o| o.1 == lowest).map(|&(at, _, to)| (at, to)).collect();
        for (at, to) in splits.iter().copied().chain([(atoms.len(), atoms.len())]) {
            let operand = s[atoms[from].start..atoms[at - 1].end].trim();
            emit_operand(pending.take(), operand, indent, lines);
            if at < atoms.len() {
                pending = Some(s[atoms[at].start..atoms[to - 1].end].trim().to_string());
            }
            from = to;
        }
        return;
    }
    let widest = atoms
        .iter()
        .filter(|a| matches!(a.kind, Kind::Group('(') | Kind::Group('{')) && a.end - a.start > 2)
        .max_by_key(|a| a.end - a.start);
    let (Some(group), Some(first), Some(last)) = (widest, atoms.first(), atoms.last()) else {
        return lines.push(format!("{pad}{s}"));
    };
    // `name(` … `)`: the arguments go one per line, a level deeper.
    lines.push(format!("{pad}{}", s[first.start..group.start + 1].trim()));
    let inner_start = group.start + 1;
    let inner = &s[inner_start..group.end - 1];
    let inner_atoms = atoms_of(inner);
    let mut from = 0;
    let commas: Vec<usize> =
        inner_atoms.iter().enumerate().filter(|(_, a)| a.kind == Kind::Comma).map(|(i, _)| i).collect();
    for (n, at) in commas.iter().copied().chain([inner_atoms.len()]).enumerate() {
        if from < at {
            let arg = inner[inner_atoms[from].start..inner_atoms[at - 1].end].trim();
            lay(arg, indent + 2, lines);
            if n < commas.len()
                && let Some(line) = lines.last_mut()
            {
                line.push(',');
            }
        }
        from = at + 1;
    }
    lines.push(format!("{pad}{}", s[group.end - 1..last.end].trim()));
}

/// Writes `operand`, after the operator that precedes it (on the same line when both fit).
fn emit_operand(operator: Option<String>, operand: &str, indent: usize, lines: &mut Vec<String>) {
    let pad = " ".repeat(indent);
    match operator {
        Some(op) if indent + op.chars().count() + 1 + operand.chars().count() <= WIDTH => {
            lines.push(format!("{pad}{op} {operand}"));
        }
        Some(op) => {
            lines.push(format!("{pad}{op}"));
            lay(operand, indent, lines);
        }
        None => lay(operand, indent, lines),
    }
}

/// How tightly a binary operator binds (PromQL's precedence), if `word` is one.
fn precedence(word: &str) -> Option<u8> {
    Some(match word.to_ascii_lowercase().as_str() {
        "or" => 1,
        "and" | "unless" => 2,
        "==" | "!=" | ">" | "<" | ">=" | "<=" => 3,
        "+" | "-" => 4,
        "*" | "/" | "%" | "atan2" => 5,
        "^" => 6,
        _ => return None,
    })
}

/// The top-level binary operators: the atom each starts at, its precedence, and the atom
/// after it and its modifiers (`bool`, `on (…)`, `ignoring (…)`, `group_left (…)`).
fn binary_operators(s: &str, atoms: &[Atom]) -> Vec<(usize, u8, usize)> {
    let word = |i: usize| atoms.get(i).filter(|a| a.kind == Kind::Word).map(|a| &s[a.start..a.end]);
    let mut found = Vec::new();
    let mut i = 1;
    while i < atoms.len() {
        let after_operand = atoms[i - 1].kind != Kind::Comma && word(i - 1).and_then(precedence).is_none();
        match word(i).and_then(precedence) {
            Some(p) if after_operand => {
                let mut to = i + 1;
                while let Some(m) = word(to).map(str::to_ascii_lowercase) {
                    match m.as_str() {
                        "bool" => to += 1,
                        "on" | "ignoring" | "group_left" | "group_right" => {
                            to += 1;
                            if atoms.get(to).is_some_and(|a| a.kind == Kind::Group('(')) {
                                to += 1;
                            }
                        }
                        _ => break,
                    }
                }
                // An operator with nothing after it is not one to split at.
                if to < atoms.len() {
                    found.push((i, p, to));
                }
                i = to;
            }
            _ => i += 1,
        }
    }
    found
}

/// The top-level atoms of `s`: strings and bracketed groups are each one atom.
fn atoms_of(s: &str) -> Vec<Atom> {
    let chars: Vec<(usize, char)> = s.char_indices().collect();
    let at = |i: usize| chars.get(i).map_or(s.len(), |c| c.0);
    let mut out = Vec::new();
    let mut i = 0;
    while i < chars.len() {
        let (start, c) = chars[i];
        let kind = match c {
            c if c.is_whitespace() => {
                i += 1;
                continue;
            }
            '"' | '\'' | '`' => {
                i = after_string(&chars, i);
                Kind::Text
            }
            '(' | '{' | '[' => {
                i = after_group(&chars, i);
                Kind::Group(c)
            }
            ',' => {
                i += 1;
                Kind::Comma
            }
            _ => {
                i += 1;
                while i < chars.len() && !breaks_word(chars[i].1) {
                    i += 1;
                }
                Kind::Word
            }
        };
        out.push(Atom { start, end: at(i), kind });
    }
    out
}

fn breaks_word(c: char) -> bool {
    c.is_whitespace() || "(){}[],\"'`".contains(c)
}

/// The index after the string opening at `i` (backslash escapes, except in backticks).
fn after_string(chars: &[(usize, char)], i: usize) -> usize {
    let quote = chars[i].1;
    let mut j = i + 1;
    while j < chars.len() {
        match chars[j].1 {
            '\\' if quote != '`' => j += 2,
            c if c == quote => return j + 1,
            _ => j += 1,
        }
    }
    chars.len()
}

/// The index after the bracket that closes the one opening at `i`.
fn after_group(chars: &[(usize, char)], i: usize) -> usize {
    let mut depth = 0usize;
    let mut j = i;
    while j < chars.len() {
        match chars[j].1 {
            '"' | '\'' | '`' => {
                j = after_string(chars, j);
                continue;
            }
            '(' | '{' | '[' => depth += 1,
            ')' | '}' | ']' => {
                depth = depth.saturating_sub(1);
                if depth == 0 {
                    return j + 1;
                }
            }
            _ => {}
        }
        j += 1;
    }
    chars.len()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parsed(q: &str) -> promql_parser::parser::Expr {
        promql_parser::parser::parse(q).unwrap_or_else(|e| panic!("{e}: {q}"))
    }

    #[test]
    fn a_short_query_stays_on_one_line() {
        assert_eq!(layout("sum by (a) (rate(x[5m]))", 2), ["  sum by (a) (rate(x[5m]))"]);
    }

    #[test]
    fn strings_holding_operators_brackets_and_commas_are_never_split() {
        let selector =
            format!("metric_with_a_long_name{{path=~\"/a,b (c) or d\", {}}}", "x=\"y\", ".repeat(8));
        let query = format!(
            "label_replace(sum by (workload) (rate({selector}[5m])), \"to\", \"$1\", \"from\", \"(.*) or ,\") \
             > bool on (workload) group_left (ns) \
             sum by (workload) (rate({selector}[5m] offset 30s)) or vector(0)"
        );
        let lines = layout(&query, 2);
        assert!(lines.len() > 3, "{lines:#?}");
        let joined = lines.iter().map(|l| l.trim()).collect::<Vec<_>>().join(" ");
        assert_eq!(parsed(&joined), parsed(&query), "{lines:#?}");
        assert!(lines.iter().any(|l| l.trim() == "> bool on (workload) group_left (ns)"), "{lines:#?}");
        assert!(lines.iter().any(|l| l.contains("\"(.*) or ,\"")), "{lines:#?}");
    }
}
