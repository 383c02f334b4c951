//! [`UsageService`]: its documentation, and the tower `Service` that checks a
//! request and hands the sink query to the [`ResponseFuture`]. The builder is
//! in `builder.rs`.

use std::convert::Infallible;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use http::{Method, Request, Response};
use tower_service::Service;

use super::export::{self, Render, Stall};
use super::future::ResponseFuture;
use super::limits::{Held, Limits};
use super::params::{self, Caller, ListRequest};
use super::response::{self, Refusal};
use super::target::Target;
use super::{openapi, UsageBody};
use crate::record::GrpcMessageJsonFn;
use crate::sink::{ConsumerScope, SummaryQuery, UsageSink};
#[cfg(doc)]
use crate::sink::{DEFAULT_LIMIT, MAX_LIMIT};
use crate::writer::UsageHandle;
#[cfg(doc)]
use crate::UsageRecord;
use crate::{IdentifyConsumer, RequestInfo};

pub(super) type AdminFn = dyn Fn(RequestInfo<'_>) -> bool + Send + Sync;

/// The `GET /usage` endpoint: a tower [`Service`] answering with the caller's
/// usage records, read from a [`UsageSink`]: a page of them, one by id, or all
/// of them as an export.
///
/// It is `Clone`, always ready, and never fails (`Error = Infallible`): every
/// failure is an HTTP response, so axum's `Router::nest_service` (or tonic's
/// router) mounts it as it is, on any path.
///
/// # What it serves below its mount point
///
/// Nested with axum's `Router::nest_service(M, ..)`, it answers every path
/// below its mount point `M`:
///
/// | request | answer |
/// |---|---|
/// | `GET M` (or `M/`) | one page of records; with `format=ndjson` or `format=csv`, every matching record, streamed (see [exports](#exports)) |
/// | `GET M/{id}` | the record with this id, `200` with the record object; `404` when there is none *or* it is another consumer's (never `403`, so ids leak nothing); takes no parameters |
/// | `GET M/summary` | the usage summary (see [Summary](#summary-get-msummary)) |
/// | `GET M/openapi.json` | an OpenAPI 3.1 document of all of these, paths under `M`; needs no token |
/// | `GET M` from a browser, `M/page.js`, `M/page.css` | the usage page and its files (cargo feature `page`, on by default; see the `endpoint::page` module); need no token |
/// | `DELETE M?consumer=<id>` | only with [`allow_erasure`](UsageService::allow_erasure) (off by default: then `405`), only for an admin (`403` for a consumer): erases every record of that consumer ([`UsageSink::erase_consumer`]), `200` with `{"consumer": "<id>", "erased": <count>}`; `501` when the sink cannot erase |
/// | anything else below `M` | `404` |
///
/// Mounted any other way (`route_service(M, ..)`, tonic's router, a plain
/// hyper service) it serves the list, whatever the path, unless it is told
/// its [`mount_point`](UsageService::mount_point).
///
/// ```
/// use axum::Router;
/// use tower_usage::{MemorySink, UsageService};
///
/// let app: Router = Router::new().nest_service("/v1/usage", UsageService::new(MemorySink::new()));
/// ```
///
/// # Example
///
/// Mount it next to the routes that [`UsageLayer`](crate::UsageLayer) records,
/// with a clone of the same sink (sinks are cheap to clone):
///
/// ```
/// use axum::{routing::get, Router};
/// use tower_usage::{UsageService, UsageSink};
///
/// fn app<S: UsageSink + Clone>(sink: S) -> Router {
///     Router::new()
///         .route("/v1/hello", get(|| async { "hello" }))
///         .nest_service("/v1/usage", UsageService::new(sink))
/// }
/// ```
///
/// Then serve it as usual:
///
/// ```no_run
/// # use axum::{routing::get, Router};
/// # use tower_usage::{UsageService, UsageSink};
/// # async fn serve(sink: impl UsageSink + Clone) -> std::io::Result<()> {
/// // `sink`: a `MemorySink`, `SqliteSink`, ..., a clone of the layer's.
/// let app = Router::new()
///     .route("/v1/hello", get(|| async { "hello" }))
///     .nest_service("/v1/usage", UsageService::new(sink));
/// let listener = tokio::net::TcpListener::bind("127.0.0.1:3000").await?;
/// axum::serve(listener, app).await
/// # }
/// ```
///
/// ```text
/// $ curl -H 'Authorization: Bearer IncYP3edd3blm2ypLGFFOYwQsC5vff3n' \
///        'http://127.0.0.1:3000/v1/usage?limit=2&status=4xx&order=desc'
/// {"requests":[{"id":"01GPE5J0X7...","path":"/v1/hello",...}],"nextCursor":"MS5k..."}
/// ```
///
/// # Who sees what
///
/// The caller is identified with [`IdentifyConsumer`], by default the hash of its
/// `Authorization: Bearer` token, the same derivation as the layer's (give both the
/// same custom one if you change it). A caller sees only its own consumer's
/// records. A caller without a consumer gets `401`.
///
/// Seeing every consumer is opt-in: [`UsageService::admin`] takes a policy that
/// decides, per request, whether the caller is an admin. An admin sees every
/// consumer's records (anonymous ones included), may select one consumer with
/// `consumer=<id>`, and needs no consumer of its own.
///
/// # Query parameters
///
/// All are optional, each may be given once, and none may be empty. Names and
/// values are `application/x-www-form-urlencoded` (percent-decoded, `+` is a
/// space) and must be UTF-8 once decoded.
///
/// | parameter  | value                                                                  | default       |
/// |------------|------------------------------------------------------------------------|---------------|
/// | `limit`    | records per page, an integer from 1 to [`MAX_LIMIT`] (1000)            | [`DEFAULT_LIMIT`] (100) |
/// | `cursor`   | the `nextCursor` of the previous page, as it came                      | first page    |
/// | `since`    | RFC 3339 timestamp; records created at or after it                     |               |
/// | `until`    | RFC 3339 timestamp; records created before it; not before `since`      |               |
/// | `method`   | an HTTP method, case-insensitive (`get` is `GET`)                      |               |
/// | `path`     | the exact request path, starting with `/`; a trailing `*` makes it a prefix (`/rest/*`) | |
/// | `status`   | a status code (`404`) or a class (`4xx`, `1xx`..`5xx`)                 |               |
/// | `route`    | the exact route template (`/items/{id}`)                               |               |
/// | `outcome`  | how the exchange ended: `complete`, `client_gone`, `cancelled`, `error` |              |
/// | `traceId`  | the records of one W3C trace: 32 hex digits (see [tracing](crate::middleware#trace-correlation)) | |
/// | `order`    | `asc` (oldest first) or `desc` (newest first), by `createdAt` then `id` | `asc`        |
/// | `consumer` | admin only: the consumer id whose records to show                      | all consumers |
/// | `format`   | `ndjson` or `csv`: export every matching record (see [exports](#exports)) | one page of JSON |
/// | `bodies`   | with `format=csv` only: `true` adds the bodies as columns, `false` leaves them out | `false` |
///
/// A cursor is bound to the consumer scope and the order it was issued for; the
/// filters should stay the same from page to page. A page also ends early when
/// it would pass [`max_page_bytes`](UsageService::max_page_bytes) (1 MiB by
/// default); follow `nextCursor` as for any page.
///
/// # Summary: `GET M/summary`
///
/// The [`UsageSummary`](crate::sink::UsageSummary) of the same records
/// instead of a page: requests, `clientErrors` (4xx), `serverErrors` (5xx),
/// `requestBytes`, `responseBytes` and `durationUs` (`p50`, `p95`, `p99`,
/// `max`) per time bucket and group, and in `total`.
///
/// It takes `since`, `until`, `method`, `path`, `status`, `route`, `outcome`,
/// `traceId` and (admins) `consumer` as above, and:
///
/// | parameter  | value                                                                  | default       |
/// |------------|------------------------------------------------------------------------|---------------|
/// | `since`, `until` | as above                                                         | the last 24 hours up to now |
/// | `interval` | `minute`, `hour`, `day` or `month`: buckets start on UTC boundaries    | `day`         |
/// | `groupBy`  | comma-separated subset of `route`, `method`, `status` (the class), `outcome`, and `consumer` (admins only, `403` otherwise) | none |
///
/// A range touching more than [`MAX_BUCKETS`](crate::sink::MAX_BUCKETS)
/// (10,000) buckets of the interval is `400` naming `interval`; a summary
/// that would hold more buckets than that (time buckets times groups) is
/// `400` as an invalid query. `completeUntil` says up to when the counts are
/// complete: see [`recorder`](UsageService::recorder).
///
/// ```text
/// $ curl -H 'Authorization: Bearer IncYP3edd3blm2ypLGFFOYwQsC5vff3n' \
///        'http://127.0.0.1:3000/v1/usage/summary?interval=hour&groupBy=route,status'
/// {"since":"2026-11-28T12:00:00.001Z","until":"2026-11-29T12:00:00.001Z","interval":"hour",
///  "groupBy":["route","status"],"completeUntil":"2026-11-29T12:00:00.000Z","buckets":[...],"total":{...}}
/// ```
///
/// # Exports
///
/// `format=ndjson` answers every record that matches the filters (the list's
/// parameters, `order` included) with one record per line, each exactly as a
/// page shows it (`Content-Type: application/x-ndjson`); `format=csv` with a
/// header row and one row per record (`text/csv; charset=utf-8;
/// header=present`; the columns are listed in the [`endpoint`](crate::endpoint)
/// module's guide and the OpenAPI document). Both come with `Content-Disposition: attachment;
/// filename="usage-<UTC time>.<ndjson|csv>"` and no `Content-Length`.
///
/// There is no paging: `limit` and `cursor` are refused with `400`. The
/// [`UsageBody`](crate::endpoint::UsageBody) asks the sink for 500 records,
/// or [`max_page_bytes`](UsageService::max_page_bytes) of them, at a time
/// (each page within the [query timeout](UsageService::query_timeout)), the
/// next page only when the one before was sent, and writes frames of about
/// 256 KiB, so an export holds one page and one frame in memory however many
/// records match (see [Bounds](#bounds)). A sink that fails on the first
/// page is answered like a failed list (`503`); one that fails later ends the
/// body with the error, which cuts the transfer: the client sees an
/// incomplete response, never a file that looks complete.
///
/// # Responses
///
/// Every response but an export is JSON (`Content-Type: application/json`)
/// with `Cache-Control: no-store` and a `Content-Length`, in a
/// [`UsageBody`](crate::endpoint::UsageBody). Errors are `{"error": "<message>"}`, with
/// `"parameter": "<name>"` added when one parameter is to blame.
///
/// | status | when                                                                                 |
/// |--------|--------------------------------------------------------------------------------------|
/// | `200`  | `{"requests": [<record>...], "nextCursor": <string or null>}`; see [`UsageRecord`] for a record's form |
/// | `400`  | a bad, empty, repeated or unknown parameter (any parameter on `M/{id}` and `M/openapi.json`); `limit` or `cursor` with `format`, `bodies` without `format=csv`; query not UTF-8; the sink refused the cursor ([`InvalidCursor`](crate::SinkErrorKind::InvalidCursor), `"parameter": "cursor"`) or the query ([`InvalidQuery`](crate::SinkErrorKind::InvalidQuery)) |
/// | `401`  | no consumer (by default: no well-formed bearer token) and not an admin; with `WWW-Authenticate: Bearer` |
/// | `403`  | `consumer` given by a caller who is not an admin                                     |
/// | `404`  | `M/{id}` of a record that does not exist or is another consumer's; a path below `M` that is none of the above |
/// | `405`  | a method other than `GET` or `HEAD`; with `Allow: GET, HEAD`                         |
/// | `429`  | the caller's consumer has [`max_reads_per_consumer`](UsageService::max_reads_per_consumer) reads in progress already; with `Retry-After: 1` |
/// | `500`  | a page or record could not be rendered as JSON                                       |
/// | `503`  | an export while [`max_exports`](UsageService::max_exports) run already, with `Retry-After: 5`; or the sink is set up wrong ([`Config`](crate::SinkErrorKind::Config): the operator's fault, not the client's), failed in any other way, or did not answer within the [query timeout](UsageService::query_timeout); always the message `usage storage is unavailable` |
///
/// `HEAD` answers like `GET` (same status and headers, `Content-Length`
/// included; an export reads its first page) with an empty body. Messages of the sink's `InvalidCursor` and
/// `InvalidQuery` errors are shown to the client; every other sink error is
/// logged with `tracing` at `WARN` and answered with a fixed message, so nothing
/// of the storage's internals reaches the client.
///
/// Checks run in this order: method, path, caller (not for the OpenAPI
/// document), parameters (the first bad one in the query string decides the
/// error), then the sink. Nothing touches the sink
/// until the request is known to be valid.
///
/// Calls to this service are not recorded by [`UsageLayer`](crate::UsageLayer):
/// every response carries a marker in its extensions that the layer looks for.
///
/// # Bounds
///
/// What one caller can make the service hold, whatever the records hold and
/// however the caller behaves:
///
/// | what | bound | setting (default) |
/// |---|---|---|
/// | one page (`GET M`) | [`max_page_bytes`](UsageService::max_page_bytes) of rendered JSON, and about as many bytes of records loaded and decoded by the sink (the page's byte budget, [`UsageQuery::max_bytes`](crate::UsageQuery::max_bytes): a shipped sink stops reading rows past it); one record more when a single record is larger | 1 MiB |
/// | one export | one page of at most 500 records and `max_page_bytes` (loaded the same way) plus one frame of about 256 KiB, however many records match | 1 MiB + 256 KiB |
/// | exports at once | [`max_exports`](UsageService::max_exports), whoever asks; one more is `503` with `Retry-After` | 4 |
/// | a client that stops reading an export | after [`export_write_timeout`](UsageService::export_write_timeout) without taking a frame, the export drops its page and gives back its slots; what stays is the frame the server holds and the connection | 30 s |
/// | sink reads of one consumer at once | [`max_reads_per_consumer`](UsageService::max_reads_per_consumer) (pages, records, summaries, running exports); one more is `429` with `Retry-After`; admins are not limited | 2 |
/// | one sink read | [`query_timeout`](UsageService::query_timeout): then `503`, and the read is stopped, not only abandoned: `MemorySink` stops its scan, `SqliteSink` interrupts the statement (`sqlite3_interrupt`), `PostgresSink` cancels it on the server and closes its connection | 10 s |
///
/// `MemorySink` scans (pages and summaries) run on tokio's blocking pool,
/// `SqliteSink` reads on its own; neither runs on the application's workers.
/// A sink of your own gets the byte budget and the timeout as a hint: it is
/// dropped when the timeout fires, and how much it loads is its own (see
/// [`UsageQuery::read_enough`](crate::UsageQuery::read_enough)).
///
/// # Runtime
///
/// The query timeout uses Tokio's timer, so the service must run inside a Tokio
/// runtime with time enabled (as under `axum::serve` or `#[tokio::main]`).
#[derive(Clone)]
pub struct UsageService<S> {
    pub(super) sink: S,
    pub(super) identify: IdentifyConsumer,
    pub(super) admin: Option<Arc<AdminFn>>,
    pub(super) query_timeout: Duration,
    pub(super) max_page_bytes: usize,
    pub(super) grpc_json: Option<GrpcMessageJsonFn>,
    pub(super) mount_point: Option<Arc<str>>,
    pub(super) recorder: Option<UsageHandle>,
    pub(super) csv_formula_guard: bool,
    pub(super) limits: Arc<Limits>,
    pub(super) export_write_timeout: Duration,
    pub(super) erasure: bool,
}

impl<S, B> Service<Request<B>> for UsageService<S>
where
    S: UsageSink + Clone,
    B: Send + 'static,
{
    type Response = Response<UsageBody>;
    type Error = Infallible;
    type Future = ResponseFuture;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: Request<B>) -> Self::Future {
        let head = req.method() == Method::HEAD;
        #[cfg(feature = "page")]
        if let Some(res) = super::page::answer(&req, self.mount_point.as_deref()) {
            return ResponseFuture::ready(res, head);
        }
        let (action, consumer) = match self.prepare(&req) {
            Ok((Action::OpenApi { mount }, _)) => {
                return ResponseFuture::ready(response::openapi(openapi::document(&mount)), head)
            }
            Ok(prepared) => prepared,
            Err(refusal) => return ResponseFuture::refused(refusal, head),
        };
        // The limits, last: a request that would be refused anyway takes no slot.
        let read = match consumer.as_deref() {
            None => None,
            Some(own) => match self.limits.read(own) {
                Some(read) => Some(read),
                None => {
                    let limit = self.limits.reads_per_consumer();
                    return ResponseFuture::refused(Refusal::TooManyReads(limit), head);
                }
            },
        };
        let export = match &action {
            Action::List(ListRequest { answer, .. }) if answer.format.is_some() => {
                match self.limits.export() {
                    Some(slot) => Some(slot),
                    None => {
                        let limit = self.limits.max_exports();
                        return ResponseFuture::refused(Refusal::TooManyExports(limit), head);
                    }
                }
            }
            _ => None,
        };
        let held = Held::new(read, export);
        match action {
            Action::List(ListRequest { mut query, answer }) => {
                query.max_bytes = Some(self.max_page_bytes);
                match answer.format {
                    None => ResponseFuture::query(
                        self.sink.clone(),
                        query,
                        self.query_timeout,
                        self.grpc_json.clone(),
                        self.max_page_bytes,
                        held,
                        head,
                    ),
                    Some(format) => ResponseFuture::export(
                        export::fetcher(self.sink.clone(), self.query_timeout),
                        query,
                        Render {
                            format,
                            bodies: answer.bodies,
                            grpc_json: self.grpc_json.clone(),
                            neutralize: self.csv_formula_guard,
                        },
                        Stall {
                            held,
                            timeout: self.export_write_timeout,
                        },
                        head,
                    ),
                }
            }
            Action::Get { id, scope } => ResponseFuture::get(
                self.sink.clone(),
                id,
                scope,
                self.query_timeout,
                self.grpc_json.clone(),
                held,
                head,
            ),
            Action::Summary(query) => ResponseFuture::summary(
                self.sink.clone(),
                query,
                self.query_timeout,
                self.recorder.clone(),
                // A consumer's `completeUntil` is coarse; an admin's exact.
                consumer.is_some(),
                held,
                head,
            ),
            Action::OpenApi { mount } => {
                ResponseFuture::ready(response::openapi(openapi::document(&mount)), head)
            }
            Action::Erase { consumer } => {
                ResponseFuture::erase(self.sink.clone(), consumer, self.query_timeout)
            }
        }
    }
}

