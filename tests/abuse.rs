//! The usage endpoint under abuse (issue 25, and 24 2e): what one consumer can
//! do to the others, the server and an admin's export, through a real axum
//! app on 127.0.0.1, each row of the issue a test.

mod common;

use std::time::Duration;

use axum::Router;
use bytes::Bytes;
use http::{Request, StatusCode};
use serde_json::Value;
use tower_usage::{hash_token, CapturedBody, MemorySink, UsageRecord, UsageService, UsageSink};

use common::{full, send, serve};

const TOKEN_A: &str = "token-of-consumer-a";

fn record_of(consumer: &str, at_ms: i64) -> UsageRecord {
    let created_at = time::OffsetDateTime::now_utc() - time::Duration::hours(1)
        + time::Duration::milliseconds(at_ms);
    UsageRecord {
        id: UsageRecord::new_id(created_at),
        consumer: Some(consumer.to_owned()),
        method: "POST".into(),
        path: "/items".into(),
        status: 200,
        created_at,
        ..UsageRecord::default()
    }
}

async fn get(
    addr: std::net::SocketAddr,
    path_and_query: &str,
    token: &str,
) -> (StatusCode, http::HeaderMap, Bytes) {
    let req = Request::get(format!("http://{addr}{path_and_query}"))
        .header("authorization", format!("Bearer {token}"))
        .body(full(""))
        .unwrap();
    send(req).await
}

/// Row e: a JSON body whose text spans lines, one of them a complete record
/// naming another consumer, is one NDJSON line, and no line parses as a
/// forged record.
#[tokio::test]
async fn an_ndjson_line_is_exactly_one_record_whatever_the_body_holds() {
    let sink = MemorySink::new();
    let a = hash_token(TOKEN_A);
    let forged = r#"{"id":"01FORGED0000000000000000000","consumer":"victim","method":"DELETE","path":"/admin","status":200,"createdAt":"2026-01-01T00:00:00.000Z"}"#;
    let mut r = record_of(&a, 0);
    r.request.body = CapturedBody::complete(format!(
        "{{\"note\":\r\n{forged}\n,\"x\":\n\"line\\nbreak\"}}"
    ));
    r.response = CapturedBody::complete("[1,\n2]");
    sink.record(&[r.clone()]).await.unwrap();
    let addr = serve(Router::new().nest_service("/v1/usage", UsageService::new(sink))).await;

    let (status, _, body) = get(addr, "/v1/usage?format=ndjson", TOKEN_A).await;
    assert_eq!(status, StatusCode::OK);
    let text = std::str::from_utf8(&body).unwrap();
    assert!(!text.contains('\r'), "{text}");
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.len(), 1, "one record, one line: {text}");
    let line: Value = serde_json::from_str(lines[0]).unwrap();
    assert_eq!(line["id"], r.id.as_str());
    // The values are as they were: only whitespace between tokens went.
    assert_eq!(line["request"]["body"]["note"]["consumer"], "victim");
    assert_eq!(line["request"]["body"]["x"], "line\nbreak");
    assert_eq!(line["response"], serde_json::json!([1, 2]));
    // The page shows the same values.
    let (_, _, page) = get(addr, "/v1/usage", TOKEN_A).await;
    let page: Value = serde_json::from_slice(&page).unwrap();
    assert_eq!(page["requests"][0], line);
}

