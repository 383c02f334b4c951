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
//! Each variant is measured in fresh processes of its own, three rounds of all
//! variants (see `main`): none is measured in the heap another one left, and the
//! report takes the median of the three. A full run takes about six minutes;
//! `TOWER_USAGE_OVERHEAD_RUNS=1` makes it one round.
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
use criterion::Criterion;
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

/// The variants, in report order; each is measured in a process of its own.
const VARIANTS: &[&str] = &[
    "bare",
    "usage_layer",
    "usage_null_sink",
    "trace_layer",
    "grpc_bare",
    "grpc_usage_layer",
    "grpc_usage_null_sink",
    "grpc_loopback_bare",
    "grpc_loopback_usage_layer",
];

/// The environment variable naming the variant a child process measures.
const VARIANT_ENV: &str = "TOWER_USAGE_OVERHEAD_VARIANT";

/// A layer over `sink` whose writer runs on `rt`, and its handle.
fn layered<S: tower_usage::UsageSink + 'static>(
    rt: &tokio::runtime::Runtime,
    sink: S,
) -> (UsageLayer<S>, tower_usage::UsageHandle) {
    rt.block_on(async {
        let layer = UsageLayer::new(sink);
        let handle = layer.handle();
        (layer, handle)
    })
}

/// Measures one variant.
fn overhead(c: &mut Criterion, variant: &str) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let body = bytes::Bytes::from(payload());
    let frame = grpc_frame();
    let mut group = c.benchmark_group("overhead");
    group.measurement_time(Duration::from_secs(5));

    // The check that the writer kept up.
    let kept_up = |handle: tower_usage::UsageHandle| {
        rt.block_on(handle.flush());
        let stats = handle.stats();
        eprintln!("{variant} writer stats: {stats:?}");
        assert_eq!(
            stats.dropped, 0,
            "the writer fell behind: the measurement is not fair"
        );
    };

    match variant {
        "bare" => {
            let app = router();
            group.bench_function(variant, |b| b.to_async(&rt).iter(|| call(&app, &body)));
        }
        "usage_layer" => {
            let (layer, handle) = layered(&rt, MemorySink::new());
            let app = router().layer(layer);
            group.bench_function(variant, |b| b.to_async(&rt).iter(|| call(&app, &body)));
            kept_up(handle);
        }
        "usage_null_sink" => {
            let (layer, handle) = layered(&rt, NullSink);
            let app = router().layer(layer);
            group.bench_function(variant, |b| b.to_async(&rt).iter(|| call(&app, &body)));
            kept_up(handle);
        }
        "trace_layer" => {
            let subscriber = tracing_subscriber::fmt()
                .with_writer(std::io::sink)
                .with_max_level(tracing::Level::INFO)
                .finish();
            let _guard = tracing::subscriber::set_default(subscriber);
            let app = router().layer(
                tower_http::trace::TraceLayer::new_for_http()
                    .make_span_with(
                        tower_http::trace::DefaultMakeSpan::new().level(tracing::Level::INFO),
                    )
                    .on_request(
                        tower_http::trace::DefaultOnRequest::new().level(tracing::Level::INFO),
                    )
                    .on_response(
                        tower_http::trace::DefaultOnResponse::new().level(tracing::Level::INFO),
                    ),
            );
            group.bench_function(variant, |b| b.to_async(&rt).iter(|| call(&app, &body)));
        }
        "grpc_bare" => {
            let routes = tonic::service::Routes::new(echo::EchoServer).prepare();
            group.bench_function(variant, |b| {
                b.to_async(&rt).iter(|| call_grpc(routes.clone(), &frame))
            });
        }
        "grpc_usage_layer" => {
            let (layer, handle) = layered(&rt, MemorySink::new());
            let routes = tonic::service::Routes::new(echo::EchoServer).prepare();
            let svc = tower::Layer::layer(&layer, routes);
            group.bench_function(variant, |b| {
                b.to_async(&rt).iter(|| call_grpc(svc.clone(), &frame))
            });
            kept_up(handle);
        }
        "grpc_usage_null_sink" => {
            let (layer, handle) = layered(&rt, NullSink);
            let routes = tonic::service::Routes::new(echo::EchoServer).prepare();
            let svc = tower::Layer::layer(&layer, routes);
            group.bench_function(variant, |b| {
                b.to_async(&rt).iter(|| call_grpc(svc.clone(), &frame))
            });
            kept_up(handle);
        }
        // Over a real HTTP/2 connection on loopback, with tonic's client.
        "grpc_loopback_bare" => {
            let client = rt.block_on(serve_echo(None));
            group.bench_function(variant, |b| b.to_async(&rt).iter(|| say(client.clone())));
        }
        "grpc_loopback_usage_layer" => {
            let (layer, handle) = layered(&rt, MemorySink::new());
            let client = rt.block_on(serve_echo(Some(layer)));
            group.bench_function(variant, |b| b.to_async(&rt).iter(|| say(client.clone())));
            kept_up(handle);
        }
        other => panic!("unknown variant {other:?}"),
    }
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

