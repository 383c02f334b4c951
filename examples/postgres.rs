//! The quick start app on a `PostgresSink`: the same three endpoints and
//! `GET /v1/usage`, with the usage log in a PostgreSQL table.
//!
//! ```text
//! cargo run --example postgres --features postgres                    # serve on 127.0.0.1:9000
//! cargo run --example postgres --features postgres -- --demo          # send the reference requests, print /v1/usage, exit
//! cargo run --example postgres --features postgres -- --url postgres://app@db/app --schema telemetry
//! ```
//!
//! The server is `--url`, else `TOWER_USAGE_POSTGRES_URL`, else
//! `postgres://postgres@127.0.0.1:5432/test`. The table is
//! `<schema>.usage_records`, created if missing; the schema is `--schema`, by
//! default `public`. With `--demo` and no `--schema`, the demo works in a fresh
//! schema of its own (`tu_demo_<random>`) and drops it at the end.

#[path = "common/app.rs"]
mod app;

use tower_usage::PostgresSink;

const DEFAULT_URL: &str = "postgres://postgres@127.0.0.1:5432/test";

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args = app::Args::parse(
        &["url", "schema"],
        "postgres [--demo] [--port N] [--url URL] [--schema NAME]",
    )?;
    let url = match args.option("url") {
        Some(url) => url.to_owned(),
        None => std::env::var("TOWER_USAGE_POSTGRES_URL").unwrap_or_else(|_| DEFAULT_URL.into()),
    };
    let throwaway = args.demo && args.option("schema").is_none();
    let schema = match args.option("schema") {
        Some(schema) => schema.to_owned(),
        None if throwaway => format!("tu_demo_{:016x}", fastrand::u64(..)),
        None => tower_usage::sink::postgres::DEFAULT_SCHEMA.to_owned(),
    };
    let sink = PostgresSink::builder()
        .schema(&schema)
        .connect(&url)
        .await
        .map_err(|e| format!("{e} (is PostgreSQL up? --url or TOWER_USAGE_POSTGRES_URL)"))?;
    eprintln!("usage log: {sink:?}");
    let result = app::run("postgres example", sink.clone(), &args).await;
    if throwaway {
        let client = sink.pool().get().await?;
        client
            .batch_execute(&format!("DROP SCHEMA \"{schema}\" CASCADE"))
            .await?;
    }
    result
}