/// Issue 24 row 2e: CSV cells a spreadsheet would run as formulas are
/// written with a `'` in front; the opt-out writes them as they are.
#[tokio::test]
async fn csv_cells_that_start_a_formula_are_neutralised() {
    let sink = MemorySink::new();
    let evil = [
        "=HYPERLINK(\"http://evil/\",\"x\")",
        "+1+1",
        "-2+3",
        "@SUM(A1)",
        "\tTAB",
        "\rCR",
    ];
    let mut records = Vec::new();
    for (i, value) in evil.iter().enumerate() {
        let mut r = record_of(&hash_token(TOKEN_A), i as i64);
        r.request.query = (*value).to_owned();
        r.route = Some((*value).to_owned());
        r.method = "GET".into();
        r.request.body = CapturedBody::complete(*value);
        records.push(r);
    }
    // Harmless neighbours stay exactly as they were.
    let mut plain = record_of(&hash_token(TOKEN_A), 100);
    plain.request.query = "a=-1&b=@c".into();
    plain.route = Some("/items/{id}".into());
    records.push(plain);
    sink.record(&records).await.unwrap();

    for (guard, prefix) in [(true, "'"), (false, "")] {
        let service = UsageService::new(sink.clone()).csv_formula_guard(guard);
        let addr = serve(Router::new().nest_service("/v1/usage", service)).await;
        let (status, _, body) = get(addr, "/v1/usage?format=csv&bodies=true", TOKEN_A).await;
        assert_eq!(status, StatusCode::OK);
        let mut csv = csv::ReaderBuilder::new().from_reader(&body[..]);
        let header = csv.headers().unwrap().clone();
        let col = |name: &str| header.iter().position(|h| h == name).unwrap();
        let rows: Vec<csv::StringRecord> = csv.records().map(Result::unwrap).collect();
        assert_eq!(rows.len(), evil.len() + 1);
        for (row, value) in rows.iter().zip(evil) {
            assert_eq!(
                &row[col("query")],
                format!("{prefix}{value}"),
                "guard {guard}"
            );
            assert_eq!(
                &row[col("route")],
                format!("{prefix}{value}"),
                "guard {guard}"
            );
            // A text body is shown as a JSON string: it starts with `"`.
            let body: Value = serde_json::from_str(&row[col("requestBody")]).unwrap();
            assert_eq!(body, Value::String((*value).to_owned()));
        }
        let last = &rows[evil.len()];
        assert_eq!(&last[col("query")], "a=-1&b=@c");
        assert_eq!(&last[col("route")], "/items/{id}");
        assert_eq!(&last[col("path")], "/items");
    }
}

/// Row i: every file `SqliteSink` writes is owner-only, whatever the umask
/// (the usual 022 would make them 0644).
#[cfg(all(unix, feature = "sqlite"))]
#[tokio::test]
async fn sqlite_files_are_owner_only() {
    use std::os::unix::fs::PermissionsExt as _;

    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("usage.db");
    let sink = tower_usage::SqliteSink::open(&path).unwrap();
    let layer_sink = sink.clone();
    let app = Router::new()
        .route("/hello", axum::routing::get(|| async { "hi" }))
        .layer(tower_usage::UsageLayer::new(layer_sink))
        .nest_service("/v1/usage", UsageService::new(sink.clone()));
    let addr = serve(app).await;
    let (status, _, _) = get(addr, "/hello", TOKEN_A).await;
    assert_eq!(status, StatusCode::OK);
    sink.record(&[record_of("x", 0)]).await.unwrap();
    let (status, _, _) = get(addr, "/v1/usage", TOKEN_A).await;
    assert_eq!(status, StatusCode::OK);

    let mode = |p: &std::path::Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
    let wal = dir.path().join("usage.db-wal");
    let shm = dir.path().join("usage.db-shm");
    assert!(
        wal.exists() && shm.exists(),
        "WAL mode keeps both while open"
    );
    for p in [&path, &wal, &shm] {
        assert_eq!(mode(p), 0o600, "{}", p.display());
    }
    // A file that exists keeps its mode: the operator chose it.
    let other = dir.path().join("shared.db");
    std::fs::write(&other, b"").unwrap();
    std::fs::set_permissions(&other, std::fs::Permissions::from_mode(0o640)).unwrap();
    let shared = tower_usage::SqliteSink::open(&other).unwrap();
    shared.record(&[record_of("x", 0)]).await.unwrap();
    assert_eq!(mode(&other), 0o640);
    let _ = Duration::ZERO;
}

/// A raw connection that sends a request, reads the response's status line
/// and then nothing more: a client that stopped reading after the headers.
async fn stalled(
    addr: std::net::SocketAddr,
    path_and_query: &str,
    token: &str,
) -> tokio::net::TcpStream {
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
    let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    let req = format!(
        "GET {path_and_query} HTTP/1.1\r\nhost: {addr}\r\nauthorization: Bearer {token}\r\n\r\n"
    );
    stream.write_all(req.as_bytes()).await.unwrap();
    let mut head = [0u8; 12];
    stream.read_exact(&mut head).await.unwrap();
    assert_eq!(&head, b"HTTP/1.1 200", "the export started");
    stream
}

/// The start of a body, for a failure message.
fn shown(body: &[u8]) -> String {
    String::from_utf8_lossy(&body[..body.len().min(200)]).into_owned()
}

