//! The page query: scope, filters, the cursor's keyset condition, the order and
//! the limit, described once and rendered in either dialect. Every value is a
//! bind parameter; only the table name (validated by the caller) and fixed SQL
//! are spliced into the text.

use std::fmt::Write as _;

use super::columns::{Value, LIST};
use crate::record::ceil_to_millis;
use crate::sink::{ConsumerScope, Order, PathFilter, Position, UsageQuery};

/// Where the SQL of a backend differs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(
    not(all(feature = "sqlite", feature = "postgres")),
    allow(dead_code, reason = "each backend renders its own dialect")
)]
pub(crate) enum Dialect {
    /// `?N` placeholders; timestamps are integer milliseconds.
    Sqlite,
    /// `$N` placeholders; timestamps are `timestamptz`.
    Postgres,
}

impl Dialect {
    /// The placeholder of the `n`th bound value (from 1).
    fn placeholder(self, n: usize) -> String {
        match self {
            Self::Sqlite => format!("?{n}"),
            Self::Postgres => format!("${n}"),
        }
    }

    /// Whether `column` starts with the text bound at `p`. Not `LIKE`: `%` and
    /// `_` in the caller's prefix are literal characters.
    fn starts_with(self, column: &str, p: &str) -> String {
        match self {
            Self::Sqlite => format!("substr({column}, 1, length({p})) = {p}"),
            Self::Postgres => format!("starts_with({column}, {p})"),
        }
    }

    /// The placeholders of the keyset row `(created_at, id)`, typed where the
    /// server cannot infer them from a row comparison.
    fn keyset(self, time: &str, id: &str) -> String {
        match self {
            Self::Sqlite => format!("({time}, {id})"),
            Self::Postgres => format!("({time}::timestamptz, {id}::text)"),
        }
    }
}

/// A statement and the values bound to it, in placeholder order.
#[derive(Debug)]
pub(crate) struct Statement<'q> {
    pub(crate) sql: String,
    pub(crate) values: Vec<Value<'q>>,
}

/// A statement being built: its conditions and bound values.
pub(crate) struct Builder<'q> {
    pub(crate) dialect: Dialect,
    conditions: Vec<String>,
    pub(crate) values: Vec<Value<'q>>,
}

impl<'q> Builder<'q> {
    pub(crate) fn new(dialect: Dialect) -> Self {
        Self {
            dialect,
            conditions: Vec::new(),
            values: Vec::new(),
        }
    }

    /// ` WHERE a AND b ...`, or nothing without conditions.
    pub(crate) fn push_where(&self, sql: &mut String) {
        for (i, condition) in self.conditions.iter().enumerate() {
            sql.push_str(if i == 0 { " WHERE " } else { " AND " });
            sql.push_str(condition);
        }
    }

    /// Binds `value` and returns its placeholder.
    pub(crate) fn bind(&mut self, value: Value<'q>) -> String {
        self.values.push(value);
        self.dialect.placeholder(self.values.len())
    }

    pub(crate) fn and(&mut self, condition: String) {
        self.conditions.push(condition);
    }
}

