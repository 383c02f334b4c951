//! The conformance kit catches broken sinks: each sink here breaks one rule of
//! the `UsageSink` contract, and the matching check must fail, saying what is
//! wrong.
#![cfg(feature = "testing")]

use std::sync::{Arc, Mutex};

use tower_usage::sink::Projection;
use tower_usage::sink::{
    ConsumerScope, GroupKeys, Order, SummaryBucket, SummaryQuery, SummaryStats, UsageSummary,
};
use tower_usage::testing::{run_all, run_check};
use tower_usage::testing::{SinkKit, CHECKS};
use tower_usage::{
    CapturedBody, MemorySink, SinkError, UsagePage, UsageQuery, UsageRecord, UsageSink,
};

/// The one thing a [`Broken`] sink gets wrong.
#[derive(Debug, Clone, Copy)]
enum Flaw {
    /// Answers every query as if it were for all consumers.
    IgnoresScope,
    /// Always answers the first page.
    IgnoresCursor,
    /// Breaks ties on `created_at` by id the wrong way round.
    ReversedTies,
    /// Sorts by id alone.
    SortsByIdOnly,
    /// Treats `until` as inclusive.
    InclusiveUntil,
    /// Stores header values as lossy UTF-8 and forgets the gRPC details.
    Lossy,
    /// Says more may follow whenever a page is full, without looking.
    FullPageHasCursor,
    /// Unwraps the cursor.
    PanicsOnBadCursor,
    /// Stores at most 5,000 records of a batch.
    TruncatesBatches,
    /// Ignores the route filter, on the list and the summary.
    IgnoresRoute,
    /// Counts one request too few in the summary's total.
    SummaryMissesOne,
    /// Starts buckets an hour late (days and months at midnight in UTC+1).
    SummaryLocalTime,
    /// Sums bytes in 32 bits.
    SummaryBytes32,
    /// Rounds percentiles up to a power of two.
    CoarsePercentiles,
    /// Shows a bucket with zero requests when nothing matched.
    SummaryZeroFill,
    /// Looks records up by id in every consumer's records.
    GetIgnoresScope,
    /// Rebuilds each body from its bytes with `CapturedBody::complete`
    /// (keeping truncated ones), so a size apart from the bytes is lost.
    RebuildsBodies,
    /// Stores no trace context.
    DropsTrace,
}

/// A `MemorySink` with one flaw.
#[derive(Debug, Clone)]
struct Broken {
    inner: MemorySink,
    flaw: Flaw,
}

fn broken(flaw: Flaw) -> impl FnMut() -> std::future::Ready<Broken> {
    move || {
        std::future::ready(Broken {
            inner: MemorySink::new(),
            flaw,
        })
    }
}

#[async_trait::async_trait]
impl UsageSink for Broken {
    async fn record(&self, batch: &[UsageRecord]) -> Result<(), SinkError> {
        match self.flaw {
            Flaw::Lossy => {
                let lossy: Vec<UsageRecord> = batch
                    .iter()
                    .cloned()
                    .map(|mut r| {
                        for v in r.request.headers.values_mut() {
                            let text = String::from_utf8_lossy(v.as_bytes()).into_owned();
                            *v = http::HeaderValue::from_str(&text).unwrap();
                        }
                        r.grpc = None;
                        r
                    })
                    .collect();
                self.inner.record(&lossy).await
            }
            Flaw::TruncatesBatches => self.inner.record(&batch[..batch.len().min(5_000)]).await,
            Flaw::DropsTrace => {
                let untraced: Vec<UsageRecord> = batch
                    .iter()
                    .cloned()
                    .map(|mut r| {
                        r.trace = None;
                        r
                    })
                    .collect();
                self.inner.record(&untraced).await
            }
            Flaw::RebuildsBodies => {
                let rebuilt: Vec<UsageRecord> = batch
                    .iter()
                    .cloned()
                    .map(|mut r| {
                        for body in [&mut r.request.body, &mut r.response] {
                            if !body.truncated {
                                *body = CapturedBody::complete(body.bytes.clone());
                            }
                        }
                        r
                    })
                    .collect();
                self.inner.record(&rebuilt).await
            }
            _ => self.inner.record(batch).await,
        }
    }

