//! Reading a page: the shared page query in SQLite's dialect, its rows read
//! back through [`ReadColumns`](crate::sink::sql::ReadColumns).

use rusqlite::{params_from_iter, Connection};

use super::error::context;
use crate::sink::sql::{self, Dialect};
use crate::sink::{record_bytes, ConsumerScope, Position, UsageQuery};
use crate::{SinkError, UsageRecord};

/// Runs the page query: at most `query.limit + 1` matching records after `after`,
/// in the query's order, for [`UsagePage::from_sorted`](crate::UsagePage::from_sorted);
/// fewer when they pass the page's byte budget first
/// ([`UsageQuery::read_enough`]): the rows after that are not read.
pub(super) fn select(
    conn: &Connection,
    label: &str,
    query: &UsageQuery,
    after: Option<&Position>,
) -> Result<Vec<UsageRecord>, SinkError> {
    let ctx = context(label);
    let statement = sql::page(Dialect::Sqlite, "usage_records", query, after);
    let mut stmt = conn.prepare_cached(&statement.sql).map_err(&ctx)?;
    let mut rows = stmt
        .query(params_from_iter(&statement.values))
        .map_err(&ctx)?;
    let mut out = Vec::with_capacity(query.fetch_limit().min(1024));
    let mut bytes = 0usize;
    while let Some(row) = rows.next().map_err(&ctx)? {
        let record = sql::record(row)
            .map_err(|e| e.with_context(format_args!("sqlite database {label}")))?;
        bytes = bytes.saturating_add(record_bytes(&record));
        out.push(record);
        if query.read_enough(out.len(), bytes) {
            break;
        }
    }
    Ok(out)
}

/// One record by id (the unique index), if its consumer is in `scope`.
pub(super) fn by_id(
    conn: &Connection,
    label: &str,
    id: &str,
    scope: &ConsumerScope,
) -> Result<Option<UsageRecord>, SinkError> {
    let ctx = context(label);
    let statement = sql::by_id(Dialect::Sqlite, "usage_records", id, scope);
    let mut stmt = conn.prepare_cached(&statement.sql).map_err(&ctx)?;
    let mut rows = stmt
        .query(params_from_iter(&statement.values))
        .map_err(&ctx)?;
    match rows.next().map_err(&ctx)? {
        Some(row) => sql::record(row)
            .map(Some)
            .map_err(|e| e.with_context(format_args!("sqlite database {label}"))),
        None => Ok(None),
    }
}
