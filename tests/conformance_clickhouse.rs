//! `ClickHouseSink` against the real server: the whole conformance kit (each
//! check in a database of its own, `tu_conf_<random>`, dropped afterwards),
//! then what a fleet needs: a batch written twice counts once, two sink
//! instances write one table, retention, erasure, the trace filter, and the
//! startup check of the table's columns.
//!
//! The server is `TOWER_USAGE_CLICKHOUSE_URL`, by default
//! `http://127.0.0.1:8123`. When it is down these tests fail, saying how to
//! start it; they never skip.
#![cfg(all(feature = "clickhouse", feature = "testing"))]

use std::time::Duration;

use time::OffsetDateTime;
use tower_usage::sink::{ConsumerScope, SummaryQuery};
use tower_usage::testing::run_check;
use tower_usage::{
    ClickHouseSink, SinkErrorKind, TraceContext, UsageQuery, UsageRecord, UsageSink,
};

const DEFAULT_URL: &str = "http://127.0.0.1:8123";

fn url() -> String {
    std::env::var("TOWER_USAGE_CLICKHOUSE_URL").unwrap_or_else(|_| DEFAULT_URL.to_owned())
}

fn fresh_database() -> String {
    format!("tu_conf_{:016x}", fastrand::u64(..))
}

/// A sink on `database`, failing the test with how to start the server when
/// it is down.
async fn sink_in(database: &str) -> ClickHouseSink {
    ClickHouseSink::builder()
        .database(database)
        .connect(&url())
        .await
        .unwrap_or_else(|e| {
            panic!(
                "ClickHouse is not reachable at {} ({e}). These tests need a server: run \
                 `scripts/test --setup-only`, or point TOWER_USAGE_CLICKHOUSE_URL at one.",
                url()
            )
        })
}

/// Drops `database` (with a client of its own: the sink may be gone).
async fn drop_database(database: &str) {
    let client = clickhouse::Client::default().with_url(url());
    if let Err(e) = client
        .query(&format!("DROP DATABASE IF EXISTS `{database}`"))
        .execute()
        .await
    {
        eprintln!("could not drop database {database}: {e}");
    }
}

/// Runs the check `name` against a `ClickHouseSink` in a new database, drops
/// every database the check made (even when it failed), then reports.
async fn conforms(name: &str) {
    let mut databases = Vec::new();
    let result = run_check(name, || {
        let database = fresh_database();
        databases.push(database.clone());
        async move { sink_in(&database).await }
    })
    .await;
    for database in &databases {
        drop_database(database).await;
    }
    if let Err(msg) = result {
        panic!("sink conformance check `{name}` failed on ClickHouse: {msg}");
    }
}

macro_rules! checks {
    ($($check:ident)*) => {
        $(
            #[tokio::test]
            async fn $check() {
                conforms(::core::stringify!($check)).await;
            }
        )*
    };
}

tower_usage::__tower_usage_checks!(@each checks);

/// A record `minutes_ago` minutes old.
fn record(consumer: Option<&str>, minutes_ago: i64, status: u16) -> UsageRecord {
    let created_at = OffsetDateTime::now_utc() - time::Duration::minutes(minutes_ago);
    let mut r = UsageRecord {
        created_at,
        id: UsageRecord::new_id(created_at),
        consumer: consumer.map(str::to_owned),
        method: "GET".into(),
        path: "/things".into(),
        status,
        duration_us: 1000,
        ..UsageRecord::default()
    };
    r.response.size = 10;
    r
}

fn all_since(days: i64) -> UsageQuery {
    UsageQuery {
        since: Some(OffsetDateTime::now_utc() - time::Duration::days(days)),
        limit: 1000,
        ..UsageQuery::default()
    }
}

/// A summary of the last two days, every consumer.
async fn total(sink: &ClickHouseSink) -> u64 {
    let now = OffsetDateTime::now_utc();
    let q = SummaryQuery {
        since: now - time::Duration::days(2),
        until: now + time::Duration::minutes(1),
        ..SummaryQuery::default()
    };
    sink.summarize(&q).await.unwrap().total.requests
}

/// Rows on disk, copies included (no `FINAL`).
async fn raw_rows(sink: &ClickHouseSink) -> u64 {
    sink.client()
        .query(&format!("SELECT count() FROM `{}`", sink.table()))
        .fetch_one()
        .await
        .unwrap()
}