    async fn query(&self, query: &UsageQuery) -> Result<UsagePage, SinkError> {
        let mut q = query.clone();
        match self.flaw {
            Flaw::IgnoresScope => q.consumer = ConsumerScope::All,
            Flaw::IgnoresCursor => q.cursor = None,
            Flaw::InclusiveUntil => q.until = q.until.map(|u| u + time::Duration::milliseconds(1)),
            Flaw::PanicsOnBadCursor => {
                query.position().expect("a valid cursor");
            }
            Flaw::IgnoresRoute => q.route = None,
            _ => {}
        }
        let mut page = self.inner.query(&q).await?;
        let key = |r: &UsageRecord| r.created_at.unix_timestamp_nanos() / 1_000_000;
        match (self.flaw, query.order) {
            (Flaw::ReversedTies, Order::Asc) => page
                .records
                .sort_by(|a, b| key(a).cmp(&key(b)).then(b.id.cmp(&a.id))),
            (Flaw::ReversedTies, Order::Desc) => page
                .records
                .sort_by(|a, b| key(b).cmp(&key(a)).then(a.id.cmp(&b.id))),
            (Flaw::SortsByIdOnly, Order::Asc) => page.records.sort_by(|a, b| a.id.cmp(&b.id)),
            (Flaw::SortsByIdOnly, Order::Desc) => page.records.sort_by(|a, b| b.id.cmp(&a.id)),
            (Flaw::FullPageHasCursor, _) if page.records.len() == query.limit => {
                page.next_cursor = page.records.last().map(|r| query.cursor_after(r));
            }
            _ => {}
        }
        Ok(page)
    }

    async fn get(&self, id: &str, scope: &ConsumerScope) -> Result<Option<UsageRecord>, SinkError> {
        match self.flaw {
            Flaw::GetIgnoresScope => self.inner.get(id, &ConsumerScope::All).await,
            _ => self.inner.get(id, scope).await,
        }
    }

    async fn summarize(&self, query: &SummaryQuery) -> Result<UsageSummary, SinkError> {
        let mut q = query.clone();
        if let Flaw::IgnoresRoute = self.flaw {
            q.route = None;
        }
        let mut s = self.inner.summarize(&q).await?;
        let mut each = |f: &dyn Fn(&mut SummaryStats)| {
            for b in &mut s.buckets {
                f(&mut b.stats);
            }
            f(&mut s.total);
        };
        match self.flaw {
            Flaw::SummaryMissesOne => s.total.requests = s.total.requests.saturating_sub(1),
            Flaw::SummaryLocalTime => {
                for b in &mut s.buckets {
                    b.start += time::Duration::hours(1);
                }
            }
            Flaw::SummaryBytes32 => each(&|t| {
                t.request_bytes = u64::from(t.request_bytes as u32);
                t.response_bytes = u64::from(t.response_bytes as u32);
            }),
            Flaw::CoarsePercentiles => each(&|t| {
                let d = &mut t.duration_us;
                for p in [&mut d.p50, &mut d.p95, &mut d.p99] {
                    *p = p.next_power_of_two().min(d.max);
                }
            }),
            Flaw::SummaryZeroFill if s.buckets.is_empty() => s.buckets.push(SummaryBucket {
                start: query.interval.floor(query.since),
                keys: GroupKeys::default(),
                stats: SummaryStats::default(),
            }),
            _ => {}
        }
        Ok(s)
    }
}

