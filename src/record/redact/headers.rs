//! Header redaction: secret names, sensitive values, credentials in lists,
//! and the text net over the values that stay.

use std::sync::Arc;

use http::{HeaderMap, HeaderName, HeaderValue};

use super::{text, HeaderVerdicts, Redaction, REDACTED, REDACTED_FORM};

impl Redaction {
    /// Redacts headers: every value of a name the rules match, or of a name
    /// with any value marked sensitive, is replaced by one `[REDACTED]`. In the
    /// other values, a URL's query parameters whose names are secret fields
    /// (a token in a `Referer`, say) are masked. Repeated headers are kept as
    /// they came; only the wire form joins them.
    #[cfg(any(test, fuzzing))]
    pub(crate) fn headers(&self, headers: HeaderMap) -> HeaderMap {
        self.headers_with(headers, |name| self.is_header(name))
    }

    /// [`headers`](Self::headers), with the rules' verdicts on names taken
    /// from (and kept in) `verdicts`: what the writer calls.
    pub(crate) fn headers_cached(
        self: &Arc<Self>,
        headers: HeaderMap,
        verdicts: &mut HeaderVerdicts,
    ) -> HeaderMap {
        self.headers_with(headers, |name| verdicts.is_secret(self, name))
    }

    fn headers_with(
        &self,
        mut headers: HeaderMap,
        mut is_secret: impl FnMut(&HeaderName) -> bool,
    ) -> HeaderMap {
        // One pass over the names, masking in place. A name with a redacted
        // value has all its values redacted into one (the iteration gives a
        // name's values one after another): a list only for such names with
        // more than one value.
        let mut repeated: Vec<HeaderName> = Vec::new();
        // The name of the value before, and whether it was redacted.
        let mut before: Option<(&HeaderName, bool)> = None;
        for (name, value) in headers.iter_mut() {
            let repeat = before.filter(|(b, _)| *b == name);
            let redact = repeat.is_some_and(|(_, redacted)| redacted)
                || value.is_sensitive()
                || is_secret(name);
            if redact {
                if repeat.is_some() && repeated.last() != Some(name) {
                    repeated.push(name.clone());
                }
                *value = HeaderValue::from_static(REDACTED);
            }
            before = Some((name, redact));
        }
        if !repeated.is_empty() {
            headers = without_repeats(headers, &repeated);
        }
        // Secret parameters in URLs (query or fragment), URL user-info and
        // other `name=value` text in the values that stay; credentials in
        // the items of a list that carries them.
        for (name, value) in headers.iter_mut() {
            let bytes = value.as_bytes();
            if bytes == REDACTED.as_bytes() {
                continue;
            }
            if CREDENTIAL_LISTS.contains(&name.as_str()) {
                if let Some(masked) = mask_credential_list(bytes, |w| self.is_field(w)) {
                    *value = HeaderValue::from_bytes(&masked)
                        .unwrap_or(HeaderValue::from_static(REDACTED));
                }
                continue;
            }
            if !text::may_hold_key(bytes) {
                continue;
            }
            // A key needs a `=` or `:` after it, user-info an `@`, each maybe
            // percent-encoded; bearer credentials a blank before them.
            if memchr::memchr3(b'=', b':', b'@', bytes).is_none()
                && memchr::memchr(b'%', bytes).is_none()
                && !(self.bearer && text::has_bearer(bytes))
            {
                continue;
            }
            let masked = self.mask_text_decoding(bytes, REDACTED_FORM);
            if let Some(masked) = masked {
                *value =
                    HeaderValue::from_bytes(&masked).unwrap_or(HeaderValue::from_static(REDACTED));
            }
        }
        headers
    }
}

/// Header lists whose items can carry credentials: `Sec-WebSocket-Protocol`,
/// where browsers, which cannot set `Authorization` on a WebSocket, put
/// bearer tokens (Kubernetes's `base64url.bearer.authorization.k8s.io.<token>`,
/// `bearer.<token>`, or a pair `access_token, <token>`).
const CREDENTIAL_LISTS: &[&str] = &["sec-websocket-protocol"];

/// A `Sec-WebSocket-Protocol` list with each item that carries a credential
/// replaced by `[REDACTED]`: an item with a word that names a credential
/// (`bearer`, `basic`, `jwt`, or a secret name by the rules: `token`,
/// `authorization`, ...), an item that follows one that is only such a name
/// (`access_token, <token>`), and an item that looks like a JWT. Other items
/// (`v1.chat`, `graphql-ws`) stay as sent. `None` when nothing was masked.
fn mask_credential_list(value: &[u8], is_secret: impl Fn(&str) -> bool) -> Option<Vec<u8>> {
    let text = std::str::from_utf8(value).ok();
    let Some(text) = text else {
        // Not text: nothing can be told apart, so nothing is kept.
        return Some(REDACTED.as_bytes().to_vec());
    };
    let mut out = String::with_capacity(text.len());
    let mut masked = false;
    let mut after_name = false;
    for (i, item) in text.split(',').enumerate() {
        let trimmed = item.trim();
        let words = trimmed.split(['.', '-', '_', ' ', '/', ':']);
        let names_credential = words.clone().any(|w| {
            ["bearer", "basic", "jwt"]
                .iter()
                .any(|c| w.eq_ignore_ascii_case(c))
                || is_secret(w)
        });
        let only_a_name = is_secret(trimmed) || trimmed.eq_ignore_ascii_case("bearer");
        let secret = names_credential || after_name || looks_like_jwt(trimmed);
        after_name = only_a_name;
        if i > 0 {
            out.push(',');
        }
        if secret && !trimmed.is_empty() {
            masked = true;
            let lead = &item[..item.len() - item.trim_start().len()];
            out.push_str(lead);
            out.push_str(REDACTED);
        } else {
            out.push_str(item);
        }
    }
    masked.then(|| out.into_bytes())
}

