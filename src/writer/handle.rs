//! [`UsageHandle`]: flush, read the counters ([`RecorderStats`]), shut down.

use std::sync::atomic::Ordering;
use std::time::Duration;

use super::queue::{lock, Queue};

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
    queue: Queue,
}

impl UsageHandle {
    pub(crate) fn new(queue: Queue) -> Self {
        Self { queue }
    }

    /// Returns once every capture accepted before the call has been written to
    /// the sink or accounted as failed. Returns even when the sink keeps
    /// failing (after the retries) or stalls (after the sink timeout).
    pub async fn flush(&self) {
        self.queue.start();
        let shared = &self.queue.shared;
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

    /// The arrival time of the oldest capture the writer has accepted and not
    /// yet stored (or given up on): every record created before it is in the
    /// sink. `None` when nothing is pending.
    ///
    /// Provisional: the oldest capture waiting in the queue; while a batch is
    /// being written (its captures have left the queue, their times are not
    /// kept), the Unix epoch, which promises nothing. Requests still being
    /// served are not captures yet and are not seen.
    pub fn complete_until(&self) -> Option<time::OffsetDateTime> {
        let shared = &self.queue.shared;
        let queue = lock(&shared.queue);
        let accepted = shared.accepted.load(Ordering::Relaxed);
        let done = *shared.done.borrow();
        if accepted <= done {
            return None;
        }
        if accepted - done > queue.len() as u64 {
            return Some(time::OffsetDateTime::UNIX_EPOCH);
        }
        queue
            .iter()
            .map(|c| c.created)
            .min()
            .map(time::OffsetDateTime::from)
    }

    /// The writer's counters.
    pub fn stats(&self) -> RecorderStats {
        self.queue.shared.stats()
    }

    /// Flushes, then stops the writer. Captures after this are dropped and counted.
    pub async fn shutdown(self) {
        let shared = self.queue.shared.clone();
        shared.closed.store(true, Ordering::Release);
        self.flush().await;
        shared.wake.notify_one();
    }
}
