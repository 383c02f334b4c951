//! The sink conformance kit: checks a [`UsageSink`] against the whole contract.
//!
//! Enabled by the `testing` feature. Every sink this crate ships passes it, and a
//! sink of your own should too: the `/usage` endpoint relies on each rule below,
//! and a sink that breaks one shows a consumer someone else's traffic, or loses or
//! repeats records while a client pages.
//!
//! # Implementing your own sink
//!
//! [`UsageSink`] has six methods: implement the two required ones, `record`
//! and `query`; `get` and `summarize` have defaults built on `query` that pass
//! every check (override them to answer faster), `erase_consumer` answers
//! `Unsupported` until you override it, and `pending_since` matters only to a
//! sink that acknowledges before it stores. The [guide to writing a
//! sink](crate::sink#writing-a-sink) walks through a complete one. Then hold
//! the implementation to these rules:
//!
//! - **Store what was captured.** Keep each record in its storage form
//!   ([`UsageRecord::to_storage_bytes`](crate::UsageRecord::to_storage_bytes)),
//!   which keeps all of this: bodies byte for byte with their `size` (which
//!   differs from the bytes when redaction or decoding changed them) and
//!   `truncated` flag, the raw query string, route params in order, headers with
//!   repeats and non-UTF-8 values, every [`Outcome`](crate::Outcome), the
//!   [`GrpcCall`](crate::GrpcCall), and `created_at` to the millisecond.
//! - **Retries are harmless.** The writer retries a batch after a temporary
//!   error; recording an `id` that is already stored must not store it twice.
//! - **Scope first.** A query for [`ConsumerScope::Consumer`](crate::sink::ConsumerScope)
//!   returns that consumer's records and nothing else; `Anonymous` only records
//!   without a consumer; `All` everything.
//! - **Filter as [`UsageQuery::matches`](crate::UsageQuery::matches) does.**
//!   `since` is inclusive, `until` exclusive, the method is compared exactly, a
//!   path prefix is a plain prefix (a `%` or `_` in it is no wildcard), a status
//!   filter is one code or a class, a route filter the exact route template,
//!   an outcome filter one [`Outcome`](crate::Outcome).
//! - **Sort by `(created_at, id)`** in the query's order, ties on `created_at`
//!   broken by `id`.
//! - **Summaries count what the list shows.** [`UsageSink::summarize`] has a
//!   default built on `query` that passes every summary check; a sink that
//!   overrides it must count exactly the records `query` lists for
//!   [`SummaryQuery::list_query`](crate::sink::SummaryQuery::list_query), per
//!   bucket starting on a UTC boundary, with bytes summed exactly and
//!   percentiles within 1% (see [`summary`](crate::sink::summary)).
//! - **Page with keyset cursors.** Decode the cursor with
//!   [`UsageQuery::position`](crate::UsageQuery::position), which rejects a forged
//!   cursor and one issued for another consumer or order with
//!   [`SinkErrorKind::InvalidCursor`](crate::SinkErrorKind::InvalidCursor); fetch
//!   `limit + 1` records after that position and hand them to
//!   [`UsagePage::from_sorted`](crate::UsagePage::from_sorted), which makes the
//!   next cursor.
//!
//! # Running the kit
//!
//! In a test file of your crate, one `#[tokio::test]` per check:
//!
//! ```rust,no_run
//! # use tower_usage::MemorySink as MySink;
//! # async fn make_my_sink() -> MySink { MySink::new() }
//! // tests/conformance.rs
//! tower_usage::sink_conformance_tests!(async { make_my_sink().await });
//! # fn main() {}
//! ```
//!
//! or every check in one test with [`run_all`], which reports every failing check
//! at once (or [`SinkKit`], which also takes a time limit and a clean-up hook):
//!
//! ```rust,no_run
//! use tower_usage::MemorySink;
//!
//! #[tokio::test]
//! async fn my_sink_conforms() {
//!     tower_usage::testing::run_all(|| async { MemorySink::new() }).await;
//! }
//! # fn main() {}
//! ```
//!
//! Your crate needs the `testing` feature of `tower-usage` and `tokio` (features
//! `macros` and `rt`) as dev-dependencies (tower-usage is not on crates.io
//! yet: depend on a clone of its repository):
//!
//! ```toml
//! [dev-dependencies]
//! tower-usage = { path = "../tower-usage", features = ["testing"] }
//! tokio = { version = "1", features = ["macros", "rt"] }
//! ```
//!
//! # Time limits and clean-up
//!
//! Each check runs within a time limit ([`DEFAULT_CHECK_TIMEOUT`], 120 s;
//! [`SinkKit::check_timeout`] to change it): a check that runs out of time
//! fails with a message naming it and the likely cause (most often a
//! `next_cursor` that does not advance), instead of hanging the test run.
//!
//! A sink over an external store (a database server, Redis) leaves what each
//! check wrote in the store. [`SinkKit::clean_up`] takes a hook that the kit
//! calls with the check's sink after each check, passed or failed: drop the
//! check's key prefix, schema or table there. With the macro:
//!
//! ```rust,no_run
//! # use std::sync::Arc;
//! # use tower_usage::MemorySink as MySink;
//! # async fn make_my_sink() -> MySink { MySink::new() }
//! # async fn drop_everything(_: &MySink) -> Result<(), tower_usage::SinkError> { Ok(()) }
//! tower_usage::sink_conformance_tests!(
//!     mod my_sink,
//!     async { make_my_sink().await },
//!     clean_up = |sink: Arc<MySink>| async move { drop_everything(&sink).await },
//! );
//! # fn main() {}
//! ```
//!
//! # What the kit needs from `make_sink`
//!
//! - Every call returns a **fresh, empty** sink: a new file, schema or table for
//!   a database sink. A check fails at once if the sink already holds records.
//! - The sink keeps at least **10,000 records** (one check stores a batch that
//!   large), and keeps records at least as long as a check runs.
//! - The checks run inside a **tokio runtime**: they spawn tasks (to write
//!   concurrently, and to report a panicking sink as a failed check).
//!
//! Records are made from a fixed seed, so a failure repeats with the same ids.
//!
//! # The checks
//!
//! | name                 | what it checks |
//! |----------------------|----------------|
//! | `empty_sink`         | an empty sink answers every scope and order with an empty page and no cursor |
//! | `round_trip`         | every field comes back as recorded: empty, JSON, text, binary and truncated bodies, and bodies whose `size` differs from their bytes (redacted or decoded); query strings with repeats and escapes; params order; repeated and non-UTF-8 headers; route and consumer `None` and `Some`; every outcome; gRPC details; the trace context; capture notes; status; duration; `created_at` to the millisecond |
//! | `ordering`           | both orders sort by `(created_at, id)` with many equal timestamps, in one page and across pages, whatever order records arrived in |
//! | `cursor_paging`      | no gap and no duplicate while newer records are recorded between pages, both orders, scoped and not |
//! | `filters`            | since (inclusive), until (exclusive), method, exact and prefix path (with `%` and `_`), exact and class status, and combinations |
//! | `consumer_isolation` | a consumer's query never returns another consumer's or anonymous records (including look-alike names); `Anonymous` and `All` likewise |
//! | `limits`             | limit 1, a few, and 1000 with exactly 1000 (`next_cursor` `None`) and 1001 (`Some`) records |
//! | `large_batch`        | a batch of 10,000 records in one `record` call is all readable |
//! | `concurrent_writers` | 8 tasks writing 500 records each, with readers paging meanwhile: all stored, none twice |
//! | `idempotent_record`  | recording the same batch again, or an overlapping one, stores each id once |
//! | `invalid_cursor`     | a cursor issued for another consumer or order, and forged cursors, fail with `InvalidCursor` |
//! | `get_by_id`          | [`get`](UsageSink::get) finds each record in its consumer's scope and in `All`, field for field, and nothing in another consumer's scope, for a missing id or a malformed one (`Ok(None)`, not an error) |
//! | `route_outcome_filters` | `route` (the exact template) and `outcome` filters, alone and with others, on the list and the summary |
//! | `summary_totals`     | for random scopes, ranges, filters, intervals and groupings: `total.requests` equals what `query` lists, the buckets add up, each bucket's requests, 4xx, 5xx and max duration are right, buckets are sorted and the query echoed |
//! | `summary_buckets`    | buckets start on UTC minute, hour, day and month boundaries and hold their interval's records, those on a boundary and a millisecond before it included |
//! | `summary_bytes`      | request and response bytes summed exactly per bucket and in total, past 32 bits |
//! | `summary_percentiles`| p50, p95, p99 within 1% of the exact nearest-rank value on a known distribution (0 µs to 20 s); `max` exact |
//! | `summary_empty`      | a range without records (empty sink, range outside the records, empty range, unknown consumer or route) has no bucket and a zero total |
//! | `projection`         | a query for [`Projection::Summary`](crate::sink::Projection) lists the same records in the same order as one for every field, each with every field a summary counts or a filter reads (body sizes and the trace included); both orders, across pages |
//! | `erasure`            | [`erase_consumer`](UsageSink::erase_consumer) removes one consumer's records (and says how many) from the list, `get` and the summary, and no one else's (look-alike names, a `%` in a name, anonymous records); again, it removes nothing; with [`SinkKit::reopen`], none is back after a reopen; a record written after the erasure is kept. A sink answering `Unsupported` passes (it says it cannot erase) |
//! | `retention`          | with [`SinkKit::expire`]: 1500 records from 3 hours ago to now, expired at an hour: exactly the younger ones are listed, fetched and counted, also after a reopen ([`SinkKit::reopen`]); without the hook, nothing to check |

