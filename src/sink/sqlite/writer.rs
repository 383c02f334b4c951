//! The writer thread: owns the one read-write connection, writes each batch in one
//! transaction, and runs retention between batches.

use std::sync::mpsc::{Receiver, RecvTimeoutError, TryRecvError};
use std::time::{Duration, Instant};

use rusqlite::{params, Connection, TransactionBehavior};
use time::OffsetDateTime;
use tokio::sync::oneshot;

use super::error::context;
use super::{insert, select, summary};
use crate::record::unix_millis;
use crate::sink::{Position, SummaryQuery, UsageQuery, UsageSummary};
use crate::{SinkError, UsageRecord};

/// Rows deleted per retention statement; between two, queued writes go first.
const RETENTION_CHUNK: i64 = 500;

/// A request to the writer thread.
pub(super) enum Command {
    /// Store a batch; reply when it is committed (or failed).
    Write {
        batch: Vec<UsageRecord>,
        reply: oneshot::Sender<Result<(), SinkError>>,
    },
    /// Run a page query (in-memory databases only, which have one connection).
    Query {
        query: UsageQuery,
        after: Option<Position>,
        reply: oneshot::Sender<Result<Vec<UsageRecord>, SinkError>>,
    },
    /// Run a summary (in-memory databases only).
    Summarize {
        query: SummaryQuery,
        reply: oneshot::Sender<Result<UsageSummary, SinkError>>,
    },
    /// Make the thread panic, to test that callers see an error and not a hang.
    #[cfg(test)]
    Panic,
}

/// What retention keeps.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Retention {
    pub(super) max_age: Option<Duration>,
    pub(super) max_rows: Option<u64>,
    pub(super) interval: Duration,
}

impl Retention {
    fn enabled(&self) -> bool {
        self.max_age.is_some() || self.max_rows.is_some()
    }
}

pub(super) struct Writer {
    conn: Connection,
    label: String,
    retention: Retention,
    /// Rows in the table as far as this writer knows: counted on start and at
    /// every retention tick, kept up to date in between.
    rows: u64,
    /// An age sweep is in progress.
    sweeping: bool,
}

impl Writer {
    pub(super) fn new(conn: Connection, label: String, retention: Retention) -> Self {
        Self {
            conn,
            label,
            retention,
            rows: 0,
            sweeping: false,
        }
    }

    /// The thread's body: serve commands until every sender is gone. Between two
    /// commands, one chunk of retention work (if any is due), so retention keeps up
    /// under load and a write never waits for more than one chunk.
    pub(super) fn run(mut self, rx: Receiver<Command>) {
        let interval = self.retention.interval.max(Duration::from_millis(1));
        let mut next_tick = Instant::now(); // a first round at start
        loop {
            if self.retention.enabled() && Instant::now() >= next_tick {
                next_tick = Instant::now() + interval;
                self.tick();
            }
            if self.retention_pending() {
                if let Err(err) = self.retention_step() {
                    tracing::warn!(
                        path = %self.label,
                        error = %err,
                        "sqlite usage sink: retention failed; retrying at the next tick"
                    );
                    self.sweeping = false;
                    self.rows = 0; // recounted at the next tick
                }
            }
            let cmd = if self.retention_pending() {
                match rx.try_recv() {
                    Ok(cmd) => cmd,
                    Err(TryRecvError::Empty) => continue,
                    Err(TryRecvError::Disconnected) => break,
                }
            } else if self.retention.enabled() {
                let wait = next_tick.saturating_duration_since(Instant::now());
                match rx.recv_timeout(wait) {
                    Ok(cmd) => cmd,
                    Err(RecvTimeoutError::Timeout) => continue,
                    Err(RecvTimeoutError::Disconnected) => break,
                }
            } else {
                match rx.recv() {
                    Ok(cmd) => cmd,
                    Err(_) => break,
                }
            };
            self.handle(cmd);
        }
        // Every sink handle is gone: let SQLite refresh its statistics, then close.
        let _ = self.conn.execute_batch("PRAGMA optimize");
        tracing::debug!(path = %self.label, "sqlite usage sink: writer thread stopped");
    }

