//! Faults a hostile round found (issue 24, section 2), each through a real
//! axum Router on 127.0.0.1, with both sides checked: what must be masked or
//! withheld, and what must stay as it was sent.
//!
//! - a: a body whose `Content-Type` / `Content-Encoding` come after the
//!   header cut is still decoded and redacted by them;
//! - b: response decoding does not depend on the response headers kept;
//! - d: text in a charset other than UTF-8 is read as UTF-8 before redaction,
//!   or not stored;
//! - g: `br` and `zstd` bodies (and chains) are decoded, bounded.
//!
//! Row f (`completeUntil` and exchanges in flight) is in `tests/in_flight.rs`.

mod common;

use std::io::{Read as _, Write as _};

use axum::routing::post;
use axum::Router;
use base64::Engine as _;
use bytes::Bytes;
use common::*;
use http::{Request, StatusCode};
use serde_json::Value;
use tower_usage::{UsageLayer, UsageRecord};

const SECRET: &str = "s3cr3t-VALUE";

fn gzip(data: &[u8]) -> Vec<u8> {
    let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    e.write_all(data).unwrap();
    e.finish().unwrap()
}

fn zlib(data: &[u8]) -> Vec<u8> {
    let mut e = flate2::write::ZlibEncoder::new(Vec::new(), flate2::Compression::default());
    e.write_all(data).unwrap();
    e.finish().unwrap()
}

fn brotli(data: &[u8]) -> Vec<u8> {
    let mut e = ::brotli::CompressorWriter::new(Vec::new(), 4096, 5, 22);
    e.write_all(data).unwrap();
    e.into_inner()
}

fn zstd(data: &[u8]) -> Vec<u8> {
    ruzstd::encoding::compress_to_vec(data, ruzstd::encoding::CompressionLevel::Fastest)
}

fn utf16le(s: &str) -> Vec<u8> {
    s.encode_utf16().flat_map(u16::to_le_bytes).collect()
}

fn utf16be(s: &str) -> Vec<u8> {
    s.encode_utf16().flat_map(u16::to_be_bytes).collect()
}

/// The secret is nowhere in the record: not as text, and not in a stored
/// base64 body either, read as it is, with its NUL bytes dropped (UTF-16),
/// or gunzipped.
fn assert_no_secret(what: &str, wire: &Value) {
    let text = wire.to_string();
    assert!(
        !text.contains(SECRET) && !text.contains("s3cr3t"),
        "{what}: secret stored: {text}"
    );
    for body in [&wire["request"]["body"], &wire["response"]] {
        let Some(data) = body["data"].as_str() else {
            continue;
        };
        let bytes = base64::engine::general_purpose::STANDARD
            .decode(data)
            .unwrap();
        let mut readable = vec![bytes.clone()];
        readable.push(bytes.iter().copied().filter(|&b| b != 0).collect());
        let mut gunzipped = Vec::new();
        if flate2::read::MultiGzDecoder::new(&bytes[..])
            .read_to_end(&mut gunzipped)
            .is_ok()
        {
            readable.push(gunzipped);
        }
        for bytes in readable {
            assert!(
                !String::from_utf8_lossy(&bytes).contains("s3cr3t"),
                "{what}: secret readable in the stored bytes: {text}"
            );
        }
    }
}

