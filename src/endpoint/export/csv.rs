//! The CSV form of an export.
//!
//! # CSV columns
//!
//! A header row, then one row per record ([RFC 4180], written by the `csv`
//! crate: fields with a comma, quote or line break are quoted):
//!
//! | column | value |
//! |---|---|
//! | `id` | the record id |
//! | `createdAt` | RFC 3339, UTC, milliseconds |
//! | `consumer` | the consumer id; empty for anonymous requests |
//! | `method`, `path` | the request line (`path` without the query string) |
//! | `route` | the route template; empty when unknown |
//! | `query` | the raw query string, as recorded (secrets redacted) |
//! | `status` | the HTTP status |
//! | `outcome` | `complete`, `client_gone`, `cancelled` or `error` |
//! | `durationUs` | microseconds |
//! | `requestBodySize`, `responseSize` | the bodies' full sizes in bytes |
//! | `requestBodyTruncated`, `responseTruncated` | `true` when the stored copy was cut |
//! | `traceId`, `spanId` | the request's W3C trace context; empty without one |
//! | `requestBody`, `response` | only with `bodies=true`: each body as the JSON the list shows (a JSON value's text) |
//!
//! Headers, route params and the gRPC details are not in the CSV; NDJSON holds
//! every field (each line is a record as the list shows it, on one line: a
//! JSON body shown as it came has its line breaks, whitespace between tokens,
//! taken out, so one line is always exactly one record).
//!
//! # Formulas
//!
//! A spreadsheet runs a cell that starts with `=`, `+`, `-`, `@`, a tab or a
//! carriage return as a formula, and every cell but the counts holds what a
//! client sent (the path, the query, a consumer id, the bodies). As OWASP
//! recommends ("CSV Injection"), such a cell is written with a `'` in front
//! (`=HYPERLINK(..)` becomes `'=HYPERLINK(..)`), which spreadsheets show as
//! text; a cell with a comma, quote or line break is then quoted as usual.
//! [`UsageService::csv_formula_guard(false)`](crate::UsageService::csv_formula_guard)
//! writes cells as they are, for a consumer of the file that is not a
//! spreadsheet.
//!
//! [RFC 4180]: https://www.rfc-editor.org/rfc/rfc4180

use std::borrow::Cow;

use super::Render;
use crate::record::{format_timestamp, RecordView};
use crate::{SinkError, UsageRecord};

/// The CSV columns, in order, without the bodies.
pub(in crate::endpoint) const CSV_COLUMNS: &[&str] = &[
    "id",
    "createdAt",
    "consumer",
    "method",
    "path",
    "route",
    "query",
    "status",
    "outcome",
    "durationUs",
    "requestBodySize",
    "requestBodyTruncated",
    "responseSize",
    "responseTruncated",
    "traceId",
    "spanId",
];

/// The CSV columns `bodies=true` adds.
pub(in crate::endpoint) const CSV_BODY_COLUMNS: &[&str] = &["requestBody", "response"];

/// Writes one row; returns about how many bytes it took.
pub(super) fn row<W: std::io::Write>(
    render: &Render,
    csv: &mut ::csv::Writer<W>,
    r: &UsageRecord,
) -> Result<usize, SinkError> {
    let status = r.status.to_string();
    let duration = r.duration_us.to_string();
    let request_size = r.request.body.size.to_string();
    let response_size = r.response.size.to_string();
    let created_at = format_timestamp(r.created_at);
    let trace = r.trace.as_ref();
    let row: [&str; 16] = [
        &r.id,
        &created_at,
        r.consumer.as_deref().unwrap_or(""),
        &r.method,
        &r.path,
        r.route.as_deref().unwrap_or(""),
        &r.request.query,
        &status,
        r.outcome.as_str(),
        &duration,
        &request_size,
        if r.request.body.truncated {
            "true"
        } else {
            "false"
        },
        &response_size,
        if r.response.truncated {
            "true"
        } else {
            "false"
        },
        trace.map_or("", |t| t.trace_id.as_str()),
        trace.map_or("", |t| t.span_id.as_str()),
    ];
    let neutralize = render.neutralize;
    let row = row.map(|field| cell(field, neutralize));
    let size: usize = row.iter().map(|field| field.len() + 1).sum();
    if !render.bodies {
        csv.write_record(row.iter().map(|f| f.as_bytes()))
            .map_err(SinkError::new)?;
        return Ok(size);
    }
    // The bodies as the list renders them (gRPC messages included).
    let view = RecordView {
        record: r,
        grpc_json: render.grpc_json.as_deref(),
    };
    let wire = serde_json::to_value(&view).map_err(SinkError::new)?;
    let request_body = serde_json::to_string(&wire["request"]["body"]).map_err(SinkError::new)?;
    let response_body = serde_json::to_string(&wire["response"]).map_err(SinkError::new)?;
    let bodies = [
        cell(&request_body, neutralize),
        cell(&response_body, neutralize),
    ];
    csv.write_record(row.iter().chain(&bodies).map(|f| f.as_bytes()))
        .map_err(SinkError::new)?;
    Ok(size + request_body.len() + response_body.len() + 2)
}

/// Whether a CSV cell would be read as a formula by a spreadsheet: it starts
/// with `=`, `+`, `-`, `@`, a tab or a carriage return (OWASP's list).
fn is_formula(cell: &str) -> bool {
    matches!(
        cell.as_bytes().first(),
        Some(b'=' | b'+' | b'-' | b'@' | b'\t' | b'\r')
    )
}

/// A CSV cell as a spreadsheet must show it: with [`Render::neutralize`], a
/// cell that [starts a formula](is_formula) gets a `'` in front, as OWASP
/// recommends, so that Excel, LibreOffice and Google Sheets show it as text
/// instead of running it (the `csv` writer then quotes it as needed).
fn cell<'a>(value: &'a str, neutralize: bool) -> Cow<'a, str> {
    if neutralize && is_formula(value) {
        Cow::Owned(format!("'{value}"))
    } else {
        Cow::Borrowed(value)
    }
}
