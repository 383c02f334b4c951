//! The serde form of [`UsageRecord`]: the `/usage` wire format (see the
//! [parent module](super) for the rendering rules).

use base64::Engine as _;
use http::{HeaderMap, HeaderValue};
use serde::ser::{SerializeMap, Serializer};
use serde::{Deserialize, Serialize};

use super::{format_timestamp, CapturedBody, GrpcCall, Outcome, UsageRecord};
use crate::hooks::Protocol;
use crate::record::grpc::{GrpcDirection, GrpcMessageJson, RenderMessages};

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
    trace_id: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    span_id: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    grpc_status: Option<GrpcStatusOut>,
    #[serde(skip_serializing_if = "Option::is_none")]
    grpc_message: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    grpc_messages: Option<GrpcCountsOut>,
    #[serde(skip_serializing_if = "Option::is_none")]
    capture: Option<&'a crate::record::CaptureNotes>,
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
        // gRPC bodies render as their messages (see the crate docs on gRPC).
        let framed = grpc.is_some() && Protocol::of(&self.request.headers).is_framed();
        let body = |body: &'a CapturedBody, direction| {
            let messages = framed
                .then(|| crate::record::grpc::messages(&body.bytes))
                .flatten();
            match messages {
                Some(messages) => BodyOut::Grpc(RenderMessages {
                    messages,
                    path: &self.path,
                    direction,
                    to_json: grpc_json,
                }),
                None => BodyOut::Plain(RenderBody {
                    bytes: &body.bytes,
                    truncated: body.truncated,
                }),
            }
        };
        WireOut {
            id: &self.id,
            consumer: &self.consumer,
            path: &self.path,
            method: &self.method,
            route: &self.route,
            request: WireRequestOut {
                body: body(&self.request.body, GrpcDirection::Request),
                body_size: self.request.body.size,
                body_truncated: self.request.body.truncated,
                query: RenderQuery(&self.request.query),
                params: RenderPairs(&self.request.params),
                headers: RenderHeaders(&self.request.headers),
            },
            response: body(&self.response, GrpcDirection::Response),
            response_size: self.response.size,
            response_truncated: self.response.truncated,
            response_headers: RenderHeaders(&self.response_headers),
            status: self.status,
            created_at: format_timestamp(self.created_at),
            duration_us: self.duration_us,
            outcome: self.outcome,
            trace_id: self.trace.as_ref().map(|t| t.trace_id.as_str()),
            span_id: self.trace.as_ref().map(|t| t.span_id.as_str()),
            grpc_status: grpc.and_then(|g| g.status).map(|code| GrpcStatusOut {
                code,
                name: GrpcCall::status_name(code),
            }),
            grpc_message: grpc.and_then(|g| g.message.as_deref()),
            grpc_messages: grpc.map(|g| GrpcCountsOut {
                request: g.request_messages,
                response: g.response_messages,
            }),
            capture: (!self.capture.is_empty()).then_some(&self.capture),
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
pub(super) struct RenderBody<'a> {
    pub(super) bytes: &'a [u8],
    /// The bytes are a prefix of the body, cut at the capture limit.
    pub(super) truncated: bool,
}

/// The deepest nesting of a body rendered as JSON; a deeper one renders as
/// text, so that every `/usage` page stays parseable by common JSON parsers
/// (`serde_json::Value` stops at 128 levels, Python's `json` near 1,000).
pub const MAX_JSON_DEPTH: usize = 64;

/// Whether a JSON text nests no deeper than `max` (strings skipped).
fn nests_at_most(bytes: &[u8], max: usize) -> bool {
    let (mut depth, mut in_string, mut escaped) = (0usize, false, false);
    for &b in bytes {
        if in_string {
            match (escaped, b) {
                (true, _) => escaped = false,
                (false, b'\\') => escaped = true,
                (false, b'"') => in_string = false,
                _ => {}
            }
            continue;
        }
        match b {
            b'"' => in_string = true,
            b'{' | b'[' => {
                depth += 1;
                if depth > max {
                    return false;
                }
            }
            b'}' | b']' => depth = depth.saturating_sub(1),
            _ => {}
        }
    }
    true
}

