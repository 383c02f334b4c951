//! The writer's configuration and its worker, through a real axum Router on
//! 127.0.0.1: settings are plain values fixed before the writer starts, and
//! `UsageLayer::pair` hands the worker out instead of spawning it.

mod common;

use std::time::Duration;

use axum::routing::get;
use axum::Router;
use common::*;
use http::{Request, StatusCode};
use tower_usage::UsageLayer;

fn app<S: tower_usage::UsageSink>(layer: UsageLayer<S>) -> Router {
    Router::new()
        .route("/ok", get(|| async { "ok" }))
        .layer(layer)
}

async fn get_ok(addr: std::net::SocketAddr, times: usize) {
    for _ in 0..times {
        let (status, _, _) = send(
            Request::get(format!("http://{addr}/ok"))
                .body(full(""))
                .unwrap(),
        )
        .await;
        assert_eq!(status, StatusCode::OK);
    }
}

#[tokio::test]
async fn pair_hands_out_the_worker_and_spawns_nothing() {
    let sink = CollectSink::default();
    let (layer, worker) = UsageLayer::new(sink.clone())
        .max_delay(Duration::from_millis(5))
        .pair();
    let handle = layer.handle();
    let addr = serve(app(layer)).await;
    get_ok(addr, 3).await;

    // Nobody runs the worker yet: the captures wait in the queue.
    tokio::time::sleep(Duration::from_millis(50)).await;
    assert_eq!(sink.all().len(), 0, "nothing may run the writer but us");
    let stats = handle.stats();
    assert_eq!((stats.captured, stats.queued), (3, 3), "{stats:?}");

    // Our own thread and runtime drive it.
    let writer = std::thread::spawn(move || {
        tokio::runtime::Builder::new_current_thread()
            .enable_time()
            .build()
            .unwrap()
            .block_on(worker)
    });
    eventually("the records written by our worker", || {
        sink.all().len() == 3
    })
    .await;
    handle.clone().shutdown().await;
    writer.join().expect("the worker ends after shutdown");
    assert_eq!(handle.stats().written, 3);
}

#[tokio::test]
async fn writer_settings_are_fixed_before_the_writer_starts() {
    // A queue of 2 behind a sink that never answers: the third capture on is
    // dropped. The setting is made before the layer is used, so it applies.
    let layer = UsageLayer::new(StalledSink)
        .queue_capacity(2)
        .max_delay(Duration::from_millis(5));
    let handle = layer.handle();
    let addr = serve(app(layer)).await;
    get_ok(addr, 20).await;
    let stats = handle.stats();
    assert_eq!(stats.captured, 20);
    // The capacity counts the queue and the worker's hand together (it wakes
    // at 1 waiting, half the capacity): at most 2 held.
    assert!(stats.dropped >= 16, "{stats:?}");
    assert!(stats.queued <= 2, "{stats:?}");
}

#[tokio::test]
async fn a_setting_changed_after_the_writer_started_gives_that_value_a_writer_of_its_own() {
    let first = CollectSink::default();
    let layer = UsageLayer::new(first.clone()).max_delay(Duration::from_millis(5));
    let first_handle = layer.handle(); // the writer of `layer` is made here
    let changed = layer.clone().batch_size(1);
    let changed_handle = changed.handle();

    let addr = serve(app(changed)).await;
    get_ok(addr, 2).await;
    changed_handle.flush().await;
    assert_eq!(changed_handle.stats().written, 2);
    assert_eq!(
        first_handle.stats().captured,
        0,
        "the old writer saw nothing"
    );
    assert_eq!(first.all().len(), 2, "both writers write to the one sink");

    // Clones made after the writer exists share it.
    let shared = layer.clone();
    let addr = serve(app(shared)).await;
    get_ok(addr, 1).await;
    first_handle.flush().await;
    assert_eq!(first_handle.stats().written, 1);
}

#[tokio::test]
async fn a_clone_given_its_own_settings_before_first_use_gets_its_own_writer() {
    let a = UsageLayer::new(CollectSink::default()).max_delay(Duration::from_millis(5));
    let b = a.clone().queue_capacity(1);
    let a_handle = a.handle(); // `a`'s writer is made here
    let b_handle = b.handle();
    let addr = serve(app(b)).await;
    get_ok(addr, 3).await;
    b_handle.flush().await;
    assert_eq!(b_handle.stats().captured, 3);
    assert_eq!(a_handle.stats().captured, 0, "b has a writer of its own");
}

