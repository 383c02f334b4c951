//! [`PostgresSink`]: usage records in a PostgreSQL table (feature `postgres`).
//!
//! ```no_run
//! # async fn run() -> Result<(), tower_usage::SinkError> {
//! use tower_usage::PostgresSink;
//!
//! // Opens a pool and creates (or upgrades) the table.
//! let sink = PostgresSink::connect("postgres://app:secret@db.internal/app").await?;
//! // `sink` is cheap to clone: hand one clone to the layer, one to the `/usage` service.
//! let for_the_service = sink.clone();
//! # let _ = for_the_service;
//! # Ok(())
//! # }
//! ```
//!
//! Connections come from a [deadpool](deadpool_postgres) pool, opened without
//! TLS by [`connect`](PostgresSink::connect). For TLS, or any other connection
//! setting, build the pool yourself and hand it to
//! [`from_pool`](PostgresSink::from_pool) (the [`deadpool_postgres`] crate is
//! re-exported here so that the versions match).
//!
//! # Schema
//!
//! One table, by default `public.usage_records` (both names are configurable with
//! [`PostgresSink::builder`]):
//!
//! | column                | type                 | from [`UsageRecord`]                         |
//! |-----------------------|----------------------|----------------------------------------------|
//! | `id`                  | `TEXT COLLATE "C"` primary key | `id` (byte order, as the cursor sorts) |
//! | `consumer`            | `TEXT NULL`          | `consumer`                                   |
//! | `created_at`          | `TIMESTAMPTZ(3)`     | `created_at`, milliseconds                   |
//! | `method`, `path`      | `TEXT`               | `method`, `path`                             |
//! | `route`               | `TEXT NULL`          | `route`                                      |
//! | `status`              | `INTEGER`            | `status`                                     |
//! | `duration_us`         | `BIGINT`             | `duration_us`                                |
//! | `outcome`             | `TEXT`               | `outcome` (`complete`, `client_gone`, ...)   |
//! | `query`               | `TEXT`               | `request.query`, the raw query string        |
//! | `params`              | `JSONB`              | `request.params` as `[[name, value], ...]`   |
//! | `req_headers`         | `JSONB`              | `request.headers` as `[[name, value], ...]`  |
//! | `resp_headers`        | `JSONB`              | `response_headers`, likewise                 |
//! | `req_body`            | `BYTEA`              | `request.body.bytes`                         |
//! | `req_body_size`       | `BIGINT`             | `request.body.size`                          |
//! | `req_body_truncated`  | `BOOLEAN`            | `request.body.truncated`                     |
//! | `resp_body`, `resp_body_size`, `resp_body_truncated` | likewise | `response`            |
//! | `grpc`                | `JSONB NULL`         | `grpc`                                       |
//!
//! Headers are kept in order with repeats, and a value that is not UTF-8 as
//! `{"b64": "..."}`. Indexes: `(consumer, created_at, id)` for a consumer's pages
//! and `(created_at, id)` for the admin view; every page is one index range scan
//! (keyset paging, no `OFFSET`). A summary is one `GROUP BY GROUPING SETS`
//! statement over the same range (the buckets and the total at once), with
//! exact percentiles (`percentile_disc`); only its aggregate rows come back.
//!
//! PostgreSQL cannot store the character U+0000 in `TEXT` or `JSONB`. A
//! percent-decoded route param or a gRPC message may contain one: it is stored as
//! U+FFFD instead of failing the whole batch.
//!
//! # Migration
//!
//! [`migrate`](PostgresSink::migrate) creates the schema if it is missing, the
//! table and its indexes, and a small `<table>_meta` table holding
//! `schema_version`. It runs in one transaction under an advisory lock, so several
//! processes may start at once; it is idempotent; and it refuses, with a
//! [`Corrupt`](crate::SinkErrorKind::Corrupt) error, a table whose recorded version
//! is newer than the one this crate knows (a newer tower-usage migrated it).
//! [`connect`](PostgresSink::connect) runs it; [`from_pool`](PostgresSink::from_pool)
//! does not.
//!
//! # Partitions and retention
//!
//! With [`partition`](PostgresSinkBuilder::partition) the table is
//! partitioned by range of `created_at` (declarative partitioning), one
//! partition per UTC day (`<table>_pYYYYMMDD`) or month (`<table>_pYYYYMM`),
//! with the primary key `(id, created_at)`: a retried batch carries the same
//! `created_at`, so it is still stored once. A plain table, of this or an
//! earlier version, is converted by [`migrate`](PostgresSink::migrate) in its
//! transaction, every record kept: a partitioned copy with partitions from
//! the oldest record's period to the ones ahead, the rows copied, the plain
//! table dropped (32.6 s per million records with 1 KiB bodies each way on
//! the bench host, measured by `examples/postgres_partition_migration.rs`;
//! during which writes wait: see `benches/README.md`).
//!
//! The sink maintains the partitions itself ([`maintain`](PostgresSink::maintain)),
//! on [`connect`](PostgresSinkBuilder::connect) and every
//! [`maintenance_interval`](PostgresSinkBuilder::maintenance_interval) (1
//! hour), never on a request: it creates the current period's partition and
//! the next ones (7 days or 2 months ahead), and with
//! [`max_age`](PostgresSinkBuilder::max_age) drops the partitions wholly
//! older than the cut (a `DROP TABLE`, no row-by-row `DELETE`, no vacuum
//! debt), counting their records in [`expired`](PostgresSink::expired).
//! Records of the partition the cut falls in stay until it is dropped, and
//! are never listed, fetched or counted meanwhile. One replica maintains a
//! table at a time (`pg_try_advisory_lock`; the others skip the round).
//! This is the sink's own maintainer, not pg_partman: no extension to
//! install or to have allowed on a managed server, a handful of statements.
//!
//! A `DEFAULT` partition (`<table>_default`) catches a record whose period
//! has no partition (created long ago, as a spool writing back after days
//! would, or far in the future by a wrong clock). It is kept empty, because
//! rows there would block creating the partition they belong to: each
//! round moves them into a partition of their own (in one transaction:
//! deleted from `DEFAULT`, the partition created, inserted), deletes those
//! past `max_age`, and logs a warning with the count
//! ([`Maintenance::moved_from_default`]).
//!
//! Without partitions, `max_age` deletes expired rows in the maintenance
//! rounds, 10,000 per statement.
//!
//! [`erase_consumer`](UsageSink::erase_consumer) is one `DELETE ... WHERE
//! consumer = $1`, by the consumer index, on either kind of table.
//!
//!
//! A batch is one statement, `INSERT ... SELECT * FROM UNNEST($1::text[], ...)
//! ON CONFLICT DO NOTHING`, with one array parameter per column: a record
//! already stored (the writer retrying a batch) is skipped by the primary key
//! (`id`; `(id, created_at)` on a partitioned table), never duplicated.
//! It was measured against `COPY ... FROM STDIN (FORMAT binary)` with a staging
//! table, and was 1.5–2× as fast at batch 64 and about as fast at 4096 (the
//! figures are in the source, `src/sink/postgres/insert.rs`).
//!
//! - **No compression of rows under 8 KiB.** The table is created with
//!   `toast_tuple_target = 8160` (schema version 2), so a record with ~1 KiB
//!   bodies each way is stored as it came instead of being compressed with pglz
//!   on every insert (a third of the server's time at PostgreSQL's default
//!   target of about 2 KiB). The table takes more room than with compression;
//!   larger rows are still compressed and moved to the TOAST table as usual.
//! - **A large batch is written on two connections.** One backend works on one
//!   CPU core, so a batch of at least 512 records is split into parts of at
//!   least 256 that are inserted at the same time, each in its own statement and
//!   transaction (see [`write_connections`](PostgresSinkBuilder::write_connections)).
//!   A part that fails fails the batch; its retry skips what the other part
//!   stored.
//!
//! Together these took batch 512 from ~15,000 to ~30,000 records/s on the bench
//! host (`cargo bench --bench sinks --features sqlite,postgres`).
//! `synchronous_commit = off` (for example with
//! `?options=-c%20synchronous_commit%3Doff` in the URL) made no measurable
//! difference at batch 512, and ~40% at batch 1, where the commit's flush is
//! most of the cost.
//!
//! # Errors
//!
//! A lost connection, a server that refuses connections, is shutting down or is
//! out of resources, or a pool timeout is [`Unavailable`](crate::SinkErrorKind::Unavailable)
//! and temporary, so the writer retries; the pool drops broken connections and
//! opens new ones, so the sink recovers when the server is back. Errors the same
//! batch would hit again (a constraint, a value the server rejects, a missing
//! table, permissions) are permanent. The tokio-postgres error, and through it
//! the server's [`DbError`](tokio_postgres::error::DbError), is the
//! [`source()`](std::error::Error::source).

