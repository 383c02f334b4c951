//! Generated records of every shape the layer can produce, for property
//! tests: header values with non-ASCII UTF-8 and obs-text (bytes 0x80..=0xFF
//! that are not UTF-8), repeated headers (`set-cookie` too), every kind of
//! body (empty, JSON, text, binary, nested past the render depth, one that
//! looks like the wire's base64 object), truncated bodies and sizes apart
//! from the bytes, query strings with repeats and bad escapes, gRPC calls,
//! every outcome, capture notes.

#![allow(dead_code, unreachable_pub)]

use bytes::Bytes;
use http::{HeaderMap, HeaderName, HeaderValue};
use proptest::prelude::*;
use tower_usage::{CaptureNotes, CapturedBody, GrpcCall, Outcome, TraceContext, UsageRecord};

/// A header value as a client or server may send it: visible ASCII, spaces
/// and tabs, UTF-8 (`café`), and obs-text bytes that are not UTF-8.
pub fn header_value() -> impl Strategy<Value = HeaderValue> {
    let piece = prop_oneof![
        "[ -~]{0,12}".prop_map(String::into_bytes),
        Just(b"caf\xc3\xa9".to_vec()),
        Just("日本 — ✓".as_bytes().to_vec()),
        Just(b"\t".to_vec()),
        Just(b"\xe9t\xe9".to_vec()),
        Just(b"\xff\x80\xc3".to_vec()),
        Just("…[cut]".as_bytes().to_vec()),
        Just(b", ".to_vec()),
    ];
    prop::collection::vec(piece, 0..4)
        .prop_map(|pieces| HeaderValue::from_bytes(&pieces.concat()).expect("a valid value"))
}

pub fn header_map() -> impl Strategy<Value = HeaderMap> {
    let name = prop_oneof![
        Just("accept"),
        Just("x-name"),
        Just("set-cookie"),
        Just("user-agent"),
        Just("content-type"),
        Just("x-forwarded-for"),
    ];
    prop::collection::vec((name, header_value(), any::<bool>()), 0..6).prop_map(|entries| {
        let mut map = HeaderMap::new();
        for (name, mut value, sensitive) in entries {
            value.set_sensitive(sensitive);
            map.append(HeaderName::from_static(name), value);
        }
        map
    })
}

