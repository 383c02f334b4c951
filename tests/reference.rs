//! The reference page (`shared/reference/usage-endpoint-doc.md`, "Get API
//! usage"), replayed: its three requests, sent with the headers it shows to the
//! quickstart app (the example's own code) on 127.0.0.1, must come back from
//! `GET /v1/usage` as the page shows them. Only `authorization` is masked: the
//! route parameter `tokenDefinitionId`, the path under it and Postman's
//! `postman-token` header are not secrets, and stay as sent; the records are
//! listed in the order the requests came.

mod common;

#[allow(dead_code)] // the example's command line and demo are not used here
#[path = "../examples/common/app.rs"]
mod app;

use common::*;
use http::Request;
use serde_json::{json, Value};
use tower_usage::MemorySink;

const TOKEN: &str = "IncYP3edd3blm2ypLGFFOYwQsC5vff3n";

/// The first request's body as Postman sent it (tab-indented, 220 bytes).
fn airdrop_body() -> String {
    let body = json!({
        "airdrops": [
            {"address": "AXkcPCWrWYGuayYgKp7y6LhugKzq5f3pqeKnrSod9ufy", "collectionId": "9f46cddbd46f"},
            {"userId": "c4367732ab0c", "collectionId": "9f46cddbd46f"}
        ],
        "sequential": false
    });
    let mut out = Vec::new();
    let fmt = serde_json::ser::PrettyFormatter::with_indent(b"\t");
    let mut ser = serde_json::Serializer::with_formatter(&mut out, fmt);
    serde::Serialize::serialize(&body, &mut ser).unwrap();
    out.push(b'\n');
    String::from_utf8(out).unwrap()
}

/// The headers of one reference request, in its order, as (name, value).
fn reference_headers(postman_token: &str, body: Option<usize>) -> Vec<(String, String)> {
    let mut headers = vec![
        ("host", "localhost:9000".to_owned()),
        ("accept", "*/*".to_owned()),
        ("connection", "keep-alive".to_owned()),
        ("user-agent", "PostmanRuntime/7.29.2".to_owned()),
    ];
    if body.is_some() {
        headers.push(("content-type", "application/json".to_owned()));
    }
    headers.push(("authorization", format!("Bearer {TOKEN}")));
    headers.push(("postman-token", postman_token.to_owned()));
    if let Some(len) = body {
        headers.push(("content-length", len.to_string()));
    }
    headers.push(("accept-encoding", "gzip, deflate, br".to_owned()));
    headers
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v))
        .collect()
}

/// The headers the reference page shows for a request: as sent, with only
/// `authorization` masked.
fn shown(headers: &[(String, String)]) -> Value {
    let mut map = serde_json::Map::new();
    for (k, v) in headers {
        let v = if k == "authorization" {
            "[REDACTED]".to_owned()
        } else {
            v.clone()
        };
        map.insert(k.clone(), Value::String(v));
    }
    Value::Object(map)
}

/// The list shows a millisecond's requests in the order they came: ids of one
/// millisecond made one after another, each on a thread of its own (as the
/// writer task moves between a runtime's threads), sort in the order they
/// were made. Called before anything else in this process makes ids.
fn ids_of_one_millisecond_sort_in_order_across_threads() {
    let t = time::macros::datetime!(2026-12-07 01:00:00.123 UTC);
    let ids: Vec<String> = (0..32)
        .map(|_| {
            std::thread::spawn(move || tower_usage::UsageRecord::new_id(t))
                .join()
                .unwrap()
        })
        .collect();
    let mut sorted = ids.clone();
    sorted.sort();
    assert_eq!(ids, sorted, "ids of one millisecond out of order");
}

