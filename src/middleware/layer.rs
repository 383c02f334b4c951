//! [`UsageLayer`]: the tower layer, and its configuration (capture settings and
//! writer settings, both plain values). The writer those settings make, and
//! when, is [`lifecycle`](super::lifecycle)'s.

use std::borrow::Cow;
use std::marker::PhantomData;
use std::sync::Arc;
use std::time::Duration;

use http::HeaderName;
use tower_layer::Layer;

use super::lifecycle::WriterSlot;
use super::service::Usage;
use crate::hooks::{default_route_fn, PolicyFn, RouteFn, SkipFn};
use crate::record::{NameRules, Redaction};
use crate::writer::{UsageHandle, UsageWorker, WriterConfig};
use crate::{IdentifyConsumer, RequestInfo, UsageSink};

/// Default [`max_body_bytes`](crate::UsageLayer::max_body_bytes) for each side: 64 KiB.
pub(crate) const DEFAULT_MAX_BODY_BYTES: usize = 64 * 1024;

/// Default [`max_header_bytes`](crate::UsageLayer::max_header_bytes): 8 KiB.
pub(crate) const DEFAULT_MAX_HEADER_BYTES: usize = 8 * 1024;

/// Response headers kept by default: `content-type`, `content-encoding`,
/// `content-length`, `location`, and gRPC's `grpc-status` and `grpc-message`
/// (which a trailers frame also provides).
pub(crate) const DEFAULT_KEPT_RESPONSE_HEADERS: &[&str] = &[
    "content-type",
    "content-encoding",
    "content-length",
    "location",
    "grpc-status",
    "grpc-message",
];

/// The layer's capture settings, shared by every request of a service.
#[derive(Clone)]
pub(crate) struct CaptureConfig {
    pub(crate) request_limit: usize,
    pub(crate) max_header_bytes: usize,
    pub(crate) response_limit: usize,
    pub(crate) capture_event_streams: bool,
    pub(crate) identify: IdentifyConsumer,
    pub(crate) route: RouteFn,
    pub(crate) skip: Option<SkipFn>,
    /// The capture policy hook; `None`: every exchange, both bodies.
    pub(crate) policy: Option<PolicyFn>,
    pub(crate) keep_response_headers: Vec<HeaderName>,
    pub(crate) redaction: Arc<Redaction>,
    /// The response header that carries the record id, when set.
    pub(crate) record_id_header: Option<HeaderName>,
}

impl Default for CaptureConfig {
    fn default() -> Self {
        Self {
            request_limit: DEFAULT_MAX_BODY_BYTES,
            max_header_bytes: DEFAULT_MAX_HEADER_BYTES,
            response_limit: DEFAULT_MAX_BODY_BYTES,
            capture_event_streams: false,
            identify: IdentifyConsumer::bearer(),
            route: default_route_fn(),
            skip: None,
            policy: None,
            keep_response_headers: DEFAULT_KEPT_RESPONSE_HEADERS
                .iter()
                .map(|h| HeaderName::from_static(h))
                .collect(),
            redaction: Arc::new(Redaction::default()),
            record_id_header: None,
        }
    }
}

