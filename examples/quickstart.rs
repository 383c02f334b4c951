//! The quick start: the three endpoints of the reference usage page, recorded by
//! `UsageLayer` into a `MemorySink`, and `GET /v1/usage` serving the log.
//!
//! ```text
//! cargo run --example quickstart                # serve on 127.0.0.1:9000
//! cargo run --example quickstart -- --port 8080 # another port
//! cargo run --example quickstart -- --demo      # send the reference requests, print /v1/usage and its summary, exit
//! ```
//!
//! The app itself is in `common/app.rs`, shared with the `sqlite` and `postgres`
//! examples, which run it on the other sinks.

#[path = "common/app.rs"]
mod app;

use tower_usage::MemorySink;

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args = app::Args::parse(&[], "quickstart [--demo] [--port N]")?;
    app::run("quickstart", MemorySink::new(), &args).await
}
