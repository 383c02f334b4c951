//! [`UsageRecord`], one captured request and its response, and its serde form: the
//! `/usage` wire format.
//!
//! The record keeps what was captured as it came: bodies are the raw bytes (at most
//! the capture limit), the query is the raw query string, headers are a
//! [`HeaderMap`]. Rendering to JSON happens only when a record is serialized:
//!
//! | captured body                              | rendered as                                   |
//! |--------------------------------------------|-----------------------------------------------|
//! | empty                                      | `{}`                                          |
//! | a JSON object or array                     | that JSON                                     |
//! | other UTF-8 text (JSON scalars included)   | a JSON string                                 |
//! | anything else                              | `{"encoding": "base64", "data": "..."}`       |
//!
//! Next to each body the record says how many bytes the body had in all
//! (`bodySize` / `responseSize`) and, when the copy was cut at the capture limit,
//! `bodyTruncated: true` / `responseTruncated: true` (absent otherwise). A truncated
//! JSON body is no longer valid JSON, so it renders as a string.
//!
//! gRPC calls (a [`GrpcCall`] on the record, request `content-type:
//! application/grpc...`) render each body as the list of its messages instead:
//! `[{"compressed": false, "data": "<base64>"}, ...]`, a message cut by the
//! capture limit with `"size": <its length>, "truncated": true`, and a `"json"`
//! rendering of each message when [`UsageService::grpc_message_json`](crate::UsageService::grpc_message_json)
//! is set; see [`grpc`](crate::grpc#bodies). The record's gRPC result is on the
//! wire as `grpcStatus: {"code": 5, "name": "NOT_FOUND"}`, `grpcMessage` (percent-decoded)
//! and `grpcMessages: {"request": 1, "response": 0}`.
//!
//! Deserializing the wire form gives back an equal record up to rendering: a
//! rendered JSON body comes back as its compact serialization, and rendering the
//! result again gives the same JSON.

use std::fmt;

use base64::Engine as _;
use bytes::Bytes;
use http::{HeaderMap, HeaderName, HeaderValue};
use serde::de::{self, Deserializer, MapAccess, Visitor};
use serde::ser::{SerializeMap, Serializer};
use serde::{Deserialize, Serialize};
use time::OffsetDateTime;

use crate::grpc::{GrpcDirection, GrpcMessageJson, RenderMessages};

/// One request and its response, as captured by [`UsageLayer`](crate::UsageLayer).
///
/// Its serde form is the `/usage` wire format (camelCase field names, bodies
/// rendered as described in the [module docs](self)).
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
}