async fn fails(check: &str, flaw: Flaw, phrases: &[&str]) -> String {
    let err = match run_check(check, broken(flaw)).await {
        Ok(()) => panic!("check {check} passed a sink that is {flaw:?}"),
        Err(err) => err,
    };
    // Shown with `--nocapture`: what a sink author would read.
    eprintln!("{check} on a sink that is {flaw:?}:\n  {err}\n");
    for phrase in phrases {
        assert!(
            err.contains(phrase),
            "the {check} failure for {flaw:?} does not mention {phrase:?}: {err}"
        );
    }
    err
}

#[tokio::test]
async fn a_sink_ignoring_the_consumer_scope_fails_isolation() {
    let err = fails(
        "consumer_isolation",
        Flaw::IgnoresScope,
        &[
            "query scoped to",
            "returned a record of consumer",
            "must never see another consumer's",
        ],
    )
    .await;
    assert!(!err.contains("query scoped to all consumers"), "{err}");
    // The kit is specific: what this sink does right still passes.
    assert_eq!(
        run_check("round_trip", broken(Flaw::IgnoresScope)).await,
        Ok(())
    );
}

#[tokio::test]
async fn a_sink_ignoring_the_cursor_fails_paging_and_cursor_checks() {
    fails(
        "cursor_paging",
        Flaw::IgnoresCursor,
        &["page 2 repeats", "cursor's position"],
    )
    .await;
    fails(
        "invalid_cursor",
        Flaw::IgnoresCursor,
        &["was answered with a page", "InvalidCursor"],
    )
    .await;
    assert_eq!(
        run_check("round_trip", broken(Flaw::IgnoresCursor)).await,
        Ok(())
    );
}

#[tokio::test]
async fn a_sink_sorting_ties_wrongly_fails_ordering() {
    fails(
        "ordering",
        Flaw::ReversedTies,
        &["wrong order at position", "ties on created_at"],
    )
    .await;
}

#[tokio::test]
async fn a_sink_sorting_by_id_alone_fails_ordering() {
    fails(
        "ordering",
        Flaw::SortsByIdOnly,
        &["wrong order at position"],
    )
    .await;
}

#[tokio::test]
async fn a_sink_with_an_inclusive_until_fails_filters() {
    fails(
        "filters",
        Flaw::InclusiveUntil,
        &["until", "exclusive", "should not be there"],
    )
    .await;
}

#[tokio::test]
async fn a_lossy_sink_fails_round_trip() {
    fails(
        "round_trip",
        Flaw::Lossy,
        &[
            "non-UTF-8 header values",
            "request.headers",
            "grpc: stored Some",
        ],
    )
    .await;
}

#[tokio::test]
async fn a_sink_storing_no_trace_fails_round_trip() {
    fails(
        "round_trip",
        Flaw::DropsTrace,
        &[
            "a W3C trace context",
            "trace: stored Some(TraceContext { trace_id: \"0af7651916cd43dd8448eb211c80319c\"",
            "read back None",
        ],
    )
    .await;
}

#[tokio::test]
async fn a_sink_guessing_next_cursor_fails_limits() {
    fails(
        "limits",
        Flaw::FullPageHasCursor,
        &["exactly 1000 matching records", "next_cursor is Some"],
    )
    .await;
}

#[tokio::test]
async fn a_panicking_sink_is_a_failed_check_not_a_panic() {
    fails(
        "invalid_cursor",
        Flaw::PanicsOnBadCursor,
        &["panicked", "a valid cursor"],
    )
    .await;
}

#[tokio::test]
async fn a_sink_truncating_batches_fails_large_batch() {
    fails(
        "large_batch",
        Flaw::TruncatesBatches,
        &["10,000", "5000 missing"],
    )
    .await;
}

#[tokio::test]
#[should_panic(expected = "check `consumer_isolation` failed")]
async fn run_all_panics_naming_the_failed_check() {
    run_all(broken(Flaw::IgnoresScope)).await;
}

