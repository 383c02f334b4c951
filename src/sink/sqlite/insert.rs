//! Writing a batch: the cached insert statement, once per record, inside the
//! writer's transaction.

use std::sync::LazyLock;

use rusqlite::{params_from_iter, Connection};

use super::error::{context, sql_error};
use crate::sink::sql::{self, Col};
use crate::{SinkError, UsageRecord};

/// `INSERT OR IGNORE INTO usage_records (<columns>) VALUES (?1, ..., ?20)`.
static INSERT: LazyLock<String> = LazyLock::new(|| {
    let values: Vec<String> = (1..=Col::ALL.len()).map(|n| format!("?{n}")).collect();
    format!(
        "INSERT OR IGNORE INTO usage_records ({}) VALUES ({})",
        *sql::LIST,
        values.join(", ")
    )
});

/// Inserts a batch on `conn` (inside the caller's transaction) with the cached
/// insert statement; an `id` already stored is skipped. Returns how many rows
/// were added.
pub(super) fn insert(
    conn: &Connection,
    label: &str,
    batch: &[UsageRecord],
) -> Result<u64, SinkError> {
    let mut stmt = conn.prepare_cached(&INSERT).map_err(context(label))?;
    let mut added = 0u64;
    for r in batch {
        let row =
            sql::row(r).map_err(|e| e.with_context(format_args!("sqlite database {label}")))?;
        let n = stmt.execute(params_from_iter(&row)).map_err(|err| {
            sql_error(err).with_context(format_args!(
                "sqlite database {label}: inserting record {}",
                r.id
            ))
        })?;
        added += n as u64;
    }
    Ok(added)
}
