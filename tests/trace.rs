//! Trace correlation through a real axum Router on 127.0.0.1: a request's
//! `traceparent` becomes the record's `traceId` and `spanId` (a bad one is
//! ignored, never an error), shown by `GET /usage`, filtered by `traceId=` on
//! the list, the summary and the exports, on the memory and SQLite sinks.

#![cfg(feature = "sqlite")]

mod common;

use axum::routing::get;
use axum::Router;
use common::*;
use http::Request;
use serde_json::Value;
use tower_usage::{IdentifyConsumer, MemorySink, SqliteSink, UsageLayer, UsageService, UsageSink};

const TRACE: &str = "4bf92f3577b34da6a3ce929d0e0e4736";
const SPAN: &str = "00f067aa0ba902b7";

async fn app(sink: impl UsageSink + Clone) -> (std::net::SocketAddr, tower_usage::UsageHandle) {
    let identify = IdentifyConsumer::bearer();
    let layer = UsageLayer::new(sink.clone()).identify_consumer(identify.clone());
    let handle = layer.handle();
    let app = Router::new()
        .route("/hello", get(|| async { "hi" }))
        .nest_service(
            "/usage",
            UsageService::new(sink).identify_consumer(identify),
        )
        .layer(layer);
    (serve(app).await, handle)
}

async fn get_with(addr: std::net::SocketAddr, path: &str, traceparent: &[&str]) -> (u16, Value) {
    let mut req =
        Request::get(format!("http://{addr}{path}")).header("authorization", "Bearer tok");
    for t in traceparent {
        req = req.header("traceparent", *t);
    }
    let (status, _, body) = send(req.body(full("")).unwrap()).await;
    (
        status.as_u16(),
        serde_json::from_slice(&body)
            .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(&body).into())),
    )
}

async fn trace_round_trip(sink: impl UsageSink + Clone) {
    let (addr, handle) = app(sink).await;
    let good = format!("00-{TRACE}-{SPAN}-01");
    // Kept: a valid header (and one with spaces around it).
    assert_eq!(get_with(addr, "/hello?n=1", &[&good]).await.0, 200);
    assert_eq!(
        get_with(addr, "/hello?n=2", &[&format!(" {good} ")])
            .await
            .0,
        200
    );
    // Ignored, never an error: upper case, all zeros, too short, version ff,
    // two headers, none.
    let ignored = [
        vec![good.to_uppercase()],
        vec![format!("00-{}-{SPAN}-01", "0".repeat(32))],
        vec![good[..54].to_owned()],
        vec![good.replacen("00-", "ff-", 1)],
        vec![good.clone(), good.clone()],
        vec![],
    ];
    for (i, headers) in ignored.iter().enumerate() {
        let headers: Vec<&str> = headers.iter().map(String::as_str).collect();
        let (status, _) = get_with(addr, &format!("/hello?bad={i}"), &headers).await;
        assert_eq!(status, 200);
    }
    handle.flush().await;

    let (status, page) = get_with(addr, "/usage?path=/hello", &[]).await;
    assert_eq!(status, 200, "{page}");
    let records = page["requests"].as_array().unwrap();
    assert_eq!(records.len(), 2 + ignored.len());
    for r in records {
        let query = &r["request"]["query"];
        if query.get("n").is_some() {
            assert_eq!(r["traceId"], TRACE, "{r}");
            assert_eq!(r["spanId"], SPAN, "{r}");
        } else {
            assert!(
                r.get("traceId").is_none() && r.get("spanId").is_none(),
                "{r}"
            );
        }
    }

    // The filter, in lower and upper case.
    for id in [TRACE.to_owned(), TRACE.to_uppercase()] {
        let (status, page) = get_with(addr, &format!("/usage?traceId={id}"), &[]).await;
        assert_eq!(status, 200, "{page}");
        let records = page["requests"].as_array().unwrap();
        assert_eq!(records.len(), 2, "{page}");
        assert!(records.iter().all(|r| r["traceId"] == TRACE));
    }
    let other = "4bf92f3577b34da6a3ce929d0e0e4737";
    let (_, page) = get_with(addr, &format!("/usage?traceId={other}"), &[]).await;
    assert_eq!(page["requests"].as_array().unwrap().len(), 0);

    // The summary counts the trace's records only.
    let (status, summary) = get_with(addr, &format!("/usage/summary?traceId={TRACE}"), &[]).await;
    assert_eq!(status, 200, "{summary}");
    assert_eq!(summary["total"]["requests"], 2, "{summary}");

    // The exports: NDJSON lines carry the fields, CSV has the columns.
    let (status, _, body) = send(
        Request::get(format!("http://{addr}/usage?traceId={TRACE}&format=ndjson"))
            .header("authorization", "Bearer tok")
            .body(full(""))
            .unwrap(),
    )
    .await;
    assert_eq!(status, 200);
    let lines: Vec<Value> = body
        .split(|&b| b == b'\n')
        .filter(|l| !l.is_empty())
        .map(|l| serde_json::from_slice(l).unwrap())
        .collect();
    assert_eq!(lines.len(), 2);
    assert!(lines
        .iter()
        .all(|l| l["traceId"] == TRACE && l["spanId"] == SPAN));
    let (status, _, body) = send(
        Request::get(format!("http://{addr}/usage?format=csv&path=/hello"))
            .header("authorization", "Bearer tok")
            .body(full(""))
            .unwrap(),
    )
    .await;
    assert_eq!(status, 200);
    let mut csv = csv::Reader::from_reader(&body[..]);
    let header = csv.headers().unwrap().clone();
    let at = |name: &str| header.iter().position(|h| h == name).unwrap();
    let rows: Vec<csv::StringRecord> = csv.records().map(Result::unwrap).collect();
    let traced = rows.iter().filter(|r| &r[at("traceId")] == TRACE).count();
    assert_eq!(traced, 2);
    assert_eq!(
        rows.iter().filter(|r| r[at("traceId")].is_empty()).count(),
        ignored.len()
    );
    assert!(rows
        .iter()
        .filter(|r| &r[at("traceId")] == TRACE)
        .all(|r| &r[at("spanId")] == SPAN));
}

#[tokio::test]
async fn a_trace_goes_from_the_request_to_the_memory_sinks_page_and_back() {
    trace_round_trip(MemorySink::new()).await;
}

#[tokio::test]
async fn a_trace_goes_from_the_request_to_a_sqlite_file_and_back() {
    let dir = tempfile::tempdir().unwrap();
    let sink = SqliteSink::open(dir.path().join("usage.db")).unwrap();
    trace_round_trip(sink.clone()).await;
    // And after reopening the file.
    drop(sink);
    let again = SqliteSink::open(dir.path().join("usage.db")).unwrap();
    let page = again
        .query(&tower_usage::UsageQuery {
            trace_id: Some(TRACE.into()),
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(page.records.len(), 2);
    assert_eq!(page.records[0].trace.as_ref().unwrap().span_id, SPAN);
}

#[tokio::test]
async fn a_bad_trace_id_filter_is_a_400_that_names_it() {
    let (addr, _) = app(MemorySink::new()).await;
    for bad in [
        "abc",
        "0".repeat(32).as_str(),
        &"g".repeat(32),
        &"a".repeat(33),
    ] {
        for endpoint in ["/usage", "/usage/summary"] {
            let (status, body) = get_with(addr, &format!("{endpoint}?traceId={bad}"), &[]).await;
            assert_eq!(status, 400, "{endpoint} {bad}: {body}");
            assert!(body.to_string().contains("traceId"), "{body}");
        }
    }
}
