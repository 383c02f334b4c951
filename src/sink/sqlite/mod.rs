//! [`SqliteSink`]: usage records in a SQLite file (feature `sqlite`).
//!
//! ```no_run
//! use std::time::Duration;
//! use tower_usage::SqliteSink;
//!
//! # fn main() -> Result<(), tower_usage::SinkError> {
//! // Creates the file, or opens and migrates it.
//! let sink = SqliteSink::open("usage.db")?;
//!
//! // The same, keeping 30 days and at most a million records.
//! let sink = SqliteSink::builder("usage.db")
//!     .max_age(Duration::from_secs(30 * 24 * 3600))
//!     .max_rows(1_000_000)
//!     .open()?;
//!
//! // Clones share one database, one writer thread and one reader pool: hand one
//! // to the layer and one to the `/usage` service.
//! let for_the_service = sink.clone();
//! # Ok(()) }
//! ```
//!
//! # Threading model
//!
//! - **One writer.** The sink owns one read-write connection, on a dedicated OS
//!   thread. [`record`](UsageSink::record) sends the batch to that thread over a
//!   channel and awaits its reply; the thread writes the batch in one transaction
//!   with a cached prepared statement. No tokio worker ever blocks on SQLite. A
//!   `record` future dropped before the reply does not cancel the write.
//! - **Readers.** [`query`](UsageSink::query) runs on tokio's blocking pool
//!   ([`spawn_blocking`](tokio::task::spawn_blocking)) with a read-only connection
//!   from a small pool (4 at a time by default, see
//!   [`read_connections`](SqliteSinkBuilder::read_connections)). In WAL mode
//!   readers do not wait for the writer, nor the writer for them. `query`
//!   therefore needs a tokio runtime; `record` works on any executor.
//!   An [in-memory](SqliteSink::in_memory) database has only the writer's
//!   connection, and its queries run on the writer thread.
//! - **Shutdown.** When the last clone of the sink is dropped, the writer thread
//!   finishes what was sent to it, closes the connection and exits. If the thread
//!   is gone (it panicked), `record` and in-memory queries fail with
//!   [`SinkErrorKind::Unavailable`] instead of
//!   waiting forever.
//!
//! The connections use `journal_mode=WAL`, `synchronous=NORMAL` (a committed
//! batch survives a crash of the process; a power loss may lose the last
//! batches, never corrupt the file) and a busy timeout (5 s by default) for
//! when another process holds the file. The writer keeps a 64 MiB page cache,
//! checkpoints the WAL every 64 MiB (not SQLite's 4 MiB: a checkpoint then copies
//! an index page once for many batches) and cuts the WAL file back to 64 MiB
//! after a checkpoint; a batch that triggers a checkpoint takes that much longer.
//!
//! # Faults
//!
//! - **The file is deleted or replaced** while the sink runs (a connection
//!   keeps the file it opened, so writes would go on into a file nobody sees).
//!   Before each batch the writer compares the `(device, inode)` of the path
//!   with the file it has open (one `stat`, on Unix); when they differ it logs
//!   one warning, closes the old file and **reopens the path**, creating a new
//!   file with the schema when there is none: the batch and the later ones go
//!   into the new file (records written before are in the old one). `/usage`
//!   never answers from a file that is gone: each read connection is checked
//!   the same way before a query, and one whose file was replaced is closed;
//!   while the path names no file (deleted, not yet recreated by a write) a
//!   query fails, and `/usage` answers `503`. SQLite names the WAL after the
//!   path, so a file moved over a database in use can have that database's
//!   unwritten WAL frames replayed into it: replace a database only when the
//!   service is stopped, or idle for a second (see below).
//! - **The volume fills up.** While the volume has less than 256 MiB free
//!   (`statvfs` before each batch, on Unix), the WAL is kept small (a
//!   checkpoint every 1000 pages, cut back to 4 MiB, SQLite's defaults), so
//!   it cannot fill the volume before a checkpoint copies it into the database
//!   (then neither could grow, for good). A write that fails with "database or
//!   disk is full" is a temporary error (the layer's writer retries it); the
//!   sink then checkpoints and truncates the WAL (`PRAGMA
//!   wal_checkpoint(TRUNCATE)`) and keeps it small, so writing resumes as soon
//!   as the volume has room. After a second without
//!   writes, and at open, the writer checkpoints and truncates the WAL too: an
//!   idle database holds no WAL, and a restart on a nearly full volume starts
//!   with the WAL's space free.
//!
//! What a write costs is mostly I/O: a record with ~1 KiB bodies each way is a
//! ~2.7 KiB row, which takes a 4 KiB page of its own, written to the WAL and
//! again by the checkpoint, and each record also changes a page of the
//! `(consumer, created_at, id)` index wherever its consumer's entries are. The
//! `sinks` bench measures records/s by batch size.
//!
//! # Schema
//!
//! One table, `usage_records`, one row per record; the version of this layout is
//! kept in `PRAGMA user_version` (now `3`) and the file is marked as a
//! tower-usage database by `PRAGMA application_id`. [`SqliteSink::open`] creates
//! the table or brings an older file up to date, and refuses (with
//! [`SinkErrorKind::Corrupt`]) a file written by a
//! newer tower-usage or by another application.
//!
//! | column | type | holds |
//! |---|---|---|
//! | `id` | `TEXT NOT NULL UNIQUE` | [`UsageRecord::id`]; recording an id again is a no-op |
//! | `consumer` | `TEXT`, `NULL` when anonymous | [`UsageRecord::consumer`] |
//! | `created_at` | `INTEGER` | milliseconds since the Unix epoch |
//! | `method`, `path`, `route` | `TEXT` (`route` nullable) | as captured |
//! | `status`, `duration_us` | `INTEGER` | as captured |
//! | `outcome` | `TEXT` | [`Outcome::as_str`](crate::Outcome::as_str) |
//! | `query` | `TEXT` | the raw query string |
//! | `params` | `TEXT` | JSON `[[name, value], ...]` |
//! | `req_headers`, `resp_headers` | `TEXT` | JSON `[[name, value], ...]`, in order, repeats kept; a non-UTF-8 value as `{"b64": "..."}` |
//! | `req_body`, `resp_body` | `BLOB` | the captured bytes |
//! | `req_body_size`, `resp_body_size` | `INTEGER` | the whole body's size |
//! | `req_body_truncated`, `resp_body_truncated` | `INTEGER` 0/1 | whether the bytes are only a prefix |
//! | `grpc` | `TEXT`, nullable | [`GrpcCall`](crate::GrpcCall) as JSON |
//!
//! Indexes on `(consumer, created_at, id)` and `(created_at, id)` make a page of
//! one consumer's records (or of everyone's) a range scan in either order.
//! A summary is one `GROUP BY` over the same range scan (by bucket start, group
//! keys and duration-histogram bin, see
//! [`summary`](crate::sink::summary#percentiles)); every connection the sink
//! opens registers the SQL function `tower_usage_duration_bin` for it (the
//! bundled SQLite has no `ln()`).
//! Filters are bound parameters; the path prefix filter compares a substring,
//! so `%` and `_` in it are plain characters.
//!
//! # Retention
//!
//! Without options the table grows without bound. With
//! [`max_age`](SqliteSinkBuilder::max_age), records created longer ago than that
//! are deleted; with [`max_rows`](SqliteSinkBuilder::max_rows), the oldest
//! records beyond that count are. The writer thread does this itself, between
//! batches, 500 rows at a time, so a write waits for at most one such
//! chunk: the age sweep runs at open and then every
//! [`retention_interval`](SqliteSinkBuilder::retention_interval) (1 minute by
//! default), the row cap is applied as soon as a batch goes past it. Deleted
//! space is reused by new records; the file does not shrink. Over the row cap,
//! consumers first seen while the table was full lose their rows first once
//! they hold more than a quarter of it together, then a consumer holding more
//! than a quarter of it loses its own oldest rows
//! ([`fair_share`](SqliteSinkBuilder::fair_share), on by default; see
//! [`max_rows`](SqliteSinkBuilder::max_rows) for what holds).
//!
//! A record older than `max_age` is never listed, fetched or counted in a
//! summary, whether the sweep has removed it yet or not. Records removed for
//! their age are counted in [`expired`](SqliteSink::expired), and each sweep
//! that removed any is logged at `INFO` with its count;
//! [`expire_older_than`](SqliteSink::expire_older_than) runs one now.
//! [`erase_consumer`](UsageSink::erase_consumer) deletes one consumer's rows
//! on the writer thread, 500 per transaction.
//!
//! The writer counts the rows at open and at every retention interval, and keeps
//! the count in between. Several sinks or processes writing one file each
//! enforce the cap with their own count, which is only exact at those recounts.

