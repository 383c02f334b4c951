//! Counting records into buckets in Rust: the [`Aggregator`] that the default
//! [`summarize`](crate::UsageSink::summarize), `MemorySink` and the SQLite
//! sink's grouped rows all feed.

use std::collections::BTreeMap;

use time::OffsetDateTime;

use super::histogram::Histogram;
use super::output::{too_many_buckets, GroupKeys, SummaryBucket, SummaryStats, UsageSummary};
use super::query::{GroupBy, GroupKey, Interval, SummaryQuery};
use super::MAX_BUCKETS;
use crate::record::{from_unix_millis, unix_millis};
use crate::sink::{Order, Position, Projection, UsageQuery, UsageSink};
use crate::{Outcome, SinkError, SinkErrorKind, UsageRecord};

/// What a summary reads of one record.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Fields<'a> {
    pub(crate) created_at: OffsetDateTime,
    pub(crate) route: Option<&'a str>,
    pub(crate) method: &'a str,
    pub(crate) status: u16,
    pub(crate) outcome: Outcome,
    pub(crate) consumer: Option<&'a str>,
    pub(crate) duration_us: u64,
    pub(crate) request_bytes: u64,
    pub(crate) response_bytes: u64,
}

impl<'a> Fields<'a> {
    pub(crate) fn of(r: &'a UsageRecord) -> Self {
        Self {
            created_at: r.created_at,
            route: r.route.as_deref(),
            method: &r.method,
            status: r.status,
            outcome: r.outcome,
            consumer: r.consumer.as_deref(),
            duration_us: r.duration_us,
            request_bytes: r.request.body.size,
            response_bytes: r.response.size,
        }
    }
}

/// The group keys of a record under `group_by`.
pub(crate) fn keys_of(group_by: GroupBy, f: &Fields<'_>) -> GroupKeys {
    let on = |k| group_by.contains(k);
    GroupKeys {
        route: on(GroupKey::Route).then(|| f.route.map(str::to_owned)),
        method: on(GroupKey::Method).then(|| f.method.to_owned()),
        status: on(GroupKey::Status).then_some(f.status / 100),
        outcome: on(GroupKey::Outcome).then_some(f.outcome),
        consumer: on(GroupKey::Consumer).then(|| f.consumer.map(str::to_owned)),
    }
}

/// The exact figures of some requests and their duration histogram.
#[derive(Debug, Clone, Default)]
pub(crate) struct Acc {
    requests: u64,
    client_errors: u64,
    server_errors: u64,
    request_bytes: u64,
    response_bytes: u64,
    max: u64,
    durations: Histogram,
}

/// One row of a `GROUP BY ..., bin`: the figures of the requests of one
/// group whose durations fall in one histogram bin.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct BinRow {
    pub(crate) bin: u32,
    pub(crate) requests: u64,
    pub(crate) client_errors: u64,
    pub(crate) server_errors: u64,
    pub(crate) request_bytes: u64,
    pub(crate) response_bytes: u64,
    pub(crate) max: u64,
}

impl Acc {
    fn add(&mut self, f: &Fields<'_>) {
        self.add_row(&BinRow {
            bin: super::histogram::bin(f.duration_us),
            requests: 1,
            client_errors: u64::from((400..500).contains(&f.status)),
            server_errors: u64::from((500..600).contains(&f.status)),
            request_bytes: f.request_bytes,
            response_bytes: f.response_bytes,
            max: f.duration_us,
        });
    }

    fn add_row(&mut self, row: &BinRow) {
        self.requests = self.requests.saturating_add(row.requests);
        self.client_errors = self.client_errors.saturating_add(row.client_errors);
        self.server_errors = self.server_errors.saturating_add(row.server_errors);
        self.request_bytes = self.request_bytes.saturating_add(row.request_bytes);
        self.response_bytes = self.response_bytes.saturating_add(row.response_bytes);
        self.max = self.max.max(row.max);
        self.durations.add_bin(row.bin, row.requests);
    }

    fn stats(&self) -> SummaryStats {
        SummaryStats {
            requests: self.requests,
            client_errors: self.client_errors,
            server_errors: self.server_errors,
            request_bytes: self.request_bytes,
            response_bytes: self.response_bytes,
            duration_us: self.durations.stats(self.max),
        }
    }
}

/// Buckets being counted: by start (in Unix milliseconds) and group.
#[derive(Debug)]
pub(crate) struct Aggregator {
    interval: Interval,
    group_by: GroupBy,
    buckets: BTreeMap<(i64, GroupKeys), Acc>,
    total: Acc,
}

impl Aggregator {
    pub(crate) fn new(query: &SummaryQuery) -> Self {
        Self {
            interval: query.interval,
            group_by: query.group_by,
            buckets: BTreeMap::new(),
            total: Acc::default(),
        }
    }

    /// Counts one record (that the caller has matched against the query).
    /// Fails once there are more than [`MAX_BUCKETS`] buckets.
    pub(crate) fn add(&mut self, f: &Fields<'_>) -> Result<(), SinkError> {
        let start = unix_millis(self.interval.floor(f.created_at));
        let keys = keys_of(self.group_by, f);
        self.bucket(start, keys)?.add(f);
        self.total.add(f);
        Ok(())
    }

    /// Counts one grouped row: `start` is the bucket's start in Unix
    /// milliseconds, already on the interval's boundary.
    #[cfg(feature = "sqlite")]
    pub(crate) fn add_row(
        &mut self,
        start: i64,
        keys: GroupKeys,
        row: &BinRow,
    ) -> Result<(), SinkError> {
        self.bucket(start, keys)?.add_row(row);
        self.total.add_row(row);
        Ok(())
    }

