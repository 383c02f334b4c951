//! [`UsagePage`]: one page of records, and how a sink makes one.

use super::UsageQuery;
use crate::UsageRecord;

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
    ///
    /// With a byte budget ([`UsageQuery::max_bytes`]), the page also ends
    /// before the first hit that takes the hits' [`record_bytes`] past it
    /// (the first hit is always kept), with a `next_cursor` to that hit. A
    /// sink that stops reading rows as soon as the hits it holds pass the
    /// budget (that last hit included) gets the same page as one that read
    /// `limit + 1`.
    pub fn from_sorted(query: &UsageQuery, mut hits: Vec<UsageRecord>) -> Self {
        let limit = query.limit.max(1);
        let mut keep = hits.len().min(limit);
        if let Some(budget) = query.max_bytes {
            let mut bytes = 0usize;
            for (i, hit) in hits.iter().enumerate().take(keep) {
                bytes = bytes.saturating_add(record_bytes(hit));
                if bytes > budget && i > 0 {
                    keep = i;
                    break;
                }
            }
        }
        let next_cursor = if hits.len() > keep {
            hits.truncate(keep);
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

/// About how many bytes a record takes in memory, as a page's byte budget
/// ([`UsageQuery::max_bytes`]) counts it: its bodies, headers, route params,
/// query and strings, plus a fixed 256 for the rest.
///
/// ```
/// use tower_usage::{sink::record_bytes, CapturedBody, UsageRecord};
///
/// let mut record = UsageRecord::default();
/// let empty = record_bytes(&record);
/// record.response = CapturedBody::complete(vec![b'x'; 1000]);
/// assert_eq!(record_bytes(&record), empty + 1000);
/// ```
pub fn record_bytes(record: &UsageRecord) -> usize {
    let headers = |h: &http::HeaderMap| {
        h.iter()
            .map(|(name, value)| name.as_str().len() + value.len() + 8)
            .sum::<usize>()
    };
    256 + record.id.len()
        + record.consumer.as_ref().map_or(0, String::len)
        + record.method.len()
        + record.path.len()
        + record.route.as_ref().map_or(0, String::len)
        + record.request.query.len()
        + record
            .request
            .params
            .iter()
            .map(|(k, v)| k.len() + v.len())
            .sum::<usize>()
        + headers(&record.request.headers)
        + headers(&record.response_headers)
        + record.request.body.bytes.len()
        + record.response.bytes.len()
}
