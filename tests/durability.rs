//! Nothing lost without a count: the writer under sinks that fail, panic and
//! stall, through a real axum Router on 127.0.0.1.
//!
//! * every snapshot of `stats()` adds up (`captured = written + failed +
//!   dropped + queued + in_flight`), while the writer runs and after
//!   `flush_timeout` / `shutdown_timeout`, under random sink behaviour, with
//!   and without a disk spool around the sink (`Spooled`, whose own counters
//!   add up too: a property test; what a spool keeps past shutdown, the next
//!   spool on its directory writes, exactly);
//! * a sink that panics loses its batch (counted as failed), and the writer
//!   goes on;
//! * `flush()` waits for records being retried; a failing sink is retried for
//!   `max_retry_time`, then its records are counted as failed;
//! * `shutdown_timeout` bounds a hung sink and counts what it abandons;
//! * `complete_until` is the arrival of the oldest pending capture.

#![cfg(feature = "spool")]

mod common;

use std::collections::HashSet;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::routing::get;
use axum::Router;
use common::*;
use http::{Request, StatusCode};
use proptest::prelude::*;
use tower_usage::sink::spool::Spooled;
use tower_usage::{
    FlushOutcome, SinkError, SinkErrorKind, UsageHandle, UsageLayer, UsagePage, UsageQuery,
    UsageRecord, UsageSink,
};

fn app<S: UsageSink>(layer: UsageLayer<S>) -> Router {
    Router::new()
        .route("/ok", get(|| async { "ok" }))
        .layer(layer)
}

async fn get_ok(addr: SocketAddr) {
    let (status, _, _) = send(
        Request::get(format!("http://{addr}/ok"))
            .body(full(""))
            .unwrap(),
    )
    .await;
    assert_eq!(status, StatusCode::OK);
}

