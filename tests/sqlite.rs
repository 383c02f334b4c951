//! `SqliteSink` against a real SQLite file.
#![cfg(feature = "sqlite")]

use std::path::Path;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::{HeaderMap, HeaderValue};
use time::OffsetDateTime;
use tower_usage::sink::{ConsumerScope, Order, PathFilter, StatusFilter};
use tower_usage::{
    CapturedBody, GrpcCall, Outcome, RecordedRequest, SinkErrorKind, SqliteSink, UsagePage,
    UsageQuery, UsageRecord, UsageSink,
};

fn at(ms: i64) -> OffsetDateTime {
    OffsetDateTime::from_unix_timestamp_nanos(i128::from(ms) * 1_000_000).expect("valid millis")
}

fn simple(id: &str, consumer: Option<&str>, ms: i64) -> UsageRecord {
    UsageRecord {
        id: id.into(),
        consumer: consumer.map(Into::into),
        method: "GET".into(),
        path: "/items".into(),
        status: 200,
        created_at: at(ms),
        ..UsageRecord::default()
    }
}

fn rich() -> UsageRecord {
    let mut headers = HeaderMap::new();
    headers.insert("host", HeaderValue::from_static("localhost:9000"));
    headers.append("accept", HeaderValue::from_static("text/html"));
    headers.append("accept", HeaderValue::from_static("application/json"));
    headers.insert("authorization", HeaderValue::from_static("[REDACTED]"));
    headers.insert(
        "x-raw",
        HeaderValue::from_bytes(&[0xfe, b'a', 0xff]).expect("opaque header value"),
    );
    let mut response_headers = HeaderMap::new();
    response_headers.append("set-cookie", HeaderValue::from_static("a=1"));
    response_headers.append("set-cookie", HeaderValue::from_static("b=2"));
    response_headers.insert("content-type", HeaderValue::from_static("application/json"));
    UsageRecord {
        id: "01GPE5J0X7RICHRICHRICHRICH".into(),
        consumer: Some("c-3f9a".into()),
        method: "POST".into(),
        path: "/rest/v1/airdrop/I4WT%20x".into(),
        route: Some("/rest/v1/airdrop/{batchId}".into()),
        request: RecordedRequest {
            body: CapturedBody::truncated(Bytes::from_static(&[0x00, 0xff, 0x10, b'{']), 70_000),
            query: "a=1&b=2&b=3&c=%20x&empty=".into(),
            params: vec![
                ("batchId".into(), "I4WT x".into()),
                ("zeta".into(), "ünïcødé".into()),
            ],
            headers,
        },
        response: CapturedBody::complete(r#"{"id":"I4WT","count":2}"#),
        response_headers,
        status: 207,
        created_at: time::macros::datetime!(2023-01-11 08:07:39.839 UTC),
        duration_us: 1_840_123,
        outcome: Outcome::ClientGone,
        grpc: Some(GrpcCall {
            status: Some(5),
            message: Some("not found: ✓".into()),
            request_messages: 3,
            response_messages: 0,
        }),
        ..UsageRecord::default()
    }
}

/// Every record a query reaches, following `next_cursor` to the end.
async fn all_pages(sink: &SqliteSink, query: &UsageQuery) -> Vec<UsageRecord> {
    let mut query = query.clone();
    let mut out = Vec::new();
    for _ in 0..10_000 {
        let UsagePage {
            records,
            next_cursor,
        } = sink.query(&query).await.expect("query");
        assert!(records.len() <= query.limit.max(1));
        out.extend(records);
        match next_cursor {
            Some(c) => query.cursor = Some(c),
            None => return out,
        }
    }
    panic!("paging never ended");
}

async fn count(sink: &SqliteSink) -> usize {
    all_pages(
        sink,
        &UsageQuery {
            limit: 1000,
            ..UsageQuery::default()
        },
    )
    .await
    .len()
}

/// Polls `cond` for up to 10 s.
async fn eventually<F, Fut>(what: &str, mut cond: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = Instant::now() + Duration::from_secs(10);
    while Instant::now() < deadline {
        if cond().await {
            return;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    panic!("timed out waiting for: {what}");
}

fn set_pragma(path: &Path, pragma: &str, value: i64) {
    let conn = rusqlite::Connection::open(path).expect("open with rusqlite");
    conn.pragma_update(None, pragma, value).expect("set pragma");
}

#[tokio::test]
async fn every_field_round_trips_and_survives_reopening() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("usage.db");
    let original = rich();
    let anonymous = UsageRecord {
        // Not on a millisecond: stored and read back at millisecond precision.
        created_at: at(1_700_000_000_123) + time::Duration::microseconds(456),
        ..simple("01HANONANONANONANONANONANO", None, 0)
    };

    let sink = SqliteSink::open(&path).expect("open");
    assert!(format!("{sink:?}").contains("usage.db"));
    sink.record(&[original.clone(), anonymous.clone()])
        .await
        .expect("record");
    // Recording the same ids again (a retried batch) stores nothing new.
    sink.record(&[original.clone(), anonymous.clone()])
        .await
        .expect("record again");

    let check = |got: Vec<UsageRecord>| {
        assert_eq!(got.len(), 2, "{got:#?}");
        assert_eq!(got[0], original);
        let anon = &got[1];
        assert_eq!(anon.id, anonymous.id);
        assert_eq!(anon.consumer, None);
        assert_eq!(anon.created_at_ms(), 1_700_000_000_123);
        assert_eq!(
            UsageRecord {
                created_at: anonymous.created_at,
                ..anon.clone()
            },
            anonymous
        );
    };
    check(
        sink.query(&UsageQuery::default())
            .await
            .expect("query")
            .records,
    );
    drop(sink);

    let reopened = SqliteSink::open(&path).expect("reopen");
    check(
        reopened
            .query(&UsageQuery::default())
            .await
            .expect("query")
            .records,
    );
}

#[tokio::test]
async fn a_schema_from_a_newer_version_is_refused_and_left_alone() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("usage.db");
    let sink = SqliteSink::open(&path).expect("open");
    sink.record(&[simple("01A", Some("c"), 1)])
        .await
        .expect("record");
    drop(sink);
    set_pragma(&path, "user_version", 99);

    let err = SqliteSink::open(&path).expect_err("newer schema");
    assert_eq!(err.kind(), SinkErrorKind::Corrupt);
    let msg = err.to_string();
    assert!(msg.contains(&path.display().to_string()), "{msg}");
    assert!(msg.contains("99"), "{msg}");

    let conn = rusqlite::Connection::open(&path).expect("open with rusqlite");
    let version: i64 = conn
        .pragma_query_value(None, "user_version", |r| r.get(0))
        .expect("user_version");
    assert_eq!(version, 99);
}

#[tokio::test]
async fn a_version_1_file_is_upgraded_and_keeps_its_records() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("usage.db");
    let sink = SqliteSink::open(&path).expect("open");
    sink.record(&[simple("01A", Some("c"), 1)])
        .await
        .expect("record");
    drop(sink);
    // What version 1 wrote: no `capture` column, no trace.
    let conn = rusqlite::Connection::open(&path).expect("open with rusqlite");
    conn.execute_batch(
        "DROP INDEX usage_records_trace;
         ALTER TABLE usage_records DROP COLUMN trace_id;
         ALTER TABLE usage_records DROP COLUMN span_id;
         ALTER TABLE usage_records DROP COLUMN capture;
         PRAGMA user_version = 1;",
    )
    .expect("make it version 1");
    drop(conn);

    let sink = SqliteSink::open(&path).expect("upgrade");
    let mut noted = simple("01B", Some("c"), 2);
    noted.capture.request_headers_cut = 99;
    noted.trace = Some(tower_usage::TraceContext {
        trace_id: "4bf92f3577b34da6a3ce929d0e0e4736".into(),
        span_id: "00f067aa0ba902b7".into(),
    });
    sink.record(&[noted.clone()]).await.expect("record");
    let page = sink.query(&UsageQuery::default()).await.expect("query");
    assert_eq!(page.records.len(), 2);
    assert!(
        page.records[0].capture.is_empty(),
        "an old row has no notes"
    );
    assert_eq!(page.records[1].capture, noted.capture);
    assert_eq!(page.records[0].trace, None);
    assert_eq!(page.records[1].trace, noted.trace);
    drop(sink);
    let conn = rusqlite::Connection::open(&path).expect("open with rusqlite");
    let version: i64 = conn
        .pragma_query_value(None, "user_version", |r| r.get(0))
        .expect("user_version");
    assert_eq!(version, 3);
}

