//! The JSON masking scan: a tolerant scan, not a parse, so that it also masks
//! inside a body cut at the capture limit.

use std::borrow::Cow;

use super::REDACTED_JSON;

/// Masks, at any depth, the value of every object member whose key `is_secret`,
/// and replaces every other string value (with its quotes) by what
/// `mask_string` gives for it, if anything. Returns `None` when nothing was
/// masked. Tolerates invalid and truncated JSON: it never fails, and a value
/// cut short by the end of input is masked to the end.
pub(crate) fn mask_json(
    input: &[u8],
    is_secret: impl Fn(&str) -> bool,
    mask_string: impl Fn(&[u8]) -> Option<Vec<u8>>,
) -> Option<Vec<u8>> {
    let n = input.len();
    let mut out: Vec<u8> = Vec::new();
    let mut copied = 0;
    let mut masked = false;
    // Only whether the innermost container is an object matters.
    let mut in_object: Vec<bool> = Vec::new();
    let mut expect_key = false;
    let mut i = 0;
    while i < n {
        match input[i] {
            b'{' => {
                in_object.push(true);
                expect_key = true;
                i += 1;
            }
            b'[' => {
                in_object.push(false);
                expect_key = false;
                i += 1;
            }
            b'}' | b']' => {
                in_object.pop();
                expect_key = false;
                i += 1;
            }
            b',' => {
                expect_key = in_object.last().copied().unwrap_or(false);
                i += 1;
            }
            b'"' => {
                let end = string_end(input, i);
                if expect_key {
                    expect_key = false;
                    let key_is_secret = decode_key(&input[i..end]).is_some_and(|k| is_secret(&k));
                    i = end;
                    if key_is_secret {
                        // Skip to the value, past the colon.
                        let mut j = skip_ws(input, i);
                        if j < n && input[j] == b':' {
                            j = skip_ws(input, j + 1);
                        }
                        if j >= n {
                            // Cut before the value: nothing to mask.
                            i = j;
                            continue;
                        }
                        let value_end = value_end(input, j);
                        out.extend_from_slice(&input[copied..j]);
                        out.extend_from_slice(REDACTED_JSON);
                        copied = value_end;
                        masked = true;
                        i = value_end;
                    }
                } else {
                    if let Some(replacement) = mask_string(&input[i..end]) {
                        out.extend_from_slice(&input[copied..i]);
                        out.extend_from_slice(&replacement);
                        copied = end;
                        masked = true;
                    }
                    i = end;
                }
            }
            _ => i += 1,
        }
    }
    if !masked {
        return None;
    }
    out.extend_from_slice(&input[copied..]);
    Some(out)
}

fn skip_ws(input: &[u8], mut i: usize) -> usize {
    while i < input.len() && input[i].is_ascii_whitespace() {
        i += 1;
    }
    i
}

/// The index just past the string starting at `start` (a `"`), or the end of input.
fn string_end(input: &[u8], start: usize) -> usize {
    let mut i = start + 1;
    while i < input.len() {
        match input[i] {
            b'\\' => i += 2,
            b'"' => return i + 1,
            _ => i += 1,
        }
    }
    input.len()
}

/// The index just past the JSON value starting at `start`, or the end of
/// input: a string to its closing quote, an object or array to its matching
/// bracket (strings inside skipped), anything else to a `,`, `}`, `]` or blank.
pub(super) fn value_end(input: &[u8], start: usize) -> usize {
    match input[start] {
        b'"' => string_end(input, start),
        b'{' | b'[' => {
            let mut depth = 0usize;
            let mut i = start;
            while i < input.len() {
                match input[i] {
                    b'"' => {
                        i = string_end(input, i);
                        continue;
                    }
                    b'{' | b'[' => depth += 1,
                    b'}' | b']' => {
                        depth -= 1;
                        if depth == 0 {
                            return i + 1;
                        }
                    }
                    _ => {}
                }
                i += 1;
            }
            input.len()
        }
        _ => {
            let mut i = start;
            while i < input.len()
                && !matches!(input[i], b',' | b'}' | b']')
                && !input[i].is_ascii_whitespace()
            {
                i += 1;
            }
            i
        }
    }
}