/// The scope and every filter of `query` (its cursor, order and limit aside)
/// as conditions on `b`: what the page query and the summary query share.
pub(crate) fn filter<'q>(b: &mut Builder<'q>, query: &'q UsageQuery) {
    let dialect = b.dialect;
    scope(b, &query.consumer);
    // Records are kept to the millisecond: bounds are rounded up to one, so
    // that `>=` and `<` on milliseconds agree with them on the exact instants.
    if let Some(since) = query.since {
        let p = b.bind(Value::Time(ceil_to_millis(since)));
        b.and(format!("created_at >= {p}"));
    }
    if let Some(until) = query.until {
        let p = b.bind(Value::Time(ceil_to_millis(until)));
        b.and(format!("created_at < {p}"));
    }
    if let Some(method) = &query.method {
        let p = b.bind(Value::Text(Some(method)));
        b.and(format!("method = {p}"));
    }
    if let Some(trace_id) = &query.trace_id {
        let p = b.bind(Value::Text(Some(trace_id)));
        b.and(format!("trace_id = {p}"));
    }
    match &query.path {
        None => {}
        Some(PathFilter::Exact(path)) => {
            let p = b.bind(Value::Text(Some(path)));
            b.and(format!("path = {p}"));
        }
        Some(PathFilter::Prefix(prefix)) => {
            let p = b.bind(Value::Text(Some(prefix)));
            b.and(dialect.starts_with("path", &p));
        }
    }
    if let Some(status) = query.status {
        let (lo, hi) = status.range();
        let lo = b.bind(Value::Int4(lo.into()));
        let hi = b.bind(Value::Int4(hi.into()));
        b.and(format!("status BETWEEN {lo} AND {hi}"));
    }
    if let Some(route) = &query.route {
        let p = b.bind(Value::Text(Some(route)));
        b.and(format!("route = {p}"));
    }
    if let Some(outcome) = query.outcome {
        let p = b.bind(Value::Text(Some(outcome.as_str())));
        b.and(format!("outcome = {p}"));
    }
}

/// Only the records of `scope`, as a condition on `b`.
fn scope<'q>(b: &mut Builder<'q>, scope: &'q ConsumerScope) {
    match scope {
        ConsumerScope::All => {}
        ConsumerScope::Consumer(c) => {
            let p = b.bind(Value::Text(Some(c)));
            b.and(format!("consumer = {p}"));
        }
        ConsumerScope::Anonymous => b.and("consumer IS NULL".to_owned()),
    }
}

/// The lookup of one record by its id (the primary key, or SQLite's unique
/// index), if its consumer is in `scope`: at most one row.
///
/// `table` must be a validated or fixed identifier: it is spliced into the SQL.
pub(crate) fn by_id<'q>(
    dialect: Dialect,
    table: &str,
    id: &'q str,
    consumers: &'q ConsumerScope,
) -> Statement<'q> {
    let mut b = Builder::new(dialect);
    let p = b.bind(Value::Text(Some(id)));
    b.and(format!("id = {p}"));
    scope(&mut b, consumers);
    let mut sql = format!("SELECT {} FROM {table}", *LIST);
    b.push_where(&mut sql);
    Statement {
        sql,
        values: b.values,
    }
}

