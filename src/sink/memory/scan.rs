//! Reading a [`MemorySink`](super::MemorySink): a record by id, a page and
//! a summary, each ranging over the scope's index without decoding more than
//! it returns.

use std::collections::VecDeque;
use std::ops::Bound;
use std::sync::atomic::{AtomicBool, Ordering};

use super::index::{Entry, Key, State};
use crate::record::binary::{self, Head};
use crate::record::unix_millis;
use crate::sink::get::ulid_millis;
use crate::sink::summary::{Aggregator, Fields};
use crate::sink::{
    record_bytes, ConsumerScope, Order, Position, SummaryQuery, UsageQuery, UsageSummary,
};
use crate::{SinkError, UsageRecord};

impl State {
    /// The record with this id, if stored and in `scope`.
    ///
    /// An id that is another consumer's and one that is stored nowhere cost
    /// the same: see [`lookup`](Self::lookup).
    pub(super) fn get(&self, id: &str, scope: &ConsumerScope) -> Option<UsageRecord> {
        let (at, _) = self.lookup(id, scope);
        let (key, entry) = &self.all[at?];
        Some(decode(key, entry))
    }

    /// Where the record `id` is in `all`, when it is stored and in `scope`;
    /// and the steps taken to know.
    ///
    /// Every id goes through the same steps, whether it is stored for the
    /// caller, stored for another consumer, or stored nowhere: the id's
    /// milliseconds from its ULID, one hash lookup, one binary search of
    /// `all` (for an unknown id, by its ULID milliseconds: a place among
    /// records of about that time, as for a real one), one read of the
    /// consumer of the record found there (or next to it), and one scope
    /// check. Only the caller's own record is then decoded. So the time of
    /// a `404` tells nothing of whether the id exists for someone else.
    pub(super) fn lookup(&self, id: &str, scope: &ConsumerScope) -> (Option<usize>, Steps) {
        let mut steps = Steps::default();
        let guess = ulid_millis(id).unwrap_or(0);
        let stored = self.ids.get(id).copied();
        steps.hashed = true;
        let key: Key = (stored.unwrap_or(guess), id.into());
        let found = self.all.binary_search_by(|(k, _)| k.cmp(&key));
        steps.searched = true;
        let at = match found {
            Ok(at) | Err(at) => at.min(self.all.len().saturating_sub(1)),
        };
        let Some((_, entry)) = self.all.get(at) else {
            // An empty sink: nothing to find, for any id.
            return (None, steps);
        };
        let in_scope = scope.contains(Head::of(&entry.blob).consumer);
        steps.scope_checked = true;
        let hit = stored.is_some() && found.is_ok() && in_scope;
        (hit.then_some(at), steps)
    }

    /// The records of a page: at most `query.fetch_limit()` matching records
    /// after `after`, in the query's order, decoded.
    ///
    /// Stops when the hits [are enough](UsageQuery::read_enough) (in records
    /// or in bytes: only what the page may show is decoded), or when `cancel`
    /// is set (the query was dropped: what was found is thrown away).
    pub(super) fn page(
        &self,
        query: &UsageQuery,
        after: Option<&Position>,
        cancel: &AtomicBool,
    ) -> Vec<UsageRecord> {
        let Some(range) = key_range(query, after) else {
            return Vec::new();
        };
        let keys = match &query.consumer {
            ConsumerScope::All => {
                let hits = self
                    .all
                    .range(index_range(&self.all, &range, |(key, _)| key))
                    .map(|(key, entry)| (key, entry));
                return match query.order {
                    Order::Asc => collect(query, hits, cancel),
                    Order::Desc => collect(query, hits.rev(), cancel),
                };
            }
            ConsumerScope::Anonymous => &self.anonymous,
            ConsumerScope::Consumer(c) => match self.consumers.get(c.as_str()) {
                Some(keys) => keys,
                None => return Vec::new(),
            },
        };
        // The keys come in order: each is looked for near the one before.
        let mut near = None;
        let keys = keys.range(index_range(keys, &range, |key| key));
        let mut find = |key: &Key| {
            let at = find_near(&self.all, key, &mut near)?;
            let (key, entry) = &self.all[at];
            Some((key, entry))
        };
        match query.order {
            Order::Asc => collect(query, keys.filter_map(&mut find), cancel),
            Order::Desc => collect(query, keys.rev().filter_map(&mut find), cancel),
        }
    }
}

