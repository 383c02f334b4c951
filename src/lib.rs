//! A per-consumer API usage log for any tower service.
//!
//! [`UsageLayer`] captures every request (method, path, route and route params,
//! query, headers, body) and its response (status, body, timing) into a pluggable
//! [`UsageSink`]; [`UsageService`] serves `GET /usage` from any sink, so each API
//! consumer can read its own request history, and `GET /usage/summary`: counts,
//! errors, bytes and latency percentiles per hour, day or month, per route or
//! status (see the [`endpoint`] module).
//!
//! # Quick start (axum)
//!
//! ```no_run
//! use axum::{routing::get, Router};
//! use tower_usage::{MemorySink, UsageLayer, UsageService};
//!
//! #[tokio::main]
//! async fn main() {
//!     let sink = MemorySink::new();
//!     let app = Router::new()
//!         .route("/hello/{name}", get(|| async { "hi" }))
//!         .nest_service("/v1/usage", UsageService::new(sink.clone()))
//!         .layer(UsageLayer::new(sink));
//!
//!     let listener = tokio::net::TcpListener::bind("127.0.0.1:3000").await.unwrap();
//!     axum::serve(listener, app).await.unwrap();
//! }
//! ```
//!
//! Then `curl -H 'Authorization: Bearer my-token' localhost:3000/v1/usage` lists
//! the requests made with that token, and `/v1/usage/summary`,
//! `/v1/usage/{id}` and `/v1/usage/openapi.json` answer below it
//! (`nest_service`: with `route_service` only the list's own path is served).
//!
//! The same app, called in-process (as a test of yours might): records reach
//! the sink in the background, so flush the layer's
//! [`handle`](UsageLayer::handle) before reading them back.
//!
//! ```
//! use axum::{body::Body, routing::get, Router};
//! use http::{Request, StatusCode};
//! use http_body_util::BodyExt as _;
//! use tower::ServiceExt as _;
//! use tower_usage::{MemorySink, UsageLayer, UsageService};
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() {
//! let sink = MemorySink::new();
//! let layer = UsageLayer::new(sink.clone());
//! let handle = layer.handle();
//! let app = Router::new()
//!     .route("/hello/{name}", get(|| async { "hi" }))
//!     .nest_service("/v1/usage", UsageService::new(sink))
//!     .layer(layer);
//!
//! let get = |uri: &str| {
//!     let req = Request::get(uri).header("authorization", "Bearer my-token");
//!     app.clone().oneshot(req.body(Body::empty()).unwrap())
//! };
//! assert_eq!(get("/hello/you").await.unwrap().status(), StatusCode::OK);
//! handle.flush().await;
//!
//! let page = get("/v1/usage").await.unwrap();
//! assert_eq!(page.status(), StatusCode::OK);
//! let page: serde_json::Value =
//!     serde_json::from_slice(&page.into_body().collect().await.unwrap().to_bytes()).unwrap();
//! assert_eq!(page["requests"][0]["route"], "/hello/{name}");
//! assert_eq!(page["requests"][0]["request"]["params"]["name"], "you");
//!
//! for below in ["/v1/usage/summary", "/v1/usage/openapi.json"] {
//!     assert_eq!(get(below).await.unwrap().status(), StatusCode::OK, "{below}");
//! }
//! # }
//! ```
//!
//! # What is captured
//!
//! | field | source |
//! |---|---|
//! | `consumer` | [`IdentifyConsumer`]: by default a hash of the bearer token (the token is never stored) |
//! | `method`, `path` | the request line; `path` without the query string |
//! | `route`, `request.params` | the route template ([`default_route`]) and the params matched from it |
//! | `request.query` | the query string, parsed; repeated keys become arrays |
//! | `request.headers` | every header, names lower-case, repeats joined, secrets [redacted](middleware#redaction); at most [`max_header_bytes`](UsageLayer::max_header_bytes) |
//! | `request.body`, `response` | the first [`max_body_bytes`](UsageLayer::max_body_bytes) of each body, with its size and a `truncated` flag |
//! | `responseHeaders` | [`keep_response_headers`](UsageLayer::keep_response_headers) |
//! | `status`, `outcome` | the response status; how the exchange ended ([`Outcome`]) |
//! | `createdAt`, `durationUs` | arrival time (UTC, ms); arrival to end of the response body |
//! | `capture` | what could not be kept as it was: headers cut, a body the handler did not read, a body the [capture policy](UsageLayer::capture_policy) withheld ([`CaptureNotes`]) |
//!
//! Bodies are teed, never buffered: frames pass through as they come, and the
//! copy stops at the limit. All parsing, rendering and redaction happens in the
//! background writer ([how records flow](middleware#how-records-flow)), not on
//! the request path. Every setting, with its default:
//! [configuration](middleware#configuration).
//!
//! # Where to put the layer
//!
//! | placement | route and params | what is recorded |
//! |---|---|---|
//! | `Router::layer(UsageLayer::new(sink))` (recommended with axum) | yes, from axum's `MatchedPath` | every request, fallback 404s included (without a route) |
//! | `Router::route_layer(...)` | yes | only requests that matched a route |
//! | around the whole app (`ServiceBuilder::new().layer(..).service(router)`, a plain hyper service, tonic's `Server::builder().layer(..)`) | only with a [`route`](UsageLayer::route) hook; gRPC calls always get their method path | every request |
//!
//! gRPC needs no other layer: the same `UsageLayer` goes on tonic's server and
//! records status, messages and counts; see [gRPC](#grpc) below (also for
//! serving `/usage` next to a tonic server).
//!
//! Put the layer *inside* authentication layers that insert the consumer into
//! the request extensions (so [`IdentifyConsumer`] can see it). Put it *inside*
//! compression too (add the compression layer after it, so that compression
//! wraps it): the log then holds the bodies as the handler wrote them. Outside
//! it, the layer sees compressed bodies, which the writer decodes when it can
//! and otherwise does not store (the record's [`CaptureNotes`] say so).
//!
//! # When a record is emitted
//!
//! Exactly once per request; see
//! [`middleware`](crate::middleware#when-the-record-is-emitted). Calls to
//! [`UsageService`] are not recorded.
//!
#![doc = include_str!("docs/reliability.md")]
//!
#![doc = include_str!("docs/grpc.md")]
//!
//! # The map
//!
//! The source follows one request, folder by folder, from the layer to a row and
//! back out of `/usage`; dependencies point one way, down this list's arrows:
//!
//! | where | what |
//! |---|---|
//! | `hooks.rs`, `hooks/` | [`RequestInfo`], [`IdentifyConsumer`] (and its cache of recent tokens' consumer ids), the route and skip hooks, the capture policy ([`CapturePolicy`]); the request's protocol, decided once |
//! | `middleware/` | [`UsageLayer`] (settings; `lifecycle.rs` makes its writer) → [`middleware::Usage`] → its future and bodies: tees the exchange, packs it, hands it to the queue |
//! | `captured.rs` | the queued form of one exchange: one buffer (a leaf between the middleware and the writer) |
//! | `writer/` | the bounded queue, the worker (batches; `retry.rs`: retries, timeouts; [`UsageLayer::pair`]), [`UsageHandle`]; assembles each record; knows no spool |
//! | `record/` | [`UsageRecord`] and its parts; redaction, route params, gRPC framing, time, the wire form (`wire/`): pure functions over the data |
//! | `codec/` | the header-map encodings the sinks share |
//! | `sink/` | [`UsageSink`], [`UsageQuery`], cursors, [`UsagePage`]; `summary/` (what a summary asks and answers, buckets, percentiles); [`MemorySink`], and `sql/` shared by `sqlite/` and `postgres/`; `spool/`: `Spooled`, a disk spool around any sink (feature `spool`); `clickhouse/`: `ClickHouseSink` (feature `clickhouse`) |
//! | `endpoint/` | [`UsageService`]: `GET /usage`, one record, exports, the summary and the OpenAPI document below it; parameters straight into a [`UsageQuery`] or a [`SummaryQuery`](sink::SummaryQuery), responses |
//! | `error.rs` | [`SinkError`], what every sink reports |
//! | `streak.rs` | one log line per failure streak (the writer, the spool, `GET /usage`, the SQLite writer) |
//! | `metrics.rs` | the metrics' names, units and help (feature `metrics`), reported by the writer and the spool |
//! | `marker.rs` | how the endpoint tells the middleware "do not record me" |
//! | `testing/` | the sink conformance kit (feature `testing`) |
//! | `fuzzing.rs` | the fuzz targets' entry points (`--cfg fuzzing`, and the tests that replay their findings) |
//! | `docs/` | the long guides these docs include (configuration, redaction, trace correlation, reliability, gRPC, the endpoint, writing a sink) |
//!
//! The module graph, as `tests/layout.rs` checks it (a module uses only
//! modules below it; doc links aside):
//!
//! ```text
//! testing    -> sink, record, error
//! fuzzing    -> record, hooks, sink
//! middleware -> writer, captured, sink, codec, record, hooks, marker, error
//! endpoint   -> writer, sink, record, hooks, marker, error, streak
//! writer     -> captured, sink, record, hooks, error, streak, metrics
//! captured   -> codec, record, hooks
//! sink       -> codec, record, error, streak, metrics
//! record     -> hooks, codec
//! codec      -> error
//! hooks, marker, error, streak, metrics: leaves
//! ```
#![cfg_attr(docsrs, feature(doc_cfg))]

mod captured;
mod codec;
pub mod endpoint;
mod error;
#[cfg(any(fuzzing, test))]
#[doc(hidden)]
pub mod fuzzing;
mod hooks;
mod marker;
#[cfg(feature = "metrics")]
#[cfg_attr(docsrs, doc(cfg(feature = "metrics")))]
pub mod metrics;
pub mod middleware;
mod record;
pub mod sink;
mod streak;
#[cfg(feature = "testing")]
#[cfg_attr(docsrs, doc(cfg(feature = "testing")))]
pub mod testing;
mod writer;

pub use endpoint::UsageService;
pub use error::{SinkError, SinkErrorKind};
pub use hooks::{
    bearer_token, default_route, hash_token, Bodies, CapturePolicy, CaptureRequest,
    IdentifyConsumer, RequestInfo,
};
pub use middleware::UsageLayer;
pub use record::{
    CaptureNotes, CapturedBody, GrpcCall, GrpcDirection, GrpcMessage, Outcome, RecordedRequest,
    TraceContext, UsageRecord, MAX_JSON_DEPTH,
};
#[cfg(feature = "clickhouse")]
pub use sink::clickhouse::ClickHouseSink;
pub use sink::memory::MemorySink;
#[cfg(feature = "postgres")]
pub use sink::postgres::PostgresSink;
#[cfg(feature = "sqlite")]
pub use sink::sqlite::SqliteSink;
pub use sink::{UsagePage, UsageQuery, UsageSink};
pub use writer::{FlushOutcome, RecorderStats, UsageHandle, UsageWorker, WriterStats};

/// The README's examples, compiled as doc tests.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
struct ReadmeDoctests;
