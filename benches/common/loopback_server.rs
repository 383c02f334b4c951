//! The server of the loopback benchmark (`benches/loopback.rs`): the workload of
//! `benches/common/http_app.rs` (a POST of 1 KiB JSON parsed, a small JSON reply)
//! served by axum on 127.0.0.1 with N Tokio workers, bare or behind one of the
//! layers compared.
//!
//! Built as two examples, `loopback_server` (the system allocator, glibc's
//! malloc on Linux) and `loopback_server_mimalloc` (mimalloc as the global
//! allocator), which include this file and call [`main`]. The driver starts one
//! process per measurement:
//!
//! * environment: `TOWER_USAGE_LOOPBACK_VARIANT` (one of [`VARIANTS`]),
//!   `TOWER_USAGE_LOOPBACK_WORKERS` (Tokio worker threads, default 2);
//! * stdout: `listening on 127.0.0.1:PORT` once it accepts connections;
//! * it serves until its stdin closes, then flushes the writer and prints
//!   `stats captured=N written=N dropped=N failed=N` (the driver checks that
//!   the writer kept up: nothing dropped).

use std::io::{BufRead, Write};

use axum::Router;
use tower_usage::{MemorySink, UsageHandle, UsageLayer};

use super::http_app::{router, NullSink};

/// The variants a server can run.
pub(crate) const VARIANTS: &[&str] =
    &["bare", "trace", "null", "memory", "memory-thread", "sqlite"];

/// Serves one variant until stdin closes; see the module docs.
pub(crate) fn main() -> Result<(), Box<dyn std::error::Error>> {
    let variant = std::env::var("TOWER_USAGE_LOOPBACK_VARIANT").unwrap_or_else(|_| "bare".into());
    let workers: usize = match std::env::var("TOWER_USAGE_LOOPBACK_WORKERS") {
        Ok(n) => n.parse()?,
        Err(_) => 2,
    };
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(workers.max(1))
        .enable_all()
        .build()?;
    // Kept until the server ends: the SQLite file lives in it.
    let dir = tempfile::tempdir()?;
    rt.block_on(async {
        let (app, handle) = app(&variant, dir.path())?;
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        println!("listening on {}", listener.local_addr()?);
        std::io::stdout().flush()?;
        let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
        // The driver closes stdin to stop the server.
        std::thread::spawn(move || {
            for line in std::io::stdin().lock().lines() {
                if line.is_err() {
                    break;
                }
            }
            let _ = stop_tx.send(());
        });
        axum::serve(listener, app)
            .with_graceful_shutdown(async {
                let _ = stop_rx.await;
            })
            .await?;
        if let Some(handle) = handle {
            handle.flush().await;
            let s = handle.stats();
            println!(
                "stats captured={} written={} dropped={} failed={}",
                s.captured, s.written, s.dropped, s.failed
            );
        }
        Ok(())
    })
}

/// The router of `variant`, and the writer's handle when it has a usage layer.
fn app(
    variant: &str,
    dir: &std::path::Path,
) -> Result<(Router, Option<UsageHandle>), Box<dyn std::error::Error>> {
    fn usage<S: tower_usage::UsageSink + 'static>(sink: S) -> (Router, Option<UsageHandle>) {
        let layer = UsageLayer::new(sink);
        let handle = layer.handle();
        (router().layer(layer), Some(handle))
    }
    Ok(match variant {
        "bare" => (router(), None),
        "trace" => {
            let subscriber = tracing_subscriber::fmt()
                .with_writer(std::io::sink)
                .with_max_level(tracing::Level::INFO)
                .finish();
            tracing::subscriber::set_global_default(subscriber)?;
            use tower_http::trace::{DefaultMakeSpan, DefaultOnRequest, DefaultOnResponse};
            let trace = tower_http::trace::TraceLayer::new_for_http()
                .make_span_with(DefaultMakeSpan::new().level(tracing::Level::INFO))
                .on_request(DefaultOnRequest::new().level(tracing::Level::INFO))
                .on_response(DefaultOnResponse::new().level(tracing::Level::INFO));
            (router().layer(trace), None)
        }
        "null" => usage(NullSink),
        "memory" => usage(MemorySink::new()),
        // The writer on a thread of its own (a current-thread runtime), off the
        // Tokio workers that serve requests, as `pair()` allows.
        "memory-thread" => {
            let (layer, worker) = UsageLayer::new(MemorySink::new()).pair();
            let handle = layer.handle();
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_time()
                .build()?;
            std::thread::Builder::new()
                .name("usage-writer".into())
                .spawn(move || rt.block_on(worker))?;
            (router().layer(layer), Some(handle))
        }
        "sqlite" => usage(tower_usage::SqliteSink::open(dir.join("usage.db"))?),
        other => return Err(format!("unknown variant {other:?}: one of {VARIANTS:?}").into()),
    })
}