#[tokio::test]
async fn another_applications_database_is_refused() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("other.db");
    set_pragma(&path, "application_id", 42);
    let err = SqliteSink::open(&path).expect_err("foreign file");
    assert_eq!(err.kind(), SinkErrorKind::Corrupt);
    assert!(err.to_string().contains("other.db"), "{err}");
}

#[tokio::test]
async fn a_database_shared_with_other_tables_gets_its_own_table() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("app.db");
    {
        let conn = rusqlite::Connection::open(&path).expect("open");
        conn.execute_batch(
            "CREATE TABLE accounts (id INTEGER PRIMARY KEY); INSERT INTO accounts VALUES (7);",
        )
        .expect("app schema");
    }
    let sink = SqliteSink::open(&path).expect("open");
    sink.record(&[simple("01A", None, 5)])
        .await
        .expect("record");
    assert_eq!(count(&sink).await, 1);
    let conn = rusqlite::Connection::open(&path).expect("open");
    let n: i64 = conn
        .query_row("SELECT count(*) FROM accounts", [], |r| r.get(0))
        .expect("app table intact");
    assert_eq!(n, 1);
}

#[test]
fn a_corrupt_file_is_an_error_with_the_path() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("garbage.db");
    let garbage: Vec<u8> = (0..8192u32).map(|i| (i * 7 + 13) as u8).collect();
    std::fs::write(&path, &garbage).expect("write garbage");

    let err = SqliteSink::open(&path).expect_err("garbage is not a database");
    assert_eq!(err.kind(), SinkErrorKind::Corrupt);
    assert!(!err.is_temporary());
    assert!(err.to_string().contains("garbage.db"), "{err}");
    assert!(std::error::Error::source(&err).is_some());
    assert_eq!(
        std::fs::read(&path).expect("read"),
        garbage,
        "file untouched"
    );
}

