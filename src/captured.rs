//! The queued form of one exchange: [`Captured`], a few fields and one
//! [`Packed`] buffer. A leaf of the data path: the middleware fills it (see
//! `middleware/pack.rs`), the writer turns it into a record (see
//! `writer/assemble.rs`); it knows neither.
//!
//! When an exchange ends, everything the record needs from the request and the
//! response (path and query, route, both header maps, both captured bodies, the
//! gRPC status) is copied into one allocation, and the capture's header maps,
//! URI, taps and frames are dropped right there, on the request path. So a
//! queued capture holds a single buffer: no frame or header value of the app's or
//! the transport's is kept alive while it waits, and what the request path
//! allocated is freed where it was allocated, in the allocator's per-thread
//! caches, instead of in bursts on the writer.
//!
//! The writer turns the buffer back into a [`UsageRecord`](crate::UsageRecord):
//! header values and bodies become slices of it, without another copy.
//!
//! # Layout
//!
//! Parts are laid end to end; [`Packed`] keeps the `(start, end)` of each. A
//! header map is its entry count (`u32`), then per value a flags byte (1:
//! sensitive), the name's length (`u16`) and name, and the value's length
//! (`u32`) and value; lengths little-endian.

use std::ops::Range;
use std::sync::Arc;
use std::time::SystemTime;

use bytes::Bytes;
use http::{HeaderMap, HeaderValue, Method};

use crate::codec::headers;
use crate::hooks::{IdentifyConsumer, Protocol};
use crate::record::{CapturedBody, Outcome, Redaction};

/// A finished exchange waiting in the writer's queue: a few fields, and
/// everything else [packed](Packed) into one buffer.
pub(crate) struct Captured {
    /// The record id, when the middleware made it (to send it in a header);
    /// else the writer makes one.
    pub(crate) id: Option<String>,
    pub(crate) created: SystemTime,
    pub(crate) method: Method,
    /// `None` also when it is to be derived from the bearer token.
    pub(crate) consumer: Option<String>,
    /// Set when the consumer is still to be derived from the captured headers
    /// (a bearer derivation, done by the writer).
    pub(crate) identify_later: Option<IdentifyConsumer>,
    pub(crate) protocol: Protocol,
    pub(crate) status: u16,
    /// The layer's redaction rules, applied by the writer.
    pub(crate) redaction: Arc<Redaction>,
    /// Request header bytes not kept (past the layer's `max_header_bytes`).
    pub(crate) headers_cut: u64,
    /// The handler did not read the request body to its end.
    pub(crate) body_unread: bool,
    /// The capture limits (request, response): the most a body in a
    /// `Content-Encoding` is decoded to.
    pub(crate) body_limits: (usize, usize),
    pub(crate) packed: Packed,
    /// The arrival (`created`) of the oldest exchange in flight when this one
    /// arrived: no later than its own `created`, nor than the `created` of
    /// any exchange that arrived later. So the first queued capture's is no
    /// later than the `created` of any capture queued, and while a capture is
    /// pending the writer's `complete_until` stays at or before its `created`.
    pub(crate) oldest_in_flight: SystemTime,
    pub(crate) outcome: Outcome,
    pub(crate) duration_us: u64,
    /// Why the capture policy withheld the (request, response) body, when it
    /// did (see [`CaptureNotes::request_body_policy`](crate::CaptureNotes::request_body_policy)).
    pub(crate) policy_withheld: (Option<&'static str>, Option<&'static str>),
}

impl std::fmt::Debug for Captured {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Captured")
            .field("method", &self.method)
            .field("status", &self.status)
            .field("outcome", &self.outcome)
            .finish_non_exhaustive()
    }
}

/// The parts of a [`Packed`] buffer.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Part {
    Path,
    Query,
    Route,
    GrpcStatus,
    GrpcMessage,
    RequestHeaders,
    /// The kept response headers.
    ResponseHeaders,
    /// The kept response headers that the trailers carry (they win).
    ResponseTrailers,
    RequestBody,
    ResponseBody,
    /// The request's `Content-Type`, `Content-Encoding` and
    /// `Transfer-Encoding`, when the request headers were cut (past
    /// `max_header_bytes`): what the writer needs to decode and redact the
    /// body, whatever the cut left out. Absent when nothing was cut.
    RequestBodyHeads,
    /// The response's, when the kept response headers leave either
    /// `content-type` or `content-encoding` out: decoding and redaction do
    /// not depend on the headers the user keeps. Absent when both are kept.
    ResponseBodyHeads,
}