/// How many fresh processes measure each variant (`TOWER_USAGE_OVERHEAD_RUNS`
/// overrides it); the report takes the median of their medians.
const RUNS: usize = 3;

/// Runs each variant in processes of its own (this binary again, told which by
/// [`VARIANT_ENV`]), [`RUNS`] rounds of all variants, then prints each median
/// and its ratio.
///
/// In one process, each variant would be measured in the heap the earlier ones
/// left: glibc's free lists and layout after other workloads made the same bare
/// router up to 15% slower or faster, depending on what ran before. And from one
/// fresh process to the next (address-space layout, a shared machine) the same
/// variant varies by up to 7%, hence several rounds, interleaved.
fn main() {
    if let Ok(variant) = std::env::var(VARIANT_ENV) {
        let mut c = Criterion::default().configure_from_args();
        overhead(&mut c, &variant);
        c.final_summary();
        return;
    }
    let runs = std::env::var("TOWER_USAGE_OVERHEAD_RUNS")
        .ok()
        .and_then(|r| r.parse().ok())
        .unwrap_or(RUNS)
        .max(1);
    let exe = std::env::current_exe().expect("the bench's own path");
    let mut medians: Vec<Vec<f64>> = vec![Vec::new(); VARIANTS.len()];
    for _ in 0..runs {
        for (variant, found) in VARIANTS.iter().zip(&mut medians) {
            let started = std::time::SystemTime::now();
            let status = std::process::Command::new(&exe)
                .args(std::env::args_os().skip(1))
                .env(VARIANT_ENV, variant)
                .status()
                .expect("run the bench for one variant");
            assert!(status.success(), "the {variant} bench failed: {status}");
            // Nothing new when a filter left the variant out.
            found.extend(median_of(variant, started));
        }
    }
    let median = |name: &str| {
        let i = VARIANTS.iter().position(|v| *v == name)?;
        let mut m = medians[i].clone();
        m.sort_by(f64::total_cmp);
        Some((m.get(m.len() / 2).copied()?, medians[i].clone()))
    };
    for names in [
        &["bare", "usage_layer", "usage_null_sink", "trace_layer"][..],
        &["grpc_bare", "grpc_usage_layer", "grpc_usage_null_sink"],
        &["grpc_loopback_bare", "grpc_loopback_usage_layer"],
    ] {
        let Some((base, _)) = median(names[0]) else {
            continue;
        };
        println!("\noverhead: median per request, ratio to {}", names[0]);
        for name in names {
            if let Some((m, all)) = median(name) {
                let all: Vec<String> = all.iter().map(|v| format!("{:.2}", v / 1000.0)).collect();
                println!(
                    "  {name:<26} {:>8.2} us   {:.2}x   (runs: {})",
                    m / 1000.0,
                    m / base,
                    all.join(" ")
                );
            }
        }
    }
}

/// The median criterion estimated for `name` in a run that ended after
/// `since`, in nanoseconds.
fn median_of(name: &str, since: std::time::SystemTime) -> Option<f64> {
    let path = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("target"))
        .join("criterion/overhead")
        .join(name)
        .join("new/estimates.json");
    let modified = std::fs::metadata(&path).ok()?.modified().ok()?;
    if modified < since {
        return None;
    }
    let v: Value = serde_json::from_str(&std::fs::read_to_string(&path).ok()?).ok()?;
    v["median"]["point_estimate"].as_f64()
}
