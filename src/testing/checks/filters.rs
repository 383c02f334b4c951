//! What a query selects: `filters` and `consumer_isolation`.

use super::{consumer, scoped, Check};
use crate::sink::{ConsumerScope, Order, PathFilter, StatusFilter};
use crate::testing::support::{
    at, consumer_name, describe, expect_records, order_name, read_all, record, scope_name, sorted,
    Gen,
};
use crate::{UsageQuery, UsageRecord, UsageSink};

type Oracle = Box<dyn Fn(&UsageRecord) -> bool + Send + Sync>;

struct FilterCase {
    what: String,
    query: UsageQuery,
    passes: Oracle,
}

const FILTER_PATHS: [&str; 9] = [
    "/rest/v1/items",
    "/rest/v1/items/42",
    "/rest/v1/items-archive",
    "/rest/v2/orders",
    "/health",
    "/promo/50%off/x",
    "/promo/50Xoff/x",
    "/snake_case/1",
    "/snakeXcase/1",
];
const FILTER_STATUSES: [u16; 9] = [200, 201, 204, 301, 404, 429, 500, 503, 499];
const FILTER_METHODS: [&str; 5] = ["GET", "GET", "POST", "DELETE", "PUT"];

fn filter_records(gen: &mut Gen) -> Vec<UsageRecord> {
    let owners = [Some("acct_filter_a"), Some("acct_filter_b"), None];
    (0..108)
        .map(|i: usize| {
            gen.request(
                (i as i64 / 2) * 10,
                owners[i % owners.len()],
                FILTER_METHODS[i % FILTER_METHODS.len()],
                FILTER_PATHS[(i + i / 3) % FILTER_PATHS.len()],
                FILTER_STATUSES[(i * 3 + i / 2) % FILTER_STATUSES.len()],
            )
        })
        .collect()
}

/// A trace some of the generated records belong to (see `Gen::request`).
const TRACE_A: &str = "4bf92f3577b34da60000000000000002";
/// A trace none belongs to.
const TRACE_NONE: &str = "4bf92f3577b34da6ffffffffffffffff";