impl UsageRecord {
    /// A fresh id for a record created at `created_at`: a ULID (26 characters of
    /// Crockford base32) whose first 48 bits are the milliseconds since the Unix
    /// epoch and whose last 80 are random, so ids sort in time order and two
    /// processes never collide in practice.
    ///
    /// ```
    /// let t = time::macros::datetime!(2023-01-11 08:07:39.839 UTC);
    /// let a = tower_usage::UsageRecord::new_id(t);
    /// let b = tower_usage::UsageRecord::new_id(t + time::Duration::milliseconds(1));
    /// assert_eq!(a.len(), 26);
    /// assert!(a < b);
    /// ```
    pub fn new_id(created_at: OffsetDateTime) -> String {
        let ms = u64::try_from(unix_millis(created_at)).unwrap_or(0);
        let random = fastrand::u128(..) & ((1u128 << 80) - 1);
        ulid::Ulid::from_parts(ms, random).to_string()
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

    /// The body as `/usage` renders it (see the [module docs](self)).
    pub fn to_json(&self) -> serde_json::Value {
        serde_json::to_value(RenderBody(&self.bytes)).unwrap_or(serde_json::Value::Null)
    }
}

/// How an exchange ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, Default)]
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

// ---------------------------------------------------------------------------
// Timestamps

const RFC3339_MILLIS: &[time::format_description::BorrowedFormatItem<'static>] = time::macros::format_description!(
    "[year]-[month]-[day]T[hour]:[minute]:[second].[subsecond digits:3]Z"
);

/// Formats a timestamp as the wire does: RFC 3339, UTC, milliseconds, `Z`.
///
/// ```
/// let t = time::macros::datetime!(2023-01-11 08:07:39.839 UTC);
/// assert_eq!(tower_usage::record::format_timestamp(t), "2023-01-11T08:07:39.839Z");
/// ```
pub fn format_timestamp(t: OffsetDateTime) -> String {
    t.to_offset(time::UtcOffset::UTC)
        .format(RFC3339_MILLIS)
        .unwrap_or_else(|_| String::from("invalid-timestamp"))
}

/// Parses any RFC 3339 timestamp into UTC.
pub fn parse_timestamp(s: &str) -> Result<OffsetDateTime, time::error::Parse> {
    OffsetDateTime::parse(s, &time::format_description::well_known::Rfc3339)
        .map(|t| t.to_offset(time::UtcOffset::UTC))
}

/// Cuts a timestamp to whole milliseconds, in UTC.
pub fn truncate_to_millis(t: OffsetDateTime) -> OffsetDateTime {
    let t = t.to_offset(time::UtcOffset::UTC);
    let millis = t.millisecond();
    t.replace_nanosecond(u32::from(millis) * 1_000_000)
        .unwrap_or(t)
}

/// Milliseconds since the Unix epoch.
pub fn unix_millis(t: OffsetDateTime) -> i64 {
    (t.unix_timestamp_nanos() / 1_000_000) as i64
}

/// The timestamp `ms` milliseconds after the Unix epoch, if representable.
pub fn from_unix_millis(ms: i64) -> Option<OffsetDateTime> {
    OffsetDateTime::from_unix_timestamp_nanos(i128::from(ms) * 1_000_000).ok()
}

// ---------------------------------------------------------------------------
// Serialization (the wire format)

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct WireOut<'a> {
    id: &'a str,
    consumer: &'a Option<String>,
    path: &'a str,
    method: &'a str,
    route: &'a Option<String>,
    request: WireRequestOut<'a>,
    response: BodyOut<'a>,
    response_size: u64,
    #[serde(skip_serializing_if = "is_false")]
    response_truncated: bool,
    response_headers: RenderHeaders<'a>,
    status: u16,
    created_at: String,
    duration_us: u64,
    outcome: Outcome,
    #[serde(skip_serializing_if = "Option::is_none")]
    grpc_status: Option<GrpcStatusOut>,
    #[serde(skip_serializing_if = "Option::is_none")]
    grpc_message: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    grpc_messages: Option<GrpcCountsOut>,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct WireRequestOut<'a> {
    body: BodyOut<'a>,
    body_size: u64,
    #[serde(skip_serializing_if = "is_false")]
    body_truncated: bool,
    query: RenderQuery<'a>,
    params: RenderPairs<'a>,
    headers: RenderHeaders<'a>,
}

#[derive(Serialize)]
struct GrpcStatusOut {
    code: u16,
    name: &'static str,
}

#[derive(Serialize, Deserialize)]
struct GrpcCountsOut {
    request: u64,
    response: u64,
}

fn is_false(b: &bool) -> bool {
    !*b
}

impl Serialize for UsageRecord {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        self.wire(None).serialize(serializer)
    }
}

/// A record serialized with a gRPC message hook (see
/// [`UsageService::grpc_message_json`](crate::UsageService::grpc_message_json)).
pub(crate) struct RecordView<'a> {
    pub(crate) record: &'a UsageRecord,
    pub(crate) grpc_json: Option<&'a GrpcMessageJson>,
}

impl Serialize for RecordView<'_> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        self.record.wire(self.grpc_json).serialize(serializer)
    }
}

