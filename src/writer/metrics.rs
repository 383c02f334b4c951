//! The writer's metrics (feature `metrics`; names and meaning in
//! [`crate::metrics`]): its counters and gauges, reported from one snapshot
//! of [`State`](super::queue::State) when a batch is taken (so the batch in
//! hand shows while it is written) and when a round ends, and the
//! histograms, at the step they measure. A capture dropped after the
//! writer's last report is reported by the request path itself. Without the feature every function here is empty and
//! [`Report`] holds nothing.

use std::time::Instant;

use super::queue::Shared;

#[cfg(feature = "metrics")]
mod on {
    use std::time::Duration;

    use super::Shared;
    use crate::metrics::{self as names, Share};

    /// What this writer reported last, per counter and gauge.
    #[derive(Debug)]
    pub(in crate::writer) struct Report {
        captured: Share,
        written: Share,
        dropped: Share,
        failed: Share,
        retried: Share,
        queued: Share,
        in_flight: Share,
        bytes: Share,
    }

    impl Report {
        /// A writer starts: nothing reported yet, the metrics described to
        /// the recorder installed now.
        pub(in crate::writer) fn new() -> Self {
            names::describe();
            Self {
                captured: Share::counter(names::RECORDS_CAPTURED),
                written: Share::counter(names::RECORDS_WRITTEN),
                dropped: Share::counter(names::RECORDS_DROPPED),
                failed: Share::counter(names::RECORDS_FAILED),
                retried: Share::counter(names::BATCHES_RETRIED),
                queued: Share::gauge(names::RECORDS_QUEUED),
                in_flight: Share::gauge(names::RECORDS_IN_FLIGHT),
                bytes: Share::gauge(names::QUEUE_BYTES),
            }
        }

        /// Reports what changed since the last call, from one snapshot.
        pub(in crate::writer) fn report(&mut self, shared: &Shared) {
            self.report_from(shared, false);
        }

        /// The writer's last report: later drops are `submit`'s to report.
        pub(in crate::writer) fn report_last(&mut self, shared: &Shared) {
            self.report_from(shared, true);
        }

        fn report_from(&mut self, shared: &Shared, last: bool) {
            let (stats, bytes) = {
                let mut s = shared.state();
                s.reported_last |= last;
                (s.stats(), s.bytes as u64)
            };
            self.captured.set(stats.captured);
            self.written.set(stats.written);
            self.dropped.set(stats.dropped);
            self.failed.set(stats.failed);
            self.retried.set(stats.retried);
            self.queued.set(stats.queued);
            self.in_flight.set(stats.in_flight);
            self.bytes.set(bytes);
        }

        /// The writer stopped: its share of each gauge back to zero.
        pub(in crate::writer) fn retract(&mut self) {
            self.queued.retract();
            self.in_flight.retract();
            self.bytes.retract();
        }
    }

    /// One capture arrived after the writer's last report, and was dropped.
    pub(in crate::writer) fn dropped_after_stop() {
        ::metrics::counter!(names::RECORDS_CAPTURED).increment(1);
        ::metrics::counter!(names::RECORDS_DROPPED).increment(1);
    }

    pub(in crate::writer) fn batch(records: usize) {
        ::metrics::histogram!(names::BATCH_SIZE).record(records as f64);
    }

    pub(in crate::writer) fn sink_call(took: Duration) {
        ::metrics::histogram!(names::SINK_WRITE_DURATION).record(took.as_secs_f64());
    }

    pub(in crate::writer) fn record_sizes(sizes: impl Iterator<Item = usize>) {
        let histogram = ::metrics::histogram!(names::RECORD_SIZE);
        for size in sizes {
            histogram.record(size as f64);
        }
    }
}

#[cfg(feature = "metrics")]
pub(super) use on::Report;

#[cfg(not(feature = "metrics"))]
#[derive(Debug)]
pub(super) struct Report;

#[cfg(not(feature = "metrics"))]
impl Report {
    pub(super) fn new() -> Self {
        Self
    }

    pub(super) fn report(&mut self, _: &Shared) {}

    pub(super) fn report_last(&mut self, _: &Shared) {}

    pub(super) fn retract(&mut self) {}
}

/// A capture arrived after the writer's last report and was dropped: the
/// request path counts it in the metrics itself (only then).
#[cold]
pub(super) fn dropped_after_stop() {
    #[cfg(feature = "metrics")]
    on::dropped_after_stop();
}

/// A batch of `records` is handed to the sink.
#[inline]
pub(super) fn batch(records: usize) {
    #[cfg(feature = "metrics")]
    on::batch(records);
    let _ = records;
}

/// One call of the sink, started at `started`, returned (the clock is read
/// only with the feature on).
#[inline]
pub(super) fn sink_call(started: Instant) {
    #[cfg(feature = "metrics")]
    on::sink_call(started.elapsed());
    let _ = started;
}

/// The bytes each capture of a batch held.
#[inline]
pub(super) fn record_sizes(sizes: impl Iterator<Item = usize>) {
    #[cfg(feature = "metrics")]
    on::record_sizes(sizes);
    #[cfg(not(feature = "metrics"))]
    drop(sizes);
}
