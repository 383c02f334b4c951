//! Writing a batch: one `INSERT ... FORMAT RowBinary`, LZ4-compressed, each
//! record as its [storage form](crate::UsageRecord::to_storage_bytes) next to
//! the columns that filters, the order and the summary read.

use clickhouse::Row;
use serde::{Serialize, Serializer};
use time::OffsetDateTime;

use super::{error, ClickHouseSink};
use crate::record::unix_millis;
use crate::{SinkError, UsageRecord};

/// Bytes written as a ClickHouse `String` (serde's `[u8]` is a sequence).
struct Blob<'a>(&'a [u8]);

impl Serialize for Blob<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_bytes(self.0)
    }
}

/// One row, in the order of [`COLUMNS`](super::schema::COLUMNS).
#[derive(Row, Serialize)]
struct Stored<'a> {
    id: &'a str,
    consumer: &'a str,
    anonymous: u8,
    created_at_ms: i64,
    month: u32,
    method: &'a str,
    path: &'a str,
    route: Option<&'a str>,
    status: u16,
    outcome: &'a str,
    duration_us: u64,
    req_bytes: u64,
    resp_bytes: u64,
    trace_id: &'a str,
    span_id: &'a str,
    written_ms: i64,
    record: Blob<'a>,
}

/// The partition of a record: `YYYYMM` of `created_at` in UTC.
pub(super) fn month(t: OffsetDateTime) -> u32 {
    let t = t.to_offset(time::UtcOffset::UTC);
    u32::try_from(t.year()).unwrap_or(0) * 100 + u32::from(u8::from(t.month()))
}

fn row<'a>(r: &'a UsageRecord, storage: &'a [u8], written_ms: i64) -> Stored<'a> {
    let trace = r.trace.as_ref();
    Stored {
        id: &r.id,
        consumer: r.consumer.as_deref().unwrap_or(""),
        anonymous: u8::from(r.consumer.is_none()),
        created_at_ms: unix_millis(r.created_at),
        month: month(r.created_at),
        method: &r.method,
        path: &r.path,
        route: r.route.as_deref(),
        status: r.status,
        outcome: r.outcome.as_str(),
        duration_us: r.duration_us,
        req_bytes: r.request.body.size,
        resp_bytes: r.response.size,
        trace_id: trace.map_or("", |t| t.trace_id.as_str()),
        span_id: trace.map_or("", |t| t.span_id.as_str()),
        written_ms,
        record: Blob(storage),
    }
}

impl ClickHouseSink {
    /// Inserts the batch in one statement. A record stored twice (a retried
    /// batch, two replicas) is one row to every read (`FINAL`), and one row on
    /// disk after the next merge.
    pub(super) async fn insert_batch(&self, batch: &[UsageRecord]) -> Result<(), SinkError> {
        let storage: Vec<Vec<u8>> = batch.iter().map(UsageRecord::to_storage_bytes).collect();
        let written_ms = unix_millis(OffsetDateTime::now_utc());
        let client = &self.inner.client;
        let mut insert = client
            .insert::<Stored<'_>>(&self.inner.table)
            .await
            .map_err(error::ch)?;
        for (r, bytes) in batch.iter().zip(&storage) {
            insert
                .write(&row(r, bytes, written_ms))
                .await
                .map_err(error::ch)?;
        }
        insert.end().await.map_err(error::ch)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_row_has_every_column_in_order() {
        let names: Vec<&str> = super::super::schema::COLUMNS
            .iter()
            .map(|(n, _, _)| *n)
            .collect();
        assert_eq!(<Stored<'_> as Row>::COLUMN_NAMES, names.as_slice());
    }

    #[test]
    fn the_month_is_utc() {
        let t = time::macros::datetime!(2024-03-01 00:30 +02:00);
        assert_eq!(month(t), 202402);
    }
}
