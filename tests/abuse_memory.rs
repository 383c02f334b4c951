//! The usage endpoint under abuse, by memory (issue 25 a and b): what 20
//! concurrent large pages and 40 stalled exports cost the server, measured
//! as the growth of this process's peak resident set (`VmHWM` in
//! `/proc/self/status`, reset through `/proc/self/clear_refs`), with
//! generous margins. One test in its own binary, so nothing else runs
//! beside it. The figures are in benches/README.md ("Endpoint under abuse").

#![cfg(target_os = "linux")]

mod common;

use std::time::Duration;

use axum::Router;
use http::{Request, StatusCode};
use tower_usage::{CapturedBody, MemorySink, UsageRecord, UsageService, UsageSink};

use common::{full, send, serve};

/// Records of 64 KiB bodies each way.
const RECORDS: usize = 300;

fn kib(field: &str) -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix(field))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap()
}

/// Resets the peak resident set to the current one.
fn reset_peak() {
    std::fs::write("/proc/self/clear_refs", "5").unwrap();
}

async fn stalled(addr: std::net::SocketAddr, path_and_query: &str) -> tokio::net::TcpStream {
    use tokio::io::AsyncWriteExt as _;
    let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    let req = format!("GET {path_and_query} HTTP/1.1\r\nhost: {addr}\r\n\r\n");
    stream.write_all(req.as_bytes()).await.unwrap();
    stream
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stalled_exports_and_large_pages_stay_within_their_bytes() {
    let sink = MemorySink::with_limits(10_000, 512 * 1024 * 1024);
    let t0 = time::OffsetDateTime::now_utc() - time::Duration::hours(1);
    let records: Vec<UsageRecord> = (0..RECORDS)
        .map(|i| {
            let created_at = t0 + time::Duration::milliseconds(i as i64);
            UsageRecord {
                id: UsageRecord::new_id(created_at),
                consumer: Some(format!("c{}", i % 3)),
                method: "POST".into(),
                path: "/items".into(),
                status: 200,
                created_at,
                request: tower_usage::RecordedRequest {
                    body: CapturedBody::complete(vec![b'q'; 64 * 1024]),
                    ..Default::default()
                },
                response: CapturedBody::complete(vec![b'r'; 64 * 1024]),
                ..UsageRecord::default()
            }
        })
        .collect();
    sink.record(&records).await.unwrap();
    drop(records);
    // An admin sees every record: no per-consumer limit applies.
    let service = UsageService::new(sink).admin(|_| true);
    let addr = serve(Router::new().nest_service("/v1/usage", service)).await;
    // Warm up the server, the client and the allocator.
    for _ in 0..3 {
        let req = Request::get(format!("http://{addr}/v1/usage?limit=5"))
            .body(full(""))
            .unwrap();
        assert_eq!(send(req).await.0, StatusCode::OK);
    }

    // b: 20 pages of `limit=1000` at once, over 300 records of 128 KiB.
    tokio::time::sleep(Duration::from_millis(100)).await;
    reset_peak();
    let base = kib("VmRSS:");
    let pages: Vec<_> = (0..20)
        .map(|_| {
            tokio::spawn(async move {
                let req = Request::get(format!("http://{addr}/v1/usage?limit=1000"))
                    .body(full(""))
                    .unwrap();
                send(req).await.0
            })
        })
        .collect();
    for page in pages {
        assert_eq!(page.await.unwrap(), StatusCode::OK);
    }
    let large_pages = kib("VmHWM:").saturating_sub(base);
    // Let the server drop what the pages held.
    tokio::time::sleep(Duration::from_millis(200)).await;

    // a: 40 clients open an export and read nothing.
    reset_peak();
    let base = kib("VmRSS:");
    let mut clients = Vec::new();
    for i in 0..40 {
        let format = if i % 2 == 0 {
            "ndjson"
        } else {
            "csv&bodies=true"
        };
        clients.push(stalled(addr, &format!("/v1/usage?format={format}")).await);
    }
    tokio::time::sleep(Duration::from_secs(2)).await;
    let exports = kib("VmHWM:").saturating_sub(base);
    drop(clients);

    eprintln!(
        "peak resident-set growth: 40 stalled exports {} MiB, 20 concurrent limit=1000 pages {} MiB",
        exports / 1024,
        large_pages / 1024
    );
    // Bounds: 4 exports at once, each one page of 1 MiB (and the record that
    // passes it) plus a frame of 256 KiB; 20 pages of about 1 MiB loaded and
    // rendered. Generous margins: the allocator keeps what it freed. Before
    // the bounds (every record decoded per page and per export page): 1339
    // MiB and 78 MiB on the bench host; after: 1 MiB and 25 MiB.
    assert!(exports < 96 * 1024, "40 stalled exports took {exports} KiB");
    assert!(large_pages < 56 * 1024, "20 pages took {large_pages} KiB");
}
