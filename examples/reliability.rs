//! A load-and-fault harness: an axum app with `UsageLayer` (default writer
//! settings) under a paced load, while the storage fails; then how many records
//! were stored, lost and counted, lost and *not* counted. It re-measures the
//! tables of the crate docs' "Reliability" section (`src/docs/reliability.md`).
//! Not run in CI.
//!
//! ```text
//! cargo run --release --example reliability --features postgres,sqlite,spool -- \
//!   [--rate N] [--spool] [--queue N] [SCENARIO...]
//! ```
//!
//! `--spool` wraps the PostgreSQL scenarios' sink in a disk spool
//! (`Spooled`, 1 GiB, in a temporary directory); `--queue N` sets their
//! layer's `queue_capacity` (default: the crate's, 65,536).
//!
//! Scenarios (all by default): `pg-down:SECS` (PostgreSQL stopped for SECS
//! seconds, then started), `pg-hang:SECS` (a TCP proxy in front of PostgreSQL
//! forwards nothing for SECS seconds), `panic-once` (a sink whose `record`
//! panics once), `sqlite-deleted` (the SQLite file deleted mid-load),
//! `sqlite-full` (SQLite on a 40 MiB tmpfs with 2 KiB bodies and
//! `max_rows(5000)`, until the volume fills; then a restart on it), `memory`
//! (a sink that never answers, 64 KiB bodies each way: the process's resident
//! memory against `queue_bytes`; not in the default set).
//!
//! PostgreSQL runs as a private cluster of this process (`initdb` and `pg_ctl`
//! from `/usr/lib/postgresql/*/bin` or `PG_BIN`, as the `postgres` OS user when
//! run as root), never a shared server. `sqlite-full` needs `mount -t tmpfs`
//! (root); it says so when it cannot.

#[path = "../tests/support/pg_cluster.rs"]
mod pg_cluster;

use std::net::SocketAddr;
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::routing::post;
use axum::Router;
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use pg_cluster::{FreezingProxy, PrivateCluster};
use tower_usage::sink::spool::Spooled;
use tower_usage::{
    PostgresSink, SinkError, SqliteSink, UsageHandle, UsageLayer, UsagePage, UsageQuery,
    UsageRecord, UsageSink, WriterStats,
};

/// The load starts; the fault comes this much later; the load goes on this
/// long after the fault ends.
const BEFORE: Duration = Duration::from_secs(2);
const AFTER: Duration = Duration::from_secs(3);

#[tokio::main]
async fn main() {
    let mut rate = 1000u32;
    let mut writer = Writer::default();
    let mut scenarios = Vec::new();
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--rate" => rate = args.next().and_then(|r| r.parse().ok()).expect("--rate N"),
            "--spool" => writer.spool = true,
            "--queue" => {
                writer.queue = Some(args.next().and_then(|q| q.parse().ok()).expect("--queue N"))
            }
            "--help" | "-h" => {
                println!("reliability [--rate N] [--spool] [--queue N] [pg-down:SECS|pg-hang:SECS|panic-once|sqlite-deleted|sqlite-full]...");
                return;
            }
            other => scenarios.push(other.to_owned()),
        }
    }
    if scenarios.is_empty() {
        scenarios = [
            "pg-down:0.7",
            "pg-down:2.2",
            "pg-down:5",
            "pg-down:10",
            "pg-down:60",
            "pg-hang:5",
            "pg-hang:20",
            "pg-hang:60",
            "panic-once",
            "sqlite-deleted",
            "sqlite-full",
        ]
        .map(String::from)
        .to_vec();
    }
    println!("| fault | sent | answered 2xx | stored | lost, counted (failed + dropped) | still pending | lost, uncounted | flush |");
    println!("|---|---:|---:|---:|---:|---:|---:|---|");
    for s in scenarios {
        let (name, secs) = match s.split_once(':') {
            Some((n, x)) => (n.to_owned(), x.parse::<f64>().expect("SECS")),
            None => (s.clone(), 0.0),
        };
        let fault = Duration::from_secs_f64(secs);
        let row = match name.as_str() {
            "pg-down" => pg_fault(rate, fault, false, &writer).await,
            "pg-hang" => pg_fault(rate, fault, true, &writer).await,
            "panic-once" => panic_once(rate).await,
            "sqlite-deleted" => sqlite_deleted(rate).await,
            "sqlite-full" => sqlite_full(rate).await,
            "memory" => memory(rate).await,
            other => panic!("unknown scenario {other}"),
        };
        println!("| {s} | {row}");
    }
}

