//! [`UsageSummary`]: what a summary answers, and its JSON form (the wire format
//! of `GET /usage/summary`).

use serde::ser::{SerializeMap, SerializeSeq};
use serde::{Deserialize, Serialize, Serializer};
use time::OffsetDateTime;

use super::query::{GroupBy, Interval, SummaryQuery};
use super::MAX_BUCKETS;
use crate::record::format_timestamp;
use crate::{Outcome, SinkError};

/// Duration percentiles and maximum, in microseconds. Percentiles are by
/// nearest rank; sinks may approximate them within 1% (see
/// [`UsageSink::summarize`](crate::UsageSink::summarize)); `max` is exact.
/// All `0` when nothing was counted.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct DurationStats {
    /// The median.
    pub p50: u64,
    /// The 95th percentile.
    pub p95: u64,
    /// The 99th percentile.
    pub p99: u64,
    /// The longest.
    pub max: u64,
}

/// The figures of one bucket, or of the whole summary. Counts and bytes are
/// exact.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SummaryStats {
    /// How many requests.
    pub requests: u64,
    /// How many of them were answered with a 4xx status.
    pub client_errors: u64,
    /// How many of them were answered with a 5xx status.
    pub server_errors: u64,
    /// The request bodies' sizes summed (the whole bodies, as recorded in
    /// [`CapturedBody::size`](crate::CapturedBody::size), not only the bytes kept).
    pub request_bytes: u64,
    /// The response bodies' sizes summed, likewise.
    pub response_bytes: u64,
    /// `durationUs` on the wire.
    pub duration_us: DurationStats,
}

/// The group of a bucket: one value per key of the query's
/// [`GroupBy`], `None` for the keys it is not grouped by.
///
/// The derived order is the order of buckets with the same start: by route
/// (requests without one first), method, status class, outcome, consumer
/// (anonymous first); strings compare by their bytes.
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct GroupKeys {
    /// The route template; `Some(None)` for requests without one.
    pub route: Option<Option<String>>,
    /// The method.
    pub method: Option<String>,
    /// The status class: `2` for `2xx`.
    pub status: Option<u16>,
    /// The outcome.
    pub outcome: Option<Outcome>,
    /// The consumer; `Some(None)` for anonymous requests.
    pub consumer: Option<Option<String>>,
}

/// One bucket: the requests of one group in one interval.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SummaryBucket {
    /// The start of the interval (on a UTC boundary).
    pub start: OffsetDateTime,
    /// The group.
    pub keys: GroupKeys,
    /// Its figures.
    pub stats: SummaryStats,
}

/// A usage summary: the answer of [`UsageSink::summarize`](crate::UsageSink::summarize).
///
/// Its `Serialize` is the wire format of `GET /usage/summary`: camelCase,
/// timestamps in RFC 3339 with milliseconds and a `Z`, a bucket's group keys
/// next to its figures (`"status": "2xx"`, `"route": null` for requests
/// without a route), and `completeUntil` (`null` when unknown).
///
/// ```
/// use tower_usage::sink::{SummaryQuery, UsageSummary};
///
/// let summary = UsageSummary::empty(&SummaryQuery::default());
/// let json = serde_json::to_value(&summary).unwrap();
/// assert_eq!(json["interval"], "day");
/// assert_eq!(json["buckets"], serde_json::json!([]));
/// assert_eq!(json["total"]["durationUs"]["p99"], 0);
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UsageSummary {
    /// The range's start, as asked.
    pub since: OffsetDateTime,
    /// The range's end, as asked.
    pub until: OffsetDateTime,
    /// The width of a bucket.
    pub interval: Interval,
    /// The keys buckets are grouped by.
    pub group_by: GroupBy,
    /// Every record created before this instant is counted (a later read may
    /// add records created after it). Set by the endpoint from the writer;
    /// sinks leave it `None`.
    pub complete_until: Option<OffsetDateTime>,
    /// The buckets with requests, sorted by start, then by [`GroupKeys`].
    pub buckets: Vec<SummaryBucket>,
    /// The figures over the whole range and every group.
    pub total: SummaryStats,
}

impl UsageSummary {
    /// A summary of nothing, for `query`.
    pub fn empty(query: &SummaryQuery) -> Self {
        Self {
            since: query.since,
            until: query.until,
            interval: query.interval,
            group_by: query.group_by,
            complete_until: None,
            buckets: Vec::new(),
            total: SummaryStats::default(),
        }
    }

    /// A summary for `query` from its buckets, in any order, and its total:
    /// sorts the buckets, and fails with [`InvalidQuery`](crate::SinkErrorKind::InvalidQuery)
    /// when there are more than [`MAX_BUCKETS`].
    pub fn new(
        query: &SummaryQuery,
        mut buckets: Vec<SummaryBucket>,
        total: SummaryStats,
    ) -> Result<Self, SinkError> {
        if buckets.len() > MAX_BUCKETS {
            return Err(too_many_buckets());
        }
        buckets.sort_by(|a, b| (a.start, &a.keys).cmp(&(b.start, &b.keys)));
        Ok(Self {
            buckets,
            total,
            ..Self::empty(query)
        })
    }
}

/// The error for a summary past [`MAX_BUCKETS`].
pub(crate) fn too_many_buckets() -> SinkError {
    SinkError::invalid_query(format!(
        "the summary has more than {MAX_BUCKETS} buckets: choose a longer interval, \
         a shorter range, fewer groupBy keys or more filters"
    ))
}

