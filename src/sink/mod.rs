//! [`UsageSink`]: where records go, and how `/usage` reads them back.
//!
//! The crate ships [`MemorySink`](crate::MemorySink) (bounded, in-process), and behind
//! features `SqliteSink` (`sqlite`), `PostgresSink` (`postgres`) and
//! `ClickHouseSink` (`clickhouse`).
//!
//! A sink of your own needs `record` and `query`; the guide below says what to
//! store (the [storage form](crate::UsageRecord::to_storage_bytes)), how to
//! page, and how to test it with the conformance kit.
//!
#![doc = include_str!("../docs/writing-a-sink.md")]

use std::sync::Arc;

use crate::{SinkError, UsageRecord};
use summary::summarize_by_paging;

pub(crate) mod call;
#[cfg(feature = "clickhouse")]
#[cfg_attr(docsrs, doc(cfg(feature = "clickhouse")))]
pub mod clickhouse;
mod cursor;
pub(crate) mod expiry;
mod get;
pub mod memory;
mod page;
#[cfg(feature = "postgres")]
pub mod postgres;
mod query;
#[cfg(feature = "spool")]
#[cfg_attr(docsrs, doc(cfg(feature = "spool")))]
pub mod spool;
#[cfg(any(feature = "sqlite", feature = "postgres"))]
mod sql;
#[cfg(feature = "sqlite")]
pub mod sqlite;
pub mod summary;

pub use crate::record::StorageError;
pub use cursor::Position;
pub use get::get_by_query;
pub use page::{record_bytes, UsagePage};
pub use query::{
    ConsumerScope, Order, PathFilter, Projection, StatusFilter, UsageQuery, DEFAULT_LIMIT,
    MAX_LIMIT,
};
pub use summary::{
    DurationStats, GroupBy, GroupKey, GroupKeys, Interval, SummaryBucket, SummaryQuery,
    SummaryStats, UsageSummary, MAX_BUCKETS,
};

/// Storage for usage records.
///
/// See the [guide to writing a sink](self#writing-a-sink). Implementations must
/// be cheap to share: the layer's writer and the `/usage` service each hold one.
/// `UsageSink` is implemented for `Arc<T>` and `Box<T>` of any sink, including
/// `Box<dyn UsageSink>`.
#[async_trait::async_trait]
pub trait UsageSink: Send + Sync + 'static {
    /// Store a batch. Called by the background writer, never on the request path.
    ///
    /// A batch is all or nothing as far as the caller can tell: on `Err` the
    /// writer retries the whole batch if the error [is
    /// temporary](SinkError::is_temporary), so a sink that may have stored part of
    /// it must not store the same `id` twice.
    async fn record(&self, batch: &[UsageRecord]) -> Result<(), SinkError>;

    /// Read one page for the `/usage` endpoint.
    ///
    /// The page holds at most `query.limit` records matching
    /// [`UsageQuery::matches`], after the cursor's position, sorted by
    /// `(created_at, id)` in `query.order`; `next_cursor` is `Some` when more may
    /// follow. [`UsagePage::from_sorted`] builds it from `limit + 1` sorted hits.
    async fn query(&self, query: &UsageQuery) -> Result<UsagePage, SinkError>;

    /// One record by id, for `GET /usage/{id}`: `Ok(None)` when no record has
    /// this id *or* its consumer is not in `scope` (the endpoint answers both
    /// with the same `404`, so a caller cannot tell another consumer's id from
    /// a made-up one).
    ///
    /// The default implementation is [`get_by_query`]: ids are ULIDs whose
    /// first 48 bits are `created_at` in milliseconds (as
    /// [`UsageRecord::new_id`] makes them), so it asks [`query`](Self::query)
    /// for that one millisecond in `scope` and picks the id out; an id that is
    /// not a ULID is `Ok(None)`. Every sink gets it without a line of code; the
    /// shipped sinks look the id up directly (an index or the primary key).
    /// Override it if your sink keeps records whose ids are not such ULIDs.
    async fn get(&self, id: &str, scope: &ConsumerScope) -> Result<Option<UsageRecord>, SinkError> {
        get_by_query(self, id, scope).await
    }

    /// Summarize the records of a range for `GET /usage/summary`: counts,
    /// errors, bytes and duration percentiles per time bucket and group.
    ///
    /// The summary counts exactly the records that [`query`](Self::query) lists
    /// for [`SummaryQuery::list_query`]; see the [`summary`] module for the
    /// rules (buckets, order, percentiles). A query whose range holds more than
    /// [`MAX_BUCKETS`] time buckets, or whose answer would hold more buckets,
    /// fails with [`InvalidQuery`](crate::SinkErrorKind::InvalidQuery)
    /// ([`SummaryQuery::check`]).
    ///
    /// The default implementation is the **slow path**: it pages through
    /// `query`, [`MAX_LIMIT`] records at a time, and counts them in memory
    /// (a bounded histogram per bucket, never the records themselves), so any
    /// sink answers correctly without more code, in time proportional to the
    /// records in the range. Override it to count where the records are, as the
    /// shipped sinks do.
    async fn summarize(&self, query: &SummaryQuery) -> Result<UsageSummary, SinkError> {
        summarize_by_paging(self, query).await
    }

    /// When the oldest record arrived that this sink acknowledged (`record`
    /// returned `Ok`) but [`query`](Self::query) cannot return yet; `None`
    /// when there is none. The writer's
    /// [`complete_until`](crate::UsageHandle::complete_until), and so the
    /// summary's `completeUntil`, is never later than this.
    ///
    /// The default is `None`: a sink that stores a batch before `record`
    /// returns has nothing to say. A sink that acknowledges first and stores
    /// later, as `Spooled` does while its inner sink is down (feature
    /// `spool`), overrides it.
    fn pending_since(&self) -> Option<std::time::SystemTime> {
        None
    }

    /// Erases every record of `consumer` (the right to be forgotten, GDPR
    /// article 17), and returns how many were removed. Afterwards neither
    /// [`query`](Self::query), [`get`](Self::get) nor
    /// [`summarize`](Self::summarize) returns or counts any of them, also
    /// after a restart; other consumers' records are untouched. Records of
    /// `consumer` written after the call are kept.
    ///
    /// The default answers [`Unsupported`](crate::SinkErrorKind::Unsupported):
    /// a sink that cannot erase says so rather than pretend. Every shipped
    /// sink overrides it.
    async fn erase_consumer(&self, consumer: &str) -> Result<u64, SinkError> {
        let _ = consumer;
        Err(SinkError::message(
            crate::SinkErrorKind::Unsupported,
            "this sink cannot erase a consumer's records",
        ))
    }
}

