//! What the layer captures on the request path, and how a capture becomes a
//! [`UsageRecord`] in the writer.
//!
//! On the request path the layer only clones what it must (method, URI, header
//! map: reference-counted bytes) and keeps body frames as they came, up to the
//! capture limit. Everything else (body concatenation, redaction, query
//! and param parsing, ids) happens when the writer turns the capture into a record.

use std::any::Any;
use std::sync::{Arc, Mutex};
use std::time::{Instant, SystemTime};

use bytes::{Buf, Bytes, BytesMut};
use http::{HeaderMap, HeaderName, HeaderValue, Method, Uri};
use time::OffsetDateTime;

use crate::consumer::IdentifyConsumer;
use crate::grpc::MessageCounter;
use crate::params::RouteFn;
use crate::record::{truncate_to_millis, CapturedBody, Outcome, RecordedRequest, UsageRecord};
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
        self.kept += take;
        self.chunks.push(bytes);
    }

    /// The body captured so far, copied into one buffer.
    #[cfg(test)]
    pub(crate) fn to_body(&self) -> CapturedBody {
        let mut out = Vec::with_capacity(self.kept);
        self.chunks.copy_into(&mut out);
        CapturedBody {
            bytes: out.into(),
            size: self.size,
            truncated: self.size > self.kept as u64,
        }
    }
}

/// What a tap saw, without its bytes (which are in [`Packed::bytes`]).
#[derive(Debug, Default, Clone, Copy)]
struct TapSummary {
    kept: usize,
    size: u64,
    messages: u64,
}

impl TapSummary {
    fn of(tap: &Tap) -> Self {
        Self {
            kept: tap.kept,
            size: tap.size,
            messages: tap.messages(),
        }
    }

    fn body(&self, bytes: Bytes) -> CapturedBody {
        CapturedBody {
            bytes,
            size: self.size,
            truncated: self.size > self.kept as u64,
        }
    }
}

/// Both captured bodies, copied at the end of the exchange into one buffer of
/// the layer's own: the request body's bytes, then the response body's. So a
/// queued capture holds a single allocation, and no frame of the app's or the
/// transport's is kept alive (nor freed later, on the writer, away from the
/// allocator's per-thread caches).
#[derive(Debug, Default)]
struct Packed {
    bytes: Bytes,
    request: TapSummary,
    response: TapSummary,
}

impl Packed {
    fn new(request: Option<&Tap>, response: Option<&Tap>) -> Self {
        let summary = |tap: Option<&Tap>| tap.map(TapSummary::of).unwrap_or_default();
        let (req, res) = (summary(request), summary(response));
        let mut out = Vec::with_capacity(req.kept + res.kept);
        for tap in [request, response].into_iter().flatten() {
            tap.chunks.copy_into(&mut out);
        }
        debug_assert_eq!(out.len(), req.kept + res.kept);
        Self {
            bytes: out.into(),
            request: req,
            response: res,
        }
    }

    /// The two bodies, sharing the buffer.
    fn bodies(&self) -> (CapturedBody, CapturedBody) {
        let split = self.request.kept;
        (
            self.request.body(self.bytes.slice(..split)),
            self.response.body(self.bytes.slice(split..)),
        )
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
    pub(crate) uri: Uri,
    pub(crate) headers: HeaderMap,
    /// The consumer; `None` also when it is still to be derived from the
    /// bearer token (`consumer_from_bearer`).
    pub(crate) consumer: Option<String>,
    pub(crate) consumer_from_bearer: bool,
    pub(crate) route: Option<String>,
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
            .field("uri", &self.uri)
            .finish_non_exhaustive()
    }
}

/// What the response side adds.
#[derive(Debug, Default)]
pub(crate) struct ResponseCapture {
    pub(crate) status: u16,
    pub(crate) headers: HeaderMap,
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
        if let Some(v) = map.get("grpc-status") {
            self.grpc_status = Some(v.clone());
        }
        if let Some(v) = map.get("grpc-message") {
            self.grpc_message = Some(v.clone());
        }
    }
}

impl Pending {
    /// Ends the exchange: hands the capture to the writer.
    pub(crate) fn finish(mut self, mut response: ResponseCapture, outcome: Outcome) {
        let duration = self.started.elapsed();
        let Some(recorder) = self.recorder.take() else {
            return;
        };
        let request_tap = self.request_tap.take();
        let bodies = Packed::new(
            request_tap.as_ref().map(lock_tap).as_deref(),
            response.body.take().as_ref(),
        );
        recorder.submit(Finished {
            pending: self,
            response,
            bodies,
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

    /// The response headers the record keeps.
    pub(crate) fn kept_headers(&self, headers: &HeaderMap) -> HeaderMap {
        let mut kept = HeaderMap::new();
        for name in &self.config.keep_response_headers {
            for value in headers.get_all(name) {
                kept.append(name.clone(), value.clone());
            }
        }
        kept
    }
}

/// A finished exchange waiting in the writer's queue.
#[derive(Debug)]
pub(crate) struct Finished {
    pending: Pending,
    response: ResponseCapture,
    bodies: Packed,
    outcome: Outcome,
    duration_us: u64,
}

impl Finished {
    /// Builds the record. Runs on the writer task.
    pub(crate) fn into_record(self) -> UsageRecord {
        let Finished {
            pending,
            response,
            bodies,
            outcome,
            duration_us,
        } = self;
        let redaction = &pending.config.redaction;
        let created_at = truncate_to_millis(OffsetDateTime::from(pending.created));
        let path = pending.uri.path().to_owned();
        let query = pending
            .uri
            .query()
            .map(|q| redaction.query(q).into_owned())
            .unwrap_or_default();

        let (mut request_body, mut response_body) = bodies.bodies();
        request_body.bytes = redaction.body(request_body.bytes, &pending.headers);
        response_body.bytes = redaction.body(response_body.bytes, &response.headers);

        let params = crate::params::params_for(pending.route.as_deref(), &path, &pending.headers);
        let grpc = pending.grpc.then(|| {
            let mut status = response
                .grpc_status
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
                message: response
                    .grpc_message
                    .as_ref()
                    .and_then(|v| v.to_str().ok())
                    .map(|m| {
                        percent_encoding::percent_decode_str(m)
                            .decode_utf8_lossy()
                            .into_owned()
                    }),
                request_messages: bodies.request.messages,
                response_messages: bodies.response.messages,
            }
        });

        let consumer = if pending.consumer_from_bearer {
            crate::consumer::bearer_consumer(&pending.headers)
        } else {
            pending.consumer
        };
        UsageRecord {
            id: UsageRecord::new_id(created_at),
            consumer,
            method: pending.method.as_str().to_owned(),
            path,
            route: pending.route,
            request: RecordedRequest {
                body: request_body,
                query,
                params,
                headers: redaction.headers(pending.headers),
            },
            response: response_body,
            response_headers: redaction.headers(response.headers),
            status: response.status,
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
