//! `PostgresSink` partitioned by time: the whole conformance kit on a
//! partitioned table, the migration of a plain table made by the current
//! code (every record kept), retention by dropped partitions, the DEFAULT
//! partition kept empty, one maintainer at a time, and partition pruning.
//!
//! The server is `TOWER_USAGE_POSTGRES_URL` (default
//! `postgres://postgres@127.0.0.1:5432/test`), a schema per test; the tests
//! fail when it is down.
#![cfg(all(feature = "postgres", feature = "testing"))]

use std::sync::Arc;
use std::time::Duration;

use time::OffsetDateTime;
use tower_usage::sink::postgres::PartitionBy;
use tower_usage::testing::SinkKit;
use tower_usage::{PostgresSink, UsageQuery, UsageRecord, UsageSink};

const DEFAULT_URL: &str = "postgres://postgres@127.0.0.1:5432/test";
const DAY: Duration = Duration::from_secs(24 * 3600);

fn url() -> String {
    std::env::var("TOWER_USAGE_POSTGRES_URL").unwrap_or_else(|_| DEFAULT_URL.to_owned())
}

async fn admin() -> tokio_postgres::Client {
    let url = url();
    let (client, conn) = tokio_postgres::connect(&url, tokio_postgres::NoTls)
        .await
        .unwrap_or_else(|e| panic!("PostgreSQL is not reachable at {url}: {e}"));
    tokio::spawn(conn);
    client
}

fn schema(test: &str) -> String {
    format!("tu_part_{test}_{:08x}", fastrand::u32(..))
}

async fn drop_schema(schema: &str) {
    let _ = admin()
        .await
        .batch_execute(&format!("DROP SCHEMA IF EXISTS \"{schema}\" CASCADE"))
        .await;
}

async fn connect(schema: &str, by: Option<PartitionBy>, max_age: Option<Duration>) -> PostgresSink {
    let mut b = PostgresSink::builder().schema(schema).pool_size(3);
    if let Some(by) = by {
        b = b.partition(by);
    }
    if let Some(age) = max_age {
        b = b.max_age(age);
    }
    b.connect(&url()).await.expect("connect")
}

fn record(days_ago: f64, consumer: &str, n: usize) -> UsageRecord {
    let created_at = OffsetDateTime::now_utc() - time::Duration::seconds_f64(days_ago * 86_400.0);
    UsageRecord {
        id: UsageRecord::new_id(created_at),
        consumer: Some(consumer.to_owned()),
        method: "POST".into(),
        path: format!("/items/{n}"),
        status: 201,
        duration_us: 1234 + n as u64,
        created_at,
        ..UsageRecord::default()
    }
}

async fn all(sink: &PostgresSink) -> Vec<UsageRecord> {
    let mut q = UsageQuery {
        limit: 1000,
        ..UsageQuery::default()
    };
    let mut out = Vec::new();
    loop {
        let page = sink.query(&q).await.expect("query");
        out.extend(page.records);
        match page.next_cursor {
            Some(c) => q.cursor = Some(c),
            None => return out,
        }
    }
}

async fn relkind(schema: &str, table: &str) -> String {
    admin()
        .await
        .query_one(
            "SELECT c.relkind::text FROM pg_class c JOIN pg_namespace s ON s.oid = c.relnamespace \
             WHERE s.nspname = $1 AND c.relname = $2",
            &[&schema, &table],
        )
        .await
        .expect("relkind")
        .get(0)
}

/// The rows in the `DEFAULT` partition, which the sink keeps empty.
async fn in_default(schema: &str) -> i64 {
    admin()
        .await
        .query_one(
            &format!("SELECT count(*) FROM \"{schema}\".usage_records_default"),
            &[],
        )
        .await
        .unwrap()
        .get(0)
}

async fn partitions(schema: &str) -> Vec<String> {
    admin()
        .await
        .query(
            "SELECT c.relname::text FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid \
             JOIN pg_class p ON p.oid = i.inhparent JOIN pg_namespace s ON s.oid = p.relnamespace \
             WHERE s.nspname = $1 AND p.relname = 'usage_records' ORDER BY 1",
            &[&schema],
        )
        .await
        .expect("partitions")
        .iter()
        .map(|r| r.get(0))
        .collect()
}