/// Waits (at most 5 s) until the writer holds nothing of `captured` captures:
/// all taken from the queue and written.
async fn drained(handle: &tower_usage::UsageHandle, captured: u64) -> tower_usage::RecorderStats {
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    loop {
        let stats = handle.stats();
        if stats.captured == captured && stats.queued == 0 && stats.in_flight == 0 {
            return stats;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the writer did not wake (max_delay is a minute): {stats:?}"
        );
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
}

#[tokio::test]
async fn a_small_queue_wakes_the_writer_before_it_fills() {
    // A queue of 16 wakes the writer at 8 waiting, not at 64 (which it would
    // never reach): nothing waits for max_delay, nothing is dropped.
    let sink = CollectSink::default();
    let layer = UsageLayer::new(sink.clone())
        .queue_capacity(16)
        .max_delay(Duration::from_secs(60));
    let handle = layer.handle();
    let addr = serve(app(layer)).await;
    for group in 1..=5u64 {
        get_ok(addr, 8).await;
        let stats = drained(&handle, group * 8).await;
        assert_eq!(stats.dropped, 0, "{stats:?}");
    }
    assert_eq!(sink.all().len(), 40);
}

#[tokio::test]
async fn a_queue_half_full_in_bytes_wakes_the_writer() {
    // Captures of about 8.4 KiB each in 64 KiB of queue: the fourth crosses
    // half of it and wakes the writer, long before 64 are waiting.
    let sink = CollectSink::default();
    let layer = UsageLayer::new(sink.clone())
        .queue_bytes(64 * 1024)
        .max_delay(Duration::from_secs(60));
    let handle = layer.handle();
    let router = Router::new()
        .route(
            "/upload",
            axum::routing::post(|body: axum::body::Bytes| async move { body.len().to_string() }),
        )
        .layer(layer);
    let addr = serve(router).await;
    let body = "x".repeat(8 * 1024);
    for group in 1..=4u64 {
        for _ in 0..4 {
            let (status, _, _) = send(
                Request::post(format!("http://{addr}/upload"))
                    .body(full(body.clone()))
                    .unwrap(),
            )
            .await;
            assert_eq!(status, StatusCode::OK);
        }
        let stats = drained(&handle, group * 4).await;
        assert_eq!(stats.dropped, 0, "{stats:?}");
    }
    assert_eq!(sink.all().len(), 16);
}

/// Written captures' buffers are filled again by later requests (see
/// `captured::SpareBuffers`): each record must hold its own request and
/// response and nothing of an earlier capture's, whatever the sizes that
/// follow one another in a buffer (smaller, larger, past the 4 KiB body hint).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn captures_packed_into_reused_buffers_hold_only_their_own_bytes() {
    use axum::extract::Path;
    use axum::routing::post;
    use tower_usage::sink::MAX_LIMIT;
    use tower_usage::{MemorySink, UsageQuery, UsageSink};

    const REQUESTS: usize = 400;
    let request_body = |i: usize| format!("{i}:").repeat(1 + (i * 7919) % 2500);
    let reply = |i: usize| format!("reply-{i}-").repeat(1 + (i * 13) % 400);
    let pad = |i: usize| "p".repeat((i * 37) % 700);

    let sink = MemorySink::new();
    let layer = UsageLayer::new(sink.clone()).max_delay(Duration::from_millis(2));
    let handle = layer.handle();
    let app = Router::new()
        .route(
            "/echo/{n}",
            post(move |Path(n): Path<usize>, _body: String| async move { reply(n) }),
        )
        .layer(layer);
    let addr = serve(app).await;
    let mut tasks = tokio::task::JoinSet::new();
    for worker in 0..8 {
        tasks.spawn(async move {
            for i in (worker..REQUESTS).step_by(8) {
                let (status, _, body) = send(
                    Request::post(format!("http://{addr}/echo/{i}?k={}", pad(i)))
                        .header("x-n", i.to_string())
                        .header("x-pad", pad(i))
                        .body(full(request_body(i)))
                        .unwrap(),
                )
                .await;
                assert_eq!((status, body), (StatusCode::OK, reply(i).into()));
            }
        });
    }
    while let Some(done) = tasks.join_next().await {
        done.unwrap();
    }
    handle.flush().await;

    let page = sink
        .query(&UsageQuery {
            limit: MAX_LIMIT,
            ..UsageQuery::default()
        })
        .await
        .unwrap();
    assert_eq!(page.records.len(), REQUESTS);
    let mut seen = vec![false; REQUESTS];
    for record in &page.records {
        let i: usize = record.request.headers["x-n"]
            .to_str()
            .unwrap()
            .parse()
            .unwrap();
        seen[i] = true;
        assert_eq!(record.path, format!("/echo/{i}"));
        assert_eq!(record.request.query, format!("k={}", pad(i)));
        assert_eq!(record.request.params, [("n".to_owned(), i.to_string())]);
        assert_eq!(record.request.headers["x-pad"], pad(i).as_str(), "{i}");
        assert_eq!(record.request.body.bytes, request_body(i).as_bytes(), "{i}");
        assert_eq!(record.response.bytes, reply(i).as_bytes(), "{i}");
        assert!(!record.request.body.truncated && !record.response.truncated);
    }
    assert!(seen.iter().all(|s| *s), "every request has its own record");
    assert_eq!(handle.stats().dropped, 0);
}
