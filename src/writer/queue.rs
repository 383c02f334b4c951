//! The bounded queue between the request path and the worker: [`Queue::submit`]
//! is a short, uncontended mutex push, never an `.await`; a full queue drops the
//! new capture and counts it.
//!
//! The queue and every counter live under one mutex ([`State`]), so that
//! [`stats`](Shared::stats) reads them all at one instant: `captured =
//! written + failed + dropped + queued + in_flight` holds in every snapshot,
//! not only once the writer is idle.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, Weak};
use std::time::SystemTime;

use tokio::sync::{watch, Notify};

use super::worker::UsageWorker;
use super::{WriterConfig, WriterStats};
use crate::captured::Captured;
use crate::streak::Streak;
use crate::UsageSink;

/// One queued capture and what it costs in memory.
pub(super) struct Entry {
    pub(super) captured: Captured,
    pub(super) bytes: usize,
}

impl Entry {
    fn new(captured: Captured) -> Self {
        let bytes = std::mem::size_of::<Entry>()
            + captured.packed.size()
            + captured.consumer.as_ref().map_or(0, String::capacity);
        Self { captured, bytes }
    }

    /// When the exchange ended and the capture reached the writer.
    pub(super) fn arrival(&self) -> SystemTime {
        arrival(&self.captured)
    }
}

/// What holds [`UsageHandle::complete_until`](super::UsageHandle::complete_until)
/// back while the capture is pending: the arrival of the oldest exchange in
/// flight when its own arrived (no later than its `created`, nor than that of
/// any capture queued after it; see [`Captured::oldest_in_flight`]).
pub(super) fn arrival(captured: &Captured) -> SystemTime {
    captured.oldest_in_flight
}

/// The queue and the counters, read and changed together.
#[derive(Default)]
pub(super) struct State {
    pub(super) queue: VecDeque<Entry>,
    /// Bytes of the queued captures and of the batch in the writer's hands.
    pub(super) bytes: usize,
    pub(super) captured: u64,
    pub(super) written: u64,
    pub(super) dropped: u64,
    pub(super) failed: u64,
    pub(super) retried: u64,
    /// Captures the writer has taken and not finished (its batch).
    pub(super) in_flight: u64,
    /// Bytes of that batch.
    pub(super) in_flight_bytes: usize,
    /// The earliest arrival in that batch.
    pub(super) in_flight_since: Option<SystemTime>,
    /// Captures accepted into the queue, ever.
    pub(super) accepted: u64,
    /// Accepted captures that are written, failed or dropped since.
    pub(super) finished: u64,
    /// Set by `shutdown`: captures after it are dropped.
    pub(super) closed: bool,
    /// Set when the writer has ended: nothing pending changes any more.
    pub(super) stopped: bool,
    /// Set with the writer's last report to the metrics: captures dropped
    /// after it are reported by `submit` itself.
    pub(super) reported_last: bool,
    /// What the sink said, when the writer ended, of the records it
    /// acknowledged but could not return yet ([`UsageSink::pending_since`]).
    pub(super) left_in_sink: Option<SystemTime>,
    /// Set when a shutdown deadline passed: the writer's batch was counted as
    /// dropped, and the writer must not count it again.
    pub(super) abandoned: bool,
}

impl State {
    /// The writer finished `n` captures of its batch (`bytes` of them).
    /// Nothing happens when the batch was abandoned (counted already).
    pub(super) fn finish(&mut self, n: u64, bytes: usize, end: End) {
        if self.abandoned {
            return;
        }
        let n = n.min(self.in_flight);
        self.in_flight -= n;
        self.in_flight_bytes = self.in_flight_bytes.saturating_sub(bytes);
        self.bytes = self.bytes.saturating_sub(bytes);
        match end {
            End::Written => self.written += n,
            End::Failed => self.failed += n,
            End::Dropped => self.dropped += n,
        }
        self.finished += n;
        if self.in_flight == 0 {
            self.in_flight_since = None;
        }
    }

    /// Counts everything queued as dropped, and empties the queue. Returns how
    /// many that was.
    pub(super) fn drop_queued(&mut self) -> u64 {
        let n = self.queue.len() as u64;
        self.queue.clear();
        self.dropped += n;
        self.finished += n;
        self.bytes = self.in_flight_bytes;
        n
    }

    /// Counts everything queued or in flight as dropped, and empties the queue;
    /// the writer's batch, if it ever ends, is not counted again. Returns how
    /// many that was.
    pub(super) fn abandon(&mut self) -> u64 {
        let n = self.drop_queued() + self.in_flight;
        self.dropped += self.in_flight;
        self.finished += self.in_flight;
        self.in_flight = 0;
        self.in_flight_bytes = 0;
        self.in_flight_since = None;
        self.bytes = 0;
        self.abandoned = true;
        n
    }
}