use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

pub use deadpool_postgres;
use deadpool_postgres::{Manager, ManagerConfig, Pool, RecyclingMethod, Runtime};
use tokio_postgres::NoTls;

use crate::sink::{
    expiry, ConsumerScope, SummaryQuery, UsagePage, UsageQuery, UsageSink, UsageSummary,
};
use crate::{SinkError, UsageRecord};

mod erase;
mod error;
mod insert;
mod names;
mod partition;
mod pool;
mod schema;
mod select;
mod summary;
mod values;

use names::Names;
pub use partition::{Maintenance, PartitionBy};

/// The default schema.
pub const DEFAULT_SCHEMA: &str = "public";

/// The default table.
pub const DEFAULT_TABLE: &str = "usage_records";

/// A [`UsageSink`] that stores records in a PostgreSQL table.
///
/// Cheap to [`Clone`]: clones share one connection pool. See the
/// [module docs](self) for the schema, migrations and error handling.
///
/// ```no_run
/// # async fn run() -> Result<(), tower_usage::SinkError> {
/// use tower_usage::{PostgresSink, UsageQuery, UsageRecord, UsageSink};
///
/// let sink = PostgresSink::connect("postgres://postgres@127.0.0.1/app").await?;
/// let mut record = UsageRecord::default();
/// record.created_at = time::OffsetDateTime::now_utc();
/// record.id = UsageRecord::new_id(record.created_at);
/// record.method = "GET".into();
/// record.path = "/hello".into();
/// sink.record(&[record]).await?;
/// let page = sink.query(&UsageQuery::default()).await?;
/// # let _ = page;
/// # Ok(())
/// # }
/// ```
#[derive(Clone)]
pub struct PostgresSink {
    inner: Arc<Inner>,
}

