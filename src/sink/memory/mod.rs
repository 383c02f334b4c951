//! [`MemorySink`]: a bounded in-memory sink.

use std::collections::{HashMap, HashSet, VecDeque};
use std::fmt;
use std::ops::Bound;
use std::sync::{Arc, PoisonError, RwLock, RwLockReadGuard, RwLockWriteGuard};

use time::OffsetDateTime;

use crate::record::unix_millis;
use crate::sink::{ConsumerScope, Order, Position};
use crate::{SinkError, UsagePage, UsageQuery, UsageRecord, UsageSink};

/// How many records [`MemorySink::new`] keeps before it evicts the oldest.
pub const DEFAULT_CAPACITY: usize = 10_000;

/// A bounded, in-process [`UsageSink`]: the newest records, in memory.
///
/// It keeps at most [`capacity`](Self::capacity) records. When a new record would
/// exceed the bound, the oldest records by `(created_at, id)` are evicted and
/// counted in [`evicted`](Self::evicted). Nothing survives a restart: use it for
/// development, tests, or a "last N requests" view.
///
/// Cloning is cheap and every clone shares the same records, so one sink can be
/// handed both to the layer that writes and to the `/usage` service that reads.
///
/// Records are kept sorted by `(created_at, id)`, and their keys once more per
/// consumer, so a page for one consumer ranges over that consumer's records from
/// the cursor on, instead of scanning every stored record. Both are ring buffers:
/// records arrive about in time order, so storing one appends it (or inserts it a
/// few places from the end) and evicting the oldest pops the front, without
/// walking a tree. Recording a record whose `id` is
/// already stored (a writer retrying a batch) keeps the stored one.
///
/// Each record is stored encoded in one buffer (its bodies, headers and strings
/// back to back, a few bytes of framing each), next to its timestamp and status;
/// ids of up to 30 bytes (a ULID has 26) live inline in the index keys. So a record
/// costs about its captured bytes plus some 250 bytes of indexes, and storing or
/// evicting one is a handful of allocations, not one per field. Filters read the
/// method and path from the buffer in place; only the records a page returns are
/// decoded back into [`UsageRecord`]s.
///
/// # Example
///
/// ```
/// use tower_usage::sink::{ConsumerScope, UsageQuery};
/// use tower_usage::{MemorySink, UsageRecord, UsageSink};
///
/// # tokio::runtime::Builder::new_current_thread().build().unwrap().block_on(async {
/// let sink = MemorySink::with_capacity(2);
/// let t = time::macros::datetime!(2024-05-01 09:50:00 UTC);
/// let mut batch = Vec::new();
/// for (i, consumer) in ["alice", "bob", "alice"].into_iter().enumerate() {
///     let created_at = t + time::Duration::seconds(i as i64);
///     batch.push(UsageRecord {
///         id: UsageRecord::new_id(created_at),
///         consumer: Some(consumer.into()),
///         method: "GET".into(),
///         path: "/items".into(),
///         status: 200,
///         created_at,
///         ..UsageRecord::default()
///     });
/// }
/// sink.record(&batch).await?;
/// assert_eq!((sink.len(), sink.evicted()), (2, 1)); // the oldest went
///
/// let page = sink
///     .query(&UsageQuery {
///         consumer: ConsumerScope::Consumer("alice".into()),
///         ..UsageQuery::default()
///     })
///     .await?;
/// assert_eq!(page.records.len(), 1);
/// assert_eq!(page.records[0].id, batch[2].id);
/// # Ok::<(), tower_usage::SinkError>(())
/// # }).unwrap();
/// ```
///
/// # Locking
///
/// The records sit behind one [`RwLock`], taken only for the synchronous part of
/// a call and never across an `.await`. If a thread panicked while holding it, the
/// sink goes on with the state as it was left instead of failing every later call.
#[derive(Clone)]
pub struct MemorySink {
    shared: Arc<Shared>,
}

struct Shared {
    capacity: usize,
    state: RwLock<State>,
}

/// `(created_at in unix milliseconds, id)`: the sort key of a page.
type Key = (i64, Id);

