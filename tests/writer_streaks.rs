//! The writer says when its sink starts failing, not only once it gives up:
//! one warning when a failure streak starts (while the batch is retried,
//! within `max_retry_time`), one line when it ends. Through a real axum
//! Router on 127.0.0.1, with the log captured.

mod common;
#[path = "support/faults.rs"]
mod faults;

use std::sync::atomic::Ordering;
use std::time::Duration;

use common::*;
use faults::{get_ok, serve_ok, Log, Switch};
use tower_usage::UsageLayer;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failure_streak_is_logged_when_it_starts_and_when_it_ends() {
    let log = Log::install();

    let sink = Switch::default();
    sink.down.store(true, Ordering::SeqCst);
    // The default max_retry_time: 5 minutes of retries before a batch is
    // given up.
    let layer = UsageLayer::new(sink.clone()).max_delay(Duration::from_millis(5));
    let handle = layer.handle();
    let addr = serve_ok(layer).await;
    for _ in 0..5 {
        get_ok(addr, "/ok").await;
    }
    eventually("retried", || handle.stats().retried >= 3).await;
    assert_eq!(
        log.count("WARN", "usage sink failed"),
        1,
        "one warning, while retrying"
    );
    assert_eq!(handle.stats().failed, 0, "nothing given up yet");

    sink.down.store(false, Ordering::SeqCst);
    handle.flush().await;
    assert_eq!(handle.stats().written, 5);
    assert_eq!(log.count("INFO", "usage sink recovered"), 1);
    assert_eq!(
        log.count("WARN", "usage sink failed"),
        1,
        "no more warnings"
    );
}
