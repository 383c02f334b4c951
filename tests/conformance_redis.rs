//! The conformance kit against the guide's external-store example,
//! `examples/redis_sink/sink.rs`, over the Redis at `TOWER_USAGE_REDIS_URL`
//! (default `redis://127.0.0.1:6379`): one test per check, each on a fresh key
//! prefix that the kit's clean-up hook deletes after the check.
//!
//! When no Redis answers, every test fails saying how to start one: they
//! never skip.
#![cfg(feature = "testing")]

#[path = "../examples/redis_sink/sink.rs"]
mod sink;

use std::sync::Arc;

use sink::{redis_url, RedisSink};

async fn fresh_sink() -> RedisSink {
    let prefix = format!("tower-usage-test:{:016x}", fastrand::u64(..));
    RedisSink::connect(&redis_url(), &prefix)
        .await
        .unwrap_or_else(|e| panic!("{e}"))
}

tower_usage::sink_conformance_tests!(
    mod redis,
    fresh_sink(),
    clean_up = |sink: Arc<RedisSink>| async move { sink.delete_all().await },
);

/// Each check's keys are gone after it: a run leaves nothing in the store.
#[tokio::test]
async fn the_clean_up_leaves_nothing_behind() {
    use tower_usage::UsageSink;
    let sink = fresh_sink().await;
    let mut record = tower_usage::UsageRecord {
        id: "01J0000000000000000000000A".into(),
        consumer: Some("c".into()),
        ..Default::default()
    };
    record.method = "GET".into();
    sink.record(&[record.clone()]).await.unwrap();
    let scope = tower_usage::sink::ConsumerScope::All;
    assert_eq!(
        sink.get(&record.id, &scope).await.unwrap(),
        Some(record.clone())
    );
    sink.delete_all().await.unwrap();
    assert_eq!(sink.get(&record.id, &scope).await.unwrap(), None);
    let page = sink.query(&Default::default()).await.unwrap();
    assert!(page.records.is_empty());
}