    fn bucket(&mut self, start: i64, keys: GroupKeys) -> Result<&mut Acc, SinkError> {
        let full = self.buckets.len() >= MAX_BUCKETS;
        match self.buckets.entry((start, keys)) {
            std::collections::btree_map::Entry::Occupied(e) => Ok(e.into_mut()),
            std::collections::btree_map::Entry::Vacant(_) if full => Err(too_many_buckets()),
            std::collections::btree_map::Entry::Vacant(e) => Ok(e.insert(Acc::default())),
        }
    }

    /// The summary of what was counted.
    pub(crate) fn finish(self, query: &SummaryQuery) -> Result<UsageSummary, SinkError> {
        let buckets = self
            .buckets
            .into_iter()
            .map(|((start, keys), acc)| SummaryBucket {
                start: from_unix_millis(start).unwrap_or(OffsetDateTime::UNIX_EPOCH),
                keys,
                stats: acc.stats(),
            })
            .collect();
        UsageSummary::new(query, buckets, self.total.stats())
    }
}

/// The default [`UsageSink::summarize`]: pages through
/// [`query`](UsageSink::query) with the summary's scope and filters,
/// [`MAX_LIMIT`](crate::sink::MAX_LIMIT) records a page, asking only for the
/// fields a summary counts ([`Projection::Summary`]), and counts in memory
/// (a bounded histogram per bucket, never the records).
///
/// A page whose `next_cursor` does not move past the cursor it was asked
/// with (a `query` that ignores the cursor) is an error, not an endless loop.
/// Between pages it yields to the runtime, so a long summary neither starves
/// other tasks nor escapes a timeout around it.
pub(crate) async fn summarize_by_paging<S: UsageSink + ?Sized>(
    sink: &S,
    query: &SummaryQuery,
) -> Result<UsageSummary, SinkError> {
    query.check()?;
    let mut list = query.list_query();
    list.fields = Projection::Summary;
    let mut agg = Aggregator::new(query);
    for page_no in 1u64.. {
        let page = sink.query(&list).await?;
        for r in &page.records {
            // A sink written before a filter existed may not apply it.
            if query.matches(r) {
                agg.add(&Fields::of(r))?;
            }
        }
        match page.next_cursor {
            Some(cursor) if !page.records.is_empty() => {
                check_progress(&list, &cursor, page_no)?;
                list.cursor = Some(cursor);
            }
            _ => break,
        }
        tokio::task::yield_now().await;
    }
    agg.finish(query)
}

/// Fails when `next` (the cursor page `page_no` came with) does not lead past
/// the cursor that page was asked with: the sink would answer the same page
/// again, and paging would never end.
fn check_progress(asked: &UsageQuery, next: &str, page_no: u64) -> Result<(), SinkError> {
    let stuck = || {
        SinkError::message(
            SinkErrorKind::Other,
            format!(
                "the default summarize stopped at page {page_no}: query() answered a page whose \
                 next_cursor does not move past the cursor it was asked with, so paging would \
                 never end; query() must return the records after UsageQuery::position() \
                 (is the sink ignoring UsageQuery::cursor?)"
            ),
        )
        .permanent()
    };
    let Some(before) = asked.cursor.as_deref() else {
        return Ok(());
    };
    if before == next {
        return Err(stuck());
    }
    // Cursors this crate issued say where they point; a sink's own opaque
    // cursors are only compared for equality.
    let after = UsageQuery {
        cursor: Some(next.to_owned()),
        ..asked.clone()
    };
    if let (Ok(Some(before)), Ok(Some(after))) = (asked.position(), after.position()) {
        let key = |p: &Position| (p.created_at_ms, p.id.clone());
        let moved = match asked.order {
            Order::Asc => key(&after) > key(&before),
            Order::Desc => key(&after) < key(&before),
        };
        if !moved {
            return Err(stuck());
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::record::from_unix_millis;

    fn at(ms: i64, id: &str) -> UsageRecord {
        UsageRecord {
            id: id.into(),
            created_at: from_unix_millis(ms).unwrap(),
            ..UsageRecord::default()
        }
    }

    /// A next cursor must lead past the one a page was asked with: equal or
    /// behind it (in the query's order) is an error, ahead is fine; a
    /// sink's own cursors are only compared for equality.
    #[test]
    fn paging_stops_when_a_cursor_does_not_move_on() {
        for order in [Order::Asc, Order::Desc] {
            let base = UsageQuery {
                order,
                ..UsageQuery::default()
            };
            let asked = UsageQuery {
                cursor: Some(base.cursor_after(&at(5, "B"))),
                ..base.clone()
            };
            let (ahead, behind) = match order {
                Order::Asc => (at(5, "C"), at(4, "Z")),
                Order::Desc => (at(5, "A"), at(6, "A")),
            };
            assert!(check_progress(&base, "anything", 1).is_ok(), "first page");
            let same = asked.cursor.clone().unwrap();
            let err = check_progress(&asked, &same, 2).unwrap_err();
            assert!(err.to_string().contains("stopped at page 2"), "{err}");
            assert!(check_progress(&asked, &base.cursor_after(&behind), 3).is_err());
            assert!(check_progress(&asked, &base.cursor_after(&ahead), 3).is_ok());
        }
        let own = UsageQuery {
            cursor: Some("p1".into()),
            ..UsageQuery::default()
        };
        assert!(check_progress(&own, "p1", 2).is_err());
        assert!(check_progress(&own, "p2", 2).is_ok());
    }
}
