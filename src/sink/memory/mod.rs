//! [`MemorySink`]: a bounded in-memory sink.

use std::fmt;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, PoisonError, RwLock, RwLockReadGuard, RwLockWriteGuard};
use std::time::Duration;

use crate::sink::{expiry, ConsumerScope, SummaryQuery, UsageSummary};
use crate::{SinkError, UsagePage, UsageQuery, UsageRecord, UsageSink};

mod index;
mod scan;
mod share;
#[cfg(test)]
mod tests;

use index::State;

/// How many records [`MemorySink::new`] keeps before it evicts the oldest.
pub const DEFAULT_CAPACITY: usize = 10_000;

/// How many bytes of records [`MemorySink::new`] keeps before it evicts the
/// oldest: 64 MiB. With typical JSON APIs (a few KiB a record) the record count
/// binds first; with large bodies or headers, this does.
pub const DEFAULT_MAX_BYTES: usize = 64 * 1024 * 1024;

/// What part of a [`MemorySink`] one consumer may hold once it is full: one
/// `CONSUMER_SHARE`th of its records and of its bytes (a quarter). The
/// anonymous consumer (requests without an identity) is one consumer.
pub const CONSUMER_SHARE: usize = 4;

/// A bounded, in-process [`UsageSink`]: the newest records, in memory.
///
/// It keeps at most [`capacity`](Self::capacity) records, and at most
/// [`max_bytes`](Self::max_bytes) bytes of them (each record's stored form plus
/// a fixed overhead for its index entries). When a new record would exceed
/// either bound, the oldest records by `(created_at, id)` are evicted and
/// counted in [`evicted`](Self::evicted). Nothing survives a restart: use it for
/// development, tests, or a "last N requests" view.
///
/// # Fair share
///
/// Once the sink is full, a consumer whose new record finds it holding more
/// than its share ([`consumer_share`](Self::consumer_share) records, a quarter
/// of the capacity, or [`consumer_byte_share`](Self::consumer_byte_share)
/// bytes) makes room by evicting its *own* oldest record, not the oldest of
/// all. So one client flooding the sink (the anonymous consumer included) can
/// take its share and the room the others leave free, but cannot push out the
/// others' history. Until the sink is full, any consumer may use all of it.
///
/// A client that mints a new identity per request (a fresh bearer token each
/// time, when tokens are not checked before the layer) would be many
/// consumers of one record each, none over its share. So the records of
/// *newcomers* (consumers first seen while the sink is full) and of
/// *rejected* requests (answered `401` or `403`, whoever sent them) are
/// *pooled*: together they hold at most one share (a quarter of the capacity
/// and of the bytes), and once they do, each new pooled record evicts the
/// oldest pooled one. What holds, exactly: however many records a flood of
/// invented identities or rejected requests brings, it evicts at most one
/// share of the records that were in the sink before it (fewer when pooled
/// records were already there); the consumers that were there keep the rest,
/// and their own new records evict as before. A newcomer is *established*,
/// and its records leave the pool, once the records it holds span a minute
/// (it came back a minute later and its first records were still there):
/// during a flood the pool turns over fast, so a genuine newcomer may wait
/// for the flood to end. Identify consumers by an authenticated account
/// ([`IdentifyConsumer`](crate::IdentifyConsumer)) where that matters.
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
/// back to back, a few bytes of framing each), next to its timestamp and status
/// and its id. So a record
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
/// # Reading
///
/// A page and a summary scan the scope's records under the read lock, on
/// tokio's blocking pool ([`spawn_blocking`](tokio::task::spawn_blocking);
/// inline when called outside a tokio runtime), never on a worker of the
/// application: a summary over a few hundred thousand records takes tens of
/// milliseconds that other requests do not wait for. When the query's future
/// is dropped (as `GET /usage` does when its query timeout fires), the scan
/// stops within 1024 records. A page decodes only what it may return: its
/// records, and no more bytes than its [budget](UsageQuery::max_bytes).
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
    max_bytes: usize,
    /// Whether a full sink evicts by fair share first (see the type's docs).
    fair_share: AtomicBool,
    /// `max_age` in milliseconds; `u64::MAX`: none.
    max_age_ms: AtomicU64,
    state: RwLock<State>,
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
        Self::with_limits(capacity, DEFAULT_MAX_BYTES)
    }

    /// A sink that keeps the newest `capacity` records, and at most `max_bytes`
    /// bytes of them (the newest record is always kept, whatever its size).
    ///
    /// ```
    /// let sink = tower_usage::MemorySink::with_limits(100_000, 16 * 1024 * 1024);
    /// assert_eq!((sink.capacity(), sink.max_bytes()), (100_000, 16 * 1024 * 1024));
    /// ```
    pub fn with_limits(capacity: usize, max_bytes: usize) -> Self {
        Self {
            shared: Arc::new(Shared {
                capacity: capacity.max(1),
                max_bytes,
                fair_share: AtomicBool::new(true),
                max_age_ms: AtomicU64::new(u64::MAX),
                state: RwLock::new(State::default()),
            }),
        }
    }

    /// Whether a full sink makes room by fair share first (on by default; see
    /// [Fair share](Self#fair-share)). Off, it evicts the oldest records of
    /// all, whoever they belong to. Applies to every clone of this sink.
    ///
    /// ```
    /// let sink = tower_usage::MemorySink::new().fair_share(false);
    /// assert!(!sink.is_fair_share());
    /// ```
    pub fn fair_share(self, on: bool) -> Self {
        self.shared.fair_share.store(on, Ordering::Relaxed);
        self
    }

    /// Whether a full sink makes room by fair share first.
    pub fn is_fair_share(&self) -> bool {
        self.shared.fair_share.load(Ordering::Relaxed)
    }

    /// Forgets records created longer than `max_age` ago. Default: none,
    /// records leave only when the bounds evict them. Applies to every clone
    /// of this sink.
    ///
    /// An expired record is never listed, fetched by id or counted in a
    /// summary from the moment it is older than `max_age`; it is removed from
    /// memory at the next [`record`](UsageSink::record) call (the oldest
    /// records are at the front: removing them is a pop each), or by
    /// [`expire_older_than`](Self::expire_older_than), and counted in
    /// [`expired`](Self::expired).
    ///
    /// ```
    /// use std::time::Duration;
    ///
    /// let sink = tower_usage::MemorySink::new().max_age(Duration::from_secs(3600));
    /// assert_eq!(sink.max_age_limit(), Some(Duration::from_secs(3600)));
    /// ```
    pub fn max_age(self, max_age: Duration) -> Self {
        let ms = u64::try_from(max_age.as_millis()).unwrap_or(u64::MAX - 1);
        self.shared.max_age_ms.store(ms, Ordering::Relaxed);
        self
    }

    /// The [`max_age`](Self::max_age) set, if any.
    pub fn max_age_limit(&self) -> Option<Duration> {
        match self.shared.max_age_ms.load(Ordering::Relaxed) {
            u64::MAX => None,
            ms => Some(Duration::from_millis(ms)),
        }
    }

    /// Removes now the records created longer than `age` ago, and returns
    /// how many (also counted in [`expired`](Self::expired)).
    ///
    /// ```
    /// use std::time::Duration;
    /// use tower_usage::{MemorySink, UsageRecord, UsageSink};
    ///
    /// # tokio::runtime::Builder::new_current_thread().build().unwrap().block_on(async {
    /// let sink = MemorySink::new();
    /// let old = time::OffsetDateTime::now_utc() - time::Duration::hours(2);
    /// let record = UsageRecord { id: UsageRecord::new_id(old), created_at: old, ..UsageRecord::default() };
    /// sink.record(&[record]).await?;
    /// assert_eq!(sink.expire_older_than(Duration::from_secs(3600)), 1);
    /// assert_eq!((sink.len(), sink.expired()), (0, 1));
    /// # Ok::<(), tower_usage::SinkError>(())
    /// # }).unwrap();
    /// ```
    pub fn expire_older_than(&self, age: Duration) -> u64 {
        let cut = crate::record::unix_millis(expiry::cut(age));
        self.write().expire(cut)
    }

    /// How many records were removed for being older than
    /// [`max_age`](Self::max_age), since the sink was made.
    pub fn expired(&self) -> u64 {
        self.read().expired
    }

    /// The most bytes of records this sink keeps. Default: 64 MiB
    /// ([`DEFAULT_MAX_BYTES`]).
    pub fn max_bytes(&self) -> usize {
        self.shared.max_bytes
    }

    /// How many bytes the stored records take now, as [`max_bytes`](Self::max_bytes)
    /// counts them.
    pub fn bytes(&self) -> usize {
        self.read().bytes
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

    /// Runs a scan under the read lock on tokio's blocking pool (inline
    /// outside a tokio runtime), so that a long one does not hold a worker of
    /// the application; when the returned future is dropped (the endpoint's
    /// query timeout), the scan is told to stop and does within 1024 entries.
    async fn off_workers<T: Send + 'static>(
        &self,
        scan: impl FnOnce(&State, &AtomicBool) -> T + Send + 'static,
    ) -> Result<T, SinkError> {
        let cancel = Arc::new(AtomicBool::new(false));
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            return Ok(scan(&self.read(), &cancel));
        };
        /// Sets the flag when the query's future is dropped, done or not.
        struct CancelOnDrop(Arc<AtomicBool>);
        impl Drop for CancelOnDrop {
            fn drop(&mut self) {
                self.0.store(true, Ordering::Relaxed);
            }
        }
        let _guard = CancelOnDrop(Arc::clone(&cancel));
        let sink = self.clone();
        runtime
            .spawn_blocking(move || scan(&sink.read(), &cancel))
            .await
            .map_err(|err| {
                SinkError::message(
                    crate::SinkErrorKind::Other,
                    format!("a MemorySink scan panicked: {err}"),
                )
            })
    }

    fn insert_batch(&self, batch: &[UsageRecord]) {
        let (capacity, max_bytes) = (self.shared.capacity, self.shared.max_bytes);
        let (share, byte_share) = (self.consumer_share(), self.consumer_byte_share());
        let mut state = self.write();
        let fair = self.is_fair_share();
        let over = |records: usize, bytes: usize| {
            fair && (records > share || (bytes > byte_share && records > 1))
        };
        let full = |state: &State| {
            state.all.len() > capacity || (state.bytes > max_bytes && state.all.len() > 1)
        };
        if let Some(max_age) = self.max_age_limit() {
            let cut = crate::record::unix_millis(expiry::cut(max_age));
            state.expire(cut);
        }
        for record in batch {
            let was_full = state.all.len() >= capacity || state.bytes >= max_bytes;
            let Some(pooled) = state.insert(record, was_full) else {
                continue;
            };
            state.make_room(record.consumer.as_deref(), pooled, full, over);
        }
    }

    /// How many records one consumer may hold once the sink is full: a
    /// [`CONSUMER_SHARE`] of the capacity (at least one).
    pub fn consumer_share(&self) -> usize {
        (self.shared.capacity / CONSUMER_SHARE).max(1)
    }

    /// How many bytes of records one consumer may hold once the sink is full:
    /// a [`CONSUMER_SHARE`] of [`max_bytes`](Self::max_bytes).
    pub fn consumer_byte_share(&self) -> usize {
        self.shared.max_bytes / CONSUMER_SHARE
    }
}

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
            .field("max_bytes", &self.shared.max_bytes)
            .field("bytes", &state.bytes)
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

    /// Off the runtime's workers (see [Reading](Self#reading)); reads no
    /// more than the page's [byte budget](UsageQuery::max_bytes) allows.
    async fn query(&self, query: &UsageQuery) -> Result<UsagePage, SinkError> {
        let after = query.position()?;
        let owned = expiry::list(query, self.max_age_limit()).into_owned();
        let hits = self
            .off_workers(move |state, cancel| state.page(&owned, after.as_ref(), cancel))
            .await?;
        Ok(UsagePage::from_sorted(query, hits))
    }

    /// By id: one hash lookup and one binary search.
    async fn get(&self, id: &str, scope: &ConsumerScope) -> Result<Option<UsageRecord>, SinkError> {
        let found = self.read().get(id, scope);
        let cut = self.max_age_limit().map(expiry::cut);
        Ok(found.filter(|r| cut.is_none_or(|cut| r.created_at >= cut)))
    }

    /// Counts in place, under the read lock, over the scope's index: no record
    /// is decoded or copied. Percentiles come from the duration histogram (see
    /// [`summary`](crate::sink::summary#percentiles)). Writes wait while it
    /// counts: a summary over every consumer of a large sink delays the
    /// writer for as long (the writer, not requests: they never wait on a sink).
    async fn summarize(&self, query: &SummaryQuery) -> Result<UsageSummary, SinkError> {
        query.check()?;
        let asked = query.clone();
        let query = expiry::summary(query, self.max_age_limit()).into_owned();
        let answer = self
            .off_workers(move |state, cancel| state.summarize(&query, cancel))
            .await??;
        Ok(expiry::summary_answer(&asked, answer))
    }

    /// Removes `consumer`'s records in one pass over the index, under the
    /// write lock (on the caller's task: it takes about as long as a
    /// summary of everything). Not counted in [`evicted`](Self::evicted).
    async fn erase_consumer(&self, consumer: &str) -> Result<u64, SinkError> {
        Ok(self.write().erase(consumer))
    }
}