impl State {
    /// Counts the records of a summary in place: the scope's index over the
    /// range, each entry read without decoding the record.
    ///
    /// Gives up with an error when `cancel` is set (the query was dropped).
    pub(super) fn summarize(
        &self,
        query: &SummaryQuery,
        cancel: &AtomicBool,
    ) -> Result<UsageSummary, SinkError> {
        let list = query.list_query();
        let mut agg = Aggregator::new(query);
        let Some(range) = key_range(&list, None) else {
            return agg.finish(query);
        };
        let mut seen = 0u32;
        let mut add = |entry: &Entry| -> Result<(), SinkError> {
            seen = seen.wrapping_add(1);
            if seen.is_multiple_of(CANCEL_CHECK) && cancel.load(Ordering::Relaxed) {
                return Err(cancelled());
            }
            if !entry_matches(&list, entry) {
                return Ok(());
            }
            let head = Head::of(&entry.blob);
            let tail = head.tail();
            agg.add(&Fields {
                created_at: entry.created_at,
                route: tail.route,
                method: head.method,
                status: entry.status,
                outcome: tail.outcome,
                consumer: head.consumer,
                duration_us: tail.duration_us,
                request_bytes: tail.request_size,
                response_bytes: tail.response_size,
            })
        };
        let keys = match &list.consumer {
            ConsumerScope::All => {
                for (_, entry) in self
                    .all
                    .range(index_range(&self.all, &range, |(key, _)| key))
                {
                    add(entry)?;
                }
                return agg.finish(query);
            }
            ConsumerScope::Anonymous => &self.anonymous,
            ConsumerScope::Consumer(c) => match self.consumers.get(c.as_str()) {
                Some(keys) => keys,
                None => return agg.finish(query),
            },
        };
        let mut near = None;
        for key in keys.range(index_range(keys, &range, |key| key)) {
            if let Some(at) = find_near(&self.all, key, &mut near) {
                add(&self.all[at].1)?;
            }
        }
        agg.finish(query)
    }
}

/// The steps [`State::lookup`] took: the same for every id that is not the
/// caller's (tests compare them).
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub(super) struct Steps {
    pub(super) hashed: bool,
    pub(super) searched: bool,
    pub(super) scope_checked: bool,
}

/// How many entries a scan reads between two looks at its cancel flag.
const CANCEL_CHECK: u32 = 1024;

/// The error of a scan given up because its query was dropped (nobody reads it).
fn cancelled() -> SinkError {
    SinkError::message(
        crate::SinkErrorKind::Unavailable,
        "the query was cancelled (its caller stopped waiting)",
    )
}

/// The hits of a page from `entries` (in the page's order): those that match,
/// decoded, until they [are enough](UsageQuery::read_enough) or `cancel` is set.
fn collect<'a>(
    query: &UsageQuery,
    entries: impl Iterator<Item = (&'a Key, &'a Entry)>,
    cancel: &AtomicBool,
) -> Vec<UsageRecord> {
    let mut hits = Vec::new();
    let mut bytes = 0usize;
    for (i, (key, entry)) in entries.enumerate() {
        if i.is_multiple_of(CANCEL_CHECK as usize) && cancel.load(Ordering::Relaxed) {
            return Vec::new();
        }
        if !entry_matches(query, entry) {
            continue;
        }
        let record = decode(key, entry);
        debug_assert!(query.matches(&record));
        bytes = bytes.saturating_add(record_bytes(&record));
        hits.push(record);
        if query.read_enough(hits.len(), bytes) {
            break;
        }
    }
    hits
}

/// [`UsageQuery::matches`] on a stored entry, without decoding it. The scope is
/// left out: the index the entry came from is the scope's.
fn entry_matches(query: &UsageQuery, entry: &Entry) -> bool {
    if !(query.since.is_none_or(|s| entry.created_at >= s)
        && query.until.is_none_or(|u| entry.created_at < u)
        && query.status.is_none_or(|s| s.matches(entry.status)))
    {
        return false;
    }
    if query.method.is_none()
        && query.path.is_none()
        && query.route.is_none()
        && query.outcome.is_none()
        && query.trace_id.is_none()
    {
        return true;
    }
    let head = Head::of(&entry.blob);
    if !(query.method.as_deref().is_none_or(|m| head.method == m)
        && query.path.as_ref().is_none_or(|p| p.matches(head.path)))
    {
        return false;
    }
    if query.route.is_none() && query.outcome.is_none() && query.trace_id.is_none() {
        return true;
    }
    let tail = head.tail();
    query.route.as_deref().is_none_or(|r| tail.route == Some(r))
        && query.outcome.is_none_or(|o| tail.outcome == o)
        && query.trace_id.as_deref().is_none_or(|t| {
            // Compared as bytes: nothing decoded or allocated per record.
            let want: Option<[u8; 16]> = crate::record::trace_id_bytes(t);
            tail.trace
                .is_some_and(|bytes| want.is_some_and(|w| bytes[..16] == w))
        })
}

