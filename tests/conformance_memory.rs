//! The conformance kit against `MemorySink`, through the macro and through `run_all`.
#![cfg(feature = "testing")]

use tower_usage::testing::{run_all, run_check, CHECKS};
use tower_usage::MemorySink;

// One test per check: `sink_conformance::round_trip`, ...
tower_usage::sink_conformance_tests!(async { MemorySink::new() });

// A second instantiation in the same file, with a module name of its own.
tower_usage::sink_conformance_tests!(mod roomy_memory, async {
    MemorySink::with_capacity(50_000)
});

#[tokio::test]
async fn memory_sink_passes_run_all() {
    run_all(|| async { MemorySink::new() }).await;
}

/// Real parallelism for the writers check: a multi-threaded runtime.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn memory_sink_takes_concurrent_writers_on_many_threads() {
    assert_eq!(
        run_check("concurrent_writers", || async { MemorySink::new() }).await,
        Ok(())
    );
}

#[tokio::test]
async fn every_listed_check_runs() {
    for name in CHECKS {
        assert_eq!(
            run_check(name, || async { MemorySink::new() }).await,
            Ok(()),
            "{name}"
        );
    }
}

#[tokio::test]
async fn a_sink_that_is_not_empty_is_refused() {
    use tower_usage::{UsageRecord, UsageSink};
    let shared = MemorySink::new();
    let t = time::macros::datetime!(2024-05-01 09:50:00 UTC);
    let leftover = UsageRecord {
        id: UsageRecord::new_id(t),
        method: "GET".into(),
        path: "/left/over".into(),
        status: 200,
        created_at: t,
        ..UsageRecord::default()
    };
    shared.record(&[leftover]).await.unwrap();
    let err = run_check("empty_sink", || {
        let sink = shared.clone();
        async move { sink }
    })
    .await
    .unwrap_err();
    assert!(err.contains("fresh, empty sink"), "{err}");
}

#[tokio::test]
async fn a_sink_too_small_for_the_kit_fails_the_large_batch() {
    let err = run_check("large_batch", || async { MemorySink::with_capacity(1_000) })
        .await
        .unwrap_err();
    assert!(err.contains("10,000"), "{err}");
    assert!(err.contains("missing"), "{err}");
}

/// The retention check with the kit's hook: `expire_older_than` now.
#[tokio::test]
async fn memory_sink_expires_exactly_the_older_records() {
    let result = tower_usage::testing::SinkKit::new(|| async { MemorySink::new() })
        .expire(
            |sink: std::sync::Arc<MemorySink>, age: std::time::Duration| async move {
                sink.expire_older_than(age);
                Ok(())
            },
        )
        .run_check("retention")
        .await;
    assert_eq!(result, Ok(()));
}

/// The same with `max_age` set instead: the records past it are hidden at
/// once, removed at the next write.
#[tokio::test]
async fn memory_sink_with_max_age_passes_retention() {
    let result = tower_usage::testing::SinkKit::new(|| async { MemorySink::new() })
        .expire(
            |sink: std::sync::Arc<MemorySink>, age: std::time::Duration| async move {
                let _ = MemorySink::clone(&sink).max_age(age);
                Ok(())
            },
        )
        .run_check("retention")
        .await;
    assert_eq!(result, Ok(()));
}
