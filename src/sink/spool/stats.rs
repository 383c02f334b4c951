//! The spool's counters ([`SpoolStats`]) and the state they are read from,
//! changed and read under one lock, so that every snapshot adds up.

use std::time::{Duration, Instant, SystemTime};

#[cfg(feature = "metrics")]
use super::metrics::Report;

/// The first wait before the spool probes a failing sink again; it doubles
/// after each failure.
const FIRST_BACKOFF: Duration = Duration::from_millis(100);
/// The longest wait between probes: a sink that comes back is written to
/// within 2 s.
const MAX_BACKOFF: Duration = Duration::from_secs(2);

/// Counters of a [`Spooled`](super::Spooled) sink, from
/// [`Spooled::stats`](super::Spooled::stats), all read at one instant.
///
/// Every record the spool took is in exactly one place, so in every
/// snapshot `appended + recovered == written + failed + dropped + erased +
/// spooled`
/// ([`is_balanced`](Self::is_balanced)). Records that went straight through
/// to the inner sink are not counted here: the writer's
/// [`WriterStats`](crate::WriterStats) counts every record it handed over.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct SpoolStats {
    /// Records the spool took (and acknowledged to its caller) because the
    /// inner sink failed, or older records waited on disk.
    pub appended: u64,
    /// Records an earlier process left in the directory, found when it was
    /// opened.
    pub recovered: u64,
    /// Records written back to the inner sink.
    pub written: u64,
    /// Records given up on: the inner sink refused them (a permanent error,
    /// or a panic) when they were written back, a frame on disk no longer
    /// decoded, or a record was larger than the whole spool.
    pub failed: u64,
    /// Records evicted to make room (the oldest first), the rest of a segment
    /// found damaged while being read back, and records the files no longer
    /// hold.
    pub dropped: u64,
    /// Records removed from the files by
    /// [`erase_consumer`](crate::UsageSink::erase_consumer).
    pub erased: u64,
    /// Records on disk right now, waiting for the inner sink (a batch being
    /// written back included).
    pub spooled: u64,
    /// Failed probes: writes back that the inner sink failed with a
    /// temporary error (or a timeout).
    pub retried: u64,
    /// Segments found damaged when the directory was opened (a record torn
    /// by a crash, or corrupt bytes): what followed the damage in each was
    /// skipped. Logged once.
    pub damaged: u64,
}

impl SpoolStats {
    /// Whether every record the spool took is accounted for: `appended +
    /// recovered == written + failed + dropped + erased + spooled`. True of
    /// every value `stats()` returns.
    pub fn is_balanced(&self) -> bool {
        self.appended + self.recovered
            == self.written + self.failed + self.dropped + self.erased + self.spooled
    }
}

/// What the counters and the probe schedule hold.
#[derive(Debug)]
pub(super) struct State {
    pub(super) stats: SpoolStats,
    /// The inner sink failed with a temporary error and has not answered
    /// since.
    pub(super) down: bool,
    /// When the inner sink may be tried next, while it is down.
    pub(super) next_probe: Instant,
    backoff: Duration,
    /// About when the oldest spooled record arrived (never later than it).
    pub(super) oldest: Option<SystemTime>,
    /// What the metrics were last told.
    #[cfg(feature = "metrics")]
    report: Report,
}

impl State {
    pub(super) fn new(recovered: u64, damaged: u64, oldest: Option<SystemTime>) -> Self {
        Self {
            stats: SpoolStats {
                recovered,
                spooled: recovered,
                damaged,
                ..SpoolStats::default()
            },
            down: false,
            next_probe: Instant::now(),
            backoff: FIRST_BACKOFF,
            oldest,
            #[cfg(feature = "metrics")]
            report: Report::new(),
        }
    }

    /// Tells the metrics what changed (feature `metrics`; else nothing).
    pub(super) fn report(&mut self) {
        #[cfg(feature = "metrics")]
        {
            let stats = self.stats;
            self.report.report(&stats);
        }
    }

    /// Records taken in or given up, ever: what `flush` waits on.
    pub(super) fn taken(&self) -> u64 {
        self.stats.appended + self.stats.recovered
    }

    pub(super) fn finished(&self) -> u64 {
        self.stats.written + self.stats.failed + self.stats.dropped + self.stats.erased
    }

    /// Whether the inner sink may be tried now.
    pub(super) fn due(&self) -> bool {
        !self.down || Instant::now() >= self.next_probe
    }

    /// The inner sink failed (temporary): wait before the next probe, 100 ms
    /// doubling to 2 s.
    pub(super) fn back_off(&mut self) {
        if !self.down {
            self.backoff = FIRST_BACKOFF;
        }
        self.down = true;
        self.next_probe = Instant::now() + self.backoff;
        self.backoff = (self.backoff * 2).min(MAX_BACKOFF);
    }

    /// The inner sink answered (stored, or refused for good).
    pub(super) fn answered(&mut self) {
        self.down = false;
        self.backoff = FIRST_BACKOFF;
    }

    /// `n` records taken into the spool, `stored` of them on disk, `evicted`
    /// older ones (or of the same batch) dropped to make room; `since`: the
    /// earliest arrival among them.
    pub(super) fn appended(
        &mut self,
        n: u64,
        stored: u64,
        evicted: u64,
        since: Option<SystemTime>,
    ) {
        self.stats.appended += n;
        self.stats.failed += n - stored;
        self.stats.spooled += stored;
        // The earliest arrival of anything spooled since the spool was last
        // empty: records are appended in the order their exchanges ended, so
        // a later batch can hold an earlier arrival.
        self.oldest = match (self.oldest, since) {
            (Some(oldest), Some(since)) => Some(oldest.min(since)),
            (oldest, since) => oldest.or(since),
        };
        self.evicted(evicted);
    }

    /// `n` spooled records were dropped (evicted, damaged, lost).
    pub(super) fn evicted(&mut self, n: u64) {
        let n = n.min(self.stats.spooled);
        self.stats.spooled -= n;
        self.stats.dropped += n;
        self.settle();
    }

    /// `n` spooled records were erased.
    pub(super) fn erased(&mut self, n: u64) {
        let n = n.min(self.stats.spooled);
        self.stats.spooled -= n;
        self.stats.erased += n;
        self.settle();
    }

    /// `n` spooled records were written back, or given up (`written` false).
    pub(super) fn unspooled(&mut self, n: u64, written: bool) {
        let n = n.min(self.stats.spooled);
        self.stats.spooled -= n;
        if written {
            self.stats.written += n;
        } else {
            self.stats.failed += n;
        }
        self.settle();
    }

    fn settle(&mut self) {
        if self.stats.spooled == 0 {
            self.oldest = None;
        }
    }
}
