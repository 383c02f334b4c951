//! Opening a database: pragmas, the schema, its version and its migrations.

use std::path::Path;
use std::time::Duration;

use rusqlite::{Connection, OpenFlags, TransactionBehavior};

use super::error::{context, sql_error};
use crate::{SinkError, SinkErrorKind};

/// The schema version this crate writes and understands (`PRAGMA user_version`).
pub(super) const SCHEMA_VERSION: i64 = 3;

/// `PRAGMA application_id` of a tower-usage database: `"TUsg"` in ASCII.
pub(super) const APPLICATION_ID: i64 = 0x5455_7367;

/// `MIGRATIONS[n]` takes a database from version `n` to version `n + 1`.
const MIGRATIONS: [&str; SCHEMA_VERSION as usize] = [
    // 0 -> 1: the records table and its two keyset indexes.
    "CREATE TABLE usage_records (
        id                  TEXT    NOT NULL UNIQUE,
        consumer            TEXT,
        created_at          INTEGER NOT NULL,
        method              TEXT    NOT NULL,
        path                TEXT    NOT NULL,
        route               TEXT,
        status              INTEGER NOT NULL,
        duration_us         INTEGER NOT NULL,
        outcome             TEXT    NOT NULL,
        query               TEXT    NOT NULL,
        params              TEXT    NOT NULL,
        req_headers         TEXT    NOT NULL,
        resp_headers        TEXT    NOT NULL,
        req_body            BLOB    NOT NULL,
        req_body_size       INTEGER NOT NULL,
        req_body_truncated  INTEGER NOT NULL,
        resp_body           BLOB    NOT NULL,
        resp_body_size      INTEGER NOT NULL,
        resp_body_truncated INTEGER NOT NULL,
        grpc                TEXT
    );
    CREATE INDEX usage_records_consumer_time ON usage_records (consumer, created_at, id);
    CREATE INDEX usage_records_time ON usage_records (created_at, id);",
    // 1 -> 2: what the capture could not keep (`CaptureNotes` as JSON; NULL when
    // nothing).
    "ALTER TABLE usage_records ADD COLUMN capture TEXT;",
    // 2 -> 3: the request's W3C trace context (NULL without one), and an
    // index for the `traceId` filter over the rows that have one.
    "ALTER TABLE usage_records ADD COLUMN trace_id TEXT;
    ALTER TABLE usage_records ADD COLUMN span_id TEXT;
    CREATE INDEX usage_records_trace ON usage_records (trace_id) WHERE trace_id IS NOT NULL;",
];

/// Opens (creating if needed) the writer connection of a file and brings its
/// schema up to date.
pub(super) fn open_writer(path: &Path, busy_timeout: Duration) -> Result<Connection, SinkError> {
    let label = path.display().to_string();
    let ctx = context(&label);
    let flags = OpenFlags::SQLITE_OPEN_READ_WRITE
        | OpenFlags::SQLITE_OPEN_CREATE
        | OpenFlags::SQLITE_OPEN_NO_MUTEX;
    create_owner_only(path).map_err(|err| {
        SinkError::unavailable(err)
            .with_context(format_args!("sqlite database {label}: creating the file"))
    })?;
    let mut conn = Connection::open_with_flags(path, flags).map_err(&ctx)?;
    conn.busy_timeout(busy_timeout).map_err(&ctx)?;
    // Look before touching: a newer or foreign file is left exactly as it was.
    let version = check_header(&conn, &label)?;
    if conn.is_readonly(rusqlite::MAIN_DB).map_err(&ctx)? {
        return Err(SinkError::message(
            SinkErrorKind::Unavailable,
            format!("sqlite database {label}: the file is read-only"),
        )
        .permanent());
    }
    let mode: String = conn
        .pragma_update_and_check(None, "journal_mode", "WAL", |row| row.get(0))
        .map_err(&ctx)?;
    if !mode.eq_ignore_ascii_case("wal") {
        tracing::warn!(
            path = %label,
            journal_mode = %mode,
            "sqlite usage sink: WAL mode unavailable; readers and the writer will take turns"
        );
    }
    conn.pragma_update(None, "synchronous", "NORMAL")
        .map_err(&ctx)?;
    tune(&conn).map_err(&ctx)?;
    tune_writer(&conn, &ctx)?;
    if version != SCHEMA_VERSION {
        migrate(&mut conn, &label)?;
    }
    Ok(conn)
}

/// Creates the database file, empty and readable by its owner only (`0600`,
/// whatever the umask), when there is none, before SQLite opens it: SQLite
/// would create it `0644` under the usual umask, and it gives the `-wal` and
/// `-shm` files it makes next to a database the database file's mode, so
/// those are owner-only too. An existing file keeps its mode.
fn create_owner_only(path: &Path) -> std::io::Result<()> {
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    match options.open(path) {
        // Exactly 0600, whatever the umask took away.
        #[cfg(unix)]
        Ok(file) => file.set_permissions(std::os::unix::fs::PermissionsExt::from_mode(0o600)),
        #[cfg(not(unix))]
        Ok(_) => Ok(()),
        Err(err) if err.kind() == std::io::ErrorKind::AlreadyExists => Ok(()),
        Err(err) => Err(err),
    }
}

