//! `erase_consumer` on every shipped sink, through the public API: the
//! consumer's records are gone from the list, `get` and the summary, also
//! after the persistent sinks are reopened; other consumers' are untouched;
//! a `Spooled` sink erases its copies on disk too.
//!
//! PostgreSQL: `TOWER_USAGE_POSTGRES_URL` (default
//! `postgres://postgres@127.0.0.1:5432/test`), a schema per test; the tests
//! fail when it is down.
#![cfg(all(feature = "sqlite", feature = "postgres", feature = "spool"))]

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use time::OffsetDateTime;
use tower_usage::sink::spool::Spooled;
use tower_usage::sink::{ConsumerScope, Interval, SummaryQuery};
use tower_usage::{
    MemorySink, PostgresSink, SinkError, SqliteSink, UsagePage, UsageQuery, UsageRecord, UsageSink,
};

const DEFAULT_URL: &str = "postgres://postgres@127.0.0.1:5432/test";

fn url() -> String {
    std::env::var("TOWER_USAGE_POSTGRES_URL").unwrap_or_else(|_| DEFAULT_URL.to_owned())
}

/// Records of `alice` (7), `bob` (5) and anonymous (3), a second apart.
fn records() -> Vec<UsageRecord> {
    let t0 = OffsetDateTime::now_utc() - time::Duration::minutes(30);
    let owners = [Some("alice"); 7]
        .into_iter()
        .chain([Some("bob"); 5])
        .chain([None; 3]);
    owners
        .enumerate()
        .map(|(i, consumer)| {
            let created_at = t0 + time::Duration::seconds(i as i64);
            UsageRecord {
                id: UsageRecord::new_id(created_at),
                consumer: consumer.map(str::to_owned),
                method: "GET".into(),
                path: format!("/items/{i}"),
                status: 200,
                created_at,
                ..UsageRecord::default()
            }
        })
        .collect()
}

fn scope(consumer: &str) -> ConsumerScope {
    ConsumerScope::Consumer(consumer.to_owned())
}

async fn ids(sink: &impl UsageSink, scope: ConsumerScope) -> Vec<String> {
    let page = sink
        .query(&UsageQuery {
            consumer: scope,
            limit: 100,
            ..UsageQuery::default()
        })
        .await
        .expect("query");
    page.records.into_iter().map(|r| r.id).collect()
}

async fn summary_total(sink: &impl UsageSink, scope: ConsumerScope) -> u64 {
    let now = OffsetDateTime::now_utc();
    let summary = sink
        .summarize(&SummaryQuery {
            consumer: scope,
            since: now - time::Duration::hours(2),
            until: now + time::Duration::minutes(1),
            interval: Interval::Hour,
            ..SummaryQuery::default()
        })
        .await
        .expect("summary");
    summary.total.requests
}

/// What a sink holds after `alice` was erased from `records()`.
async fn assert_erased(sink: &impl UsageSink, records: &[UsageRecord], what: &str) {
    assert!(
        ids(sink, scope("alice")).await.is_empty(),
        "{what}: alice listed"
    );
    assert_eq!(
        summary_total(sink, scope("alice")).await,
        0,
        "{what}: alice counted"
    );
    for r in records
        .iter()
        .filter(|r| r.consumer.as_deref() == Some("alice"))
    {
        let got = sink.get(&r.id, &ConsumerScope::All).await.expect("get");
        assert!(got.is_none(), "{what}: get found alice's {}", r.id);
    }
    let theirs = |c: Option<&str>| -> Vec<String> {
        records
            .iter()
            .filter(|r| r.consumer.as_deref() == c)
            .map(|r| r.id.clone())
            .collect()
    };
    assert_eq!(
        ids(sink, scope("bob")).await,
        theirs(Some("bob")),
        "{what}: bob"
    );
    assert_eq!(
        ids(sink, ConsumerScope::Anonymous).await,
        theirs(None),
        "{what}: anonymous"
    );
    assert_eq!(ids(sink, ConsumerScope::All).await.len(), 8, "{what}: all");
    assert_eq!(
        summary_total(sink, ConsumerScope::All).await,
        8,
        "{what}: summary"
    );
}

/// Records, erases `alice` (7), erases her again (0) and an unknown one (0).
async fn erase_alice(sink: &impl UsageSink, records: &[UsageRecord]) {
    sink.record(records).await.expect("record");
    assert_eq!(ids(sink, scope("alice")).await.len(), 7);
    assert_eq!(sink.erase_consumer("alice").await.expect("erase"), 7);
    assert_eq!(sink.erase_consumer("alice").await.expect("erase again"), 0);
    assert_eq!(
        sink.erase_consumer("nobody").await.expect("erase unknown"),
        0
    );
    assert_erased(sink, records, "after erasing").await;
    // A record of alice's written after the erasure is kept.
    let mut later = records[0].clone();
    later.id = UsageRecord::new_id(OffsetDateTime::now_utc());
    later.created_at = OffsetDateTime::now_utc();
    sink.record(&[later.clone()]).await.expect("record later");
    assert_eq!(ids(sink, scope("alice")).await, vec![later.id.clone()]);
    assert_eq!(sink.erase_consumer("alice").await.expect("erase later"), 1);
}

