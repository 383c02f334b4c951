//! A row of the records table back into a [`UsageRecord`], for either backend:
//! each reads its columns through [`ReadColumns`].

use bytes::Bytes;
use serde_json::Value;
use time::OffsetDateTime;

use super::columns::Col;
use super::params;
use crate::codec::headers;
use crate::{
    CaptureNotes, CapturedBody, GrpcCall, Outcome, RecordedRequest, SinkError, SinkErrorKind,
};
use crate::{TraceContext, UsageRecord};

/// One row of a page query, read column by column in the types of
/// [`Col::kind`]. A value that is `NULL` where the column is not nullable, or
/// cannot be read as its type, is a [`Corrupt`](SinkErrorKind::Corrupt) error
/// naming the column.
pub(crate) trait ReadColumns {
    /// A text column.
    fn text(&self, col: Col) -> Result<String, SinkError>;
    /// A nullable text column.
    fn opt_text(&self, col: Col) -> Result<Option<String>, SinkError>;
    /// A timestamp column, to the millisecond.
    fn time(&self, col: Col) -> Result<OffsetDateTime, SinkError>;
    /// An integer column, 4 or 8 bytes.
    fn int(&self, col: Col) -> Result<i64, SinkError>;
    /// A boolean column.
    fn bool(&self, col: Col) -> Result<bool, SinkError>;
    /// A bytes column.
    fn bytes(&self, col: Col) -> Result<Vec<u8>, SinkError>;
    /// A nullable JSON column.
    fn opt_json(&self, col: Col) -> Result<Option<Value>, SinkError>;

    /// A JSON column.
    fn json(&self, col: Col) -> Result<Value, SinkError> {
        self.opt_json(col)?
            .ok_or_else(|| bad(col, format_args!("NULL")))
    }
}

/// A corrupt value of `col`.
pub(crate) fn bad(col: Col, why: impl std::fmt::Display) -> SinkError {
    SinkError::message(
        SinkErrorKind::Corrupt,
        format!("stored record has a bad {}: {why}", col.name()),
    )
}

/// Reads the record in `row`, written from the values of
/// [`row`](super::columns::row). An error names the record when its id can be
/// read.
pub(crate) fn record(row: &impl ReadColumns) -> Result<UsageRecord, SinkError> {
    let id = row.text(Col::Id)?;
    match fields(row) {
        Ok(record) => Ok(UsageRecord { id, ..record }),
        Err(e) => Err(e.with_context(format_args!("record {id}"))),
    }
}

fn fields(row: &impl ReadColumns) -> Result<UsageRecord, SinkError> {
    let count = |col: Col| {
        let n = row.int(col)?;
        u64::try_from(n).map_err(|_| bad(col, format_args!("{n} is negative")))
    };
    let body = |bytes: Col, size: Col, truncated: Col| -> Result<CapturedBody, SinkError> {
        Ok(CapturedBody {
            bytes: Bytes::from(row.bytes(bytes)?),
            size: count(size)?,
            truncated: row.bool(truncated)?,
        })
    };
    let status = row.int(Col::Status)?;
    let outcome = row.text(Col::Outcome)?;
    Ok(UsageRecord {
        id: String::new(),
        consumer: row.opt_text(Col::Consumer)?,
        created_at: row.time(Col::CreatedAt)?,
        method: row.text(Col::Method)?,
        path: row.text(Col::Path)?,
        route: row.opt_text(Col::Route)?,
        status: u16::try_from(status)
            .map_err(|_| bad(Col::Status, format_args!("{status} is out of range")))?,
        duration_us: count(Col::DurationUs)?,
        outcome: Outcome::from_name(&outcome)
            .ok_or_else(|| bad(Col::Outcome, format_args!("unknown outcome {outcome:?}")))?,
        request: RecordedRequest {
            body: body(Col::ReqBody, Col::ReqBodySize, Col::ReqBodyTruncated)?,
            query: row.text(Col::Query)?,
            params: params::from_json(&row.json(Col::Params)?)?,
            headers: headers::from_json(&row.json(Col::ReqHeaders)?)?,
        },
        response: body(Col::RespBody, Col::RespBodySize, Col::RespBodyTruncated)?,
        response_headers: headers::from_json(&row.json(Col::RespHeaders)?)?,
        grpc: row
            .opt_json(Col::Grpc)?
            .map(serde_json::from_value::<GrpcCall>)
            .transpose()
            .map_err(|e| bad(Col::Grpc, e))?,
        capture: row
            .opt_json(Col::Capture)?
            .map(serde_json::from_value::<CaptureNotes>)
            .transpose()
            .map_err(|e| bad(Col::Capture, e))?
            .unwrap_or_default(),
        trace: match (row.opt_text(Col::TraceId)?, row.opt_text(Col::SpanId)?) {
            (Some(trace_id), Some(span_id)) => Some(TraceContext { trace_id, span_id }),
            (None, None) => None,
            _ => {
                return Err(bad(
                    Col::SpanId,
                    "a trace_id without a span_id, or the reverse",
                ))
            }
        },
    })
}
