//! Time partitions and retention: the table partitioned by range of
//! `created_at`, converted from a plain table in the migration, and the
//! maintainer that creates partitions ahead, drops expired ones and keeps
//! the `DEFAULT` partition empty.
//!
//! The sink's own maintainer, not pg_partman: it needs no extension (none
//! to install or allow on a managed server, where pg_partman is often not
//! offered), runs the few statements this one table needs, and reports what
//! it did in the sink's own logs and counters.

use std::time::Duration;

use deadpool_postgres::Transaction;
use time::{Date, Month, OffsetDateTime};

use super::names::{derived, quote, Names};
use super::schema::set_meta;
use super::{error, PostgresSink};
use crate::sink::expiry;
use crate::{SinkError, SinkErrorKind};

/// The width of one partition of a [partitioned](super::PostgresSinkBuilder::partition)
/// table: a UTC day or a UTC calendar month.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum PartitionBy {
    /// One partition per UTC day, `<table>_pYYYYMMDD`; the next 7 days are
    /// created ahead.
    Day,
    /// One partition per UTC month, `<table>_pYYYYMM`; the next 2 months are
    /// created ahead.
    Month,
}

impl PartitionBy {
    fn as_str(self) -> &'static str {
        match self {
            Self::Day => "day",
            Self::Month => "month",
        }
    }

    fn parse(s: &str) -> Option<Self> {
        match s {
            "day" => Some(Self::Day),
            "month" => Some(Self::Month),
            _ => None,
        }
    }

    /// The first day of the partition holding `date`.
    fn floor(self, date: Date) -> Date {
        match self {
            Self::Day => date,
            Self::Month => date.replace_day(1).unwrap_or(date),
        }
    }

    /// The first day of the next partition after the one starting on `start`.
    fn next(self, start: Date) -> Date {
        match self {
            Self::Day => start.next_day().unwrap_or(start),
            Self::Month => {
                let (y, m) = match start.month() {
                    Month::December => (start.year() + 1, Month::January),
                    m => (start.year(), m.next()),
                };
                Date::from_calendar_date(y, m, 1).unwrap_or(start)
            }
        }
    }

    /// Partitions created ahead of the current one.
    fn ahead(self) -> usize {
        match self {
            Self::Day => 7,
            Self::Month => 2,
        }
    }

    /// The partition's table name for the period starting on `start`.
    fn name(self, table: &str, start: Date) -> String {
        let (y, m, d) = (start.year(), start.month() as u8, start.day());
        match self {
            Self::Day => derived(table, &format!("p{y:04}{m:02}{d:02}")),
            Self::Month => derived(table, &format!("p{y:04}{m:02}")),
        }
    }
}

/// A bound as PostgreSQL reads it: midnight UTC.
fn bound(date: Date) -> String {
    format!(
        "{:04}-{:02}-{:02} 00:00:00+00",
        date.year(),
        date.month() as u8,
        date.day()
    )
}

/// The `DEFAULT` partition's name.
fn default_name(n: &Names) -> String {
    format!(
        "{}.{}",
        quote(&n.schema),
        quote(&derived(&n.table, "default"))
    )
}

fn qualified_in(n: &Names, name: &str) -> String {
    format!("{}.{}", quote(&n.schema), quote(name))
}

/// `CREATE TABLE IF NOT EXISTS` the partition of `parent` for the period
/// starting on `start`.
fn create_sql(n: &Names, parent: &str, by: PartitionBy, start: Date) -> String {
    format!(
        "CREATE TABLE IF NOT EXISTS {} PARTITION OF {parent} FOR VALUES FROM ('{}') TO ('{}') \
         WITH (toast_tuple_target = 8160)",
        qualified_in(n, &by.name(&n.table, start)),
        bound(start),
        bound(by.next(start)),
    )
}

/// The key of the advisory lock one maintainer holds at a time.
fn maintain_key(n: &Names) -> String {
    format!("tower-usage maintain {}.{}", n.schema, n.table)
}

/// Whether the table is partitioned, and by what (from `<table>_meta`).
async fn current(tx: &Transaction<'_>, n: &Names) -> Result<Option<PartitionBy>, SinkError> {
    let kind: Option<String> = tx
        .query_opt(
            "SELECT c.relkind::text FROM pg_class c JOIN pg_namespace s ON s.oid = c.relnamespace \
             WHERE s.nspname = $1 AND c.relname = $2",
            &[&n.schema, &n.table],
        )
        .await
        .map_err(error::pg)?
        .map(|row| row.get(0));
    if kind.as_deref() != Some("p") {
        return Ok(None);
    }
    let by: Option<String> = tx
        .query_opt(
            &format!("SELECT value FROM {} WHERE name = 'partition_by'", n.meta),
            &[],
        )
        .await
        .map_err(error::pg)?
        .map(|row| row.get(0));
    match by.as_deref().and_then(PartitionBy::parse) {
        Some(by) => Ok(Some(by)),
        None => Err(SinkError::message(
            SinkErrorKind::Corrupt,
            format!(
                "table {}.{} is partitioned, but not by tower-usage ({}: partition_by is {by:?})",
                n.schema, n.table, n.meta
            ),
        )),
    }
}