use std::future::Future;

use crate::UsageSink;

mod checks;
mod kit;
mod support;

pub use kit::{SinkKit, DEFAULT_CHECK_TIMEOUT};

/// The name of every check, in the order [`run_all`] runs them. Any of them can be
/// given to [`run_check`].
pub const CHECKS: &[&str] = crate::__tower_usage_checks!(@with_checks @names);

/// Runs every check against fresh sinks from `make_sink`, one sink per check,
/// each within [`DEFAULT_CHECK_TIMEOUT`]: [`SinkKit::run_all`] with the
/// defaults.
///
/// Panics after the last check if any failed, with a message naming each failed
/// check and what was wrong. Must run inside a tokio runtime (a
/// `#[tokio::test]` is enough). See the [module docs](self).
///
/// ```rust,no_run
/// use tower_usage::MemorySink;
///
/// #[tokio::test]
/// async fn memory_sink_conforms() {
///     tower_usage::testing::run_all(|| async { MemorySink::with_capacity(20_000) }).await;
/// }
/// # fn main() {}
/// ```
pub async fn run_all<S, F, Fut>(make_sink: F)
where
    S: UsageSink,
    F: FnMut() -> Fut,
    Fut: Future<Output = S>,
{
    SinkKit::new(make_sink).run_all().await;
}

