//! What the layer captures on the request path, and how a capture becomes a
//! [`UsageRecord`] in the writer.
//!
//! On the request path the layer writes what it must keep (path, query, route,
//! headers) into one buffer of its own (see `capture::packed`), keeps body frames by
//! reference as they pass, up to the capture limit, and copies their prefix into
//! that buffer when the exchange ends. Everything else (redaction, query and
//! param parsing, the token hash, ids) happens when the writer turns the capture
//! into a record.

use std::any::Any;
use std::sync::{Arc, Mutex};
use std::time::{Instant, SystemTime};

use bytes::{Buf, Bytes, BytesMut};
use http::{HeaderMap, HeaderName, HeaderValue, Method, Uri};
use time::OffsetDateTime;

mod packed;

pub(crate) use packed::Packer;
use packed::{Packed, Part};

use crate::consumer::IdentifyConsumer;
use crate::grpc::MessageCounter;
use crate::params::RouteFn;
use crate::record::{truncate_to_millis, Outcome, RecordedRequest, UsageRecord};
use crate::recorder::Recorder;
use crate::redact::Redaction;
use crate::RequestInfo;

/// Default [`max_body_bytes`](crate::UsageLayer::max_body_bytes) for each side: 64 KiB.
pub const DEFAULT_MAX_BODY_BYTES: usize = 64 * 1024;

/// Response headers kept by default: `content-type`, `content-encoding`,
/// `content-length`, `location`, and gRPC's `grpc-status` and `grpc-message`
/// (which a trailers frame also provides).
pub const DEFAULT_KEPT_RESPONSE_HEADERS: &[&str] = &[
    "content-type",
    "content-encoding",
    "content-length",
    "location",
    "grpc-status",
    "grpc-message",
];

/// gRPC's `CANCELLED` status code.
const GRPC_CANCELLED: u16 = 1;

pub(crate) type SkipFn = Arc<dyn Fn(RequestInfo<'_>) -> bool + Send + Sync>;

/// The layer's capture settings, shared by every request.
#[derive(Clone)]
pub(crate) struct Config {
    pub(crate) request_limit: usize,
    pub(crate) response_limit: usize,
    pub(crate) capture_event_streams: bool,
    pub(crate) identify: IdentifyConsumer,
    pub(crate) route: RouteFn,
    pub(crate) skip: Option<SkipFn>,
    pub(crate) keep_response_headers: Vec<HeaderName>,
    pub(crate) redaction: Arc<Redaction>,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            request_limit: DEFAULT_MAX_BODY_BYTES,
            response_limit: DEFAULT_MAX_BODY_BYTES,
            capture_event_streams: false,
            identify: IdentifyConsumer::bearer(),
            route: crate::params::default_route(),
            skip: None,
            keep_response_headers: DEFAULT_KEPT_RESPONSE_HEADERS
                .iter()
                .map(|h| HeaderName::from_static(h))
                .collect(),
            redaction: Arc::new(Redaction::default()),
        }
    }
}

/// Frames kept as they came: one `Bytes` needs no allocation.
#[derive(Debug, Default)]
enum Chunks {
    #[default]
    Empty,
    One(Bytes),
    Many(Vec<Bytes>),
}

impl Chunks {
    fn push(&mut self, b: Bytes) {
        *self = match std::mem::take(self) {
            Chunks::Empty => Chunks::One(b),
            Chunks::One(a) => Chunks::Many(vec![a, b]),
            Chunks::Many(mut v) => {
                v.push(b);
                Chunks::Many(v)
            }
        };
    }

    /// Appends every frame to `out`.
    fn copy_into(&self, out: &mut Vec<u8>) {
        match self {
            Chunks::Empty => {}
            Chunks::One(b) => out.extend_from_slice(b),
            Chunks::Many(v) => v.iter().for_each(|b| out.extend_from_slice(b)),
        }
    }
}

/// A bounded copy of a body: the first `limit` bytes, and the total size seen.
#[derive(Debug)]
pub(crate) struct Tap {
    limit: usize,
    kept: usize,
    size: u64,
    chunks: Chunks,
    /// For gRPC bodies: counts the messages, also past the limit.
    messages: Option<MessageCounter>,
}

impl Tap {
    pub(crate) fn new(limit: usize) -> Self {
        Self {
            limit,
            kept: 0,
            size: 0,
            chunks: Chunks::Empty,
            messages: None,
        }
    }