/// Stores every record it is given, retries included: the trait docs' shape,
/// minus the duplicate check.
#[derive(Debug, Default)]
struct AppendOnly(Mutex<Vec<UsageRecord>>);

#[async_trait::async_trait]
impl UsageSink for AppendOnly {
    async fn record(&self, batch: &[UsageRecord]) -> Result<(), SinkError> {
        self.0.lock().unwrap().extend_from_slice(batch);
        Ok(())
    }

    async fn query(&self, query: &UsageQuery) -> Result<UsagePage, SinkError> {
        vec_query(&self.0.lock().unwrap(), query)
    }
}

fn vec_query(records: &[UsageRecord], query: &UsageQuery) -> Result<UsagePage, SinkError> {
    let after = query.position()?;
    let mut hits: Vec<UsageRecord> = records
        .iter()
        .filter(|r| query.matches(r) && after.as_ref().is_none_or(|p| p.is_before(r, query.order)))
        .cloned()
        .collect();
    hits.sort_by(|a, b| query.order.compare(a, b));
    Ok(UsagePage::from_sorted(query, hits))
}

#[tokio::test]
async fn a_sink_storing_retries_twice_fails_idempotence() {
    let err = run_check("idempotent_record", || async { AppendOnly::default() })
        .await
        .unwrap_err();
    assert!(err.contains("is stored 2 times"), "{err}");
    assert!(
        err.contains("must not store an id that is already stored"),
        "{err}"
    );
    // Everything else about it is right.
    assert_eq!(
        run_check("filters", || async { AppendOnly::default() }).await,
        Ok(())
    );
}

/// Writes by read, yield, write back: concurrent batches overwrite each other.
#[derive(Debug, Default)]
struct Racy(Arc<Mutex<Vec<UsageRecord>>>);

#[async_trait::async_trait]
impl UsageSink for Racy {
    async fn record(&self, batch: &[UsageRecord]) -> Result<(), SinkError> {
        let mut copy = self.0.lock().unwrap().clone();
        tokio::task::yield_now().await;
        for r in batch {
            if !copy.iter().any(|s| s.id == r.id) {
                copy.push(r.clone());
            }
        }
        *self.0.lock().unwrap() = copy;
        Ok(())
    }

    async fn query(&self, query: &UsageQuery) -> Result<UsagePage, SinkError> {
        vec_query(&self.0.lock().unwrap(), query)
    }
}

#[tokio::test]
async fn a_sink_losing_concurrent_writes_fails_concurrent_writers() {
    let err = run_check("concurrent_writers", || async { Racy::default() })
        .await
        .unwrap_err();
    assert!(err.contains("concurrent tasks"), "{err}");
    assert!(err.contains("missing"), "{err}");
    // One writer at a time, it is fine.
    assert_eq!(
        run_check("idempotent_record", || async { Racy::default() }).await,
        Ok(())
    );
}

#[tokio::test]
async fn a_sink_ignoring_the_route_filter_fails_route_outcome_filters() {
    fails(
        "route_outcome_filters",
        Flaw::IgnoresRoute,
        &[
            "query with route",
            "should not be there",
            "exact route template",
        ],
    )
    .await;
    // Summaries without a route filter are right.
    assert_eq!(
        run_check("summary_buckets", broken(Flaw::IgnoresRoute)).await,
        Ok(())
    );
}

#[tokio::test]
async fn a_summary_missing_a_request_fails_summary_totals() {
    fails(
        "summary_totals",
        Flaw::SummaryMissesOne,
        &["total.requests is", "query() lists"],
    )
    .await;
    assert_eq!(
        run_check("summary_empty", broken(Flaw::SummaryMissesOne)).await,
        Ok(())
    );
}

#[tokio::test]
async fn buckets_in_local_time_fail_summary_buckets() {
    fails(
        "summary_buckets",
        Flaw::SummaryLocalTime,
        &["by minute", "holds no stored record"],
    )
    .await;
}