#[test]
fn an_unreachable_path_is_an_error_with_the_path() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("no/such/dir/usage.db");
    let err = SqliteSink::open(&path).expect_err("missing directory");
    assert_eq!(err.kind(), SinkErrorKind::Unavailable);
    assert!(err.to_string().contains("no/such/dir/usage.db"), "{err}");
}

/// A set of records spread over consumers, times, methods, paths and statuses.
fn population() -> Vec<UsageRecord> {
    let consumers = [Some("alice"), Some("bob"), None];
    let paths = [
        "/a%b/1",
        "/aXb/2",
        "/a_c/3",
        "/items",
        "/items/7",
        "/ítems/8",
    ];
    let methods = ["GET", "POST", "DELETE"];
    let statuses = [200, 201, 404, 429, 500];
    (0..90i64)
        .map(|i| {
            let idx = i as usize;
            UsageRecord {
                // Several records share a millisecond: ties are broken by id.
                id: format!("01J{:023}", (i * 37) % 90),
                consumer: consumers[idx % 3].map(Into::into),
                method: methods[(idx / 3) % 3].into(),
                path: paths[idx % paths.len()].into(),
                status: statuses[idx % statuses.len()],
                created_at: at(1_000_000 + (i / 4) * 10),
                ..UsageRecord::default()
            }
        })
        .collect()
}

