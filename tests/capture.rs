//! The capture layer through a real axum Router on 127.0.0.1 and a real client.

mod common;

use std::convert::Infallible;
use std::time::Duration;

use axum::body::Body;
use axum::extract::Path;
use axum::routing::{get, post};
use axum::{Json, Router};
use bytes::Bytes;
use common::*;
use http::{Method, Request, StatusCode};
use http_body_util::BodyExt;
use serde_json::{json, Value};
use tower_usage::{hash_token, Outcome, UsageLayer};

const TOKEN: &str = "IncYP3edd3blm2ypLGFFOYwQsC5vff3n";

fn airdrop_app(layer: UsageLayer<CollectSink>) -> Router {
    Router::new()
        .route(
            "/rest/v1/airdrop/{batchId}",
            get(|Path(id): Path<String>| async move { Json(json!({"id": id, "count": 2})) }),
        )
        .route(
            "/rest/v1/airdrop/",
            post(|Json(v): Json<Value>| async move {
                Json(json!({"received": v["airdrops"].as_array().map(|a| a.len())}))
            }),
        )
        .route("/empty", get(|| async { StatusCode::NO_CONTENT }))
        .route("/plain", get(|| async { "hello" }))
        .layer(layer)
}

#[tokio::test]
async fn records_a_json_request_with_route_params_and_redaction() {
    let sink = CollectSink::default();
    let layer = UsageLayer::new(sink.clone());
    let handle = layer.handle();
    let addr = serve(airdrop_app(layer)).await;

    let body = json!({
        "airdrops": [{"address": "AX", "collectionId": "9f"}],
        "sequential": false,
        "password": "hunter2",
        "nested": {"refresh_token": "r-123"}
    });
    let req = Request::post(format!(
        "http://{addr}/rest/v1/airdrop/?a=1&b=2&b=3&access_token=qs-secret&sp=%20x"
    ))
    .header("authorization", format!("Bearer {TOKEN}"))
    .header("content-type", "application/json")
    .header("x-api-key", "k-secret")
    .header("cookie", "session=cookie-secret")
    .body(full(serde_json::to_vec(&body).unwrap()))
    .unwrap();
    let (status, _, resp) = send(req).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(
        serde_json::from_slice::<Value>(&resp).unwrap(),
        json!({"received": 1})
    );

    let req = Request::get(format!("http://{addr}/rest/v1/airdrop/I4WT%20x"))
        .header("authorization", format!("Bearer {TOKEN}"))
        .body(full(""))
        .unwrap();
    let (status, _, _) = send(req).await;
    assert_eq!(status, StatusCode::OK);

    handle.flush().await;
    let records = sink.all();
    assert_eq!(records.len(), 2, "one record per request");
    let post = records.iter().find(|r| r.method == "POST").unwrap();
    let get = records.iter().find(|r| r.method == "GET").unwrap();
    let consumer = tower_usage::hash_token(TOKEN);
    assert_eq!(post.consumer.as_deref(), Some(consumer.as_str()));
    assert_eq!(post.path, "/rest/v1/airdrop/");
    assert_eq!(post.route.as_deref(), Some("/rest/v1/airdrop/"));
    assert_eq!(post.status, 200);
    assert_eq!(post.outcome, Outcome::Complete);
    assert!(post.duration_us > 0);

    let wire = serde_json::to_value(post).unwrap();
    assert_eq!(wire["request"]["body"]["password"], "[REDACTED]");
    assert_eq!(
        wire["request"]["body"]["nested"]["refresh_token"],
        "[REDACTED]"
    );
    assert_eq!(wire["request"]["body"]["airdrops"][0]["address"], "AX");
    assert_eq!(wire["request"]["query"]["b"], json!(["2", "3"]));
    assert_eq!(wire["request"]["query"]["sp"], " x");
    assert_eq!(wire["request"]["query"]["access_token"], "[REDACTED]");
    assert_eq!(wire["request"]["headers"]["authorization"], "[REDACTED]");
    assert_eq!(wire["request"]["headers"]["x-api-key"], "[REDACTED]");
    assert_eq!(wire["request"]["headers"]["cookie"], "[REDACTED]");
    assert_eq!(
        wire["request"]["headers"]["content-type"],
        "application/json"
    );
    assert_eq!(wire["response"], json!({"received": 1}));
    assert_eq!(wire["responseHeaders"]["content-type"], "application/json");

    let text = serde_json::to_string(&records).unwrap();
    for secret in [
        TOKEN,
        "hunter2",
        "r-123",
        "qs-secret",
        "k-secret",
        "cookie-secret",
    ] {
        assert!(!text.contains(secret), "{secret} leaked into a record");
    }

    assert_eq!(get.route.as_deref(), Some("/rest/v1/airdrop/{batchId}"));
    assert_eq!(
        get.request.params,
        vec![("batchId".to_owned(), "I4WT x".to_owned())]
    );
    let wire = serde_json::to_value(get).unwrap();
    assert_eq!(wire["request"]["body"], json!({}));
    assert_eq!(wire["response"], json!({"id": "I4WT x", "count": 2}));
}

