//! The binary form of a record, lossless, in two shapes:
//!
//! - [`encode`]: every field but the id, `created_at` and status, which
//!   [`MemorySink`](crate::MemorySink) keeps in its index; [`Head`] and [`Tail`]
//!   read the fields its filters need without decoding the rest.
//! - [`encode_whole`]: the whole record (those three fields first), which the
//!   disk spool writes into its segments, and which is the public storage
//!   form (`UsageRecord::to_storage_bytes`, `storage.rs`) after its two-byte
//!   header. **Each version's layout is frozen**: bytes written by a
//!   published release must stay readable, so a change to it is a new
//!   version (the readers take the version, and keep reading the old ones),
//!   checked by the golden tests in `tests/storage.rs`.
//!
//! Version 2 adds one byte of flags after `route` (its bit 0: a trace
//! follows) and, when set, the trace (16 bytes of trace id, 8 of span id);
//! [`encode`] writes version 2, and every reader takes the version the bytes
//! were written in (the storage form's version byte, the spool segment's
//! header) and reads version 1 too.
//!
//! Reading is fallible ([`decode`], [`decode_whole`] return `None` on bytes
//! that are not an encoding): the spool reads what a crash may have damaged.
//! The memory sink reads only what it encoded, and treats `None` as a bug.

use bytes::Bytes;
use http::HeaderMap;
use time::OffsetDateTime;

use crate::codec::headers;
use crate::hooks::lower_hex;
use crate::record::trace_id_bytes as id_bytes;
use crate::{
    CaptureNotes, CapturedBody, GrpcCall, Outcome, RecordedRequest, TraceContext, UsageRecord,
};

/// The layout [`encode`] writes: 2, the first with the trace.
pub(crate) const VERSION: u8 = 2;

// The encoding of a stored record.
//
// Everything but the id (in the key) and `created_at` and `status` (in the
// entry), in this order: a flags byte; `method`, `path` and, when present,
// `consumer` (first, so filters and eviction read them without decoding the rest);
// the outcome; `duration_us`; the sizes of the request and response bodies;
// `route` (these too before the rest, for the route and outcome filters and the
// summary, see [`Tail`]); the request body's bytes, query, params and headers;
// the response body's bytes and headers; the gRPC call. Strings and byte strings
// are a LEB128 length then the bytes; numbers are little-endian; a header map is
// in the binary encoding of `codec::headers` (which keeps each value's
// sensitivity); a body's bytes are a byte string (its size is further up).

const HAS_CONSUMER: u8 = 1;
const HAS_ROUTE: u8 = 1 << 1;
const HAS_GRPC: u8 = 1 << 2;
const HAS_GRPC_STATUS: u8 = 1 << 3;
const HAS_GRPC_MESSAGE: u8 = 1 << 4;
const REQUEST_TRUNCATED: u8 = 1 << 5;
const RESPONSE_TRUNCATED: u8 = 1 << 6;
const HAS_CAPTURE_NOTES: u8 = 1 << 7;
// The second flags byte, version 2 on.
const HAS_TRACE: u8 = 1;

pub(crate) fn encode(out: &mut Vec<u8>, r: &UsageRecord) {
    let mut flags = 0;
    let mut set = |bit, on: bool| {
        if on {
            flags |= bit;
        }
    };
    set(HAS_CONSUMER, r.consumer.is_some());
    set(HAS_ROUTE, r.route.is_some());
    set(HAS_GRPC, r.grpc.is_some());
    if let Some(g) = &r.grpc {
        set(HAS_GRPC_STATUS, g.status.is_some());
        set(HAS_GRPC_MESSAGE, g.message.is_some());
    }
    set(REQUEST_TRUNCATED, r.request.body.truncated);
    set(RESPONSE_TRUNCATED, r.response.truncated);
    set(HAS_CAPTURE_NOTES, !r.capture.is_empty());
    out.push(flags);
    put_bytes(out, r.method.as_bytes());
    put_bytes(out, r.path.as_bytes());
    if let Some(c) = &r.consumer {
        put_bytes(out, c.as_bytes());
    }
    out.push(match r.outcome {
        Outcome::Complete => 0,
        Outcome::ClientGone => 1,
        Outcome::Cancelled => 2,
        Outcome::Error => 3,
    });
    out.extend_from_slice(&r.duration_us.to_le_bytes());
    out.extend_from_slice(&r.request.body.size.to_le_bytes());
    out.extend_from_slice(&r.response.size.to_le_bytes());
    if let Some(route) = &r.route {
        put_bytes(out, route.as_bytes());
    }
    match r.trace.as_ref().and_then(trace_bytes) {
        Some(trace) => {
            out.push(HAS_TRACE);
            out.extend_from_slice(&trace);
        }
        None => out.push(0),
    }
    put_bytes(out, &r.request.body.bytes);
    put_bytes(out, r.request.query.as_bytes());
    put_len(out, r.request.params.len());
    for (name, value) in &r.request.params {
        put_bytes(out, name.as_bytes());
        put_bytes(out, value.as_bytes());
    }
    headers::encode(out, &r.request.headers);
    put_bytes(out, &r.response.bytes);
    headers::encode(out, &r.response_headers);
    if let Some(g) = &r.grpc {
        if let Some(status) = g.status {
            out.extend_from_slice(&status.to_le_bytes());
        }
        if let Some(message) = &g.message {
            put_bytes(out, message.as_bytes());
        }
        out.extend_from_slice(&g.request_messages.to_le_bytes());
        out.extend_from_slice(&g.response_messages.to_le_bytes());
    }
    if !r.capture.is_empty() {
        // As JSON: notes are rare, and this way a new kind of note needs no
        // new layout.
        put_bytes(out, &serde_json::to_vec(&r.capture).unwrap_or_default());
    }
}

