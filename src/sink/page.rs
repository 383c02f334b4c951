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
