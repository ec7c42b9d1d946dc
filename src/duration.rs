//! Human-readable durations (`30s`, `5m`, `1h30m`) for policies, settings and records.

use std::time::Duration;

/// Parses a duration such as `30s`, `5m` or `1h30m`; zero is rejected.
pub fn parse(text: &str) -> Result<Duration, String> {
    let d = humantime::parse_duration(text.trim())
        .map_err(|e| format!("`{text}` is not a duration ({e}); write e.g. 30s, 5m, 1h30m"))?;
    if d.is_zero() {
        return Err(format!("`{text}` is zero; a duration must be positive"));
    }
    Ok(d)
}

/// Formats a duration the way `parse` reads it.
pub fn format(d: Duration) -> String {
    humantime::format_duration(d).to_string()
}

/// serde helpers: a `Duration` field written as `30s`.
pub mod serde_text {
    use std::time::Duration;

    use serde::{Deserialize, Deserializer, Serializer};

    /// Writes the duration as text.
    pub fn serialize<S: Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&super::format(*d))
    }

    /// Reads the duration from text.
    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
        let text = String::deserialize(d)?;
        super::parse(&text).map_err(serde::de::Error::custom)
    }
}

/// serde helpers: an `Option<Duration>` field written as `30s` when present.
pub mod serde_option {
    use std::time::Duration;

    use serde::{Deserialize, Deserializer, Serializer};

    /// Writes the duration as text, or nothing.
    pub fn serialize<S: Serializer>(d: &Option<Duration>, s: S) -> Result<S::Ok, S::Error> {
        match d {
            Some(d) => s.serialize_some(&super::format(*d)),
            None => s.serialize_none(),
        }
    }

    /// Reads the duration from text, if present.
    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Duration>, D::Error> {
        let text = Option::<String>::deserialize(d)?;
        text.map(|t| super::parse(&t).map_err(serde::de::Error::custom)).transpose()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_common_forms_and_rejects_bad_ones() {
        assert_eq!(parse("30s"), Ok(Duration::from_secs(30)));
        assert_eq!(parse("1h30m"), Ok(Duration::from_secs(5400)));
        assert_eq!(parse("250ms"), Ok(Duration::from_millis(250)));
        assert!(parse("five minutes").unwrap_err().contains("not a duration"));
        assert!(parse("0s").unwrap_err().contains("zero"));
    }

    #[test]
    fn format_round_trips() {
        for d in [Duration::from_secs(90), Duration::from_millis(1500)] {
            assert_eq!(parse(&format(d)), Ok(d));
        }
    }
}
