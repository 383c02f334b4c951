//! The disk spool (`Spooled`, a sink around any sink), through a real axum
//! Router on 127.0.0.1 and real files in a temporary directory:
//!
//! * a sink down for seconds under a paced load, with a small queue: without
//!   a spool records are dropped (counted); with one nothing is lost, and the
//!   sink gets every record in order;
//! * a restart: what a spool left on disk, the next spool on the directory
//!   writes first; a second spool on a directory in use is refused;
//! * a full spool evicts its oldest records, counted as dropped;
//! * a permanent error is not spooled; a torn record is skipped, counted;
//! * the writer's and the spool's `stats()` add up in every snapshot;
//! * `shutdown()` while the sink is down returns, leaving the spool to the
//!   next process; `flush()` returns once the write-back task is gone; a
//!   batch larger than the spool counts what it evicts of itself; a segment
//!   that cannot be read for a while is kept, not dropped;
//! * on a volume that fills up (a small tmpfs; skipped, saying so, where the
//!   kernel or the lack of privilege refuses to mount one): a spool that
//!   cannot append is never worse than no spool (with nothing on disk,
//!   batches go straight to the sink, or back to the writer's retry), and a
//!   segment written back is deleted (no cursor needs to grow first), so a
//!   restart does not send it again.
#![cfg(feature = "spool")]

mod common;
#[path = "support/faults.rs"]
mod faults;

use std::net::SocketAddr;
use std::path::Path;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::routing::post;
use axum::Router;
use common::*;
use faults::{small_volume, Switch};
use http::{Request, StatusCode};
use tower_usage::sink::spool::{SpoolStats, Spooled, MIN_SPOOL_BYTES};
use tower_usage::{UsageHandle, UsageLayer, UsageRecord, UsageSink, WriterStats};

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

/// Samples the writer's and the spool's `stats()` every millisecond until
/// dropped; panics (in the test, at `check`) if a snapshot does not add up.
struct Sampler {
    bad: Arc<Mutex<Option<String>>>,
    samples: Arc<std::sync::atomic::AtomicU64>,
    task: tokio::task::JoinHandle<()>,
}

impl Sampler {
    fn start<S: UsageSink>(handle: &UsageHandle, spool: Option<&Spooled<S>>) -> Self {
        let bad = Arc::new(Mutex::new(None));
        let samples = Arc::new(std::sync::atomic::AtomicU64::new(0));
        let (h, b, n) = (handle.clone(), bad.clone(), samples.clone());
        let spool = spool.cloned();
        let task = tokio::spawn(async move {
            loop {
                let s = h.stats();
                n.fetch_add(1, Ordering::Relaxed);
                if !s.is_balanced() {
                    b.lock().unwrap().get_or_insert(format!("{s:?}"));
                }
                if let Some(p) = spool.as_ref().map(Spooled::stats) {
                    if !p.is_balanced() {
                        b.lock().unwrap().get_or_insert(format!("{p:?}"));
                    }
                }
                tokio::time::sleep(Duration::from_millis(1)).await;
            }
        });
        Self { bad, samples, task }
    }

    fn check(self) {
        self.task.abort();
        assert!(self.samples.load(Ordering::Relaxed) > 10);
        let bad = self.bad.lock().unwrap().take();
        assert_eq!(bad, None, "a snapshot that does not add up");
    }
}

/// A spool in `dir` around a sink that is down, and a layer on it (with
/// `max_delay` 5 ms).
fn down_with_spool(
    dir: &Path,
    max_bytes: u64,
) -> (Switch, Spooled<Switch>, UsageLayer<Spooled<Switch>>) {
    let sink = Switch::default();
    sink.down.store(true, Ordering::SeqCst);
    let spooled = Spooled::new(sink.clone(), dir, max_bytes).unwrap();
    let layer = UsageLayer::new(spooled.clone()).max_delay(Duration::from_millis(5));
    (sink, spooled, layer)
}

