//! The capture policy through a real axum Router on 127.0.0.1 and a real
//! client: what a policy withholds (bodies, marked in the record), and what
//! stays (the record itself, sizes, status, durations, the summary's counts).

mod common;

use std::time::Duration;

use axum::extract::Path;
use axum::routing::{get, post};
use axum::Router;
use bytes::Bytes;
use common::*;
use http::{Request, StatusCode};
use serde_json::Value;
use tower_usage::{
    hash_token, Bodies, CapturePolicy, CaptureRequest, MemorySink, UsageLayer, UsageQuery,
    UsageRecord, UsageService, UsageSink,
};

const TOKEN: &str = "policy-token-0123456789";
const OTHER: &str = "policy-token-other-9876";

fn app(layer: UsageLayer<MemorySink>, sink: MemorySink) -> Router {
    Router::new()
        .route("/echo", post(|body: Bytes| async move { body }))
        .route(
            "/upload",
            post(|body: Bytes| async move { format!("got {}", body.len()) }),
        )
        .route("/health", get(|| async { "ok" }))
        .route(
            "/status/{code}",
            post(|Path(code): Path<u16>, body: Bytes| async move {
                (StatusCode::from_u16(code).unwrap(), body)
            }),
        )
        .route(
            "/sleep/{ms}",
            post(|Path(ms): Path<u64>, body: Bytes| async move {
                tokio::time::sleep(Duration::from_millis(ms)).await;
                body
            }),
        )
        .route("/empty", post(|| async { StatusCode::NO_CONTENT }))
        .nest_service("/v1/usage", UsageService::new(sink))
        .layer(layer)
}

async fn post_to(addr: std::net::SocketAddr, path: &str, token: &str, body: &str) -> StatusCode {
    let req = Request::post(format!("http://{addr}{path}"))
        .header("authorization", format!("Bearer {token}"))
        .header("content-type", "text/plain")
        .body(full(body.to_owned()))
        .unwrap();
    send(req).await.0
}

async fn records(sink: &MemorySink) -> Vec<UsageRecord> {
    let query = UsageQuery {
        limit: 1000,
        ..UsageQuery::default()
    };
    sink.query(&query).await.unwrap().records
}

fn by_path<'a>(records: &'a [UsageRecord], path: &str) -> Vec<&'a UsageRecord> {
    records.iter().filter(|r| r.path == path).collect()
}

#[tokio::test]
async fn a_policy_per_route_skips_withholds_one_side_and_keeps_the_rest() {
    let sink = MemorySink::new();
    let layer = UsageLayer::new(sink.clone()).capture_policy(|req: &CaptureRequest<'_>| match req
        .route()
    {
        Some("/health") => CapturePolicy::skip(),
        Some("/upload") => CapturePolicy::new().bodies(Bodies::ResponseOnly),
        Some("/echo") => CapturePolicy::new().bodies(Bodies::RequestOnly),
        Some("/empty") => CapturePolicy::new().bodies(Bodies::Neither),
        _ => CapturePolicy::new(),
    });
    let handle = layer.handle();
    let addr = serve(app(layer, sink.clone())).await;

    let upload = "u".repeat(5000);
    assert_eq!(
        post_to(addr, "/upload", TOKEN, &upload).await,
        StatusCode::OK
    );
    assert_eq!(post_to(addr, "/echo", TOKEN, "hello").await, StatusCode::OK);
    assert_eq!(
        post_to(addr, "/empty", TOKEN, "").await,
        StatusCode::NO_CONTENT
    );
    let req = Request::get(format!("http://{addr}/health"))
        .body(full(""))
        .unwrap();
    assert_eq!(send(req).await.0, StatusCode::OK);
    handle.flush().await;

    let all = records(&sink).await;
    assert_eq!(all.len(), 3, "/health is skipped, the rest recorded");
    assert!(by_path(&all, "/health").is_empty());
    assert_eq!(
        handle.stats().captured,
        3,
        "a skipped exchange is not counted"
    );

    // /upload: the request body withheld, its size exact; the response kept.
    let up = by_path(&all, "/upload")[0];
    assert!(up.request.body.bytes.is_empty());
    assert_eq!(up.request.body.size, 5000);
    assert_eq!(up.capture.request_body_policy.as_deref(), Some("off"));
    assert_eq!(&up.response.bytes[..], b"got 5000");
    assert_eq!(up.capture.response_body_policy, None);
    assert_eq!(up.consumer.as_deref(), Some(hash_token(TOKEN).as_str()));

    // /echo: the other way round.
    let echo = by_path(&all, "/echo")[0];
    assert_eq!(&echo.request.body.bytes[..], b"hello");
    assert_eq!(echo.capture.request_body_policy, None);
    assert!(echo.response.bytes.is_empty());
    assert_eq!(echo.response.size, 5);
    assert_eq!(echo.capture.response_body_policy.as_deref(), Some("off"));

    // /empty: nothing to withhold, so nothing is said: an empty body reads
    // as empty, never as withheld.
    let empty = by_path(&all, "/empty")[0];
    assert_eq!((empty.request.body.size, empty.response.size), (0, 0));
    assert!(empty.capture.is_empty(), "{:?}", empty.capture);

    // On the wire, the note sits in `capture`; and the storage form keeps it.
    let req = Request::get(format!("http://{addr}/v1/usage?path=/upload"))
        .header("authorization", format!("Bearer {TOKEN}"))
        .body(full(""))
        .unwrap();
    let (status, _, body) = send(req).await;
    assert_eq!(status, StatusCode::OK);
    let page: Value = serde_json::from_slice(&body).unwrap();
    let wire = &page["requests"][0];
    assert_eq!(wire["capture"]["requestBodyPolicy"], "off");
    assert_eq!(wire["request"]["bodySize"], 5000);
    assert_eq!(wire["response"], "got 5000");
    let back = UsageRecord::from_storage_bytes(&up.to_storage_bytes()).unwrap();
    assert_eq!(&back, up);
}

