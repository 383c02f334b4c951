//! The worker: the future that drains the queue in batches, builds the records
//! and writes them, with retries (bounded by time), backoff, a timeout per call,
//! and a panic in the sink caught; with a disk spool, a batch the sink fails
//! on goes to the spool instead, and the spool is written back first.

use std::future::Future;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::pin::Pin;
use std::sync::{Arc, Mutex, Weak};
use std::task::{Context, Poll};
use std::time::{Duration, Instant, SystemTime};

use tokio::sync::watch;

use super::assemble::Assembler;
use super::queue::{End, Entry, Shared, State};
use super::spooler::Spooler;
use crate::captured::Captured;
use crate::spool::Spool;
use crate::{SinkError, SinkErrorKind, UsageRecord, UsageSink};

/// Queue slots kept allocated once a backlog is written.
const KEEP_CAPACITY: usize = 4096;

/// The first wait before a retry; it doubles after each failure.
pub(crate) const FIRST_BACKOFF: Duration = Duration::from_millis(100);
/// The longest wait between retries: a sink that comes back is written to
/// within 2 s.
pub(crate) const MAX_BACKOFF: Duration = Duration::from_secs(2);

/// The writer of a [`UsageLayer`](crate::UsageLayer), as a future to run on an
/// executor of your choice; from [`UsageLayer::pair`](crate::UsageLayer::pair),
/// as tower's `Buffer::pair` hands out its worker.
///
/// It completes when the writer stops: after
/// [`UsageHandle::shutdown`](crate::UsageHandle::shutdown), or once every
/// layer, service and handle of it is dropped and its queue is empty. It needs
/// tokio's timer (a tokio runtime with time enabled), since it waits for
/// `max_delay` and the sink timeout.
#[must_use = "the writer does nothing unless the future is polled (spawn it)"]
pub struct UsageWorker {
    inner: Pin<Box<dyn Future<Output = ()> + Send>>,
}

impl UsageWorker {
    pub(super) fn new(shared: Arc<Shared>, sink: Arc<dyn UsageSink>, spool: Option<Spool>) -> Self {
        Self {
            inner: Box::pin(run(shared, sink, spool.map(|s| Arc::new(Mutex::new(s))))),
        }
    }
}

impl Future for UsageWorker {
    type Output = ();

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        self.inner.as_mut().poll(cx)
    }
}

impl std::fmt::Debug for UsageWorker {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("UsageWorker").finish_non_exhaustive()
    }
}

/// Closes the writer when its task ends, also when its future is dropped
/// mid-batch (a runtime shutting down), so that `flush` and `shutdown` return
/// instead of waiting for it forever. What it still held, queued or in hand,
/// is counted as dropped, and later captures are dropped and counted too;
/// what is spooled stays in the spool (counted as spooled).
/// Holds a `Weak`, so the writer's check for being orphaned still counts the
/// strong references alone.
struct StopOnExit(Weak<Shared>);

impl Drop for StopOnExit {
    fn drop(&mut self) {
        let Some(shared) = self.0.upgrade() else {
            return;
        };
        let (lost, _spares) = {
            let mut s = shared.state();
            s.closed = true;
            s.stopped = true;
            // No capture is queued any more: the spare buffers are freed
            // (after the lock is released).
            let spares = std::mem::take(&mut s.spares);
            let lost = if s.queue.is_empty() && s.in_flight == 0 {
                0
            } else {
                s.abandon()
            };
            (lost, spares)
        };
        if std::thread::panicking() || lost > 0 {
            tracing::error!(
                target: "tower_usage",
                lost,
                "the usage writer stopped with records in hand: they are counted in stats().dropped, and no more records are written"
            );
        }
        // Wake any flush waiting on a writer that is gone.
        shared.publish();
        shared.done.send_modify(|_| {});
    }
}

/// How one batch ended.
pub(super) enum Outcome {
    Written,
    Failed(SinkError),
    Panicked,
    /// A shutdown deadline passed: the call was cancelled, the batch is
    /// counted as dropped.
    Aborted,
    /// The batch goes to the disk spool.
    Spool,
}