/// Runs the check called `name` (one of [`CHECKS`]) against a fresh sink from
/// `make_sink`, within [`DEFAULT_CHECK_TIMEOUT`]: [`SinkKit::run_check`] with
/// the defaults.
///
/// Returns `Err` describing what was wrong, also when the sink panicked, the
/// check ran out of time, or `name` is no check. Must run inside a tokio
/// runtime.
///
/// ```rust,no_run
/// use tower_usage::MemorySink;
///
/// #[tokio::test]
/// async fn memory_sink_keeps_consumers_apart() {
///     let result = tower_usage::testing::run_check("consumer_isolation", || async {
///         MemorySink::new()
///     })
///     .await;
///     assert_eq!(result, Ok(()));
/// }
/// # fn main() {}
/// ```
pub async fn run_check<S, F, Fut>(name: &str, make_sink: F) -> Result<(), String>
where
    S: UsageSink,
    F: FnMut() -> Fut,
    Fut: Future<Output = S>,
{
    SinkKit::new(make_sink).run_check(name).await
}

/// Expands to one `#[tokio::test]` per [conformance check](crate::testing::CHECKS),
/// in a module called `sink_conformance` (or the name given after `mod`).
///
/// The argument is an expression evaluated once per check, to a future of a
/// fresh, empty sink; after it, optionally, `clean_up = <closure>`, the hook
/// [`SinkKit::clean_up`] takes. A failing check panics with what was wrong.
/// Each check runs within [`DEFAULT_CHECK_TIMEOUT`](crate::testing::DEFAULT_CHECK_TIMEOUT).
/// The tests need
/// `tokio` (features `macros` and `rt`) among the calling crate's
/// dev-dependencies, and the `testing` feature of this crate; see the
/// [`testing`](crate::testing) module docs.
///
/// ```rust,no_run
/// // tests/conformance.rs
/// use tower_usage::MemorySink;
///
/// tower_usage::sink_conformance_tests!(async { MemorySink::new() });
///
/// // Several sinks in one file: name the modules.
/// tower_usage::sink_conformance_tests!(mod big_memory, async {
///     MemorySink::with_capacity(50_000)
/// });
/// # fn main() {}
/// ```
#[macro_export]
macro_rules! sink_conformance_tests {
    (mod $module:ident, $make_sink:expr, clean_up = $clean_up:expr $(,)?) => {
        $crate::__tower_usage_checks!(@with_checks @tests $module ($make_sink) ($clean_up));
    };
    (mod $module:ident, $make_sink:expr $(,)?) => {
        $crate::__tower_usage_checks!(
            @with_checks @tests $module ($make_sink) (|_| async { ::core::result::Result::Ok(()) })
        );
    };
    ($make_sink:expr $(,)?) => {
        $crate::sink_conformance_tests!(mod sink_conformance, $make_sink);
    };
}