struct Inner {
    pool: Pool,
    names: Names,
    /// How many connections one batch may be written on at once.
    write_parallelism: usize,
    /// Where the pool connects, for `Debug`; unknown for [`PostgresSink::from_pool`].
    host: Option<String>,
    dbname: Option<String>,
    /// Time partitions, when the table is partitioned.
    partition: Option<PartitionBy>,
    /// Records older than this are expired.
    max_age: Option<Duration>,
    /// Records removed for their age by maintenance rounds.
    expired: AtomicU64,
}

impl PostgresSink {
    /// A builder, to choose the schema, table, pool size or timeout.
    ///
    /// ```no_run
    /// # async fn run() -> Result<(), tower_usage::SinkError> {
    /// use tower_usage::PostgresSink;
    ///
    /// let sink = PostgresSink::builder()
    ///     .schema("telemetry")
    ///     .table("api_usage")
    ///     .pool_size(4)
    ///     .connect("postgres://app@localhost/app")
    ///     .await?;
    /// # let _ = sink;
    /// # Ok(())
    /// # }
    /// ```
    pub fn builder() -> PostgresSinkBuilder {
        PostgresSinkBuilder::default()
    }

    /// Connects to `url` (`postgres://user:password@host:port/dbname?...`, or the
    /// `key=value` form) with a pool of the default size, and runs
    /// [`migrate`](Self::migrate) on `public.usage_records`.
    ///
    /// Fails with a temporary [`Unavailable`](crate::SinkErrorKind::Unavailable)
    /// error when the server cannot be reached, and with a permanent error when
    /// the URL is invalid or the migration is refused.
    ///
    /// ```no_run
    /// # async fn run() -> Result<(), tower_usage::SinkError> {
    /// let sink = tower_usage::PostgresSink::connect("postgres://app@localhost/app").await?;
    /// # let _ = sink;
    /// # Ok(())
    /// # }
    /// ```
    pub async fn connect(url: &str) -> Result<Self, SinkError> {
        Self::builder().connect(url).await
    }