async fn run(shared: Arc<Shared>, sink: Arc<dyn UsageSink>, spool: Option<Arc<Mutex<Spool>>>) {
    let _stop = StopOnExit(Arc::downgrade(&shared));
    let mut abort = shared.abort.subscribe();
    let config = shared.config;
    let wake_at = config.wake_at();
    // Both buffers keep their capacity across rounds: a batch of records is
    // about 100 KB, and allocating one per round costs page faults.
    let mut batch: Vec<Entry> = Vec::new();
    let mut records: Vec<UsageRecord> = Vec::new();
    let mut assembler = Assembler::default();
    let mut failing = false;
    let mut failing_since: Option<Instant> = None;
    let mut panic_logged = false;
    let mut spooler = spool.map(Spooler::new);
    loop {
        // With a spool in use, the writer wakes for a full batch (fewer,
        // larger appends, each synced to disk) or the next probe of the sink.
        let (wait_for, delay, patient) = match &spooler {
            Some(sp) if sp.in_use(&shared) => {
                if sp.due() {
                    (0, Duration::ZERO, false)
                } else {
                    let probe = sp.next_probe.saturating_duration_since(Instant::now());
                    (config.spool_batch(), config.max_delay.min(probe), true)
                }
            }
            _ => (wake_at, config.max_delay, false),
        };
        // Enough to take now: `wait_for` captures, or half of `queue_bytes`
        // (nothing is in flight while the writer waits).
        let enough = |s: &State| s.queue.len() >= wait_for || s.bytes >= config.queue_bytes / 2;
        if wait_for > 0 && !enough(&shared.state()) {
            // Without a spool in use, any wake ends the wait (64 waiting, half
            // the queue's bytes, or a flush); with one, only a full batch
            // (see `WriterConfig::spool_batch`), half the bytes, or the
            // deadline does.
            let deadline = tokio::time::Instant::now() + delay;
            let aborted = loop {
                tokio::select! {
                    _ = tokio::time::timeout_at(deadline, shared.wake.notified()) => {}
                    _ = abort.wait_for(|a| *a) => break true,
                }
                if !patient || tokio::time::Instant::now() >= deadline || enough(&shared.state()) {
                    break false;
                }
            };
            if aborted {
                break;
            }
        }
        if let Some(sp) = spooler.as_mut() {
            if sp.due() && shared.state().spooled > 0 {
                if sp
                    .replay(&shared, &*sink, &mut records, &mut abort)
                    .await
                    .is_break()
                {
                    shared.publish();
                    break;
                }
                shared.publish();
            }
        }
        // Take one batch: it leaves the queue and is counted in flight, at once.
        let (bytes, since) = {
            let mut guard = shared.state();
            let s = &mut *guard;
            if s.abandoned {
                break;
            }
            // While the spool is written back, new captures wait in the
            // queue (they go after it) unless a whole batch is there (or half
            // of a small queue, or half its bytes): that one goes to the
            // spool, so the queue does not fill up.
            let replaying = spooler.as_ref().is_some_and(|sp| !sp.down) && s.spooled > 0;
            let n = if replaying
                && s.queue.len() < config.spool_batch()
                && s.bytes < config.queue_bytes / 2
            {
                0
            } else {
                s.queue.len().min(config.batch_size)
            };
            let mut bytes = 0;
            let mut since: Option<SystemTime> = None;
            for entry in s.queue.drain(..n) {
                bytes += entry.bytes;
                let arrival = entry.arrival();
                since = Some(since.map_or(arrival, |t| t.min(arrival)));
                batch.push(entry);
            }
            s.in_flight = n as u64;
            s.in_flight_bytes = bytes;
            s.in_flight_since = since;
            if s.queue.is_empty() && s.queue.capacity() > KEEP_CAPACITY {
                // After an outage: give back what the backlog grew to.
                s.queue.shrink_to(KEEP_CAPACITY);
            }
            if n == 0 {
                let orphaned = Arc::strong_count(&shared) == 1;
                // A writer shut down or left alone writes what it holds while
                // the sink answers, and leaves the spool to the next writer
                // when it does not (`shutdown_timeout` aborts at its
                // deadline).
                let spooled = spooler.is_some() && s.spooled > 0;
                let down = spooler.as_ref().is_some_and(|sp| sp.down);
                if s.queue.is_empty() && (orphaned || s.closed) && (!spooled || down) {
                    if spooled {
                        tracing::info!(
                            target: "tower_usage",
                            spooled = s.spooled,
                            "usage writer stopped while the sink is down: its spooled records stay in the spool for the next writer on its directory"
                        );
                    }
                    break;
                }
                continue;
            }
            (bytes, since)
        };
        if let Some(dropped) = shared.dropping.succeed() {
            tracing::info!(target: "tower_usage", dropped, "usage queue has room again");
        }
        records.clear();
        let mut unreadable = 0u64;
        for entry in batch.drain(..) {
            match assemble_caught(&mut assembler, entry.captured, &mut panic_logged) {
                Some(record) => records.push(record),
                None => unreadable += 1,
            }
            // A batch of hundreds of records would hold this worker thread
            // for milliseconds: each record spends a unit of the task's
            // cooperative budget, and the runtime takes the thread back for
            // other tasks (requests) when it is spent, as for any I/O.
            tokio::task::consume_budget().await;
        }
        if unreadable > 0 {
            shared.state().finish(unreadable, 0, End::Failed);
        }
        let n = records.len() as u64;
        let outcome = if records.is_empty() {
            Outcome::Written
        } else if let Some(sp) = spooler.as_mut() {
            if sp.in_use(&shared) {
                // Behind what is spooled (order), or the sink is down.
                Outcome::Spool
            } else {
                match once(&*sink, &records, config.sink_timeout, &mut abort).await {
                    Outcome::Failed(err) if err.is_temporary() => {
                        sp.sink_failed(&err, n);
                        Outcome::Spool
                    }
                    outcome => outcome,
                }
            }
        } else {
            write(&shared, &*sink, &records, &mut abort, &mut failing_since).await
        };
        match outcome {
            Outcome::Written => {
                shared.state().finish(n, bytes, End::Written);
                if n > 0 && std::mem::take(&mut failing) {
                    tracing::info!(target: "tower_usage", "usage sink recovered");
                }
            }
            Outcome::Spool => {
                let sp = spooler.as_mut().expect("spool outcome without a spool");
                records = sp.append(&shared, records, n, bytes, since).await;
            }
            Outcome::Failed(err) => {
                shared.state().finish(n, bytes, End::Failed);
                if !std::mem::replace(&mut failing, true) {
                    tracing::warn!(
                        target: "tower_usage",
                        error = %err,
                        records = n,
                        "usage sink failed; records counted in stats().failed (further failures are counted, not logged, until it recovers)"
                    );
                }
            }
            Outcome::Panicked => {
                shared.state().finish(n, bytes, End::Failed);
                if !std::mem::replace(&mut failing, true) {
                    tracing::error!(
                        target: "tower_usage",
                        records = n,
                        "usage sink panicked in record(); the batch is counted in stats().failed and the writer goes on (further failures are counted, not logged, until it recovers)"
                    );
                }
            }
            Outcome::Aborted => {
                shared.state().finish(n, bytes, End::Dropped);
                records.clear();
                shared.publish();
                break;
            }
        }
        // Dropped now, while their memory is still in cache; their header
        // maps serve the next batch.
        for record in records.drain(..) {
            assembler.recycle(record);
        }
        // Their capture buffers, for the request path to fill again; those
        // the pool has no room for are freed here, after the lock is released.
        let buffers = assembler.reclaim_buffers();
        if !buffers.is_empty() {
            shared.state().spares.put_from(buffers);
            buffers.clear();
        }
        shared.publish();
    }
}