impl Serialize for RenderBody<'_> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let bytes = self.bytes;
        if bytes.is_empty() {
            return serializer.serialize_map(Some(0))?.end();
        }
        // A cut body is a prefix: valid JSON only by chance (cut right after
        // a closing bracket), and read back it would render another way.
        if !self.truncated
            && looks_like_json_container(bytes)
            && nests_at_most(bytes, MAX_JSON_DEPTH)
        {
            if let Ok(raw) = serde_json::from_slice::<&serde_json::value::RawValue>(bytes) {
                // A JSON body in the shape of a binary one would read back as
                // the bytes it names: it renders as its text instead.
                if !is_binary_shape(raw.get()) {
                    return raw.serialize(serializer);
                }
            }
        }
        match std::str::from_utf8(bytes) {
            Ok(text) => serializer.serialize_str(text),
            // A body cut at the capture limit inside a character: the text
            // before it (when there is some: an empty string would read back
            // as an empty body).
            Err(e) if self.truncated && e.error_len().is_none() && e.valid_up_to() > 0 => {
                let text = std::str::from_utf8(&bytes[..e.valid_up_to()]).unwrap_or_default();
                serializer.serialize_str(text)
            }
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

/// Whether a JSON text is an object in the shape of a binary body on the
/// wire, `{"encoding": "base64", "data": "..."}` (no other member), which is
/// what reading the wire form decodes as base64.
pub(super) fn is_binary_shape(json: &str) -> bool {
    use serde::de::{Deserializer as _, MapAccess, Visitor};

    struct Probe;
    impl<'de> Visitor<'de> for Probe {
        type Value = bool;
        fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.write_str("a JSON value")
        }
        fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<bool, A::Error> {
            let (mut encoding, mut data) = (None, None);
            while let Some(key) = map.next_key::<String>()? {
                // As a `serde_json::Map` reads it: the last of a repeated
                // member wins. A third member: not the shape; stop reading.
                match key.as_str() {
                    "encoding" => encoding = Some(map.next_value::<serde_json::Value>()?),
                    "data" => data = Some(map.next_value::<serde_json::Value>()?),
                    _ => return Ok(false),
                }
            }
            Ok(
                encoding.as_ref().and_then(serde_json::Value::as_str) == Some("base64")
                    && data.as_ref().is_some_and(serde_json::Value::is_string),
            )
        }
        fn visit_seq<A: serde::de::SeqAccess<'de>>(self, _: A) -> Result<bool, A::Error> {
            Ok(false)
        }
    }
    if !json.trim_start().starts_with('{') {
        return false;
    }
    let mut de = serde_json::Deserializer::from_str(json);
    de.deserialize_map(Probe).unwrap_or(false)
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

mod de;

#[cfg(test)]
mod tests {
    use super::*;
    use crate::record::{CapturedBody, RecordedRequest};
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
            capture: Default::default(),
            trace: None,
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
        r.response_headers
            .append("set-cookie", HeaderValue::from_static("a=1"));
        r.response_headers
            .append("set-cookie", HeaderValue::from_static("b=2"));
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
        // Except cookies, which no single header value can hold.
        let cookies: Vec<_> = back.response_headers.get_all("set-cookie").iter().collect();
        assert_eq!(cookies, ["a=1", "b=2"]);
        assert_eq!(back.grpc, r.grpc);
        let v2 = serde_json::to_value(&back).unwrap();
        assert_eq!(v1, v2);
    }

    /// Bodies whose rendering read back as another body: each now renders
    /// so that reading it back and rendering again gives the same JSON, and
    /// their neighbours render as before.
    #[test]
    fn ambiguous_bodies_render_so_they_read_back() {
        let render = |body: CapturedBody, grpc: bool| {
            let mut r = sample();
            r.response = body;
            if grpc {
                r.request
                    .headers
                    .insert("content-type", HeaderValue::from_static("application/grpc"));
                r.grpc = Some(GrpcCall::default());
            }
            let v = serde_json::to_value(&r).unwrap();
            let back: UsageRecord = serde_json::from_value(v.clone()).unwrap();
            assert_eq!(serde_json::to_value(&back).unwrap(), v, "{r:?}");
            v["response"].clone()
        };
        // JSON in the shape of a binary body: its text, not bytes it names
        // (and bad base64 there no longer fails the read).
        for text in [
            r#"{"encoding":"base64","data":"aGk="}"#,
            r#"{"data":"!!","encoding":"base64"}"#,
            r#"{"data":"aGk=","encoding":"base64","data":"eA=="}"#,
        ] {
            assert_eq!(render(CapturedBody::complete(text), false), json!(text));
        }
        for json_body in [
            json!({"encoding": "base64", "data": "aGk=", "more": 1}),
            json!({"encoding": "hex", "data": "aGk="}),
            json!({"encoding": "base64", "data": 7}),
        ] {
            let text = json_body.to_string();
            assert_eq!(render(CapturedBody::complete(text), false), json_body);
        }
        // Cut inside the first character: base64 (an empty string would read
        // back as an empty body); with text before the cut, that text.
        assert_eq!(
            render(CapturedBody::truncated(vec![0xc3], 9), false),
            json!({"encoding": "base64", "data": "ww=="})
        );
        assert_eq!(
            render(CapturedBody::truncated(b"ab\xc3".to_vec(), 9), false),
            json!("ab")
        );
        // A cut body that is valid JSON by chance: a string.
        assert_eq!(
            render(CapturedBody::truncated(&b"[1,2]"[..], 90), false),
            json!("[1,2]")
        );
        assert_eq!(
            render(CapturedBody::complete(&b"[1,2]"[..]), false),
            json!([1, 2])
        );
        // gRPC: an empty body is `[]`, the JSON text `{}` stays `{}`.
        assert_eq!(render(CapturedBody::complete(&b"{}"[..]), true), json!({}));
        assert_eq!(render(CapturedBody::default(), true), json!([]));
        assert_eq!(render(CapturedBody::default(), false), json!({}));
    }
}