    /// Uses an existing pool, with the default schema and table. Does **not**
    /// migrate: call [`migrate`](Self::migrate) once before the first write
    /// (or let another process do it).
    ///
    /// ```no_run
    /// # async fn run() -> Result<(), Box<dyn std::error::Error>> {
    /// use tower_usage::sink::postgres::deadpool_postgres::{Config, Runtime};
    /// use tower_usage::sink::postgres::deadpool_postgres::tokio_postgres::NoTls;
    /// use tower_usage::PostgresSink;
    ///
    /// let mut cfg = Config::new();
    /// cfg.url = Some("postgres://app@localhost/app".into());
    /// let pool = cfg.create_pool(Some(Runtime::Tokio1), NoTls)?;
    /// let sink = PostgresSink::from_pool(pool);
    /// sink.migrate().await?;
    /// # Ok(())
    /// # }
    /// ```
    pub fn from_pool(pool: Pool) -> Self {
        PostgresSinkBuilder::default().build(pool, Names::default_names(), None, None)
    }

    /// Creates the schema, table, indexes and `<table>_meta` if missing, and
    /// upgrades an older table. Idempotent, and safe to run from several processes
    /// at once (it holds an advisory lock). Fails with
    /// [`Corrupt`](crate::SinkErrorKind::Corrupt) when the table was migrated by a
    /// newer version of this crate. See [Migration](self#migration).
    ///
    /// ```no_run
    /// # async fn run(sink: tower_usage::PostgresSink) -> Result<(), tower_usage::SinkError> {
    /// sink.migrate().await?;
    /// # Ok(())
    /// # }
    /// ```
    pub async fn migrate(&self) -> Result<(), SinkError> {
        let n = &self.inner.names;
        let context = || format!("migrating {}.{}", n.schema, n.table);
        let mut client = self
            .inner
            .client()
            .await
            .map_err(|e| e.with_context(context()))?;
        match schema::migrate(&mut client, n, self.inner.partition).await {
            Ok(()) => Ok(()),
            Err(e) => Err(self.inner.failed(e, Some(client)).with_context(context())),
        }
    }

    /// The connection pool.
    pub fn pool(&self) -> &Pool {
        &self.inner.pool
    }

    /// The schema the table is in.
    pub fn schema(&self) -> &str {
        &self.inner.names.schema
    }

    /// The table's name.
    pub fn table(&self) -> &str {
        &self.inner.names.table
    }

    /// How many records maintenance removed for their age (see
    /// [`max_age`](PostgresSinkBuilder::max_age)) since the sink was made.
    /// Each round that removed any is also logged at `INFO`.
    pub fn expired(&self) -> u64 {
        self.inner.expired.load(Ordering::Relaxed)
    }
}

impl fmt::Debug for PostgresSink {
    /// Shows where the records go, never the connection string or password.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let i = &self.inner;
        f.debug_struct("PostgresSink")
            .field("host", &i.host)
            .field("dbname", &i.dbname)
            .field("schema", &i.names.schema)
            .field("table", &i.names.table)
            .finish_non_exhaustive()
    }
}

#[async_trait::async_trait]
impl UsageSink for PostgresSink {
    async fn record(&self, batch: &[UsageRecord]) -> Result<(), SinkError> {
        if batch.is_empty() {
            return Ok(());
        }
        let n = &self.inner.names;
        let context = || {
            format!(
                "writing {} usage records to {}.{}",
                batch.len(),
                n.schema,
                n.table
            )
        };
        let written = self
            .insert_batch(batch)
            .await
            .map_err(|e| e.with_context(context()))?;
        if written < batch.len() as u64 {
            tracing::debug!(
                batch = batch.len(),
                written,
                "skipped usage records whose ids were already stored"
            );
        }
        Ok(())
    }

    /// Never lists a record older than [`max_age`](PostgresSinkBuilder::max_age),
    /// removed yet or not.
    async fn query(&self, query: &UsageQuery) -> Result<UsagePage, SinkError> {
        // The cursor names the consumer and order, which stay as asked.
        self.select_page(&expiry::list(query, self.inner.max_age))
            .await
    }

    /// By the primary key.
    async fn get(&self, id: &str, scope: &ConsumerScope) -> Result<Option<UsageRecord>, SinkError> {
        let found = self.select_by_id(id, scope).await?;
        let cut = self.inner.max_age.map(expiry::cut);
        Ok(found.filter(|r| cut.is_none_or(|cut| r.created_at >= cut)))
    }