#[tokio::test]
async fn the_reference_requests_come_back_as_the_reference_shows_them() {
    ids_of_one_millisecond_sort_in_order_across_threads();
    let sink = MemorySink::new();
    let (router, handle) = app::app(sink);
    let addr = serve(router).await;

    let send_as = |method: &str, path: &str, headers: &[(String, String)], body: String| {
        let mut req = Request::builder()
            .method(method)
            .uri(format!("http://{addr}{path}"));
        for (k, v) in headers {
            req = req.header(k, v);
        }
        send(req.body(full(body)).unwrap())
    };

    let body = airdrop_body();
    assert_eq!(body.len(), 220, "the reference's content-length");
    let post_headers = reference_headers("bb58f535-a047-4a0d-af7b-dbb078d0da0c", Some(body.len()));
    let (status, _, created) = send_as("POST", "/rest/v1/airdrop/", &post_headers, body).await;
    assert_eq!(status, 200);
    let created: Value = serde_json::from_slice(&created).unwrap();
    let batch = created["id"].as_str().unwrap().to_owned();

    let get_headers = reference_headers("7ab5a826-d078-4180-9999-1f0b0590a10a", None);
    let batch_path = format!("/rest/v1/airdrop/{batch}");
    let (status, _, _) = send_as("GET", &batch_path, &get_headers, String::new()).await;
    assert_eq!(status, 200);
    let owners_headers = reference_headers("4d8cfb24-cf03-4a85-b430-e6247823a599", None);
    let owners_path = "/rest/v1/collection/098f868479eb/owners";
    let (status, _, _) = send_as("GET", owners_path, &owners_headers, String::new()).await;
    assert_eq!(status, 200);
    handle.flush().await;

    let auth = [("authorization".to_owned(), format!("Bearer {TOKEN}"))];
    let (status, _, page) = send_as("GET", "/v1/usage", &auth, String::new()).await;
    assert_eq!(status, 200);
    let page: Value = serde_json::from_slice(&page).unwrap();
    let records = page["requests"].as_array().unwrap();
    assert_eq!(records.len(), 3, "{page}");

    // Request 1: POST /rest/v1/airdrop/ (the reference's own values).
    let r = &records[0];
    assert_eq!(r["path"], "/rest/v1/airdrop/");
    assert_eq!(r["method"], "POST");
    assert_eq!(
        r["request"]["body"],
        json!({
            "airdrops": [
                {"address": "AXkcPCWrWYGuayYgKp7y6LhugKzq5f3pqeKnrSod9ufy", "collectionId": "9f46cddbd46f"},
                {"userId": "c4367732ab0c", "collectionId": "9f46cddbd46f"}
            ],
            "sequential": false
        })
    );
    assert_eq!(r["request"]["query"], json!({}));
    assert_eq!(r["request"]["params"], json!({}));
    assert_eq!(r["request"]["headers"], shown(&post_headers));
    assert_eq!(r["response"], json!({"id": batch, "count": 2}));
    assert_eq!(r["status"], 200);

    // Request 2: GET /rest/v1/airdrop/{batchId}.
    let r = &records[1];
    assert_eq!(r["path"], batch_path);
    assert_eq!(r["method"], "GET");
    assert_eq!(r["request"]["body"], json!({}));
    assert_eq!(r["request"]["query"], json!({}));
    assert_eq!(r["request"]["params"], json!({"batchId": batch}));
    assert_eq!(r["request"]["headers"], shown(&get_headers));
    assert_eq!(r["response"]["id"], batch.as_str());
    assert_eq!(r["response"]["count"], 2);
    let succeeded = r["response"]["statuses"]["SUCCEEDED"].as_array().unwrap();
    assert_eq!(succeeded.len(), 2);
    assert_eq!(succeeded[1]["CometUserId"], "c4367732ab0c");
    assert_eq!(r["status"], 200);

    // Request 3: the route parameter that merely holds `token` stays as sent,
    // and so does the path under it.
    let r = &records[2];
    assert_eq!(r["path"], owners_path);
    assert_eq!(r["method"], "GET");
    assert_eq!(r["route"], "/rest/v1/collection/{tokenDefinitionId}/owners");
    assert_eq!(r["request"]["body"], json!({}));
    assert_eq!(r["request"]["query"], json!({}));
    assert_eq!(
        r["request"]["params"],
        json!({"tokenDefinitionId": "098f868479eb"})
    );
    assert_eq!(r["request"]["headers"], shown(&owners_headers));
    assert_eq!(r["response"], json!({"results": {"owners": []}}));
    assert_eq!(r["status"], 200);

    // Nothing of the bearer token is stored anywhere.
    assert!(!page.to_string().contains(TOKEN), "{page}");
}
