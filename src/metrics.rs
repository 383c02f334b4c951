//! The writer's (and the disk spool's) metrics, through the [`metrics`]
//! crate's facade (feature `metrics`): install any recorder, a Prometheus
//! exporter, OpenTelemetry or StatsD, and they appear on its dashboards.
//!
//! ```no_run
//! use axum::{routing::get, Router};
//! use metrics_exporter_prometheus::PrometheusBuilder;
//! use tower_usage::{MemorySink, UsageLayer};
//!
//! # #[tokio::main] async fn main() {
//! // First the recorder, then the layer: the writer describes its metrics to
//! // the recorder installed when it starts.
//! let prometheus = PrometheusBuilder::new()
//!     .with_recommended_naming(true)
//!     .install_recorder()
//!     .unwrap();
//! let app: Router = Router::new()
//!     .route("/hello", get(|| async { "hi" }))
//!     .layer(UsageLayer::new(MemorySink::new()))
//!     // Next to the layer, not under it: scrapes are not recorded.
//!     .merge(Router::new().route("/metrics", get(move || async move { prometheus.render() })));
//! # let _ = app; }
//! ```
//!
//! `examples/metrics.rs` is the whole program.
//!
//! # What is measured, and where
//!
//! Everything is emitted by the background writer (and the spool's own
//! write-back), never on the request path: the writer reads its counters
//! under one short lock when it takes a batch (so the batch in hand shows
//! in the gauges while the sink writes it) and when the round ends (each
//! batch, and at least every [`max_delay`](crate::UsageLayer::max_delay)
//! while idle), and adds what changed since its last report. So the numbers
//! are [`WriterStats`](crate::WriterStats)'s, at most one round late, and
//! after [`UsageHandle::flush`](crate::UsageHandle::flush) returns they are
//! up to date. The one exception: a capture that arrives after the writer
//! has stopped (after [`shutdown`](crate::UsageHandle::shutdown), or a
//! writer that ended) is dropped, and that request adds it to `captured`
//! and `dropped` itself, as no writer is left to report it. Every series
//! is registered, at 0, when the writer starts. No metric has a label, and
//! none is taken from request data:
//! no path, route, consumer or status. Several layers in one process (so
//! several writers) add up into the same series; each writer's share of a
//! gauge goes back to zero when it stops.
//!
//! Names follow the OpenTelemetry conventions (dotted, the unit in the
//! metadata, counters without `_total`); the last column is what
//! `metrics-exporter-prometheus` renders with
//! `PrometheusBuilder::with_recommended_naming(true)` (dots become `_`,
//! counters gain `_total`, the unit its suffix; without it, the same names
//! without `_total` and unit suffixes). They are stable: a rename is a
//! breaking change.
//!
//! | name | kind | unit | what | Prometheus |
//! |---|---|---|---|---|
//! | `tower_usage.records.captured` | counter | `{record}` | exchanges the layer captured ([`WriterStats::captured`](crate::WriterStats::captured)) | `tower_usage_records_captured_total` |
//! | `tower_usage.records.written` | counter | `{record}` | records the sink acknowledged | `tower_usage_records_written_total` |
//! | `tower_usage.records.dropped` | counter | `{record}` | captures dropped: queue full, shut down | `tower_usage_records_dropped_total` |
//! | `tower_usage.records.failed` | counter | `{record}` | records given up on: the sink refused them, or failed past `max_retry_time` | `tower_usage_records_failed_total` |
//! | `tower_usage.batches.retried` | counter | `{batch}` | batch writes retried | `tower_usage_batches_retried_total` |
//! | `tower_usage.records.queued` | gauge | `{record}` | captures waiting in the queue | `tower_usage_records_queued` |
//! | `tower_usage.records.in_flight` | gauge | `{record}` | captures in the writer's hands (the batch being written or retried) | `tower_usage_records_in_flight` |
//! | `tower_usage.queue.bytes` | gauge | `By` | bytes of captures held, queued and in hand: what [`queue_bytes`](crate::UsageLayer::queue_bytes) bounds | `tower_usage_queue_bytes` |
//! | `tower_usage.batch.size` | histogram | `{record}` | records per batch handed to the sink | `tower_usage_batch_size` |
//! | `tower_usage.sink.write.duration` | histogram | `s` | each [`UsageSink::record`](crate::UsageSink::record) call, retries included, until it returned, failed or timed out | `tower_usage_sink_write_duration_seconds` |
//! | `tower_usage.record.size` | histogram | `By` | the bytes one capture held in the queue (its packed buffer and about 200 bytes) | `tower_usage_record_size_bytes` |
//!
//! With a [`Spooled`](crate::sink::spool::Spooled) sink (feature `spool`),
//! the spool reports its [`SpoolStats`](crate::sink::spool::SpoolStats)
//! too, from the same place it updates them (its `flush` watch), so they
//! are exact rather than sampled:
//!
//! | name | kind | unit | what | Prometheus |
//! |---|---|---|---|---|
//! | `tower_usage.spool.appended` | counter | `{record}` | records taken onto disk while the inner sink failed | `tower_usage_spool_appended_total` |
//! | `tower_usage.spool.recovered` | counter | `{record}` | records an earlier process left in the directory | `tower_usage_spool_recovered_total` |
//! | `tower_usage.spool.written` | counter | `{record}` | records written back to the inner sink | `tower_usage_spool_written_total` |
//! | `tower_usage.spool.failed` | counter | `{record}` | records the spool gave up on | `tower_usage_spool_failed_total` |
//! | `tower_usage.spool.dropped` | counter | `{record}` | records evicted for room, or lost to damage | `tower_usage_spool_dropped_total` |
//! | `tower_usage.spool.retried` | counter | `{probe}` | write-backs the inner sink failed (temporarily) | `tower_usage_spool_retried_total` |
//! | `tower_usage.spool.damaged` | counter | `{segment}` | segments found damaged when the directory was opened | `tower_usage_spool_damaged_total` |
//! | `tower_usage.spool.records` | gauge | `{record}` | records on disk, waiting for the inner sink | `tower_usage_spool_records` |
//!
//! What to alert on: `dropped` or `failed` rising (records lost), `queued`
//! near [`queue_capacity`](crate::UsageLayer::queue_capacity) or
//! `queue.bytes` near `queue_bytes` (drops are next), `spool.records`
//! growing (the sink behind the spool is down).
//!
//! The recorder must be installed before the writer starts (the layer's
//! first use) for the descriptions (help text and units) to reach it; the
//! values reach whatever recorder is installed when they are emitted.
//! [`describe`] describes them again, to a recorder installed later.

