//! The worker: the future that drains the queue in batches, builds the
//! records and writes them. One round is four named steps: wait for work
//! ([`Worker::wait_for_work`]), take a batch ([`Worker::take_batch`]),
//! assemble its records ([`Worker::assemble`]), write them and count how
//! that ended ([`retry`](super::retry)); then the allocations go back for
//! the next round ([`Worker::recycle`]).

use std::future::Future;
use std::ops::ControlFlow;
use std::pin::Pin;
use std::sync::{Arc, Weak};
use std::task::{Context, Poll};
use std::time::SystemTime;

use tokio::sync::watch;

use super::assemble::Assembler;
use super::metrics::{self, Report};
use super::queue::{End, Entry, Shared, State};
use super::retry::Retry;
use crate::captured::Captured;
use crate::{UsageRecord, UsageSink};

/// Queue slots kept allocated once a backlog is written.
const KEEP_CAPACITY: usize = 4096;

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
    pub(super) fn new(shared: Arc<Shared>, sink: Arc<dyn UsageSink>) -> Self {
        Self {
            inner: Box::pin(run(shared, sink)),
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
///
/// It holds the writer's [metrics report](Report) too, so that the last
/// report counts what it abandons.
struct StopOnExit {
    shared: Weak<Shared>,
    report: Report,
}

impl Drop for StopOnExit {
    fn drop(&mut self) {
        let Some(shared) = self.shared.upgrade() else {
            self.report.retract();
            return;
        };
        let lost = {
            let mut s = shared.state();
            s.closed = true;
            s.stopped = true;
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
        self.report.report_last(&shared);
        self.report.retract();
        // Wake any flush waiting on a writer that is gone.
        shared.publish();
        shared.done.send_modify(|_| {});
    }
}

async fn run(shared: Arc<Shared>, sink: Arc<dyn UsageSink>) {
    let mut stop = StopOnExit {
        shared: Arc::downgrade(&shared),
        report: Report::new(),
    };
    // Declared after `stop`, so dropped before it: the sink is let go
    // before a waiting `shutdown` hears that the writer stopped.
    let mut worker = Worker {
        abort: shared.abort.subscribe(),
        shared,
        sink,
        batch: Vec::new(),
        records: Vec::new(),
        assembler: Assembler::default(),
        retry: Retry::default(),
        panic_logged: false,
    };
    loop {
        if worker.wait_for_work().await.is_break() {
            break;
        }
        let bytes = match worker.take_batch() {
            ControlFlow::Break(()) => break,
            ControlFlow::Continue(None) => {
                stop.report.report(&worker.shared);
                continue;
            }
            ControlFlow::Continue(Some(bytes)) => bytes,
        };
        // The batch in hand shows in the gauges while it is written.
        stop.report.report(&worker.shared);
        worker.assemble().await;
        let flow = worker.write(bytes).await;
        worker.recycle();
        // Before `publish`: once a flush returns, the metrics are up to date.
        stop.report.report(&worker.shared);
        worker.shared.publish();
        if flow.is_break() {
            break;
        }
    }
    // The sink goes with the writer: what it still holds unreadable stays
    // pending for `complete_until`.
    let left = worker.sink.pending_since();
    worker.shared.state().left_in_sink = left;
}

/// What the worker keeps across rounds. Both buffers keep their capacity: a
/// batch of records is about 100 KB, and allocating one per round costs page
/// faults.
struct Worker {
    shared: Arc<Shared>,
    sink: Arc<dyn UsageSink>,
    abort: watch::Receiver<bool>,
    batch: Vec<Entry>,
    records: Vec<UsageRecord>,
    assembler: Assembler,
    retry: Retry,
    panic_logged: bool,
}

impl Worker {
    /// Waits until enough captures wait (the wake point, or half of
    /// `queue_bytes`: nothing is in flight while the writer waits), a flush
    /// asks, or `max_delay` passed. `Break` when a shutdown deadline passed.
    async fn wait_for_work(&mut self) -> ControlFlow<()> {
        let config = self.shared.config;
        let wake_at = config.wake_at();
        let enough = |s: &State| s.queue.len() >= wake_at || s.bytes >= config.queue_bytes / 2;
        if enough(&self.shared.state()) {
            return ControlFlow::Continue(());
        }
        let deadline = tokio::time::Instant::now() + config.max_delay;
        tokio::select! {
            _ = tokio::time::timeout_at(deadline, self.shared.wake.notified()) => ControlFlow::Continue(()),
            _ = self.abort.wait_for(|a| *a) => ControlFlow::Break(()),
        }
    }

    /// Takes one batch: it leaves the queue and is counted in flight, at
    /// once. `Continue(None)` when the queue is empty; `Break` when the
    /// writer is done (abandoned, or shut down or left alone with nothing
    /// queued).
    fn take_batch(&mut self) -> ControlFlow<(), Option<usize>> {
        let config = &self.shared.config;
        let mut guard = self.shared.state();
        let s = &mut *guard;
        if s.abandoned {
            return ControlFlow::Break(());
        }
        let n = s.queue.len().min(config.batch_size);
        let mut bytes = 0;
        let mut since: Option<SystemTime> = None;
        for entry in s.queue.drain(..n) {
            bytes += entry.bytes;
            let arrival = entry.arrival();
            since = Some(since.map_or(arrival, |t| t.min(arrival)));
            self.batch.push(entry);
        }
        s.in_flight = n as u64;
        s.in_flight_bytes = bytes;
        s.in_flight_since = since;
        if s.queue.is_empty() && s.queue.capacity() > KEEP_CAPACITY {
            // After an outage: give back what the backlog grew to.
            s.queue.shrink_to(KEEP_CAPACITY);
        }
        if n > 0 {
            drop(guard);
            if let Some(dropped) = self.shared.dropping.succeed() {
                tracing::info!(target: "tower_usage", dropped, "usage queue has room again");
            }
            return ControlFlow::Continue(Some(bytes));
        }
        // A writer shut down or left alone ends once its queue is empty.
        let orphaned = Arc::strong_count(&self.shared) == 1;
        if s.queue.is_empty() && (orphaned || s.closed) {
            return ControlFlow::Break(());
        }
        ControlFlow::Continue(None)
    }

    /// Builds the records of the batch taken; a capture that cannot be built
    /// is counted as failed.
    async fn assemble(&mut self) {
        self.records.clear();
        metrics::record_sizes(self.batch.iter().map(|entry| entry.bytes));
        let mut unreadable = 0u64;
        for entry in self.batch.drain(..) {
            match assemble_caught(&mut self.assembler, entry.captured, &mut self.panic_logged) {
                Some(record) => self.records.push(record),
                None => unreadable += 1,
            }
            // A batch of hundreds of records would hold this worker thread
            // for milliseconds: each record spends a unit of the task's
            // cooperative budget, and the runtime takes the thread back for
            // other tasks (requests) when it is spent, as for any I/O.
            tokio::task::consume_budget().await;
        }
        if unreadable > 0 {
            self.shared.state().finish(unreadable, 0, End::Failed);
        }
    }

    /// Writes the records built (`bytes`: what their captures held), with
    /// retries, and counts how that ended. `Break` when a shutdown deadline
    /// passed.
    async fn write(&mut self, bytes: usize) -> ControlFlow<()> {
        if !self.records.is_empty() {
            metrics::batch(self.records.len());
        }
        let outcome = self
            .retry
            .write(&self.shared, &*self.sink, &self.records, &mut self.abort)
            .await;
        let n = self.records.len() as u64;
        let flow = self.retry.settle(&self.shared, outcome, n, bytes);
        if flow.is_break() {
            self.records.clear();
        }
        flow
    }

    /// Gives what the written records allocated back for the next round.
    fn recycle(&mut self) {
        // Dropped now, while their memory is still in cache; their header
        // maps serve the next batch.
        for record in self.records.drain(..) {
            self.assembler.recycle(record);
        }
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
