//! The redaction guarantee as a property: a secret-bearing JSON, form or
//! multipart body, with random chunking, a random capture limit (so a random
//! cut), random non-UTF-8 noise and a random prefix, never leaves its secret
//! value readable in the stored record, in its `/usage` JSON (base64 decoded
//! too) or in a SQLite file. Through the public API: the real layer over an
//! axum Router, called in-process, and a real `SqliteSink` file.
//!
//! The case count is fixed (see `CASES`) so that CI time is bounded.

mod common;

use std::convert::Infallible;

use axum::body::Body;
use axum::routing::post;
use axum::Router;
use base64::Engine as _;
use bytes::Bytes;
use common::{CollectSink, SECRET_NAMES};
use http::Request;
use proptest::prelude::*;
use serde_json::Value;
use tower::ServiceExt as _;
use tower_usage::{SqliteSink, UsageLayer, UsageSink};

const CASES: u32 = 48;

#[derive(Debug, Clone)]
enum Kind {
    Json { depth: usize },
    Form { nested: bool },
    Multipart,
}

fn kind() -> impl Strategy<Value = Kind> {
    prop_oneof![
        (0usize..4).prop_map(|depth| Kind::Json { depth }),
        any::<bool>().prop_map(|nested| Kind::Form { nested }),
        Just(Kind::Multipart),
    ]
}

/// A body with one secret field, noise around it (never inside the name or
/// the value), and its content type.
fn body(kind: &Kind, name: &str, secret: &str, noise: &[u8], prefix: &[u8]) -> (Vec<u8>, String) {
    let mut out = prefix.to_vec();
    match kind {
        Kind::Json { depth } => {
            // JSON strings cannot hold raw noise bytes; put them in a
            // sibling's value anyway, as a broken client might.
            for _ in 0..*depth {
                out.extend_from_slice(b"{\"n\":");
            }
            out.extend_from_slice(b"{\"user\":\"");
            out.extend_from_slice(noise);
            out.extend_from_slice(format!("\",\"{name}\":\"{secret}\",\"after\":\"").as_bytes());
            out.extend_from_slice(noise);
            out.extend_from_slice(b"\"}");
            out.extend(std::iter::repeat_n(b'}', *depth));
            (out, "application/json".into())
        }
        Kind::Form { nested } => {
            out.extend_from_slice(b"user=");
            out.extend_from_slice(noise);
            let key = if *nested {
                format!("user[{name}]")
            } else {
                name.to_owned()
            };
            out.extend_from_slice(format!("&{key}={secret}&bio=").as_bytes());
            out.extend_from_slice(noise);
            (
                out,
                "application/x-www-form-urlencoded; charset=ISO-8859-1".into(),
            )
        }
        Kind::Multipart => {
            let b = "b0undary7";
            out.extend_from_slice(
                format!("--{b}\r\nContent-Disposition: form-data; name=\"user\"\r\n\r\n")
                    .as_bytes(),
            );
            out.extend_from_slice(noise);
            out.extend_from_slice(
                format!("\r\n--{b}\r\nContent-Disposition: form-data; name=\"{name}\"\r\n\r\n{secret}\r\n--{b}\r\nContent-Disposition: form-data; name=\"avatar\"; filename=\"a.bin\"\r\n\r\n").as_bytes(),
            );
            out.extend_from_slice(noise);
            out.extend_from_slice(format!("\r\n--{b}--\r\n").as_bytes());
            (out, format!("multipart/form-data; boundary={b}"))
        }
    }
}

/// Every base64 `data` string in a rendered record, decoded.
fn decoded_blobs(value: &Value, out: &mut Vec<Vec<u8>>) {
    match value {
        Value::Object(map) => {
            if let Some(Value::String(data)) = map.get("data") {
                if let Ok(bytes) = base64::engine::general_purpose::STANDARD.decode(data) {
                    out.push(bytes);
                }
            }
            map.values().for_each(|v| decoded_blobs(v, out));
        }
        Value::Array(items) => items.iter().for_each(|v| decoded_blobs(v, out)),
        _ => {}
    }
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    memchr::memmem::find(haystack, needle).is_some()
}

async fn run_case(
    kind: Kind,
    name: &'static str,
    noise: Vec<u8>,
    prefix: Vec<u8>,
    chunks: Vec<usize>,
    limit: usize,
) -> Result<(), TestCaseError> {
    let secret = "Zq9-hunter2-S3CR3T";
    let (bytes, content_type) = body(&kind, name, secret, &noise, &prefix);
    let sink = CollectSink::default();
    let layer = UsageLayer::new(sink.clone()).max_request_body_bytes(limit);
    let handle = layer.handle();
    let app = Router::new()
        .route(
            "/login",
            post(|b: Bytes| async move { b.len().to_string() }),
        )
        .layer(layer);
    // Random chunking.
    let mut parts = Vec::new();
    let mut at = 0;
    for c in chunks {
        let end = (at + c).min(bytes.len());
        parts.push(Ok::<_, Infallible>(Bytes::copy_from_slice(&bytes[at..end])));
        at = end;
    }
    parts.push(Ok(Bytes::copy_from_slice(&bytes[at..])));
    let req = Request::post("/login")
        .header("content-type", content_type)
        .body(Body::from_stream(futures_util::stream::iter(parts)))
        .unwrap();
    let res = app.oneshot(req).await.unwrap();
    prop_assert_eq!(res.status(), 200);
    drop(res);
    handle.flush().await;
    let records = sink.all();
    prop_assert_eq!(records.len(), 1);
    let record = &records[0];

    // The stored bytes.
    prop_assert!(
        !contains(&record.request.body.bytes, secret.as_bytes()),
        "stored: {:?}",
        String::from_utf8_lossy(&record.request.body.bytes)
    );
    // The wire form, and every base64 blob in it, decoded.
    let wire = serde_json::to_value(record).unwrap();
    let text = wire.to_string();
    prop_assert!(!text.contains(secret), "served: {}", text);
    let mut blobs = Vec::new();
    decoded_blobs(&wire, &mut blobs);
    for blob in blobs {
        prop_assert!(
            !contains(&blob, secret.as_bytes()),
            "in base64: {:?}",
            String::from_utf8_lossy(&blob)
        );
    }
    // A SQLite file, its WAL included.
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("usage.db");
    let sqlite = SqliteSink::open(&path).unwrap();
    sqlite.record(&records).await.unwrap();
    drop(sqlite);
    for entry in std::fs::read_dir(dir.path()).unwrap() {
        // The WAL and shared-memory files go when the last connection closes,
        // which may be between the listing and the read.
        let file = match std::fs::read(entry.unwrap().path()) {
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
            file => file.unwrap(),
        };
        prop_assert!(!contains(&file, secret.as_bytes()), "in the SQLite file");
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: CASES, ..ProptestConfig::default() })]

    #[test]
    fn no_secret_value_is_ever_stored_readable(
        kind in kind(),
        name in proptest::sample::select(SECRET_NAMES),
        noise in proptest::collection::vec(prop_oneof![Just(0xffu8), Just(0xfc), Just(0xc3), Just(0x80), Just(b'x')], 0..6),
        prefix in prop_oneof![Just(Vec::new()), Just(b"  ".to_vec()), Just(b"\xef\xbb\xbf".to_vec()), Just(b")]}',\n".to_vec())],
        chunks in proptest::collection::vec(1usize..40, 0..6),
        limit in 16usize..400,
    ) {
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        rt.block_on(run_case(kind, name, noise, prefix, chunks, limit))?;
    }
}
