//! [`Spooled`]: the wrapper itself. A batch goes straight to the inner sink
//! while it answers and nothing waits on disk; otherwise to the segment log,
//! synced before it is acknowledged.

use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, SystemTime};

use tokio::sync::{watch, Notify};
use tokio::time::Instant;

use super::log::{arrival, Appended, Spool};
use super::stats::{SpoolStats, State};
use super::worker::SpoolWorker;
use super::{Logs, MIN_SPOOL_BYTES};
use crate::sink::call::timed_out;
use crate::sink::summary::{SummaryQuery, UsageSummary};
use crate::sink::ConsumerScope;
use crate::{SinkError, UsagePage, UsageQuery, UsageRecord, UsageSink};

/// How long one call of the inner sink may take, by default, before it
/// counts as a temporary failure (and its batch goes to disk).
const DEFAULT_SINK_TIMEOUT: Duration = Duration::from_secs(10);

/// A [`UsageSink`] that keeps records on local disk while its inner sink
/// fails, and writes them back, in order, once it answers again. See the
/// [module docs](super) for how records flow, what is on disk, and what
/// `flush` and `completeUntil` mean with a spool.
///
/// Cheap to clone: every clone is the same spool (one directory, one lock).
///
/// ```
/// use tower_usage::sink::spool::Spooled;
/// use tower_usage::{MemorySink, UsageLayer};
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> std::io::Result<()> {
/// # let dir = tempfile::tempdir()?;
/// # let dir = dir.path().join("usage-spool");
/// let sink = MemorySink::new();
/// let spooled = Spooled::new(sink.clone(), &dir, 1024 * 1024 * 1024)?;
/// let layer = UsageLayer::new(spooled.clone());
/// // A second spool on the same directory is refused.
/// assert!(Spooled::new(MemorySink::new(), &dir, 1 << 20).is_err());
/// # let _ = layer;
/// # Ok(())
/// # }
/// ```
pub struct Spooled<S> {
    pub(super) shared: Arc<Shared<S>>,
}

impl<S> Clone for Spooled<S> {
    fn clone(&self) -> Self {
        Self {
            shared: self.shared.clone(),
        }
    }
}

impl<S> std::fmt::Debug for Spooled<S> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Spooled")
            .field("sink", &std::any::type_name::<S>())
            .field("stats", &self.stats())
            .finish_non_exhaustive()
    }
}

/// What the clones and the write-back task share.
pub(super) struct Shared<S> {
    pub(super) inner: S,
    pub(super) log: Arc<Mutex<Spool>>,
    pub(super) state: Mutex<State>,
    /// Wakes the write-back task: records were appended, or the last clone
    /// went away.
    pub(super) wake: Arc<Notify>,
    /// Records finished (written back, failed, dropped), for `flush`.
    pub(super) done: watch::Sender<u64>,
    pub(super) logs: Logs,
    timeout_us: AtomicU64,
    started: AtomicBool,
    worker: Mutex<Option<SpoolWorker>>,
    /// Held by a write-back (from its read of the spool to its
    /// acknowledgement) and by an erasure, so that a consumer's records read
    /// from disk before an erasure cannot reach the inner sink after it.
    pub(super) write_back: tokio::sync::Mutex<()>,
}

impl<S> Drop for Shared<S> {
    fn drop(&mut self) {
        // The write-back task holds a `Weak`: it ends now.
        self.wake.notify_one();
    }
}