impl UsageRecord {
    fn wire<'a>(&'a self, grpc_json: Option<&'a GrpcMessageJson>) -> WireOut<'a> {
        let grpc = self.grpc.as_ref();
        // gRPC bodies render as their messages (see `crate::grpc`).
        let framed = grpc.is_some() && crate::grpc::is_framed(&self.request.headers);
        let body = |bytes: &'a Bytes, direction| {
            let messages = framed.then(|| crate::grpc::messages(bytes)).flatten();
            match messages {
                Some(messages) => BodyOut::Grpc(RenderMessages {
                    messages,
                    path: &self.path,
                    direction,
                    to_json: grpc_json,
                }),
                None => BodyOut::Plain(RenderBody(bytes)),
            }
        };
        WireOut {
            id: &self.id,
            consumer: &self.consumer,
            path: &self.path,
            method: &self.method,
            route: &self.route,
            request: WireRequestOut {
                body: body(&self.request.body.bytes, GrpcDirection::Request),
                body_size: self.request.body.size,
                body_truncated: self.request.body.truncated,
                query: RenderQuery(&self.request.query),
                params: RenderPairs(&self.request.params),
                headers: RenderHeaders(&self.request.headers),
            },
            response: body(&self.response.bytes, GrpcDirection::Response),
            response_size: self.response.size,
            response_truncated: self.response.truncated,
            response_headers: RenderHeaders(&self.response_headers),
            status: self.status,
            created_at: format_timestamp(self.created_at),
            duration_us: self.duration_us,
            outcome: self.outcome,
            grpc_status: grpc.and_then(|g| g.status).map(|code| GrpcStatusOut {
                code,
                name: GrpcCall::status_name(code),
            }),
            grpc_message: grpc.and_then(|g| g.message.as_deref()),
            grpc_messages: grpc.map(|g| GrpcCountsOut {
                request: g.request_messages,
                response: g.response_messages,
            }),
        }
    }
}

/// A body on the wire: rendered by content, or as gRPC messages.
enum BodyOut<'a> {
    Plain(RenderBody<'a>),
    Grpc(RenderMessages<'a>),
}

impl Serialize for BodyOut<'_> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        match self {
            BodyOut::Plain(b) => b.serialize(serializer),
            BodyOut::Grpc(m) => m.serialize(serializer),
        }
    }
}

/// Renders body bytes per the table in the module docs.
struct RenderBody<'a>(&'a [u8]);

impl Serialize for RenderBody<'_> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let bytes = self.0;
        if bytes.is_empty() {
            return serializer.serialize_map(Some(0))?.end();
        }
        if looks_like_json_container(bytes) {
            if let Ok(raw) = serde_json::from_slice::<&serde_json::value::RawValue>(bytes) {
                return raw.serialize(serializer);
            }
        }
        match std::str::from_utf8(bytes) {
            Ok(text) => serializer.serialize_str(text),
            Err(_) => {
                let mut map = serializer.serialize_map(Some(2))?;
                map.serialize_entry("encoding", "base64")?;
                map.serialize_entry(
                    "data",
                    &base64::engine::general_purpose::STANDARD.encode(bytes),
                )?;
                map.end()
            }
        }
    }
}

/// Whether the first non-whitespace byte opens a JSON object or array.
pub(crate) fn looks_like_json_container(bytes: &[u8]) -> bool {
    matches!(
        bytes.iter().find(|b| !b.is_ascii_whitespace()),
        Some(b'{') | Some(b'[')
    )
}

struct RenderHeaders<'a>(&'a HeaderMap);

impl Serialize for RenderHeaders<'_> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let mut map = serializer.serialize_map(Some(self.0.keys_len()))?;
        for name in self.0.keys() {
            let mut values = self.0.get_all(name).iter();
            let first = values.next().map(header_str).unwrap_or_default();
            match values.next() {
                None => map.serialize_entry(name.as_str(), &first)?,
                Some(second) => {
                    let sep = if name == http::header::SET_COOKIE {
                        "\n"
                    } else {
                        ", "
                    };
                    let mut joined = first.into_owned();
                    for v in std::iter::once(second).chain(values) {
                        joined.push_str(sep);
                        joined.push_str(&header_str(v));
                    }
                    map.serialize_entry(name.as_str(), &joined)?;
                }
            }
        }
        map.end()
    }
}

