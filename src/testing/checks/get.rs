//! `get_by_id`: one record by id, in its consumer's scope and in no other.

use super::{consumer, Check};
use crate::sink::ConsumerScope;
use crate::testing::support::{at, describe, field_differences, record, scope_name, Gen};
use crate::{UsageRecord, UsageSink};

/// `get(id, scope)` finds every stored record in its own scope and in `All`,
/// field for field; another consumer's scope, a missing id (also one of a
/// stored millisecond) and a malformed id give `None`, not an error.
pub(super) async fn get_by_id<S: UsageSink>(sink: &S) -> Check {
    let mut gen = Gen::new(61);
    let owners = [Some("acct_get_a"), Some("acct_get_ab"), None];
    // Several records in one millisecond: a lookup must pick the right one.
    let records: Vec<UsageRecord> = (0..30)
        .map(|i: usize| {
            let owner = owners[i % owners.len()];
            gen.request((i / 6) as i64, owner, "GET", "/rest/v1/items", 200)
        })
        .collect();
    record(
        sink,
        &records,
        "30 records of two consumers and anonymous ones",
    )
    .await?;

    for r in &records {
        let own = match &r.consumer {
            Some(c) => consumer(c),
            None => ConsumerScope::Anonymous,
        };
        for scope in [own.clone(), ConsumerScope::All] {
            let what = format!("get({:?}) in {}", r.id, scope_name(&scope));
            match get(sink, &r.id, &scope, &what).await? {
                None => return Err(format!("{what}: found nothing; {} is stored", describe(r))),
                Some(got) if got.id != r.id => {
                    return Err(format!("{what}: returned {} instead", describe(&got)))
                }
                Some(got) => {
                    let diffs = field_differences(r, &got);
                    if !diffs.is_empty() {
                        return Err(format!(
                            "{what}: the record came back changed:\n  {}",
                            diffs.join("\n  ")
                        ));
                    }
                }
            }
        }
        let others = owners
            .iter()
            .filter(|o| **o != r.consumer.as_deref())
            .map(|o| o.map_or(ConsumerScope::Anonymous, consumer));
        for scope in others {
            let what = format!("get({:?}) in {}", r.id, scope_name(&scope));
            if let Some(got) = get(sink, &r.id, &scope, &what).await? {
                return Err(format!(
                    "{what}: returned {}; a record outside the scope must be None, as if \
                     it did not exist (GET /usage/{{id}} answers 404 for another \
                     consumer's id)",
                    describe(&got)
                ));
            }
        }
    }

    let missing = [
        gen.id(records[0].created_at),
        gen.id(at(1_000_000)),
        "not-a-record-id".to_owned(),
        String::new(),
        records[0].id.to_ascii_lowercase(),
    ];
    for id in &missing {
        for scope in [ConsumerScope::All, consumer("acct_get_a")] {
            let what = format!("get({id:?}) in {}, an id never stored", scope_name(&scope));
            if let Some(got) = get(sink, id, &scope, &what).await? {
                return Err(format!("{what}: returned {}", describe(&got)));
            }
        }
    }
    Ok(())
}

async fn get<S: UsageSink>(
    sink: &S,
    id: &str,
    scope: &ConsumerScope,
    what: &str,
) -> Result<Option<UsageRecord>, String> {
    sink.get(id, scope)
        .await
        .map_err(|e| format!("{what}: get() failed: {e} (kind {:?})", e.kind()))
}