mod error;
mod file_id;
mod insert;
mod newcomers;
mod read_pool;
mod retention;
mod schema;
mod select;
mod summary;
mod values;
mod wal;
mod writer;

use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{mpsc, Arc, Mutex};
use std::time::Duration;

use rusqlite::Connection;
use tokio::sync::{oneshot, Semaphore};

use crate::sink::{
    expiry, ConsumerScope, SummaryQuery, UsagePage, UsageQuery, UsageSink, UsageSummary,
};
use crate::{SinkError, SinkErrorKind, UsageRecord};
use read_pool::ReadPool;
use writer::{Command, Retention, Writer};

/// A [`UsageSink`] that keeps records in a SQLite database file.
///
/// See the [module docs](self) for the schema, the threading model and
/// retention. Cloning is cheap: clones share the database, the writer thread and
/// the read connections.
///
/// # Example
///
/// ```no_run
/// use tower_usage::{SqliteSink, UsageQuery, UsageSink};
///
/// # #[tokio::main] async fn main() -> Result<(), tower_usage::SinkError> {
/// let sink = SqliteSink::open("/var/lib/myapp/usage.db")?;
/// let page = sink.query(&UsageQuery::default()).await?;
/// println!("{} records", page.records.len());
/// # Ok(()) }
/// ```
#[derive(Clone)]
pub struct SqliteSink {
    inner: Arc<Inner>,
}

