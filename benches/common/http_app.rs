//! The HTTP workload shared by `benches/overhead.rs` and
//! `benches/common/overhead_probe.rs`: an axum route taking a 1 KiB JSON body and 8
//! headers and answering JSON, and a sink that stores nothing.
#![allow(dead_code)]

use axum::body::Body;
use axum::extract::Path;
use axum::routing::post;
use axum::{Json, Router};
use http::Request;
use serde_json::{json, Value};

pub(crate) fn router() -> Router {
    Router::new().route(
        "/v1/items/{id}",
        post(|Path(id): Path<String>, Json(v): Json<Value>| async move {
            Json(json!({
                "id": id,
                "count": v["items"].as_array().map_or(0, Vec::len),
                "status": "accepted",
            }))
        }),
    )
}

pub(crate) fn payload() -> Vec<u8> {
    let items: Vec<Value> = (0..16)
        .map(|i| json!({"id": format!("item-{i:04}"), "name": "widget", "qty": i, "tags": ["a", "b"]}))
        .collect();
    let body = serde_json::to_vec(&json!({"items": items, "note": "benchmark payload"})).unwrap();
    assert_eq!(body.len(), 1004, "the content-length header says 1004");
    body
}

/// The request. Header values are static, like hyper's parsed values, which
/// share the connection's read buffer: cloning one is a reference-count bump,
/// not an allocation.
pub(crate) fn request(body: &bytes::Bytes) -> Request<Body> {
    use http::HeaderValue as V;
    Request::post("/v1/items/abc123")
        .header("host", V::from_static("api.example.com"))
        .header("content-type", V::from_static("application/json"))
        .header("content-length", V::from_static("1004"))
        .header(
            "authorization",
            V::from_static("Bearer IncYP3edd3blm2ypLGFFOYwQsC5vff3n"),
        )
        .header("user-agent", V::from_static("bench/1.0"))
        .header("accept", V::from_static("application/json"))
        .header("accept-encoding", V::from_static("gzip, deflate, br"))
        .header(
            "x-request-id",
            V::from_static("5f0c7a8e-4b1d-4a5e-9d61-0e4f3b2a1c9d"),
        )
        .body(Body::from(body.clone()))
        .unwrap()
}

/// Stores nothing: isolates the capture and the writer from the sink.
pub(crate) struct NullSink;

#[async_trait::async_trait]
impl tower_usage::UsageSink for NullSink {
    async fn record(
        &self,
        batch: &[tower_usage::UsageRecord],
    ) -> Result<(), tower_usage::SinkError> {
        std::hint::black_box(batch);
        Ok(())
    }

    async fn query(
        &self,
        _query: &tower_usage::UsageQuery,
    ) -> Result<tower_usage::UsagePage, tower_usage::SinkError> {
        Ok(tower_usage::UsagePage::default())
    }
}