/// Big records for consumer `token`: 64 KiB bodies each way.
fn big_records(token: &str, n: usize) -> Vec<UsageRecord> {
    (0..n)
        .map(|i| {
            let mut r = record_of(&hash_token(token), i as i64);
            r.request.body = CapturedBody::complete(vec![b'q'; 64 * 1024]);
            r.response = CapturedBody::complete(vec![b'r'; 64 * 1024]);
            r
        })
        .collect()
}

/// Row a: exports are bounded in number (one more is `503` with
/// `Retry-After`), and an export whose client stops reading gives its slot
/// back after the write timeout.
#[tokio::test]
async fn exports_are_bounded_and_a_stalled_client_gives_its_slot_back() {
    let sink = MemorySink::with_limits(10_000, 512 * 1024 * 1024);
    let tokens = ["t-one", "t-two", "t-three"];
    for token in tokens {
        // ~32 MiB each: far more than the sockets' buffers hold.
        sink.record(&big_records(token, 256)).await.unwrap();
    }
    let service = UsageService::new(sink)
        .max_exports(2)
        .export_write_timeout(Duration::from_secs(2));
    let addr = serve(Router::new().nest_service("/v1/usage", service)).await;

    let _one = stalled(addr, "/v1/usage?format=ndjson", tokens[0]).await;
    let _two = stalled(addr, "/v1/usage?format=csv&bodies=true", tokens[1]).await;
    let (status, headers, body) = get(addr, "/v1/usage?format=ndjson", tokens[2]).await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{}", shown(&body));
    assert_eq!(headers["retry-after"], "5");
    let error: Value = serde_json::from_slice(&body).unwrap();
    assert!(
        error["error"].as_str().unwrap().contains("exports"),
        "{error}"
    );
    // A page is not an export: it is served meanwhile.
    let (status, _, _) = get(addr, "/v1/usage?limit=1", tokens[2]).await;
    assert_eq!(status, StatusCode::OK);

    // The stalled ones are cut after the write timeout: a new export runs,
    // and is whole.
    let mut status = StatusCode::SERVICE_UNAVAILABLE;
    let mut body = Bytes::new();
    for _ in 0..100 {
        tokio::time::sleep(Duration::from_millis(100)).await;
        (status, _, body) = get(addr, "/v1/usage?format=ndjson", tokens[2]).await;
        if status == StatusCode::OK {
            break;
        }
    }
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body.iter().filter(|b| **b == b'\n').count(), 256);
}

/// Row b: a page asks the sink for its byte budget, and the shipped sinks
/// read no more than that: with 128 KiB records, `limit=1000` comes back in
/// pages of about 1 MiB, every record once.
#[tokio::test]
async fn a_page_is_bounded_in_bytes_where_the_sink_reads_it() {
    let sink = MemorySink::with_limits(10_000, 512 * 1024 * 1024);
    sink.record(&big_records(TOKEN_A, 40)).await.unwrap();
    let probe = BudgetProbe {
        inner: sink.clone(),
        seen: Default::default(),
    };
    let addr =
        serve(Router::new().nest_service("/v1/usage", UsageService::new(probe.clone()))).await;
    let mut ids = Vec::new();
    let mut cursor: Option<String> = None;
    loop {
        let q = match &cursor {
            None => "/v1/usage?limit=1000".to_owned(),
            Some(c) => format!("/v1/usage?limit=1000&cursor={c}"),
        };
        let (status, _, body) = get(addr, &q, TOKEN_A).await;
        assert_eq!(status, StatusCode::OK);
        assert!(body.len() <= 1024 * 1024 + 300 * 1024, "{}", body.len());
        let page: Value = serde_json::from_slice(&body).unwrap();
        let records = page["requests"].as_array().unwrap();
        assert!(records.len() <= 8, "{}", records.len());
        ids.extend(records.iter().map(|r| r["id"].as_str().unwrap().to_owned()));
        match page["nextCursor"].as_str() {
            Some(c) => cursor = Some(c.to_owned()),
            None => break,
        }
    }
    assert_eq!(ids.len(), 40);
    ids.dedup();
    assert_eq!(ids.len(), 40);
    // The sink was asked with the budget, and answered within it (plus the
    // one record that passed it).
    let seen = probe.seen.lock().unwrap().clone();
    assert!(!seen.is_empty());
    for (budget, loaded) in seen {
        assert_eq!(budget, Some(1024 * 1024));
        assert!(loaded <= 9, "the sink loaded {loaded} records");
    }
}

