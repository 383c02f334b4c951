//! Usage summaries: what `GET /usage/summary` asks ([`SummaryQuery`]) and
//! answers ([`UsageSummary`]), and the one home of how records are counted
//! into buckets (bucket starts on UTC boundaries, group keys, the duration
//! histogram behind approximate percentiles).
//!
//! A sink answers with [`UsageSink::summarize`](crate::UsageSink::summarize).
//! Its default pages through [`query`](crate::UsageSink::query) and counts in
//! memory: correct for any sink, and as slow as reading every record of the
//! range. The shipped sinks count where the records are: `MemorySink` over its
//! index, `SqliteSink`, `PostgresSink` and `ClickHouseSink` with `GROUP BY` in
//! SQL.
//!
//! # Percentiles
//!
//! By nearest rank: the `p`th percentile of `n` durations is the
//! `ceil(p/100 · n)`th in ascending order (PostgreSQL's `percentile_disc`).
//! `PostgresSink` and `ClickHouseSink` give them exactly. The others count durations in a
//! log-scale histogram: exact up to 128 µs, and above within 0.9% of the exact
//! value (bins 1% wide, each shown as a whole number near its middle), never
//! above the exact `max`. Counts and bytes are always exact.

mod aggregate;
mod histogram;
mod output;
mod query;

#[cfg(feature = "sqlite")]
pub(crate) use aggregate::BinRow;
pub(crate) use aggregate::{summarize_by_paging, Aggregator, Fields};
#[cfg(feature = "sqlite")]
pub(crate) use histogram::bin as duration_bin;
#[cfg(any(feature = "postgres", feature = "clickhouse"))]
pub(crate) use output::too_many_buckets;
pub use output::{DurationStats, GroupKeys, SummaryBucket, SummaryStats, UsageSummary};
pub(crate) use query::default_until;
pub use query::{GroupBy, GroupKey, Interval, SummaryQuery, DEFAULT_RANGE};

/// The most buckets a summary holds: a range touching more time buckets than
/// this, or a summary with more buckets than this (time buckets times
/// groups), is refused as an [invalid query](crate::SinkErrorKind::InvalidQuery)
/// (`400` on the endpoint). One day by minute (1,440), a month by hour (744)
/// or a year by day fit.
pub const MAX_BUCKETS: usize = 10_000;
