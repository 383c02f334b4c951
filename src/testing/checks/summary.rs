//! Summaries and the route and outcome filters: `summary_totals`,
//! `summary_buckets`, `summary_bytes`, `summary_percentiles`,
//! `route_outcome_filters`, `summary_empty`.
//!
//! The kit counts the records it stored itself (an oracle independent of the
//! crate's own aggregation) and compares; the sink's list (`query`) must agree
//! with its summary.

use std::collections::BTreeMap;

use time::OffsetDateTime;

use super::{consumer, Check};
use crate::sink::{
    ConsumerScope, GroupBy, GroupKey, GroupKeys, Interval, StatusFilter, SummaryQuery, UsageSummary,
};
use crate::testing::support::{at, expect_records, read_all, record, sorted, Gen};
use crate::{CapturedBody, Outcome, UsageQuery, UsageRecord, UsageSink};

const ROUTES: [Option<&str>; 3] = [Some("/items/{id}"), Some("/orders"), None];
const OUTCOMES: [Outcome; 4] = [
    Outcome::Complete,
    Outcome::ClientGone,
    Outcome::Cancelled,
    Outcome::Error,
];
const STATUSES: [u16; 8] = [200, 201, 204, 301, 404, 429, 500, 503];
const METHODS: [&str; 3] = ["GET", "POST", "DELETE"];
const OWNERS: [Option<&str>; 3] = [Some("acct_sum_a"), Some("acct_sum_b"), None];

/// 24 hours in milliseconds.
const DAY: i64 = 86_400_000;

/// Records over three days around the kit's base time (which is 2024-05-01
/// 09:50 UTC, so the range crosses a month boundary), some exactly on minute,
/// hour, day and month boundaries and a millisecond before them; every route,
/// method, status, outcome and owner; durations from 0 µs to 5 s; body sizes
/// up to 5 GB (past 32 bits).
fn population(gen: &mut Gen, rng: &mut fastrand::Rng) -> Vec<UsageRecord> {
    // 2024-05-01T00:00:00.000Z, a day and a month boundary.
    let midnight = -(9 * 3_600_000 + 50 * 60_000);
    let mut offsets: Vec<i64> = (0..400).map(|_| rng.i64(-2 * DAY..DAY)).collect();
    for edge in [
        midnight,
        midnight + 3_600_000,
        10 * 60_000,
        60_000,
        midnight - DAY,
    ] {
        offsets.extend([edge, edge - 1, edge + 1]);
    }
    offsets
        .into_iter()
        .enumerate()
        .map(|(i, offset)| {
            let path = match ROUTES[i % 3] {
                Some("/items/{id}") => format!("/items/{}", i % 7),
                Some(r) => r.to_owned(),
                None => format!("/unrouted/{i}x"),
            };
            let mut r = gen.request(
                offset,
                OWNERS[(i / 3) % 3],
                METHODS[(i / 2) % 3],
                &path,
                STATUSES[(i * 5 + i / 4) % STATUSES.len()],
            );
            r.route = ROUTES[i % 3].map(str::to_owned);
            r.outcome = OUTCOMES[(i / 5) % 4];
            r.duration_us = match i % 10 {
                0 => 0,
                1 => rng.u64(1..200),
                _ => rng.u64(200..5_000_000),
            };
            r.request.body = sized(&r.request.body, rng.u64(..3_000));
            r.response = sized(
                &r.response,
                if i % 17 == 0 {
                    5_000_000_000 + rng.u64(..1_000_000)
                } else {
                    rng.u64(..100_000)
                },
            );
            r
        })
        .collect()
}

/// `body` announcing `size` bytes (its kept bytes cut, as a capture limit does).
fn sized(body: &CapturedBody, size: u64) -> CapturedBody {
    let kept = body
        .bytes
        .len()
        .min(usize::try_from(size).unwrap_or(usize::MAX));
    CapturedBody {
        bytes: body.bytes.slice(..kept),
        size,
        truncated: (kept as u64) < size,
    }
}

/// What the kit expects of one bucket (or the total).
#[derive(Debug, Default, Clone)]
struct Expected {
    requests: u64,
    client_errors: u64,
    server_errors: u64,
    request_bytes: u64,
    response_bytes: u64,
    durations: Vec<u64>,
}

