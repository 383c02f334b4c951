//! [`UsageHandle`]: flush, read the counters ([`RecorderStats`]), shut down.

use std::time::Duration;

use tokio::time::Instant;

use super::queue::Queue;

/// How long `shutdown_timeout` waits, past its deadline, for the writer to
/// cancel its `record` call and count its batch.
const ABORT_GRACE: Duration = Duration::from_millis(100);

/// Counters of the writer, from [`UsageHandle::stats`], all read at one instant.
///
/// Every capture is in exactly one place, so in every snapshot
/// `captured + recovered == written + failed + dropped + queued + in_flight +
/// spooled` ([`is_balanced`](Self::is_balanced)). Without a
/// [spool](crate::UsageLayer::spool), `recovered` and `spooled` stay 0.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct RecorderStats {
    /// Exchanges the layer captured.
    pub captured: u64,
    /// Records the sink stored.
    pub written: u64,
    /// Captures dropped: the queue was full (the new capture is dropped), the
    /// writer was shut down, or a shutdown deadline passed with them unwritten;
    /// and, with a spool, records it evicted to make room (the oldest first),
    /// the rest of a segment found damaged while being read back, and records
    /// counted as spooled that its files no longer hold.
    pub dropped: u64,
    /// Records given up on: the sink failed on their batch with a permanent
    /// error, kept failing for longer than
    /// [`max_retry_time`](crate::UsageLayer::max_retry_time), or panicked; or
    /// the capture could not be turned into a record; or, with a spool, the
    /// spool could not store them (a full disk, say).
    pub failed: u64,
    /// Batch writes that were retried (with a spool: failed probes of the
    /// sink with spooled records).
    pub retried: u64,
    /// Captures waiting in the queue right now.
    pub queued: u64,
    /// Captures in the writer's hands right now: the batch being written,
    /// or waiting for a retry.
    pub in_flight: u64,
    /// Records in the disk [spool](crate::UsageLayer::spool) right now,
    /// waiting for the sink (those being replayed included). They survive the
    /// process: a writer that stops leaves them to the next one.
    pub spooled: u64,
    /// Records an earlier process left in the spool, found when this layer
    /// opened it; counted once, then like any capture (written, spooled, ...).
    pub recovered: u64,
    /// Spool segments found damaged when the spool was opened (a record torn
    /// by a crash, or corrupt bytes): what followed the damage in each was
    /// skipped. Logged once.
    pub spool_damaged: u64,
}

impl RecorderStats {
    /// Whether every capture is accounted for: `captured + recovered ==
    /// written + failed + dropped + queued + in_flight + spooled`. True of
    /// every value `stats()` returns.
    pub fn is_balanced(&self) -> bool {
        self.captured + self.recovered
            == self.written
                + self.failed
                + self.dropped
                + self.queued
                + self.in_flight
                + self.spooled
    }

    /// Records not yet written, failed or dropped: `queued + in_flight +
    /// spooled`.
    pub fn pending(&self) -> u64 {
        self.queued + self.in_flight + self.spooled
    }
}