#[tokio::test]
async fn memory_sink_erases_one_consumer() {
    let sink = MemorySink::new();
    let records = records();
    erase_alice(&sink, &records).await;
    assert_eq!(sink.len(), 8);
    assert_eq!(sink.evicted(), 0, "an erasure is no eviction");
    // The bookkeeping of the bounds stays right: bytes go back to what the
    // remaining records take.
    let fresh = MemorySink::new();
    let kept: Vec<_> = records
        .iter()
        .filter(|r| r.consumer.as_deref() != Some("alice"))
        .cloned()
        .collect();
    fresh.record(&kept).await.expect("record");
    assert_eq!(sink.bytes(), fresh.bytes());
}

#[tokio::test]
async fn sqlite_sink_erases_one_consumer_for_good() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("usage.db");
    let records = records();
    {
        let sink = SqliteSink::open(&path).expect("open");
        erase_alice(&sink, &records).await;
    }
    let sink = SqliteSink::open(&path).expect("reopen");
    assert_erased(&sink, &records, "after reopening").await;
}

async fn admin() -> tokio_postgres::Client {
    let url = url();
    let (client, conn) = tokio_postgres::connect(&url, tokio_postgres::NoTls)
        .await
        .unwrap_or_else(|e| panic!("PostgreSQL is not reachable at {url}: {e}"));
    tokio::spawn(conn);
    client
}

#[tokio::test]
async fn postgres_sink_erases_one_consumer_for_good() {
    let schema = format!("tu_erase_{:016x}", fastrand::u64(..));
    let connect = || async {
        PostgresSink::builder()
            .schema(schema.clone())
            .pool_size(2)
            .connect(&url())
            .await
    };
    let records = records();
    {
        let sink = connect().await.expect("connect");
        erase_alice(&sink, &records).await;
    }
    let sink = connect().await.expect("reconnect");
    assert_erased(&sink, &records, "after reconnecting").await;
    admin()
        .await
        .batch_execute(&format!("DROP SCHEMA \"{schema}\" CASCADE"))
        .await
        .expect("drop schema");
}

/// An inner sink that can be switched down (temporary errors on `record`).
#[derive(Clone)]
struct Gate<S> {
    down: Arc<AtomicBool>,
    inner: S,
}

#[async_trait::async_trait]
impl<S: UsageSink + Clone> UsageSink for Gate<S> {
    async fn record(&self, batch: &[UsageRecord]) -> Result<(), SinkError> {
        if self.down.load(Ordering::SeqCst) {
            return Err(SinkError::unavailable(std::io::Error::other("down")));
        }
        self.inner.record(batch).await
    }
    async fn query(&self, query: &UsageQuery) -> Result<UsagePage, SinkError> {
        self.inner.query(query).await
    }
    async fn erase_consumer(&self, consumer: &str) -> Result<u64, SinkError> {
        self.inner.erase_consumer(consumer).await
    }
}

#[tokio::test]
async fn spooled_sink_erases_its_copies_on_disk_and_forwards() {
    let dir = tempfile::tempdir().expect("tempdir");
    let db = dir.path().join("usage.db");
    let spool_dir = dir.path().join("spool");
    let records = records();
    let (head, tail) = records.split_at(4); // alice 4 | alice 3, bob 5, anonymous 3
    {
        let down = Arc::new(AtomicBool::new(false));
        let inner = Gate {
            down: Arc::clone(&down),
            inner: SqliteSink::open(&db).expect("open"),
        };
        let sink = Spooled::new(inner, &spool_dir, 1 << 24).expect("spool");
        sink.record(head).await.expect("straight through");
        down.store(true, Ordering::SeqCst);
        sink.record(tail).await.expect("spooled");
        assert_eq!(sink.stats().spooled, tail.len() as u64);
        // 3 of alice's on disk, 4 in the inner sink.
        assert_eq!(sink.erase_consumer("alice").await.expect("erase"), 7);
        let stats = sink.stats();
        assert_eq!((stats.erased, stats.spooled), (3, 8), "{stats:?}");
        assert!(stats.is_balanced(), "{stats:?}");
        // The process ends with the rest still on disk.
    }
    // The next process finds the spool without alice's records, and writes
    // the rest back.
    let sink = Spooled::new(SqliteSink::open(&db).expect("reopen"), &spool_dir, 1 << 24)
        .expect("reopen spool");
    assert_eq!(sink.stats().recovered, 8);
    sink.flush().await;
    assert_erased(&sink, &records, "after the spool was written back").await;
    assert!(sink.stats().is_balanced());
}

#[tokio::test]
async fn spooled_sink_erases_while_writing_back() {
    let dir = tempfile::tempdir().expect("tempdir");
    let records = records();
    let down = Arc::new(AtomicBool::new(true));
    let inner = Gate {
        down: Arc::clone(&down),
        inner: MemorySink::new(),
    };
    let sink = Spooled::new(inner, dir.path().join("spool"), 1 << 24).expect("spool");
    for r in &records {
        sink.record(std::slice::from_ref(r)).await.expect("spooled");
    }
    down.store(false, Ordering::SeqCst);
    // The write-back task may be between a read and its acknowledgement.
    assert_eq!(sink.erase_consumer("alice").await.expect("erase"), 7);
    sink.flush().await;
    assert_erased(&sink, &records, "after the write-back").await;
    assert!(sink.stats().is_balanced(), "{:?}", sink.stats());
}
