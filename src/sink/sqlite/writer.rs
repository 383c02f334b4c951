//! The writer thread: owns the one read-write connection, writes each batch in
//! one transaction, and runs retention (`retention.rs`) and the WAL and disk
//! policy (`wal.rs`) between batches.

use std::sync::atomic::AtomicU64;
use std::sync::mpsc::{Receiver, RecvTimeoutError, TryRecvError};
use std::sync::Arc;
use std::time::{Duration, Instant};

use rusqlite::{Connection, TransactionBehavior};
use tokio::sync::oneshot;

use super::error::context;
use super::newcomers::Newcomers;
pub(super) use super::retention::Retention;
pub(super) use super::wal::FileWatch;
use super::wal::IDLE_CHECKPOINT;
use super::{insert, select, summary};
use crate::sink::{ConsumerScope, Position, SummaryQuery, UsageQuery, UsageSummary};
use crate::streak::Streak;
use crate::{SinkError, UsageRecord};

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
    /// Look a record up by id (in-memory databases only).
    Get {
        id: String,
        scope: ConsumerScope,
        reply: oneshot::Sender<Result<Option<UsageRecord>, SinkError>>,
    },
    /// Run a summary (in-memory databases only).
    Summarize {
        query: SummaryQuery,
        reply: oneshot::Sender<Result<UsageSummary, SinkError>>,
    },
    /// Delete every record of a consumer.
    Erase {
        consumer: String,
        reply: oneshot::Sender<Result<u64, SinkError>>,
    },
    /// Delete now the records older than an age, in chunks.
    Expire {
        max_age: Duration,
        reply: oneshot::Sender<Result<u64, SinkError>>,
    },
    /// Make the thread panic, to test that callers see an error and not a hang.
    #[cfg(test)]
    Panic,
}

pub(super) struct Writer {
    pub(super) conn: Connection,
    pub(super) label: String,
    /// `None` for an in-memory database.
    pub(super) file: Option<FileWatch>,
    /// Writes since the last checkpoint of the WAL.
    pub(super) dirty: bool,
    /// The streak of failed writes and retention steps (one warning each).
    pub(super) failing: Streak,
    pub(super) retention: Retention,
    /// Rows in the table as far as this writer knows: counted on start and at
    /// every retention tick, kept up to date in between.
    pub(super) rows: u64,
    /// An age sweep is in progress.
    pub(super) sweeping: bool,
    /// The consumer holding the most rows (`None` inside: the anonymous one)
    /// and how many, when it was over its share at the last look.
    pub(super) heavy: Option<(Option<String>, u64)>,
    /// When the heaviest consumer was last looked for (once per retention
    /// interval at most: it is a scan of the consumer index).
    pub(super) heavy_checked: Option<Instant>,
    /// The consumer with the most rows in the last batch written.
    pub(super) dominant: Option<Option<String>>,
    /// Consumers first seen while the table was full (see `newcomers.rs`).
    pub(super) newcomers: Newcomers,
    /// Records deleted for their age, ever (read by `SqliteSink::expired`).
    pub(super) expired: Arc<AtomicU64>,
    /// Records deleted by the age sweep under way.
    pub(super) swept: u64,
}

impl Writer {
    pub(super) fn new(
        conn: Connection,
        label: String,
        retention: Retention,
        file: Option<FileWatch>,
        expired: Arc<AtomicU64>,
    ) -> Self {
        let mut writer = Self {
            conn,
            label,
            file,
            dirty: false,
            failing: Streak::new(),
            retention,
            rows: 0,
            sweeping: false,
            heavy: None,
            heavy_checked: None,
            dominant: None,
            newcomers: Newcomers::default(),
            expired,
            swept: 0,
        };
        // A WAL left over from a crash, or from a run that filled the volume,
        // is cut back now: a restart on a nearly full volume starts with room.
        writer.checkpoint();
        writer
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
                    if self.failing.fail() {
                        tracing::warn!(
                            path = %self.label,
                            error = %err,
                            "sqlite usage sink: retention failed; retrying at the next tick (further failures are not logged until a write succeeds)"
                        );
                    }
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
            } else if self.dirty {
                match rx.recv_timeout(IDLE_CHECKPOINT) {
                    Ok(cmd) => cmd,
                    Err(RecvTimeoutError::Timeout) => {
                        self.checkpoint();
                        continue;
                    }
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
            Command::Get { id, scope, reply } => {
                let _ = reply.send(select::by_id(&self.conn, &self.label, &id, &scope));
            }
            Command::Summarize { query, reply } => {
                let _ = reply.send(summary::summarize(&self.conn, &self.label, &query));
            }
            Command::Erase { consumer, reply } => {
                let _ = reply.send(self.erase(&consumer));
            }
            Command::Expire { max_age, reply } => {
                let _ = reply.send(self.expire_now(max_age));
            }
            #[cfg(test)]
            Command::Panic => panic!("writer thread told to panic"),
        }
    }

    fn write(&mut self, batch: &[UsageRecord]) -> Result<(), SinkError> {
        self.check_file()?;
        self.check_space();
        let result = self.insert(batch);
        match &result {
            Ok(()) => {
                self.dirty = true;
                if let Some(failures) = self.failing.succeed() {
                    tracing::info!(path = %self.label, failures, "sqlite usage sink: writing again");
                }
            }
            Err(err) => {
                let full = self.disk_full(err);
                if self.failing.fail() {
                    tracing::warn!(
                        path = %self.label,
                        error = %err,
                        disk_full = full,
                        "sqlite usage sink: a write failed (further failures are not logged until one succeeds)"
                    );
                }
            }
        }
        result
    }

    fn insert(&mut self, batch: &[UsageRecord]) -> Result<(), SinkError> {
        self.note_newcomers(batch)?;
        let ctx = context(&self.label);
        let tx = self
            .conn
            .transaction_with_behavior(TransactionBehavior::Immediate)
            .map_err(&ctx)?;
        let added = insert::insert(&tx, &self.label, batch)?;
        tx.commit().map_err(&ctx)?;
        drop(ctx);
        self.rows = self.rows.saturating_add(added);
        if self.retention.fair_share && self.retention.max_rows.is_some() {
            self.count_newcomers(batch);
            self.note_batch_consumers(batch);
        }
        Ok(())
    }
}
