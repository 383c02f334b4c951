//! Runs N requests in-process through an axum Router, bare or with the layer, for
//! measuring with tools that count work rather than wall time (steadier than
//! criterion on a busy machine):
//!
//! ```text
//! cargo build --release --example overhead_probe --example overhead_probe_mimalloc
//! perf stat -e task-clock target/release/examples/overhead_probe bare 100000
//! perf stat -e task-clock target/release/examples/overhead_probe memory 100000
//! valgrind --tool=callgrind target/release/examples/overhead_probe null 3000
//! valgrind --tool=callgrind target/release/examples/overhead_probe_mimalloc memory 20000
//! ```
//!
//! Modes: `bare`, `identity` (a layer that does nothing: what layering an axum
//! `Router` costs by itself), `null` (the layer with a sink that stores nothing:
//! capture and writer only), `memory` (the layer with `MemorySink`),
//! `withheld` (`memory` with a capture policy that keeps no body: sizes only),
//! `sampled` (`memory` keeping the bodies of 1 request in 100). Same request as
//! `benches/overhead.rs`: a POST with a 1 KiB JSON body and 8 headers. The writer
//! runs on the same single-threaded runtime, so its work is counted.
//!
//! Built as two examples, `overhead_probe` (the system allocator, glibc's malloc
//! on Linux) and `overhead_probe_mimalloc` (mimalloc as the global allocator),
//! which include this file and call [`main`].

use super::http_app::{payload, request, router, NullSink};
use http_body_util::BodyExt;
use tower::ServiceExt;
use tower_usage::{Bodies, CapturePolicy, CaptureRequest, MemorySink, UsageLayer};

pub(crate) fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let mode = args.next().unwrap_or_else(|| "memory".into());
    let n: usize = args
        .next()
        .map(|s| s.parse())
        .transpose()?
        .unwrap_or(10_000);
    let body = bytes::Bytes::from(payload());
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    rt.block_on(async move {
        let (app, handle) = match mode.as_str() {
            "bare" => (router(), None),
            "identity" => (router().layer(tower::layer::util::Identity::new()), None),
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
            "withheld" | "sampled" => {
                let policy = if mode == "withheld" {
                    CapturePolicy::new().bodies(Bodies::Neither)
                } else {
                    CapturePolicy::new().sample_bodies(100)
                };
                let layer = UsageLayer::new(MemorySink::new())
                    .capture_policy(move |_: &CaptureRequest<'_>| policy);
                let handle = layer.handle();
                (router().layer(layer), Some(handle))
            }
            other => {
                return Err(format!(
                    "unknown mode {other:?}: bare, identity, null, memory, withheld or sampled"
                )
                .into())
            }
        };
        for _ in 0..n {
            let req = request(&body);
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
