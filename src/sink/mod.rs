//! [`UsageSink`]: where records go, and how `/usage` reads them back.
//!
//! The crate ships [`MemorySink`](crate::MemorySink) (bounded, in-process), and behind
//! features `SqliteSink` (`sqlite`) and `PostgresSink` (`postgres`).
//!
//! # Implementing your own sink
//!
//! A sink stores batches and answers [`UsageQuery`]s. The writer calls
//! [`record`](UsageSink::record) from its own task, never on the request path;
//! `GET /usage` calls [`query`](UsageSink::query). Paging is keyset paging on
//! `(created_at, id)`: [`UsageQuery::position`] decodes the caller's cursor (and
//! rejects a forged one, or one issued for another consumer or order), and
//! [`UsageQuery::cursor_after`] makes the next one.
//!
//! ```
//! use std::sync::Mutex;
//! use tower_usage::{SinkError, UsagePage, UsageQuery, UsageRecord, UsageSink};
//!
//! #[derive(Default)]
//! struct VecSink(Mutex<Vec<UsageRecord>>);
//!
//! #[async_trait::async_trait]
//! impl UsageSink for VecSink {
//!     async fn record(&self, batch: &[UsageRecord]) -> Result<(), SinkError> {
//!         let mut records = self.0.lock().unwrap();
//!         for r in batch {
//!             // The writer retries a failed batch: store each id once.
//!             if !records.iter().any(|s| s.id == r.id) {
//!                 records.push(r.clone());
//!             }
//!         }
//!         Ok(())
//!     }
//!
//!     async fn query(&self, query: &UsageQuery) -> Result<UsagePage, SinkError> {
//!         let after = query.position()?; // Err for a forged or foreign cursor
//!         let mut hits: Vec<UsageRecord> = self.0.lock().unwrap().iter()
//!             .filter(|r| query.matches(r) && after.as_ref().map_or(true, |p| p.precedes(r, query.order)))
//!             .cloned()
//!             .collect();
//!         hits.sort_by(|a, b| query.order.compare(a, b));
//!         Ok(UsagePage::from_sorted(query, hits))
//!     }
//! }
//! ```

use std::cmp::Ordering;
use std::sync::Arc;

use base64::Engine as _;
use sha2::Digest as _;
use time::OffsetDateTime;

use crate::record::{from_unix_millis, unix_millis};
use crate::{SinkError, UsageRecord};

#[cfg_attr(not(any(feature = "sqlite", feature = "postgres")), allow(dead_code))]
pub(crate) mod codec;
pub mod memory;
#[cfg(feature = "postgres")]
pub mod postgres;
#[cfg(feature = "sqlite")]
pub mod sqlite;

/// Storage for usage records.
///
/// See the [module docs](self) for a complete implementation. Implementations must
/// be cheap to share: the layer's writer and the `/usage` service each hold one.
/// `UsageSink` is implemented for `Arc<T>` and `Box<T>` of any sink, including
/// `Box<dyn UsageSink>`.
#[async_trait::async_trait]
pub trait UsageSink: Send + Sync + 'static {
    /// Store a batch. Called by the background writer, never on the request path.
    ///
    /// A batch is all or nothing as far as the caller can tell: on `Err` the
    /// writer retries the whole batch if the error [is
    /// temporary](SinkError::is_temporary), so a sink that may have stored part of
    /// it must not store the same `id` twice.
    async fn record(&self, batch: &[UsageRecord]) -> Result<(), SinkError>;

    /// Read one page for the `/usage` endpoint.
    ///
    /// The page holds at most `query.limit` records matching
    /// [`UsageQuery::matches`], after the cursor's position, sorted by
    /// `(created_at, id)` in `query.order`; `next_cursor` is `Some` when more may
    /// follow. [`UsagePage::from_sorted`] builds it from `limit + 1` sorted hits.
    async fn query(&self, query: &UsageQuery) -> Result<UsagePage, SinkError>;
}

#[async_trait::async_trait]
impl<T: UsageSink + ?Sized> UsageSink for Arc<T> {
    async fn record(&self, batch: &[UsageRecord]) -> Result<(), SinkError> {
        (**self).record(batch).await
    }

    async fn query(&self, query: &UsageQuery) -> Result<UsagePage, SinkError> {
        (**self).query(query).await
    }
}

#[async_trait::async_trait]
impl<T: UsageSink + ?Sized> UsageSink for Box<T> {
    async fn record(&self, batch: &[UsageRecord]) -> Result<(), SinkError> {
        (**self).record(batch).await
    }

