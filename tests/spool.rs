//! The disk spool (`UsageLayer::spool`), through a real axum Router on
//! 127.0.0.1 and real files in a temporary directory:
//!
//! * a sink down for seconds under a paced load, with a small queue: without
//!   a spool records are dropped (counted); with one nothing is lost, and the
//!   sink gets every record in order;
//! * a restart: what a writer left in the spool, the next layer on the
//!   directory writes first; a second writer on a directory in use is refused;
//! * a full spool evicts its oldest records, counted as dropped;
//! * a permanent error is not spooled; a torn record is skipped, counted;
//! * `stats()` adds up in every snapshot, spooled and recovered included;
//! * `shutdown()` while the sink is down returns, leaving the spool to the
//!   next writer; `flush()` returns once the writer is gone; a batch larger
//!   than the spool counts what it evicts of itself; a segment that cannot
//!   be read for a while is kept, not dropped.

mod common;

use std::net::SocketAddr;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::routing::post;
use axum::Router;
use common::*;
use http::{Request, StatusCode};
use tower_usage::{
    RecorderStats, SinkError, UsageHandle, UsageLayer, UsagePage, UsageQuery, UsageRecord,
    UsageSink,
};

fn app<S: UsageSink>(layer: UsageLayer<S>) -> Router {
    Router::new()
        .route("/r", post(|| async { "ok" }))
        .layer(layer)
}

