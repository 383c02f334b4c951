//! The background writer: a bounded queue between the request path and the sink,
//! drained in batches by one tokio task, and [`UsageHandle`] to flush, inspect and
//! stop it.
//!
//! # How records flow
//!
//! When an exchange ends, the layer pushes its raw capture onto a bounded queue:
//! a short, uncontended mutex push, never an `.await`. The writer task wakes every
//! [`max_delay`](crate::UsageLayer::max_delay), or as soon as [`WAKE_AT`] (8)
//! captures are waiting, takes everything queued, turns the captures into
//! [`UsageRecord`]s (redaction, query and route-param parsing, the token hash,
//! ids: all off the request path) and hands them to
//! [`UsageSink::record`] in batches of at most
//! [`batch_size`](crate::UsageLayer::batch_size).
//!
//! So batches size themselves to the load. While the sink keeps up, the writer
//! takes a handful of captures at a time, while their memory is still in the
//! CPU's caches and the allocator's per-thread caches can take back what they
//! free. While a `record` call is in flight, captures pile up in the queue, and
//! the next round writes them in batches of up to `batch_size`: a slow sink gets
//! fewer, larger writes.
//!
//! * **Queue full:** the capture is dropped and counted in
//!   [`RecorderStats::dropped`]; the request never waits.
//! * **Sink fails:** a batch whose error [is temporary](crate::SinkError::is_temporary)
//!   is retried up to [`max_retries`](crate::UsageLayer::max_retries) times with
//!   exponential backoff (100 ms, doubling, at most 5 s); then it is dropped and
//!   counted in [`RecorderStats::failed`]. One `tracing` warning is logged per
//!   failing streak, not one per batch.
//! * **Sink stalls:** a `record` call that takes longer than
//!   [`sink_timeout`](crate::UsageLayer::sink_timeout) counts as a temporary failure.
//!
//! # Choosing the queue capacity
//!
//! The queue absorbs bursts while the sink is slow. Each queued capture holds at
//! most the two body capture limits plus the request headers, so the worst-case
//! memory is about `queue_capacity × (max_request_body_bytes +
//! max_response_body_bytes + headers)`: with the defaults (4096 × 128 KiB) that is
//! 512 MiB if every request carried maximal bodies, and a few MiB for typical
//! JSON APIs. Size it as *peak requests per second × the longest sink stall you
//! want to ride out*, and lower the body limits rather than the capacity when
//! memory is tight. Watch [`RecorderStats::dropped`] in production.
//!
//! # Runtime
//!
//! [`UsageLayer::new`](crate::UsageLayer::new) spawns the writer on the current
//! tokio runtime when there is one. Built outside a runtime, the layer starts the
//! writer lazily the first time it records or flushes from inside one; until then
//! captures wait in the queue (and are dropped, counted, once it is full).

use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::{watch, Notify};

use crate::capture::Finished;
use crate::{SinkError, UsageRecord, UsageSink};

/// Default [`queue_capacity`](crate::UsageLayer::queue_capacity): 4096 captures.
pub const DEFAULT_QUEUE_CAPACITY: usize = 4096;
/// Default [`batch_size`](crate::UsageLayer::batch_size): 256 records.
pub const DEFAULT_BATCH_SIZE: usize = 256;
/// How many waiting captures wake the writer before
/// [`max_delay`](crate::UsageLayer::max_delay) is up (or
/// [`batch_size`](crate::UsageLayer::batch_size), when that is smaller).
pub const WAKE_AT: usize = 8;
/// Default [`max_delay`](crate::UsageLayer::max_delay): 100 ms.
pub const DEFAULT_MAX_DELAY: Duration = Duration::from_millis(100);
/// Default [`max_retries`](crate::UsageLayer::max_retries): 3.
pub const DEFAULT_MAX_RETRIES: u32 = 3;
/// Default [`sink_timeout`](crate::UsageLayer::sink_timeout): 30 s.
pub const DEFAULT_SINK_TIMEOUT: Duration = Duration::from_secs(30);

