//! The checks: each takes a fresh, empty sink and returns what was wrong.

use std::sync::Arc;

mod filters;
mod get;
mod lifecycle;
mod paging;
mod projection;
mod round_trip;
mod summary;
mod writes;

use filters::{consumer_isolation, filters};
use get::get_by_id;
use lifecycle::{erasure, retention};
use paging::{cursor_paging, invalid_cursor, limits, ordering};
use projection::projection;
use round_trip::round_trip;
use summary::{
    route_outcome_filters, summary_buckets, summary_bytes, summary_empty, summary_percentiles,
    summary_totals,
};
use writes::{concurrent_writers, idempotent_record, large_batch};

use super::support::{describe, order_name, query, scope_name};
use crate::sink::{ConsumerScope, Order};
use crate::{UsageQuery, UsageSink};

type Check = Result<(), String>;

/// Runs the check called `name` (one of [`CHECKS`](super::CHECKS)).
pub(super) async fn run<S: UsageSink>(
    name: &'static str,
    sink: Arc<S>,
    hooks: super::kit::Hooks<S>,
) -> Check {
    ensure_empty(&*sink).await?;
    match name {
        "empty_sink" => empty_sink(&*sink).await,
        "round_trip" => round_trip(&*sink).await,
        "ordering" => ordering(&*sink).await,
        "cursor_paging" => cursor_paging(&*sink).await,
        "filters" => filters(&*sink).await,
        "consumer_isolation" => consumer_isolation(&*sink).await,
        "limits" => limits(&*sink).await,
        "large_batch" => large_batch(&*sink).await,
        "concurrent_writers" => concurrent_writers(sink).await,
        "idempotent_record" => idempotent_record(&*sink).await,
        "invalid_cursor" => invalid_cursor(&*sink).await,
        "get_by_id" => get_by_id(&*sink).await,
        "route_outcome_filters" => route_outcome_filters(&*sink).await,
        "summary_totals" => summary_totals(&*sink).await,
        "summary_buckets" => summary_buckets(&*sink).await,
        "summary_bytes" => summary_bytes(&*sink).await,
        "summary_percentiles" => summary_percentiles(&*sink).await,
        "summary_empty" => summary_empty(&*sink).await,
        "projection" => projection(&*sink).await,
        "erasure" => erasure(sink, &hooks).await,
        "retention" => retention(sink, &hooks).await,
        other => Err(format!("no check is called {other:?}")),
    }
}

fn scoped(consumer: ConsumerScope, order: Order, limit: usize) -> UsageQuery {
    UsageQuery {
        consumer,
        order,
        limit,
        ..UsageQuery::default()
    }
}

fn consumer(c: &str) -> ConsumerScope {
    ConsumerScope::Consumer(c.to_owned())
}

async fn ensure_empty<S: UsageSink>(sink: &S) -> Check {
    let what = "reading the sink make_sink returned, before the check";
    let page = query(sink, &scoped(ConsumerScope::All, Order::Asc, 1), what).await?;
    match page.records.first() {
        Some(r) => Err(format!(
            "make_sink returned a sink that already holds records (e.g. {}); every \
             check needs a fresh, empty sink",
            describe(r)
        )),
        None => Ok(()),
    }
}

// ---------------------------------------------------------------------------

/// Queries on an empty sink give empty pages without a cursor.
async fn empty_sink<S: UsageSink>(sink: &S) -> Check {
    let scopes = [
        ConsumerScope::All,
        consumer("acct_nobody"),
        ConsumerScope::Anonymous,
    ];
    for scope in scopes {
        for order in [Order::Asc, Order::Desc] {
            let what = format!(
                "query for {}, {}, on an empty sink",
                scope_name(&scope),
                order_name(order)
            );
            let page = query(sink, &scoped(scope.clone(), order, 10), &what).await?;
            if let Some(r) = page.records.first() {
                return Err(format!("{what}: returned {}", describe(r)));
            }
            if page.next_cursor.is_some() {
                return Err(format!("{what}: returned a next_cursor"));
            }
        }
    }
    Ok(())
}