impl Expected {
    fn add(&mut self, r: &UsageRecord) {
        self.requests += 1;
        self.client_errors += u64::from((400..500).contains(&r.status));
        self.server_errors += u64::from((500..600).contains(&r.status));
        self.request_bytes += r.request.body.size;
        self.response_bytes += r.response.size;
        self.durations.push(r.duration_us);
    }

    /// The exact nearest-rank percentile.
    fn percentile(&self, percent: u64) -> u64 {
        let mut d = self.durations.clone();
        d.sort_unstable();
        let n = d.len() as u64;
        let rank = (percent * n).div_ceil(100).max(1);
        d[(rank - 1) as usize]
    }

    fn max(&self) -> u64 {
        self.durations.iter().copied().max().unwrap_or(0)
    }
}

fn keys_of(group_by: GroupBy, r: &UsageRecord) -> GroupKeys {
    let on = |k| group_by.contains(k);
    GroupKeys {
        route: on(GroupKey::Route).then(|| r.route.clone()),
        method: on(GroupKey::Method).then(|| r.method.clone()),
        status: on(GroupKey::Status).then_some(r.status / 100),
        outcome: on(GroupKey::Outcome).then_some(r.outcome),
        consumer: on(GroupKey::Consumer).then(|| r.consumer.clone()),
    }
}

type Oracle = (BTreeMap<(OffsetDateTime, GroupKeys), Expected>, Expected);

fn oracle(records: &[UsageRecord], q: &SummaryQuery) -> Oracle {
    let mut buckets: BTreeMap<(OffsetDateTime, GroupKeys), Expected> = BTreeMap::new();
    let mut total = Expected::default();
    for r in records.iter().filter(|r| q.matches(r)) {
        buckets
            .entry((q.interval.floor(r.created_at), keys_of(q.group_by, r)))
            .or_default()
            .add(r);
        total.add(r);
    }
    (buckets, total)
}

fn describe_query(q: &SummaryQuery) -> String {
    let mut s = format!(
        "summary of {} from {} to {} by {}",
        match &q.consumer {
            ConsumerScope::All => "all consumers".to_owned(),
            ConsumerScope::Anonymous => "anonymous records".to_owned(),
            ConsumerScope::Consumer(c) => format!("consumer {c:?}"),
        },
        crate::record::format_timestamp(q.since),
        crate::record::format_timestamp(q.until),
        q.interval,
    );
    let keys: Vec<&str> = q.group_by.keys().map(GroupKey::as_str).collect();
    if !keys.is_empty() {
        s.push_str(&format!(", grouped by {}", keys.join(",")));
    }
    if let Some(m) = &q.method {
        s.push_str(&format!(", method {m}"));
    }
    if let Some(st) = q.status {
        s.push_str(&format!(", status {st:?}"));
    }
    if let Some(r) = &q.route {
        s.push_str(&format!(", route {r:?}"));
    }
    if let Some(o) = q.outcome {
        s.push_str(&format!(", outcome {o}"));
    }
    s
}

async fn summarize<S: UsageSink + ?Sized>(
    sink: &S,
    q: &SummaryQuery,
) -> Result<UsageSummary, String> {
    sink.summarize(q).await.map_err(|e| {
        format!(
            "{}: summarize() failed: {e} (kind {:?})",
            describe_query(q),
            e.kind()
        )
    })
}

/// Stores the population; returns it.
async fn stored<S: UsageSink>(sink: &S, seed: u64) -> Result<Vec<UsageRecord>, String> {
    let mut gen = Gen::new(seed);
    let mut rng = fastrand::Rng::with_seed(seed);
    let records = population(&mut gen, &mut rng);
    record(sink, &records, "the summary population").await?;
    Ok(records)
}

/// A random summary query over the population's range.
fn random_query(rng: &mut fastrand::Rng) -> SummaryQuery {
    let scopes = [
        ConsumerScope::All,
        consumer("acct_sum_a"),
        consumer("acct_sum_b"),
        ConsumerScope::Anonymous,
    ];
    let since = at(rng.i64(-3 * DAY..0)) + time::Duration::microseconds(rng.i64(0..1000));
    let until = at(rng.i64(-DAY..2 * DAY));
    let group_by = GroupKey::ALL
        .into_iter()
        .filter(|_| rng.u8(..3) == 0)
        .collect();
    SummaryQuery {
        consumer: scopes[rng.usize(..scopes.len())].clone(),
        since,
        until: until.max(since),
        method: (rng.u8(..5) == 0).then(|| METHODS[rng.usize(..3)].to_owned()),
        path: None,
        status: match rng.u8(..6) {
            0 => StatusFilter::parse("4xx"),
            1 => StatusFilter::parse("500"),
            _ => None,
        },
        route: (rng.u8(..6) == 0).then(|| "/items/{id}".to_owned()),
        outcome: (rng.u8(..6) == 0).then(|| OUTCOMES[rng.usize(..4)]),
        trace_id: None,
        interval: Interval::ALL[rng.usize(..4)],
        group_by,
    }
}