pub(crate) const PARTS: usize = 12;

/// What a tap saw, without its bytes (which are in the buffer).
#[derive(Debug, Default, Clone, Copy)]
pub(crate) struct TapSummary {
    pub(crate) kept: usize,
    pub(crate) size: u64,
    pub(crate) messages: u64,
}

/// One buffer holding every part of a capture; see the [module docs](self).
#[derive(Debug, Default)]
pub(crate) struct Packed {
    bytes: Bytes,
    /// The buffer's capacity (what the writer's byte budget counts).
    capacity: usize,
    /// Where each part is in `bytes`, by [`Part`]; `None` when absent.
    parts: [Option<(u32, u32)>; PARTS],
    pub(crate) request: TapSummary,
    pub(crate) response: TapSummary,
}

impl Packed {
    /// The bytes the buffer takes, its capacity (what the writer's byte budget
    /// counts).
    pub(crate) fn size(&self) -> usize {
        self.capacity.max(self.bytes.len())
    }

    /// A buffer and where its parts are, as the packer wrote them.
    pub(crate) fn new(
        buffer: Vec<u8>,
        parts: [Option<(u32, u32)>; PARTS],
        request: TapSummary,
        response: TapSummary,
    ) -> Self {
        Self {
            capacity: buffer.capacity(),
            bytes: buffer.into(),
            parts,
            request,
            response,
        }
    }

    /// A buffer of these parts, text and header maps, laid out as the
    /// middleware's packer lays them: for tests of what reads it.
    #[cfg(test)]
    pub(crate) fn of_parts(texts: &[(Part, &str)], maps: &[(Part, &HeaderMap)]) -> Self {
        let mut out = Vec::new();
        let mut parts = [None; PARTS];
        let mut place = |part: Part, out: &mut Vec<u8>, start: usize| {
            parts[part as usize] = Some((start as u32, out.len() as u32));
        };
        for &(part, text) in texts {
            let start = out.len();
            out.extend_from_slice(text.as_bytes());
            place(part, &mut out, start);
        }
        for &(part, map) in maps {
            let start = out.len();
            headers::encode_entries(&mut out, map.iter());
            place(part, &mut out, start);
        }
        Self::new(out, parts, TapSummary::default(), TapSummary::default())
    }

    fn range(&self, part: Part) -> Option<Range<usize>> {
        let (start, end) = self.parts[part as usize]?;
        Some(start as usize..end as usize)
    }

    /// A part as text; `None` when absent (or, which cannot happen for what the
    /// packer wrote, not UTF-8).
    pub(crate) fn str(&self, part: Part) -> Option<&str> {
        std::str::from_utf8(&self.bytes[self.range(part)?]).ok()
    }

    /// A part that was a header value.
    pub(crate) fn header_value(&self, part: Part) -> Option<HeaderValue> {
        HeaderValue::from_maybe_shared(self.bytes.slice(self.range(part)?)).ok()
    }

    /// A header map, its values slices of the buffer (see
    /// [`codec::headers`](crate::codec::headers)).
    pub(crate) fn headers(&self, part: Part) -> HeaderMap {
        self.headers_into(part, HeaderMap::new())
    }

    /// [`headers`](Self::headers), or `None` when the part is absent.
    pub(crate) fn headers_if_packed(&self, part: Part) -> Option<HeaderMap> {
        self.range(part)?;
        Some(self.headers(part))
    }

    /// [`headers`](Self::headers), decoded into `map` (empty, its allocation
    /// reused).
    pub(crate) fn headers_into(&self, part: Part, mut map: HeaderMap) -> HeaderMap {
        if let Some(range) = self.range(part) {
            // Cannot be cut short: the packer wrote the whole map.
            let _ = headers::decode_into(&self.bytes.slice(range), &mut map);
        }
        map
    }

    /// The two bodies, slices of the buffer.
    pub(crate) fn bodies(&self) -> (CapturedBody, CapturedBody) {
        let body = |part: Part, tap: &TapSummary| CapturedBody {
            bytes: self
                .range(part)
                .map(|r| self.bytes.slice(r))
                .unwrap_or_default(),
            size: tap.size,
            truncated: tap.size > tap.kept as u64,
        };
        (
            body(Part::RequestBody, &self.request),
            body(Part::ResponseBody, &self.response),
        )
    }
}
