//! The index of a [`MemorySink`](super::MemorySink): every record sorted by
//! `(created_at, id)`, each consumer's keys once more, and the page queries
//! that range over them.

use std::collections::VecDeque;

use foldhash::HashMap;
use std::ops::Bound;

use time::OffsetDateTime;

use super::id::Id;
use crate::record::binary::{self, encode, Head};
use crate::record::unix_millis;
use crate::sink::summary::{Aggregator, Fields};
use crate::sink::{ConsumerScope, Order, Position, SummaryQuery, UsageQuery, UsageSummary};
use crate::{SinkError, UsageRecord};

/// `(created_at in unix milliseconds, id)`: the sort key of a page.
pub(super) type Key = (i64, Id);

/// One stored record: what a filter needs, and the rest encoded in one allocation.
pub(super) struct Entry {
    /// The exact `created_at` (the key holds only its milliseconds).
    pub(super) created_at: OffsetDateTime,
    pub(super) status: u16,
    /// Every other field but the id (which is in the key), see [`encode`]. A
    /// `Vec` so an evicted record's buffer can take the next record.
    pub(super) blob: Vec<u8>,
}

/// What a record costs besides its buffer: its entries in the indexes and the id set.
pub(super) const RECORD_OVERHEAD: usize = 160;

#[derive(Default)]
pub(super) struct State {
    /// Every record, sorted by key.
    pub(super) all: VecDeque<(Key, Entry)>,
    /// The keys of the records without a consumer, sorted.
    pub(super) anonymous: VecDeque<Key>,
    /// The keys of each consumer's records, sorted; an entry goes when its last
    /// record is evicted.
    pub(super) consumers: HashMap<String, VecDeque<Key>>,
    /// The bytes of each consumer's records, as `bytes` counts them.
    pub(super) consumer_bytes: HashMap<String, usize>,
    /// The bytes of the records without a consumer.
    pub(super) anonymous_bytes: usize,
    /// Consumers seen over their fair share (a few at most: a share is a
    /// quarter); some may have dropped under it since.
    pub(super) over_share: Vec<Option<String>>,
    /// The stored ids and their `created_at` milliseconds: a retried batch is
    /// not stored twice, and a record is found by id (`get`) in one lookup and
    /// one binary search.
    pub(super) ids: HashMap<Id, i64>,
    pub(super) evicted: u64,
    /// The bytes the records take, as `max_bytes` counts them: each record's
    /// buffer and [`RECORD_OVERHEAD`].
    pub(super) bytes: usize,
    /// Until the sink is full: reused to encode each record before it is copied
    /// into an allocation of its exact size.
    pub(super) scratch: Vec<u8>,
    /// The buffer of the last evicted record, which the next record is encoded
    /// into: in a full sink each insert evicts, so most records reuse one.
    pub(super) spare: Vec<u8>,
}

impl State {
    /// Stores `record`; `false` when its id was stored already.
    pub(super) fn insert(&mut self, record: &UsageRecord) -> bool {
        let id = Id::new(&record.id);
        let ms = unix_millis(record.created_at);
        match self.ids.entry(id.clone()) {
            std::collections::hash_map::Entry::Occupied(_) => return false,
            std::collections::hash_map::Entry::Vacant(slot) => {
                slot.insert(ms);
            }
        }
        let key: Key = (ms, id);
        let blob = if self.spare.capacity() == 0 {
            // Not full yet: encode once into the scratch buffer, to allocate
            // just what the record takes.
            self.scratch.clear();
            encode(&mut self.scratch, record);
            self.scratch.clone()
        } else {
            // Full: encode straight into the evicted record's buffer, kept when
            // it wastes at most a quarter.
            let mut blob = std::mem::take(&mut self.spare);
            blob.clear();
            encode(&mut blob, record);
            if blob.capacity() - blob.len() > blob.len() / 4 {
                blob.shrink_to_fit();
            }
            blob
        };
        let cost = blob.capacity() + RECORD_OVERHEAD;
        self.bytes += cost;
        match &record.consumer {
            None => self.anonymous_bytes += cost,
            Some(c) => match self.consumer_bytes.get_mut(c.as_str()) {
                Some(bytes) => *bytes += cost,
                None => {
                    self.consumer_bytes.insert(c.clone(), cost);
                }
            },
        }
        let entry = Entry {
            created_at: record.created_at,
            status: record.status,
            blob,
        };
        let keys = match &record.consumer {
            None => &mut self.anonymous,
            // Look up before inserting: `entry` would clone the name every time.
            Some(c) => match self.consumers.get_mut(c.as_str()) {
                Some(keys) => keys,
                None => self.consumers.entry(c.clone()).or_default(),
            },
        };
        insert_sorted(keys, key.clone(), |key| key);
        insert_sorted(&mut self.all, (key, entry), |(key, _)| key);
        true
    }