impl<S> Shared<S> {
    pub(super) fn state(&self) -> MutexGuard<'_, State> {
        lock(&self.state)
    }

    pub(super) fn timeout(&self) -> Duration {
        Duration::from_micros(self.timeout_us.load(Ordering::Relaxed))
    }

    /// Publishes the finished count to waiting flushes, and the counters to
    /// the metrics (feature `metrics`): called after every change.
    pub(super) fn publish(&self) {
        let finished = {
            let mut s = self.state();
            s.report();
            s.finished()
        };
        self.done
            .send_if_modified(|d| std::mem::replace(d, finished) != finished);
    }

    /// Spawns the write-back task on the current tokio runtime, once, if
    /// there is one and it was not handed out by [`Spooled::pair`].
    fn start(&self) {
        if self.started.load(Ordering::Acquire) {
            return;
        }
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            return;
        };
        if let Some(worker) = lock(&self.worker).take() {
            self.started.store(true, Ordering::Release);
            runtime.spawn(worker);
        }
    }

    /// The inner sink failed with a temporary error (or a timeout) on `n`
    /// records: probe it again after a backoff.
    pub(super) fn sink_failed(&self, err: &SinkError, n: usize) {
        self.state().back_off();
        if self.logs.sink.fail() {
            tracing::warn!(
                target: "tower_usage",
                error = %err,
                records = n,
                "usage sink failed; records go to the disk spool until it answers again (further failures are counted, not logged)"
            );
        }
    }

    /// The inner sink answered (stored, or refused for good).
    pub(super) fn answered(&self) {
        self.state().answered();
        if let Some(failures) = self.logs.sink.succeed() {
            tracing::info!(target: "tower_usage", failures, "usage sink answers again; writing the spool back");
        }
    }
}

impl<S: UsageSink> Shared<S> {
    /// Appends `batch` to the log, on the blocking pool. `Ok` once all of it
    /// is on disk (or refused, too large for the spool: counted as failed);
    /// an error leaves none of it there, unless even undoing failed.
    async fn append(&self, batch: &[UsageRecord]) -> std::io::Result<()> {
        let records = batch.to_vec();
        let since = batch.iter().map(arrival).min();
        let log = self.log.clone();
        let appended = tokio::task::spawn_blocking(move || lock(&log).append(&records))
            .await
            .unwrap_or_else(|_| Appended {
                error: Some(std::io::Error::other("the spool's blocking task failed")),
                ..Appended::default()
            });
        let Appended {
            stored,
            evicted,
            refused,
            error,
        } = appended;
        let taken = if error.is_some() && stored == 0 {
            0
        } else {
            stored + refused
        };
        self.state().appended(taken, stored, evicted, since);
        self.logs
            .appended(evicted, refused, error.as_ref(), batch.len());
        self.wake.notify_one();
        self.publish();
        error.map_or(Ok(()), Err)
    }

    /// One try of the inner sink, bounded by the timeout; a temporary
    /// failure backs off.
    async fn try_inner(&self, batch: &[UsageRecord]) -> Result<(), SinkError> {
        let timeout = self.timeout();
        let result = match tokio::time::timeout(timeout, self.inner.record(batch)).await {
            Ok(result) => result,
            Err(_) => Err(timed_out(batch.len(), timeout)),
        };
        match &result {
            Err(err) if err.is_temporary() => self.sink_failed(err, batch.len()),
            _ => self.answered(),
        }
        result
    }
}

impl<S: UsageSink> Spooled<S> {
    /// Wraps `sink` with a spool in `dir` of at most `max_bytes`, and starts
    /// writing back what an earlier process left there (on the current tokio
    /// runtime; outside one, from the first call of
    /// [`record`](UsageSink::record) or [`flush`](Self::flush) inside one).
    ///
    /// Opens `dir` now (creating it, on unix readable by this user alone, as
    /// are the files in it), takes its lock, and counts what an earlier
    /// process left in it: this reads every segment there, on the calling
    /// thread. The directory should be on a local disk, one per spool; a
    /// relative path is made absolute now.
    ///
    /// # Errors
    ///
    /// When `max_bytes` is below [`MIN_SPOOL_BYTES`] (an
    /// [`InvalidInput`](std::io::ErrorKind::InvalidInput) error that says so:
    /// a spool that small could not hold a batch), when `dir` cannot be
    /// created or read, when another spool (in this process or another)
    /// holds its lock ([`WouldBlock`](std::io::ErrorKind::WouldBlock)), or
    /// when it holds segments of a newer format version.
    pub fn new(sink: S, dir: impl AsRef<Path>, max_bytes: u64) -> std::io::Result<Self> {
        let spooled = Self::open(sink, dir.as_ref(), max_bytes)?;
        spooled.shared.start();
        Ok(spooled)
    }

