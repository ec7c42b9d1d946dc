//! Safe PromQL building: label values are escaped, names and inline queries are checked,
//! so a value taken from a policy or a workload can never change a query's structure.

/// The placeholders a template or inline query may use, and what each stands for.
#[derive(Clone, Copy, Debug, Default)]
pub struct Placeholders<'a> {
    /// `$matchers`: the label matchers selecting the batch's workloads (and extra labels),
    /// already escaped.
    pub matchers: &'a str,
    /// `$namespaces`: a regex alternation of the batch's namespaces, escaped.
    pub namespaces: &'a str,
    /// `$workloads`: a regex alternation of the batch's workload names, escaped.
    pub workloads: &'a str,
    /// `$extra`: the metric's extra label matchers, each preceded by `, ` (or empty).
    pub extra: &'a str,
    /// `$window`: the analysis interval, as a PromQL duration.
    pub window: &'a str,
    /// `$range`: the range gauges are read over (at least four scrape intervals).
    pub range: &'a str,
    /// `$lookback`: how far back a counter's last sample is looked for.
    pub lookback: &'a str,
    /// `$by`: the grouping labels that tell the workloads apart.
    pub by: &'a str,
}

impl Placeholders<'_> {
    fn value(&self, name: &str) -> Option<&str> {
        Some(match name {
            "matchers" => self.matchers,
            "namespaces" => self.namespaces,
            "workloads" => self.workloads,
            "extra" => self.extra,
            "window" => self.window,
            "range" => self.range,
            "lookback" => self.lookback,
            "by" => self.by,
            _ => return None,
        })
    }
}

/// Fills every placeholder of `query` in one pass: substituted text is never scanned
/// again, so a value that happens to contain `$window` stays as it is. A `$` that does
/// not start a known placeholder (such as `label_replace`'s `$1`) is kept.
pub fn fill(query: &str, values: &Placeholders<'_>) -> String {
    let mut out = String::with_capacity(query.len() * 2);
    let mut rest = query;
    while let Some(at) = rest.find('$') {
        out.push_str(&rest[..at]);
        let after = &rest[at + 1..];
        let name_len = after.find(|c: char| !c.is_ascii_lowercase()).unwrap_or(after.len());
        match values.value(&after[..name_len]) {
            Some(value) => {
                out.push_str(value);
                rest = &after[name_len..];
            }
            None => {
                out.push('$');
                rest = after;
            }
        }
    }
    out.push_str(rest);
    out
}

/// Placeholder values that render a query for checking: one workload, one namespace.
pub fn example_placeholders() -> Placeholders<'static> {
    Placeholders {
        matchers: "workload=\"x\", namespace=\"y\"",
        namespaces: "y",
        workloads: "x",
        extra: "",
        window: "1m",
        range: "2m",
        lookback: "5m",
        by: "workload, namespace",
    }
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

/// The label names that the selectors of `query` match on (`__name__` included).
pub fn matcher_names(query: &str) -> Result<std::collections::BTreeSet<String>, String> {
    use promql_parser::parser::Expr;
    struct Names(std::collections::BTreeSet<String>);
    impl promql_parser::util::ExprVisitor for Names {
        type Error = ();
        fn pre_visit(&mut self, expr: &Expr) -> Result<bool, ()> {
            let selector = match expr {
                Expr::VectorSelector(vs) => Some(vs),
                Expr::MatrixSelector(ms) => Some(&ms.vs),
                _ => None,
            };
            if let Some(vs) = selector {
                self.0.extend(vs.matchers.matchers.iter().map(|m| m.name.clone()));
                self.0.extend(vs.matchers.or_matchers.iter().flatten().map(|m| m.name.clone()));
                self.0.insert("__name__".into());
            }
            Ok(true)
        }
    }
    let expr = promql_parser::parser::parse(query).map_err(|e| e.to_string())?;
    let mut names = Names(Default::default());
    promql_parser::util::walk_expr(&mut names, &expr).map_err(|()| "unreachable".to_string())?;
    Ok(names.0)
}

/// Checks that an inline query parses once its placeholders are filled.
pub fn check_inline(query: &str) -> Result<(), String> {
    if query.trim().is_empty() {
        return Err("the query is empty".into());
    }
    let filled = fill(query, &example_placeholders());
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
    fn placeholders_are_filled_in_one_pass() {
        let values = Placeholders {
            matchers: "route=\"$window\"",
            window: "30s",
            by: "workload",
            ..Placeholders::default()
        };
        assert_eq!(
            fill(
                "sum by ($by) (rate(x{$matchers}[$window])) + label_replace(y, \"a\", \"$1\", \"b\", \"(.*)\")",
                &values
            ),
            "sum by (workload) (rate(x{route=\"$window\"}[30s])) + label_replace(y, \"a\", \"$1\", \"b\", \"(.*)\")",
            "a substituted value is not scanned again, and $1 is not a placeholder"
        );
        assert_eq!(fill("$unknown $", &values), "$unknown $");
    }

    #[test]
    fn inline_queries_must_parse() {
        assert!(check_inline("sum by ($by) (rate(x{$matchers}[$window]))").is_ok());
        assert!(
            check_inline("sum by ($by) (rate(x{$matchers}[$window])").unwrap_err().contains("does not parse")
        );
    }
}