/// Compares a summary's buckets and total with the oracle: `compare` says
/// what is compared of each.
fn compare(
    q: &SummaryQuery,
    got: &UsageSummary,
    (buckets, total): &Oracle,
    what: &str,
    compare: impl Fn(&crate::sink::SummaryStats, &Expected) -> Option<String>,
) -> Check {
    let ctx = describe_query(q);
    if let Some(diff) = compare(&got.total, total) {
        return Err(format!("{ctx}: the total's {what}: {diff}"));
    }
    let expected: Vec<_> = buckets.keys().collect();
    let keys: Vec<_> = got.buckets.iter().map(|b| (&b.start, &b.keys)).collect();
    for (i, (start, keys)) in keys.iter().enumerate() {
        let Some(exp) = buckets.get(&(**start, (*keys).clone())) else {
            return Err(format!(
                "{ctx}: bucket {i} (start {}, {keys:?}) holds no stored record; \
                 the stored records fall in {} buckets: {:?}",
                crate::record::format_timestamp(**start),
                expected.len(),
                expected.iter().take(5).collect::<Vec<_>>()
            ));
        };
        if let Some(diff) = compare(&got.buckets[i].stats, exp) {
            return Err(format!(
                "{ctx}: bucket {i} (start {}, {keys:?}) {what}: {diff}",
                crate::record::format_timestamp(**start)
            ));
        }
    }
    if got.buckets.len() != buckets.len() {
        let missing = buckets
            .keys()
            .find(|k| !keys.contains(&(&k.0, &k.1)))
            .map(|(s, k)| format!("start {}, {k:?}", crate::record::format_timestamp(*s)));
        return Err(format!(
            "{ctx}: {} buckets, expected {} (each start and group with at least one \
             request, once); missing e.g. {missing:?}",
            got.buckets.len(),
            buckets.len()
        ));
    }
    Ok(())
}

// ---------------------------------------------------------------------------

/// Totals equal the list's count, and every bucket's counts are right, for
/// random scopes, ranges, filters, intervals and groupings.
pub(super) async fn summary_totals<S: UsageSink>(sink: &S) -> Check {
    let records = stored(sink, 0x5u64).await?;
    let mut rng = fastrand::Rng::with_seed(11);
    for _ in 0..24 {
        let q = random_query(&mut rng);
        let got = summarize(sink, &q).await?;
        let listed = read_all(sink, &q.list_query(), &describe_query(&q)).await?;
        if got.total.requests != listed.len() as u64 {
            return Err(format!(
                "{}: total.requests is {}, but query() lists {} records with the same \
                 scope, range and filters (SummaryQuery::list_query); a summary counts \
                 exactly what the list shows",
                describe_query(&q),
                got.total.requests,
                listed.len()
            ));
        }
        let sum: u64 = got.buckets.iter().map(|b| b.stats.requests).sum();
        if sum != got.total.requests {
            return Err(format!(
                "{}: the buckets' requests add up to {sum}, the total says {}",
                describe_query(&q),
                got.total.requests
            ));
        }
        if (got.since, got.until, got.interval, got.group_by)
            != (q.since, q.until, q.interval, q.group_by)
        {
            return Err(format!(
                "{}: the summary does not echo the query's since, until, interval and groupBy",
                describe_query(&q)
            ));
        }
        let sorted_ok = got
            .buckets
            .windows(2)
            .all(|w| (w[0].start, &w[0].keys) < (w[1].start, &w[1].keys));
        if !sorted_ok {
            return Err(format!(
                "{}: buckets are not sorted by start, then group keys (each once)",
                describe_query(&q)
            ));
        }
        compare(&q, &got, &oracle(&records, &q), "counts", |s, e| {
            let got = (
                s.requests,
                s.client_errors,
                s.server_errors,
                s.duration_us.max,
            );
            let want = (e.requests, e.client_errors, e.server_errors, e.max());
            (got != want).then(|| {
                format!(
                    "(requests, clientErrors, serverErrors, max duration) is {got:?}, expected {want:?}"
                )
            })
        })?;
    }
    Ok(())
}

