//! The shared SQL values and rows in PostgreSQL's types: a timestamp is
//! `timestamptz`, a JSON document `jsonb`; text has no U+0000.

use std::borrow::Cow;
use std::error::Error as StdError;

use bytes::BytesMut;
use serde_json::Value as Json;
use time::OffsetDateTime;
use tokio_postgres::types::{to_sql_checked, IsNull, ToSql, Type};
use tokio_postgres::Row;

use super::error;
use crate::record::truncate_to_millis;
use crate::sink::sql::{Col, Kind, ReadColumns, Value};
use crate::SinkError;

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
fn scrub_json(value: &mut Json) {
    match value {
        Json::String(s) if s.contains('\0') => *s = s.replace('\0', "\u{FFFD}"),
        Json::Array(items) => items.iter_mut().for_each(scrub_json),
        Json::Object(map) => {
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

/// [`scrub_json`], by value.
pub(super) fn json(mut value: Json) -> Json {
    scrub_json(&mut value);
    value
}

/// The SQL type of a column of `kind`.
pub(super) fn sql_type(kind: Kind) -> &'static str {
    match kind {
        Kind::Text { .. } => "text",
        Kind::Time => "timestamptz",
        Kind::Int4 => "int4",
        Kind::Int8 => "int8",
        Kind::Bool => "bool",
        Kind::Bytes => "bytea",
        Kind::Json { .. } => "jsonb",
    }
}

/// Each variant as its Rust type would be, type-checked against the
/// parameter's.
impl ToSql for Value<'_> {
    fn to_sql(
        &self,
        ty: &Type,
        out: &mut BytesMut,
    ) -> Result<IsNull, Box<dyn StdError + Sync + Send>> {
        match self {
            Value::Text(s) => s.map(text).to_sql_checked(ty, out),
            Value::Time(t) => t.to_sql_checked(ty, out),
            Value::Int4(n) => n.to_sql_checked(ty, out),
            Value::Int8(n) => n.to_sql_checked(ty, out),
            Value::Bool(b) => b.to_sql_checked(ty, out),
            Value::Bytes(b) => b.to_sql_checked(ty, out),
            Value::Json(doc) => doc.clone().map(json).to_sql_checked(ty, out),
        }
    }

    /// Any type: [`to_sql`](Self::to_sql) checks the variant's.
    fn accepts(_: &Type) -> bool {
        true
    }

    to_sql_checked!();
}

fn get<'a, T: tokio_postgres::types::FromSql<'a>>(row: &'a Row, col: Col) -> Result<T, SinkError> {
    row.try_get(col.index())
        .map_err(|err| error::column(err).with_context(format_args!("column {}", col.name())))
}

impl ReadColumns for Row {
    fn text(&self, col: Col) -> Result<String, SinkError> {
        get(self, col)
    }

    fn opt_text(&self, col: Col) -> Result<Option<String>, SinkError> {
        get(self, col)
    }

    /// `timestamptz` keeps microseconds; a record's `created_at` has
    /// milliseconds.
    fn time(&self, col: Col) -> Result<OffsetDateTime, SinkError> {
        get(self, col).map(truncate_to_millis)
    }

    fn int(&self, col: Col) -> Result<i64, SinkError> {
        match col.kind() {
            Kind::Int4 => get::<i32>(self, col).map(i64::from),
            _ => get(self, col),
        }
    }

    fn bool(&self, col: Col) -> Result<bool, SinkError> {
        get(self, col)
    }

    fn bytes(&self, col: Col) -> Result<Vec<u8>, SinkError> {
        get(self, col)
    }

    fn opt_json(&self, col: Col) -> Result<Option<Json>, SinkError> {
        get(self, col)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nul_characters_become_replacement_characters() {
        assert!(matches!(text("plain"), Cow::Borrowed("plain")));
        assert_eq!(text("a\0b"), "a\u{FFFD}b");
        let doc = json(serde_json::json!({"k\0": ["v\0", 1, {"x": "\0"}]}));
        assert_eq!(
            doc,
            serde_json::json!({"k\u{FFFD}": ["v\u{FFFD}", 1, {"x": "\u{FFFD}"}]})
        );
    }
}
