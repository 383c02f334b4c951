//! [`UsageService`]'s builder: its defaults and every setting, and its `Debug`.

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use super::limits::{Limits, DEFAULT_MAX_EXPORTS, DEFAULT_READS_PER_CONSUMER};
use super::service::UsageService;
use crate::record::GrpcDirection;
use crate::sink::UsageSink;
use crate::writer::UsageHandle;
use crate::{IdentifyConsumer, RequestInfo};

/// The default of [`UsageService::query_timeout`].
const DEFAULT_QUERY_TIMEOUT: Duration = Duration::from_secs(10);

/// The default of [`UsageService::max_page_bytes`]: 1 MiB.
pub const DEFAULT_MAX_PAGE_BYTES: usize = 1024 * 1024;

/// The default of [`UsageService::export_write_timeout`].
const DEFAULT_EXPORT_WRITE_TIMEOUT: Duration = Duration::from_secs(30);

impl<S: UsageSink + Clone> UsageService<S> {
    /// A service reading from `sink`, with the default bearer-token consumer,
    /// no admin access, and a 10 second query timeout.
    pub fn new(sink: S) -> Self {
        Self {
            sink,
            identify: IdentifyConsumer::bearer(),
            admin: None,
            query_timeout: DEFAULT_QUERY_TIMEOUT,
            max_page_bytes: DEFAULT_MAX_PAGE_BYTES,
            grpc_json: None,
            mount_point: None,
            recorder: None,
            csv_formula_guard: true,
            limits: Limits::new(DEFAULT_READS_PER_CONSUMER, DEFAULT_MAX_EXPORTS),
            export_write_timeout: DEFAULT_EXPORT_WRITE_TIMEOUT,
            erasure: false,
        }
    }

    /// Opts in to erasure over HTTP: `DELETE M?consumer=<id>` from an
    /// [admin](Self::admin) erases every record of that consumer
    /// ([`UsageSink::erase_consumer`], the right to be forgotten) and answers
    /// `200` with `{"consumer": "<id>", "erased": <count>}`. A caller who is
    /// not an admin gets `403` (`401` without a consumer); a sink that cannot
    /// erase, `501`. The erasure runs within the
    /// [query timeout](Self::query_timeout) (then `503`; erasing again is
    /// harmless, and answers the count still left).
    ///
    /// Default: off, and `DELETE` is answered `405` like any method but
    /// `GET` and `HEAD`, as if the service could not erase at all.
    ///
    /// ```
    /// use tower_usage::{MemorySink, RequestInfo, UsageService};
    ///
    /// let usage = UsageService::new(MemorySink::new())
    ///     .admin(|req: RequestInfo<'_>| {
    ///         req.headers().get("x-admin-key").is_some_and(|k| k == "s3cret")
    ///     })
    ///     .allow_erasure(true);
    /// ```
    pub fn allow_erasure(mut self, on: bool) -> Self {
        self.erasure = on;
        self
    }

    /// How many sink reads (a page, a record, a summary, an export while it
    /// runs) one consumer may have in progress at once; one more is answered
    /// `429 Too Many Requests` with `Retry-After: 1` and a JSON error, without
    /// touching the sink. So one consumer cannot take every read connection
    /// (or every blocking thread) from the others. Admins are not limited
    /// per consumer.
    ///
    /// Default: 2; at least 1.
    /// Clones share the counts; setting it starts new counts, so set it
    /// before cloning.
    pub fn max_reads_per_consumer(mut self, n: usize) -> Self {
        self.limits = Limits::new(n, self.limits.max_exports());
        self
    }

    /// How many exports (`format=ndjson` or `csv`) may run at once, whoever
    /// asks; one more is answered `503` with `Retry-After: 5` and a JSON
    /// error. An export holds its slot until its body ends, fails, or is cut
    /// by the [write timeout](Self::export_write_timeout).
    ///
    /// Default: 4; at least 1. Clones share the slots; set it before cloning.
    pub fn max_exports(mut self, n: usize) -> Self {
        self.limits = Limits::new(self.limits.reads_per_consumer(), n);
        self
    }

    /// How long an export waits for its client to take the next frame. When
    /// the server has asked for no frame for this long (the client stopped
    /// reading and the socket's buffers are full) and no page is being read,
    /// the export drops the page it holds and gives back its slots; the body
    /// then ends with an error if the server polls it again. What a stalled
    /// client costs is then the frame the server holds (about 256 KiB) and its
    /// connection, which the server keeps until the client goes (give the
    /// server an idle timeout for that).
    ///
    /// Default: 30 seconds.
    pub fn export_write_timeout(mut self, timeout: Duration) -> Self {
        self.export_write_timeout = timeout;
        self
    }

