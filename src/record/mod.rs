//! The record: [`UsageRecord`] and its parts, the data model every other
//! module shares, and the pure functions over it (redaction, route params, gRPC
//! framing, time, the wire form). A leaf below the middleware, the writer, the
//! sinks and the endpoint: it imports none of them.

use std::fmt;

use bytes::Bytes;
use http::HeaderMap;
use serde::{Deserialize, Serialize};
use time::OffsetDateTime;

/// One request and its response, as captured by [`UsageLayer`](crate::UsageLayer).
///
/// Its serde form is the `/usage` wire format (camelCase field names, bodies
/// rendered as described below): an **output** format, for clients to read.
/// It is lossy, and not for storing records: it joins repeated headers,
/// re-renders JSON bodies, and folds body sizes and truncation into the
/// rendering. A sink stores the **storage form** instead,
/// [`to_storage_bytes`](Self::to_storage_bytes) and
/// [`from_storage_bytes`](Self::from_storage_bytes): lossless, versioned, and
/// readable by every later release of this crate.
///
/// # Wire format
///
/// The record keeps what was captured as it came: bodies are the raw bytes (at most
/// the capture limit), the query is the raw query string, headers are a
/// [`HeaderMap`]. Rendering to JSON happens only when a record is serialized:
///
/// | captured body                              | rendered as                                   |
/// |--------------------------------------------|-----------------------------------------------|
/// | empty                                      | `{}`                                          |
/// | a JSON object or array                     | that JSON                                     |
/// | other UTF-8 text (JSON scalars included)   | a JSON string                                 |
/// | anything else                              | `{"encoding": "base64", "data": "..."}`       |
///
/// A JSON body nested deeper than [`MAX_JSON_DEPTH`](crate::MAX_JSON_DEPTH)
/// (64) levels renders as a string, so that a page stays parseable. A body cut
/// at the capture limit inside a multi-byte character renders as the text
/// before that character (as base64 when there is no text before it). A JSON
/// body in the shape of a binary one (an object of only `"encoding":
/// "base64"` and a string `"data"`) renders as a string, so that it reads back
/// as itself.
///
/// Next to each body the record says how many bytes the body had in all
/// (`bodySize` / `responseSize`) and, when the copy was cut at the capture limit,
/// `bodyTruncated: true` / `responseTruncated: true` (absent otherwise). A truncated
/// body renders as a string (or base64), never as JSON: it is a prefix, valid
/// JSON only by chance.
///
/// gRPC calls (a [`GrpcCall`] on the record, request `content-type:
/// application/grpc...`) render each body as the list of its messages instead:
/// `[{"compressed": false, "data": "<base64>"}, ...]`, a message cut by the
/// capture limit with `"size": <its length>, "truncated": true`, and a `"json"`
/// rendering of each message when [`UsageService::grpc_message_json`](crate::UsageService::grpc_message_json)
/// is set; see the crate docs on [gRPC](crate#grpc). The record's gRPC result is on the
/// wire as `grpcStatus: {"code": 5, "name": "NOT_FOUND"}`, `grpcMessage` (percent-decoded)
/// and `grpcMessages: {"request": 1, "response": 0}`.
///
/// Deserializing the wire form gives back an equal record up to rendering: a
/// rendered JSON body comes back as its compact serialization, and rendering the
/// result again gives the same JSON. That holds for every record the layer can
/// produce (non-ASCII and obs-text header values, which render as UTF-8 with
/// `U+FFFD` for bytes that are not, included), so an NDJSON export parses back
/// into records line by line. It does not give back the record as captured:
/// for that, see [`to_storage_bytes`](Self::to_storage_bytes).
///
/// # Example
///
/// ```
/// use tower_usage::{UsageRecord, CapturedBody};
///
/// let mut record = UsageRecord::default();
/// record.method = "POST".into();
/// record.path = "/rest/v1/airdrop/".into();
/// record.status = 200;
/// record.request.body = CapturedBody::complete(r#"{"sequential":false}"#);
/// record.request.query = "a=1&b=2&b=3".into();
///
/// let json = serde_json::to_value(&record).unwrap();
/// assert_eq!(json["request"]["body"]["sequential"], false);
/// assert_eq!(json["request"]["query"]["b"][1], "3");
/// assert_eq!(json["response"], serde_json::json!({}));
///
/// let back: UsageRecord = serde_json::from_value(json).unwrap();
/// assert_eq!(back.request.query, "a=1&b=2&b=3");
/// ```
#[derive(Debug, Clone, PartialEq)]
pub struct UsageRecord {
    /// Unique id: 26 characters of Crockford base32 (a ULID), whose first 10
    /// encode `created_at` in milliseconds, so ids sort in time order.
    pub id: String,
    /// The consumer the request is attributed to; `None` for anonymous requests.
    pub consumer: Option<String>,
    /// The request method, upper case as sent (`GET`).
    pub method: String,
    /// The request path, without the query string.
    pub path: String,
    /// The matched route template (`/rest/v1/airdrop/{batchId}`), where the
    /// framework knows it.
    pub route: Option<String>,
    /// What the client sent.
    pub request: RecordedRequest,
    /// The response body.
    pub response: CapturedBody,
    /// The response headers worth keeping (see
    /// [`UsageLayer::keep_response_headers`](crate::UsageLayer::keep_response_headers)).
    pub response_headers: HeaderMap,
    /// The HTTP status. `499` when the request was cancelled before the inner
    /// service answered, `500` when the inner service returned an error; see
    /// [`outcome`](Self::outcome).
    pub status: u16,
    /// When the request arrived: UTC, millisecond precision.
    pub created_at: OffsetDateTime,
    /// From the request's arrival to the record's emission (the end of the
    /// response body), in microseconds.
    pub duration_us: u64,
    /// How the exchange ended.
    pub outcome: Outcome,
    /// The gRPC call's result, for gRPC requests.
    pub grpc: Option<GrpcCall>,
    /// What the capture could not keep as it was (headers cut, a body the
    /// handler did not read). Empty for most records.
    pub capture: CaptureNotes,
    /// The W3C trace context the request came with (its `traceparent`
    /// header), when it had a valid one: `traceId` and `spanId` on the wire.
    pub trace: Option<TraceContext>,
}