#[tokio::test]
async fn bodies_on_error_or_when_slow_are_kept_only_then() {
    let sink = MemorySink::new();
    let layer = UsageLayer::new(sink.clone()).capture_policy(|_: &CaptureRequest<'_>| {
        CapturePolicy::new()
            .bodies_on_error()
            .bodies_when_slower_than(Duration::from_millis(400))
    });
    let handle = layer.handle();
    let addr = serve(app(layer, sink.clone())).await;

    for (path, body, status) in [
        ("/status/200", "fine", StatusCode::OK),
        ("/status/503", "broken", StatusCode::SERVICE_UNAVAILABLE),
        ("/status/404", "lost", StatusCode::NOT_FOUND),
        ("/sleep/700", "slow", StatusCode::OK),
    ] {
        assert_eq!(post_to(addr, path, TOKEN, body).await, status, "{path}");
    }
    handle.flush().await;

    let all = records(&sink).await;
    assert_eq!(all.len(), 4);
    let ok = by_path(&all, "/status/200")[0];
    assert!(ok.request.body.bytes.is_empty() && ok.response.bytes.is_empty());
    assert_eq!((ok.request.body.size, ok.response.size), (4, 4));
    assert_eq!(
        ok.capture.request_body_policy.as_deref(),
        Some("error|slow")
    );
    assert_eq!(
        ok.capture.response_body_policy.as_deref(),
        Some("error|slow")
    );
    for (path, text) in [
        ("/status/503", "broken"),
        ("/status/404", "lost"),
        ("/sleep/700", "slow"),
    ] {
        let r = by_path(&all, path)[0];
        assert_eq!(&r.request.body.bytes[..], text.as_bytes(), "{path}");
        assert_eq!(&r.response.bytes[..], text.as_bytes(), "{path}");
        assert!(r.capture.is_empty(), "{path}: {:?}", r.capture);
    }
    assert!(by_path(&all, "/sleep/700")[0].duration_us >= 700_000);
}

#[tokio::test]
async fn sampled_bodies_never_drop_a_record_nor_a_byte_of_the_summary() {
    let sink = MemorySink::new();
    let layer = UsageLayer::new(sink.clone()).capture_policy(|req: &CaptureRequest<'_>| {
        // Per consumer: one keeps every body, the other 1 in 4.
        if req.consumer() == Some(hash_token(TOKEN).as_str()) {
            CapturePolicy::new()
        } else {
            CapturePolicy::new().sample_bodies(4)
        }
    });
    let handle = layer.handle();
    let addr = serve(app(layer, sink.clone())).await;

    const N: usize = 200;
    for i in 0..N {
        let body = format!("request number {i:04}");
        assert_eq!(post_to(addr, "/echo", OTHER, &body).await, StatusCode::OK);
    }
    for _ in 0..10 {
        assert_eq!(
            post_to(addr, "/echo", TOKEN, "all of me").await,
            StatusCode::OK
        );
    }
    handle.flush().await;
    let stats = handle.stats();
    assert_eq!(
        (stats.captured, stats.written),
        (N as u64 + 10, N as u64 + 10)
    );

    let all = records(&sink).await;
    let other = hash_token(OTHER);
    let sampled: Vec<_> = all
        .iter()
        .filter(|r| r.consumer.as_deref() == Some(other.as_str()))
        .collect();
    assert_eq!(sampled.len(), N, "every request has its record");
    let kept = sampled
        .iter()
        .filter(|r| !r.request.body.bytes.is_empty())
        .count();
    // 1 in 4 of 200: 50, and 5 standard deviations (31) either way.
    assert!((19..=81).contains(&kept), "{kept} bodies kept");
    for r in &sampled {
        assert_eq!(r.request.body.size, 19, "the size is always kept");
        if r.request.body.bytes.is_empty() {
            assert_eq!(r.capture.request_body_policy.as_deref(), Some("sample"));
            assert_eq!(r.capture.response_body_policy.as_deref(), Some("sample"));
            assert!(r.response.bytes.is_empty());
        } else {
            assert!(r.capture.is_empty());
            assert_eq!(
                r.response.bytes, r.request.body.bytes,
                "both sides drawn together"
            );
        }
    }
    let mine = hash_token(TOKEN);
    let whole = all
        .iter()
        .filter(|r| r.consumer.as_deref() == Some(mine.as_str()));
    for r in whole {
        assert_eq!(&r.request.body.bytes[..], b"all of me");
    }

    // The summary counts every request and every byte, sampled or not.
    let req = Request::get(format!("http://{addr}/v1/usage/summary?interval=day"))
        .header("authorization", format!("Bearer {OTHER}"))
        .body(full(""))
        .unwrap();
    let (status, _, body) = send(req).await;
    assert_eq!(status, StatusCode::OK, "{}", String::from_utf8_lossy(&body));
    let summary: Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(summary["total"]["requests"], N);
    assert_eq!(summary["total"]["requestBytes"], 19 * N);
    assert_eq!(summary["total"]["responseBytes"], 19 * N);
}
