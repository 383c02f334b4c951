//! `round_trip`: every field comes back as it was recorded.

use std::collections::HashMap;

use super::{scoped, Check};
use crate::sink::{ConsumerScope, Order};
use crate::testing::support::{body, field_differences, header, headers, query, record, Gen};
use crate::{CapturedBody, GrpcCall, Outcome, UsageRecord, UsageSink};

/// Every variant of every field the kit can think of, each on its own record.
fn round_trip_records(gen: &mut Gen) -> Vec<(&'static str, UsageRecord)> {
    let mut out = Vec::new();
    let mut add = |label: &'static str, offset_ms: i64, f: &dyn Fn(&mut UsageRecord)| {
        let mut r = gen.request(offset_ms, Some("acct_7f3a9c21e04b"), "GET", "/x", 200);
        f(&mut r);
        out.push((label, r));
    };
    add("empty bodies, no query, no route, anonymous", 0, &|r| {
        r.consumer = None;
        r.path = "/health".into();
        r.route = None;
        r.request.query.clear();
        r.request.params.clear();
        r.request.headers = headers(&[header("host", b"api.example.com")]);
        r.request.body = CapturedBody::default();
        r.response = CapturedBody::default();
        r.response_headers = headers(&[]);
        r.status = 204;
        r.duration_us = 0;
    });
    add("JSON bodies, repeated headers", 839, &|r| {
        r.method = "POST".into();
        r.path = "/rest/v1/airdrop/".into();
        r.route = Some("/rest/v1/airdrop/".into());
        r.request.query.clear();
        r.request.params.clear();
        r.request.body =
            body(br#"{"sequential":false,"recipients":[{"to":"0xab","amount":"12.5"}]}"#);
        r.request.headers = headers(&[
            header("host", b"localhost:9000"),
            header("content-type", b"application/json"),
            header("authorization", b"[REDACTED]"),
            header("accept", b"application/json"),
            header("accept", b"text/plain;q=0.5"),
            header("x-forwarded-for", b"203.0.113.7"),
        ]);
        r.response = body(br#"{"id":"I4WTgq6ZHb2ncugUWBz1oSPDld5eJi5U","count":2}"#);
        r.response_headers = headers(&[
            header("content-type", b"application/json"),
            header("set-cookie", b"[REDACTED]"),
            header("set-cookie", b"[REDACTED]"),
        ]);
        r.status = 201;
    });
    add("UTF-8 text bodies", 1_001, &|r| {
        r.consumer = Some("acct_émilie".into());
        r.method = "PUT".into();
        r.path = "/notes/42".into();
        r.request.body = body("héllo wörld ✓ — naïve café 日本".as_bytes());
        r.request.headers.insert(
            http::header::CONTENT_TYPE,
            http::HeaderValue::from_static("text/plain; charset=utf-8"),
        );
        r.response = body(b"saved");
    });
    add("binary, non-UTF-8 bodies", 1_999, &|r| {
        r.method = "POST".into();
        r.path = "/upload".into();
        r.request.body = body(&[
            0x89, b'P', b'N', b'G', 0x0d, 0x0a, 0x1a, 0x0a, 0x00, 0xff, 0xfe,
        ]);
        r.response = body(&[0xff, 0x00, 0xc3, 0x28, 0x80]);
        r.outcome = Outcome::ClientGone;
    });
    add(
        "truncated bodies (size larger than the bytes kept)",
        2_000,
        &|r| {
            r.method = "POST".into();
            r.path = "/rest/v1/items/bulk".into();
            r.request.body =
                CapturedBody::truncated(&br#"{"items":[{"id":1,"name":"wid"#[..], 1_048_576);
            r.response = CapturedBody::truncated(vec![0xffu8; 64], 10_000_000);
        },
    );
    add(
        "query string with repeats and percent-escapes",
        2_500,
        &|r| {
            r.path = "/search".into();
            r.route = Some("/search".into());
            r.request.query = "q=caf%C3%A9+au+lait&tag=a&tag=b&tag=c&empty=&flag\
                           &redirect=https%3A%2F%2Fexample.com%2F%3Fa%3D1%26b%3D2&q2=%20x%2B"
                .into();
        },
    );
    add("route params in template order", 3_000, &|r| {
        r.path = "/orgs/o-42/batches/I4WTgq6ZHb2ncugUWBz1oSPDld5eJi5U/items/caf%C3%A9%20cr%C3%A8me"
            .into();
        r.route = Some("/orgs/{orgId}/batches/{batchId}/items/{name}".into());
        r.request.params = vec![
            ("orgId".into(), "o-42".into()),
            ("batchId".into(), "I4WTgq6ZHb2ncugUWBz1oSPDld5eJi5U".into()),
            ("name".into(), "café crème / ½".into()),
        ];
    });
    add("a W3C trace context (traceId and spanId)", 3_500, &|r| {
        r.trace = Some(crate::TraceContext {
            trace_id: "0af7651916cd43dd8448eb211c80319c".into(),
            span_id: "b7ad6b7169203331".into(),
        });
    });
    add("non-UTF-8 header values", 3_999, &|r| {
        r.request
            .headers
            .append("x-legacy-name", header("x-legacy-name", b"Jos\xe9 \xc0").1);
        r.response_headers = headers(&[
            header("content-type", b"application/pdf"),
            header(
                "content-disposition",
                b"attachment; filename=\"r\xe9sum\xe9.pdf\"",
            ),
        ]);
        r.response = body(b"%PDF-1.7");
    });
    add("cancelled before the inner service answered", 4_000, &|r| {
        r.status = 499;
        r.outcome = Outcome::Cancelled;
        r.response = CapturedBody::default();
        r.response_headers = headers(&[]);
        r.duration_us = 30_000_000;
    });
    add("capture notes: headers cut, body unread", 4_250, &|r| {
        r.method = "POST".into();
        r.status = 404;
        r.request.body = crate::CapturedBody::truncated(Vec::new(), 23);
        r.capture.request_headers_cut = 350_112;
        r.capture.request_body_unread = true;
        r.capture.response_body_decoded = Some("gzip".into());
        r.capture.request_body_withheld = Some("br".into());
        // Withheld by the capture policy: the size kept, the bytes not.
        r.response = crate::CapturedBody::truncated(Vec::new(), 512);
        r.capture.response_body_policy = Some("error|sample".into());
    });
    add(
        "bodies whose stored bytes differ from their size (redacted, decoded)",
        4_400,
        &|r| {
            r.method = "POST".into();
            r.path = "/login".into();
            // Redaction kept the size of what was sent (40 bytes) while the
            // stored bytes shrank to 38.
            r.request.body = CapturedBody {
                size: 40,
                ..body(br#"{"user":"ana","password":"[REDACTED]"}"#)
            };
            // A gzip response of 31 bytes, stored decoded (50 bytes).
            r.response = CapturedBody {
                size: 31,
                ..body(br#"{"token":"[REDACTED]","expires_in":3600,"ok":true}"#)
            };
            r.capture.response_body_decoded = Some("gzip".into());
        },
    );
    add("inner service error", 4_500, &|r| {
        r.consumer = None;
        r.status = 500;
        r.outcome = Outcome::Error;
        r.response = body(b"internal error");
        r.response_headers = headers(&[header("content-type", b"text/plain")]);
    });
    add("gRPC call with every field", 5_000, &|r| {
        r.method = "POST".into();
        r.path = "/airdrop.v1.Airdrop/GetBatch".into();
        r.route = None;
        r.request.query.clear();
        r.request.headers = headers(&[
            header("content-type", b"application/grpc"),
            header("te", b"trailers"),
            header("grpc-timeout", b"5S"),
        ]);
        r.request.body = body(&[0, 0, 0, 0, 5, 0x0a, 0x03, b'a', b'b', b'c']);
        r.response = CapturedBody::default();
        r.response_headers = headers(&[
            header("content-type", b"application/grpc"),
            header("grpc-status", b"5"),
        ]);
        r.grpc = Some(GrpcCall {
            status: Some(5),
            message: Some("batch I4WT not found: é".into()),
            request_messages: 1,
            response_messages: 0,
        });
    });
    add(
        "gRPC stream without a status, a huge duration",
        5_999,
        &|r| {
            r.method = "POST".into();
            r.path = "/airdrop.v1.Airdrop/Watch".into();
            r.route = None;
            r.request.query.clear();
            r.outcome = Outcome::ClientGone;
            // 2^53 + 1: not exact as an f64.
            r.duration_us = 9_007_199_254_740_993;
            r.grpc = Some(GrpcCall {
                status: None,
                message: None,
                request_messages: 3,
                response_messages: 70_000,
            });
        },
    );
    add("gRPC OK, message but no counts", 6_000, &|r| {
        r.method = "POST".into();
        r.path = "/airdrop.v1.Airdrop/Ping".into();
        r.status = 200;
        r.grpc = Some(GrpcCall {
            status: Some(0),
            message: Some(String::new()),
            request_messages: 0,
            response_messages: 0,
        });
    });
    out
}

/// Whatever is recorded is read back as it was: bodies byte for byte, query
/// strings as sent, params in order, headers with repeats and opaque bytes,
/// every outcome, gRPC details, `created_at` to the millisecond.
pub(super) async fn round_trip<S: UsageSink>(sink: &S) -> Check {
    let mut gen = Gen::new(1);
    let mut labelled = round_trip_records(&mut gen);
    // Every outcome appears; a new variant fails to compile here.
    for outcome in [
        Outcome::Complete,
        Outcome::ClientGone,
        Outcome::Cancelled,
        Outcome::Error,
    ] {
        match outcome {
            Outcome::Complete | Outcome::ClientGone | Outcome::Cancelled | Outcome::Error => {}
        }
        if !labelled.iter().any(|(_, r)| r.outcome == outcome) {
            let mut r = gen.request(7_000, Some("acct_7f3a9c21e04b"), "GET", "/x", 200);
            r.outcome = outcome;
            labelled.push(("another outcome", r));
        }
    }
    let batch: Vec<UsageRecord> = labelled.iter().map(|(_, r)| r.clone()).collect();
    record(sink, &batch, "the round-trip records").await?;

    let what = "reading back the round-trip records";
    let got = query(sink, &scoped(ConsumerScope::All, Order::Asc, 1000), what)
        .await?
        .records;
    let by_id: HashMap<&str, &UsageRecord> = got.iter().map(|r| (r.id.as_str(), r)).collect();
    let mut problems = Vec::new();
    for (label, stored) in &labelled {
        match by_id.get(stored.id.as_str()) {
            None => problems.push(format!(
                "record \"{label}\" ({}) was not read back",
                stored.id
            )),
            Some(read) => {
                for diff in field_differences(stored, read) {
                    problems.push(format!("record \"{label}\" ({}): {diff}", stored.id));
                }
            }
        }
    }
    if got.len() != batch.len() {
        problems.push(format!(
            "{} records were recorded, {} read back",
            batch.len(),
            got.len()
        ));
    }
    if problems.is_empty() {
        return Ok(());
    }
    let count = problems.len();
    if problems.iter().any(|p| p.contains(".size: stored")) {
        problems.insert(
            0,
            "a body's size is stored apart from its bytes: redaction and decoding change \
             the bytes and keep the size, so a sink must not rebuild a body with \
             CapturedBody::complete(bytes) (UsageRecord::to_storage_bytes keeps both)"
                .to_owned(),
        );
    }
    let shown = problems.len().min(12);
    Err(format!(
        "records do not come back as they were recorded ({count} problems):\n  {}{}",
        problems[..shown].join("\n  "),
        if problems.len() > shown {
            "\n  ..."
        } else {
            ""
        }
    ))
}