#[tokio::test]
async fn bodiless_responses_and_head_yield_one_record_each() {
    let sink = CollectSink::default();
    let layer = UsageLayer::new(sink.clone());
    let handle = layer.handle();
    let app = Router::new()
        .route("/empty", get(|| async { StatusCode::NO_CONTENT }))
        .route("/cached", get(|| async { StatusCode::NOT_MODIFIED }))
        .route("/plain", get(|| async { "hello" }))
        .layer(layer);
    let addr = serve(app).await;
    for (method, path) in [
        (Method::GET, "/empty"),
        (Method::GET, "/cached"),
        (Method::HEAD, "/plain"),
        (Method::GET, "/plain"),
        (Method::GET, "/nope"),
    ] {
        let req = Request::builder()
            .method(method)
            .uri(format!("http://{addr}{path}"))
            .body(full(""))
            .unwrap();
        send(req).await;
    }
    handle.flush().await;
    let records = sink.all();
    assert_eq!(records.len(), 5, "{records:#?}");
    assert!(
        records.iter().all(|r| r.outcome == Outcome::Complete),
        "{records:#?}"
    );
    let by = |m: &str, p: &str| {
        records
            .iter()
            .find(|r| r.method == m && r.path == p)
            .unwrap_or_else(|| panic!("no record for {m} {p}"))
    };
    assert_eq!(by("GET", "/empty").status, 204);
    assert_eq!(by("GET", "/cached").status, 304);
    assert_eq!(by("HEAD", "/plain").status, 200);
    assert_eq!(&by("GET", "/plain").response.bytes[..], b"hello");
    let nope = by("GET", "/nope");
    assert_eq!(nope.status, 404);
    assert_eq!(nope.route, None);
    assert!(records.iter().all(|r| r.consumer.is_none()));
}

#[tokio::test]
async fn streaming_response_arrives_chunk_by_chunk() {
    let sink = CollectSink::default();
    let layer = UsageLayer::new(sink.clone());
    let handle = layer.handle();
    let (release_tx, release_rx) = tokio::sync::oneshot::channel::<()>();
    let release_rx = std::sync::Arc::new(std::sync::Mutex::new(Some(release_rx)));
    let app = Router::new()
        .route(
            "/stream",
            get(move || {
                let rx = release_rx.lock().unwrap().take().expect("one request");
                async move {
                    let stream = async_stream(rx);
                    Body::from_stream(stream)
                }
            }),
        )
        .layer(layer);
    let addr = serve(app).await;

    let res = client()
        .request(
            Request::get(format!("http://{addr}/stream"))
                .body(full(""))
                .unwrap(),
        )
        .await
        .unwrap();
    let mut body = res.into_body();
    // The first chunk arrives while the handler still holds back the second.
    let first = tokio::time::timeout(Duration::from_secs(5), body.frame())
        .await
        .expect("first chunk held back by the layer")
        .unwrap()
        .unwrap();
    assert_eq!(first.into_data().unwrap(), Bytes::from_static(b"chunk-1;"));
    assert!(sink.all().is_empty(), "recorded before the stream ended");
    release_tx.send(()).unwrap();
    let rest = body.collect().await.unwrap().to_bytes();
    assert_eq!(&rest[..], b"chunk-2;");
    handle.flush().await;
    let records = sink.all();
    assert_eq!(records.len(), 1);
    assert_eq!(&records[0].response.bytes[..], b"chunk-1;chunk-2;");
    assert_eq!(records[0].outcome, Outcome::Complete);
}