/// Every conformance check on a partitioned table, reopened by a second
/// connect, and retention with `max_age` (the kit's records older than an
/// hour are hidden at once, whole expired partitions dropped).
#[tokio::test]
async fn a_partitioned_table_passes_the_kit() {
    let mut made = Vec::new();
    let result = {
        let made = &mut made;
        let mut kit = SinkKit::new(move || {
            let s = schema("kit");
            made.push(s.clone());
            async move { connect(&s, Some(PartitionBy::Day), Some(Duration::from_secs(3600))).await }
        })
        .reopen(|sink: Arc<PostgresSink>| async move {
            Ok(connect(sink.schema(), Some(PartitionBy::Day), Some(Duration::from_secs(3600))).await)
        })
        .expire(|sink: Arc<PostgresSink>, _age| async move { sink.maintain().await.map(drop) });
        let mut failures = Vec::new();
        // The other checks date their records in 2024, which `max_age` hides.
        for name in ["retention"] {
            if let Err(e) = kit.run_check(name).await {
                failures.push(format!("{name}: {e}"));
            }
        }
        failures
    };
    for s in &made {
        drop_schema(s).await;
    }
    assert!(result.is_empty(), "{result:#?}");

    // And without max_age, the whole kit (its records, dated 2024, land in
    // the DEFAULT partition: a partitioned table answers all the same).
    let mut made = Vec::new();
    let outcome = {
        let made = &mut made;
        let mut kit = SinkKit::new(move || {
            let s = schema("kitall");
            made.push(s.clone());
            async move { connect(&s, Some(PartitionBy::Month), None).await }
        })
        .reopen(|sink: Arc<PostgresSink>| async move {
            Ok(connect(sink.schema(), Some(PartitionBy::Month), None).await)
        });
        let mut failures = Vec::new();
        for name in tower_usage::testing::CHECKS {
            if let Err(e) = kit.run_check(name).await {
                failures.push(format!("{name}: {e}"));
            }
        }
        failures
    };
    for s in &made {
        drop_schema(s).await;
    }
    assert!(outcome.is_empty(), "{outcome:#?}");
}

/// A plain table filled by the current code is converted by `migrate`,
/// every record kept field for field.
#[tokio::test]
async fn a_plain_table_is_partitioned_keeping_every_record() {
    let s = schema("migrate");
    let plain = connect(&s, None, None).await;
    let mut records: Vec<UsageRecord> = (0..3000)
        .map(|i| record(i as f64 * 40.0 / 3000.0, ["a", "b", "c"][i % 3], i))
        .collect();
    records[7].trace = Some(tower_usage::TraceContext {
        trace_id: "4bf92f3577b34da6a3ce929d0e0e4736".into(),
        span_id: "00f067aa0ba902b7".into(),
    });
    for chunk in records.chunks(512) {
        plain.record(chunk).await.expect("record");
    }
    let before = all(&plain).await;
    assert_eq!(before.len(), 3000);
    assert_eq!(relkind(&s, "usage_records").await, "r");
    drop(plain);

    let parted = connect(&s, Some(PartitionBy::Day), None).await;
    assert_eq!(relkind(&s, "usage_records").await, "p");
    let after = all(&parted).await;
    assert_eq!(after, before, "every record, field for field");
    let parts = partitions(&s).await;
    assert!(parts.len() >= 41 + 7, "{parts:?}");
    assert!(parts.contains(&"usage_records_default".to_owned()));
    // The DEFAULT partition is empty: every record has a partition.
    assert_eq!(in_default(&s).await, 0);
    // Retries stay idempotent on (id, created_at).
    parted.record(&records[..10]).await.expect("again");
    assert_eq!(all(&parted).await.len(), 3000);
    // Connecting again changes nothing; configured otherwise is refused.
    drop(connect(&s, Some(PartitionBy::Day), None).await);
    let err = PostgresSink::builder()
        .schema(&s)
        .partition(PartitionBy::Month)
        .connect(&url())
        .await
        .expect_err("month on a day-partitioned table");
    assert!(err.to_string().contains("partitioned by day"), "{err}");
    drop_schema(&s).await;
}

