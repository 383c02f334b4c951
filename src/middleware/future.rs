//! [`ResponseFuture`], the future of the capture middleware.

use std::future::Future;
use std::pin::Pin;
use std::task::{ready, Context, Poll};

use http::{Method, Response};
use http_body::Body;
use pin_project_lite::pin_project;

use super::body::{Recording, ResponseBody};
use super::pending::{Pending, ResponseCapture};
use super::tap::Tap;
use crate::hooks::Side;
use crate::marker::ServedByUsageService;
use crate::record::{truncate_to_millis, Outcome};
use crate::UsageRecord;
use time::OffsetDateTime;

/// Status recorded when the response future is dropped before the inner service
/// answered (nginx's "client closed request").
pub(crate) const STATUS_CANCELLED: u16 = 499;
/// Status recorded when the inner service returned an error.
pub(crate) const STATUS_ERROR: u16 = 500;

pin_project! {
    /// Response future of [`Usage`](super::Usage).
    ///
    /// If it is dropped before the inner service answers (a timeout above this
    /// layer, or the connection closed), the request is recorded with
    /// [`Outcome::Cancelled`] and status `499`. If the inner service returns an
    /// error, it is recorded with [`Outcome::Error`] and status `500`, and the
    /// error is passed on unchanged.
    pub struct ResponseFuture<F> {
        #[pin]
        inner: F,
        pending: Option<Pending>,
    }

    impl<F> PinnedDrop for ResponseFuture<F> {
        fn drop(this: Pin<&mut Self>) {
            if let Some(pending) = this.project().pending.take() {
                pending.finish_without_response(STATUS_CANCELLED, Outcome::Cancelled);
            }
        }
    }
}

impl<F> std::fmt::Debug for ResponseFuture<F> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ResponseFuture")
            .field("recording", &self.pending.is_some())
            .finish_non_exhaustive()
    }
}

impl<F> ResponseFuture<F> {
    pub(crate) fn new(inner: F, pending: Option<Pending>) -> Self {
        Self { inner, pending }
    }
}

impl<F, B, E> Future for ResponseFuture<F>
where
    F: Future<Output = Result<Response<B>, E>>,
    B: Body,
{
    type Output = Result<Response<ResponseBody<B>>, E>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        let result = ready!(this.inner.poll(cx));
        let pending = this.pending.take();
        Poll::Ready(match result {
            Ok(response) => Ok(wrap_response(response, pending)),
            Err(err) => {
                if let Some(pending) = pending {
                    pending.finish_without_response(STATUS_ERROR, Outcome::Error);
                }
                Err(err)
            }
        })
    }
}

fn wrap_response<B: Body>(
    response: Response<B>,
    pending: Option<Pending>,
) -> Response<ResponseBody<B>> {
    let (mut parts, body) = response.into_parts();
    let Some(mut pending) = pending else {
        return Response::from_parts(parts, ResponseBody::new(body, None));
    };
    if parts.extensions.get::<ServedByUsageService>().is_some() {
        // Calls to the usage endpoint are not recorded.
        return Response::from_parts(parts, ResponseBody::new(body, None));
    }
    if let Some(name) = &pending.config.record_id_header {
        let created_at = truncate_to_millis(OffsetDateTime::from(pending.created));
        let id = UsageRecord::new_id(created_at);
        // A ULID is 26 ASCII letters and digits: always a valid header value.
        if let Ok(value) = http::HeaderValue::from_str(&id) {
            parts.headers.insert(name.clone(), value);
        }
        pending.id = Some(id);
    }
    let status = parts.status.as_u16();
    let no_body_by_rule = pending.method == Method::HEAD
        || parts.status.is_informational()
        || status == 204
        || status == 304;
    // The server (hyper) adds `content-length` after this layer, from the
    // body's exact size: record the same value it will send.
    let content_length = (!no_body_by_rule
        && !parts.headers.contains_key(http::header::CONTENT_LENGTH)
        && !parts.headers.contains_key(http::header::TRANSFER_ENCODING))
    .then(|| body.size_hint().exact())
    .flatten();
    pending.keep_headers(&parts.headers, content_length);
    let mut capture = ResponseCapture {
        status,
        ..ResponseCapture::default()
    };
    if pending.protocol.is_grpc() {
        // A trailers-only response carries the status in its headers.
        capture.note_grpc(&parts.headers);
    }
    let bodiless = no_body_by_rule || body.is_end_stream();
    if bodiless {
        pending.finish(capture, Outcome::Complete);
        return Response::from_parts(parts, ResponseBody::new(body, None));
    }
    let event_stream = parts
        .headers
        .get(http::header::CONTENT_TYPE)
        .is_some_and(|v| v.as_bytes().starts_with(b"text/event-stream"));
    // A body withheld whatever happens is only counted, not teed.
    let limit = if (event_stream && !pending.config.capture_event_streams)
        || !pending.plan.tees(Side::Response)
    {
        0
    } else {
        pending.config.response_limit
    };
    let exact_len = body.size_hint().exact();
    let count_messages = pending.protocol.is_framed();
    let tap = Tap::new(limit).counting_messages(count_messages);
    let recording = Recording::new(pending, capture, tap, exact_len);
    Response::from_parts(parts, ResponseBody::new(body, Some(recording)))
}