fn async_stream(
    release: tokio::sync::oneshot::Receiver<()>,
) -> impl futures_util::Stream<Item = Result<Bytes, Infallible>> {
    futures_util::stream::unfold((0u8, Some(release)), |(n, mut rx)| async move {
        match n {
            0 => Some((Ok(Bytes::from_static(b"chunk-1;")), (1, rx))),
            1 => {
                if let Some(rx) = rx.take() {
                    let _ = rx.await;
                }
                Some((Ok(Bytes::from_static(b"chunk-2;")), (2, None)))
            }
            _ => None,
        }
    })
}

#[tokio::test]
async fn five_mib_upload_arrives_intact_and_record_is_truncated() {
    let sink = CollectSink::default();
    let layer = UsageLayer::new(sink.clone());
    let handle = layer.handle();
    let app = Router::new()
        .route(
            "/upload",
            post(|body: Bytes| async move {
                let digest = sha2::Sha256::digest(&body);
                format!("{}:{:x}", body.len(), digest)
            }),
        )
        .layer(axum::extract::DefaultBodyLimit::max(16 * 1024 * 1024))
        .layer(layer);
    let addr = serve(app).await;
    let payload: Vec<u8> = (0..5 * 1024 * 1024u32).map(|i| (i % 251) as u8).collect();
    let expected = format!("{}:{:x}", payload.len(), sha2::Sha256::digest(&payload));
    // Sent in 64 KiB frames so the layer sees many chunks.
    let frames: Vec<Result<http_body::Frame<Bytes>, Infallible>> = payload
        .chunks(64 * 1024)
        .map(|c| Ok(http_body::Frame::data(Bytes::copy_from_slice(c))))
        .collect();
    let body = http_body_util::StreamBody::new(futures_util::stream::iter(frames));
    let req = Request::post(format!("http://{addr}/upload"))
        .body(body.map_err(|e: Infallible| match e {}).boxed())
        .unwrap();
    let (status, _, resp) = send(req).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(
        std::str::from_utf8(&resp).unwrap(),
        expected,
        "upload corrupted"
    );
    handle.flush().await;
    let records = sink.all();
    assert_eq!(records.len(), 1);
    let body = &records[0].request.body;
    assert!(body.truncated);
    assert_eq!(body.size, payload.len() as u64);
    assert_eq!(&body.bytes[..], &payload[..64 * 1024]);
    let wire = serde_json::to_value(&records[0]).unwrap();
    assert_eq!(wire["request"]["bodyTruncated"], true);
    assert_eq!(wire["request"]["bodySize"], payload.len());
}

use sha2::Digest as _;

#[tokio::test]
async fn client_disconnecting_mid_stream_yields_one_client_gone_record() {
    let sink = CollectSink::default();
    let layer = UsageLayer::new(sink.clone());
    let handle = layer.handle();
    let app = Router::new()
        .route(
            "/forever",
            get(|| async {
                let stream = futures_util::stream::unfold(0u64, |n| async move {
                    tokio::time::sleep(Duration::from_millis(5)).await;
                    Some((
                        Ok::<_, Infallible>(Bytes::from(format!("tick {n}\n"))),
                        n + 1,
                    ))
                });
                Body::from_stream(stream)
            }),
        )
        .layer(layer);
    let addr = serve(app).await;
    let res = client()
        .request(
            Request::get(format!("http://{addr}/forever"))
                .body(full(""))
                .unwrap(),
        )
        .await
        .unwrap();
    let mut body = res.into_body();
    let _ = body.frame().await.unwrap().unwrap();
    let _ = body.frame().await.unwrap().unwrap();
    drop(body); // the client goes away mid-stream
    eventually("a record for the abandoned stream", || {
        !sink.all().is_empty()
    })
    .await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    handle.flush().await;
    let records = sink.all();
    assert_eq!(records.len(), 1, "exactly one record");
    assert_eq!(records[0].outcome, Outcome::ClientGone);
    assert_eq!(records[0].status, 200);
    assert!(records[0].response.bytes.starts_with(b"tick 0\n"));
}