    async fn query(&self, query: &UsageQuery) -> Result<UsagePage, SinkError> {
        (**self).query(query).await
    }
}

/// The largest page `GET /usage` asks a sink for.
pub const MAX_LIMIT: usize = 1000;

/// The page size when the caller gives none.
pub const DEFAULT_LIMIT: usize = 100;

/// Whose records a query may see.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Default)]
pub enum ConsumerScope {
    /// Every consumer's records and the anonymous ones (the admin view).
    #[default]
    All,
    /// Only this consumer's records.
    Consumer(String),
    /// Only records without a consumer.
    Anonymous,
}

impl ConsumerScope {
    /// Whether a record's consumer is in this scope.
    pub fn contains(&self, consumer: Option<&str>) -> bool {
        match self {
            Self::All => true,
            Self::Consumer(c) => consumer == Some(c.as_str()),
            Self::Anonymous => consumer.is_none(),
        }
    }
}

/// A filter on the request path.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum PathFilter {
    /// The path equals this.
    Exact(String),
    /// The path starts with this (`?path=/rest/*` on the wire).
    Prefix(String),
}

impl PathFilter {
    /// Parses the wire form: a trailing `*` makes a prefix.
    pub fn parse(s: &str) -> Self {
        match s.strip_suffix('*') {
            Some(prefix) => Self::Prefix(prefix.to_owned()),
            None => Self::Exact(s.to_owned()),
        }
    }

    /// Whether `path` passes.
    pub fn matches(&self, path: &str) -> bool {
        match self {
            Self::Exact(p) => path == p,
            Self::Prefix(p) => path.starts_with(p.as_str()),
        }
    }
}

/// A filter on the response status.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum StatusFilter {
    /// Exactly this status (`404`).
    Exact(u16),
    /// A class: `4` for `4xx`, in `1..=5`.
    Class(u8),
}

impl StatusFilter {
    /// Parses `404` (100..=599) or a class such as `4xx` (`1xx`..`5xx`, case-insensitive).
    pub fn parse(s: &str) -> Option<Self> {
        let b = s.as_bytes();
        if b.len() != 3 {
            return None;
        }
        if b[1].eq_ignore_ascii_case(&b'x') && b[2].eq_ignore_ascii_case(&b'x') {
            return match b[0] {
                c @ b'1'..=b'5' => Some(Self::Class(c - b'0')),
                _ => None,
            };
        }
        let code: u16 = s.parse().ok()?;
        (100..=599).contains(&code).then_some(Self::Exact(code))
    }

    /// The inclusive range of statuses this filter passes.
    pub fn range(self) -> (u16, u16) {
        match self {
            Self::Exact(c) => (c, c),
            Self::Class(c) => (u16::from(c) * 100, u16::from(c) * 100 + 99),
        }
    }

    /// Whether `status` passes.
    pub fn matches(self, status: u16) -> bool {
        let (lo, hi) = self.range();
        (lo..=hi).contains(&status)
    }
}

/// The order of a page, by `(created_at, id)`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum Order {
    /// Oldest first (the default).
    #[default]
    Asc,
    /// Newest first.
    Desc,
}

impl Order {
    /// Compares two records in this order, by `(created_at, id)`.
    pub fn compare(self, a: &UsageRecord, b: &UsageRecord) -> Ordering {
        let ord = (unix_millis(a.created_at), a.id.as_str())
            .cmp(&(unix_millis(b.created_at), b.id.as_str()));
        match self {
            Self::Asc => ord,
            Self::Desc => ord.reverse(),
        }
    }

    fn tag(self) -> &'static str {
        match self {
            Self::Asc => "a",
            Self::Desc => "d",
        }
    }
}

/// One page request for [`UsageSink::query`].
///
/// `Default` gives everything, oldest first, [`DEFAULT_LIMIT`] records a page.
///
/// ```
/// use tower_usage::sink::{ConsumerScope, StatusFilter, UsageQuery};
///
/// let q = UsageQuery {
///     consumer: ConsumerScope::Consumer("c1".into()),
///     status: StatusFilter::parse("4xx"),
///     limit: 10,
///     ..UsageQuery::default()
/// };
/// assert_eq!(q.cursor, None);
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UsageQuery {
    /// Whose records. Default: [`ConsumerScope::All`].
    pub consumer: ConsumerScope,
    /// Records created at or after this instant.
    pub since: Option<OffsetDateTime>,
    /// Records created before this instant.
    pub until: Option<OffsetDateTime>,
    /// Only this method (compared exactly; the service upper-cases it).
    pub method: Option<String>,
    /// Only these paths.
    pub path: Option<PathFilter>,
    /// Only these statuses.
    pub status: Option<StatusFilter>,
    /// At most this many records. Default [`DEFAULT_LIMIT`]; the service asks
    /// for `1..=`[`MAX_LIMIT`].
    pub limit: usize,
    /// The opaque cursor from a previous page's `next_cursor`.
    pub cursor: Option<String>,
    /// Oldest or newest first. Default: [`Order::Asc`].
    pub order: Order,
}

