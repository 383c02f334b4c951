//! [`TraceContext`]: the W3C trace context a request came with, read from
//! its `traceparent` header, so that a record leads to its trace and back.

use http::HeaderMap;
use serde::{Deserialize, Serialize};

/// The W3C trace context of a record's request: the `trace-id` and
/// `parent-id` of its [`traceparent`] header, as lowercase hex. On the wire
/// they are the record's `traceId` and `spanId`.
///
/// `span_id` is the span of the *caller* that sent the request (the
/// header's `parent-id`): the server's own span, as `tower-http`'s
/// `TraceLayer` with `tracing-opentelemetry` opens it, is its child, in the
/// same trace. So `traceId` finds the whole trace in a tracing backend, and a
/// trace's id finds its records with `GET /usage?traceId=...`.
///
/// A request without a `traceparent`, with more than one, or with one that
/// is not valid (a wrong length, upper-case or other non-hex digits, an
/// all-zero id, version `ff`) gets none: a bad header is ignored, never an
/// error.
///
/// ```
/// use tower_usage::TraceContext;
///
/// let mut headers = http::HeaderMap::new();
/// headers.insert(
///     "traceparent",
///     "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01".parse().unwrap(),
/// );
/// let trace = TraceContext::from_headers(&headers).unwrap();
/// assert_eq!(trace.trace_id, "4bf92f3577b34da6a3ce929d0e0e4736");
/// assert_eq!(trace.span_id, "00f067aa0ba902b7");
///
/// headers.insert("traceparent", "00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01".parse().unwrap());
/// assert_eq!(TraceContext::from_headers(&headers), None);
/// ```
///
/// [`traceparent`]: https://www.w3.org/TR/trace-context/#traceparent-header
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct TraceContext {
    /// The trace's id: 32 lowercase hex digits, not all zero.
    pub trace_id: String,
    /// The calling span's id: 16 lowercase hex digits, not all zero.
    pub span_id: String,
}

impl TraceContext {
    /// The trace context of a request with these headers: its one valid
    /// `traceparent`, or `None`.
    pub fn from_headers(headers: &HeaderMap) -> Option<Self> {
        let mut values = headers.get_all("traceparent").iter();
        let value = values.next()?;
        if values.next().is_some() {
            // Two headers: the spec leaves it to the vendor; nothing trusted.
            return None;
        }
        Self::parse(value.as_bytes())
    }

    /// A `traceparent` value: `version-traceid-parentid-flags`. Version `00`
    /// is exactly 55 characters; a later version may add fields after a `-`.
    pub fn parse(value: &[u8]) -> Option<Self> {
        let value = value.trim_ascii();
        if value.len() < 55 {
            return None;
        }
        let (head, rest) = value.split_at(55);
        let version = &head[..2];
        if !is_hex(version) || version == b"ff" {
            return None;
        }
        if version == b"00" && !rest.is_empty() || !rest.is_empty() && rest[0] != b'-' {
            return None;
        }
        if head[2] != b'-' || head[35] != b'-' || head[52] != b'-' {
            return None;
        }
        let (trace, span, flags) = (&head[3..35], &head[36..52], &head[53..55]);
        if !is_hex(trace) || !is_hex(span) || !is_hex(flags) || is_zero(trace) || is_zero(span) {
            return None;
        }
        // Only ASCII hex digits here: valid UTF-8.
        let text = |b: &[u8]| String::from_utf8_lossy(b).into_owned();
        Some(Self {
            trace_id: text(trace),
            span_id: text(span),
        })
    }

    /// Whether `id` is a trace id as this type holds it (32 lowercase hex
    /// digits, not all zero): what the `traceId` filter of `GET /usage`
    /// accepts.
    pub fn is_trace_id(id: &str) -> bool {
        id.len() == 32 && is_hex(id.as_bytes()) && !is_zero(id.as_bytes())
    }

    /// Whether `id` is a span id as this type holds it (16 lowercase hex
    /// digits, not all zero).
    pub fn is_span_id(id: &str) -> bool {
        id.len() == 16 && is_hex(id.as_bytes()) && !is_zero(id.as_bytes())
    }
}