/// Records every request through the wrapped service into a [`UsageSink`].
///
/// See the [crate docs](crate) for what is captured and where to put the layer,
/// and the [middleware docs](crate::middleware) for when records are emitted and
/// how they reach the sink. Every builder method documents its default.
///
/// # Settings and clones
///
/// Every setting belongs to the layer value it is set on, like any builder by
/// value: a clone made before a call keeps its own settings. The background
/// writer is made from the settings the first time the layer wraps a service
/// ([`Layer::layer`]) or hands out a [`handle`](Self::handle) or its worker
/// ([`pair`](Self::pair)); every clone made after that shares that one writer.
/// So set everything first, then use the layer. Changing a writer setting
/// (`queue_capacity`, `queue_bytes`, `batch_size`, `max_delay`, `max_retries`,
/// `max_retry_time`, `sink_timeout`) on a layer whose writer is already made gives that value a
/// writer of its own (and logs a warning): handles taken before do not control
/// it.
///
/// ```
/// use std::time::Duration;
/// use tower_usage::{MemorySink, UsageLayer, RequestInfo};
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() {
/// let sink = MemorySink::new();
/// let layer = UsageLayer::new(sink.clone())
///     .max_body_bytes(16 * 1024)
///     .skip_if(|req: RequestInfo<'_>| req.uri().path() == "/health")
///     .max_delay(Duration::from_millis(50));
/// let handle = layer.handle();
/// # let _ = (layer, handle);
/// # }
/// ```
pub struct UsageLayer<S> {
    capture: Arc<CaptureConfig>,
    /// The writer settings, and the writer of this value and of its clones,
    /// made on first use.
    writer: WriterSlot,
    _sink: PhantomData<fn() -> S>,
}

impl<S> Clone for UsageLayer<S> {
    fn clone(&self) -> Self {
        Self {
            capture: self.capture.clone(),
            writer: self.writer.clone(),
            _sink: PhantomData,
        }
    }
}

impl<S> std::fmt::Debug for UsageLayer<S> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("UsageLayer")
            .field("sink", &std::any::type_name::<S>())
            .field("max_request_body_bytes", &self.capture.request_limit)
            .field("max_response_body_bytes", &self.capture.response_limit)
            .field("writer", &self.writer.config())
            .field("started", &self.writer.is_made())
            .finish_non_exhaustive()
    }
}

impl<S: UsageSink> UsageLayer<S> {
    /// A layer recording into `sink`, with every default.
    ///
    /// The background writer is made, and spawned on the current tokio
    /// runtime, when the layer is first used (see [settings and
    /// clones](Self#settings-and-clones)); outside a runtime, it starts the
    /// first time the layer records or flushes from inside one (see
    /// [runtime](crate::middleware#runtime)), unless you run it yourself
    /// ([`pair`](Self::pair)).
    pub fn new(sink: S) -> Self {
        Self {
            capture: Arc::new(CaptureConfig::default()),
            writer: WriterSlot::new(Arc::new(sink)),
            _sink: PhantomData,
        }
    }
}

impl<S> UsageLayer<S> {
    fn config(&mut self) -> &mut CaptureConfig {
        Arc::make_mut(&mut self.capture)
    }

    /// Changes a writer setting (see [`WriterSlot::configure`]).
    fn writer_config(mut self, change: impl FnOnce(&mut WriterConfig)) -> Self {
        self.writer.configure(change);
        self
    }

    /// A handle to flush the writer, read its counters, and shut it down.
    pub fn handle(&self) -> UsageHandle {
        UsageHandle::new(self.writer.queue().clone())
    }