#[tokio::test]
async fn bytes_summed_in_32_bits_fail_summary_bytes() {
    fails(
        "summary_bytes",
        Flaw::SummaryBytes32,
        &["(requestBytes, responseBytes) is", "exact sums"],
    )
    .await;
    assert_eq!(
        run_check("summary_totals", broken(Flaw::SummaryBytes32)).await,
        Ok(())
    );
}

#[tokio::test]
async fn coarse_percentiles_fail_summary_percentiles() {
    fails(
        "summary_percentiles",
        Flaw::CoarsePercentiles,
        &[
            "the exact nearest-rank value is",
            "more than the 1% allowed",
        ],
    )
    .await;
}

#[tokio::test]
async fn zero_filled_buckets_fail_summary_empty() {
    fails(
        "summary_empty",
        Flaw::SummaryZeroFill,
        &["returned 1 buckets", "left out"],
    )
    .await;
}

/// A custom sink passes every check, summaries included, without a line of
/// summary code: the default `summarize` pages through `query`.
#[tokio::test]
async fn the_default_summarize_passes_the_kit() {
    run_all(default_summary(ListFlaw::None)).await;
}

#[tokio::test]
async fn a_sink_finding_other_consumers_ids_fails_get_by_id() {
    fails(
        "get_by_id",
        Flaw::GetIgnoresScope,
        &["outside the scope must be None", "404"],
    )
    .await;
    assert_eq!(
        run_check("get_by_id", broken(Flaw::IgnoresCursor)).await,
        Ok(())
    );
}

/// A sink with no `get` of its own: the default, on top of `query`, passes.
#[tokio::test]
async fn the_default_get_passes_the_kit() {
    #[derive(Clone, Default)]
    struct QueryOnly(MemorySink);

    #[async_trait::async_trait]
    impl UsageSink for QueryOnly {
        async fn record(&self, batch: &[UsageRecord]) -> Result<(), SinkError> {
            self.0.record(batch).await
        }
        async fn query(&self, query: &UsageQuery) -> Result<UsagePage, SinkError> {
            self.0.query(query).await
        }
    }

    assert_eq!(
        run_check("get_by_id", || async { QueryOnly::default() }).await,
        Ok(())
    );
}

/// Redaction and decoding change a body's bytes and keep its size: a sink
/// that takes the size from the bytes reports a wrong `bodySize`.
#[tokio::test]
async fn a_sink_rebuilding_bodies_from_their_bytes_fails_round_trip() {
    fails(
        "round_trip",
        Flaw::RebuildsBodies,
        &[
            "request.body.size: stored 40, read back 38",
            "response.size: stored 31, read back 50",
            "CapturedBody::complete",
        ],
    )
    .await;
}

/// What a [`DefaultSummary`] sink gets wrong, if anything.
#[derive(Debug, Clone, Copy, PartialEq)]
enum ListFlaw {
    None,
    /// Answers the first page whatever the cursor, with that page's cursor.
    IgnoresCursor,
    /// Answers the first page whatever the cursor, with cursors of its own
    /// that take turns (`"p1"`, `"p2"`), so no two in a row are equal.
    CyclingCursor,
    /// Honours `Projection::Summary`, as a sink that skips bodies should.
    HonoursProjection,
    /// Honours `Projection::Summary` and drops body sizes with the bodies.
    ProjectionDropsSizes,
    /// Never answers a query.
    Stalls,
}

/// The trait docs' sink: `record` and `query` over a vector, with one flaw
/// or none. Its summaries come from the default `summarize`, over `query`.
#[derive(Debug)]
struct DefaultSummary {
    records: Mutex<Vec<UsageRecord>>,
    flaw: ListFlaw,
}

fn default_summary(flaw: ListFlaw) -> impl FnMut() -> std::future::Ready<DefaultSummary> {
    move || {
        std::future::ready(DefaultSummary {
            records: Mutex::default(),
            flaw,
        })
    }
}

