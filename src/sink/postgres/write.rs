//! Writing a batch: one `INSERT ... SELECT * FROM UNNEST(...) ON CONFLICT (id) DO
//! NOTHING`, one array parameter per column.

use std::borrow::Cow;

use serde_json::Value;
use time::OffsetDateTime;
use tokio_postgres::types::ToSql;

use super::error;
use super::names::Names;
use crate::codec::headers;
use crate::record::truncate_to_millis;
use crate::sink::sql::params;
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

/// The batch as one array per column, in [`COLUMNS`](super::names::COLUMNS)
/// order, for `UNNEST`.
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
    fn new(batch: &'a [UsageRecord]) -> Result<Self, SinkError> {
        let mut c = Columns::with_capacity(batch.len());
        for r in batch {
            c.id.push(text(&r.id));
            c.consumer.push(r.consumer.as_deref().map(text));
            c.created_at.push(truncate_to_millis(r.created_at));
            c.method.push(text(&r.method));
            c.path.push(text(&r.path));
            c.route.push(r.route.as_deref().map(text));
            c.status.push(i32::from(r.status));
            c.duration_us.push(int8(r.duration_us));
            c.outcome.push(r.outcome.as_str());
            c.query.push(text(&r.request.query));
            c.params.push(json(params::to_json(&r.request.params)));
            c.req_headers
                .push(json(headers::to_json(&r.request.headers)));
            c.resp_headers
                .push(json(headers::to_json(&r.response_headers)));
            c.req_body.push(&r.request.body.bytes);
            c.req_body_size.push(int8(r.request.body.size));
            c.req_body_truncated.push(r.request.body.truncated);
            c.resp_body.push(&r.response.bytes);
            c.resp_body_size.push(int8(r.response.size));
            c.resp_body_truncated.push(r.response.truncated);
            c.grpc.push(match &r.grpc {
                Some(g) => Some(json(serde_json::to_value(g).map_err(|e| {
                    SinkError::new(e)
                        .permanent()
                        .with_context("encoding the gRPC column")
                })?)),
                None => None,
            });
        }
        Ok(c)
    }

    fn with_capacity(n: usize) -> Self {
        Self {
            id: Vec::with_capacity(n),
            consumer: Vec::with_capacity(n),
            created_at: Vec::with_capacity(n),
            method: Vec::with_capacity(n),
            path: Vec::with_capacity(n),
            route: Vec::with_capacity(n),
            status: Vec::with_capacity(n),
            duration_us: Vec::with_capacity(n),
            outcome: Vec::with_capacity(n),
            query: Vec::with_capacity(n),
            params: Vec::with_capacity(n),
            req_headers: Vec::with_capacity(n),
            resp_headers: Vec::with_capacity(n),
            req_body: Vec::with_capacity(n),
            req_body_size: Vec::with_capacity(n),
            req_body_truncated: Vec::with_capacity(n),
            resp_body: Vec::with_capacity(n),
            resp_body_size: Vec::with_capacity(n),
            resp_body_truncated: Vec::with_capacity(n),
            grpc: Vec::with_capacity(n),
        }
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
pub(super) async fn insert(
    client: &deadpool_postgres::Client,
    names: &Names,
    batch: &[UsageRecord],
) -> Result<u64, SinkError> {
    let columns = Columns::new(batch)?;
    let stmt = client
        .prepare_cached(&names.insert_unnest)
        .await
        .map_err(error::pg)?;
    client
        .execute(&stmt, &columns.values())
        .await
        .map_err(error::pg)
}
