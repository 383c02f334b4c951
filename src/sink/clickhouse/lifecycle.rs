//! Retention and erasure.
//!
//! - **Retention** (`max_age`): reads hide records older than `max_age` at
//!   once; whole months older than it are dropped with `ALTER TABLE ... DROP
//!   PARTITION` (at start and then hourly, in the background, and by
//!   [`ClickHouseSink::enforce_retention`]); on a server with `TTL` the
//!   table's `TTL` also removes expired rows in merges.
//! - **Erasure** ([`erase_consumer`](crate::UsageSink::erase_consumer)): a row
//!   in `<table>_erased` hides the consumer's records written until then from
//!   every read at once, and an `ALTER TABLE ... DELETE` mutation removes them
//!   from disk. The mutation is **asynchronous**: the server rewrites the
//!   parts in the background (seconds to minutes for a large table; see
//!   `system.mutations`). Records of the consumer written after the call are
//!   kept and shown.

use std::sync::Weak;
use std::time::Duration;

use clickhouse::Row;
use serde::Deserialize;
use time::OffsetDateTime;

use super::insert::month;
use super::select::Arg;
use super::{error, ClickHouseSink, Inner};
use crate::record::unix_millis;
use crate::SinkError;

/// How often the background task drops expired partitions.
const RETENTION_EVERY: Duration = Duration::from_secs(3600);

#[derive(Row, Deserialize)]
struct Partition {
    partition: String,
}

impl ClickHouseSink {
    /// The oldest `created_at_ms` a read shows: now less `max_age`.
    pub(super) fn retention_cutoff_ms(&self) -> Option<i64> {
        let max_age = self.inner.max_age?;
        let age = i64::try_from(max_age.as_millis()).unwrap_or(i64::MAX);
        Some(unix_millis(OffsetDateTime::now_utc()).saturating_sub(age))
    }

    /// Drops every partition (a month of records) that ends before now less
    /// `max_age`, and returns how many it dropped; `0` without a `max_age`.
    /// The sink does this at start and then hourly by itself; reads hide
    /// expired records in the partitions kept.
    ///
    /// ```no_run
    /// # async fn run(sink: tower_usage::ClickHouseSink) -> Result<(), tower_usage::SinkError> {
    /// let dropped = sink.enforce_retention().await?;
    /// # let _ = dropped;
    /// # Ok(())
    /// # }
    /// ```
    pub async fn enforce_retention(&self) -> Result<u64, SinkError> {
        let Some(cutoff) = self.retention_cutoff_ms() else {
            return Ok(0);
        };
        let context = || format!("dropping expired partitions of {}", self.inner.qualified);
        // A month ends before the cutoff when it is before the cutoff's month.
        let keep_from = crate::record::from_unix_millis(cutoff)
            .map(month)
            .unwrap_or(0);
        let parts = self
            .inner
            .client
            .query(
                "SELECT DISTINCT partition FROM system.parts \
                 WHERE database = ? AND table = ? AND active",
            )
            .bind(self.inner.database.as_str())
            .bind(self.inner.table.as_str())
            .fetch_all::<Partition>()
            .await
            .map_err(|e| error::ch(e).with_context(context()))?;
        let mut dropped = 0;
        for p in parts {
            let Ok(m) = p.partition.trim().parse::<u32>() else {
                continue;
            };
            if m >= keep_from {
                continue;
            }
            let sql = format!("ALTER TABLE {} DROP PARTITION {m}", self.inner.qualified);
            self.inner
                .client
                .query(&sql)
                .execute()
                .await
                .map_err(|e| error::ch(e).with_context(context()))?;
            dropped += 1;
        }
        Ok(dropped)
    }

    /// See the [module docs](self).
    pub(super) async fn erase(&self, consumer: &str) -> Result<u64, SinkError> {
        let i = &self.inner;
        let now = unix_millis(OffsetDateTime::now_utc());
        // What the consumer has that reads show now.
        let mut count = self.read("count()");
        let p = count.bind(Arg::Str(consumer.to_owned()));
        count.and(format!("anonymous = 0 AND consumer = {p}"));
        let w = count.bind(Arg::Int(now));
        count.and(format!("written_ms <= {w}"));
        count.push_where();
        let erased: u64 = self.prepare(&count).fetch_one().await.map_err(error::ch)?;
        // Hidden from here on.
        i.client
            .query(&format!(
                "INSERT INTO {} (consumer, erased_ms) VALUES (?, ?)",
                i.erased
            ))
            .bind(consumer)
            .bind(now)
            .execute()
            .await
            .map_err(error::ch)?;
        // Removed from disk in the background.
        i.client
            .query(&format!(
                "ALTER TABLE {} DELETE WHERE anonymous = 0 AND consumer = ? AND written_ms <= ?",
                i.qualified
            ))
            .bind(consumer)
            .bind(now)
            .execute()
            .await
            .map_err(error::ch)?;
        // A record written after this call returns must have a later
        // `written_ms` than the erasure (same clock, next millisecond).
        while unix_millis(OffsetDateTime::now_utc()) <= now {
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        Ok(erased)
    }
}

/// Drops expired partitions now and then every [`RETENTION_EVERY`], while
/// the sink lives.
pub(super) fn spawn_retention(inner: Weak<Inner>) {
    let Ok(runtime) = tokio::runtime::Handle::try_current() else {
        return;
    };
    runtime.spawn(async move {
        loop {
            let Some(inner) = inner.upgrade() else {
                return;
            };
            let sink = ClickHouseSink { inner };
            if let Err(e) = sink.enforce_retention().await {
                tracing::warn!(error = %e, "ClickHouseSink: dropping expired partitions failed");
            }
            drop(sink);
            tokio::time::sleep(RETENTION_EVERY).await;
        }
    });
}