fn header_str(v: &HeaderValue) -> std::borrow::Cow<'_, str> {
    match v.to_str() {
        Ok(s) => std::borrow::Cow::Borrowed(s),
        Err(_) => String::from_utf8_lossy(v.as_bytes()),
    }
}

struct RenderPairs<'a>(&'a [(String, String)]);

impl Serialize for RenderPairs<'_> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let mut map = serializer.serialize_map(Some(self.0.len()))?;
        for (k, v) in self.0 {
            map.serialize_entry(k, v)?;
        }
        map.end()
    }
}

/// Renders a raw query string as an object; repeated keys become arrays, in
/// order of first appearance.
struct RenderQuery<'a>(&'a str);

impl Serialize for RenderQuery<'_> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let grouped = group_query(self.0);
        let mut map = serializer.serialize_map(Some(grouped.len()))?;
        for (k, vs) in &grouped {
            if vs.len() == 1 {
                map.serialize_entry(k, &vs[0])?;
            } else {
                map.serialize_entry(k, vs)?;
            }
        }
        map.end()
    }
}

type Grouped<'a> = Vec<(std::borrow::Cow<'a, str>, Vec<std::borrow::Cow<'a, str>>)>;

fn group_query(query: &str) -> Grouped<'_> {
    let mut grouped: Grouped<'_> = Vec::new();
    let mut index: std::collections::HashMap<std::borrow::Cow<'_, str>, usize> =
        std::collections::HashMap::new();
    for (k, v) in form_urlencoded::parse(query.as_bytes()) {
        match index.get(&k) {
            Some(&i) => grouped[i].1.push(v),
            None => {
                index.insert(k.clone(), grouped.len());
                grouped.push((k, vec![v]));
            }
        }
    }
    grouped
}

// ---------------------------------------------------------------------------
// Deserialization

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct WireIn {
    #[serde(default)]
    id: String,
    #[serde(default)]
    consumer: Option<String>,
    path: String,
    method: String,
    #[serde(default)]
    route: Option<String>,
    request: WireRequestIn,
    #[serde(default)]
    response: serde_json::Value,
    #[serde(default)]
    response_size: Option<u64>,
    #[serde(default)]
    response_truncated: bool,
    #[serde(default)]
    response_headers: OrderedMap<String>,
    status: u16,
    created_at: String,
    #[serde(default)]
    duration_us: u64,
    #[serde(default)]
    outcome: Outcome,
    #[serde(default)]
    grpc_status: Option<GrpcStatusIn>,
    #[serde(default)]
    grpc_message: Option<String>,
    #[serde(default)]
    grpc_messages: Option<GrpcCountsOut>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct WireRequestIn {
    #[serde(default)]
    body: serde_json::Value,
    #[serde(default)]
    body_size: Option<u64>,
    #[serde(default)]
    body_truncated: bool,
    #[serde(default)]
    query: OrderedMap<OneOrMany>,
    #[serde(default)]
    params: OrderedMap<String>,
    #[serde(default)]
    headers: OrderedMap<String>,
}

#[derive(Deserialize)]
struct GrpcStatusIn {
    code: u16,
}

#[derive(Deserialize)]
#[serde(untagged)]
enum OneOrMany {
    One(String),
    Many(Vec<String>),
}

/// A JSON object read in document order.
struct OrderedMap<V>(Vec<(String, V)>);

impl<V> Default for OrderedMap<V> {
    fn default() -> Self {
        Self(Vec::new())
    }
}

impl<'de, V: Deserialize<'de>> Deserialize<'de> for OrderedMap<V> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct V_<V>(std::marker::PhantomData<V>);
        impl<'de, V: Deserialize<'de>> Visitor<'de> for V_<V> {
            type Value = OrderedMap<V>;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("an object")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut access: A) -> Result<Self::Value, A::Error> {
                let mut out = Vec::with_capacity(access.size_hint().unwrap_or(0).min(256));
                while let Some((k, v)) = access.next_entry::<String, V>()? {
                    out.push((k, v));
                }
                Ok(OrderedMap(out))
            }
        }
        deserializer.deserialize_map(V_(std::marker::PhantomData))
    }
}