#[tokio::test]
async fn filters_paging_and_isolation_agree_with_the_query_semantics() {
    let dir = tempfile::tempdir().expect("tempdir");
    let sink = SqliteSink::open(dir.path().join("usage.db")).expect("open");
    let records = population();
    for chunk in records.chunks(7) {
        sink.record(chunk).await.expect("record");
    }

    let scopes = [
        ConsumerScope::All,
        ConsumerScope::Consumer("alice".into()),
        ConsumerScope::Consumer("nobody".into()),
        ConsumerScope::Anonymous,
    ];
    let mut queries = Vec::new();
    for scope in &scopes {
        for order in [Order::Asc, Order::Desc] {
            for limit in [1, 4, 1000] {
                queries.push(UsageQuery {
                    consumer: scope.clone(),
                    order,
                    limit,
                    ..UsageQuery::default()
                });
            }
        }
    }
    let base = UsageQuery {
        limit: 3,
        ..UsageQuery::default()
    };
    for path in ["/a%*", "/a_*", "/items*", "/items", "/í*", "*", "/nothing"] {
        queries.push(UsageQuery {
            path: Some(PathFilter::parse(path)),
            ..base.clone()
        });
    }
    for status in ["4xx", "500", "2XX", "3xx"] {
        queries.push(UsageQuery {
            status: StatusFilter::parse(status),
            ..base.clone()
        });
    }
    queries.push(UsageQuery {
        method: Some("POST".into()),
        consumer: ConsumerScope::Consumer("bob".into()),
        order: Order::Desc,
        ..base.clone()
    });
    queries.push(UsageQuery {
        // Between milliseconds: since rounds up, until excludes its millisecond.
        since: Some(at(1_000_050) + time::Duration::microseconds(1)),
        until: Some(at(1_000_150)),
        ..base.clone()
    });
    queries.push(UsageQuery {
        since: Some(at(1_000_100)),
        order: Order::Desc,
        ..base.clone()
    });

    for q in &queries {
        let mut expected: Vec<UsageRecord> =
            records.iter().filter(|r| q.matches(r)).cloned().collect();
        expected.sort_by(|a, b| q.order.compare(a, b));
        let got = all_pages(&sink, q).await;
        let ids = |v: &[UsageRecord]| v.iter().map(|r| r.id.clone()).collect::<Vec<_>>();
        assert_eq!(ids(&got), ids(&expected), "query {q:?}");
    }
    // The literal `%` and `_` filters really did narrow things down.
    let percent = all_pages(
        &sink,
        &UsageQuery {
            path: Some(PathFilter::parse("/a%*")),
            ..base.clone()
        },
    )
    .await;
    assert!(!percent.is_empty());
    assert!(percent.iter().all(|r| r.path == "/a%b/1"));

    // A cursor is bound to its consumer and order.
    let alice = UsageQuery {
        consumer: ConsumerScope::Consumer("alice".into()),
        limit: 2,
        ..UsageQuery::default()
    };
    let cursor = sink
        .query(&alice)
        .await
        .expect("page")
        .next_cursor
        .expect("more pages");
    for stolen in [
        UsageQuery {
            consumer: ConsumerScope::Consumer("bob".into()),
            cursor: Some(cursor.clone()),
            ..alice.clone()
        },
        UsageQuery {
            order: Order::Desc,
            cursor: Some(cursor.clone()),
            ..alice.clone()
        },
        UsageQuery {
            cursor: Some("not-a-cursor".into()),
            ..alice.clone()
        },
    ] {
        let err = sink.query(&stolen).await.expect_err("foreign cursor");
        assert_eq!(err.kind(), SinkErrorKind::InvalidCursor);
    }
}

#[tokio::test]
async fn retention_keeps_at_most_max_rows_newest_records() {
    let dir = tempfile::tempdir().expect("tempdir");
    let sink = SqliteSink::builder(dir.path().join("usage.db"))
        .max_rows(10)
        .retention_interval(Duration::from_millis(50))
        .open()
        .expect("open");
    let records: Vec<UsageRecord> = (0..25)
        .map(|i| simple(&format!("01R{i:04}"), Some("c"), 1_000 + i))
        .collect();
    for chunk in records.chunks(5) {
        sink.record(chunk).await.expect("record");
    }
    let s = &sink;
    eventually("10 rows left", || async move { count(s).await == 10 }).await;
    let left = all_pages(&sink, &UsageQuery::default()).await;
    assert_eq!(left, records[15..].to_vec());
}

/// A flood from one client (the anonymous one, or one consumer) past
/// `max_rows` deletes its own oldest rows first, down to its quarter: the
/// others keep their history. Without fair share, it deletes everyone's.
#[tokio::test]
async fn retention_by_max_rows_keeps_the_others_history_through_a_flood() {
    for (flooder, fair) in [(None, true), (Some("flood"), true), (None, false)] {
        let dir = tempfile::tempdir().expect("tempdir");
        let sink = SqliteSink::builder(dir.path().join("usage.db"))
            .max_rows(100)
            .fair_share(fair)
            .retention_interval(Duration::from_millis(50))
            .open()
            .expect("open");
        let mut others = Vec::new();
        for i in 0..20 {
            others.push(simple(&format!("01A{i:04}"), Some("alice"), 1_000 + 2 * i));
            others.push(simple(&format!("01B{i:04}"), Some("bob"), 1_001 + 2 * i));
        }
        sink.record(&others).await.expect("record");
        let flood: Vec<UsageRecord> = (0..1_000)
            .map(|i| simple(&format!("01F{i:05}"), flooder, 5_000 + i))
            .collect();
        for chunk in flood.chunks(50) {
            sink.record(chunk).await.expect("record");
        }
        let s = &sink;
        eventually("100 rows left", || async move { count(s).await <= 100 }).await;
        let alice = UsageQuery {
            consumer: ConsumerScope::Consumer("alice".into()),
            limit: 1000,
            ..UsageQuery::default()
        };
        let kept = all_pages(&sink, &alice).await.len();
        if fair {
            assert_eq!(kept, 20, "{flooder:?}");
            let left = all_pages(
                &sink,
                &UsageQuery {
                    limit: 1000,
                    ..UsageQuery::default()
                },
            )
            .await;
            // The flooder's newest rows fill the rest, down to its quarter
            // at least.
            let flooded = left
                .iter()
                .filter(|r| r.consumer.as_deref() == flooder)
                .count();
            assert!((25..=60).contains(&flooded), "{flooded}");
        } else {
            assert_eq!(kept, 0);
        }
    }
}

