//! Reading the wire form back into a [`UsageRecord`]: the inverse of the
//! rendering in the parent module, up to rendering (see [`UsageRecord`]).

use std::fmt;

use base64::Engine as _;
use bytes::Bytes;
use http::{HeaderMap, HeaderName, HeaderValue};
use serde::de::{self, Deserializer, MapAccess, Visitor};
use serde::Deserialize;

use super::GrpcCountsOut;
use crate::hooks::Protocol;
use crate::record::grpc::frames_from_wire;
use crate::record::{
    parse_timestamp, truncate_to_millis, CaptureNotes, CapturedBody, GrpcCall, Outcome,
    RecordedRequest, TraceContext, UsageRecord,
};

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
    trace_id: Option<String>,
    #[serde(default)]
    span_id: Option<String>,
    #[serde(default)]
    grpc_status: Option<GrpcStatusIn>,
    #[serde(default)]
    grpc_message: Option<String>,
    #[serde(default)]
    grpc_messages: Option<GrpcCountsOut>,
    #[serde(default)]
    capture: CaptureNotes,
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
        // Repeated `set-cookie` values are rendered joined by newlines, which
        // no header value may hold: they come back as separate values.
        let values = if name == http::header::SET_COOKIE {
            v.split('\n').collect()
        } else {
            vec![v.as_str()]
        };
        for v in values {
            let value = HeaderValue::from_str(v)
                .map_err(|e| format!("invalid value for header {k:?}: {e}"))?;
            map.append(name.clone(), value);
        }
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
        let headers = headers_from_wire(w.request.headers.0).map_err(de::Error::custom)?;
        // As the rendering decides: gRPC bodies render as their messages.
        let framed = is_grpc && Protocol::of(&headers).is_framed();
        let body = |value: serde_json::Value| match &value {
            serde_json::Value::Array(items) if framed => match frames_from_wire(items) {
                Some(frames) => frames,
                None => body_from_wire(value),
            },
            // An empty gRPC body renders as `[]`: `{}` is the JSON text `{}`.
            serde_json::Value::Object(map) if framed && map.is_empty() => {
                Ok(Bytes::from_static(b"{}"))
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
        let trace = match (w.trace_id, w.span_id) {
            (None, None) => None,
            (Some(trace_id), Some(span_id))
                if TraceContext::is_trace_id(&trace_id) && TraceContext::is_span_id(&span_id) =>
            {
                Some(TraceContext { trace_id, span_id })
            }
            _ => {
                return Err(de::Error::custom(
                    "invalid traceId/spanId: both or neither, 32 and 16 lowercase hex digits",
                ))
            }
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
                headers,
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
            capture: w.capture,
            trace,
        })
    }
}
