//! Exports (`GET M?format=ndjson|csv`) through a real axum app on 127.0.0.1:
//! every matching record, more than one page of them, on every shipped sink;
//! parsed back; read from the sink one page at a time; a sink failing
//! mid-stream cuts the body.

mod common;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use axum::Router;
use bytes::Bytes;
use http::{Request, StatusCode};
use http_body_util::BodyExt as _;
use serde_json::Value;
use time::macros::datetime;
use tower_usage::{
    hash_token, CapturedBody, MemorySink, SinkError, UsagePage, UsageQuery, UsageRecord,
    UsageService, UsageSink,
};

use common::{client, full, send, serve};

const TOKEN_A: &str = "token-of-consumer-a";
const TOKEN_B: &str = "token-of-consumer-b";
/// More than two export pages (500 records each).
const RECORDS_A: usize = 1_234;

/// `RECORDS_A` records of consumer A (every fifth a 404, one with awkward
/// bodies for CSV) and 100 of consumer B, a millisecond apart.
fn records() -> Vec<UsageRecord> {
    let base = datetime!(2026-11-28 00:00:00 UTC);
    let (a, b) = (hash_token(TOKEN_A), hash_token(TOKEN_B));
    (0..RECORDS_A + 100)
        .map(|i| {
            let created_at = base + time::Duration::milliseconds(i as i64);
            let mine = i < RECORDS_A;
            let mut r = UsageRecord {
                id: UsageRecord::new_id(created_at),
                consumer: Some(if mine { a.clone() } else { b.clone() }),
                method: if i % 2 == 0 { "GET" } else { "POST" }.into(),
                path: format!("/items/{i}"),
                route: Some("/items/{id}".into()),
                status: if i % 5 == 0 { 404 } else { 200 },
                created_at,
                duration_us: 1000 + i as u64,
                ..UsageRecord::default()
            };
            r.request.query = format!("n={i}");
            r.response = CapturedBody::complete(format!(r#"{{"n":{i}}}"#));
            if i == 7 {
                r.request.body = CapturedBody::complete("a,b \"quoted\"\nnext line");
            }
            r
        })
        .collect()
}

struct Export {
    status: StatusCode,
    headers: http::HeaderMap,
    body: Bytes,
}

async fn export(addr: std::net::SocketAddr, query: &str, token: &str) -> Export {
    let req = Request::get(format!("http://{addr}/v1/usage?{query}"))
        .header("authorization", format!("Bearer {token}"))
        .body(full(""))
        .unwrap();
    let (status, headers, body) = send(req).await;
    Export {
        status,
        headers,
        body,
    }
}

fn ndjson(body: &[u8]) -> Vec<Value> {
    let text = std::str::from_utf8(body).unwrap();
    assert!(text.is_empty() || text.ends_with('\n'), "every line ends");
    text.lines()
        .map(|line| serde_json::from_str(line).unwrap_or_else(|e| panic!("{e}: {line}")))
        .collect()
}

/// NDJSON and CSV exports of `sink`, filled with [`records`].
async fn exports<S: UsageSink + Clone>(sink: S) {
    let all = records();
    sink.record(&all).await.unwrap();
    let mine: Vec<&UsageRecord> = all
        .iter()
        .filter(|r| r.consumer == Some(hash_token(TOKEN_A)))
        .collect();
    let app = Router::new().nest_service("/v1/usage", UsageService::new(sink));
    let addr = serve(app).await;

    // NDJSON: every record of the caller, oldest first, as the list shows them.
    let got = export(addr, "format=ndjson", TOKEN_A).await;
    assert_eq!(got.status, StatusCode::OK);
    assert_eq!(got.headers["content-type"], "application/x-ndjson");
    assert_eq!(got.headers["cache-control"], "no-store");
    assert!(!got.headers.contains_key("content-length"));
    let disposition = got.headers["content-disposition"].to_str().unwrap();
    assert!(
        disposition.starts_with("attachment; filename=\"usage-")
            && disposition.ends_with(".ndjson\""),
        "{disposition}"
    );
    let lines = ndjson(&got.body);
    assert_eq!(lines.len(), RECORDS_A);
    for (line, record) in lines.iter().zip(&mine) {
        assert_eq!(line, &serde_json::to_value(record).unwrap());
    }

    // The list's filters and order apply.
    let got = export(
        addr,
        "format=ndjson&status=4xx&order=desc&method=GET",
        TOKEN_A,
    )
    .await;
    let lines = ndjson(&got.body);
    let expected: Vec<&str> = mine
        .iter()
        .rev()
        .filter(|r| r.status == 404 && r.method == "GET")
        .map(|r| r.id.as_str())
        .collect();
    assert!(expected.len() > 100);
    let ids: Vec<&str> = lines.iter().map(|l| l["id"].as_str().unwrap()).collect();
    assert_eq!(ids, expected);
    // Nothing matches: an empty body.
    let got = export(addr, "format=ndjson&path=/nothing", TOKEN_A).await;
    assert_eq!(got.status, StatusCode::OK);
    assert!(got.body.is_empty());

    // CSV: a header row, then one row per record.
    let got = export(addr, "format=csv", TOKEN_A).await;
    assert_eq!(got.status, StatusCode::OK);
    assert_eq!(
        got.headers["content-type"],
        "text/csv; charset=utf-8; header=present"
    );
    assert!(got.headers["content-disposition"]
        .to_str()
        .unwrap()
        .ends_with(".csv\""));
    let mut csv = csv::Reader::from_reader(&got.body[..]);
    let header: Vec<String> = csv.headers().unwrap().iter().map(str::to_owned).collect();
    assert_eq!(
        header,
        [
            "id",
            "createdAt",
            "consumer",
            "method",
            "path",
            "route",
            "query",
            "status",
            "outcome",
            "durationUs",
            "requestBodySize",
            "requestBodyTruncated",
            "responseSize",
            "responseTruncated",
            "traceId",
            "spanId"
        ]
    );
    let rows: Vec<csv::StringRecord> = csv.records().map(Result::unwrap).collect();
    assert_eq!(rows.len(), RECORDS_A);
    let (row, r) = (&rows[7], mine[7]);
    assert_eq!(&row[0], r.id.as_str());
    assert_eq!(&row[1], "2026-11-28T00:00:00.007Z");
    assert_eq!(&row[2], hash_token(TOKEN_A).as_str());
    assert_eq!(
        (&row[3], &row[4], &row[5], &row[6]),
        ("POST", "/items/7", "/items/{id}", "n=7")
    );
    assert_eq!((&row[7], &row[8], &row[9]), ("200", "complete", "1007"));
    assert_eq!(
        (&row[10], &row[11], &row[12], &row[13]),
        ("22", "false", "7", "false")
    );

    // bodies=true: two more columns, each body as the list renders it.
    let got = export(addr, "format=csv&bodies=true&path=/items/7", TOKEN_A).await;
    let mut csv = csv::Reader::from_reader(&got.body[..]);
    assert_eq!(csv.headers().unwrap().len(), 18);
    assert_eq!(&csv.headers().unwrap()[16], "requestBody");
    let rows: Vec<csv::StringRecord> = csv.records().map(Result::unwrap).collect();
    assert_eq!(rows.len(), 1);
    assert_eq!(
        serde_json::from_str::<Value>(&rows[0][16]).unwrap(),
        "a,b \"quoted\"\nnext line"
    );
    assert_eq!(
        serde_json::from_str::<Value>(&rows[0][17]).unwrap(),
        serde_json::json!({"n": 7})
    );

    // Consumer B sees only its own.
    assert_eq!(
        ndjson(&export(addr, "format=ndjson", TOKEN_B).await.body).len(),
        100
    );
}

#[tokio::test]
async fn exports_on_memory_sink() {
    exports(MemorySink::new()).await;
}

#[cfg(feature = "sqlite")]
#[tokio::test]
async fn exports_on_sqlite_sink() {
    let dir = tempfile::tempdir().unwrap();
    exports(tower_usage::SqliteSink::open(dir.path().join("usage.db")).unwrap()).await;
}

#[cfg(feature = "postgres")]
#[tokio::test]
async fn exports_on_postgres_sink() {
    let url = std::env::var("TOWER_USAGE_POSTGRES_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/test".to_owned());
    let schema = format!("tu_{:016x}", fastrand::u64(..));
    let sink = tower_usage::PostgresSink::builder()
        .schema(&schema)
        .pool_size(2)
        .connect(&url)
        .await
        .unwrap_or_else(|e| panic!("PostgreSQL at {url} (TOWER_USAGE_POSTGRES_URL): {e}"));
    exports(sink).await;
    let (client, conn) = tokio_postgres::connect(&url, tokio_postgres::NoTls)
        .await
        .unwrap();
    tokio::spawn(conn);
    client
        .batch_execute(&format!("DROP SCHEMA \"{schema}\" CASCADE"))
        .await
        .unwrap();
}

#[tokio::test]
async fn paging_and_format_parameters_do_not_mix() {
    let addr =
        serve(Router::new().nest_service("/v1/usage", UsageService::new(MemorySink::new()))).await;
    for (query, parameter) in [
        ("format=ndjson&limit=10", "limit"),
        ("format=csv&cursor=abc", "cursor"),
        ("bodies=true", "bodies"),
        ("format=ndjson&bodies=true", "bodies"),
        ("format=xml", "format"),
        ("format=csv&bodies=1", "bodies"),
    ] {
        let got = export(addr, query, TOKEN_A).await;
        assert_eq!(got.status, StatusCode::BAD_REQUEST, "{query}");
        let json: Value = serde_json::from_slice(&got.body).unwrap();
        assert_eq!(json["parameter"], parameter, "{query}");
    }
}

/// Counts queries and their limits; fails every query after `fail_after`.
#[derive(Clone)]
struct Watched {
    inner: MemorySink,
    queries: Arc<AtomicUsize>,
    limits: Arc<Mutex<Vec<usize>>>,
    fail_after: usize,
}

#[async_trait::async_trait]
impl UsageSink for Watched {
    async fn record(&self, batch: &[UsageRecord]) -> Result<(), SinkError> {
        self.inner.record(batch).await
    }

    async fn query(&self, query: &UsageQuery) -> Result<UsagePage, SinkError> {
        let n = self.queries.fetch_add(1, Ordering::SeqCst);
        self.limits.lock().unwrap().push(query.limit);
        if n >= self.fail_after {
            return Err(SinkError::unavailable(std::io::Error::other(
                "disk on fire",
            )));
        }
        self.inner.query(query).await
    }
}

async fn watched(fail_after: usize) -> (Watched, std::net::SocketAddr) {
    let sink = Watched {
        inner: MemorySink::new(),
        queries: Arc::default(),
        limits: Arc::default(),
        fail_after,
    };
    sink.record(&records()).await.unwrap();
    let addr =
        serve(Router::new().nest_service("/v1/usage", UsageService::new(sink.clone()))).await;
    (sink, addr)
}

#[tokio::test]
async fn an_export_reads_one_page_at_a_time_as_it_is_sent() {
    // Over the network: every record, in pages of 500.
    let (sink, addr) = watched(usize::MAX).await;
    let got = export(addr, "format=ndjson", TOKEN_A).await;
    assert_eq!(ndjson(&got.body).len(), RECORDS_A);
    // 500, 500, 234: three pages, each asked for with a limit of 500.
    assert_eq!(*sink.limits.lock().unwrap(), [500, 500, 500]);

    // The body itself (what the server polls): the first page is read before
    // the head, each next one only when the frame before it was taken. So the
    // export holds one page, however many records match; the server's write
    // buffer and the socket decide how far ahead of the client it runs.
    use tower::ServiceExt as _;
    sink.queries.store(0, Ordering::SeqCst);
    let req = Request::get("/?format=ndjson")
        .header("authorization", format!("Bearer {TOKEN_A}"))
        .body(())
        .unwrap();
    let res = UsageService::new(sink.clone()).oneshot(req).await.unwrap();
    assert_eq!(sink.queries.load(Ordering::SeqCst), 1);
    let mut body = res.into_body();
    let mut lines = Vec::new();
    for page in 1..=3 {
        let frame = body.frame().await.unwrap().unwrap();
        assert_eq!(sink.queries.load(Ordering::SeqCst), page, "page {page}");
        lines.push(
            frame
                .into_data()
                .unwrap()
                .iter()
                .filter(|b| **b == b'\n')
                .count(),
        );
    }
    assert!(body.frame().await.is_none());
    assert_eq!(lines, [500, 500, 234]);
    assert_eq!(sink.queries.load(Ordering::SeqCst), 3);
}

#[tokio::test]
async fn a_sink_failing_mid_stream_cuts_the_body() {
    let (_, addr) = watched(2).await;
    let req = Request::get(format!("http://{addr}/v1/usage?format=csv"))
        .header("authorization", format!("Bearer {TOKEN_A}"))
        .body(full(""))
        .unwrap();
    // The server may have sent the head before the failure, or not (when
    // the pages before it fit in its write buffer): either way the client
    // sees an error, never a complete-looking file.
    let err = match client().request(req).await {
        Err(err) => err.to_string(),
        Ok(res) => {
            assert_eq!(res.status(), StatusCode::OK);
            let cut = res.into_body().collect().await;
            cut.expect_err("a cut body, not a complete file")
                .to_string()
        }
    };
    eprintln!("the client saw: {err}");

    // Failing at once: a status, not a cut body.
    let (_, addr) = watched(0).await;
    let got = export(addr, "format=ndjson", TOKEN_A).await;
    assert_eq!(got.status, StatusCode::SERVICE_UNAVAILABLE);
    let json: Value = serde_json::from_slice(&got.body).unwrap();
    assert_eq!(json["error"], "usage storage is unavailable");
}

#[tokio::test]
async fn head_of_an_export_reads_one_page_and_sends_no_body() {
    let (sink, addr) = watched(usize::MAX).await;
    let req = Request::head(format!("http://{addr}/v1/usage?format=csv"))
        .header("authorization", format!("Bearer {TOKEN_A}"))
        .body(full(""))
        .unwrap();
    let (status, headers, body) = send(req).await;
    assert_eq!(status, StatusCode::OK);
    assert!(body.is_empty());
    assert!(headers["content-type"]
        .to_str()
        .unwrap()
        .starts_with("text/csv"));
    assert_eq!(sink.queries.load(Ordering::SeqCst), 1);
}

/// Large records: a frame ends after about 256 KiB, whatever the page holds,
/// so the export holds the page in hand and one frame.
#[tokio::test]
async fn frames_stay_small_when_records_are_large() {
    use tower::ServiceExt as _;
    let sink = MemorySink::with_limits(10_000, 1 << 30);
    let big = "x".repeat(20 * 1024);
    let mut all = records();
    for r in &mut all {
        r.response = CapturedBody::complete(big.clone());
    }
    sink.record(&all).await.unwrap();
    for (format, per_record) in [("ndjson", 20 * 1024), ("csv&bodies=true", 20 * 1024)] {
        let req = Request::get(format!("/?format={format}"))
            .header("authorization", format!("Bearer {TOKEN_A}"))
            .body(())
            .unwrap();
        let res = UsageService::new(sink.clone()).oneshot(req).await.unwrap();
        let mut body = res.into_body();
        let (mut frames, mut bytes) = (0, Vec::new());
        while let Some(frame) = body.frame().await {
            let data = frame.unwrap().into_data().unwrap();
            assert!(
                data.len() <= 256 * 1024 + 2 * per_record,
                "{format}: a frame of {} bytes",
                data.len()
            );
            frames += 1;
            bytes.extend_from_slice(&data);
        }
        assert!(frames > 90, "{format}: {frames} frames");
        let records = match format {
            "ndjson" => ndjson(&bytes).len(),
            _ => csv::Reader::from_reader(&bytes[..]).records().count(),
        };
        assert_eq!(records, RECORDS_A, "{format}");
    }
    // Nothing matches: a CSV is its header row.
    let addr = serve(Router::new().nest_service("/v1/usage", UsageService::new(sink))).await;
    let got = export(addr, "format=csv&path=/nothing", TOKEN_A).await;
    let text = String::from_utf8(got.body.to_vec()).unwrap();
    assert!(
        text.starts_with("id,createdAt,") && text.lines().count() == 1,
        "{text}"
    );
}
