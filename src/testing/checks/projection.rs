//! `projection`: a query for [`Projection::Summary`] lists what a query for
//! every field lists, with every field a summary counts.

use std::collections::HashMap;

use super::{consumer, scoped, Check};
use crate::sink::{ConsumerScope, Order, Projection};
use crate::testing::support::{describe, expect_records, read_all, record, sorted, Gen};
use crate::{CapturedBody, Outcome, UsageRecord, UsageSink};

/// Records with bodies, headers and gRPC details a summary does not need, and
/// body sizes it does (some apart from the bytes kept).
fn population(gen: &mut Gen) -> Vec<UsageRecord> {
    let owners = [Some("acct_proj_a"), Some("acct_proj_b"), None];
    let methods = ["GET", "POST", "PUT"];
    let outcomes = [
        Outcome::Complete,
        Outcome::ClientGone,
        Outcome::Cancelled,
        Outcome::Error,
    ];
    (0..240)
        .map(|i| {
            let path = format!("/items/{}", i % 9);
            let status = [200, 201, 404, 500][i % 4];
            let mut r = gen.request(
                (i as i64) * 37 % 5_000,
                owners[i % 3],
                methods[i % 3],
                &path,
                status,
            );
            r.outcome = outcomes[i % 4];
            if i % 5 == 0 {
                r.request.body = CapturedBody::truncated(vec![b'x'; 64], 1_000_000 + i as u64);
            }
            if i % 7 == 0 {
                r.response = CapturedBody {
                    size: 11,
                    ..CapturedBody::complete(vec![b'y'; 90])
                };
            }
            r
        })
        .collect()
}

/// What a sink must keep under [`Projection::Summary`]; `None` when it did.
fn summary_difference(stored: &UsageRecord, read: &UsageRecord) -> Option<String> {
    let fields = |r: &UsageRecord| {
        (
            r.consumer.clone(),
            r.method.clone(),
            r.path.clone(),
            r.route.clone(),
            r.status,
            r.created_at_ms(),
            r.duration_us,
            r.outcome,
            (r.request.body.size, r.request.body.truncated),
            (r.response.size, r.response.truncated),
            r.trace.clone(),
        )
    };
    let (a, b) = (fields(stored), fields(read));
    (a != b).then(|| {
        format!(
            "stored (consumer, method, path, route, status, created_at ms, duration_us, \
             outcome, (request body size, truncated), (response size, truncated), trace) = {a:?}, \
             read back {b:?}"
        )
    })
}

pub(super) async fn projection<S: UsageSink>(sink: &S) -> Check {
    let mut gen = Gen::new(19);
    let stored = population(&mut gen);
    record(sink, &stored, "the projection records").await?;
    let by_id: HashMap<&str, &UsageRecord> = stored.iter().map(|r| (r.id.as_str(), r)).collect();

    for scope in [ConsumerScope::All, consumer("acct_proj_b")] {
        for order in [Order::Asc, Order::Desc] {
            let mut q = scoped(scope.clone(), order, 50);
            q.fields = Projection::Summary;
            let what = format!(
                "paging with fields: Projection::Summary ({scope:?}, {order:?}, 50 a page)"
            );
            let got = read_all(sink, &q, &what).await?;
            let expected: Vec<UsageRecord> = stored
                .iter()
                .filter(|r| scope.contains(r.consumer.as_deref()))
                .cloned()
                .collect();
            expect_records(&what, &sorted(&expected, order), &got)?;
            for read in &got {
                let Some(stored) = by_id.get(read.id.as_str()) else {
                    continue;
                };
                if let Some(diff) = summary_difference(stored, read) {
                    return Err(format!(
                        "{what}: {} came back without a field a summary counts: {diff}; \
                         Projection::Summary lets a sink leave out bodies' bytes, the \
                         query, params, headers, gRPC details and capture notes, never \
                         the rest (body sizes included)",
                        describe(read)
                    ));
                }
            }
        }
    }
    Ok(())
}
