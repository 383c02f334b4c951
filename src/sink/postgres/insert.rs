//! Writing a batch: one `INSERT ... SELECT * FROM UNNEST(...) ON CONFLICT DO
//! NOTHING` (on the primary key: `id`, or `(id, created_at)` on a partitioned
//! table), one array parameter per column; a large batch in parts, on
//! connections of their own.
//!
//! # Why `UNNEST`
//!
//! The other way to load many rows, `COPY ... FROM STDIN (FORMAT binary)`, cannot
//! skip duplicates, so it needs a temporary staging table and a second
//! `INSERT ... SELECT ... ON CONFLICT DO NOTHING` in a transaction: five
//! round trips instead of one, and every row written twice. Both were measured
//! (PostgreSQL 15 on the same host over TCP, one connection, records with ~1 KiB
//! of random request body and ~1 KiB of response body, 16,384 records per cell,
//! release build, on a 2-core machine shared with other work; the two quietest
//! of three rounds):
//!
//! | batch | `UNNEST`: records/s (ms per batch) | `COPY` + `INSERT ... SELECT` |
//! |------:|------------------------------------|------------------------------|
//! |    64 | 17,200–20,300 (3.2–3.7 ms)         | 8,900–10,900 (5.9–7.2 ms)    |
//! |   512 | 18,900–21,100 (24–27 ms)           | 11,700–14,100 (36–44 ms)     |
//! |  4096 | 12,600–17,200 (238–324 ms)         | 10,300–15,100 (272–399 ms)   |
//!
//! In rounds disturbed by other processes `COPY` came out 10–17% ahead at 4096
//! (and once at 512), so at 4096 the two are within the noise of each other;
//! at 64 `UNNEST` was ahead in every round, by 1.5–2×. `UNNEST` is the faster
//! one at the batch sizes a writer uses, and the simpler one, so it is the only
//! one kept.
//!
//! # What doubled those figures
//!
//! (`cargo bench --bench sinks --features sqlite,postgres`, same host; see the
//! bench's report for the current ones.)
//!
//! - **No compression of rows under 8 KiB.** The table is created with
//!   `toast_tuple_target = 8160` (schema version 2). At PostgreSQL's default of
//!   about 2 KiB, a record with ~1 KiB bodies each way is over the target, and
//!   every insert compressed its bodies and headers with pglz: a third of the
//!   server's time. At batch 512: ~15,000 to ~26,000 records/s.
//! - **A large batch is written on two connections.** One backend works on one
//!   CPU core, so a batch of at least 512 records is split into parts of at
//!   least [`MIN_PART`] (256) that are inserted at the same time, each in its own
//!   statement and transaction. At batch 512: ~26,000 to ~30,000 records/s.
//!
//! What a batch costs now is mostly the server's: the heap and three B-tree
//! inserts per record (`id`, `(consumer, created_at, id)`, `(created_at, id)`),
//! their WAL, parsing the three `jsonb` documents, and materializing the
//! `UNNEST` rows.

use std::borrow::Cow;

use serde_json::Value as Json;
use time::OffsetDateTime;
use tokio_postgres::types::ToSql;

use super::values::{json, sql_type, text};
use super::{error, PostgresSink};
use crate::sink::sql::{self, Col, Kind, Value};
use crate::{SinkError, UsageRecord};

/// A batch is split across connections only into parts at least this large.
const MIN_PART: usize = 256;

/// `INSERT INTO <table> (<columns>) SELECT * FROM UNNEST($1::text[], ...) ON
/// CONFLICT DO NOTHING`, one typed array per column. No conflict target: the
/// primary key is `id` on a plain table and `(id, created_at)` on a
/// partitioned one (a retry carries the same `created_at`).
pub(super) fn statement(qualified: &str) -> String {
    let arrays: Vec<String> = Col::ALL
        .iter()
        .enumerate()
        .map(|(i, col)| format!("${}::{}[]", i + 1, sql_type(col.kind())))
        .collect();
    format!(
        "INSERT INTO {qualified} ({}) SELECT * FROM UNNEST({}) ON CONFLICT DO NOTHING",
        *sql::LIST,
        arrays.join(", ")
    )
}