fn body_from_wire(value: serde_json::Value) -> Result<Bytes, String> {
    use serde_json::Value;
    Ok(match value {
        Value::Null => Bytes::new(),
        Value::String(s) => Bytes::from(s),
        Value::Object(ref map) if map.is_empty() => Bytes::new(),
        Value::Object(ref map)
            if map.len() == 2
                && map.get("encoding").and_then(Value::as_str) == Some("base64")
                && map.get("data").is_some_and(Value::is_string) =>
        {
            let data = map.get("data").and_then(Value::as_str).unwrap_or_default();
            Bytes::from(
                base64::engine::general_purpose::STANDARD
                    .decode(data)
                    .map_err(|e| format!("invalid base64 body: {e}"))?,
            )
        }
        other => Bytes::from(serde_json::to_vec(&other).map_err(|e| e.to_string())?),
    })
}

fn headers_from_wire(pairs: Vec<(String, String)>) -> Result<HeaderMap, String> {
    let mut map = HeaderMap::with_capacity(pairs.len());
    for (k, v) in pairs {
        let name = HeaderName::from_bytes(k.as_bytes())
            .map_err(|e| format!("invalid header name {k:?}: {e}"))?;
        let value = HeaderValue::from_str(&v)
            .map_err(|e| format!("invalid value for header {k:?}: {e}"))?;
        map.append(name, value);
    }
    Ok(map)
}

fn query_from_wire(pairs: Vec<(String, OneOrMany)>) -> String {
    let mut ser = form_urlencoded::Serializer::new(String::new());
    for (k, v) in &pairs {
        match v {
            OneOrMany::One(v) => {
                ser.append_pair(k, v);
            }
            OneOrMany::Many(vs) => {
                for v in vs {
                    ser.append_pair(k, v);
                }
            }
        }
    }
    ser.finish()
}