    /// How many records and bytes `consumer` (`None`: the anonymous one) holds.
    pub(super) fn share_of(&self, consumer: Option<&str>) -> (usize, usize) {
        match consumer {
            None => (self.anonymous.len(), self.anonymous_bytes),
            Some(c) => (
                self.consumers.get(c).map_or(0, VecDeque::len),
                self.consumer_bytes.get(c).copied().unwrap_or(0),
            ),
        }
    }

    /// Notes that `consumer` is over its share.
    pub(super) fn note_over_share(&mut self, consumer: Option<&str>) {
        if !self.over_share.iter().any(|c| c.as_deref() == consumer) {
            self.over_share.push(consumer.map(str::to_owned));
        }
    }

    /// A consumer still over its share (`over` says, given its records and
    /// bytes), if any; those no longer over it are forgotten.
    pub(super) fn over_share_consumer(
        &mut self,
        over: impl Fn(usize, usize) -> bool,
    ) -> Option<Option<String>> {
        while let Some(last) = self.over_share.last() {
            let (records, bytes) = self.share_of(last.as_deref());
            if over(records, bytes) {
                return Some(last.clone());
            }
            self.over_share.pop();
        }
        None
    }

    /// Evicts the oldest record of all.
    pub(super) fn evict_oldest(&mut self) {
        if !self.all.is_empty() {
            self.evict_at(0);
        }
    }

    /// Evicts the oldest record of `consumer` (`None`: the anonymous one).
    pub(super) fn evict_oldest_of(&mut self, consumer: Option<&str>) {
        let keys = match consumer {
            None => &self.anonymous,
            Some(c) => match self.consumers.get(c) {
                Some(keys) => keys,
                None => return,
            },
        };
        let Some(key) = keys.front() else {
            return;
        };
        // Most often (always, with one consumer) it is the oldest of all.
        if self.all.front().is_some_and(|(k, _)| k == key) {
            self.evict_at(0);
        } else if let Ok(at) = self.all.binary_search_by(|(k, _)| k.cmp(key)) {
            self.evict_at(at);
        }
    }

    /// Evicts the record at `at` in `all` (the front is the cheapest: a pop).
    fn evict_at(&mut self, at: usize) {
        let removed = if at == 0 {
            self.all.pop_front()
        } else {
            self.all.remove(at)
        };
        let Some((key, entry)) = removed else {
            return;
        };
        self.ids.remove(&key.1);
        let cost = entry.blob.capacity() + RECORD_OVERHEAD;
        let consumer = Head::of(&entry.blob).consumer;
        let keys = match consumer {
            None => {
                self.anonymous_bytes = self.anonymous_bytes.saturating_sub(cost);
                Some(&mut self.anonymous)
            }
            Some(c) => {
                if let Some(bytes) = self.consumer_bytes.get_mut(c) {
                    *bytes = bytes.saturating_sub(cost);
                }
                self.consumers.get_mut(c)
            }
        };
        if let Some(keys) = keys {
            // The oldest record of all is the oldest of its consumer.
            if keys.front() == Some(&key) {
                keys.pop_front();
            } else if let Ok(at) = keys.binary_search(&key) {
                keys.remove(at);
            }
            if let (Some(c), true) = (consumer, keys.is_empty()) {
                self.consumers.remove(c);
                self.consumer_bytes.remove(c);
            }
        }
        self.bytes = self.bytes.saturating_sub(cost);
        self.spare = entry.blob;
        self.evicted += 1;
    }

    /// The record with this id, if stored and in `scope`.
    pub(super) fn get(&self, id: &str, scope: &ConsumerScope) -> Option<UsageRecord> {
        let id = Id::new(id);
        let ms = *self.ids.get(&id)?;
        let key: Key = (ms, id);
        let at = self.all.binary_search_by(|(k, _)| k.cmp(&key)).ok()?;
        let (key, entry) = &self.all[at];
        if !scope.contains(Head::of(&entry.blob).consumer) {
            return None;
        }
        Some(decode(key, entry))
    }