/// A page query's byte budget, and how many records the sink loaded for it.
type Seen = (Option<usize>, usize);

/// A sink that notes the byte budget of each page query and how many records
/// the inner sink loaded for it.
#[derive(Clone)]
struct BudgetProbe {
    inner: MemorySink,
    seen: std::sync::Arc<std::sync::Mutex<Vec<Seen>>>,
}

#[async_trait::async_trait]
impl UsageSink for BudgetProbe {
    async fn record(&self, batch: &[UsageRecord]) -> Result<(), tower_usage::SinkError> {
        self.inner.record(batch).await
    }
    async fn query(
        &self,
        query: &tower_usage::UsageQuery,
    ) -> Result<tower_usage::UsagePage, tower_usage::SinkError> {
        let page = self.inner.query(query).await?;
        // What the sink read: the page, plus the record it cut (when cut).
        let loaded = page.records.len() + usize::from(page.next_cursor.is_some());
        self.seen.lock().unwrap().push((query.max_bytes, loaded));
        Ok(page)
    }
}

/// Row c: a `MemorySink` summary scans off the application's workers: on a
/// runtime with one thread, an unrelated request is answered while a large
/// summary is being counted.
#[tokio::test(flavor = "current_thread")]
async fn a_memory_sink_summary_does_not_hold_the_runtime() {
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::Arc;

    let sink = MemorySink::with_capacity(400_000);
    let a = hash_token(TOKEN_A);
    let batch: Vec<UsageRecord> = (0..300_000).map(|i| record_of(&a, i / 8)).collect();
    sink.record(&batch).await.unwrap();
    let app = Router::new()
        .route("/ping", axum::routing::get(|| async { "pong" }))
        .nest_service("/v1/usage", UsageService::new(sink));
    let addr = serve(app).await;

    let order = Arc::new(AtomicUsize::new(0));
    let summary_done = {
        let order = Arc::clone(&order);
        tokio::spawn(async move {
            let q = "/v1/usage/summary?interval=minute&groupBy=route,method,status,outcome";
            let (status, _, _) = get(addr, q, TOKEN_A).await;
            assert_eq!(status, StatusCode::OK);
            order.fetch_add(1, Ordering::SeqCst)
        })
    };
    // Let the summary reach the sink.
    tokio::time::sleep(Duration::from_millis(20)).await;
    let (status, _, _) = get(addr, "/ping", TOKEN_B_PING).await;
    assert_eq!(status, StatusCode::OK);
    let ping_done = order.fetch_add(1, Ordering::SeqCst);
    let summary_done = summary_done.await.unwrap();
    assert!(
        ping_done < summary_done,
        "the ping waited for the summary: it ran on the only worker"
    );
}

const TOKEN_B_PING: &str = "token-of-consumer-b";

/// Row c/d: one consumer's reads are limited (one more is `429` with
/// `Retry-After`), so the others still get theirs.
#[tokio::test]
async fn one_consumer_cannot_take_every_read() {
    let sink = BlockingSink::default();
    let service = UsageService::new(sink.clone()).max_reads_per_consumer(2);
    let addr = serve(Router::new().nest_service("/v1/usage", service)).await;
    let held: Vec<_> = (0..2)
        .map(|_| tokio::spawn(async move { get(addr, "/v1/usage/summary", TOKEN_A).await.0 }))
        .collect();
    sink.wait_for(2).await;
    let (status, headers, body) = get(addr, "/v1/usage", TOKEN_A).await;
    assert_eq!(status, StatusCode::TOO_MANY_REQUESTS, "{}", shown(&body));
    assert_eq!(headers["retry-after"], "1");
    assert_eq!(headers["content-type"], "application/json");
    let error: Value = serde_json::from_slice(&body).unwrap();
    assert!(
        error["error"].as_str().unwrap().contains("at most 2"),
        "{error}"
    );
    // Another consumer is served.
    sink.open();
    let (status, _, _) = get(addr, "/v1/usage", TOKEN_B_PING).await;
    assert_eq!(status, StatusCode::OK);
    for h in held {
        assert_eq!(h.await.unwrap(), StatusCode::OK);
    }
    // Slots come back: A is served again.
    let (status, _, _) = get(addr, "/v1/usage", TOKEN_A).await;
    assert_eq!(status, StatusCode::OK);
}