#[tokio::test]
async fn a_batch_written_twice_counts_once() {
    let db = fresh_database();
    let sink = sink_in(&db).await;
    let batch: Vec<UsageRecord> = (0..50).map(|i| record(Some("a"), i, 200)).collect();
    sink.record(&batch).await.unwrap();
    // The writer retrying after a lost answer.
    sink.record(&batch).await.unwrap();
    assert_eq!(
        raw_rows(&sink).await,
        100,
        "both inserts reached the server"
    );
    let page = sink.query(&all_since(1)).await.unwrap();
    assert_eq!(page.records.len(), 50);
    assert_eq!(total(&sink).await, 50);
    assert_eq!(
        sink.get(&batch[7].id, &ConsumerScope::All)
            .await
            .unwrap()
            .map(|r| r.id),
        Some(batch[7].id.clone())
    );
    drop_database(&db).await;
}

#[tokio::test]
async fn two_replicas_write_one_table() {
    let db = fresh_database();
    let (a, b) = (sink_in(&db).await, sink_in(&db).await);
    let first: Vec<UsageRecord> = (0..30).map(|i| record(Some("x"), i, 200)).collect();
    let second: Vec<UsageRecord> = (0..20).map(|i| record(Some("y"), i, 500)).collect();
    // Both at once, and one record both replicas wrote (a client retrying
    // through another replica).
    let mut shared = second.clone();
    shared.push(first[0].clone());
    let (ra, rb) = tokio::join!(a.record(&first), b.record(&shared));
    ra.unwrap();
    rb.unwrap();
    for sink in [&a, &b] {
        let page = sink.query(&all_since(1)).await.unwrap();
        assert_eq!(page.records.len(), 50);
        let now = OffsetDateTime::now_utc();
        let summary = sink
            .summarize(&SummaryQuery {
                since: now - time::Duration::days(1),
                until: now + time::Duration::minutes(1),
                ..SummaryQuery::default()
            })
            .await
            .unwrap();
        assert_eq!(summary.total.requests, 50);
        assert_eq!(summary.total.server_errors, 20);
    }
    drop_database(&db).await;
}