/// In the migration's transaction: converts a plain table to one partitioned
/// by `by`, keeping every row; checks that a partitioned table is
/// partitioned by `by`. `None`: the table must be plain.
pub(super) async fn convert(
    tx: &Transaction<'_>,
    n: &Names,
    by: Option<PartitionBy>,
) -> Result<(), SinkError> {
    let now = current(tx, n).await?;
    let by = match (now, by) {
        (None, None) => return Ok(()),
        (Some(a), Some(b)) if a == b => return Ok(()),
        (Some(a), b) => {
            return Err(SinkError::message(
                SinkErrorKind::Config,
                format!(
                    "table {}.{} is partitioned by {}, the sink is configured {}: \
                     configure .partition(PartitionBy::{:?})",
                    n.schema,
                    n.table,
                    a.as_str(),
                    b.map_or("without partitions".to_owned(), |b| format!(
                        "by {}",
                        b.as_str()
                    )),
                    a
                ),
            )
            .permanent())
        }
        (None, Some(by)) => by,
    };
    let t = &n.qualified;
    let row = tx
        .query_one(
            &format!("SELECT min(created_at), max(created_at) FROM {t}"),
            &[],
        )
        .await
        .map_err(error::pg)?;
    let today = OffsetDateTime::now_utc().date();
    let first: Date = row
        .get::<_, Option<OffsetDateTime>>(0)
        .map_or(today, |t| t.date().min(today));
    let last: Date = row
        .get::<_, Option<OffsetDateTime>>(1)
        .map_or(today, |t| t.date().max(today));
    let staging_name = derived(&n.table, "partitioning");
    let staging = qualified_in(n, &staging_name);
    let mut ddl = format!(
        "CREATE TABLE {staging} (LIKE {t} INCLUDING DEFAULTS INCLUDING STORAGE) \
         PARTITION BY RANGE (created_at);\n"
    );
    let mut start = by.floor(first);
    let end = {
        let mut end = by.floor(last);
        for _ in 0..=by.ahead() {
            end = by.next(end);
        }
        end
    };
    while start < end {
        ddl.push_str(&create_sql(n, &staging, by, start));
        ddl.push_str(";\n");
        start = by.next(start);
    }
    ddl.push_str(&format!(
        "CREATE TABLE {} PARTITION OF {staging} DEFAULT;\n\
         INSERT INTO {staging} SELECT * FROM {t};\n\
         DROP TABLE {t};\n\
         ALTER TABLE {staging} RENAME TO {table};\n\
         ALTER TABLE {t} ADD PRIMARY KEY (id, created_at);\n\
         CREATE INDEX {ci} ON {t} (consumer, created_at, id);\n\
         CREATE INDEX {cr} ON {t} (created_at, id);\n\
         CREATE INDEX {ti} ON {t} (trace_id) WHERE trace_id IS NOT NULL;",
        default_name(n),
        table = quote(&n.table),
        ci = n.consumer_index,
        cr = n.created_index,
        ti = n.trace_index,
    ));
    tx.batch_execute(&ddl).await.map_err(error::pg)?;
    set_meta(tx, n, "partition_by", by.as_str()).await?;
    tracing::info!(
        schema = %n.schema,
        table = %n.table,
        partition_by = by.as_str(),
        "postgres usage sink: the table is now partitioned by time, every record kept"
    );
    Ok(())
}

/// What one maintenance round did, from [`PostgresSink::maintain`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct Maintenance {
    /// Another replica held the maintenance lock: this round did nothing.
    pub skipped: bool,
    /// Partitions created (ahead, or for rows found in `DEFAULT`).
    pub created: u64,
    /// Expired partitions dropped.
    pub dropped: u64,
    /// Records removed for their age (in dropped partitions, in `DEFAULT`,
    /// or deleted from a plain table).
    pub expired: u64,
    /// Records found in the `DEFAULT` partition and moved to partitions of
    /// their own (each time logged as a warning).
    pub moved_from_default: u64,
}

/// Rows deleted per statement from a plain table with `max_age`.
const DELETE_CHUNK: i64 = 10_000;