    /// The handle of the layer whose records this service reads, for the
    /// summary's `completeUntil`: no later than the arrival of any exchange
    /// still in flight (a long poll, a stream, a slow upload) or not yet
    /// stored (everything that arrived before it is counted), or the time of
    /// the read when nothing is pending.
    ///
    /// Default: none; `completeUntil` is then the time of the read, which
    /// knows nothing of the writer's queue: records created shortly before it
    /// may still be on their way (up to the layer's
    /// [`max_delay`](crate::UsageLayer::max_delay), more while the sink
    /// fails and the writer retries).
    ///
    /// ```
    /// use tower_usage::{MemorySink, UsageLayer, UsageService};
    ///
    /// let sink = MemorySink::new();
    /// let layer = UsageLayer::new(sink.clone());
    /// let usage = UsageService::new(sink).recorder(layer.handle());
    /// # let _ = usage;
    /// ```
    pub fn recorder(mut self, handle: UsageHandle) -> Self {
        self.recorder = Some(handle);
        self
    }

    /// Serves the paths below `path` (`/v1/usage/{id}`, `/v1/usage/summary`,
    /// ...) where the router hands the service the whole path: tonic's router,
    /// a plain hyper service, axum's `route_service` with a wildcard. The
    /// service strips `path` itself; a request path that is not `path` or
    /// below it is `404`.
    ///
    /// Default: none. Not needed with axum's `Router::nest_service`, which
    /// strips the prefix and tells the service (and with which this setting
    /// must not be used: the paths it hands over no longer start with
    /// `path`). Without either, the service answers every path with the list.
    ///
    /// ```
    /// use tower_usage::{MemorySink, UsageService};
    ///
    /// // Say, behind a router that sends `/v1/usage` and `/v1/usage/*` here.
    /// let usage = UsageService::new(MemorySink::new()).mount_point("/v1/usage");
    /// # let _ = usage;
    /// ```
    pub fn mount_point(mut self, path: &str) -> Self {
        let trimmed = path.trim_end_matches('/');
        self.mount_point = Some(Arc::from(trimmed));
        self
    }

    /// How the caller's consumer is derived; give the layer the same one.
    ///
    /// Default: [`IdentifyConsumer::bearer()`], the hash of the
    /// `Authorization: Bearer` token. A request for which it gives `None` is
    /// answered `401` unless the [admin policy](Self::admin) accepts it.
    pub fn identify_consumer(mut self, identify: IdentifyConsumer) -> Self {
        self.identify = identify;
        self
    }