/// A trace as its 24 bytes: the trace id's 16, the span id's 8. `None` for
/// ids that are not lowercase hex of the right length (a record built by
/// hand): such a trace is not kept.
fn trace_bytes(t: &TraceContext) -> Option<[u8; 24]> {
    if !(TraceContext::is_trace_id(&t.trace_id) && TraceContext::is_span_id(&t.span_id)) {
        return None;
    }
    let trace: [u8; 16] = id_bytes(&t.trace_id)?;
    let span: [u8; 8] = id_bytes(&t.span_id)?;
    let mut out = [0; 24];
    out[..16].copy_from_slice(&trace);
    out[16..].copy_from_slice(&span);
    Some(out)
}

/// The 24 bytes of [`trace_bytes`] as a [`TraceContext`].
pub(crate) fn trace_of(bytes: &[u8; 24]) -> Option<TraceContext> {
    let t = TraceContext {
        trace_id: lower_hex(&bytes[..16]),
        span_id: lower_hex(&bytes[16..]),
    };
    // All-zero ids are not a trace: not written, so damage.
    (TraceContext::is_trace_id(&t.trace_id) && TraceContext::is_span_id(&t.span_id)).then_some(t)
}

fn put_len(out: &mut Vec<u8>, mut n: usize) {
    while n >= 0x80 {
        out.push(n as u8 | 0x80);
        n >>= 7;
    }
    out.push(n as u8);
}

fn put_bytes(out: &mut Vec<u8>, bytes: &[u8]) {
    put_len(out, bytes.len());
    out.extend_from_slice(bytes);
}

/// The fields at the start of an encoded record.
pub(crate) struct Head<'a> {
    version: u8,
    flags: u8,
    pub(crate) method: &'a str,
    pub(crate) path: &'a str,
    pub(crate) consumer: Option<&'a str>,
    /// The rest of the encoding.
    rest: Reader<'a>,
}

impl<'a> Head<'a> {
    /// The head of what [`encode`] wrote. Panics on anything else: for
    /// buffers this crate encoded and kept in memory.
    pub(crate) fn of(blob: &'a [u8]) -> Self {
        Self::read(blob, VERSION).expect(ENCODED)
    }

    fn read(blob: &'a [u8], version: u8) -> Option<Self> {
        let mut r = Reader(blob);
        let flags = r.u8()?;
        let method = r.str()?;
        let path = r.str()?;
        let consumer = if flags & HAS_CONSUMER != 0 {
            Some(r.str()?)
        } else {
            None
        };
        Some(Self {
            version,
            flags,
            method,
            path,
            consumer,
            rest: r,
        })
    }

    /// The fields after the head that filters and summaries read. Panics, as
    /// [`of`](Self::of), on a buffer [`encode`] did not write.
    pub(crate) fn tail(&self) -> Tail<'a> {
        self.read_tail().expect(ENCODED)
    }

    fn read_tail(&self) -> Option<Tail<'a>> {
        let mut r = Reader(self.rest.0);
        let outcome = outcome(r.u8()?);
        let duration_us = r.u64()?;
        let request_size = r.u64()?;
        let response_size = r.u64()?;
        let route = if self.flags & HAS_ROUTE != 0 {
            Some(r.str()?)
        } else {
            None
        };
        let trace = if self.version >= 2 {
            match r.u8()? {
                0 => None,
                HAS_TRACE => Some(r.array()?),
                _ => return None,
            }
        } else {
            None
        };
        Some(Tail {
            outcome,
            duration_us,
            request_size,
            response_size,
            route,
            trace,
            rest: r,
        })
    }
}