impl PostgresSink {
    /// Runs one maintenance round now, and says what it did: on a
    /// [partitioned](super::PostgresSinkBuilder::partition) table, creates
    /// the partitions of the next periods, moves rows found in the `DEFAULT`
    /// partition to partitions of their own, and with
    /// [`max_age`](super::PostgresSinkBuilder::max_age) drops the
    /// partitions wholly older than it; on a plain table with `max_age`,
    /// deletes the expired rows, 10,000 per statement. The sink runs it on
    /// start and every
    /// [`maintenance_interval`](super::PostgresSinkBuilder::maintenance_interval);
    /// call it to run one at a time of your choosing.
    ///
    /// One replica maintains a table at a time: the round holds a session
    /// advisory lock (`pg_try_advisory_lock`), and a replica that finds it
    /// held skips the round ([`Maintenance::skipped`]).
    ///
    /// ```no_run
    /// # async fn run() -> Result<(), tower_usage::SinkError> {
    /// use tower_usage::sink::postgres::PartitionBy;
    /// let sink = tower_usage::PostgresSink::builder()
    ///     .partition(PartitionBy::Day)
    ///     .max_age(std::time::Duration::from_secs(90 * 24 * 3600))
    ///     .connect("postgres://postgres@127.0.0.1/test")
    ///     .await?;
    /// let round = sink.maintain().await?;
    /// println!("{} partitions dropped, {} records expired", round.dropped, round.expired);
    /// # Ok(()) }
    /// ```
    pub async fn maintain(&self) -> Result<Maintenance, SinkError> {
        let n = &self.inner.names;
        let client = self.inner.client().await?;
        let key = maintain_key(n);
        let locked: bool = client
            .query_one("SELECT pg_try_advisory_lock(hashtext($1))", &[&key])
            .await
            .map_err(error::pg)?
            .get(0);
        if !locked {
            return Ok(Maintenance {
                skipped: true,
                ..Maintenance::default()
            });
        }
        let result = self.round(&client).await;
        let unlocked = client
            .execute("SELECT pg_advisory_unlock(hashtext($1))", &[&key])
            .await;
        if unlocked.is_err() {
            // The session ends with the connection, and its lock with it.
            drop(deadpool_postgres::Client::take(client));
        }
        let round =
            result.map_err(|e| e.with_context(format!("maintaining {}.{}", n.schema, n.table)))?;
        self.inner
            .expired
            .fetch_add(round.expired, std::sync::atomic::Ordering::Relaxed);
        if round.dropped > 0 || round.expired > 0 || round.created > 0 {
            tracing::info!(
                schema = %n.schema,
                table = %n.table,
                created = round.created,
                dropped = round.dropped,
                expired = round.expired,
                "postgres usage sink: maintenance"
            );
        }
        Ok(round)
    }

