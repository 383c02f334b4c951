//! Writing a batch: one `INSERT ... SELECT * FROM UNNEST(...)` or a binary `COPY`
//! into a staging table; both skip ids already stored.

use std::borrow::Cow;

use serde_json::Value;
use time::OffsetDateTime;
use tokio_postgres::binary_copy::BinaryCopyInWriter;
use tokio_postgres::types::{ToSql, Type};

use super::error;
use super::names::{Names, COLUMNS};
use crate::record::truncate_to_millis;
use crate::sink::codec::{headers_to_json, params_to_json};
use crate::{SinkError, UsageRecord};

/// PostgreSQL cannot store U+0000 in `text` or `jsonb`. A percent-decoded route
/// param or gRPC message may hold one; it is stored as U+FFFD rather than failing
/// the whole batch.
pub(super) fn text(s: &str) -> Cow<'_, str> {
    if s.contains('\0') {
        Cow::Owned(s.replace('\0', "\u{FFFD}"))
    } else {
        Cow::Borrowed(s)
    }
}

/// [`text`] for every string in a JSON document.
fn scrub_json(value: &mut Value) {
    match value {
        Value::String(s) if s.contains('\0') => *s = s.replace('\0', "\u{FFFD}"),
        Value::Array(items) => items.iter_mut().for_each(scrub_json),
        Value::Object(map) => {
            let dirty = map.keys().any(|k| k.contains('\0'));
            if dirty {
                *map = std::mem::take(map)
                    .into_iter()
                    .map(|(k, v)| (text(&k).into_owned(), v))
                    .collect();
            }
            map.values_mut().for_each(scrub_json);
        }
        _ => {}
    }
}

fn json(mut value: Value) -> Value {
    scrub_json(&mut value);
    value
}

fn int8(n: u64) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}

/// One record as column values, in [`COLUMNS`] order.
struct Row<'a> {
    id: Cow<'a, str>,
    consumer: Option<Cow<'a, str>>,
    created_at: OffsetDateTime,
    method: Cow<'a, str>,
    path: Cow<'a, str>,
    route: Option<Cow<'a, str>>,
    status: i32,
    duration_us: i64,
    outcome: &'static str,
    query: Cow<'a, str>,
    params: Value,
    req_headers: Value,
    resp_headers: Value,
    req_body: &'a [u8],
    req_body_size: i64,
    req_body_truncated: bool,
    resp_body: &'a [u8],
    resp_body_size: i64,
    resp_body_truncated: bool,
    grpc: Option<Value>,
}

impl<'a> Row<'a> {
    fn new(r: &'a UsageRecord) -> Result<Self, SinkError> {
        let grpc = match &r.grpc {
            Some(g) => Some(json(serde_json::to_value(g).map_err(|e| {
                SinkError::new(e)
                    .permanent()
                    .with_context("encoding the gRPC column")
            })?)),
            None => None,
        };
        Ok(Self {
            id: text(&r.id),
            consumer: r.consumer.as_deref().map(text),
            created_at: truncate_to_millis(r.created_at),
            method: text(&r.method),
            path: text(&r.path),
            route: r.route.as_deref().map(text),
            status: i32::from(r.status),
            duration_us: int8(r.duration_us),
            outcome: r.outcome.as_str(),
            query: text(&r.request.query),
            params: json(params_to_json(&r.request.params)),
            req_headers: json(headers_to_json(&r.request.headers)),
            resp_headers: json(headers_to_json(&r.response_headers)),
            req_body: &r.request.body.bytes,
            req_body_size: int8(r.request.body.size),
            req_body_truncated: r.request.body.truncated,
            resp_body: &r.response.bytes,
            resp_body_size: int8(r.response.size),
            resp_body_truncated: r.response.truncated,
            grpc,
        })
    }

    fn values(&self) -> [&(dyn ToSql + Sync); 20] {
        [
            &self.id,
            &self.consumer,
            &self.created_at,
            &self.method,
            &self.path,
            &self.route,
            &self.status,
            &self.duration_us,
            &self.outcome,
            &self.query,
            &self.params,
            &self.req_headers,
            &self.resp_headers,
            &self.req_body,
            &self.req_body_size,
            &self.req_body_truncated,
            &self.resp_body,
            &self.resp_body_size,
            &self.resp_body_truncated,
            &self.grpc,
        ]
    }
}

fn rows(batch: &[UsageRecord]) -> Result<Vec<Row<'_>>, SinkError> {
    batch.iter().map(Row::new).collect()
}

/// The batch as one array per column, for `UNNEST`.
#[derive(Default)]
struct Columns<'a> {
    id: Vec<Cow<'a, str>>,
    consumer: Vec<Option<Cow<'a, str>>>,
    created_at: Vec<OffsetDateTime>,
    method: Vec<Cow<'a, str>>,
    path: Vec<Cow<'a, str>>,
    route: Vec<Option<Cow<'a, str>>>,
    status: Vec<i32>,
    duration_us: Vec<i64>,
    outcome: Vec<&'static str>,
    query: Vec<Cow<'a, str>>,
    params: Vec<Value>,
    req_headers: Vec<Value>,
    resp_headers: Vec<Value>,
    req_body: Vec<&'a [u8]>,
    req_body_size: Vec<i64>,
    req_body_truncated: Vec<bool>,
    resp_body: Vec<&'a [u8]>,
    resp_body_size: Vec<i64>,
    resp_body_truncated: Vec<bool>,
    grpc: Vec<Option<Value>>,
}

