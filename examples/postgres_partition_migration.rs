//! Times the migration of a plain `PostgresSink` table to a table
//! partitioned by day: fills a plain table (made by the sink itself) with
//! N records of ~1 KiB bodies each way, spread over 90 days, then connects
//! with `.partition(PartitionBy::Day)` and prints how long that took.
//!
//! ```text
//! cargo run --example postgres_partition_migration --features postgres -- 1000000
//! ```
//!
//! The server is `TOWER_USAGE_POSTGRES_URL` (default
//! `postgres://postgres@127.0.0.1:5432/test`); the example works in a schema
//! of its own, dropped at the end.

use std::time::Instant;

use tower_usage::sink::postgres::PartitionBy;
use tower_usage::PostgresSink;

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let n: i64 = std::env::args()
        .nth(1)
        .map(|a| a.parse())
        .transpose()?
        .unwrap_or(1_000_000);
    let url = std::env::var("TOWER_USAGE_POSTGRES_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/test".to_owned());
    let schema = format!("tu_migration_{:08x}", fastrand::u32(..));
    // The plain table, as the current code makes it.
    let plain = PostgresSink::builder()
        .schema(&schema)
        .connect(&url)
        .await?;
    let client = plain.pool().get().await?;
    let started = Instant::now();
    client
        .batch_execute(&format!(
            "INSERT INTO \"{schema}\".usage_records (id, consumer, created_at, method, path, \
             route, status, duration_us, outcome, query, params, req_headers, resp_headers, \
             req_body, req_body_size, req_body_truncated, resp_body, resp_body_size, \
             resp_body_truncated) \
             SELECT lpad(g::text, 26, '0'), 'acct_' || (g % 100), \
             now() - make_interval(secs => (g % 7776000)), 'POST', '/items/' || g, \
             '/items/{{id}}', 200, 1000 + g % 5000, 'complete', '', '[]', \
             '[[\"content-type\",\"application/json\"]]', '[]', \
             convert_to(repeat('x', 1024), 'UTF8'), 1024, false, \
             convert_to(repeat('y', 1024), 'UTF8'), 1024, false \
             FROM generate_series(1, {n}) AS g"
        ))
        .await?;
    drop(client);
    println!("filled {n} records in {:.1?}", started.elapsed());
    drop(plain);

    let started = Instant::now();
    let parted = PostgresSink::builder()
        .schema(&schema)
        .partition(PartitionBy::Day)
        .connect(&url)
        .await?;
    let took = started.elapsed();
    let client = parted.pool().get().await?;
    let kept: i64 = client
        .query_one(
            &format!("SELECT count(*) FROM \"{schema}\".usage_records"),
            &[],
        )
        .await?
        .get(0);
    println!(
        "migrated {kept} records to daily partitions in {took:.1?}: {:.1} s per million",
        took.as_secs_f64() * 1_000_000.0 / n as f64
    );
    client
        .batch_execute(&format!("DROP SCHEMA \"{schema}\" CASCADE"))
        .await?;
    assert_eq!(kept, n);
    Ok(())
}
