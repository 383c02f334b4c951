//! Text bodies in a charset other than UTF-8: read as UTF-8 by the writer
//! before redaction, since the redactor reads names and values as UTF-8 (a
//! `password` in UTF-16 is `p\0a\0s\0s\0...` to it, and would be stored as
//! sent). After its `Content-Encoding` is undone (see
//! [`encoding`](super::encoding)), a body is
//!
//! - converted to UTF-8 when its `Content-Type` declares a `charset` other
//!   than UTF-8 (`utf-16le`, `iso-8859-1`, `shift_jis`: any label of the
//!   WHATWG Encoding Standard, in any case, quoted or not), or when it starts
//!   with a UTF-16 or UTF-8 byte order mark (which wins over the label, as in
//!   browsers);
//! - converted from UTF-16 when it is text (or unlabelled) without a label or
//!   labelled UTF-8, and its first four bytes show the pattern of UTF-16
//!   (`x 0 x 0` or `0 x 0 x`), as RFC 4627 detects JSON's encoding;
//! - withheld (not stored; the record's `capture` says why) when its charset
//!   is one the writer cannot read (`utf-7`, `utf-32`, an unknown label, two
//!   labels that disagree, or one of the WHATWG "replacement" encodings), or
//!   when it is text that still holds NUL bytes after that (UTF-16 or UTF-32
//!   without a mark, behind a wrong label): text the redactor cannot read is
//!   never stored.
//!
//! Anything else is kept as it came. The converted text is bounded by the
//! capture limit (a single-byte charset may take up to three bytes per
//! character in UTF-8): past it, it is cut and marked truncated.

use bytes::Bytes;
use encoding_rs::{Encoding, REPLACEMENT, UTF_16BE, UTF_16LE, UTF_8, X_USER_DEFINED};
use http::HeaderMap;

/// A body after its charset was looked at.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum TextBody {
    /// UTF-8 already (or not text): as it came.
    Unchanged(Bytes),
    /// Converted to UTF-8 from `charset` (the WHATWG name, lower case);
    /// `cut` when the text stopped at the limit.
    Converted {
        bytes: Bytes,
        charset: String,
        cut: bool,
    },
    /// Not readable as UTF-8 text: not kept. `reason` says why
    /// (`charset=utf-7`, `utf-32`, `nul-bytes`).
    Withheld { reason: String },
}

