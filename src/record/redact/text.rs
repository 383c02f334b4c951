//! Masking values that stand after a secret name used as a key, in any text:
//! `name=value`, `name: value`, `"name": "value"`, `<name>value</`. The net
//! under the structured maskers: for bodies that are not JSON, a form or
//! multipart (text, XML, YAML, logs, JSON cut or behind a prefix), and for
//! header values (URLs with secret parameters in their query or fragment).

use std::sync::LazyLock;

use memchr::memmem;

/// Masks the value after every key that holds a `needle` (lower-case) and
/// that `is_secret` takes for a secret name, replacing it by `replacement`.
/// `None` when nothing was masked.
///
/// A key is the needle and the name characters around it (`client_secret`
/// for `secret`; `max_tokens` for `token`, which `is_secret` may leave), then
/// an optional closing quote and blanks, then `=`, `:`, or `>` after a tag's
/// name. A value runs to its closing quote when it opens
/// with one, else to the first delimiter (`&`, `,`, `;`, `#`, `<`, a bracket,
/// a blank), or to the end of the input: a value cut short is masked to the end.
pub(super) fn mask_key_values(
    input: &[u8],
    needles: &[String],
    is_secret: impl Fn(&str) -> bool,
    replacement: &[u8],
) -> Option<Vec<u8>> {
    let lower = input.to_ascii_lowercase();
    let mut regions: Vec<(usize, usize)> = Vec::new();
    for needle in needles {
        for at in memmem::find_iter(&lower, needle.as_bytes()) {
            if let Some(region) = value_after_key(input, at, needle.len(), &is_secret) {
                regions.push(region);
            }
        }
    }
    regions.sort_unstable();
    splice(input, regions, replacement)
}

/// `input` with each of the sorted `regions` replaced by `replacement` (a
/// region that overlaps one already replaced is skipped). `None` when there
/// are no regions.
fn splice(
    input: &[u8],
    regions: impl IntoIterator<Item = (usize, usize)>,
    replacement: &[u8],
) -> Option<Vec<u8>> {
    let mut regions = regions.into_iter().peekable();
    regions.peek()?;
    let mut out = Vec::with_capacity(input.len());
    let mut copied = 0;
    for (start, end) in regions {
        if start < copied {
            continue;
        }
        out.extend_from_slice(&input[copied..start]);
        out.extend_from_slice(replacement);
        copied = end;
    }
    out.extend_from_slice(&input[copied..]);
    Some(out)
}

/// Masks the user-info of every URL in `input` (`https://user:pass@host`
/// becomes `https://[REDACTED]@host`): RFC 3986 (3.2.1) deprecates passwords
/// there, but clients still send them, and a user name alone is often a token
/// (`https://<token>@github.com`). `None` when no URL has user-info.
pub(super) fn mask_userinfo(input: &[u8], replacement: &[u8]) -> Option<Vec<u8>> {
    if !has_userinfo(input) {
        return None;
    }
    splice(input, userinfo_regions(input), replacement)
}

/// Masks the credentials after every `Bearer` (RFC 6750's scheme) that
/// stands as a word and is followed by blanks and a token, whatever stands
/// before it: a bearer token is a secret even where no key names it
/// (`... Bearer eyJ...` in a log line, or after a name that an escape ate).
/// `None` when there is none.
pub(super) fn mask_bearer(input: &[u8], replacement: &[u8]) -> Option<Vec<u8>> {
    if !has_bearer(input) {
        return None;
    }
    splice(input, bearer_regions(input), replacement)
}

/// A quick, conservative test for the text nets on a short value (a header
/// value, say): `false` when `input` has none of the bytes any net needs (`=`
/// or `:` after a key, `@` of user-info, `%` of an escape, a blank before
/// bearer credentials), so that no net can find anything in it. One pass over
/// a byte table: for a value of a few dozen bytes, cheaper than the SIMD
/// searches, whose set-up costs more than such a scan; long values go to
/// `memchr` at once.
pub(super) fn may_hold_key(input: &[u8]) -> bool {
    const SHORT: usize = 64;
    static NEEDED: [bool; 256] = {
        let mut table = [false; 256];
        let mut i = 0;
        let bytes = b"=:@% \t";
        while i < bytes.len() {
            table[bytes[i] as usize] = true;
            i += 1;
        }
        table
    };
    if input.len() > SHORT {
        return true;
    }
    input.iter().any(|&b| NEEDED[usize::from(b)])
}