    /// One `GROUP BY GROUPING SETS` statement: the buckets and the total, with
    /// exact percentiles (`percentile_disc`, nearest rank).
    async fn summarize(&self, query: &SummaryQuery) -> Result<UsageSummary, SinkError> {
        let clamped = expiry::summary(query, self.inner.max_age);
        let answer = self.summarize_sql(&clamped).await?;
        Ok(expiry::summary_answer(query, answer))
    }

    /// One `DELETE` by the consumer index, in its own transaction; writes
    /// of other consumers go on meanwhile. Logged at `INFO` with the count.
    async fn erase_consumer(&self, consumer: &str) -> Result<u64, SinkError> {
        let n = &self.inner.names;
        self.erase(consumer).await.map_err(|e| {
            e.with_context(format!("erasing a consumer from {}.{}", n.schema, n.table))
        })
    }
}

/// Configures a [`PostgresSink`]; from [`PostgresSink::builder`].
///
/// Names are checked when the sink is built: a schema or table name must match
/// `^[A-Za-z_][A-Za-z0-9_]{0,62}$`, or building fails with
/// [`Config`](crate::SinkErrorKind::Config). Names are always quoted,
/// so they are case-sensitive.
#[derive(Debug, Clone)]
pub struct PostgresSinkBuilder {
    schema: String,
    table: String,
    pool_size: usize,
    timeout: Duration,
    write_connections: usize,
    partition: Option<PartitionBy>,
    max_age: Option<Duration>,
    maintenance_interval: Duration,
}

/// The default interval between two maintenance rounds.
const DEFAULT_MAINTENANCE_INTERVAL: Duration = Duration::from_secs(3600);

const DEFAULT_POOL_SIZE: usize = 8;
const DEFAULT_WRITE_CONNECTIONS: usize = 2;
const DEFAULT_TIMEOUT: Duration = Duration::from_secs(10);

impl Default for PostgresSinkBuilder {
    fn default() -> Self {
        Self {
            schema: DEFAULT_SCHEMA.to_owned(),
            table: DEFAULT_TABLE.to_owned(),
            pool_size: DEFAULT_POOL_SIZE,
            timeout: DEFAULT_TIMEOUT,
            write_connections: DEFAULT_WRITE_CONNECTIONS,
            partition: None,
            max_age: None,
            maintenance_interval: DEFAULT_MAINTENANCE_INTERVAL,
        }
    }
}

impl PostgresSinkBuilder {
    /// The schema of the table. Default: `public`. Created by
    /// [`migrate`](PostgresSink::migrate) if missing.
    pub fn schema(mut self, name: impl Into<String>) -> Self {
        self.schema = name.into();
        self
    }

    /// The table's name. Default: `usage_records`. The version table is
    /// `<table>_meta` (the table part cut to fit PostgreSQL's 63 bytes).
    pub fn table(mut self, name: impl Into<String>) -> Self {
        self.table = name.into();
        self
    }

    /// The most connections the pool opens ([`connect`](Self::connect) only).
    /// Default: 8. The writer uses one at a time; the rest serve `GET /usage`.
    pub fn pool_size(mut self, size: usize) -> Self {
        self.pool_size = size.max(1);
        self
    }

    /// How many connections one batch may be written on at once. Default: 2.
    ///
    /// A batch of at least 512 records is split into parts of at least 256,
    /// inserted at the same time on connections of their own, so that the
    /// server works on them in parallel (one backend uses one CPU core). The
    /// parts are separate transactions: if one fails, the batch fails and the
    /// writer retries it whole, and the records already stored are skipped by
    /// their ids. `1` writes every batch in one statement on one connection.
    /// Keep it below [`pool_size`](Self::pool_size), so that `GET /usage` still
    /// gets connections while a batch is written.
    pub fn write_connections(mut self, n: usize) -> Self {
        self.write_connections = n.max(1);
        self
    }

    /// How long to wait for a connection, whether from the pool or newly opened
    /// ([`connect`](Self::connect) only). Default: 10 seconds. When it passes,
    /// the call fails with a temporary
    /// [`Unavailable`](crate::SinkErrorKind::Unavailable) error.
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    /// Partitions the table by range of `created_at`, one partition per UTC
    /// day or month (see [Partitions and retention](self#partitions-and-retention)).
    /// Default: none, one plain table. A plain table of an earlier version is
    /// converted by [`migrate`](PostgresSink::migrate), every record kept.
    pub fn partition(mut self, by: PartitionBy) -> Self {
        self.partition = Some(by);
        self
    }

