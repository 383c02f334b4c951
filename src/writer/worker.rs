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

use super::assemble::assemble;
use super::queue::{lock, End, Entry, Shared};
use super::WAKE_AT;
use crate::captured::Captured;
use crate::spool::{self, Spool};
use crate::streak::Streak;
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
/// is counted as dropped, and later captures are dropped and counted too.
/// Holds a `Weak`, so the writer's check for being orphaned still counts the
/// strong references alone.
struct StopOnExit(Weak<Shared>);

impl Drop for StopOnExit {
    fn drop(&mut self) {
        let Some(shared) = self.0.upgrade() else {
            return;
        };
        let lost = {
            let mut s = shared.state();
            s.closed = true;
            if s.queue.is_empty() && s.in_flight == 0 {
                0
            } else {
                s.abandon()
            }
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
    }
}

/// How one batch ended.
enum Outcome {
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
    let wake_at = config.batch_size.min(WAKE_AT);
    // Both buffers keep their capacity across rounds: a batch of records is
    // about 100 KB, and allocating one per round costs page faults.
    let mut batch: Vec<Entry> = Vec::new();
    let mut records: Vec<UsageRecord> = Vec::new();
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
                    (config.batch_size, config.max_delay.min(probe), true)
                }
            }
            _ => (wake_at, config.max_delay, false),
        };
        if wait_for > 0 && shared.state().queue.len() < wait_for {
            // Without a spool in use, any wake ends the wait (8 waiting, or a
            // flush); with one, only a full batch or the deadline does.
            let deadline = tokio::time::Instant::now() + delay;
            let aborted = loop {
                tokio::select! {
                    _ = tokio::time::timeout_at(deadline, shared.wake.notified()) => {}
                    _ = abort.wait_for(|a| *a) => break true,
                }
                if !patient
                    || tokio::time::Instant::now() >= deadline
                    || shared.state().queue.len() >= wait_for
                {
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
            // queue (they go after it) unless a whole batch is there: that
            // one goes to the spool, so the queue does not fill up.
            let replaying = spooler.as_ref().is_some_and(|sp| !sp.down) && s.spooled > 0;
            let n = if replaying && s.queue.len() < config.batch_size {
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
                // A writer left alone writes what it holds while the sink
                // answers, and leaves the spool to the next writer when it
                // does not; a writer shut down writes it all (`shutdown`
                // flushes, `shutdown_timeout` aborts at its deadline).
                let spooled = spooler.is_some() && s.spooled > 0;
                let down = spooler.as_ref().is_some_and(|sp| sp.down);
                if s.queue.is_empty()
                    && ((orphaned && (!spooled || down)) || (s.closed && !spooled))
                {
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
            match assemble_caught(entry.captured, &mut panic_logged) {
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
        // Dropped now, while their memory is still in cache.
        records.clear();
        shared.publish();
    }
}

/// The writer's side of the disk spool: when to probe the sink, and the
/// blocking file work, run on tokio's blocking pool.
struct Spooler {
    spool: Arc<Mutex<Spool>>,
    /// The sink failed with a temporary error, and has not answered since.
    down: bool,
    /// When the sink may be tried next (with the oldest spooled records).
    next_probe: Instant,
    backoff: Duration,
    /// The sink's failure streak (one warning), its refusals of spooled
    /// records, the spool's evictions and the spool's own errors.
    sink_streak: Streak,
    refused_streak: Streak,
    full_streak: Streak,
    error_streak: Streak,
    /// A record larger than the whole spool was logged.
    refused_logged: bool,
}

impl Spooler {
    fn new(spool: Arc<Mutex<Spool>>) -> Self {
        Self {
            spool,
            down: false,
            next_probe: Instant::now(),
            backoff: FIRST_BACKOFF,
            sink_streak: Streak::new(),
            refused_streak: Streak::new(),
            full_streak: Streak::new(),
            error_streak: Streak::new(),
            refused_logged: false,
        }
    }

    /// Whether new batches go to the spool: the sink is down, or records wait
    /// in the spool (to be written before them, in order).
    fn in_use(&self, shared: &Shared) -> bool {
        self.down || shared.state().spooled > 0
    }

    /// Whether the sink may be written (probed) now.
    fn due(&self) -> bool {
        !self.down || Instant::now() >= self.next_probe
    }

    fn sink_failed(&mut self, err: &SinkError, n: u64) {
        if !self.down {
            self.backoff = FIRST_BACKOFF;
        }
        self.down = true;
        self.next_probe = Instant::now() + self.backoff;
        self.backoff = (self.backoff * 2).min(MAX_BACKOFF);
        if self.sink_streak.fail() {
            tracing::warn!(
                target: "tower_usage",
                error = %err,
                records = n,
                "usage sink failed; records go to the disk spool until it answers again (counted in stats().spooled; further failures are counted, not logged)"
            );
        }
    }

    fn sink_answered(&mut self) {
        self.down = false;
        self.backoff = FIRST_BACKOFF;
        if let Some(failures) = self.sink_streak.succeed() {
            tracing::info!(target: "tower_usage", failures, "usage sink answers again; writing the spool back");
        }
    }

    /// Runs `f` on the spool, on the blocking pool.
    async fn blocking<T: Send + 'static>(
        &self,
        f: impl FnOnce(&mut Spool) -> T + Send + 'static,
    ) -> Option<T> {
        let spool = self.spool.clone();
        tokio::task::spawn_blocking(move || f(&mut lock(&spool)))
            .await
            .ok()
    }

    /// Appends the batch in hand to the spool; hands the (emptied) vector back.
    async fn append(
        &mut self,
        shared: &Shared,
        records: Vec<UsageRecord>,
        n: u64,
        bytes: usize,
        since: Option<SystemTime>,
    ) -> Vec<UsageRecord> {
        let done = self
            .blocking(move |spool| {
                let result = spool.append(&records);
                (records, result)
            })
            .await;
        let (records, appended) = match done {
            Some((records, appended)) => (records, appended),
            None => (
                Vec::new(),
                spool::Appended {
                    error: Some(std::io::Error::other("the spool's blocking task failed")),
                    ..spool::Appended::default()
                },
            ),
        };
        let spool::Appended {
            stored,
            evicted,
            refused,
            error,
        } = appended;
        {
            let mut s = shared.state();
            s.spooled(stored, bytes, evicted, since);
            s.finish(n - stored, 0, End::Failed);
        }
        // A full spool stays full until the sink takes records from it: one
        // warning for all the evictions until then.
        if evicted > 0 && self.full_streak.fail() {
            tracing::warn!(
                target: "tower_usage",
                evicted,
                "usage spool full: its oldest records are evicted to make room (counted in stats().dropped; logged once until the sink takes records again)"
            );
        }
        if refused > 0 && !std::mem::replace(&mut self.refused_logged, true) {
            tracing::warn!(
                target: "tower_usage",
                refused,
                "usage spool: records larger than the whole spool are counted in stats().failed (logged once)"
            );
        }
        match error {
            None => {
                if let Some(failures) = self.error_streak.succeed() {
                    tracing::info!(target: "tower_usage", failures, "usage spool writes again");
                }
            }
            Some(err) => {
                if self.error_streak.fail() {
                    tracing::error!(
                        target: "tower_usage",
                        error = %err,
                        records = n - stored - refused,
                        "usage spool write failed: those records are counted in stats().failed (further failures are counted, not logged)"
                    );
                }
            }
        }
        records
    }

    /// Writes the oldest spooled records to the sink, once; on success or a
    /// permanent failure they leave the spool. `Break` when a shutdown
    /// deadline passed (they stay in the spool).
    async fn replay(
        &mut self,
        shared: &Shared,
        sink: &dyn UsageSink,
        records: &mut Vec<UsageRecord>,
        abort: &mut watch::Receiver<bool>,
    ) -> std::ops::ControlFlow<()> {
        use std::ops::ControlFlow::Continue;
        let max = shared.config.batch_size;
        let mut buf = std::mem::take(records);
        let peeked = self
            .blocking(move |spool| {
                let result = spool.peek(max, &mut buf);
                (buf, result)
            })
            .await;
        let peeked = match peeked {
            Some((buf, Ok(peeked))) => {
                *records = buf;
                peeked
            }
            Some((buf, Err(err))) => {
                *records = buf;
                // The oldest segment cannot be read: skip it, counted.
                let skipped = self.blocking(Spool::skip_oldest).await;
                let skipped = skipped.and_then(Result::ok).unwrap_or(0);
                shared.state().evicted(skipped);
                if self.error_streak.fail() {
                    tracing::error!(
                        target: "tower_usage",
                        error = %err,
                        skipped,
                        "usage spool read failed: the oldest segment is skipped (counted in stats().dropped)"
                    );
                }
                return Continue(());
            }
            None => return Continue(()),
        };
        let frames = peeked.records + peeked.undecodable;
        if frames == 0 {
            // The counters say records are spooled, the files hold none (a
            // spool task that failed after writing): count the difference as
            // dropped rather than look for them again and again.
            let left = self.blocking(|spool| spool.records()).await.unwrap_or(0);
            let mut s = shared.state();
            let lost = s.spooled.saturating_sub(left);
            s.evicted(lost);
            drop(s);
            tracing::error!(target: "tower_usage", lost, "usage spool holds fewer records than counted: the difference is counted in stats().dropped");
            return Continue(());
        }
        {
            let mut s = shared.state();
            if let Some(first) = records.first() {
                // The oldest record still in the spool.
                s.spooled_since = Some(spool::arrival(first));
            }
            s.replaying = true;
        }
        let flow = self.write_back(shared, sink, records, peeked, abort).await;
        shared.state().replaying = false;
        flow
    }

    /// Writes a batch read from the spool, once, and acknowledges it unless
    /// the failure is temporary.
    async fn write_back(
        &mut self,
        shared: &Shared,
        sink: &dyn UsageSink,
        records: &mut Vec<UsageRecord>,
        peeked: spool::Peeked,
        abort: &mut watch::Receiver<bool>,
    ) -> std::ops::ControlFlow<()> {
        use std::ops::ControlFlow::{Break, Continue};
        let end = if records.is_empty() {
            End::Failed
        } else {
            match once(sink, records, shared.config.sink_timeout, abort).await {
                Outcome::Written => {
                    self.sink_answered();
                    if let Some(batches) = self.refused_streak.succeed() {
                        tracing::info!(target: "tower_usage", batches, "usage sink takes spooled records again");
                    }
                    let _ = self.full_streak.succeed();
                    End::Written
                }
                Outcome::Failed(err) if err.is_temporary() => {
                    // The batch is tried again at the next probe.
                    shared.state().retried += 1;
                    self.sink_failed(&err, peeked.records);
                    records.clear();
                    return Continue(());
                }
                Outcome::Failed(err) => {
                    self.sink_answered();
                    if self.refused_streak.fail() {
                        tracing::warn!(
                            target: "tower_usage",
                            error = %err,
                            records = peeked.records,
                            "usage sink refused spooled records (a permanent error): counted in stats().failed (further refusals are counted, not logged)"
                        );
                    }
                    End::Failed
                }
                Outcome::Panicked => {
                    if self.refused_streak.fail() {
                        tracing::error!(
                            target: "tower_usage",
                            records = peeked.records,
                            "usage sink panicked in record() on spooled records: counted in stats().failed (further failures are counted, not logged)"
                        );
                    }
                    End::Failed
                }
                Outcome::Aborted | Outcome::Spool => {
                    records.clear();
                    return Break(());
                }
            }
        };
        records.clear();
        if let Some(Err(err)) = self.blocking(Spool::ack).await {
            // Written, but the cursor or the segment's delete failed: a
            // restart would write these again (sinks keep one record per id).
            if self.error_streak.fail() {
                tracing::warn!(target: "tower_usage", error = %err, "usage spool: recording written records failed; a restart may write them again");
            }
        }
        let mut s = shared.state();
        s.unspooled(peeked.records, end);
        s.unspooled(peeked.undecodable, End::Failed);
        Continue(())
    }
}

/// [`assemble`], with a panic (a bug, hit by some input) caught: that one
/// capture is counted as failed, and the writer goes on. The first panic of a
/// writer is logged; later ones only counted, so a client cannot flood the log.
fn assemble_caught(captured: Captured, logged: &mut bool) -> Option<UsageRecord> {
    match std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| assemble(captured))) {
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
async fn once(
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