/// One stored record: what a filter needs, and the rest encoded in one allocation.
struct Entry {
    /// The exact `created_at` (the key holds only its milliseconds).
    created_at: OffsetDateTime,
    status: u16,
    /// Every other field but the id (which is in the key), see [`encode`]. A
    /// `Vec` so an evicted record's buffer can take the next record.
    blob: Vec<u8>,
}

#[derive(Default)]
struct State {
    /// Every record, sorted by key.
    all: VecDeque<(Key, Entry)>,
    /// The keys of the records without a consumer, sorted.
    anonymous: VecDeque<Key>,
    /// The keys of each consumer's records, sorted; an entry goes when its last
    /// record is evicted.
    consumers: HashMap<String, VecDeque<Key>>,
    /// The stored ids, so a retried batch is not stored twice.
    ids: HashSet<Id>,
    evicted: u64,
    /// Until the sink is full: reused to encode each record before it is copied
    /// into an allocation of its exact size.
    scratch: Vec<u8>,
    /// The buffer of the last evicted record, which the next record is encoded
    /// into: in a full sink each insert evicts, so most records reuse one.
    spare: Vec<u8>,
}

impl MemorySink {
    /// A sink that keeps the newest [`DEFAULT_CAPACITY`] (10,000) records.
    pub fn new() -> Self {
        Self::with_capacity(DEFAULT_CAPACITY)
    }

    /// A sink that keeps the newest `capacity` records. A capacity of `0` is
    /// taken as `1`.
    ///
    /// ```
    /// let sink = tower_usage::MemorySink::with_capacity(0);
    /// assert_eq!(sink.capacity(), 1);
    /// ```
    pub fn with_capacity(capacity: usize) -> Self {
        Self {
            shared: Arc::new(Shared {
                capacity: capacity.max(1),
                state: RwLock::new(State::default()),
            }),
        }
    }

    /// The most records this sink keeps.
    pub fn capacity(&self) -> usize {
        self.shared.capacity
    }

    /// How many records are stored now.
    pub fn len(&self) -> usize {
        self.read().all.len()
    }

    /// Whether no record is stored.
    pub fn is_empty(&self) -> bool {
        self.read().all.is_empty()
    }

    /// How many records were evicted to stay within the capacity, since the sink
    /// was made.
    pub fn evicted(&self) -> u64 {
        self.read().evicted
    }

