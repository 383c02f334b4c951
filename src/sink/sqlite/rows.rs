//! Rows: a record in and out of its columns, and the page query.

use std::fmt::Write as _;

use bytes::Bytes;
use rusqlite::types::Value;
use rusqlite::{params, params_from_iter, Connection, Row};

use super::schema::context;
use crate::codec::headers;
use crate::record::{ceil_millis, from_unix_millis, unix_millis};
use crate::sink::sql::params;
use crate::sink::{ConsumerScope, Order, PathFilter, Position, UsageQuery};
use crate::{
    CapturedBody, GrpcCall, Outcome, RecordedRequest, SinkError, SinkErrorKind, UsageRecord,
};

/// The columns, in the order [`insert`] binds and [`decode`] reads them.
macro_rules! columns {
    () => {
        "id, consumer, created_at, method, path, route, status, duration_us, outcome, \
         query, params, req_headers, resp_headers, \
         req_body, req_body_size, req_body_truncated, \
         resp_body, resp_body_size, resp_body_truncated, grpc"
    };
}

const INSERT: &str = concat!(
    "INSERT OR IGNORE INTO usage_records (",
    columns!(),
    ") VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, \
     ?11, ?12, ?13, ?14, ?15, ?16, ?17, ?18, ?19, ?20)"
);

const SELECT: &str = concat!("SELECT ", columns!(), " FROM usage_records WHERE 1 = 1");

/// Inserts a batch on `conn` (inside the caller's transaction) with the cached
/// insert statement; an `id` already stored is skipped. Returns how many rows
/// were added.
pub(super) fn insert(
    conn: &Connection,
    label: &str,
    batch: &[UsageRecord],
) -> Result<u64, SinkError> {
    let ctx = context(label);
    let mut stmt = conn.prepare_cached(INSERT).map_err(&ctx)?;
    let mut added = 0u64;
    for r in batch {
        let encode_err = |what: &str, err: serde_json::Error| {
            SinkError::with_kind(SinkErrorKind::Other, err)
                .permanent()
                .with_context(format_args!(
                    "sqlite database {label}: encoding {what} of record {}",
                    r.id
                ))
        };
        let params_json = serde_json::to_string(&params::to_json(&r.request.params))
            .map_err(|e| encode_err("params", e))?;
        let req_headers = serde_json::to_string(&headers::to_json(&r.request.headers))
            .map_err(|e| encode_err("request headers", e))?;
        let resp_headers = serde_json::to_string(&headers::to_json(&r.response_headers))
            .map_err(|e| encode_err("response headers", e))?;
        let grpc = r
            .grpc
            .as_ref()
            .map(serde_json::to_string)
            .transpose()
            .map_err(|e| encode_err("grpc", e))?;
        let n = stmt
            .execute(params![
                r.id,
                r.consumer,
                unix_millis(r.created_at),
                r.method,
                r.path,
                r.route,
                r.status,
                saturating_i64(r.duration_us),
                r.outcome.as_str(),
                r.request.query,
                params_json,
                req_headers,
                resp_headers,
                &r.request.body.bytes[..],
                saturating_i64(r.request.body.size),
                r.request.body.truncated,
                &r.response.bytes[..],
                saturating_i64(r.response.size),
                r.response.truncated,
                grpc,
            ])
            .map_err(|err| {
                super::schema::sql_error(err).with_context(format_args!(
                    "sqlite database {label}: inserting record {}",
                    r.id
                ))
            })?;
        added += n as u64;
    }
    Ok(added)
}

fn saturating_i64(n: u64) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}

