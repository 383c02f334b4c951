//! The layer's writer ([`WriterSlot`]): made from the layer's writer settings
//! the first time the layer is used, spawned on the current tokio runtime
//! (or handed out by `pair`), and shared by the clones made after that. The
//! builder ([`UsageLayer`](super::UsageLayer)) holds settings only; this is
//! the one place that makes and starts a writer.
//!
//! The sink goes to the writer when it is made: the layer keeps a `Weak`
//! only, so that the sink is dropped when the writer ends (a sink that holds
//! a resource, a lock or a connection pool, lets go of it then), even while
//! a router still holds a clone of the layer.

use std::sync::{Arc, Mutex, OnceLock, Weak};

use crate::writer::{Queue, UsageWorker, WriterConfig};
use crate::{SinkError, UsagePage, UsageQuery, UsageRecord, UsageSink};

/// A layer value's writer settings, and the writer made from them (shared
/// with the clones of the value), once it is made.
#[derive(Clone)]
pub(super) struct WriterSlot {
    config: WriterConfig,
    cell: Arc<Cell>,
}

/// The sink until a writer takes it, and the writer.
struct Cell {
    sink: Mutex<Option<Arc<dyn UsageSink>>>,
    weak: Weak<dyn UsageSink>,
    queue: OnceLock<Queue>,
}

impl Cell {
    fn new(sink: Arc<dyn UsageSink>) -> Arc<Self> {
        Arc::new(Self {
            weak: Arc::downgrade(&sink),
            sink: Mutex::new(Some(sink)),
            queue: OnceLock::new(),
        })
    }

    /// The sink, for the writer being made: the one held, or the one an
    /// earlier writer of these settings still holds.
    fn take_sink(&self) -> Arc<dyn UsageSink> {
        let held = self.sink.lock().unwrap_or_else(|p| p.into_inner()).take();
        held.or_else(|| self.weak.upgrade()).unwrap_or_else(|| {
            tracing::warn!(
                target: "tower_usage",
                "UsageLayer: a writer is made from settings whose sink went with an earlier \
                 writer that has ended: its records fail (set everything before using the layer)"
            );
            Arc::new(Gone)
        })
    }
}

impl WriterSlot {
    pub(super) fn new(sink: Arc<dyn UsageSink>) -> Self {
        Self {
            config: WriterConfig::default(),
            cell: Cell::new(sink),
        }
    }

    pub(super) fn config(&self) -> WriterConfig {
        self.config
    }

    /// Whether the writer was made.
    pub(super) fn is_made(&self) -> bool {
        self.cell.queue.get().is_some()
    }

    /// Changes a writer setting: the writer is made from the settings, so a
    /// value whose writer already exists gets a new one.
    pub(super) fn configure(&mut self, change: impl FnOnce(&mut WriterConfig)) {
        change(&mut self.config);
        self.detach("a writer setting changed");
    }

    /// Gives this value a writer of its own, to be made from its settings on
    /// first use; warns when the one it leaves had already been made.
    fn detach(&mut self, why: &str) {
        if !self.is_made() {
            // Not made yet: the clones that share this cell keep the sink.
            let sink = self.cell.take_sink();
            *self.cell.sink.lock().unwrap_or_else(|p| p.into_inner()) = Some(sink.clone());
            self.cell = Cell::new(sink);
            return;
        }
        tracing::warn!(
            target: "tower_usage",
            "UsageLayer: {why} after its writer was made: this layer value gets a writer \
             of its own, which handles taken before do not control (set everything before \
             using the layer)"
        );
        self.cell = Cell::new(self.cell.take_sink());
    }

    /// This value's writer queue, made (and its worker spawned on the current
    /// runtime, when there is one) on first use.
    pub(super) fn queue(&self) -> &Queue {
        self.cell.queue.get_or_init(|| {
            let queue = Queue::new(self.cell.take_sink(), self.config);
            queue.start();
            queue
        })
    }

    /// Makes the writer and hands its worker out, instead of spawning it (a
    /// writer made before is left to the clones that share it).
    pub(super) fn pair(&mut self) -> UsageWorker {
        if self.is_made() {
            self.detach("pair() was called");
        }
        let queue = Queue::new(self.cell.take_sink(), self.config);
        let worker = queue
            .worker()
            .expect("a new queue hands out its worker once");
        let _ = self.cell.queue.set(queue);
        worker
    }
}

/// The sink of a writer made after the sink was dropped with an earlier
/// writer: every batch fails, with an error that says why.
struct Gone;

#[async_trait::async_trait]
impl UsageSink for Gone {
    async fn record(&self, _batch: &[UsageRecord]) -> Result<(), SinkError> {
        Err(SinkError::config(
            "the layer's sink was dropped when its first writer ended",
        ))
    }

    async fn query(&self, _query: &UsageQuery) -> Result<UsagePage, SinkError> {
        Ok(UsagePage::default())
    }
}
