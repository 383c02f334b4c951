//! The shared SQL values and rows in SQLite's types: a timestamp is `INTEGER`
//! milliseconds since the Unix epoch, a boolean `INTEGER` 0/1, a JSON document
//! `TEXT`.

use rusqlite::types::{FromSql, ToSqlOutput, Value as Sqlite, ValueRef};
use rusqlite::{Row, ToSql};
use serde_json::Value as Json;
use time::OffsetDateTime;

use crate::record::{ceil_millis, from_unix_millis};
use crate::sink::sql::{bad, Col, ReadColumns, Value};
use crate::{SinkError, SinkErrorKind};

impl ToSql for Value<'_> {
    fn to_sql(&self) -> rusqlite::Result<ToSqlOutput<'_>> {
        Ok(match self {
            Value::Text(Some(s)) => ToSqlOutput::Borrowed(ValueRef::Text(s.as_bytes())),
            Value::Text(None) | Value::Json(None) => ToSqlOutput::Owned(Sqlite::Null),
            // On a whole millisecond, so `ceil_millis` is its milliseconds.
            Value::Time(t) => ToSqlOutput::Owned(Sqlite::Integer(ceil_millis(*t))),
            Value::Int4(n) => ToSqlOutput::Owned(Sqlite::Integer(i64::from(*n))),
            Value::Int8(n) => ToSqlOutput::Owned(Sqlite::Integer(*n)),
            Value::Bool(b) => ToSqlOutput::Owned(Sqlite::Integer(i64::from(*b))),
            Value::Bytes(b) => ToSqlOutput::Borrowed(ValueRef::Blob(b)),
            Value::Json(Some(doc)) => ToSqlOutput::Owned(Sqlite::Text(doc.to_string())),
        })
    }
}

fn get<T: FromSql>(row: &Row<'_>, col: Col) -> Result<T, SinkError> {
    row.get(col.index()).map_err(|err| {
        SinkError::with_kind(SinkErrorKind::Corrupt, err)
            .with_context(format_args!("column {}", col.name()))
    })
}

impl ReadColumns for Row<'_> {
    fn text(&self, col: Col) -> Result<String, SinkError> {
        get(self, col)
    }

    fn opt_text(&self, col: Col) -> Result<Option<String>, SinkError> {
        get(self, col)
    }

    fn time(&self, col: Col) -> Result<OffsetDateTime, SinkError> {
        let ms: i64 = get(self, col)?;
        from_unix_millis(ms).ok_or_else(|| bad(col, format_args!("{ms} ms is out of range")))
    }

    fn int(&self, col: Col) -> Result<i64, SinkError> {
        get(self, col)
    }

    fn bool(&self, col: Col) -> Result<bool, SinkError> {
        get(self, col)
    }

    fn bytes(&self, col: Col) -> Result<Vec<u8>, SinkError> {
        get(self, col)
    }

    fn opt_json(&self, col: Col) -> Result<Option<Json>, SinkError> {
        let text: Option<String> = get(self, col)?;
        text.map(|t| serde_json::from_str(&t).map_err(|e| bad(col, e)))
            .transpose()
    }
}
