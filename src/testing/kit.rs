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
}

impl<S, F> fmt::Debug for SinkKit<S, F> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SinkKit")
            .field("check_timeout", &self.timeout)
            .field("clean_up", &self.clean_up.is_some())
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
        }
    }

    /// How long one check may take, `make_sink` and the clean-up each given as
    /// long again. Default: [`DEFAULT_CHECK_TIMEOUT`] (120 s).
    ///
    /// A check past its limit is stopped and fails, with a message that names
    /// it and the likely cause. The kit's own checks take well under a second
    /// each against an in-memory sink; the limit is there so that a sink that
    /// never answers (or a `query` that ignores the cursor, so that paging
    /// never ends) fails the run instead of hanging it.
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
        let task = tokio::spawn(checks::run(name, Arc::clone(&sink)));
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