/// Buckets start on UTC boundaries and hold the records of their interval,
/// records on a boundary and a millisecond before it included.
pub(super) async fn summary_buckets<S: UsageSink>(sink: &S) -> Check {
    let records = stored(sink, 0xB0u64).await?;
    for interval in Interval::ALL {
        for group_by in [GroupBy::NONE, GroupBy::NONE.with(GroupKey::Status)] {
            let q = SummaryQuery {
                since: at(-3 * DAY),
                until: at(2 * DAY),
                interval,
                group_by,
                ..SummaryQuery::default()
            };
            let got = summarize(sink, &q).await?;
            if let Some(b) = got
                .buckets
                .iter()
                .find(|b| interval.floor(b.start) != b.start)
            {
                return Err(format!(
                    "{}: a bucket starts at {}, not on a UTC {interval} boundary",
                    describe_query(&q),
                    crate::record::format_timestamp(b.start)
                ));
            }
            compare(&q, &got, &oracle(&records, &q), "requests", |s, e| {
                (s.requests != e.requests)
                    .then(|| format!("{} requests, expected {}", s.requests, e.requests))
            })?;
        }
    }
    Ok(())
}

/// Request and response bytes are summed exactly, past 32 bits.
pub(super) async fn summary_bytes<S: UsageSink>(sink: &S) -> Check {
    let records = stored(sink, 0xB17E5u64).await?;
    let mut rng = fastrand::Rng::with_seed(5);
    for i in 0..8 {
        let mut q = random_query(&mut rng);
        if i == 0 {
            q = SummaryQuery {
                since: at(-3 * DAY),
                until: at(2 * DAY),
                interval: Interval::Month,
                ..SummaryQuery::default()
            };
        }
        let got = summarize(sink, &q).await?;
        compare(&q, &got, &oracle(&records, &q), "bytes", |s, e| {
            let got = (s.request_bytes, s.response_bytes);
            let want = (e.request_bytes, e.response_bytes);
            (got != want).then(|| {
                format!("(requestBytes, responseBytes) is {got:?}, expected {want:?} (exact sums of the bodies' sizes)")
            })
        })?;
    }
    Ok(())
}

/// On a known distribution, p50, p95 and p99 are within 1% of the exact
/// nearest-rank percentiles, and `max` is exact.
pub(super) async fn summary_percentiles<S: UsageSink>(sink: &S) -> Check {
    let mut gen = Gen::new(99);
    // 1,001 durations from 50 µs to 20 s, geometrically spaced and shuffled,
    // and 1,001 more from 0 to 1,000 µs in another hour.
    let mut records: Vec<UsageRecord> = (0..1001u32)
        .map(|i| {
            let mut r = gen.request(i64::from(i), Some("acct_p"), "GET", "/p", 200);
            r.duration_us = (50.0 * 400_000f64.powf(f64::from(i) / 1000.0)) as u64;
            r
        })
        .collect();
    records.extend((0..1001u32).map(|i| {
        let mut r = gen.request(3_600_000 + i64::from(i), Some("acct_p"), "GET", "/p", 200);
        r.duration_us = u64::from(i);
        r
    }));
    gen.shuffle(&mut records);
    record(sink, &records, "the percentile population").await?;
    let q = SummaryQuery {
        consumer: consumer("acct_p"),
        since: at(-DAY),
        until: at(DAY),
        interval: Interval::Hour,
        ..SummaryQuery::default()
    };
    let got = summarize(sink, &q).await?;
    compare(&q, &got, &oracle(&records, &q), "durationUs", |s, e| {
        let d = s.duration_us;
        if d.max != e.max() {
            return Some(format!("max is {} µs, expected exactly {}", d.max, e.max()));
        }
        for (name, got, percent) in [("p50", d.p50, 50), ("p95", d.p95, 95), ("p99", d.p99, 99)] {
            let want = e.percentile(percent);
            let err = got.abs_diff(want) as f64 / want.max(1) as f64;
            if err > 0.01 {
                return Some(format!(
                    "{name} is {got} µs, the exact nearest-rank value is {want} µs: off by \
                     {:.2}%, more than the 1% allowed",
                    err * 100.0
                ));
            }
        }
        None
    })
}