    /// Opts in to admin access: requests for which `is_admin` returns `true` see
    /// every consumer's records, may select one with `consumer=<id>`, and need no
    /// consumer of their own.
    ///
    /// Default: no admin; every caller sees only its own records, and
    /// `consumer=` is answered `403`. The policy is called once per request
    /// that gets past the method check.
    ///
    /// ```
    /// use tower_usage::{RequestInfo, UsageService, UsageSink};
    ///
    /// /// Put in the request extensions by an auth layer earlier in the stack.
    /// #[derive(Clone, PartialEq)]
    /// enum Role { Admin, Member }
    ///
    /// fn usage_endpoint<S: UsageSink + Clone>(sink: S) -> UsageService<S> {
    ///     UsageService::new(sink).admin(|req: RequestInfo<'_>| {
    ///         req.extensions().get::<Role>() == Some(&Role::Admin)
    ///     })
    /// }
    /// ```
    pub fn admin<F>(mut self, is_admin: F) -> Self
    where
        F: Fn(RequestInfo<'_>) -> bool + Send + Sync + 'static,
    {
        self.admin = Some(Arc::new(is_admin));
        self
    }

    /// Renders gRPC messages as JSON too: `to_json` gets the method path
    /// (`/pkg.Service/Method`), the direction, and the bytes of each whole,
    /// uncompressed message, and returns its JSON, or `None` to leave it as
    /// base64. The JSON is added beside the base64 `data`, as `"json"`; see
    /// the crate docs on [gRPC](crate#grpc) for the shape of a gRPC body.
    ///
    /// Default: none; messages are base64 only. The hook runs when a page is
    /// served, so records stay raw in every sink. Its output is shown as it is:
    /// field redaction does not apply to it (nor to the base64 bytes), so leave
    /// out what must not be shown.
    ///
    /// With prost types the service already has (deriving `serde::Serialize`
    /// next to `prost::Message`):
    ///
    /// ```
    /// use tower_usage::GrpcDirection;
    /// use tower_usage::{MemorySink, UsageService};
    ///
    /// #[derive(Clone, PartialEq, prost::Message, serde::Serialize)]
    /// struct HelloRequest {
    ///     #[prost(string, tag = "1")]
    ///     name: String,
    /// }
    ///
    /// let usage = UsageService::new(MemorySink::new()).grpc_message_json(
    ///     |path: &str, direction: GrpcDirection, bytes: &[u8]| {
    ///         use prost::Message as _;
    ///         match (path, direction) {
    ///             ("/hello.Greeter/SayHello", GrpcDirection::Request) => {
    ///                 let msg = HelloRequest::decode(bytes).ok()?;
    ///                 serde_json::to_value(msg).ok()
    ///             }
    ///             _ => None,
    ///         }
    ///     },
    /// );
    /// # let _ = usage;
    /// ```
    pub fn grpc_message_json<F>(mut self, to_json: F) -> Self
    where
        F: Fn(&str, GrpcDirection, &[u8]) -> Option<serde_json::Value> + Send + Sync + 'static,
    {
        self.grpc_json = Some(Arc::new(to_json));
        self
    }

    /// How long a sink query may take before the service answers `503`.
    ///
    /// Default: 10 seconds. When it runs out, the query's future is dropped,
    /// and the shipped sinks stop the work with it: `MemorySink` stops its
    /// scan (within 1024 records), `SqliteSink` interrupts the statement on
    /// its read connection (an in-memory database's queries, which run on the
    /// writer's thread, run to their end), `PostgresSink` sends the server a
    /// cancel request and closes the connection instead of giving it back to
    /// the pool. Each page of an export gets the same timeout.
    pub fn query_timeout(mut self, timeout: Duration) -> Self {
        self.query_timeout = timeout;
        self
    }

    /// Whether CSV exports neutralise cells a spreadsheet would run as a
    /// formula: a cell that starts with `=`, `+`, `-`, `@`, a tab or a
    /// carriage return is written with a `'` in front, as OWASP recommends
    /// against CSV injection, so that an admin who opens an export in Excel,
    /// LibreOffice or Google Sheets sees text, not a formula a client planted
    /// in a path, a query or a body.
    ///
    /// Default: `true`. `false` writes every cell as it is (for a program
    /// that reads the file, not a spreadsheet); NDJSON exports are never
    /// changed.
    ///
    /// ```
    /// use tower_usage::{MemorySink, UsageService};
    ///
    /// // Exports read by a script, never opened in a spreadsheet.
    /// let usage = UsageService::new(MemorySink::new()).csv_formula_guard(false);
    /// # let _ = usage;
    /// ```
    pub fn csv_formula_guard(mut self, on: bool) -> Self {
        self.csv_formula_guard = on;
        self
    }

    /// The most bytes of records one page holds. A page that would be larger
    /// ends early, after the last record that fits (always at least one), with
    /// a `nextCursor` to the rest: `limit` is the most records a page holds,
    /// this the most bytes. So one response, held in memory until the client
    /// has read it, stays small whatever the records hold. The sink gets it
    /// as the page's byte budget ([`UsageQuery::max_bytes`](crate::UsageQuery::max_bytes)),
    /// so that what it loads and decodes stays about as small; an export reads
    /// its pages with the same budget.
    ///
    /// Default: 1 MiB ([`DEFAULT_MAX_PAGE_BYTES`]).
    pub fn max_page_bytes(mut self, bytes: usize) -> Self {
        self.max_page_bytes = bytes;
        self
    }
}

impl<S> fmt::Debug for UsageService<S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("UsageService")
            .field("sink", &format_args!("{}", std::any::type_name::<S>()))
            .field("identify", &self.identify)
            .field(
                "admin",
                &self.admin.as_ref().map(|_| format_args!("Fn(..)")),
            )
            .field("allow_erasure", &self.erasure)
            .field("query_timeout", &self.query_timeout)
            .field("max_page_bytes", &self.max_page_bytes)
            .field("mount_point", &self.mount_point)
            .field(
                "grpc_message_json",
                &self.grpc_json.as_ref().map(|_| format_args!("Fn(..)")),
            )
            .field("recorder", &self.recorder.is_some())
            .field("csv_formula_guard", &self.csv_formula_guard)
            .field("limits", &self.limits)
            .field("export_write_timeout", &self.export_write_timeout)
            .finish()
    }
}
