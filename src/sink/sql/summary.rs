//! The summary query: the list's conditions, a bucket start and the group keys
//! as `GROUP BY` columns, rendered in either dialect. SQLite groups by the
//! duration histogram's bin as well (percentiles are counted from the bins);
//! PostgreSQL takes exact percentiles with `percentile_disc`, and the total in
//! the same statement as a second grouping set.

use std::fmt::Write as _;

use super::select::{filter, Builder, Dialect, Statement};
use crate::sink::{GroupBy, GroupKey, GroupKeys, Interval, SummaryQuery, UsageQuery};
use crate::{Outcome, SinkError, SinkErrorKind};

/// The SQL function SQLite sinks register: the duration histogram's bin of a
/// duration in microseconds.
pub(crate) const DURATION_BIN_FUNCTION: &str = "tower_usage_duration_bin";

/// The bucket start of `created_at`: Unix milliseconds for SQLite (where
/// `created_at` is an integer), a `timestamptz` for PostgreSQL.
fn bucket_start(dialect: Dialect, interval: Interval) -> String {
    match (dialect, interval.fixed_millis()) {
        (Dialect::Sqlite, Some(w)) => format!("(created_at - ((created_at % {w}) + {w}) % {w})"),
        (Dialect::Sqlite, None) => {
            let day = 86_400_000;
            format!(
                "(CAST(strftime('%s', (created_at - ((created_at % {day}) + {day}) % {day}) / 1000, \
                 'unixepoch', 'start of month') AS INTEGER) * 1000)"
            )
        }
        (Dialect::Postgres, _) => format!("date_trunc('{}', created_at, 'UTC')", interval.as_str()),
    }
}

/// The column of a group key.
fn key_column(key: GroupKey) -> &'static str {
    match key {
        GroupKey::Route => "route",
        GroupKey::Method => "method",
        GroupKey::Status => "status / 100",
        GroupKey::Outcome => "outcome",
        GroupKey::Consumer => "consumer",
    }
}

/// The summary statement. Its rows, column by column: the bucket start `b`,
/// one column per key of `query.group_by` (in [`GroupKey::ALL`] order:
/// `route`, `method`, the status class, `outcome`, `consumer`), then
///
/// - SQLite: the duration bin, `count(*)`, 4xx count, 5xx count, request
///   bytes, response bytes, the longest duration; one row per bucket, group and
///   bin.
/// - PostgreSQL: `count(*)`, 4xx count, 5xx count, request bytes, response
///   bytes, the longest duration (`NULL` when no rows), the array of p50, p95,
///   p99 (`NULL` when no rows), and `GROUPING(b)`: `1` on the one total row
///   (whose `b` and keys are `NULL`), `0` on a bucket's.
///
/// `list` is `query.list_query()`: the scope, range and filters.
/// `table` must be a validated or fixed identifier: it is spliced into the SQL.
pub(crate) fn summary<'q>(
    dialect: Dialect,
    table: &str,
    query: &SummaryQuery,
    list: &'q UsageQuery,
) -> Statement<'q> {
    let mut b = Builder::new(dialect);
    filter(&mut b, list);
    let start = bucket_start(dialect, query.interval);
    let keys: Vec<&str> = query.group_by.keys().map(key_column).collect();
    let aliases: Vec<String> = (0..keys.len()).map(|i| format!("k{i}")).collect();
    let mut group = vec!["b".to_owned()];
    group.extend(aliases.iter().cloned());
    let group = group.join(", ");
    let mut sql = String::new();
    match dialect {
        Dialect::Sqlite => {
            let _ = write!(sql, "SELECT {start} AS b");
            for (col, alias) in keys.iter().zip(&aliases) {
                let _ = write!(sql, ", {col} AS {alias}");
            }
            let _ = write!(
                sql,
                ", {DURATION_BIN_FUNCTION}(duration_us) AS bin, count(*), \
                 sum(status BETWEEN 400 AND 499), sum(status BETWEEN 500 AND 599), \
                 sum(req_body_size), sum(resp_body_size), max(duration_us) FROM {table}"
            );
            b.push_where(&mut sql);
            let _ = write!(sql, " GROUP BY {group}, bin");
        }
        Dialect::Postgres => {
            let _ = write!(sql, "SELECT {group}, count(*), \
                 count(*) FILTER (WHERE status BETWEEN 400 AND 499), \
                 count(*) FILTER (WHERE status BETWEEN 500 AND 599), \
                 COALESCE(sum(req_body_size), 0)::int8, COALESCE(sum(resp_body_size), 0)::int8, \
                 max(duration_us), \
                 percentile_disc(ARRAY[0.5, 0.95, 0.99]::float8[]) WITHIN GROUP (ORDER BY duration_us), \
                 GROUPING(b)::int4 FROM (SELECT {start} AS b");
            for (col, alias) in keys.iter().zip(&aliases) {
                let _ = write!(sql, ", {col} AS {alias}");
            }
            let _ = write!(
                sql,
                ", status, duration_us, req_body_size, resp_body_size FROM {table}"
            );
            b.push_where(&mut sql);
            let _ = write!(sql, ") AS s GROUP BY GROUPING SETS (({group}), ())");
        }
    }
    Statement {
        sql,
        values: b.values,
    }
}