/// [`Assembler::assemble`], with a panic (a bug, hit by some input) caught: that one
/// capture is counted as failed, and the writer goes on. The first panic of a
/// writer is logged; later ones only counted, so a client cannot flood the log.
fn assemble_caught(
    assembler: &mut Assembler,
    captured: Captured,
    logged: &mut bool,
) -> Option<UsageRecord> {
    match std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        assembler.assemble(captured)
    })) {
        Ok(record) => Some(record),
        Err(_) => {
            if !std::mem::replace(logged, true) {
                tracing::error!(
                    target: "tower_usage",
                    "building a usage record panicked; such captures are counted in stats().failed (logged once)"
                );
            }
            None
        }
    }
}

/// Writes one batch: retried with backoff while the error is temporary and the
/// sink has been failing for less than `max_retry_time` (and `max_retries`
/// allows); a panic in the sink is caught and ends the batch.
async fn write(
    shared: &Shared,
    sink: &dyn UsageSink,
    records: &[UsageRecord],
    abort: &mut watch::Receiver<bool>,
    failing_since: &mut Option<Instant>,
) -> Outcome {
    let config = &shared.config;
    let mut backoff = FIRST_BACKOFF;
    let mut attempt = 0u32;
    loop {
        let result = tokio::select! {
            result = call(sink, records, config.sink_timeout) => result,
            _ = abort.wait_for(|a| *a) => return Outcome::Aborted,
        };
        let err = match result {
            Ok(()) => {
                *failing_since = None;
                return Outcome::Written;
            }
            Err(None) => return Outcome::Panicked,
            Err(Some(err)) => err,
        };
        if !err.is_temporary() {
            return Outcome::Failed(err);
        }
        let since = *failing_since.get_or_insert_with(Instant::now);
        if attempt >= config.max_retries || since.elapsed() >= config.max_retry_time {
            return Outcome::Failed(err);
        }
        attempt += 1;
        shared.state().retried += 1;
        tracing::debug!(target: "tower_usage", error = %err, attempt, "retrying usage batch");
        tokio::select! {
            _ = tokio::time::sleep(backoff) => {}
            _ = abort.wait_for(|a| *a) => return Outcome::Aborted,
        }
        backoff = (backoff * 2).min(MAX_BACKOFF);
    }
}