    /// The records of a page: at most `query.fetch_limit()` matching records
    /// after `after`, in the query's order, decoded.
    pub(super) fn page(&self, query: &UsageQuery, after: Option<&Position>) -> Vec<UsageRecord> {
        let Some(range) = key_range(query, after) else {
            return Vec::new();
        };
        // One more than the limit, so `UsagePage::from_sorted` can tell whether
        // another page follows.
        let wanted = query.fetch_limit();
        let decode = |(key, entry): (&Key, &Entry)| {
            let record = decode(key, entry);
            debug_assert!(query.matches(&record));
            record
        };
        let keys = match &query.consumer {
            ConsumerScope::All => {
                let hits = self
                    .all
                    .range(index_range(&self.all, &range, |(key, _)| key))
                    .map(|(key, entry)| (key, entry))
                    .filter(|(_, entry)| entry_matches(query, entry));
                return match query.order {
                    Order::Asc => hits.take(wanted).map(decode).collect(),
                    Order::Desc => hits.rev().take(wanted).map(decode).collect(),
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
        let hits = keys
            .range(index_range(keys, &range, |key| key))
            .filter_map(|key| {
                let at = find_near(&self.all, key, &mut near)?;
                let (key, entry) = &self.all[at];
                Some((key, entry))
            })
            .filter(|(_, entry)| entry_matches(query, entry));
        match query.order {
            Order::Asc => hits.take(wanted).map(decode).collect(),
            Order::Desc => hits.rev().take(wanted).map(decode).collect(),
        }
    }
}

impl State {
    /// Counts the records of a summary in place: the scope's index over the
    /// range, each entry read without decoding the record.
    pub(super) fn summarize(&self, query: &SummaryQuery) -> Result<UsageSummary, SinkError> {
        let list = query.list_query();
        let mut agg = Aggregator::new(query);
        let Some(range) = key_range(&list, None) else {
            return agg.finish(query);
        };
        let mut add = |entry: &Entry| -> Result<(), SinkError> {
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
    {
        return true;
    }
    let head = Head::of(&entry.blob);
    if !(query.method.as_deref().is_none_or(|m| head.method == m)
        && query.path.as_ref().is_none_or(|p| p.matches(head.path)))
    {
        return false;
    }
    if query.route.is_none() && query.outcome.is_none() {
        return true;
    }
    let tail = head.tail();
    query.route.as_deref().is_none_or(|r| tail.route == Some(r))
        && query.outcome.is_none_or(|o| tail.outcome == o)
}

/// Inserts `item` into `items`, sorted by `key`: at the end when it is the
/// newest, else after the last item with a smaller key. Records arrive about
/// in time order (ids made in the same millisecond do not), so the place is
/// looked for from the end, a few items back, before a binary search.
fn insert_sorted<T>(items: &mut VecDeque<T>, item: T, key: impl Fn(&T) -> &Key) {
    const NEAR_THE_END: usize = 32;
    let new = key(&item);
    let mut at = items.len();
    while at > 0 && key(&items[at - 1]) > new {
        at -= 1;
        if items.len() - at == NEAR_THE_END {
            at = items.partition_point(|t| key(t) < new);
            break;
        }
    }
    items.insert(at, item);
}

/// The position of `key` in `all`, searched for from `near` (the position found
/// last, updated): outwards in doubling steps, then by bisection. A page for one
/// consumer looks up keys in order, a few hundred records apart in a large sink,
/// so this touches far fewer cache lines than a binary search over all records.
fn find_near(all: &VecDeque<(Key, Entry)>, key: &Key, near: &mut Option<usize>) -> Option<usize> {
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
    let min_id = || Id::new("");
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
        let key: Key = (p.created_at_ms, Id::new(&p.id));
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
        key.1.as_str().to_owned(),
        entry.created_at,
        entry.status,
    )
    .expect("a buffer written by `binary::encode`")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn find_near_agrees_with_a_binary_search_from_any_hint() {
        let mut rng = fastrand::Rng::with_seed(7);
        for n in [0, 1, 2, 3, 10, 100, 1000] {
            let all: VecDeque<(Key, Entry)> = (0..n)
                .map(|i| {
                    let key = (2 * i as i64, Id::new("x"));
                    let entry = Entry {
                        created_at: OffsetDateTime::UNIX_EPOCH,
                        status: 200,
                        blob: Vec::new(),
                    };
                    (key, entry)
                })
                .collect();
            for _ in 0..200 {
                // Present (even) and absent (odd) keys, below and past the ends.
                let key = (rng.i64(-3..2 * n as i64 + 3), Id::new("x"));
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