/// The list's `route` and `outcome` filters, alone and with others, and the
/// summary's.
pub(super) async fn route_outcome_filters<S: UsageSink>(sink: &S) -> Check {
    let records = stored(sink, 0xF17u64).await?;
    let mut cases: Vec<(String, UsageQuery)> = Vec::new();
    for route in ["/items/{id}", "/orders", "/items/3", "/nope"] {
        cases.push((
            format!("route {route:?}"),
            UsageQuery {
                route: Some(route.to_owned()),
                ..UsageQuery::default()
            },
        ));
    }
    for outcome in OUTCOMES {
        cases.push((
            format!("outcome {outcome}"),
            UsageQuery {
                outcome: Some(outcome),
                ..UsageQuery::default()
            },
        ));
    }
    cases.push((
        "consumer \"acct_sum_a\", route \"/orders\", outcome client_gone, status 4xx".into(),
        UsageQuery {
            consumer: consumer("acct_sum_a"),
            route: Some("/orders".into()),
            outcome: Some(Outcome::ClientGone),
            status: StatusFilter::parse("4xx"),
            ..UsageQuery::default()
        },
    ));
    for (what, q) in cases {
        let what = format!("query with {what}");
        let got = read_all(sink, &q, &what).await?;
        let expected: Vec<UsageRecord> = records.iter().filter(|r| q.matches(r)).cloned().collect();
        expect_records(&what, &sorted(&expected, q.order), &got).map_err(|e| {
            format!(
                "{e}; a route filter is the exact route template, an outcome filter one outcome"
            )
        })?;
        let s = SummaryQuery {
            consumer: q.consumer.clone(),
            since: at(-3 * DAY),
            until: at(2 * DAY),
            status: q.status,
            route: q.route.clone(),
            outcome: q.outcome,
            interval: Interval::Month,
            ..SummaryQuery::default()
        };
        let summary = summarize(sink, &s).await?;
        if summary.total.requests != expected.len() as u64 {
            return Err(format!(
                "{}: total.requests is {}, expected {}",
                describe_query(&s),
                summary.total.requests,
                expected.len()
            ));
        }
    }
    Ok(())
}

/// A range without records: no bucket, a zero total, the range echoed; on an
/// empty sink and next to records outside the range.
pub(super) async fn summary_empty<S: UsageSink>(sink: &S) -> Check {
    let empty = |since: OffsetDateTime, until: OffsetDateTime, interval| SummaryQuery {
        since,
        until,
        interval,
        group_by: GroupBy::NONE.with(GroupKey::Route).with(GroupKey::Status),
        ..SummaryQuery::default()
    };
    let check = |q: &SummaryQuery, got: &UsageSummary, when: &str| -> Check {
        if !got.buckets.is_empty() {
            return Err(format!(
                "{} {when}: returned {} buckets (the first with {} requests); a bucket \
                 without requests is left out",
                describe_query(q),
                got.buckets.len(),
                got.buckets[0].stats.requests
            ));
        }
        if got.total != crate::sink::SummaryStats::default() {
            return Err(format!(
                "{} {when}: the total is {:?}, expected every figure 0",
                describe_query(q),
                got.total
            ));
        }
        if (got.since, got.until) != (q.since, q.until) {
            return Err(format!(
                "{} {when}: since and until are not echoed",
                describe_query(q)
            ));
        }
        Ok(())
    };
    let q = empty(at(0), at(DAY), Interval::Hour);
    check(&q, &summarize(sink, &q).await?, "on an empty sink")?;
    stored(sink, 0xE11u64).await?;
    for q in [
        empty(at(10 * DAY), at(11 * DAY), Interval::Hour),
        empty(at(-30 * DAY), at(-20 * DAY), Interval::Day),
        empty(at(0), at(0), Interval::Minute),
        SummaryQuery {
            consumer: consumer("acct_sum_nobody"),
            ..empty(at(-3 * DAY), at(2 * DAY), Interval::Month)
        },
        SummaryQuery {
            route: Some("/nope".into()),
            ..empty(at(-3 * DAY), at(2 * DAY), Interval::Day)
        },
    ] {
        check(
            &q,
            &summarize(sink, &q).await?,
            "next to records outside it",
        )?;
    }
    Ok(())
}
