//! The conformance kit against `Spooled<MemorySink>`: a spool around a sink
//! that answers is the sink, as far as the kit can tell (records go straight
//! through, and every read is the inner sink's).
#![cfg(all(feature = "testing", feature = "spool"))]

use tower_usage::sink::spool::Spooled;
use tower_usage::testing::{run_all, run_check, CHECKS};
use tower_usage::MemorySink;

/// A spool in a directory of its own, under cargo's scratch directory for
/// tests (kept: the kit makes many sinks, and a sink may outlive its check).
fn spooled() -> Spooled<MemorySink> {
    let dir = tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR"))
        .unwrap()
        .keep();
    Spooled::new(MemorySink::new(), dir.join("spool"), 1 << 20).unwrap()
}

// One test per check: `sink_conformance::round_trip`, ...
tower_usage::sink_conformance_tests!(async { spooled() });

#[tokio::test]
async fn spooled_memory_sink_passes_run_all() {
    run_all(|| async { spooled() }).await;
}

/// Real parallelism for the writers check: a multi-threaded runtime.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn spooled_memory_sink_takes_concurrent_writers_on_many_threads() {
    assert_eq!(
        run_check("concurrent_writers", || async { spooled() }).await,
        Ok(())
    );
}

#[tokio::test]
async fn every_listed_check_runs() {
    for name in CHECKS {
        assert_eq!(
            run_check(name, || async { spooled() }).await,
            Ok(()),
            "{name}"
        );
    }
}
