//! The read side of a file database: read-only connections on tokio's blocking
//! pool.

use std::path::PathBuf;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use rusqlite::Connection;
use tokio::sync::Semaphore;

use super::file_id::FileId;
use super::{schema, select};
use crate::sink::{Position, UsageQuery};
use crate::{SinkError, SinkErrorKind, UsageRecord};

/// Read-only connections to a file, opened on demand and kept for reuse; the
/// semaphore bounds how many are in use. Each remembers the file it opened: one
/// whose path now names another file (or none: the file was deleted or
/// replaced) is closed, not used, so `/usage` never answers from a file that is
/// gone.
pub(super) struct ReadPool {
    pub(super) path: PathBuf,
    pub(super) label: String,
    pub(super) busy_timeout: Duration,
    pub(super) idle: Mutex<Vec<(Connection, Option<FileId>)>>,
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

    /// Runs `read` with a connection of the pool, on tokio's blocking pool.
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
        let file = FileId::of(&self.path);
        let taken = {
            let mut idle = self.idle.lock().unwrap_or_else(PoisonError::into_inner);
            idle.retain(|(_, id)| file.is_some() && *id == file);
            idle.pop()
        };
        let (conn, id) = match taken {
            Some(taken) => taken,
            None => {
                let conn = schema::open_reader(&self.path, self.busy_timeout)?;
                (conn, FileId::of(&self.path))
            }
        };
        let result = read(&conn, &self.label);
        // A connection that failed may be in a bad state: only a good one goes back.
        if result.is_ok() {
            self.idle
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .push((conn, id));
        }
        result
    }
}
