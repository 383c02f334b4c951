//! [`ResponseFuture`]: a refusal answered at once, or the sink query within the
//! query timeout, rendered.

use std::convert::Infallible;
use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::task::{ready, Context, Poll};
use std::time::Duration;

use http::Response;

use super::export::{Export, Fetch, Render, Stall};
use super::limits::Held;
use super::response::{self, Refusal};
use super::UsageBody;
use crate::record::{truncate_to_millis, GrpcMessageJsonFn};
use crate::sink::{ConsumerScope, SummaryQuery, UsageQuery, UsageSink};
use crate::writer::UsageHandle;

/// The future of [`UsageService`](super::UsageService)'s responses.
///
/// A refused request (bad method, caller or parameter) is answered at once; a
/// valid one holds the sink query in a `Box`ed future (one allocation per
/// query, which costs little next to the query itself).
///
/// ```
/// use tower::Service as _;
/// use tower_usage::endpoint::ResponseFuture;
/// use tower_usage::{MemorySink, UsageService};
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() {
/// let mut usage = UsageService::new(MemorySink::new());
/// let future: ResponseFuture = usage.call(http::Request::get("/usage").body(()).unwrap());
/// let res = future.await.unwrap_or_else(|never| match never {});
/// assert_eq!(res.status(), http::StatusCode::UNAUTHORIZED); // no bearer token
/// # }
/// ```
pub struct ResponseFuture {
    inner: Inner,
    /// `HEAD`: answer with the headers of `GET` and an empty body.
    head: bool,
}

type QueryFuture = Pin<Box<dyn Future<Output = Response<UsageBody>> + Send>>;

enum Inner {
    Ready(Option<Response<UsageBody>>),
    Query(QueryFuture),
}

impl ResponseFuture {
    /// Answers a refused request.
    pub(super) fn refused(refusal: Refusal, head: bool) -> Self {
        Self {
            inner: Inner::Ready(Some(refusal.into_response())),
            head,
        }
    }

    /// Answers at once with `res` (the OpenAPI document).
    pub(super) fn ready(res: Response<UsageBody>, head: bool) -> Self {
        Self {
            inner: Inner::Ready(Some(res)),
            head,
        }
    }

    /// Asks `sink` for one page, within `timeout`, and renders the answer.
    pub(super) fn query<S: UsageSink>(
        sink: S,
        query: UsageQuery,
        timeout: Duration,
        grpc_json: Option<GrpcMessageJsonFn>,
        max_page_bytes: usize,
        held: Held,
        head: bool,
    ) -> Self {
        Self::running(
            async move {
                let _held = held;
                run_query(sink, query, timeout, grpc_json, max_page_bytes).await
            },
            head,
        )
    }

    /// Asks `sink` for the record `id` in `scope`, within `timeout`.
    pub(super) fn get<S: UsageSink>(
        sink: S,
        id: String,
        scope: ConsumerScope,
        timeout: Duration,
        grpc_json: Option<GrpcMessageJsonFn>,
        held: Held,
        head: bool,
    ) -> Self {
        Self::running(
            async move {
                let _held = held;
                run_get(sink, id, scope, timeout, grpc_json).await
            },
            head,
        )
    }

    /// Erases `consumer` in `sink`, within `timeout`.
    pub(super) fn erase<S: UsageSink>(sink: S, consumer: String, timeout: Duration) -> Self {
        Self::running(super::erase::run(sink, consumer, timeout), false)
    }

    /// Fetches an export's first page, then answers with a body that fetches
    /// the others as it is sent.
    pub(super) fn export(
        fetch: Fetch,
        query: UsageQuery,
        render: Render,
        stall: Stall,
        head: bool,
    ) -> Self {
        Self::running(run_export(fetch, query, render, stall), head)
    }

    fn running(
        future: impl Future<Output = Response<UsageBody>> + Send + 'static,
        head: bool,
    ) -> Self {
        Self {
            inner: Inner::Query(Box::pin(future)),
            head,
        }
    }
}

impl ResponseFuture {
    /// Asks `sink` for a summary, within `timeout`, and renders it with its
    /// `completeUntil` (see [`complete_until`]).
    pub(super) fn summary<S: UsageSink>(
        sink: S,
        query: SummaryQuery,
        timeout: Duration,
        recorder: Option<UsageHandle>,
        coarse: bool,
        held: Held,
        head: bool,
    ) -> Self {
        Self::running(
            async move {
                let _held = held;
                run_summary(sink, query, timeout, recorder, coarse).await
            },
            head,
        )
    }
}

/// The summary's `completeUntil`, taken *before* the sink is read: every
/// record created before it had been written by then, so the read counts it.
/// With the writer's handle, [`UsageHandle::complete_until`](crate::UsageHandle::complete_until)
/// (no later than the arrival of any exchange still in flight or not yet
/// written), or now when nothing is pending; without one, now: the writer's
/// queue is unknown, and records may still arrive up to the layer's
/// `max_delay` (plus retries) later.
///
/// `coarse` (a consumer's summary, not an admin's): rounded down to the
/// [minute](COMPLETE_UNTIL_GRAIN). The oldest unwritten capture may be
/// another consumer's, and its arrival time, to the millisecond, is none of
/// the caller's business; rounded down to the minute, a consumer learns at
/// most whether some capture that arrived before the start of the current
/// minute is still unwritten (the writer is behind by that much), never when
/// another consumer's request came. Still true: an earlier bound is as
/// complete as a later one.
fn complete_until(recorder: Option<&UsageHandle>, coarse: bool) -> time::OffsetDateTime {
    let now = truncate_to_millis(time::OffsetDateTime::now_utc());
    let exact = recorder
        .and_then(UsageHandle::complete_until)
        .map_or(now, |t| truncate_to_millis(t).min(now));
    if !coarse {
        return exact;
    }
    let grain = COMPLETE_UNTIL_GRAIN.whole_seconds();
    let seconds = exact.unix_timestamp();
    let floor = seconds - seconds.rem_euclid(grain);
    time::OffsetDateTime::from_unix_timestamp(floor).unwrap_or(exact)
}

/// What a consumer's `completeUntil` is rounded down to: one minute.
const COMPLETE_UNTIL_GRAIN: time::Duration = time::Duration::MINUTE;

async fn run_summary<S: UsageSink>(
    sink: S,
    query: SummaryQuery,
    timeout: Duration,
    recorder: Option<UsageHandle>,
    coarse: bool,
) -> Response<UsageBody> {
    let complete_until = complete_until(recorder.as_ref(), coarse);
    match tokio::time::timeout(timeout, sink.summarize(&query)).await {
        Ok(Ok(mut summary)) => {
            summary.complete_until = Some(complete_until);
            response::summary(&summary)
        }
        Ok(Err(err)) => response::sink_error(&err),
        Err(_elapsed) => {
            tracing::warn!(
                timeout_ms = timeout.as_millis() as u64,
                "GET /usage/summary: the sink did not answer in time"
            );
            response::unavailable()
        }
    }
}

async fn run_query<S: UsageSink>(
    sink: S,
    query: UsageQuery,
    timeout: Duration,
    grpc_json: Option<GrpcMessageJsonFn>,
    max_page_bytes: usize,
) -> Response<UsageBody> {
    match tokio::time::timeout(timeout, sink.query(&query)).await {
        Ok(Ok(page)) => {
            if let Some(failures) = response::FAILURES.succeed() {
                tracing::info!(failures, "GET /usage: the sink answers again");
            }
            response::page(&page, &query, grpc_json.as_deref(), max_page_bytes)
        }
        Ok(Err(err)) => response::sink_error(&err),
        Err(_elapsed) => timed_out(timeout),
    }
}

async fn run_get<S: UsageSink>(
    sink: S,
    id: String,
    scope: ConsumerScope,
    timeout: Duration,
    grpc_json: Option<GrpcMessageJsonFn>,
) -> Response<UsageBody> {
    match tokio::time::timeout(timeout, sink.get(&id, &scope)).await {
        Ok(Ok(Some(record))) => response::record(&record, grpc_json.as_deref()),
        // Missing, or another consumer's: the same answer (no oracle).
        Ok(Ok(None)) => response::not_found("no usage record with this id"),
        Ok(Err(err)) => response::sink_error(&err),
        Err(_elapsed) => timed_out(timeout),
    }
}

async fn run_export(
    fetch: Fetch,
    query: UsageQuery,
    render: Render,
    stall: Stall,
) -> Response<UsageBody> {
    let format = render.format;
    match fetch(query.clone()).await {
        Ok(first) => response::export(
            UsageBody::export(Export::new(fetch, query, render, first, stall)),
            format,
        ),
        Err(err) => response::sink_error(&err),
    }
}

/// `503` for a sink that did not answer in `timeout`; one `WARN` per
/// [streak](response::FAILURES).
fn timed_out(timeout: Duration) -> Response<UsageBody> {
    if response::FAILURES.fail() {
        tracing::warn!(
            timeout_ms = timeout.as_millis() as u64,
            "GET /usage: the sink did not answer in time (further failures are answered 503 and not logged until a query succeeds)"
        );
    }
    response::unavailable()
}

impl Future for ResponseFuture {
    type Output = Result<Response<UsageBody>, Infallible>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.get_mut();
        let res = match &mut this.inner {
            Inner::Ready(res) => res.take().expect("ResponseFuture polled after completion"),
            Inner::Query(fut) => ready!(fut.as_mut().poll(cx)),
        };
        Poll::Ready(Ok(response::finish(res, this.head)))
    }
}

impl fmt::Debug for ResponseFuture {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let state = match &self.inner {
            Inner::Ready(Some(_)) => "ready",
            Inner::Ready(None) => "done",
            Inner::Query(_) => "querying",
        };
        f.debug_struct("ResponseFuture")
            .field("state", &state)
            .field("head", &self.head)
            .finish()
    }
}
