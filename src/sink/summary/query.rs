//! [`SummaryQuery`]: what `GET /usage/summary` asks a sink for: the list's
//! scope and filters, a time range, an [`Interval`] and a [`GroupBy`].

use std::fmt;

use time::{Duration, OffsetDateTime, UtcOffset};

use super::MAX_BUCKETS;
use crate::record::{truncate_to_millis, unix_millis};
use crate::sink::query::Filters;
use crate::sink::{ConsumerScope, PathFilter, StatusFilter, UsageQuery, MAX_LIMIT};
use crate::{Outcome, SinkError, UsageRecord};

/// The range a summary covers when the caller gives none: the last 24 hours.
pub const DEFAULT_RANGE: Duration = Duration::hours(24);

/// The width of a summary's time buckets. Buckets start on UTC boundaries: a
/// minute at second 0, an hour at minute 0, a day at midnight UTC, a month at
/// midnight UTC on its first day.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Default)]
pub enum Interval {
    /// One minute.
    Minute,
    /// One hour.
    Hour,
    /// One UTC day (the default).
    #[default]
    Day,
    /// One calendar month, in UTC.
    Month,
}

impl Interval {
    /// Every interval, shortest first.
    pub const ALL: [Interval; 4] = [Self::Minute, Self::Hour, Self::Day, Self::Month];

    /// The wire name: `minute`, `hour`, `day` or `month`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Minute => "minute",
            Self::Hour => "hour",
            Self::Day => "day",
            Self::Month => "month",
        }
    }

    /// Parses a wire name (lower case).
    ///
    /// ```
    /// use tower_usage::sink::Interval;
    /// assert_eq!(Interval::from_name("hour"), Some(Interval::Hour));
    /// assert_eq!(Interval::from_name("week"), None);
    /// ```
    pub fn from_name(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|i| i.as_str() == name)
    }

    /// The fixed width in milliseconds; `None` for a month.
    pub(crate) fn fixed_millis(self) -> Option<i64> {
        match self {
            Self::Minute => Some(60_000),
            Self::Hour => Some(3_600_000),
            Self::Day => Some(86_400_000),
            Self::Month => None,
        }
    }

    /// The start of the bucket holding `t`, in UTC.
    ///
    /// ```
    /// use time::macros::datetime;
    /// use tower_usage::sink::Interval;
    ///
    /// let t = datetime!(2026-11-28 08:17:42.5 +02:00);
    /// assert_eq!(Interval::Hour.floor(t), datetime!(2026-11-28 06:00 UTC));
    /// assert_eq!(Interval::Month.floor(t), datetime!(2026-11-01 00:00 UTC));
    /// ```
    pub fn floor(self, t: OffsetDateTime) -> OffsetDateTime {
        let t = t.to_offset(UtcOffset::UTC);
        match self.fixed_millis() {
            Some(width) => {
                let ms = unix_millis(t);
                crate::record::from_unix_millis(ms - ms.rem_euclid(width)).unwrap_or(t)
            }
            None => t
                .replace_time(time::Time::MIDNIGHT)
                .replace_day(1)
                .unwrap_or(t),
        }
    }

    /// The start of the bucket after the one starting at `start`.
    pub fn next(self, start: OffsetDateTime) -> OffsetDateTime {
        match self.fixed_millis() {
            Some(width) => start.saturating_add(Duration::milliseconds(width)),
            None => {
                let (year, month) = match start.month() {
                    time::Month::December => (start.year() + 1, time::Month::January),
                    m => (start.year(), m.next()),
                };
                time::Date::from_calendar_date(year, month, 1)
                    .map(|d| d.midnight().assume_utc())
                    .unwrap_or(start)
            }
        }
    }

    /// How many buckets the range `[since, until)` touches: from the one
    /// holding `since` to the one holding the last instant before `until`. `0`
    /// for an empty range.
    pub fn buckets_between(self, since: OffsetDateTime, until: OffsetDateTime) -> u64 {
        if until <= since {
            return 0;
        }
        let first = self.floor(since);
        match self.fixed_millis() {
            Some(width) => {
                let span = unix_millis(until) - unix_millis(first);
                u64::try_from((span + width - 1) / width).unwrap_or(u64::MAX)
            }
            None => {
                let last = until.to_offset(UtcOffset::UTC);
                let months = |t: OffsetDateTime| i64::from(t.year()) * 12 + t.month() as i64;
                // `until` on a month boundary does not touch its month.
                let end = if self.floor(last) == last {
                    months(last)
                } else {
                    months(last) + 1
                };
                u64::try_from(end - months(first)).unwrap_or(0)
            }
        }
    }
}

impl fmt::Display for Interval {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One key a summary may be grouped by.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum GroupKey {
    /// The route template (`null` for requests without one).
    Route,
    /// The request method.
    Method,
    /// The status class: `2xx`, `4xx`, ...
    Status,
    /// How the exchange ended ([`Outcome`]).
    Outcome,
    /// The consumer (`null` for anonymous requests); for admins only on the
    /// endpoint.
    Consumer,
}

impl GroupKey {
    /// Every key, in the order buckets are sorted by and `groupBy` is echoed in.
    pub const ALL: [GroupKey; 5] = [
        Self::Route,
        Self::Method,
        Self::Status,
        Self::Outcome,
        Self::Consumer,
    ];