impl UsageRecord {
    /// [`created_at`](Self::created_at) in milliseconds since the Unix epoch
    /// (rounded down, also before 1970): the key sinks sort and page by,
    /// with [`id`](Self::id) to break ties.
    ///
    /// ```
    /// let mut record = tower_usage::UsageRecord::default();
    /// record.created_at = time::macros::datetime!(2023-01-11 08:07:39.839 UTC);
    /// assert_eq!(record.created_at_ms(), 1_673_424_459_839);
    /// ```
    pub fn created_at_ms(&self) -> i64 {
        unix_millis(self.created_at)
    }

    /// A fresh id for a record created at `created_at`: a ULID (26 characters of
    /// Crockford base32) whose first 48 bits are the milliseconds since the Unix
    /// epoch and whose last 80 are random, so ids sort in time order and two
    /// processes never collide in practice.
    ///
    /// Ids made on one thread for the same millisecond also sort in the order
    /// they were made: the random part of the first is increased by a small
    /// random step for the next. So a sink's index on `(created_at, id)` grows
    /// at its end instead of in random places.
    ///
    /// ```
    /// let t = time::macros::datetime!(2023-01-11 08:07:39.839 UTC);
    /// let a = tower_usage::UsageRecord::new_id(t);
    /// let b = tower_usage::UsageRecord::new_id(t);
    /// let c = tower_usage::UsageRecord::new_id(t + time::Duration::milliseconds(1));
    /// assert_eq!(a.len(), 26);
    /// assert!(a < b && b < c);
    /// ```
    pub fn new_id(created_at: OffsetDateTime) -> String {
        let mut id = String::new();
        Self::write_id(created_at, &mut id);
        id
    }

