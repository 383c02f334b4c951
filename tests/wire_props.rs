//! The wire (serde) form reads back every record the layer can produce, as a
//! property over generated records (non-ASCII and obs-text header values,
//! repeated headers, every kind of body, gRPC, every outcome): serializing,
//! deserializing and serializing again gives the same JSON (the wire form is
//! lossy, so "the same" is up to rendering, as the `UsageRecord` docs say),
//! and every line of an NDJSON export, served by the real `UsageService`
//! on 127.0.0.1, parses into a record that renders as that line.
//!
//! The case counts are fixed so that CI time is bounded.

mod common;
#[path = "support/records.rs"]
mod records;

use axum::Router;
use http::Request;
use proptest::prelude::*;
use serde_json::Value;
use tower_usage::{MemorySink, RequestInfo, UsageLayer, UsageRecord, UsageService, UsageSink};

fn round_trips(record: &UsageRecord) -> Result<(), TestCaseError> {
    let text = serde_json::to_string(record).expect("a record serializes");
    let back: UsageRecord = serde_json::from_str(&text)
        .map_err(|e| TestCaseError::fail(format!("{e}: the JSON was {text}")))?;
    let first: Value = serde_json::from_str(&text).unwrap();
    let again = serde_json::to_value(&back).unwrap();
    prop_assert_eq!(&again, &first, "read back: {:?}", back);
    // Once read back, a record is a fixed point.
    let third: UsageRecord = serde_json::from_value(again.clone()).unwrap();
    prop_assert_eq!(serde_json::to_value(&third).unwrap(), again);
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn every_record_reads_back_from_its_wire_form(record in records::usage_record()) {
        round_trips(&record)?;
    }
}

#[test]
fn a_non_ascii_header_value_reads_back() {
    let mut record = UsageRecord {
        id: "01J0000000000000000000000".into(),
        method: "GET".into(),
        path: "/".into(),
        status: 200,
        ..UsageRecord::default()
    };
    record.request.headers.insert(
        "x-name",
        http::HeaderValue::from_bytes("café".as_bytes()).unwrap(),
    );
    record.response_headers.insert(
        "content-disposition",
        http::HeaderValue::from_bytes(b"attachment; filename=\"r\xe9sum\xe9.pdf\"").unwrap(),
    );
    let json = serde_json::to_value(&record).unwrap();
    assert_eq!(json["request"]["headers"]["x-name"], "café");
    let back: UsageRecord = serde_json::from_value(json).unwrap();
    assert_eq!(back.request.headers["x-name"].as_bytes(), "café".as_bytes());
    // Obs-text that is not UTF-8 renders (and so reads back) as U+FFFD.
    assert_eq!(
        back.response_headers["content-disposition"].as_bytes(),
        "attachment; filename=\"r\u{fffd}sum\u{fffd}.pdf\"".as_bytes()
    );
}

/// Every line of an NDJSON export of `records`, as the real service serves it.
async fn export_lines(records: &[UsageRecord]) -> Vec<Value> {
    let sink = MemorySink::new();
    sink.record(records).await.unwrap();
    let service = UsageService::new(sink).admin(|_: RequestInfo<'_>| true);
    let addr = common::serve(Router::new().nest_service("/v1/usage", service)).await;
    let req = Request::get(format!("http://{addr}/v1/usage?format=ndjson"))
        .body(common::full(""))
        .unwrap();
    let (status, _, body) = common::send(req).await;
    assert_eq!(status, 200, "{}", String::from_utf8_lossy(&body));
    body.split(|b| *b == b'\n')
        .filter(|line| !line.is_empty())
        .map(|line| serde_json::from_slice(line).expect("each line is JSON"))
        .collect()
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(24))]

    #[test]
    fn every_line_of_an_ndjson_export_parses_into_a_record(
        records in prop::collection::vec(records::usage_record(), 1..12)
    ) {
        let lines = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap()
            .block_on(export_lines(&records));
        prop_assert_eq!(lines.len(), records.len());
        for line in lines {
            let back: UsageRecord = serde_json::from_value(line.clone())
                .map_err(|e| TestCaseError::fail(format!("{e}: the line was {line}")))?;
            prop_assert_eq!(serde_json::to_value(&back).unwrap(), line);
        }
    }
}

/// Through the real layer: non-ASCII and obs-text header values, repeated
/// headers and a gRPC-looking body, captured from real requests on
/// 127.0.0.1, exported as NDJSON, parse back into records line by line.
#[tokio::test]
async fn what_the_layer_captured_parses_back_from_an_export() {
    use axum::routing::post;

    let sink = MemorySink::new();
    let layer =
        UsageLayer::new(sink.clone()).keep_response_headers([http::header::CONTENT_DISPOSITION]);
    let handle = layer.handle();
    let app = Router::new()
        .route(
            "/echo",
            post(|body: bytes::Bytes| async move {
                (
                    [(
                        http::header::CONTENT_DISPOSITION,
                        http::HeaderValue::from_bytes(b"attachment; filename=\"r\xe9sum\xe9.pdf\"")
                            .unwrap(),
                    )],
                    body,
                )
            }),
        )
        .layer(layer)
        .nest_service(
            "/v1/usage",
            UsageService::new(sink).admin(|_: RequestInfo<'_>| true),
        );
    let addr = common::serve(app).await;
    let bodies: [&[u8]; 4] = [
        b"{\"encoding\":\"base64\",\"data\":\"!!\"}",
        b"\xff\x00\xc3",
        b"caf\xc3\xa9 au lait",
        b"",
    ];
    for body in bodies {
        let req = Request::post(format!("http://{addr}/echo?q=caf%C3%A9&q=%FF"))
            .header(
                "x-name",
                http::HeaderValue::from_bytes("café".as_bytes()).unwrap(),
            )
            .header(
                "x-legacy",
                http::HeaderValue::from_bytes(b"Jos\xe9").unwrap(),
            )
            .header("accept", "text/html")
            .header("accept", "application/json")
            .body(common::full(body.to_vec()))
            .unwrap();
        assert_eq!(common::send(req).await.0, 200);
    }
    handle.flush().await;
    let req = Request::get(format!("http://{addr}/v1/usage?format=ndjson"))
        .body(common::full(""))
        .unwrap();
    let (status, _, body) = common::send(req).await;
    assert_eq!(status, 200);
    let lines: Vec<Value> = body
        .split(|b| *b == b'\n')
        .filter(|line| !line.is_empty())
        .map(|line| serde_json::from_slice(line).unwrap())
        .collect();
    assert_eq!(lines.len(), bodies.len());
    for line in lines {
        assert_eq!(line["request"]["headers"]["x-name"], "café", "{line}");
        let back: UsageRecord = serde_json::from_value(line.clone())
            .unwrap_or_else(|e| panic!("{e}: the line was {line}"));
        assert_eq!(serde_json::to_value(&back).unwrap(), line);
    }
}