struct Inner {
    /// The path as given, or `:memory:`.
    label: String,
    options: Options,
    /// `None` for an in-memory database: its queries go to the writer thread.
    ///
    /// Declared before `commands` so that it is dropped first: the read-only
    /// connections close before the writer is told to stop, and the writer's
    /// connection, the last to close, checkpoints and removes the `-wal` file (a
    /// read-only connection closing last cannot).
    readers: Option<Arc<ReadPool>>,
    commands: mpsc::Sender<Command>,
    /// Records deleted for their age, counted by the writer thread.
    expired: Arc<AtomicU64>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Options {
    retention: Retention,
    busy_timeout: Duration,
    read_connections: usize,
}

/// The default busy timeout: how long a connection waits for another process's
/// lock on the file.
const DEFAULT_BUSY_TIMEOUT: Duration = Duration::from_secs(5);

/// The default number of read connections.
const DEFAULT_READ_CONNECTIONS: usize = 4;

/// The default interval between two age sweeps.
const DEFAULT_RETENTION_INTERVAL: Duration = Duration::from_secs(60);

impl Default for Options {
    fn default() -> Self {
        Self {
            retention: Retention {
                max_age: None,
                max_rows: None,
                fair_share: true,
                interval: DEFAULT_RETENTION_INTERVAL,
            },
            busy_timeout: DEFAULT_BUSY_TIMEOUT,
            read_connections: DEFAULT_READ_CONNECTIONS,
        }
    }
}

impl SqliteSink {
    /// Opens the database at `path`, creating the file if it does not exist and
    /// migrating it if it was written by an older tower-usage; default options
    /// (no retention). The same as `SqliteSink::builder(path).open()`.
    ///
    /// This does blocking file I/O: call it at startup, or from
    /// [`spawn_blocking`](tokio::task::spawn_blocking).
    ///
    /// # Errors
    ///
    /// A [`SinkError`] whose message names the path:
    /// [`Corrupt`](SinkErrorKind::Corrupt) when the file is not a SQLite database,
    /// is another application's, or has a schema newer than this crate knows;
    /// [`Unavailable`](SinkErrorKind::Unavailable) when it cannot be opened or
    /// created (a missing directory, no permission, locked by another process for
    /// longer than the busy timeout).
    ///
    /// ```no_run
    /// let sink = tower_usage::SqliteSink::open("usage.db")?;
    /// # Ok::<(), tower_usage::SinkError>(())
    /// ```
    pub fn open(path: impl AsRef<Path>) -> Result<Self, SinkError> {
        Self::builder(path).open()
    }

    /// Options for opening the database at `path`: retention, timeouts, readers.
    ///
    /// ```no_run
    /// use std::time::Duration;
    ///
    /// let sink = tower_usage::SqliteSink::builder("usage.db")
    ///     .max_age(Duration::from_secs(7 * 24 * 3600))
    ///     .open()?;
    /// # Ok::<(), tower_usage::SinkError>(())
    /// ```
    pub fn builder(path: impl AsRef<Path>) -> SqliteSinkBuilder {
        SqliteSinkBuilder {
            path: path.as_ref().to_path_buf(),
            options: Options::default(),
        }
    }

