//! What `record` must take: `large_batch`, `concurrent_writers`, `idempotent_record`.

use std::collections::HashMap;
use std::sync::Arc;

use super::{consumer, scoped, Check};
use crate::sink::{ConsumerScope, Order};
use crate::testing::support::{
    describe, expect_records, order_name, query, read_all, record, sorted, Gen,
};
use crate::{UsageRecord, UsageSink};

/// A batch of 10,000 records in one `record` call is stored whole.
pub(super) async fn large_batch<S: UsageSink>(sink: &S) -> Check {
    let mut gen = Gen::new(7);
    let owners: Vec<Option<String>> = (0..10)
        .map(|i| Some(format!("acct_bulk_{i}")))
        .chain([None])
        .collect();
    let records: Vec<UsageRecord> = (0..10_000)
        .map(|i: usize| {
            let owner = owners[i % owners.len()].as_deref();
            let status = [200, 201, 404, 500][i % 4];
            gen.request(i as i64 / 3, owner, "GET", "/rest/v1/items", status)
        })
        .collect();
    record(sink, &records, "one batch of 10,000 records").await?;
    let what = "reading back a batch of 10,000 records recorded in one call, 1000 a page";
    let got = read_all(sink, &scoped(ConsumerScope::All, Order::Asc, 1000), what).await?;
    expect_records(what, &sorted(&records, Order::Asc), &got)?;
    let one: Vec<UsageRecord> = records
        .iter()
        .filter(|r| r.consumer.as_deref() == Some("acct_bulk_3"))
        .cloned()
        .collect();
    let what = "reading back consumer \"acct_bulk_3\" of the 10,000-record batch, newest first";
    let got = read_all(
        sink,
        &scoped(consumer("acct_bulk_3"), Order::Desc, 250),
        what,
    )
    .await?;
    expect_records(what, &sorted(&one, Order::Desc), &got)
}

// ---------------------------------------------------------------------------

const WRITERS: usize = 8;
const PER_WRITER: usize = 500;

/// 8 tasks record 500 records each in small batches while readers page through:
/// every record is stored once, and every page a reader saw was sorted.
pub(super) async fn concurrent_writers<S: UsageSink>(sink: Arc<S>) -> Check {
    let mut writers = Vec::new();
    let mut all = Vec::new();
    for w in 0..WRITERS {
        let mut gen = Gen::new(100 + w as u64);
        let owner = format!("acct_writer_{w}");
        let records: Vec<UsageRecord> = (0..PER_WRITER)
            .map(|i| {
                gen.request(
                    i as i64 * 2 + (w % 2) as i64,
                    Some(owner.as_str()),
                    "POST",
                    "/rest/v1/items",
                    201,
                )
            })
            .collect();
        all.extend(records.iter().cloned());
        let sink = Arc::clone(&sink);
        writers.push(tokio::spawn(async move {
            for (n, batch) in records.chunks(25).enumerate() {
                record(&*sink, batch, &format!("writer {w}'s batch {n}")).await?;
                tokio::task::yield_now().await;
            }
            Ok::<(), String>(())
        }));
    }
    let mut readers = Vec::new();
    for order in [Order::Asc, Order::Desc] {
        let sink = Arc::clone(&sink);
        readers.push(tokio::spawn(async move {
            for round in 0..20 {
                let what = format!(
                    "a reader paging {} while writers write, round {round}",
                    order_name(order)
                );
                let page = query(&*sink, &scoped(ConsumerScope::All, order, 50), &what).await?;
                let expected = sorted(&page.records, order);
                expect_records(&what, &expected, &page.records)?;
                tokio::task::yield_now().await;
            }
            Ok::<(), String>(())
        }));
    }
    for (i, task) in writers.into_iter().chain(readers).enumerate() {
        match task.await {
            Ok(result) => result?,
            Err(e) => {
                return Err(format!(
                    "concurrent task {i} failed: {}",
                    crate::testing::kit::join_error(e)
                ))
            }
        }
    }
    let what = format!(
        "reading back {} records written by {WRITERS} concurrent tasks",
        WRITERS * PER_WRITER
    );
    let got = read_all(&*sink, &scoped(ConsumerScope::All, Order::Asc, 1000), &what).await?;
    expect_records(&what, &sorted(&all, Order::Asc), &got)
}

// ---------------------------------------------------------------------------

/// Recording the same records again (a writer's retry) stores each id once.
pub(super) async fn idempotent_record<S: UsageSink>(sink: &S) -> Check {
    let mut gen = Gen::new(8);
    let first: Vec<UsageRecord> = (0..20)
        .map(|i| gen.request(i, Some("acct_retry"), "POST", "/rest/v1/items", 201))
        .collect();
    let later: Vec<UsageRecord> = (20..30)
        .map(|i| gen.request(i, None, "GET", "/health", 200))
        .collect();
    record(sink, &first, "a batch of 20").await?;
    record(sink, &first, "the same batch again (a retry)").await?;
    let overlapping: Vec<UsageRecord> = first[10..].iter().chain(&later).cloned().collect();
    record(
        sink,
        &overlapping,
        "a batch of 10 already stored and 10 new",
    )
    .await?;

    let what = "after recording a batch twice and an overlapping batch";
    let got = query(sink, &scoped(ConsumerScope::All, Order::Asc, 1000), what)
        .await?
        .records;
    let mut counts: HashMap<&str, usize> = HashMap::new();
    for r in &got {
        *counts.entry(r.id.as_str()).or_default() += 1;
    }
    if let Some(r) = got.iter().find(|r| counts[r.id.as_str()] > 1) {
        return Err(format!(
            "{what}: {} is stored {} times; record() is retried with the same batch after a \
             temporary error, so it must not store an id that is already stored",
            describe(r),
            counts[r.id.as_str()]
        ));
    }
    let all: Vec<UsageRecord> = first.iter().chain(&later).cloned().collect();
    expect_records(what, &sorted(&all, Order::Asc), &got)
}