impl Serialize for GroupBy {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut seq = s.serialize_seq(None)?;
        for key in self.keys() {
            seq.serialize_element(key.as_str())?;
        }
        seq.end()
    }
}

impl Serialize for Interval {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.as_str())
    }
}

impl Serialize for SummaryBucket {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let k = &self.keys;
        let mut map = s.serialize_map(None)?;
        map.serialize_entry("start", &format_timestamp(self.start))?;
        if let Some(route) = &k.route {
            map.serialize_entry("route", route)?;
        }
        if let Some(method) = &k.method {
            map.serialize_entry("method", method)?;
        }
        if let Some(class) = k.status {
            map.serialize_entry("status", &format!("{class}xx"))?;
        }
        if let Some(outcome) = k.outcome {
            map.serialize_entry("outcome", outcome.as_str())?;
        }
        if let Some(consumer) = &k.consumer {
            map.serialize_entry("consumer", consumer)?;
        }
        let t = &self.stats;
        map.serialize_entry("requests", &t.requests)?;
        map.serialize_entry("clientErrors", &t.client_errors)?;
        map.serialize_entry("serverErrors", &t.server_errors)?;
        map.serialize_entry("requestBytes", &t.request_bytes)?;
        map.serialize_entry("responseBytes", &t.response_bytes)?;
        map.serialize_entry("durationUs", &t.duration_us)?;
        map.end()
    }
}

impl Serialize for UsageSummary {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut map = s.serialize_map(Some(7))?;
        map.serialize_entry("since", &format_timestamp(self.since))?;
        map.serialize_entry("until", &format_timestamp(self.until))?;
        map.serialize_entry("interval", &self.interval)?;
        map.serialize_entry("groupBy", &self.group_by)?;
        map.serialize_entry("completeUntil", &self.complete_until.map(format_timestamp))?;
        map.serialize_entry("buckets", &self.buckets)?;
        map.serialize_entry("total", &self.total)?;
        map.end()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sink::GroupKey;
    use time::macros::datetime;

    #[test]
    fn the_wire_form_is_the_contract() {
        let q = SummaryQuery {
            since: datetime!(2026-11-28 00:00 UTC),
            until: datetime!(2026-11-29 00:00 UTC),
            interval: Interval::Hour,
            group_by: GroupBy::NONE.with(GroupKey::Status).with(GroupKey::Route),
            ..SummaryQuery::default()
        };
        let stats = SummaryStats {
            requests: 12,
            response_bytes: 5880,
            duration_us: DurationStats {
                p50: 1200,
                p95: 2100,
                p99: 2500,
                max: 2600,
            },
            ..SummaryStats::default()
        };
        let bucket = SummaryBucket {
            start: datetime!(2026-11-28 08:00 UTC),
            keys: GroupKeys {
                route: Some(Some("/rest/v1/airdrop/{batchId}".into())),
                status: Some(2),
                ..GroupKeys::default()
            },
            stats,
        };
        let mut s = UsageSummary::new(&q, vec![bucket], stats).unwrap();
        s.complete_until = Some(datetime!(2026-11-28 23:59:59.9 UTC));
        let json = serde_json::to_string(&s).unwrap();
        assert_eq!(
            json,
            r#"{"since":"2026-11-28T00:00:00.000Z","until":"2026-11-29T00:00:00.000Z","interval":"hour","groupBy":["route","status"],"completeUntil":"2026-11-28T23:59:59.900Z","buckets":[{"start":"2026-11-28T08:00:00.000Z","route":"/rest/v1/airdrop/{batchId}","status":"2xx","requests":12,"clientErrors":0,"serverErrors":0,"requestBytes":0,"responseBytes":5880,"durationUs":{"p50":1200,"p95":2100,"p99":2500,"max":2600}}],"total":{"requests":12,"clientErrors":0,"serverErrors":0,"requestBytes":0,"responseBytes":5880,"durationUs":{"p50":1200,"p95":2100,"p99":2500,"max":2600}}}"#
        );
        let null_route = SummaryBucket {
            start: datetime!(2026-11-28 08:00 UTC),
            keys: GroupKeys {
                route: Some(None),
                ..GroupKeys::default()
            },
            stats,
        };
        let v = serde_json::to_value(&null_route).unwrap();
        assert_eq!(v["route"], serde_json::Value::Null);
        assert!(v.get("status").is_none());
    }

    #[test]
    fn buckets_sort_by_start_then_keys() {
        let q = SummaryQuery::default();
        let b = |h: u8, route: Option<&str>| SummaryBucket {
            start: datetime!(2026-11-28 00:00 UTC) + time::Duration::hours(h.into()),
            keys: GroupKeys {
                route: Some(route.map(str::to_owned)),
                ..GroupKeys::default()
            },
            stats: SummaryStats::default(),
        };
        let s = UsageSummary::new(
            &q,
            vec![
                b(1, Some("/a")),
                b(0, Some("/b")),
                b(0, None),
                b(0, Some("/a")),
            ],
            SummaryStats::default(),
        )
        .unwrap();
        let order: Vec<_> = s
            .buckets
            .iter()
            .map(|b| (b.start.hour(), b.keys.route.clone().unwrap()))
            .collect();
        assert_eq!(
            order,
            [
                (0, None),
                (0, Some("/a".into())),
                (0, Some("/b".into())),
                (1, Some("/a".into()))
            ]
        );
        let many = (0..=MAX_BUCKETS).map(|_| b(0, None)).collect();
        assert!(UsageSummary::new(&q, many, SummaryStats::default()).is_err());
    }
}
