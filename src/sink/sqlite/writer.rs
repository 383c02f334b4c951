//! The writer thread: owns the one read-write connection, writes each batch in one
//! transaction, and runs retention between batches.

use std::path::{Path, PathBuf};
use std::sync::mpsc::{Receiver, RecvTimeoutError, TryRecvError};
use std::time::{Duration, Instant};

use rusqlite::{params, Connection, ErrorCode, TransactionBehavior};
use time::OffsetDateTime;
use tokio::sync::oneshot;

use super::error::context;
use super::file_id::FileId;
use super::{insert, schema, select, summary};
use crate::record::unix_millis;
use crate::sink::{ConsumerScope, Position, SummaryQuery, UsageQuery, UsageSummary};
use crate::streak::Streak;
use crate::{SinkError, SinkErrorKind, UsageRecord};

/// After this long without a command, the writer checkpoints the WAL and cuts
/// it to zero bytes, so an idle database holds no WAL and a volume that filled
/// up gets its space back.
const IDLE_CHECKPOINT: Duration = Duration::from_secs(1);

/// `wal_autocheckpoint` on a nearly full volume, and after a disk-full error:
/// SQLite's default (1000 pages, 4 MiB), so the WAL stays small.
const SMALL_WAL_PAGES: i64 = 1000;

/// `journal_size_limit` then: 4 MiB.
const SMALL_WAL_BYTES: i64 = 4 * 1024 * 1024;

/// Below this much free space on its volume the WAL is kept small: the large
/// WAL (64 MiB between checkpoints) could fill the volume before a checkpoint
/// copies it into the database, and then neither can grow.
const LOW_SPACE: u64 = 4 * schema::JOURNAL_SIZE_LIMIT as u64;

/// The file a file database's writer has open, checked before every batch.
pub(super) struct FileWatch {
    path: PathBuf,
    busy_timeout: Duration,
    /// The file the connection has open; `None` after it was found gone and
    /// could not be reopened yet.
    id: Option<FileId>,
    /// The WAL is kept small (little free space, or a disk-full error).
    small_wal: bool,
}

impl FileWatch {
    pub(super) fn new(path: PathBuf, busy_timeout: Duration) -> Self {
        let id = FileId::of(&path);
        Self {
            path,
            busy_timeout,
            id,
            small_wal: false,
        }
    }
}

/// A consumer's fair share of `max_rows`: one `FAIR_SHARE`th (a quarter).
pub(super) const FAIR_SHARE: u64 = 4;

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
    /// Make the thread panic, to test that callers see an error and not a hang.
    #[cfg(test)]
    Panic,
}

/// What retention keeps.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Retention {
    pub(super) max_age: Option<Duration>,
    pub(super) max_rows: Option<u64>,
    /// Over `max_rows`, delete first from a consumer over its fair share.
    pub(super) fair_share: bool,
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
    /// `None` for an in-memory database.
    file: Option<FileWatch>,
    /// Writes since the last checkpoint of the WAL.
    dirty: bool,
    /// The streak of failed writes and retention steps (one warning each).
    failing: Streak,
    retention: Retention,
    /// Rows in the table as far as this writer knows: counted on start and at
    /// every retention tick, kept up to date in between.
    rows: u64,
    /// An age sweep is in progress.
    sweeping: bool,
    /// The consumer holding the most rows (`None` inside: the anonymous one)
    /// and how many, when it was over its share at the last look.
    heavy: Option<(Option<String>, u64)>,
    /// When the heaviest consumer was last looked for (once per retention
    /// interval at most: it is a scan of the consumer index).
    heavy_checked: Option<Instant>,
    /// The consumer with the most rows in the last batch written.
    dominant: Option<Option<String>>,
}

