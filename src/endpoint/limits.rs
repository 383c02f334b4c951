//! How much of the sink the endpoint lets callers use at once: reads per
//! consumer and exports in all, shared by every clone of a
//! [`UsageService`](super::UsageService).

use std::collections::HashMap;
use std::fmt;
use std::sync::{Arc, Mutex, PoisonError};

use tokio::sync::{OwnedSemaphorePermit, Semaphore};

/// The default of [`UsageService::max_reads_per_consumer`](super::UsageService::max_reads_per_consumer).
pub(super) const DEFAULT_READS_PER_CONSUMER: usize = 2;

/// The default of [`UsageService::max_exports`](super::UsageService::max_exports).
pub(super) const DEFAULT_MAX_EXPORTS: usize = 4;

/// The counters behind the limits.
pub(super) struct Limits {
    reads_per_consumer: usize,
    /// Sink reads in progress, per consumer (an entry goes at zero, so the
    /// map holds at most one entry per read in progress).
    reads: Mutex<HashMap<String, usize>>,
    exports: Arc<Semaphore>,
    max_exports: usize,
}

impl Limits {
    pub(super) fn new(reads_per_consumer: usize, max_exports: usize) -> Arc<Self> {
        Arc::new(Self {
            reads_per_consumer: reads_per_consumer.max(1),
            reads: Mutex::new(HashMap::new()),
            exports: Arc::new(Semaphore::new(max_exports.max(1))),
            max_exports: max_exports.max(1),
        })
    }

    pub(super) fn reads_per_consumer(&self) -> usize {
        self.reads_per_consumer
    }

    pub(super) fn max_exports(&self) -> usize {
        self.max_exports
    }

    /// A read for `consumer`, if it has fewer than its limit in progress.
    pub(super) fn read(self: &Arc<Self>, consumer: &str) -> Option<ReadGuard> {
        let mut reads = self.reads.lock().unwrap_or_else(PoisonError::into_inner);
        let n = reads.entry(consumer.to_owned()).or_insert(0);
        if *n >= self.reads_per_consumer {
            return None;
        }
        *n += 1;
        Some(ReadGuard {
            limits: Arc::clone(self),
            consumer: consumer.to_owned(),
        })
    }

    /// A slot for one more export, if fewer than the limit are running.
    pub(super) fn export(&self) -> Option<OwnedSemaphorePermit> {
        Arc::clone(&self.exports).try_acquire_owned().ok()
    }
}

impl fmt::Debug for Limits {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Limits")
            .field("reads_per_consumer", &self.reads_per_consumer)
            .field("max_exports", &self.max_exports)
            .finish_non_exhaustive()
    }
}

/// One sink read of a consumer in progress; given back when dropped.
pub(super) struct ReadGuard {
    limits: Arc<Limits>,
    consumer: String,
}

impl Drop for ReadGuard {
    fn drop(&mut self) {
        let mut reads = self
            .limits
            .reads
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        if let Some(n) = reads.get_mut(&self.consumer) {
            *n -= 1;
            if *n == 0 {
                reads.remove(&self.consumer);
            }
        }
    }
}

/// What a request holds while it uses the sink: its consumer's read (none
/// for an admin) and, for an export, its export slot.
#[derive(Default)]
pub(crate) struct Held {
    _read: Option<ReadGuard>,
    _export: Option<OwnedSemaphorePermit>,
}

impl Held {
    pub(super) fn new(read: Option<ReadGuard>, export: Option<OwnedSemaphorePermit>) -> Self {
        Self {
            _read: read,
            _export: export,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_are_counted_per_consumer_and_given_back() {
        let limits = Limits::new(2, 1);
        let a1 = limits.read("a").unwrap();
        let _a2 = limits.read("a").unwrap();
        assert!(limits.read("a").is_none());
        let _b = limits.read("b").unwrap();
        drop(a1);
        let _a3 = limits.read("a").unwrap();
        drop((_a2, _a3, _b));
        assert!(limits.reads.lock().unwrap().is_empty());

        let e = limits.export().unwrap();
        assert!(limits.export().is_none());
        drop(e);
        assert!(limits.export().is_some());
    }
}