/// Runs the page query: at most `query.limit + 1` matching records after `after`,
/// in the query's order, for [`UsagePage::from_sorted`](crate::UsagePage::from_sorted).
pub(super) fn select(
    conn: &Connection,
    label: &str,
    query: &UsageQuery,
    after: Option<&Position>,
) -> Result<Vec<UsageRecord>, SinkError> {
    let ctx = context(label);
    let mut sql = String::from(SELECT);
    let mut args: Vec<Value> = Vec::new();
    match &query.consumer {
        ConsumerScope::All => {}
        ConsumerScope::Consumer(c) => {
            sql.push_str(" AND consumer = ?");
            args.push(Value::Text(c.clone()));
        }
        ConsumerScope::Anonymous => sql.push_str(" AND consumer IS NULL"),
    }
    if let Some(since) = query.since {
        sql.push_str(" AND created_at >= ?");
        args.push(Value::Integer(ceil_millis(since)));
    }
    if let Some(until) = query.until {
        sql.push_str(" AND created_at < ?");
        args.push(Value::Integer(ceil_millis(until)));
    }
    if let Some(method) = &query.method {
        sql.push_str(" AND method = ?");
        args.push(Value::Text(method.clone()));
    }
    match &query.path {
        None => {}
        Some(PathFilter::Exact(p)) => {
            sql.push_str(" AND path = ?");
            args.push(Value::Text(p.clone()));
        }
        Some(PathFilter::Prefix(p)) => {
            // Not LIKE: `%` and `_` in the prefix are literal characters.
            let _ = write!(
                sql,
                " AND substr(path, 1, length(?{n})) = ?{n}",
                n = args.len() + 1
            );
            args.push(Value::Text(p.clone()));
        }
    }
    if let Some(status) = query.status {
        let (lo, hi) = status.range();
        sql.push_str(" AND status BETWEEN ? AND ?");
        args.push(Value::Integer(lo.into()));
        args.push(Value::Integer(hi.into()));
    }
    let dir = match query.order {
        Order::Asc => "ASC",
        Order::Desc => "DESC",
    };
    if let Some(pos) = after {
        let cmp = match query.order {
            Order::Asc => ">",
            Order::Desc => "<",
        };
        let _ = write!(sql, " AND (created_at, id) {cmp} (?, ?)");
        args.push(Value::Integer(pos.created_at_ms));
        args.push(Value::Text(pos.id.clone()));
    }
    let _ = write!(sql, " ORDER BY created_at {dir}, id {dir} LIMIT ?");
    let fetch = query.fetch_limit();
    args.push(Value::Integer(i64::try_from(fetch).unwrap_or(i64::MAX)));

    let mut stmt = conn.prepare_cached(&sql).map_err(&ctx)?;
    let mut rows = stmt.query(params_from_iter(args)).map_err(&ctx)?;
    let mut out = Vec::with_capacity(fetch.min(1024));
    while let Some(row) = rows.next().map_err(&ctx)? {
        out.push(decode(row, label)?);
    }
    Ok(out)
}

/// Reads a row written by [`insert`] back into a record.
fn decode(row: &Row<'_>, label: &str) -> Result<UsageRecord, SinkError> {
    let corrupt = |what: &str| {
        SinkError::message(
            SinkErrorKind::Corrupt,
            format!("sqlite database {label}: stored record has a bad {what}"),
        )
    };
    macro_rules! col {
        ($i:expr, $name:expr) => {
            row.get($i).map_err(|err| {
                SinkError::with_kind(SinkErrorKind::Corrupt, err)
                    .with_context(format_args!("sqlite database {label}: column {}", $name))
            })?
        };
    }
    let id: String = col!(0, "id");
    let with_id = |e: SinkError| e.with_context(format_args!("record {id}"));
    let created_at_ms: i64 = col!(2, "created_at");
    let status: i64 = col!(6, "status");
    let duration_us: i64 = col!(7, "duration_us");
    let outcome: String = col!(8, "outcome");
    let params_text: String = col!(10, "params");
    let req_headers_text: String = col!(11, "req_headers");
    let resp_headers_text: String = col!(12, "resp_headers");
    let req_body: Vec<u8> = col!(13, "req_body");
    let req_body_size: i64 = col!(14, "req_body_size");
    let resp_body: Vec<u8> = col!(16, "resp_body");
    let resp_body_size: i64 = col!(17, "resp_body_size");
    let grpc_text: Option<String> = col!(19, "grpc");

    let json = |text: &str, what: &str| {
        serde_json::from_str::<serde_json::Value>(text).map_err(|_| with_id(corrupt(what)))
    };
    let params = params::from_json(&json(&params_text, "params")?)
        .map_err(|e| with_id(e.with_context(format_args!("sqlite database {label}"))))?;
    let headers = headers::from_json(&json(&req_headers_text, "req_headers")?)
        .map_err(|e| with_id(e.with_context(format_args!("sqlite database {label}"))))?;
    let response_headers = headers::from_json(&json(&resp_headers_text, "resp_headers")?)
        .map_err(|e| with_id(e.with_context(format_args!("sqlite database {label}"))))?;
    let grpc = grpc_text
        .map(|t| serde_json::from_str::<GrpcCall>(&t))
        .transpose()
        .map_err(|_| with_id(corrupt("grpc")))?;
    let size = |n: i64, what: &str| u64::try_from(n).map_err(|_| with_id(corrupt(what)));

    Ok(UsageRecord {
        consumer: col!(1, "consumer"),
        created_at: from_unix_millis(created_at_ms)
            .ok_or_else(|| with_id(corrupt("created_at")))?,
        method: col!(3, "method"),
        path: col!(4, "path"),
        route: col!(5, "route"),
        status: u16::try_from(status).map_err(|_| with_id(corrupt("status")))?,
        duration_us: size(duration_us, "duration_us")?,
        outcome: Outcome::from_name(&outcome).ok_or_else(|| with_id(corrupt("outcome")))?,
        request: RecordedRequest {
            body: CapturedBody {
                bytes: Bytes::from(req_body),
                size: size(req_body_size, "req_body_size")?,
                truncated: col!(15, "req_body_truncated"),
            },
            query: col!(9, "query"),
            params,
            headers,
        },
        response: CapturedBody {
            bytes: Bytes::from(resp_body),
            size: size(resp_body_size, "resp_body_size")?,
            truncated: col!(18, "resp_body_truncated"),
        },
        response_headers,
        grpc,
        id,
    })
}
