//! The WAL and disk policy of the writer: a checkpoint when idle, a small WAL
//! on a nearly full volume or after a disk-full error, and a database file
//! deleted or replaced under the sink.

use std::path::{Path, PathBuf};
use std::time::Duration;

use rusqlite::{Connection, ErrorCode};

use super::error::context;
use super::file_id::FileId;
use super::schema;
use super::writer::Writer;
use crate::{SinkError, SinkErrorKind};

/// After this long without a command, the writer checkpoints the WAL and cuts
/// it to zero bytes, so an idle database holds no WAL and a volume that filled
/// up gets its space back.
pub(super) const IDLE_CHECKPOINT: Duration = Duration::from_secs(1);

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
    pub(super) path: PathBuf,
    pub(super) busy_timeout: Duration,
    /// The file the connection has open; `None` after it was found gone and
    /// could not be reopened yet.
    pub(super) id: Option<FileId>,
    /// The WAL is kept small (little free space, or a disk-full error).
    pub(super) small_wal: bool,
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

impl Writer {
    /// After a disk-full error: checkpoint and truncate the WAL (its space
    /// comes back as soon as the database file can take its pages) and keep
    /// the WAL small from now on. Returns whether the error was one.
    pub(super) fn disk_full(&mut self, err: &SinkError) -> bool {
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
    pub(super) fn check_space(&mut self) {
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
    pub(super) fn checkpoint(&mut self) {
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
    pub(super) fn check_file(&mut self) -> Result<(), SinkError> {
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
        self.forget_newcomers();
        self.sweeping = false;
        if let Some(f) = self.file.as_mut() {
            f.id = FileId::of(&path);
            f.small_wal = false;
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
