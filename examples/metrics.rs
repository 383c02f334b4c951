//! The writer's metrics at `/metrics`, in the Prometheus text format, next to
//! an app recorded into a `MemorySink`, with its `/v1/usage` endpoint.
//!
//! ```text
//! cargo run --example metrics --features metrics
//! curl -H 'Authorization: Bearer my-token' localhost:3000/hello/you
//! curl localhost:3000/metrics
//!
//! cargo run --example metrics --features metrics -- --demo   # three requests, the scrape's writer lines, exit
//! ```
//!
//! `metrics-exporter-prometheus` renders what the `metrics` facade recorded;
//! any other exporter (OpenTelemetry, StatsD) works the same way: install it
//! as the global recorder before the layer is first used. The names are
//! listed in the `tower_usage::metrics` docs.

use std::future::IntoFuture as _;
use std::time::Duration;

use axum::{routing::get, Router};
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder};
use tower_usage::{MemorySink, UsageLayer, UsageService};

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    // First the recorder: the writer describes its metrics when it starts.
    // Histograms with buckets (rather than the exporter's default summaries),
    // so that they add up across replicas.
    let prometheus = PrometheusBuilder::new()
        .with_recommended_naming(true)
        .set_buckets_for_metric(
            Matcher::Full(tower_usage::metrics::SINK_WRITE_DURATION.into()),
            &[0.001, 0.005, 0.025, 0.1, 0.5, 2.5, 10.0, 30.0],
        )?
        .set_buckets_for_metric(
            Matcher::Full(tower_usage::metrics::BATCH_SIZE.into()),
            &[1.0, 4.0, 16.0, 64.0, 256.0],
        )?
        .set_buckets_for_metric(
            Matcher::Full(tower_usage::metrics::RECORD_SIZE.into()),
            &[512.0, 2048.0, 8192.0, 32768.0, 131072.0],
        )?
        .install_recorder()?;
    // The exporter drains its histograms' samples on upkeep: run it.
    let upkeep = prometheus.clone();
    tokio::spawn(async move {
        let mut every = tokio::time::interval(Duration::from_secs(5));
        loop {
            every.tick().await;
            upkeep.run_upkeep();
        }
    });

    let sink = MemorySink::new();
    let layer = UsageLayer::new(sink.clone());
    let handle = layer.handle();
    let app = Router::new()
        .route("/hello/{name}", get(|| async { "hi" }))
        .nest_service("/v1/usage", UsageService::new(sink))
        .layer(layer)
        // Added after the layer, so scrapes are not recorded.
        .route("/metrics", get(move || async move { prometheus.render() }));

    let demo = std::env::args().any(|arg| arg == "--demo");
    let listener = tokio::net::TcpListener::bind(if demo {
        "127.0.0.1:0"
    } else {
        "127.0.0.1:3000"
    })
    .await?;
    let addr = listener.local_addr()?;
    let server = axum::serve(listener, app).with_graceful_shutdown(async {
        let _ = tokio::signal::ctrl_c().await;
    });
    if !demo {
        println!("listening on http://{addr}");
        server.await?;
        handle.shutdown().await;
        return Ok(());
    }
    tokio::spawn(server.into_future());
    for name in ["you", "me", "them"] {
        fetch(addr, &format!("/hello/{name}")).await?;
    }
    handle.flush().await;
    let scrape = fetch(addr, "/metrics").await?;
    for line in scrape
        .lines()
        .filter(|l| l.starts_with("tower_usage_records"))
    {
        println!("{line}");
    }
    if !scrape.contains("\ntower_usage_records_written_total 3\n") {
        return Err(format!("the scrape does not count 3 records written:\n{scrape}").into());
    }
    handle.shutdown().await;
    Ok(())
}

/// A plain HTTP/1.1 GET on loopback, the whole response as text.
async fn fetch(addr: std::net::SocketAddr, path: &str) -> std::io::Result<String> {
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

    let mut stream = tokio::net::TcpStream::connect(addr).await?;
    let request = format!(
        "GET {path} HTTP/1.1\r\nhost: {addr}\r\nauthorization: Bearer demo-token\r\nconnection: close\r\n\r\n"
    );
    stream.write_all(request.as_bytes()).await?;
    let mut response = String::new();
    stream.read_to_string(&mut response).await?;
    Ok(response)
}