/// The one list of check names, handed to a macro arm; not public API.
#[doc(hidden)]
#[macro_export]
macro_rules! __tower_usage_checks {
    (@with_checks $($then:tt)*) => {
        $crate::__tower_usage_checks! {
            $($then)* [
                empty_sink
                round_trip
                ordering
                cursor_paging
                filters
                consumer_isolation
                limits
                large_batch
                concurrent_writers
                idempotent_record
                invalid_cursor
                get_by_id
                route_outcome_filters
                summary_totals
                summary_buckets
                summary_bytes
                summary_percentiles
                summary_empty
                projection
                erasure
                retention
            ]
        }
    };
    // Hands the list to the caller's macro: `__tower_usage_checks!(@each my_macro)`
    // expands to `my_macro! { empty_sink round_trip ... }`.
    (@each $callback:ident) => {
        $crate::__tower_usage_checks! { @with_checks @call $callback }
    };
    (@call $callback:ident [$($check:ident)*]) => {
        $callback! { $($check)* }
    };
    (@names [$($check:ident)*]) => {
        &[$(::core::stringify!($check)),*]
    };
    (@tests $module:ident ($make_sink:expr) ($clean_up:expr) [$($check:ident)*]) => {
        #[allow(unused_imports)]
        mod $module {
            use super::*;
            $(
                #[::tokio::test]
                async fn $check() {
                    let name = ::core::stringify!($check);
                    if let ::core::result::Result::Err(msg) =
                        $crate::testing::SinkKit::new(|| $make_sink)
                            .clean_up($clean_up)
                            .run_check(name)
                            .await
                    {
                        ::core::panic!("sink conformance check `{}` failed: {}", name, msg);
                    }
                }
            )*
        }
    };
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn check_names_are_unique() {
        let mut names = CHECKS.to_vec();
        names.sort_unstable();
        names.dedup();
        assert_eq!(names.len(), CHECKS.len());
        assert_eq!(CHECKS.len(), 21);
    }

    #[tokio::test]
    async fn an_unknown_check_is_an_error() {
        let err = run_check("no_such_check", || async { crate::MemorySink::new() })
            .await
            .unwrap_err();
        assert!(
            err.contains("no_such_check") && err.contains("round_trip"),
            "{err}"
        );
    }
}