    fn read(&self) -> RwLockReadGuard<'_, State> {
        self.shared
            .state
            .read()
            .unwrap_or_else(PoisonError::into_inner)
    }

    fn write(&self) -> RwLockWriteGuard<'_, State> {
        self.shared
            .state
            .write()
            .unwrap_or_else(PoisonError::into_inner)
    }

    fn insert_batch(&self, batch: &[UsageRecord]) {
        let capacity = self.shared.capacity;
        let mut state = self.write();
        for record in batch {
            state.insert(record);
            while state.all.len() > capacity {
                state.evict_oldest();
            }
        }
    }

    fn page(&self, query: &UsageQuery, after: Option<&Position>) -> Vec<UsageRecord> {
        let state = self.read();
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
                let hits = state
                    .all
                    .range(index_range(&state.all, &range, |(key, _)| key))
                    .map(|(key, entry)| (key, entry))
                    .filter(|(_, entry)| entry_matches(query, entry));
                return match query.order {
                    Order::Asc => hits.take(wanted).map(decode).collect(),
                    Order::Desc => hits.rev().take(wanted).map(decode).collect(),
                };
            }
            ConsumerScope::Anonymous => &state.anonymous,
            ConsumerScope::Consumer(c) => match state.consumers.get(c.as_str()) {
                Some(keys) => keys,
                None => return Vec::new(),
            },
        };
        // The keys come in order: each is looked for near the one before.
        let mut near = None;
        let hits = keys
            .range(index_range(keys, &range, |key| key))
            .filter_map(|key| {
                let at = find_near(&state.all, key, &mut near)?;
                let (key, entry) = &state.all[at];
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
    fn insert(&mut self, record: &UsageRecord) {
        let id = Id::new(&record.id);
        if !self.ids.insert(id.clone()) {
            return;
        }
        let key: Key = (unix_millis(record.created_at), id);
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
    }

    fn evict_oldest(&mut self) {
        let Some((key, entry)) = self.all.pop_front() else {
            return;
        };
        self.ids.remove(&key.1);
        let consumer = Head::of(&entry.blob).consumer;
        let keys = match consumer {
            None => Some(&mut self.anonymous),
            Some(c) => self.consumers.get_mut(c),
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
            }
        }
        self.spare = entry.blob;
        self.evicted += 1;
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
    if query.method.is_none() && query.path.is_none() {
        return true;
    }
    let head = Head::of(&entry.blob);
    query.method.as_deref().is_none_or(|m| head.method == m)
        && query.path.as_ref().is_none_or(|p| p.matches(head.path))
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

mod stored;

use stored::{decode, encode, Head, Id};

impl Default for MemorySink {
    fn default() -> Self {
        Self::new()
    }
}

impl fmt::Debug for MemorySink {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let state = self.read();
        f.debug_struct("MemorySink")
            .field("capacity", &self.shared.capacity)
            .field("len", &state.all.len())
            .field("consumers", &state.consumers.len())
            .field("evicted", &state.evicted)
            .finish()
    }
}

#[async_trait::async_trait]
impl UsageSink for MemorySink {
    async fn record(&self, batch: &[UsageRecord]) -> Result<(), SinkError> {
        self.insert_batch(batch);
        Ok(())
    }

    async fn query(&self, query: &UsageQuery) -> Result<UsagePage, SinkError> {
        let after = query.position()?;
        let hits = self.page(query, after.as_ref());
        Ok(UsagePage::from_sorted(query, hits))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::record::{from_unix_millis, CapturedBody, GrpcCall, Outcome};
    use crate::sink::{PathFilter, StatusFilter};
    use crate::SinkErrorKind;
    use http::HeaderValue;

    const T0: i64 = 1_714_557_000_000;

    fn rec(ms: i64, consumer: Option<&str>) -> UsageRecord {
        let created_at = from_unix_millis(T0 + ms).unwrap();
        UsageRecord {
            id: UsageRecord::new_id(created_at),
            consumer: consumer.map(str::to_owned),
            method: "GET".into(),
            path: format!("/items/{ms}"),
            status: 200,
            created_at,
            ..UsageRecord::default()
        }
    }

    fn ids(page: &UsagePage) -> Vec<&str> {
        page.records.iter().map(|r| r.id.as_str()).collect()
    }

    async fn all_pages(sink: &MemorySink, mut q: UsageQuery) -> Vec<UsageRecord> {
        let mut out = Vec::new();
        loop {
            let page = sink.query(&q).await.unwrap();
            out.extend(page.records);
            match page.next_cursor {
                Some(c) => q.cursor = Some(c),
                None => return out,
            }
        }
    }

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

    /// Records arriving in any order, in batches, some twice: every page equals
    /// the newest `capacity` records by `(created_at, id)`, per scope.
    #[tokio::test]
    async fn any_arrival_order_keeps_the_newest_sorted() {
        for seed in 0..20 {
            let mut rng = fastrand::Rng::with_seed(seed);
            let capacity = rng.usize(1..40);
            let sink = MemorySink::with_capacity(capacity);
            let consumers = [None, Some("a"), Some("b")];
            let mut all: Vec<UsageRecord> = (0..rng.i64(1..120))
                .map(|i| rec(i / 3, consumers[rng.usize(..3)]))
                .collect();
            rng.shuffle(&mut all);
            for batch in all.chunks(rng.usize(1..8)) {
                sink.record(batch).await.unwrap();
                sink.record(&batch[..1]).await.unwrap(); // a retry
            }
            let key = |r: &UsageRecord| (r.created_at, r.id.clone());
            all.sort_by_key(|r| std::cmp::Reverse(key(r)));
            all.truncate(capacity);
            for scope in [
                ConsumerScope::All,
                ConsumerScope::Anonymous,
                ConsumerScope::Consumer("a".into()),
                ConsumerScope::Consumer("b".into()),
            ] {
                for order in [Order::Desc, Order::Asc] {
                    let q = UsageQuery {
                        consumer: scope.clone(),
                        order,
                        limit: 3,
                        ..UsageQuery::default()
                    };
                    let got: Vec<String> = all_pages(&sink, q)
                        .await
                        .into_iter()
                        .map(|r| r.id)
                        .collect();
                    let mut want: Vec<String> = all
                        .iter()
                        .filter(|r| match &scope {
                            ConsumerScope::All => true,
                            ConsumerScope::Anonymous => r.consumer.is_none(),
                            ConsumerScope::Consumer(c) => r.consumer.as_deref() == Some(c),
                        })
                        .map(|r| r.id.clone())
                        .collect();
                    if order == Order::Asc {
                        want.reverse();
                    }
                    assert_eq!(got, want, "seed {seed}, {scope:?}, {order:?}");
                }
            }
            assert_eq!(sink.len(), all.len());
        }
    }

    #[tokio::test]
    async fn evicts_oldest_by_created_at_then_id() {
        let sink = MemorySink::with_capacity(3);
        // Recorded newest first: eviction follows created_at, not arrival.
        let batch: Vec<_> = (0..5).rev().map(|i| rec(i, Some("a"))).collect();
        sink.record(&batch).await.unwrap();
        assert_eq!(sink.len(), 3);
        assert_eq!(sink.evicted(), 2);
        let page = sink.query(&UsageQuery::default()).await.unwrap();
        assert_eq!(ids(&page), [&batch[2].id, &batch[1].id, &batch[0].id]);

        // A tie on created_at is broken by id.
        let sink = MemorySink::with_capacity(1);
        let mut a = rec(0, None);
        let mut b = rec(0, None);
        a.id = "01B".into();
        b.id = "01A".into();
        sink.record(&[a.clone(), b]).await.unwrap();
        let page = sink.query(&UsageQuery::default()).await.unwrap();
        assert_eq!(ids(&page), ["01B"]);
    }

    #[tokio::test]
    async fn capacity_zero_keeps_one() {
        let sink = MemorySink::with_capacity(0);
        assert_eq!(sink.capacity(), 1);
        assert!(sink.is_empty());
        sink.record(&[rec(0, None), rec(1, None)]).await.unwrap();
        assert_eq!(sink.len(), 1);
        assert_eq!(sink.evicted(), 1);
        assert_eq!(MemorySink::new().capacity(), DEFAULT_CAPACITY);
    }

    #[tokio::test]
    async fn clones_share_records() {
        let sink = MemorySink::new();
        let other = sink.clone();
        other.record(&[rec(0, Some("a"))]).await.unwrap();
        assert_eq!(sink.len(), 1);
        assert!(format!("{sink:?}").contains("len: 1"));
    }

    #[tokio::test]
    async fn rerecording_an_id_keeps_one_copy() {
        let sink = MemorySink::new();
        let batch: Vec<_> = (0..4).map(|i| rec(i, Some("a"))).collect();
        sink.record(&batch[..3]).await.unwrap();
        sink.record(&batch).await.unwrap();
        // Same id, other timestamp: still the same record as far as the sink knows.
        let mut moved = batch[0].clone();
        moved.created_at = from_unix_millis(T0 + 99).unwrap();
        sink.record(&[moved]).await.unwrap();
        assert_eq!(sink.len(), 4);
        let got = all_pages(&sink, UsageQuery::default()).await;
        assert_eq!(got, batch);
    }

    #[tokio::test]
    async fn eviction_empties_the_consumer_index() {
        let sink = MemorySink::with_capacity(2);
        sink.record(&[rec(0, Some("gone")), rec(1, None), rec(2, Some("b"))])
            .await
            .unwrap();
        assert!(!sink.read().consumers.contains_key("gone"));
        assert_eq!(sink.read().ids.len(), 2);
        let q = UsageQuery {
            consumer: ConsumerScope::Consumer("gone".into()),
            ..UsageQuery::default()
        };
        assert_eq!(sink.query(&q).await.unwrap(), UsagePage::default());
    }

    #[tokio::test]
    async fn scopes_see_only_their_records() {
        let sink = MemorySink::new();
        let batch = [
            rec(0, Some("a")),
            rec(1, Some("b")),
            rec(2, None),
            rec(3, Some("a")),
        ];
        sink.record(&batch).await.unwrap();
        let scoped = |scope| UsageQuery {
            consumer: scope,
            ..UsageQuery::default()
        };
        let a = sink
            .query(&scoped(ConsumerScope::Consumer("a".into())))
            .await
            .unwrap();
        assert_eq!(ids(&a), [&batch[0].id, &batch[3].id]);
        let anon = sink.query(&scoped(ConsumerScope::Anonymous)).await.unwrap();
        assert_eq!(ids(&anon), [&batch[2].id]);
        let all = sink.query(&scoped(ConsumerScope::All)).await.unwrap();
        assert_eq!(all.records.len(), 4);
    }

    #[tokio::test]
    async fn pages_follow_the_cursor_in_both_orders_within_bounds() {
        let sink = MemorySink::new();
        let batch: Vec<_> = (0..20).map(|i| rec(i / 2, Some("a"))).collect();
        sink.record(&batch).await.unwrap();
        let at = |ms| from_unix_millis(T0 + ms).unwrap();
        let base = UsageQuery {
            consumer: ConsumerScope::Consumer("a".into()),
            since: Some(at(2)),
            until: Some(at(8)),
            limit: 3,
            ..UsageQuery::default()
        };
        let mut expected: Vec<_> = batch
            .iter()
            .filter(|r| (at(2)..at(8)).contains(&r.created_at))
            .cloned()
            .collect();
        expected.sort_by(|a, b| Order::Asc.compare(a, b));
        assert_eq!(all_pages(&sink, base.clone()).await, expected);
        expected.reverse();
        let desc = UsageQuery {
            order: Order::Desc,
            ..base
        };
        assert_eq!(all_pages(&sink, desc).await, expected);
    }

    #[tokio::test]
    async fn inverted_or_exhausted_ranges_are_empty_pages() {
        let sink = MemorySink::new();
        let batch: Vec<_> = (0..5).map(|i| rec(i, None)).collect();
        sink.record(&batch).await.unwrap();
        let at = |ms| from_unix_millis(T0 + ms).unwrap();
        let inverted = UsageQuery {
            since: Some(at(4)),
            until: Some(at(1)),
            ..UsageQuery::default()
        };
        assert_eq!(sink.query(&inverted).await.unwrap(), UsagePage::default());
        let same = UsageQuery {
            since: Some(at(2)),
            until: Some(at(2)),
            ..UsageQuery::default()
        };
        assert!(sink.query(&same).await.unwrap().records.is_empty());

        // A cursor past `until` (asc) or before `since` (desc).
        let q = UsageQuery {
            until: Some(at(2)),
            cursor: Some(UsageQuery::default().cursor_after(&batch[4])),
            ..UsageQuery::default()
        };
        assert!(sink.query(&q).await.unwrap().records.is_empty());
        let desc = UsageQuery {
            order: Order::Desc,
            ..UsageQuery::default()
        };
        let q = UsageQuery {
            since: Some(at(3)),
            cursor: Some(desc.cursor_after(&batch[0])),
            ..desc
        };
        assert!(sink.query(&q).await.unwrap().records.is_empty());
    }

    #[tokio::test]
    async fn filters_apply_inside_the_range() {
        let sink = MemorySink::new();
        let mut batch: Vec<_> = (0..6).map(|i| rec(i, Some("a"))).collect();
        batch[1].status = 404;
        batch[2].method = "POST".into();
        batch[3].path = "/other".into();
        sink.record(&batch).await.unwrap();
        let q = UsageQuery {
            method: Some("GET".into()),
            path: Some(PathFilter::Prefix("/items/".into())),
            status: Some(StatusFilter::Class(2)),
            limit: 1,
            ..UsageQuery::default()
        };
        let got = all_pages(&sink, q).await;
        let want: Vec<_> = [0, 4, 5].iter().map(|&i| batch[i].clone()).collect();
        assert_eq!(got, want);
    }

    #[tokio::test]
    async fn limit_plus_one_decides_next_cursor() {
        let sink = MemorySink::new();
        let batch: Vec<_> = (0..3).map(|i| rec(i, None)).collect();
        sink.record(&batch).await.unwrap();
        let q = |limit| UsageQuery {
            limit,
            ..UsageQuery::default()
        };
        assert!(sink.query(&q(3)).await.unwrap().next_cursor.is_none());
        let page = sink.query(&q(2)).await.unwrap();
        assert_eq!(page.records.len(), 2);
        assert!(page.next_cursor.is_some());
        assert_eq!(sink.query(&q(usize::MAX)).await.unwrap().records.len(), 3);
    }

    #[tokio::test]
    async fn bad_cursors_are_invalid_cursor_errors() {
        let sink = MemorySink::new();
        let batch: Vec<_> = (0..3).map(|i| rec(i, Some("a"))).collect();
        sink.record(&batch).await.unwrap();
        let a = UsageQuery {
            consumer: ConsumerScope::Consumer("a".into()),
            limit: 1,
            ..UsageQuery::default()
        };
        let cursor = sink.query(&a).await.unwrap().next_cursor;
        let b = UsageQuery {
            consumer: ConsumerScope::Consumer("b".into()),
            cursor,
            ..UsageQuery::default()
        };
        let err = sink.query(&b).await.unwrap_err();
        assert_eq!(err.kind(), SinkErrorKind::InvalidCursor);
        let forged = UsageQuery {
            cursor: Some("garbage".into()),
            ..a
        };
        let err = sink.query(&forged).await.unwrap_err();
        assert_eq!(err.kind(), SinkErrorKind::InvalidCursor);
    }

    #[tokio::test]
    async fn stored_records_come_back_whole() {
        let sink = MemorySink::new();
        let mut r = rec(0, Some("a"));
        r.id = "an-id-longer-than-the-inline-thirty-bytes".into();
        r.route = Some("/items/{id}".into());
        r.request.body = CapturedBody::truncated(&b"\xff\x00{"[..], 70_000);
        r.request.query = "a=1&a=2".into();
        r.request.params = vec![("id".into(), "7".into()), ("é".into(), String::new())];
        let mut secret = HeaderValue::from_static("s3cret");
        secret.set_sensitive(true);
        r.request.headers.append("authorization", secret);
        r.request
            .headers
            .append("x-many", HeaderValue::from_static("1"));
        r.request
            .headers
            .append("x-many", HeaderValue::from_static("2"));
        r.request
            .headers
            .append("x-legacy", HeaderValue::from_bytes(b"Jos\xe9").unwrap());
        r.response = CapturedBody::complete("[1]");
        r.response_headers
            .append("content-type", HeaderValue::from_static("a/b"));
        r.status = 503;
        r.created_at += time::Duration::microseconds(123);
        r.duration_us = u64::MAX;
        r.outcome = Outcome::ClientGone;
        r.grpc = Some(GrpcCall {
            status: Some(5),
            message: Some("not found".into()),
            request_messages: 1,
            response_messages: 300,
        });
        let mut bare = rec(1, None);
        bare.grpc = Some(GrpcCall::default());
        sink.record(&[r.clone(), bare.clone()]).await.unwrap();
        let got = sink.query(&UsageQuery::default()).await.unwrap().records;
        assert_eq!(got, [r, bare]);
        assert!(got[0].request.headers["authorization"].is_sensitive());
        assert!(!got[0].request.headers["x-many"].is_sensitive());
    }

    #[tokio::test]
    async fn a_poisoned_lock_does_not_break_the_sink() {
        let sink = MemorySink::new();
        sink.record(&[rec(0, None)]).await.unwrap();
        let poisoner = sink.clone();
        let panicked = std::thread::spawn(move || {
            let _guard = poisoner.shared.state.write().unwrap();
            panic!("poison the lock");
        })
        .join()
        .is_err();
        assert!(panicked);
        assert!(sink.shared.state.is_poisoned());
        sink.record(&[rec(1, None)]).await.unwrap();
        assert_eq!(sink.len(), 2);
        let page = sink.query(&UsageQuery::default()).await.unwrap();
        assert_eq!(page.records.len(), 2);
    }
}
