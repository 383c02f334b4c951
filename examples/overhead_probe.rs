//! Runs N requests in-process through an axum Router, bare or with the layer, for
//! measuring with tools that count work rather than wall time (steadier than
//! criterion on a busy machine):
//!
//! ```text
//! cargo build --release --example overhead_probe
//! perf stat -e task-clock target/release/examples/overhead_probe bare 100000
//! perf stat -e task-clock target/release/examples/overhead_probe memory 100000
//! valgrind --tool=callgrind target/release/examples/overhead_probe null 3000
//! ```
//!
//! Modes: `bare`, `null` (the layer with a sink that stores nothing: capture and
//! writer only), `memory` (the layer with `MemorySink`). Same request as
//! `benches/overhead.rs`: a POST with a 1 KiB JSON body and 8 headers. The writer
//! runs on the same single-threaded runtime, so its work is counted.

use axum::body::Body;
use axum::extract::Path;
use axum::routing::post;
use axum::{Json, Router};
use http::{HeaderValue as V, Request};
use http_body_util::BodyExt;
use serde_json::{json, Value};
use tower::ServiceExt;
use tower_usage::{
    MemorySink, SinkError, UsageLayer, UsagePage, UsageQuery, UsageRecord, UsageSink,
};

struct NullSink;

#[async_trait::async_trait]
impl UsageSink for NullSink {
    async fn record(&self, batch: &[UsageRecord]) -> Result<(), SinkError> {
        std::hint::black_box(batch);
        Ok(())
    }

    async fn query(&self, _query: &UsageQuery) -> Result<UsagePage, SinkError> {
        Ok(UsagePage::default())
    }
}

fn router() -> Router {
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

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let mode = args.next().unwrap_or_else(|| "memory".into());
    let n: usize = args
        .next()
        .map(|s| s.parse())
        .transpose()?
        .unwrap_or(10_000);
    let items: Vec<Value> = (0..16)
        .map(|i| json!({"id": format!("item-{i:04}"), "name": "widget", "qty": i, "tags": ["a", "b"]}))
        .collect();
    let body = bytes::Bytes::from(serde_json::to_vec(
        &json!({"items": items, "note": "benchmark payload"}),
    )?);
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    rt.block_on(async move {
        let (app, handle) = match mode.as_str() {
            "bare" => (router(), None),
            "null" => {
                let layer = UsageLayer::new(NullSink);
                let handle = layer.handle();
                (router().layer(layer), Some(handle))
            }
            "memory" => {
                let layer = UsageLayer::new(MemorySink::new());
                let handle = layer.handle();
                (router().layer(layer), Some(handle))
            }
            other => return Err(format!("unknown mode {other:?}: bare, null or memory").into()),
        };
        for _ in 0..n {
            let req = Request::post("/v1/items/abc123")
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
                .body(Body::from(body.clone()))?;
            let res = app.clone().oneshot(req).await?;
            std::hint::black_box(res.into_body().collect().await?.to_bytes());
            tokio::task::yield_now().await;
        }
        if let Some(handle) = handle {
            handle.flush().await;
            let stats = handle.stats();
            if stats.written != n as u64 {
                return Err(format!("not every request was written: {stats:?}").into());
            }
        }
        Ok::<(), Box<dyn std::error::Error>>(())
    })
}
