//! [`UsageHandle`]: flush, read the counters ([`WriterStats`]), shut down.

use std::time::Duration;

use tokio::time::Instant;

use super::queue::Queue;

/// How long `shutdown_timeout` waits, past its deadline, for the writer to
/// cancel its `record` call and count its batch.
const ABORT_GRACE: Duration = Duration::from_millis(100);

/// Counters of the writer, from [`UsageHandle::stats`], all read at one instant.
///
/// Every capture is in exactly one place, so in every snapshot
/// `captured == written + failed + dropped + queued + in_flight`
/// ([`is_balanced`](Self::is_balanced)). A sink that acknowledges records
/// before it can return them (one that buffers them on disk, say) keeps
/// counters of its own: what it acknowledged is `written` here.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct WriterStats {
    /// Exchanges the layer captured.
    pub captured: u64,
    /// Records the sink acknowledged (`record` returned `Ok`).
    pub written: u64,
    /// Captures dropped: the queue was full (the new capture is dropped), the
    /// writer was shut down, or a shutdown deadline passed with them unwritten.
    pub dropped: u64,
    /// Records given up on: the sink failed on their batch with a permanent
    /// error, kept failing for longer than
    /// [`max_retry_time`](crate::UsageLayer::max_retry_time), or panicked; or
    /// the capture could not be turned into a record.
    pub failed: u64,
    /// Batch writes that were retried.
    pub retried: u64,
    /// Captures waiting in the queue right now.
    pub queued: u64,
    /// Captures in the writer's hands right now: the batch being written,
    /// or waiting for a retry.
    pub in_flight: u64,
}

/// The writer's counters under their first name: the same type as
/// [`WriterStats`], kept so that code written against it still compiles.
pub type RecorderStats = WriterStats;

impl WriterStats {
    /// Whether every capture is accounted for:
    /// `captured == written + failed + dropped + queued + in_flight`. True of
    /// every value `stats()` returns.
    pub fn is_balanced(&self) -> bool {
        self.captured == self.written + self.failed + self.dropped + self.queued + self.in_flight
    }

    /// Captures not yet written, failed or dropped: `queued + in_flight`.
    pub fn pending(&self) -> u64 {
        self.queued + self.in_flight
    }
}

/// What a bounded [`flush_timeout`](UsageHandle::flush_timeout) or
/// [`shutdown_timeout`](UsageHandle::shutdown_timeout) achieved.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum FlushOutcome {
    /// Every capture accepted before the call is written, failed or dropped
    /// (see [`WriterStats`]).
    Complete,
    /// The deadline passed first, or the writer stopped. `pending` captures
    /// accepted before the call were still queued or in flight. After
    /// `flush_timeout` they stay (the writer goes on); after
    /// `shutdown_timeout` they were abandoned and counted in
    /// [`WriterStats::dropped`].
    TimedOut {
        /// Captures not finished at the deadline.
        pending: u64,
    },
}

impl FlushOutcome {
    /// Whether everything was finished in time.
    pub fn is_complete(&self) -> bool {
        matches!(self, Self::Complete)
    }
}

