//! [`UsageLayer`]: the tower layer, and its configuration.

use std::borrow::Cow;
use std::marker::PhantomData;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use http::HeaderName;
use tower_layer::Layer;

use crate::capture::Config;
use crate::recorder::{Recorder, UsageHandle};
use crate::service::UsageCapture;
use crate::{IdentifyConsumer, RequestInfo, UsageSink};

/// Records every request through the wrapped service into a [`UsageSink`].
///
/// See the [crate docs](crate) for what is captured, where to put the layer, and
/// when records are emitted. Every builder method documents its default.
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
    config: Arc<Config>,
    recorder: Recorder,
    _sink: PhantomData<fn() -> S>,
}

impl<S> Clone for UsageLayer<S> {
    fn clone(&self) -> Self {
        Self {
            config: self.config.clone(),
            recorder: self.recorder.clone(),
            _sink: PhantomData,
        }
    }
}

impl<S> std::fmt::Debug for UsageLayer<S> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("UsageLayer")
            .field("sink", &std::any::type_name::<S>())
            .field("max_request_body_bytes", &self.config.request_limit)
            .field("max_response_body_bytes", &self.config.response_limit)
            .field("recorder", &self.recorder)
            .finish_non_exhaustive()
    }
}

impl<S: UsageSink> UsageLayer<S> {
    /// A layer recording into `sink`, with every default.
    ///
    /// Spawns the background writer on the current tokio runtime; outside a
    /// runtime, the writer starts the first time the layer records or flushes
    /// from inside one (see [`recorder`](crate::recorder#runtime)).
    pub fn new(sink: S) -> Self {
        Self {
            config: Arc::new(Config::default()),
            recorder: Recorder::new(Arc::new(sink)),
            _sink: PhantomData,
        }
    }
}

impl<S> UsageLayer<S> {
    fn config(&mut self) -> &mut Config {
        Arc::make_mut(&mut self.config)
    }

    /// A handle to flush the writer, read its counters, and shut it down.
    pub fn handle(&self) -> UsageHandle {
        UsageHandle::new(self.recorder.clone())
    }

    /// The most bytes of each body (request and response) kept in a record.
    /// Default: 64 KiB ([`DEFAULT_MAX_BODY_BYTES`](crate::capture::DEFAULT_MAX_BODY_BYTES)).
    ///
    /// Bodies still pass through whole; past the limit the copy stops and the
    /// record says `truncated`, with the body's full size.
    pub fn max_body_bytes(mut self, limit: usize) -> Self {
        let c = self.config();
        c.request_limit = limit;
        c.response_limit = limit;
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
    /// [`params`](crate::params). Route params are derived from the template.
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

    /// The request and response headers whose values are stored as
    /// `[REDACTED]`, replacing the list. Default:
    /// [`DEFAULT_REDACTED_HEADERS`](crate::redact::DEFAULT_REDACTED_HEADERS)
    /// (`authorization`, `proxy-authorization`, `cookie`, `set-cookie`, `x-api-key`).
    /// Values marked [sensitive](http::HeaderValue::set_sensitive) are always redacted.
    pub fn redact_headers<I>(mut self, names: I) -> Self
    where
        I: IntoIterator<Item = HeaderName>,
    {
        let c = self.config();
        c.redaction = Arc::new(c.redaction.with_headers(names.into_iter().collect()));
        self
    }

    /// The query parameter and body field names whose values are stored as
    /// `[REDACTED]` (ASCII case-insensitive, at any depth of a JSON body),
    /// replacing the list. Default:
    /// [`DEFAULT_REDACTED_FIELDS`](crate::redact::DEFAULT_REDACTED_FIELDS)
    /// (`password`, `secret`, `token`, `api_key`, `apiKey`, `access_token`,
    /// `refresh_token`, `authorization`).
    pub fn redact_fields<I, T>(mut self, names: I) -> Self
    where
        I: IntoIterator<Item = T>,
        T: Into<String>,
    {
        let c = self.config();
        c.redaction = Arc::new(
            c.redaction
                .with_fields(names.into_iter().map(Into::into).collect()),
        );
        self
    }

    /// The response headers a record keeps, replacing the list. Default:
    /// [`DEFAULT_KEPT_RESPONSE_HEADERS`](crate::capture::DEFAULT_KEPT_RESPONSE_HEADERS).
    pub fn keep_response_headers<I>(mut self, names: I) -> Self
    where
        I: IntoIterator<Item = HeaderName>,
    {
        self.config().keep_response_headers = names.into_iter().collect();
        self
    }

    /// How many finished captures may wait for the writer; past it they are
    /// dropped and counted. Default: 4096
    ///
    /// This and the other writer settings (`batch_size`, `max_delay`,
    /// `max_retries`, `sink_timeout`) belong to the one writer that every clone
    /// of a layer shares: set on a clone, they apply to all its clones.
    /// ([`DEFAULT_QUEUE_CAPACITY`](crate::recorder::DEFAULT_QUEUE_CAPACITY)).
    /// See [choosing the queue capacity](crate::recorder#choosing-the-queue-capacity).
    pub fn queue_capacity(self, capacity: usize) -> Self {
        self.recorder
            .shared()
            .queue_capacity
            .store(capacity.max(1), Ordering::Relaxed);
        self
    }

    /// The most records per [`UsageSink::record`] call. The writer takes what is
    /// queued when it wakes, so batches are smaller under light load; see
    /// [how records flow](crate::recorder#how-records-flow). Default: 256
    /// ([`DEFAULT_BATCH_SIZE`](crate::recorder::DEFAULT_BATCH_SIZE)).
    pub fn batch_size(self, size: usize) -> Self {
        self.recorder
            .shared()
            .batch_size
            .store(size.max(1), Ordering::Relaxed);
        self
    }

    /// The longest a capture waits in the queue before the writer takes it.
    /// Default: 100 ms ([`DEFAULT_MAX_DELAY`](crate::recorder::DEFAULT_MAX_DELAY)).
    pub fn max_delay(self, delay: Duration) -> Self {
        let us = u64::try_from(delay.as_micros()).unwrap_or(u64::MAX).max(1);
        self.recorder
            .shared()
            .max_delay_us
            .store(us, Ordering::Relaxed);
        self
    }

    /// How many times a batch that failed with a temporary error is retried
    /// before it is dropped and counted as failed. Default: 3.
    pub fn max_retries(self, retries: u32) -> Self {
        self.recorder
            .shared()
            .max_retries
            .store(u64::from(retries), Ordering::Relaxed);
        self
    }

    /// How long one [`UsageSink::record`] call may take before it counts as a
    /// temporary failure. Default: 30 s.
    pub fn sink_timeout(self, timeout: Duration) -> Self {
        let us = u64::try_from(timeout.as_micros())
            .unwrap_or(u64::MAX)
            .max(1);
        self.recorder
            .shared()
            .sink_timeout_us
            .store(us, Ordering::Relaxed);
        self
    }
}

impl<S, Inner> Layer<Inner> for UsageLayer<S> {
    type Service = UsageCapture<Inner>;

    fn layer(&self, inner: Inner) -> Self::Service {
        UsageCapture::new(inner, self.config.clone(), self.recorder.clone())
    }
}