const FIRST_BACKOFF: Duration = Duration::from_millis(100);
const MAX_BACKOFF: Duration = Duration::from_secs(5);

/// Counters of the writer, from [`UsageHandle::stats`].
///
/// Every capture ends up in exactly one of `written`, `dropped`, `failed`, or is
/// still `queued` (or being written).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct RecorderStats {
    /// Exchanges the layer captured.
    pub captured: u64,
    /// Records the sink stored.
    pub written: u64,
    /// Captures dropped because the queue was full or the writer was shut down.
    pub dropped: u64,
    /// Records dropped after the sink failed on their batch (after retries).
    pub failed: u64,
    /// Batch writes that were retried.
    pub retried: u64,
    /// Captures waiting in the queue right now.
    pub queued: u64,
}

pub(crate) struct Shared {
    queue: Mutex<Vec<Finished>>,
    wake: Notify,
    closed: AtomicBool,
    started: AtomicBool,
    stopped: AtomicBool,
    /// Set at the first drop of a streak (one warning), cleared by the writer.
    dropping: AtomicBool,
    sink: Mutex<Option<Arc<dyn UsageSink>>>,
    /// Captures accepted into the queue, ever. Written under the queue lock.
    accepted: AtomicU64,
    /// Accepted captures the writer has finished with (written or failed).
    done: watch::Sender<u64>,
    captured: AtomicU64,
    written: AtomicU64,
    dropped: AtomicU64,
    failed: AtomicU64,
    retried: AtomicU64,
    pub(crate) queue_capacity: AtomicUsize,
    pub(crate) batch_size: AtomicUsize,
    pub(crate) max_delay_us: AtomicU64,
    pub(crate) max_retries: AtomicU64,
    pub(crate) sink_timeout_us: AtomicU64,
}

/// The request path's end of the writer. Cheap to clone.
#[derive(Clone)]
pub(crate) struct Recorder {
    shared: Arc<Shared>,
}

impl std::fmt::Debug for Recorder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Recorder")
            .field("stats", &stats_of(&self.shared))
            .finish()
    }
}

impl Recorder {
    pub(crate) fn new(sink: Arc<dyn UsageSink>) -> Self {
        let (done, _) = watch::channel(0);
        let shared = Arc::new(Shared {
            queue: Mutex::new(Vec::new()),
            wake: Notify::new(),
            closed: AtomicBool::new(false),
            started: AtomicBool::new(false),
            stopped: AtomicBool::new(false),
            dropping: AtomicBool::new(false),
            sink: Mutex::new(Some(sink)),
            accepted: AtomicU64::new(0),
            done,
            captured: AtomicU64::new(0),
            written: AtomicU64::new(0),
            dropped: AtomicU64::new(0),
            failed: AtomicU64::new(0),
            retried: AtomicU64::new(0),
            queue_capacity: AtomicUsize::new(DEFAULT_QUEUE_CAPACITY),
            batch_size: AtomicUsize::new(DEFAULT_BATCH_SIZE),
            max_delay_us: AtomicU64::new(DEFAULT_MAX_DELAY.as_micros() as u64),
            max_retries: AtomicU64::new(u64::from(DEFAULT_MAX_RETRIES)),
            sink_timeout_us: AtomicU64::new(DEFAULT_SINK_TIMEOUT.as_micros() as u64),
        });
        let recorder = Self { shared };
        recorder.ensure_started();
        recorder
    }

    pub(crate) fn shared(&self) -> &Shared {
        &self.shared
    }

    /// Spawns the writer on the current tokio runtime, once, if there is one.
    fn ensure_started(&self) {
        if self.shared.started.load(Ordering::Acquire) {
            return;
        }
        let Ok(handle) = tokio::runtime::Handle::try_current() else {
            return;
        };
        if self.shared.started.swap(true, Ordering::AcqRel) {
            return;
        }
        let sink = lock(&self.shared.sink).take();
        match sink {
            Some(sink) => {
                handle.spawn(run_writer(self.shared.clone(), sink));
            }
            None => self.shared.stopped.store(true, Ordering::Release),
        }
    }