    /// The wire name, which is also the bucket's field name.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Route => "route",
            Self::Method => "method",
            Self::Status => "status",
            Self::Outcome => "outcome",
            Self::Consumer => "consumer",
        }
    }

    /// Parses a wire name.
    pub fn from_name(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|k| k.as_str() == name)
    }

    fn bit(self) -> u8 {
        1 << (self as u8)
    }
}

/// The set of keys a summary is grouped by; empty (the default) is one series
/// of buckets for everything that matches.
///
/// ```
/// use tower_usage::sink::{GroupBy, GroupKey};
///
/// let g = GroupBy::parse("status,route").unwrap();
/// assert!(g.contains(GroupKey::Route) && !g.contains(GroupKey::Method));
/// // Always in the order of `GroupKey::ALL`, whatever order it was given in.
/// assert_eq!(g.keys().collect::<Vec<_>>(), [GroupKey::Route, GroupKey::Status]);
/// assert!(GroupBy::parse("route,colour").is_err());
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct GroupBy(u8);

impl GroupBy {
    /// No grouping.
    pub const NONE: GroupBy = GroupBy(0);

    /// The set with `key` added.
    #[must_use]
    pub fn with(self, key: GroupKey) -> Self {
        Self(self.0 | key.bit())
    }

    /// Whether `key` is in the set.
    pub fn contains(self, key: GroupKey) -> bool {
        self.0 & key.bit() != 0
    }

    /// Whether the set is empty.
    pub fn is_empty(self) -> bool {
        self.0 == 0
    }

    /// The keys, in the order of [`GroupKey::ALL`].
    pub fn keys(self) -> impl Iterator<Item = GroupKey> {
        GroupKey::ALL.into_iter().filter(move |k| self.contains(*k))
    }

    /// Parses the wire form: key names separated by commas. Fails with the
    /// name that is not a key, or that is given twice.
    pub fn parse(s: &str) -> Result<Self, String> {
        let mut set = Self::NONE;
        for name in s.split(',') {
            let key = GroupKey::from_name(name).ok_or_else(|| name.to_owned())?;
            if set.contains(key) {
                return Err(name.to_owned());
            }
            set = set.with(key);
        }
        Ok(set)
    }
}

impl FromIterator<GroupKey> for GroupBy {
    fn from_iter<I: IntoIterator<Item = GroupKey>>(keys: I) -> Self {
        keys.into_iter().fold(Self::NONE, Self::with)
    }
}

/// One summary request for [`UsageSink::summarize`](crate::UsageSink::summarize):
/// the list's scope and filters over `[since, until)`, counted per
/// [`interval`](Self::interval) and per [`group_by`](Self::group_by) keys.
///
/// `Default` is the last 24 hours up to now, for every consumer, per day,
/// ungrouped.
///
/// ```
/// use time::macros::datetime;
/// use tower_usage::sink::{ConsumerScope, GroupBy, GroupKey, Interval, SummaryQuery};
///
/// let q = SummaryQuery {
///     consumer: ConsumerScope::Consumer("c1".into()),
///     since: datetime!(2026-11-28 00:00 UTC),
///     until: datetime!(2026-11-29 00:00 UTC),
///     interval: Interval::Hour,
///     group_by: GroupBy::NONE.with(GroupKey::Route).with(GroupKey::Status),
///     ..SummaryQuery::default()
/// };
/// assert_eq!(q.bucket_count(), 24);
/// assert!(q.check().is_ok());
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SummaryQuery {
    /// Whose records. Default: [`ConsumerScope::All`].
    pub consumer: ConsumerScope,
    /// Records created at or after this instant. Default: 24 hours before
    /// `until`.
    pub since: OffsetDateTime,
    /// Records created before this instant. Default: the millisecond after
    /// now (the end is exclusive, and a record's `created_at` is in whole
    /// milliseconds: so a record made during the current millisecond counts).
    pub until: OffsetDateTime,
    /// Only this method, as on the list.
    pub method: Option<String>,
    /// Only these paths, as on the list.
    pub path: Option<PathFilter>,
    /// Only these statuses, as on the list.
    pub status: Option<StatusFilter>,
    /// Only this route template, as on the list.
    pub route: Option<String>,
    /// Only this outcome, as on the list.
    pub outcome: Option<Outcome>,
    /// Only this trace, as on the list.
    pub trace_id: Option<String>,
    /// The width of a time bucket. Default: [`Interval::Day`].
    pub interval: Interval,
    /// The keys buckets are split by. Default: none.
    pub group_by: GroupBy,
}

/// The default end of a summary's range, read at `now`: the millisecond after
/// it, so that the range (whose end is exclusive) holds every record made up
/// to `now`, the current millisecond's included.
pub(crate) fn default_until(now: OffsetDateTime) -> OffsetDateTime {
    truncate_to_millis(now) + Duration::milliseconds(1)
}