    /// [`new`](Self::new), with the write-back task handed to you as a
    /// future to run on an executor of your choice (as
    /// [`UsageLayer::pair`](crate::UsageLayer::pair) hands out the writer);
    /// nothing is spawned.
    pub fn pair(
        sink: S,
        dir: impl AsRef<Path>,
        max_bytes: u64,
    ) -> std::io::Result<(Self, SpoolWorker)> {
        let spooled = Self::open(sink, dir.as_ref(), max_bytes)?;
        let worker = lock(&spooled.shared.worker)
            .take()
            .expect("a new spool hands out its worker once");
        spooled.shared.started.store(true, Ordering::Release);
        Ok((spooled, worker))
    }

    fn open(sink: S, dir: &Path, max_bytes: u64) -> std::io::Result<Self> {
        if max_bytes < MIN_SPOOL_BYTES {
            return Err(std::io::Error::new(
                std::io::ErrorKind::InvalidInput,
                format!(
                    "spool max_bytes is {max_bytes}: the least a spool takes is {MIN_SPOOL_BYTES} bytes"
                ),
            ));
        }
        let (mut spool, recovery) = Spool::open(dir, max_bytes)?;
        Logs::opened(dir, recovery.records, recovery.damaged);
        let oldest = spool.oldest_arrival();
        let wake = Arc::new(Notify::new());
        let shared = Arc::new_cyclic(|weak| Shared {
            inner: sink,
            log: Arc::new(Mutex::new(spool)),
            state: Mutex::new(State::new(recovery.records, recovery.damaged, oldest)),
            wake: wake.clone(),
            done: watch::channel(0).0,
            logs: Logs::default(),
            timeout_us: AtomicU64::new(DEFAULT_SINK_TIMEOUT.as_micros() as u64),
            started: AtomicBool::new(false),
            worker: Mutex::new(Some(SpoolWorker::new(weak.clone(), wake))),
            write_back: tokio::sync::Mutex::new(()),
        });
        Ok(Self { shared })
    }

    /// How long one call of the inner sink may take before it counts as a
    /// temporary failure: the batch goes to disk. Default: 10 s. Keep it
    /// below the layer's [`sink_timeout`](crate::UsageLayer::sink_timeout)
    /// (30 s by default), which bounds the whole call of this sink, the
    /// append and its sync included: past that the writer cancels the call
    /// and retries the batch itself, and an append already under way may
    /// still land on disk, so that batch is written twice (with the same
    /// ids: the bundled sinks keep one record per id).
    pub fn sink_timeout(self, timeout: Duration) -> Self {
        let us = timeout.max(Duration::from_micros(1)).as_micros();
        self.shared
            .timeout_us
            .store(u64::try_from(us).unwrap_or(u64::MAX), Ordering::Relaxed);
        self
    }

    /// The inner sink.
    pub fn inner(&self) -> &S {
        &self.shared.inner
    }

    /// Waits until every record the spool took before the call is written
    /// back to the inner sink, or counted as failed or dropped: as long as
    /// the inner sink is down, without a bound; see
    /// [`flush_timeout`](Self::flush_timeout). Returns at once when the
    /// write-back task is gone (its runtime shut down): what is on disk
    /// stays there, for the next spool on the directory.
    pub async fn flush(&self) {
        self.wait(None).await;
    }

    /// [`flush`](Self::flush), waiting at most `timeout`; returns whether
    /// everything was written back (or given up) in time.
    pub async fn flush_timeout(&self, timeout: Duration) -> bool {
        self.wait(Some(Instant::now() + timeout)).await
    }

    async fn wait(&self, deadline: Option<Instant>) -> bool {
        let shared = &*self.shared;
        shared.start();
        let target = shared.state().taken();
        let mut done = shared.done.subscribe();
        loop {
            if shared.state().finished() >= target {
                return true;
            }
            if deadline.is_some_and(|d| Instant::now() >= d) || self.worker_gone() {
                return false;
            }
            shared.wake.notify_one();
            // Woken by progress; re-checked every 50 ms, and at the deadline.
            let tick = Instant::now() + Duration::from_millis(50);
            let _ = tokio::time::timeout_at(deadline.map_or(tick, |d| d.min(tick)), done.changed())
                .await;
            done.borrow_and_update();
        }
    }

