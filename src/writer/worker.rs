//! The worker: the future that drains the queue in batches, builds the records
//! and writes them, with retries, backoff and a timeout per call.

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Weak};
use std::task::{Context, Poll};
use std::time::Duration;

use super::assemble::assemble;
use super::queue::{lock, Shared};
use crate::captured::Captured;
use crate::{SinkError, SinkErrorKind, UsageRecord, UsageSink};

const FIRST_BACKOFF: Duration = Duration::from_millis(100);
const MAX_BACKOFF: Duration = Duration::from_secs(5);

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

/// Marks the writer stopped when its task ends, also by a panic (in a sink, say),
/// so that `flush` and `shutdown` return instead of waiting for it forever.
/// Holds a `Weak`, so the writer's check for being orphaned still counts the
/// strong references alone.
struct StopOnExit(Weak<Shared>);

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

async fn run(shared: Arc<Shared>, sink: Arc<dyn UsageSink>) {
    let _stop = StopOnExit(Arc::downgrade(&shared));
    // Both buffers keep their capacity across rounds: a batch of records is
    // about 100 KB, and allocating one per round costs page faults.
    let mut spare: Vec<Captured> = Vec::new();
    let mut records: Vec<UsageRecord> = Vec::new();
    let mut failing = false;
    let mut panic_logged = false;
    loop {
        let _ = tokio::time::timeout(shared.config.max_delay, shared.wake.notified()).await;

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
        let batch_size = shared.config.batch_size;
        let mut drain = spare.drain(..).peekable();
        while drain.peek().is_some() {
            records.clear();
            let mut unreadable = 0u64;
            for captured in drain.by_ref().take(batch_size) {
                match assemble_caught(captured, &mut panic_logged) {
                    Some(record) => records.push(record),
                    None => unreadable += 1,
                }
            }
            if unreadable > 0 {
                shared.failed.fetch_add(unreadable, Ordering::Relaxed);
                shared.done.send_modify(|d| *d += unreadable);
            }
            if records.is_empty() {
                continue;
            }
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

async fn write_with_retries(
    shared: &Shared,
    sink: &dyn UsageSink,
    records: &[UsageRecord],
) -> Result<(), SinkError> {
    let retries = shared.config.max_retries;
    let timeout = shared.config.sink_timeout;
    let mut backoff = FIRST_BACKOFF;
    let mut attempt = 0u32;
    loop {
        let result = match tokio::time::timeout(timeout, sink.record(records)).await {
            Ok(result) => result,
            Err(_) => Err(SinkError::message(
                SinkErrorKind::Unavailable,
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