const ENCODED: &str = "a buffer written by `binary::encode`";

/// The fields after [`Head`]: how the exchange ended, how long it took, the
/// body sizes and the route.
pub(crate) struct Tail<'a> {
    pub(crate) outcome: Outcome,
    pub(crate) duration_us: u64,
    pub(crate) request_size: u64,
    pub(crate) response_size: u64,
    pub(crate) route: Option<&'a str>,
    /// The trace as 16 bytes of trace id and 8 of span id.
    pub(crate) trace: Option<[u8; 24]>,
    rest: Reader<'a>,
}

fn outcome(byte: u8) -> Outcome {
    match byte {
        0 => Outcome::Complete,
        1 => Outcome::ClientGone,
        2 => Outcome::Cancelled,
        _ => Outcome::Error,
    }
}

/// Reads back what [`encode`] wrote; `None` when the bytes end early or are
/// not what it writes.
struct Reader<'a>(&'a [u8]);

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Option<&'a [u8]> {
        if n > self.0.len() {
            return None;
        }
        let (head, tail) = self.0.split_at(n);
        self.0 = tail;
        Some(head)
    }

    fn array<const N: usize>(&mut self) -> Option<[u8; N]> {
        self.take(N)?.try_into().ok()
    }

    fn u8(&mut self) -> Option<u8> {
        Some(self.take(1)?[0])
    }

    fn u16(&mut self) -> Option<u16> {
        self.array().map(u16::from_le_bytes)
    }

    fn u64(&mut self) -> Option<u64> {
        self.array().map(u64::from_le_bytes)
    }

    fn len(&mut self) -> Option<usize> {
        let mut n = 0usize;
        let mut shift = 0u32;
        loop {
            let b = self.u8()?;
            n |= usize::from(b & 0x7f).checked_shl(shift)?;
            if b < 0x80 {
                return Some(n);
            }
            shift += 7;
            if shift >= usize::BITS {
                return None;
            }
        }
    }

    fn bytes(&mut self) -> Option<&'a [u8]> {
        let n = self.len()?;
        self.take(n)
    }

    fn str(&mut self) -> Option<&'a str> {
        std::str::from_utf8(self.bytes()?).ok()
    }

    fn string(&mut self) -> Option<String> {
        self.str().map(str::to_owned)
    }

    fn body(&mut self, size: u64, truncated: bool) -> Option<CapturedBody> {
        Some(CapturedBody {
            bytes: Bytes::copy_from_slice(self.bytes()?),
            size,
            truncated,
        })
    }

    fn headers(&mut self) -> Option<HeaderMap> {
        let (map, len) = headers::decode(self.0).ok()?;
        self.take(len)?;
        Some(map)
    }
}

/// The record [`encode`] wrote into `blob`, with the fields it leaves out;
/// `None` when `blob` is not such an encoding.
pub(crate) fn decode(
    blob: &[u8],
    version: u8,
    id: String,
    created_at: OffsetDateTime,
    status: u16,
) -> Option<UsageRecord> {
    let head = Head::read(blob, version)?;
    let Tail {
        outcome,
        duration_us,
        request_size,
        response_size,
        route,
        trace,
        rest: mut r,
    } = head.read_tail()?;
    let trace = match trace {
        Some(bytes) => Some(trace_of(&bytes)?),
        None => None,
    };
    let Head {
        flags,
        method,
        path,
        consumer,
        ..
    } = head;
    let has = |bit| flags & bit != 0;
    let route = route.map(str::to_owned);
    let body = r.body(request_size, has(REQUEST_TRUNCATED))?;
    let query = r.string()?;
    let params = (0..r.len()?)
        .map(|_| Some((r.string()?, r.string()?)))
        .collect::<Option<Vec<_>>>()?;
    let headers = r.headers()?;
    let response = r.body(response_size, has(RESPONSE_TRUNCATED))?;
    let response_headers = r.headers()?;
    let grpc = if has(HAS_GRPC) {
        Some(GrpcCall {
            status: if has(HAS_GRPC_STATUS) {
                Some(r.u16()?)
            } else {
                None
            },
            message: if has(HAS_GRPC_MESSAGE) {
                Some(r.string()?)
            } else {
                None
            },
            request_messages: r.u64()?,
            response_messages: r.u64()?,
        })
    } else {
        None
    };
    let capture = if has(HAS_CAPTURE_NOTES) {
        serde_json::from_slice::<CaptureNotes>(r.bytes()?).ok()?
    } else {
        CaptureNotes::default()
    };
    if !r.0.is_empty() {
        return None;
    }
    Some(UsageRecord {
        id,
        consumer: consumer.map(str::to_owned),
        method: method.to_owned(),
        path: path.to_owned(),
        route,
        request: RecordedRequest {
            body,
            query,
            params,
            headers,
        },
        response,
        response_headers,
        status,
        created_at,
        duration_us,
        outcome,
        grpc,
        capture,
        trace,
    })
}

