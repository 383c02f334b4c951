//! Measures retention while the writer runs: a sink holding N records spread
//! evenly over 10 days (so a day is N/10 of them) loses its oldest day to
//! `max_age`, while a task writes batches of 512 records as fast as the sink
//! takes them. Prints how long retention took and the longest and median
//! write (a batch's `record` call) before and during it.
//!
//! ```text
//! cargo run --release --example retention_stall --features sqlite,postgres -- sqlite 1000000
//! cargo run --release --example retention_stall --features sqlite,postgres -- postgres 1000000
//! ```
//!
//! SQLite: the file is filled, then opened again with `max_age(9 days)` and
//! a 1 s retention interval; the background sweep deletes in 500-row steps
//! between batches. PostgreSQL: a table partitioned by day is filled (its
//! partitions made by the sink's own migration from a plain table), then a
//! second sink with `max_age(9 days)` runs `maintain()`, which drops the
//! expired day's partition. The server is `TOWER_USAGE_POSTGRES_URL`
//! (default `postgres://postgres@127.0.0.1:5432/test`), in a schema of its
//! own, dropped at the end. Records are small (about 300 bytes stored), so
//! that filling takes seconds.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use time::OffsetDateTime;
use tower_usage::sink::postgres::PartitionBy;
use tower_usage::{CapturedBody, PostgresSink, SqliteSink, UsageRecord, UsageSink};

const DAY: Duration = Duration::from_secs(24 * 3600);
const BATCH: usize = 512;

fn record(created_at: OffsetDateTime, n: u64) -> UsageRecord {
    let mut r = UsageRecord {
        id: UsageRecord::new_id(created_at),
        consumer: Some(format!("acct_{}", n % 100)),
        method: "POST".into(),
        path: format!("/items/{n}"),
        route: Some("/items/{id}".into()),
        status: 200,
        created_at,
        duration_us: 1000 + n % 5000,
        ..UsageRecord::default()
    };
    r.request.body = CapturedBody::complete(format!(r#"{{"n":{n},"name":"widget"}}"#));
    r.response = CapturedBody::complete(r#"{"ok":true}"#);
    r
}

/// Fills `sink` with `n` records spread evenly over the 10 days before now.
async fn fill(sink: &impl UsageSink, n: u64) -> Result<(), Box<dyn std::error::Error>> {
    let now = OffsetDateTime::now_utc();
    let span = (10 * DAY).as_millis() as i64;
    let started = Instant::now();
    let mut batch = Vec::with_capacity(4096);
    for i in 0..n {
        let age = span * i as i64 / n as i64;
        batch.push(record(now - time::Duration::milliseconds(span - age), i));
        if batch.len() == 4096 || i + 1 == n {
            sink.record(&batch).await?;
            batch.clear();
        }
    }
    println!("filled {n} records in {:.1?}", started.elapsed());
    Ok(())
}

/// Writes batches of fresh records until `stop`; returns each call's time.
fn writer(
    sink: impl UsageSink + 'static,
    stop: Arc<AtomicBool>,
) -> tokio::task::JoinHandle<Vec<(Instant, Duration)>> {
    tokio::spawn(async move {
        let mut times = Vec::new();
        let mut n = 0u64;
        while !stop.load(Ordering::Relaxed) {
            let now = OffsetDateTime::now_utc();
            let batch: Vec<UsageRecord> = (0..BATCH as u64).map(|i| record(now, n + i)).collect();
            n += BATCH as u64;
            let started = Instant::now();
            sink.record(&batch).await.expect("a write");
            times.push((started, started.elapsed()));
        }
        times
    })
}

fn report(times: &[(Instant, Duration)], from: Instant, to: Instant) {
    let split = |during: bool| {
        let mut v: Vec<Duration> = times
            .iter()
            .filter(|(at, _)| (*at >= from && *at < to) == during)
            .map(|(_, d)| *d)
            .collect();
        v.sort();
        v
    };
    for (label, v) in [
        ("before/after", split(false)),
        ("during retention", split(true)),
    ] {
        if v.is_empty() {
            println!("{label}: no batch");
            continue;
        }
        println!(
            "{label}: {} batches of {BATCH}, median {:.1?}, longest {:.1?}",
            v.len(),
            v[v.len() / 2],
            v[v.len() - 1]
        );
    }
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let which = args.next().unwrap_or_else(|| "sqlite".into());
    let n: u64 = args
        .next()
        .map(|a| a.parse())
        .transpose()?
        .unwrap_or(1_000_000);
    let stop = Arc::new(AtomicBool::new(false));
    match which.as_str() {
        "sqlite" => {
            let dir = tempfile::tempdir()?;
            let path = dir.path().join("usage.db");
            fill(&SqliteSink::open(&path)?, n).await?;
            let sink = SqliteSink::builder(&path)
                .max_age(9 * DAY)
                .retention_interval(Duration::from_secs(1))
                .open()?;
            let writes = writer(sink.clone(), stop.clone());
            let started = Instant::now();
            // The sweep starts within a second; it is done once the count
            // stops growing past a tenth of the records.
            while sink.expired() < n / 10 - n / 1000 {
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            let done = Instant::now();
            tokio::time::sleep(Duration::from_secs(2)).await;
            stop.store(true, Ordering::Relaxed);
            let times = writes.await?;
            println!(
                "sqlite: {} records expired in {:.1?} (from the sink's open; the sweep starts within 1 s)",
                sink.expired(),
                done - started
            );
            report(&times, started, done);
        }
        "postgres" => {
            let url = std::env::var("TOWER_USAGE_POSTGRES_URL")
                .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/test".to_owned());
            let schema = format!("tu_retention_{:08x}", fastrand::u32(..));
            let plain = PostgresSink::builder()
                .schema(&schema)
                .connect(&url)
                .await?;
            fill(&plain, n).await?;
            drop(plain);
            let parted = PostgresSink::builder()
                .schema(&schema)
                .partition(PartitionBy::Day)
                .connect(&url)
                .await?;
            let writes = writer(parted.clone(), stop.clone());
            tokio::time::sleep(Duration::from_secs(2)).await;
            let started = Instant::now();
            let expiring = PostgresSink::builder()
                .schema(&schema)
                .partition(PartitionBy::Day)
                .max_age(9 * DAY)
                .connect(&url)
                .await?;
            let round = expiring.maintain().await?;
            let done = Instant::now();
            tokio::time::sleep(Duration::from_secs(2)).await;
            stop.store(true, Ordering::Relaxed);
            let times = writes.await?;
            println!(
                "postgres: {} records expired ({} partitions dropped) in {:.1?} (connect with max_age, then maintain)",
                expiring.expired(),
                round.dropped,
                done - started
            );
            report(&times, started, done);
            let client = expiring.pool().get().await?;
            client
                .batch_execute(&format!("DROP SCHEMA \"{schema}\" CASCADE"))
                .await?;
        }
        other => return Err(format!("unknown sink {other:?}: sqlite or postgres").into()),
    }
    Ok(())
}
