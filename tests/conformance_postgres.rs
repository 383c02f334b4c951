//! The conformance kit against `PostgresSink`: every check on a schema of its
//! own (`tu_conf_<random>`), dropped when the check is over.
//!
//! The server is `TOWER_USAGE_POSTGRES_URL`, by default
//! `postgres://postgres@127.0.0.1:5432/test`. When it is down these tests fail,
//! saying how to start it; they never skip.
#![cfg(all(feature = "postgres", feature = "testing"))]

use std::sync::Arc;
use std::time::Duration;

use tower_usage::testing::{run_check, SinkKit};
use tower_usage::PostgresSink;

const DEFAULT_URL: &str = "postgres://postgres@127.0.0.1:5432/test";

fn url() -> String {
    std::env::var("TOWER_USAGE_POSTGRES_URL").unwrap_or_else(|_| DEFAULT_URL.to_owned())
}

/// A plain connection to the server, to drop the check's schema afterwards.
async fn admin() -> tokio_postgres::Client {
    let url = url();
    let (client, conn) = match tokio_postgres::connect(&url, tokio_postgres::NoTls).await {
        Ok(pair) => pair,
        Err(e) => panic!(
            "PostgreSQL is not reachable at {url} ({e}). The conformance tests need a \
             server: start it with `pg_ctlcluster --skip-systemctl-redirect \
             $(ls /etc/postgresql) main start`, or point TOWER_USAGE_POSTGRES_URL at one \
             (default {DEFAULT_URL})."
        ),
    };
    tokio::spawn(async move {
        let _ = conn.await;
    });
    client
}

/// Runs the check `name` against a `PostgresSink` on a new schema, drops every
/// schema the check made (even when it failed), then reports.
async fn conforms(name: &str) {
    let admin = admin().await;
    let mut schemas = Vec::new();
    let result = run_check(name, || {
        let schema = format!("tu_conf_{:016x}", fastrand::u64(..));
        schemas.push(schema.clone());
        async move {
            PostgresSink::builder()
                .schema(schema)
                .pool_size(4)
                .connect(&url())
                .await
                .expect("connect and migrate")
        }
    })
    .await;
    for schema in &schemas {
        let sql = format!("DROP SCHEMA IF EXISTS \"{schema}\" CASCADE");
        if let Err(e) = admin.batch_execute(&sql).await {
            eprintln!("could not drop schema {schema}: {e}");
        }
    }
    if let Err(msg) = result {
        panic!("sink conformance check `{name}` failed on PostgreSQL: {msg}");
    }
}

/// One test per check of the kit, from the kit's own list of checks.
macro_rules! checks {
    ($($check:ident)*) => {
        $(
            #[tokio::test]
            async fn $check() {
                conforms(::core::stringify!($check)).await;
            }
        )*
    };
}

tower_usage::__tower_usage_checks!(@each checks);

/// The writers check on a multi-threaded runtime: the pool's connections really
/// write at the same time.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_writers_on_many_threads() {
    conforms("concurrent_writers").await;
}

/// Runs the kit's `check` with its hooks on sinks of one new schema,
/// dropped afterwards: `reopen` connects a new sink to it, as a restarted
/// process would; with `max_age`, the sinks are made with it and `expire`
/// runs the maintainer now.
async fn check_with_hooks(check: &str, max_age: Option<Duration>) -> Result<(), String> {
    let admin = admin().await;
    let schema = format!("tu_conf_{:016x}", fastrand::u64(..));
    let connect = move |schema: String| async move {
        let mut builder = PostgresSink::builder().schema(schema).pool_size(2);
        if let Some(age) = max_age {
            builder = builder.max_age(age);
        }
        builder.connect(&url()).await
    };
    let first = schema.clone();
    let result = SinkKit::new(move || {
        let schema = first.clone();
        async move { connect(schema).await.expect("connect and migrate") }
    })
    .reopen(move |sink: Arc<PostgresSink>| connect(sink.schema().to_owned()))
    .expire(move |sink: Arc<PostgresSink>, age| async move {
        assert_eq!(
            Some(age),
            max_age,
            "the sinks here are made with this max_age"
        );
        // The sink's own round at start may still hold the lock.
        let mut round = sink.maintain().await?;
        for _ in 0..100 {
            if !round.skipped {
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
            round = sink.maintain().await?;
        }
        // A plain table's rows are deleted, not only hidden (by this round,
        // or by the sink's own round at start if it ran after the writes).
        assert!(!round.skipped && sink.expired() > 0, "{round:?}");
        Ok(())
    })
    .run_check(check)
    .await;
    let _ = admin
        .batch_execute(&format!("DROP SCHEMA IF EXISTS \"{schema}\" CASCADE"))
        .await;
    result
}

/// The erasure check with the kit's `reopen` hook: a new sink on the check's
/// schema, as a restarted process would connect.
#[tokio::test]
async fn erasure_holds_after_reconnecting() {
    assert_eq!(check_with_hooks("erasure", None).await, Ok(()));
}

/// The retention check on a plain (unpartitioned) table made with
/// `max_age(1 hour)`: the kit's `expire` hook runs the maintainer now, which
/// deletes the expired rows in chunks, and reads must show exactly the younger
/// records, also through a sink connected anew. The partitioned table's
/// retention: `tests/postgres_partitions.rs`.
#[tokio::test]
async fn retention_on_a_plain_table_deletes_exactly_the_expired_rows() {
    let hour = Some(Duration::from_secs(3600));
    assert_eq!(check_with_hooks("retention", hour).await, Ok(()));
}