/// About how many bytes [`encode_whole`] writes for `r` (a little more, for
/// the length prefixes): to reserve once.
pub(crate) fn whole_len_hint(r: &UsageRecord) -> usize {
    let strings = [
        r.id.len(),
        r.method.len(),
        r.path.len(),
        r.consumer.as_ref().map_or(0, String::len),
        r.route.as_ref().map_or(0, String::len),
        r.request.query.len(),
        r.request.body.bytes.len(),
        r.response.bytes.len(),
    ];
    let params: usize = r
        .request
        .params
        .iter()
        .map(|(k, v)| k.len() + v.len() + 20)
        .sum();
    let grpc = r
        .grpc
        .as_ref()
        .map_or(0, |g| 32 + g.message.as_ref().map_or(0, String::len));
    16 + 2
        + 1
        + 1
        + 8 * 3
        + strings.iter().map(|n| n + 10).sum::<usize>()
        + params
        + headers::encoded_len(&r.request.headers)
        + headers::encoded_len(&r.response_headers)
        + grpc
        + if r.capture.is_empty() { 0 } else { 128 }
        + 25
}

/// Appends the whole record to `out`: `created_at` (unix nanoseconds, i128
/// little-endian), the status (u16), the id (a byte string), then [`encode`].
/// The disk spool's frames (feature `spool`).
#[cfg_attr(not(feature = "spool"), allow(dead_code))]
pub(crate) fn encode_whole(out: &mut Vec<u8>, r: &UsageRecord) {
    out.extend_from_slice(&r.created_at.unix_timestamp_nanos().to_le_bytes());
    out.extend_from_slice(&r.status.to_le_bytes());
    put_bytes(out, r.id.as_bytes());
    encode(out, r);
}

/// The record [`encode_whole`] wrote into `bytes` in layout `version`
/// (1 or [`VERSION`]), which it must fill exactly; `None` when they are not
/// such an encoding. `created_at` comes back in UTC.
pub(crate) fn decode_whole(bytes: &[u8], version: u8) -> Option<UsageRecord> {
    let mut r = Reader(bytes);
    let nanos = i128::from_le_bytes(r.array()?);
    let created_at = OffsetDateTime::from_unix_timestamp_nanos(nanos).ok()?;
    let status = r.u16()?;
    let id = r.string()?;
    decode(r.0, version, id, created_at, status)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_whole_record_comes_back_and_damage_is_refused() {
        let mut record = UsageRecord {
            id: "01J0000000000000000000000".into(),
            method: "POST".into(),
            path: "/orders/7".into(),
            route: Some("/orders/{id}".into()),
            consumer: Some("key:abc".into()),
            status: 201,
            ..UsageRecord::default()
        };
        record.request.body = CapturedBody {
            bytes: Bytes::from_static(b"{\"a\":1}"),
            size: 7,
            truncated: false,
        };
        record.request.query = "page=2".into();
        record.request.params = vec![("id".into(), "7".into())];
        record.request.headers.insert("x-a", "b".parse().unwrap());
        record.grpc = Some(GrpcCall {
            status: Some(5),
            message: Some("gone".into()),
            request_messages: 1,
            response_messages: 0,
        });
        record.capture.request_headers_cut = 9;
        let mut out = Vec::new();
        encode_whole(&mut out, &record);
        assert_eq!(decode_whole(&out, VERSION), Some(record));
        for cut in 0..out.len() {
            assert_eq!(decode_whole(&out[..cut], VERSION), None, "cut at {cut}");
        }
        out.push(0);
        assert_eq!(decode_whole(&out, VERSION), None, "a byte too many");
    }
}