/// The PostgreSQL scenarios' writer settings.
#[derive(Default)]
struct Writer {
    spool: bool,
    queue: Option<usize>,
}

/// What one run gives: the table row after the fault's name.
struct Outcome {
    sent: u64,
    ok: u64,
    stored: u64,
    stats: WriterStats,
    flush: &'static str,
    note: String,
}

impl std::fmt::Display for Outcome {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let s = &self.stats;
        let counted = s.failed + s.dropped;
        let uncounted =
            s.captured as i64 - self.stored as i64 - counted as i64 - s.pending() as i64;
        write!(
            f,
            "{} | {} | {} | {} | {} | {} | {} {}|",
            self.sent,
            self.ok,
            self.stored,
            counted,
            s.pending(),
            uncounted,
            self.flush,
            if self.note.is_empty() {
                String::new()
            } else {
                format!("({}) ", self.note)
            }
        )
    }
}

fn app<S: UsageSink>(layer: UsageLayer<S>) -> Router {
    Router::new()
        .route(
            "/work",
            post(|body: Bytes| async move { body.len().to_string() }),
        )
        .layer(layer)
}

async fn serve(app: Router) -> SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    addr
}

/// Sends `rate` requests per second with `body` for `duration`; returns
/// (sent, answered 2xx).
async fn load(addr: SocketAddr, rate: u32, duration: Duration, body: Bytes) -> (u64, u64) {
    let client: Client<_, Full<Bytes>> = Client::builder(TokioExecutor::new()).build_http();
    let ok = Arc::new(AtomicU64::new(0));
    let mut tick = tokio::time::interval(Duration::from_secs(1) / rate);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
    let start = Instant::now();
    let mut tasks = tokio::task::JoinSet::new();
    let mut sent = 0;
    while start.elapsed() < duration {
        tick.tick().await;
        sent += 1;
        let (client, ok, body) = (client.clone(), ok.clone(), body.clone());
        tasks.spawn(async move {
            let req = http::Request::post(format!("http://{addr}/work"))
                .header("authorization", "Bearer reliability")
                .body(Full::new(body))
                .unwrap();
            if let Ok(res) = client.request(req).await {
                let good = res.status().is_success();
                if res.into_body().collect().await.is_ok() && good {
                    ok.fetch_add(1, Ordering::Relaxed);
                }
            }
        });
        while tasks.try_join_next().is_some() {}
    }
    while tasks.join_next().await.is_some() {}
    (sent, ok.load(Ordering::Relaxed))
}

async fn settle(handle: &UsageHandle, sent: u64) -> &'static str {
    let t = Instant::now();
    while handle.stats().captured < sent && t.elapsed() < Duration::from_secs(5) {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let started = Instant::now();
    match handle.flush_timeout(Duration::from_secs(120)).await {
        o if o.is_complete() => {
            if started.elapsed() > Duration::from_secs(1) {
                "complete (slow)"
            } else {
                "complete"
            }
        }
        _ => "timed out after 120 s",
    }
}

async fn pg_rows(url: &str) -> u64 {
    let (client, conn) = tokio_postgres::connect(url, tokio_postgres::NoTls)
        .await
        .unwrap();
    tokio::spawn(conn);
    let n: i64 = client
        .query_one("SELECT count(*) FROM usage_records", &[])
        .await
        .unwrap()
        .get(0);
    n as u64
}

async fn cluster() -> Arc<PrivateCluster> {
    Arc::new(
        tokio::task::spawn_blocking(PrivateCluster::start)
            .await
            .unwrap(),
    )
}