/// Whether `input` holds a bearer credential (see [`mask_bearer`]).
pub(super) fn has_bearer(input: &[u8]) -> bool {
    // The credentials follow a blank; most header values have none, and most
    // texts no `earer` at all: cheap searches first, nothing allocated.
    if memchr::memchr2(b' ', b'\t', input).is_none()
        || (BEARER_LOWER.find(input).is_none() && BEARER_UPPER.find(input).is_none())
    {
        return false;
    }
    bearer_regions(input).next().is_some()
}

/// `bearer` after its first letter, lower and upper case (see [`bearer_regions`]).
/// Built once for the process: building a searcher per call costs more than
/// searching a typical header value.
static BEARER_LOWER: LazyLock<memmem::Finder<'static>> =
    LazyLock::new(|| memmem::Finder::new(b"earer"));
static BEARER_UPPER: LazyLock<memmem::Finder<'static>> =
    LazyLock::new(|| memmem::Finder::new(b"EARER"));

/// The credentials after each `Bearer` (see [`mask_bearer`]).
fn bearer_regions(input: &[u8]) -> impl Iterator<Item = (usize, usize)> + '_ {
    const WORD: &[u8] = b"bearer";
    // `Bearer`, `bearer`, `BEARER` (and `bEARER`): the word after its first
    // letter in lower or upper case, found with one SIMD search each.
    let mut starts: Vec<usize> = BEARER_LOWER
        .find_iter(input)
        .chain(BEARER_UPPER.find_iter(input))
        .filter_map(|at| at.checked_sub(1))
        .filter(|&at| matches!(input[at], b'b' | b'B'))
        .collect();
    starts.sort_unstable();
    starts.into_iter().filter_map(|at| {
        if at > 0 && input[at - 1].is_ascii_alphanumeric() {
            return None;
        }
        let mut start = at + WORD.len();
        let blanks = input[start..]
            .iter()
            .take_while(|&&b| b == b' ' || b == b'\t')
            .count();
        if blanks == 0 {
            return None;
        }
        start += blanks;
        let len = input[start..]
            .iter()
            .take_while(|&&b| {
                !b.is_ascii_whitespace() && !matches!(b, b'"' | b'\'' | b',' | b';' | b'&' | b'<')
            })
            .count();
        let token = &input[start..start + len];
        (len > 0 && token != b"[REDACTED]" && token != b"%5BREDACTED%5D")
            .then_some((start, start + len))
    })
}

/// Whether `input` holds a URL with user-info (see [`mask_userinfo`]).
pub(super) fn has_userinfo(input: &[u8]) -> bool {
    // User-info ends at an `@`, which most texts lack.
    memchr::memchr(b'@', input).is_some() && userinfo_regions(input).next().is_some()
}

/// The user-info of each `scheme://userinfo@host`: from after `://` to the
/// last `@` of the authority, which ends at a `/`, `?`, `#`, a quote, a
/// backslash, an angle bracket, `&` or a blank.
fn userinfo_regions(input: &[u8]) -> impl Iterator<Item = (usize, usize)> + '_ {
    static SCHEME_END: LazyLock<memmem::Finder<'static>> =
        LazyLock::new(|| memmem::Finder::new(b"://"));
    SCHEME_END.find_iter(input).filter_map(move |at| {
        let start = at + 3;
        let authority_len = input[start..]
            .iter()
            .position(|&b| {
                matches!(
                    b,
                    b'/' | b'?' | b'#' | b'"' | b'\'' | b'\\' | b'<' | b'>' | b'&'
                ) || b.is_ascii_whitespace()
            })
            .unwrap_or(input.len() - start);
        let userinfo_len = memchr::memrchr(b'@', &input[start..start + authority_len])?;
        // `[REDACTED]@` already: a second pass leaves it.
        let userinfo = &input[start..start + userinfo_len];
        (userinfo_len > 0 && userinfo != b"[REDACTED]" && userinfo != b"%5BREDACTED%5D")
            .then_some((start, start + userinfo_len))
    })
}