/// The text of a quoted key, escapes decoded. `None` when it is cut or invalid.
fn decode_key(quoted: &[u8]) -> Option<Cow<'_, str>> {
    if quoted.len() < 2 || quoted[quoted.len() - 1] != b'"' {
        return None;
    }
    let inner = &quoted[1..quoted.len() - 1];
    if !inner.contains(&b'\\') {
        return Some(String::from_utf8_lossy(inner));
    }
    // When in doubt, compare something: a key that does not decode (a lone
    // surrogate, a bad escape) is compared without its backslashes.
    match serde_json::from_slice::<String>(quoted) {
        Ok(key) => Some(Cow::Owned(key)),
        Err(_) => {
            let bare: Vec<u8> = inner.iter().copied().filter(|&b| b != b'\\').collect();
            Some(Cow::Owned(String::from_utf8_lossy(&bare).into_owned()))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::Redaction;
    use bytes::Bytes;
    use http::HeaderMap;

    fn mask(s: &str) -> String {
        let r = Redaction::default();
        let out = r.body(
            Bytes::copy_from_slice(s.as_bytes()),
            &HeaderMap::new(),
            crate::hooks::Protocol::Http,
        );
        String::from_utf8(out.to_vec()).unwrap()
    }

    #[test]
    fn masks_json_at_any_depth_keeping_layout() {
        assert_eq!(
            mask(
                r#"{"user": "a", "password": "hunter2", "n": {"Token": {"x": [1, "}"]}}, "list": [{"secret": 5}]}"#
            ),
            r#"{"user": "a", "password": "[REDACTED]", "n": {"Token": "[REDACTED]"}, "list": [{"secret": "[REDACTED]"}]}"#
        );
    }

    #[test]
    fn leaves_values_that_only_look_like_keys() {
        let s = r#"{"note": "password", "remarks": ["x"], "a": ["token"]}"#;
        assert_eq!(mask(s), s);
        // Keys match by pattern: a key containing a secret name is masked.
        assert_eq!(
            mask(r#"{"note": "password", "passwords": ["x"]}"#),
            r#"{"note": "password", "passwords": "[REDACTED]"}"#
        );
    }

    #[test]
    fn masks_escaped_keys_and_truncated_values() {
        assert_eq!(
            mask(r#"{"pass\u0077ord": "x"}"#),
            r#"{"pass\u0077ord": "[REDACTED]"}"#
        );
        assert_eq!(
            mask(r#"{"a": 1, "api_key": "sk_live_cut_he"#),
            r#"{"a": 1, "api_key": "[REDACTED]""#
        );
        assert_eq!(
            mask(r#"{"refresh_token": {"nested": "cu"#),
            r#"{"refresh_token": "[REDACTED]""#
        );
    }

    #[test]
    fn masks_secrets_written_as_text_inside_string_values() {
        assert_eq!(
            mask(r#"{"a": "say \"password\": x", "b": 1}"#),
            r#"{"a": "say \"password\": [REDACTED]", "b": 1}"#
        );
        assert_eq!(
            mask(r#"{"note": "password=hunter2 ok", "n": ["token: abc"]}"#),
            r#"{"note": "password=[REDACTED] ok", "n": ["token: [REDACTED]"]}"#
        );
        assert_eq!(
            mask(r#"{"cfg": "{\"password\":\"hunter2\"}"}"#),
            r#"{"cfg": "{\"password\":\"[REDACTED]\"}"}"#
        );
        assert_eq!(
            mask(r#"{"url": "https://u:hunter2@db.test/x"}"#),
            r#"{"url": "https://[REDACTED]@db.test/x"}"#
        );
        // Cut inside the string by the capture limit.
        assert_eq!(
            mask(r#"{"note": "password=hunt"#),
            r#"{"note": "password=[REDACTED]"#
        );
        // Text that only mentions a name is left.
        let s = r#"{"note": "forgot my password?", "tip": "the token expired"}"#;
        assert_eq!(mask(s), s);
    }
}