    /// Also counts gRPC messages when `grpc` (see [`crate::grpc`]).
    pub(crate) fn counting_messages(mut self, grpc: bool) -> Self {
        if grpc {
            self.messages = Some(MessageCounter::default());
        }
        self
    }

    /// The gRPC messages seen, when counting.
    pub(crate) fn messages(&self) -> u64 {
        self.messages.as_ref().map_or(0, MessageCounter::messages)
    }

    pub(crate) fn size(&self) -> u64 {
        self.size
    }

    /// Notes a data frame: keeps its prefix while under the limit. For `Bytes`
    /// frames this is a reference-count bump, not a copy.
    pub(crate) fn observe<D: Buf + 'static>(&mut self, data: &D) {
        let len = data.remaining();
        self.size += len as u64;
        if let Some(counter) = &mut self.messages {
            counter.observe(data);
        }
        let room = self.limit - self.kept;
        let take = room.min(len);
        if take == 0 {
            return;
        }
        let bytes = match (data as &dyn Any).downcast_ref::<Bytes>() {
            Some(b) => b.slice(..take),
            None => copy_prefix(data, take),
        };
        // `copy_prefix` may see fewer bytes than `take` (a `Buf` of more than
        // 64 chunks): count what was kept.
        self.kept += bytes.len();
        self.chunks.push(bytes);
    }

    /// The body captured so far, copied into one buffer.
    #[cfg(test)]
    pub(crate) fn to_body(&self) -> crate::record::CapturedBody {
        let mut out = Vec::with_capacity(self.kept);
        self.chunks.copy_into(&mut out);
        crate::record::CapturedBody {
            bytes: out.into(),
            size: self.size,
            truncated: self.size > self.kept as u64,
        }
    }
}

fn copy_prefix<D: Buf>(data: &D, take: usize) -> Bytes {
    let first = data.chunk();
    if first.len() >= take {
        return Bytes::copy_from_slice(&first[..take]);
    }
    let mut slices = [std::io::IoSlice::new(&[]); 64];
    let n = data.chunks_vectored(&mut slices);
    let mut out = BytesMut::with_capacity(take);
    for s in &slices[..n] {
        let want = take - out.len();
        out.extend_from_slice(&s[..want.min(s.len())]);
        if out.len() == take {
            break;
        }
    }
    out.freeze()
}

/// The request body's tap, shared with the request body wrapper.
pub(crate) type SharedTap = Arc<Mutex<Tap>>;

pub(crate) fn lock_tap(tap: &SharedTap) -> std::sync::MutexGuard<'_, Tap> {
    tap.lock().unwrap_or_else(|p| p.into_inner())
}

/// A request in flight: what was captured before the response.
pub(crate) struct Pending {
    pub(crate) started: Instant,
    pub(crate) created: SystemTime,
    pub(crate) method: Method,
    /// The path, query, route and request headers, already packed, with room
    /// for the rest (see [`Pending::packer`]).
    pub(crate) packer: Packer,
    /// A gRPC call framed as `application/grpc` messages.
    pub(crate) grpc_framed: bool,
    /// The consumer; `None` also when it is still to be derived from the
    /// bearer token (`consumer_from_bearer`).
    pub(crate) consumer: Option<String>,
    pub(crate) consumer_from_bearer: bool,
    /// A gRPC call (`content-type: application/grpc*`).
    pub(crate) grpc: bool,
    pub(crate) request_tap: Option<SharedTap>,
    pub(crate) config: Arc<Config>,
    /// Taken when the capture is handed over, so a queued capture never keeps
    /// the recorder (and so its own queue) alive.
    pub(crate) recorder: Option<Recorder>,
}

impl std::fmt::Debug for Pending {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Pending")
            .field("method", &self.method)
            .finish_non_exhaustive()
    }
}

/// What the response side adds (besides the kept headers, which go straight
/// into the [`Pending::packer`]).
#[derive(Debug, Default)]
pub(crate) struct ResponseCapture {
    pub(crate) status: u16,
    pub(crate) body: Option<Tap>,
    /// gRPC calls: `grpc-status` and `grpc-message`, from the trailers, else the
    /// headers.
    pub(crate) grpc_status: Option<HeaderValue>,
    pub(crate) grpc_message: Option<HeaderValue>,
}

