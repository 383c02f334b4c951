//! [`Usage`], the middleware service made by [`UsageLayer`](crate::UsageLayer):
//! decides protocol, consumer and route once per request, wraps both bodies.

use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Instant;

use http::{Request, Response};
use http_body::Body;
use tower_service::Service;

use super::body::{RequestBody, ResponseBody};
use super::future::ResponseFuture;
use super::layer::CaptureConfig;
use super::pack::Packer;
use super::pending::Pending;
use super::tap::Tap;
use crate::hooks::{BodyPlan, Side};
use crate::writer::{InFlight, Queue};
use crate::{CaptureRequest, RequestInfo};

/// The middleware service: records every request through it. Made by
/// [`UsageLayer`](crate::UsageLayer) (tower-http's naming: `XLayer` makes `X`);
/// see the [module docs](crate::middleware).
#[derive(Clone)]
pub struct Usage<S> {
    inner: S,
    config: Arc<CaptureConfig>,
    queue: Queue,
}

impl<S: std::fmt::Debug> std::fmt::Debug for Usage<S> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Usage")
            .field("inner", &self.inner)
            .finish_non_exhaustive()
    }
}

impl<S> Usage<S> {
    pub(crate) fn new(inner: S, config: Arc<CaptureConfig>, queue: Queue) -> Self {
        Self {
            inner,
            config,
            queue,
        }
    }

    /// The wrapped service.
    pub fn get_ref(&self) -> &S {
        &self.inner
    }

    /// The wrapped service, mutably.
    pub fn get_mut(&mut self) -> &mut S {
        &mut self.inner
    }

    /// The wrapped service, by value.
    pub fn into_inner(self) -> S {
        self.inner
    }
}

impl<S, ReqBody, ResBody> Service<Request<ReqBody>> for Usage<S>
where
    S: Service<Request<RequestBody<ReqBody>>, Response = Response<ResBody>>,
    ReqBody: Body,
    ResBody: Body,
{
    type Response = Response<ResponseBody<ResBody>>;
    type Error = S::Error;
    type Future = ResponseFuture<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: Request<ReqBody>) -> Self::Future {
        let config = &self.config;
        // The hooks see the URI the client sent, as the record does.
        let info = RequestInfo::new(
            req.method(),
            client_uri(&req),
            req.headers(),
            req.extensions(),
        );
        if config.skip.as_ref().is_some_and(|skip| skip(info)) {
            return self.pass(req);
        }
        // The route borrows from the request (the default hook allocates nothing)
        // until it is packed.
        let route = (config.route)(info);
        // The capture policy, decided once; the consumer, when it asked.
        let (plan, decided_consumer) = match &config.policy {
            None => (BodyPlan::ALL, None),
            Some(policy) => {
                let view = CaptureRequest::new(info, route.as_deref(), &config.identify);
                let decided = policy(&view);
                if !decided.is_recorded() {
                    drop(view);
                    drop(route);
                    return self.pass(req);
                }
                (BodyPlan::of(&decided), view.into_consumer())
            }
        };
        let started = Instant::now();
        // Counted in flight from here, at the arrival time it reads.
        let (in_flight, created) = InFlight::arrive(&self.queue);
        let protocol = info.protocol();
        let count_messages = protocol.is_framed();
        let request_limit = if plan.tees(Side::Request) {
            config.request_limit
        } else {
            0
        };
        // Room for the request body's prefix, from its announced length, but no
        // more than 4 KiB before any of it arrived: a client announcing large
        // bodies it never sends gets no large buffers.
        let body_hint = usize::try_from(req.body().size_hint().lower())
            .unwrap_or(usize::MAX)
            .min(request_limit)
            .min(4096);
        let (packer, headers_cut) = Packer::for_request(
            info.uri(),
            route.as_deref(),
            req.headers(),
            config.max_header_bytes,
            body_hint,
        );
        drop(route);
        // A bearer derivation only reads headers, which are captured anyway: the
        // writer does it, off the request path; unless the headers were cut,
        // and the token with them.
        let (consumer, identify_later) = match decided_consumer {
            Some(consumer) => (consumer, None),
            None if config.identify.is_bearer() && headers_cut == 0 => {
                (None, Some(config.identify.clone()))
            }
            None => (config.identify.identify(info), None),
        };
        let announced_body = req.body().size_hint().exact();
        let (parts, body) = req.into_parts();
        let tap = (!body.is_end_stream()).then(|| {
            Arc::new(Mutex::new(
                Tap::new(request_limit).counting_messages(count_messages),
            ))
        });
        let pending = Pending {
            started,
            created,
            method: parts.method.clone(),
            packer,
            consumer,
            identify_later,
            protocol,
            headers_cut,
            announced_body,
            request_tap: tap.clone(),
            config: config.clone(),
            queue: Some(in_flight),
            id: None,
            plan,
        };
        let req = Request::from_parts(parts, RequestBody::new(body, tap));
        ResponseFuture::new(self.inner.call(req), Some(pending))
    }
}

impl<S> Usage<S> {
    /// Calls the inner service without recording.
    fn pass<ReqBody, ResBody>(&mut self, req: Request<ReqBody>) -> ResponseFuture<S::Future>
    where
        S: Service<Request<RequestBody<ReqBody>>, Response = Response<ResBody>>,
    {
        let req = req.map(|body| RequestBody::new(body, None));
        ResponseFuture::new(self.inner.call(req), None)
    }
}

/// The URI the client sent: inside a nested axum router the request's URI has
/// lost the outer prefix, but axum keeps the original in the extensions (and
/// `MatchedPath`, so the route template, has the whole path too).
fn client_uri<B>(req: &Request<B>) -> &http::Uri {
    #[cfg(feature = "axum")]
    if let Some(original) = req.extensions().get::<axum::extract::OriginalUri>() {
        return &original.0;
    }
    req.uri()
}
