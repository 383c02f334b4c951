//! Rendering the endpoint's answers: a page of records, a JSON error, and what
//! every response carries (`Content-Type`, `Cache-Control`, `Content-Length`,
//! the served-by marker).

use bytes::Bytes;
use http::header::{self, HeaderValue};
use http::{Response, StatusCode};
use serde::Serialize;

use super::params::ParamError;
use super::UsageBody;
use crate::error::{SinkError, SinkErrorKind};
use crate::marker::ServedByUsageService;
use crate::record::GrpcMessageJson;
use crate::record::RecordView;
use crate::sink::{UsagePage, UsageQuery, UsageSummary};

/// Why a request is answered without asking the sink.
pub(super) enum Refusal {
    /// Not `GET` or `HEAD`.
    Method,
    /// No consumer and not an admin; the message says what was missing.
    Unauthorized(&'static str),
    /// A bad query string.
    Param(ParamError),
}

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
            Self::Unauthorized(message) => {
                let mut res = error(StatusCode::UNAUTHORIZED, message, None);
                res.headers_mut()
                    .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
                res
            }
            Self::Param(e) => error(e.status, &e.message, e.parameter.as_deref()),
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
            tracing::warn!(error = %err, "GET /usage: could not render a page as JSON");
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

/// A failed sink query: `400` for the client's faults, `503` with a fixed
/// message (and a `WARN` log) for everything else, [`Config`](SinkErrorKind::Config) included.
pub(super) fn sink_error(err: &SinkError) -> Response<UsageBody> {
    match err.kind() {
        SinkErrorKind::InvalidCursor => error(
            StatusCode::BAD_REQUEST,
            &format!("invalid cursor: {}", err.message_str()),
            Some("cursor"),
        ),
        SinkErrorKind::InvalidQuery => error(
            StatusCode::BAD_REQUEST,
            &format!("invalid query: {}", err.message_str()),
            None,
        ),
        // The operator's or the storage's fault: nothing the client can fix,
        // and nothing of it is shown to the client.
        kind @ (SinkErrorKind::Unavailable
        | SinkErrorKind::Config
        | SinkErrorKind::Corrupt
        | SinkErrorKind::Other) => {
            tracing::warn!(error = %err, ?kind, source = ?std::error::Error::source(err), "GET /usage: the sink query failed");
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

fn json(status: StatusCode, body: Vec<u8>) -> Response<UsageBody> {
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

/// Adds what every response carries: `Content-Length`, the marker extension;
/// and empties the body for `HEAD`.
pub(super) fn finish(mut res: Response<UsageBody>, head: bool) -> Response<UsageBody> {
    let len = http_body::Body::size_hint(res.body()).exact().unwrap_or(0);
    res.headers_mut()
        .insert(header::CONTENT_LENGTH, HeaderValue::from(len));
    res.extensions_mut().insert(ServedByUsageService);
    if head {
        *res.body_mut() = UsageBody::default();
    }
    res
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
