//! Reading a page: one keyset query whose every value is a bind parameter.

use bytes::Bytes;
use serde_json::Value;
use time::OffsetDateTime;
use tokio_postgres::types::ToSql;
use tokio_postgres::Row;

use super::error;
use super::names::Names;
use super::write::text;
use crate::codec::headers;
use crate::sink::sql::params as route_params;
use crate::sink::{ConsumerScope, Order, PathFilter, UsagePage, UsageQuery};
use crate::{record::truncate_to_millis, UsageRecord};
use crate::{CapturedBody, GrpcCall, Outcome, RecordedRequest, SinkError, SinkErrorKind};

/// A statement under construction: SQL text and the values bound to it.
pub(super) struct Select {
    sql: String,
    params: Vec<Box<dyn ToSql + Sync + Send>>,
}

impl Select {
    /// Binds `value` and returns its placeholder (`$n`).
    fn bind(&mut self, value: impl ToSql + Sync + Send + 'static) -> String {
        self.params.push(Box::new(value));
        format!("${}", self.params.len())
    }

    fn and(&mut self, condition: &str) {
        self.sql.push_str(" AND ");
        self.sql.push_str(condition);
    }
}

/// Builds the page query: scope, filters, the cursor's keyset condition, the
/// order, and `LIMIT limit + 1` (one more than the page, to know whether a next
/// page exists).
pub(super) fn build(names: &Names, query: &UsageQuery) -> Result<Select, SinkError> {
    let after = query.position()?;
    let mut s = Select {
        sql: format!("{} WHERE TRUE", names.select),
        params: Vec::new(),
    };
    match &query.consumer {
        ConsumerScope::All => {}
        ConsumerScope::Consumer(c) => {
            let p = s.bind(text(c).into_owned());
            s.and(&format!("consumer = {p}"));
        }
        ConsumerScope::Anonymous => s.and("consumer IS NULL"),
    }
    // Records are kept to the millisecond, timestamptz to the microsecond:
    // bounds are rounded up to a millisecond, not down to a microsecond.
    if let Some(since) = query.since {
        let p = s.bind(crate::record::ceil_to_millis(since));
        s.and(&format!("created_at >= {p}"));
    }
    if let Some(until) = query.until {
        let p = s.bind(crate::record::ceil_to_millis(until));
        s.and(&format!("created_at < {p}"));
    }
    if let Some(method) = &query.method {
        let p = s.bind(text(method).into_owned());
        s.and(&format!("method = {p}"));
    }
    match &query.path {
        None => {}
        Some(PathFilter::Exact(path)) => {
            let p = s.bind(text(path).into_owned());
            s.and(&format!("path = {p}"));
        }
        // Not LIKE: `%` and `_` in the caller's prefix are literal characters.
        Some(PathFilter::Prefix(prefix)) => {
            let p = s.bind(text(prefix).into_owned());
            s.and(&format!("starts_with(path, {p})"));
        }
    }
    if let Some(status) = query.status {
        let (lo, hi) = status.range();
        let lo = s.bind(i32::from(lo));
        let hi = s.bind(i32::from(hi));
        s.and(&format!("status BETWEEN {lo} AND {hi}"));
    }
    let (cmp, dir) = match query.order {
        Order::Asc => (">", "ASC"),
        Order::Desc => ("<", "DESC"),
    };
    if let Some(after) = after {
        let t = s.bind(after.created_at());
        let id = s.bind(after.id);
        s.and(&format!(
            "(created_at, id) {cmp} ({t}::timestamptz, {id}::text)"
        ));
    }
    let limit = i64::try_from(query.fetch_limit()).unwrap_or(i64::MAX);
    let limit = s.bind(limit);
    s.sql.push_str(&format!(
        " ORDER BY created_at {dir}, id {dir} LIMIT {limit}"
    ));
    Ok(s)
}

/// Runs the page query made by [`build`].
pub(super) async fn page(
    client: &deadpool_postgres::Client,
    select: Select,
    query: &UsageQuery,
) -> Result<UsagePage, SinkError> {
    let stmt = client
        .prepare_cached(&select.sql)
        .await
        .map_err(error::pg)?;
    let params: Vec<&(dyn ToSql + Sync)> = select
        .params
        .iter()
        .map(|p| p.as_ref() as &(dyn ToSql + Sync))
        .collect();
    let rows = client.query(&stmt, &params).await.map_err(error::pg)?;
    let hits = rows
        .iter()
        .map(|row| {
            // Which record could not be read, when its id can be.
            record(row).map_err(|e| match row.try_get::<_, String>(0) {
                Ok(id) => e.with_context(format_args!("record {id}")),
                Err(_) => e,
            })
        })
        .collect::<Result<Vec<_>, _>>()?;
    Ok(UsagePage::from_sorted(query, hits))
}

fn corrupt(what: &str) -> SinkError {
    SinkError::message(SinkErrorKind::Corrupt, format!("stored record: {what}"))
}

fn u64_col(n: i64, what: &str) -> Result<u64, SinkError> {
    u64::try_from(n).map_err(|_| corrupt(&format!("negative {what}")))
}

fn body(bytes: Vec<u8>, size: i64, truncated: bool, what: &str) -> Result<CapturedBody, SinkError> {
    Ok(CapturedBody {
        bytes: Bytes::from(bytes),
        size: u64_col(size, what)?,
        truncated,
    })
}

/// A row, in [`COLUMNS`](super::names::COLUMNS) order, back into a record.
fn record(row: &Row) -> Result<UsageRecord, SinkError> {
    let get_err = error::column;
    let status: i32 = row.try_get(6).map_err(get_err)?;
    let outcome: String = row.try_get(8).map_err(get_err)?;
    let params: Value = row.try_get(10).map_err(get_err)?;
    let req_headers: Value = row.try_get(11).map_err(get_err)?;
    let resp_headers: Value = row.try_get(12).map_err(get_err)?;
    let grpc: Option<Value> = row.try_get(19).map_err(get_err)?;
    let created_at: OffsetDateTime = row.try_get(2).map_err(get_err)?;
    Ok(UsageRecord {
        id: row.try_get(0).map_err(get_err)?,
        consumer: row.try_get(1).map_err(get_err)?,
        created_at: truncate_to_millis(created_at),
        method: row.try_get(3).map_err(get_err)?,
        path: row.try_get(4).map_err(get_err)?,
        route: row.try_get(5).map_err(get_err)?,
        status: u16::try_from(status).map_err(|_| corrupt("status out of range"))?,
        duration_us: u64_col(row.try_get(7).map_err(get_err)?, "duration")?,
        outcome: Outcome::from_name(&outcome)
            .ok_or_else(|| corrupt(&format!("unknown outcome {outcome:?}")))?,
        request: RecordedRequest {
            query: row.try_get(9).map_err(get_err)?,
            params: route_params::from_json(&params)?,
            headers: headers::from_json(&req_headers)?,
            body: body(
                row.try_get(13).map_err(get_err)?,
                row.try_get(14).map_err(get_err)?,
                row.try_get(15).map_err(get_err)?,
                "request body size",
            )?,
        },
        response: body(
            row.try_get(16).map_err(get_err)?,
            row.try_get(17).map_err(get_err)?,
            row.try_get(18).map_err(get_err)?,
            "response body size",
        )?,
        response_headers: headers::from_json(&resp_headers)?,
        grpc: grpc
            .map(serde_json::from_value::<GrpcCall>)
            .transpose()
            .map_err(|e| SinkError::with_kind(SinkErrorKind::Corrupt, e))?,
    })
}