    /// A private in-memory database, gone when the last clone is dropped. For
    /// tests and examples; queries share the writer's thread.
    ///
    /// # Errors
    ///
    /// When SQLite cannot allocate the database or the writer thread cannot be
    /// started.
    ///
    /// ```
    /// use tower_usage::{SqliteSink, UsageQuery, UsageRecord, UsageSink};
    ///
    /// # #[tokio::main(flavor = "current_thread")] async fn main() -> Result<(), tower_usage::SinkError> {
    /// let sink = SqliteSink::in_memory()?;
    /// let record = UsageRecord {
    ///     id: "01GPE5J0X7AAAAAAAAAAAAAAAA".into(),
    ///     method: "GET".into(),
    ///     path: "/hello".into(),
    ///     status: 200,
    ///     ..UsageRecord::default()
    /// };
    /// sink.record(&[record.clone()]).await?;
    /// let page = sink.query(&UsageQuery::default()).await?;
    /// assert_eq!(page.records, vec![record]);
    /// # Ok(()) }
    /// ```
    pub fn in_memory() -> Result<Self, SinkError> {
        let conn = schema::open_memory()?;
        Self::start(conn, ":memory:".to_owned(), Options::default(), None)
    }

    fn start(
        conn: Connection,
        label: String,
        options: Options,
        readers: Option<Arc<ReadPool>>,
    ) -> Result<Self, SinkError> {
        let (commands, rx) = mpsc::channel();
        let file = readers
            .as_ref()
            .map(|r| writer::FileWatch::new(r.path.clone(), r.busy_timeout));
        let expired = Arc::new(AtomicU64::new(0));
        let writer = Writer::new(
            conn,
            label.clone(),
            options.retention,
            file,
            Arc::clone(&expired),
        );
        std::thread::Builder::new()
            .name("tower-usage-sqlite".to_owned())
            .spawn(move || writer.run(rx))
            .map_err(|err| {
                SinkError::unavailable(err).with_context(format_args!(
                    "sqlite database {label}: starting the writer thread"
                ))
            })?;
        Ok(Self {
            inner: Arc::new(Inner {
                label,
                options,
                commands,
                readers,
                expired,
            }),
        })
    }

    /// Deletes now every record created more than `age` ago, and returns how
    /// many: a one-off purge, or retention run at a time of your choosing
    /// (the [`max_age`](SqliteSinkBuilder::max_age) sweep does the same on
    /// its own). On the writer thread, 500 rows per transaction; batches
    /// sent meanwhile wait until it is done. Counted in
    /// [`expired`](Self::expired).
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")] async fn main() -> Result<(), tower_usage::SinkError> {
    /// let sink = tower_usage::SqliteSink::in_memory()?;
    /// let removed = sink.expire_older_than(std::time::Duration::from_secs(90 * 24 * 3600)).await?;
    /// assert_eq!(removed, 0);
    /// # Ok(()) }
    /// ```
    pub async fn expire_older_than(&self, age: Duration) -> Result<u64, SinkError> {
        self.ask(|reply| Command::Expire {
            max_age: age,
            reply,
        })
        .await
    }

    /// How many records were deleted for their age (by the
    /// [`max_age`](SqliteSinkBuilder::max_age) sweep or
    /// [`expire_older_than`](Self::expire_older_than)) since the sink was
    /// opened. Each finished sweep that deleted any is also logged at `INFO`.
    pub fn expired(&self) -> u64 {
        self.inner.expired.load(Ordering::Relaxed)
    }

    /// The database file's path, as given to [`open`](Self::open); `None`
    /// for an [in-memory](Self::in_memory) database.
    ///
    /// ```no_run
    /// let sink = tower_usage::SqliteSink::open("usage.db")?;
    /// assert_eq!(sink.path(), Some(std::path::Path::new("usage.db")));
    /// # Ok::<(), tower_usage::SinkError>(())
    /// ```
    pub fn path(&self) -> Option<&Path> {
        self.inner.readers.as_ref().map(|r| r.path.as_path())
    }

    fn max_age(&self) -> Option<Duration> {
        self.inner.options.retention.max_age
    }

    fn writer_gone(&self) -> SinkError {
        SinkError::message(
            SinkErrorKind::Unavailable,
            format!(
                "sqlite database {}: the writer thread has stopped",
                self.inner.label
            ),
        )
        .permanent()
    }