#[async_trait::async_trait]
impl UsageSink for DefaultSummary {
    async fn record(&self, batch: &[UsageRecord]) -> Result<(), SinkError> {
        let mut records = self.records.lock().unwrap();
        for r in batch {
            if !records.iter().any(|s| s.id == r.id) {
                records.push(r.clone());
            }
        }
        Ok(())
    }

    async fn query(&self, query: &UsageQuery) -> Result<UsagePage, SinkError> {
        let mut q = query.clone();
        match self.flaw {
            ListFlaw::Stalls => return std::future::pending().await,
            ListFlaw::IgnoresCursor | ListFlaw::CyclingCursor => q.cursor = None,
            _ => {}
        }
        let mut page = vec_query(&self.records.lock().unwrap(), &q)?;
        if self.flaw == ListFlaw::CyclingCursor && page.next_cursor.is_some() {
            let next = if query.cursor.as_deref() == Some("p1") {
                "p2"
            } else {
                "p1"
            };
            page.next_cursor = Some(next.to_owned());
        }
        if query.fields == Projection::Summary {
            for r in &mut page.records {
                match self.flaw {
                    ListFlaw::HonoursProjection => Projection::Summary.apply(r),
                    ListFlaw::ProjectionDropsSizes => {
                        r.request.body = CapturedBody::default();
                        r.response = CapturedBody::default();
                    }
                    _ => {}
                }
            }
        }
        Ok(page)
    }
}

/// The default `summarize` over a sink that ignores the cursor stops with a
/// clear error at once, instead of paging forever (as it did: `cargo test`
/// hung in `summary_percentiles`).
#[tokio::test]
async fn the_default_summarize_stops_when_the_cursor_does_not_move() {
    let err = run_check(
        "summary_percentiles",
        default_summary(ListFlaw::IgnoresCursor),
    )
    .await
    .unwrap_err();
    eprintln!("{err}");
    for phrase in [
        "summarize() failed",
        "stopped at page 2",
        "next_cursor does not move past the cursor it was asked with",
        "ignoring UsageQuery::cursor",
    ] {
        assert!(err.contains(phrase), "{phrase:?} not in: {err}");
    }
    // The same sink with the cursor honoured passes.
    assert_eq!(
        run_check("summary_percentiles", default_summary(ListFlaw::None)).await,
        Ok(())
    );
}

/// Cursors the crate cannot read and that never repeat back to back: no
/// rule can tell they lead nowhere, so the check's time limit stops it, and
/// the message names the check and the likely cause.
#[tokio::test]
async fn a_check_that_runs_out_of_time_fails_naming_the_check_and_the_cause() {
    let started = std::time::Instant::now();
    let err = SinkKit::new(default_summary(ListFlaw::CyclingCursor))
        .check_timeout(std::time::Duration::from_secs(3))
        .run_check("summary_percentiles")
        .await
        .unwrap_err();
    eprintln!("{err}");
    for phrase in [
        "check `summary_percentiles` did not finish within 3s",
        "next_cursor that does not advance",
        "the default summarize",
    ] {
        assert!(err.contains(phrase), "{phrase:?} not in: {err}");
    }
    assert!(started.elapsed() < std::time::Duration::from_secs(60));

    // A sink that never answers: stopped too, before the check proper.
    let err = SinkKit::new(default_summary(ListFlaw::Stalls))
        .check_timeout(std::time::Duration::from_millis(300))
        .run_check("round_trip")
        .await
        .unwrap_err();
    assert!(
        err.contains("check `round_trip` did not finish within 300ms"),
        "{err}"
    );
}

