//! Layer overhead: an axum Router called in-process with a POST carrying a 1 KiB
//! JSON body and 8 headers, answered with JSON.
//!
//! * `bare`: the router alone;
//! * `usage_layer`: with `UsageLayer` + `MemorySink`, the writer task running on
//!   the same single-threaded runtime, so its work (rendering, redaction, storing)
//!   is paid inside the measured time;
//! * `trace_layer`: with tower-http's `TraceLayer` (INFO spans and responses)
//!   under a `tracing-subscriber` fmt subscriber writing to `io::sink`.
//!
//! Every iteration yields to the runtime once, so the writer gets its turns.
//! After the run the bench prints each median and its ratio to `bare`:
//!
//! ```text
//! cargo bench --bench overhead
//! ```

use std::path::PathBuf;
use std::time::Duration;

use axum::body::Body;
use axum::extract::Path;
use axum::routing::post;
use axum::{Json, Router};
use criterion::{criterion_group, Criterion};
use http::Request;
use http_body_util::BodyExt;
use serde_json::{json, Value};
use tower::ServiceExt;
use tower_usage::{MemorySink, UsageLayer};

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

fn payload() -> Vec<u8> {
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
fn request(body: &bytes::Bytes) -> Request<Body> {
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

async fn call(app: &Router, body: &bytes::Bytes) {
    let res = app.clone().oneshot(request(body)).await.unwrap();
    assert!(res.status().is_success());
    let bytes = res.into_body().collect().await.unwrap().to_bytes();
    std::hint::black_box(bytes);
    tokio::task::yield_now().await;
}

fn overhead(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let body = bytes::Bytes::from(payload());
    let mut group = c.benchmark_group("overhead");
    group.measurement_time(Duration::from_secs(5));

    let bare = router();
    group.bench_function("bare", |b| b.to_async(&rt).iter(|| call(&bare, &body)));

    let (with_usage, handle) = rt.block_on(async {
        let layer = UsageLayer::new(MemorySink::new());
        let handle = layer.handle();
        (router().layer(layer), handle)
    });
    group.bench_function("usage_layer", |b| {
        b.to_async(&rt).iter(|| call(&with_usage, &body))
    });
    rt.block_on(handle.flush());
    let stats = handle.stats();
    eprintln!("usage_layer writer stats: {stats:?}");
    assert_eq!(
        stats.dropped, 0,
        "the writer fell behind: the measurement is not fair"
    );

    let (with_null, null_handle) = rt.block_on(async {
        let layer = UsageLayer::new(NullSink);
        let handle = layer.handle();
        (router().layer(layer), handle)
    });
    group.bench_function("usage_null_sink", |b| {
        b.to_async(&rt).iter(|| call(&with_null, &body))
    });
    rt.block_on(null_handle.flush());
    assert_eq!(null_handle.stats().dropped, 0);

    let subscriber = tracing_subscriber::fmt()
        .with_writer(std::io::sink)
        .with_max_level(tracing::Level::INFO)
        .finish();
    let guard = tracing::subscriber::set_default(subscriber);
    let with_trace = router().layer(
        tower_http::trace::TraceLayer::new_for_http()
            .make_span_with(tower_http::trace::DefaultMakeSpan::new().level(tracing::Level::INFO))
            .on_request(tower_http::trace::DefaultOnRequest::new().level(tracing::Level::INFO))
            .on_response(tower_http::trace::DefaultOnResponse::new().level(tracing::Level::INFO)),
    );
    group.bench_function("trace_layer", |b| {
        b.to_async(&rt).iter(|| call(&with_trace, &body))
    });
    drop(guard);
    group.finish();
}

/// Stores nothing: isolates the capture and the writer from the sink.
struct NullSink;

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

criterion_group!(benches, overhead);

fn main() {
    benches();
    Criterion::default().configure_from_args().final_summary();
    report(
        "overhead",
        &["bare", "usage_layer", "usage_null_sink", "trace_layer"],
    );
}

/// Prints each benchmark's median and its ratio to the first one, from
/// criterion's estimates of this run.
fn report(group: &str, names: &[&str]) {
    let dir = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("target"))
        .join("criterion")
        .join(group);
    let median = |name: &str| -> Option<f64> {
        let text =
            std::fs::read_to_string(dir.join(name).join("new").join("estimates.json")).ok()?;
        let v: Value = serde_json::from_str(&text).ok()?;
        v["median"]["point_estimate"].as_f64()
    };
    let Some(base) = median(names[0]) else {
        return;
    };
    println!("\n{group}: median per request, ratio to {}", names[0]);
    for name in names {
        if let Some(m) = median(name) {
            println!("  {name:<14} {:>9.2} us   {:.2}x", m / 1000.0, m / base);
        }
    }
}
