//! [`UsageQuery`]: what `GET /usage` asks a sink for, and its filters.

use std::cmp::Ordering;

use time::OffsetDateTime;

use crate::record::{ceil_millis, unix_millis};
use crate::{Outcome, UsageRecord};

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
}

/// Which fields of each record a [`UsageQuery`] needs: a sink may leave out
/// the rest, to read less.
///
/// A sink that ignores it and always returns whole records is correct; one
/// that honours [`Summary`](Self::Summary) saves reading bodies and headers.
/// The default [`summarize`](super::UsageSink::summarize) asks for
/// `Summary`; `GET /usage` and the exports ask for [`Full`](Self::Full).
///
/// ```
/// use tower_usage::sink::Projection;
/// use tower_usage::{CapturedBody, UsageRecord};
///
/// let mut record = UsageRecord::default();
/// record.request.body = CapturedBody::complete("a large body");
/// Projection::Summary.apply(&mut record);
/// assert!(record.request.body.bytes.is_empty());
/// assert_eq!(record.request.body.size, 12); // sizes are summed: kept
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
#[non_exhaustive]
pub enum Projection {
    /// Every field of every record (the default).
    #[default]
    Full,
    /// What a summary counts and its filters read: `id`, `consumer`,
    /// `method`, `path`, `route`, `status`, `created_at`, `duration_us`,
    /// `outcome`, the `trace`, and each body's `size` and `truncated` flag.
    /// The bodies' bytes, the query string, route params, request and
    /// response headers, the gRPC details and the capture notes may come back
    /// empty (or whole: a sink may ignore the projection).
    Summary,
}

impl Projection {
    /// Empties in `record` what this projection lets a sink leave out (see
    /// [`Summary`](Self::Summary)); [`Full`](Self::Full) leaves it as it is.
    ///
    /// A sink that keeps the summary fields apart (a second, small value per
    /// record, say) stores the storage form of a record passed through
    /// `Projection::Summary.apply`.
    pub fn apply(self, record: &mut UsageRecord) {
        match self {
            Self::Full => {}
            Self::Summary => {
                record.request.body.bytes = bytes::Bytes::new();
                record.request.query = String::new();
                record.request.params = Vec::new();
                record.request.headers = http::HeaderMap::new();
                record.response.bytes = bytes::Bytes::new();
                record.response_headers = http::HeaderMap::new();
                record.grpc = None;
                record.capture = crate::CaptureNotes::default();
            }
        }
    }
}

/// One page request for [`UsageSink::query`](super::UsageSink::query).
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
    /// Only records whose route template is exactly this (records without a
    /// route never match).
    pub route: Option<String>,
    /// Only records that ended this way.
    pub outcome: Option<Outcome>,
    /// Only records of this trace: their
    /// [`trace`](crate::UsageRecord::trace)'s `trace_id` is exactly this (32
    /// lowercase hex digits; records without a trace never match).
    pub trace_id: Option<String>,
    /// At most this many records. Default [`DEFAULT_LIMIT`]; the service asks
    /// for `1..=`[`MAX_LIMIT`].
    pub limit: usize,
    /// The opaque cursor from a previous page's `next_cursor`.
    pub cursor: Option<String>,
    /// Oldest or newest first. Default: [`Order::Asc`].
    pub order: Order,
    /// Which fields of each record are needed. Default: [`Projection::Full`];
    /// a sink may ignore it (see [`Projection`]).
    pub fields: Projection,
    /// A byte budget for the page: once the records a sink has read for it
    /// pass this many bytes ([`record_bytes`](super::record_bytes) each), it
    /// may stop reading, and [`UsagePage::from_sorted`](super::UsagePage::from_sorted)
    /// ends the page before the record that passed it (keeping at least
    /// one), with a `next_cursor` to the rest. So what a sink loads and
    /// decodes for a page is bounded in bytes, not only in records. Default:
    /// `None`, no budget; `GET /usage` sets its page budget here.
    pub max_bytes: Option<usize>,
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
            route: None,
            outcome: None,
            trace_id: None,
            limit: DEFAULT_LIMIT,
            cursor: None,
            order: Order::Asc,
            fields: Projection::Full,
            max_bytes: None,
        }
    }
}

impl UsageQuery {
    /// How many hits a sink should look for: one more than the page (`limit`,
    /// at least 1), so that [`UsagePage::from_sorted`](super::UsagePage::from_sorted) can tell whether another
    /// page follows.
    ///
    /// ```
    /// let query = tower_usage::UsageQuery { limit: 100, ..Default::default() };
    /// assert_eq!(query.fetch_limit(), 101);
    /// ```
    pub fn fetch_limit(&self) -> usize {
        self.limit.max(1).saturating_add(1)
    }