impl Default for UsageQuery {
    fn default() -> Self {
        Self {
            consumer: ConsumerScope::All,
            since: None,
            until: None,
            method: None,
            path: None,
            status: None,
            limit: DEFAULT_LIMIT,
            cursor: None,
            order: Order::Asc,
        }
    }
}

/// Where a page starts: the `(created_at, id)` of the last record of the previous page.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Position {
    /// `created_at` of that record, in milliseconds since the Unix epoch.
    pub created_at_ms: i64,
    /// `id` of that record.
    pub id: String,
}

impl Position {
    /// The position of a record.
    pub fn of(record: &UsageRecord) -> Self {
        Self {
            created_at_ms: unix_millis(record.created_at),
            id: record.id.clone(),
        }
    }

    /// `created_at` as a timestamp.
    pub fn created_at(&self) -> OffsetDateTime {
        from_unix_millis(self.created_at_ms).unwrap_or(OffsetDateTime::UNIX_EPOCH)
    }

    /// Whether `record` comes after this position in `order`, so belongs on the
    /// next page.
    pub fn precedes(&self, record: &UsageRecord, order: Order) -> bool {
        let key = (unix_millis(record.created_at), record.id.as_str());
        let me = (self.created_at_ms, self.id.as_str());
        match order {
            Order::Asc => key > me,
            Order::Desc => key < me,
        }
    }
}

const CURSOR_VERSION: &str = "1";

impl UsageQuery {
    /// How many hits a sink should look for: one more than the page (`limit`,
    /// at least 1), so that [`UsagePage::from_sorted`] can tell whether another
    /// page follows.
    ///
    /// ```
    /// let query = tower_usage::UsageQuery { limit: 100, ..Default::default() };
    /// assert_eq!(query.fetch_limit(), 101);
    /// ```
    pub fn fetch_limit(&self) -> usize {
        self.limit.max(1).saturating_add(1)
    }

    /// Whether a record passes the scope and every filter (the cursor aside).
    pub fn matches(&self, record: &UsageRecord) -> bool {
        self.consumer.contains(record.consumer.as_deref())
            && self.since.is_none_or(|s| record.created_at >= s)
            && self.until.is_none_or(|u| record.created_at < u)
            && self.method.as_deref().is_none_or(|m| record.method == m)
            && self.path.as_ref().is_none_or(|p| p.matches(&record.path))
            && self.status.is_none_or(|s| s.matches(record.status))
    }

    /// Decodes [`cursor`](Self::cursor): `None` for the first page.
    ///
    /// Fails with [`SinkErrorKind::InvalidCursor`](crate::SinkErrorKind::InvalidCursor)
    /// when the cursor is not one this crate issued, or was issued for another
    /// consumer scope or order.
    pub fn position(&self) -> Result<Option<Position>, SinkError> {
        let Some(cursor) = self.cursor.as_deref() else {
            return Ok(None);
        };
        let invalid = || SinkError::invalid_cursor("cursor is not one this endpoint issued");
        let raw = base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(cursor)
            .map_err(|_| invalid())?;
        let text = std::str::from_utf8(&raw).map_err(|_| invalid())?;
        let mut parts = text.splitn(5, '.');
        let (Some(version), Some(order), Some(ms), Some(scope), Some(id)) = (
            parts.next(),
            parts.next(),
            parts.next(),
            parts.next(),
            parts.next(),
        ) else {
            return Err(invalid());
        };
        if version != CURSOR_VERSION {
            return Err(invalid());
        }
        let created_at_ms: i64 = ms.parse().map_err(|_| invalid())?;
        if from_unix_millis(created_at_ms).is_none() || id.is_empty() || id.len() > 128 {
            return Err(invalid());
        }
        if scope != scope_tag(&self.consumer) {
            return Err(SinkError::invalid_cursor(
                "cursor was issued for another consumer",
            ));
        }
        if order != self.order.tag() {
            return Err(SinkError::invalid_cursor(
                "cursor was issued for the other order",
            ));
        }
        Ok(Some(Position {
            created_at_ms,
            id: id.to_owned(),
        }))
    }