/// A sink whose summaries wait until it is opened.
#[derive(Clone, Default)]
struct BlockingSink {
    waiting: std::sync::Arc<std::sync::atomic::AtomicUsize>,
    gate: std::sync::Arc<tokio::sync::Notify>,
    opened: std::sync::Arc<std::sync::atomic::AtomicBool>,
}

impl BlockingSink {
    async fn wait_for(&self, n: usize) {
        while self.waiting.load(std::sync::atomic::Ordering::SeqCst) < n {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }
    fn open(&self) {
        self.opened.store(true, std::sync::atomic::Ordering::SeqCst);
        self.gate.notify_waiters();
    }
}

#[async_trait::async_trait]
impl UsageSink for BlockingSink {
    async fn record(&self, _: &[UsageRecord]) -> Result<(), tower_usage::SinkError> {
        Ok(())
    }
    async fn query(
        &self,
        _: &tower_usage::UsageQuery,
    ) -> Result<tower_usage::UsagePage, tower_usage::SinkError> {
        Ok(tower_usage::UsagePage::default())
    }
    async fn summarize(
        &self,
        query: &tower_usage::sink::SummaryQuery,
    ) -> Result<tower_usage::sink::UsageSummary, tower_usage::SinkError> {
        let notified = self.gate.notified();
        self.waiting
            .fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        if !self.opened.load(std::sync::atomic::Ordering::SeqCst) {
            notified.await;
        }
        tower_usage::sink::UsageSummary::new(query, Vec::new(), Default::default())
    }
}

/// Row f: a flood of requests under invented bearer tokens, recorded by the
/// layer, does not evict the history of the consumers that were there before.
#[tokio::test]
async fn invented_consumers_cannot_evict_the_established_ones() {
    let sink = MemorySink::with_capacity(100);
    let layer = tower_usage::UsageLayer::new(sink.clone());
    let handle = layer.handle();
    let app = Router::new()
        .route("/items", axum::routing::get(|| async { "items" }))
        .route(
            "/private",
            axum::routing::get(|| async { StatusCode::UNAUTHORIZED }),
        )
        .layer(layer)
        .nest_service("/v1/usage", UsageService::new(sink.clone()));
    let addr = serve(app).await;
    for i in 0..100 {
        let token = if i % 2 == 0 { TOKEN_A } else { TOKEN_B_PING };
        assert_eq!(get(addr, "/items", token).await.0, StatusCode::OK);
    }
    handle.flush().await;
    assert_eq!(sink.len(), 100);
    // The flood: a fresh token per request, on a public route and on one
    // that answers 401.
    for i in 0..600 {
        let token = format!("invented-{i}-{}", fastrand::u64(..));
        let path = if i % 2 == 0 { "/items" } else { "/private" };
        get(addr, path, &token).await;
    }
    handle.flush().await;
    let count = |token: &'static str| async move {
        let (_, _, body) = get(addr, "/v1/usage?limit=1000", token).await;
        let page: Value = serde_json::from_slice(&body).unwrap();
        page["requests"].as_array().unwrap().len()
    };
    let (a, b) = (count(TOKEN_A).await, count(TOKEN_B_PING).await);
    assert!(
        a + b >= 75,
        "a {a}, b {b}: the flood took more than its quarter"
    );
}

/// Row g: a consumer's `completeUntil` says nothing of when another
/// consumer's request arrived: it is rounded down to the minute.
#[tokio::test]
async fn complete_until_tells_a_consumer_nothing_of_the_others() {
    let sink = MemorySink::new();
    // The writer is not running: B's capture stays queued, the oldest.
    let (layer, _worker) = tower_usage::UsageLayer::new(sink.clone()).pair();
    let handle = layer.handle();
    let usage = UsageService::new(sink).recorder(handle.clone());
    let app = Router::new()
        .route("/items", axum::routing::get(|| async { "items" }))
        .layer(layer)
        .nest_service("/v1/usage", usage);
    let addr = serve(app).await;
    assert_eq!(get(addr, "/items", TOKEN_B_PING).await.0, StatusCode::OK);
    let arrival = handle.complete_until().expect("B's capture is queued");

    let (status, _, body) = get(addr, "/v1/usage/summary", TOKEN_A).await;
    assert_eq!(status, StatusCode::OK);
    let summary: Value = serde_json::from_slice(&body).unwrap();
    let shown = time::OffsetDateTime::parse(
        summary["completeUntil"].as_str().unwrap(),
        &time::format_description::well_known::Rfc3339,
    )
    .unwrap();
    assert!(shown <= arrival, "{summary}");
    assert_eq!((shown.second(), shown.millisecond()), (0, 0), "{summary}");
    assert!(arrival - shown < time::Duration::minutes(1), "{summary}");
}

