//! Storage outages under a paced load, through a real axum app on 127.0.0.1
//! with the real `PostgresSink`, with default writer settings: PostgreSQL
//! stopped and started mid-load, and PostgreSQL hung (a TCP proxy that stops
//! forwarding); and PostgreSQL stopped longer than a small queue holds, with a
//! disk spool. Every request is answered, and every record is stored: the row
//! count is checked exactly.
//!
//! Each test runs a PostgreSQL cluster of its own (`initdb` into a temporary
//! directory, `pg_ctl` on a free port, as the `postgres` OS user when run as
//! root): the shared server on 5432 is never stopped. `PG_BIN` overrides where
//! the server binaries are (default: the newest `/usr/lib/postgresql/*/bin`).
#![cfg(feature = "postgres")]

mod common;
#[path = "support/pg_cluster.rs"]
mod pg_cluster;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::routing::get;
use axum::Router;
use common::*;
use http::StatusCode;
use pg_cluster::{FreezingProxy, PrivateCluster};
use tower_usage::{PostgresSink, UsageHandle, UsageLayer, UsageSink};

fn app<S: UsageSink>(layer: UsageLayer<S>) -> Router {
    Router::new()
        .route("/ok", get(|| async { "ok" }))
        .layer(layer)
}

/// Sends `rate` requests per second for `duration` over pooled connections;
/// each one must be answered `200`. Returns how many were sent.
async fn paced(addr: SocketAddr, rate: u32, duration: Duration) -> u64 {
    let client = client();
    let mut tick = tokio::time::interval(Duration::from_secs(1) / rate);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
    let start = Instant::now();
    let mut tasks = Vec::new();
    while start.elapsed() < duration {
        tick.tick().await;
        let client = client.clone();
        tasks.push(tokio::spawn(async move {
            let req = http::Request::get(format!("http://{addr}/ok"))
                .body(full(""))
                .unwrap();
            let res = client.request(req).await.unwrap();
            let status = res.status();
            let _ = http_body_util::BodyExt::collect(res.into_body()).await;
            status
        }));
    }
    let n = tasks.len() as u64;
    for t in tasks {
        assert_eq!(t.await.unwrap(), StatusCode::OK);
    }
    n
}

