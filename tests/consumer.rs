//! Keyed consumer ids through a real axum Router on 127.0.0.1: the same key
//! gives the same ids (across layers and restarts), the id is not the plain
//! token hash, and the endpoint with the same key serves each consumer its own.

mod common;

use axum::routing::get;
use axum::Router;
use common::*;
use http::Request;
use serde_json::Value;
use tower_usage::{hash_token, IdentifyConsumer, MemorySink, UsageLayer, UsageService};

const KEY: &[u8] = b"0123456789abcdef0123456789abcdef";

async fn app_with(
    sink: MemorySink,
    identify: IdentifyConsumer,
) -> (std::net::SocketAddr, tower_usage::UsageHandle) {
    let layer = UsageLayer::new(sink.clone()).identify_consumer(identify.clone());
    let handle = layer.handle();
    let app = Router::new()
        .route("/hello", get(|| async { "hi" }))
        .route_service(
            "/usage",
            UsageService::new(sink).identify_consumer(identify),
        )
        .layer(layer);
    (serve(app).await, handle)
}

async fn call(addr: std::net::SocketAddr, path: &str, token: &str) -> Value {
    let (status, _, body) = send(
        Request::get(format!("http://{addr}{path}"))
            .header("authorization", format!("Bearer {token}"))
            .body(full(""))
            .unwrap(),
    )
    .await;
    assert_eq!(status, 200);
    serde_json::from_slice(&body).unwrap_or(Value::Null)
}

#[tokio::test]
async fn keyed_ids_are_stable_private_and_isolate_consumers() {
    let sink = MemorySink::new();
    let (addr, handle) = app_with(sink.clone(), IdentifyConsumer::bearer_keyed(KEY)).await;
    call(addr, "/hello", "token-a").await;
    call(addr, "/hello", "token-b").await;
    handle.flush().await;

    let a = call(addr, "/usage", "token-a").await;
    let records = a["requests"].as_array().unwrap();
    assert_eq!(records.len(), 1, "each consumer sees its own");
    let id_a = records[0]["consumer"].as_str().unwrap().to_owned();
    assert_eq!(id_a.len(), 32);
    assert_ne!(id_a, hash_token("token-a"), "not the unkeyed hash");

    // Another layer and service with the same key (a restart, a replica):
    // the same id, so the stored history is still the consumer's.
    let (addr2, handle2) = app_with(sink.clone(), IdentifyConsumer::bearer_keyed(KEY)).await;
    call(addr2, "/hello", "token-a").await;
    handle2.flush().await;
    let a2 = call(addr2, "/usage", "token-a").await;
    let ids: Vec<&str> = a2["requests"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["consumer"].as_str().unwrap())
        .collect();
    assert_eq!(ids, [id_a.as_str(), id_a.as_str()]);

    // Another key: other ids, and none of the stored history.
    let (addr3, _) = app_with(sink, IdentifyConsumer::bearer_keyed(b"another key")).await;
    let a3 = call(addr3, "/usage", "token-a").await;
    assert_eq!(a3["requests"].as_array().unwrap().len(), 0);
    assert!(
        !format!("{:?}", IdentifyConsumer::bearer_keyed(KEY)).contains("0123"),
        "Debug hides the key"
    );
}