/// Row h: for `GET M/{id}`, another consumer's id and a made-up one get the
/// very same answer (the sink takes the same steps for both: see the
/// `MemorySink` unit test; the timing is measured ad hoc, see
/// benches/README.md).
#[tokio::test]
async fn an_id_of_another_consumer_answers_as_a_made_up_one() {
    let sink = MemorySink::new();
    let theirs = record_of(&hash_token(TOKEN_B_PING), 0);
    let made_up = UsageRecord::new_id(theirs.created_at);
    sink.record(std::slice::from_ref(&theirs)).await.unwrap();
    let addr = serve(Router::new().nest_service("/v1/usage", UsageService::new(sink))).await;
    let (s1, mut h1, b1) = get(addr, &format!("/v1/usage/{}", theirs.id), TOKEN_A).await;
    let (s2, mut h2, b2) = get(addr, &format!("/v1/usage/{made_up}"), TOKEN_A).await;
    assert_eq!(s1, StatusCode::NOT_FOUND);
    h1.remove("date");
    h2.remove("date");
    assert_eq!((s1, h1, b1), (s2, h2, b2));
    let (s3, _, _) = get(addr, &format!("/v1/usage/{}", theirs.id), TOKEN_B_PING).await;
    assert_eq!(s3, StatusCode::OK);
}

/// Row d: when `query_timeout` fires, a SQLite read is interrupted, not left
/// running: with one read connection, a heavy summary of A that timed out
/// does not keep B waiting.
#[cfg(feature = "sqlite")]
#[tokio::test]
async fn a_timed_out_sqlite_read_is_interrupted() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("usage.db");
    let sink = tower_usage::SqliteSink::builder(&path)
        .read_connections(1)
        .open()
        .unwrap();
    sink.record(&[record_of(&hash_token(TOKEN_B_PING), 0)])
        .await
        .unwrap();
    // A million rows of A, written straight into the file.
    let a = hash_token(TOKEN_A);
    let now_ms = time::OffsetDateTime::now_utc().unix_timestamp() * 1000;
    let conn = rusqlite::Connection::open(&path).unwrap();
    conn.execute(
        "WITH RECURSIVE n(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM n WHERE x < 1000000)
         INSERT INTO usage_records (id, consumer, created_at, method, path, route, status,
             duration_us, outcome, query, params, req_headers, resp_headers, req_body,
             req_body_size, req_body_truncated, resp_body, resp_body_size, resp_body_truncated)
         SELECT printf('X%025d', x), ?1, ?2 - x * 50, 'GET', '/items/' || (x % 1000),
             '/items/{id}', 200 + (x % 4) * 100, x % 100000, 'complete', '', '[]', '[]', '[]',
             x'', 0, 0, x'', 0, 0
         FROM n",
        rusqlite::params![a, now_ms],
    )
    .unwrap();
    conn.execute_batch("PRAGMA wal_checkpoint(TRUNCATE)")
        .unwrap();
    drop(conn);

    let addr = heavy_summary_times_out(sink, Duration::from_millis(1000)).await;
    // Right after: B's small read gets the one connection.
    let (status, _, body) = get(addr, "/v1/usage", TOKEN_B_PING).await;
    assert_eq!(status, StatusCode::OK, "{}", shown(&body));
    let page: Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(page["requests"].as_array().unwrap().len(), 1);
}

