//! The quick start app on a `ClickHouseSink`: the same three endpoints and
//! `GET /v1/usage`, with the usage log in a ClickHouse table.
//!
//! ```text
//! cargo run --example clickhouse --features clickhouse                  # serve on 127.0.0.1:9000
//! cargo run --example clickhouse --features clickhouse -- --demo        # send the reference requests, print /v1/usage, exit
//! cargo run --example clickhouse --features clickhouse -- --url http://ch:8123 --database telemetry
//! ```
//!
//! The server is `--url`, else `TOWER_USAGE_CLICKHOUSE_URL`, else
//! `http://127.0.0.1:8123` (the HTTP interface). The table is
//! `<database>.usage_records`, created if missing; the database is
//! `--database`, by default `default`. With `--demo` and no `--database`, the
//! demo works in a fresh database of its own (`tu_demo_<random>`) and drops it
//! at the end.
//!
//! The app keeps the layer's default batching (256 records, 100 ms), which
//! suits a demo; in production give ClickHouse larger, rarer inserts (see the
//! sink's docs, "Batching").

#[path = "common/app.rs"]
mod app;

use tower_usage::ClickHouseSink;

const DEFAULT_URL: &str = "http://127.0.0.1:8123";

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args = app::Args::parse(
        &["url", "database"],
        "clickhouse [--demo] [--port N] [--url URL] [--database NAME]",
    )?;
    let url = match args.option("url") {
        Some(url) => url.to_owned(),
        None => std::env::var("TOWER_USAGE_CLICKHOUSE_URL").unwrap_or_else(|_| DEFAULT_URL.into()),
    };
    let throwaway = args.demo && args.option("database").is_none();
    let database = match args.option("database") {
        Some(database) => database.to_owned(),
        None if throwaway => format!("tu_demo_{:016x}", fastrand::u64(..)),
        None => tower_usage::sink::clickhouse::DEFAULT_DATABASE.to_owned(),
    };
    let sink = ClickHouseSink::builder()
        .database(&database)
        .connect(&url)
        .await
        .map_err(|e| format!("{e} (is ClickHouse up? --url or TOWER_USAGE_CLICKHOUSE_URL)"))?;
    eprintln!("usage log: {sink:?}");
    let result = app::run("clickhouse example", sink.clone(), &args).await;
    if throwaway {
        sink.client()
            .query(&format!("DROP DATABASE `{database}`"))
            .execute()
            .await?;
    }
    result
}
