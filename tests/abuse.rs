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