/// `max_age` drops whole partitions older than the cut, counts their
/// records, and hides the expired rows of the partition the cut falls in.
#[tokio::test]
async fn retention_drops_whole_partitions() {
    let s = schema("retain");
    let sink = connect(&s, Some(PartitionBy::Day), None).await;
    let old: Vec<UsageRecord> = (0..50)
        .map(|i| record(10.0 + i as f64 / 100.0, "a", i))
        .collect();
    let edge = record(5.2, "a", 99); // older than 5 days, in a partition that may hold younger ones
    let young: Vec<UsageRecord> = (0..30).map(|i| record(i as f64 / 10.0, "b", i)).collect();
    sink.record(&old).await.unwrap();
    sink.record(std::slice::from_ref(&edge)).await.unwrap();
    sink.record(&young).await.unwrap();
    // Past records landed in DEFAULT (partitions are made ahead, not
    // behind): a round gives them partitions of their own.
    assert!(sink.maintain().await.unwrap().moved_from_default > 0);
    let before = partitions(&s).await;
    drop(sink);

    let sink = connect(&s, Some(PartitionBy::Day), Some(5 * DAY)).await;
    let after = partitions(&s).await;
    let gone: Vec<&String> = before.iter().filter(|p| !after.contains(p)).collect();
    assert!(!gone.is_empty(), "no partition dropped: {before:?}");
    assert!(sink.expired() >= 50, "{}", sink.expired());
    let listed = all(&sink).await;
    assert_eq!(
        listed.iter().map(|r| r.id.clone()).collect::<Vec<_>>(),
        young.iter().rev().map(|r| r.id.clone()).collect::<Vec<_>>(),
        "only the young records are listed (the edge one is hidden)"
    );
    assert!(sink
        .get(&edge.id, &Default::default())
        .await
        .unwrap()
        .is_none());
    // A second round has nothing more to drop.
    let round = sink.maintain().await.unwrap();
    assert_eq!(round.dropped, 0);
    drop_schema(&s).await;
}

/// A record for which no partition exists lands in DEFAULT; the next round
/// moves it to a partition of its own, and reports it.
#[tokio::test]
async fn the_default_partition_is_emptied_by_maintenance() {
    let s = schema("default");
    let sink = connect(&s, Some(PartitionBy::Month), None).await;
    let stray = record(400.0, "a", 1);
    sink.record(std::slice::from_ref(&stray)).await.unwrap();
    let count = |s: String| async move {
        admin()
            .await
            .query_one(
                &format!("SELECT count(*) FROM \"{s}\".usage_records_default"),
                &[],
            )
            .await
            .unwrap()
            .get::<_, i64>(0)
    };
    assert_eq!(count(s.clone()).await, 1);
    let round = sink.maintain().await.unwrap();
    assert_eq!(
        (round.moved_from_default, round.created),
        (1, 1),
        "{round:?}"
    );
    assert_eq!(count(s.clone()).await, 0);
    let listed: Vec<String> = all(&sink).await.into_iter().map(|r| r.id).collect();
    assert_eq!(listed, vec![stray.id]);
    drop_schema(&s).await;
}

/// While another replica holds the maintenance lock, a round is skipped.
#[tokio::test]
async fn one_replica_maintains_at_a_time() {
    let s = schema("lock");
    let sink = connect(&s, Some(PartitionBy::Day), None).await;
    let other = admin().await;
    let key = format!("tower-usage maintain {s}.usage_records");
    let held: bool = other
        .query_one("SELECT pg_try_advisory_lock(hashtext($1))", &[&key])
        .await
        .unwrap()
        .get(0);
    assert!(held);
    assert!(sink.maintain().await.unwrap().skipped);
    other
        .execute("SELECT pg_advisory_unlock(hashtext($1))", &[&key])
        .await
        .unwrap();
    assert!(!sink.maintain().await.unwrap().skipped);
    drop_schema(&s).await;
}