    /// [`new_id`](Self::new_id), written over `out` (cleared first), so the
    /// writer can reuse a written record's allocation.
    pub(crate) fn write_id(created_at: OffsetDateTime, out: &mut String) {
        const RANDOM_BITS: u128 = (1 << 80) - 1;
        /// The milliseconds and random part of the process's last id. One
        /// for the process, not one per thread: the writer task moves between
        /// a runtime's threads, and ids of one millisecond made on two
        /// threads would sort in no particular order (a list of the same
        /// millisecond's requests would not be in the order they came). Only
        /// writers take it, once per record, never across an await.
        static LAST: std::sync::Mutex<(u64, u128)> = std::sync::Mutex::new((u64::MAX, 0));
        let ms = u64::try_from(unix_millis(created_at)).unwrap_or(0);
        let random = {
            let mut last = LAST
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            let (last_ms, last_random) = *last;
            let step = u128::from(fastrand::u16(..)) + 1;
            let random = match last_random.checked_add(step) {
                Some(next) if last_ms == ms && next <= RANDOM_BITS => next,
                _ => fastrand::u128(..) & RANDOM_BITS,
            };
            *last = (ms, random);
            random
        };
        // Into a stack buffer, then copied once: `Display` would go through
        // the formatting machinery for the same 26 bytes.
        let mut text = [0u8; ulid::ULID_LEN];
        out.clear();
        out.push_str(ulid::Ulid::from_parts(ms, random).array_to_str(&mut text));
    }
}

impl Default for UsageRecord {
    fn default() -> Self {
        Self {
            id: String::new(),
            consumer: None,
            method: String::new(),
            path: String::new(),
            route: None,
            request: RecordedRequest::default(),
            response: CapturedBody::default(),
            response_headers: HeaderMap::new(),
            status: 0,
            created_at: OffsetDateTime::UNIX_EPOCH,
            duration_us: 0,
            outcome: Outcome::Complete,
            grpc: None,
            capture: CaptureNotes::default(),
            trace: None,
        }
    }
}

/// The request half of a [`UsageRecord`].
#[derive(Debug, Clone, Default, PartialEq)]
pub struct RecordedRequest {
    /// The request body.
    pub body: CapturedBody,
    /// The raw query string, without the `?` (percent-encoded as sent, with
    /// sensitive parameters already redacted). Rendered as an object whose
    /// repeated keys become arrays.
    pub query: String,
    /// Route params, in template order (`[("batchId", "I4WT...")]`), percent-decoded.
    pub params: Vec<(String, String)>,
    /// The request headers, with sensitive ones redacted.
    pub headers: HeaderMap,
}

/// A captured body: the first bytes of a body, up to the capture limit.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CapturedBody {
    /// The captured bytes: the whole body, or its first bytes when `truncated`.
    ///
    /// A copy of the layer's own, made when the exchange ended: it never keeps a
    /// transport or application buffer alive. The request and response bodies of
    /// one record share that copy.
    pub bytes: Bytes,
    /// How many bytes the body had in all (as far as it was read).
    pub size: u64,
    /// `true` when `bytes` is only a prefix of the body.
    pub truncated: bool,
}

impl CapturedBody {
    /// A body captured whole.
    pub fn complete(bytes: impl Into<Bytes>) -> Self {
        let bytes = bytes.into();
        Self {
            size: bytes.len() as u64,
            bytes,
            truncated: false,
        }
    }

    /// A body of which only `bytes` were kept out of `size`.
    pub fn truncated(bytes: impl Into<Bytes>, size: u64) -> Self {
        Self {
            bytes: bytes.into(),
            size,
            truncated: true,
        }
    }

    /// Whether nothing was captured.
    pub fn is_empty(&self) -> bool {
        self.bytes.is_empty()
    }

