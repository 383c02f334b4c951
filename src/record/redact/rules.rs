//! [`NameRules`]: which header, parameter and field names are secret.

/// Names to redact: exact names and substring patterns, both compared ASCII
/// case-insensitively (kept lower-cased).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct NameRules {
    exact: Vec<String>,
    patterns: Vec<String>,
}

impl NameRules {
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
        self.exact.is_empty() && self.patterns.is_empty()
    }

    /// Whether `name` is one to redact: equal to an exact name, or containing
    /// a pattern, ASCII case-insensitively. No allocation.
    pub(super) fn matches(&self, name: &str) -> bool {
        let name = name.as_bytes();
        self.exact
            .iter()
            .any(|e| e.as_bytes().eq_ignore_ascii_case(name))
            || self.patterns.iter().any(|p| {
                let p = p.as_bytes();
                name.len() >= p.len() && name.windows(p.len()).any(|w| w.eq_ignore_ascii_case(p))
            })
    }

    /// Every name and pattern, lower-cased: what the body prefilter looks for.
    pub(super) fn needles(&self) -> Vec<String> {
        let mut all: Vec<String> = self.exact.iter().chain(&self.patterns).cloned().collect();
        all.sort_unstable();
        all.dedup();
        all
    }
}