/// Sends `n` requests, `concurrency` at a time.
async fn load(addr: SocketAddr, n: usize, concurrency: usize) {
    let next = Arc::new(AtomicUsize::new(0));
    let mut tasks = Vec::new();
    for _ in 0..concurrency {
        let next = next.clone();
        tasks.push(tokio::spawn(async move {
            while next.fetch_add(1, Ordering::Relaxed) < n {
                get_ok(addr).await;
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
}

/// Waits until the layer has captured `n` exchanges (a capture is handed over
/// as the response body ends, a moment after the client has it).
async fn captured(handle: &UsageHandle, n: u64) {
    eventually("every exchange captured", || handle.stats().captured >= n).await;
}

/// What a scripted sink does on one `record` call.
#[derive(Debug, Clone, Copy)]
enum Act {
    Ok,
    Temporary,
    Permanent,
    Panic,
    Stall,
}

fn act() -> impl Strategy<Value = Act> {
    prop_oneof![
        4 => Just(Act::Ok),
        2 => Just(Act::Temporary),
        1 => Just(Act::Permanent),
        1 => Just(Act::Panic),
        1 => Just(Act::Stall),
    ]
}

/// Follows a script, call after call (cycling); stores on `Ok` only.
#[derive(Clone, Default)]
struct ScriptSink {
    script: Arc<Vec<Act>>,
    calls: Arc<AtomicUsize>,
    stored: Arc<Mutex<HashSet<String>>>,
    duplicates: Arc<AtomicUsize>,
    /// Records of batches answered with a permanent error or a panic: given
    /// up by whoever called (the writer, or the spool's write-back).
    refused: Arc<AtomicUsize>,
}

#[async_trait::async_trait]
impl UsageSink for ScriptSink {
    async fn record(&self, batch: &[UsageRecord]) -> Result<(), SinkError> {
        let call = self.calls.fetch_add(1, Ordering::SeqCst);
        match self.script[call % self.script.len()] {
            Act::Ok => {
                let mut stored = self.stored.lock().unwrap();
                for r in batch {
                    if !stored.insert(r.id.clone()) {
                        self.duplicates.fetch_add(1, Ordering::SeqCst);
                    }
                }
                Ok(())
            }
            Act::Temporary => Err(SinkError::message(
                SinkErrorKind::Unavailable,
                "scripted: unavailable",
            )),
            Act::Permanent => {
                self.refused.fetch_add(batch.len(), Ordering::SeqCst);
                Err(SinkError::config("scripted: permanent"))
            }
            Act::Panic => {
                self.refused.fetch_add(batch.len(), Ordering::SeqCst);
                panic!("scripted: a sink that panics")
            }
            Act::Stall => std::future::pending().await,
        }
    }

    async fn query(&self, _query: &UsageQuery) -> Result<UsagePage, SinkError> {
        Ok(UsagePage::default())
    }
}

/// Samples `stats()` in a loop until stopped; returns the unbalanced snapshots.
fn sampler(
    handle: UsageHandle,
    stop: Arc<AtomicBool>,
) -> tokio::task::JoinHandle<(usize, Vec<tower_usage::WriterStats>)> {
    tokio::spawn(async move {
        let mut samples = 0;
        let mut bad = Vec::new();
        while !stop.load(Ordering::Relaxed) {
            let s = handle.stats();
            samples += 1;
            if !s.is_balanced() {
                bad.push(s);
            }
            tokio::time::sleep(Duration::from_micros(200)).await;
        }
        (samples, bad)
    })
}

#[derive(Debug, Clone)]
struct Case {
    script: Vec<Act>,
    requests: usize,
    batch_size: usize,
    queue_capacity: usize,
    flush_ms: u64,
    shutdown_ms: u64,
    spool: bool,
}

fn case() -> impl Strategy<Value = Case> {
    (
        prop::collection::vec(act(), 1..8),
        5usize..60,
        1usize..16,
        2usize..64,
        0u64..300,
        0u64..300,
        any::<bool>(),
    )
        .prop_map(
            |(script, requests, batch_size, queue_capacity, flush_ms, shutdown_ms, spool)| Case {
                script,
                requests,
                batch_size,
                queue_capacity,
                flush_ms,
                shutdown_ms,
                spool,
            },
        )
}

async fn run_case(case: Case) {
    let sink = ScriptSink {
        script: Arc::new(case.script.clone()),
        ..ScriptSink::default()
    };
    let dir = tempfile::tempdir().unwrap();
    // The spool's own timeout is below the writer's, so that a stalled call
    // goes to disk rather than being cancelled by the writer.
    let spooled = case.spool.then(|| {
        Spooled::new(sink.clone(), dir.path(), 1 << 20)
            .unwrap()
            .sink_timeout(Duration::from_millis(30))
    });
    let inner: Box<dyn UsageSink> = match &spooled {
        Some(s) => Box::new(s.clone()),
        None => Box::new(sink.clone()),
    };
    let layer = UsageLayer::new(inner)
        .batch_size(case.batch_size)
        .queue_capacity(case.queue_capacity)
        .max_delay(Duration::from_millis(2))
        .sink_timeout(Duration::from_millis(if case.spool { 500 } else { 30 }))
        .max_retry_time(Duration::from_millis(150));
    let handle = layer.handle();
    let addr = serve(app(layer)).await;
    let stop = Arc::new(AtomicBool::new(false));
    let sampling = sampler(handle.clone(), stop.clone());

    load(addr, case.requests, 6).await;
    captured(&handle, case.requests as u64).await;
    let flushed = handle
        .flush_timeout(Duration::from_millis(case.flush_ms))
        .await;
    if flushed.is_complete() {
        // Flush never returns while an accepted capture is unfinished.
        assert_eq!(handle.stats().pending(), 0, "{:?}", handle.stats());
    }
    let shut = handle
        .clone()
        .shutdown_timeout(Duration::from_millis(case.shutdown_ms))
        .await;
    let after = handle.stats();
    // Captures after shutdown are dropped and counted.
    get_ok(addr).await;
    captured(&handle, case.requests as u64 + 1).await;
    stop.store(true, Ordering::Relaxed);
    let (samples, bad) = sampling.await.unwrap();

    assert!(
        bad.is_empty(),
        "{} unbalanced snapshots, the first: {:?}",
        bad.len(),
        &bad[..bad.len().min(3)]
    );
    assert!(samples > 0);
    assert!(after.is_balanced(), "{after:?}");
    assert_eq!(after.captured, case.requests as u64, "{after:?}");
    assert_eq!(
        after.pending(),
        0,
        "shutdown leaves nothing pending: {after:?} {shut:?}"
    );
    let settled = handle.stats();
    assert!(settled.is_balanced(), "{settled:?}");
    assert_eq!(sink.duplicates.load(Ordering::SeqCst), 0);
    if let FlushOutcome::TimedOut { pending } = shut {
        // Abandoned: the queue counted as dropped; the batch in hand as
        // dropped too, or as written (or failed) when its call ended first.
        assert!(pending > 0);
        assert!(
            after.dropped > 0 || after.written > 0 || after.failed > 0,
            "{after:?} {shut:?}"
        );
    }
    let last = handle.stats();
    assert!(last.is_balanced(), "{last:?}");
    assert_eq!(last.dropped, after.dropped + 1, "{last:?}");
    let Some(spooled) = spooled else {
        let stored = sink.stored.lock().unwrap().len() as u64;
        assert_eq!(
            settled.written, stored,
            "written is what the sink stored: {settled:?}"
        );
        assert_eq!(handle.complete_until(), None);
        return;
    };
    // What the spool took, it wrote back, failed, dropped or kept: the
    // sink's records are those the writer had written straight through plus
    // those the spool wrote back. (A batch the spool was appending when a
    // shutdown deadline cancelled the writer's call is counted as dropped by
    // the writer yet taken by the spool: at most that many more.)
    let p = spooled.stats();
    assert!(p.is_balanced(), "{p:?}");
    let stored = sink.stored.lock().unwrap().len() as u64;
    let direct = settled.written.saturating_sub(p.appended);
    assert!(
        stored >= direct + p.written && stored <= settled.written + settled.dropped,
        "stored {stored}: {settled:?} {p:?}"
    );
    // completeUntil sees the records on disk (read between two equal
    // snapshots of the counters: the write-back task may move on).
    let before = spooled.stats();
    let complete_until = handle.complete_until();
    let after = spooled.stats();
    if before == after {
        assert_eq!(
            complete_until.is_none(),
            after.spooled == 0,
            "completeUntil sees the records on disk: {after:?}"
        );
    }
    drop(spooled);
    let (next, ids) = write_the_rest(dir.path()).await;
    // Nothing the writer counted as written is lost: each such record was
    // stored by the sink (straight through, or written back by the first
    // spool's task, whenever that ran: the task stores a batch, then counts
    // it, so no snapshot of the counters is taken against the sink's set),
    // refused for good by it (the script's permanent errors and panics,
    // also counting the writer's own refusals: a bound, not an equality),
    // or left on disk and written by the second spool. Nothing is written
    // by both spools.
    let first = sink.stored.lock().unwrap().clone();
    let refused = sink.refused.load(Ordering::SeqCst) as u64;
    assert!(
        first.len() as u64 + refused + next.recovered >= settled.written,
        "stored {}, refused {refused}, recovered {}: {settled:?} {p:?} {next:?}",
        first.len(),
        next.recovered
    );
    assert!(ids.iter().all(|id| !first.contains(id)), "written twice");
}

/// A second spool on the directory, once the first has let go of its lock
/// (its last clone dropped, its write-back step done), with a working sink:
/// it finds the records the first kept, and writes them all.
async fn write_the_rest(
    dir: &std::path::Path,
) -> (tower_usage::sink::spool::SpoolStats, Vec<String>) {
    let sink = CollectSink::default();
    let start = Instant::now();
    let spooled = loop {
        match Spooled::new(sink.clone(), dir, 1 << 20) {
            Ok(spooled) => break spooled,
            Err(e) => {
                assert!(start.elapsed() < Duration::from_secs(10), "{e}");
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        }
    };
    spooled.flush().await;
    let p = spooled.stats();
    assert_eq!((p.written, p.spooled), (p.recovered, 0), "{p:?}");
    let ids: Vec<String> = sink.all().into_iter().map(|r| r.id).collect();
    assert_eq!(ids.len() as u64, p.recovered);
    (p, ids)
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 16, failure_persistence: None, ..ProptestConfig::default() })]

    #[test]
    fn every_capture_is_accounted_for_at_every_instant(case in case()) {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(run_case(case));
    }
}

/// Panics on the calls whose numbers it is given; stores otherwise.
#[derive(Clone, Default)]
struct PanicOnSink {
    panic_on: Arc<HashSet<usize>>,
    calls: Arc<AtomicUsize>,
    inner: CollectSink,
}

#[async_trait::async_trait]
impl UsageSink for PanicOnSink {
    async fn record(&self, batch: &[UsageRecord]) -> Result<(), SinkError> {
        let call = self.calls.fetch_add(1, Ordering::SeqCst);
        if self.panic_on.contains(&call) {
            panic!("record() panics on call {call}");
        }
        self.inner.record(batch).await
    }

    async fn query(&self, query: &UsageQuery) -> Result<UsagePage, SinkError> {
        self.inner.query(query).await
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sink_that_panics_loses_its_batch_counted_and_the_writer_goes_on() {
    let sink = PanicOnSink {
        panic_on: Arc::new([0, 2].into_iter().collect()),
        ..PanicOnSink::default()
    };
    let layer = UsageLayer::new(sink.clone()).max_delay(Duration::from_millis(5));
    let handle = layer.handle();
    let addr = serve(app(layer)).await;
    for round in 1..=4u64 {
        load(addr, 25, 5).await;
        captured(&handle, 25 * round).await;
        handle.flush().await;
        let s = handle.stats();
        assert!(s.is_balanced(), "{s:?}");
        assert_eq!(
            s.pending(),
            0,
            "flush returned with records unwritten: {s:?}"
        );
    }
    let s = handle.stats();
    let stored = sink.inner.all().len() as u64;
    assert_eq!(s.captured, 100);
    assert_eq!(s.written, stored, "{s:?}");
    assert!(
        s.failed > 0,
        "the panicking batches are counted failed: {s:?}"
    );
    assert_eq!(s.written + s.failed, 100, "{s:?}");
    assert!(
        sink.calls.load(Ordering::SeqCst) > 2,
        "the writer went on after the panics"
    );
    assert!(handle
        .clone()
        .shutdown_timeout(Duration::from_secs(5))
        .await
        .is_complete());
}

/// Fails (temporarily) until `until`, then stores.
#[derive(Clone)]
struct DownUntil {
    until: Instant,
    inner: CollectSink,
    calls: Arc<AtomicUsize>,
}

#[async_trait::async_trait]
impl UsageSink for DownUntil {
    async fn record(&self, batch: &[UsageRecord]) -> Result<(), SinkError> {
        self.calls.fetch_add(1, Ordering::SeqCst);
        if Instant::now() < self.until {
            return Err(SinkError::unavailable(std::io::Error::other("down")));
        }
        self.inner.record(batch).await
    }

    async fn query(&self, query: &UsageQuery) -> Result<UsagePage, SinkError> {
        self.inner.query(query).await
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_outage_shorter_than_max_retry_time_loses_nothing_and_flush_waits_for_it() {
    let started = Instant::now();
    let sink = DownUntil {
        until: started + Duration::from_millis(1200),
        inner: CollectSink::default(),
        calls: Arc::default(),
    };
    // Default settings: max_retry_time is minutes.
    let layer = UsageLayer::new(sink.clone());
    let handle = layer.handle();
    let addr = serve(app(layer)).await;
    load(addr, 200, 8).await;
    captured(&handle, 200).await;
    assert!(handle.complete_until().is_some(), "records are pending");
    handle.flush().await;
    assert!(
        started.elapsed() >= Duration::from_millis(1200),
        "flush returned before the sink came back"
    );
    let s = handle.stats();
    assert_eq!(
        (s.captured, s.written, s.failed, s.dropped),
        (200, 200, 0, 0),
        "{s:?}"
    );
    assert!(s.retried > 0, "{s:?}");
    assert_eq!(sink.inner.all().len(), 200);
    assert_eq!(handle.complete_until(), None);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn past_max_retry_time_records_fail_counted_and_a_permanent_error_fails_at_once() {
    let sink = FailingSink::default();
    let layer = UsageLayer::new(sink.clone())
        .max_delay(Duration::from_millis(5))
        .max_retry_time(Duration::from_millis(300));
    let handle = layer.handle();
    let addr = serve(app(layer)).await;
    let started = Instant::now();
    load(addr, 30, 3).await;
    captured(&handle, 30).await;
    handle.flush().await;
    assert!(started.elapsed() >= Duration::from_millis(300));
    let s = handle.stats();
    assert_eq!((s.captured, s.failed, s.written), (30, 30, 0), "{s:?}");
    assert!(s.retried >= 2, "retried with backoff for 300 ms: {s:?}");

    // A permanent error: no retry.
    let script = ScriptSink {
        script: Arc::new(vec![Act::Permanent]),
        ..ScriptSink::default()
    };
    let layer = UsageLayer::new(script.clone()).max_delay(Duration::from_millis(5));
    let handle = layer.handle();
    let addr = serve(app(layer)).await;
    load(addr, 10, 1).await;
    captured(&handle, 10).await;
    handle.flush().await;
    let s = handle.stats();
    assert_eq!((s.failed, s.retried), (10, 0), "{s:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_timeout_bounds_a_hung_sink_and_counts_what_it_abandons() {
    let layer = UsageLayer::new(StalledSink).max_delay(Duration::from_millis(5));
    let handle = layer.handle();
    let addr = serve(app(layer)).await;
    load(addr, 40, 4).await;
    captured(&handle, 40).await;
    eventually("a batch in flight", || handle.stats().in_flight > 0).await;
    let s = handle.stats();
    assert!(s.is_balanced(), "{s:?}");
    let before = Instant::now();
    assert_eq!(
        handle.flush_timeout(Duration::from_millis(100)).await,
        FlushOutcome::TimedOut { pending: 40 }
    );
    let outcome = handle
        .clone()
        .shutdown_timeout(Duration::from_millis(200))
        .await;
    let took = before.elapsed();
    assert_eq!(outcome, FlushOutcome::TimedOut { pending: 40 });
    assert!(took < Duration::from_secs(2), "took {took:?}");
    let s = handle.stats();
    assert_eq!((s.captured, s.dropped, s.pending()), (40, 40, 0), "{s:?}");
    assert!(s.is_balanced());
}

/// Holds every `record` call until opened.
#[derive(Clone, Default)]
struct Gate {
    open: Arc<tokio::sync::Notify>,
    inner: CollectSink,
}

#[async_trait::async_trait]
impl UsageSink for Gate {
    async fn record(&self, batch: &[UsageRecord]) -> Result<(), SinkError> {
        self.open.notified().await;
        self.open.notify_one();
        self.inner.record(batch).await
    }

    async fn query(&self, query: &UsageQuery) -> Result<UsagePage, SinkError> {
        self.inner.query(query).await
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn complete_until_is_the_arrival_of_the_oldest_pending_capture() {
    let sink = Gate::default();
    let layer = UsageLayer::new(sink.clone()).max_delay(Duration::from_millis(5));
    let handle = layer.handle();
    assert_eq!(handle.complete_until(), None);
    let addr = serve(app(layer)).await;
    let before = time::OffsetDateTime::now_utc();
    load(addr, 5, 1).await;
    captured(&handle, 5).await;
    let first = handle.complete_until().expect("records pending");
    load(addr, 5, 1).await;
    captured(&handle, 10).await;
    let after = time::OffsetDateTime::now_utc();
    assert!(
        first >= before && first <= after,
        "{before} <= {first} <= {after}"
    );
    assert_eq!(
        handle.complete_until(),
        Some(first),
        "newer captures do not move it"
    );
    sink.open.notify_one();
    handle.flush().await;
    assert_eq!(handle.complete_until(), None);
    assert_eq!(sink.inner.all().len(), 10);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_writers_batch_counts_against_the_queue_capacity() {
    // A stalled sink holds a batch of 4; the capacity of 8 leaves 4 queued.
    // (The writer wakes when 4 are waiting, its batch size and half the
    // capacity, well before max_delay.)
    let layer = UsageLayer::new(StalledSink)
        .batch_size(4)
        .queue_capacity(8)
        .max_delay(Duration::from_secs(10));
    let handle = layer.handle();
    let addr = serve(app(layer)).await;
    load(addr, 4, 1).await;
    eventually("a batch in flight", || handle.stats().in_flight == 4).await;
    load(addr, 10, 1).await;
    captured(&handle, 14).await;
    let s = handle.stats();
    assert_eq!((s.in_flight, s.queued, s.dropped), (4, 4, 6), "{s:?}");
    assert!(s.is_balanced());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_byte_budget_bounds_the_queue() {
    // Each capture of /ok costs a few hundred bytes: a 2 KiB budget holds a few.
    let layer = UsageLayer::new(StalledSink)
        .queue_bytes(2048)
        .max_delay(Duration::from_millis(2));
    let handle = layer.handle();
    let addr = serve(app(layer)).await;
    load(addr, 50, 1).await;
    captured(&handle, 50).await;
    let s = handle.stats();
    assert!(
        s.dropped > 0 && s.pending() > 0 && s.pending() < 20,
        "{s:?}"
    );
    assert!(s.is_balanced());
}