#[tokio::test]
async fn timeout_above_the_layer_records_cancelled() {
    let sink = CollectSink::default();
    let layer = UsageLayer::new(sink.clone());
    let handle = layer.handle();
    let app = Router::new()
        .route(
            "/slow",
            get(|| async {
                tokio::time::sleep(Duration::from_secs(30)).await;
                "late"
            }),
        )
        .layer(layer)
        .layer(tower_http::timeout::TimeoutLayer::with_status_code(
            StatusCode::REQUEST_TIMEOUT,
            Duration::from_millis(100),
        ));
    let addr = serve(app).await;
    let (status, _, _) = send(
        Request::get(format!("http://{addr}/slow"))
            .body(full(""))
            .unwrap(),
    )
    .await;
    assert_eq!(status, StatusCode::REQUEST_TIMEOUT);
    handle.flush().await;
    let records = sink.all();
    assert_eq!(records.len(), 1);
    assert_eq!(records[0].outcome, Outcome::Cancelled);
    assert_eq!(records[0].status, 499);
}

#[tokio::test]
async fn failing_sink_neither_fails_requests_nor_hangs_flush() {
    let sink = FailingSink::default();
    let layer = UsageLayer::new(sink.clone())
        .max_retries(1)
        .max_delay(Duration::from_millis(10));
    let handle = layer.handle();
    let app = Router::new()
        .route("/ok", get(|| async { "ok" }))
        .layer(layer);
    let addr = serve(app).await;
    for _ in 0..10 {
        let (status, _, body) = send(
            Request::get(format!("http://{addr}/ok"))
                .body(full(""))
                .unwrap(),
        )
        .await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(&body[..], b"ok");
    }
    tokio::time::timeout(Duration::from_secs(10), handle.flush())
        .await
        .expect("flush returned although the sink keeps failing");
    let stats = handle.stats();
    assert_eq!(stats.captured, 10);
    assert_eq!(stats.failed, 10, "{stats:?}");
    assert_eq!(stats.written, 0);
    assert!(stats.retried >= 1, "{stats:?}");
    assert!(sink.calls.load(std::sync::atomic::Ordering::SeqCst) >= 2);
}

#[tokio::test]
async fn stalled_sink_does_not_slow_requests_and_drops_are_counted() {
    let layer = UsageLayer::new(StalledSink)
        .queue_capacity(4)
        .batch_size(2)
        .max_delay(Duration::from_millis(5));
    let handle = layer.handle();
    let app = Router::new()
        .route("/ok", get(|| async { "ok" }))
        .layer(layer);
    let addr = serve(app).await;
    let all = async {
        for _ in 0..50 {
            let (status, _, _) = send(
                Request::get(format!("http://{addr}/ok"))
                    .body(full(""))
                    .unwrap(),
            )
            .await;
            assert_eq!(status, StatusCode::OK);
        }
    };
    tokio::time::timeout(Duration::from_secs(10), all)
        .await
        .expect("requests stalled behind the sink");
    let stats = handle.stats();
    assert_eq!(stats.captured, 50);
    assert!(
        stats.dropped >= 40,
        "queue of 4 should have dropped most: {stats:?}"
    );
    assert!(stats.queued <= 4, "{stats:?}");
}

#[tokio::test]
async fn event_streams_are_recorded_without_a_body_copy() {
    let sink = CollectSink::default();
    let layer = UsageLayer::new(sink.clone());
    let handle = layer.handle();
    let app = Router::new()
        .route(
            "/events",
            get(|| async {
                (
                    [(http::header::CONTENT_TYPE, "text/event-stream")],
                    "data: one\n\ndata: two\n\n",
                )
            }),
        )
        .layer(layer);
    let addr = serve(app).await;
    let (_, _, body) = send(
        Request::get(format!("http://{addr}/events"))
            .body(full(""))
            .unwrap(),
    )
    .await;
    assert_eq!(&body[..], b"data: one\n\ndata: two\n\n");
    handle.flush().await;
    let r = &sink.all()[0];
    assert!(r.response.bytes.is_empty());
    assert_eq!(r.response.size, 22);
    assert!(r.response.truncated);
    assert_eq!(
        r.response_headers.get("content-type").unwrap(),
        "text/event-stream"
    );
}

