//! The one column list of the SQL sinks, and a record as the values of a row.

use std::sync::LazyLock;

use time::OffsetDateTime;

use super::params;
use crate::codec::headers;
use crate::record::truncate_to_millis;
use crate::{SinkError, SinkErrorKind, UsageRecord};

/// What a column holds: it decides how each backend stores, binds and reads it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(
    not(feature = "postgres"),
    allow(dead_code, reason = "SQLite has one integer type and no array types")
)]
pub(crate) enum Kind {
    /// Text; `nullable` columns may be `NULL`.
    Text { nullable: bool },
    /// A timestamp to the millisecond: SQLite `INTEGER` milliseconds since the
    /// Unix epoch, PostgreSQL `TIMESTAMPTZ(3)`.
    Time,
    /// A 4-byte integer (PostgreSQL `INTEGER`; SQLite has one integer type).
    Int4,
    /// An 8-byte integer.
    Int8,
    /// SQLite `INTEGER` 0/1, PostgreSQL `BOOLEAN`.
    Bool,
    /// SQLite `BLOB`, PostgreSQL `BYTEA`.
    Bytes,
    /// A JSON document: SQLite `TEXT`, PostgreSQL `JSONB`.
    Json { nullable: bool },
}

macro_rules! columns {
    ($($col:ident $name:literal $kind:expr;)*) => {
        /// A column of the records table. The variants are in the order of
        /// [`Col::ALL`]: the order every statement lists the columns in.
        #[derive(Debug, Clone, Copy, PartialEq, Eq)]
        pub(crate) enum Col {
            $(
                #[doc = concat!("`", $name, "`")]
                $col,
            )*
        }

        impl Col {
            /// Every column, in order.
            pub(crate) const ALL: [Col; [$(Col::$col),*].len()] = [$(Col::$col),*];

            /// The column's name.
            pub(crate) fn name(self) -> &'static str {
                match self {
                    $(Col::$col => $name,)*
                }
            }

            /// What the column holds.
            #[cfg_attr(
                not(feature = "postgres"),
                allow(dead_code, reason = "SQLite has one integer type and no array types")
            )]
            pub(crate) fn kind(self) -> Kind {
                match self {
                    $(Col::$col => $kind,)*
                }
            }
        }
    };
}

const TEXT: Kind = Kind::Text { nullable: false };
const NULL_TEXT: Kind = Kind::Text { nullable: true };
const JSON: Kind = Kind::Json { nullable: false };
const NULL_JSON: Kind = Kind::Json { nullable: true };

columns! {
    Id "id" TEXT;
    Consumer "consumer" NULL_TEXT;
    CreatedAt "created_at" Kind::Time;
    Method "method" TEXT;
    Path "path" TEXT;
    Route "route" NULL_TEXT;
    Status "status" Kind::Int4;
    DurationUs "duration_us" Kind::Int8;
    Outcome "outcome" TEXT;
    Query "query" TEXT;
    Params "params" JSON;
    ReqHeaders "req_headers" JSON;
    RespHeaders "resp_headers" JSON;
    ReqBody "req_body" Kind::Bytes;
    ReqBodySize "req_body_size" Kind::Int8;
    ReqBodyTruncated "req_body_truncated" Kind::Bool;
    RespBody "resp_body" Kind::Bytes;
    RespBodySize "resp_body_size" Kind::Int8;
    RespBodyTruncated "resp_body_truncated" Kind::Bool;
    Grpc "grpc" NULL_JSON;
    Capture "capture" NULL_JSON;
    TraceId "trace_id" NULL_TEXT;
    SpanId "span_id" NULL_TEXT;
}

impl Col {
    /// The column's position in [`Col::ALL`], and in every row read.
    pub(crate) fn index(self) -> usize {
        self as usize
    }
}

/// `id, consumer, created_at, ...`: [`Col::ALL`] for a statement.
pub(crate) static LIST: LazyLock<String> = LazyLock::new(|| {
    Col::ALL
        .iter()
        .map(|c| c.name())
        .collect::<Vec<_>>()
        .join(", ")
});