/// What a bounded [`flush_timeout`](UsageHandle::flush_timeout) or
/// [`shutdown_timeout`](UsageHandle::shutdown_timeout) achieved.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum FlushOutcome {
    /// Every capture accepted before the call is written, failed or dropped
    /// (see [`RecorderStats`]).
    Complete,
    /// The deadline passed first, or (with a spool) the writer stopped with
    /// records left in its spool. `pending` captures accepted before the call
    /// were still queued, in flight or spooled. After `flush_timeout` they
    /// stay (the writer goes on); after `shutdown_timeout` the queued and in
    /// flight ones were abandoned and counted in [`RecorderStats::dropped`],
    /// while the spooled ones stay in the spool, counted in
    /// [`RecorderStats::spooled`], for the next process to write.
    ///
    /// A batch that was being appended to the spool at the deadline is
    /// counted as dropped, yet may land on disk: the next process then counts
    /// it as recovered and writes it.
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
    /// the sink or accounted as failed or dropped: never while one of them is
    /// still queued, in the writer's hands, or in the spool (records recovered
    /// from the spool at start included), unless the writer has stopped
    /// (then what it left in the spool stays there, for the next writer).
    ///
    /// Without a spool, a failing sink is retried for up to
    /// [`max_retry_time`](crate::UsageLayer::max_retry_time) (5 minutes by
    /// default), and each call may take up to
    /// [`sink_timeout`](crate::UsageLayer::sink_timeout), so against a sink
    /// that is down this can take that long. With a
    /// [spool](crate::UsageLayer::spool), it waits for the spool to be
    /// written back: as long as the sink is down, without a bound. Use
    /// [`flush_timeout`](Self::flush_timeout) to bound the wait.
    pub async fn flush(&self) {
        self.wait(None).await;
    }

    /// [`flush`](Self::flush), waiting at most `timeout`. Captures not finished
    /// by then stay queued (or spooled): the writer goes on with them.
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
            // A writer that has stopped finishes nothing more: what it left
            // is in the spool.
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
    pub fn stats(&self) -> RecorderStats {
        self.queue.shared.stats()
    }

    /// An instant before which every record is stored (or counted as failed
    /// or dropped in [`stats`](Self::stats)): no later than the arrival
    /// (`created_at`) of any exchange still in flight (a long poll, an event
    /// stream, a slow upload: its record is made when it ends) nor of any
    /// capture not yet written (queued, in the writer's hands, waiting for a
    /// retry, or in the spool, as far as a cheap read tells). `None` when
    /// nothing is in flight or pending.
    ///
    /// O(1): the oldest exchange in flight, then the queue's first capture
    /// (which carries the oldest arrival in flight when it arrived) and the
    /// batch in hand, each under one short lock.
    pub fn complete_until(&self) -> Option<time::OffsetDateTime> {
        // In flight first: an exchange counted out of it is queued by then.
        let in_flight = self.queue.shared.arrivals.oldest();
        let s = self.queue.shared.state();
        let since = s
            .in_flight_since
            .into_iter()
            .chain(s.spooled_since)
            .chain(s.queue.front().map(|e| e.arrival()))
            .chain(in_flight)
            .min()?;
        Some(time::OffsetDateTime::from(since))
    }

    /// Flushes, then stops the writer. Captures after this are dropped and
    /// counted. Without a spool, can take as long as [`flush`](Self::flush);
    /// [`shutdown_timeout`](Self::shutdown_timeout) bounds it. With a
    /// [spool](crate::UsageLayer::spool), while the sink answers it writes
    /// the spool back; once the sink is down (a failed write or probe), it
    /// returns as soon as the queue and the writer's batch are in the spool,
    /// which keeps them (counted in [`RecorderStats::spooled`]) for the next
    /// writer on its directory.
    ///
    /// The spool's lock is let go when the writer's task ends: before this
    /// returns when it returns because the sink is down; otherwise a moment
    /// after, so a new layer on the same directory may have to retry
    /// [`spool`](crate::UsageLayer::spool) (`WouldBlock`) briefly.
    pub async fn shutdown(self) {
        self.shutdown_inner(None).await;
    }

    /// [`shutdown`](Self::shutdown) within `timeout` (a grace period before
    /// SIGKILL, say): what is not written by then (queued, or the batch in the
    /// writer's hands, whose `record` call is cancelled) is abandoned and
    /// counted in [`RecorderStats::dropped`], and the writer ends. Records in
    /// the spool stay there (counted in [`RecorderStats::spooled`]): the next
    /// layer to open the spool writes them. Returns
    /// within `timeout` plus at most 100 ms, in which the writer cancels its
    /// call (a batch whose call ended first counts as written); with a spool,
    /// sooner when the sink is down (see [`shutdown`](Self::shutdown)). A
    /// writer still in a file operation of the spool at the deadline lets go
    /// of the spool's lock once it is done.
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
            while Instant::now() < grace && {
                let s = shared.state();
                s.in_flight > 0 || s.replaying
            } {
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
        shared.wake.notify_one();
        outcome
    }
}
