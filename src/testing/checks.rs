//! The checks: each takes a fresh, empty sink and returns what was wrong.

use std::collections::HashMap;
use std::sync::Arc;

use base64::Engine as _;

use super::support::{
    at, body, consumer_name, describe, expect_records, field_differences, header, headers,
    order_name, query, read_all, record, scope_name, sorted, Gen,
};
use crate::sink::{ConsumerScope, Order, PathFilter, StatusFilter};
use crate::{CapturedBody, GrpcCall, Outcome, SinkErrorKind, UsageQuery, UsageRecord, UsageSink};

type Check = Result<(), String>;

/// Runs the check called `name` (one of [`CHECKS`](super::CHECKS)).
pub(super) async fn run<S: UsageSink>(name: &'static str, sink: Arc<S>) -> Check {
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

// ---------------------------------------------------------------------------

/// Every variant of every field the kit can think of, each on its own record.
fn round_trip_records(gen: &mut Gen) -> Vec<(&'static str, UsageRecord)> {
    let mut out = Vec::new();
    let mut add = |label: &'static str, offset_ms: i64, f: &dyn Fn(&mut UsageRecord)| {
        let mut r = gen.request(offset_ms, Some("acct_7f3a9c21e04b"), "GET", "/x", 200);
        f(&mut r);
        out.push((label, r));
    };
    add("empty bodies, no query, no route, anonymous", 0, &|r| {
        r.consumer = None;
        r.path = "/health".into();
        r.route = None;
        r.request.query.clear();
        r.request.params.clear();
        r.request.headers = headers(&[header("host", b"api.example.com")]);
        r.request.body = CapturedBody::default();
        r.response = CapturedBody::default();
        r.response_headers = headers(&[]);
        r.status = 204;
        r.duration_us = 0;
    });
    add("JSON bodies, repeated headers", 839, &|r| {
        r.method = "POST".into();
        r.path = "/rest/v1/airdrop/".into();
        r.route = Some("/rest/v1/airdrop/".into());
        r.request.query.clear();
        r.request.params.clear();
        r.request.body =
            body(br#"{"sequential":false,"recipients":[{"to":"0xab","amount":"12.5"}]}"#);
        r.request.headers = headers(&[
            header("host", b"localhost:9000"),
            header("content-type", b"application/json"),
            header("authorization", b"[REDACTED]"),
            header("accept", b"application/json"),
            header("accept", b"text/plain;q=0.5"),
            header("x-forwarded-for", b"203.0.113.7"),
        ]);
        r.response = body(br#"{"id":"I4WTgq6ZHb2ncugUWBz1oSPDld5eJi5U","count":2}"#);
        r.response_headers = headers(&[
            header("content-type", b"application/json"),
            header("set-cookie", b"[REDACTED]"),
            header("set-cookie", b"[REDACTED]"),
        ]);
        r.status = 201;
    });
    add("UTF-8 text bodies", 1_001, &|r| {
        r.consumer = Some("acct_émilie".into());
        r.method = "PUT".into();
        r.path = "/notes/42".into();
        r.request.body = body("héllo wörld ✓ — naïve café 日本".as_bytes());
        r.request.headers.insert(
            http::header::CONTENT_TYPE,
            http::HeaderValue::from_static("text/plain; charset=utf-8"),
        );
        r.response = body(b"saved");
    });
    add("binary, non-UTF-8 bodies", 1_999, &|r| {
        r.method = "POST".into();
        r.path = "/upload".into();
        r.request.body = body(&[
            0x89, b'P', b'N', b'G', 0x0d, 0x0a, 0x1a, 0x0a, 0x00, 0xff, 0xfe,
        ]);
        r.response = body(&[0xff, 0x00, 0xc3, 0x28, 0x80]);
        r.outcome = Outcome::ClientGone;
    });
    add(
        "truncated bodies (size larger than the bytes kept)",
        2_000,
        &|r| {
            r.method = "POST".into();
            r.path = "/rest/v1/items/bulk".into();
            r.request.body =
                CapturedBody::truncated(&br#"{"items":[{"id":1,"name":"wid"#[..], 1_048_576);
            r.response = CapturedBody::truncated(vec![0xffu8; 64], 10_000_000);
        },
    );
    add(
        "query string with repeats and percent-escapes",
        2_500,
        &|r| {
            r.path = "/search".into();
            r.route = Some("/search".into());
            r.request.query = "q=caf%C3%A9+au+lait&tag=a&tag=b&tag=c&empty=&flag\
                           &redirect=https%3A%2F%2Fexample.com%2F%3Fa%3D1%26b%3D2&q2=%20x%2B"
                .into();
        },
    );
    add("route params in template order", 3_000, &|r| {
        r.path = "/orgs/o-42/batches/I4WTgq6ZHb2ncugUWBz1oSPDld5eJi5U/items/caf%C3%A9%20cr%C3%A8me"
            .into();
        r.route = Some("/orgs/{orgId}/batches/{batchId}/items/{name}".into());
        r.request.params = vec![
            ("orgId".into(), "o-42".into()),
            ("batchId".into(), "I4WTgq6ZHb2ncugUWBz1oSPDld5eJi5U".into()),
            ("name".into(), "café crème / ½".into()),
        ];
    });
    add("non-UTF-8 header values", 3_999, &|r| {
        r.request
            .headers
            .append("x-legacy-name", header("x-legacy-name", b"Jos\xe9 \xc0").1);
        r.response_headers = headers(&[
            header("content-type", b"application/pdf"),
            header(
                "content-disposition",
                b"attachment; filename=\"r\xe9sum\xe9.pdf\"",
            ),
        ]);
        r.response = body(b"%PDF-1.7");
    });
    add("cancelled before the inner service answered", 4_000, &|r| {
        r.status = 499;
        r.outcome = Outcome::Cancelled;
        r.response = CapturedBody::default();
        r.response_headers = headers(&[]);
        r.duration_us = 30_000_000;
    });
    add("inner service error", 4_500, &|r| {
        r.consumer = None;
        r.status = 500;
        r.outcome = Outcome::Error;
        r.response = body(b"internal error");
        r.response_headers = headers(&[header("content-type", b"text/plain")]);
    });
    add("gRPC call with every field", 5_000, &|r| {
        r.method = "POST".into();
        r.path = "/airdrop.v1.Airdrop/GetBatch".into();
        r.route = None;
        r.request.query.clear();
        r.request.headers = headers(&[
            header("content-type", b"application/grpc"),
            header("te", b"trailers"),
            header("grpc-timeout", b"5S"),
        ]);
        r.request.body = body(&[0, 0, 0, 0, 5, 0x0a, 0x03, b'a', b'b', b'c']);
        r.response = CapturedBody::default();
        r.response_headers = headers(&[
            header("content-type", b"application/grpc"),
            header("grpc-status", b"5"),
        ]);
        r.grpc = Some(GrpcCall {
            status: Some(5),
            message: Some("batch I4WT not found: é".into()),
            request_messages: 1,
            response_messages: 0,
        });
    });
    add(
        "gRPC stream without a status, a huge duration",
        5_999,
        &|r| {
            r.method = "POST".into();
            r.path = "/airdrop.v1.Airdrop/Watch".into();
            r.route = None;
            r.request.query.clear();
            r.outcome = Outcome::ClientGone;
            // 2^53 + 1: not exact as an f64.
            r.duration_us = 9_007_199_254_740_993;
            r.grpc = Some(GrpcCall {
                status: None,
                message: None,
                request_messages: 3,
                response_messages: 70_000,
            });
        },
    );
    add("gRPC OK, message but no counts", 6_000, &|r| {
        r.method = "POST".into();
        r.path = "/airdrop.v1.Airdrop/Ping".into();
        r.status = 200;
        r.grpc = Some(GrpcCall {
            status: Some(0),
            message: Some(String::new()),
            request_messages: 0,
            response_messages: 0,
        });
    });
    out
}

/// Whatever is recorded is read back as it was: bodies byte for byte, query
/// strings as sent, params in order, headers with repeats and opaque bytes,
/// every outcome, gRPC details, `created_at` to the millisecond.
async fn round_trip<S: UsageSink>(sink: &S) -> Check {
    let mut gen = Gen::new(1);
    let mut labelled = round_trip_records(&mut gen);
    // Every outcome appears; a new variant fails to compile here.
    for outcome in [
        Outcome::Complete,
        Outcome::ClientGone,
        Outcome::Cancelled,
        Outcome::Error,
    ] {
        match outcome {
            Outcome::Complete | Outcome::ClientGone | Outcome::Cancelled | Outcome::Error => {}
        }
        if !labelled.iter().any(|(_, r)| r.outcome == outcome) {
            let mut r = gen.request(7_000, Some("acct_7f3a9c21e04b"), "GET", "/x", 200);
            r.outcome = outcome;
            labelled.push(("another outcome", r));
        }
    }
    let batch: Vec<UsageRecord> = labelled.iter().map(|(_, r)| r.clone()).collect();
    record(sink, &batch, "the round-trip records").await?;

    let what = "reading back the round-trip records";
    let got = query(sink, &scoped(ConsumerScope::All, Order::Asc, 1000), what)
        .await?
        .records;
    let by_id: HashMap<&str, &UsageRecord> = got.iter().map(|r| (r.id.as_str(), r)).collect();
    let mut problems = Vec::new();
    for (label, stored) in &labelled {
        match by_id.get(stored.id.as_str()) {
            None => problems.push(format!(
                "record \"{label}\" ({}) was not read back",
                stored.id
            )),
            Some(read) => {
                for diff in field_differences(stored, read) {
                    problems.push(format!("record \"{label}\" ({}): {diff}", stored.id));
                }
            }
        }
    }
    if got.len() != batch.len() {
        problems.push(format!(
            "{} records were recorded, {} read back",
            batch.len(),
            got.len()
        ));
    }
    if problems.is_empty() {
        return Ok(());
    }
    let shown = problems.len().min(12);
    Err(format!(
        "records do not come back as they were recorded ({} problems):\n  {}{}",
        problems.len(),
        problems[..shown].join("\n  "),
        if problems.len() > shown {
            "\n  ..."
        } else {
            ""
        }
    ))
}

// ---------------------------------------------------------------------------

/// Pages sort by `(created_at, id)` in both orders, with ties on `created_at`
/// broken by id, also across page boundaries, whatever order records arrive in.
async fn ordering<S: UsageSink>(sink: &S) -> Check {
    let mut gen = Gen::new(2);
    let owners = [Some("acct_order_a"), Some("acct_order_b"), None];
    let mut records = Vec::new();
    for (k, &ms) in [10, 11, 250, 251, 4_000].iter().enumerate() {
        for i in 0..12 {
            let owner = owners[(k + i) % owners.len()];
            records.push(gen.request(ms, owner, "GET", "/rest/v1/items", 200));
        }
    }
    // Ids minted by another clock: the id alone must not decide the order.
    for (ms, id_ms) in [(11, 9_000_000), (250, -5_000_000), (4_000, 0)] {
        let mut r = gen.request(ms, Some("acct_order_a"), "GET", "/rest/v1/items", 200);
        r.id = gen.id(at(id_ms));
        records.push(r);
    }
    gen.shuffle(&mut records);
    for (i, chunk) in records.chunks(17).enumerate() {
        record(sink, chunk, &format!("shuffled batch {i}")).await?;
    }

    for order in [Order::Asc, Order::Desc] {
        let expected = sorted(&records, order);
        let what = format!("one page of all consumers, {}", order_name(order));
        let page = query(sink, &scoped(ConsumerScope::All, order, 1000), &what).await?;
        expect_records(&what, &expected, &page.records)?;

        let what = format!("all consumers, {}, in pages of 7", order_name(order));
        let got = read_all(sink, &scoped(ConsumerScope::All, order, 7), &what).await?;
        expect_records(&what, &expected, &got)?;

        let a: Vec<_> = records
            .iter()
            .filter(|r| r.consumer.as_deref() == Some("acct_order_a"))
            .cloned()
            .collect();
        let what = format!(
            "consumer \"acct_order_a\", {}, in pages of 5",
            order_name(order)
        );
        let got = read_all(sink, &scoped(consumer("acct_order_a"), order, 5), &what).await?;
        expect_records(&what, &sorted(&a, order), &got)?;
    }
    Ok(())
}

// ---------------------------------------------------------------------------

/// Paging with the cursor has no gap and no duplicate while newer records are
/// recorded between pages: oldest first they show up on later pages, newest
/// first they do not show up at all.
async fn cursor_paging<S: UsageSink>(sink: &S) -> Check {
    let mut gen = Gen::new(3);
    let pager = "acct_pager";
    let mut stored = Vec::new();
    for i in 0..60 {
        let owner = match i % 3 {
            0 | 1 => Some(pager),
            _ => Some("acct_other"),
        };
        stored.push(gen.request(i / 3, owner, "GET", "/rest/v1/items", 200));
    }
    record(sink, &stored, "the first records").await?;

    let mut next_ms = 100_000;
    let mut newer = |gen: &mut Gen, stored: &mut Vec<UsageRecord>| {
        next_ms += 1;
        let batch = vec![
            gen.request(next_ms, Some(pager), "POST", "/rest/v1/items", 201),
            gen.request(next_ms, Some(pager), "GET", "/rest/v1/items", 200),
            gen.request(next_ms, None, "GET", "/health", 200),
        ];
        stored.extend(batch.iter().cloned());
        batch
    };

    for (scope, order, limit) in [
        (consumer(pager), Order::Asc, 6),
        (ConsumerScope::All, Order::Asc, 8),
        (consumer(pager), Order::Desc, 6),
        (ConsumerScope::All, Order::Desc, 9),
    ] {
        let snapshot: Vec<UsageRecord> = stored
            .iter()
            .filter(|r| scope.contains(r.consumer.as_deref()))
            .cloned()
            .collect();
        let what = format!(
            "paging through {}, {}, {limit} a page, recording newer records between pages",
            scope_name(&scope),
            order_name(order)
        );
        let mut q = scoped(scope.clone(), order, limit);
        let mut got: Vec<UsageRecord> = Vec::new();
        let mut first_seen: HashMap<String, usize> = HashMap::new();
        let mut page_no = 0;
        loop {
            page_no += 1;
            if page_no > 1_000 {
                return Err(format!(
                    "{what}: still returned a next_cursor after 1000 pages"
                ));
            }
            let page = query(sink, &q, &format!("{what}, page {page_no}")).await?;
            for r in page.records {
                if let Some(earlier) = first_seen.insert(r.id.clone(), page_no) {
                    return Err(format!(
                        "{what}: page {page_no} repeats {} first returned on page {earlier}; \
                         the next page must start after the cursor's position",
                        describe(&r)
                    ));
                }
                got.push(r);
            }
            let Some(cursor) = page.next_cursor else {
                break;
            };
            if page_no <= 6 {
                let batch = newer(&mut gen, &mut stored);
                record(sink, &batch, "newer records between pages").await?;
            }
            q.cursor = Some(cursor);
        }
        let expected = match order {
            // Newer records land after the cursor: every one recorded before the
            // last page was read belongs.
            Order::Asc => stored
                .iter()
                .filter(|r| scope.contains(r.consumer.as_deref()))
                .cloned()
                .collect(),
            // Newer records sort before the first page: none of them belongs.
            Order::Desc => snapshot,
        };
        let hint = match order {
            Order::Asc => "records recorded between pages are newer, so they belong on the later pages",
            Order::Desc => "records recorded after the first page are newer than every cursor, so they do not belong",
        };
        expect_records(&format!("{what} ({hint})"), &sorted(&expected, order), &got)?;
    }
    Ok(())
}

// ---------------------------------------------------------------------------

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
async fn filters<S: UsageSink>(sink: &S) -> Check {
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
async fn consumer_isolation<S: UsageSink>(sink: &S) -> Check {
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
            let path = if i % 4 == 0 {
                "/rest/v1/items/7"
            } else {
                "/rest/v1/items"
            };
            let status = if i % 7 == 0 { 404 } else { 200 };
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

// ---------------------------------------------------------------------------

/// `limit` is honoured exactly: 1, a few, and 1000 with exactly 1000 and then
/// 1001 records stored, `next_cursor` `None` only when nothing follows.
async fn limits<S: UsageSink>(sink: &S) -> Check {
    let mut gen = Gen::new(6);
    let big = "acct_limits";
    let mut mine: Vec<UsageRecord> = (0..1000)
        .map(|i| gen.request(i / 2, Some(big), "GET", "/rest/v1/items", 200))
        .collect();
    let others: Vec<UsageRecord> = (0..50)
        .map(|i| {
            gen.request(
                i * 3,
                Some("acct_limits_other"),
                "GET",
                "/rest/v1/items",
                200,
            )
        })
        .collect();
    record(sink, &mine, "1000 records of one consumer").await?;
    record(sink, &others, "50 records of another consumer").await?;

    let asc = sorted(&mine, Order::Asc);
    let what = "limit 1000 with exactly 1000 matching records";
    let page = query(sink, &scoped(consumer(big), Order::Asc, 1000), what).await?;
    expect_records(what, &asc, &page.records)?;
    if page.next_cursor.is_some() {
        return Err(format!(
            "{what}: next_cursor is Some, but no record follows the page (it must be None \
             when nothing follows: ask for limit + 1 records, see UsagePage::from_sorted)"
        ));
    }

    for limit in [1, 3] {
        let what = format!("limit {limit} over 1000 matching records");
        let page = query(sink, &scoped(consumer(big), Order::Asc, limit), &what).await?;
        expect_records(&what, &asc[..limit], &page.records)?;
        let Some(cursor) = page.next_cursor else {
            return Err(format!(
                "{what}: next_cursor is None, but more records follow"
            ));
        };
        let what = format!("the second page of {what}");
        let q = UsageQuery {
            cursor: Some(cursor),
            ..scoped(consumer(big), Order::Asc, limit)
        };
        let page = query(sink, &q, &what).await?;
        expect_records(&what, &asc[limit..2 * limit], &page.records)?;
    }

    let newest = gen.request(10_000, Some(big), "GET", "/rest/v1/items", 200);
    record(sink, std::slice::from_ref(&newest), "the 1001st record").await?;
    mine.push(newest);
    for order in [Order::Asc, Order::Desc] {
        let expected = sorted(&mine, order);
        let what = format!(
            "limit 1000 with 1001 matching records, {}",
            order_name(order)
        );
        let page = query(sink, &scoped(consumer(big), order, 1000), &what).await?;
        expect_records(&what, &expected[..1000], &page.records)?;
        let Some(cursor) = page.next_cursor else {
            return Err(format!(
                "{what}: next_cursor is None, but a 1001st record follows"
            ));
        };
        let what = format!("the second page of {what}");
        let q = UsageQuery {
            cursor: Some(cursor),
            ..scoped(consumer(big), order, 1000)
        };
        let page = query(sink, &q, &what).await?;
        expect_records(&what, &expected[1000..], &page.records)?;
        if page.next_cursor.is_some() {
            return Err(format!("{what}: next_cursor is Some on the last page"));
        }
    }

    let five: Vec<UsageRecord> = (0..5)
        .map(|i| gen.request(20_000 + i, Some("acct_five"), "GET", "/health", 200))
        .collect();
    record(sink, &five, "5 records of a third consumer").await?;
    let what = "limit 1 over 5 records, page by page";
    let mut q = scoped(consumer("acct_five"), Order::Asc, 1);
    for (i, expected) in five.iter().enumerate() {
        let page = query(sink, &q, &format!("{what}, page {}", i + 1)).await?;
        expect_records(
            &format!("{what}, page {}", i + 1),
            std::slice::from_ref(expected),
            &page.records,
        )?;
        match (page.next_cursor, i + 1 < five.len()) {
            (Some(c), true) => q.cursor = Some(c),
            (None, false) => {}
            (Some(_), false) => return Err(format!("{what}: the last page has a next_cursor")),
            (None, true) => {
                return Err(format!("{what}: page {} has no next_cursor", i + 1));
            }
        }
    }
    let what = "limit 10 over 5 records";
    let page = query(sink, &scoped(consumer("acct_five"), Order::Asc, 10), what).await?;
    expect_records(what, &five, &page.records)?;
    if page.next_cursor.is_some() {
        return Err(format!("{what}: next_cursor is Some, but nothing follows"));
    }
    Ok(())
}

// ---------------------------------------------------------------------------

/// A batch of 10,000 records in one `record` call is stored whole.
async fn large_batch<S: UsageSink>(sink: &S) -> Check {
    let mut gen = Gen::new(7);
    let owners: Vec<Option<String>> = (0..10)
        .map(|i| Some(format!("acct_bulk_{i}")))
        .chain([None])
        .collect();
    let records: Vec<UsageRecord> = (0..10_000)
        .map(|i: usize| {
            let owner = owners[i % owners.len()].as_deref();
            let status = [200, 201, 404, 500][i % 4];
            gen.request(i as i64 / 3, owner, "GET", "/rest/v1/items", status)
        })
        .collect();
    record(sink, &records, "one batch of 10,000 records").await?;
    let what = "reading back a batch of 10,000 records recorded in one call, 1000 a page";
    let got = read_all(sink, &scoped(ConsumerScope::All, Order::Asc, 1000), what).await?;
    expect_records(what, &sorted(&records, Order::Asc), &got)?;
    let one: Vec<UsageRecord> = records
        .iter()
        .filter(|r| r.consumer.as_deref() == Some("acct_bulk_3"))
        .cloned()
        .collect();
    let what = "reading back consumer \"acct_bulk_3\" of the 10,000-record batch, newest first";
    let got = read_all(
        sink,
        &scoped(consumer("acct_bulk_3"), Order::Desc, 250),
        what,
    )
    .await?;
    expect_records(what, &sorted(&one, Order::Desc), &got)
}

// ---------------------------------------------------------------------------

const WRITERS: usize = 8;
const PER_WRITER: usize = 500;

/// 8 tasks record 500 records each in small batches while readers page through:
/// every record is stored once, and every page a reader saw was sorted.
async fn concurrent_writers<S: UsageSink>(sink: Arc<S>) -> Check {
    let mut writers = Vec::new();
    let mut all = Vec::new();
    for w in 0..WRITERS {
        let mut gen = Gen::new(100 + w as u64);
        let owner = format!("acct_writer_{w}");
        let records: Vec<UsageRecord> = (0..PER_WRITER)
            .map(|i| {
                gen.request(
                    i as i64 * 2 + (w % 2) as i64,
                    Some(owner.as_str()),
                    "POST",
                    "/rest/v1/items",
                    201,
                )
            })
            .collect();
        all.extend(records.iter().cloned());
        let sink = Arc::clone(&sink);
        writers.push(tokio::spawn(async move {
            for (n, batch) in records.chunks(25).enumerate() {
                record(&*sink, batch, &format!("writer {w}'s batch {n}")).await?;
                tokio::task::yield_now().await;
            }
            Ok::<(), String>(())
        }));
    }
    let mut readers = Vec::new();
    for order in [Order::Asc, Order::Desc] {
        let sink = Arc::clone(&sink);
        readers.push(tokio::spawn(async move {
            for round in 0..20 {
                let what = format!(
                    "a reader paging {} while writers write, round {round}",
                    order_name(order)
                );
                let page = query(&*sink, &scoped(ConsumerScope::All, order, 50), &what).await?;
                let expected = sorted(&page.records, order);
                expect_records(&what, &expected, &page.records)?;
                tokio::task::yield_now().await;
            }
            Ok::<(), String>(())
        }));
    }
    for (i, task) in writers.into_iter().chain(readers).enumerate() {
        match task.await {
            Ok(result) => result?,
            Err(e) => {
                return Err(format!(
                    "concurrent task {i} failed: {}",
                    super::join_error(e)
                ))
            }
        }
    }
    let what = format!(
        "reading back {} records written by {WRITERS} concurrent tasks",
        WRITERS * PER_WRITER
    );
    let got = read_all(&*sink, &scoped(ConsumerScope::All, Order::Asc, 1000), &what).await?;
    expect_records(&what, &sorted(&all, Order::Asc), &got)
}

// ---------------------------------------------------------------------------

/// Recording the same records again (a writer's retry) stores each id once.
async fn idempotent_record<S: UsageSink>(sink: &S) -> Check {
    let mut gen = Gen::new(8);
    let first: Vec<UsageRecord> = (0..20)
        .map(|i| gen.request(i, Some("acct_retry"), "POST", "/rest/v1/items", 201))
        .collect();
    let later: Vec<UsageRecord> = (20..30)
        .map(|i| gen.request(i, None, "GET", "/health", 200))
        .collect();
    record(sink, &first, "a batch of 20").await?;
    record(sink, &first, "the same batch again (a retry)").await?;
    let overlapping: Vec<UsageRecord> = first[10..].iter().chain(&later).cloned().collect();
    record(
        sink,
        &overlapping,
        "a batch of 10 already stored and 10 new",
    )
    .await?;

    let what = "after recording a batch twice and an overlapping batch";
    let got = query(sink, &scoped(ConsumerScope::All, Order::Asc, 1000), what)
        .await?
        .records;
    let mut counts: HashMap<&str, usize> = HashMap::new();
    for r in &got {
        *counts.entry(r.id.as_str()).or_default() += 1;
    }
    if let Some(r) = got.iter().find(|r| counts[r.id.as_str()] > 1) {
        return Err(format!(
            "{what}: {} is stored {} times; record() is retried with the same batch after a \
             temporary error, so it must not store an id that is already stored",
            describe(r),
            counts[r.id.as_str()]
        ));
    }
    let all: Vec<UsageRecord> = first.iter().chain(&later).cloned().collect();
    expect_records(what, &sorted(&all, Order::Asc), &got)
}

// ---------------------------------------------------------------------------

/// A cursor issued for another consumer or order, and a forged one, are
/// `Err(SinkErrorKind::InvalidCursor)`: not a page, not a panic.
async fn invalid_cursor<S: UsageSink>(sink: &S) -> Check {
    let mut gen = Gen::new(9);
    let records: Vec<UsageRecord> = (0..40)
        .map(|i: i64| {
            let owner = [Some("acct_cursor_a"), Some("acct_cursor_b"), None][i as usize % 3];
            gen.request(i, owner, "GET", "/rest/v1/items", 200)
        })
        .collect();
    record(
        sink,
        &records,
        "records of two consumers and anonymous ones",
    )
    .await?;

    let a = scoped(consumer("acct_cursor_a"), Order::Asc, 5);
    let what = "the first page for consumer \"acct_cursor_a\" (5 of 14 records)";
    let Some(issued) = query(sink, &a, what).await?.next_cursor else {
        return Err(format!(
            "{what}: next_cursor is None, but more records follow"
        ));
    };
    let own = UsageQuery {
        cursor: Some(issued.clone()),
        ..a.clone()
    };
    query(
        sink,
        &own,
        "the second page for consumer \"acct_cursor_a\", with its own cursor",
    )
    .await?;

    let mut cases: Vec<(String, UsageQuery)> = Vec::new();
    for scope in [
        consumer("acct_cursor_b"),
        ConsumerScope::Anonymous,
        ConsumerScope::All,
    ] {
        cases.push((
            format!(
                "a query for {} with a cursor issued for consumer \"acct_cursor_a\"",
                scope_name(&scope)
            ),
            UsageQuery {
                consumer: scope,
                cursor: Some(issued.clone()),
                ..a.clone()
            },
        ));
    }
    cases.push((
        "a newest-first query with a cursor issued for oldest first".into(),
        UsageQuery {
            order: Order::Desc,
            cursor: Some(issued.clone()),
            ..a.clone()
        },
    ));
    let b64 = |s: &str| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(s);
    let forged = [
        "garbage".to_owned(),
        String::new(),
        "not a cursor!".to_owned(),
        "AAAA".to_owned(),
        b64("1.a.notanumber.0123456789ab.01HX0000000000000000000000"),
        b64("9.a.1714557000000.0123456789ab.01HX0000000000000000000000"),
        b64("1.a.1714557000000"),
        issued.chars().rev().collect(),
        "x".repeat(4096),
    ];
    for cursor in forged {
        let shown: String = cursor.chars().take(40).collect();
        cases.push((
            format!("a query with the forged cursor {shown:?}"),
            UsageQuery {
                cursor: Some(cursor),
                ..a.clone()
            },
        ));
    }
    for (what, q) in cases {
        match sink.query(&q).await {
            Ok(page) => {
                return Err(format!(
                    "{what} was answered with a page of {} records; it must fail with \
                     SinkErrorKind::InvalidCursor (decode cursors with UsageQuery::position)",
                    page.records.len()
                ));
            }
            Err(e) if e.kind() == SinkErrorKind::InvalidCursor => {}
            Err(e) => {
                return Err(format!(
                    "{what} failed with kind {:?} ({e}); it must be SinkErrorKind::InvalidCursor",
                    e.kind()
                ));
            }
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
