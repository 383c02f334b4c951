//! The writer's metrics (feature `metrics`), scraped as a real Prometheus text
//! exposition over HTTP from a real axum app on 127.0.0.1: the documented
//! names, and values that match what happened.
//!
//! One test: the recorder is global to the process, and each step checks the
//! sums of every writer so far.

mod common;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::routing::{get, post};
use axum::Router;
use bytes::Bytes;
use common::*;
use http::{Request, StatusCode};
use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};
use tokio::sync::Semaphore;
use tower_usage::{
    MemorySink, SinkError, SinkErrorKind, UsageLayer, UsagePage, UsageQuery, UsageRecord, UsageSink,
};

/// The app: a route recorded by `layer`, and `/metrics` next to it.
fn app<S: UsageSink>(layer: UsageLayer<S>, prometheus: PrometheusHandle) -> Router {
    Router::new()
        .route("/echo", post(|body: Bytes| async move { body }))
        .layer(layer)
        .merge(Router::new().route("/metrics", get(move || async move { prometheus.render() })))
}

async fn echo(addr: SocketAddr, body: &str) {
    let req = Request::post(format!("http://{addr}/echo"))
        .body(full(body.to_owned()))
        .unwrap();
    assert_eq!(send(req).await.0, StatusCode::OK);
}

/// Every sample of the exposition, by its name with labels
/// (`tower_usage_batch_size_bucket{le="1"}`).
async fn scrape(addr: SocketAddr) -> BTreeMap<String, f64> {
    let req = Request::get(format!("http://{addr}/metrics"))
        .body(full(""))
        .unwrap();
    let (status, _, body) = send(req).await;
    assert_eq!(status, StatusCode::OK);
    let text = String::from_utf8(body.to_vec()).unwrap();
    text.lines()
        .filter(|line| !line.starts_with('#') && !line.trim().is_empty())
        .map(|line| {
            let (name, value) = line.rsplit_once(' ').unwrap();
            (name.to_owned(), value.parse::<f64>().unwrap())
        })
        .collect()
}

fn value(samples: &BTreeMap<String, f64>, name: &str) -> f64 {
    *samples
        .get(name)
        .unwrap_or_else(|| panic!("{name} not in the exposition: {samples:#?}"))
}

/// Fails its first `failures` calls with a temporary error, then stores
/// nothing; `permanent`: fails every call for good.
#[derive(Clone, Default)]
struct FlakySink {
    calls: Arc<AtomicUsize>,
    failures: usize,
    permanent: bool,
}

#[async_trait::async_trait]
impl UsageSink for FlakySink {
    async fn record(&self, _: &[UsageRecord]) -> Result<(), SinkError> {
        let call = self.calls.fetch_add(1, Ordering::SeqCst);
        if self.permanent {
            return Err(SinkError::message(SinkErrorKind::Other, "refused").permanent());
        }
        if call < self.failures {
            return Err(SinkError::message(SinkErrorKind::Unavailable, "down").temporary());
        }
        Ok(())
    }

    async fn query(&self, _: &UsageQuery) -> Result<UsagePage, SinkError> {
        Ok(UsagePage::default())
    }
}

/// Holds every write until a permit is added.
#[derive(Clone)]
struct GateSink(Arc<Semaphore>);

#[async_trait::async_trait]
impl UsageSink for GateSink {
    async fn record(&self, _: &[UsageRecord]) -> Result<(), SinkError> {
        self.0.acquire().await.unwrap().forget();
        Ok(())
    }

    async fn query(&self, _: &UsageQuery) -> Result<UsagePage, SinkError> {
        Ok(UsagePage::default())
    }
}