    fn handle(&mut self, cmd: Command) {
        match cmd {
            Command::Write { batch, reply } => {
                let result = self.write(&batch);
                // The caller may have stopped waiting; the batch is stored anyway.
                let _ = reply.send(result);
            }
            Command::Query {
                query,
                after,
                reply,
            } => {
                let result = select::select(&self.conn, &self.label, &query, after.as_ref());
                let _ = reply.send(result);
            }
            Command::Summarize { query, reply } => {
                let _ = reply.send(summary::summarize(&self.conn, &self.label, &query));
            }
            #[cfg(test)]
            Command::Panic => panic!("writer thread told to panic"),
        }
    }

    fn write(&mut self, batch: &[UsageRecord]) -> Result<(), SinkError> {
        let ctx = context(&self.label);
        let tx = self
            .conn
            .transaction_with_behavior(TransactionBehavior::Immediate)
            .map_err(&ctx)?;
        let added = insert::insert(&tx, &self.label, batch)?;
        tx.commit().map_err(&ctx)?;
        self.rows = self.rows.saturating_add(added);
        Ok(())
    }

    /// Starts a retention round: recount the rows, sweep by age.
    fn tick(&mut self) {
        if self.retention.max_rows.is_some() {
            match self
                .conn
                .query_row("SELECT count(*) FROM usage_records", [], |row| {
                    row.get::<_, i64>(0)
                }) {
                Ok(n) => self.rows = u64::try_from(n).unwrap_or(0),
                Err(err) => tracing::warn!(
                    path = %self.label,
                    error = %err,
                    "sqlite usage sink: counting rows for retention failed"
                ),
            }
        }
        self.sweeping = self.retention.max_age.is_some();
    }

    fn over_row_cap(&self) -> bool {
        self.retention.max_rows.is_some_and(|max| self.rows > max)
    }

    fn retention_pending(&self) -> bool {
        self.sweeping || self.over_row_cap()
    }

    /// Deletes one chunk of what retention removes.
    fn retention_step(&mut self) -> Result<(), SinkError> {
        let ctx = context(&self.label);
        if self.sweeping {
            let max_age = self.retention.max_age.unwrap_or(Duration::MAX);
            let age_ms = i64::try_from(max_age.as_millis()).unwrap_or(i64::MAX);
            let cutoff = unix_millis(OffsetDateTime::now_utc()).saturating_sub(age_ms);
            let deleted = self
                .conn
                .prepare_cached(
                    "DELETE FROM usage_records WHERE rowid IN (SELECT rowid FROM usage_records \
                     WHERE created_at < ?1 ORDER BY created_at, id LIMIT ?2)",
                )
                .and_then(|mut s| s.execute(params![cutoff, RETENTION_CHUNK]))
                .map_err(&ctx)?;
            self.rows = self.rows.saturating_sub(deleted as u64);
            if (deleted as i64) < RETENTION_CHUNK {
                self.sweeping = false;
            }
            if deleted > 0 {
                tracing::debug!(path = %self.label, deleted, "sqlite usage sink: removed records past max_age");
            }
            return Ok(());
        }
        if let Some(max_rows) = self.retention.max_rows {
            let excess = self.rows.saturating_sub(max_rows);
            if excess == 0 {
                return Ok(());
            }
            let want = i64::try_from(excess)
                .unwrap_or(i64::MAX)
                .min(RETENTION_CHUNK);
            let deleted = self
                .conn
                .prepare_cached(
                    "DELETE FROM usage_records WHERE rowid IN (SELECT rowid FROM usage_records \
                     ORDER BY created_at, id LIMIT ?1)",
                )
                .and_then(|mut s| s.execute(params![want]))
                .map_err(&ctx)?;
            if (deleted as i64) < want {
                // The table held fewer rows than counted (another process
                // deleted some) and is now empty.
                self.rows = 0;
            } else {
                self.rows = self.rows.saturating_sub(deleted as u64);
            }
            if deleted > 0 {
                tracing::debug!(path = %self.label, deleted, "sqlite usage sink: removed records past max_rows");
            }
        }
        Ok(())
    }
}