/// A one-day query reads one partition: the plan names no other.
#[tokio::test]
async fn a_one_day_query_reads_one_partition() {
    let s = schema("prune");
    let sink = connect(&s, Some(PartitionBy::Day), None).await;
    let records: Vec<UsageRecord> = (0..100).map(|i| record(i as f64 / 10.0, "a", i)).collect();
    sink.record(&records).await.unwrap();
    sink.maintain().await.unwrap();
    let day = (OffsetDateTime::now_utc() - time::Duration::days(3)).date();
    let (from, to) = (
        day.midnight().assume_utc(),
        day.next_day().unwrap().midnight().assume_utc(),
    );
    let plan: Vec<String> = admin()
        .await
        .query(
            &format!(
                "EXPLAIN SELECT id FROM \"{s}\".usage_records WHERE consumer = 'a' \
                 AND created_at >= $1 AND created_at < $2 ORDER BY created_at, id LIMIT 101"
            ),
            &[&from, &to],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    let plan = plan.join("\n");
    let name = format!(
        "usage_records_p{:04}{:02}{:02}",
        day.year(),
        day.month() as u8,
        day.day()
    );
    assert!(plan.contains(&name), "{plan}");
    let others = partitions(&s).await.into_iter().filter(|p| *p != name);
    for other in others {
        assert!(
            !plan.contains(&format!("{other} ")) && !plan.contains(&format!("{other}\n")),
            "{other} in\n{plan}"
        );
    }
    drop_schema(&s).await;
}

/// The table tower-usage 5633fb1 wrote (schema version 3: no trace columns,
/// no partitions), restored from `tests/fixtures/postgres_v3/` (made by its
/// `make.rs` with that release): connecting with `partition(Day)` migrates it
/// to version 4 and partitions it, and every one of its 300 records reads
/// back with every field that release showed, as it showed it.
#[tokio::test]
async fn a_table_written_by_the_release_before_is_partitioned_keeping_every_record() {
    use std::io::Read as _;
    let gunzip = |bytes: &[u8]| {
        let mut text = String::new();
        flate2::read::GzDecoder::new(bytes)
            .read_to_string(&mut text)
            .expect("gzip");
        text
    };
    let s = schema("v3");
    let dump = gunzip(include_bytes!("fixtures/postgres_v3/dump.sql.gz"));
    // The dump sets an empty search_path: a connection of its own.
    admin()
        .await
        .batch_execute(&dump.replace("tu_fixture_v3", &s))
        .await
        .expect("restore the version 3 table");
    let version: String = admin()
        .await
        .query_one(
            &format!("SELECT value FROM \"{s}\".usage_records_meta WHERE name = 'schema_version'"),
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(version, "3");
    assert_eq!(relkind(&s, "usage_records").await, "r");

    let sink = connect(&s, Some(PartitionBy::Day), None).await;
    assert_eq!(relkind(&s, "usage_records").await, "p");
    let mut read = all(&sink).await;
    read.sort_by(|a, b| a.id.cmp(&b.id));
    let shown: Vec<serde_json::Value> =
        gunzip(include_bytes!("fixtures/postgres_v3/records.ndjson.gz"))
            .lines()
            .map(|line| serde_json::from_str(line).expect("a record of the fixture"))
            .collect();
    assert_eq!(read.len(), shown.len(), "every record of the old table");
    assert_eq!(read.len(), 300);
    // Both ways: every field that release showed, as it showed it, and no
    // field it did not show (a migration that invented one would be caught).
    for (record, before) in read.iter().zip(&shown) {
        let now = serde_json::to_value(record).unwrap();
        assert_eq!(&now, before, "record {}", record.id);
        assert!(record.trace.is_none(), "{}", record.id);
    }
    // Spread over 41 days: a partition each, none left in DEFAULT.
    let parts = partitions(&s).await;
    assert!(parts.len() >= 41 + 7, "{parts:?}");
    assert_eq!(in_default(&s).await, 0);
    // The migrated table takes new records, traced ones included.
    let mut new = record(0.0, "a", 1);
    new.trace = Some(tower_usage::TraceContext {
        trace_id: "4bf92f3577b34da6a3ce929d0e0e4736".into(),
        span_id: "00f067aa0ba902b7".into(),
    });
    sink.record(std::slice::from_ref(&new))
        .await
        .expect("record");
    let again = all(&sink).await;
    assert_eq!(again.len(), 301);
    assert_eq!(
        again.iter().find(|r| r.id == new.id).unwrap().trace,
        new.trace
    );
    drop_schema(&s).await;
}
