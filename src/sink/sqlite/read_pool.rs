//! The read side of a file database: read-only connections on tokio's blocking
//! pool.

use std::path::PathBuf;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use rusqlite::{Connection, InterruptHandle};
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
    ///
    /// When the returned future is dropped before the read is done (the
    /// endpoint's query timeout fired), the statement is interrupted
    /// (`sqlite3_interrupt`): it fails at once, and the connection and the
    /// blocking thread are free again, instead of running to the end for
    /// nobody.
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
        let interrupt = Arc::new(Interrupt::default());
        let _on_drop = InterruptOnDrop(Arc::clone(&interrupt));
        runtime
            .spawn_blocking(move || {
                let _permit = permit;
                pool.run_blocking(read, &interrupt)
            })
            .await
            .map_err(|_| unavailable("the query task panicked or was cancelled"))?
    }

    fn run_blocking<T>(
        &self,
        read: impl FnOnce(&Connection, &str) -> Result<T, SinkError>,
        interrupt: &Interrupt,
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
        if !interrupt.arm(conn.get_interrupt_handle()) {
            // Dropped before it started: nobody waits for the answer.
            self.idle
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .push((conn, id));
            return Err(SinkError::message(
                SinkErrorKind::Unavailable,
                format!("sqlite database {}: the query was cancelled", self.label),
            ));
        }
        let result = read(&conn, &self.label);
        interrupt.disarm();
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

/// The interrupt handle of the connection a read runs on, once it has one,
/// and whether the read's future was dropped.
#[derive(Default)]
struct Interrupt {
    state: Mutex<(Option<InterruptHandle>, bool)>,
}

impl Interrupt {
    /// Notes the connection's handle; `false` when the read was dropped already.
    fn arm(&self, handle: InterruptHandle) -> bool {
        let mut state = self.state.lock().unwrap_or_else(PoisonError::into_inner);
        if state.1 {
            return false;
        }
        state.0 = Some(handle);
        true
    }

    /// The read is over: a late drop must not interrupt the connection's next user.
    fn disarm(&self) {
        self.state.lock().unwrap_or_else(PoisonError::into_inner).0 = None;
    }

    fn fire(&self) {
        let mut state = self.state.lock().unwrap_or_else(PoisonError::into_inner);
        state.1 = true;
        if let Some(handle) = state.0.take() {
            handle.interrupt();
        }
    }
}

/// Interrupts the read when the future awaiting it is dropped (after it is
/// done, [`Interrupt::disarm`] made this a no-op).
struct InterruptOnDrop(Arc<Interrupt>);

impl Drop for InterruptOnDrop {
    fn drop(&mut self) {
        self.0.fire();
    }
}