#[tokio::test]
async fn retention_removes_records_older_than_max_age() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("usage.db");
    let now = (OffsetDateTime::now_utc().unix_timestamp_nanos() / 1_000_000) as i64;
    let hour = 3_600_000;
    let old: Vec<UsageRecord> = (0..1_200)
        .map(|i| simple(&format!("01OLD{i:05}"), Some("c"), now - 2 * hour - i))
        .collect();
    let fresh = simple("01NEW", Some("c"), now);

    // Written without retention, then reopened with it: swept at open.
    let plain = SqliteSink::open(&path).expect("open");
    plain.record(&old[..600]).await.expect("record");
    drop(plain);
    let sink = SqliteSink::builder(&path)
        .max_age(Duration::from_secs(3600))
        .retention_interval(Duration::from_millis(50))
        .open()
        .expect("open");
    sink.record(std::slice::from_ref(&fresh))
        .await
        .expect("record fresh");
    let s = &sink;
    eventually(
        "old rows swept at open",
        || async move { count(s).await == 1 },
    )
    .await;

    // Records that arrive old are swept at the next interval.
    sink.record(&old[600..]).await.expect("record old");
    eventually(
        "old rows swept again",
        || async move { count(s).await == 1 },
    )
    .await;
    let left = all_pages(&sink, &UsageQuery::default()).await;
    assert_eq!(left, vec![fresh]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_record_calls_all_land() {
    let dir = tempfile::tempdir().expect("tempdir");
    let sink = SqliteSink::open(dir.path().join("usage.db")).expect("open");
    let mut tasks = Vec::new();
    for t in 0..8 {
        let sink = sink.clone();
        tasks.push(tokio::spawn(async move {
            for b in 0..25 {
                let batch: Vec<UsageRecord> = (0..4)
                    .map(|i| simple(&format!("01C{t}-{b:03}-{i}"), Some("c"), 1_000 + b))
                    .collect();
                sink.record(&batch).await.expect("record");
                if b % 5 == 0 {
                    sink.query(&UsageQuery::default()).await.expect("query");
                }
            }
        }));
    }
    for task in tasks {
        task.await.expect("task");
    }
    let all = all_pages(
        &sink,
        &UsageQuery {
            limit: 1000,
            ..UsageQuery::default()
        },
    )
    .await;
    assert_eq!(all.len(), 8 * 25 * 4);
    let mut ids: Vec<_> = all.iter().map(|r| &r.id).collect();
    ids.dedup();
    assert_eq!(ids.len(), 800);
}

#[tokio::test]
async fn dropping_the_sink_stops_the_writer_and_closes_the_file() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("usage.db");
    let wal = dir.path().join("usage.db-wal");
    let sink = SqliteSink::open(&path).expect("open");
    let clone = sink.clone();
    sink.record(&[simple("01D", None, 1)])
        .await
        .expect("record");
    clone.query(&UsageQuery::default()).await.expect("query");
    assert!(wal.exists(), "WAL mode keeps a -wal file while open");
    drop(sink);
    assert!(wal.exists(), "a clone keeps the database open");
    drop(clone);
    // SQLite removes the -wal file when the last connection closes: the writer
    // thread has let go of its connection.
    let w = &wal;
    eventually(
        "the writer closes its connection",
        || async move { !w.exists() },
    )
    .await;
    let again = SqliteSink::open(&path).expect("reopen");
    assert_eq!(count(&again).await, 1);
}