/// What a valid request asks for.
enum Action {
    List(ListRequest),
    Summary(SummaryQuery),
    Get { id: String, scope: ConsumerScope },
    OpenApi { mount: String },
    Erase { consumer: String },
}

impl<S> UsageService<S> {
    /// Validates a request and turns it into what to do, or refuses it.
    ///
    /// Checks run in this order: method, path, caller (not for the OpenAPI
    /// document, which holds nothing of anyone's), parameters. Also returns
    /// the caller's consumer, `None` for an admin.
    fn prepare<B>(&self, req: &Request<B>) -> Result<(Action, Option<String>), Refusal> {
        if self.erasure && req.method() == Method::DELETE {
            return self.prepare_erase(req);
        }
        if req.method() != Method::GET && req.method() != Method::HEAD {
            if self.erasure && Target::of(req, self.mount_point.as_deref()).0 == Target::List {
                return Err(Refusal::MethodAllowing("GET, HEAD, DELETE"));
            }
            return Err(Refusal::Method);
        }
        let (target, mount) = Target::of(req, self.mount_point.as_deref());
        match target {
            Target::NotFound => return Err(Refusal::NotFound),
            Target::OpenApi => {
                params::none(req.uri().query()).map_err(Refusal::Param)?;
                let mount = mount.unwrap_or("").trim_end_matches('/').to_owned();
                return Ok((Action::OpenApi { mount }, None));
            }
            Target::List | Target::Summary | Target::Record(_) => {}
        }

        let info = RequestInfo::from_request(req);
        let caller = if self.admin.as_ref().is_some_and(|is_admin| is_admin(info)) {
            Caller::Admin
        } else {
            match self.identify.identify(info) {
                Some(consumer) => Caller::Consumer(consumer),
                None => return Err(Refusal::Unauthorized(self.unauthorized_message())),
            }
        };
        let consumer = match &caller {
            Caller::Admin => None,
            Caller::Consumer(own) => Some(own.clone()),
        };
        let action = match target {
            Target::Summary => {
                params::parse_summary(req.uri().query(), caller, time::OffsetDateTime::now_utc())
                    .map(Action::Summary)
                    .map_err(Refusal::Param)
            }
            Target::Record(id) => {
                params::none(req.uri().query()).map_err(Refusal::Param)?;
                let scope = match caller {
                    Caller::Admin => ConsumerScope::All,
                    Caller::Consumer(own) => ConsumerScope::Consumer(own),
                };
                Ok(Action::Get {
                    id: id.to_owned(),
                    scope,
                })
            }
            _ => params::parse(req.uri().query(), caller)
                .map(Action::List)
                .map_err(Refusal::Param),
        }?;
        Ok((action, consumer))
    }