    /// The messages of a gRPC body (see the crate docs on [gRPC](crate#grpc)):
    /// each with its compressed flag, the captured bytes and the length its
    /// prefix announced; `None` when the bytes are not gRPC frames (a flag byte
    /// other than 0 or 1). The last message may be cut short
    /// ([`GrpcMessage::is_truncated`]); an incomplete 5-byte prefix at the very
    /// end is dropped.
    ///
    /// ```
    /// use tower_usage::CapturedBody;
    ///
    /// let body = CapturedBody::complete(vec![0, 0, 0, 0, 2, b'h', b'i', 1, 0, 0, 0, 9, b'x']);
    /// let found = body.grpc_messages().unwrap();
    /// assert_eq!(found.len(), 2);
    /// assert_eq!(found[0].data, b"hi");
    /// assert!(found[1].compressed && found[1].is_truncated());
    /// assert!(CapturedBody::complete("{\"not\": \"grpc\"}").grpc_messages().is_none());
    /// ```
    pub fn grpc_messages(&self) -> Option<Vec<GrpcMessage<'_>>> {
        grpc::messages(&self.bytes)
    }

    /// The body as `/usage` renders it (see [`UsageRecord`]).
    pub fn to_json(&self) -> serde_json::Value {
        serde_json::to_value(RenderBody {
            bytes: &self.bytes,
            truncated: self.truncated,
        })
        .unwrap_or(serde_json::Value::Null)
    }
}

/// What the capture of an exchange could not keep as it was, or withheld by
/// policy. On the wire:
/// `"capture": {"requestHeadersCut": 350114, "requestBodyUnread": true}`, each
/// member only when it says something, and the object only when one does.
///
/// ```
/// let notes = tower_usage::CaptureNotes::default();
/// assert!(notes.is_empty());
/// ```
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
#[non_exhaustive]
pub struct CaptureNotes {
    /// Bytes of request headers (names and values) not kept, past
    /// [`max_header_bytes`](crate::UsageLayer::max_header_bytes); 0 when every
    /// header was kept. A cut value ends in `…[cut]`.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub request_headers_cut: u64,
    /// The handler did not read the request body to its end (a `404`, an early
    /// reject): the body's `size` is what the client announced in
    /// `Content-Length`, or what was read when that is more.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub request_body_unread: bool,
    /// The request body came in this `Content-Encoding` (`gzip`, `deflate`,
    /// `br`, `zstd`, or a chain such as `gzip, br`) and is stored decoded (at
    /// most the capture limit; its `size` stays the encoded size).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub request_body_decoded: Option<String>,
    /// The request body is not stored, since a secret inside it could not be
    /// redacted; this says why: the `Content-Encoding` the writer cannot
    /// decode (`compress`, an unknown coding, a chain of more than four, or a
    /// stream that does not decode: `gzip` that is not gzip), `charset=NAME`
    /// for text in a charset it cannot read (`charset=utf-7`, two labels that
    /// disagree), `utf-32`, `nul-bytes` for text that holds NUL bytes (in a
    /// wider encoding than it says), or `body-headers-too-long` when the
    /// request's `Content-Type`, `Content-Encoding` and `Transfer-Encoding`
    /// together exceed 1 KiB.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub request_body_withheld: Option<String>,
    /// The request body was text in this charset (`utf-16le`, `windows-1252`,
    /// named as the WHATWG Encoding Standard names it), declared by its
    /// `Content-Type` or shown by a byte order mark, and is stored converted
    /// to UTF-8 (so that it could be redacted), without its byte order mark.
    /// Its `size` stays the size sent; the stored text is at most the capture
    /// limit.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub request_body_charset: Option<String>,
    /// As `request_body_decoded`, for the response body.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub response_body_decoded: Option<String>,
    /// As `request_body_withheld`, for the response body.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub response_body_withheld: Option<String>,
    /// As `request_body_charset`, for the response body.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub response_body_charset: Option<String>,
    /// The request body is not stored because the layer's
    /// [capture policy](crate::CapturePolicy) withheld it (its `size` is
    /// still the size sent): `off` when the policy keeps no request body,
    /// else the triggers that would have kept it, none of which fired for
    /// this exchange: `error`, `slow`, `sample`, or several joined by `|`
    /// (`error|sample`). Set only when there was a body to withhold (`size`
    /// more than 0), so a body withheld by policy is never mistaken for an
    /// empty one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub request_body_policy: Option<String>,
    /// As `request_body_policy`, for the response body.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub response_body_policy: Option<String>,
}