/// Converts `body` to UTF-8 by the charset `headers` declare or its first
/// bytes show (see the [module docs](self)), keeping at most `limit` bytes.
pub(crate) fn to_utf8(body: Bytes, headers: &HeaderMap, limit: usize) -> TextBody {
    if body.is_empty() {
        return TextBody::Unchanged(body);
    }
    let content_type = headers
        .get(http::header::CONTENT_TYPE)
        .map_or(&b""[..], |v| v.as_bytes());
    // The common case first: no parameter (so no label), and no mark nor
    // NUL in the first two bytes (so nothing to sniff).
    let may_be_wide = matches!(body[0], 0 | 0xEF | 0xFE | 0xFF) || body.get(1) == Some(&0);
    if !may_be_wide && memchr::memchr(b';', content_type).is_none() {
        if is_text(trim(content_type)) && memchr::memchr(0, &body).is_some() {
            return withheld("nul-bytes".into());
        }
        return TextBody::Unchanged(body);
    }
    let mut params = content_type.split(|&b| b == b';');
    let mime = trim(params.next().unwrap_or_default());
    let text = is_text(mime);
    let mut label: Option<&[u8]> = None;
    for param in params {
        let Some(eq) = param.iter().position(|&b| b == b'=') else {
            continue;
        };
        if !trim(&param[..eq]).eq_ignore_ascii_case(b"charset") {
            continue;
        }
        let value = unquote(trim(&param[eq + 1..]));
        match label {
            Some(first) if !same_encoding(first, value) => {
                return withheld(format!(
                    "charset={}, charset={}",
                    String::from_utf8_lossy(first),
                    String::from_utf8_lossy(value)
                ));
            }
            _ => label = Some(value),
        }
    }
    // What the bytes show: a byte order mark, or the pattern of UTF-16/32.
    if let Some(wide) = utf32(&body) {
        return withheld(wide.into());
    }
    let declared = match label {
        Some(label) => match Encoding::for_label(label) {
            Some(encoding) if encoding != REPLACEMENT && encoding != X_USER_DEFINED => encoding,
            // The "replacement" encodings (`iso-2022-kr`, `hz-gb-2312`...)
            // and `x-user-defined`, which no HTTP client sends: unread.
            _ => {
                return withheld(format!("charset={}", String::from_utf8_lossy(label)));
            }
        },
        None => UTF_8,
    };
    let sniffed = match Encoding::for_bom(&body) {
        Some((encoding, _)) => Some(encoding),
        // Without a mark, only where text (or nothing) was declared, in UTF-8
        // (or nothing): binary bodies keep their bytes.
        None if declared == UTF_8 && (text || mime.is_empty()) => utf16_pattern(&body),
        None => None,
    };
    let out = match (sniffed, declared) {
        (None, encoding) if encoding == UTF_8 => TextBody::Unchanged(body),
        // ASCII reads the same in every ASCII-compatible charset.
        (None, encoding)
            if encoding.is_ascii_compatible()
                && Encoding::ascii_valid_up_to(&body) == body.len() =>
        {
            TextBody::Unchanged(body)
        }
        (sniffed, declared) => convert(&body, sniffed.unwrap_or(declared), limit),
    };
    // Text still holding NUL bytes is in a wider encoding than it says.
    let bytes = match &out {
        TextBody::Unchanged(bytes) | TextBody::Converted { bytes, .. } => bytes,
        TextBody::Withheld { .. } => return out,
    };
    if (text || sniffed.is_some() || label.is_some()) && memchr::memchr(0, bytes).is_some() {
        return withheld("nul-bytes".into());
    }
    out
}

fn withheld(reason: String) -> TextBody {
    TextBody::Withheld { reason }
}

/// `body` read in `encoding` (whose byte order mark, if any, wins and is
/// dropped), as UTF-8, at most `limit` bytes.
fn convert(body: &[u8], encoding: &'static Encoding, limit: usize) -> TextBody {
    let mut decoder = encoding.new_decoder();
    let room = decoder
        .max_utf8_buffer_length(body.len())
        .unwrap_or(usize::MAX)
        .min(limit);
    let mut out = String::with_capacity(room);
    let (result, read, _) = decoder.decode_to_string(body, &mut out, true);
    let cut = result == encoding_rs::CoderResult::OutputFull || read < body.len();
    let charset = decoder.encoding().name().to_ascii_lowercase();
    TextBody::Converted {
        bytes: Bytes::from(out.into_bytes()),
        charset,
        cut,
    }
}

/// `utf-32` when `body` starts with a UTF-32 byte order mark or shows
/// UTF-32's pattern (`0 0 0 x`, `x 0 0 0`): a charset no decoder here reads.
fn utf32(body: &[u8]) -> Option<&'static str> {
    match body.get(..4)? {
        [0, 0, 0xFE, 0xFF] | [0xFF, 0xFE, 0, 0] => Some("utf-32"),
        [0, 0, 0, x] | [x, 0, 0, 0] if *x != 0 => Some("utf-32"),
        _ => None,
    }
}

/// UTF-16 by the pattern of the first four bytes (RFC 4627, section 3): `0 x
/// 0 x` is big-endian, `x 0 x 0` little-endian.
fn utf16_pattern(body: &[u8]) -> Option<&'static Encoding> {
    match body.get(..4)? {
        [0, a, 0, b] if *a != 0 && *b != 0 => Some(UTF_16BE),
        [a, 0, b, 0] if *a != 0 && *b != 0 => Some(UTF_16LE),
        _ => None,
    }
}

/// Whether two charset labels name one encoding.
fn same_encoding(a: &[u8], b: &[u8]) -> bool {
    match (Encoding::for_label(a), Encoding::for_label(b)) {
        (Some(a), Some(b)) => a == b,
        _ => a.eq_ignore_ascii_case(b),
    }
}