    /// Whether the write-back task was started or handed out, and has ended:
    /// it holds the only `Weak` of the spool (the worker slot is empty once
    /// the task left it).
    fn worker_gone(&self) -> bool {
        self.shared.started.load(Ordering::Acquire) && Arc::weak_count(&self.shared) == 0
    }
}

impl<S> Spooled<S> {
    /// The spool's counters, read at one instant.
    pub fn stats(&self) -> SpoolStats {
        self.shared.state().stats
    }
}

#[async_trait::async_trait]
impl<S: UsageSink> UsageSink for Spooled<S> {
    /// Stores `batch` in the inner sink, or on disk: straight through while
    /// the inner sink answers and nothing waits on disk; to the spool when
    /// it fails with a temporary error or a timeout, and while older records
    /// wait there (so records reach it in order). A permanent error is
    /// returned as it is. When the spool cannot store the batch (a full
    /// volume), the inner sink is tried (with nothing on disk) and its error
    /// returned, so that the writer retries as it would without a spool.
    async fn record(&self, batch: &[UsageRecord]) -> Result<(), SinkError> {
        let shared = &*self.shared;
        shared.start();
        if batch.is_empty() {
            return Ok(());
        }
        let direct = {
            let s = shared.state();
            s.stats.spooled == 0 && s.due()
        };
        let mut failure = None;
        if direct {
            match shared.try_inner(batch).await {
                Err(err) if err.is_temporary() => failure = Some(err),
                done => return done,
            }
        }
        let Err(spool_error) = shared.append(batch).await else {
            return Ok(());
        };
        let waiting = shared.state().stats.spooled;
        match failure {
            // Never worse than no spool: with nothing on disk to keep the
            // order of, the inner sink is tried, and its answer returned.
            None if waiting == 0 => shared.try_inner(batch).await,
            Some(err) => Err(err),
            None => Err(SinkError::unavailable(std::io::Error::new(
                spool_error.kind(),
                format!(
                    "usage spool cannot store the batch ({spool_error}), and {waiting} older records wait on disk"
                ),
            ))),
        }
    }

    async fn query(&self, query: &UsageQuery) -> Result<UsagePage, SinkError> {
        self.shared.inner.query(query).await
    }

    async fn get(&self, id: &str, scope: &ConsumerScope) -> Result<Option<UsageRecord>, SinkError> {
        self.shared.inner.get(id, scope).await
    }

    async fn summarize(&self, query: &SummaryQuery) -> Result<UsageSummary, SinkError> {
        self.shared.inner.summarize(query).await
    }

    /// Erases `consumer`'s records from the spool's files first (each
    /// segment holding one is rewritten without it, see
    /// [`SpoolStats::erased`]), then from the inner sink; returns both
    /// counts added. A write-back under way finishes first, and none starts
    /// meanwhile, so no spooled record of `consumer` reaches the inner sink
    /// after it erased them. An inner sink that cannot erase
    /// ([`Unsupported`](crate::SinkErrorKind::Unsupported)) fails the call,
    /// after the spool's copies are gone.
    async fn erase_consumer(&self, consumer: &str) -> Result<u64, SinkError> {
        let shared = &*self.shared;
        let _gate = shared.write_back.lock().await;
        let log = shared.log.clone();
        let who = consumer.to_owned();
        let on_disk = tokio::task::spawn_blocking(move || lock(&log).erase(&who))
            .await
            .map_err(|e| SinkError::message(crate::SinkErrorKind::Other, e.to_string()))?
            .map_err(|e| {
                SinkError::unavailable(e).with_context("usage spool: erasing a consumer's records")
            })?;
        shared.state().erased(on_disk);
        shared.publish();
        let stored = shared.inner.erase_consumer(consumer).await?;
        Ok(on_disk + stored)
    }

    fn pending_since(&self) -> Option<SystemTime> {
        let oldest = self.shared.state().oldest;
        oldest
            .into_iter()
            .chain(self.shared.inner.pending_since())
            .min()
    }
}

pub(super) fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}
