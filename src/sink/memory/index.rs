//! The index of a [`MemorySink`](super::MemorySink): every record sorted by
//! `(created_at, id)` and each consumer's keys once more; storing a record and
//! evicting one. Reading is in `scan.rs`, the fair share in `share.rs`.

use std::collections::VecDeque;

use foldhash::{HashMap, HashSet};
use time::OffsetDateTime;

use crate::record::binary::{encode, Head};
use crate::record::unix_millis;
use crate::UsageRecord;

/// `(created_at in unix milliseconds, id)`: the sort key of a page.
pub(super) type Key = (i64, Box<str>);

/// One stored record: what a filter needs, and the rest encoded in one allocation.
pub(super) struct Entry {
    /// The exact `created_at` (the key holds only its milliseconds).
    pub(super) created_at: OffsetDateTime,
    pub(super) status: u16,
    /// The record is in the pool of newcomers and rejected requests (see
    /// `share.rs`): its key is in [`State::pool`] too.
    pub(super) pooled: bool,
    /// Every other field but the id (which is in the key), see [`encode`].
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
    pub(super) ids: HashMap<Box<str>, i64>,
    pub(super) evicted: u64,
    /// Records removed for being older than `max_age`.
    pub(super) expired: u64,
    /// Consumers first seen while the sink was full, not yet established
    /// (`None` inside: the anonymous one); see `share.rs`.
    pub(super) newcomers: HashSet<Option<String>>,
    /// The keys of the pooled records (newcomers' and rejected ones), sorted.
    pub(super) pool: VecDeque<Key>,
    /// The bytes of the pooled records.
    pub(super) pool_bytes: usize,
    /// The bytes the records take, as `max_bytes` counts them: each record's
    /// buffer and [`RECORD_OVERHEAD`].
    pub(super) bytes: usize,
    /// Reused to encode each record before it is copied into an allocation
    /// of its exact size.
    pub(super) scratch: Vec<u8>,
}

impl State {
    /// Stores `record`, and says whether it is pooled; `None` when its id
    /// was stored already. `full`: the sink was full before it (a consumer
    /// first seen now is a newcomer).
    pub(super) fn insert(&mut self, record: &UsageRecord, full: bool) -> Option<bool> {
        let id = Box::<str>::from(record.id.as_str());
        let ms = unix_millis(record.created_at);
        match self.ids.entry(id.clone()) {
            std::collections::hash_map::Entry::Occupied(_) => return None,
            std::collections::hash_map::Entry::Vacant(slot) => {
                slot.insert(ms);
            }
        }
        let key: Key = (ms, id);
        self.scratch.clear();
        encode(&mut self.scratch, record);
        let blob = self.scratch.clone();
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
        let consumer = record.consumer.as_deref();
        let first = match consumer {
            None => self.anonymous.is_empty(),
            Some(c) => !self.consumers.contains_key(c),
        };
        if first && full {
            self.newcomers.insert(consumer.map(str::to_owned));
        }
        let pooled = self.joins_pool(consumer, record.status, ms);
        if pooled {
            insert_sorted(&mut self.pool, key.clone(), |key| key);
            self.pool_bytes += cost;
        }
        let entry = Entry {
            created_at: record.created_at,
            status: record.status,
            pooled,
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
        Some(pooled)
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
    pub(super) fn evict_at(&mut self, at: usize) {
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
        if entry.pooled {
            self.leave_pool(&key, cost);
        }
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
            if keys.is_empty() {
                if let Some(c) = consumer {
                    self.consumers.remove(c);
                    self.consumer_bytes.remove(c);
                }
                if !self.newcomers.is_empty() {
                    self.newcomers.remove(&consumer.map(str::to_owned));
                }
            }
        }
        self.bytes = self.bytes.saturating_sub(cost);
        self.evicted += 1;
    }
}

impl State {
    /// Removes every record of `consumer`, and returns how many: one pass
    /// over the records (not one removal each), the consumer's sorted keys
    /// telling which go. Not counted in `evicted`.
    pub(super) fn erase(&mut self, consumer: &str) -> u64 {
        let Some(keys) = self.consumers.remove(consumer) else {
            return 0;
        };
        self.consumer_bytes.remove(consumer);
        self.newcomers.remove(&Some(consumer.to_owned()));
        self.over_share.retain(|c| c.as_deref() != Some(consumer));
        let keys = Vec::from(keys);
        let (mut freed, mut pool_freed) = (0, 0);
        let mut erased = 0;
        self.all.retain(|(key, entry)| {
            if keys.binary_search(key).is_err() {
                return true;
            }
            let cost = entry.blob.capacity() + RECORD_OVERHEAD;
            freed += cost;
            if entry.pooled {
                pool_freed += cost;
            }
            erased += 1;
            false
        });
        for key in &keys {
            self.ids.remove(&key.1);
        }
        if pool_freed > 0 {
            self.pool.retain(|key| keys.binary_search(key).is_err());
            self.pool_bytes = self.pool_bytes.saturating_sub(pool_freed);
        }
        self.bytes = self.bytes.saturating_sub(freed);
        erased
    }

    /// Removes the records created before `cut_ms` (the oldest, at the
    /// front), and returns how many.
    pub(super) fn expire(&mut self, cut_ms: i64) -> u64 {
        let mut expired = 0;
        while self.all.front().is_some_and(|((ms, _), _)| *ms < cut_ms) {
            self.evict_at(0);
            self.evicted -= 1;
            expired += 1;
        }
        self.expired += expired;
        expired
    }
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