    /// The cursor for the page after `last`, bound to this query's scope and order.
    pub fn cursor_after(&self, last: &UsageRecord) -> String {
        let text = format!(
            "{CURSOR_VERSION}.{}.{}.{}.{}",
            self.order.tag(),
            unix_millis(last.created_at),
            scope_tag(&self.consumer),
            last.id
        );
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(text)
    }
}

/// A short, non-reversible tag of a scope, so a cursor cannot be replayed by
/// another consumer.
fn scope_tag(scope: &ConsumerScope) -> String {
    let mut h = sha2::Sha256::new();
    match scope {
        ConsumerScope::All => h.update(b"all"),
        ConsumerScope::Anonymous => h.update(b"anon"),
        ConsumerScope::Consumer(c) => {
            h.update(b"c:");
            h.update(c.as_bytes());
        }
    }
    let digest = h.finalize();
    digest[..6].iter().map(|b| format!("{b:02x}")).collect()
}

/// One page of records.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct UsagePage {
    /// The records, in the query's order.
    pub records: Vec<UsageRecord>,
    /// The cursor for the next page, when more may follow.
    pub next_cursor: Option<String>,
}

impl UsagePage {
    /// Builds a page from hits already filtered and sorted in the query's order,
    /// of which there may be more than `query.limit`: keeps the first `limit` and
    /// sets `next_cursor` when any were left.
    pub fn from_sorted(query: &UsageQuery, mut hits: Vec<UsageRecord>) -> Self {
        let limit = query.limit.max(1);
        let next_cursor = if hits.len() > limit {
            hits.truncate(limit);
            hits.last().map(|r| query.cursor_after(r))
        } else {
            None
        };
        Self {
            records: hits,
            next_cursor,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rec(ms: i64, id: &str) -> UsageRecord {
        UsageRecord {
            id: id.into(),
            created_at: from_unix_millis(ms).unwrap(),
            ..UsageRecord::default()
        }
    }

    #[test]
    fn status_filter_parses() {
        assert_eq!(StatusFilter::parse("404"), Some(StatusFilter::Exact(404)));
        assert_eq!(StatusFilter::parse("4XX"), Some(StatusFilter::Class(4)));
        assert_eq!(StatusFilter::parse("6xx"), None);
        assert_eq!(StatusFilter::parse("99"), None);
        assert_eq!(StatusFilter::parse("abc"), None);
        assert!(StatusFilter::Class(2).matches(204));
        assert!(!StatusFilter::Class(2).matches(300));
    }

    #[test]
    fn cursor_round_trips_and_is_bound_to_scope_and_order() {
        let q = UsageQuery {
            consumer: ConsumerScope::Consumer("a".into()),
            ..UsageQuery::default()
        };
        let c = q.cursor_after(&rec(1000, "01X"));
        let q2 = UsageQuery {
            cursor: Some(c.clone()),
            ..q.clone()
        };
        let pos = q2.position().unwrap().unwrap();
        assert_eq!(pos.created_at_ms, 1000);
        assert_eq!(pos.id, "01X");

        let other = UsageQuery {
            consumer: ConsumerScope::Consumer("b".into()),
            cursor: Some(c.clone()),
            ..UsageQuery::default()
        };
        assert_eq!(
            other.position().unwrap_err().kind(),
            crate::SinkErrorKind::InvalidCursor
        );
        let desc = UsageQuery {
            order: Order::Desc,
            ..q2.clone()
        };
        assert!(desc.position().is_err());
        for forged in ["", "!!!", "bm90LWEtY3Vyc29y", "MS5hLjEwMDAuZm9vLjAxWA"] {
            let f = UsageQuery {
                cursor: Some(forged.into()),
                ..q.clone()
            };
            assert!(f.position().is_err(), "{forged:?} accepted");
        }
    }

    #[test]
    fn positions_order_ties_by_id() {
        let p = Position::of(&rec(5, "B"));
        assert!(p.precedes(&rec(5, "C"), Order::Asc));
        assert!(!p.precedes(&rec(5, "A"), Order::Asc));
        assert!(p.precedes(&rec(5, "A"), Order::Desc));
        assert!(p.precedes(&rec(4, "Z"), Order::Desc));
    }
}