    /// Removes records created longer than `max_age` ago, in the sink's
    /// maintenance rounds: whole partitions dropped on a
    /// [partitioned](Self::partition) table, rows deleted 10,000 per
    /// statement on a plain one. An expired record is never listed, fetched
    /// or counted, removed yet or not. Default: none, records are kept
    /// forever.
    pub fn max_age(mut self, max_age: Duration) -> Self {
        self.max_age = Some(max_age);
        self
    }

    /// How often the sink runs [`maintain`](PostgresSink::maintain) (it also
    /// runs once in [`connect`](Self::connect)). Default: 1 hour. Only with
    /// [`partition`](Self::partition) or [`max_age`](Self::max_age).
    pub fn maintenance_interval(mut self, interval: Duration) -> Self {
        self.maintenance_interval = interval.max(Duration::from_secs(1));
        self
    }

    fn build(
        &self,
        pool: Pool,
        names: Names,
        host: Option<String>,
        dbname: Option<String>,
    ) -> PostgresSink {
        PostgresSink {
            inner: Arc::new(Inner {
                pool,
                names,
                write_parallelism: self.write_connections,
                host,
                dbname,
                partition: self.partition,
                max_age: self.max_age,
                expired: AtomicU64::new(0),
            }),
        }
    }

    /// Connects to `url` without TLS, then runs [`migrate`](PostgresSink::migrate).
    /// With [`partition`](Self::partition) or [`max_age`](Self::max_age), also
    /// runs a [maintenance round](PostgresSink::maintain) and starts the
    /// timer of the next ones (a task on the current tokio runtime, which
    /// ends with the last clone of the sink).
    ///
    /// ```no_run
    /// # async fn run() -> Result<(), tower_usage::SinkError> {
    /// let sink = tower_usage::PostgresSink::builder()
    ///     .table("usage_v2")
    ///     .connect("postgres://app@localhost/app")
    ///     .await?;
    /// # let _ = sink;
    /// # Ok(())
    /// # }
    /// ```
    pub async fn connect(self, url: &str) -> Result<PostgresSink, SinkError> {
        let names = Names::new(&self.schema, &self.table)?;
        let config: tokio_postgres::Config = url.parse().map_err(|e| {
            SinkError::new(e)
                .permanent()
                .with_context("invalid PostgreSQL connection string")
        })?;
        let host = pool::describe_hosts(&config);
        let dbname = config.get_dbname().map(str::to_owned);
        let manager = Manager::from_config(
            config,
            NoTls,
            ManagerConfig {
                recycling_method: RecyclingMethod::Fast,
            },
        );
        let pool = Pool::builder(manager)
            .max_size(self.pool_size)
            .runtime(Runtime::Tokio1)
            .wait_timeout(Some(self.timeout))
            .create_timeout(Some(self.timeout))
            .recycle_timeout(Some(self.timeout))
            .build()
            .map_err(|e| SinkError::new(e).permanent())?;
        let sink = self.build(pool, names, host, dbname);
        sink.migrate().await?;
        if self.partition.is_some() || self.max_age.is_some() {
            sink.maintain().await?;
            partition::spawn_maintainer(&sink, self.maintenance_interval);
        }
        Ok(sink)
    }

    /// Uses an existing pool. Does **not** migrate: call
    /// [`migrate`](PostgresSink::migrate). The pool size and timeout set on this
    /// builder do not apply; the pool's own do.
    ///
    /// ```no_run
    /// # async fn run(pool: tower_usage::sink::postgres::deadpool_postgres::Pool) -> Result<(), tower_usage::SinkError> {
    /// let sink = tower_usage::PostgresSink::builder()
    ///     .schema("telemetry")
    ///     .from_pool(pool)?;
    /// sink.migrate().await?;
    /// # Ok(())
    /// # }
    /// ```
    pub fn from_pool(self, pool: Pool) -> Result<PostgresSink, SinkError> {
        let names = Names::new(&self.schema, &self.table)?;
        Ok(self.build(pool, names, None, None))
    }
}
