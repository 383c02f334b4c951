//! A complete custom sink, held to the `UsageSink` contract by the conformance kit.
//!
//! ```text
//! cargo run --example custom_sink --features testing
//! ```
//!
//! The sink keeps records in a `BTreeMap` keyed by `(created_at in ms, id)`, the
//! order pages are sorted in, so a page is a range scan from the cursor on. A
//! database sink follows the same plan with an index on `(created_at, id)` and
//! `WHERE (created_at, id) > ($ms, $id) ORDER BY created_at, id LIMIT $limit + 1`.

use std::collections::{BTreeMap, HashSet};
use std::ops::Bound;
use std::sync::{Mutex, MutexGuard};

use tower_usage::sink::Order;
use tower_usage::testing::{run_all, CHECKS};
use tower_usage::{SinkError, SinkErrorKind, UsagePage, UsageQuery, UsageRecord, UsageSink};

#[derive(Debug, Default)]
struct BTreeSink {
    state: Mutex<State>,
}

#[derive(Debug, Default)]
struct State {
    /// Every record, in page order.
    records: BTreeMap<(i64, String), UsageRecord>,
    /// The stored ids: a batch the writer retries must not store an id twice.
    ids: HashSet<String>,
}

impl BTreeSink {
    fn lock(&self) -> Result<MutexGuard<'_, State>, SinkError> {
        // A panic elsewhere while the lock was held: report it, don't panic too.
        self.state
            .lock()
            .map_err(|_| SinkError::message(SinkErrorKind::Other, "sink lock poisoned").permanent())
    }
}

#[async_trait::async_trait]
impl UsageSink for BTreeSink {
    async fn record(&self, batch: &[UsageRecord]) -> Result<(), SinkError> {
        let mut state = self.lock()?;
        for record in batch {
            if state.ids.insert(record.id.clone()) {
                let key = (record.created_at_ms(), record.id.clone());
                state.records.insert(key, record.clone());
            }
        }
        Ok(())
    }

    async fn query(&self, query: &UsageQuery) -> Result<UsagePage, SinkError> {
        // Decodes the cursor, and rejects a forged one or one issued for
        // another consumer or order: before any work, and before the lock.
        let after = query.position()?;
        let state = self.lock()?;

        // Start right after the cursor, in the query's direction.
        let range = match (&after, query.order) {
            (None, _) => (Bound::Unbounded, Bound::Unbounded),
            (Some(p), Order::Asc) => (
                Bound::Excluded((p.created_at_ms, p.id.clone())),
                Bound::Unbounded,
            ),
            (Some(p), Order::Desc) => (
                Bound::Unbounded,
                Bound::Excluded((p.created_at_ms, p.id.clone())),
            ),
        };
        let in_range = state.records.range(range).map(|(_, r)| r);
        let matching: Box<dyn Iterator<Item = &UsageRecord>> = match query.order {
            Order::Asc => Box::new(in_range.filter(|r| query.matches(r))),
            Order::Desc => Box::new(in_range.rev().filter(|r| query.matches(r))),
        };
        // One more than the limit tells `from_sorted` whether a next page exists.
        let hits: Vec<UsageRecord> = matching.take(query.fetch_limit()).cloned().collect();
        Ok(UsagePage::from_sorted(query, hits))
    }
}

#[tokio::main(flavor = "current_thread")]
async fn main() {
    // Panics, naming every failed check and what was wrong, if the sink breaks
    // the contract.
    run_all(|| async { BTreeSink::default() }).await;
    println!(
        "BTreeSink passes all {} conformance checks: {}",
        CHECKS.len(),
        CHECKS.join(", ")
    );
}
