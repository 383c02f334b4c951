//! A sink that hangs (its calls never end), through a real axum Router on
//! 127.0.0.1: `flush()` is bounded by time (`max_retry_time` and two
//! `sink_timeout`s), not by the number of queued captures, and a sink that
//! comes back is written to again.

mod common;
#[path = "support/faults.rs"]
mod faults;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use common::*;
use faults::{get_ok, serve_ok};
use tower_usage::{SinkError, UsageLayer, UsagePage, UsageQuery, UsageRecord, UsageSink};

/// Never answers while `hung`; stores otherwise.
#[derive(Clone, Default)]
struct Hang {
    hung: Arc<AtomicBool>,
    inner: CollectSink,
}

#[async_trait::async_trait]
impl UsageSink for Hang {
    async fn record(&self, batch: &[UsageRecord]) -> Result<(), SinkError> {
        if self.hung.load(Ordering::SeqCst) {
            std::future::pending::<()>().await;
        }
        self.inner.record(batch).await
    }

    async fn query(&self, query: &UsageQuery) -> Result<UsagePage, SinkError> {
        self.inner.query(query).await
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn flush_against_a_hung_sink_is_bounded_by_time_not_by_the_queue() {
    let sink = Hang::default();
    sink.hung.store(true, Ordering::SeqCst);
    // 200 batches of one: one call each would take 200 × 100 ms = 20 s.
    let layer = UsageLayer::new(sink.clone())
        .batch_size(1)
        .max_delay(Duration::from_millis(5))
        .sink_timeout(Duration::from_millis(100))
        .max_retry_time(Duration::from_millis(300));
    let (layer, worker) = layer.pair();
    let handle = layer.handle();
    let addr = serve_ok(layer).await;
    for _ in 0..200 {
        get_ok(addr, "/ok").await;
    }
    eventually("all queued", || handle.stats().queued == 200).await;
    tokio::spawn(worker);
    // The bound is max_retry_time + 2 × sink_timeout (0.5 s here); 5 s of
    // slack for a busy machine, a quarter of what one call per batch takes.
    let outcome = handle.flush_timeout(Duration::from_secs(5)).await;
    let s = handle.stats();
    assert!(outcome.is_complete(), "{outcome:?} {s:?}");
    assert_eq!((s.failed, s.written, s.pending()), (200, 0, 0), "{s:?}");

    // The sink comes back: the next record is written (a probe every 2 s).
    sink.hung.store(false, Ordering::SeqCst);
    tokio::time::sleep(Duration::from_millis(2100)).await;
    get_ok(addr, "/ok").await;
    eventually("captured", || handle.stats().captured == 201).await;
    handle.flush().await;
    assert_eq!(handle.stats().written, 1, "{:?}", handle.stats());
    assert_eq!(sink.inner.all().len(), 1);
}
