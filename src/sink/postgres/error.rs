//! Mapping tokio-postgres and pool errors onto [`SinkError`]: whether the writer
//! should retry is decided here.

use std::error::Error as StdError;
use std::fmt;

use deadpool_postgres::PoolError;
use tokio_postgres::error::SqlState;

use crate::{SinkError, SinkErrorKind};

/// A tokio-postgres error whose `Display` includes its cause: tokio-postgres
/// itself says only `db error` and keeps the server's message in `source()`.
/// Its own `source()` is the tokio-postgres error, so callers can still reach
/// the [`DbError`](tokio_postgres::error::DbError) and its SQLSTATE.
#[derive(Debug)]
struct PgError(tokio_postgres::Error);

impl fmt::Display for PgError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)?;
        if let Some(cause) = self.0.source() {
            write!(f, ": {cause}")?;
        }
        Ok(())
    }
}

impl StdError for PgError {
    fn source(&self) -> Option<&(dyn StdError + 'static)> {
        Some(&self.0)
    }
}

/// Classifies a tokio-postgres error.
///
/// - the connection is gone, could not be made, or the server is shutting down,
///   restarting or out of resources: [`SinkErrorKind::Unavailable`], temporary;
/// - serialization failures, deadlocks, lock timeouts, cancelled statements:
///   [`SinkErrorKind::Other`], temporary;
/// - everything else the server rejects (data, constraint, syntax, permission and
///   missing-table errors), and values that cannot be converted: permanent, since
///   the same batch would fail the same way again.
pub(super) fn pg(err: tokio_postgres::Error) -> SinkError {
    let code = err.code().cloned();
    let closed = err.is_closed();
    let io = err.source().is_some_and(|s| s.is::<std::io::Error>());
    let err = PgError(err);
    if let Some(code) = code {
        let class = &code.code()[..2.min(code.code().len())];
        return match class {
            // connection exception; insufficient resources; system error
            "08" | "53" | "58" => SinkError::unavailable(err),
            // admin / crash shutdown, cannot connect now
            "57" if code != SqlState::QUERY_CANCELED => SinkError::unavailable(err),
            // query cancelled (statement_timeout), transaction rollback
            // (serialization failure, deadlock), lock not available
            "57" | "40" => SinkError::new(err),
            _ if code == SqlState::LOCK_NOT_AVAILABLE => SinkError::new(err),
            _ if code == SqlState::UNDEFINED_TABLE => SinkError::new(err)
                .permanent()
                .with_context("the usage table does not exist (was `migrate()` run?)"),
            _ => SinkError::new(err).permanent(),
        };
    }
    if closed || io {
        SinkError::unavailable(err)
    } else {
        // Conversion, protocol and configuration errors: retrying will not help.
        SinkError::new(err).permanent()
    }
}

/// A stored value that cannot be read as its column's type (from `Row::try_get`):
/// corrupt data, not a failure of the server.
pub(super) fn column(err: tokio_postgres::Error) -> SinkError {
    SinkError::with_kind(SinkErrorKind::Corrupt, PgError(err))
}

/// Classifies a failure to get a connection from the pool.
pub(super) fn pool(err: PoolError) -> SinkError {
    match err {
        PoolError::Backend(e) => pg(e).with_context("connecting to PostgreSQL"),
        PoolError::Timeout(_) => SinkError::unavailable(err)
            .with_context("waiting for a PostgreSQL connection from the pool"),
        PoolError::PostCreateHook(_) => {
            SinkError::new(err).with_context("preparing a new PostgreSQL connection")
        }
        PoolError::Closed | PoolError::NoRuntimeSpecified => SinkError::new(err).permanent(),
    }
}