/// Scrapes until `name` reads `want`, for up to 30 s.
async fn until(addr: SocketAddr, name: &str, want: f64) -> BTreeMap<String, f64> {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let samples = scrape(addr).await;
        if samples.get(name) == Some(&want) {
            return samples;
        }
        assert!(
            Instant::now() < deadline,
            "{name} never read {want}: {samples:#?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn the_writer_metrics_appear_in_a_prometheus_scrape_with_their_documented_names() {
    let prometheus = PrometheusBuilder::new()
        .with_recommended_naming(true)
        .install_recorder()
        .unwrap();

    // 1. Five exchanges written by a MemorySink.
    let layer = UsageLayer::new(MemorySink::new()).max_delay(Duration::from_millis(10));
    let handle = layer.handle();
    let addr = serve(app(layer, prometheus.clone())).await;
    let bodies = ["a", "bb", "ccc", "dddd", "eeeee"];
    for body in bodies {
        echo(addr, body).await;
    }
    handle.flush().await;
    let s = scrape(addr).await;
    assert_eq!(value(&s, "tower_usage_records_captured_total"), 5.0);
    assert_eq!(value(&s, "tower_usage_records_written_total"), 5.0);
    assert_eq!(value(&s, "tower_usage_records_dropped_total"), 0.0);
    assert_eq!(value(&s, "tower_usage_records_failed_total"), 0.0);
    assert_eq!(value(&s, "tower_usage_batches_retried_total"), 0.0);
    assert_eq!(value(&s, "tower_usage_records_queued"), 0.0);
    assert_eq!(value(&s, "tower_usage_records_in_flight"), 0.0);
    assert_eq!(value(&s, "tower_usage_queue_bytes"), 0.0);
    // One record size per record; the batches add up to the records.
    assert_eq!(value(&s, "tower_usage_record_size_bytes_count"), 5.0);
    assert!(value(&s, "tower_usage_record_size_bytes_sum") >= 5.0 * 100.0);
    assert_eq!(value(&s, "tower_usage_batch_size_sum"), 5.0);
    let batches = value(&s, "tower_usage_batch_size_count");
    assert!((1.0..=5.0).contains(&batches), "{batches}");
    assert_eq!(
        value(&s, "tower_usage_sink_write_duration_seconds_count"),
        batches,
        "one sink call per batch"
    );
    // No label on any of ours (the quantile/bucket labels are the exporter's).
    for name in s.keys().filter(|n| n.starts_with("tower_usage_")) {
        let labels = name.split_once('{').map(|(_, l)| l);
        assert!(
            labels.is_none_or(|l| l.starts_with("quantile=") || l.starts_with("le=")),
            "{name}"
        );
    }
    // The help text and type are there too.
    let req = Request::get(format!("http://{addr}/metrics"))
        .body(full(""))
        .unwrap();
    let text = String::from_utf8(send(req).await.2.to_vec()).unwrap();
    assert!(
        text.contains("# TYPE tower_usage_records_captured_total counter"),
        "{text}"
    );
    assert!(text.contains("# TYPE tower_usage_records_queued gauge"));
    assert!(text.contains("# HELP tower_usage_records_dropped_total Usage captures dropped"));

    // 2. A sink that fails twice (temporarily), then stores: two retries.
    let flaky = FlakySink {
        failures: 2,
        ..FlakySink::default()
    };
    let layer = UsageLayer::new(flaky.clone()).max_delay(Duration::from_millis(10));
    let handle = layer.handle();
    let addr = serve(app(layer, prometheus.clone())).await;
    echo(addr, "retry me").await;
    handle.flush().await;
    let s = scrape(addr).await;
    assert_eq!(value(&s, "tower_usage_batches_retried_total"), 2.0);
    assert_eq!(value(&s, "tower_usage_records_written_total"), 6.0);
    assert_eq!(
        value(&s, "tower_usage_sink_write_duration_seconds_count"),
        batches + 3.0
    );

    // 3. A sink that refuses for good: failed.
    let refusing = FlakySink {
        permanent: true,
        ..FlakySink::default()
    };
    let layer = UsageLayer::new(refusing).max_delay(Duration::from_millis(10));
    let handle = layer.handle();
    let addr = serve(app(layer, prometheus.clone())).await;
    echo(addr, "no").await;
    echo(addr, "never").await;
    handle.flush().await;
    let s = scrape(addr).await;
    let failed = value(&s, "tower_usage_records_failed_total");
    assert_eq!(failed, 2.0);
    assert_eq!(value(&s, "tower_usage_records_captured_total"), 8.0);

    // 4. A queue of two, its writer not running yet: three dropped.
    let (layer, worker) = UsageLayer::new(MemorySink::new())
        .queue_capacity(2)
        .max_delay(Duration::from_millis(10))
        .pair();
    let handle = layer.handle();
    let addr = serve(app(layer, prometheus.clone())).await;
    for body in ["1", "2", "3", "4", "5"] {
        echo(addr, body).await;
    }
    tokio::spawn(worker);
    handle.flush().await;
    let s = scrape(addr).await;
    assert_eq!(value(&s, "tower_usage_records_dropped_total"), 3.0);
    assert_eq!(value(&s, "tower_usage_records_captured_total"), 13.0);
    assert_eq!(value(&s, "tower_usage_records_written_total"), 8.0);

    // 5. While a batch is in the sink's hands, the gauges show it; then
    // they go back to zero.
    // The writer starts once all three are queued: one batch of three.
    let gate = Arc::new(Semaphore::new(0));
    let (layer, worker) = UsageLayer::new(GateSink(gate.clone()))
        .max_delay(Duration::from_millis(10))
        .pair();
    let handle = layer.handle();
    let addr = serve(app(layer, prometheus.clone())).await;
    for body in ["x", "y", "z"] {
        echo(addr, body).await;
    }
    tokio::spawn(worker);
    let s = until(addr, "tower_usage_records_in_flight", 3.0).await;
    assert!(value(&s, "tower_usage_queue_bytes") >= 3.0 * 100.0);
    assert_eq!(value(&s, "tower_usage_records_queued"), 0.0);
    gate.add_permits(100);
    handle.flush().await;
    let s = scrape(addr).await;
    assert_eq!(value(&s, "tower_usage_records_in_flight"), 0.0);
    assert_eq!(value(&s, "tower_usage_queue_bytes"), 0.0);
    assert_eq!(value(&s, "tower_usage_records_written_total"), 11.0);
    assert_eq!(
        value(&s, "tower_usage_records_captured_total"),
        value(&s, "tower_usage_records_written_total")
            + value(&s, "tower_usage_records_failed_total")
            + value(&s, "tower_usage_records_dropped_total"),
        "every capture is accounted for"
    );

    // 6. Once that writer has stopped, a request still goes through; its
    // capture is dropped, and counted, after the writer's last report.
    let stats = handle.clone();
    handle.shutdown().await;
    echo(addr, "late").await;
    echo(addr, "later").await;
    assert_eq!(stats.stats().dropped, 2);
    let s = scrape(addr).await;
    assert_eq!(value(&s, "tower_usage_records_dropped_total"), 5.0);
    assert_eq!(value(&s, "tower_usage_records_captured_total"), 18.0);
    assert_eq!(
        value(&s, "tower_usage_records_captured_total"),
        value(&s, "tower_usage_records_written_total")
            + value(&s, "tower_usage_records_failed_total")
            + value(&s, "tower_usage_records_dropped_total"),
        "every capture is accounted for, the late ones too"
    );

    #[cfg(feature = "spool")]
    spooled(prometheus).await;
}

/// Step 7: a spooled sink, whose records go to disk while the inner sink is
/// down, and are written back once it answers.
#[cfg(feature = "spool")]
async fn spooled(prometheus: PrometheusHandle) {
    use tower_usage::sink::spool::Spooled;

    let dir = tempfile::tempdir().unwrap();
    let inner = FlakySink {
        failures: 1,
        ..FlakySink::default()
    };
    let spooled = Spooled::new(inner, dir.path(), 1 << 20).unwrap();
    let layer = UsageLayer::new(spooled.clone()).max_delay(Duration::from_millis(10));
    let handle = layer.handle();
    let addr = serve(app(layer, prometheus)).await;
    echo(addr, "to disk").await;
    handle.flush().await;
    spooled.flush().await;
    let s = until(addr, "tower_usage_spool_written_total", 1.0).await;
    assert_eq!(value(&s, "tower_usage_spool_appended_total"), 1.0);
    assert_eq!(value(&s, "tower_usage_spool_records"), 0.0);
    assert_eq!(value(&s, "tower_usage_spool_dropped_total"), 0.0);
    let stats = spooled.stats();
    assert_eq!((stats.appended, stats.written), (1, 1));
}
