//! Reading: the conditions every read shares (scope, filters, retention,
//! erasures), the page, and one record by id. Every value is bound client-side
//! (the client escapes it into the statement); only the validated names and
//! fixed SQL are spliced in.

use std::fmt::Write as _;

use clickhouse::Row;
use serde::Deserialize;

use super::{error, ClickHouseSink};
use crate::record::from_unix_millis;
use crate::sink::get::ulid_millis;
use crate::sink::{
    record_bytes, ConsumerScope, Order, PathFilter, Position, UsagePage, UsageQuery,
};
use crate::{SinkError, UsageRecord};

/// A value bound to a `?` of a statement.
#[derive(Debug, Clone, PartialEq)]
pub(super) enum Arg {
    Str(String),
    Int(i64),
}

/// A statement and its values, in `?` order.
#[derive(Debug, Default)]
pub(super) struct Statement {
    pub(super) sql: String,
    pub(super) args: Vec<Arg>,
    conditions: Vec<String>,
}

impl Statement {
    /// Binds a value; returns its placeholder.
    pub(super) fn bind(&mut self, arg: Arg) -> &'static str {
        self.args.push(arg);
        "?"
    }

    pub(super) fn and(&mut self, condition: String) {
        self.conditions.push(condition);
    }

    /// ` WHERE a AND b ...`: every condition so far.
    pub(super) fn push_where(&mut self) {
        for (i, c) in self.conditions.iter().enumerate() {
            self.sql.push_str(if i == 0 { " WHERE " } else { " AND " });
            self.sql.push_str(c);
        }
    }
}

/// The erasures, as one scalar: `(consumers, erased_ms)` with a last entry
/// that matches no stored consumer's time (`transform` refuses empty arrays).
fn erased_with(erased: &str) -> String {
    format!(
        "WITH (SELECT tuple(arrayConcat(groupArray(consumer), ['']), \
         arrayConcat(groupArray(m), [toInt64(0)])) FROM (SELECT consumer, max(erased_ms) AS m \
         FROM {erased} GROUP BY consumer)) AS erased "
    )
}

/// Only the records of `scope`.
fn scope(s: &mut Statement, scope: &ConsumerScope) {
    match scope {
        ConsumerScope::All => {}
        ConsumerScope::Consumer(c) => {
            let p = s.bind(Arg::Str(c.clone()));
            s.and(format!("anonymous = 0 AND consumer = {p}"));
        }
        ConsumerScope::Anonymous => s.and("anonymous = 1".to_owned()),
    }
}

impl ClickHouseSink {
    /// `WITH erased ... SELECT <what> FROM <table> FINAL` and the conditions
    /// every read has: records past `max_age` and erased records are hidden.
    pub(super) fn read(&self, what: &str) -> Statement {
        let i = &self.inner;
        let mut s = Statement {
            sql: format!(
                "{}SELECT {what} FROM {} FINAL",
                erased_with(&i.erased),
                i.qualified
            ),
            ..Statement::default()
        };
        // Written before the consumer's last erasure: the `DELETE` mutation
        // may not have removed it yet.
        s.and(
            "(anonymous = 1 OR written_ms > transform(consumer, erased.1, erased.2, toInt64(0)))"
                .to_owned(),
        );
        if let Some(cutoff) = self.retention_cutoff_ms() {
            let p = s.bind(Arg::Int(cutoff));
            s.and(format!("created_at_ms >= {p}"));
        }
        s
    }

    /// A client query for `s`, its values bound.
    pub(super) fn prepare(&self, s: &Statement) -> clickhouse::query::Query {
        let mut q = self.inner.client.query(&s.sql);
        for arg in &s.args {
            q = match arg {
                Arg::Str(v) => q.bind(v.as_str()),
                Arg::Int(v) => q.bind(*v),
            };
        }
        q
    }

    /// One page: at most `limit + 1` records after the cursor, read until
    /// they [are enough](UsageQuery::read_enough).
    pub(super) async fn select_page(&self, query: &UsageQuery) -> Result<UsagePage, SinkError> {
        let after = query.position()?;
        let s = page(self.read("record"), query, after.as_ref());
        let mut cursor = self
            .prepare(&s)
            .fetch::<StoredRecord<'_>>()
            .map_err(error::ch)?;
        let mut hits = Vec::new();
        let mut bytes = 0usize;
        while let Some(row) = cursor.next().await.map_err(error::ch)? {
            let record = UsageRecord::from_storage_bytes(row.record)?;
            bytes = bytes.saturating_add(record_bytes(&record));
            hits.push(record);
            if query.read_enough(hits.len(), bytes) {
                break;
            }
        }
        Ok(UsagePage::from_sorted(query, hits))
    }

