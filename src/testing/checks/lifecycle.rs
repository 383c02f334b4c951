//! `erasure` and `retention`: what leaves a sink leaves it for good, and
//! nothing else does.

use std::sync::Arc;
use std::time::Duration;

use time::OffsetDateTime;

use super::{consumer, Check};
use crate::record::unix_millis;
use crate::sink::{ConsumerScope, Interval, Order, SummaryQuery};
use crate::testing::kit::Hooks;
use crate::testing::support::{
    at, describe, expect_records, read_all, record, scope_name, sorted, Gen,
};
use crate::{SinkErrorKind, UsageQuery, UsageRecord, UsageSink};

/// The consumer the erasure check erases, and those it must leave alone
/// (look-alike names: a prefix, another case, a `LIKE` wildcard).
const ERASED: &str = "acct_erase";
const KEPT: [Option<&str>; 4] = [
    Some("acct_erase_x"),
    Some("ACCT_ERASE"),
    Some("acct_eras%"),
    None,
];

fn scope_of(owner: Option<&str>) -> ConsumerScope {
    owner.map_or(ConsumerScope::Anonymous, consumer)
}

/// `erase_consumer(ERASED)` removes exactly that consumer's records from the
/// list, `get` and the summary, and says how many; the look-alikes and the
/// anonymous records stay; erasing again removes nothing; after the sink is
/// reopened (the kit's `reopen` hook) none of them is back; a record of
/// `ERASED` written after the erasure is kept. A sink that answers
/// `Unsupported` says it cannot erase, and passes.
pub(super) async fn erasure<S: UsageSink>(sink: Arc<S>, hooks: &Hooks<S>) -> Check {
    let mut gen = Gen::new(97);
    let owners = [Some(ERASED), KEPT[0], KEPT[1], KEPT[2], KEPT[3]];
    let records: Vec<UsageRecord> = (0..250)
        .map(|i: usize| {
            let owner = owners[i % owners.len()];
            // Several records per millisecond, owners interleaved.
            gen.request((i / 7) as i64, owner, "GET", "/rest/v1/items", 200)
        })
        .collect();
    record(&*sink, &records, "250 records of five owners").await?;
    let erased = match sink.erase_consumer(ERASED).await {
        Err(e) if e.kind() == SinkErrorKind::Unsupported => return Ok(()),
        Err(e) => {
            return Err(format!(
                "erase_consumer({ERASED:?}) failed: {e} (kind {:?})",
                e.kind()
            ))
        }
        Ok(n) => n,
    };
    let theirs = records
        .iter()
        .filter(|r| r.consumer.as_deref() == Some(ERASED))
        .count() as u64;
    if erased != theirs {
        return Err(format!(
            "erase_consumer({ERASED:?}) said it removed {erased} records; the consumer had {theirs}"
        ));
    }
    let kept: Vec<UsageRecord> = records
        .iter()
        .filter(|r| r.consumer.as_deref() != Some(ERASED))
        .cloned()
        .collect();
    expect_erased(&*sink, &records, &kept, "after erase_consumer").await?;
    match sink.erase_consumer(ERASED).await {
        Ok(0) => {}
        Ok(n) => {
            return Err(format!(
                "erase_consumer({ERASED:?}) a second time said it removed {n} records"
            ))
        }
        Err(e) => {
            return Err(format!(
                "erase_consumer({ERASED:?}) a second time failed: {e}"
            ))
        }
    }
    if let Some(reopen) = &hooks.reopen {
        let again = reopen(Arc::clone(&sink))
            .await
            .map_err(|e| format!("the reopen hook failed: {e}"))?;
        expect_erased(&again, &records, &kept, "after the sink was reopened").await?;
    }
    let later = gen.request(10_000, Some(ERASED), "GET", "/rest/v1/later", 200);
    record(
        &*sink,
        std::slice::from_ref(&later),
        "a record written after the erasure",
    )
    .await?;
    let what = format!("{} after a new record of it", scope_name(&consumer(ERASED)));
    let got = read_all(&*sink, &list(consumer(ERASED)), &what).await?;
    expect_records(&what, std::slice::from_ref(&later), &got)
}

/// What the sink must show after `ERASED` was erased from `records`.
async fn expect_erased<S: UsageSink>(
    sink: &S,
    records: &[UsageRecord],
    kept: &[UsageRecord],
    when: &str,
) -> Check {
    let mut scopes: Vec<ConsumerScope> = KEPT.iter().map(|o| scope_of(*o)).collect();
    scopes.push(ConsumerScope::All);
    scopes.push(consumer(ERASED));
    for scope in scopes {
        let what = format!("{} {when}", scope_name(&scope));
        let expected: Vec<UsageRecord> = kept
            .iter()
            .filter(|r| scope.contains(r.consumer.as_deref()))
            .cloned()
            .collect();
        let got = read_all(sink, &list(scope.clone()), &what).await?;
        expect_records(&what, &sorted(&expected, Order::Asc), &got)?;
        let total = summary_total(sink, scope, at(-60_000), at(3_600_000), &what).await?;
        if total != expected.len() as u64 {
            return Err(format!(
                "{what}: the summary counts {total} requests, the list shows {}",
                expected.len()
            ));
        }
    }
    for r in records
        .iter()
        .filter(|r| r.consumer.as_deref() == Some(ERASED))
    {
        for scope in [ConsumerScope::All, consumer(ERASED)] {
            if let Some(got) = sink
                .get(&r.id, &scope)
                .await
                .map_err(|e| format!("get({:?}) {when}: failed: {e}", r.id))?
            {
                return Err(format!(
                    "get({:?}) in {} {when}: returned the erased {}",
                    r.id,
                    scope_name(&scope),
                    describe(&got)
                ));
            }
        }
    }
    Ok(())
}