/// The bytes that `hex` (lowercase hex digits, two per byte) writes: what
/// the binary form keeps of an id. `None` for any other text.
pub(crate) fn id_bytes<const N: usize>(hex: &str) -> Option<[u8; N]> {
    let hex = hex.as_bytes();
    if hex.len() != 2 * N || !is_hex(hex) {
        return None;
    }
    let nibble = |c: u8| match c {
        b'0'..=b'9' => c - b'0',
        _ => c - b'a' + 10,
    };
    let mut out = [0; N];
    for (o, pair) in out.iter_mut().zip(hex.chunks_exact(2)) {
        *o = nibble(pair[0]) << 4 | nibble(pair[1]);
    }
    Some(out)
}

/// Lowercase hex digits only (the spec forbids upper case).
fn is_hex(b: &[u8]) -> bool {
    b.iter().all(|c| matches!(c, b'0'..=b'9' | b'a'..=b'f'))
}

fn is_zero(b: &[u8]) -> bool {
    b.iter().all(|&c| c == b'0')
}

#[cfg(test)]
mod tests {
    use super::*;

    const OK: &str = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";

    #[test]
    fn valid_values_are_read() {
        let t = TraceContext::parse(OK.as_bytes()).unwrap();
        assert_eq!(t.trace_id, "4bf92f3577b34da6a3ce929d0e0e4736");
        assert_eq!(t.span_id, "00f067aa0ba902b7");
        // Flags are not kept; any flags are fine.
        assert!(TraceContext::parse(OK.replace("-01", "-00").as_bytes()).is_some());
        // Surrounding spaces (optional whitespace) are allowed.
        assert!(TraceContext::parse(format!(" {OK}\t").as_bytes()).is_some());
        // A later version may carry more fields after a dash.
        let v1 = OK.replacen("00-", "01-", 1) + "-what-ever";
        assert!(TraceContext::parse(v1.as_bytes()).is_some());
    }

    #[test]
    fn invalid_values_are_ignored() {
        for bad in [
            "",
            "00",
            &OK[..54],
            &format!("{OK}-00"),
            &format!("{OK}0"),
            &OK.replacen("00-", "ff-", 1),
            &OK.replacen("00-", "0g-", 1),
            &OK.to_uppercase(),
            &OK.replace(
                "4bf92f3577b34da6a3ce929d0e0e4736",
                "00000000000000000000000000000000",
            ),
            &OK.replace("00f067aa0ba902b7", "0000000000000000"),
            &OK.replace('-', "_"),
            &OK.replacen("4bf9", "4bf-", 1),
            &OK.replace("-01", "-zz"),
            &format!("{}_01", &OK[..52]),
            &(OK.replacen("00-", "01-", 1) + "x"),
        ] {
            assert_eq!(TraceContext::parse(bad.as_bytes()), None, "{bad:?}");
        }
    }

    #[test]
    fn two_headers_give_none() {
        let mut h = HeaderMap::new();
        h.append("traceparent", OK.parse().unwrap());
        assert!(TraceContext::from_headers(&h).is_some());
        h.append("traceparent", OK.parse().unwrap());
        assert_eq!(TraceContext::from_headers(&h), None);
    }

    #[test]
    fn ids_go_to_bytes_and_back() {
        let bytes: [u8; 8] = id_bytes("00f067aa0ba902b7").unwrap();
        assert_eq!(bytes, [0x00, 0xf0, 0x67, 0xaa, 0x0b, 0xa9, 0x02, 0xb7]);
        assert_eq!(crate::hooks::lower_hex(&bytes), "00f067aa0ba902b7");
        assert_eq!(id_bytes::<8>("00F067AA0BA902B7"), None);
        assert_eq!(id_bytes::<8>("00f067aa0ba902b"), None);
        assert_eq!(id_bytes::<8>("00f067aa0ba902bg"), None);
    }

    #[test]
    fn ids_are_checked() {
        assert!(TraceContext::is_trace_id(
            "4bf92f3577b34da6a3ce929d0e0e4736"
        ));
        assert!(!TraceContext::is_trace_id(
            "4BF92F3577B34DA6A3CE929D0E0E4736"
        ));
        assert!(!TraceContext::is_trace_id(
            "00000000000000000000000000000000"
        ));
        assert!(!TraceContext::is_trace_id(
            "4bf92f3577b34da6a3ce929d0e0e473"
        ));
        assert!(TraceContext::is_span_id("00f067aa0ba902b7"));
        assert!(!TraceContext::is_span_id("00f067aa0ba902b"));
    }
}