    /// Sends a command to the writer thread and awaits its reply.
    async fn ask<T>(
        &self,
        make: impl FnOnce(oneshot::Sender<Result<T, SinkError>>) -> Command,
    ) -> Result<T, SinkError> {
        let (reply, answer) = oneshot::channel();
        self.inner
            .commands
            .send(make(reply))
            .map_err(|_| self.writer_gone())?;
        answer.await.map_err(|_| self.writer_gone())?
    }
}

#[async_trait::async_trait]
impl UsageSink for SqliteSink {
    /// Writes the batch in one transaction on the writer thread; a record whose
    /// `id` is already stored is skipped.
    async fn record(&self, batch: &[UsageRecord]) -> Result<(), SinkError> {
        if batch.is_empty() {
            return Ok(());
        }
        let batch = batch.to_vec();
        self.ask(|reply| Command::Write { batch, reply }).await
    }

    /// Never lists a record older than [`max_age`](SqliteSinkBuilder::max_age),
    /// swept yet or not.
    async fn query(&self, query: &UsageQuery) -> Result<UsagePage, SinkError> {
        let after = query.position()?;
        let asked = query;
        let query = &*expiry::list(asked, self.max_age());
        let hits = match &self.inner.readers {
            Some(pool) => pool.select(query.clone(), after).await?,
            None => {
                let query = query.clone();
                self.ask(|reply| Command::Query {
                    query,
                    after,
                    reply,
                })
                .await?
            }
        };
        Ok(UsagePage::from_sorted(asked, hits))
    }

    /// By id, with the unique index on `id`: on a reader, or on the writer
    /// thread for an in-memory database.
    async fn get(&self, id: &str, scope: &ConsumerScope) -> Result<Option<UsageRecord>, SinkError> {
        let (id, scope) = (id.to_owned(), scope.clone());
        let found = match &self.inner.readers {
            Some(pool) => {
                pool.run(move |conn, label| select::by_id(conn, label, &id, &scope))
                    .await?
            }
            None => self.ask(|reply| Command::Get { id, scope, reply }).await?,
        };
        let cut = self.max_age().map(expiry::cut);
        Ok(found.filter(|r| cut.is_none_or(|cut| r.created_at >= cut)))
    }

    /// One `GROUP BY` statement on a read connection: rows per bucket, group
    /// and duration bin, counted into buckets; percentiles from the bins (see
    /// [`summary`](crate::sink::summary#percentiles)).
    async fn summarize(&self, query: &SummaryQuery) -> Result<UsageSummary, SinkError> {
        query.check()?;
        let asked = query;
        let query = expiry::summary(asked, self.max_age()).into_owned();
        let answer = match &self.inner.readers {
            Some(pool) => {
                pool.run(move |conn, label| summary::summarize(conn, label, &query))
                    .await?
            }
            None => {
                self.ask(|reply| Command::Summarize { query, reply })
                    .await?
            }
        };
        Ok(expiry::summary_answer(asked, answer))
    }

    /// Deletes the consumer's rows on the writer thread, 500 per
    /// transaction by the consumer index; batches sent meanwhile wait until
    /// it is done. Logged at `INFO` with the count.
    async fn erase_consumer(&self, consumer: &str) -> Result<u64, SinkError> {
        let consumer = consumer.to_owned();
        self.ask(|reply| Command::Erase { consumer, reply }).await
    }
}

impl fmt::Debug for SqliteSink {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let o = &self.inner.options;
        f.debug_struct("SqliteSink")
            .field("path", &self.inner.label)
            .field("max_age", &o.retention.max_age)
            .field("max_rows", &o.retention.max_rows)
            .finish_non_exhaustive()
    }
}

/// Options for a [`SqliteSink`], from [`SqliteSink::builder`].
///
/// ```no_run
/// use std::time::Duration;
///
/// let sink = tower_usage::SqliteSink::builder("usage.db")
///     .max_age(Duration::from_secs(30 * 24 * 3600))
///     .max_rows(5_000_000)
///     .retention_interval(Duration::from_secs(300))
///     .busy_timeout(Duration::from_secs(10))
///     .read_connections(8)
///     .open()?;
/// # Ok::<(), tower_usage::SinkError>(())
/// ```
#[derive(Debug, Clone)]
#[must_use = "a builder does nothing until `.open()` is called"]
pub struct SqliteSinkBuilder {
    path: PathBuf,
    options: Options,
}

