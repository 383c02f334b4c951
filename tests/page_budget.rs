//! A page has a byte budget: `GET /usage?limit=1000` over records with large
//! bodies ends each page early, with a `nextCursor`, and the pages together
//! hold every record exactly once. Through a real axum Router on 127.0.0.1.

mod common;

use axum::Router;
use common::*;
use http::Request;
use serde_json::Value;
use tower_usage::{hash_token, CapturedBody, MemorySink, UsageRecord, UsageService, UsageSink};

const TOKEN: &str = "page-budget-token";

fn record(i: u32, body: usize) -> UsageRecord {
    let created_at =
        time::OffsetDateTime::UNIX_EPOCH + time::Duration::seconds(1_700_000_000 + i64::from(i));
    UsageRecord {
        id: UsageRecord::new_id(created_at),
        consumer: Some(hash_token(TOKEN)),
        method: "POST".into(),
        path: format!("/upload/{i}"),
        status: 200,
        created_at,
        request: tower_usage::RecordedRequest {
            body: CapturedBody::complete("x".repeat(body)),
            ..Default::default()
        },
        ..UsageRecord::default()
    }
}

async fn page(addr: std::net::SocketAddr, cursor: Option<&str>) -> (usize, Value) {
    let mut uri = format!("http://{addr}/usage?limit=1000");
    if let Some(c) = cursor {
        uri.push_str(&format!("&cursor={c}"));
    }
    let (status, _, body) = send(
        Request::get(uri)
            .header("authorization", format!("Bearer {TOKEN}"))
            .body(full(""))
            .unwrap(),
    )
    .await;
    assert_eq!(status, 200, "{}", String::from_utf8_lossy(&body));
    (body.len(), serde_json::from_slice(&body).unwrap())
}

#[tokio::test]
async fn large_records_are_paged_by_bytes_and_none_is_lost_or_repeated() {
    let sink = MemorySink::new();
    let records: Vec<UsageRecord> = (0..120).map(|i| record(i, 20_000)).collect();
    sink.record(&records).await.unwrap();
    let budget = 100 * 1024;
    let app = Router::new().route_service("/usage", UsageService::new(sink).max_page_bytes(budget));
    let addr = serve(app).await;

    let mut seen = Vec::new();
    let mut cursor: Option<String> = None;
    let mut pages = 0;
    loop {
        let (len, page) = page(addr, cursor.as_deref()).await;
        pages += 1;
        let got = page["requests"].as_array().unwrap();
        assert!(!got.is_empty());
        // Within the budget, give or take the one record that crossed it.
        assert!(len <= budget + 21_000, "page of {len} bytes");
        seen.extend(got.iter().map(|r| r["id"].as_str().unwrap().to_owned()));
        match page["nextCursor"].as_str() {
            Some(next) => cursor = Some(next.to_owned()),
            None => break,
        }
    }
    let want: Vec<String> = records.iter().map(|r| r.id.clone()).collect();
    assert_eq!(seen, want, "every record once, in order");
    assert!(pages >= 120 * 20_000 / budget, "{pages} pages");
}

#[tokio::test]
async fn one_record_larger_than_the_budget_still_makes_a_page() {
    let sink = MemorySink::new();
    sink.record(&[record(0, 50_000), record(1, 10)])
        .await
        .unwrap();
    let app = Router::new().route_service("/usage", UsageService::new(sink).max_page_bytes(1_000));
    let addr = serve(app).await;
    let (_, first) = page(addr, None).await;
    assert_eq!(first["requests"].as_array().unwrap().len(), 1);
    let next = first["nextCursor"]
        .as_str()
        .expect("more to come")
        .to_owned();
    let (_, second) = page(addr, Some(&next)).await;
    assert_eq!(second["requests"][0]["path"], "/upload/1");
    assert!(second["nextCursor"].is_null());
}
