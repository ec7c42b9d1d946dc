//! "Did you mean …?": the nearest valid key or value for a typo, so that a problem says
//! what to write instead.

/// The candidate closest to `word`, if one is close enough to be the word meant: within
/// a third of its length in edits (at least one), case aside.
pub fn nearest<'a>(word: &str, candidates: impl IntoIterator<Item = &'a str>) -> Option<&'a str> {
    let lower = word.to_lowercase();
    let limit = (word.chars().count() / 3).max(1);
    candidates
        .into_iter()
        .map(|c| (strsim::damerau_levenshtein(&lower, &c.to_lowercase()), c))
        .filter(|(d, _)| *d <= limit)
        .min_by_key(|(d, _)| *d)
        .map(|(_, c)| c)
}

/// ` (did you mean `x`?)` for the nearest candidate, or nothing.
pub fn did_you_mean<'a>(word: &str, candidates: impl IntoIterator<Item = &'a str>) -> String {
    mention(nearest(word, candidates))
}

/// ` (did you mean `x`?)` for a word already found, or nothing.
pub fn mention(meant: Option<&str>) -> String {
    meant.map(|c| format!(" (did you mean `{c}`?)")).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_typo_finds_the_word_meant_and_a_stranger_finds_nothing() {
        let keys = ["router", "steps", "stepDuration", "gates", "gateTimeout"];
        assert_eq!(nearest("stepDuraton", keys), Some("stepDuration"));
        assert_eq!(nearest("ngnix", ["gateway-api", "istio", "replica", "nginx"]), Some("nginx"));
        assert_eq!(nearest("matchLabel", ["matchLabels", "matchExpressions"]), Some("matchLabels"));
        assert_eq!(
            nearest("sequentail", ["threshold", "ratio", "mann-whitney", "sequential"]),
            Some("sequential")
        );
        assert_eq!(nearest("colour", keys), None);
        assert_eq!(did_you_mean("xyz", keys), "");
    }
}
