//! The conformance kit against `SqliteSink`: a fresh database file in a temporary
//! directory for every check, and once more against an in-memory database.
#![cfg(all(feature = "sqlite", feature = "testing"))]

use tempfile::TempDir;
use tower_usage::sink::{ConsumerScope, SummaryQuery, UsageSummary};
use tower_usage::testing::{run_all, run_check};
use tower_usage::{SinkError, SqliteSink, UsagePage, UsageQuery, UsageRecord, UsageSink};

/// A `SqliteSink` on a file of its own, in a directory removed when the check
/// is done with the sink.
#[derive(Debug)]
struct FileSink {
    // Dropped first: the writer thread closes the file before the directory goes.
    sink: SqliteSink,
    _dir: TempDir,
}

impl FileSink {
    fn new() -> Self {
        let dir = tempfile::tempdir().expect("a temporary directory");
        let sink = SqliteSink::open(dir.path().join("usage.db")).expect("open the database");
        Self { sink, _dir: dir }
    }
}

#[async_trait::async_trait]
impl UsageSink for FileSink {
    async fn record(&self, batch: &[UsageRecord]) -> Result<(), SinkError> {
        self.sink.record(batch).await
    }

    async fn query(&self, query: &UsageQuery) -> Result<UsagePage, SinkError> {
        self.sink.query(query).await
    }

    async fn get(&self, id: &str, scope: &ConsumerScope) -> Result<Option<UsageRecord>, SinkError> {
        self.sink.get(id, scope).await
    }

    async fn summarize(&self, query: &SummaryQuery) -> Result<UsageSummary, SinkError> {
        self.sink.summarize(query).await
    }
}

// One test per check, each on a new file: `sqlite_file::round_trip`, ...
tower_usage::sink_conformance_tests!(mod sqlite_file, async { FileSink::new() });

/// The writers check on a multi-threaded runtime, so that readers on the blocking
/// pool, the writer thread and the writing tasks really run side by side.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn sqlite_file_takes_concurrent_writers_on_many_threads() {
    assert_eq!(
        run_check("concurrent_writers", || async { FileSink::new() }).await,
        Ok(())
    );
}

/// An in-memory database has a single connection shared by reads and writes: a
/// different code path for queries, checked once through `run_all`.
#[tokio::test]
async fn in_memory_sqlite_passes_run_all() {
    run_all(|| async { SqliteSink::in_memory().expect("an in-memory database") }).await;
}
