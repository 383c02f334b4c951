//! `completeUntil` (issue 24, row f) never passes the arrival of an exchange
//! still in flight: a long poll, an event stream, a slow upload. Through a
//! real axum Router on 127.0.0.1: the mark is held while the exchange runs,
//! the record comes out no earlier than the mark read meanwhile, and nothing
//! is left behind once it ends (a client gone mid-poll included).

mod common;

use std::sync::Arc;
use std::time::Duration;

use axum::routing::{get, post};
use axum::Router;
use bytes::Bytes;
use common::*;
use http::{Request, StatusCode};
use http_body_util::BodyExt;
use serde_json::Value;
use tokio::sync::Notify;
use tower_usage::{MemorySink, UsageLayer, UsageQuery, UsageRecord, UsageService, UsageSink};

/// `t` to the millisecond, rounded down, as records' `created_at` and the
/// summary's `completeUntil` are: a record created in the millisecond
/// `completeUntil` names is not before it.
fn ms(t: time::OffsetDateTime) -> time::OffsetDateTime {
    t.replace_nanosecond(t.nanosecond() / 1_000_000 * 1_000_000)
        .unwrap()
}

/// Every record in `sink`, oldest first.
async fn all(sink: &MemorySink) -> Vec<UsageRecord> {
    sink.query(&UsageQuery::default()).await.unwrap().records
}

fn parse_time(s: &Value) -> time::OffsetDateTime {
    time::OffsetDateTime::parse(
        s.as_str().unwrap(),
        &time::format_description::well_known::Rfc3339,
    )
    .unwrap()
}

