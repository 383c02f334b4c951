//! No log floods: a storage that keeps failing gives one warning per failure
//! streak, from the writer, from a disk spool (`Spooled`) and from
//! `GET /usage`, and one line when it recovers. Through a real axum app on 127.0.0.1, with the log captured.

mod common;
#[path = "support/faults.rs"]
mod faults;

use std::sync::atomic::Ordering;
use std::time::Duration;

use axum::routing::get;
use axum::Router;
use common::*;
use faults::{Log, Switch};
use http::{Request, StatusCode};
use tower_usage::{UsageLayer, UsageService};

async fn call(addr: std::net::SocketAddr, path: &str) -> StatusCode {
    send(
        Request::get(format!("http://{addr}{path}"))
            .header("authorization", "Bearer streaks")
            .body(full(""))
            .unwrap(),
    )
    .await
    .0
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_warning_per_failure_streak_from_the_writer_and_from_get_usage() {
    let log = Log::install();

    let sink = Switch::default();
    sink.down.store(true, Ordering::SeqCst);
    // Give up at once, so that every batch is a failure of its own.
    let layer = UsageLayer::new(sink.clone())
        .max_delay(Duration::from_millis(2))
        .batch_size(1)
        .max_retry_time(Duration::ZERO);
    let handle = layer.handle();
    let app = Router::new()
        .route("/ok", get_ok())
        .layer(layer)
        .route_service("/usage", UsageService::new(sink.clone()));
    let addr = serve(app).await;

    for _ in 0..30 {
        assert_eq!(call(addr, "/ok").await, StatusCode::OK);
        assert_eq!(call(addr, "/usage").await, StatusCode::SERVICE_UNAVAILABLE);
    }
    eventually("captured", || handle.stats().captured >= 30).await;
    handle.flush().await;
    assert_eq!(handle.stats().failed, 30);
    assert_eq!(log.count("WARN", "usage sink failed"), 1, "writer warnings");
    assert_eq!(log.count("WARN", "GET /usage"), 1, "GET /usage warnings");

    // Recovery: one line each; then a new streak warns again.
    sink.down.store(false, Ordering::SeqCst);
    assert_eq!(call(addr, "/ok").await, StatusCode::OK);
    assert_eq!(call(addr, "/usage").await, StatusCode::OK);
    eventually("captured", || handle.stats().captured >= 31).await;
    handle.flush().await;
    assert_eq!(log.count("INFO", "usage sink recovered"), 1);
    assert_eq!(log.count("INFO", "the sink answers again"), 1);
    sink.down.store(true, Ordering::SeqCst);
    for _ in 0..5 {
        assert_eq!(call(addr, "/usage").await, StatusCode::SERVICE_UNAVAILABLE);
    }
    assert_eq!(
        log.count("WARN", "GET /usage"),
        2,
        "a new streak warns once more"
    );

    // With a disk spool (a small one, which fills up): one warning when the
    // sink fails, one when the spool evicts, one line when the sink is back.
    #[cfg(feature = "spool")]
    {
        let dir = tempfile::tempdir().unwrap();
        let spooled =
            tower_usage::sink::spool::Spooled::new(sink.clone(), dir.path(), 16 * 1024).unwrap();
        let layer = UsageLayer::new(spooled.clone())
            .max_delay(Duration::from_millis(2))
            .batch_size(1);
        let handle = layer.handle();
        let addr = serve(Router::new().route("/ok", get_ok()).layer(layer)).await;
        for _ in 0..100 {
            assert_eq!(call(addr, "/ok").await, StatusCode::OK);
        }
        eventually("captured", || handle.stats().captured >= 100).await;
        eventually("all spooled or evicted", || {
            let s = spooled.stats();
            s.spooled + s.dropped == 100
        })
        .await;
        assert!(spooled.stats().dropped > 0, "{:?}", spooled.stats());
        assert_eq!(log.count("WARN", "records go to the disk spool"), 1);
        assert_eq!(log.count("WARN", "usage spool full"), 1);
        sink.down.store(false, Ordering::SeqCst);
        handle.flush().await;
        spooled.flush().await;
        assert_eq!(log.count("INFO", "writing the spool back"), 1);
    }
}

fn get_ok() -> axum::routing::MethodRouter {
    get(|| async { "ok" })
}