/// A sink may skip bodies for `Projection::Summary`, never the sizes.
#[tokio::test]
async fn a_sink_dropping_sizes_under_the_summary_projection_fails_projection() {
    let err = run_check(
        "projection",
        default_summary(ListFlaw::ProjectionDropsSizes),
    )
    .await
    .unwrap_err();
    eprintln!("{err}");
    for phrase in [
        "fields: Projection::Summary",
        "without a field a summary counts",
        "body sizes included",
    ] {
        assert!(err.contains(phrase), "{phrase:?} not in: {err}");
    }
    // Summaries over it are wrong too: the bytes are missing.
    assert!(run_check(
        "summary_bytes",
        default_summary(ListFlaw::ProjectionDropsSizes)
    )
    .await
    .is_err());
    // Honouring the projection as documented passes both.
    for check in [
        "projection",
        "summary_bytes",
        "summary_totals",
        "round_trip",
    ] {
        assert_eq!(
            run_check(check, default_summary(ListFlaw::HonoursProjection)).await,
            Ok(()),
            "{check}"
        );
    }
}

/// The clean-up hook runs after every check, passed or failed, with the
/// sink the check used, and a failing clean-up fails the check.
#[tokio::test]
async fn the_clean_up_hook_runs_after_every_check() {
    let calls = Arc::new(Mutex::new(Vec::new()));
    let seen = Arc::clone(&calls);
    SinkKit::new(|| async { MemorySink::with_capacity(20_000) })
        .clean_up(move |sink: Arc<MemorySink>| {
            let seen = Arc::clone(&seen);
            async move {
                // What the check left: an external store would drop it here.
                let left = sink.query(&UsageQuery::default()).await?.records.len();
                seen.lock().unwrap().push(left);
                Ok(())
            }
        })
        .run_all()
        .await;
    let calls = calls.lock().unwrap().clone();
    assert_eq!(calls.len(), CHECKS.len());
    // Every check but these two leaves records (`retention` writes only
    // with its `expire` hook).
    let writers = CHECKS.iter().zip(&calls);
    let mut writers = writers.filter(|(name, _)| !["empty_sink", "retention"].contains(name));
    assert!(writers.all(|(_, &left)| left > 0), "{calls:?}");

    // After a failed check too.
    let count = Arc::new(Mutex::new(0));
    let counted = Arc::clone(&count);
    let err = SinkKit::new(broken(Flaw::IgnoresScope))
        .clean_up(move |_| {
            *counted.lock().unwrap() += 1;
            async { Ok(()) }
        })
        .run_check("consumer_isolation")
        .await
        .unwrap_err();
    assert!(err.contains("must never see another consumer's"), "{err}");
    assert_eq!(*count.lock().unwrap(), 1);

    // A clean-up that fails is a failed check, saying so.
    let err = SinkKit::new(|| async { MemorySink::new() })
        .clean_up(|_| async { Err(SinkError::new(std::io::Error::other("DEL refused"))) })
        .run_check("empty_sink")
        .await
        .unwrap_err();
    assert!(
        err.contains("the clean-up after the check failed: DEL refused"),
        "{err}"
    );
}

// The macro with a clean-up hook: one test per check, each cleaned up.
tower_usage::sink_conformance_tests!(
    mod cleaned_up_memory,
    async { MemorySink::new() },
    clean_up = |sink: Arc<MemorySink>| async move {
        sink.query(&UsageQuery::default()).await.map(drop)
    },
);

/// Erases every consumer whose name starts with the one asked for (a `LIKE
/// 'name%'` where `=` was meant), or only hides the erased records in this
/// process (they stay in the store, and a reopened sink shows them).
#[derive(Debug, Clone)]
struct BadEraser {
    store: MemorySink,
    /// Ids of the records hidden by an erasure.
    hidden: Arc<Mutex<std::collections::HashSet<String>>>,
    by_prefix: bool,
}

impl BadEraser {
    fn new(by_prefix: bool) -> Self {
        Self {
            store: MemorySink::new(),
            hidden: Arc::default(),
            by_prefix,
        }
    }
}

#[async_trait::async_trait]
impl UsageSink for BadEraser {
    async fn record(&self, batch: &[UsageRecord]) -> Result<(), SinkError> {
        self.store.record(batch).await
    }

