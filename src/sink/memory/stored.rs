//! How [`MemorySink`](super::MemorySink) stores a record: one buffer per record,
//! a length-prefixed encoding of every field but the id, `created_at` and
//! status, which live in the index.

use bytes::Bytes;
use http::HeaderMap;

use crate::codec::headers;
use crate::{CaptureNotes, CapturedBody, GrpcCall, Outcome, RecordedRequest, UsageRecord};

use super::index::{Entry, Key};

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

pub(super) fn encode(out: &mut Vec<u8>, r: &UsageRecord) {
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
pub(super) struct Head<'a> {
    flags: u8,
    pub(super) method: &'a str,
    pub(super) path: &'a str,
    pub(super) consumer: Option<&'a str>,
    /// The rest of the encoding.
    rest: Reader<'a>,
}

impl<'a> Head<'a> {
    pub(super) fn of(blob: &'a [u8]) -> Self {
        let mut r = Reader(blob);
        let flags = r.u8();
        let method = r.str();
        let path = r.str();
        let consumer = (flags & HAS_CONSUMER != 0).then(|| r.str());
        Self {
            flags,
            method,
            path,
            consumer,
            rest: r,
        }
    }

    /// The fields after the head that filters and summaries read.
    pub(super) fn tail(&self) -> Tail<'a> {
        let mut r = Reader(self.rest.0);
        let outcome = outcome(r.u8());
        let duration_us = r.u64();
        let request_size = r.u64();
        let response_size = r.u64();
        let route = (self.flags & HAS_ROUTE != 0).then(|| r.str());
        Tail {
            outcome,
            duration_us,
            request_size,
            response_size,
            route,
            rest: r,
        }
    }
}

/// The fields after [`Head`]: how the exchange ended, how long it took, the
/// body sizes and the route.
pub(super) struct Tail<'a> {
    pub(super) outcome: Outcome,
    pub(super) duration_us: u64,
    pub(super) request_size: u64,
    pub(super) response_size: u64,
    pub(super) route: Option<&'a str>,
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

/// Reads back what [`encode`] wrote. The encoding never leaves the sink, so a
/// malformed one is a bug here: the reader panics rather than guess.
struct Reader<'a>(&'a [u8]);

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> &'a [u8] {
        let (head, tail) = self.0.split_at(n);
        self.0 = tail;
        head
    }

    fn array<const N: usize>(&mut self) -> [u8; N] {
        self.take(N).try_into().expect("took N bytes")
    }

    fn u8(&mut self) -> u8 {
        self.take(1)[0]
    }

    fn u16(&mut self) -> u16 {
        u16::from_le_bytes(self.array())
    }

    fn u64(&mut self) -> u64 {
        u64::from_le_bytes(self.array())
    }

    fn len(&mut self) -> usize {
        let mut n = 0usize;
        let mut shift = 0;
        loop {
            let b = self.u8();
            n |= usize::from(b & 0x7f) << shift;
            if b < 0x80 {
                return n;
            }
            shift += 7;
        }
    }

    fn bytes(&mut self) -> &'a [u8] {
        let n = self.len();
        self.take(n)
    }

    fn str(&mut self) -> &'a str {
        std::str::from_utf8(self.bytes()).expect("encoded from a str")
    }

    fn string(&mut self) -> String {
        self.str().to_owned()
    }

    fn body(&mut self, size: u64, truncated: bool) -> CapturedBody {
        CapturedBody {
            bytes: Bytes::copy_from_slice(self.bytes()),
            size,
            truncated,
        }
    }

    fn headers(&mut self) -> HeaderMap {
        let (map, len) = headers::decode(self.0).expect("encoded by `headers::encode`");
        self.take(len);
        map
    }
}

/// The stored record back, whole.
pub(super) fn decode(key: &Key, entry: &Entry) -> UsageRecord {
    let head = Head::of(&entry.blob);
    let Tail {
        outcome,
        duration_us,
        request_size,
        response_size,
        route,
        rest: mut r,
    } = head.tail();
    let Head {
        flags,
        method,
        path,
        consumer,
        ..
    } = head;
    let has = |bit| flags & bit != 0;
    let route = route.map(str::to_owned);
    let body = r.body(request_size, has(REQUEST_TRUNCATED));
    let query = r.string();
    let params = (0..r.len())
        .map(|_| (r.string(), r.string()))
        .collect::<Vec<_>>();
    let headers = r.headers();
    let response = r.body(response_size, has(RESPONSE_TRUNCATED));
    let response_headers = r.headers();
    let grpc = has(HAS_GRPC).then(|| GrpcCall {
        status: has(HAS_GRPC_STATUS).then(|| r.u16()),
        message: has(HAS_GRPC_MESSAGE).then(|| r.string()),
        request_messages: r.u64(),
        response_messages: r.u64(),
    });
    let capture = if has(HAS_CAPTURE_NOTES) {
        serde_json::from_slice::<CaptureNotes>(r.bytes()).unwrap_or_default()
    } else {
        CaptureNotes::default()
    };
    UsageRecord {
        id: key.1.as_str().to_owned(),
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
        status: entry.status,
        created_at: entry.created_at,
        duration_us,
        outcome,
        grpc,
        capture,
    }
}