impl ResponseCapture {
    /// Notes `grpc-status` / `grpc-message` from response headers or trailers;
    /// later calls (trailers) win.
    pub(crate) fn note_grpc(&mut self, map: &HeaderMap) {
        const GRPC_STATUS: HeaderName = HeaderName::from_static("grpc-status");
        const GRPC_MESSAGE: HeaderName = HeaderName::from_static("grpc-message");
        if let Some(v) = map.get(GRPC_STATUS) {
            self.grpc_status = Some(v.clone());
        }
        if let Some(v) = map.get(GRPC_MESSAGE) {
            self.grpc_message = Some(v.clone());
        }
    }
}

impl Pending {
    /// The packer for a request: its path, query, route and headers, in a
    /// buffer with room for what the exchange adds up to the end (a body of
    /// `body_hint` bytes, and some room for the response), so that it is
    /// usually allocated once, here, at the start of the request.
    pub(crate) fn packer(
        uri: &Uri,
        route: Option<&str>,
        headers: &HeaderMap,
        body_hint: usize,
    ) -> Packer {
        /// Room for the kept response headers and a small response body.
        const RESPONSE_ROOM: usize = 512;
        let (path, query) = (uri.path(), uri.query());
        let mut packer = Packer::with_capacity(
            path.len()
                + query.map_or(0, str::len)
                + route.map_or(0, str::len)
                + packed::headers_len(headers)
                + body_hint
                + RESPONSE_ROOM,
        );
        packer.bytes(Part::Path, path.as_bytes());
        if let Some(query) = query {
            packer.bytes(Part::Query, query.as_bytes());
        }
        if let Some(route) = route {
            packer.bytes(Part::Route, route.as_bytes());
        }
        packer.headers(Part::RequestHeaders, headers);
        packer
    }

    /// Ends the exchange: packs what the response added (see [`packed`]), drops
    /// the rest here, and hands the capture to the writer.
    pub(crate) fn finish(mut self, mut response: ResponseCapture, outcome: Outcome) {
        let duration = self.started.elapsed();
        let Some(recorder) = self.recorder.take() else {
            return;
        };
        let request_tap = self.request_tap.take();
        let request_tap = request_tap.as_ref().map(lock_tap);
        let response_tap = response.body.take();
        let mut packer = self.packer;
        let kept = |tap: Option<&Tap>| tap.map_or(0, |t| t.kept);
        // One exact growth, if the room made at the start is too small.
        packer.reserve(
            kept(request_tap.as_deref())
                + kept(response_tap.as_ref())
                + response.grpc_status.as_ref().map_or(0, HeaderValue::len)
                + response.grpc_message.as_ref().map_or(0, HeaderValue::len),
        );
        if let Some(v) = &response.grpc_status {
            packer.bytes(Part::GrpcStatus, v.as_bytes());
        }
        if let Some(v) = &response.grpc_message {
            packer.bytes(Part::GrpcMessage, v.as_bytes());
        }
        packer.body(Part::RequestBody, request_tap.as_deref());
        packer.body(Part::ResponseBody, response_tap.as_ref());
        let packed = packer.finish();
        recorder.submit(Finished {
            created: self.created,
            method: self.method,
            consumer: self.consumer,
            consumer_from_bearer: self.consumer_from_bearer,
            grpc: self.grpc,
            status: response.status,
            config: self.config,
            packed,
            outcome,
            duration_us: u64::try_from(duration.as_micros()).unwrap_or(u64::MAX),
        });
    }

    /// Ends an exchange that never got a response.
    pub(crate) fn finish_without_response(self, status: u16, outcome: Outcome) {
        self.finish(
            ResponseCapture {
                status,
                ..ResponseCapture::default()
            },
            outcome,
        );
    }

    /// Packs the response headers the record keeps.
    pub(crate) fn keep_headers(&mut self, headers: &HeaderMap) {
        let keep = &self.config.keep_response_headers;
        self.packer
            .kept_headers(Part::ResponseHeaders, headers, keep);
    }

    /// Packs the kept response headers that trailers carry (the first value of
    /// each); they replace the same headers from the head.
    pub(crate) fn keep_trailers(&mut self, trailers: &HeaderMap) {
        let keep = &self.config.keep_response_headers;
        self.packer.entries_of(
            Part::ResponseTrailers,
            keep.iter()
                .filter_map(|name| Some((name, trailers.get(name)?))),
        );
    }
}