async fn pg_fault(rate: u32, fault: Duration, hang: bool, writer: &Writer) -> Outcome {
    let pg = cluster().await;
    let proxy = FreezingProxy::start(SocketAddr::from(([127, 0, 0, 1], pg.port))).await;
    let url = if hang {
        format!(
            "host=127.0.0.1 port={} user=postgres dbname=postgres",
            proxy.addr.port()
        )
    } else {
        pg.url()
    };
    let sink = PostgresSink::connect(&url).await.unwrap();
    let spool_dir = tempfile::tempdir().unwrap();
    let spooled = writer
        .spool
        .then(|| Spooled::new(sink.clone(), spool_dir.path(), 1 << 30).unwrap());
    let inner: Box<dyn UsageSink> = match &spooled {
        Some(s) => Box::new(s.clone()),
        None => Box::new(sink),
    };
    let mut layer = UsageLayer::new(inner);
    if let Some(queue) = writer.queue {
        layer = layer.queue_capacity(queue);
    }
    let handle = layer.handle();
    // The most records the spool held at once, sampled every 10 ms.
    let peak = Arc::new(AtomicU64::new(0));
    let sampler = {
        let (spooled, peak) = (spooled.clone(), peak.clone());
        tokio::spawn(async move {
            loop {
                if let Some(s) = &spooled {
                    peak.fetch_max(s.stats().spooled, Ordering::Relaxed);
                }
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        })
    };
    let addr = serve(app(layer)).await;
    let faults = {
        let pg = pg.clone();
        tokio::spawn(async move {
            tokio::time::sleep(BEFORE).await;
            if hang {
                proxy.freeze(true);
                tokio::time::sleep(fault).await;
                proxy.freeze(false);
            } else {
                let p = pg.clone();
                let t = Instant::now();
                tokio::task::spawn_blocking(move || p.stop_server())
                    .await
                    .unwrap();
                tokio::time::sleep(fault.saturating_sub(t.elapsed())).await;
                tokio::task::spawn_blocking(move || pg.start_server())
                    .await
                    .unwrap();
            }
        })
    };
    let (sent, ok) = load(
        addr,
        rate,
        BEFORE + fault + AFTER,
        Bytes::from_static(b"{}"),
    )
    .await;
    faults.await.unwrap();
    let mut flush = settle(&handle, sent).await;
    if let Some(spooled) = &spooled {
        // Acknowledged by the spool is written for the writer: wait for the
        // write-back too.
        if !spooled.flush_timeout(Duration::from_secs(120)).await {
            flush = "spool not written back after 120 s";
        }
    }
    sampler.abort();
    let peak = peak.load(Ordering::Relaxed);
    Outcome {
        sent,
        ok,
        stored: pg_rows(&pg.url()).await,
        stats: handle.stats(),
        flush,
        note: if writer.spool {
            format!("spool: at most {peak} records on disk")
        } else {
            String::new()
        },
    }
}

/// Panics on its first `record` call, then stores in PostgreSQL.
#[derive(Clone)]
struct PanicOnce {
    inner: PostgresSink,
    panicked: Arc<AtomicBool>,
}

#[async_trait::async_trait]
impl UsageSink for PanicOnce {
    async fn record(&self, batch: &[UsageRecord]) -> Result<(), SinkError> {
        if !self.panicked.swap(true, Ordering::SeqCst) {
            panic!("a sink that panics once");
        }
        self.inner.record(batch).await
    }

    async fn query(&self, query: &UsageQuery) -> Result<UsagePage, SinkError> {
        self.inner.query(query).await
    }
}

async fn panic_once(rate: u32) -> Outcome {
    let pg = cluster().await;
    let sink = PanicOnce {
        inner: PostgresSink::connect(&pg.url()).await.unwrap(),
        panicked: Arc::default(),
    };
    let layer = UsageLayer::new(sink);
    let handle = layer.handle();
    let addr = serve(app(layer)).await;
    let (sent, ok) = load(addr, rate, BEFORE + AFTER, Bytes::from_static(b"{}")).await;
    let flush = settle(&handle, sent).await;
    Outcome {
        sent,
        ok,
        stored: pg_rows(&pg.url()).await,
        stats: handle.stats(),
        flush,
        note: String::new(),
    }
}

fn sqlite_rows(path: &Path) -> u64 {
    rusqlite::Connection::open(path)
        .and_then(|c| {
            c.query_row("SELECT count(*) FROM usage_records", [], |r| {
                r.get::<_, i64>(0)
            })
        })
        .map_or(0, |n| n as u64)
}

async fn sqlite_deleted(rate: u32) -> Outcome {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("usage.db");
    let sink = SqliteSink::open(&path).unwrap();
    let layer = UsageLayer::new(sink);
    let handle = layer.handle();
    let addr = serve(app(layer)).await;
    let before = {
        let (path, handle) = (path.clone(), handle.clone());
        tokio::spawn(async move {
            tokio::time::sleep(BEFORE).await;
            handle.flush().await;
            let before = handle.stats().written;
            std::fs::remove_file(&path).unwrap();
            before
        })
    };
    let (sent, ok) = load(addr, rate, BEFORE + AFTER, Bytes::from_static(b"{}")).await;
    let deleted_with_file = before.await.unwrap();
    let flush = settle(&handle, sent).await;
    let in_new_file = sqlite_rows(&path);
    Outcome {
        sent,
        ok,
        stored: in_new_file + deleted_with_file,
        stats: handle.stats(),
        flush,
        note: format!("{deleted_with_file} were in the deleted file, {in_new_file} in the new one"),
    }
}

async fn sqlite_full(rate: u32) -> Outcome {
    let mnt = tempfile::tempdir().unwrap();
    let status = std::process::Command::new("mount")
        .args(["-t", "tmpfs", "-o", "size=40m", "tmpfs"])
        .arg(mnt.path())
        .status();
    if !status.is_ok_and(|s| s.success()) {
        return Outcome {
            sent: 0,
            ok: 0,
            stored: 0,
            stats: WriterStats::default(),
            flush: "not measured",
            note: "cannot mount a tmpfs here".into(),
        };
    }
    let path = mnt.path().join("usage.db");
    let body = Bytes::from(vec![b'x'; 2048]);
    let sink = SqliteSink::builder(&path).max_rows(5000).open().unwrap();
    let layer = UsageLayer::new(sink.clone());
    let handle = layer.handle();
    let addr = serve(app(layer)).await;
    let (sent, ok) = load(addr, rate, Duration::from_secs(30), body.clone()).await;
    let flush = settle(&handle, sent).await;
    let stats = handle.stats();
    let stored = stats.written; // retention deletes rows: the sink's own count
    drop((handle, sink));
    tokio::time::sleep(Duration::from_millis(500)).await;
    // A restart on the same volume: 1,000 more records.
    let sink = SqliteSink::builder(&path).max_rows(5000).open();
    let restart = match sink {
        Err(e) => format!("restart: open failed: {e}"),
        Ok(sink) => {
            let layer = UsageLayer::new(sink);
            let handle = layer.handle();
            let addr = serve(app(layer)).await;
            let (sent2, _) = load(addr, 1000, Duration::from_secs(1), body).await;
            let _ = settle(&handle, sent2).await;
            format!("restart: {} of {sent2} written", handle.stats().written)
        }
    };
    let _ = std::process::Command::new("umount")
        .arg("-l")
        .arg(mnt.path())
        .status();
    Outcome {
        sent,
        ok,
        stored,
        stats,
        flush,
        note: restart,
    }
}

/// The process's resident memory, from `/proc/self/status`, in MiB.
fn rss_mib() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmRSS:"))
                .and_then(|l| l.split_whitespace().nth(1)?.parse::<u64>().ok())
        })
        .map_or(0, |kib| kib / 1024)
}