/// With the kit's `expire` hook: records from 3 hours to 65 minutes old and
/// from 55 minutes old to now, of several owners; the hook is told to remove
/// what is older than an hour; afterwards exactly the younger ones are
/// listed, fetched and counted (and again after the sink is reopened, with
/// the `reopen` hook). Without the hook there is nothing to check.
pub(super) async fn retention<S: UsageSink>(sink: Arc<S>, hooks: &Hooks<S>) -> Check {
    let Some(expire) = &hooks.expire else {
        return Ok(());
    };
    let mut gen = Gen::new(89);
    let now = OffsetDateTime::now_utc();
    let offset = |minutes_ago: f64| {
        let t = now - time::Duration::seconds_f64(minutes_ago * 60.0);
        unix_millis(t) - unix_millis(at(0))
    };
    let owners = [Some("acct_ret_a"), Some("acct_ret_b"), None];
    let mut old = Vec::new();
    let mut young = Vec::new();
    for i in 0..1200usize {
        let owner = owners[i % owners.len()];
        // 1200 old ones: more than one chunk of a sink deleting in chunks.
        old.push(gen.request(
            offset(180.0 - 115.0 * i as f64 / 1200.0),
            owner,
            "GET",
            "/old",
            200,
        ));
    }
    for i in 0..300usize {
        let owner = owners[i % owners.len()];
        young.push(gen.request(
            offset(55.0 - 54.0 * i as f64 / 300.0),
            owner,
            "GET",
            "/young",
            200,
        ));
    }
    let mut all = old.clone();
    all.extend(young.iter().cloned());
    gen.shuffle(&mut all);
    record(&*sink, &all, "1500 records from 3 hours ago to now").await?;
    expire(Arc::clone(&sink), Duration::from_secs(3600))
        .await
        .map_err(|e| format!("the expire hook (max age 1 hour) failed: {e}"))?;
    expect_young(
        &*sink,
        &old,
        &young,
        owners,
        "after expiring what is older than an hour",
    )
    .await?;
    if let Some(reopen) = &hooks.reopen {
        let again = reopen(Arc::clone(&sink))
            .await
            .map_err(|e| format!("the reopen hook failed: {e}"))?;
        expect_young(&again, &old, &young, owners, "after expiring and reopening").await?;
    }
    Ok(())
}

async fn expect_young<S: UsageSink>(
    sink: &S,
    old: &[UsageRecord],
    young: &[UsageRecord],
    owners: [Option<&str>; 3],
    when: &str,
) -> Check {
    let mut scopes: Vec<ConsumerScope> = owners.iter().map(|o| scope_of(*o)).collect();
    scopes.push(ConsumerScope::All);
    for scope in scopes {
        let what = format!("{} {when}", scope_name(&scope));
        let expected: Vec<UsageRecord> = young
            .iter()
            .filter(|r| scope.contains(r.consumer.as_deref()))
            .cloned()
            .collect();
        let got = read_all(sink, &list(scope.clone()), &what).await?;
        if let Some(r) = got.iter().find(|r| r.path == "/old") {
            return Err(format!(
                "{what}: lists {}, older than the hour kept",
                describe(r)
            ));
        }
        expect_records(&what, &sorted(&expected, Order::Asc), &got)?;
        let now = OffsetDateTime::now_utc();
        let since = now - time::Duration::hours(4);
        let total =
            summary_total(sink, scope, since, now + time::Duration::minutes(1), &what).await?;
        if total != expected.len() as u64 {
            return Err(format!(
                "{what}: the summary counts {total} requests, {} are younger than an hour",
                expected.len()
            ));
        }
    }
    for r in old.iter().step_by(37) {
        if let Some(got) = sink
            .get(&r.id, &ConsumerScope::All)
            .await
            .map_err(|e| format!("get({:?}) {when}: failed: {e}", r.id))?
        {
            return Err(format!(
                "get({:?}) {when}: returned the expired {}",
                r.id,
                describe(&got)
            ));
        }
    }
    Ok(())
}

fn list(scope: ConsumerScope) -> UsageQuery {
    UsageQuery {
        consumer: scope,
        limit: 100,
        ..UsageQuery::default()
    }
}

async fn summary_total<S: UsageSink>(
    sink: &S,
    scope: ConsumerScope,
    since: OffsetDateTime,
    until: OffsetDateTime,
    what: &str,
) -> Result<u64, String> {
    let q = SummaryQuery {
        consumer: scope,
        since,
        until,
        interval: Interval::Day,
        ..SummaryQuery::default()
    };
    sink.summarize(&q)
        .await
        .map(|s| s.total.requests)
        .map_err(|e| format!("{what}: summarize() failed: {e} (kind {:?})", e.kind()))
}
