//! The conformance kit against `SqliteSink`: a fresh database file in a temporary
//! directory for every check, and once more against an in-memory database.
#![cfg(all(feature = "sqlite", feature = "testing"))]

use std::sync::Arc;
use std::time::Duration;

use tempfile::TempDir;
use tower_usage::sink::{ConsumerScope, SummaryQuery, UsageSummary};
use tower_usage::testing::{run_all, run_check, SinkKit};
use tower_usage::{SinkError, SqliteSink, UsagePage, UsageQuery, UsageRecord, UsageSink};

/// A `SqliteSink` on a file of its own, in a directory removed when the check
/// is done with the sink.
#[derive(Debug)]
struct FileSink {
    // Dropped first: the writer thread closes the file before the directory goes.
    sink: SqliteSink,
    _dir: Arc<TempDir>,
}

impl FileSink {
    fn new() -> Self {
        let dir = tempfile::tempdir().expect("a temporary directory");
        let sink = SqliteSink::open(dir.path().join("usage.db")).expect("open the database");
        Self {
            sink,
            _dir: Arc::new(dir),
        }
    }

    /// The same file, opened again (as a restarted process would).
    fn reopen(&self) -> Result<Self, SinkError> {
        let path = self.sink.path().expect("a file");
        Ok(Self {
            sink: SqliteSink::open(path)?,
            _dir: Arc::clone(&self._dir),
        })
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

    async fn erase_consumer(&self, consumer: &str) -> Result<u64, SinkError> {
        self.sink.erase_consumer(consumer).await
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

/// The lifecycle checks with the kit's hooks: the file reopened, and
/// retention run now with `expire_older_than`.
#[tokio::test]
async fn sqlite_file_erases_and_expires_for_good() {
    for check in ["erasure", "retention"] {
        let result = SinkKit::new(|| async { FileSink::new() })
            .reopen(|sink: Arc<FileSink>| async move { sink.reopen() })
            .expire(|sink: Arc<FileSink>, age: Duration| async move {
                sink.sink.expire_older_than(age).await.map(drop)
            })
            .run_check(check)
            .await;
        assert_eq!(result, Ok(()), "{check}");
    }
}