impl Writer {
    pub(super) fn new(
        conn: Connection,
        label: String,
        retention: Retention,
        file: Option<FileWatch>,
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
            self.note_batch_consumers(batch);
        }
        Ok(())
    }

    /// Fair share bookkeeping: the heavy consumer's count grows with its new
    /// rows, and the consumer with the most rows in this batch is the one to
    /// look at next if there is no heavy one (a flood shows up there first).
    fn note_batch_consumers(&mut self, batch: &[UsageRecord]) {
        if let Some((heavy, held)) = &mut self.heavy {
            let mine = batch.iter().filter(|r| r.consumer == *heavy).count();
            *held = held.saturating_add(mine as u64);
        }
        // The batch's most frequent consumer: batches are a few hundred records.
        let mut counts: Vec<(Option<&str>, usize)> = Vec::new();
        for record in batch {
            let consumer = record.consumer.as_deref();
            if let Some((_, n)) = counts.iter_mut().find(|(c, _)| *c == consumer) {
                *n += 1;
            } else if counts.len() < 64 {
                counts.push((consumer, 1));
            }
        }
        if let Some((consumer, _)) = counts.iter().max_by_key(|(_, n)| *n) {
            self.dominant = Some(consumer.map(str::to_owned));
        }
    }

    /// After a disk-full error: checkpoint and truncate the WAL (its space
    /// comes back as soon as the database file can take its pages) and keep
    /// the WAL small from now on. Returns whether the error was one.
    fn disk_full(&mut self, err: &SinkError) -> bool {
        let full = std::error::Error::source(err)
            .and_then(|e| e.downcast_ref::<rusqlite::Error>())
            .and_then(rusqlite::Error::sqlite_error_code)
            == Some(ErrorCode::DiskFull)
            || err.text().contains("database or disk is full");
        if full {
            self.small_wal(true);
            self.checkpoint();
        }
        full
    }

    /// Keeps the WAL small while the volume has less than [`LOW_SPACE`] free,
    /// large again once it has twice that. One `statvfs` per batch.
    fn check_space(&mut self) {
        let Some(file) = &self.file else {
            return;
        };
        let Some(free) = super::file_id::free_bytes(&file.path) else {
            return;
        };
        if !file.small_wal && free < LOW_SPACE {
            tracing::info!(path = %self.label, free, "sqlite usage sink: little free space on the volume; keeping the WAL small (4 MiB)");
            self.small_wal(true);
        } else if file.small_wal && free > 2 * LOW_SPACE {
            self.small_wal(false);
        }
    }

    fn small_wal(&mut self, small: bool) {
        let (pages, bytes) = if small {
            (SMALL_WAL_PAGES, SMALL_WAL_BYTES)
        } else {
            (schema::WAL_AUTOCHECKPOINT_PAGES, schema::JOURNAL_SIZE_LIMIT)
        };
        let _ = self.conn.pragma_update(None, "wal_autocheckpoint", pages);
        let _ = self.conn.pragma_update(None, "journal_size_limit", bytes);
        if let Some(f) = self.file.as_mut() {
            f.small_wal = small;
        }
    }

    /// `PRAGMA wal_checkpoint(TRUNCATE)`: copies the WAL into the database and
    /// cuts it to zero bytes. Best effort: a busy reader or a full disk leaves
    /// it for the next time.
    ///
    /// A `TRUNCATE` checkpoint waits for readers on older snapshots; it is
    /// run with no busy timeout, so the writer never waits for a long `/usage`
    /// query: a busy checkpoint is tried again a second later.
    fn checkpoint(&mut self) {
        let Some(file) = &self.file else {
            return;
        };
        let busy_timeout = file.busy_timeout;
        let _ = self.conn.busy_timeout(Duration::ZERO);
        let result = self
            .conn
            .query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |row| {
                row.get::<_, i64>(0)
            });
        let _ = self.conn.busy_timeout(busy_timeout);
        match result {
            Ok(0) => self.dirty = false,
            Ok(_busy) => {}
            Err(err) => {
                tracing::debug!(path = %self.label, error = %err, "sqlite usage sink: checkpoint failed");
            }
        }
    }

    /// Fails loudly when the database file was deleted or replaced: the writer
    /// closes its connection and opens the path again (creating the file and
    /// its schema when there is none), with one warning. Records written
    /// before are in the old file, not in the new one. One `stat` per batch.
    fn check_file(&mut self) -> Result<(), SinkError> {
        let Some(file) = &self.file else {
            return Ok(());
        };
        let now = FileId::of(&file.path);
        if now.is_some() && now == file.id {
            return Ok(());
        }
        let (path, busy_timeout, was_open) = (file.path.clone(), file.busy_timeout, file.id);
        if was_open.is_some() {
            tracing::warn!(
                path = %self.label,
                deleted = now.is_none(),
                "sqlite usage sink: the database file was deleted or replaced under the sink; \
                 reopening the path (a new file gets the schema): records written before are not in it"
            );
            // Close the old file first: its connection checkpoints into it and
            // removes its WAL, which must not be replayed into the new file.
            let placeholder = Connection::open_in_memory().map_err(context(&self.label))?;
            drop(std::mem::replace(&mut self.conn, placeholder));
            if let Some(f) = self.file.as_mut() {
                f.id = None;
            }
        }
        if now.is_none() {
            remove_stale_wal(&path);
        }
        let conn = schema::open_writer(&path, busy_timeout).map_err(|err| {
            SinkError::message(
                SinkErrorKind::Unavailable,
                format!("reopening a deleted or replaced database: {err}"),
            )
        })?;
        self.conn = conn;
        self.rows = 0;
        self.sweeping = false;
        if let Some(f) = self.file.as_mut() {
            f.id = FileId::of(&path);
            f.small_wal = false;
        }
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
                Err(err) => {
                    if self.failing.fail() {
                        tracing::warn!(
                            path = %self.label,
                            error = %err,
                            "sqlite usage sink: counting rows for retention failed (further failures are not logged until a write succeeds)"
                        );
                    }
                }
            }
        }
        self.sweeping = self.retention.max_age.is_some();
    }

    /// Fair share: over `max_rows`, the consumer holding the most rows, when
    /// it holds more than a quarter of `max_rows`, loses its oldest rows
    /// first (at most `want`, and never below its share), so that a flood
    /// from one client cannot delete the others' history. `false` when no
    /// consumer is over its share.
    fn delete_from_heavy(&mut self, max_rows: u64, want: i64) -> Result<bool, SinkError> {
        let share = (max_rows / FAIR_SHARE).max(1);
        let stale = self
            .heavy_checked
            .is_none_or(|at| at.elapsed() >= self.retention.interval);
        if stale {
            self.heavy_checked = Some(Instant::now());
            self.heavy = self
                .conn
                .prepare_cached(
                    "SELECT consumer, count(*) AS n FROM usage_records \
                     GROUP BY consumer ORDER BY n DESC LIMIT 1",
                )
                .and_then(|mut s| {
                    s.query_row([], |row| {
                        Ok((row.get::<_, Option<String>>(0)?, row.get::<_, i64>(1)?))
                    })
                })
                .map(|(consumer, n)| (consumer, u64::try_from(n).unwrap_or(0)))
                .ok()
                .filter(|(_, n)| *n > share);
        }
        if self.heavy.as_ref().is_none_or(|(_, held)| *held <= share) {
            // Between two full looks: the last batch's main consumer, counted
            // on its index range.
            if let Some(consumer) = self.dominant.take() {
                let held = self
                    .conn
                    .prepare_cached("SELECT count(*) FROM usage_records WHERE consumer IS ?1")
                    .and_then(|mut s| {
                        s.query_row(params![consumer.as_deref()], |row| row.get::<_, i64>(0))
                    })
                    .map_or(0, |n| u64::try_from(n).unwrap_or(0));
                if held > share {
                    self.heavy = Some((consumer, held));
                }
            }
        }
        let Some((consumer, held)) = &mut self.heavy else {
            return Ok(false);
        };
        let over = held.saturating_sub(share);
        if over == 0 {
            self.heavy = None;
            return Ok(false);
        }
        let want = want.min(i64::try_from(over).unwrap_or(i64::MAX));
        let deleted = self
            .conn
            .prepare_cached(
                "DELETE FROM usage_records WHERE rowid IN (SELECT rowid FROM usage_records \
                 WHERE consumer IS ?1 ORDER BY created_at, id LIMIT ?2)",
            )
            .and_then(|mut s| s.execute(params![consumer.as_deref(), want]))
            .map_err(context(&self.label))? as u64;
        *held = held.saturating_sub(deleted);
        if deleted == 0 {
            // Gone meanwhile (another process): look again next interval.
            self.heavy = None;
            return Ok(false);
        }
        self.rows = self.rows.saturating_sub(deleted);
        tracing::debug!(path = %self.label, deleted, "sqlite usage sink: removed a heavy consumer's records past its share of max_rows");
        Ok(true)
    }

    fn over_row_cap(&self) -> bool {
        self.retention.max_rows.is_some_and(|max| self.rows > max)
    }

    fn retention_pending(&self) -> bool {
        self.sweeping || self.over_row_cap()
    }

    /// Deletes one chunk of what retention removes.
    fn retention_step(&mut self) -> Result<(), SinkError> {
        if self.file.as_ref().is_some_and(|f| f.id.is_none()) {
            // The file is gone and not reopened yet: nothing to delete from.
            self.sweeping = false;
            self.rows = 0;
            return Ok(());
        }
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
                .map_err(context(&self.label))?;
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
            if self.retention.fair_share && self.delete_from_heavy(max_rows, want)? {
                return Ok(());
            }
            let deleted = self
                .conn
                .prepare_cached(
                    "DELETE FROM usage_records WHERE rowid IN (SELECT rowid FROM usage_records \
                     ORDER BY created_at, id LIMIT ?1)",
                )
                .and_then(|mut s| s.execute(params![want]))
                .map_err(context(&self.label))?;
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

/// Removes the `-wal` and `-shm` files of a database file that is gone: they
/// belong to no database now, and SQLite would replay them into a new file
/// created at the same path.
fn remove_stale_wal(path: &Path) {
    for suffix in ["-wal", "-shm"] {
        let mut p = path.as_os_str().to_owned();
        p.push(suffix);
        let _ = std::fs::remove_file(PathBuf::from(p));
    }
}