fn is_zero(n: &u64) -> bool {
    *n == 0
}

impl CaptureNotes {
    /// Whether there is nothing to say: everything was kept as it came.
    pub fn is_empty(&self) -> bool {
        *self == Self::default()
    }
}

/// How an exchange ended.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize, Default,
)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum Outcome {
    /// The response body was sent to its end.
    #[default]
    Complete,
    /// The response body was dropped before its end: the client went away.
    ClientGone,
    /// The response future was dropped before the inner service answered
    /// (a timeout, or the connection closed); or, for a gRPC call, the response
    /// stream was dropped before its end (the client cancelled the call).
    Cancelled,
    /// The inner service returned an error, or the response body failed.
    Error,
}

impl Outcome {
    /// The wire name: `complete`, `client_gone`, `cancelled` or `error`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Complete => "complete",
            Self::ClientGone => "client_gone",
            Self::Cancelled => "cancelled",
            Self::Error => "error",
        }
    }

    /// Parses a wire name.
    pub fn from_name(name: &str) -> Option<Self> {
        Some(match name {
            "complete" => Self::Complete,
            "client_gone" => Self::ClientGone,
            "cancelled" => Self::Cancelled,
            "error" => Self::Error,
            _ => return None,
        })
    }
}

impl fmt::Display for Outcome {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What a gRPC call ended with.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct GrpcCall {
    /// The `grpc-status` code, when the server sent one.
    pub status: Option<u16>,
    /// The percent-decoded `grpc-message`.
    pub message: Option<String>,
    /// How many messages the client sent.
    pub request_messages: u64,
    /// How many messages the server sent.
    pub response_messages: u64,
}

impl GrpcCall {
    /// The canonical name of a gRPC status code (`NOT_FOUND` for 5).
    pub fn status_name(code: u16) -> &'static str {
        match code {
            0 => "OK",
            1 => "CANCELLED",
            2 => "UNKNOWN",
            3 => "INVALID_ARGUMENT",
            4 => "DEADLINE_EXCEEDED",
            5 => "NOT_FOUND",
            6 => "ALREADY_EXISTS",
            7 => "PERMISSION_DENIED",
            8 => "RESOURCE_EXHAUSTED",
            9 => "FAILED_PRECONDITION",
            10 => "ABORTED",
            11 => "OUT_OF_RANGE",
            12 => "UNIMPLEMENTED",
            13 => "INTERNAL",
            14 => "UNAVAILABLE",
            15 => "DATA_LOSS",
            16 => "UNAUTHENTICATED",
            _ => "UNKNOWN",
        }
    }
}

pub(crate) mod binary;
pub(crate) mod charset;
pub(crate) mod encoding;
mod grpc;
mod redact;
mod route_params;
mod storage;
mod timestamp;
mod trace;
mod wire;

#[cfg(any(fuzzing, test))]
pub(crate) use grpc::messages as grpc_messages;
pub use grpc::{GrpcDirection, GrpcMessage};
pub(crate) use grpc::{GrpcMessageJson, GrpcMessageJsonFn, MessageCounter, GRPC_CANCELLED};
pub use redact::{is_secret_name, REDACTED};
pub(crate) use redact::{HeaderVerdicts, NameRules, Redaction};
pub(crate) use route_params::params_into;
pub use storage::StorageError;
#[cfg(any(feature = "sqlite", feature = "postgres"))]
pub(crate) use timestamp::ceil_to_millis;
pub(crate) use timestamp::{
    ceil_millis, format_timestamp, from_unix_millis, parse_timestamp, truncate_to_millis,
    unix_millis,
};
pub(crate) use trace::id_bytes as trace_id_bytes;
pub use trace::TraceContext;
use wire::RenderBody;
pub use wire::MAX_JSON_DEPTH;
pub(crate) use wire::{looks_like_json_container, RecordView};