    /// [`since`](Self::since) as a bound on [`UsageRecord::created_at_ms`]:
    /// a record passes when `created_at_ms >= since_ms`. `None` when there is
    /// no lower bound.
    ///
    /// Records keep `created_at` to the millisecond, so a sink that stores
    /// `created_at_ms` as an integer (an index, a sorted-set score) compares
    /// with these bounds and gets exactly what [`matches`](Self::matches)
    /// would: a bound between two milliseconds is rounded up.
    ///
    /// ```
    /// use time::macros::datetime;
    /// let query = tower_usage::UsageQuery {
    ///     since: Some(datetime!(2023-01-11 08:07:39.8391 UTC)),
    ///     until: Some(datetime!(2023-01-11 08:07:40 UTC)),
    ///     ..Default::default()
    /// };
    /// // 08:07:39.839 is before `since`; 08:07:39.840 is the first millisecond in.
    /// assert_eq!(query.since_ms(), Some(1_673_424_459_840));
    /// assert_eq!(query.until_ms(), Some(1_673_424_460_000));
    /// ```
    pub fn since_ms(&self) -> Option<i64> {
        self.since.map(ceil_millis)
    }

    /// [`until`](Self::until) as an exclusive bound on
    /// [`UsageRecord::created_at_ms`]: a record passes when `created_at_ms <
    /// until_ms`. `None` when there is no upper bound. See
    /// [`since_ms`](Self::since_ms).
    pub fn until_ms(&self) -> Option<i64> {
        self.until.map(ceil_millis)
    }

    /// Whether a sink has read enough hits for this page: `hits` records
    /// holding `bytes` ([`record_bytes`](super::record_bytes) each). True at
    /// [`fetch_limit`](Self::fetch_limit) hits, or, with a
    /// [byte budget](Self::max_bytes), once at least two hits pass it:
    /// [`UsagePage::from_sorted`](super::UsagePage::from_sorted) then ends the
    /// page before the last one and points the cursor at it.
    ///
    /// ```
    /// let query = tower_usage::UsageQuery { limit: 100, max_bytes: Some(1000), ..Default::default() };
    /// assert!(!query.read_enough(1, 5000)); // the first hit is always kept
    /// assert!(query.read_enough(2, 1001));
    /// assert!(query.read_enough(101, 0));
    /// ```
    pub fn read_enough(&self, hits: usize, bytes: usize) -> bool {
        hits >= self.fetch_limit() || (hits >= 2 && self.max_bytes.is_some_and(|b| bytes > b))
    }

    /// Whether a record passes the scope and every filter (the cursor aside).
    pub fn matches(&self, record: &UsageRecord) -> bool {
        Filters {
            consumer: &self.consumer,
            since: self.since,
            until: self.until,
            method: self.method.as_deref(),
            path: self.path.as_ref(),
            status: self.status,
            route: self.route.as_deref(),
            outcome: self.outcome,
            trace_id: self.trace_id.as_deref(),
        }
        .matches(record)
    }
}

/// The scope, range and filters a list query and a summary share: the one
/// definition of which records they select.
pub(crate) struct Filters<'a> {
    pub(crate) consumer: &'a ConsumerScope,
    pub(crate) since: Option<OffsetDateTime>,
    pub(crate) until: Option<OffsetDateTime>,
    pub(crate) method: Option<&'a str>,
    pub(crate) path: Option<&'a PathFilter>,
    pub(crate) status: Option<StatusFilter>,
    pub(crate) route: Option<&'a str>,
    pub(crate) outcome: Option<Outcome>,
    pub(crate) trace_id: Option<&'a str>,
}

impl Filters<'_> {
    pub(crate) fn matches(&self, record: &UsageRecord) -> bool {
        self.consumer.contains(record.consumer.as_deref())
            && self.since.is_none_or(|s| record.created_at >= s)
            && self.until.is_none_or(|u| record.created_at < u)
            && self.method.is_none_or(|m| record.method == m)
            && self.path.is_none_or(|p| p.matches(&record.path))
            && self.status.is_none_or(|s| s.matches(record.status))
            && self
                .route
                .is_none_or(|r| record.route.as_deref() == Some(r))
            && self.outcome.is_none_or(|o| record.outcome == o)
            && self.trace_id.is_none_or(|t| {
                record
                    .trace
                    .as_ref()
                    .is_some_and(|trace| trace.trace_id == t)
            })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
}