    /// `DELETE M?consumer=<id>` (erasure allowed): the list's path only, an
    /// admin only, then the one parameter.
    fn prepare_erase<B>(&self, req: &Request<B>) -> Result<(Action, Option<String>), Refusal> {
        match Target::of(req, self.mount_point.as_deref()).0 {
            Target::List => {}
            Target::NotFound => return Err(Refusal::NotFound),
            _ => return Err(Refusal::Method),
        }
        let info = RequestInfo::from_request(req);
        if !self.admin.as_ref().is_some_and(|is_admin| is_admin(info)) {
            return Err(match self.identify.identify(info) {
                Some(_) => Refusal::NotAdmin,
                None => Refusal::Unauthorized(self.unauthorized_message()),
            });
        }
        let consumer = super::erase::parse(req.uri().query()).map_err(Refusal::Param)?;
        Ok((Action::Erase { consumer }, None))
    }

    /// What a `401` says: how to send a bearer token, unless the consumer is
    /// derived some other way.
    fn unauthorized_message(&self) -> &'static str {
        if self.identify.is_bearer() {
            "missing or malformed bearer token: send `Authorization: Bearer <token>`"
        } else {
            "this request is not attributed to any consumer"
        }
    }
}

#[cfg(test)]
mod tests {
    use http::StatusCode;
    use http_body_util::BodyExt as _;