/// The values of one column for every record of a batch: an array parameter.
enum Array<'a> {
    Text(Vec<Option<Cow<'a, str>>>),
    Time(Vec<OffsetDateTime>),
    Int4(Vec<i32>),
    Int8(Vec<i64>),
    Bool(Vec<bool>),
    Bytes(Vec<&'a [u8]>),
    Json(Vec<Option<Json>>),
}

impl<'a> Array<'a> {
    fn new(kind: Kind, n: usize) -> Self {
        match kind {
            Kind::Text { .. } => Self::Text(Vec::with_capacity(n)),
            Kind::Time => Self::Time(Vec::with_capacity(n)),
            Kind::Int4 => Self::Int4(Vec::with_capacity(n)),
            Kind::Int8 => Self::Int8(Vec::with_capacity(n)),
            Kind::Bool => Self::Bool(Vec::with_capacity(n)),
            Kind::Bytes => Self::Bytes(Vec::with_capacity(n)),
            Kind::Json { .. } => Self::Json(Vec::with_capacity(n)),
        }
    }

    /// Appends a value of the array's kind (which [`sql::row`] gives each
    /// column).
    fn push(&mut self, value: Value<'a>) {
        match (self, value) {
            (Self::Text(a), Value::Text(v)) => a.push(v.map(text)),
            (Self::Time(a), Value::Time(v)) => a.push(v),
            (Self::Int4(a), Value::Int4(v)) => a.push(v),
            (Self::Int8(a), Value::Int8(v)) => a.push(v),
            (Self::Bool(a), Value::Bool(v)) => a.push(v),
            (Self::Bytes(a), Value::Bytes(v)) => a.push(v),
            (Self::Json(a), Value::Json(v)) => a.push(v.map(json)),
            (_, value) => unreachable!("{value:?} in an array of another kind"),
        }
    }

    fn as_param(&self) -> &(dyn ToSql + Sync) {
        match self {
            Self::Text(a) => a,
            Self::Time(a) => a,
            Self::Int4(a) => a,
            Self::Int8(a) => a,
            Self::Bool(a) => a,
            Self::Bytes(a) => a,
            Self::Json(a) => a,
        }
    }
}

/// The batch as one array per column, in [`Col::ALL`] order, for `UNNEST`.
fn arrays(batch: &[UsageRecord]) -> Result<Vec<Array<'_>>, SinkError> {
    let mut arrays: Vec<Array<'_>> = Col::ALL
        .iter()
        .map(|col| Array::new(col.kind(), batch.len()))
        .collect();
    for r in batch {
        for (array, value) in arrays.iter_mut().zip(sql::row(r)?) {
            array.push(value);
        }
    }
    Ok(arrays)
}

/// Inserts the batch with one statement; ids already stored are skipped.
/// Returns how many rows were new.
async fn insert(
    client: &deadpool_postgres::Client,
    statement: &str,
    batch: &[UsageRecord],
) -> Result<u64, SinkError> {
    let arrays = arrays(batch)?;
    let params: Vec<&(dyn ToSql + Sync)> = arrays.iter().map(Array::as_param).collect();
    let stmt = client.prepare_cached(statement).await.map_err(error::pg)?;
    client.execute(&stmt, &params).await.map_err(error::pg)
}

impl PostgresSink {
    /// Writes a batch: in parts of at least [`MIN_PART`] records, on up to
    /// `write_connections` connections at once. Returns how many rows were new.
    pub(super) async fn insert_batch(&self, batch: &[UsageRecord]) -> Result<u64, SinkError> {
        let parts = self
            .inner
            .write_parallelism
            .min(batch.len().div_ceil(MIN_PART))
            .max(1);
        let size = batch.len().div_ceil(parts);
        let writes = batch.chunks(size).map(|part| self.insert_part(part));
        let mut written = 0;
        let mut first_err = None;
        for result in futures_util::future::join_all(writes).await {
            match result {
                Ok(n) => written += n,
                Err(e) => {
                    first_err.get_or_insert(e);
                }
            }
        }
        match first_err {
            Some(e) => Err(e),
            None => Ok(written),
        }
    }

    /// Inserts one part of a batch on a connection of its own.
    async fn insert_part(&self, part: &[UsageRecord]) -> Result<u64, SinkError> {
        let client = self.inner.client().await?;
        match insert(&client, &self.inner.names.insert_unnest, part).await {
            Ok(written) => Ok(written),
            Err(e) => Err(self.inner.failed(e, Some(client))),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_insert_has_one_typed_array_per_column() {
        assert_eq!(
            statement("\"public\".\"usage_records\""),
            format!(
                "INSERT INTO \"public\".\"usage_records\" ({}) SELECT * FROM UNNEST(\
                 $1::text[], $2::text[], $3::timestamptz[], $4::text[], $5::text[], $6::text[], \
                 $7::int4[], $8::int8[], $9::text[], $10::text[], \
                 $11::jsonb[], $12::jsonb[], $13::jsonb[], \
                 $14::bytea[], $15::int8[], $16::bool[], \
                 $17::bytea[], $18::int8[], $19::bool[], $20::jsonb[], $21::jsonb[], \
                 $22::text[], $23::text[]) \
                 ON CONFLICT DO NOTHING",
                *sql::LIST
            )
        );
    }

    #[test]
    fn every_column_gets_an_array_of_its_kind() {
        let batch = [UsageRecord::default(), UsageRecord::default()];
        let arrays = arrays(&batch).unwrap();
        assert_eq!(arrays.len(), Col::ALL.len());
    }
}