use ::metrics::{describe_counter, describe_gauge, describe_histogram, Unit};

/// `tower_usage.records.captured`: counter, exchanges the layer captured.
pub const RECORDS_CAPTURED: &str = "tower_usage.records.captured";
/// `tower_usage.records.written`: counter, records the sink acknowledged.
pub const RECORDS_WRITTEN: &str = "tower_usage.records.written";
/// `tower_usage.records.dropped`: counter, captures dropped.
pub const RECORDS_DROPPED: &str = "tower_usage.records.dropped";
/// `tower_usage.records.failed`: counter, records given up on.
pub const RECORDS_FAILED: &str = "tower_usage.records.failed";
/// `tower_usage.batches.retried`: counter, batch writes retried.
pub const BATCHES_RETRIED: &str = "tower_usage.batches.retried";
/// `tower_usage.records.queued`: gauge, captures waiting in the queue.
pub const RECORDS_QUEUED: &str = "tower_usage.records.queued";
/// `tower_usage.records.in_flight`: gauge, captures in the writer's hands.
pub const RECORDS_IN_FLIGHT: &str = "tower_usage.records.in_flight";
/// `tower_usage.queue.bytes`: gauge, bytes of captures held.
pub const QUEUE_BYTES: &str = "tower_usage.queue.bytes";
/// `tower_usage.batch.size`: histogram, records per batch written.
pub const BATCH_SIZE: &str = "tower_usage.batch.size";
/// `tower_usage.sink.write.duration`: histogram, seconds per sink call.
pub const SINK_WRITE_DURATION: &str = "tower_usage.sink.write.duration";
/// `tower_usage.record.size`: histogram, bytes one capture held.
pub const RECORD_SIZE: &str = "tower_usage.record.size";

/// `tower_usage.spool.appended`: counter, records taken onto disk.
pub const SPOOL_APPENDED: &str = "tower_usage.spool.appended";
/// `tower_usage.spool.recovered`: counter, records found at open.
pub const SPOOL_RECOVERED: &str = "tower_usage.spool.recovered";
/// `tower_usage.spool.written`: counter, records written back.
pub const SPOOL_WRITTEN: &str = "tower_usage.spool.written";
/// `tower_usage.spool.failed`: counter, records the spool gave up on.
pub const SPOOL_FAILED: &str = "tower_usage.spool.failed";
/// `tower_usage.spool.dropped`: counter, records evicted or lost.
pub const SPOOL_DROPPED: &str = "tower_usage.spool.dropped";
/// `tower_usage.spool.retried`: counter, failed write-backs.
pub const SPOOL_RETRIED: &str = "tower_usage.spool.retried";
/// `tower_usage.spool.damaged`: counter, damaged segments found at open.
pub const SPOOL_DAMAGED: &str = "tower_usage.spool.damaged";
/// `tower_usage.spool.records`: gauge, records on disk.
pub const SPOOL_RECORDS: &str = "tower_usage.spool.records";

/// Describes every metric above (unit and help text) to the recorder
/// installed now. The writer does it when it starts; call it again after
/// installing a recorder later than that.
///
/// ```
/// tower_usage::metrics::describe(); // no recorder: does nothing
/// ```
pub fn describe() {
    for &(name, kind, unit, help) in METRICS {
        match kind {
            Kind::Counter => describe_counter!(name, unit, help),
            Kind::Gauge => describe_gauge!(name, unit, help),
            Kind::Histogram => describe_histogram!(name, unit, help),
        }
    }
}