impl Default for SummaryQuery {
    fn default() -> Self {
        let until = default_until(OffsetDateTime::now_utc());
        Self {
            consumer: ConsumerScope::All,
            since: until - DEFAULT_RANGE,
            until,
            method: None,
            path: None,
            status: None,
            route: None,
            outcome: None,
            trace_id: None,
            interval: Interval::Day,
            group_by: GroupBy::NONE,
        }
    }
}

impl SummaryQuery {
    /// The list query with the same scope, range and filters, oldest first,
    /// [`MAX_LIMIT`] records a page: `GET /usage` with the same parameters
    /// lists exactly the records this summary counts.
    pub fn list_query(&self) -> UsageQuery {
        UsageQuery {
            consumer: self.consumer.clone(),
            since: Some(self.since),
            until: Some(self.until),
            method: self.method.clone(),
            path: self.path.clone(),
            status: self.status,
            route: self.route.clone(),
            outcome: self.outcome,
            trace_id: self.trace_id.clone(),
            limit: MAX_LIMIT,
            ..UsageQuery::default()
        }
    }

    /// How many time buckets the range touches at this interval (the buckets
    /// of one group; each group has at most this many).
    pub fn bucket_count(&self) -> u64 {
        self.interval.buckets_between(self.since, self.until)
    }

    /// Fails with [`InvalidQuery`](crate::SinkErrorKind::InvalidQuery) when
    /// the range touches more than [`MAX_BUCKETS`] time buckets. Sinks call it
    /// before they read anything.
    pub fn check(&self) -> Result<(), SinkError> {
        let n = self.bucket_count();
        if n > MAX_BUCKETS as u64 {
            return Err(SinkError::invalid_query(format!(
                "the range holds {n} {} buckets, more than {MAX_BUCKETS}: \
                 choose a longer interval or a shorter range",
                self.interval
            )));
        }
        Ok(())
    }

    /// Whether a record passes the scope, the range and every filter: what the
    /// summary counts.
    pub fn matches(&self, record: &UsageRecord) -> bool {
        Filters {
            consumer: &self.consumer,
            since: Some(self.since),
            until: Some(self.until),
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

#[cfg(test)]
mod tests {
    use super::*;
    use time::macros::datetime;

    #[test]
    fn floors_are_on_utc_boundaries() {
        let t = datetime!(2024-02-29 23:59:59.999 UTC);
        assert_eq!(Interval::Minute.floor(t), datetime!(2024-02-29 23:59 UTC));
        assert_eq!(Interval::Hour.floor(t), datetime!(2024-02-29 23:00 UTC));
        assert_eq!(Interval::Day.floor(t), datetime!(2024-02-29 00:00 UTC));
        assert_eq!(Interval::Month.floor(t), datetime!(2024-02-01 00:00 UTC));
        let before_1970 = datetime!(1969-12-31 23:30:00.5 UTC);
        assert_eq!(
            Interval::Hour.floor(before_1970),
            datetime!(1969-12-31 23:00 UTC)
        );
        assert_eq!(
            Interval::Month.next(datetime!(2024-12-01 00:00 UTC)),
            datetime!(2025-01-01 00:00 UTC)
        );
    }

    #[test]
    fn bucket_counts() {
        let d = |s: OffsetDateTime, u: OffsetDateTime, i: Interval| i.buckets_between(s, u);
        let a = datetime!(2026-11-28 00:00 UTC);
        let b = datetime!(2026-11-29 00:00 UTC);
        assert_eq!(d(a, b, Interval::Hour), 24);
        assert_eq!(d(a, b, Interval::Minute), 1440);
        assert_eq!(d(a, b, Interval::Day), 1);
        assert_eq!(d(a + Duration::minutes(30), b, Interval::Day), 1);
        assert_eq!(
            d(
                a + Duration::minutes(30),
                b + Duration::minutes(1),
                Interval::Day
            ),
            2
        );
        assert_eq!(d(a, a, Interval::Day), 0);
        assert_eq!(d(b, a, Interval::Day), 0);
        assert_eq!(d(a, b, Interval::Month), 1);
        assert_eq!(
            d(
                datetime!(2026-01-15 00:00 UTC),
                datetime!(2026-03-01 00:00 UTC),
                Interval::Month
            ),
            2
        );
        assert_eq!(
            d(
                datetime!(2026-01-15 00:00 UTC),
                datetime!(2026-03-01 00:00:00.001 UTC),
                Interval::Month
            ),
            3
        );
    }

    #[test]
    fn group_by_parses_names_once() {
        assert_eq!(
            GroupBy::parse("route"),
            Ok(GroupBy::NONE.with(GroupKey::Route))
        );
        assert_eq!(GroupBy::parse("route,route"), Err("route".into()));
        assert_eq!(GroupBy::parse(""), Err(String::new()));
        assert_eq!(GroupBy::parse("Route"), Err("Route".into()));
        let all = GroupBy::parse("consumer,outcome,status,method,route").unwrap();
        assert_eq!(all.keys().collect::<Vec<_>>(), GroupKey::ALL);
    }
}