    /// One record by id, if its consumer is in `scope`.
    ///
    /// The id's ULID names its millisecond (`UsageRecord::id`), so the record
    /// is looked for there first: one month's partition, and in it the
    /// granules of that millisecond (an admin's lookup has no consumer to
    /// narrow the sort key with). A record whose id names another time (an
    /// id set by hand, an import) is then looked for by id alone, as an id
    /// that is not a ULID is.
    pub(super) async fn select_by_id(
        &self,
        id: &str,
        consumers: &ConsumerScope,
    ) -> Result<Option<UsageRecord>, SinkError> {
        let named =
            ulid_millis(id).and_then(|ms| Some((ms, super::insert::month(from_unix_millis(ms)?))));
        if let Some(at) = named {
            if let Some(found) = self.select_one(id, consumers, Some(at)).await? {
                return Ok(Some(found));
            }
        }
        self.select_one(id, consumers, None).await
    }

    /// [`select_by_id`](Self::select_by_id) in the millisecond and month
    /// `at`, or anywhere.
    async fn select_one(
        &self,
        id: &str,
        consumers: &ConsumerScope,
        at: Option<(i64, u32)>,
    ) -> Result<Option<UsageRecord>, SinkError> {
        let mut s = self.read("record");
        let p = s.bind(Arg::Str(id.to_owned()));
        s.and(format!("id = {p}"));
        if let Some((ms, month)) = at {
            let p = s.bind(Arg::Int(i64::from(month)));
            s.and(format!("month = {p}"));
            let p = s.bind(Arg::Int(ms));
            s.and(format!("created_at_ms = {p}"));
        }
        scope(&mut s, consumers);
        s.push_where();
        s.sql.push_str(" LIMIT 1");
        let row = self
            .prepare(&s)
            .fetch_optional::<StoredRecordOwned>()
            .await
            .map_err(error::ch)?;
        row.map(|r| UsageRecord::from_storage_bytes(&r.record).map_err(SinkError::from))
            .transpose()
    }
}

/// The storage form of a record, borrowed from the response.
#[derive(Row, Deserialize)]
struct StoredRecord<'a> {
    #[serde(borrow)]
    record: &'a [u8],
}

/// The storage form of a record.
#[derive(Row, Deserialize)]
struct StoredRecordOwned {
    #[serde(with = "bytes_buf")]
    record: Vec<u8>,
}

mod bytes_buf {
    use serde::de::{Deserializer, Error, Visitor};

    pub(super) fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<u8>, D::Error> {
        struct Bytes;
        impl Visitor<'_> for Bytes {
            type Value = Vec<u8>;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("bytes")
            }
            fn visit_bytes<E: Error>(self, v: &[u8]) -> Result<Vec<u8>, E> {
                Ok(v.to_vec())
            }
            fn visit_byte_buf<E: Error>(self, v: Vec<u8>) -> Result<Vec<u8>, E> {
                Ok(v)
            }
        }
        d.deserialize_byte_buf(Bytes)
    }
}