/// Opens a private in-memory database with the current schema.
pub(super) fn open_memory() -> Result<Connection, SinkError> {
    let label = ":memory:";
    let mut conn = Connection::open_in_memory().map_err(context(label))?;
    tune(&conn).map_err(context(label))?;
    tune_writer(&conn, &context(label))?;
    migrate(&mut conn, label)?;
    Ok(conn)
}

/// Opens a read-only connection to a file the writer has opened and migrated.
pub(super) fn open_reader(path: &Path, busy_timeout: Duration) -> Result<Connection, SinkError> {
    let label = path.display().to_string();
    let ctx = context(&label);
    let flags = OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX;
    let conn = Connection::open_with_flags(path, flags).map_err(&ctx)?;
    conn.busy_timeout(busy_timeout).map_err(&ctx)?;
    tune(&conn).map_err(&ctx)?;
    Ok(conn)
}

/// The writer's page cache, in KiB: room for the hot pages of the indexes, which
/// every batch touches at random (one consumer's entries are spread over the
/// whole `(consumer, created_at, id)` index). SQLite's default is 2 MiB.
const WRITER_CACHE_KIB: i64 = 64 * 1024;

/// Pages of WAL between two automatic checkpoints (SQLite's default is 1000, 4
/// MiB). A checkpoint copies each page once, however many batches changed it
/// since the last one, so a larger interval copies the hot index pages less
/// often; the price is a longer pause every 64 MiB of writes.
pub(super) const WAL_AUTOCHECKPOINT_PAGES: i64 = 16 * 1024;

/// The size the WAL file is cut back to after a checkpoint, in bytes.
pub(super) const JOURNAL_SIZE_LIMIT: i64 = 64 * 1024 * 1024;

/// Pragmas for the read-write connection, measured with the `sinks` bench: with
/// both, batches of 512 records of ~2.7 KiB are written about 1.5 times as fast
/// as with SQLite's defaults once the table holds a few 100,000 records.
fn tune_writer(
    conn: &Connection,
    ctx: &impl Fn(rusqlite::Error) -> SinkError,
) -> Result<(), SinkError> {
    conn.pragma_update(None, "cache_size", -WRITER_CACHE_KIB)
        .map_err(ctx)?;
    conn.pragma_update(None, "wal_autocheckpoint", WAL_AUTOCHECKPOINT_PAGES)
        .map_err(ctx)?;
    conn.pragma_update(None, "journal_size_limit", JOURNAL_SIZE_LIMIT)
        .map_err(ctx)?;
    Ok(())
}

fn tune(conn: &Connection) -> Result<(), rusqlite::Error> {
    // Room for the insert, the retention deletes and the common query shapes.
    conn.set_prepared_statement_cache_capacity(32);
    super::summary::register(conn)
}

/// Fails for a file written by a newer tower-usage, or by another application;
/// returns the file's schema version.
fn check_header(conn: &Connection, label: &str) -> Result<i64, SinkError> {
    let ctx = context(label);
    let app_id: i64 = conn
        .pragma_query_value(None, "application_id", |row| row.get(0))
        .map_err(&ctx)?;
    let version: i64 = conn
        .pragma_query_value(None, "user_version", |row| row.get(0))
        .map_err(&ctx)?;
    if app_id != APPLICATION_ID && (app_id != 0 || version != 0) {
        return Err(SinkError::message(
            SinkErrorKind::Corrupt,
            format!(
                "sqlite database {label}: not a tower-usage database \
                 (application_id {app_id:#x}, user_version {version})"
            ),
        ));
    }
    if version > SCHEMA_VERSION {
        return Err(SinkError::message(
            SinkErrorKind::Corrupt,
            format!(
                "sqlite database {label}: schema version {version} is newer than this \
                 tower-usage understands ({SCHEMA_VERSION}); upgrade tower-usage or use another file"
            ),
        ));
    }
    Ok(version)
}

/// Applies the missing migrations in one transaction.
fn migrate(conn: &mut Connection, label: &str) -> Result<(), SinkError> {
    let ctx = context(label);
    let tx = conn
        .transaction_with_behavior(TransactionBehavior::Immediate)
        .map_err(&ctx)?;
    // Again under the write lock: another process may have migrated meanwhile.
    let version = check_header(&tx, label)?;
    if version == SCHEMA_VERSION {
        return Ok(()); // the transaction rolls back: nothing was changed
    }
    for (from, sql) in MIGRATIONS.iter().enumerate().skip(version.max(0) as usize) {
        tx.execute_batch(sql).map_err(|err| {
            sql_error(err).with_context(format_args!(
                "sqlite database {label}: migrating schema from version {from}"
            ))
        })?;
    }
    tx.pragma_update(None, "application_id", APPLICATION_ID)
        .map_err(&ctx)?;
    tx.pragma_update(None, "user_version", SCHEMA_VERSION)
        .map_err(&ctx)?;
    tx.commit().map_err(&ctx)?;
    Ok(())
}