#[tokio::test]
async fn concurrent_requests_yield_exactly_one_record_each() {
    let sink = CollectSink::default();
    let layer = UsageLayer::new(sink.clone());
    let handle = layer.handle();
    let addr = serve(airdrop_app(layer)).await;
    let mut tasks = Vec::new();
    for i in 0..200 {
        tasks.push(tokio::spawn(async move {
            let req = Request::get(format!("http://{addr}/rest/v1/airdrop/id-{i}"))
                .header("authorization", format!("Bearer token-{}", i % 7))
                .body(full(""))
                .unwrap();
            send(req).await.0
        }));
    }
    for t in tasks {
        assert_eq!(t.await.unwrap(), StatusCode::OK);
    }
    handle.flush().await;
    let records = sink.all();
    assert_eq!(records.len(), 200);
    let mut ids: Vec<_> = records.iter().map(|r| r.id.clone()).collect();
    ids.sort();
    ids.dedup();
    assert_eq!(ids.len(), 200, "ids are unique");
    let mut paths: Vec<_> = records.iter().map(|r| r.path.clone()).collect();
    paths.sort();
    paths.dedup();
    assert_eq!(paths.len(), 200, "every request recorded once");
    assert_eq!(handle.stats().written, 200);
}

#[test]
fn layer_built_outside_a_runtime_starts_its_writer_lazily() {
    let sink = CollectSink::default();
    let layer = UsageLayer::new(sink.clone());
    let handle = layer.handle();
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let addr = serve(airdrop_app(layer)).await;
        send(
            Request::get(format!("http://{addr}/plain"))
                .body(full(""))
                .unwrap(),
        )
        .await;
        handle.flush().await;
    });
    assert_eq!(sink.all().len(), 1);
}

/// Panics in `record`, as a buggy sink might.
struct PanickingSink;

#[async_trait::async_trait]
impl tower_usage::UsageSink for PanickingSink {
    async fn record(
        &self,
        _batch: &[tower_usage::UsageRecord],
    ) -> Result<(), tower_usage::SinkError> {
        panic!("a buggy sink");
    }

    async fn query(
        &self,
        _query: &tower_usage::UsageQuery,
    ) -> Result<tower_usage::UsagePage, tower_usage::SinkError> {
        Ok(tower_usage::UsagePage::default())
    }
}

#[tokio::test]
async fn a_panicking_sink_stops_the_writer_without_hanging_flush_or_requests() {
    let layer = UsageLayer::new(PanickingSink).max_delay(Duration::from_millis(5));
    let handle = layer.handle();
    let app = Router::new()
        .route("/ok", get(|| async { "ok" }))
        .layer(layer);
    let addr = serve(app).await;
    let get_ok = || async {
        let req = Request::get(format!("http://{addr}/ok"))
            .body(full(""))
            .unwrap();
        assert_eq!(send(req).await.0, StatusCode::OK);
    };
    get_ok().await;
    tokio::time::timeout(Duration::from_secs(5), handle.flush())
        .await
        .expect("flush returns once the writer is gone");
    get_ok().await;
    tokio::time::timeout(Duration::from_secs(5), handle.clone().shutdown())
        .await
        .expect("shutdown returns too");
    let stats = handle.stats();
    assert_eq!((stats.captured, stats.written), (2, 0), "{stats:?}");
}

#[tokio::test]
async fn a_layer_on_a_nested_router_records_the_path_the_client_sent() {
    let sink = tower_usage::MemorySink::new();
    let layer = UsageLayer::new(sink.clone());
    let handle = layer.handle();
    let inner = Router::new()
        .route(
            "/users/{id}",
            get(|Path(id): Path<String>| async move { id }),
        )
        .layer(layer);
    let addr = serve(Router::new().nest("/api", inner)).await;
    let (status, _, body) = send(
        Request::get(format!("http://{addr}/api/users/42?x=1"))
            .header("authorization", format!("Bearer {TOKEN}"))
            .body(full(""))
            .unwrap(),
    )
    .await;
    assert_eq!((status, &body[..]), (StatusCode::OK, &b"42"[..]));
    handle.flush().await;

    use tower_usage::sink::PathFilter;
    use tower_usage::{UsageQuery, UsageSink};
    let query = UsageQuery {
        path: Some(PathFilter::parse("/api/*")),
        ..UsageQuery::default()
    };
    let page = sink.query(&query).await.unwrap();
    assert_eq!(page.records.len(), 1, "path=/api/* finds it");
    let record = &page.records[0];
    assert_eq!(record.path, "/api/users/42");
    assert_eq!(record.route.as_deref(), Some("/api/users/{id}"));
    assert_eq!(record.request.params, [("id".to_owned(), "42".to_owned())]);
    assert_eq!(record.request.query, "x=1");
}

