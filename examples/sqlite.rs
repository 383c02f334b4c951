//! The quick start app on a `SqliteSink`: the same three endpoints and
//! `GET /v1/usage`, with the usage log in a SQLite file that outlives the process.
//!
//! ```text
//! cargo run --example sqlite --features sqlite                       # serve on 127.0.0.1:9000, log in a temporary file
//! cargo run --example sqlite --features sqlite -- --db usage.db      # log in usage.db (created if missing)
//! cargo run --example sqlite --features sqlite -- --demo             # send the reference requests, print /v1/usage, exit
//! cargo run --example sqlite --features sqlite -- --demo --db usage.db --port 8080
//! ```
//!
//! Without `--db`, the file is in a temporary directory removed at exit.

#[path = "common/app.rs"]
mod app;

use std::path::PathBuf;

use tower_usage::SqliteSink;

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args = app::Args::parse(&["db"], "sqlite [--demo] [--port N] [--db FILE]")?;
    // Kept until the end of `main`: the directory goes when it is dropped.
    let mut temp_dir = None;
    let path = match args.option("db") {
        Some(path) => PathBuf::from(path),
        None => temp_dir
            .insert(tempfile::tempdir()?)
            .path()
            .join("usage.db"),
    };
    let sink = SqliteSink::open(&path)?;
    eprintln!("usage log: sqlite database {}", path.display());
    app::run("sqlite example", sink, &args).await
}