/// A finished exchange waiting in the writer's queue: a few fields, and
/// everything else [packed](packed) into one buffer.
pub(crate) struct Finished {
    created: SystemTime,
    method: Method,
    /// `None` also when it is to be derived from the bearer token.
    consumer: Option<String>,
    consumer_from_bearer: bool,
    grpc: bool,
    status: u16,
    config: Arc<Config>,
    packed: Packed,
    outcome: Outcome,
    duration_us: u64,
}

impl std::fmt::Debug for Finished {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Finished")
            .field("method", &self.method)
            .field("status", &self.status)
            .field("outcome", &self.outcome)
            .finish_non_exhaustive()
    }
}

impl Finished {
    /// Builds the record. Runs on the writer task.
    pub(crate) fn into_record(self) -> UsageRecord {
        let Finished {
            created,
            method,
            consumer,
            consumer_from_bearer,
            grpc,
            status,
            config,
            packed,
            outcome,
            duration_us,
        } = self;
        let redaction = &config.redaction;
        let created_at = truncate_to_millis(OffsetDateTime::from(created));
        let path = packed.str(Part::Path).unwrap_or_default().to_owned();
        let query = packed
            .str(Part::Query)
            .map(|q| redaction.query(q).into_owned())
            .unwrap_or_default();
        let route = packed.str(Part::Route).map(str::to_owned);
        let request_headers = packed.headers(Part::RequestHeaders);
        let mut response_headers = packed.headers(Part::ResponseHeaders);
        for (name, value) in &packed.headers(Part::ResponseTrailers) {
            response_headers.insert(name.clone(), value.clone());
        }

        let (mut request_body, mut response_body) = packed.bodies();
        request_body.bytes = redaction.body(request_body.bytes, &request_headers);
        response_body.bytes = redaction.body(response_body.bytes, &response_headers);

        let params = crate::params::params_for(route.as_deref(), &path, grpc);
        let grpc = grpc.then(|| {
            let mut status = packed
                .header_value(Part::GrpcStatus)
                .as_ref()
                .and_then(|v| v.to_str().ok())
                .and_then(|s| s.trim().parse().ok());
            if status.is_none() && outcome == Outcome::Cancelled {
                // The call was cancelled before the server sent a status: what
                // the client sees too.
                status = Some(GRPC_CANCELLED);
            }
            crate::record::GrpcCall {
                status,
                message: packed
                    .header_value(Part::GrpcMessage)
                    .as_ref()
                    .and_then(|v| v.to_str().ok())
                    .map(|m| {
                        percent_encoding::percent_decode_str(m)
                            .decode_utf8_lossy()
                            .into_owned()
                    }),
                request_messages: packed.request.messages,
                response_messages: packed.response.messages,
            }
        });

        let consumer = if consumer_from_bearer {
            crate::consumer::bearer_consumer(&request_headers)
        } else {
            consumer
        };
        UsageRecord {
            id: UsageRecord::new_id(created_at),
            consumer,
            method: method.as_str().to_owned(),
            path,
            route,
            request: RecordedRequest {
                body: request_body,
                query,
                params,
                headers: redaction.headers(request_headers),
            },
            response: response_body,
            response_headers: redaction.headers(response_headers),
            status,
            created_at,
            duration_us,
            outcome,
            grpc,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tap_keeps_prefix_and_counts_all() {
        let mut tap = Tap::new(5);
        tap.observe(&Bytes::from_static(b"abc"));
        tap.observe(&Bytes::from_static(b"defgh"));
        tap.observe(&Bytes::from_static(b"ij"));
        let body = tap.to_body();
        assert_eq!(&body.bytes[..], b"abcde");
        assert_eq!(body.size, 10);
        assert!(body.truncated);
    }

    #[test]
    fn tap_copies_non_bytes_buffers() {
        let mut tap = Tap::new(4);
        let chained = (&b"ab"[..]).chain(&b"cdef"[..]);
        tap.observe(&chained);
        let body = tap.to_body();
        assert_eq!(&body.bytes[..], b"abcd");
        assert_eq!(body.size, 6);
    }

    #[test]
    fn tap_with_zero_limit_only_counts() {
        let mut tap = Tap::new(0);
        tap.observe(&Bytes::from_static(b"data: x\n\n"));
        let body = tap.to_body();
        assert!(body.bytes.is_empty());
        assert_eq!(body.size, 9);
        assert!(body.truncated);
    }
}