/// Request `i`: a small JSON body with a secret in it, and `i` in the query.
async fn send_one(addr: SocketAddr, i: u64) {
    let (status, _, _) = send(
        Request::post(format!("http://{addr}/r?n={i}"))
            .header("content-type", "application/json")
            .header("authorization", "Bearer sk-very-secret")
            .body(full(format!(r#"{{"n":{i},"password":"hunter2"}}"#)))
            .unwrap(),
    )
    .await;
    assert_eq!(status, StatusCode::OK);
}

/// Requests `from..to`, one at a time, one every `every`.
async fn paced(addr: SocketAddr, from: u64, to: u64, every: Duration) {
    let mut tick = tokio::time::interval(every);
    for i in from..to {
        tick.tick().await;
        send_one(addr, i).await;
    }
}

fn n_of(record: &UsageRecord) -> u64 {
    record
        .request
        .query
        .strip_prefix("n=")
        .unwrap()
        .parse()
        .unwrap()
}

/// Fails with a temporary error while `down`, or with a permanent one while
/// `refuse`; stores otherwise.
#[derive(Clone, Default)]
struct Switch {
    down: Arc<AtomicBool>,
    refuse: Arc<AtomicBool>,
    inner: CollectSink,
}

#[async_trait::async_trait]
impl UsageSink for Switch {
    async fn record(&self, batch: &[UsageRecord]) -> Result<(), SinkError> {
        if self.down.load(Ordering::SeqCst) {
            return Err(SinkError::unavailable(std::io::Error::other("down")));
        }
        if self.refuse.load(Ordering::SeqCst) {
            return Err(SinkError::message(tower_usage::SinkErrorKind::Config, "no"));
        }
        self.inner.record(batch).await
    }

    async fn query(&self, query: &UsageQuery) -> Result<UsagePage, SinkError> {
        self.inner.query(query).await
    }
}

/// Samples `stats()` every millisecond until dropped; panics (in the test,
/// at `check`) if a snapshot does not add up.
struct Sampler {
    bad: Arc<Mutex<Option<RecorderStats>>>,
    samples: Arc<std::sync::atomic::AtomicU64>,
    task: tokio::task::JoinHandle<()>,
}

impl Sampler {
    fn start(handle: &UsageHandle) -> Self {
        let bad = Arc::new(Mutex::new(None));
        let samples = Arc::new(std::sync::atomic::AtomicU64::new(0));
        let (h, b, n) = (handle.clone(), bad.clone(), samples.clone());
        let task = tokio::spawn(async move {
            loop {
                let s = h.stats();
                n.fetch_add(1, Ordering::Relaxed);
                if !s.is_balanced() {
                    b.lock().unwrap().get_or_insert(s);
                }
                tokio::time::sleep(Duration::from_millis(1)).await;
            }
        });
        Self { bad, samples, task }
    }

    fn check(self) {
        self.task.abort();
        assert!(self.samples.load(Ordering::Relaxed) > 10);
        let bad = *self.bad.lock().unwrap();
        assert_eq!(bad, None, "a snapshot that does not add up");
    }
}

/// A layer with a spool in `dir` (and `max_delay` 5 ms), whose sink is down.
fn down_with_spool(dir: &Path, max_bytes: u64) -> (Switch, UsageLayer<Switch>) {
    let sink = Switch::default();
    sink.down.store(true, Ordering::SeqCst);
    let layer = UsageLayer::new(sink.clone())
        .max_delay(Duration::from_millis(5))
        .spool(dir, max_bytes)
        .unwrap();
    (sink, layer)
}

/// The same, served on 127.0.0.1.
async fn served_down_with_spool(dir: &Path, max_bytes: u64) -> (Switch, UsageHandle, SocketAddr) {
    let (sink, layer) = down_with_spool(dir, max_bytes);
    let handle = layer.handle();
    let addr = serve(app(layer)).await;
    (sink, handle, addr)
}

/// Runs 600 requests at 200/s against a sink down from 0.5 s to 2.5 s, with
/// a queue of 32; returns the stats after a flush, and what the sink got.
async fn outage(spool: Option<&Path>) -> (RecorderStats, Vec<UsageRecord>) {
    let sink = Switch::default();
    let mut layer = UsageLayer::new(sink.clone())
        .queue_capacity(32)
        .max_delay(Duration::from_millis(10))
        .max_retry_time(Duration::from_secs(60));
    if let Some(dir) = spool {
        layer = layer.spool(dir, 64 * 1024 * 1024).unwrap();
    }
    let handle = layer.handle();
    let sampler = Sampler::start(&handle);
    let addr = serve(app(layer)).await;
    let down = sink.down.clone();
    let fault = tokio::spawn(async move {
        tokio::time::sleep(Duration::from_millis(500)).await;
        down.store(true, Ordering::SeqCst);
        tokio::time::sleep(Duration::from_secs(2)).await;
        down.store(false, Ordering::SeqCst);
    });
    paced(addr, 0, 600, Duration::from_millis(5)).await;
    fault.await.unwrap();
    eventually("every exchange captured", || handle.stats().captured == 600).await;
    assert!(handle
        .flush_timeout(Duration::from_secs(30))
        .await
        .is_complete());
    sampler.check();
    (handle.stats(), sink.inner.all())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_outage_drops_records_without_a_spool_and_loses_none_with_one() {
    let (without, _) = outage(None).await;
    assert_eq!(without.captured, 600);
    assert!(
        without.dropped > 100,
        "a 32-capture queue cannot hold a 2 s outage at 200/s: {without:?}"
    );

    let dir = tempfile::tempdir().unwrap();
    let (with, stored) = outage(Some(dir.path())).await;
    assert_eq!(
        (
            with.captured,
            with.written,
            with.dropped,
            with.failed,
            with.spooled
        ),
        (600, 600, 0, 0, 0),
        "{with:?}"
    );
    let ns: Vec<u64> = stored.iter().map(n_of).collect();
    assert_eq!(ns, (0..600).collect::<Vec<_>>(), "every record, in order");
    // Only redacted records reach the disk (and the sink).
    let r = &stored[300];
    assert!(
        !format!("{:?}", r.request.body.bytes).contains("hunter2"),
        "{r:?}"
    );
    assert_ne!(r.request.headers["authorization"], "Bearer sk-very-secret");
}

/// Opens a spool on `dir`, waiting (up to 2 s) for the previous writer's
/// task to let go of its lock.
async fn reopen<S: UsageSink>(layer: impl Fn() -> UsageLayer<S>, dir: &Path) -> UsageLayer<S> {
    let start = Instant::now();
    loop {
        match layer().spool(dir, 64 * 1024 * 1024) {
            Ok(layer) => return layer,
            Err(e) if start.elapsed() < Duration::from_secs(2) => {
                assert_eq!(e.kind(), std::io::ErrorKind::WouldBlock, "{e}");
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
            Err(e) => panic!("the spool stays locked: {e}"),
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restart_writes_what_the_last_process_spooled_first() {
    let dir = tempfile::tempdir().unwrap();
    let spool = dir.path().join("spool");
    // Process 1: the sink is down the whole time.
    {
        let sink = Switch::default();
        sink.down.store(true, Ordering::SeqCst);
        let layer = UsageLayer::new(sink.clone())
            .max_delay(Duration::from_millis(5))
            .spool(&spool, 64 * 1024 * 1024)
            .unwrap();
        let err = UsageLayer::new(CollectSink::default())
            .spool(&spool, 1 << 20)
            .unwrap_err();
        assert_eq!(err.kind(), std::io::ErrorKind::WouldBlock, "{err}");
        let handle = layer.handle();
        let addr = serve(app(layer)).await;
        paced(addr, 0, 50, Duration::from_millis(2)).await;
        eventually("all 50 spooled", || handle.stats().spooled == 50).await;
        let outcome = handle
            .clone()
            .shutdown_timeout(Duration::from_millis(300))
            .await;
        assert!(!outcome.is_complete());
        let s = handle.stats();
        assert_eq!(
            (s.captured, s.spooled, s.dropped, s.written, s.failed),
            (50, 50, 0, 0, 0),
            "left in the spool, not dropped: {s:?}"
        );
        assert!(s.is_balanced(), "{s:?}");
    }

    // Process 2: the sink works; new requests come in too.
    let sink = CollectSink::default();
    let layer = reopen(
        || UsageLayer::new(sink.clone()).max_delay(Duration::from_millis(5)),
        &spool,
    )
    .await;
    let handle = layer.handle();
    let s = handle.stats();
    assert_eq!((s.recovered, s.spooled, s.captured), (50, 50, 0), "{s:?}");
    assert!(s.is_balanced(), "{s:?}");
    let addr = serve(app(layer)).await;
    paced(addr, 50, 60, Duration::from_millis(2)).await;
    eventually("captured", || handle.stats().captured == 10).await;
    handle.flush().await;
    let s = handle.stats();
    assert_eq!(
        (
            s.recovered,
            s.captured,
            s.written,
            s.spooled,
            s.dropped,
            s.failed
        ),
        (50, 10, 60, 0, 0, 0),
        "{s:?}"
    );
    let ns: Vec<u64> = sink.all().iter().map(n_of).collect();
    assert_eq!(ns, (0..60).collect::<Vec<_>>(), "the spool first, in order");
    let left = std::fs::read_dir(&spool).unwrap().count();
    assert_eq!(left, 2, "only the lock and cursor files are left");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_spool_evicts_its_oldest_records_counted_as_dropped() {
    let dir = tempfile::tempdir().unwrap();
    let sink = Switch::default();
    sink.down.store(true, Ordering::SeqCst);
    let layer = UsageLayer::new(sink.clone())
        .max_delay(Duration::from_millis(5))
        .spool(dir.path(), 32 * 1024)
        .unwrap();
    let handle = layer.handle();
    let sampler = Sampler::start(&handle);
    let addr = serve(app(layer)).await;
    paced(addr, 0, 400, Duration::from_micros(500)).await;
    eventually("all captured and settled", || {
        let s = handle.stats();
        s.captured == 400 && s.queued + s.in_flight == 0
    })
    .await;
    let before = handle.stats();
    assert!(before.dropped > 0, "evicted: {before:?}");
    assert_eq!(before.spooled + before.dropped, 400, "{before:?}");

    sink.down.store(false, Ordering::SeqCst);
    handle.flush().await;
    sampler.check();
    let after = handle.stats();
    assert_eq!(after.written, before.spooled, "{after:?}");
    let ns: Vec<u64> = sink.inner.all().iter().map(n_of).collect();
    assert_eq!(
        ns,
        (before.dropped..400).collect::<Vec<_>>(),
        "the newest kept, in order"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_permanent_error_fails_the_batch_instead_of_spooling_it() {
    let dir = tempfile::tempdir().unwrap();
    let sink = Switch::default();
    sink.refuse.store(true, Ordering::SeqCst);
    let layer = UsageLayer::new(sink.clone())
        .max_delay(Duration::from_millis(5))
        .spool(dir.path(), 1 << 20)
        .unwrap();
    let handle = layer.handle();
    let addr = serve(app(layer)).await;
    paced(addr, 0, 20, Duration::from_millis(1)).await;
    eventually("captured", || handle.stats().captured == 20).await;
    handle.flush().await;
    let s = handle.stats();
    assert_eq!((s.failed, s.spooled, s.written), (20, 0, 0), "{s:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_record_torn_by_a_crash_is_skipped_and_counted_and_the_rest_written() {
    let dir = tempfile::tempdir().unwrap();
    {
        let sink = Switch::default();
        sink.down.store(true, Ordering::SeqCst);
        let layer = UsageLayer::new(sink)
            .max_delay(Duration::from_millis(5))
            .spool(dir.path(), 1 << 20)
            .unwrap();
        let handle = layer.handle();
        let addr = serve(app(layer)).await;
        paced(addr, 0, 10, Duration::from_millis(1)).await;
        eventually("spooled", || handle.stats().spooled == 10).await;
        handle.shutdown_timeout(Duration::from_millis(50)).await;
    }
    // The crash: the last segment loses its last bytes.
    let mut segments: Vec<_> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "seg"))
        .collect();
    segments.sort();
    let last = segments.last().unwrap();
    let len = std::fs::metadata(last).unwrap().len();
    std::fs::OpenOptions::new()
        .write(true)
        .open(last)
        .unwrap()
        .set_len(len - 3)
        .unwrap();

    let sink = CollectSink::default();
    let layer = reopen(|| UsageLayer::new(sink.clone()), dir.path()).await;
    let handle = layer.handle();
    handle.flush().await;
    let s = handle.stats();
    assert_eq!(
        (s.recovered, s.spool_damaged, s.written),
        (9, 1, 9),
        "{s:?}"
    );
    let ns: Vec<u64> = sink.all().iter().map(n_of).collect();
    assert_eq!(ns, (0..9).collect::<Vec<_>>());
}

/// The segment files in `dir`, oldest first.
fn segments(dir: &Path) -> Vec<std::path::PathBuf> {
    let mut segments: Vec<_> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "seg"))
        .collect();
    segments.sort();
    segments
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_while_the_sink_is_down_returns_and_the_next_writer_writes_the_spool() {
    let dir = tempfile::tempdir().unwrap();
    let (_sink, handle, addr) = served_down_with_spool(dir.path(), 64 * 1024 * 1024).await;
    paced(addr, 0, 30, Duration::from_millis(1)).await;
    // Some may still be queued: shutdown spools them too.
    eventually("captured", || handle.stats().captured == 30).await;
    tokio::time::timeout(Duration::from_secs(10), handle.clone().shutdown())
        .await
        .expect("shutdown returns while the sink is down");
    let s = handle.stats();
    assert_eq!(
        (s.captured, s.spooled, s.dropped, s.written, s.failed),
        (30, 30, 0, 0, 0),
        "left in the spool, not dropped: {s:?}"
    );
    assert!(s.is_balanced(), "{s:?}");
    // The writer is gone: a flush does not wait for it.
    tokio::time::timeout(Duration::from_secs(1), handle.flush())
        .await
        .expect("flush returns once the writer has stopped");

    // The next process, with a working sink: the lock was let go by the time
    // shutdown returned.
    let sink = CollectSink::default();
    let layer = UsageLayer::new(sink.clone())
        .max_delay(Duration::from_millis(5))
        .spool(dir.path(), 64 * 1024 * 1024)
        .expect("the spool's lock is free once shutdown returned");
    let handle = layer.handle();
    assert_eq!(handle.stats().recovered, 30);
    handle.flush().await;
    let s = handle.stats();
    assert_eq!((s.written, s.spooled, s.dropped), (30, 0, 0), "{s:?}");
    let ns: Vec<u64> = sink.all().iter().map(n_of).collect();
    assert_eq!(ns, (0..30).collect::<Vec<_>>());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn flush_returns_once_the_writer_is_gone_and_the_spool_keeps_its_records() {
    let dir = tempfile::tempdir().unwrap();
    let (_sink, layer) = down_with_spool(dir.path(), 64 * 1024 * 1024);
    let (layer, worker) = layer.pair();
    let handle = layer.handle();
    let writer_runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();
    writer_runtime.spawn(worker);
    let addr = serve(app(layer)).await;
    paced(addr, 0, 10, Duration::from_millis(1)).await;
    eventually("spooled", || handle.stats().spooled == 10).await;
    // The writer's runtime goes away, and its future with it.
    writer_runtime.shutdown_background();
    tokio::time::timeout(Duration::from_secs(5), handle.flush())
        .await
        .expect("flush returns once the writer is gone");
    let s = handle.stats();
    assert_eq!((s.spooled, s.dropped, s.written), (10, 0, 0), "{s:?}");
    assert_eq!(
        handle.flush_timeout(Duration::from_secs(10)).await,
        tower_usage::FlushOutcome::TimedOut { pending: 10 }
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_batch_larger_than_the_spool_counts_what_it_evicts_of_itself_as_dropped() {
    let dir = tempfile::tempdir().unwrap();
    let (sink, layer) = down_with_spool(dir.path(), 16 * 1024);
    let (layer, worker) = layer.batch_size(1000).pair();
    let handle = layer.handle();
    let addr = serve(app(layer)).await;
    paced(addr, 0, 300, Duration::from_micros(100)).await;
    eventually("all queued", || handle.stats().queued == 300).await;
    // One batch of 300 (far more than 16 KiB) fails and goes to the spool.
    tokio::spawn(worker);
    eventually("the batch appended", || {
        let s = handle.stats();
        s.queued + s.in_flight == 0
    })
    .await;
    let before = handle.stats();
    assert!(before.is_balanced(), "{before:?}");
    assert!(
        before.dropped > 0,
        "the batch's oldest records evicted: {before:?}"
    );
    assert_eq!(before.spooled + before.dropped, 300, "{before:?}");

    sink.down.store(false, Ordering::SeqCst);
    handle.flush().await;
    let after = handle.stats();
    assert_eq!(
        (after.written, after.dropped),
        (before.spooled, before.dropped),
        "{after:?}"
    );
    let ns: Vec<u64> = sink.inner.all().iter().map(n_of).collect();
    assert_eq!(ns, (before.dropped..300).collect::<Vec<_>>());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_segment_that_cannot_be_read_for_a_while_is_kept_and_written_later() {
    let dir = tempfile::tempdir().unwrap();
    let (sink, handle, addr) = served_down_with_spool(dir.path(), 64 * 1024 * 1024).await;
    paced(addr, 0, 10, Duration::from_millis(1)).await;
    eventually("spooled", || handle.stats().spooled == 10).await;
    // A read error that is not damage: the segment's name is a directory for
    // a while (reading it fails with `EISDIR`, as root too, where a file
    // without permissions would still be read).
    let segs = segments(dir.path());
    assert_eq!(segs.len(), 1, "{segs:?}");
    let seg = &segs[0];
    let aside = dir.path().join("aside");
    std::fs::rename(seg, &aside).unwrap();
    std::fs::create_dir(seg).unwrap();
    std::fs::write(seg.join("x"), b"").unwrap();
    sink.down.store(false, Ordering::SeqCst);
    // Probes come at most 2 s apart: the writer tries to read it meanwhile.
    tokio::time::sleep(Duration::from_millis(2500)).await;
    let s = handle.stats();
    assert_eq!((s.spooled, s.dropped, s.written), (10, 0, 0), "kept: {s:?}");

    std::fs::remove_dir_all(seg).unwrap();
    std::fs::rename(&aside, seg).unwrap();
    assert!(handle
        .flush_timeout(Duration::from_secs(10))
        .await
        .is_complete());
    let s = handle.stats();
    assert_eq!((s.spooled, s.dropped, s.written), (0, 0, 10), "{s:?}");
    let ns: Vec<u64> = sink.inner.all().iter().map(n_of).collect();
    assert_eq!(ns, (0..10).collect::<Vec<_>>());
}

#[test]
fn a_spool_too_small_to_hold_a_batch_is_refused_before_touching_the_disk() {
    let dir = tempfile::tempdir().unwrap();
    let spool = dir.path().join("spool");
    for max_bytes in [0, 1, tower_usage::middleware::MIN_SPOOL_BYTES - 1] {
        let err = UsageLayer::new(CollectSink::default())
            .spool(&spool, max_bytes)
            .unwrap_err();
        assert_eq!(err.kind(), std::io::ErrorKind::InvalidInput, "{err}");
        let message = err.to_string();
        assert!(
            message.contains(&max_bytes.to_string()) && message.contains("16384"),
            "{message}"
        );
        assert!(!spool.exists(), "nothing is created for a refused spool");
    }
    UsageLayer::new(CollectSink::default())
        .spool(&spool, tower_usage::middleware::MIN_SPOOL_BYTES)
        .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn while_spooling_a_queue_smaller_than_a_batch_wakes_the_writer_before_it_fills() {
    // The sink is down and max_delay is a minute: between probes of the sink
    // (100 ms, doubling), the writer spools when half the queue of 400 waits
    // (a batch of 256 is more than half: the writer waited for it, not woken
    // at 200, and slept while the queue filled).
    let dir = tempfile::tempdir().unwrap();
    let sink = Switch::default();
    sink.down.store(true, Ordering::SeqCst);
    let layer = UsageLayer::new(sink.clone())
        .queue_capacity(400)
        .max_delay(Duration::from_secs(60))
        .spool(dir.path(), 64 * 1024 * 1024)
        .unwrap();
    let handle = layer.handle();
    let addr = serve(app(layer)).await;
    for i in 0..2000 {
        send_one(addr, i).await;
    }
    eventually("all captured", || handle.stats().captured == 2000).await;
    let before = handle.stats();
    assert_eq!(before.dropped, 0, "{before:?}");

    sink.down.store(false, Ordering::SeqCst);
    assert!(handle
        .flush_timeout(Duration::from_secs(30))
        .await
        .is_complete());
    let after = handle.stats();
    assert_eq!((after.written, after.dropped), (2000, 0), "{after:?}");
    let ns: Vec<u64> = sink.inner.all().iter().map(n_of).collect();
    assert_eq!(ns, (0..2000).collect::<Vec<_>>(), "every record, in order");
}
