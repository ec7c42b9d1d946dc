//! Name validation as the API server does it (k8s.io/apimachinery/pkg/util/validation):
//! each rule returns the reason a name breaks it, worded as the real server words it.

use super::resources::NameRule;

/// Why `name` is not a valid name under `rule`, if it is not.
pub fn name(rule: NameRule, name: &str) -> Option<String> {
    match rule {
        NameRule::Subdomain => subdomain(name),
        NameRule::Label => label(name),
        NameRule::Rfc1035 => rfc1035(name),
        NameRule::PathSegment => path_segment(name),
    }
}

fn alnum_lower(c: char) -> bool {
    c.is_ascii_lowercase() || c.is_ascii_digit()
}

/// An RFC 1123 subdomain: at most 253 characters, lowercase alphanumerics, `-` and `.`,
/// alphanumeric at both ends.
pub fn subdomain(name: &str) -> Option<String> {
    let ok = !name.is_empty()
        && name.len() <= 253
        && name.split('.').all(|part| {
            !part.is_empty()
                && part.starts_with(alnum_lower)
                && part.ends_with(alnum_lower)
                && part.chars().all(|c| alnum_lower(c) || c == '-')
        });
    (!ok).then(|| {
        "a lowercase RFC 1123 subdomain must consist of lower case alphanumeric characters, '-' or '.', \
         and must start and end with an alphanumeric character (e.g. 'example.com', regex used for \
         validation is '[a-z0-9]([-a-z0-9]*[a-z0-9])?(\\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*')"
            .to_string()
    })
}

/// An RFC 1123 label: at most 63 characters, lowercase alphanumerics and `-`.
fn label(name: &str) -> Option<String> {
    let ok = !name.is_empty()
        && name.len() <= 63
        && name.starts_with(alnum_lower)
        && name.ends_with(alnum_lower)
        && name.chars().all(|c| alnum_lower(c) || c == '-');
    (!ok).then(|| {
        "a lowercase RFC 1123 label must consist of lower case alphanumeric characters or '-', and must \
         start and end with an alphanumeric character (e.g. 'my-name',  or '123-abc', regex used for \
         validation is '[a-z0-9]([-a-z0-9]*[a-z0-9])?')"
            .to_string()
    })
}

/// An RFC 1035 label: as an RFC 1123 label, starting with a letter.
fn rfc1035(name: &str) -> Option<String> {
    let ok = label(name).is_none() && name.starts_with(|c: char| c.is_ascii_lowercase());
    (!ok).then(|| {
        "a DNS-1035 label must consist of lower case alphanumeric characters or '-', start with an \
         alphabetic character, and end with an alphanumeric character (e.g. 'my-name',  or 'abc-123', \
         regex used for validation is '[a-z]([-a-z0-9]*[a-z0-9])?')"
            .to_string()
    })
}

/// Any name that can be a path segment.
fn path_segment(name: &str) -> Option<String> {
    if name.is_empty() {
        return Some("name or generateName is required".into());
    }
    if name == "." || name == ".." {
        return Some(format!("may not be '{name}'"));
    }
    name.contains(['/', '%'])
        .then(|| format!("may not contain '{}'", if name.contains('/') { "/" } else { "%" }))
}
