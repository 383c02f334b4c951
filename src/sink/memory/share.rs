//! Fair share in a full [`MemorySink`](super::MemorySink): how many records
//! and bytes each consumer holds, who is over their share, and the pool of
//! newcomers and rejected requests.
//!
//! # The pool
//!
//! A consumer first seen while the sink is full is a *newcomer*; a record
//! answered `401` or `403` is *rejected*, whoever sent it. Newcomers' records
//! and rejected records are *pooled*: they share one quota, a
//! [`CONSUMER_SHARE`](super::CONSUMER_SHARE)th of the capacity and of the
//! bytes, as if they were one consumer. So a flood of invented identities (a
//! fresh bearer token per request) or of refused requests can take that
//! much of a full sink, and from then on only evicts its own oldest records,
//! never those of the consumers that were there before it.
//!
//! A newcomer becomes *established* (its records leave the pool) once the
//! records it holds span [`ESTABLISHED_AFTER`] (a minute): it came back a
//! minute later and its first records were still there.

use std::collections::VecDeque;

use super::index::{Key, State};
use super::scan::find_near;

/// How long a newcomer's records must span before it is established.
pub(super) const ESTABLISHED_AFTER_MS: i64 = 60_000;

/// Whether a status is a rejection: the record is pooled whoever sent it.
fn rejected(status: u16) -> bool {
    status == 401 || status == 403
}

impl State {
    /// Whether a record of `consumer` with `status`, made at `ms`, is pooled;
    /// promotes `consumer` out of the newcomers when its records now span
    /// [`ESTABLISHED_AFTER_MS`].
    pub(super) fn joins_pool(&mut self, consumer: Option<&str>, status: u16, ms: i64) -> bool {
        if self.newcomers.is_empty() {
            return rejected(status);
        }
        let key = consumer.map(str::to_owned);
        if !self.newcomers.contains(&key) {
            return rejected(status);
        }
        let oldest = match consumer {
            None => self.anonymous.front(),
            Some(c) => self.consumers.get(c).and_then(VecDeque::front),
        };
        if oldest.is_some_and(|(first, _)| ms.saturating_sub(*first) >= ESTABLISHED_AFTER_MS) {
            self.newcomers.remove(&key);
            self.unpool(consumer);
            return rejected(status);
        }
        true
    }

    /// Takes an established consumer's records out of the pool (its
    /// rejected ones stay).
    fn unpool(&mut self, consumer: Option<&str>) {
        let keys: Vec<Key> = match consumer {
            None => self.anonymous.iter().cloned().collect(),
            Some(c) => self
                .consumers
                .get(c)
                .map_or_else(Vec::new, |k| k.iter().cloned().collect()),
        };
        let mut near = None;
        for key in keys {
            let Some(at) = find_near(&self.all, &key, &mut near) else {
                continue;
            };
            let entry = &mut self.all[at].1;
            if entry.pooled && !rejected(entry.status) {
                entry.pooled = false;
                let cost = entry.blob.capacity() + super::index::RECORD_OVERHEAD;
                self.leave_pool(&key, cost);
            }
        }
    }

    /// Takes `key` (of `cost` bytes) out of the pool's index.
    pub(super) fn leave_pool(&mut self, key: &Key, cost: usize) {
        if self.pool.front() == Some(key) {
            self.pool.pop_front();
        } else if let Ok(at) = self.pool.binary_search(key) {
            self.pool.remove(at);
        }
        self.pool_bytes = self.pool_bytes.saturating_sub(cost);
    }

    /// Evicts the oldest pooled record.
    pub(super) fn evict_oldest_pooled(&mut self) {
        let Some(key) = self.pool.front().cloned() else {
            return;
        };
        if let Ok(at) = self.all.binary_search_by(|(k, _)| k.cmp(&key)) {
            self.evict_at(at);
        } else {
            // Not stored (cannot happen): forget it rather than loop.
            self.pool.pop_front();
        }
    }

    /// Makes room in a full sink for the record of `consumer` just stored;
    /// `full` says whether the sink is still over a bound, `over` whether a
    /// holder of that many records and bytes is over its share.
    ///
    /// A pooled record (`pooled`) makes room in the pool first, when the
    /// pool is over its quota; a consumer over its fair share gives up its
    /// own oldest record (the one that just stored a record first); then
    /// the pool, over its quota, its oldest; then anyone over their share;
    /// then the oldest of all.
    pub(super) fn make_room(
        &mut self,
        consumer: Option<&str>,
        pooled: bool,
        full: impl Fn(&State) -> bool,
        over: impl Fn(usize, usize) -> bool,
    ) {
        let mut first = true;
        while full(self) {
            let (records, bytes) = self.share_of(consumer);
            let over_share = !pooled && over(records, bytes);
            if std::mem::take(&mut first) && over_share {
                self.note_over_share(consumer);
            }
            if over_share {
                self.evict_oldest_of(consumer);
            } else if over(self.pool.len(), self.pool_bytes) {
                self.evict_oldest_pooled();
            } else if let Some(other) = self.over_share_consumer(&over) {
                self.evict_oldest_of(other.as_deref());
            } else {
                self.evict_oldest();
            }
        }
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
}