impl<'a> Columns<'a> {
    fn new(rows: Vec<Row<'a>>) -> Self {
        let mut c = Columns::default();
        for r in rows {
            c.id.push(r.id);
            c.consumer.push(r.consumer);
            c.created_at.push(r.created_at);
            c.method.push(r.method);
            c.path.push(r.path);
            c.route.push(r.route);
            c.status.push(r.status);
            c.duration_us.push(r.duration_us);
            c.outcome.push(r.outcome);
            c.query.push(r.query);
            c.params.push(r.params);
            c.req_headers.push(r.req_headers);
            c.resp_headers.push(r.resp_headers);
            c.req_body.push(r.req_body);
            c.req_body_size.push(r.req_body_size);
            c.req_body_truncated.push(r.req_body_truncated);
            c.resp_body.push(r.resp_body);
            c.resp_body_size.push(r.resp_body_size);
            c.resp_body_truncated.push(r.resp_body_truncated);
            c.grpc.push(r.grpc);
        }
        c
    }

    fn values(&self) -> [&(dyn ToSql + Sync); 20] {
        [
            &self.id,
            &self.consumer,
            &self.created_at,
            &self.method,
            &self.path,
            &self.route,
            &self.status,
            &self.duration_us,
            &self.outcome,
            &self.query,
            &self.params,
            &self.req_headers,
            &self.resp_headers,
            &self.req_body,
            &self.req_body_size,
            &self.req_body_truncated,
            &self.resp_body,
            &self.resp_body_size,
            &self.resp_body_truncated,
            &self.grpc,
        ]
    }
}

/// Inserts the batch with one statement; ids already stored are skipped.
/// Returns how many rows were new.
pub(super) async fn insert_unnest(
    client: &deadpool_postgres::Client,
    names: &Names,
    batch: &[UsageRecord],
) -> Result<u64, SinkError> {
    let columns = Columns::new(rows(batch)?);
    let stmt = client
        .prepare_cached(&names.insert_unnest)
        .await
        .map_err(error::pg)?;
    client
        .execute(&stmt, &columns.values())
        .await
        .map_err(error::pg)
}

/// The column types of a row, for the binary `COPY`.
const TYPES: [Type; 20] = [
    Type::TEXT,
    Type::TEXT,
    Type::TIMESTAMPTZ,
    Type::TEXT,
    Type::TEXT,
    Type::TEXT,
    Type::INT4,
    Type::INT8,
    Type::TEXT,
    Type::TEXT,
    Type::JSONB,
    Type::JSONB,
    Type::JSONB,
    Type::BYTEA,
    Type::INT8,
    Type::BOOL,
    Type::BYTEA,
    Type::INT8,
    Type::BOOL,
    Type::JSONB,
];

/// The per-connection staging table `COPY` writes into. It has the table's columns
/// and no constraints; `ON COMMIT DELETE ROWS` empties it after each batch.
const STAGE: &str = "tower_usage_stage_v1";

/// Copies the batch into a temporary staging table, then moves it into the table
/// with `INSERT ... SELECT ... ON CONFLICT (id) DO NOTHING` (`COPY` itself cannot
/// skip duplicates). Returns how many rows were new.
pub(super) async fn insert_copy(
    client: &mut deadpool_postgres::Client,
    names: &Names,
    batch: &[UsageRecord],
) -> Result<u64, SinkError> {
    let rows = rows(batch)?;
    let tx = client.transaction().await.map_err(error::pg)?;
    tx.batch_execute(&format!(
        "CREATE TEMP TABLE IF NOT EXISTS {STAGE} \
         (LIKE {} INCLUDING DEFAULTS) ON COMMIT DELETE ROWS",
        names.qualified
    ))
    .await
    .map_err(error::pg)?;
    let copy = tx
        .prepare_cached(&format!(
            "COPY pg_temp.{STAGE} ({COLUMNS}) FROM STDIN (FORMAT binary)"
        ))
        .await
        .map_err(error::pg)?;
    let sink = tx.copy_in(&copy).await.map_err(error::pg)?;
    let mut writer = std::pin::pin!(BinaryCopyInWriter::new(sink, &TYPES));
    for row in &rows {
        writer
            .as_mut()
            .write(&row.values())
            .await
            .map_err(error::pg)?;
    }
    writer.finish().await.map_err(error::pg)?;
    let moved = tx
        .prepare_cached(&format!(
            "INSERT INTO {} ({COLUMNS}) SELECT {COLUMNS} FROM pg_temp.{STAGE} \
             ON CONFLICT (id) DO NOTHING",
            names.qualified
        ))
        .await
        .map_err(error::pg)?;
    let n = tx.execute(&moved, &[]).await.map_err(error::pg)?;
    tx.commit().await.map_err(error::pg)?;
    Ok(n)
}