/// Row f, `SqliteSink` with `max_rows`: a flood of invented consumers (first
/// seen while the table is full) keeps to its quarter; the consumers that
/// were there before keep the rest.
#[cfg(feature = "sqlite")]
#[tokio::test]
async fn invented_consumers_cannot_delete_the_established_ones_from_sqlite() {
    let dir = tempfile::tempdir().unwrap();
    let sink = tower_usage::SqliteSink::builder(dir.path().join("usage.db"))
        .max_rows(100)
        .open()
        .unwrap();
    let (a, b) = (hash_token(TOKEN_A), hash_token(TOKEN_B_PING));
    let before: Vec<UsageRecord> = (0..100)
        .map(|i| record_of(if i % 2 == 0 { &a } else { &b }, i))
        .collect();
    sink.record(&before).await.unwrap();
    for chunk in 0..100 {
        let batch: Vec<UsageRecord> = (0..20)
            .map(|i| {
                let n = chunk * 20 + i;
                record_of(&format!("invented-{n}"), 1_000 + n)
            })
            .collect();
        sink.record(&batch).await.unwrap();
    }
    let addr =
        serve(Router::new().nest_service("/v1/usage", UsageService::new(sink.clone()))).await;
    let count = |token: &'static str| async move {
        let (_, _, body) = get(addr, "/v1/usage?limit=1000", token).await;
        let page: Value = serde_json::from_slice(&body).unwrap();
        page["requests"].as_array().unwrap().len()
    };
    // Retention runs on the writer between batches: give it a moment.
    let mut kept = (0, 0);
    for _ in 0..200 {
        tokio::time::sleep(Duration::from_millis(50)).await;
        kept = (count(TOKEN_A).await, count(TOKEN_B_PING).await);
        let total = sink
            .query(&tower_usage::UsageQuery {
                limit: 1000,
                ..Default::default()
            })
            .await
            .unwrap()
            .records
            .len();
        if total <= 100 {
            break;
        }
    }
    assert!(kept.0 + kept.1 >= 75, "a {}, b {}", kept.0, kept.1);
}

/// Row d, PostgreSQL: when `query_timeout` fires, the statement is cancelled
/// on the server, not left running on a pooled connection.
#[cfg(feature = "postgres")]
#[tokio::test]
async fn a_timed_out_postgres_statement_is_cancelled() {
    let schema = format!("abuse_cancel_{}", fastrand::u32(..));
    let url = std::env::var("TOWER_USAGE_POSTGRES_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/test".to_owned());
    let sink = tower_usage::PostgresSink::builder()
        .schema(&schema)
        .connect(&url)
        .await
        .unwrap();
    let a = hash_token(TOKEN_A);
    {
        let client = sink.pool().get().await.unwrap();
        client
            .execute(
                &format!(
                    "INSERT INTO {schema}.usage_records (id, consumer, created_at, method, path,
                         route, status, duration_us, outcome, query, params, req_headers,
                         resp_headers, req_body, req_body_size, req_body_truncated, resp_body,
                         resp_body_size, resp_body_truncated)
                     SELECT lpad(x::text, 26, '0'), $1, now() - x * interval '20 ms', 'GET',
                         '/items/' || (x % 1000), '/items/{{id}}', 200 + (x % 4) * 100,
                         x % 100000, 'complete', '', '[]', '[]', '[]', '', 0, false, '', 0, false
                     FROM generate_series(1, 3000000) x"
                ),
                &[&a],
            )
            .await
            .unwrap();
        client
            .batch_execute(&format!("ANALYZE {schema}.usage_records"))
            .await
            .unwrap();
    }
    // A connection of its own: not one of the sink's pool, which could be
    // the very connection the abandoned statement still runs on.
    let (probe, connection) = tokio_postgres::connect(&url, tokio_postgres::NoTls)
        .await
        .unwrap();
    tokio::spawn(connection);
    let probe = std::sync::Arc::new(probe);
    let active = |probe: std::sync::Arc<tokio_postgres::Client>, schema: String| async move {
        let row = probe
            .query_one(
                "SELECT count(*) FROM pg_stat_activity WHERE state = 'active' \
                 AND pid <> pg_backend_pid() AND query LIKE '%' || $1 || '%'",
                &[&schema],
            )
            .await
            .unwrap();
        row.get::<_, i64>(0)
    };
    heavy_summary_times_out(sink.clone(), Duration::from_millis(300)).await;
    let mut still = 1;
    for _ in 0..200 {
        still = active(std::sync::Arc::clone(&probe), schema.clone()).await;
        if still == 0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(still, 0, "the abandoned summary still runs on the server");

    // The same summary, waited for, takes far longer than the 2 s above: left
    // running, it would have been seen.
    let started = std::time::Instant::now();
    let query = tower_usage::sink::SummaryQuery {
        consumer: tower_usage::sink::ConsumerScope::Consumer(a),
        since: time::OffsetDateTime::now_utc() - time::Duration::hours(24),
        until: time::OffsetDateTime::now_utc(),
        interval: tower_usage::sink::Interval::Hour,
        group_by: tower_usage::sink::GroupBy::parse("route,method,status,outcome").unwrap(),
        ..Default::default()
    };
    sink.summarize(&query).await.unwrap();
    let took = started.elapsed();
    let client = sink.pool().get().await.unwrap();
    client
        .batch_execute(&format!("DROP SCHEMA {schema} CASCADE"))
        .await
        .unwrap();
    assert!(took > Duration::from_secs(2), "the summary took {took:?}");
}