/// The same, served on 127.0.0.1.
async fn served_down_with_spool(
    dir: &Path,
    max_bytes: u64,
) -> (Switch, Spooled<Switch>, UsageHandle, SocketAddr) {
    let (sink, spooled, layer) = down_with_spool(dir, max_bytes);
    let handle = layer.handle();
    let addr = serve(app(layer)).await;
    (sink, spooled, handle, addr)
}

/// Runs 600 requests at 200/s against a sink down from 0.5 s to 2.5 s, with
/// a queue of 128 (0.64 s of requests: room for the spool's appends and their
/// syncs on a busy disk, far less than the outage's 400); returns the writer's stats after a flush (and the spool's,
/// after its flush), and what the sink got.
async fn outage(spool: Option<&Path>) -> (WriterStats, Option<SpoolStats>, Vec<UsageRecord>) {
    let sink = Switch::default();
    let spooled = spool.map(|dir| Spooled::new(sink.clone(), dir, 64 * 1024 * 1024).unwrap());
    let inner: Box<dyn UsageSink> = match &spooled {
        Some(s) => Box::new(s.clone()),
        None => Box::new(sink.clone()),
    };
    let layer = UsageLayer::new(inner)
        .queue_capacity(128)
        .max_delay(Duration::from_millis(10))
        .max_retry_time(Duration::from_secs(60));
    let handle = layer.handle();
    let sampler = Sampler::start(&handle, spooled.as_ref());
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
    if let Some(s) = &spooled {
        assert!(s.flush_timeout(Duration::from_secs(30)).await);
    }
    sampler.check();
    (handle.stats(), spooled.map(|s| s.stats()), sink.inner.all())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_outage_drops_records_without_a_spool_and_loses_none_with_one() {
    let (without, _, _) = outage(None).await;
    assert_eq!(without.captured, 600);
    assert!(
        without.dropped > 100,
        "a 128-capture queue cannot hold a 2 s outage at 200/s: {without:?}"
    );

    let dir = tempfile::tempdir().unwrap();
    let (with, spool, stored) = outage(Some(dir.path())).await;
    assert_eq!(
        (with.captured, with.written, with.dropped, with.failed),
        (600, 600, 0, 0),
        "{with:?}"
    );
    let spool = spool.unwrap();
    assert!(spool.appended > 100, "the outage went to disk: {spool:?}");
    assert_eq!(
        (spool.written, spool.dropped, spool.failed, spool.spooled),
        (spool.appended, 0, 0, 0),
        "{spool:?}"
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

/// The writer wrote all `n` captures (the spool acknowledged them), and the
/// spool keeps them all on disk: none dropped, written or failed.
fn all_on_disk<S: UsageSink>(handle: &UsageHandle, spooled: &Spooled<S>, n: u64) {
    let s = handle.stats();
    assert_eq!(
        (s.captured, s.written, s.dropped, s.failed),
        (n, n, 0, 0),
        "{s:?}"
    );
    let p = spooled.stats();
    assert_eq!(
        (p.appended, p.spooled, p.dropped, p.written, p.failed),
        (n, n, 0, 0, 0),
        "left in the spool, not dropped: {p:?}"
    );
}

/// Opens a spool on `dir` around `sink`, waiting (up to 10 s: a loaded
/// machine) for the
/// previous spool's write-back task to let go of its lock.
async fn reopen<S: UsageSink + Clone>(sink: &S, dir: &Path) -> Spooled<S> {
    let start = Instant::now();
    loop {
        match Spooled::new(sink.clone(), dir, 64 * 1024 * 1024) {
            Ok(spooled) => return spooled,
            Err(e) if start.elapsed() < Duration::from_secs(10) => {
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
        let (_sink, spooled, layer) = down_with_spool(&spool, 64 * 1024 * 1024);
        let err = Spooled::new(CollectSink::default(), &spool, 1 << 20).unwrap_err();
        assert_eq!(err.kind(), std::io::ErrorKind::WouldBlock, "{err}");
        let handle = layer.handle();
        let addr = serve(app(layer)).await;
        paced(addr, 0, 50, Duration::from_millis(2)).await;
        eventually("all 50 spooled", || spooled.stats().spooled == 50).await;
        let outcome = handle
            .clone()
            .shutdown_timeout(Duration::from_millis(300))
            .await;
        assert!(outcome.is_complete(), "on disk counts as written");
        all_on_disk(&handle, &spooled, 50);
        assert!(spooled.stats().is_balanced());
    }

    // Process 2: the sink works; new requests come in too.
    let sink = CollectSink::default();
    let spooled = reopen(&sink, &spool).await;
    let p = spooled.stats();
    assert_eq!((p.recovered, p.spooled, p.appended), (50, 50, 0), "{p:?}");
    assert!(p.is_balanced(), "{p:?}");
    let layer = UsageLayer::new(spooled.clone()).max_delay(Duration::from_millis(5));
    let handle = layer.handle();
    let addr = serve(app(layer)).await;
    paced(addr, 50, 60, Duration::from_millis(2)).await;
    eventually("captured", || handle.stats().captured == 10).await;
    handle.flush().await;
    spooled.flush().await;
    let s = handle.stats();
    assert_eq!(
        (s.captured, s.written, s.dropped, s.failed),
        (10, 10, 0, 0),
        "{s:?}"
    );
    let p = spooled.stats();
    assert_eq!(
        (p.recovered, p.spooled, p.dropped, p.failed),
        (50, 0, 0, 0),
        "{p:?}"
    );
    let ns: Vec<u64> = sink.all().iter().map(n_of).collect();
    assert_eq!(ns, (0..60).collect::<Vec<_>>(), "the spool first, in order");
    let left = std::fs::read_dir(&spool).unwrap().count();
    assert_eq!(left, 2, "only the lock and cursor files are left");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_spool_evicts_its_oldest_records_counted_as_dropped() {
    let dir = tempfile::tempdir().unwrap();
    let (sink, spooled, layer) = down_with_spool(dir.path(), 32 * 1024);
    let handle = layer.handle();
    let sampler = Sampler::start(&handle, Some(&spooled));
    let addr = serve(app(layer)).await;
    paced(addr, 0, 400, Duration::from_micros(500)).await;
    eventually("all captured and settled", || {
        let s = handle.stats();
        s.captured == 400 && s.queued + s.in_flight == 0
    })
    .await;
    assert_eq!(handle.stats().written, 400, "{:?}", handle.stats());
    let before = spooled.stats();
    assert!(before.dropped > 0, "evicted: {before:?}");
    assert_eq!(before.spooled + before.dropped, 400, "{before:?}");

    sink.down.store(false, Ordering::SeqCst);
    spooled.flush().await;
    sampler.check();
    let after = spooled.stats();
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
    let spooled = Spooled::new(sink.clone(), dir.path(), 1 << 20).unwrap();
    let layer = UsageLayer::new(spooled.clone()).max_delay(Duration::from_millis(5));
    let handle = layer.handle();
    let addr = serve(app(layer)).await;
    paced(addr, 0, 20, Duration::from_millis(1)).await;
    eventually("captured", || handle.stats().captured == 20).await;
    handle.flush().await;
    let s = handle.stats();
    assert_eq!((s.failed, s.written), (20, 0), "{s:?}");
    assert_eq!(spooled.stats(), SpoolStats::default(), "nothing spooled");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_record_torn_by_a_crash_is_skipped_and_counted_and_the_rest_written() {
    let dir = tempfile::tempdir().unwrap();
    {
        let (_sink, spooled, handle, addr) = served_down_with_spool(dir.path(), 1 << 20).await;
        paced(addr, 0, 10, Duration::from_millis(1)).await;
        eventually("spooled", || spooled.stats().spooled == 10).await;
        handle.shutdown_timeout(Duration::from_millis(50)).await;
    }
    // The crash: the last segment loses its last bytes.
    let last = segments(dir.path()).pop().unwrap();
    let len = std::fs::metadata(&last).unwrap().len();
    std::fs::OpenOptions::new()
        .write(true)
        .open(&last)
        .unwrap()
        .set_len(len - 3)
        .unwrap();

    let sink = CollectSink::default();
    let spooled = reopen(&sink, dir.path()).await;
    spooled.flush().await;
    let s = spooled.stats();
    assert_eq!((s.recovered, s.damaged, s.written), (9, 1, 9), "{s:?}");
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
    let (_sink, spooled, handle, addr) = served_down_with_spool(dir.path(), 64 * 1024 * 1024).await;
    paced(addr, 0, 30, Duration::from_millis(1)).await;
    // Some may still be queued: shutdown spools them too.
    eventually("captured", || handle.stats().captured == 30).await;
    tokio::time::timeout(Duration::from_secs(10), handle.clone().shutdown())
        .await
        .expect("shutdown returns while the sink is down");
    all_on_disk(&handle, &spooled, 30);
    // The writer let go of its sink when it stopped: with the last clone
    // gone, the spool's lock is free (the write-back task holds none).
    drop(spooled);
    let sink = CollectSink::default();
    let spooled = Spooled::new(sink.clone(), dir.path(), 64 * 1024 * 1024)
        .expect("the spool's lock is free once shutdown returned and the last clone is gone");
    assert_eq!(spooled.stats().recovered, 30);
    spooled.flush().await;
    let p = spooled.stats();
    assert_eq!((p.written, p.spooled, p.dropped), (30, 0, 0), "{p:?}");
    let ns: Vec<u64> = sink.all().iter().map(n_of).collect();
    assert_eq!(ns, (0..30).collect::<Vec<_>>());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn flush_returns_once_the_writer_is_gone_and_the_spool_keeps_its_records() {
    let dir = tempfile::tempdir().unwrap();
    let sink = Switch::default();
    sink.down.store(true, Ordering::SeqCst);
    let (spooled, worker) = Spooled::pair(sink.clone(), dir.path(), 64 * 1024 * 1024).unwrap();
    let layer = UsageLayer::new(spooled.clone()).max_delay(Duration::from_millis(5));
    let spool_runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();
    spool_runtime.spawn(worker);
    let addr = serve(app(layer)).await;
    paced(addr, 0, 10, Duration::from_millis(1)).await;
    eventually("spooled", || spooled.stats().spooled == 10).await;
    // The write-back task's runtime goes away, and its future with it.
    spool_runtime.shutdown_background();
    sink.down.store(false, Ordering::SeqCst);
    tokio::time::timeout(Duration::from_secs(5), spooled.flush())
        .await
        .expect("flush returns once the write-back task is gone");
    let p = spooled.stats();
    assert_eq!((p.spooled, p.dropped, p.written), (10, 0, 0), "{p:?}");
    assert!(!spooled.flush_timeout(Duration::from_secs(10)).await);
    assert!(sink.inner.all().is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_batch_larger_than_the_spool_counts_what_it_evicts_of_itself_as_dropped() {
    let dir = tempfile::tempdir().unwrap();
    let (sink, spooled, layer) = down_with_spool(dir.path(), 16 * 1024);
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
    assert_eq!(handle.stats().written, 300);
    let before = spooled.stats();
    assert!(before.is_balanced(), "{before:?}");
    assert!(
        before.dropped > 0,
        "the batch's oldest records evicted: {before:?}"
    );
    assert_eq!(before.spooled + before.dropped, 300, "{before:?}");

    sink.down.store(false, Ordering::SeqCst);
    spooled.flush().await;
    let after = spooled.stats();
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
    let (sink, spooled, _handle, addr) = served_down_with_spool(dir.path(), 64 * 1024 * 1024).await;
    paced(addr, 0, 10, Duration::from_millis(1)).await;
    eventually("spooled", || spooled.stats().spooled == 10).await;
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
    // Probes come at most 2 s apart: the spool tries to read it meanwhile.
    tokio::time::sleep(Duration::from_millis(2500)).await;
    let p = spooled.stats();
    assert_eq!((p.spooled, p.dropped, p.written), (10, 0, 0), "kept: {p:?}");

    std::fs::remove_dir_all(seg).unwrap();
    std::fs::rename(&aside, seg).unwrap();
    assert!(spooled.flush_timeout(Duration::from_secs(10)).await);
    let p = spooled.stats();
    assert_eq!((p.spooled, p.dropped, p.written), (0, 0, 10), "{p:?}");
    let ns: Vec<u64> = sink.inner.all().iter().map(n_of).collect();
    assert_eq!(ns, (0..10).collect::<Vec<_>>());
}

#[test]
fn a_spool_too_small_to_hold_a_batch_is_refused_before_touching_the_disk() {
    let dir = tempfile::tempdir().unwrap();
    let spool = dir.path().join("spool");
    for max_bytes in [0, 1, MIN_SPOOL_BYTES - 1] {
        let err = Spooled::new(CollectSink::default(), &spool, max_bytes).unwrap_err();
        assert_eq!(err.kind(), std::io::ErrorKind::InvalidInput, "{err}");
        let message = err.to_string();
        assert!(
            message.contains(&max_bytes.to_string()) && message.contains("16384"),
            "{message}"
        );
        assert!(!spool.exists(), "nothing is created for a refused spool");
    }
    Spooled::new(CollectSink::default(), &spool, MIN_SPOOL_BYTES).unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn while_spooling_a_queue_smaller_than_a_batch_wakes_the_writer_before_it_fills() {
    // The sink is down and max_delay is a minute: the writer hands the spool
    // a batch when its wake point (64, or half the queue of 400) is reached.
    // Without that wake point it would take nothing for a minute and drop
    // all but the 400 the queue holds (1,600 of 2,000). At 1,000 requests a
    // second the queue holds 0.4 s, more than an append and its sync take on
    // a quiet machine; on one busy with other builds a sync can take longer,
    // and the few captures that arrive meanwhile are dropped and counted, so
    // the bound is loose: far below what a writer that never wakes drops.
    let dir = tempfile::tempdir().unwrap();
    let sink = Switch::default();
    sink.down.store(true, Ordering::SeqCst);
    let spooled = Spooled::new(sink.clone(), dir.path(), 64 * 1024 * 1024).unwrap();
    let layer = UsageLayer::new(spooled.clone())
        .queue_capacity(400)
        .max_delay(Duration::from_secs(60));
    let handle = layer.handle();
    let addr = serve(app(layer)).await;
    paced(addr, 0, 2000, Duration::from_millis(1)).await;
    eventually("all captured", || handle.stats().captured == 2000).await;
    let before = handle.stats();
    assert!(before.dropped <= 200, "{before:?}");

    sink.down.store(false, Ordering::SeqCst);
    assert!(handle
        .flush_timeout(Duration::from_secs(30))
        .await
        .is_complete());
    assert!(spooled.flush_timeout(Duration::from_secs(30)).await);
    let after = handle.stats();
    assert_eq!(after.written + after.dropped, 2000, "{after:?}");
    assert_eq!(after.dropped, before.dropped, "{after:?}");
    let p = spooled.stats();
    assert_eq!((p.dropped, p.failed, p.spooled), (0, 0, 0), "{p:?}");
    let ns: Vec<u64> = sink.inner.all().iter().map(n_of).collect();
    assert_eq!(
        ns.len() as u64,
        after.written,
        "every record written is stored"
    );
    assert!(
        ns.windows(2).all(|w| w[0] < w[1]),
        "stored in order: {ns:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_spool_on_a_full_volume_is_never_worse_than_no_spool() {
    let Some(mnt) = small_volume(
        "a_spool_on_a_full_volume_is_never_worse_than_no_spool",
        "1m",
    ) else {
        return;
    };
    let sink = Switch::default();
    let spooled = Spooled::new(sink.clone(), mnt.path().join("spool"), 64 << 20).unwrap();
    let filler = mnt.fill();
    let layer = UsageLayer::new(spooled.clone())
        .max_delay(Duration::from_millis(5))
        .max_retry_time(Duration::from_secs(60));
    let handle = layer.handle();
    let addr = serve(app(layer)).await;

    // The sink goes down on a full volume: nothing can be spooled, and the
    // writer holds the records in memory, retrying, as without a spool.
    sink.down.store(true, Ordering::SeqCst);
    paced(addr, 0, 50, Duration::from_micros(1)).await;
    eventually("captured", || handle.stats().captured == 50).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let s = handle.stats();
    assert_eq!((s.failed, s.dropped), (0, 0), "held, not failed: {s:?}");
    assert!(s.retried > 0, "{s:?}");
    assert_eq!(spooled.stats().spooled, 0, "{:?}", spooled.stats());

    // The sink is back, the volume still full: every record is written.
    sink.down.store(false, Ordering::SeqCst);
    paced(addr, 50, 100, Duration::from_micros(1)).await;
    eventually("captured", || handle.stats().captured == 100).await;
    assert!(handle
        .flush_timeout(Duration::from_secs(10))
        .await
        .is_complete());
    let s = handle.stats();
    assert_eq!((s.written, s.failed, s.dropped), (100, 0, 0), "{s:?}");
    let ns: Vec<u64> = sink.inner.all().iter().map(n_of).collect();
    assert_eq!(ns, (0..100).collect::<Vec<_>>(), "every record, in order");

    // Room again: the next outage goes to disk as before.
    std::fs::remove_file(filler).unwrap();
    sink.down.store(true, Ordering::SeqCst);
    paced(addr, 100, 120, Duration::from_micros(1)).await;
    eventually("spooled", || spooled.stats().spooled == 20).await;
    sink.down.store(false, Ordering::SeqCst);
    assert!(spooled.flush_timeout(Duration::from_secs(10)).await);
    let ns: Vec<u64> = sink.inner.all().iter().map(n_of).collect();
    assert_eq!(ns, (0..120).collect::<Vec<_>>());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_segment_written_back_on_a_full_volume_is_not_sent_again_at_a_restart() {
    let Some(mnt) = small_volume(
        "a_segment_written_back_on_a_full_volume_is_not_sent_again_at_a_restart",
        "1m",
    ) else {
        return;
    };
    let dir = mnt.path().join("spool");
    let sink = Switch::default();
    sink.down.store(true, Ordering::SeqCst);
    let spooled = Spooled::new(sink.clone(), &dir, 64 << 20).unwrap();
    let layer = UsageLayer::new(spooled.clone()).max_delay(Duration::from_millis(5));
    let handle = layer.handle();
    let addr = serve(app(layer)).await;
    paced(addr, 0, 20, Duration::from_micros(1)).await;
    eventually("spooled", || spooled.stats().spooled == 20).await;

    // The volume fills before the first write-back (the cursor file, empty
    // on a fresh spool, cannot grow).
    mnt.fill();
    sink.down.store(false, Ordering::SeqCst);
    assert!(spooled.flush_timeout(Duration::from_secs(10)).await);
    assert_eq!(spooled.stats().written, 20);
    handle.shutdown().await;
    drop(spooled);

    // The next process finds nothing to send again.
    let next = Spooled::new(CollectSink::default(), &dir, 64 << 20).unwrap();
    assert_eq!(next.stats().recovered, 0, "{:?}", next.stats());
    let ns: Vec<u64> = sink.inner.all().iter().map(n_of).collect();
    assert_eq!(ns, (0..20).collect::<Vec<_>>());
}