fn is_name_byte(b: u8) -> bool {
    b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'.' | b'[' | b']')
}

/// Authorization schemes whose credentials follow them as a second word.
const SCHEMES: &[&[u8]] = &[
    b"bearer",
    b"basic",
    b"token",
    b"digest",
    b"negotiate",
    b"apikey",
];

/// The value region after the key whose needle stands at `at`, if it is a
/// key and `is_secret` takes it for a secret name.
fn value_after_key(
    input: &[u8],
    at: usize,
    len: usize,
    is_secret: &impl Fn(&str) -> bool,
) -> Option<(usize, usize)> {
    let n = input.len();
    let mut key_start = at;
    // Backwards, a namespace prefix counts too (`<x:password>`).
    while key_start > 0 && (is_name_byte(input[key_start - 1]) || input[key_start - 1] == b':') {
        key_start -= 1;
    }
    let mut j = at + len;
    while j < n && is_name_byte(input[j]) {
        j += 1;
    }
    // Name bytes are ASCII: the key is UTF-8.
    let key = std::str::from_utf8(&input[key_start..j]).unwrap_or_default();
    if !is_secret(key) {
        return None;
    }
    let in_tag = key_start > 0 && input[key_start - 1] == b'<';
    // A closing quote of the key, escaped or not (`\"password\":` in a log line).
    while j < n && matches!(input[j], b'"' | b'\'' | b'\\') {
        j += 1;
    }
    while j < n && matches!(input[j], b' ' | b'\t') {
        j += 1;
    }
    match input.get(j) {
        Some(b'=' | b':') => j += 1,
        Some(b'>') if in_tag => return tag_content(input, j + 1),
        _ => return None,
    }
    // `=>` (Ruby, PHP), then blanks, and a value on the next line.
    if input.get(j) == Some(&b'>') {
        j += 1;
    }
    while j < n && input[j].is_ascii_whitespace() {
        j += 1;
    }
    if j >= n {
        return None;
    }
    // Already masked (a second pass over decoded text): nothing to do.
    let rest = &input[j..];
    if [&b"[REDACTED]"[..], b"%5BREDACTED%5D", b"\"[REDACTED]\""]
        .iter()
        .any(|m| rest.starts_with(m))
    {
        return None;
    }
    if input[j] == b'\\' && matches!(input.get(j + 1), Some(b'"' | b'\'')) {
        // An escaped quote opens the value: it runs to the next escaped one.
        j += 1;
    }
    if matches!(input[j], b'{' | b'[') {
        // An object or list (JSON, YAML flow, a JavaScript literal): masked
        // whole, to its matching bracket or to the end.
        return Some((j, super::json::value_end(input, j)));
    }
    if matches!(input[j], b'"' | b'\'') {
        let quote = input[j];
        let mut k = j + 1;
        while k < n && input[k] != quote {
            k += if input[k] == b'\\' { 2 } else { 1 };
        }
        let end = k.min(n);
        return (end > j + 1).then_some((j + 1, end));
    }
    let word_end = |from: usize| {
        input[from..]
            .iter()
            .position(|&b| {
                matches!(
                    b,
                    b'&' | b',' | b';' | b'#' | b'<' | b'>' | b'}' | b']' | b')' | b'"' | b'\''
                ) || b.is_ascii_whitespace()
            })
            .map_or(n, |i| from + i)
    };
    let mut end = word_end(j);
    // `Authorization: Bearer <token>`: the credentials are the next word.
    if SCHEMES
        .iter()
        .any(|s| input[j..end].eq_ignore_ascii_case(s))
    {
        let mut k = end;
        while k < n && matches!(input[k], b' ' | b'\t') {
            k += 1;
        }
        if k < n && k > end {
            end = word_end(k);
        }
    }
    (end > j).then_some((j, end))
}