/// A record a sink cannot read back is corrupt data: permanent, never retried.
impl From<StorageError> for SinkError {
    fn from(err: StorageError) -> Self {
        SinkError::with_kind(crate::SinkErrorKind::Corrupt, err).permanent()
    }
}

#[async_trait::async_trait]
impl<T: UsageSink + ?Sized> UsageSink for Arc<T> {
    async fn record(&self, batch: &[UsageRecord]) -> Result<(), SinkError> {
        (**self).record(batch).await
    }

    async fn query(&self, query: &UsageQuery) -> Result<UsagePage, SinkError> {
        (**self).query(query).await
    }

    async fn get(&self, id: &str, scope: &ConsumerScope) -> Result<Option<UsageRecord>, SinkError> {
        (**self).get(id, scope).await
    }

    async fn summarize(&self, query: &SummaryQuery) -> Result<UsageSummary, SinkError> {
        (**self).summarize(query).await
    }

    fn pending_since(&self) -> Option<std::time::SystemTime> {
        (**self).pending_since()
    }

    async fn erase_consumer(&self, consumer: &str) -> Result<u64, SinkError> {
        (**self).erase_consumer(consumer).await
    }
}

#[async_trait::async_trait]
impl<T: UsageSink + ?Sized> UsageSink for Box<T> {
    async fn record(&self, batch: &[UsageRecord]) -> Result<(), SinkError> {
        (**self).record(batch).await
    }

    async fn query(&self, query: &UsageQuery) -> Result<UsagePage, SinkError> {
        (**self).query(query).await
    }

    async fn get(&self, id: &str, scope: &ConsumerScope) -> Result<Option<UsageRecord>, SinkError> {
        (**self).get(id, scope).await
    }

    async fn summarize(&self, query: &SummaryQuery) -> Result<UsageSummary, SinkError> {
        (**self).summarize(query).await
    }

    fn pending_since(&self) -> Option<std::time::SystemTime> {
        (**self).pending_since()
    }

    async fn erase_consumer(&self, consumer: &str) -> Result<u64, SinkError> {
        (**self).erase_consumer(consumer).await
    }
}