/// Whether a media type is text: `text/*`, JSON, XML, forms, and the like
/// (not `multipart/*`, whose parts may be files).
fn is_text(mime: &[u8]) -> bool {
    let Some(slash) = mime.iter().position(|&b| b == b'/') else {
        return false;
    };
    let (kind, sub) = (&mime[..slash], &mime[slash + 1..]);
    let is = |a: &[u8], b: &str| a.eq_ignore_ascii_case(b.as_bytes());
    let starts = |a: &[u8], b: &str| a.get(..b.len()).is_some_and(|p| is(p, b));
    let ends = |a: &[u8], b: &str| a.len() >= b.len() && is(&a[a.len() - b.len()..], b);
    is(kind, "text")
        || (is(kind, "application")
            && ([
                "x-www-form-urlencoded",
                "javascript",
                "graphql",
                "x-ndjson",
                "yaml",
            ]
            .iter()
            .any(|t| is(sub, t))
                || starts(sub, "json")
                || starts(sub, "xml")))
        || ends(sub, "+json")
        || ends(sub, "+xml")
}

fn trim(s: &[u8]) -> &[u8] {
    s.trim_ascii()
}

/// A parameter value without its quotes.
fn unquote(value: &[u8]) -> &[u8] {
    match value {
        [b'"', inner @ .., b'"'] => inner,
        _ => value,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn typed(content_type: &str) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert("content-type", content_type.parse().unwrap());
        h
    }

    fn utf16le(s: &str) -> Vec<u8> {
        s.encode_utf16().flat_map(u16::to_le_bytes).collect()
    }

    fn utf16be(s: &str) -> Vec<u8> {
        s.encode_utf16().flat_map(u16::to_be_bytes).collect()
    }

    const JSON: &str = r#"{"password":"s3cr3t","name":"Zoë"}"#;

    fn converted(out: TextBody) -> (String, String, bool) {
        match out {
            TextBody::Converted {
                bytes,
                charset,
                cut,
            } => (String::from_utf8(bytes.to_vec()).unwrap(), charset, cut),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn declared_charsets_are_read_as_utf8() {
        for (content_type, body, charset) in [
            (
                "application/json; charset=utf-16le",
                utf16le(JSON),
                "utf-16le",
            ),
            (
                "application/json;charset=UTF-16BE",
                utf16be(JSON),
                "utf-16be",
            ),
            (
                "application/json; Charset=\"utf-16\"",
                [&[0xFE, 0xFF][..], &utf16be(JSON)].concat(),
                "utf-16be",
            ),
            (
                "text/plain; charset=ISO-8859-1",
                b"{\"password\":\"s3cr3t\",\"name\":\"Zo\xEB\"}".to_vec(),
                "windows-1252",
            ),
        ] {
            let (text, name, cut) =
                converted(to_utf8(Bytes::from(body), &typed(content_type), 1024));
            assert_eq!(name, charset, "{content_type}");
            assert!(
                text.contains(r#""password":"s3cr3t""#),
                "{content_type}: {text}"
            );
            assert!(!cut);
        }
        // Latin-1's bytes above 0x7F become two UTF-8 bytes.
        let (text, name, _) = converted(to_utf8(
            Bytes::from_static(b"name=Zo\xEB&password=x"),
            &typed("application/x-www-form-urlencoded; charset=windows-1252"),
            1024,
        ));
        assert_eq!(
            (text.as_str(), name.as_str()),
            ("name=Zoë&password=x", "windows-1252")
        );
    }

    #[test]
    fn marks_and_patterns_are_read_without_a_label() {
        let (text, name, _) = converted(to_utf8(
            Bytes::from([&[0xFF, 0xFE][..], &utf16le(JSON)].concat()),
            &HeaderMap::new(),
            1024,
        ));
        assert_eq!((text.as_str(), name.as_str()), (JSON, "utf-16le"));
        // A mark wins over a UTF-8 label; a UTF-8 mark is dropped.
        let (text, _, _) = converted(to_utf8(
            Bytes::from([&[0xFE, 0xFF][..], &utf16be(JSON)].concat()),
            &typed("application/json; charset=utf-8"),
            1024,
        ));
        assert_eq!(text, JSON);
        let (text, name, _) = converted(to_utf8(
            Bytes::from([b"\xEF\xBB\xBF", JSON.as_bytes()].concat()),
            &typed("application/json"),
            1024,
        ));
        assert_eq!((text.as_str(), name.as_str()), (JSON, "utf-8"));
        // RFC 4627's pattern, for text or unlabelled bodies.
        for content_type in [
            "application/json",
            "text/plain; charset=utf-8",
            "",
            "Application/Problem+JSON",
            "TEXT/CSV",
            "application/xml",
        ] {
            let headers = if content_type.is_empty() {
                HeaderMap::new()
            } else {
                typed(content_type)
            };
            let (text, _, _) = converted(to_utf8(Bytes::from(utf16le(JSON)), &headers, 1024));
            assert_eq!(text, JSON, "{content_type}");
            let (text, _, _) = converted(to_utf8(Bytes::from(utf16be(JSON)), &headers, 1024));
            assert_eq!(text, JSON, "{content_type}");
        }
    }

    #[test]
    fn utf8_and_binary_bodies_stay_as_they_came() {
        for (content_type, body) in [
            ("application/json", JSON.as_bytes().to_vec()),
            ("application/json; charset=utf-8", JSON.as_bytes().to_vec()),
            ("text/plain; charset=us-ascii", b"a=1".to_vec()),
            ("application/octet-stream", utf16le(JSON)),
            ("image/png", b"\x89PNG\r\n\x1a\n\0\0\0\rIHDR".to_vec()),
            (
                "multipart/form-data; boundary=x",
                b"--x\r\n\0\0--x--".to_vec(),
            ),
        ] {
            let body = Bytes::from(body);
            assert_eq!(
                to_utf8(body.clone(), &typed(content_type), 1024),
                TextBody::Unchanged(body),
                "{content_type}"
            );
        }
    }

    #[test]
    fn what_cannot_be_read_is_withheld() {
        let utf32: Vec<u8> = JSON
            .chars()
            .flat_map(|c| (c as u32).to_le_bytes())
            .collect();
        for (content_type, body, reason) in [
            (
                "application/json; charset=utf-7",
                b"+AHA-".to_vec(),
                "charset=utf-7",
            ),
            (
                "application/json; charset=utf-32le",
                utf32.clone(),
                "utf-32",
            ),
            ("application/json", utf32.clone(), "utf-32"),
            (
                "text/plain; charset=x-nonsense",
                b"a".to_vec(),
                "charset=x-nonsense",
            ),
            (
                "text/plain; charset=iso-2022-kr",
                b"a".to_vec(),
                "charset=iso-2022-kr",
            ),
            (
                "application/json; charset=utf-8; charset=utf-16le",
                b"{}".to_vec(),
                "charset=utf-8, charset=utf-16le",
            ),
            // UTF-16 behind a single-byte label: NULs once read.
            (
                "application/json; charset=latin1",
                utf16le(JSON),
                "nul-bytes",
            ),
            (
                "application/json",
                [b"{\"a\":1,".as_slice(), &utf16le("\"p\":2}")].concat(),
                "nul-bytes",
            ),
        ] {
            assert_eq!(
                to_utf8(Bytes::from(body), &typed(content_type), 1024),
                TextBody::Withheld {
                    reason: reason.into()
                },
                "{content_type}"
            );
        }
    }

    #[test]
    fn the_text_is_bounded_by_the_limit() {
        let body = Bytes::from(vec![0xE9u8; 1000]); // "é" in latin-1: two bytes in UTF-8
        let (text, _, cut) = converted(to_utf8(body, &typed("text/plain; charset=latin1"), 501));
        assert!(
            cut && text.len() <= 501 && text.len() >= 498,
            "{}",
            text.len()
        );
        assert!(text.chars().all(|c| c == 'é'));
    }
}