/// The scope and every filter of `query` (its cursor, order and limit aside):
/// what the page and the summary share.
pub(super) fn filter(s: &mut Statement, query: &UsageQuery) {
    scope(s, &query.consumer);
    if let Some(since) = query.since_ms() {
        let p = s.bind(Arg::Int(since));
        s.and(format!("created_at_ms >= {p}"));
    }
    if let Some(until) = query.until_ms() {
        let p = s.bind(Arg::Int(until));
        s.and(format!("created_at_ms < {p}"));
    }
    if let Some(method) = &query.method {
        let p = s.bind(Arg::Str(method.clone()));
        s.and(format!("method = {p}"));
    }
    match &query.path {
        None => {}
        Some(PathFilter::Exact(path)) => {
            let p = s.bind(Arg::Str(path.clone()));
            s.and(format!("path = {p}"));
        }
        // Bytes, not `LIKE`: `%` and `_` are plain characters.
        Some(PathFilter::Prefix(prefix)) => {
            let n = i64::try_from(prefix.len()).unwrap_or(i64::MAX);
            let len = s.bind(Arg::Int(n));
            let p = s.bind(Arg::Str(prefix.clone()));
            s.and(format!("substring(path, 1, {len}) = {p}"));
        }
    }
    if let Some(status) = query.status {
        let (lo, hi) = status.range();
        let lo = s.bind(Arg::Int(lo.into()));
        let hi = s.bind(Arg::Int(hi.into()));
        s.and(format!("status BETWEEN {lo} AND {hi}"));
    }
    if let Some(route) = &query.route {
        let p = s.bind(Arg::Str(route.clone()));
        s.and(format!("route = {p}"));
    }
    if let Some(outcome) = query.outcome {
        let p = s.bind(Arg::Str(outcome.as_str().to_owned()));
        s.and(format!("outcome = {p}"));
    }
    match query.trace_id.as_deref() {
        None => {}
        // Records without a trace store '' and never match.
        Some("") => s.and("0".to_owned()),
        Some(trace_id) => {
            let p = s.bind(Arg::Str(trace_id.to_owned()));
            s.and(format!("trace_id = {p}"));
        }
    }
}

/// The page statement on `s` (a [`ClickHouseSink::read`]).
fn page(mut s: Statement, query: &UsageQuery, after: Option<&Position>) -> Statement {
    filter(&mut s, query);
    let (cmp, dir) = match query.order {
        Order::Asc => (">", "ASC"),
        Order::Desc => ("<", "DESC"),
    };
    if let Some(after) = after {
        // Not a tuple comparison: ClickHouse 18.16 has none.
        let t = s.bind(Arg::Int(after.created_at_ms));
        let t2 = s.bind(Arg::Int(after.created_at_ms));
        let id = s.bind(Arg::Str(after.id.clone()));
        s.and(format!(
            "(created_at_ms {cmp} {t} OR (created_at_ms = {t2} AND id {cmp} {id}))"
        ));
    }
    s.push_where();
    let limit = query.fetch_limit();
    let _ = write!(
        s.sql,
        " ORDER BY created_at_ms {dir}, id {dir} LIMIT {limit}"
    );
    s
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sink::StatusFilter;

    #[test]
    fn the_page_binds_every_filter_and_the_keyset() {
        let q = UsageQuery {
            consumer: ConsumerScope::Consumer("c".into()),
            since: Some(time::macros::datetime!(2024-05-01 09:50:00.0004 UTC)),
            method: Some("GET".into()),
            path: Some(PathFilter::Prefix("/a%_".into())),
            status: Some(StatusFilter::Class(4)),
            trace_id: Some("ab".into()),
            order: Order::Desc,
            limit: 10,
            ..UsageQuery::default()
        };
        let after = Position {
            created_at_ms: 7,
            id: "01X".into(),
        };
        let s = page(Statement::default(), &q, Some(&after));
        assert_eq!(
            s.sql,
            " WHERE anonymous = 0 AND consumer = ? AND created_at_ms >= ? AND method = ? \
             AND substring(path, 1, ?) = ? AND status BETWEEN ? AND ? AND trace_id = ? \
             AND (created_at_ms < ? OR (created_at_ms = ? AND id < ?)) \
             ORDER BY created_at_ms DESC, id DESC LIMIT 11"
        );
        assert_eq!(
            s.args,
            [
                Arg::Str("c".into()),
                Arg::Int(1_714_557_000_001),
                Arg::Str("GET".into()),
                Arg::Int(4),
                Arg::Str("/a%_".into()),
                Arg::Int(400),
                Arg::Int(499),
                Arg::Str("ab".into()),
                Arg::Int(7),
                Arg::Int(7),
                Arg::Str("01X".into()),
            ]
        );
    }

    #[test]
    fn anonymous_is_its_own_flag() {
        let q = UsageQuery {
            consumer: ConsumerScope::Anonymous,
            ..UsageQuery::default()
        };
        let s = page(Statement::default(), &q, None);
        assert!(s
            .sql
            .starts_with(" WHERE anonymous = 1 ORDER BY created_at_ms ASC"));
    }
}
