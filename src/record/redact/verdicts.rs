//! [`HeaderVerdicts`]: the header rules' verdicts on the names a writer saw
//! lately, so that a name seen again costs a compare instead of a match.

use std::sync::Arc;

use http::HeaderName;

use super::Redaction;

/// Slots of the cache: more than the distinct header names of most APIs'
/// requests and responses together.
const SLOTS: usize = 64;

/// The header rules' verdicts (secret or not) on the names seen lately.
///
/// A writer sees the same few dozen header names again and again; matching a
/// name against the rules scans it (a few hundred instructions in the overhead
/// probe), looking it up here compares it (a few dozen). Direct-mapped by the
/// name's length and last byte: a name that lands on a taken slot replaces
/// it, so a client that sends ever new names costs one match per name, as
/// with no cache, and the cache never holds more than 64 names. The verdicts
/// are of one [`Redaction`], held here, so that they are dropped when another
/// one is asked about.
#[derive(Default)]
pub(crate) struct HeaderVerdicts {
    rules: Option<Arc<Redaction>>,
    slots: Vec<Option<(HeaderName, bool)>>,
}

impl HeaderVerdicts {
    /// Whether `redaction`'s header rules take `name` for a secret.
    pub(crate) fn is_secret(&mut self, redaction: &Arc<Redaction>, name: &HeaderName) -> bool {
        if !self
            .rules
            .as_ref()
            .is_some_and(|r| Arc::ptr_eq(r, redaction))
        {
            self.rules = Some(Arc::clone(redaction));
            self.slots.clear();
            self.slots.resize(SLOTS, None);
        }
        let bytes = name.as_str().as_bytes();
        let slot = (bytes.len() * 31 + usize::from(bytes.last().copied().unwrap_or(0))) % SLOTS;
        if let Some((seen, verdict)) = &self.slots[slot] {
            if seen == name {
                return *verdict;
            }
        }
        let verdict = redaction.is_header(name);
        self.slots[slot] = Some((name.clone(), verdict));
        verdict
    }
}

impl std::fmt::Debug for HeaderVerdicts {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HeaderVerdicts")
            .field("cached", &self.slots.iter().flatten().count())
            .finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::record::NameRules;

    #[test]
    fn verdicts_are_the_rules_verdicts_and_follow_a_change_of_rules() {
        let a = Arc::new(Redaction::default());
        let b = Arc::new(a.with_headers(|h| h.add_exact(["x-request-id"])));
        let mut cache = HeaderVerdicts::default();
        // Enough names that slots are shared and replaced.
        let names: Vec<HeaderName> = (0..200)
            .map(|i| HeaderName::try_from(format!("x-h{i}")).unwrap())
            .chain(
                [
                    "authorization",
                    "cookie",
                    "x-request-id",
                    "content-type",
                    "x-api-key",
                ]
                .map(HeaderName::from_static),
            )
            .collect();
        for round in 0..3 {
            for rules in [&a, &b] {
                for name in &names {
                    assert_eq!(
                        cache.is_secret(rules, name),
                        rules.is_header(name),
                        "{name} in round {round}"
                    );
                }
            }
        }
        assert!(cache.is_secret(&b, &HeaderName::from_static("x-request-id")));
        assert!(!cache.is_secret(&a, &HeaderName::from_static("x-request-id")));
        let none = Arc::new(Redaction::new(NameRules::default(), NameRules::default()));
        assert!(!cache.is_secret(&none, &HeaderName::from_static("authorization")));
    }
}