/// The most captures pending (queued or in flight) while `until` runs.
fn max_pending(handle: UsageHandle) -> tokio::task::JoinHandle<u64> {
    tokio::spawn(async move {
        let mut max = 0;
        for _ in 0..400 {
            max = max.max(handle.stats().pending());
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        max
    })
}

async fn rows(url: &str) -> i64 {
    let (client, conn) = tokio_postgres::connect(url, tokio_postgres::NoTls)
        .await
        .unwrap();
    tokio::spawn(conn);
    client
        .query_one("SELECT count(*) FROM usage_records", &[])
        .await
        .unwrap()
        .get(0)
}

async fn everything_stored(handle: &UsageHandle, sent: u64, url: &str) {
    eventually("every exchange captured", || {
        handle.stats().captured >= sent
    })
    .await;
    let outcome = handle.flush_timeout(Duration::from_secs(30)).await;
    let s = handle.stats();
    assert!(outcome.is_complete(), "{outcome:?} {s:?}");
    assert_eq!(
        (s.captured, s.written, s.failed, s.dropped, s.pending()),
        (sent, sent, 0, 0, 0),
        "{s:?}"
    );
    assert!(s.retried > 0, "the fault was seen: {s:?}");
    assert_eq!(rows(url).await, sent as i64, "rows in PostgreSQL");
}

/// Stops the cluster half a second from now, and starts it again `down` later.
fn stop_for(pg: Arc<PrivateCluster>, down: Duration) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        tokio::time::sleep(Duration::from_millis(500)).await;
        let p = pg.clone();
        tokio::task::spawn_blocking(move || p.stop_server())
            .await
            .unwrap();
        tokio::time::sleep(down).await;
        tokio::task::spawn_blocking(move || pg.start_server())
            .await
            .unwrap();
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_stopped_and_started_mid_load_loses_nothing() {
    let pg = Arc::new(
        tokio::task::spawn_blocking(PrivateCluster::start)
            .await
            .unwrap(),
    );
    let url = pg.url();
    let sink = PostgresSink::connect(&url).await.unwrap();
    let layer = UsageLayer::new(sink);
    let handle = layer.handle();
    let addr = serve(app(layer)).await;

    let faults = stop_for(pg.clone(), Duration::from_secs(2));
    let pending = max_pending(handle.clone());
    let sent = paced(addr, 300, Duration::from_secs(3)).await;
    faults.await.unwrap();
    let pending = pending.await.unwrap();
    assert!(
        pending >= 300,
        "the fault held records back: at most {pending} pending"
    );
    everything_stored(&handle, sent, &url).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_hung_mid_load_loses_nothing() {
    let pg = tokio::task::spawn_blocking(PrivateCluster::start)
        .await
        .unwrap();
    let proxy = FreezingProxy::start(SocketAddr::from(([127, 0, 0, 1], pg.port))).await;
    let sink = PostgresSink::connect(&format!(
        "host=127.0.0.1 port={} user=postgres dbname=postgres",
        proxy.addr.port()
    ))
    .await
    .unwrap();
    let layer = UsageLayer::new(sink);
    let handle = layer.handle();
    let addr = serve(app(layer)).await;

    let faults = {
        let proxy = proxy.clone();
        tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(500)).await;
            proxy.freeze(true);
            tokio::time::sleep(Duration::from_secs(2)).await;
            proxy.freeze(false);
        })
    };
    let pending = max_pending(handle.clone());
    let sent = paced(addr, 300, Duration::from_secs(3)).await;
    faults.await.unwrap();
    let pending = pending.await.unwrap();
    assert!(
        pending >= 300,
        "the fault held records back: at most {pending} pending"
    );
    eventually("every exchange captured", || {
        handle.stats().captured >= sent
    })
    .await;
    let outcome = handle.flush_timeout(Duration::from_secs(30)).await;
    let s = handle.stats();
    assert!(outcome.is_complete(), "{outcome:?} {s:?}");
    assert_eq!(
        (s.captured, s.written, s.failed, s.dropped),
        (sent, sent, 0, 0),
        "{s:?}"
    );
    assert_eq!(rows(&pg.url()).await, sent as i64, "rows in PostgreSQL");
}

#[cfg(feature = "spool")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_stopped_longer_than_the_queue_holds_loses_nothing_with_a_spool() {
    use tower_usage::sink::spool::Spooled;
    let pg = Arc::new(
        tokio::task::spawn_blocking(PrivateCluster::start)
            .await
            .unwrap(),
    );
    let url = pg.url();
    let dir = tempfile::tempdir().unwrap();
    let sink = PostgresSink::connect(&url).await.unwrap();
    let spooled = Spooled::new(sink, dir.path(), 64 * 1024 * 1024).unwrap();
    // 64 captures: a tenth of what the outage holds back.
    let layer = UsageLayer::new(spooled.clone()).queue_capacity(64);
    let handle = layer.handle();
    let addr = serve(app(layer)).await;

    let faults = stop_for(pg.clone(), Duration::from_secs(2));
    let most_spooled = {
        let spooled = spooled.clone();
        tokio::spawn(async move {
            let mut max = 0;
            for _ in 0..400 {
                max = max.max(spooled.stats().spooled);
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
            max
        })
    };
    let sent = paced(addr, 300, Duration::from_secs(3)).await;
    faults.await.unwrap();
    let most_spooled = most_spooled.await.unwrap();
    assert!(
        most_spooled >= 300,
        "the outage went to the spool: at most {most_spooled} spooled"
    );
    eventually("every exchange captured", || {
        handle.stats().captured >= sent
    })
    .await;
    assert!(handle
        .flush_timeout(Duration::from_secs(30))
        .await
        .is_complete());
    assert!(spooled.flush_timeout(Duration::from_secs(30)).await);
    let s = handle.stats();
    assert_eq!(
        (s.captured, s.written, s.failed, s.dropped, s.pending()),
        (sent, sent, 0, 0, 0),
        "{s:?}"
    );
    let p = spooled.stats();
    assert_eq!(
        (p.written, p.failed, p.dropped, p.spooled),
        (p.appended, 0, 0, 0),
        "{p:?}"
    );
    assert!(p.retried > 0, "the fault was seen: {p:?}");
    assert_eq!(rows(&url).await, sent as i64, "rows in PostgreSQL");
}