    use super::*;
    use crate::error::SinkError;
    use crate::marker::ServedByUsageService;
    use crate::sink::{UsagePage, UsageQuery};
    use crate::UsageRecord;

    #[derive(Clone)]
    struct NeverCalled;

    #[async_trait::async_trait]
    impl UsageSink for NeverCalled {
        async fn record(&self, _: &[UsageRecord]) -> Result<(), SinkError> {
            unreachable!("record is never called by the service")
        }
        async fn query(&self, _: &UsageQuery) -> Result<UsagePage, SinkError> {
            panic!("the sink must not be queried for a refused request")
        }
    }

    fn assert_send_sync<T: Send + Sync>() {}
    fn assert_send<T: Send>() {}

    #[test]
    fn public_types_are_send_and_sync() {
        assert_send_sync::<UsageService<NeverCalled>>();
        assert_send::<ResponseFuture>();
        assert_send_sync::<UsageBody>();
    }

    async fn call(
        svc: &mut UsageService<NeverCalled>,
        req: Request<()>,
    ) -> (StatusCode, http::HeaderMap, serde_json::Value) {
        let res = svc.call(req).await.unwrap_or_else(|e| match e {});
        assert!(res.extensions().get::<ServedByUsageService>().is_some());
        let (parts, body) = res.into_parts();
        let bytes = body.collect().await.unwrap().to_bytes();
        let json = if bytes.is_empty() {
            serde_json::Value::Null
        } else {
            serde_json::from_slice(&bytes).unwrap()
        };
        (parts.status, parts.headers, json)
    }

