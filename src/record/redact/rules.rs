//! [`NameRules`]: which header, parameter and field names are secret.

use super::words;

/// Names to redact: the default rule by word ([`words`]), exact names and
/// substring patterns, the last two compared ASCII case-insensitively (kept
/// lower-cased). `Default` is no rule at all; [`NameRules::defaults`] is the
/// rule by word.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct NameRules {
    /// Whether the default rule by word applies.
    words: bool,
    exact: Vec<String>,
    patterns: Vec<String>,
}

impl NameRules {
    /// The default rules: secret names by word, nothing else.
    pub(crate) fn defaults() -> Self {
        Self {
            words: true,
            ..Self::default()
        }
    }

    #[cfg(test)]
    pub(super) fn of_patterns(patterns: &[&str]) -> Self {
        let mut rules = Self::default();
        rules.add_patterns(patterns.iter().copied());
        rules
    }

    fn push(list: &mut Vec<String>, name: &str) {
        let name = name.to_ascii_lowercase();
        if !name.is_empty() && !list.contains(&name) {
            list.push(name);
        }
    }

    pub(crate) fn add_exact<'a>(&mut self, names: impl IntoIterator<Item = &'a str>) {
        names
            .into_iter()
            .for_each(|n| Self::push(&mut self.exact, n));
    }

    pub(crate) fn add_patterns<'a>(&mut self, patterns: impl IntoIterator<Item = &'a str>) {
        patterns
            .into_iter()
            .for_each(|p| Self::push(&mut self.patterns, p));
    }

    pub(super) fn is_empty(&self) -> bool {
        !self.words && self.exact.is_empty() && self.patterns.is_empty()
    }

    /// The rules, ready to test names against.
    pub(super) fn matcher(&self) -> Matcher {
        let mut bigrams = vec![0u64; 65536 / 64].into_boxed_slice();
        let mut short = Vec::new();
        for p in &self.patterns {
            match p.as_bytes() {
                [a, b, ..] => {
                    let i = bigram(*a, *b);
                    bigrams[i / 64] |= 1 << (i % 64);
                }
                [a] => short.push(*a),
                [] => {}
            }
        }
        Matcher {
            words: self.words,
            exact: self.exact.clone(),
            patterns: self.patterns.iter().map(|p| p.as_bytes().into()).collect(),
            bigrams,
            short,
        }
    }

    /// Every name and pattern, lower-cased, and the default rule's
    /// [needles](words::NEEDLES) when it applies: what the body prefilter and
    /// the text nets look for.
    pub(super) fn needles(&self) -> Vec<String> {
        let defaults: &[&str] = if self.words { words::NEEDLES } else { &[] };
        let mut all: Vec<String> = self
            .exact
            .iter()
            .chain(&self.patterns)
            .cloned()
            .chain(defaults.iter().map(|n| (*n).to_owned()))
            .collect();
        all.sort_unstable();
        all.dedup();
        all
    }
}

/// The index of two bytes, lower-cased, in [`Matcher::bigrams`].
fn bigram(a: u8, b: u8) -> usize {
    usize::from(a.to_ascii_lowercase()) << 8 | usize::from(b.to_ascii_lowercase())
}

/// [`NameRules`] compiled for names, which are short: a bitmap of the patterns'
/// first two bytes, so that a name is scanned once and a pattern compared only
/// where its first two bytes stand (cheaper, for names of a few dozen bytes,
/// than a general multi-pattern automaton, measured in the overhead probe).
#[derive(Debug, Clone)]
pub(super) struct Matcher {
    /// Whether the default rule by word applies.
    words: bool,
    exact: Vec<String>,
    patterns: Vec<Box<[u8]>>,
    /// Bit `bigram(a, b)` is set when a pattern starts with `a, b`.
    bigrams: Box<[u64]>,
    /// Patterns of one byte.
    short: Vec<u8>,
}

impl Matcher {
    /// Whether `name` is one to redact: secret by the default rule (when it
    /// applies), equal to an exact name, or containing a pattern, ASCII
    /// case-insensitively. No allocation.
    pub(super) fn matches(&self, name: &str) -> bool {
        (self.words && words::is_secret_name(name))
            || self.exact.iter().any(|e| e.eq_ignore_ascii_case(name))
            || self.matches_pattern(name.as_bytes())
    }

    /// [`matches`](Self::matches) for a key found in free text (`name=`,
    /// `"name":`), where an exact name also counts when the key only holds it
    /// (`x:password`, `db.pin`): text has no fixed names to compare.
    pub(super) fn matches_in_text(&self, key: &str) -> bool {
        self.matches(key)
            || self.exact.iter().any(|e| {
                key.len() > e.len()
                    && key
                        .as_bytes()
                        .windows(e.len())
                        .any(|w| w.eq_ignore_ascii_case(e.as_bytes()))
            })
    }

    /// Whether `name` holds a pattern. One pass over the name, each byte
    /// lower-cased once; a pattern is compared only where the name's two
    /// bytes are its first two.
    fn matches_pattern(&self, name: &[u8]) -> bool {
        if !self.short.is_empty()
            && name
                .iter()
                .any(|b| self.short.contains(&b.to_ascii_lowercase()))
        {
            return true;
        }
        let Some((first, rest)) = name.split_first() else {
            return false;
        };
        let mut prev = first.to_ascii_lowercase();
        for (i, b) in rest.iter().enumerate() {
            let cur = b.to_ascii_lowercase();
            let bit = usize::from(prev) << 8 | usize::from(cur);
            if self.bigrams[bit / 64] & (1 << (bit % 64)) != 0 {
                // The pattern would start at `i`, the index of `prev`.
                let at = &name[i..];
                let found = self.patterns.iter().any(|p| {
                    p.len() >= 2
                        && p[0] == prev
                        && p[1] == cur
                        && at.len() >= p.len()
                        && at[2..p.len()].eq_ignore_ascii_case(&p[2..])
                });
                if found {
                    return true;
                }
            }
            prev = cur;
        }
        false
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_match_exactly_or_by_pattern_ignoring_ascii_case() {
        let mut rules = NameRules::of_patterns(&["token", "api-key"]);
        rules.add_exact(["PIN"]);
        let m = rules.matcher();
        for yes in [
            "token",
            "X-Auth-Token",
            "id_token",
            "x-api-key",
            "pin",
            "Pin",
        ] {
            assert!(m.matches(yes), "{yes}");
        }
        for no in ["", "t", "tok", "api_key", "pins", "spin", "opinion"] {
            assert!(!m.matches(no), "{no}");
        }
        assert!(!NameRules::default().matcher().matches("token"));
        let one = NameRules::of_patterns(&["x"]).matcher();
        assert!(one.matches("X-Y") && !one.matches("abc"));
    }

    proptest::proptest! {
        #[test]
        fn matches_as_a_lower_cased_substring_search_would(
            name in "[a-zA-Z_-]{0,24}(TOKEN|auth|Se|co)?[a-z-]{0,6}",
        ) {
            let patterns = ["auth", "api-key", "secret", "session", "token", "to", "cookie"];
            let m = NameRules::of_patterns(&patterns).matcher();
            let lower = name.to_ascii_lowercase();
            let naive = patterns.iter().any(|p| lower.contains(p));
            proptest::prop_assert_eq!(m.matches(&name), naive, "{}", name);
        }
    }
}