fn filter_cases() -> Vec<FilterCase> {
    let since = at(100);
    let until = at(300);
    let ts = crate::record::format_timestamp;
    let case = |what: String, query: UsageQuery, passes: Oracle| FilterCase {
        what,
        query,
        passes,
    };
    let q = UsageQuery::default;
    vec![
        case(
            format!("since {} (inclusive: a record created at `since` belongs)", ts(since)),
            UsageQuery { since: Some(since), ..q() },
            Box::new(move |r| r.created_at >= since),
        ),
        case(
            format!("until {} (exclusive: a record created at `until` does not belong)", ts(until)),
            UsageQuery { until: Some(until), ..q() },
            Box::new(move |r| r.created_at < until),
        ),
        // Records are kept to the millisecond; a bound between two milliseconds
        // must not be rounded down to the one before.
        case(
            format!("since {} + 0.5 µs (a record created at {0} is before it)", ts(since)),
            UsageQuery { since: Some(since + time::Duration::nanoseconds(500)), ..q() },
            Box::new(move |r| r.created_at > since),
        ),
        case(
            format!("until {} + 0.5 µs (a record created at {0} is before it)", ts(until)),
            UsageQuery { until: Some(until + time::Duration::nanoseconds(500)), ..q() },
            Box::new(move |r| r.created_at <= until),
        ),
        case(
            format!("since {} and until {}", ts(since), ts(until)),
            UsageQuery { since: Some(since), until: Some(until), ..q() },
            Box::new(move |r| r.created_at >= since && r.created_at < until),
        ),
        case(
            "since later than until (nothing matches; not an error)".into(),
            UsageQuery { since: Some(until), until: Some(since), ..q() },
            Box::new(|_| false),
        ),
        case(
            "method POST".into(),
            UsageQuery { method: Some("POST".into()), ..q() },
            Box::new(|r| r.method == "POST"),
        ),
        case(
            "exact path /rest/v1/items (not /rest/v1/items/42 nor /rest/v1/items-archive)".into(),
            UsageQuery { path: Some(PathFilter::parse("/rest/v1/items")), ..q() },
            Box::new(|r| r.path == "/rest/v1/items"),
        ),
        case(
            "path prefix /rest/v1/items".into(),
            UsageQuery { path: Some(PathFilter::parse("/rest/v1/items*")), ..q() },
            Box::new(|r| r.path.starts_with("/rest/v1/items")),
        ),
        case(
            "path prefix /rest/".into(),
            UsageQuery { path: Some(PathFilter::parse("/rest/*")), ..q() },
            Box::new(|r| r.path.starts_with("/rest/")),
        ),
        case(
            "path prefix /promo/50%off (a literal %, not a wildcard)".into(),
            UsageQuery { path: Some(PathFilter::parse("/promo/50%off*")), ..q() },
            Box::new(|r| r.path.starts_with("/promo/50%off")),
        ),
        case(
            "path prefix /snake_case/ (a literal _, not a wildcard)".into(),
            UsageQuery { path: Some(PathFilter::parse("/snake_case/*")), ..q() },
            Box::new(|r| r.path.starts_with("/snake_case/")),
        ),
        case(
            "exact path /promo/50%off/x".into(),
            UsageQuery { path: Some(PathFilter::parse("/promo/50%off/x")), ..q() },
            Box::new(|r| r.path == "/promo/50%off/x"),
        ),
        case(
            "empty path prefix (every path)".into(),
            UsageQuery { path: Some(PathFilter::parse("*")), ..q() },
            Box::new(|_| true),
        ),
        case(
            format!("traceId {TRACE_A} (the records of one trace)"),
            UsageQuery { trace_id: Some(TRACE_A.into()), ..q() },
            Box::new(|r| r.trace.as_ref().is_some_and(|t| t.trace_id == TRACE_A)),
        ),
        case(
            format!("traceId {TRACE_NONE} (none stored)"),
            UsageQuery { trace_id: Some(TRACE_NONE.into()), ..q() },
            Box::new(|_| false),
        ),
        case(
            "status 404".into(),
            UsageQuery { status: StatusFilter::parse("404"), ..q() },
            Box::new(|r| r.status == 404),
        ),
        case(
            "status 418 (none stored)".into(),
            UsageQuery { status: StatusFilter::parse("418"), ..q() },
            Box::new(|r| r.status == 418),
        ),
        case(
            "status class 2xx".into(),
            UsageQuery { status: StatusFilter::parse("2xx"), ..q() },
            Box::new(|r| (200..300).contains(&r.status)),
        ),
        case(
            "status class 4xx (499 included)".into(),
            UsageQuery { status: StatusFilter::parse("4xx"), ..q() },
            Box::new(|r| (400..500).contains(&r.status)),
        ),
        case(
            "status class 5xx".into(),
            UsageQuery { status: StatusFilter::parse("5xx"), ..q() },
            Box::new(|r| (500..600).contains(&r.status)),
        ),
        case(
            format!(
                "consumer \"acct_filter_a\", since {}, until {}, method GET, path prefix /rest/, status 2xx",
                ts(since),
                ts(until)
            ),
            UsageQuery {
                consumer: consumer("acct_filter_a"),
                since: Some(since),
                until: Some(until),
                method: Some("GET".into()),
                path: Some(PathFilter::parse("/rest/*")),
                status: StatusFilter::parse("2xx"),
                ..q()
            },
            Box::new(move |r| {
                r.consumer.as_deref() == Some("acct_filter_a")
                    && r.created_at >= since
                    && r.created_at < until
                    && r.method == "GET"
                    && r.path.starts_with("/rest/")
                    && (200..300).contains(&r.status)
            }),
        ),
        case(
            "anonymous records, exact path /health, status 4xx".into(),
            UsageQuery {
                consumer: ConsumerScope::Anonymous,
                path: Some(PathFilter::parse("/health")),
                status: StatusFilter::parse("4xx"),
                ..q()
            },
            Box::new(|r| {
                r.consumer.is_none() && r.path == "/health" && (400..500).contains(&r.status)
            }),
        ),
        case(
            format!("method DELETE, status 5xx, since {}", ts(since)),
            UsageQuery {
                method: Some("DELETE".into()),
                status: StatusFilter::parse("5xx"),
                since: Some(since),
                ..q()
            },
            Box::new(move |r| {
                r.method == "DELETE" && (500..600).contains(&r.status) && r.created_at >= since
            }),
        ),
        case(
            format!("consumer \"acct_filter_b\", path prefix /promo/, until {}", ts(until)),
            UsageQuery {
                consumer: consumer("acct_filter_b"),
                path: Some(PathFilter::parse("/promo/*")),
                until: Some(until),
                ..q()
            },
            Box::new(move |r| {
                r.consumer.as_deref() == Some("acct_filter_b")
                    && r.path.starts_with("/promo/")
                    && r.created_at < until
            }),
        ),
    ]
}