/// The position of `key` in `all`, searched for from `near` (the position found
/// last, updated): outwards in doubling steps, then by bisection. A page for one
/// consumer looks up keys in order, a few hundred records apart in a large sink,
/// so this touches far fewer cache lines than a binary search over all records.
pub(super) fn find_near(
    all: &VecDeque<(Key, Entry)>,
    key: &Key,
    near: &mut Option<usize>,
) -> Option<usize> {
    let n = all.len();
    let (mut lo, mut hi) = (0, n);
    if let Some(h) = near.filter(|&h| h < n) {
        match all[h].0.cmp(key) {
            std::cmp::Ordering::Equal => return Some(h),
            std::cmp::Ordering::Less => {
                let mut step = 1;
                lo = h + 1;
                loop {
                    hi = h.saturating_add(1 + step).min(n);
                    if hi == n || all[hi - 1].0 >= *key {
                        break;
                    }
                    lo = hi;
                    step *= 2;
                }
            }
            std::cmp::Ordering::Greater => {
                let mut step = 1;
                hi = h;
                loop {
                    lo = h.saturating_sub(step);
                    if lo == 0 || all[lo].0 <= *key {
                        break;
                    }
                    hi = lo;
                    step *= 2;
                }
            }
        }
    }
    while lo < hi {
        let mid = lo + (hi - lo) / 2;
        match all[mid].0.cmp(key) {
            std::cmp::Ordering::Equal => {
                *near = Some(mid);
                return Some(mid);
            }
            std::cmp::Ordering::Less => lo = mid + 1,
            std::cmp::Ordering::Greater => hi = mid,
        }
    }
    None
}

/// The positions in `items` (sorted by `key`) whose keys are within `bounds`.
fn index_range<T>(
    items: &VecDeque<T>,
    (lower, upper): &(Bound<Key>, Bound<Key>),
    key: impl Fn(&T) -> &Key,
) -> std::ops::Range<usize> {
    let start = match lower {
        Bound::Unbounded => 0,
        Bound::Included(k) => items.partition_point(|t| key(t) < k),
        Bound::Excluded(k) => items.partition_point(|t| key(t) <= k),
    };
    let end = match upper {
        Bound::Unbounded => items.len(),
        Bound::Included(k) => items.partition_point(|t| key(t) <= k),
        Bound::Excluded(k) => items.partition_point(|t| key(t) < k),
    };
    start..end.max(start)
}

/// The keys a page may come from: `since`/`until` and the cursor as bounds on
/// `(created_at ms, id)`. `None` when the range is empty. The bounds are a
/// superset of the matches where `since` or `until` fall inside a millisecond;
/// [`UsageQuery::matches`] decides exactly.
fn key_range(query: &UsageQuery, after: Option<&Position>) -> Option<(Bound<Key>, Bound<Key>)> {
    let min_id = Box::<str>::default;
    // created_at >= since implies ms(created_at) >= ms(since).
    let mut lower = match query.since {
        Some(since) => Bound::Included((unix_millis(since), min_id())),
        None => Bound::Unbounded,
    };
    // created_at < until implies ms(created_at) <= ms(until).
    let mut upper = match query.until {
        Some(until) => match unix_millis(until).checked_add(1) {
            Some(ms) => Bound::Excluded((ms, min_id())),
            None => Bound::Unbounded,
        },
        None => Bound::Unbounded,
    };
    if let Some(p) = after {
        let key: Key = (p.created_at_ms, p.id.as_str().into());
        match query.order {
            Order::Asc => {
                let tighter = match &lower {
                    Bound::Included(k) | Bound::Excluded(k) => *k <= key,
                    Bound::Unbounded => true,
                };
                if tighter {
                    lower = Bound::Excluded(key);
                }
            }
            Order::Desc => {
                let tighter = match &upper {
                    Bound::Included(k) | Bound::Excluded(k) => *k >= key,
                    Bound::Unbounded => true,
                };
                if tighter {
                    upper = Bound::Excluded(key);
                }
            }
        }
    }
    let empty = match (&lower, &upper) {
        (Bound::Included(lo) | Bound::Excluded(lo), Bound::Excluded(hi)) => lo >= hi,
        (Bound::Excluded(lo), Bound::Included(hi)) => lo >= hi,
        (Bound::Included(lo), Bound::Included(hi)) => lo > hi,
        _ => false,
    };
    (!empty).then_some((lower, upper))
}

/// The stored record back, whole.
fn decode(key: &Key, entry: &Entry) -> UsageRecord {
    binary::decode(
        &entry.blob,
        binary::VERSION,
        key.1.to_string(),
        entry.created_at,
        entry.status,
    )
    .expect("a buffer written by `binary::encode`")
}

#[cfg(test)]
mod tests {
    use super::*;
    use time::OffsetDateTime;

    #[test]
    fn find_near_agrees_with_a_binary_search_from_any_hint() {
        let mut rng = fastrand::Rng::with_seed(7);
        for n in [0, 1, 2, 3, 10, 100, 1000] {
            let all: VecDeque<(Key, Entry)> = (0..n)
                .map(|i| {
                    let key = (2 * i as i64, "x".into());
                    let entry = Entry {
                        created_at: OffsetDateTime::UNIX_EPOCH,
                        status: 200,
                        pooled: false,
                        blob: Vec::new(),
                    };
                    (key, entry)
                })
                .collect();
            for _ in 0..200 {
                // Present (even) and absent (odd) keys, below and past the ends.
                let key = (rng.i64(-3..2 * n as i64 + 3), "x".into());
                let mut near = (rng.bool() && n > 0).then(|| rng.usize(..n + 1));
                let want = all.binary_search_by(|(k, _)| k.cmp(&key)).ok();
                assert_eq!(
                    find_near(&all, &key, &mut near),
                    want,
                    "n {n}, key {}",
                    key.0
                );
            }
        }
    }
}