/// The group-key columns of a summary row, as each backend reads them.
pub(crate) trait ReadKeys {
    /// A text column, `None` for `NULL`.
    fn key_text(&self, i: usize) -> Result<Option<String>, SinkError>;
    /// An integer column.
    fn key_int(&self, i: usize) -> Result<i64, SinkError>;
}

/// The group keys of a summary row, whose key columns start at `first`, one
/// per key of `group_by`, in [`GroupKey::ALL`] order.
pub(crate) fn read_keys(
    row: &impl ReadKeys,
    group_by: GroupBy,
    first: usize,
) -> Result<GroupKeys, SinkError> {
    let bad = |what: String| {
        SinkError::message(
            SinkErrorKind::Corrupt,
            format!("stored record has a bad {what}"),
        )
    };
    let mut keys = GroupKeys::default();
    for (i, key) in group_by.keys().enumerate() {
        let i = first + i;
        match key {
            GroupKey::Route => keys.route = Some(row.key_text(i)?),
            GroupKey::Method => {
                keys.method = Some(row.key_text(i)?.ok_or_else(|| bad("method: NULL".into()))?);
            }
            GroupKey::Status => {
                let class = row.key_int(i)?;
                keys.status =
                    Some(u16::try_from(class).map_err(|_| bad(format!("status class {class}")))?);
            }
            GroupKey::Outcome => {
                let name = row.key_text(i)?.unwrap_or_default();
                keys.outcome = Some(
                    Outcome::from_name(&name).ok_or_else(|| bad(format!("outcome {name:?}")))?,
                );
            }
            GroupKey::Consumer => keys.consumer = Some(row.key_text(i)?),
        }
    }
    Ok(keys)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sink::{ConsumerScope, GroupBy};

    #[test]
    fn both_dialects_group_by_the_bucket_and_the_keys() {
        let q = SummaryQuery {
            consumer: ConsumerScope::Consumer("c".into()),
            interval: Interval::Hour,
            group_by: GroupBy::NONE.with(GroupKey::Status).with(GroupKey::Route),
            ..SummaryQuery::default()
        };
        let list = q.list_query();
        let s = summary(Dialect::Sqlite, "usage_records", &q, &list);
        assert_eq!(
            s.sql,
            "SELECT (created_at - ((created_at % 3600000) + 3600000) % 3600000) AS b, \
             route AS k0, status / 100 AS k1, tower_usage_duration_bin(duration_us) AS bin, \
             count(*), sum(status BETWEEN 400 AND 499), sum(status BETWEEN 500 AND 599), \
             sum(req_body_size), sum(resp_body_size), max(duration_us) FROM usage_records \
             WHERE consumer = ?1 AND created_at >= ?2 AND created_at < ?3 GROUP BY b, k0, k1, bin"
        );
        let p = summary(Dialect::Postgres, "t", &q, &list);
        assert!(p.sql.starts_with("SELECT b, k0, k1, count(*)"), "{}", p.sql);
        assert!(p.sql.contains("FROM (SELECT date_trunc('hour', created_at, 'UTC') AS b, route AS k0, status / 100 AS k1, status,"), "{}", p.sql);
        assert!(p.sql.ends_with("WHERE consumer = $1 AND created_at >= $2 AND created_at < $3) AS s GROUP BY GROUPING SETS ((b, k0, k1), ())"), "{}", p.sql);
        assert_eq!(s.values, p.values);
    }
}