    async fn query(&self, query: &UsageQuery) -> Result<UsagePage, SinkError> {
        let all = self
            .store
            .query(&UsageQuery {
                limit: 100_000,
                cursor: None,
                ..query.clone()
            })
            .await?;
        let hidden = self.hidden.lock().unwrap().clone();
        let visible: Vec<UsageRecord> = all
            .records
            .into_iter()
            .filter(|r| !hidden.contains(&r.id))
            .collect();
        vec_query(&visible, query)
    }

    async fn erase_consumer(&self, consumer: &str) -> Result<u64, SinkError> {
        let page = self
            .store
            .query(&UsageQuery {
                limit: 100_000,
                ..UsageQuery::default()
            })
            .await?;
        if self.by_prefix {
            let mut erased = 0;
            let names: std::collections::BTreeSet<String> = page
                .records
                .iter()
                .filter_map(|r| r.consumer.clone())
                .filter(|c| c.starts_with(consumer))
                .collect();
            for name in names {
                erased += self.store.erase_consumer(&name).await?;
            }
            Ok(erased)
        } else {
            let mut hidden = self.hidden.lock().unwrap();
            let mut erased = 0;
            for r in page.records {
                if r.consumer.as_deref() == Some(consumer) && hidden.insert(r.id) {
                    erased += 1;
                }
            }
            Ok(erased)
        }
    }
}

#[tokio::test]
async fn a_sink_erasing_look_alike_consumers_fails_erasure() {
    let err = run_check("erasure", || async { BadEraser::new(true) })
        .await
        .expect_err("erasing by prefix must fail");
    eprintln!("erasure on a sink erasing by prefix:\n  {err}\n");
    assert!(err.contains("the consumer had 50"), "{err}");
}

#[tokio::test]
async fn a_sink_whose_erased_records_come_back_after_a_reopen_fails_erasure() {
    // Without the reopen hook the hiding cannot be seen...
    assert_eq!(
        run_check("erasure", || async { BadEraser::new(false) }).await,
        Ok(())
    );
    // ...with it, it is.
    let err = SinkKit::new(|| async { BadEraser::new(false) })
        .reopen(|sink: Arc<BadEraser>| async move {
            Ok(BadEraser {
                hidden: Arc::default(),
                ..(*sink).clone()
            })
        })
        .run_check("erasure")
        .await
        .expect_err("records back after a reopen must fail");
    eprintln!("erasure on a sink that only hides:\n  {err}\n");
    assert!(err.contains("after the sink was reopened"), "{err}");
}

/// The retention check with an `expire` hook that removes records older
/// than `age` shifted by `shift_minutes`.
async fn retention_with_shifted_cut(shift_minutes: i64) -> Result<(), String> {
    SinkKit::new(|| async { MemorySink::new() })
        .expire(
            move |sink: Arc<MemorySink>, age: std::time::Duration| async move {
                let shift = std::time::Duration::from_secs(shift_minutes.unsigned_abs() * 60);
                let age = if shift_minutes > 0 {
                    age + shift
                } else {
                    age - shift
                };
                sink.expire_older_than(age);
                Ok(())
            },
        )
        .run_check("retention")
        .await
}

#[tokio::test]
async fn retention_that_keeps_expired_records_fails() {
    let err = retention_with_shifted_cut(60)
        .await
        .expect_err("records older than the cut kept");
    eprintln!("retention keeping an hour too much:\n  {err}\n");
    assert!(err.contains("older than the hour kept"), "{err}");
}

#[tokio::test]
async fn retention_that_removes_younger_records_fails() {
    let err = retention_with_shifted_cut(-30)
        .await
        .expect_err("records younger than the cut removed");
    eprintln!("retention removing younger records:\n  {err}\n");
    assert!(
        err.contains("missing, e.g.") && err.contains("/young"),
        "{err}"
    );
}
