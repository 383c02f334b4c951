//! [`UsageBody`]: the body of the endpoint's responses.

use std::convert::Infallible;
use std::fmt;
use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};

/// The body of every [`UsageService`](super::UsageService) response: the whole
/// JSON document, sent as one frame.
///
/// Its length is known up front ([`size_hint`](Body::size_hint) is exact), so
/// servers send it with a `Content-Length`. `Default` is the empty body (what
/// `HEAD` gets). It converts into any framework's body type that takes an
/// [`http_body::Body`], such as `axum::body::Body::new`.
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
#[derive(Clone, Default)]
pub struct UsageBody {
    /// What is left to send; `None` once sent, or when there was nothing.
    data: Option<Bytes>,
}

impl UsageBody {
    /// A body sending `bytes` in one frame (none when they are empty).
    pub(super) fn new(bytes: Bytes) -> Self {
        Self {
            data: (!bytes.is_empty()).then_some(bytes),
        }
    }
}

impl Body for UsageBody {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        self: Pin<&mut Self>,
        _cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        Poll::Ready(self.get_mut().data.take().map(|data| Ok(Frame::data(data))))
    }

    fn is_end_stream(&self) -> bool {
        self.data.is_none()
    }

    fn size_hint(&self) -> SizeHint {
        SizeHint::with_exact(self.data.as_ref().map_or(0, |data| data.len() as u64))
    }
}

impl fmt::Debug for UsageBody {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("UsageBody")
            .field("remaining", &self.data.as_ref().map_or(0, Bytes::len))
            .finish()
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