    /// The layer and its writer, as a future that you run on an executor of
    /// your choice, as tower's `Buffer::pair` does; the layer does not spawn
    /// anything itself then. For a runtime other than the ambient tokio one (a
    /// dedicated thread for the writer, say), or to supervise the writer.
    ///
    /// ```
    /// use tower_usage::{MemorySink, UsageLayer};
    ///
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() {
    /// let (layer, worker) = UsageLayer::new(MemorySink::new()).pair();
    /// let writer = tokio::spawn(worker);
    /// // ... serve requests through `layer` ...
    /// layer.handle().shutdown().await;
    /// writer.await.unwrap();
    /// # }
    /// ```
    pub fn pair(mut self) -> (Self, UsageWorker) {
        let worker = self.writer.pair();
        (self, worker)
    }

    /// The most bytes of each body (request and response) kept in a record.
    /// Default: 64 KiB.
    ///
    /// Bodies still pass through whole; past the limit the copy stops and the
    /// record says `truncated`, with the body's full size.
    pub fn max_body_bytes(mut self, limit: usize) -> Self {
        let c = self.config();
        c.request_limit = limit;
        c.response_limit = limit;
        self
    }

    /// The most bytes of request headers (names and values) a record keeps.
    /// Default: 8 KiB.
    ///
    /// Headers are kept in the order they came until the budget is spent; the
    /// one that crosses it keeps its name and the start of its value, ending in
    /// `[cut]`; the rest are left out. The record says how many bytes were not
    /// kept ([`CaptureNotes::request_headers_cut`](crate::CaptureNotes::request_headers_cut)).
    /// So a client sending huge headers costs the queue and the sink a few KiB
    /// per request, not what it sent. The consumer is still derived from the
    /// whole request.
    pub fn max_header_bytes(mut self, bytes: usize) -> Self {
        self.config().max_header_bytes = bytes;
        self
    }

    /// The most request-body bytes kept. Default: 64 KiB.
    pub fn max_request_body_bytes(mut self, limit: usize) -> Self {
        self.config().request_limit = limit;
        self
    }

    /// The most response-body bytes kept. Default: 64 KiB.
    pub fn max_response_body_bytes(mut self, limit: usize) -> Self {
        self.config().response_limit = limit;
        self
    }

    /// Whether to keep a copy of `text/event-stream` response bodies. Default:
    /// `false`: such responses are recorded with status and headers, and their
    /// size, but no body.
    pub fn capture_event_streams(mut self, capture: bool) -> Self {
        self.config().capture_event_streams = capture;
        self
    }

    /// How the consumer of a request is derived. Default:
    /// [`IdentifyConsumer::bearer`]. Give [`UsageService`](crate::UsageService)
    /// the same one.
    pub fn identify_consumer(mut self, identify: IdentifyConsumer) -> Self {
        self.config().identify = identify;
        self
    }

    /// How the route template of a request is found. Default: axum's
    /// `MatchedPath` (feature `axum`), or the path of a gRPC call; see
    /// [`default_route`](crate::default_route). Route params are derived from the template.
    pub fn route<F>(mut self, route: F) -> Self
    where
        F: Fn(RequestInfo<'_>) -> Option<String> + Send + Sync + 'static,
    {
        self.config().route = Arc::new(move |req| route(req).map(Cow::Owned));
        self
    }

    /// Requests for which `skip` returns `true` are not recorded (nor teed).
    /// Default: none are skipped. Calls to [`UsageService`](crate::UsageService)
    /// are never recorded, whatever this says.
    pub fn skip_if<F>(mut self, skip: F) -> Self
    where
        F: Fn(RequestInfo<'_>) -> bool + Send + Sync + 'static,
    {
        self.config().skip = Some(Arc::new(skip));
        self
    }

    /// What to keep of each exchange, decided once per request when it
    /// arrives, from its method, URI, headers, route and consumer
    /// ([`CaptureRequest`](crate::CaptureRequest)): record it or not, and
    /// which bodies to store, always, or only when the exchange is an error,
    /// slow, or in a random sample. See [`CapturePolicy`](crate::CapturePolicy).
    ///
    /// Default: no policy, which is [`CapturePolicy::new()`](crate::CapturePolicy::new)
    /// for every request: every exchange recorded with both bodies (up to
    /// [`max_body_bytes`](Self::max_body_bytes)). Requests that
    /// [`skip_if`](Self::skip_if) skips never reach the hook.
    ///
    /// A policy never drops the record of an exchange it does not
    /// [`skip`](crate::CapturePolicy::skip): sizes, status and durations stay
    /// exact, and a withheld body is marked in the record's
    /// [`CaptureNotes`](crate::CaptureNotes::request_body_policy). Asking for
    /// the consumer ([`CaptureRequest::consumer`](crate::CaptureRequest::consumer))
    /// derives it on the request path (once: the record reuses it); a policy
    /// that does not ask leaves that to the writer, as without a policy.
    ///
    /// ```
    /// use std::time::Duration;
    /// use tower_usage::{Bodies, CapturePolicy, CaptureRequest, MemorySink, UsageLayer};
    ///
    /// let layer = UsageLayer::new(MemorySink::new()).capture_policy(|req: &CaptureRequest<'_>| {
    ///     match req.route() {
    ///         Some("/health") => CapturePolicy::skip(),
    ///         // Large uploads: keep what was answered, and the upload's size.
    ///         Some("/files/{name}") => CapturePolicy::new().bodies(Bodies::ResponseOnly),
    ///         // A busy route: bodies of errors, of slow calls, and of 1 in 100.
    ///         Some("/search") => CapturePolicy::new()
    ///             .bodies_on_error()
    ///             .bodies_when_slower_than(Duration::from_millis(500))
    ///             .sample_bodies(100),
    ///         _ => CapturePolicy::new(),
    ///     }
    /// });
    /// # let _ = layer;
    /// ```
    pub fn capture_policy<F>(mut self, policy: F) -> Self
    where
        F: Fn(&crate::CaptureRequest<'_>) -> crate::CapturePolicy + Send + Sync + 'static,
    {
        self.config().policy = Some(Arc::new(policy));
        self
    }

    /// Also redacts these request and response headers (exact names), on top
    /// of the rules already set: adding never turns a default off. Default
    /// rule: secret names by word ([`is_secret_name`](crate::middleware::is_secret_name):
    /// `authorization`, `cookie`, `set-cookie`, `x-api-key`, `x-auth-token`,
    /// `x-session-id`, ..., but not `postman-token` or `www-authenticate`).
    /// Values marked [sensitive](http::HeaderValue::set_sensitive) are always
    /// redacted. See [redaction](crate::middleware#redaction).
    ///
    /// ```
    /// use http::HeaderName;
    /// use tower_usage::{MemorySink, UsageLayer};
    ///
    /// // `authorization` and `cookie` stay redacted.
    /// let layer = UsageLayer::new(MemorySink::new())
    ///     .redact_headers([HeaderName::from_static("x-tenant-signature")]);
    /// # let _ = layer;
    /// ```
    pub fn redact_headers<I>(self, names: I) -> Self
    where
        I: IntoIterator<Item = HeaderName>,
    {
        let names: Vec<HeaderName> = names.into_iter().collect();
        self.change_headers(|rules| rules.add_exact(names.iter().map(HeaderName::as_str)))
    }

    /// Also redacts headers whose name contains any of `patterns` (ASCII
    /// case-insensitive substrings), on top of the rules already set.
    pub fn redact_header_patterns<I, T>(self, patterns: I) -> Self
    where
        I: IntoIterator<Item = T>,
        T: AsRef<str>,
    {
        let patterns: Vec<T> = patterns.into_iter().collect();
        self.change_headers(|rules| rules.add_patterns(patterns.iter().map(AsRef::as_ref)))
    }

    /// **Replaces** every header redaction rule, the defaults included, with
    /// these exact names. Only values marked sensitive stay redacted besides.
    /// With an empty list, every other header is stored as it came, bearer
    /// tokens and cookies included: a loud name for a dangerous call.
    pub fn replace_redacted_headers<I>(self, names: I) -> Self
    where
        I: IntoIterator<Item = HeaderName>,
    {
        let names: Vec<HeaderName> = names.into_iter().collect();
        self.change_headers(|rules| {
            *rules = NameRules::default();
            rules.add_exact(names.iter().map(HeaderName::as_str));
        })
    }

    /// Also redacts these query parameters and body fields (exact names, ASCII
    /// case-insensitive, at any depth of a JSON body), on top of the rules
    /// already set: adding never turns a default off. Default rule: secret
    /// names by word ([`is_secret_name`](crate::middleware::is_secret_name):
    /// `password`, `access_token`, `client_secret`, `api_key`, `sessionId`,
    /// ..., but not `max_tokens`, `token_type` or `author`). See
    /// [redaction](crate::middleware#redaction).
    pub fn redact_fields<I, T>(self, names: I) -> Self
    where
        I: IntoIterator<Item = T>,
        T: AsRef<str>,
    {
        let names: Vec<T> = names.into_iter().collect();
        self.change_fields(|rules| rules.add_exact(names.iter().map(AsRef::as_ref)))
    }

    /// Also redacts query parameters and body fields whose name contains any of
    /// `patterns` (ASCII case-insensitive substrings), on top of the rules
    /// already set. The substring rule of earlier versions, for instance:
    ///
    /// ```
    /// use tower_usage::{MemorySink, UsageLayer};
    ///
    /// // Every name that merely contains `token` or `auth`, `max_tokens` too.
    /// let layer = UsageLayer::new(MemorySink::new()).redact_field_patterns([
    ///     "auth", "api-key", "apikey", "api_key", "secret", "token", "password",
    ///     "passwd", "pwd", "private_key", "credential",
    /// ]);
    /// # let _ = layer;
    /// ```
    pub fn redact_field_patterns<I, T>(self, patterns: I) -> Self
    where
        I: IntoIterator<Item = T>,
        T: AsRef<str>,
    {
        let patterns: Vec<T> = patterns.into_iter().collect();
        self.change_fields(|rules| rules.add_patterns(patterns.iter().map(AsRef::as_ref)))
    }

    /// **Replaces** every field redaction rule, the defaults included, with
    /// these exact names. With an empty list, passwords and tokens in queries
    /// and bodies are stored as they came: a loud name for a dangerous call.
    pub fn replace_redacted_fields<I, T>(self, names: I) -> Self
    where
        I: IntoIterator<Item = T>,
        T: AsRef<str>,
    {
        let names: Vec<T> = names.into_iter().collect();
        self.change_fields(|rules| {
            *rules = NameRules::default();
            rules.add_exact(names.iter().map(AsRef::as_ref));
        })
    }

    fn change_headers(mut self, change: impl FnOnce(&mut NameRules)) -> Self {
        let c = self.config();
        c.redaction = Arc::new(c.redaction.with_headers(change));
        self
    }

    fn change_fields(mut self, change: impl FnOnce(&mut NameRules)) -> Self {
        let c = self.config();
        c.redaction = Arc::new(c.redaction.with_fields(change));
        self
    }

    /// The response headers a record keeps, *replacing* the list: name every
    /// one you want. Default: `content-type`, `content-encoding`,
    /// `content-length`, `location`, `grpc-status`, `grpc-message`. Reading
    /// a body (its encoding, its charset, a form's fields) never depends on
    /// this list.
    pub fn keep_response_headers<I>(mut self, names: I) -> Self
    where
        I: IntoIterator<Item = HeaderName>,
    {
        self.config().keep_response_headers = names.into_iter().collect();
        self
    }

    /// Adds a response header carrying the id of the response's record, so a
    /// client can quote it (in a support ticket, say) and read the record back
    /// with `GET /usage/{id}` ([`UsageService`](crate::UsageService)).
    ///
    /// Default: off; no header is added and no id is made on the request path.
    /// When on, the id is made when the response head passes the layer (a
    /// ULID of the request's arrival time, as the writer would make it) and the
    /// writer uses it for the record. The header is added to every response
    /// that is recorded; not to responses of the usage endpoint, nor to
    /// requests the [`skip_if`](Self::skip_if) hook leaves out, nor when the inner
    /// service fails (no response); an existing header of that name is
    /// replaced.
    ///
    /// `usage-record-id` is a good name: `x-request-id` and `request-id`
    /// usually belong to tracing middleware (tower-http's `SetRequestId`) with
    /// ids of its own, and the `X-` prefix is deprecated for new headers
    /// (RFC 6648).
    ///
    /// ```
    /// use http::HeaderName;
    /// use tower_usage::{MemorySink, UsageLayer};
    ///
    /// let layer = UsageLayer::new(MemorySink::new())
    ///     .record_id_header(HeaderName::from_static("usage-record-id"));
    /// # let _ = layer;
    /// ```
    pub fn record_id_header(mut self, name: HeaderName) -> Self {
        self.config().record_id_header = Some(name);
        self
    }

    /// How many captures the writer may hold, queued or in its hands (the batch
    /// being written or retried); past it a new capture is dropped and counted
    /// (what is queued keeps its place). Default: 65,536
    ///,
    /// a minute at 1,000 requests per second. [`queue_bytes`](Self::queue_bytes)
    /// bounds the same captures by size.
    /// See [choosing the queue capacity](crate::middleware#choosing-the-queue-capacity),
    /// and [settings and clones](Self#settings-and-clones) for when writer
    /// settings take effect.
    pub fn queue_capacity(self, capacity: usize) -> Self {
        self.writer_config(|w| w.queue_capacity = capacity.max(1))
    }

    /// How many bytes of captures the writer may hold, queued or in its hands;
    /// past it a new capture is dropped and counted. A capture costs its packed
    /// buffer (headers and the kept body prefixes; counted by its capacity)
    /// plus about 200 bytes.
    /// Default: 256 MiB
    ///.
    pub fn queue_bytes(self, bytes: usize) -> Self {
        self.writer_config(|w| w.queue_bytes = bytes.max(1))
    }

    /// The most records per [`UsageSink::record`] call. The writer takes what is
    /// queued when it wakes, so batches are smaller under light load; see
    /// [how records flow](crate::middleware#how-records-flow). Default: 256
    ///.
    pub fn batch_size(self, size: usize) -> Self {
        self.writer_config(|w| w.batch_size = size.max(1))
    }

    /// The longest a capture waits in the queue before the writer takes it.
    /// Default: 100 ms.
    pub fn max_delay(self, delay: Duration) -> Self {
        self.writer_config(|w| w.max_delay = delay.max(Duration::from_micros(1)))
    }

    /// How long the writer retries while the sink fails with a temporary error
    /// (backoff 100 ms, doubling, at most 2 s): a batch is given up (counted
    /// in [`WriterStats::failed`](crate::WriterStats::failed)) once the sink
    /// has been failing for this long, and from then on each batch is tried
    /// once, until a write succeeds. Meanwhile new captures keep queueing (see
    /// [`queue_capacity`](Self::queue_capacity)). A permanent error fails its
    /// batch at once. Default: 5 minutes.
    /// Past it, while the sink *hangs* (its calls time out), a batch is tried
    /// only when 2 s have passed since the last call, and fails at once
    /// otherwise, so that a flush takes at most about this long plus two
    /// [`sink_timeout`](Self::sink_timeout)s, however much is queued (see
    /// [`UsageHandle::flush`](crate::UsageHandle::flush)).
    pub fn max_retry_time(self, time: Duration) -> Self {
        self.writer_config(|w| w.max_retry_time = time)
    }

    /// The most retries of one batch, on top of
    /// [`max_retry_time`](Self::max_retry_time). Default: no limit
    /// (`u32::MAX`): retries are bounded by time.
    pub fn max_retries(self, retries: u32) -> Self {
        self.writer_config(|w| w.max_retries = retries)
    }

    /// How long one [`UsageSink::record`] call may take before it counts as a
    /// temporary failure. Default: 30 s.
    pub fn sink_timeout(self, timeout: Duration) -> Self {
        self.writer_config(|w| w.sink_timeout = timeout.max(Duration::from_micros(1)))
    }
}

impl<S, Inner> Layer<Inner> for UsageLayer<S> {
    type Service = Usage<Inner>;

    fn layer(&self, inner: Inner) -> Self::Service {
        Usage::new(inner, self.capture.clone(), self.writer.queue().clone())
    }
}