/// The response the app sends: headers and body.
#[derive(Clone, Default)]
struct Reply {
    headers: Vec<(&'static str, String)>,
    body: Vec<u8>,
}

/// Sends `req` to `POST /x` through `layer`, which answers `reply`; the one
/// record, and its wire form.
async fn exchange(
    layer: UsageLayer<CollectSink>,
    sink: &CollectSink,
    req: http::request::Builder,
    body: Vec<u8>,
    reply: Reply,
) -> (UsageRecord, Value) {
    let handle = layer.handle();
    let app = Router::new()
        .route(
            "/x",
            post(move |_body: Bytes| {
                let reply = reply.clone();
                async move {
                    let mut res = http::Response::builder();
                    for (k, v) in &reply.headers {
                        res = res.header(*k, v);
                    }
                    res.body(axum::body::Body::from(reply.body)).unwrap()
                }
            }),
        )
        .layer(layer);
    let addr = serve(app).await;
    let req = req
        .method("POST")
        .uri(format!("http://{addr}/x"))
        .body(full(body))
        .unwrap();
    let (status, _, _) = send(req).await;
    assert_eq!(status, StatusCode::OK);
    handle.flush().await;
    let records = sink.all();
    assert_eq!(records.len(), 1);
    let wire = serde_json::to_value(&records[0]).unwrap();
    (records[0].clone(), wire)
}

/// A request with these headers and body through a default layer, answered
/// `200 ok`.
async fn sent(headers: &[(&str, &str)], body: Vec<u8>) -> (UsageRecord, Value) {
    let sink = CollectSink::default();
    let mut req = Request::builder();
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    exchange(
        UsageLayer::new(sink.clone()),
        &sink,
        req,
        body,
        Reply::default(),
    )
    .await
}

/// A login body, long enough to compress (a short one may be stored as is
/// inside a gzip stream, where the text net would see it).
fn login_json() -> String {
    let note = "a long note ".repeat(20);
    format!(r#"{{"user":"u1","password":"{SECRET}","name":"Zoë","note":"{note}"}}"#)
}

/// A cookie larger than the default `max_header_bytes` (8 KiB), sent first.
fn big_cookie() -> String {
    format!("session_state={}", "x".repeat(9000))
}

type Compress = fn(&[u8]) -> Vec<u8>;

const CODINGS: &[(&str, Compress)] = &[
    ("gzip", gzip),
    ("x-gzip", gzip),
    ("deflate", zlib),
    ("br", brotli),
    ("zstd", zstd),
];

// --- a: the body's headers after the header cut ---------------------------

#[tokio::test]
async fn a_body_whose_headers_come_after_the_cut_is_decoded_and_redacted() {
    let cookie = big_cookie();
    for &(coding, compress) in CODINGS {
        let (record, wire) = sent(
            &[
                ("cookie", &cookie),
                ("content-type", "application/json"),
                ("content-encoding", coding),
            ],
            compress(login_json().as_bytes()),
        )
        .await;
        assert_no_secret(coding, &wire);
        assert!(
            record.capture.request_headers_cut > 0,
            "{coding}: the cut happened"
        );
        assert_eq!(wire["capture"]["requestBodyDecoded"], coding, "{wire}");
        assert_eq!(
            wire["request"]["body"]["password"], "[REDACTED]",
            "{coding}"
        );
        assert_eq!(wire["request"]["body"]["user"], "u1", "{coding}");
        assert_eq!(wire["request"]["body"]["name"], "Zoë", "{coding}");
        // The kept header list stays as the cut left it.
        let headers = wire["request"]["headers"].as_object().unwrap();
        assert!(
            !headers.contains_key("content-encoding"),
            "{coding}: {headers:?}"
        );
    }
}

#[tokio::test]
async fn a_form_or_a_charset_after_the_cut_is_read_by_it() {
    let cookie = big_cookie();
    // A form's names may be percent-encoded: read as a form only by its type.
    let (_, wire) = sent(
        &[
            ("cookie", &cookie),
            ("content-type", "application/x-www-form-urlencoded"),
        ],
        format!("user=u1&pass%77ord={SECRET}").into_bytes(),
    )
    .await;
    assert_no_secret("form", &wire);
    assert_eq!(wire["request"]["body"], "user=u1&pass%77ord=%5BREDACTED%5D");

    let (_, wire) = sent(
        &[
            ("cookie", &cookie),
            ("content-type", "application/json; charset=utf-16le"),
        ],
        utf16le(&login_json()),
    )
    .await;
    assert_no_secret("utf-16le", &wire);
    assert_eq!(wire["capture"]["requestBodyCharset"], "utf-16le");
    assert_eq!(wire["request"]["body"]["user"], "u1");

    // No coding at all after the cut: kept as it came (masked, the rest as sent).
    let (record, wire) = sent(
        &[("cookie", &cookie), ("content-type", "application/json")],
        login_json().into_bytes(),
    )
    .await;
    assert_eq!(wire["request"]["body"]["password"], "[REDACTED]");
    assert_eq!(wire["request"]["body"]["name"], "Zoë");
    assert!(wire["capture"].get("requestBodyDecoded").is_none());
    assert!(record.capture.request_body_withheld.is_none());
}

#[tokio::test]
async fn body_headers_too_long_to_keep_apart_withhold_the_body() {
    let cookie = big_cookie();
    let long_type = format!("application/json; x={}", "y".repeat(2000));
    let body = gzip(login_json().as_bytes());
    let (record, wire) = sent(
        &[
            ("cookie", &cookie),
            ("content-type", &long_type),
            ("content-encoding", "gzip"),
        ],
        body.clone(),
    )
    .await;
    assert_no_secret("too long", &wire);
    assert!(record.request.body.bytes.is_empty());
    assert!(record.request.body.truncated);
    assert_eq!(record.request.body.size, body.len() as u64);
    assert_eq!(
        wire["capture"]["requestBodyWithheld"],
        "body-headers-too-long"
    );

    // The same headers without a cut: decoded as usual.
    let (_, wire) = sent(
        &[("content-type", &long_type), ("content-encoding", "gzip")],
        body,
    )
    .await;
    assert_eq!(wire["request"]["body"]["password"], "[REDACTED]");
    assert_eq!(wire["request"]["body"]["user"], "u1");
}

#[tokio::test]
async fn every_content_encoding_line_counts() {
    // `identity` first, `gzip` on a second line: the body is gzip.
    let sink = CollectSink::default();
    let mut req = Request::builder()
        .header("content-type", "application/json")
        .header("content-encoding", "identity");
    req = req.header("content-encoding", "gzip");
    let (_, wire) = exchange(
        UsageLayer::new(sink.clone()),
        &sink,
        req,
        gzip(login_json().as_bytes()),
        Reply::default(),
    )
    .await;
    assert_no_secret("identity, gzip", &wire);
    assert_eq!(wire["capture"]["requestBodyDecoded"], "gzip");
    assert_eq!(wire["request"]["body"]["user"], "u1");

    // `identity` alone: as sent.
    let (_, wire) = sent(
        &[
            ("content-type", "application/json"),
            ("content-encoding", "identity"),
        ],
        login_json().into_bytes(),
    )
    .await;
    assert_eq!(wire["request"]["body"]["password"], "[REDACTED]");
    assert_eq!(wire["request"]["body"]["name"], "Zoë");
    assert!(wire.get("capture").is_none(), "{wire}");
}

// --- b: response decoding whatever headers are kept ------------------------

fn token_reply(coding: &str, compress: Compress) -> Reply {
    let body = format!(r#"{{"access_token":"{SECRET}","user":"u1","expires_in":3600}}"#);
    Reply {
        headers: vec![
            ("content-type", "application/json".into()),
            ("content-encoding", coding.into()),
            ("x-request-id", "r1".into()),
        ],
        body: compress(body.as_bytes()),
    }
}

#[tokio::test]
async fn response_decoding_does_not_depend_on_the_kept_headers() {
    let kept: &[&[&str]] = &[
        &["x-request-id"],
        &["content-type"],
        &["content-encoding"],
        &[],
    ];
    for keep in kept {
        for &(coding, compress) in CODINGS {
            let sink = CollectSink::default();
            let layer = UsageLayer::new(sink.clone())
                .keep_response_headers(keep.iter().map(|n| http::HeaderName::from_static(n)));
            let (record, wire) = exchange(
                layer,
                &sink,
                Request::builder(),
                vec![],
                token_reply(coding, compress),
            )
            .await;
            let what = format!("{coding}, keeping {keep:?}");
            assert_no_secret(&what, &wire);
            assert_eq!(
                wire["response"]["access_token"], "[REDACTED]",
                "{what}: {wire}"
            );
            assert_eq!(wire["response"]["user"], "u1", "{what}");
            assert_eq!(wire["response"]["expires_in"], 3600, "{what}");
            assert_eq!(wire["capture"]["responseBodyDecoded"], coding, "{what}");
            // The kept headers are what the user chose, nothing more.
            let names: Vec<&str> = record.response_headers.keys().map(|n| n.as_str()).collect();
            assert_eq!(&names[..], *keep, "{what}");
        }
    }
}

#[tokio::test]
async fn a_response_charset_is_read_whatever_headers_are_kept() {
    let sink = CollectSink::default();
    let layer = UsageLayer::new(sink.clone()).keep_response_headers(Vec::<http::HeaderName>::new());
    let reply = Reply {
        headers: vec![("content-type", "application/json; charset=UTF-16BE".into())],
        body: utf16be(&format!(r#"{{"access_token":"{SECRET}","user":"Zoë"}}"#)),
    };
    let (record, wire) = exchange(layer, &sink, Request::builder(), vec![], reply).await;
    assert_no_secret("utf-16be response", &wire);
    assert_eq!(wire["response"]["user"], "Zoë");
    assert_eq!(wire["capture"]["responseBodyCharset"], "utf-16be");
    assert!(record.response_headers.is_empty());
}

// --- d: charsets -----------------------------------------------------------

#[tokio::test]
async fn text_in_another_charset_is_read_as_utf8_then_redacted() {
    let json = login_json();
    let latin1: Vec<u8> = json
        .chars()
        .map(|c| u8::try_from(u32::from(c)).unwrap())
        .collect();
    let cases: Vec<(&str, Vec<u8>, &str)> = vec![
        (
            "application/json; charset=utf-16le",
            utf16le(&json),
            "utf-16le",
        ),
        (
            "application/json; charset=utf-16be",
            utf16be(&json),
            "utf-16be",
        ),
        (
            "application/json; charset=utf-16",
            [&[0xFE, 0xFF][..], &utf16be(&json)].concat(),
            "utf-16be",
        ),
        (
            "application/json; charset=utf-16",
            [&[0xFF, 0xFE][..], &utf16le(&json)].concat(),
            "utf-16le",
        ),
        (
            "application/json; charset=iso-8859-1",
            latin1.clone(),
            "windows-1252",
        ),
        (
            "application/json; charset=latin1",
            latin1.clone(),
            "windows-1252",
        ),
        (
            "application/json; charset=windows-1252",
            latin1,
            "windows-1252",
        ),
        // A mark without a label, or against a UTF-8 label.
        (
            "application/json",
            [&[0xFF, 0xFE][..], &utf16le(&json)].concat(),
            "utf-16le",
        ),
        (
            "application/json; charset=utf-8",
            [&[0xFE, 0xFF][..], &utf16be(&json)].concat(),
            "utf-16be",
        ),
        (
            "application/json",
            [b"\xEF\xBB\xBF", json.as_bytes()].concat(),
            "utf-8",
        ),
        // No mark and no label: UTF-16 by its pattern (RFC 4627).
        ("application/json", utf16le(&json), "utf-16le"),
        ("text/plain", utf16be(&json), "utf-16be"),
        // The label quoted, in upper case, its name in mixed case.
        (
            "application/json; Charset=\"UTF-16LE\"",
            utf16le(&json),
            "utf-16le",
        ),
        (
            "application/json;charset=UTF-16LE ",
            utf16le(&json),
            "utf-16le",
        ),
    ];
    for (content_type, body, charset) in cases {
        let (record, wire) = sent(&[("content-type", content_type)], body.clone()).await;
        let what = format!("{content_type} ({charset})");
        assert_no_secret(&what, &wire);
        assert_eq!(
            wire["request"]["body"]["password"], "[REDACTED]",
            "{what}: {wire}"
        );
        assert_eq!(wire["request"]["body"]["user"], "u1", "{what}");
        assert_eq!(wire["request"]["body"]["name"], "Zoë", "{what}");
        assert_eq!(wire["capture"]["requestBodyCharset"], charset, "{what}");
        assert_eq!(
            record.request.body.size,
            body.len() as u64,
            "{what}: the size sent"
        );
        assert!(!record.request.body.truncated, "{what}");
    }

    // A form in UTF-16: its pairs are read once converted.
    let (_, wire) = sent(
        &[(
            "content-type",
            "application/x-www-form-urlencoded; charset=utf-16le",
        )],
        utf16le(&format!("user=u1&pass%77ord={SECRET}")),
    )
    .await;
    assert_no_secret("utf-16 form", &wire);
    assert_eq!(wire["request"]["body"], "user=u1&pass%77ord=%5BREDACTED%5D");
}

#[tokio::test]
async fn utf8_and_binary_bodies_stay_as_they_were_sent() {
    let json = login_json();
    for content_type in [
        "application/json",
        "application/json; charset=utf-8",
        "application/json; charset=\"UTF-8\"",
        "application/json; charset=us-ascii",
    ] {
        let body = if content_type.ends_with("us-ascii") {
            json.replace('ë', "e")
        } else {
            json.clone()
        };
        let (_, wire) = sent(&[("content-type", content_type)], body.into_bytes()).await;
        assert_eq!(
            wire["request"]["body"]["password"], "[REDACTED]",
            "{content_type}"
        );
        assert!(wire.get("capture").is_none(), "{content_type}: {wire}");
    }
    // Bytes labelled as bytes keep their bytes.
    let png = b"\x89PNG\r\n\x1a\n\0\0\0\rIHDR\0\0\0\x01".to_vec();
    let (record, wire) = sent(&[("content-type", "image/png")], png.clone()).await;
    assert_eq!(record.request.body.bytes, png);
    assert!(wire.get("capture").is_none(), "{wire}");
}

#[tokio::test]
async fn text_in_a_charset_that_cannot_be_read_is_not_stored() {
    let json = login_json();
    let utf32: Vec<u8> = [0xFF, 0xFE, 0, 0]
        .into_iter()
        .chain(json.chars().flat_map(|c| u32::from(c).to_le_bytes()))
        .collect();
    let cases: Vec<(&str, Vec<u8>, &str)> = vec![
        (
            "application/json; charset=utf-7",
            format!("{{\"+AHA-assword\":\"{SECRET}\"}}").into_bytes(),
            "charset=utf-7",
        ),
        ("application/json; charset=utf-32", utf32.clone(), "utf-32"),
        ("application/json", utf32, "utf-32"),
        (
            "application/json; charset=x-secret-cipher",
            json.clone().into_bytes(),
            "charset=x-secret-cipher",
        ),
        (
            "application/json; charset=utf-8; charset=utf-16le",
            utf16le(&json),
            "charset=utf-8, charset=utf-16le",
        ),
        // UTF-16 behind a single-byte label still holds NULs once read.
        (
            "application/json; charset=latin1",
            utf16le(&json),
            "nul-bytes",
        ),
        (
            "text/plain",
            [b"note: ".as_slice(), &utf16le(&json)].concat(),
            "nul-bytes",
        ),
    ];
    for (content_type, body, reason) in cases {
        let (record, wire) = sent(&[("content-type", content_type)], body.clone()).await;
        assert_no_secret(content_type, &wire);
        assert!(record.request.body.bytes.is_empty(), "{content_type}");
        assert!(record.request.body.truncated, "{content_type}");
        assert_eq!(record.request.body.size, body.len() as u64);
        assert_eq!(
            wire["capture"]["requestBodyWithheld"], reason,
            "{content_type}"
        );
    }
}

// --- g: br and zstd ----------------------------------------------------------

#[tokio::test]
async fn br_and_zstd_bodies_are_decoded_both_ways() {
    for &(coding, compress) in &CODINGS[3..] {
        let sink = CollectSink::default();
        let mut req = Request::builder()
            .header("content-type", "application/json")
            .header("content-encoding", coding);
        req = req.header("accept-encoding", "br, zstd");
        let (record, wire) = exchange(
            UsageLayer::new(sink.clone()),
            &sink,
            req,
            compress(login_json().as_bytes()),
            token_reply(coding, compress),
        )
        .await;
        assert_no_secret(coding, &wire);
        assert_eq!(wire["request"]["body"]["password"], "[REDACTED]");
        assert_eq!(wire["request"]["body"]["name"], "Zoë");
        assert_eq!(wire["response"]["access_token"], "[REDACTED]");
        assert_eq!(wire["response"]["expires_in"], 3600);
        assert_eq!(wire["capture"]["requestBodyDecoded"], coding);
        assert_eq!(wire["capture"]["responseBodyDecoded"], coding);
        assert_eq!(
            record.response_headers["content-encoding"], coding,
            "kept as sent"
        );
    }
}

#[tokio::test]
async fn chains_are_decoded_in_reverse_and_bombs_stop_at_the_limit() {
    // `gzip, br`: gzip applied first, so brotli is undone first.
    let body = format!(r#"{{"access_token":"{SECRET}","user":"u1"}}"#);
    for (coding, bytes) in [
        ("gzip, br", brotli(&gzip(body.as_bytes()))),
        ("br, zstd", zstd(&brotli(body.as_bytes()))),
        ("deflate, gzip", gzip(&zlib(body.as_bytes()))),
    ] {
        let sink = CollectSink::default();
        let reply = Reply {
            headers: vec![
                ("content-type", "application/json".into()),
                ("content-encoding", coding.into()),
            ],
            body: bytes,
        };
        let (_, wire) = exchange(
            UsageLayer::new(sink.clone()),
            &sink,
            Request::builder(),
            vec![],
            reply,
        )
        .await;
        assert_no_secret(coding, &wire);
        assert_eq!(wire["response"]["user"], "u1", "{coding}");
        assert_eq!(wire["capture"]["responseBodyDecoded"], coding);
    }
    // A coding the writer does not know, in a chain: withheld, and said so.
    let sink = CollectSink::default();
    let reply = Reply {
        headers: vec![("content-encoding", "gzip, compress".into())],
        body: gzip(body.as_bytes()),
    };
    let (record, wire) = exchange(
        UsageLayer::new(sink.clone()),
        &sink,
        Request::builder(),
        vec![],
        reply,
    )
    .await;
    assert_no_secret("compress", &wire);
    assert!(record.response.bytes.is_empty());
    assert_eq!(wire["capture"]["responseBodyWithheld"], "gzip, compress");

    // Bombs: 20 MB of zeros in a few KB; at most the capture limit is kept.
    let zeros = vec![b'0'; 20_000_000];
    for (coding, bytes) in [("br", brotli(&zeros)), ("zstd", zstd(&zeros))] {
        assert!(bytes.len() < 1_000_000, "{coding}: {}", bytes.len());
        let sink = CollectSink::default();
        let reply = Reply {
            headers: vec![("content-encoding", coding.into())],
            body: bytes,
        };
        let layer = UsageLayer::new(sink.clone()).max_response_body_bytes(64 * 1024);
        let (record, wire) = exchange(layer, &sink, Request::builder(), vec![], reply).await;
        assert_eq!(record.response.bytes.len(), 64 * 1024, "{coding}");
        assert!(record.response.truncated, "{coding}");
        assert_eq!(wire["capture"]["responseBodyDecoded"], coding);
    }
}

#[tokio::test]
async fn a_compressed_body_in_utf16_is_decoded_then_read() {
    let sink = CollectSink::default();
    let req = Request::builder()
        .header("content-type", "application/json; charset=utf-16le")
        .header("content-encoding", "br");
    let body = brotli(&utf16le(&login_json()));
    let (_, wire) = exchange(
        UsageLayer::new(sink.clone()),
        &sink,
        req,
        body,
        Reply::default(),
    )
    .await;
    assert_no_secret("br, utf-16le", &wire);
    assert_eq!(wire["request"]["body"]["name"], "Zoë");
    assert_eq!(wire["capture"]["requestBodyDecoded"], "br");
    assert_eq!(wire["capture"]["requestBodyCharset"], "utf-16le");
}

/// `Transfer-Encoding: gzip, chunked`: the server removes the chunking, the
/// handler gets gzip; the record decodes it.
#[tokio::test]
async fn a_transfer_coding_other_than_chunked_is_decoded() {
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
    let sink = CollectSink::default();
    let layer = UsageLayer::new(sink.clone());
    let handle = layer.handle();
    let app = Router::new()
        .route(
            "/x",
            post(|body: Bytes| async move { body.len().to_string() }),
        )
        .layer(layer);
    let addr = serve(app).await;
    let body = gzip(login_json().as_bytes());
    let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    let mut req = format!(
        "POST /x HTTP/1.1\r\nhost: a\r\ncontent-type: application/json\r\n\
         transfer-encoding: gzip, chunked\r\nconnection: close\r\n\r\n{:x}\r\n",
        body.len()
    )
    .into_bytes();
    req.extend_from_slice(&body);
    req.extend_from_slice(b"\r\n0\r\n\r\n");
    stream.write_all(&req).await.unwrap();
    let mut answer = Vec::new();
    stream.read_to_end(&mut answer).await.unwrap();
    assert!(
        answer.starts_with(b"HTTP/1.1 200"),
        "{}",
        String::from_utf8_lossy(&answer)
    );
    handle.flush().await;
    let wire = serde_json::to_value(&sink.all()[0]).unwrap();
    assert_no_secret("transfer-encoding: gzip", &wire);
    assert_eq!(wire["capture"]["requestBodyDecoded"], "gzip");
    assert_eq!(wire["request"]["body"]["user"], "u1");
}