/// How the writer finished with (part of) its batch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum End {
    Written,
    Failed,
    /// A shutdown deadline passed: the `record` call was cancelled.
    Dropped,
}

/// What the queue, the worker and the handles share.
pub(super) struct Shared {
    pub(super) config: WriterConfig,
    pub(super) state: Mutex<State>,
    pub(super) wake: Notify,
    /// The worker was handed out (spawned, or by `pair`).
    started: AtomicBool,
    /// The current streak of full-queue drops (one warning each).
    pub(super) dropping: Streak,
    /// Taken by the worker when it is made.
    sink: Mutex<Option<Arc<dyn UsageSink>>>,
    /// The same sink, for [`UsageSink::pending_since`] (`complete_until`);
    /// weak, so that the sink goes when the writer ends.
    pub(super) sink_ref: Weak<dyn UsageSink>,
    /// `finished`, published after each change, for `flush` to wait on.
    pub(super) done: watch::Sender<u64>,
    /// Set when a shutdown deadline passes: the worker drops its batch and ends.
    pub(super) abort: watch::Sender<bool>,
    /// The exchanges in flight, not captured yet.
    pub(super) arrivals: super::arrivals::Arrivals,
}

impl Shared {
    pub(super) fn state(&self) -> MutexGuard<'_, State> {
        lock(&self.state)
    }

    pub(super) fn stats(&self) -> WriterStats {
        self.state().stats()
    }

    /// Publishes `finished` to waiting flushes. Call after releasing the lock.
    pub(super) fn publish(&self) {
        let finished = self.state().finished;
        self.done.send_if_modified(|d| {
            let changed = *d != finished;
            *d = finished;
            changed
        });
    }
}

impl State {
    /// The counters, as [`UsageHandle::stats`](super::UsageHandle::stats) shows them.
    pub(super) fn stats(&self) -> WriterStats {
        let s = self;
        WriterStats {
            captured: s.captured,
            written: s.written,
            dropped: s.dropped,
            failed: s.failed,
            retried: s.retried,
            queued: s.queue.len() as u64,
            in_flight: s.in_flight,
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
            queue_bytes: config.queue_bytes.max(1),
            batch_size: config.batch_size.max(1),
            ..config
        };
        Self {
            shared: Arc::new(Shared {
                config,
                state: Mutex::new(State::default()),
                wake: Notify::new(),
                started: AtomicBool::new(false),
                dropping: Streak::new(),
                sink_ref: Arc::downgrade(&sink),
                sink: Mutex::new(Some(sink)),
                done: watch::channel(0).0,
                abort: watch::channel(false).0,
                arrivals: Default::default(),
            }),
        }
    }

    /// Hands out the worker future, once; `None` when it was handed out before.
    pub(crate) fn worker(&self) -> Option<UsageWorker> {
        if self.shared.started.swap(true, Ordering::AcqRel) {
            return None;
        }
        lock(&self.shared.sink)
            .take()
            .map(|sink| UsageWorker::new(self.shared.clone(), sink))
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
    /// wakes the writer except at the high-water mark
    /// ([`WriterConfig::wake_at`] captures waiting) or when the captures held
    /// reach half of `queue_bytes`.
    ///
    /// Drop policy: when the queue is full (by count or by bytes, the writer's
    /// batch included), the *new* capture is dropped and counted; what is
    /// already queued keeps its place, so records are stored in order.
    pub(crate) fn submit(&self, captured: Captured) {
        let shared = &*self.shared;
        if !shared.started.load(Ordering::Acquire) {
            self.start();
        }
        let config = &shared.config;
        let wake_at = config.wake_at();
        let entry = Entry::new(captured);
        let (len, half_full) = {
            let mut s = shared.state();
            s.captured += 1;
            if s.closed {
                s.dropped += 1;
                let unreported = s.reported_last;
                drop(s);
                if unreported {
                    super::metrics::dropped_after_stop();
                }
                return;
            }
            let held = s.queue.len() + s.in_flight as usize;
            if held >= config.queue_capacity || s.bytes + entry.bytes > config.queue_bytes {
                s.dropped += 1;
                drop(s);
                if shared.dropping.fail() {
                    tracing::warn!(
                        target: "tower_usage",
                        capacity = config.queue_capacity,
                        bytes = config.queue_bytes,
                        "usage queue full: dropping new records until the writer catches up (counted in stats().dropped)"
                    );
                }
                return;
            }
            let half_bytes = config.queue_bytes / 2;
            let below_half = s.bytes < half_bytes;
            s.bytes += entry.bytes;
            s.queue.push_back(entry);
            s.accepted += 1;
            (s.queue.len(), below_half && s.bytes >= half_bytes)
        };
        // The wake point is reached once.
        if len == wake_at || half_full {
            shared.wake.notify_one();
        }
    }
}

pub(super) fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}
