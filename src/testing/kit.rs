//! [`SinkKit`]: the kit's runner, with its time limit and clean-up hook.

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use super::{checks, CHECKS};
use crate::{SinkError, UsageSink};

/// How long a check may take by default: see [`SinkKit::check_timeout`].
pub const DEFAULT_CHECK_TIMEOUT: Duration = Duration::from_secs(120);

type CleanUp<S> = Box<dyn FnMut(Arc<S>) -> Pin<Box<dyn Future<Output = Result<(), SinkError>>>>>;

type SendFuture<T> = Pin<Box<dyn Future<Output = Result<T, SinkError>> + Send>>;
type Reopen<S> = Arc<dyn Fn(Arc<S>) -> SendFuture<S> + Send + Sync>;
type Expire<S> = Arc<dyn Fn(Arc<S>, Duration) -> SendFuture<()> + Send + Sync>;

/// The optional hooks the lifecycle checks use (see [`SinkKit::reopen`] and
/// [`SinkKit::expire`]).
pub(super) struct Hooks<S> {
    pub(super) reopen: Option<Reopen<S>>,
    pub(super) expire: Option<Expire<S>>,
}

impl<S> Clone for Hooks<S> {
    fn clone(&self) -> Self {
        Self {
            reopen: self.reopen.clone(),
            expire: self.expire.clone(),
        }
    }
}

/// Runs the conformance checks against fresh sinks from `make_sink`, each
/// within a time limit, and calls an optional clean-up hook after each.
///
/// [`run_all`](super::run_all) and [`run_check`](super::run_check) are this with
/// the defaults. Must run inside a tokio runtime (a `#[tokio::test]` is enough).
///
/// ```rust,no_run
/// use std::sync::Arc;
/// use std::time::Duration;
/// use tower_usage::testing::SinkKit;
/// use tower_usage::MemorySink;
///
/// #[tokio::test]
/// async fn my_sink_conforms() {
///     SinkKit::new(|| async { MemorySink::new() })
///         .check_timeout(Duration::from_secs(30))
///         // An external store: drop what the check wrote (a key prefix, a schema).
///         .clean_up(|sink: Arc<MemorySink>| async move {
///             drop(sink);
///             Ok(())
///         })
///         .run_all()
///         .await;
/// }
/// # fn main() {}
/// ```
pub struct SinkKit<S, F> {
    make_sink: F,
    timeout: Duration,
    clean_up: Option<CleanUp<S>>,
    hooks: Hooks<S>,
}

impl<S, F> fmt::Debug for SinkKit<S, F> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SinkKit")
            .field("check_timeout", &self.timeout)
            .field("clean_up", &self.clean_up.is_some())
            .field("reopen", &self.hooks.reopen.is_some())
            .field("expire", &self.hooks.expire.is_some())
            .finish_non_exhaustive()
    }
}