    /// Hands a finished capture to the writer. Never blocks on the sink, never
    /// wakes the writer except at the high-water mark ([`WAKE_AT`]).
    pub(crate) fn submit(&self, finished: Finished) {
        let shared = &*self.shared;
        shared.captured.fetch_add(1, Ordering::Relaxed);
        if !shared.started.load(Ordering::Acquire) {
            self.ensure_started();
        }
        if shared.closed.load(Ordering::Acquire) {
            shared.dropped.fetch_add(1, Ordering::Relaxed);
            return;
        }
        let capacity = shared.queue_capacity.load(Ordering::Relaxed);
        let wake_at = shared.batch_size.load(Ordering::Relaxed).min(WAKE_AT);
        let len = {
            let mut queue = lock(&shared.queue);
            if queue.len() >= capacity {
                drop(queue);
                shared.dropped.fetch_add(1, Ordering::Relaxed);
                if !shared.dropping.swap(true, Ordering::Relaxed) {
                    tracing::warn!(
                        target: "tower_usage",
                        capacity,
                        "usage queue full: dropping records until the writer catches up (counted in stats().dropped)"
                    );
                }
                return;
            }
            queue.push(finished);
            shared.accepted.fetch_add(1, Ordering::Relaxed);
            queue.len()
        };
        if len == wake_at {
            shared.wake.notify_one();
        }
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

fn stats_of(shared: &Shared) -> RecorderStats {
    RecorderStats {
        captured: shared.captured.load(Ordering::Relaxed),
        written: shared.written.load(Ordering::Relaxed),
        dropped: shared.dropped.load(Ordering::Relaxed),
        failed: shared.failed.load(Ordering::Relaxed),
        retried: shared.retried.load(Ordering::Relaxed),
        queued: lock(&shared.queue).len() as u64,
    }
}

/// Controls the writer of a [`UsageLayer`](crate::UsageLayer): flush, stats, shutdown.
///
/// Cheap to clone; every clone controls the same writer.
///
/// ```
/// use tower_usage::{MemorySink, UsageLayer};
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() {
/// let layer = UsageLayer::new(MemorySink::new());
/// let handle = layer.handle();
/// // ... serve requests through `layer` ...
/// handle.flush().await; // everything captured so far is in the sink
/// assert_eq!(handle.stats().dropped, 0);
/// handle.shutdown().await;
/// # }
/// ```
#[derive(Clone, Debug)]
pub struct UsageHandle {
    recorder: Recorder,
}

impl UsageHandle {
    pub(crate) fn new(recorder: Recorder) -> Self {
        Self { recorder }
    }

    /// Returns once every capture accepted before the call has been written to
    /// the sink or accounted as failed. Returns even when the sink keeps
    /// failing (after the retries) or stalls (after the sink timeout).
    pub async fn flush(&self) {
        self.recorder.ensure_started();
        let shared = &self.recorder.shared;
        let target = {
            let _queue = lock(&shared.queue);
            shared.accepted.load(Ordering::Relaxed)
        };
        let mut done = shared.done.subscribe();
        loop {
            if *done.borrow_and_update() >= target || shared.stopped.load(Ordering::Acquire) {
                return;
            }
            shared.wake.notify_one();
            // Re-check periodically in case the writer stopped meanwhile.
            let _ = tokio::time::timeout(Duration::from_millis(50), done.changed()).await;
        }
    }

    /// The writer's counters.
    pub fn stats(&self) -> RecorderStats {
        stats_of(&self.recorder.shared)
    }

    /// Flushes, then stops the writer. Captures after this are dropped and counted.
    pub async fn shutdown(self) {
        let shared = self.recorder.shared.clone();
        shared.closed.store(true, Ordering::Release);
        self.flush().await;
        shared.wake.notify_one();
    }
}

/// Marks the writer stopped when its task ends, also by a panic (in a sink, say),
/// so that `flush` and `shutdown` return instead of waiting for it forever.
/// Holds a `Weak`, so the writer's check for being orphaned still counts the
/// strong references alone.
struct StopOnExit(std::sync::Weak<Shared>);

impl Drop for StopOnExit {
    fn drop(&mut self) {
        let Some(shared) = self.0.upgrade() else {
            return;
        };
        if std::thread::panicking() {
            tracing::error!(
                target: "tower_usage",
                "the usage writer panicked: no more records are written (see stats().queued and dropped)"
            );
        }
        shared.stopped.store(true, Ordering::Release);
        // Wake any flush waiting on a writer that is gone.
        shared.done.send_modify(|_| {});
    }
}

async fn run_writer(shared: Arc<Shared>, sink: Arc<dyn UsageSink>) {
    let _stop = StopOnExit(Arc::downgrade(&shared));
    // Both buffers keep their capacity across rounds: a batch of records is
    // about 100 KB, and allocating one per round costs page faults.
    let mut spare: Vec<Finished> = Vec::new();
    let mut records: Vec<UsageRecord> = Vec::new();
    let mut failing = false;
    loop {
        let delay = Duration::from_micros(shared.max_delay_us.load(Ordering::Relaxed));
        let _ = tokio::time::timeout(delay, shared.wake.notified()).await;

        {
            let mut queue = lock(&shared.queue);
            std::mem::swap(&mut *queue, &mut spare);
        }
        shared.dropping.store(false, Ordering::Relaxed);
        if spare.is_empty() {
            let orphaned = Arc::strong_count(&shared) == 1;
            if shared.closed.load(Ordering::Acquire) || orphaned {
                break;
            }
            continue;
        }
        let batch_size = shared.batch_size.load(Ordering::Relaxed).max(1);
        let mut drain = spare.drain(..).peekable();
        while drain.peek().is_some() {
            records.clear();
            records.extend(drain.by_ref().take(batch_size).map(Finished::into_record));
            let n = records.len() as u64;
            match write_with_retries(&shared, &*sink, &records).await {
                Ok(()) => {
                    shared.written.fetch_add(n, Ordering::Relaxed);
                    if failing {
                        tracing::info!(target: "tower_usage", "usage sink recovered");
                        failing = false;
                    }
                }
                Err(err) => {
                    shared.failed.fetch_add(n, Ordering::Relaxed);
                    if !failing {
                        tracing::warn!(
                            target: "tower_usage",
                            error = %err,
                            records = n,
                            "usage sink failed; dropping records (further failures are counted, not logged)"
                        );
                        failing = true;
                    }
                }
            }
            // Dropped now, while their memory is still in cache.
            records.clear();
            shared.done.send_modify(|d| *d += n);
        }
    }
}

async fn write_with_retries(
    shared: &Shared,
    sink: &dyn UsageSink,
    records: &[UsageRecord],
) -> Result<(), SinkError> {
    let retries = shared.max_retries.load(Ordering::Relaxed);
    let timeout = Duration::from_micros(shared.sink_timeout_us.load(Ordering::Relaxed));
    let mut backoff = FIRST_BACKOFF;
    let mut attempt = 0u64;
    loop {
        let result = match tokio::time::timeout(timeout, sink.record(records)).await {
            Ok(result) => result,
            Err(_) => Err(SinkError::message(
                crate::SinkErrorKind::Unavailable,
                format!(
                    "sink did not store a batch of {} within {timeout:?}",
                    records.len()
                ),
            )),
        };
        match result {
            Ok(()) => return Ok(()),
            Err(err) if err.is_temporary() && attempt < retries => {
                attempt += 1;
                shared.retried.fetch_add(1, Ordering::Relaxed);
                tracing::debug!(target: "tower_usage", error = %err, attempt, "retrying usage batch");
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(MAX_BACKOFF);
            }
            Err(err) => return Err(err),
        }
    }
}
