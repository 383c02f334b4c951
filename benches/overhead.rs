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
//! And a unary gRPC call (`demo.Echo/Say` of the tonic example, a 300-byte
//! message each way, 6 headers), through tonic's routes called in-process:
//!
//! * `grpc_bare`: the routes alone;
//! * `grpc_usage_layer`: with `UsageLayer` + `MemorySink`, as above;
//! * `grpc_usage_null_sink`: with `UsageLayer` + a sink that stores nothing;
//! * `grpc_loopback_bare` / `grpc_loopback_usage_layer`: the same call made by
//!   tonic's client over a real HTTP/2 connection on 127.0.0.1, to a tonic
//!   server without / with the layer (client, server and writer on one thread).
//!
//! Every iteration yields to the runtime once, so the writer gets its turns.
//! Before anything is measured, each HTTP variant runs for 2 s, in turn, so all
//! are measured in the same process state rather than the first in a fresh heap.
//! After the run the bench prints each median and its ratio to `bare` (and to
//! `grpc_bare`):
//!
//! ```text
//! cargo bench --bench overhead
//! cargo bench --bench overhead -- grpc     # the gRPC pair only
//! ```

#[path = "../examples/tonic/echo.rs"]
mod echo;
#[path = "common/http_app.rs"]
mod http_app;

use http_app::{payload, request, router, NullSink};

use std::path::PathBuf;
use std::time::Duration;

use axum::Router;
use criterion::{criterion_group, Criterion};
use http::Request;
use http_body_util::BodyExt;
use serde_json::Value;
use tower::ServiceExt;
use tower_usage::{MemorySink, UsageLayer};

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
    let (with_usage, handle) = rt.block_on(async {
        let layer = UsageLayer::new(MemorySink::new());
        let handle = layer.handle();
        (router().layer(layer), handle)
    });
    let (with_null, null_handle) = rt.block_on(async {
        let layer = UsageLayer::new(NullSink);
        let handle = layer.handle();
        (router().layer(layer), handle)
    });
    let subscriber = tracing::Dispatch::new(
        tracing_subscriber::fmt()
            .with_writer(std::io::sink)
            .with_max_level(tracing::Level::INFO)
            .finish(),
    );
    let with_trace = router().layer(
        tower_http::trace::TraceLayer::new_for_http()
            .make_span_with(tower_http::trace::DefaultMakeSpan::new().level(tracing::Level::INFO))
            .on_request(tower_http::trace::DefaultOnRequest::new().level(tracing::Level::INFO))
            .on_response(tower_http::trace::DefaultOnResponse::new().level(tracing::Level::INFO)),
    );

    // Every variant first runs unmeasured, in turn, so that each is measured in
    // the same process state (glibc's free lists and heap layout after all four
    // workloads), not the first one alone in a fresh heap: measured after the
    // others instead of first, the bare router itself is about 15% slower.
    tracing::dispatcher::with_default(&subscriber, || {
        rt.block_on(async {
            for app in [&bare, &with_usage, &with_null, &with_trace] {
                let until = std::time::Instant::now() + Duration::from_secs(2);
                while std::time::Instant::now() < until {
                    call(app, &body).await;
                }
            }
        })
    });

    group.bench_function("bare", |b| b.to_async(&rt).iter(|| call(&bare, &body)));
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

    group.bench_function("usage_null_sink", |b| {
        b.to_async(&rt).iter(|| call(&with_null, &body))
    });
    rt.block_on(null_handle.flush());
    assert_eq!(null_handle.stats().dropped, 0);

    let guard = tracing::dispatcher::set_default(&subscriber);
    group.bench_function("trace_layer", |b| {
        b.to_async(&rt).iter(|| call(&with_trace, &body))
    });
    drop(guard);

    let frame = grpc_frame();
    let grpc_bare = tonic::service::Routes::new(echo::EchoServer).prepare();
    group.bench_function("grpc_bare", |b| {
        b.to_async(&rt)
            .iter(|| call_grpc(grpc_bare.clone(), &frame))
    });
    let (grpc_layered, grpc_handle) = rt.block_on(async {
        let layer = UsageLayer::new(MemorySink::new());
        let handle = layer.handle();
        let routes = tonic::service::Routes::new(echo::EchoServer).prepare();
        (tower::Layer::layer(&layer, routes), handle)
    });
    group.bench_function("grpc_usage_layer", |b| {
        b.to_async(&rt)
            .iter(|| call_grpc(grpc_layered.clone(), &frame))
    });
    rt.block_on(grpc_handle.flush());
    let stats = grpc_handle.stats();
    eprintln!("grpc_usage_layer writer stats: {stats:?}");
    assert_eq!(stats.dropped, 0, "the writer fell behind");

    let (grpc_null, grpc_null_handle) = rt.block_on(async {
        let layer = UsageLayer::new(NullSink);
        let handle = layer.handle();
        let routes = tonic::service::Routes::new(echo::EchoServer).prepare();
        (tower::Layer::layer(&layer, routes), handle)
    });
    group.bench_function("grpc_usage_null_sink", |b| {
        b.to_async(&rt)
            .iter(|| call_grpc(grpc_null.clone(), &frame))
    });
    rt.block_on(grpc_null_handle.flush());
    assert_eq!(grpc_null_handle.stats().dropped, 0);

    // Over a real HTTP/2 connection on loopback, with tonic's client.
    let (bare_client, layered_client, loop_handle) = rt.block_on(async {
        let bare = serve_echo(None).await;
        let layer = UsageLayer::new(MemorySink::new());
        let handle = layer.handle();
        let layered = serve_echo(Some(layer)).await;
        (bare, layered, handle)
    });
    group.bench_function("grpc_loopback_bare", |b| {
        b.to_async(&rt).iter(|| say(bare_client.clone()))
    });
    group.bench_function("grpc_loopback_usage_layer", |b| {
        b.to_async(&rt).iter(|| say(layered_client.clone()))
    });
    rt.block_on(loop_handle.flush());
    assert_eq!(loop_handle.stats().dropped, 0);
    group.finish();
}

