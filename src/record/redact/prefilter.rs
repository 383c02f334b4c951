//! The body prefilter: whether a text can hold a secret name at all, in one
//! SIMD pass, so that most bodies skip the exact scans.

use super::{text, Redaction};

/// A multi-substring search for the lower-cased field names: Teddy (SIMD,
/// every name in one pass) where the CPU has it, else one `memmem` pass per name.
#[derive(Debug, Clone)]
pub(super) enum KeySearch {
    Packed {
        searcher: aho_corasick::packed::Searcher,
        longest: usize,
    },
    Finders(Vec<memchr::memmem::Finder<'static>>),
}

impl KeySearch {
    /// `names` lower-cased, without duplicates.
    pub(super) fn new(mut names: Vec<String>) -> Self {
        // A name that contains another is found through the shorter one
        // (`access_token` through `token`): fewer names, faster search.
        let all = names.clone();
        names.retain(|n| !all.iter().any(|m| m != n && n.contains(m.as_str())));
        let longest = names.iter().map(String::len).max().unwrap_or(0);
        let packed = aho_corasick::packed::Config::new()
            .builder()
            .extend(names.iter())
            .build();
        match packed {
            Some(searcher) if !names.is_empty() => Self::Packed { searcher, longest },
            _ => Self::Finders(
                names
                    .iter()
                    .map(|n| memchr::memmem::Finder::new(n.as_bytes()).into_owned())
                    .collect(),
            ),
        }
    }

    fn longest(&self) -> usize {
        match self {
            Self::Packed { longest, .. } => *longest,
            Self::Finders(finders) => finders.iter().map(|f| f.needle().len()).max().unwrap_or(0),
        }
    }

    fn is_in(&self, haystack: &[u8]) -> bool {
        match self {
            Self::Packed { searcher, .. } => searcher.find(haystack).is_some(),
            Self::Finders(finders) => finders.iter().any(|f| f.find(haystack).is_some()),
        }
    }
}

impl Redaction {
    /// A fast, conservative test for the scans: whether any field name (or
    /// `bearer`, see `new`) occurs anywhere in the body (ASCII
    /// case-insensitively), or a URL with user-info, or the body has escapes (`\`, `%`), which could spell a
    /// name in another way. A false yes costs only the exact scan.
    pub(super) fn may_hold_field_key(&self, body: &[u8]) -> bool {
        memchr::memchr2(b'\\', b'%', body).is_some()
            || self.holds_field_name(body)
            || text::has_userinfo(body)
    }

    /// Whether any field name or pattern occurs in `body`, ASCII
    /// case-insensitively: one pass of the multi-substring search.
    pub(super) fn holds_field_name(&self, body: &[u8]) -> bool {
        // Lower-case into a stack window, overlapping by the longest name less
        // one byte, so no name is split between windows and nothing is allocated.
        const WINDOW: usize = 512;
        let longest = self.keys.longest();
        if longest == 0 {
            return false;
        }
        if longest >= WINDOW / 2 {
            let lower = body.to_ascii_lowercase();
            return self.keys.is_in(&lower);
        }
        let mut buf = [0u8; WINDOW];
        let mut start = 0;
        loop {
            let end = (start + WINDOW).min(body.len());
            let window = &mut buf[..end - start];
            window.copy_from_slice(&body[start..end]);
            window.make_ascii_lowercase();
            if self.keys.is_in(window) {
                return true;
            }
            if end == body.len() {
                return false;
            }
            start = end - (longest - 1);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn key_search_agrees_with_a_plain_substring_test() {
        let names: Vec<String> = ["token", "access_token", "password"]
            .into_iter()
            .map(str::to_owned)
            .collect();
        // Teddy where the CPU has it, else the same finders as below.
        let packed = KeySearch::new(names.clone());
        let finders = KeySearch::Finders(
            names
                .iter()
                .map(|n| memchr::memmem::Finder::new(n.as_bytes()).into_owned())
                .collect(),
        );
        let hays = [
            "",
            "x",
            "tok",
            "token",
            "a_token_b",
            "passwor",
            "{\"password\":1}",
            "the quick brown fox jumps over the lazy dog, twice over: no names",
        ];
        for hay in hays {
            for pad in [0, 1, 15, 16, 31, 32, 33, 100] {
                let hay = format!("{}{hay}", " ".repeat(pad));
                let want = names.iter().any(|n| hay.contains(n.as_str()));
                assert_eq!(packed.is_in(hay.as_bytes()), want, "{hay:?}");
                assert_eq!(finders.is_in(hay.as_bytes()), want, "{hay:?}");
            }
        }
    }

    #[test]
    fn key_prefilter_finds_keys_and_skips_values() {
        let r = Redaction::default();
        assert!(r.may_hold_field_key(br#"{"a": {"PassWord" : 1}}"#));
        assert!(r.may_hold_field_key(br#"{"k\u0061": 1}"#));
        assert!(!r.may_hold_field_key(br#"{"note": "pass word", "url": "http://tok"}"#));
        // A name inside a value or a longer key is a (harmless) false yes.
        assert!(r.may_hold_field_key(br#"{"my_token": 2}"#));
        // Names across window boundaries are found, at every offset.
        for pad in 0..600 {
            let mut body = vec![b' '; pad];
            body.extend_from_slice(br#"{"Refresh_Token": 1}"#);
            body.extend(std::iter::repeat_n(b' ', 700));
            assert!(r.may_hold_field_key(&body), "missed at offset {pad}");
            let clean = String::from_utf8(body)
                .unwrap()
                .replace("Refresh_Token", "refresh_tokem");
            assert!(
                !r.may_hold_field_key(clean.as_bytes()),
                "false hit at offset {pad}"
            );
        }
    }
}