impl<'de> Deserialize<'de> for UsageRecord {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let w = WireIn::deserialize(deserializer)?;
        let is_grpc =
            w.grpc_status.is_some() || w.grpc_message.is_some() || w.grpc_messages.is_some();
        let body = |value: serde_json::Value| match &value {
            serde_json::Value::Array(items) if is_grpc => {
                match crate::grpc::frames_from_wire(items) {
                    Some(frames) => frames,
                    None => body_from_wire(value),
                }
            }
            _ => body_from_wire(value),
        };
        let request_bytes = body(w.request.body).map_err(de::Error::custom)?;
        let response_bytes = body(w.response).map_err(de::Error::custom)?;
        let created_at = parse_timestamp(&w.created_at)
            .map_err(|e| de::Error::custom(format!("invalid createdAt: {e}")))?;
        let grpc = if is_grpc {
            let counts = w.grpc_messages.unwrap_or(GrpcCountsOut {
                request: 0,
                response: 0,
            });
            Some(GrpcCall {
                status: w.grpc_status.map(|s| s.code),
                message: w.grpc_message,
                request_messages: counts.request,
                response_messages: counts.response,
            })
        } else {
            None
        };
        Ok(UsageRecord {
            id: w.id,
            consumer: w.consumer,
            method: w.method,
            path: w.path,
            route: w.route,
            request: RecordedRequest {
                body: CapturedBody {
                    size: w.request.body_size.unwrap_or(request_bytes.len() as u64),
                    bytes: request_bytes,
                    truncated: w.request.body_truncated,
                },
                query: query_from_wire(w.request.query.0),
                params: w.request.params.0,
                headers: headers_from_wire(w.request.headers.0).map_err(de::Error::custom)?,
            },
            response: CapturedBody {
                size: w.response_size.unwrap_or(response_bytes.len() as u64),
                bytes: response_bytes,
                truncated: w.response_truncated,
            },
            response_headers: headers_from_wire(w.response_headers.0).map_err(de::Error::custom)?,
            status: w.status,
            created_at: truncate_to_millis(created_at),
            duration_us: w.duration_us,
            outcome: w.outcome,
            grpc,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn sample() -> UsageRecord {
        let mut headers = HeaderMap::new();
        headers.insert("host", HeaderValue::from_static("localhost:9000"));
        headers.append("accept", HeaderValue::from_static("text/html"));
        headers.append("accept", HeaderValue::from_static("application/json"));
        UsageRecord {
            id: "01GPE5J0X7AAAAAAAAAAAAAAAA".into(),
            consumer: Some("c1".into()),
            method: "GET".into(),
            path: "/rest/v1/airdrop/I4WT".into(),
            route: Some("/rest/v1/airdrop/{batchId}".into()),
            request: RecordedRequest {
                body: CapturedBody::default(),
                query: "a=1&b=2&b=3&c=%20x".into(),
                params: vec![("batchId".into(), "I4WT".into())],
                headers,
            },
            response: CapturedBody::complete(r#"{"id":"I4WT","count":2}"#),
            response_headers: HeaderMap::new(),
            status: 200,
            created_at: time::macros::datetime!(2023-01-11 08:07:39.839 UTC),
            duration_us: 1840,
            outcome: Outcome::Complete,
            grpc: None,
        }
    }

    #[test]
    fn wire_shape_matches_reference() {
        let v = serde_json::to_value(sample()).unwrap();
        assert_eq!(v["request"]["body"], json!({}));
        assert_eq!(
            v["request"]["query"],
            json!({"a": "1", "b": ["2", "3"], "c": " x"})
        );
        assert_eq!(v["request"]["params"], json!({"batchId": "I4WT"}));
        assert_eq!(
            v["request"]["headers"]["accept"],
            "text/html, application/json"
        );
        assert_eq!(v["response"], json!({"id": "I4WT", "count": 2}));
        assert_eq!(v["createdAt"], "2023-01-11T08:07:39.839Z");
        assert_eq!(v["durationUs"], 1840);
        assert_eq!(v["outcome"], "complete");
        assert!(v.get("responseTruncated").is_none());
        assert!(v.get("grpcStatus").is_none());
    }

    #[test]
    fn bodies_render_by_content() {
        let render = |b: &[u8]| CapturedBody::complete(b.to_vec()).to_json();
        assert_eq!(render(b""), json!({}));
        assert_eq!(render(b" [1, 2]"), json!([1, 2]));
        assert_eq!(render(b"hello"), json!("hello"));
        assert_eq!(render(b"42"), json!("42"));
        assert_eq!(render(b"{\"cut"), json!("{\"cut"));
        assert_eq!(
            render(&[0xff, 0x00]),
            json!({"encoding": "base64", "data": "/wA="})
        );
    }

    #[test]
    fn round_trip_is_stable() {
        let mut r = sample();
        r.response = CapturedBody::truncated(vec![0xffu8, 1, 2], 100_000);
        r.grpc = Some(GrpcCall {
            status: Some(5),
            message: Some("not here".into()),
            request_messages: 1,
            response_messages: 0,
        });
        let v1 = serde_json::to_value(&r).unwrap();
        assert_eq!(v1["grpcStatus"], json!({"code": 5, "name": "NOT_FOUND"}));
        let back: UsageRecord = serde_json::from_value(v1.clone()).unwrap();
        assert_eq!(back.response, r.response);
        // Repeated headers come back joined, as the wire renders them.
        assert_eq!(
            back.request.headers.get("accept").unwrap(),
            "text/html, application/json"
        );
        assert_eq!(back.request.headers.get_all("accept").iter().count(), 1);
        assert_eq!(back.grpc, r.grpc);
        let v2 = serde_json::to_value(&back).unwrap();
        assert_eq!(v1, v2);
    }

    #[test]
    fn timestamps_are_millis_utc() {
        let t = time::macros::datetime!(2023-01-11 10:07:39.839_999 +02:00);
        assert_eq!(format_timestamp(t), "2023-01-11T08:07:39.839Z");
        let cut = truncate_to_millis(t);
        assert_eq!(cut.nanosecond(), 839_000_000);
        assert_eq!(from_unix_millis(unix_millis(cut)), Some(cut));
    }
}