impl SqliteSinkBuilder {
    /// Deletes records created longer than `max_age` ago (see
    /// [Retention](self#retention)). Default: none, records are kept forever.
    pub fn max_age(mut self, max_age: Duration) -> Self {
        self.options.retention.max_age = Some(max_age);
        self
    }

    /// Keeps at most about `max_rows` records, deleting the oldest (see
    /// [Retention](self#retention)). Default: no limit.
    ///
    /// Fair share: over the limit, a consumer (the anonymous one included)
    /// holding more than a quarter of `max_rows` loses its own oldest records
    /// first, down to that quarter, so that one client's flood cannot delete
    /// the others' history; then the oldest records of all go. The heaviest
    /// consumer is looked up at most once per
    /// [`retention_interval`](Self::retention_interval).
    ///
    /// A client that mints a new identity per request (a fresh bearer token
    /// each time) is many consumers of one record each, none over a quarter.
    /// So consumers first seen while the table is full (*newcomers*) share
    /// one quota, a quarter of `max_rows`: over it, the oldest newcomers'
    /// records go first (whole consumers, by the consumer index). What holds:
    /// a flood of invented identities deletes at most a quarter of
    /// `max_rows` of the records that were there before it. A newcomer is
    /// established once its records span a minute. The writer keeps the
    /// newcomers in memory: after a restart every consumer in the file is
    /// established, and rejected requests (`401`, `403`) count toward their
    /// consumer as any other (`MemorySink` pools those too).
    pub fn max_rows(mut self, max_rows: u64) -> Self {
        self.options.retention.max_rows = Some(max_rows);
        self
    }

    /// Whether [`max_rows`](Self::max_rows) deletes by fair share first.
    /// Default: `true`. Off, it deletes the oldest records of all, whoever
    /// they belong to.
    pub fn fair_share(mut self, on: bool) -> Self {
        self.options.retention.fair_share = on;
        self
    }

    /// How often the age sweep runs, and the row count is refreshed. Default: 1
    /// minute. Has no effect without [`max_age`](Self::max_age) or
    /// [`max_rows`](Self::max_rows).
    pub fn retention_interval(mut self, interval: Duration) -> Self {
        self.options.retention.interval = interval;
        self
    }

    /// How long a statement waits for a lock held by another connection (another
    /// process on the same file) before failing. Default: 5 seconds.
    pub fn busy_timeout(mut self, timeout: Duration) -> Self {
        self.options.busy_timeout = timeout;
        self
    }

    /// How many queries may run at once, each on its own read-only connection.
    /// Default: 4; at least 1.
    pub fn read_connections(mut self, n: usize) -> Self {
        self.options.read_connections = n.max(1);
        self
    }

    /// Opens the database: see [`SqliteSink::open`] for what that does and how it
    /// fails.
    pub fn open(self) -> Result<SqliteSink, SinkError> {
        let conn = schema::open_writer(&self.path, self.options.busy_timeout)?;
        let label = self.path.display().to_string();
        let readers = Arc::new(ReadPool {
            path: self.path,
            label: label.clone(),
            busy_timeout: self.options.busy_timeout,
            idle: Mutex::new(Vec::new()),
            permits: Arc::new(Semaphore::new(self.options.read_connections)),
        });
        SqliteSink::start(conn, label, self.options, Some(readers))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(id: &str) -> UsageRecord {
        UsageRecord {
            id: id.into(),
            method: "GET".into(),
            path: "/".into(),
            status: 200,
            ..UsageRecord::default()
        }
    }

    #[tokio::test]
    async fn a_dead_writer_thread_is_an_error_not_a_hang() {
        let sink = SqliteSink::in_memory().expect("in-memory sink");
        sink.record(&[record("A")]).await.expect("first batch");
        let _ = sink.inner.commands.send(Command::Panic);
        for _ in 0..2 {
            let err = tokio::time::timeout(Duration::from_secs(5), sink.record(&[record("B")]))
                .await
                .expect("record must not hang")
                .expect_err("the writer is gone");
            assert_eq!(err.kind(), SinkErrorKind::Unavailable);
            assert!(err.to_string().contains(":memory:"), "{err}");
        }
        let err = sink
            .query(&UsageQuery::default())
            .await
            .expect_err("in-memory queries need the writer");
        assert_eq!(err.kind(), SinkErrorKind::Unavailable);
    }
}