    #[tokio::test]
    async fn refusals_never_touch_the_sink() {
        let mut svc = UsageService::new(NeverCalled);
        let authed = |method: Method, uri: &str| {
            Request::builder()
                .method(method)
                .uri(uri)
                .header("authorization", "Bearer t0ken")
                .body(())
                .unwrap()
        };

        let (status, headers, body) = call(&mut svc, Request::get("/").body(()).unwrap()).await;
        assert_eq!(status, StatusCode::UNAUTHORIZED);
        assert_eq!(headers["www-authenticate"], "Bearer");
        assert_eq!(headers["cache-control"], "no-store");
        assert!(body["error"].as_str().unwrap().contains("bearer token"));

        let (status, _, body) = call(&mut svc, authed(Method::GET, "/?limit=0")).await;
        assert_eq!(status, StatusCode::BAD_REQUEST);
        assert_eq!(body["parameter"], "limit");

        let (status, _, body) = call(&mut svc, authed(Method::GET, "/?consumer=x")).await;
        assert_eq!(status, StatusCode::FORBIDDEN);
        assert_eq!(body["parameter"], "consumer");

        let (status, headers, body) = call(&mut svc, authed(Method::POST, "/")).await;
        assert_eq!(status, StatusCode::METHOD_NOT_ALLOWED);
        assert_eq!(headers["allow"], "GET, HEAD");
        assert!(body["error"].is_string());

        let (status, headers, body) = call(&mut svc, authed(Method::HEAD, "/?limit=0")).await;
        assert_eq!(status, StatusCode::BAD_REQUEST);
        assert_ne!(headers["content-length"], "0");
        assert_eq!(body, serde_json::Value::Null);
    }

    #[tokio::test]
    async fn custom_identification_says_so_when_it_finds_no_consumer() {
        let mut svc =
            UsageService::new(NeverCalled).identify_consumer(IdentifyConsumer::new(|_| None));
        let req = Request::get("/")
            .header("authorization", "Bearer t0ken")
            .body(())
            .unwrap();
        let (status, _, body) = call(&mut svc, req).await;
        assert_eq!(status, StatusCode::UNAUTHORIZED);
        assert_eq!(
            body["error"],
            "this request is not attributed to any consumer"
        );
    }

    #[test]
    fn debug_hides_the_closures() {
        let svc = UsageService::new(NeverCalled).admin(|_| true);
        let s = format!("{svc:?}");
        assert!(s.contains("NeverCalled"), "{s}");
        assert!(s.contains("admin: Some(Fn(..))"), "{s}");
    }
}
