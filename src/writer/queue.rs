//! The bounded queue between the request path and the worker: [`Queue::submit`]
//! is a short, uncontended mutex push, never an `.await`; a full queue drops the
//! capture and counts it.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use tokio::sync::{watch, Notify};

use super::worker::UsageWorker;
use super::{RecorderStats, WriterConfig, WAKE_AT};
use crate::captured::Captured;
use crate::UsageSink;

/// What the queue, the worker and the handles share.
pub(super) struct Shared {
    pub(super) config: WriterConfig,
    pub(super) queue: Mutex<Vec<Captured>>,
    pub(super) wake: Notify,
    /// Set by `shutdown`: captures after it are dropped.
    pub(super) closed: AtomicBool,
    /// The worker was handed out (spawned, or by `pair`).
    started: AtomicBool,
    /// The worker has ended (also by a panic), or was never there.
    pub(super) stopped: AtomicBool,
    /// Set at the first drop of a streak (one warning), cleared by the writer.
    pub(super) dropping: AtomicBool,
    /// Taken by the worker when it is made.
    sink: Mutex<Option<Arc<dyn UsageSink>>>,
    /// Captures accepted into the queue, ever. Written under the queue lock.
    pub(super) accepted: AtomicU64,
    /// Accepted captures the writer has finished with (written or failed).
    pub(super) done: watch::Sender<u64>,
    pub(super) captured: AtomicU64,
    pub(super) written: AtomicU64,
    pub(super) dropped: AtomicU64,
    pub(super) failed: AtomicU64,
    pub(super) retried: AtomicU64,
}

impl Shared {
    pub(super) fn stats(&self) -> RecorderStats {
        RecorderStats {
            captured: self.captured.load(Ordering::Relaxed),
            written: self.written.load(Ordering::Relaxed),
            dropped: self.dropped.load(Ordering::Relaxed),
            failed: self.failed.load(Ordering::Relaxed),
            retried: self.retried.load(Ordering::Relaxed),
            queued: lock(&self.queue).len() as u64,
        }
    }
}

/// The request path's end of the writer. Cheap to clone.
#[derive(Clone)]
pub(crate) struct Queue {
    pub(super) shared: Arc<Shared>,
}

impl std::fmt::Debug for Queue {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Queue")
            .field("config", &self.shared.config)
            .field("stats", &self.shared.stats())
            .finish()
    }
}

impl Queue {
    /// A queue for `sink` with these settings. Its worker is not running yet:
    /// see [`start`](Self::start) and [`worker`](Self::worker).
    pub(crate) fn new(sink: Arc<dyn UsageSink>, config: WriterConfig) -> Self {
        let config = WriterConfig {
            queue_capacity: config.queue_capacity.max(1),
            batch_size: config.batch_size.max(1),
            ..config
        };
        let (done, _) = watch::channel(0);
        Self {
            shared: Arc::new(Shared {
                config,
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
            }),
        }
    }

    /// Hands out the worker future, once; `None` when it was handed out before.
    pub(crate) fn worker(&self) -> Option<UsageWorker> {
        if self.shared.started.swap(true, Ordering::AcqRel) {
            return None;
        }
        match lock(&self.shared.sink).take() {
            Some(sink) => Some(UsageWorker::new(self.shared.clone(), sink)),
            None => {
                self.shared.stopped.store(true, Ordering::Release);
                None
            }
        }
    }

    /// Spawns the worker on the current tokio runtime, once, if there is one.
    pub(crate) fn start(&self) {
        if self.shared.started.load(Ordering::Acquire) {
            return;
        }
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            return;
        };
        if let Some(worker) = self.worker() {
            runtime.spawn(worker);
        }
    }

    /// Hands a finished capture to the writer. Never blocks on the sink, never
    /// wakes the writer except at the high-water mark ([`WAKE_AT`]).
    pub(crate) fn submit(&self, captured: Captured) {
        let shared = &*self.shared;
        shared.captured.fetch_add(1, Ordering::Relaxed);
        if !shared.started.load(Ordering::Acquire) {
            self.start();
        }
        if shared.closed.load(Ordering::Acquire) {
            shared.dropped.fetch_add(1, Ordering::Relaxed);
            return;
        }
        let capacity = shared.config.queue_capacity;
        let wake_at = shared.config.batch_size.min(WAKE_AT);
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
            queue.push(captured);
            shared.accepted.fetch_add(1, Ordering::Relaxed);
            queue.len()
        };
        if len == wake_at {
            shared.wake.notify_one();
        }
    }
}

pub(super) fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}