/// The summary's `completeUntil`, as a consumer reads it.
async fn summary_complete_until(addr: std::net::SocketAddr) -> time::OffsetDateTime {
    let req = Request::get(format!("http://{addr}/v1/usage/summary"))
        .header("authorization", "Bearer reader")
        .body(full(""))
        .unwrap();
    let (status, _, body) = send(req).await;
    assert_eq!(status, StatusCode::OK);
    let summary: Value = serde_json::from_slice(&body).unwrap();
    parse_time(&summary["completeUntil"])
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn complete_until_never_passes_an_exchange_in_flight() {
    let sink = MemorySink::new();
    let layer = UsageLayer::new(sink.clone()).max_delay(Duration::from_millis(5));
    let handle = layer.handle();
    let (entered, release) = (Arc::new(Notify::new()), Arc::new(Notify::new()));
    let (e, r) = (entered.clone(), release.clone());
    let app = Router::new()
        .route(
            "/poll",
            get(move || {
                let (e, r) = (e.clone(), r.clone());
                async move {
                    e.notify_one();
                    r.notified().await;
                    "news"
                }
            }),
        )
        .route("/quick", get(|| async { "ok" }))
        .nest_service(
            "/v1/usage",
            UsageService::new(sink.clone()).recorder(handle.clone()),
        )
        .layer(layer);
    let addr = serve(app).await;
    assert_eq!(handle.complete_until(), None);

    // A long poll arrives and waits.
    let poll = tokio::spawn(send(
        Request::get(format!("http://{addr}/poll"))
            .body(full(""))
            .unwrap(),
    ));
    entered.notified().await;
    let held = handle.complete_until().expect("a request is in flight");
    // Later requests come and go, and are written; the poll holds the mark.
    tokio::time::sleep(Duration::from_millis(20)).await;
    for _ in 0..3 {
        send(
            Request::get(format!("http://{addr}/quick"))
                .body(full(""))
                .unwrap(),
        )
        .await;
    }
    handle.flush().await;
    assert_eq!(
        handle.complete_until(),
        Some(held),
        "the poll still holds it"
    );
    let shown = summary_complete_until(addr).await;
    assert!(shown <= held, "{shown} > {held}");

    release.notify_one();
    assert_eq!(poll.await.unwrap().0, StatusCode::OK);
    handle.flush().await;
    let records = all(&sink).await;
    let poll = records
        .iter()
        .find(|r| r.path == "/poll")
        .expect("the poll is recorded");
    assert!(
        ms(held) <= poll.created_at && shown <= poll.created_at,
        "the range called complete ({shown}) does not hold the poll ({})",
        poll.created_at
    );
    // Nothing in flight, nothing pending: no mark (the usage endpoint's own
    // calls, not recorded, left none behind).
    assert_eq!(handle.complete_until(), None);
    // A consumer's summary shows it rounded down to the minute (it says
    // nothing of other consumers' arrivals): at least the poll's minute now.
    let now = summary_complete_until(addr).await;
    let minute_of_poll = poll
        .created_at
        .replace_second(0)
        .and_then(|t| t.replace_nanosecond(0))
        .unwrap();
    assert!(now >= minute_of_poll, "{now} < {minute_of_poll}");
    assert_eq!((now.second(), now.nanosecond()), (0, 0), "{now}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stream_or_a_slow_upload_holds_complete_until_back() {
    let sink = MemorySink::new();
    let layer = UsageLayer::new(sink.clone()).max_delay(Duration::from_millis(5));
    let handle = layer.handle();
    let (tx, rx) = tokio::sync::mpsc::channel::<Result<Bytes, std::convert::Infallible>>(4);
    let rx = Arc::new(std::sync::Mutex::new(Some(rx)));
    let app = Router::new()
        .route(
            "/events",
            get(move || {
                let rx = rx.lock().unwrap().take().unwrap();
                async move {
                    let stream = tokio_stream::wrappers::ReceiverStream::new(rx);
                    http::Response::builder()
                        .header("content-type", "text/event-stream")
                        .body(axum::body::Body::from_stream(stream))
                        .unwrap()
                }
            }),
        )
        .route(
            "/upload",
            post(|body: Bytes| async move { body.len().to_string() }),
        )
        .layer(layer);
    let addr = serve(app).await;

    // An event stream: the response is under way.
    let res = client()
        .request(
            Request::get(format!("http://{addr}/events"))
                .body(full(""))
                .unwrap(),
        )
        .await
        .unwrap();
    tx.send(Ok(Bytes::from_static(b"data: 1\n\n")))
        .await
        .unwrap();
    let mut body = res.into_body();
    let first = body.frame().await.unwrap().unwrap();
    assert_eq!(first.data_ref().unwrap(), &b"data: 1\n\n"[..]);
    let held = handle.complete_until().expect("the stream is in flight");

    // A slow upload: half its body sent.
    let (up_tx, up_rx) = tokio::sync::mpsc::channel::<
        Result<http_body::Frame<Bytes>, Box<dyn std::error::Error + Send + Sync>>,
    >(4);
    let upload_body =
        http_body_util::StreamBody::new(tokio_stream::wrappers::ReceiverStream::new(up_rx));
    let upload = tokio::spawn(send(
        Request::post(format!("http://{addr}/upload"))
            .body(BodyExt::boxed(upload_body))
            .unwrap(),
    ));
    up_tx
        .send(Ok(http_body::Frame::data(Bytes::from_static(b"half"))))
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(20)).await;
    assert_eq!(handle.complete_until(), Some(held), "the stream came first");

    // The stream ends: the upload holds the mark now, no earlier than the stream's.
    tx.send(Ok(Bytes::from_static(b"data: 2\n\n")))
        .await
        .unwrap();
    drop(tx);
    while body.frame().await.is_some() {}
    handle.flush().await;
    let during_upload = handle.complete_until().expect("the upload is in flight");
    assert!(during_upload >= held);
    let events = all(&sink)
        .await
        .into_iter()
        .find(|r| r.path == "/events")
        .expect("written");
    assert!(ms(held) <= events.created_at);

    up_tx
        .send(Ok(http_body::Frame::data(Bytes::from_static(b" done"))))
        .await
        .unwrap();
    drop(up_tx);
    assert_eq!(upload.await.unwrap().2, "9");
    handle.flush().await;
    let upload = all(&sink)
        .await
        .into_iter()
        .find(|r| r.path == "/upload")
        .expect("written");
    assert!(
        ms(during_upload) <= upload.created_at,
        "{during_upload} > {}",
        upload.created_at
    );
    assert_eq!(handle.complete_until(), None);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_leaves_mid_poll_releases_the_mark() {
    let sink = MemorySink::new();
    let layer = UsageLayer::new(sink.clone()).max_delay(Duration::from_millis(5));
    let handle = layer.handle();
    let entered = Arc::new(Notify::new());
    let e = entered.clone();
    let app = Router::new()
        .route(
            "/poll",
            get(move || {
                let e = e.clone();
                async move {
                    e.notify_one();
                    std::future::pending::<()>().await;
                    "never"
                }
            }),
        )
        .layer(layer);
    let addr = serve(app).await;
    let poll = tokio::spawn(send(
        Request::get(format!("http://{addr}/poll"))
            .body(full(""))
            .unwrap(),
    ));
    entered.notified().await;
    assert!(handle.complete_until().is_some());
    poll.abort();
    eventually("the server sees the client leave", || sink.len() == 1).await;
    handle.flush().await;
    assert_eq!(handle.complete_until(), None);
    assert_eq!(all(&sink).await[0].status, 499);
}