/// The page query on `table`: at most `query.limit + 1` records matching
/// `query`, after `after`, in the query's order (one more than the page, so
/// that [`UsagePage::from_sorted`](crate::UsagePage::from_sorted) can tell
/// whether another page follows).
///
/// `table` must be a validated or fixed identifier: it is spliced into the SQL.
pub(crate) fn page<'q>(
    dialect: Dialect,
    table: &str,
    query: &'q UsageQuery,
    after: Option<&'q Position>,
) -> Statement<'q> {
    let mut b = Builder::new(dialect);
    filter(&mut b, query);
    let (cmp, dir) = match query.order {
        Order::Asc => (">", "ASC"),
        Order::Desc => ("<", "DESC"),
    };
    if let Some(after) = after {
        let time = b.bind(Value::Time(after.created_at()));
        let id = b.bind(Value::Text(Some(&after.id)));
        let keyset = dialect.keyset(&time, &id);
        b.and(format!("(created_at, id) {cmp} {keyset}"));
    }
    let limit = b.bind(Value::Int8(
        i64::try_from(query.fetch_limit()).unwrap_or(i64::MAX),
    ));

    let mut sql = format!("SELECT {} FROM {table}", *LIST);
    b.push_where(&mut sql);
    let _ = write!(sql, " ORDER BY created_at {dir}, id {dir} LIMIT {limit}");
    Statement {
        sql,
        values: b.values,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sink::StatusFilter;

    fn every_filter() -> UsageQuery {
        UsageQuery {
            consumer: ConsumerScope::Consumer("c".into()),
            since: Some(time::macros::datetime!(2024-05-01 09:50:00.0004 UTC)),
            until: Some(time::macros::datetime!(2024-05-01 10:00:00 UTC)),
            method: Some("GET".into()),
            path: Some(PathFilter::Prefix("/a%_".into())),
            status: Some(StatusFilter::Class(4)),
            route: Some("/a/{id}".into()),
            outcome: Some(crate::Outcome::ClientGone),
            trace_id: None,
            limit: 10,
            cursor: None,
            order: Order::Desc,
            fields: crate::sink::Projection::Full,
            max_bytes: None,
        }
    }

    #[test]
    fn both_dialects_say_the_same_with_their_own_words() {
        let q = every_filter();
        let after = Position {
            created_at_ms: 1_714_557_000_123,
            id: "01X".into(),
        };
        let sqlite = page(Dialect::Sqlite, "usage_records", &q, Some(&after));
        let where_ = " WHERE consumer = ?1 AND created_at >= ?2 AND created_at < ?3 \
             AND method = ?4 AND substr(path, 1, length(?5)) = ?5 \
             AND status BETWEEN ?6 AND ?7 AND route = ?8 AND outcome = ?9 \
             AND (created_at, id) < (?10, ?11) \
             ORDER BY created_at DESC, id DESC LIMIT ?12";
        assert_eq!(
            sqlite.sql,
            format!("SELECT {} FROM usage_records{where_}", *LIST)
        );
        let pg = page(Dialect::Postgres, "\"s\".\"t\"", &q, Some(&after));
        assert!(pg.sql.contains(
            "AND starts_with(path, $5) AND status BETWEEN $6 AND $7 \
             AND route = $8 AND outcome = $9 \
             AND (created_at, id) < ($10::timestamptz, $11::text) \
             ORDER BY created_at DESC, id DESC LIMIT $12"
        ));
        assert_eq!(sqlite.values, pg.values);
        let v = &sqlite.values;
        assert_eq!(v[0], Value::Text(Some("c")));
        // Rounded up to the millisecond.
        assert_eq!(
            v[1],
            Value::Time(time::macros::datetime!(2024-05-01 09:50:00.001 UTC))
        );
        assert_eq!(v[4], Value::Text(Some("/a%_")));
        assert_eq!((&v[5], &v[6]), (&Value::Int4(400), &Value::Int4(499)));
        assert_eq!(v[7], Value::Text(Some("/a/{id}")));
        assert_eq!(v[8], Value::Text(Some("client_gone")));
        assert_eq!(v[9], Value::Time(after.created_at()));
        assert_eq!(v[11], Value::Int8(11));
    }

    #[test]
    fn by_id_is_the_key_and_the_scope() {
        let scope = ConsumerScope::Consumer("c".into());
        let s = by_id(Dialect::Sqlite, "t", "01X", &scope);
        assert_eq!(
            s.sql,
            format!("SELECT {} FROM t WHERE id = ?1 AND consumer = ?2", *LIST)
        );
        assert_eq!(s.values, [Value::Text(Some("01X")), Value::Text(Some("c"))]);
        let s = by_id(Dialect::Postgres, "t", "01X", &ConsumerScope::All);
        assert!(s.sql.ends_with(" FROM t WHERE id = $1"), "{}", s.sql);
    }

    #[test]
    fn no_filter_is_no_where_clause() {
        let q = UsageQuery {
            consumer: ConsumerScope::Anonymous,
            ..UsageQuery::default()
        };
        let s = page(Dialect::Postgres, "t", &q, None);
        assert!(s
            .sql
            .ends_with(" FROM t WHERE consumer IS NULL ORDER BY created_at ASC, id ASC LIMIT $1"));
        let q = UsageQuery::default();
        let s = page(Dialect::Sqlite, "t", &q, None);
        assert!(s
            .sql
            .ends_with(" FROM t ORDER BY created_at ASC, id ASC LIMIT ?1"));
        assert_eq!(s.values, [Value::Int8(101)]);
    }
}
