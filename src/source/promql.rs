//! Safe PromQL building: label values are escaped, names and inline queries are checked,
//! so a value taken from a policy or a workload can never change a query's structure.

/// Fills the placeholders a template or inline query may use: `$matchers` (label
/// matchers, already escaped), `$window` (a PromQL duration) and `$by` (grouping labels).
pub fn fill(query: &str, matchers: &str, window: &str, by: &str) -> String {
    query.replace("$matchers", matchers).replace("$window", window).replace("$by", by)
}

/// Whether `name` is a valid Prometheus label name.
pub fn is_label_name(name: &str) -> bool {
    let mut chars = name.chars();
    chars.next().is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
}

/// Whether `name` is a valid Prometheus metric (or alert) name.
pub fn is_metric_name(name: &str) -> bool {
    let mut chars = name.chars();
    chars.next().is_some_and(|c| c.is_ascii_alphabetic() || c == '_' || c == ':')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':')
}

/// Checks an extra label matcher from a policy. Values are escaped when rendered anyway;
/// characters that only make sense as an attack or a mistake are refused outright.
pub fn check_label(name: &str, value: &str) -> Result<(), String> {
    if !is_label_name(name) {
        return Err(format!("`{}` is not a valid Prometheus label name", name.escape_debug()));
    }
    if let Some(c) = value.chars().find(|c| c.is_control() || matches!(c, '"' | '\\' | '`' | '{' | '}')) {
        return Err(format!(
            "value `{}` contains {:?}, which could break the PromQL query",
            value.escape_debug(),
            c
        ));
    }
    Ok(())
}

/// Escapes a value for a double-quoted PromQL string.
pub fn escape(value: &str) -> String {
    let mut out = String::with_capacity(value.len() + 2);
    for c in value.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '"' => out.push_str("\\\""),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if c.is_control() => out.push_str(&format!("\\u{:04x}", c as u32)),
            c => out.push(c),
        }
    }
    out
}

/// Escapes a literal for use inside a PromQL regex matcher (`=~"…"`).
pub fn escape_regex(value: &str) -> String {
    let mut out = String::with_capacity(value.len());
    for c in value.chars() {
        if "\\.+*?()|[]{}^$".contains(c) {
            out.push('\\');
        }
        out.push(c);
    }
    escape(&out)
}

/// Checks that an inline query parses once its placeholders are filled.
pub fn check_inline(query: &str) -> Result<(), String> {
    if query.trim().is_empty() {
        return Err("the query is empty".into());
    }
    let filled = fill(query, "workload=\"x\"", "1m", "workload");
    promql_parser::parser::parse(&filled).map(|_| ()).map_err(|e| format!("the query does not parse: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escapes_quotes_backslashes_and_newlines() {
        assert_eq!(escape(r#"a"b\c"#), r#"a\"b\\c"#);
        assert_eq!(escape("a\nb"), "a\\nb");
        assert_eq!(escape_regex("web.v2"), "web\\\\.v2");
    }

    #[test]
    fn refuses_hostile_label_values_and_names() {
        assert!(check_label("route", "/checkout").is_ok());
        assert!(check_label("route", "x\"} or vector(1) #").unwrap_err().contains("could break"));
        assert!(check_label("bad-name", "x").is_err());
    }

    #[test]
    fn inline_queries_must_parse() {
        assert!(check_inline("sum by ($by) (rate(x{$matchers}[$window]))").is_ok());
        assert!(
            check_inline("sum by ($by) (rate(x{$matchers}[$window])").unwrap_err().contains("does not parse")
        );
    }
}
