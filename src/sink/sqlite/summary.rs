//! Summaries in SQL: the shared summary statement grouped by bucket, keys and
//! duration bin, whose rows (aggregates, never records) are counted into the
//! shared [`Aggregator`]; and the SQL function that computes the bin.

use rusqlite::functions::FunctionFlags;
use rusqlite::{params_from_iter, Connection, Row};

use super::error::context;
use crate::sink::sql::{self, Dialect, ReadKeys, DURATION_BIN_FUNCTION};
use crate::sink::summary::{duration_bin, Aggregator, BinRow};
use crate::sink::{GroupKeys, SummaryQuery, UsageSummary};
use crate::{SinkError, SinkErrorKind};

/// Registers [`DURATION_BIN_FUNCTION`] on a connection: the bin of the
/// summary's duration histogram, the very function `MemorySink` uses, so both
/// count alike. (The bundled SQLite has no `ln()`.)
pub(super) fn register(conn: &Connection) -> rusqlite::Result<()> {
    conn.create_scalar_function(
        DURATION_BIN_FUNCTION,
        1,
        FunctionFlags::SQLITE_UTF8 | FunctionFlags::SQLITE_DETERMINISTIC,
        |ctx| {
            let d: i64 = ctx.get(0)?;
            Ok(i64::from(duration_bin(u64::try_from(d).unwrap_or(0))))
        },
    )
}

/// Runs the summary on `conn`.
pub(super) fn summarize(
    conn: &Connection,
    label: &str,
    query: &SummaryQuery,
) -> Result<UsageSummary, SinkError> {
    query.check()?;
    let ctx = context(label);
    let list = query.list_query();
    let statement = sql::summary(Dialect::Sqlite, "usage_records", query, &list);
    let mut stmt = conn.prepare_cached(&statement.sql).map_err(&ctx)?;
    let mut rows = stmt
        .query(params_from_iter(&statement.values))
        .map_err(&ctx)?;
    let mut agg = Aggregator::new(query);
    while let Some(row) = rows.next().map_err(&ctx)? {
        let (start, keys, bin_row) = read_row(row, query)
            .map_err(|e| e.with_context(format_args!("sqlite database {label}: summary")))?;
        agg.add_row(start, keys, &bin_row)?;
    }
    agg.finish(query)
}

fn read_row(row: &Row<'_>, query: &SummaryQuery) -> Result<(i64, GroupKeys, BinRow), SinkError> {
    let corrupt = |e: rusqlite::Error| SinkError::with_kind(SinkErrorKind::Corrupt, e);
    let count = |i: usize| -> Result<u64, SinkError> {
        let n: Option<i64> = row.get(i).map_err(corrupt)?;
        Ok(u64::try_from(n.unwrap_or(0)).unwrap_or(0))
    };
    let start: i64 = row.get(0).map_err(corrupt)?;
    let keys = sql::read_keys(row, query.group_by, 1)?;
    let i = 1 + query.group_by.keys().count();
    let bin = u32::try_from(count(i)?).unwrap_or(u32::MAX);
    let bin_row = BinRow {
        bin,
        requests: count(i + 1)?,
        client_errors: count(i + 2)?,
        server_errors: count(i + 3)?,
        request_bytes: count(i + 4)?,
        response_bytes: count(i + 5)?,
        max: count(i + 6)?,
    };
    Ok((start, keys, bin_row))
}

impl ReadKeys for Row<'_> {
    fn key_text(&self, i: usize) -> Result<Option<String>, SinkError> {
        self.get(i)
            .map_err(|e| SinkError::with_kind(SinkErrorKind::Corrupt, e))
    }

    fn key_int(&self, i: usize) -> Result<i64, SinkError> {
        self.get(i)
            .map_err(|e| SinkError::with_kind(SinkErrorKind::Corrupt, e))
    }
}