#[derive(Clone, Copy)]
enum Kind {
    Counter,
    Gauge,
    Histogram,
}

/// Every metric: name, kind, unit, help text.
const METRICS: &[(&str, Kind, Unit, &str)] = &[
    (
        RECORDS_CAPTURED,
        Kind::Counter,
        Unit::Count,
        "Exchanges the usage layer captured.",
    ),
    (
        RECORDS_WRITTEN,
        Kind::Counter,
        Unit::Count,
        "Usage records the sink acknowledged.",
    ),
    (
        RECORDS_DROPPED,
        Kind::Counter,
        Unit::Count,
        "Usage captures dropped: the queue was full, or the writer shut down.",
    ),
    (
        RECORDS_FAILED,
        Kind::Counter,
        Unit::Count,
        "Usage records given up on: the sink refused them or kept failing.",
    ),
    (
        BATCHES_RETRIED,
        Kind::Counter,
        Unit::Count,
        "Usage batch writes retried.",
    ),
    (
        RECORDS_QUEUED,
        Kind::Gauge,
        Unit::Count,
        "Usage captures waiting in the queue.",
    ),
    (
        RECORDS_IN_FLIGHT,
        Kind::Gauge,
        Unit::Count,
        "Usage captures in the writer's hands (the batch being written).",
    ),
    (
        QUEUE_BYTES,
        Kind::Gauge,
        Unit::Bytes,
        "Bytes of usage captures held, queued and in the writer's hands.",
    ),
    (
        BATCH_SIZE,
        Kind::Histogram,
        Unit::Count,
        "Usage records per batch handed to the sink.",
    ),
    (
        SINK_WRITE_DURATION,
        Kind::Histogram,
        Unit::Seconds,
        "Duration of each usage sink write call, retries included.",
    ),
    (
        RECORD_SIZE,
        Kind::Histogram,
        Unit::Bytes,
        "Bytes one usage capture held in the queue.",
    ),
    (
        SPOOL_APPENDED,
        Kind::Counter,
        Unit::Count,
        "Usage records taken onto the disk spool while the sink failed.",
    ),
    (
        SPOOL_RECOVERED,
        Kind::Counter,
        Unit::Count,
        "Usage records an earlier process left in the spool directory.",
    ),
    (
        SPOOL_WRITTEN,
        Kind::Counter,
        Unit::Count,
        "Usage records written back from the spool to the sink.",
    ),
    (
        SPOOL_FAILED,
        Kind::Counter,
        Unit::Count,
        "Usage records the spool gave up on.",
    ),
    (
        SPOOL_DROPPED,
        Kind::Counter,
        Unit::Count,
        "Usage records the spool evicted for room or lost to damage.",
    ),
    (
        SPOOL_RETRIED,
        Kind::Counter,
        Unit::Count,
        "Write-backs of the usage spool that the sink failed.",
    ),
    (
        SPOOL_DAMAGED,
        Kind::Counter,
        Unit::Count,
        "Damaged usage spool segments found when it was opened.",
    ),
    (
        SPOOL_RECORDS,
        Kind::Gauge,
        Unit::Count,
        "Usage records on the disk spool, waiting for the sink.",
    ),
];

/// A source's last report of a counter or a gauge, so that it adds only
/// what changed (several sources add up into one series), and a gauge's
/// share goes back when the source goes ([`retract`](Self::retract)).
#[derive(Debug)]
pub(crate) struct Share {
    name: &'static str,
    last: u64,
    gauge: bool,
}

impl Share {
    /// A source of the counter `name`, which is registered now (at 0 when
    /// new), so that a counter of losses is there before the first one.
    pub(crate) fn counter(name: &'static str) -> Self {
        ::metrics::counter!(name).increment(0);
        Self {
            name,
            last: 0,
            gauge: false,
        }
    }

    /// A source of the gauge `name`, registered now.
    pub(crate) fn gauge(name: &'static str) -> Self {
        ::metrics::gauge!(name).increment(0.0);
        Self {
            name,
            last: 0,
            gauge: true,
        }
    }

    /// The source's value is now `value` (a counter's never goes down).
    pub(crate) fn set(&mut self, value: u64) {
        if !self.gauge {
            if value > self.last {
                ::metrics::counter!(self.name).increment(value - self.last);
                self.last = value;
            }
        } else if value > self.last {
            ::metrics::gauge!(self.name).increment((value - self.last) as f64);
            self.last = value;
        } else if value < self.last {
            ::metrics::gauge!(self.name).decrement((self.last - value) as f64);
            self.last = value;
        }
    }

    /// The source is gone: a gauge's share back to zero.
    pub(crate) fn retract(&mut self) {
        if self.gauge {
            self.set(0);
        }
    }
}
