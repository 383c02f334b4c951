//! The capture middleware, in tower-http's shape: [`UsageLayer`]
//! makes [`Usage`], whose [`ResponseFuture`] and bodies ([`RequestBody`],
//! [`ResponseBody`]) are transparent: every frame passes through unchanged,
//! `Data` and `Error` are the inner body's, `size_hint()` and `is_end_stream()`
//! forward, trailers pass through. On the way they keep a bounded copy of each
//! body ([`UsageLayer::max_body_bytes`](crate::UsageLayer::max_body_bytes)).
//!
//! On the request path the layer decides the protocol, the consumer and the
//! route once, packs what it must keep (path, query, route, headers) into one
//! buffer of its own, keeps body frames by reference as they pass, up to the
//! capture limit, and copies their prefix into that buffer when the exchange
//! ends. Everything else (redaction, query and param parsing, the token hash,
//! ids) happens in the background writer.
//!
//! ```
//! use axum::{routing::get, Router};
//! use tower_usage::{MemorySink, UsageLayer};
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() {
//! let sink = MemorySink::new();
//! let layer = UsageLayer::new(sink.clone());
//! let handle = layer.handle();
//! let app: Router = Router::new()
//!     .route("/hello", get(|| async { "hi" }))
//!     .layer(layer);
//! # let _ = (app, handle);
//! # }
//! ```
//!
//! # When the record is emitted
//!
//! Exactly once per request, at the first of:
//! * the response body's end: `Ready(None)`, `is_end_stream()` turning true after
//!   a frame, or a trailers frame ([`Outcome::Complete`](crate::Outcome::Complete));
//! * an error from the response body ([`Outcome::Error`](crate::Outcome::Error));
//! * the response body dropped before its end, the client gone
//!   ([`Outcome::ClientGone`](crate::Outcome::ClientGone)) — unless every byte of
//!   a body of known length was already sent, which is complete; for a gRPC call
//!   (request `content-type: application/grpc*`) the call was cancelled
//!   ([`Outcome::Cancelled`](crate::Outcome::Cancelled), `grpcStatus` `CANCELLED`
//!   unless the server had already sent a status in its headers);
//! * when the response arrives, for responses without a body to send: `HEAD`
//!   requests, `1xx`, `204` and `304` statuses, and bodies already at their end;
//! * the response future dropped or failing before a response (see
//!   [`ResponseFuture`]).
//!
//!
#![doc = include_str!("../docs/redaction.md")]
//!
//! # How records flow
//!
//! When an exchange ends, the layer pushes its raw capture onto a bounded queue:
//! a short, uncontended mutex push, never an `.await`. The writer task wakes every
//! [`max_delay`](crate::UsageLayer::max_delay), as soon as 64 captures are
//! waiting (or [`batch_size`](crate::UsageLayer::batch_size), or half of
//! [`queue_capacity`](crate::UsageLayer::queue_capacity), when smaller), or when
//! the captures held reach half of [`queue_bytes`](crate::UsageLayer::queue_bytes);
//! it takes up to [`batch_size`](crate::UsageLayer::batch_size)
//! of them, turns the captures into
//! [`UsageRecord`](crate::UsageRecord)s (redaction, query and route-param parsing, the token hash,
//! ids: all off the request path) and hands them to
//! [`UsageSink::record`](crate::UsageSink::record); then the next batch, at once
//! while enough are waiting.
//!
//! So batches size themselves to the load. While the sink keeps up, the writer
//! takes a few dozen captures at a time: one wake-up per run, and its code and
//! the sink's stay in the CPU's caches for the whole run (measured under load:
//! about 1 µs of CPU less per request than waking at 8 waiting; see
//! `benches/README.md`). While a `record` call is in flight, captures
//! pile up in the queue, and the next rounds write them in batches of up to
//! `batch_size`: a slow sink gets fewer, larger writes.
//!
//! Once a batch is written, the writer keeps what its records allocated for
//! the next ones: their strings and header maps (for up to 128 records), and
//! the capture buffers, which go back to the request path: a request packs
//! its capture into a buffer a written capture left (at most 64 such buffers
//! of at most 16 KiB wait, 256 KiB in all, plus one per thread that queues
//! captures). Under a steady load most captures then cost the allocator no
//! large allocation on the request path and no free on the writer (with
//! glibc's malloc, a buffer past 1 KiB takes its slow, locked paths both
//! ways); a buffer the pool has no room for is freed on the writer, and a
//! spare too small or more than twice too large for a capture is freed and
//! replaced. A sink that keeps a slice of a record's bytes keeps that buffer
//! from being reused, nothing more. The spares are freed when the writer
//! stops.
//!
//! Every capture is in exactly one place, and
//! [`WriterStats`](crate::WriterStats) shows them all at one instant:
//! `captured = written + failed + dropped + queued + in_flight`.
//!
//! * **Queue full:** the writer holds at most
//!   [`queue_capacity`](crate::UsageLayer::queue_capacity) captures and
//!   [`queue_bytes`](crate::UsageLayer::queue_bytes) bytes of them, its batch in
//!   hand included. Past that, the *new* capture is dropped and counted in
//!   [`WriterStats::dropped`](crate::WriterStats::dropped) (what is queued
//!   keeps its place, so records are stored in order); the request never waits.
//! * **Sink fails:** a batch whose error [is temporary](crate::SinkError::is_temporary)
//!   is retried with exponential backoff (100 ms, doubling, at most 2 s) for as
//!   long as the sink has been failing for less than
//!   [`max_retry_time`](crate::UsageLayer::max_retry_time) (5 minutes); new
//!   captures keep queueing meanwhile. Past that, or on a permanent error, the
//!   batch is counted in [`WriterStats::failed`](crate::WriterStats::failed);
//!   past it, a sink that hangs is probed every 2 s and the batches between
//!   probes fail at once, so a flush is bounded by time (see
//!   [`UsageHandle::flush`](crate::UsageHandle::flush)). One `tracing`
//!   warning is logged when a failure streak starts (the first failed call,
//!   not only once batches are given up), and one line when the sink
//!   recovers.
//! * **Sink stalls:** a `record` call that takes longer than
//!   [`sink_timeout`](crate::UsageLayer::sink_timeout) counts as a temporary failure.
//! * **Sink panics:** the panic is caught; its batch is counted as failed, one
//!   error is logged per streak, and the writer goes on.
//! * **Shutdown:** [`UsageHandle::shutdown_timeout`](crate::UsageHandle::shutdown_timeout)
//!   stops within a deadline and counts what it abandons as dropped.
//! * **Outages longer than the queue holds:** wrap the sink in one that
//!   buffers batches on local disk (see [`sink`](crate::sink)): the writer
//!   sees a sink that acknowledges a batch once it is on disk.
//!
//! # Runtime
//!
//! The writer is made when a layer is first used (it wraps a service, or hands
//! out a [`handle`](crate::UsageLayer::handle)), and spawned then on the current
//! tokio runtime when there is one. Outside a runtime, it starts the first time
//! the layer records or flushes from inside one; until then captures wait in the
//! queue (and are dropped, counted, once it is full). To run the writer on an
//! executor of your own, take it with [`UsageLayer::pair`](crate::UsageLayer::pair).
//!
#![doc = include_str!("../docs/configuration.md")]
#![doc = include_str!("../docs/tracing.md")]

mod body;
mod future;
mod layer;
mod lifecycle;
mod pack;
mod pending;
mod service;
mod tap;

pub use body::{RequestBody, ResponseBody};
pub use future::ResponseFuture;
pub use layer::UsageLayer;
pub use service::Usage;

pub use crate::record::{is_secret_name, REDACTED};
pub use crate::writer::UsageWorker;
