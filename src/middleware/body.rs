//! The body wrappers: [`RequestBody`] and [`ResponseBody`], transparent tees.
//! When the record is emitted is documented on the [module](super).

use std::pin::Pin;
use std::task::{ready, Context, Poll};

use http::HeaderMap;
use http_body::{Body, Frame, SizeHint};
use pin_project_lite::pin_project;

use super::pending::{Pending, ResponseCapture};
use super::tap::{lock_tap, SharedTap, Tap};
use crate::record::Outcome;

pin_project! {
    /// The request body handed to the inner service: the original body, teed.
    #[derive(Debug)]
    pub struct RequestBody<B> {
        #[pin]
        inner: B,
        tap: Option<SharedTap>,
    }
}

impl<B> RequestBody<B> {
    pub(crate) fn new(inner: B, tap: Option<SharedTap>) -> Self {
        Self { inner, tap }
    }

    /// The wrapped body.
    pub fn into_inner(self) -> B {
        self.inner
    }
}

impl<B> Body for RequestBody<B>
where
    B: Body,
    B::Data: 'static,
{
    type Data = B::Data;
    type Error = B::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Self::Data>, Self::Error>>> {
        let mut this = self.project();
        let frame = ready!(this.inner.as_mut().poll_frame(cx));
        if let Some(tap) = this.tap.as_ref() {
            match &frame {
                Some(Ok(frame)) => {
                    let mut tap = lock_tap(tap);
                    if let Some(data) = frame.data_ref() {
                        tap.observe(data);
                    }
                    if frame.is_trailers() || this.inner.is_end_stream() {
                        tap.end();
                    }
                }
                None => lock_tap(tap).end(),
                Some(Err(_)) => {}
            }
        }
        Poll::Ready(frame)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

/// A response being recorded.
#[derive(Debug)]
pub(crate) struct Recording {
    pending: Pending,
    response: ResponseCapture,
    tap: Tap,
    exact_len: Option<u64>,
}

impl Recording {
    pub(crate) fn new(
        pending: Pending,
        response: ResponseCapture,
        tap: Tap,
        exact_len: Option<u64>,
    ) -> Self {
        Self {
            pending,
            response,
            tap,
            exact_len,
        }
    }

    fn finish(mut self, outcome: Outcome) {
        if let Some(trailers) = self.tap.web_trailers() {
            // gRPC-Web carries its status in a body frame flagged 0x80.
            self.response.note_grpc(&trailers);
        }
        self.response.body = Some(self.tap);
        self.pending.finish(self.response, outcome);
    }

    /// Trailers: the gRPC status (trailers win over headers), and the kept
    /// response headers that the trailers carry.
    fn note_trailers(&mut self, trailers: &HeaderMap) {
        if self.pending.protocol.is_grpc() {
            self.response.note_grpc(trailers);
        }
        self.pending.keep_trailers(trailers);
    }

    /// The outcome of a response body dropped before its end.
    fn dropped(&self) -> Outcome {
        if self.exact_len.is_some_and(|len| self.tap.size() >= len) {
            Outcome::Complete
        } else if self.pending.protocol.is_grpc() {
            Outcome::Cancelled
        } else {
            Outcome::ClientGone
        }
    }
}

pin_project! {
    /// The response body handed back to the caller: the inner body, teed, which
    /// emits the record when it ends or is dropped.
    pub struct ResponseBody<B> {
        #[pin]
        inner: B,
        recording: Option<Recording>,
    }

    impl<B> PinnedDrop for ResponseBody<B> {
        fn drop(this: Pin<&mut Self>) {
            if let Some(rec) = this.project().recording.take() {
                let outcome = rec.dropped();
                rec.finish(outcome);
            }
        }
    }
}

impl<B> std::fmt::Debug for ResponseBody<B> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ResponseBody")
            .field("recording", &self.recording.is_some())
            .finish_non_exhaustive()
    }
}

impl<B> ResponseBody<B> {
    pub(crate) fn new(inner: B, recording: Option<Recording>) -> Self {
        Self { inner, recording }
    }
}

impl<B> Body for ResponseBody<B>
where
    B: Body,
    B::Data: 'static,
{
    type Data = B::Data;
    type Error = B::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Self::Data>, Self::Error>>> {
        let mut this = self.project();
        let frame = ready!(this.inner.as_mut().poll_frame(cx));
        let Some(rec) = this.recording.as_mut() else {
            return Poll::Ready(frame);
        };
        let ended = match &frame {
            Some(Ok(frame)) => {
                if let Some(data) = frame.data_ref() {
                    rec.tap.observe(data);
                    this.inner.is_end_stream().then_some(Outcome::Complete)
                } else if let Some(trailers) = frame.trailers_ref() {
                    rec.note_trailers(trailers);
                    Some(Outcome::Complete)
                } else {
                    this.inner.is_end_stream().then_some(Outcome::Complete)
                }
            }
            Some(Err(_)) => Some(Outcome::Error),
            None => Some(Outcome::Complete),
        };
        if let Some(outcome) = ended {
            if let Some(rec) = this.recording.take() {
                rec.finish(outcome);
            }
        }
        Poll::Ready(frame)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}