/// Every filter, alone and combined, in one page and in small pages both ways.
pub(super) async fn filters<S: UsageSink>(sink: &S) -> Check {
    let mut gen = Gen::new(4);
    let records = filter_records(&mut gen);
    record(sink, &records, "the filter records").await?;
    for case in filter_cases() {
        let matching: Vec<UsageRecord> = records
            .iter()
            .filter(|r| case.query.consumer.contains(r.consumer.as_deref()) && (case.passes)(r))
            .cloned()
            .collect();
        for (order, limit) in [(Order::Asc, 1000), (Order::Asc, 4), (Order::Desc, 4)] {
            let what = format!(
                "filter {}, {}, {limit} a page",
                case.what,
                order_name(order)
            );
            let q = UsageQuery {
                order,
                limit,
                ..case.query.clone()
            };
            let got = read_all(sink, &q, &what).await?;
            expect_records(&what, &sorted(&matching, order), &got)?;
        }
    }
    Ok(())
}

// ---------------------------------------------------------------------------

/// A consumer's query sees that consumer's records only; anonymous sees the
/// anonymous ones; all sees all.
pub(super) async fn consumer_isolation<S: UsageSink>(sink: &S) -> Check {
    let mut gen = Gen::new(5);
    // "acct_alpha2" and "ACCT_ALPHA" catch prefix and case-insensitive matching.
    let owners = [
        Some("acct_alpha"),
        Some("acct_beta"),
        Some("acct_alpha2"),
        Some("ACCT_ALPHA"),
        None,
    ];
    let records: Vec<UsageRecord> = (0..100)
        .map(|i: usize| {
            let path = if i.is_multiple_of(4) {
                "/rest/v1/items/7"
            } else {
                "/rest/v1/items"
            };
            let status = if i.is_multiple_of(7) { 404 } else { 200 };
            gen.request(i as i64 / 4, owners[i % owners.len()], "GET", path, status)
        })
        .collect();
    record(
        sink,
        &records,
        "records of four consumers and anonymous ones",
    )
    .await?;

    let mut scopes: Vec<ConsumerScope> = owners.iter().flatten().map(|c| consumer(c)).collect();
    scopes.extend([
        consumer("acct_nobody"),
        ConsumerScope::Anonymous,
        ConsumerScope::All,
    ]);
    for scope in scopes {
        let mine: Vec<UsageRecord> = records
            .iter()
            .filter(|r| scope.contains(r.consumer.as_deref()))
            .cloned()
            .collect();
        for (order, limit, status) in [
            (Order::Asc, 1000, None),
            (Order::Asc, 3, None),
            (Order::Desc, 3, None),
            (Order::Asc, 2, StatusFilter::parse("4xx")),
        ] {
            let what = format!(
                "query scoped to {}, {}, {limit} a page{}",
                scope_name(&scope),
                order_name(order),
                if status.is_some() { ", status 4xx" } else { "" }
            );
            let q = UsageQuery {
                status,
                ..scoped(scope.clone(), order, limit)
            };
            let got = read_all(sink, &q, &what).await?;
            if let Some(r) = got.iter().find(|r| !scope.contains(r.consumer.as_deref())) {
                let rule = match scope {
                    ConsumerScope::Anonymous => {
                        "a query for anonymous records must see only records without a consumer"
                    }
                    _ => "a query scoped to one consumer must never see another consumer's or anonymous records",
                };
                return Err(format!(
                    "{what}: returned a record of consumer {} ({}); {rule}",
                    consumer_name(r.consumer.as_deref()),
                    describe(r)
                ));
            }
            let expected: Vec<UsageRecord> = mine
                .iter()
                .filter(|r| status.is_none_or(|s| s.matches(r.status)))
                .cloned()
                .collect();
            expect_records(&what, &sorted(&expected, order), &got)?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A filter case that nothing passes, or everything, proves little.
    #[test]
    fn every_filter_case_selects_some_but_not_all_records() {
        let records = filter_records(&mut Gen::new(4));
        for case in filter_cases() {
            let n = records
                .iter()
                .filter(|r| case.query.consumer.contains(r.consumer.as_deref()) && (case.passes)(r))
                .count();
            let (may_be_empty, may_be_all) = (
                case.what.contains("nothing matches") || case.what.contains("none stored"),
                case.what.contains("every path"),
            );
            assert!(n > 0 || may_be_empty, "{}: no record passes", case.what);
            assert!(
                n < records.len() || may_be_all,
                "{}: every record passes",
                case.what
            );
            // The oracle agrees with the crate's own definition.
            let by_matches = records.iter().filter(|r| case.query.matches(r)).count();
            assert_eq!(n, by_matches, "{}", case.what);
        }
        // The time bounds fall exactly on stored records.
        assert!(records.iter().any(|r| r.created_at == at(100)));
        assert!(records.iter().any(|r| r.created_at == at(300)));
    }
}