fn body_bytes() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        Just(Vec::new()),
        Just(br#"{"a":1,"b":[true,null,"x"],"c":{"d":"caf\u00e9"}}"#.to_vec()),
        Just(br#"  [1, 2, {"k": "v"}]  "#.to_vec()),
        Just(b"null".to_vec()),
        Just(b"42".to_vec()),
        Just(br#""a JSON string""#.to_vec()),
        Just(br#"{"encoding":"base64","data":"aGk="}"#.to_vec()),
        Just(br#"{"encoding":"base64","data":"not base64!"}"#.to_vec()),
        Just(br#"{}"#.to_vec()),
        Just(b"[]".to_vec()),
        Just(br#"{"data":"aGk=","encoding":"base64","data":"eA=="}"#.to_vec()),
        Just(br#"[{"compressed":false,"data":"aGk="}]"#.to_vec()),
        Just(br#"{"unclosed": "#.to_vec()),
        Just([b"[".repeat(70), b"]".repeat(70)].concat()),
        "[ -~]{0,40}".prop_map(String::into_bytes),
        "\\PC{0,20}".prop_map(String::into_bytes),
        prop::collection::vec(any::<u8>(), 0..40),
        Just(vec![0, 0, 0, 0, 3, b'a', b'b', b'c', 1, 0, 0, 0, 9, b'x']),
    ]
}

/// A body: whole, cut at the capture limit, or with a size apart from its
/// bytes (redacted or decoded).
pub fn captured_body() -> impl Strategy<Value = CapturedBody> {
    (body_bytes(), 0u8..5, 0u64..5_000_000_000).prop_map(|(bytes, kind, extra)| {
        let len = bytes.len() as u64;
        match kind {
            0 | 1 => CapturedBody::complete(bytes),
            // Cut after a whole JSON value, or inside a character.
            4 => CapturedBody::truncated([&bytes[..], b"\xc3"].concat(), len + extra),
            2 => {
                CapturedBody::truncated(Bytes::from(bytes).slice(..(len as usize) / 2), len + extra)
            }
            _ => CapturedBody {
                size: extra % 100,
                ..CapturedBody::complete(bytes)
            },
        }
    })
}

fn query_string() -> impl Strategy<Value = String> {
    let pair = prop_oneof![
        Just("a=1".to_owned()),
        Just("b=2&b=3".to_owned()),
        Just("q=caf%C3%A9+au+lait".to_owned()),
        Just("bad=%FF%E9".to_owned()),
        Just("flag".to_owned()),
        Just("empty=".to_owned()),
        Just("a=4".to_owned()),
        Just("sp%20ace=x%2By".to_owned()),
        "[a-z]{1,3}=[a-zA-Z0-9]{0,4}",
    ];
    prop::collection::vec(pair, 0..5).prop_map(|pairs| pairs.join("&"))
}

fn grpc_call() -> impl Strategy<Value = Option<GrpcCall>> {
    prop::option::of(
        (
            prop::option::of(0u16..17),
            prop::option::of(prop_oneof![
                Just("not found: é".to_owned()),
                Just(String::new())
            ]),
            0u64..100,
            0u64..100,
        )
            .prop_map(|(status, message, req, resp)| GrpcCall {
                status,
                message,
                request_messages: req,
                response_messages: resp,
            }),
    )
}

fn outcome() -> impl Strategy<Value = Outcome> {
    prop_oneof![
        Just(Outcome::Complete),
        Just(Outcome::ClientGone),
        Just(Outcome::Cancelled),
        Just(Outcome::Error),
    ]
}

fn capture_notes() -> impl Strategy<Value = CaptureNotes> {
    (
        prop_oneof![Just(0u64), 1u64..1_000_000],
        any::<bool>(),
        prop::option::of(Just("gzip".to_owned())),
        prop::option::of(Just("br".to_owned())),
    )
        .prop_map(|(cut, unread, decoded, withheld)| {
            let mut notes = CaptureNotes::default();
            notes.request_headers_cut = cut;
            notes.request_body_unread = unread;
            notes.response_body_decoded = decoded;
            notes.request_body_withheld = withheld;
            notes
        })
}

/// A W3C trace context as `traceparent` gives it: lowercase hex, not all zero.
pub fn trace() -> impl Strategy<Value = TraceContext> {
    ("[0-9a-f]{31}[1-9a-f]", "[1-9a-f][0-9a-f]{15}")
        .prop_map(|(trace_id, span_id)| TraceContext { trace_id, span_id })
}

/// Any record the layer can produce, its `created_at` to the millisecond.
pub fn usage_record() -> impl Strategy<Value = UsageRecord> {
    let who = (
        prop::option::of(prop_oneof![
            Just("key:3f9a".to_owned()),
            Just("acct_émilie".to_owned())
        ]),
        prop_oneof![Just("GET"), Just("POST"), Just("PATCH")],
        prop_oneof![
            Just("/items/7".to_owned()),
            Just("/caf%C3%A9/%FF".to_owned()),
            Just("/airdrop.v1.Airdrop/GetBatch".to_owned()),
        ],
        prop::option::of(Just("/items/{id}".to_owned())),
        prop::option::of(trace()),
        prop::collection::vec(
            (
                "[a-zA-Z]{1,6}",
                prop_oneof!["[ -~]{0,8}", Just("café crème / ½".to_owned())],
            ),
            0..3,
        ),
    );
    let exchange = (
        captured_body(),
        captured_body(),
        query_string(),
        header_map(),
        header_map(),
        any::<bool>(),
    );
    let result = (
        100u16..600,
        0i64..4_102_444_800_000,
        any::<u64>(),
        outcome(),
        grpc_call(),
        capture_notes(),
    );
    (who, exchange, result).prop_map(
        |(
            (consumer, method, path, route, trace, params),
            (body, response, query, mut headers, response_headers, grpc_framed),
            (status, ms, duration_us, outcome, grpc, capture),
        )| {
            if grpc.is_some() && grpc_framed {
                headers.insert("content-type", HeaderValue::from_static("application/grpc"));
            }
            let created_at =
                time::OffsetDateTime::from_unix_timestamp_nanos(i128::from(ms) * 1_000_000)
                    .expect("in range");
            let mut record = UsageRecord {
                id: UsageRecord::new_id(created_at),
                consumer,
                method: method.to_owned(),
                path,
                route,
                response,
                response_headers,
                status,
                created_at,
                duration_us,
                outcome,
                grpc,
                capture,
                trace,
                ..UsageRecord::default()
            };
            record.request.body = body;
            record.request.query = query;
            record.request.params = params;
            record.request.headers = headers;
            record
        },
    )
}
