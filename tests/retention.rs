//! Retention by age (`max_age`) through the public API: an expired record
//! is never listed, fetched or counted, swept yet or not; the sweep removes
//! exactly the records older than the cut and counts them.
#![cfg(feature = "sqlite")]

use std::time::Duration;

use time::OffsetDateTime;
use tower_usage::sink::{ConsumerScope, Interval, SummaryQuery};
use tower_usage::{MemorySink, SqliteSink, UsageQuery, UsageRecord, UsageSink};

const HOUR: Duration = Duration::from_secs(3600);

/// 3 records from 2 to 3 hours ago, 2 from the last half hour.
fn records() -> (Vec<UsageRecord>, Vec<UsageRecord>) {
    let now = OffsetDateTime::now_utc();
    let make = |minutes_ago: i64| {
        let created_at = now - time::Duration::minutes(minutes_ago);
        UsageRecord {
            id: UsageRecord::new_id(created_at),
            consumer: Some("acct".into()),
            method: "GET".into(),
            path: "/".into(),
            status: 200,
            created_at,
            ..UsageRecord::default()
        }
    };
    (
        vec![make(180), make(150), make(121)],
        vec![make(59), make(1)],
    )
}

/// What the sink shows: listed ids, the summary's total, and whether `get`
/// finds each of `old`.
async fn shown(sink: &impl UsageSink, old: &[UsageRecord]) -> (Vec<String>, u64, usize) {
    let page = sink
        .query(&UsageQuery {
            limit: 100,
            ..UsageQuery::default()
        })
        .await
        .expect("query");
    let now = OffsetDateTime::now_utc();
    let summary = sink
        .summarize(&SummaryQuery {
            consumer: ConsumerScope::All,
            since: now - time::Duration::hours(4),
            until: now + time::Duration::minutes(1),
            interval: Interval::Hour,
            ..SummaryQuery::default()
        })
        .await
        .expect("summary");
    assert_eq!(
        summary.since,
        now - time::Duration::hours(4),
        "the range as asked"
    );
    let mut found = 0;
    for r in old {
        if sink
            .get(&r.id, &ConsumerScope::All)
            .await
            .expect("get")
            .is_some()
        {
            found += 1;
        }
    }
    (
        page.records.into_iter().map(|r| r.id).collect(),
        summary.total.requests,
        found,
    )
}

fn ids(records: &[UsageRecord]) -> Vec<String> {
    records.iter().map(|r| r.id.clone()).collect()
}

#[tokio::test]
async fn memory_sink_forgets_records_past_max_age() {
    let (old, young) = records();
    let sink = MemorySink::new().max_age(HOUR);
    sink.record(&old).await.expect("record");
    sink.record(&young).await.expect("record");
    assert_eq!(shown(&sink, &old).await, (ids(&young), 2, 0));
    // The old ones were removed when the second batch came, and counted.
    assert_eq!((sink.len(), sink.expired(), sink.evicted()), (2, 3, 0));

    let plain = MemorySink::new();
    plain.record(&old).await.expect("record");
    plain.record(&young).await.expect("record");
    assert_eq!(plain.expire_older_than(HOUR), 3);
    assert_eq!(shown(&plain, &old).await, (ids(&young), 2, 0));
}

#[tokio::test]
async fn sqlite_sink_hides_then_sweeps_records_past_max_age() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("usage.db");
    let (old, young) = records();
    {
        let sink = SqliteSink::open(&path).expect("open");
        sink.record(&old).await.expect("record");
        sink.record(&young).await.expect("record");
    }
    // The sweep runs at open; whether it is done yet or not, nothing expired
    // is shown.
    let sink = SqliteSink::builder(&path)
        .max_age(HOUR)
        .retention_interval(Duration::from_secs(3600))
        .open()
        .expect("reopen");
    assert_eq!(shown(&sink, &old).await, (ids(&young), 2, 0));
    for _ in 0..500 {
        if sink.expired() == 3 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(
        sink.expired(),
        3,
        "the sweep at open removed the old records"
    );
    drop(sink);
    // They are gone from the file, not only hidden.
    let plain = SqliteSink::open(&path).expect("open without max_age");
    assert_eq!(shown(&plain, &old).await, (ids(&young), 2, 0));
}

#[tokio::test]
async fn sqlite_expire_older_than_removes_exactly_the_older_records() {
    let dir = tempfile::tempdir().expect("tempdir");
    let sink = SqliteSink::open(dir.path().join("usage.db")).expect("open");
    let (old, young) = records();
    // More than one chunk (500) of old records.
    let start = OffsetDateTime::now_utc() - time::Duration::hours(5);
    let many: Vec<UsageRecord> = (0..1200)
        .map(|i| {
            let created_at = start + time::Duration::seconds(i);
            UsageRecord {
                id: UsageRecord::new_id(created_at),
                created_at,
                ..old[0].clone()
            }
        })
        .collect();
    sink.record(&many).await.expect("record");
    sink.record(&old).await.expect("record");
    sink.record(&young).await.expect("record");
    assert_eq!(sink.expire_older_than(HOUR).await.expect("expire"), 1203);
    assert_eq!(sink.expired(), 1203);
    assert_eq!(shown(&sink, &old).await, (ids(&young), 2, 0));
    assert_eq!(sink.expire_older_than(HOUR).await.expect("again"), 0);
}