#[tokio::test]
async fn the_content_length_the_server_sends_is_recorded() {
    let sink = CollectSink::default();
    let layer = UsageLayer::new(sink.clone());
    let handle = layer.handle();
    let addr = serve(airdrop_app(layer)).await;
    let (_, headers, body) = send(
        Request::get(format!("http://{addr}/rest/v1/airdrop/abc"))
            .body(full(""))
            .unwrap(),
    )
    .await;
    let sent = headers["content-length"].to_str().unwrap().to_owned();
    assert_eq!(sent, body.len().to_string());
    handle.flush().await;
    let record = sink.all().pop().unwrap();
    assert_eq!(record.response_headers["content-length"], sent.as_str());
    assert_eq!(record.response.size, body.len() as u64);
    // A 204 has none, as the server sends none.
    let (_, headers, _) = send(
        Request::get(format!("http://{addr}/empty"))
            .body(full(""))
            .unwrap(),
    )
    .await;
    assert!(headers.get("content-length").is_none());
    handle.flush().await;
    let record = sink.all().pop().unwrap();
    assert_eq!(record.status, 204);
    assert!(record.response_headers.get("content-length").is_none());
}

#[tokio::test]
async fn huge_request_headers_are_cut_to_the_budget_and_the_cut_is_recorded() {
    let sink = CollectSink::default();
    let layer = UsageLayer::new(sink.clone());
    let handle = layer.handle();
    let addr = serve(airdrop_app(layer)).await;
    let big = "a".repeat(200_000);
    for _ in 0..3 {
        let (status, _, _) = send(
            Request::get(format!("http://{addr}/plain"))
                .header("x-aaa-huge", big.as_str())
                .header("authorization", format!("Bearer {TOKEN}"))
                .header("x-zzz-after", "v")
                .body(full(""))
                .unwrap(),
        )
        .await;
        assert_eq!(status, StatusCode::OK);
    }
    handle.flush().await;
    let records = sink.all();
    assert_eq!(records.len(), 3);
    for record in &records {
        let kept: usize = record
            .request
            .headers
            .iter()
            .map(|(n, v)| n.as_str().len() + v.len())
            .sum();
        assert!(kept <= 8 * 1024, "{kept} bytes of headers kept");
        assert!(
            record.capture.request_headers_cut > 190_000,
            "{:?}",
            record.capture
        );
        // The consumer comes from the whole request, cut or not.
        assert_eq!(record.consumer.as_deref(), Some(hash_token(TOKEN).as_str()));
        let wire = serde_json::to_value(record).unwrap();
        assert!(wire["capture"]["requestHeadersCut"].as_u64().unwrap() > 190_000);
    }
}

#[tokio::test]
async fn a_body_the_handler_never_read_is_recorded_with_its_announced_size() {
    let sink = CollectSink::default();
    let layer = UsageLayer::new(sink.clone());
    let handle = layer.handle();
    let app = Router::new()
        .route(
            "/reject",
            post(|| async { StatusCode::UNSUPPORTED_MEDIA_TYPE }),
        )
        .route(
            "/read",
            post(|body: Bytes| async move { body.len().to_string() }),
        )
        .layer(layer);
    let addr = serve(app).await;
    for path in ["/reject", "/read"] {
        send(
            Request::post(format!("http://{addr}{path}"))
                .body(full("{\"never\": \"read\", \"x\": 1}"))
                .unwrap(),
        )
        .await;
    }
    handle.flush().await;
    let records = sink.all();
    let rejected = records.iter().find(|r| r.path == "/reject").unwrap();
    assert_eq!(rejected.status, 415);
    assert_eq!(rejected.request.body.size, 25, "the announced length");
    assert!(rejected.capture.request_body_unread);
    assert!(rejected.request.body.truncated);
    let wire = serde_json::to_value(rejected).unwrap();
    assert_eq!(wire["capture"]["requestBodyUnread"], true);
    assert_eq!(wire["request"]["bodySize"], 25);

    let read = records.iter().find(|r| r.path == "/read").unwrap();
    assert!(!read.capture.request_body_unread);
    assert!(read.capture.is_empty());
    assert_eq!(read.request.body.size, 25);
    assert!(serde_json::to_value(read).unwrap().get("capture").is_none());
}