#[tokio::test]
async fn erasure_hides_at_once_and_keeps_later_records() {
    let db = fresh_database();
    let sink = sink_in(&db).await;
    let gone: Vec<UsageRecord> = (0..12).map(|i| record(Some("gone"), i, 200)).collect();
    let kept: Vec<UsageRecord> = (0..5).map(|i| record(Some("kept"), i, 200)).collect();
    sink.record(&gone).await.unwrap();
    sink.record(&kept).await.unwrap();
    assert_eq!(sink.erase_consumer("gone").await.unwrap(), 12);
    // At once, whether or not the mutation ran.
    let q = UsageQuery {
        consumer: ConsumerScope::Consumer("gone".into()),
        ..all_since(1)
    };
    assert!(sink.query(&q).await.unwrap().records.is_empty());
    assert_eq!(
        sink.get(&gone[0].id, &ConsumerScope::All).await.unwrap(),
        None
    );
    assert_eq!(total(&sink).await, 5);
    // Written after the erasure: kept and shown.
    tokio::time::sleep(Duration::from_millis(5)).await;
    let later = record(Some("gone"), 0, 200);
    sink.record(std::slice::from_ref(&later)).await.unwrap();
    let page = sink.query(&q).await.unwrap();
    assert_eq!(page.records.len(), 1);
    assert_eq!(page.records[0].id, later.id);
    // Another instance (a replica, or after a restart) hides them too.
    let other = sink_in(&db).await;
    assert_eq!(other.query(&q).await.unwrap().records.len(), 1);
    assert_eq!(total(&other).await, 6);
    // The mutation removes the erased rows from disk, in the background.
    let mut on_disk = u64::MAX;
    for _ in 0..100 {
        on_disk = sink
            .client()
            .query(&format!(
                "SELECT count() FROM `{}` WHERE consumer = 'gone'",
                sink.table()
            ))
            .fetch_one()
            .await
            .unwrap();
        if on_disk == 1 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(
        on_disk, 1,
        "the DELETE mutation did not remove the erased rows"
    );
    // Erasing again counts only what is left.
    assert_eq!(sink.erase_consumer("gone").await.unwrap(), 1);
    assert_eq!(sink.erase_consumer("nobody").await.unwrap(), 0);
    drop_database(&db).await;
}

#[tokio::test]
async fn retention_hides_old_records_and_drops_old_months() {
    let db = fresh_database();
    let writer = sink_in(&db).await;
    let mut old = record(Some("a"), 0, 200);
    old.created_at = OffsetDateTime::now_utc() - time::Duration::days(100);
    old.id = UsageRecord::new_id(old.created_at);
    let mut recent = record(Some("a"), 0, 200);
    recent.created_at = OffsetDateTime::now_utc() - time::Duration::days(3);
    recent.id = UsageRecord::new_id(recent.created_at);
    let mut young = record(Some("a"), 0, 200);
    young.created_at = OffsetDateTime::now_utc() - time::Duration::days(1);
    young.id = UsageRecord::new_id(young.created_at);
    writer
        .record(&[old.clone(), recent.clone(), young.clone()])
        .await
        .unwrap();
    let keeping = ClickHouseSink::builder()
        .database(&db)
        .max_age(Duration::from_secs(2 * 86_400))
        .connect(&url())
        .await
        .unwrap();
    // Reads hide what is past max_age at once.
    let page = keeping.query(&all_since(365)).await.unwrap();
    let ids: Vec<&str> = page.records.iter().map(|r| r.id.as_str()).collect();
    assert_eq!(ids, [young.id.as_str()]);
    assert_eq!(
        keeping.get(&old.id, &ConsumerScope::All).await.unwrap(),
        None
    );
    // The month 100 days back is gone from disk (the background task at
    // start may have dropped it already).
    keeping.enforce_retention().await.unwrap();
    let months: Vec<u32> = keeping
        .client()
        .query(&format!(
            "SELECT DISTINCT month FROM `{}` ORDER BY month",
            keeping.table()
        ))
        .fetch_all()
        .await
        .unwrap();
    let old_month = {
        let t = old.created_at;
        u32::try_from(t.year()).unwrap() * 100 + u32::from(u8::from(t.month()))
    };
    assert!(!months.contains(&old_month), "{months:?}");
    assert!(!months.is_empty(), "the recent months are kept");
    // The writer without max_age still sees the recent record, not the old one.
    let page = writer.query(&all_since(365)).await.unwrap();
    assert_eq!(page.records.len(), 2);
    drop_database(&db).await;
}

#[tokio::test]
async fn the_trace_filter_runs_in_clickhouse() {
    let db = fresh_database();
    let sink = sink_in(&db).await;
    let mut traced = record(Some("a"), 1, 200);
    traced.trace = Some(TraceContext {
        trace_id: "4bf92f3577b34da6a3ce929d0e0e4736".into(),
        span_id: "00f067aa0ba902b7".into(),
    });
    let plain = record(Some("a"), 2, 200);
    sink.record(&[traced.clone(), plain]).await.unwrap();
    let q = UsageQuery {
        trace_id: Some("4bf92f3577b34da6a3ce929d0e0e4736".into()),
        ..all_since(1)
    };
    let page = sink.query(&q).await.unwrap();
    assert_eq!(page.records.len(), 1);
    assert_eq!(page.records[0].id, traced.id);
    let stored: (String, String) = sink
        .client()
        .query(&format!(
            "SELECT trace_id, span_id FROM `{}` WHERE id = ?",
            sink.table()
        ))
        .bind(traced.id.as_str())
        .fetch_one()
        .await
        .unwrap();
    assert_eq!(stored.1, "00f067aa0ba902b7");
    let none = UsageQuery {
        trace_id: Some("ffffffffffffffffffffffffffffffff".into()),
        ..all_since(1)
    };
    assert!(sink.query(&none).await.unwrap().records.is_empty());
    drop_database(&db).await;
}

#[tokio::test]
async fn a_table_with_other_columns_is_a_config_error() {
    let db = fresh_database();
    let client = clickhouse::Client::default().with_url(url());
    client
        .query(&format!("CREATE DATABASE `{db}`"))
        .execute()
        .await
        .unwrap();
    client
        .query(&format!(
            "CREATE TABLE `{db}`.usage_records (id String, consumer String, created_at_ms UInt64) \
             ENGINE = MergeTree ORDER BY id"
        ))
        .execute()
        .await
        .unwrap();
    let err = ClickHouseSink::builder()
        .database(&db)
        .connect(&url())
        .await
        .unwrap_err();
    assert_eq!(err.kind(), SinkErrorKind::Config, "{err}");
    let text = err.to_string();
    assert!(
        text.contains("column created_at_ms is UInt64, not Int64"),
        "{text}"
    );
    assert!(text.contains("column record String is missing"), "{text}");
    assert!(!err.is_temporary());
    drop_database(&db).await;
}

#[tokio::test]
async fn bad_names_and_a_dead_server_say_so() {
    let err = ClickHouseSink::builder()
        .table("x; DROP")
        .connect(&url())
        .await
        .unwrap_err();
    assert_eq!(err.kind(), SinkErrorKind::Config);
    // Nothing listens on port 9 of loopback.
    let err = ClickHouseSink::connect("http://127.0.0.1:9")
        .await
        .unwrap_err();
    assert_eq!(err.kind(), SinkErrorKind::Unavailable, "{err}");
    assert!(err.is_temporary());
}

/// The kit's lifecycle checks with its hooks, each also through a sink
/// connected anew (`reopen`: a restarted process, or another replica):
/// `erasure`, and `retention` on sinks made with `max_age(1 hour)` (the hook
/// drops expired months now; the kit's records are all of this month or the
/// last, so reads must hide the expired ones by themselves).
#[tokio::test]
async fn the_lifecycle_checks_hold_through_a_new_connection() {
    const MAX_AGE: Duration = Duration::from_secs(3600);
    for (check, max_age) in [("erasure", None), ("retention", Some(MAX_AGE))] {
        let db = fresh_database();
        let connect = move |db: String| async move {
            let builder = ClickHouseSink::builder().database(db);
            match max_age {
                Some(age) => builder.max_age(age),
                None => builder,
            }
            .connect(&url())
            .await
        };
        let first = db.clone();
        let result = tower_usage::testing::SinkKit::new(move || {
            let db = first.clone();
            async move { connect(db).await.expect("connect and create the table") }
        })
        .expire(|sink: std::sync::Arc<ClickHouseSink>, age| async move {
            assert_eq!(age, MAX_AGE, "the sinks here are made with max_age(1 hour)");
            sink.enforce_retention().await.map(drop)
        })
        .reopen(move |sink: std::sync::Arc<ClickHouseSink>| connect(sink.database().to_owned()))
        .run_check(check)
        .await;
        drop_database(&db).await;
        assert_eq!(result, Ok(()), "{check}");
    }
}

/// `get` looks in the millisecond the id's ULID names first, then anywhere:
/// a record whose id names another time (set by hand, imported) is found as
/// on every other sink, and so is one whose id is no ULID at all.
#[tokio::test]
async fn get_finds_records_whose_id_names_another_time() {
    let db = fresh_database();
    let sink = sink_in(&db).await;
    let mut elsewhere = record(Some("a"), 1, 200);
    elsewhere.id = UsageRecord::new_id(OffsetDateTime::now_utc() - time::Duration::days(40));
    let mut off_by_one = record(Some("a"), 2, 200);
    off_by_one.id = UsageRecord::new_id(off_by_one.created_at + time::Duration::milliseconds(1));
    let mut not_ulid = record(Some("a"), 3, 200);
    not_ulid.id = "import-42".into();
    let named = record(Some("a"), 4, 200);
    let all = [elsewhere, off_by_one, not_ulid, named];
    sink.record(&all).await.unwrap();
    for r in &all {
        let mine = ConsumerScope::Consumer("a".into());
        assert_eq!(
            sink.get(&r.id, &mine).await.unwrap().map(|f| f.id),
            Some(r.id.clone()),
            "{}",
            r.id
        );
        assert_eq!(
            sink.get(&r.id, &ConsumerScope::Consumer("b".into()))
                .await
                .unwrap(),
            None
        );
    }
    assert_eq!(
        sink.get(
            &UsageRecord::new_id(OffsetDateTime::now_utc()),
            &ConsumerScope::All
        )
        .await
        .unwrap(),
        None
    );
    drop_database(&db).await;
}
