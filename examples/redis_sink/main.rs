//! The guide's external-store sink: usage records in Redis ([`RedisSink`],
//! in `sink.rs`), held to the whole conformance kit, then serving the quick
//! start app.
//!
//! ```text
//! cargo run --example redis_sink --features testing               # serve on 127.0.0.1:9000, records under "tower-usage:"
//! cargo run --example redis_sink --features testing -- --demo     # run the conformance kit, then the app's demo; exit
//! TOWER_USAGE_REDIS_URL=redis://10.0.0.5:6379 cargo run --example redis_sink --features testing -- --demo
//! ```
//!
//! It needs a Redis server: `TOWER_USAGE_REDIS_URL`, by default
//! `redis://127.0.0.1:6379`. Start one with `redis-server --daemonize yes`
//! (or `docker run -d -p 6379:6379 redis`). When none answers, the example
//! fails and says so: it never skips.
//!
//! `--demo` runs every check of `tower_usage::testing` on a sink of its own
//! (a fresh key prefix per check, deleted after the check by the kit's
//! clean-up hook), then sends the reference requests to the app over another
//! fresh prefix, prints `/v1/usage` and the summary, and deletes that prefix.
//! `tests/conformance_redis.rs` runs the same kit under `cargo test`.

#[path = "../common/app.rs"]
mod app;
mod sink;

use std::sync::Arc;

use sink::{redis_url, RedisSink};
use tower_usage::testing::{SinkKit, CHECKS};

/// A key prefix no other run uses.
fn fresh_prefix(what: &str) -> String {
    format!("tower-usage-{what}:{:016x}", fastrand::u64(..))
}

#[tokio::main]
async fn main() -> std::process::ExitCode {
    match run().await {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("redis_sink: {e}");
            std::process::ExitCode::FAILURE
        }
    }
}

async fn run() -> Result<(), Box<dyn std::error::Error>> {
    let args = app::Args::parse(&[], "redis_sink [--demo] [--port N]")?;
    let url = redis_url();
    if !args.demo {
        let sink = RedisSink::connect(&url, "tower-usage").await?;
        eprintln!("usage log: Redis at {url}, keys under \"tower-usage:\"");
        return app::run("redis_sink example", sink, &args).await;
    }

    // Fails here, with how to start Redis, when none answers.
    RedisSink::connect(&url, &fresh_prefix("probe")).await?;
    let url_for_kit = url.clone();
    SinkKit::new(move || {
        let url = url_for_kit.clone();
        async move {
            RedisSink::connect(&url, &fresh_prefix("kit"))
                .await
                .unwrap_or_else(|e| panic!("{e}"))
        }
    })
    .clean_up(|sink: Arc<RedisSink>| async move { sink.delete_all().await })
    .run_all()
    .await;
    eprintln!(
        "conformance: all {} checks passed on Redis at {url}",
        CHECKS.len()
    );

    let sink = RedisSink::connect(&url, &fresh_prefix("demo")).await?;
    let result = app::run("redis_sink example", sink.clone(), &args).await;
    sink.delete_all().await?;
    result
}
