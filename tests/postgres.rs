//! `PostgresSink` against a real server.
//!
//! The server is `TOWER_USAGE_POSTGRES_URL`, by default
//! `postgres://postgres@127.0.0.1:5432/test`. Each test works in a schema of its
//! own (`tu_<random>`), dropped at its end, so runs do not collide. These tests
//! fail, never skip, when the server is down.
#![cfg(feature = "postgres")]

use std::time::{Duration, Instant};

use bytes::Bytes;
use http::{HeaderMap, HeaderValue};
use time::OffsetDateTime;
use tower_usage::sink::postgres::deadpool_postgres;
use tower_usage::sink::{ConsumerScope, Order, PathFilter, StatusFilter, UsageQuery};
use tower_usage::{
    CapturedBody, GrpcCall, Outcome, PostgresSink, RecordedRequest, SinkErrorKind, UsageRecord,
    UsageSink,
};

const DEFAULT_URL: &str = "postgres://postgres@127.0.0.1:5432/test";

fn url() -> String {
    std::env::var("TOWER_USAGE_POSTGRES_URL").unwrap_or_else(|_| DEFAULT_URL.to_owned())
}

/// `url` with `key=value` appended to its query string.
fn with_param(url: &str, key: &str, value: &str) -> String {
    let sep = if url.contains('?') { '&' } else { '?' };
    format!("{url}{sep}{key}={value}")
}

/// A schema of the test's own, and a plain connection to inspect the server.
struct TestDb {
    schema: String,
    admin: tokio_postgres::Client,
}

impl TestDb {
    async fn new() -> Self {
        let url = url();
        let (admin, conn) = match tokio_postgres::connect(&url, tokio_postgres::NoTls).await {
            Ok(pair) => pair,
            Err(e) => panic!(
                "PostgreSQL is not reachable at {url} ({e}). These tests need a server: start \
                 it with `pg_ctlcluster --skip-systemctl-redirect $(ls /etc/postgresql) main \
                 start`, or point TOWER_USAGE_POSTGRES_URL at one \
                 (default {DEFAULT_URL})."
            ),
        };
        tokio::spawn(async move {
            let _ = conn.await;
        });
        Self {
            schema: format!("tu_{:016x}", fastrand::u64(..)),
            admin,
        }
    }

    /// A URL whose connections are tagged with this test's schema, so that a test
    /// can terminate its own connections without touching anyone else's.
    fn url(&self) -> String {
        with_param(&url(), "application_name", &self.schema)
    }

    async fn sink(&self) -> PostgresSink {
        PostgresSink::builder()
            .schema(&self.schema)
            .pool_size(2)
            .connect(&self.url())
            .await
            .expect("connect")
    }

    async fn count(&self) -> i64 {
        let sql = format!("SELECT count(*) FROM \"{}\".usage_records", self.schema);
        self.admin.query_one(&sql, &[]).await.unwrap().get(0)
    }

    async fn drop_schema(self) {
        let sql = format!("DROP SCHEMA IF EXISTS \"{}\" CASCADE", self.schema);
        self.admin.batch_execute(&sql).await.unwrap();
    }
}

fn at(ms: i64) -> OffsetDateTime {
    time::OffsetDateTime::from_unix_timestamp_nanos(i128::from(1_700_000_000_000 + ms) * 1_000_000)
        .unwrap()
}

fn rec(consumer: Option<&str>, ms: i64) -> UsageRecord {
    let created_at = at(ms);
    UsageRecord {
        id: UsageRecord::new_id(created_at),
        consumer: consumer.map(str::to_owned),
        method: "GET".into(),
        path: "/".into(),
        status: 200,
        created_at,
        ..UsageRecord::default()
    }
}

