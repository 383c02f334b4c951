//! The read side of a file database: read-only connections on tokio's blocking
//! pool.

use std::path::PathBuf;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use rusqlite::Connection;
use tokio::sync::Semaphore;

use super::{schema, select};
use crate::sink::{Position, UsageQuery};
use crate::{SinkError, SinkErrorKind, UsageRecord};

/// Read-only connections to a file, opened on demand and kept for reuse; the
/// semaphore bounds how many are in use.
pub(super) struct ReadPool {
    pub(super) path: PathBuf,
    pub(super) label: String,
    pub(super) busy_timeout: Duration,
    pub(super) idle: Mutex<Vec<Connection>>,
    pub(super) permits: Arc<Semaphore>,
}

impl ReadPool {
    pub(super) async fn select(
        self: &Arc<Self>,
        query: UsageQuery,
        after: Option<Position>,
    ) -> Result<Vec<UsageRecord>, SinkError> {
        self.run(move |conn, label| select::select(conn, label, &query, after.as_ref()))
            .await
    }

    /// Runs `read` with a read-only connection, on tokio's blocking pool.
    pub(super) async fn run<T: Send + 'static>(
        self: &Arc<Self>,
        read: impl FnOnce(&Connection, &str) -> Result<T, SinkError> + Send + 'static,
    ) -> Result<T, SinkError> {
        let unavailable = |what: &str| {
            SinkError::message(
                SinkErrorKind::Unavailable,
                format!("sqlite database {}: {what}", self.label),
            )
        };
        let runtime = tokio::runtime::Handle::try_current()
            .map_err(|_| unavailable("queries need a tokio runtime"))?;
        let permit = Arc::clone(&self.permits)
            .acquire_owned()
            .await
            .map_err(|_| unavailable("the reader pool is closed"))?;
        let pool = Arc::clone(self);
        runtime
            .spawn_blocking(move || {
                let _permit = permit;
                pool.run_blocking(read)
            })
            .await
            .map_err(|_| unavailable("the query task panicked or was cancelled"))?
    }

    fn run_blocking<T>(
        &self,
        read: impl FnOnce(&Connection, &str) -> Result<T, SinkError>,
    ) -> Result<T, SinkError> {
        let taken = self
            .idle
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .pop();
        let conn = match taken {
            Some(conn) => conn,
            None => schema::open_reader(&self.path, self.busy_timeout)?,
        };
        let result = read(&conn, &self.label);
        // A connection that failed may be in a bad state: only a good one goes back.
        if result.is_ok() {
            self.idle
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .push(conn);
        }
        result
    }
}