/// Serves `demo.Echo` on 127.0.0.1:0 (behind `layer`, if any); a client to it.
async fn serve_echo(layer: Option<UsageLayer<MemorySink>>) -> echo::EchoClient {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let incoming = tokio_stream::wrappers::TcpListenerStream::new(listener);
    let mut builder = tonic::transport::Server::builder();
    let server = match layer {
        Some(layer) => tokio::spawn(
            builder
                .layer(layer)
                .add_service(echo::EchoServer)
                .serve_with_incoming(incoming),
        ),
        None => tokio::spawn(
            builder
                .add_service(echo::EchoServer)
                .serve_with_incoming(incoming),
        ),
    };
    drop(server);
    echo::EchoClient::connect(addr)
        .await
        .unwrap()
        .with_token("IncYP3edd3blm2ypLGFFOYwQsC5vff3n")
}

async fn say(mut client: echo::EchoClient) {
    let mut msg = echo::request("hello from the benchmark");
    msg.payload = vec![b'x'; 300 - 29];
    let reply = client.say(msg).await.unwrap();
    std::hint::black_box(reply);
    tokio::task::yield_now().await;
}

/// One `EchoRequest` of 300 bytes, framed.
fn grpc_frame() -> bytes::Bytes {
    use prost::Message as _;
    let mut msg = echo::request("hello from the benchmark");
    msg.payload = vec![b'x'; 300 - 29];
    let len = msg.encoded_len();
    assert_eq!(len, 300);
    let mut buf = Vec::with_capacity(5 + len);
    buf.push(0);
    buf.extend_from_slice(&(len as u32).to_be_bytes());
    msg.encode(&mut buf).unwrap();
    bytes::Bytes::from(buf)
}

async fn call_grpc<S, B>(svc: S, frame: &bytes::Bytes)
where
    S: tower::Service<Request<http_body_util::Full<bytes::Bytes>>, Response = http::Response<B>>,
    S::Error: std::fmt::Debug,
    B: http_body::Body,
    B::Error: std::fmt::Debug,
{
    use http::HeaderValue as V;
    let req = Request::post("/demo.Echo/Say")
        .header("content-type", V::from_static("application/grpc"))
        .header("te", V::from_static("trailers"))
        .header(
            "authorization",
            V::from_static("Bearer IncYP3edd3blm2ypLGFFOYwQsC5vff3n"),
        )
        .header("user-agent", V::from_static("bench/1.0"))
        .header("grpc-accept-encoding", V::from_static("identity"))
        .header("host", V::from_static("api.example.com"))
        .body(http_body_util::Full::new(frame.clone()))
        .unwrap();
    let res = svc.oneshot(req).await.unwrap();
    let collected = res.into_body().collect().await.unwrap();
    assert_eq!(
        collected.trailers().and_then(|t| t.get("grpc-status")),
        Some(&V::from_static("0"))
    );
    std::hint::black_box(collected.to_bytes());
    tokio::task::yield_now().await;
}

criterion_group!(benches, overhead);

fn main() {
    benches();
    Criterion::default().configure_from_args().final_summary();
    report(
        "overhead",
        &["bare", "usage_layer", "usage_null_sink", "trace_layer"],
    );
    report(
        "overhead",
        &["grpc_bare", "grpc_usage_layer", "grpc_usage_null_sink"],
    );
    report(
        "overhead",
        &["grpc_loopback_bare", "grpc_loopback_usage_layer"],
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