/// A value bound to a statement: a cell of a row, or a filter's operand.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Value<'a> {
    /// Text, `None` for `NULL`.
    Text(Option<&'a str>),
    /// A timestamp on a whole millisecond.
    Time(OffsetDateTime),
    Int4(i32),
    Int8(i64),
    Bool(bool),
    Bytes(&'a [u8]),
    /// A JSON document, `None` for `NULL`.
    Json(Option<serde_json::Value>),
}

/// The value of `col` for record `r`. Numbers past `i64::MAX` are stored as
/// `i64::MAX`.
pub(crate) fn value(r: &UsageRecord, col: Col) -> Result<Value<'_>, SinkError> {
    let int8 = |n: u64| Value::Int8(i64::try_from(n).unwrap_or(i64::MAX));
    Ok(match col {
        Col::Id => Value::Text(Some(&r.id)),
        Col::Consumer => Value::Text(r.consumer.as_deref()),
        Col::CreatedAt => Value::Time(truncate_to_millis(r.created_at)),
        Col::Method => Value::Text(Some(&r.method)),
        Col::Path => Value::Text(Some(&r.path)),
        Col::Route => Value::Text(r.route.as_deref()),
        Col::Status => Value::Int4(i32::from(r.status)),
        Col::DurationUs => int8(r.duration_us),
        Col::Outcome => Value::Text(Some(r.outcome.as_str())),
        Col::Query => Value::Text(Some(&r.request.query)),
        Col::Params => Value::Json(Some(params::to_json(&r.request.params))),
        Col::ReqHeaders => Value::Json(Some(headers::to_json(&r.request.headers))),
        Col::RespHeaders => Value::Json(Some(headers::to_json(&r.response_headers))),
        Col::ReqBody => Value::Bytes(&r.request.body.bytes),
        Col::ReqBodySize => int8(r.request.body.size),
        Col::ReqBodyTruncated => Value::Bool(r.request.body.truncated),
        Col::RespBody => Value::Bytes(&r.response.bytes),
        Col::RespBodySize => int8(r.response.size),
        Col::RespBodyTruncated => Value::Bool(r.response.truncated),
        Col::Grpc => Value::Json(
            r.grpc
                .as_ref()
                .map(serde_json::to_value)
                .transpose()
                .map_err(|err| {
                    SinkError::with_kind(SinkErrorKind::Other, err)
                        .permanent()
                        .with_context(format_args!("encoding grpc of record {}", r.id))
                })?,
        ),
        // `NULL` for the usual record with nothing to note.
        Col::Capture => Value::Json(if r.capture.is_empty() {
            None
        } else {
            Some(serde_json::to_value(&r.capture).map_err(|err| {
                SinkError::with_kind(SinkErrorKind::Other, err)
                    .permanent()
                    .with_context(format_args!("encoding capture of record {}", r.id))
            })?)
        }),
        Col::TraceId => Value::Text(r.trace.as_ref().map(|t| t.trace_id.as_str())),
        Col::SpanId => Value::Text(r.trace.as_ref().map(|t| t.span_id.as_str())),
    })
}

/// Every value of record `r`, in [`Col::ALL`] order.
pub(crate) fn row(r: &UsageRecord) -> Result<[Value<'_>; Col::ALL.len()], SinkError> {
    let mut values = Col::ALL.map(|_| Value::Text(None));
    for (slot, col) in values.iter_mut().zip(Col::ALL) {
        *slot = value(r, col)?;
    }
    Ok(values)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_list_is_every_column_once_in_order() {
        assert_eq!(
            *LIST,
            "id, consumer, created_at, method, path, route, status, duration_us, outcome, \
             query, params, req_headers, resp_headers, \
             req_body, req_body_size, req_body_truncated, \
             resp_body, resp_body_size, resp_body_truncated, grpc, capture, trace_id, span_id"
        );
        for (i, col) in Col::ALL.iter().enumerate() {
            assert_eq!(col.index(), i);
        }
    }

    #[test]
    fn every_value_has_its_columns_kind() {
        let mut r = UsageRecord {
            route: Some("/r".into()),
            consumer: Some("c".into()),
            grpc: Some(crate::GrpcCall::default()),
            trace: Some(crate::TraceContext {
                trace_id: "4bf92f3577b34da6a3ce929d0e0e4736".into(),
                span_id: "00f067aa0ba902b7".into(),
            }),
            ..UsageRecord::default()
        };
        r.duration_us = u64::MAX;
        for bare in [false, true] {
            let r = if bare {
                UsageRecord::default()
            } else {
                r.clone()
            };
            for (col, value) in Col::ALL.into_iter().zip(row(&r).unwrap()) {
                let ok = match (col.kind(), &value) {
                    (Kind::Text { nullable }, Value::Text(v)) => nullable || v.is_some(),
                    (Kind::Json { nullable }, Value::Json(v)) => nullable || v.is_some(),
                    (Kind::Time, Value::Time(_))
                    | (Kind::Int4, Value::Int4(_))
                    | (Kind::Int8, Value::Int8(_))
                    | (Kind::Bool, Value::Bool(_))
                    | (Kind::Bytes, Value::Bytes(_)) => true,
                    _ => false,
                };
                assert!(ok, "{col:?}: {value:?}");
            }
        }
        assert_eq!(value(&r, Col::DurationUs).unwrap(), Value::Int8(i64::MAX));
    }
}