/// The text of a tag from `start` (just past its `>`) to the next tag, or the
/// contents of a CDATA section that opens there.
fn tag_content(input: &[u8], start: usize) -> Option<(usize, usize)> {
    const CDATA: &[u8] = b"<![CDATA[";
    let n = input.len();
    if input[start..].starts_with(CDATA) {
        let from = start + CDATA.len();
        let end = memmem::find(&input[from..], b"]]>").map_or(n, |i| from + i);
        return (end > from).then_some((from, end));
    }
    let end = memchr::memchr(b'<', &input[start..]).map_or(n, |i| start + i);
    (end > start).then_some((start, end))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mask(input: &str) -> String {
        let needles = vec!["password".to_owned(), "token".to_owned(), "auth".to_owned()];
        let secret = |key: &str| {
            let key = key.to_ascii_lowercase();
            needles.iter().any(|n| key.contains(n.as_str()))
        };
        mask_key_values(input.as_bytes(), &needles, secret, b"[R]")
            .map_or_else(|| input.to_owned(), |v| String::from_utf8(v).unwrap())
    }

    #[test]
    fn values_after_keys_are_masked_in_any_text() {
        assert_eq!(
            mask("[db]\npassword = \"hunter2\"\n"),
            "[db]\npassword = \"[R]\"\n"
        );
        assert_eq!(mask("[INFO] password=hunter2 ok"), "[INFO] password=[R] ok");
        assert_eq!(mask("{password: x}"), "{password: [R]}");
        assert_eq!(mask("{'password': 'x y'}"), "{'password': '[R]'}");
        assert_eq!(
            mask("<login><password>hunter2</password></login>"),
            "<login><password>[R]</password></login>"
        );
        assert_eq!(
            mask("https://a/cb?code=1#access_token=abc&x=2"),
            "https://a/cb?code=1#access_token=[R]&x=2"
        );
        assert_eq!(
            mask("<https://a?x=1>, <https://b?token=2>"),
            "<https://a?x=1>, <https://b?token=[R]>"
        );
        assert_eq!(mask("/next?next=/cb?token=abc"), "/next?next=/cb?token=[R]");
        assert_eq!(mask("user[password]=x"), "user[password]=[R]");
        // Cut short: masked to the end.
        assert_eq!(mask("password=hun"), "password=[R]");
        assert_eq!(mask("\"password\": \"hun"), "\"password\": \"[R]");
        // Found by trying a running server as a hostile client would.
        assert_eq!(
            mask("Authorization: Bearer S3KRIT x"),
            "Authorization: [R] x"
        );
        assert_eq!(mask("auth: basic dXNlcg=="), "auth: [R]");
        assert!(!mask(r#"{\"password\":\"S3KRIT\"}"#).contains("S3KRIT"));
        assert_eq!(
            mask("<x:password>S3KRIT</x:password>"),
            "<x:password>[R]</x:password>"
        );
        assert_eq!(
            mask("<password><![CDATA[S3KRIT]]></password>"),
            "<password><![CDATA[[R]]]></password>"
        );
        assert_eq!(mask(":password => \"S3KRIT\""), ":password => \"[R]\"");
        assert_eq!(mask("password:\nS3KRIT"), "password:\n[R]");
        // Objects and lists, to their matching bracket, or to the end when cut.
        assert_eq!(mask("token: {a: 1, b: \"x}\"} ok"), "token: [R] ok");
        assert_eq!(mask("password=[1, [2]], n=3"), "password=[R], n=3");
        // A bearer credential anywhere, even where no key names it.
        let bearer = |s: &str| {
            mask_bearer(s.as_bytes(), b"[R]")
                .map_or_else(|| s.to_owned(), |v| String::from_utf8(v).unwrap())
        };
        assert_eq!(
            bearer("GET / 401 Bearer eyJabc.def x"),
            "GET / 401 Bearer [R] x"
        );
        assert_eq!(
            bearer("\u{ea}uthorization: bearer\tabc;"),
            "\u{ea}uthorization: bearer\t[R];"
        );
        for text in [
            "the forbearer of",
            "Bearer",
            "bearer  ",
            "Bearer [REDACTED]",
        ] {
            assert_eq!(bearer(text), text);
        }
        assert_eq!(mask("\"token\": {\"nested\": \"cu"), "\"token\": [R]");
    }

    #[test]
    fn names_that_are_not_keys_are_left() {
        for text in [
            "forgot my password?",
            "OAuth 2.0 guide",
            "the author of the book",
            "password",
            "password=",
            "tokens:",
        ] {
            assert_eq!(mask(text), text);
        }
    }
}