/// A JWT (or JWS): three base64url parts, the first a JSON header (`eyJ`).
fn looks_like_jwt(item: &str) -> bool {
    item.starts_with("eyJ")
        && item.split('.').count() == 3
        && item
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'='))
}

/// `headers` with each name in `names` holding one `[REDACTED]` value (in the
/// place of its first), in a new map: `HeaderMap::insert` would do the same
/// but keep the list the dropped values were in allocated, and the writer
/// reuses maps (a client sending a secret header a thousand times would leave
/// a map holding that list).
fn without_repeats(headers: HeaderMap, names: &[HeaderName]) -> HeaderMap {
    let mut out = HeaderMap::with_capacity(headers.keys_len());
    let mut last: Option<HeaderName> = None;
    for (name, value) in headers {
        // `None`: another value of the name before.
        match (name, &last) {
            (Some(name), _) => {
                let value = if names.contains(&name) {
                    HeaderValue::from_static(REDACTED)
                } else {
                    value
                };
                out.append(name.clone(), value);
                last = Some(name);
            }
            (None, Some(name)) if !names.contains(name) => {
                out.append(name.clone(), value);
            }
            (None, _) => {}
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn set_cookie_values_are_kept_apart_when_not_redacted() {
        let r = Redaction::none();
        let mut h = HeaderMap::new();
        h.append("set-cookie", HeaderValue::from_static("a=1"));
        h.append("set-cookie", HeaderValue::from_static("b=2"));
        h.append("vary", HeaderValue::from_static("x"));
        h.append("vary", HeaderValue::from_static("y"));
        let out = r.headers(h);
        let cookies: Vec<_> = out.get_all("set-cookie").iter().collect();
        assert_eq!(cookies, ["a=1", "b=2"]);
        // Redaction never joins: the wire form does (see `record::wire`).
        let vary: Vec<_> = out.get_all("vary").iter().collect();
        assert_eq!(vary, ["x", "y"]);
    }

    #[test]
    fn a_name_with_one_sensitive_value_is_redacted_whole_into_one_value() {
        let r = Redaction::none();
        let sensitive = || {
            let mut v = HeaderValue::from_static("secret");
            v.set_sensitive(true);
            v
        };
        // The sensitive value first, last, in the middle, alone; names around.
        let many = [true; 1000];
        let layouts: [&[bool]; 6] = [
            &[true, false],
            &[false, true],
            &[false, true, false],
            &[true],
            &[true, true, true],
            &many,
        ];
        for layout in layouts {
            let mut h = HeaderMap::new();
            h.append("accept", HeaderValue::from_static("a"));
            for &s in layout {
                let v = if s {
                    sensitive()
                } else {
                    HeaderValue::from_static("clear")
                };
                h.append("x-key", v);
            }
            h.append("vary", HeaderValue::from_static("y"));
            h.append("vary", HeaderValue::from_static("z"));
            let out = r.headers(h);
            let values: Vec<_> = out.get_all("x-key").iter().collect();
            assert_eq!(values, [REDACTED], "{layout:?}");
            assert_eq!(out.get("accept").unwrap(), "a");
            let vary: Vec<_> = out.get_all("vary").iter().collect();
            assert_eq!(vary, ["y", "z"], "a clear name keeps its values");
            let names: Vec<_> = out.keys().map(HeaderName::as_str).collect();
            assert_eq!(names, ["accept", "x-key", "vary"], "in order");
            assert_eq!(out.len(), 4, "{}", layout.len());
        }
    }

    #[test]
    fn headers_are_redacted_not_joined() {
        let r = Redaction::default();
        let mut h = HeaderMap::new();
        h.insert("authorization", HeaderValue::from_static("Bearer abc"));
        h.append("accept", HeaderValue::from_static("a"));
        h.append("accept", HeaderValue::from_static("b"));
        h.append("cookie", HeaderValue::from_static("s=1"));
        h.append("cookie", HeaderValue::from_static("t=2"));
        let mut sensitive = HeaderValue::from_static("x");
        sensitive.set_sensitive(true);
        h.insert("x-custom", sensitive);
        let out = r.headers(h);
        assert_eq!(out.get("authorization").unwrap(), REDACTED);
        assert_eq!(out.get("cookie").unwrap(), REDACTED);
        assert_eq!(out.get_all("cookie").iter().count(), 1);
        let accept: Vec<_> = out.get_all("accept").iter().collect();
        assert_eq!(accept, ["a", "b"]);
        assert_eq!(out.get("x-custom").unwrap(), REDACTED);
        let record = crate::UsageRecord {
            response_headers: out,
            ..crate::UsageRecord::default()
        };
        let wire = serde_json::to_value(&record).unwrap();
        assert_eq!(wire["responseHeaders"]["accept"], "a, b");
        assert_eq!(wire["responseHeaders"]["cookie"], REDACTED);
    }
}
