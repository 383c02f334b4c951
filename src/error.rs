//! [`SinkError`], the error every [`UsageSink`](crate::UsageSink) reports.

use std::borrow::Cow;
use std::error::Error as StdError;
use std::fmt;

/// What kind of failure a [`SinkError`] is.
///
/// The writer retries [temporary](SinkError::is_temporary) failures; `GET /usage`
/// answers `400` for [`InvalidCursor`](SinkErrorKind::InvalidCursor) and
/// [`InvalidQuery`](SinkErrorKind::InvalidQuery) (the client's fault) and `503`
/// for everything else, [`Config`](SinkErrorKind::Config) included (the
/// operator's fault, which a client cannot fix).
///
/// | kind | temporary by default | `GET /usage` answers |
/// |---|---|---|
/// | `Unavailable` | yes | `503` |
/// | `InvalidCursor`, `InvalidQuery` | no | `400` |
/// | `Config` | no | `503` |
/// | `Corrupt` | no | `503` |
/// | `Other` | yes | `503` |
/// | `Unsupported` | no | `501` |
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum SinkErrorKind {
    /// The storage could not be reached or did not answer in time. Temporary.
    Unavailable,
    /// The query's cursor is malformed, forged, or was issued for another consumer
    /// or another order. Permanent; the client's fault.
    InvalidCursor,
    /// The query asks for something the sink cannot answer. Permanent; the client's fault.
    InvalidQuery,
    /// The sink is set up wrong: an invalid table or schema name, a bad
    /// connection string, an option out of range. Permanent; the operator's
    /// fault, never the client's.
    Config,
    /// The stored data cannot be read: a corrupt file, or a schema newer than this
    /// crate understands. Permanent.
    Corrupt,
    /// Anything else: what [`SinkError::new`] makes. **Temporary** unless
    /// marked [`permanent`](SinkError::permanent): for an error it cannot
    /// classify, the writer would rather retry (and keep the batch) than drop
    /// it at once.
    Other,
    /// The sink does not do what was asked: [`erase_consumer`] on a sink that
    /// cannot erase. Permanent.
    ///
    /// [`erase_consumer`]: crate::UsageSink::erase_consumer
    Unsupported,
}

impl SinkErrorKind {
    fn as_str(self) -> &'static str {
        match self {
            Self::Unavailable => "sink unavailable",
            Self::InvalidCursor => "invalid cursor",
            Self::InvalidQuery => "invalid query",
            Self::Config => "sink misconfigured",
            Self::Corrupt => "corrupt sink data",
            Self::Other => "sink error",
            Self::Unsupported => "not supported by this sink",
        }
    }
}

impl fmt::Display for SinkErrorKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// An error from a [`UsageSink`](crate::UsageSink).
///
/// It carries a [`kind`](Self::kind), a message with context, whether a retry may
/// succeed ([`is_temporary`](Self::is_temporary)), and the underlying cause as
/// [`source()`](std::error::Error::source).
///
/// # Example
///
/// ```
/// use tower_usage::{SinkError, SinkErrorKind};
///
/// let io = std::io::Error::new(std::io::ErrorKind::TimedOut, "no answer");
/// let err = SinkError::new(io).with_context("writing batch of 64 records");
/// assert_eq!(err.kind(), SinkErrorKind::Other);
/// assert!(err.is_temporary());
/// assert!(std::error::Error::source(&err).is_some());
/// assert_eq!(err.to_string(), "writing batch of 64 records: no answer");
///
/// let bad = SinkError::invalid_cursor("cursor was issued for another consumer");
/// assert!(!bad.is_temporary());
/// ```
pub struct SinkError {
    kind: SinkErrorKind,
    message: Cow<'static, str>,
    temporary: bool,
    source: Option<Box<dyn StdError + Send + Sync + 'static>>,
}

impl SinkError {
    /// Wraps any error as a [`SinkErrorKind::Other`] failure; its `Display`
    /// becomes the message and the error itself the `source()`.
    ///
    /// The error is **temporary**: the writer retries the batch (see
    /// [`UsageLayer::max_retries`](crate::UsageLayer::max_retries)). Call
    /// [`permanent`](Self::permanent) when a retry cannot help (a value the
    /// storage rejects), or use [`with_kind`](Self::with_kind) with a kind
    /// that says what happened.
    pub fn new<E>(err: E) -> Self
    where
        E: StdError + Send + Sync + 'static,
    {
        Self::with_kind(SinkErrorKind::Other, err)
    }