/// One `record` call, not retried, cancelled by a shutdown deadline.
pub(super) async fn once(
    sink: &dyn UsageSink,
    records: &[UsageRecord],
    timeout: Duration,
    abort: &mut watch::Receiver<bool>,
) -> Outcome {
    let result = tokio::select! {
        result = call(sink, records, timeout) => result,
        _ = abort.wait_for(|a| *a) => return Outcome::Aborted,
    };
    match result {
        Ok(()) => Outcome::Written,
        Err(None) => Outcome::Panicked,
        Err(Some(err)) => Outcome::Failed(err),
    }
}

/// One `record` call, bounded by `timeout` (a timeout is a temporary
/// failure), with a panic caught: `Err(None)`.
async fn call(
    sink: &dyn UsageSink,
    records: &[UsageRecord],
    timeout: Duration,
) -> Result<(), Option<SinkError>> {
    let Ok(mut fut) = catch_unwind(AssertUnwindSafe(|| sink.record(records))) else {
        return Err(None);
    };
    let caught = std::future::poll_fn(move |cx| {
        match catch_unwind(AssertUnwindSafe(|| fut.as_mut().poll(cx))) {
            Ok(poll) => poll.map(Some),
            Err(_) => Poll::Ready(None),
        }
    });
    match tokio::time::timeout(timeout, caught).await {
        Ok(Some(result)) => result.map_err(Some),
        Ok(None) => Err(None),
        Err(_) => Err(Some(SinkError::message(
            SinkErrorKind::Unavailable,
            format!(
                "sink did not store a batch of {} within {timeout:?}",
                records.len()
            ),
        ))),
    }
}
