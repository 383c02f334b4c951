//! Rendering the endpoint's answers: a page of records, a JSON error, and what
//! every response carries (`Content-Type`, `Cache-Control`, `Content-Length`,
//! the served-by marker).

use bytes::Bytes;
use http::header::{self, HeaderValue};
use http::{Response, StatusCode};
use serde::Serialize;

use super::params::{Format, ParamError};
use super::UsageBody;
use crate::error::{SinkError, SinkErrorKind};
use crate::marker::ServedByUsageService;
use crate::record::GrpcMessageJson;
use crate::record::RecordView;
use crate::sink::{UsagePage, UsageQuery, UsageSummary};
use crate::streak::Streak;
use crate::UsageRecord;

/// Why a request is answered without asking the sink.
pub(super) enum Refusal {
    /// Not `GET` or `HEAD`.
    Method,
    /// A method the path does not take, when erasure is allowed: the list
    /// takes `DELETE` too.
    MethodAllowing(&'static str),
    /// `DELETE` from a caller who is not an admin.
    NotAdmin,
    /// No consumer and not an admin; the message says what was missing.
    Unauthorized(&'static str),
    /// A bad query string.
    Param(ParamError),
    /// Nothing is served at this path below the mount point.
    NotFound,
    /// The caller's consumer has this many sink reads in progress already.
    TooManyReads(usize),
    /// This many exports are running already.
    TooManyExports(usize),
}

/// The `Retry-After` of a `429` for too many reads, in seconds.
const RETRY_READS: &str = "1";

/// The `Retry-After` of a `503` for too many exports, in seconds.
const RETRY_EXPORTS: &str = "5";

impl Refusal {
    pub(super) fn into_response(self) -> Response<UsageBody> {
        match self {
            Self::Method => {
                let mut res = error(
                    StatusCode::METHOD_NOT_ALLOWED,
                    "only GET and HEAD are allowed",
                    None,
                );
                res.headers_mut()
                    .insert(header::ALLOW, HeaderValue::from_static("GET, HEAD"));
                res
            }
            Self::MethodAllowing(allow) => {
                let mut res = error(
                    StatusCode::METHOD_NOT_ALLOWED,
                    &format!("only {allow} are allowed here"),
                    None,
                );
                res.headers_mut()
                    .insert(header::ALLOW, HeaderValue::from_static(allow));
                res
            }
            Self::NotAdmin => error(
                StatusCode::FORBIDDEN,
                "only an admin may erase a consumer's records",
                None,
            ),
            Self::Unauthorized(message) => {
                let mut res = error(StatusCode::UNAUTHORIZED, message, None);
                res.headers_mut()
                    .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
                res
            }
            Self::Param(e) => error(e.status, &e.message, e.parameter.as_deref()),
            Self::NotFound => not_found("nothing is served at this path"),
            Self::TooManyReads(limit) => {
                let mut res = error(
                    StatusCode::TOO_MANY_REQUESTS,
                    &format!(
                        "too many usage reads in progress for this consumer (at most {limit} at once); retry later"
                    ),
                    None,
                );
                res.headers_mut()
                    .insert(header::RETRY_AFTER, HeaderValue::from_static(RETRY_READS));
                res
            }
            Self::TooManyExports(limit) => {
                let mut res = error(
                    StatusCode::SERVICE_UNAVAILABLE,
                    &format!("too many exports are running (at most {limit} at once); retry later"),
                    None,
                );
                res.headers_mut()
                    .insert(header::RETRY_AFTER, HeaderValue::from_static(RETRY_EXPORTS));
                res
            }
        }
    }
}

/// A page of records: `200`, or `500` if it cannot be rendered as JSON.
///
/// Records are rendered one by one into the body; when one would take the body
/// past `max_bytes`, the page ends before it (after at least one record) with
/// a cursor to it, so the rest comes on the next page.
pub(super) fn page(
    page: &UsagePage,
    query: &UsageQuery,
    grpc_json: Option<&GrpcMessageJson>,
    max_bytes: usize,
) -> Response<UsageBody> {
    match render_page(page, query, grpc_json, max_bytes) {
        Ok(buf) => json(StatusCode::OK, buf),
        Err(err) => {
            if FAILURES.fail() {
                tracing::warn!(error = %err, "GET /usage: could not render a page as JSON (further failures are not logged until a query succeeds)");
            }
            error(
                StatusCode::INTERNAL_SERVER_ERROR,
                "usage records could not be rendered",
                None,
            )
        }
    }
}

fn render_page(
    page: &UsagePage,
    query: &UsageQuery,
    grpc_json: Option<&GrpcMessageJson>,
    max_bytes: usize,
) -> Result<Vec<u8>, serde_json::Error> {
    let mut buf = Vec::with_capacity((64 + page.records.len() * 1024).min(max_bytes));
    buf.extend_from_slice(b"{\"requests\":[");
    let mut next_cursor = page.next_cursor.clone();
    for (i, record) in page.records.iter().enumerate() {
        let start = buf.len();
        if i > 0 {
            buf.push(b',');
        }
        match grpc_json {
            None => serde_json::to_writer(&mut buf, record)?,
            Some(hook) => serde_json::to_writer(
                &mut buf,
                &RecordView {
                    record,
                    grpc_json: Some(hook),
                },
            )?,
        }
        if i > 0 && buf.len() > max_bytes {
            buf.truncate(start);
            next_cursor = Some(query.cursor_after(&page.records[i - 1]));
            break;
        }
    }
    buf.extend_from_slice(b"],\"nextCursor\":");
    serde_json::to_writer(&mut buf, &next_cursor)?;
    buf.push(b'}');
    Ok(buf)
}

/// The streak of `GET /usage` failures (the sink failed or timed out, a page
/// did not render), shared by every `UsageService` of the process: one `WARN`
/// line when it starts, one `INFO` line when a query succeeds again.
pub(super) static FAILURES: Streak = Streak::new();
/// One record: `200` with its wire form, or `500` if it cannot be rendered.
pub(super) fn record(
    record: &UsageRecord,
    grpc_json: Option<&GrpcMessageJson>,
) -> Response<UsageBody> {
    match serde_json::to_vec(&RecordView { record, grpc_json }) {
        Ok(buf) => json(StatusCode::OK, buf),
        Err(err) => {
            tracing::warn!(error = %err, "GET /usage/{{id}}: could not render a record as JSON");
            error(
                StatusCode::INTERNAL_SERVER_ERROR,
                "usage records could not be rendered",
                None,
            )
        }
    }
}

/// `404` with `message`.
pub(super) fn not_found(message: &str) -> Response<UsageBody> {
    error(StatusCode::NOT_FOUND, message, None)
}

/// The `200` of an export: its media type, and a `Content-Disposition` that
/// names the file after the format and the time of the request (UTC).
pub(super) fn export(body: UsageBody, format: Format) -> Response<UsageBody> {
    let (content_type, extension) = match format {
        Format::Ndjson => ("application/x-ndjson", "ndjson"),
        Format::Csv => ("text/csv; charset=utf-8; header=present", "csv"),
    };
    let now = time::OffsetDateTime::now_utc();
    let filename = format!(
        "usage-{:04}{:02}{:02}T{:02}{:02}{:02}Z.{extension}",
        now.year(),
        u8::from(now.month()),
        now.day(),
        now.hour(),
        now.minute(),
        now.second()
    );
    let mut res = Response::new(body);
    let headers = res.headers_mut();
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    if let Ok(value) = HeaderValue::from_str(&format!("attachment; filename=\"{filename}\"")) {
        headers.insert(header::CONTENT_DISPOSITION, value);
    }
    res
}

/// The OpenAPI document: `200`, `application/json`.
pub(super) fn openapi(document: Vec<u8>) -> Response<UsageBody> {
    json(StatusCode::OK, document)
}

/// A failed sink query: `400` for the client's faults, `503` with a fixed
/// message (and a `WARN` log, once per [streak](FAILURES)) for everything else, [`Config`](SinkErrorKind::Config) included.
pub(super) fn sink_error(err: &SinkError) -> Response<UsageBody> {
    match err.kind() {
        SinkErrorKind::InvalidCursor => error(
            StatusCode::BAD_REQUEST,
            &format!("invalid cursor: {}", err.text()),
            Some("cursor"),
        ),
        SinkErrorKind::InvalidQuery => error(
            StatusCode::BAD_REQUEST,
            &format!("invalid query: {}", err.text()),
            None,
        ),
        SinkErrorKind::Unsupported => error(
            StatusCode::NOT_IMPLEMENTED,
            &format!("not supported by this sink: {}", err.text()),
            None,
        ),
        // The operator's or the storage's fault: nothing the client can fix,
        // and nothing of it is shown to the client.
        kind @ (SinkErrorKind::Unavailable
        | SinkErrorKind::Config
        | SinkErrorKind::Corrupt
        | SinkErrorKind::Other) => {
            if FAILURES.fail() {
                tracing::warn!(error = %err, ?kind, source = ?std::error::Error::source(err), "GET /usage: the sink query failed (further failures are answered 503 and not logged until a query succeeds)");
            }
            unavailable()
        }
    }
}

/// `503` with a fixed message: nothing of the storage's internals reaches the client.
pub(super) fn unavailable() -> Response<UsageBody> {
    error(
        StatusCode::SERVICE_UNAVAILABLE,
        "usage storage is unavailable",
        None,
    )
}

#[derive(Serialize)]
struct ErrorBody<'a> {
    error: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    parameter: Option<&'a str>,
}

/// `{"error": message}`, with `"parameter"` when one parameter is to blame.
fn error(status: StatusCode, message: &str, parameter: Option<&str>) -> Response<UsageBody> {
    let body = serde_json::to_vec(&ErrorBody {
        error: message,
        parameter,
    })
    // Serializing two strings cannot fail; keep a valid body regardless.
    .unwrap_or_else(|_| br#"{"error":"internal error"}"#.to_vec());
    json(status, body)
}

pub(super) fn json(status: StatusCode, body: Vec<u8>) -> Response<UsageBody> {
    let mut res = Response::new(UsageBody::new(Bytes::from(body)));
    *res.status_mut() = status;
    let headers = res.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    res
}

/// Adds what every response carries: `Content-Length` (when the length is
/// known: not for an export), the marker extension; and empties the body for
/// `HEAD`.
pub(super) fn finish(mut res: Response<UsageBody>, head: bool) -> Response<UsageBody> {
    if let Some(len) = http_body::Body::size_hint(res.body()).exact() {
        res.headers_mut()
            .insert(header::CONTENT_LENGTH, HeaderValue::from(len));
    }
    res.extensions_mut().insert(ServedByUsageService);
    if head {
        *res.body_mut() = UsageBody::default();
    }
    res
}

/// A summary: `200`, or `500` if it cannot be rendered as JSON.
pub(super) fn summary(summary: &UsageSummary) -> Response<UsageBody> {
    match serde_json::to_vec(summary) {
        Ok(buf) => json(StatusCode::OK, buf),
        Err(err) => {
            tracing::warn!(error = %err, "GET /usage/summary: could not render the summary");
            error(
                StatusCode::INTERNAL_SERVER_ERROR,
                "the usage summary could not be rendered",
                None,
            )
        }
    }
}

#[cfg(test)]
mod tests {
    use http_body_util::BodyExt as _;

    use super::*;

    #[test]
    fn sink_errors_map_to_statuses() {
        let status = |e: SinkError| sink_error(&e).status();
        assert_eq!(
            status(SinkError::invalid_cursor("x")),
            StatusCode::BAD_REQUEST
        );
        assert_eq!(
            status(SinkError::invalid_query("x")),
            StatusCode::BAD_REQUEST
        );
        assert_eq!(
            status(SinkError::message(SinkErrorKind::Corrupt, "x")),
            StatusCode::SERVICE_UNAVAILABLE
        );
        assert_eq!(
            status(SinkError::new(std::fmt::Error)),
            StatusCode::SERVICE_UNAVAILABLE
        );
        assert_eq!(
            status(SinkError::message(SinkErrorKind::Config, "x")),
            StatusCode::SERVICE_UNAVAILABLE
        );
    }

    #[tokio::test]
    async fn a_misconfigured_sink_is_unavailable_and_says_nothing_more() {
        let err = SinkError::message(SinkErrorKind::Config, "invalid table name `usage;drop`");
        let res = sink_error(&err);
        assert_eq!(res.status(), StatusCode::SERVICE_UNAVAILABLE);
        let body = res.into_body().collect().await.unwrap().to_bytes();
        let body: serde_json::Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(
            body,
            serde_json::json!({"error": "usage storage is unavailable"})
        );
    }
}