    /// Wraps any error with the given kind.
    pub fn with_kind<E>(kind: SinkErrorKind, err: E) -> Self
    where
        E: StdError + Send + Sync + 'static,
    {
        Self {
            kind,
            message: Cow::Owned(err.to_string()),
            temporary: default_temporary(kind),
            source: Some(Box::new(err)),
        }
    }

    /// An error with a message and no underlying cause.
    pub fn message(kind: SinkErrorKind, message: impl Into<Cow<'static, str>>) -> Self {
        Self {
            kind,
            message: message.into(),
            temporary: default_temporary(kind),
            source: None,
        }
    }

    /// A temporary [`SinkErrorKind::Unavailable`] error wrapping its cause.
    pub fn unavailable<E>(err: E) -> Self
    where
        E: StdError + Send + Sync + 'static,
    {
        Self::with_kind(SinkErrorKind::Unavailable, err)
    }

    /// A [`SinkErrorKind::InvalidCursor`] error; `GET /usage` answers it with `400`.
    pub fn invalid_cursor(message: impl Into<Cow<'static, str>>) -> Self {
        Self::message(SinkErrorKind::InvalidCursor, message)
    }

    /// A permanent [`SinkErrorKind::Config`] error: the sink is set up wrong
    /// (an invalid table name, say). `GET /usage` answers it with `503`, not
    /// `400`: the client cannot fix it.
    pub fn config(message: impl Into<Cow<'static, str>>) -> Self {
        Self::message(SinkErrorKind::Config, message)
    }

    /// A [`SinkErrorKind::InvalidQuery`] error; `GET /usage` answers it with `400`.
    pub fn invalid_query(message: impl Into<Cow<'static, str>>) -> Self {
        Self::message(SinkErrorKind::InvalidQuery, message)
    }

    /// Prefixes the message with what was being done: `"{context}: {message}"`.
    pub fn with_context(mut self, context: impl fmt::Display) -> Self {
        self.message = Cow::Owned(format!("{context}: {}", self.message));
        self
    }

    /// Marks the error as one a retry cannot fix: the writer drops the batch at once.
    pub fn permanent(mut self) -> Self {
        self.temporary = false;
        self
    }

    /// Marks the error as one a retry may fix.
    pub fn temporary(mut self) -> Self {
        self.temporary = true;
        self
    }

    /// The kind of failure.
    pub fn kind(&self) -> SinkErrorKind {
        self.kind
    }

    /// Whether retrying the same call may succeed. The writer retries only these.
    pub fn is_temporary(&self) -> bool {
        self.temporary
    }

    /// The error's own text: its message and context, without the kind that
    /// [`Display`](fmt::Display) puts before them.
    pub fn text(&self) -> &str {
        &self.message
    }

    /// The old name of [`text`](Self::text).
    #[deprecated(note = "renamed `text`: the error's own text, without its kind")]
    pub fn message_str(&self) -> &str {
        self.text()
    }
}

fn default_temporary(kind: SinkErrorKind) -> bool {
    matches!(kind, SinkErrorKind::Unavailable | SinkErrorKind::Other)
}

impl fmt::Debug for SinkError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SinkError")
            .field("kind", &self.kind)
            .field("message", &self.message)
            .field("temporary", &self.temporary)
            .field("source", &self.source)
            .finish()
    }
}

impl fmt::Display for SinkError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl StdError for SinkError {
    fn source(&self) -> Option<&(dyn StdError + 'static)> {
        self.source
            .as_deref()
            .map(|e| e as &(dyn StdError + 'static))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kinds_decide_temporariness() {
        assert!(SinkError::message(SinkErrorKind::Unavailable, "down").is_temporary());
        assert!(!SinkError::invalid_query("no").is_temporary());
        assert!(!SinkError::config("bad table name").is_temporary());
        assert!(SinkError::new(std::fmt::Error).is_temporary());
        assert!(!SinkError::message(SinkErrorKind::Corrupt, "bad").is_temporary());
        let e = SinkError::new(std::fmt::Error).permanent();
        assert!(!e.is_temporary());
        assert_eq!(e.kind(), SinkErrorKind::Other);
    }
}