/// Never answers.
#[derive(Clone)]
struct Stalled;

#[async_trait::async_trait]
impl UsageSink for Stalled {
    async fn record(&self, _batch: &[UsageRecord]) -> Result<(), SinkError> {
        std::future::pending().await
    }

    async fn query(&self, _query: &UsageQuery) -> Result<UsagePage, SinkError> {
        Ok(UsagePage::default())
    }
}

async fn memory(rate: u32) -> Outcome {
    let before = rss_mib();
    let layer = UsageLayer::new(Stalled);
    let handle = layer.handle();
    let router = Router::new()
        .route("/work", post(|body: Bytes| async move { body }))
        .layer(layer);
    let addr = serve(router).await;
    let body = Bytes::from(vec![b'x'; 64 * 1024]);
    let mut peak = before;
    let mut sent = 0;
    let mut ok = 0;
    for _ in 0..12 {
        let (s, o) = load(addr, rate, Duration::from_secs(1), body.clone()).await;
        sent += s;
        ok += o;
        peak = peak.max(rss_mib());
    }
    let stats = handle.stats();
    Outcome {
        sent,
        ok,
        stored: 0,
        stats,
        flush: "not flushed (the sink never answers)",
        note: format!(
            "resident memory {before} MiB before, {peak} MiB at the peak, with {} captures held (queue_bytes 256 MiB)",
            stats.pending()
        ),
    }
}
