//! [`UsageBody`]: the body of the endpoint's responses, whole or streamed.

use std::fmt;
use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};

use super::export::Export;
use crate::SinkError;

/// The body of every [`UsageService`](super::UsageService) response: a JSON
/// document sent as one frame, or an export streamed page by page.
///
/// A JSON document's length is known up front ([`size_hint`](Body::size_hint)
/// is exact), so servers send it with a `Content-Length`. An export
/// (`format=ndjson` or `csv`) asks the sink for one page when the previous
/// one was sent and sends it in frames of about 256 KiB, so it holds one
/// page and one frame at a time whatever the number of records; its length is unknown (HTTP/1.1 sends it chunked). If the sink
/// fails, or does not answer within the query timeout, after the first page,
/// the body ends with that [`SinkError`] instead of its last frame: the
/// server then aborts the response, and the client sees a cut transfer, never
/// a complete-looking file that lacks records.
///
/// `Default` is the empty body (what `HEAD` gets). It converts into any
/// framework's body type that takes an [`http_body::Body`], such as
/// `axum::body::Body::new`.
///
/// ```
/// use http_body_util::BodyExt as _;
/// use tower::ServiceExt as _;
/// use tower_usage::endpoint::UsageBody;
/// use tower_usage::{MemorySink, UsageService};
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() {
/// let req = http::Request::get("/usage").body(()).unwrap();
/// let res = UsageService::new(MemorySink::new()).oneshot(req).await.unwrap();
/// let body: UsageBody = res.into_body();
/// let json = body.collect().await.unwrap().to_bytes();
/// assert!(json.starts_with(br#"{"error":"#)); // 401: no bearer token
/// # }
/// ```
#[derive(Default)]
pub struct UsageBody {
    kind: Kind,
}

enum Kind {
    /// What is left to send; `None` once sent, or when there was nothing.
    Full(Option<Bytes>),
    Export(Box<Export>),
}

impl Default for Kind {
    fn default() -> Self {
        Self::Full(None)
    }
}

impl UsageBody {
    /// A body sending `bytes` in one frame (none when they are empty).
    pub(super) fn new(bytes: Bytes) -> Self {
        Self {
            kind: Kind::Full((!bytes.is_empty()).then_some(bytes)),
        }
    }

    /// A body streaming an export.
    pub(super) fn export(export: Export) -> Self {
        Self {
            kind: Kind::Export(Box::new(export)),
        }
    }
}

impl Body for UsageBody {
    type Data = Bytes;
    type Error = SinkError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, SinkError>>> {
        match &mut self.get_mut().kind {
            Kind::Full(data) => Poll::Ready(data.take().map(|data| Ok(Frame::data(data)))),
            Kind::Export(export) => export.poll_frame(cx),
        }
    }

    fn is_end_stream(&self) -> bool {
        match &self.kind {
            Kind::Full(data) => data.is_none(),
            Kind::Export(export) => export.is_end_stream(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match &self.kind {
            Kind::Full(data) => {
                SizeHint::with_exact(data.as_ref().map_or(0, |data| data.len() as u64))
            }
            Kind::Export(export) if export.is_end_stream() => SizeHint::with_exact(0),
            Kind::Export(_) => SizeHint::default(),
        }
    }
}

impl fmt::Debug for UsageBody {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.kind {
            Kind::Full(data) => f
                .debug_struct("UsageBody")
                .field("remaining", &data.as_ref().map_or(0, Bytes::len))
                .finish(),
            Kind::Export(export) => f.debug_struct("UsageBody").field("export", export).finish(),
        }
    }
}

#[cfg(test)]
mod tests {
    use http_body_util::BodyExt as _;

    use super::*;

    #[tokio::test]
    async fn sends_everything_in_one_frame_then_ends() {
        let mut body = UsageBody::new(Bytes::from_static(b"{}"));
        assert!(!body.is_end_stream());
        assert_eq!(body.size_hint().exact(), Some(2));

        let frame = body.frame().await.unwrap().unwrap();
        assert_eq!(frame.into_data().unwrap(), "{}");
        assert!(body.is_end_stream());
        assert_eq!(body.size_hint().exact(), Some(0));
        assert!(body.frame().await.is_none());
    }

    #[tokio::test]
    async fn default_and_empty_bodies_are_ended_from_the_start() {
        for mut body in [UsageBody::default(), UsageBody::new(Bytes::new())] {
            assert!(body.is_end_stream());
            assert_eq!(body.size_hint().exact(), Some(0));
            assert!(body.frame().await.is_none());
        }
    }

    #[test]
    fn debug_shows_the_length_not_the_bytes() {
        let body = UsageBody::new(Bytes::from_static(b"secret"));
        assert_eq!(format!("{body:?}"), "UsageBody { remaining: 6 }");
    }
}