impl<S, F, Fut> SinkKit<S, F>
where
    S: UsageSink,
    F: FnMut() -> Fut,
    Fut: Future<Output = S>,
{
    /// A kit that makes each check's sink with `make_sink`, which must return a
    /// fresh, empty sink each time (see [What the kit needs from
    /// `make_sink`](super#what-the-kit-needs-from-make_sink)).
    pub fn new(make_sink: F) -> Self {
        Self {
            make_sink,
            timeout: DEFAULT_CHECK_TIMEOUT,
            clean_up: None,
            hooks: Hooks {
                reopen: None,
                expire: None,
            },
        }
    }

    /// For a persistent sink: how to open the check's store again, as a
    /// restarted process would (the same file, schema or table), while the
    /// first sink is still open. Default: none. With it, the `erasure` and
    /// `retention` checks also read the reopened sink: what left the store
    /// must not come back.
    ///
    /// ```rust,no_run
    /// use tower_usage::testing::SinkKit;
    /// use tower_usage::SqliteSink;
    ///
    /// # async fn run() {
    /// let dir = tempfile::tempdir().unwrap();
    /// let mut n = 0;
    /// SinkKit::new(|| {
    ///     n += 1;
    ///     let path = dir.path().join(format!("check{n}.db"));
    ///     async move { SqliteSink::open(path).unwrap() }
    /// })
    /// .reopen(|sink: std::sync::Arc<SqliteSink>| async move {
    ///     SqliteSink::open(sink.path().expect("a file"))
    /// })
    /// .run_all()
    /// .await;
    /// # }
    /// ```
    pub fn reopen<R, RFut>(mut self, reopen: R) -> Self
    where
        R: Fn(Arc<S>) -> RFut + Send + Sync + 'static,
        RFut: Future<Output = Result<S, SinkError>> + Send + 'static,
    {
        self.hooks.reopen = Some(Arc::new(move |sink| Box::pin(reopen(sink))));
        self
    }

    /// For a sink with retention by age: how to make it remove, now, the
    /// records created longer than the given age ago (as its background
    /// retention would with that `max_age`), returning once they are gone.
    /// Default: none, and the `retention` check has nothing to check.
    ///
    /// ```rust,no_run
    /// use tower_usage::testing::SinkKit;
    /// use tower_usage::MemorySink;
    ///
    /// # async fn run() {
    /// SinkKit::new(|| async { MemorySink::new() })
    ///     .expire(|sink: std::sync::Arc<MemorySink>, age| async move {
    ///         sink.expire_older_than(age);
    ///         Ok(())
    ///     })
    ///     .run_all()
    ///     .await;
    /// # }
    /// ```
    pub fn expire<E, EFut>(mut self, expire: E) -> Self
    where
        E: Fn(Arc<S>, Duration) -> EFut + Send + Sync + 'static,
        EFut: Future<Output = Result<(), SinkError>> + Send + 'static,
    {
        self.hooks.expire = Some(Arc::new(move |sink, age| Box::pin(expire(sink, age))));
        self
    }

    /// How long one check may take, `make_sink` and the clean-up each given as
    /// long again. Default: [`DEFAULT_CHECK_TIMEOUT`] (120 s).
    ///
    /// A check past its limit is stopped and fails, with a message that names
    /// it and the likely cause. The kit's own checks take well under a second
    /// each against an in-memory sink; the limit is there so that a sink that
    /// never answers (or a `query` that ignores the cursor, so that paging
    /// never ends) fails the run instead of hanging it.
    ///
    /// The limit is a timer on the runtime, and the check runs on a task of
    /// its own. A sink that blocks its thread rather than awaiting (a
    /// synchronous lock, `std::thread::sleep`) blocks a current-thread
    /// runtime's timer with it: test such a sink on a multi-thread runtime
    /// (`#[tokio::test(flavor = "multi_thread")]`), where the timer fires on
    /// another worker.
    pub fn check_timeout(mut self, limit: Duration) -> Self {
        self.timeout = limit;
        self
    }

    /// Calls `clean_up` with the check's sink after each check, whether it
    /// passed, failed, panicked or ran out of time. Default: none.
    ///
    /// For sinks over an external store, which outlives the sink value: drop
    /// the key prefix, schema, table or file the check's sink wrote to, so
    /// that a run leaves nothing behind. An `Err` fails the check with what
    /// went wrong. The hook runs on the caller's task (its future need not
    /// be `Send`), within the [check timeout](Self::check_timeout).
    pub fn clean_up<C, CFut>(mut self, mut clean_up: C) -> Self
    where
        C: FnMut(Arc<S>) -> CFut + 'static,
        CFut: Future<Output = Result<(), SinkError>> + 'static,
    {
        self.clean_up = Some(Box::new(move |sink| Box::pin(clean_up(sink))));
        self
    }

    /// Runs every check in [`CHECKS`], one fresh sink each.
    ///
    /// Panics after the last check if any failed, with a message naming each
    /// failed check and what was wrong.
    pub async fn run_all(&mut self) {
        let mut failures = Vec::new();
        for name in CHECKS {
            if let Err(msg) = self.run_check(name).await {
                failures.push(format!("check `{name}` failed: {msg}"));
            }
        }
        if !failures.is_empty() {
            panic!(
                "{} of {} sink conformance checks failed:\n\n{}",
                failures.len(),
                CHECKS.len(),
                failures.join("\n\n")
            );
        }
    }

    /// Runs the check called `name` (one of [`CHECKS`]) against a fresh sink.
    ///
    /// Returns `Err` describing what was wrong, also when the sink panicked,
    /// the check ran out of time, the clean-up failed, or `name` is no check.
    pub async fn run_check(&mut self, name: &str) -> Result<(), String> {
        let Some(&name) = CHECKS.iter().find(|c| **c == name) else {
            return Err(format!(
                "there is no conformance check called {name:?}; the checks are: {}",
                CHECKS.join(", ")
            ));
        };
        let limit = self.timeout;
        let Ok(sink) = tokio::time::timeout(limit, (self.make_sink)()).await else {
            return Err(format!(
                "make_sink did not return a sink within {limit:?} (SinkKit::check_timeout): \
                 is the store it connects to up?"
            ));
        };
        let sink = Arc::new(sink);
        // On its own task, so that a panicking sink is a failed check, not a
        // panicking caller, and a hung one can be stopped.
        let task = tokio::spawn(checks::run(name, Arc::clone(&sink), self.hooks.clone()));
        let abort = task.abort_handle();
        let mut result = match tokio::time::timeout(limit, task).await {
            Ok(Ok(result)) => result,
            Ok(Err(e)) => Err(format!("the check did not finish: {}", join_error(e))),
            Err(_) => {
                abort.abort();
                Err(timed_out(name, limit))
            }
        };
        if let Some(clean_up) = &mut self.clean_up {
            let problem = match tokio::time::timeout(limit, clean_up(sink)).await {
                Ok(Ok(())) => None,
                Ok(Err(e)) => Some(format!("the clean-up after the check failed: {e}")),
                Err(_) => Some(format!(
                    "the clean-up after the check did not finish within {limit:?}"
                )),
            };
            if let Some(problem) = problem {
                result = match result {
                    Ok(()) => Err(problem),
                    Err(msg) => Err(format!("{msg}; and {problem}")),
                };
            }
        }
        result
    }
}

/// The message of a check that ran out of time: its name, and what makes
/// checks hang.
fn timed_out(name: &str, limit: Duration) -> String {
    let paging = if name.starts_with("summary") || name == "route_outcome_filters" {
        "the default summarize, which pages through query(), never reaching the last page"
    } else {
        "the kit paging through query() without reaching the last page"
    };
    format!(
        "check `{name}` did not finish within {limit:?} (SinkKit::check_timeout) and was \
         stopped. The likely cause: a next_cursor that does not advance (a query() that \
         ignores UsageQuery::cursor, or makes a new cursor that leads back to records \
         already returned), leaving {paging}; or a sink call that waits for something \
         that never comes (a lock held across an await, a pool with no free \
         connection, a store that does not answer)"
    )
}

pub(super) fn join_error(e: tokio::task::JoinError) -> String {
    if !e.is_panic() {
        return e.to_string();
    }
    let payload = e.into_panic();
    let msg = payload
        .downcast_ref::<&str>()
        .map(|s| (*s).to_owned())
        .or_else(|| payload.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "a panic without a message".to_owned());
    format!("it panicked: {msg}")
}