/// Controls the writer of a [`UsageLayer`](crate::UsageLayer): flush, stats, shutdown.
///
/// Cheap to clone; every clone controls the same writer.
///
/// ```
/// use std::time::Duration;
/// use tower_usage::{MemorySink, UsageLayer};
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() {
/// let layer = UsageLayer::new(MemorySink::new());
/// let handle = layer.handle();
/// // ... serve requests through `layer` ...
/// handle.flush().await; // everything captured so far is in the sink
/// let stats = handle.stats();
/// assert_eq!(stats.dropped, 0);
/// assert!(stats.is_balanced());
/// assert_eq!(handle.complete_until(), None); // nothing pending
/// // Within a grace period: what is not written by then is counted as dropped.
/// let outcome = handle.shutdown_timeout(Duration::from_secs(10)).await;
/// assert!(outcome.is_complete());
/// # }
/// ```
#[derive(Clone, Debug)]
pub struct UsageHandle {
    queue: Queue,
}

impl UsageHandle {
    pub(crate) fn new(queue: Queue) -> Self {
        Self { queue }
    }

    /// Returns once every capture accepted before the call has been written to
    /// the sink (the sink acknowledged it) or accounted as failed or dropped:
    /// never while one of them is still queued or in the writer's hands,
    /// unless the writer has stopped.
    ///
    /// How long that takes against a failing sink: a batch that fails with a
    /// temporary error is retried for up to
    /// [`max_retry_time`](crate::UsageLayer::max_retry_time) (5 minutes by
    /// default), each call bounded by
    /// [`sink_timeout`](crate::UsageLayer::sink_timeout) (30 s); once the
    /// sink has failed for that long, each later batch is tried once, and
    /// while it *hangs* (its last call timed out) a batch is tried only when
    /// 2 s have passed since the last call, the others failing at once. So
    /// against a sink that is down or hangs, a flush returns within about
    /// `max_retry_time + 2 × sink_timeout` (6 minutes by default), whatever
    /// the number of queued captures; a sink that fails fast costs one quick
    /// call per batch past `max_retry_time`. Use
    /// [`flush_timeout`](Self::flush_timeout) to bound the wait.
    ///
    /// A record counts as written once the sink acknowledged it: with a sink
    /// that buffers records before it stores them (on disk, say), this
    /// returns once every record is in that buffer; the sink's own flush, if
    /// it has one, waits for the rest.
    pub async fn flush(&self) {
        self.wait(None).await;
    }

    /// [`flush`](Self::flush), waiting at most `timeout`. Captures not finished
    /// by then stay queued: the writer goes on with them.
    pub async fn flush_timeout(&self, timeout: Duration) -> FlushOutcome {
        self.wait(Some(Instant::now() + timeout)).await
    }

    async fn wait(&self, deadline: Option<Instant>) -> FlushOutcome {
        self.queue.start();
        let shared = &self.queue.shared;
        let target = shared.state().accepted;
        let mut done = shared.done.subscribe();
        loop {
            let (finished, stopped) = {
                let s = shared.state();
                (s.finished, s.stopped)
            };
            if finished >= target {
                return FlushOutcome::Complete;
            }
            // A writer that has stopped finishes nothing more.
            if stopped || deadline.is_some_and(|d| Instant::now() >= d) {
                return FlushOutcome::TimedOut {
                    pending: target - finished,
                };
            }
            shared.wake.notify_one();
            // Re-check periodically, and at the deadline.
            let mut until = Instant::now() + Duration::from_millis(50);
            if let Some(d) = deadline {
                until = until.min(d);
            }
            let _ = tokio::time::timeout_at(until, done.changed()).await;
            done.borrow_and_update();
        }
    }

    /// The writer's counters, read at one instant.
    pub fn stats(&self) -> WriterStats {
        self.queue.shared.stats()
    }

    /// An instant before which every record is stored (or counted as failed
    /// or dropped in [`stats`](Self::stats)): no later than the arrival
    /// (`created_at`) of any exchange still in flight (a long poll, an event
    /// stream, a slow upload: its record is made when it ends), nor of any
    /// capture not yet written (queued, in the writer's hands, waiting for a
    /// retry), nor, when the sink says it holds records it acknowledged but
    /// cannot return yet ([`UsageSink::pending_since`](crate::UsageSink::pending_since):
    /// a sink that buffers records on disk, say), of the oldest of those.
    /// `None` when nothing is in flight or pending.
    ///
    /// O(1): the oldest exchange in flight, then the queue's first capture
    /// (which carries the oldest arrival in flight when it arrived) and the
    /// batch in hand, each under one short lock.
    pub fn complete_until(&self) -> Option<time::OffsetDateTime> {
        // In flight first: an exchange counted out of it is queued by then.
        let in_flight = self.queue.shared.arrivals.oldest();
        let shared = &self.queue.shared;
        let sink = shared.sink_ref.upgrade().map(|s| s.pending_since());
        let s = shared.state();
        let since = s
            .in_flight_since
            .into_iter()
            .chain(sink.unwrap_or(s.left_in_sink))
            .chain(s.queue.front().map(|e| e.arrival()))
            .chain(in_flight)
            .min()?;
        Some(time::OffsetDateTime::from(since))
    }

    /// Flushes, then stops the writer, and returns once it has stopped (and
    /// let go of its sink: a sink that holds a resource, a lock or a pool,
    /// is dropped then unless you hold a clone), or 100 ms after the flush
    /// if it does not (a worker from [`pair`](crate::UsageLayer::pair) that
    /// is not running). Captures after this are dropped and counted. Can take as long as [`flush`](Self::flush);
    /// [`shutdown_timeout`](Self::shutdown_timeout) bounds it.
    pub async fn shutdown(self) {
        self.shutdown_inner(None).await;
    }

    /// [`shutdown`](Self::shutdown) within `timeout` (a grace period before
    /// SIGKILL, say): what is not written by then (queued, or the batch in the
    /// writer's hands, whose `record` call is cancelled) is abandoned and
    /// counted in [`WriterStats::dropped`], and the writer ends. Returns
    /// within `timeout` plus at most 200 ms, in which the writer cancels its
    /// call (a batch whose call ended first counts as written) and stops.
    pub async fn shutdown_timeout(self, timeout: Duration) -> FlushOutcome {
        self.shutdown_inner(Some(Instant::now() + timeout)).await
    }

    async fn shutdown_inner(self, deadline: Option<Instant>) -> FlushOutcome {
        let shared = self.queue.shared.clone();
        shared.state().closed = true;
        let outcome = self.wait(deadline).await;
        if !outcome.is_complete() && !shared.state().stopped {
            // The queue is dropped at once; the writer cancels its `record`
            // call and counts its batch itself (written, if the call ended
            // first), unless it does not answer within the grace.
            let mut lost = shared.state().drop_queued();
            shared.abort.send_replace(true);
            shared.publish();
            let mut done = shared.done.subscribe();
            let grace = Instant::now() + ABORT_GRACE;
            while Instant::now() < grace && shared.state().in_flight > 0 {
                let _ = tokio::time::timeout_at(grace, done.changed()).await;
            }
            lost += shared.state().abandon();
            shared.publish();
            tracing::warn!(
                target: "tower_usage",
                lost,
                "usage writer shut down at its deadline: unwritten records counted in stats().dropped"
            );
        }
        // The writer ends as soon as it sees its queue empty: wait for it
        // (and so for it to let go of the sink), for up to the grace (a
        // writer handed out by `pair` may not be running at all).
        let mut done = shared.done.subscribe();
        let until = Instant::now() + ABORT_GRACE;
        while !shared.state().stopped && Instant::now() < until {
            shared.wake.notify_one();
            let _ = tokio::time::timeout_at(until, done.changed()).await;
        }
        outcome
    }
}