    async fn round(&self, client: &deadpool_postgres::Client) -> Result<Maintenance, SinkError> {
        let n = &self.inner.names;
        let mut round = Maintenance::default();
        let cut = self.inner.max_age.map(expiry::cut);
        let Some(by) = self.inner.partition else {
            if let Some(cut) = cut {
                loop {
                    let deleted = client
                        .execute(
                            &format!(
                                "DELETE FROM {t} WHERE ctid IN (SELECT ctid FROM {t} \
                                 WHERE created_at < $1 LIMIT {DELETE_CHUNK})",
                                t = n.qualified
                            ),
                            &[&cut],
                        )
                        .await
                        .map_err(error::pg)?;
                    round.expired += deleted;
                    if deleted < DELETE_CHUNK as u64 {
                        break;
                    }
                }
            }
            return Ok(round);
        };
        let default = default_name(n);
        // Rows in DEFAULT: expired ones go, the others get their partition.
        if let Some(cut) = cut {
            round.expired += client
                .execute(
                    &format!("DELETE FROM {default} WHERE created_at < $1"),
                    &[&cut],
                )
                .await
                .map_err(error::pg)?;
        }
        let trunc = by.as_str();
        let stray: Vec<OffsetDateTime> = client
            .query(
                &format!("SELECT DISTINCT date_trunc('{trunc}', created_at, 'UTC') FROM {default}"),
                &[],
            )
            .await
            .map_err(error::pg)?
            .iter()
            .map(|row| row.get(0))
            .collect();
        for start in stray {
            let start = by.floor(start.date());
            let (lo, hi) = (bound(start), bound(by.next(start)));
            let moved = client
                .query_one(
                    &format!(
                        "WITH moved AS (SELECT count(*) AS n FROM {default} \
                         WHERE created_at >= '{lo}' AND created_at < '{hi}') SELECT n FROM moved"
                    ),
                    &[],
                )
                .await
                .map_err(error::pg)?
                .get::<_, i64>(0);
            let tmp = derived(&n.table, "moving");
            client
                .batch_execute(&format!(
                    "BEGIN;\n\
                     CREATE TEMP TABLE {tmp} ON COMMIT DROP AS \
                     WITH d AS (DELETE FROM {default} WHERE created_at >= '{lo}' AND created_at < '{hi}' \
                     RETURNING *) SELECT * FROM d;\n\
                     {create};\n\
                     INSERT INTO {t} SELECT * FROM {tmp};\n\
                     COMMIT;",
                    tmp = quote(&tmp),
                    create = create_sql(n, &n.qualified, by, start),
                    t = n.qualified,
                ))
                .await
                .map_err(error::pg)?;
            round.created += 1;
            round.moved_from_default += moved as u64;
            tracing::warn!(
                schema = %n.schema,
                table = %n.table,
                records = moved,
                from = %lo,
                "postgres usage sink: records had landed in the DEFAULT partition (no partition \
                 for their time yet: created too far in the past or the future, or the \
                 maintainer did not run); moved to a partition of their own"
            );
        }
        // Ahead: the current period and the next ones.
        let today = OffsetDateTime::now_utc().date();
        let mut start = by.floor(today);
        for _ in 0..=by.ahead() {
            let exists = self
                .partition_exists(client, &by.name(&n.table, start))
                .await?;
            if !exists {
                client
                    .batch_execute(&create_sql(n, &n.qualified, by, start))
                    .await
                    .map_err(error::pg)?;
                round.created += 1;
            }
            start = by.next(start);
        }
        // Retention: whole partitions older than the cut.
        if let Some(cut) = cut {
            let expired: Vec<String> = client
                .query(
                    "SELECT c.relname::text FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid \
                     WHERE i.inhparent = $1::text::regclass \
                     AND pg_get_expr(c.relpartbound, c.oid) <> 'DEFAULT' \
                     AND (regexp_match(pg_get_expr(c.relpartbound, c.oid), 'TO \\(''([^'']+)''\\)'))[1]::timestamptz <= $2 \
                     ORDER BY 1",
                    &[&n.qualified, &cut],
                )
                .await
                .map_err(error::pg)?
                .iter()
                .map(|row| row.get(0))
                .collect();
            for name in expired {
                let part = qualified_in(n, &name);
                let rows: i64 = client
                    .query_one(&format!("SELECT count(*) FROM {part}"), &[])
                    .await
                    .map_err(error::pg)?
                    .get(0);
                client
                    .batch_execute(&format!("DROP TABLE {part}"))
                    .await
                    .map_err(error::pg)?;
                round.dropped += 1;
                round.expired += rows as u64;
            }
        }
        Ok(round)
    }

    async fn partition_exists(
        &self,
        client: &deadpool_postgres::Client,
        name: &str,
    ) -> Result<bool, SinkError> {
        Ok(client
            .query_opt(
                "SELECT 1 FROM pg_class c JOIN pg_namespace s ON s.oid = c.relnamespace \
                 WHERE s.nspname = $1 AND c.relname = $2",
                &[&self.inner.names.schema, &name],
            )
            .await
            .map_err(error::pg)?
            .is_some())
    }
}

/// Runs [`PostgresSink::maintain`] every `interval` while the sink lives.
pub(super) fn spawn_maintainer(sink: &PostgresSink, interval: Duration) {
    let weak = std::sync::Arc::downgrade(&sink.inner);
    let Ok(runtime) = tokio::runtime::Handle::try_current() else {
        return;
    };
    runtime.spawn(async move {
        let failing = crate::streak::Streak::new();
        loop {
            tokio::time::sleep(interval).await;
            let Some(inner) = weak.upgrade() else {
                return;
            };
            let sink = PostgresSink { inner };
            match sink.maintain().await {
                Ok(_) => {
                    failing.succeed();
                }
                Err(err) => {
                    if failing.fail() {
                        tracing::warn!(error = %err, "postgres usage sink: maintenance failed; tried again at the next interval (further failures are not logged until one succeeds)");
                    }
                }
            }
        }
    });
}

#[cfg(test)]
mod tests {
    use super::*;
    use time::macros::date;

    #[test]
    fn periods_and_names() {
        assert_eq!(
            PartitionBy::Month.floor(date!(2026 - 12 - 07)),
            date!(2026 - 12 - 01)
        );
        assert_eq!(
            PartitionBy::Month.next(date!(2026 - 12 - 01)),
            date!(2027 - 01 - 01)
        );
        assert_eq!(
            PartitionBy::Day.next(date!(2026 - 02 - 28)),
            date!(2026 - 03 - 01)
        );
        assert_eq!(
            PartitionBy::Day.name("usage_records", date!(2026 - 12 - 07)),
            "usage_records_p20261207"
        );
        assert_eq!(
            PartitionBy::Month.name("usage_records", date!(2026 - 12 - 07)),
            "usage_records_p202612"
        );
        assert_eq!(bound(date!(2026 - 01 - 02)), "2026-01-02 00:00:00+00");
    }
}