/// Serves `sink` with `timeout`, and asks it for A's summary by every group
/// key: `503`, the query is meant to take longer. Returns the address.
#[cfg(any(feature = "sqlite", feature = "postgres"))]
async fn heavy_summary_times_out<S: UsageSink + Clone>(
    sink: S,
    timeout: Duration,
) -> std::net::SocketAddr {
    let service = UsageService::new(sink).query_timeout(timeout);
    let addr = serve(Router::new().nest_service("/v1/usage", service)).await;
    let q = "/v1/usage/summary?interval=hour&groupBy=route,method,status,outcome";
    let (status, _, _) = get(addr, q, TOKEN_A).await;
    assert_eq!(
        status,
        StatusCode::SERVICE_UNAVAILABLE,
        "meant to take longer"
    );
    addr
}

/// Row b, every shipped sink: pages read with a byte budget end at it (the
/// first record always kept) and follow on with their cursor, so that every
/// record comes exactly once, in order, in both orders.
#[tokio::test]
async fn every_sink_pages_within_a_byte_budget_without_losing_a_record() {
    let records = big_records(TOKEN_A, 20);
    let memory = MemorySink::with_limits(1_000, 512 * 1024 * 1024);
    check_budget_pages("memory", memory, &records).await;
    #[cfg(feature = "sqlite")]
    {
        let dir = tempfile::tempdir().unwrap();
        let sqlite = tower_usage::SqliteSink::open(dir.path().join("usage.db")).unwrap();
        check_budget_pages("sqlite", sqlite, &records).await;
    }
    #[cfg(feature = "postgres")]
    {
        let schema = format!("abuse_budget_{}", fastrand::u32(..));
        let url = std::env::var("TOWER_USAGE_POSTGRES_URL")
            .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/test".to_owned());
        let pg = tower_usage::PostgresSink::builder()
            .schema(&schema)
            .connect(&url)
            .await
            .unwrap();
        check_budget_pages("postgres", pg.clone(), &records).await;
        let client = pg.pool().get().await.unwrap();
        client
            .batch_execute(&format!("DROP SCHEMA {schema} CASCADE"))
            .await
            .unwrap();
    }
}

async fn check_budget_pages<S: UsageSink>(name: &str, sink: S, records: &[UsageRecord]) {
    sink.record(records).await.unwrap();
    for order in [
        tower_usage::sink::Order::Asc,
        tower_usage::sink::Order::Desc,
    ] {
        let mut query = tower_usage::UsageQuery {
            consumer: tower_usage::sink::ConsumerScope::Consumer(hash_token(TOKEN_A)),
            limit: 1000,
            order,
            // Two and a half records of 128 KiB.
            max_bytes: Some(320 * 1024),
            ..Default::default()
        };
        let mut ids = Vec::new();
        loop {
            let page = sink.query(&query).await.unwrap();
            assert!(
                (1..=3).contains(&page.records.len()),
                "{name}: {} records",
                page.records.len()
            );
            ids.extend(page.records.into_iter().map(|r| r.id));
            match page.next_cursor {
                Some(c) => query.cursor = Some(c),
                None => break,
            }
        }
        let mut want: Vec<String> = records.iter().map(|r| r.id.clone()).collect();
        if order == tower_usage::sink::Order::Desc {
            want.reverse();
        }
        assert_eq!(ids, want, "{name} {order:?}");
    }
}