fn rich() -> UsageRecord {
    let mut req_headers = HeaderMap::new();
    req_headers.insert("host", HeaderValue::from_static("localhost:9000"));
    req_headers.append("accept", HeaderValue::from_static("text/html"));
    req_headers.append("accept", HeaderValue::from_static("application/json"));
    req_headers.insert("authorization", HeaderValue::from_static("[REDACTED]"));
    req_headers.insert(
        "x-raw",
        HeaderValue::from_bytes(&[0xff, b'a', 0x80]).unwrap(),
    );
    let mut resp_headers = HeaderMap::new();
    resp_headers.append("set-cookie", HeaderValue::from_static("[REDACTED]"));
    resp_headers.append("content-type", HeaderValue::from_static("application/grpc"));
    let created_at = time::macros::datetime!(2023-01-11 08:07:39.839 UTC);
    UsageRecord {
        id: UsageRecord::new_id(created_at),
        consumer: Some("c-0123456789abcdef".into()),
        method: "POST".into(),
        path: "/rest/v1/airdrop/I4WT%20gq".into(),
        route: Some("/rest/v1/airdrop/{batchId}".into()),
        request: RecordedRequest {
            body: CapturedBody::truncated(r#"{"sequential":fal"#, 70_000),
            query: "a=1&b=2&b=3&c=%20x".into(),
            params: vec![
                ("batchId".into(), "I4WT gq".into()),
                ("other".into(), "é/ü".into()),
            ],
            headers: req_headers,
        },
        response: CapturedBody::complete(Bytes::from_static(&[0, 159, 146, 150, 255])),
        response_headers: resp_headers,
        status: 418,
        created_at,
        duration_us: 1_840_123_456,
        outcome: Outcome::ClientGone,
        grpc: Some(GrpcCall {
            status: Some(5),
            message: Some("not here".into()),
            request_messages: 3,
            response_messages: 7,
        }),
        ..UsageRecord::default()
    }
}

async fn all(sink: &PostgresSink, mut q: UsageQuery) -> Vec<UsageRecord> {
    let mut out = Vec::new();
    loop {
        let page = sink.query(&q).await.expect("query");
        assert!(page.records.len() <= q.limit);
        out.extend(page.records);
        match page.next_cursor {
            Some(c) => q.cursor = Some(c),
            None => return out,
        }
    }
}

#[tokio::test]
async fn every_field_round_trips() {
    let db = TestDb::new().await;
    let sink = db.sink().await;
    let full = rich();
    let mut bare = rec(None, 0);
    bare.method = "DELETE".into();
    sink.record(&[full.clone(), bare.clone()]).await.unwrap();

    let q = UsageQuery {
        consumer: ConsumerScope::Consumer(full.consumer.clone().unwrap()),
        ..UsageQuery::default()
    };
    let page = sink.query(&q).await.unwrap();
    assert_eq!(page.records, vec![full.clone()]);
    assert_eq!(page.next_cursor, None);
    // The wire form is the same too (headers render joined, bodies by content).
    assert_eq!(
        serde_json::to_value(&page.records[0]).unwrap(),
        serde_json::to_value(&full).unwrap()
    );

    let anon = UsageQuery {
        consumer: ConsumerScope::Anonymous,
        ..UsageQuery::default()
    };
    assert_eq!(sink.query(&anon).await.unwrap().records, vec![bare]);
    db.drop_schema().await;
}

#[tokio::test]
async fn sub_millisecond_times_are_stored_as_milliseconds() {
    let db = TestDb::new().await;
    let sink = db.sink().await;
    let mut r = rec(Some("a"), 0);
    r.created_at += Duration::from_micros(999);
    sink.record(std::slice::from_ref(&r)).await.unwrap();
    let got = sink.query(&UsageQuery::default()).await.unwrap().records;
    assert_eq!(got[0].created_at, at(0));
    db.drop_schema().await;
}

#[tokio::test]
async fn nul_characters_are_stored_as_replacement_characters() {
    let db = TestDb::new().await;
    let sink = db.sink().await;
    let mut r = rec(Some("a"), 0);
    r.request.params = vec![("id".into(), "x\0y".into())];
    r.grpc = Some(GrpcCall {
        message: Some("bad\0".into()),
        ..GrpcCall::default()
    });
    sink.record(std::slice::from_ref(&r)).await.unwrap();
    let got = sink.query(&UsageQuery::default()).await.unwrap().records;
    assert_eq!(
        got[0].request.params,
        vec![("id".into(), "x\u{fffd}y".into())]
    );
    assert_eq!(
        got[0].grpc.as_ref().unwrap().message.as_deref(),
        Some("bad\u{fffd}")
    );
    db.drop_schema().await;
}

#[tokio::test]
async fn migrate_is_idempotent() {
    let db = TestDb::new().await;
    let sink = db.sink().await;
    sink.record(&[rec(Some("a"), 0)]).await.unwrap();
    sink.migrate().await.unwrap();
    sink.migrate().await.unwrap();
    let again = db.sink().await;
    assert_eq!(all(&again, UsageQuery::default()).await.len(), 1);
    let version: String = db
        .admin
        .query_one(
            &format!(
                "SELECT value FROM \"{}\".usage_records_meta WHERE name = 'schema_version'",
                db.schema
            ),
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(version, "4");
    db.drop_schema().await;
}

/// A version 1 table (before `toast_tuple_target`) is brought to version 2, and
/// its records stay readable.
#[tokio::test]
async fn a_version_1_table_is_upgraded() {
    let db = TestDb::new().await;
    let sink = db.sink().await;
    sink.record(&[rec(Some("a"), 0)]).await.unwrap();
    let table = format!("\"{}\".usage_records", db.schema);
    db.admin
        .batch_execute(&format!(
            "ALTER TABLE {table} RESET (toast_tuple_target); \
             ALTER TABLE {table} DROP COLUMN capture; \
             ALTER TABLE {table} DROP COLUMN trace_id; \
             ALTER TABLE {table} DROP COLUMN span_id; \
             UPDATE \"{}\".usage_records_meta SET value = '1' WHERE name = 'schema_version'",
            db.schema
        ))
        .await
        .unwrap();
    sink.migrate().await.unwrap();
    let row = db
        .admin
        .query_one(
            &format!(
                "SELECT (SELECT value FROM \"{}\".usage_records_meta WHERE name = 'schema_version'), \
                 (SELECT array_to_string(reloptions, ',') FROM pg_class WHERE oid = '{table}'::regclass)",
                db.schema
            ),
            &[],
        )
        .await
        .unwrap();
    let (version, options): (String, Option<String>) = (row.get(0), row.get(1));
    assert_eq!(version, "4");
    assert_eq!(options.as_deref(), Some("toast_tuple_target=8160"));
    assert_eq!(all(&sink, UsageQuery::default()).await.len(), 1);
    db.drop_schema().await;
}

#[tokio::test]
async fn a_newer_schema_is_refused() {
    let db = TestDb::new().await;
    let sink = db.sink().await;
    db.admin
        .execute(
            &format!(
                "UPDATE \"{}\".usage_records_meta SET value = '5' WHERE name = 'schema_version'",
                db.schema
            ),
            &[],
        )
        .await
        .unwrap();
    let err = sink.migrate().await.unwrap_err();
    assert_eq!(err.kind(), SinkErrorKind::Corrupt);
    assert!(!err.is_temporary());
    assert!(err.to_string().contains("newer"), "{err}");
    let err = PostgresSink::builder()
        .schema(&db.schema)
        .connect(&db.url())
        .await
        .unwrap_err();
    assert_eq!(err.kind(), SinkErrorKind::Corrupt, "{err}");
    db.drop_schema().await;
}

#[tokio::test]
async fn invalid_identifiers_are_rejected() {
    let pool = {
        let mut cfg = deadpool_postgres::Config::new();
        cfg.url = Some(url());
        cfg.create_pool(
            Some(deadpool_postgres::Runtime::Tokio1),
            tokio_postgres::NoTls,
        )
        .unwrap()
    };
    let long = "x".repeat(64);
    for bad in [
        "",
        "1abc",
        "a-b",
        "a b",
        "x\"; DROP TABLE y; --",
        "é",
        &long,
    ] {
        let err = PostgresSink::builder()
            .table(bad)
            .connect(&url())
            .await
            .unwrap_err();
        assert_eq!(err.kind(), SinkErrorKind::Config, "table {bad:?}");
        assert!(err.to_string().contains("table name"), "{err}");
        let err = PostgresSink::builder()
            .schema(bad)
            .from_pool(pool.clone())
            .unwrap_err();
        assert_eq!(err.kind(), SinkErrorKind::Config, "schema {bad:?}");
    }
    // Quoting keeps names case-sensitive and accepts the full 63 bytes.
    let db = TestDb::new().await;
    let table = format!("T{}", "x".repeat(62));
    let sink = PostgresSink::builder()
        .schema(&db.schema)
        .table(&table)
        .from_pool(pool)
        .unwrap();
    sink.migrate().await.unwrap();
    sink.record(&[rec(None, 0)]).await.unwrap();
    assert_eq!(
        sink.query(&UsageQuery::default())
            .await
            .unwrap()
            .records
            .len(),
        1
    );
    assert_eq!(sink.table(), table);
    db.drop_schema().await;
}

#[tokio::test]
async fn filters_paging_and_isolation() {
    let db = TestDb::new().await;
    let sink = db.sink().await;
    let mut records = Vec::new();
    let paths = ["/a/1", "/a/2", "/a%b", "/a_b", "/b", "/A/1"];
    let methods = ["GET", "POST", "get"];
    let statuses = [200, 201, 404, 418, 500, 302];
    for i in 0..60i64 {
        let consumer = match i % 3 {
            0 => Some("alice"),
            1 => Some("bob"),
            _ => None,
        };
        // Several records share a millisecond: ties are ordered by id.
        let mut r = rec(consumer, i / 4);
        r.path = paths[i as usize % paths.len()].into();
        r.method = methods[i as usize % methods.len()].into();
        r.status = statuses[i as usize % statuses.len()];
        records.push(r);
    }
    for chunk in records.chunks(7) {
        sink.record(chunk).await.unwrap();
    }

    let queries = [
        UsageQuery::default(),
        UsageQuery {
            consumer: ConsumerScope::Consumer("alice".into()),
            ..UsageQuery::default()
        },
        UsageQuery {
            consumer: ConsumerScope::Anonymous,
            order: Order::Desc,
            ..UsageQuery::default()
        },
        UsageQuery {
            consumer: ConsumerScope::Consumer("nobody".into()),
            ..UsageQuery::default()
        },
        UsageQuery {
            since: Some(at(3)),
            until: Some(at(9)),
            ..UsageQuery::default()
        },
        UsageQuery {
            method: Some("GET".into()),
            status: StatusFilter::parse("4xx"),
            ..UsageQuery::default()
        },
        UsageQuery {
            path: Some(PathFilter::parse("/a/*")),
            ..UsageQuery::default()
        },
        // `%` and `_` are not wildcards.
        UsageQuery {
            path: Some(PathFilter::parse("/a%*")),
            ..UsageQuery::default()
        },
        UsageQuery {
            path: Some(PathFilter::parse("/a_b")),
            status: StatusFilter::parse("418"),
            ..UsageQuery::default()
        },
        UsageQuery {
            consumer: ConsumerScope::Consumer("bob".into()),
            path: Some(PathFilter::parse("/*")),
            since: Some(at(2)),
            order: Order::Desc,
            ..UsageQuery::default()
        },
    ];
    for q in queries {
        let mut expected: Vec<UsageRecord> =
            records.iter().filter(|r| q.matches(r)).cloned().collect();
        expected.sort_by(|a, b| q.order.compare(a, b));
        for limit in [1, 3, 100] {
            let q = UsageQuery { limit, ..q.clone() };
            assert_eq!(all(&sink, q.clone()).await, expected, "{q:?}");
        }
    }
    // The prefix filter found the literal `%`.
    let pct = UsageQuery {
        path: Some(PathFilter::parse("/a%*")),
        ..UsageQuery::default()
    };
    assert!(sink
        .query(&pct)
        .await
        .unwrap()
        .records
        .iter()
        .all(|r| r.path == "/a%b"));

    // A cursor is bound to its consumer and order, and forged ones are refused.
    let alice = UsageQuery {
        consumer: ConsumerScope::Consumer("alice".into()),
        limit: 2,
        ..UsageQuery::default()
    };
    let cursor = sink.query(&alice).await.unwrap().next_cursor.unwrap();
    for q in [
        UsageQuery {
            consumer: ConsumerScope::Consumer("bob".into()),
            cursor: Some(cursor.clone()),
            ..UsageQuery::default()
        },
        UsageQuery {
            order: Order::Desc,
            cursor: Some(cursor.clone()),
            ..alice.clone()
        },
        UsageQuery {
            cursor: Some("MS5hLjEwMDAuZm9vLjAxWA".into()),
            ..alice.clone()
        },
    ] {
        let err = sink.query(&q).await.unwrap_err();
        assert_eq!(err.kind(), SinkErrorKind::InvalidCursor);
        assert!(!err.to_string().contains(&db.schema), "{err}");
    }
    db.drop_schema().await;
}

#[tokio::test]
async fn duplicate_ids_are_ignored() {
    let db = TestDb::new().await;
    let sink = db.sink().await;
    let a = rec(Some("a"), 0);
    let b = rec(Some("a"), 1);
    sink.record(&[a.clone(), b.clone()]).await.unwrap();
    // The writer retrying a batch, and a batch that repeats an id.
    sink.record(&[a.clone(), b.clone()]).await.unwrap();
    let mut changed = a.clone();
    changed.status = 500;
    sink.record(&[changed.clone(), changed, rec(Some("a"), 2)])
        .await
        .unwrap();
    assert_eq!(db.count().await, 3);
    let got = all(&sink, UsageQuery::default()).await;
    assert_eq!(got[0], a, "the first write wins");
    db.drop_schema().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_pools_write_the_same_table_at_once() {
    let db = TestDb::new().await;
    // Both migrate at once, too.
    let (one, two) = tokio::join!(db.sink(), db.sink());
    let write = |sink: PostgresSink, consumer: &'static str| async move {
        let mut mine = Vec::new();
        for i in 0..20 {
            let batch: Vec<UsageRecord> =
                (0..25).map(|j| rec(Some(consumer), i * 25 + j)).collect();
            sink.record(&batch).await.unwrap();
            mine.extend(batch);
        }
        mine
    };
    let (a, b) = tokio::join!(
        tokio::spawn(write(one.clone(), "one")),
        tokio::spawn(write(two.clone(), "two"))
    );
    let mut expected: Vec<UsageRecord> = a.unwrap().into_iter().chain(b.unwrap()).collect();
    expected.sort_by(|x, y| Order::Asc.compare(x, y));
    let q = UsageQuery {
        limit: 137,
        ..UsageQuery::default()
    };
    assert_eq!(all(&one, q.clone()).await, expected);
    assert_eq!(all(&two, q).await, expected);
    db.drop_schema().await;
}

/// Terminates the connections of this test's sink from another connection (only
/// those: other tests run at the same time), and returns how many there were.
/// Returns once they are gone: a terminated backend exits a moment later, and
/// until then it would be counted again by the next call.
async fn terminate_backends(db: &TestDb) -> i64 {
    let terminated = db
        .admin
        .query_one(
            "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity \
             WHERE datname = current_database() AND pid <> pg_backend_pid() \
             AND application_name = $1",
            &[&db.schema],
        )
        .await
        .unwrap()
        .get(0);
    for _ in 0..500 {
        let left: i64 = db
            .admin
            .query_one(
                "SELECT count(*) FROM pg_stat_activity \
                 WHERE datname = current_database() AND application_name = $1",
                &[&db.schema],
            )
            .await
            .unwrap()
            .get(0);
        if left == 0 {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
    terminated
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_pool_recovers_after_its_connections_are_terminated() {
    let db = TestDb::new().await;
    let sink = db.sink().await;
    let mut n = 0;
    for round in 0..3 {
        // Fill the pool (size 2) with open connections.
        {
            let pool = sink.pool();
            let (c1, c2) = tokio::join!(pool.get(), pool.get());
            drop((c1.unwrap(), c2.unwrap()));
        }
        assert_eq!(terminate_backends(&db).await, 2, "round {round}");
        // No waiting: the pool's connections may still look open.
        let mut failures = 0;
        for _ in 0..3 {
            n += 1;
            let batch = [rec(Some("a"), n)];
            if let Err(e) = sink.record(&batch).await {
                failures += 1;
                assert_eq!(e.kind(), SinkErrorKind::Unavailable, "{e:?}");
                assert!(e.is_temporary());
                sink.record(&batch).await.expect("the retry succeeds");
            }
        }
        assert!(failures <= 1, "round {round}: {failures} failed writes");
        // Reads recover the same way.
        assert_eq!(terminate_backends(&db).await, 1, "round {round}");
        let q = UsageQuery::default();
        let page = match sink.query(&q).await {
            Ok(page) => page,
            Err(e) => {
                assert_eq!(e.kind(), SinkErrorKind::Unavailable, "{e:?}");
                sink.query(&q).await.expect("the retry succeeds")
            }
        };
        assert_eq!(page.records.len(), n as usize);
    }
    db.drop_schema().await;
}

#[tokio::test]
async fn an_unreachable_server_is_a_temporary_error() {
    // Nothing listens on port 1 of the loopback interface.
    let err = PostgresSink::builder()
        .timeout(Duration::from_secs(2))
        .connect("postgres://postgres:s3cret@127.0.0.1:1/test")
        .await
        .unwrap_err();
    assert_eq!(err.kind(), SinkErrorKind::Unavailable, "{err:?}");
    assert!(err.is_temporary());
    assert!(!format!("{err:?}").contains("s3cret"));
}

#[tokio::test]
async fn debug_hides_the_password() {
    let db = TestDb::new().await;
    let url = db.url();
    // The same URL with the password `s3cret` (trust auth ignores it), whatever
    // password the configured URL had.
    let (scheme, rest) = url.split_once("://").expect("a URL with a scheme");
    let (user, host) = rest.split_once('@').expect("a URL naming a user");
    let user = user.split(':').next().unwrap_or(user);
    let with_password = format!("{scheme}://{user}:s3cret@{host}");
    assert!(with_password.contains(":s3cret@"), "{with_password}");
    let sink = PostgresSink::builder()
        .schema(&db.schema)
        .connect(&with_password)
        .await
        .unwrap();
    let debug = format!("{sink:?}");
    assert!(!debug.contains("s3cret"), "{debug}");
    assert!(!debug.contains("://"), "{debug}");
    assert!(
        debug.contains("127.0.0.1:5432") || !url.contains("127.0.0.1"),
        "{debug}"
    );
    assert!(debug.contains(&db.schema), "{debug}");
    assert!(debug.contains("usage_records"), "{debug}");
    db.drop_schema().await;
}

/// Write throughput, ~1 KiB request and response bodies (see "Writes" in the
/// module docs of `tower_usage::sink::postgres` for the figures):
/// `cargo test --release --features postgres --test postgres -- --ignored --nocapture write_throughput`
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore]
async fn write_throughput() {
    let db = TestDb::new().await;
    // Random text, so that the server cannot compress it away.
    let body = |n: usize| {
        let text: String = (0..n).map(|_| fastrand::alphanumeric()).collect();
        Bytes::from(serde_json::to_vec(&serde_json::json!({ "data": text })).unwrap())
    };
    let total = 16_384usize;
    let mut n = 0i64;
    for round in 0..2 {
        for size in [64usize, 512, 4096] {
            let sink = PostgresSink::builder()
                .schema(&db.schema)
                .table(format!("bench_{size}_{round}"))
                .pool_size(1)
                .connect(&db.url())
                .await
                .unwrap();
            let batches: Vec<Vec<UsageRecord>> = (0..=total / size)
                .map(|_| {
                    (0..size)
                        .map(|_| {
                            n += 1;
                            let mut r = rich();
                            r.created_at = at(n);
                            r.id = UsageRecord::new_id(r.created_at);
                            r.request.body = CapturedBody::complete(body(1000));
                            r.response = CapturedBody::complete(body(1000));
                            r
                        })
                        .collect()
                })
                .collect();
            // The first batch warms up the connection and the statement cache.
            sink.record(&batches[0]).await.unwrap();
            let start = Instant::now();
            for batch in &batches[1..] {
                sink.record(batch).await.unwrap();
            }
            let secs = start.elapsed().as_secs_f64();
            let timed = batches.len() - 1;
            println!(
                "round {round} batch {size:>5}: {:>7.0} records/s, {:>7.2} ms/batch",
                (timed * size) as f64 / secs,
                secs * 1000.0 / timed as f64,
            );
        }
    }
    db.drop_schema().await;
}

#[tokio::test]
async fn a_corrupt_row_is_a_corrupt_error_naming_the_record() {
    let db = TestDb::new().await;
    let sink = db.sink().await;
    let r = rec(Some("a"), 1);
    sink.record(std::slice::from_ref(&r)).await.unwrap();
    db.admin
        .execute(
            &format!(
                "UPDATE \"{}\".usage_records SET req_headers = '\"not an array\"'::jsonb",
                db.schema
            ),
            &[],
        )
        .await
        .unwrap();
    let err = sink.query(&UsageQuery::default()).await.unwrap_err();
    assert_eq!(err.kind(), SinkErrorKind::Corrupt, "{err}");
    assert!(err.to_string().contains(&r.id), "{err}");
    assert!(err.to_string().contains("not an array"), "{err}");
    db.drop_schema().await;
}
