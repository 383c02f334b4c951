//! Writing one batch ([`Retry::write`]): retried with backoff while the sink
//! fails with a temporary error, for as long as it has been failing for less
//! than `max_retry_time`; past that, a sink that *hangs* is not called again
//! for each batch (they fail at once, but for one probe every 2 s), so that
//! a flush is bounded by time, not by the number of queued captures. Then
//! how the batch ended is counted ([`Retry::settle`]), and logged once per
//! failure streak: a warning when it starts, a line when it ends.

use std::ops::ControlFlow;
use std::time::{Duration, Instant};

use tokio::sync::watch;

use super::metrics;
use super::queue::{End, Shared};
use crate::sink::call::{call, Called};
use crate::streak::Streak;
use crate::{SinkError, UsageRecord, UsageSink};

/// The first wait before a retry; it doubles after each failure.
const FIRST_BACKOFF: Duration = Duration::from_millis(100);
/// The longest wait between retries, and between probes of a sink that
/// hangs: a sink that comes back is written to within 2 s.
const MAX_BACKOFF: Duration = Duration::from_secs(2);

/// How one batch ended.
pub(super) enum Outcome {
    Written,
    /// A permanent error, or a temporary one past the retries.
    Failed,
    Panicked,
    /// A shutdown deadline passed: the call was cancelled, the batch is
    /// counted as dropped.
    Aborted,
}

/// The writer's view of its sink's failures, across batches.
#[derive(Default)]
pub(super) struct Retry {
    /// When the current failure streak started (the first failed call).
    failing_since: Option<Instant>,
    /// Set when a batch was given up on a call that timed out: the sink
    /// hangs, and later batches fail without a call until this instant.
    hung_until: Option<Instant>,
    /// The failure streak: one warning when it starts, one line when it ends.
    streak: Streak,
    /// Records given up in the current streak.
    given_up: u64,
}

impl Retry {
    /// Writes `records`: retried with backoff while the error is temporary
    /// and the sink has been failing for less than `max_retry_time` (and
    /// `max_retries` allows); a panic in the sink is caught and ends the batch.
    pub(super) async fn write(
        &mut self,
        shared: &Shared,
        sink: &dyn UsageSink,
        records: &[UsageRecord],
        abort: &mut watch::Receiver<bool>,
    ) -> Outcome {
        if records.is_empty() {
            return Outcome::Written;
        }
        let config = &shared.config;
        if self.hung_until.is_some_and(|t| Instant::now() < t) {
            // The sink hangs, and has failed for longer than max_retry_time:
            // given up without a call (counted in the streak).
            self.streak.fail();
            return Outcome::Failed;
        }
        let mut backoff = FIRST_BACKOFF;
        let mut attempt = 0u32;
        loop {
            let started = Instant::now();
            let called = tokio::select! {
                called = call(sink, records, config.sink_timeout) => called,
                _ = abort.wait_for(|a| *a) => return Outcome::Aborted,
            };
            metrics::sink_call(started);
            let err = match called {
                Called::Written => {
                    self.hung_until = None;
                    return Outcome::Written;
                }
                Called::Panicked => {
                    self.hung_until = None;
                    self.failed_call(None, records.len());
                    return Outcome::Panicked;
                }
                Called::Failed(err) => err,
            };
            self.failed_call(Some(&err), records.len());
            let since = *self.failing_since.get_or_insert(started);
            if !err.is_temporary() {
                self.hung_until = None;
                return Outcome::Failed;
            }
            if attempt >= config.max_retries || since.elapsed() >= config.max_retry_time {
                let hung = started.elapsed() >= config.sink_timeout;
                self.hung_until = hung.then(|| Instant::now() + MAX_BACKOFF);
                return Outcome::Failed;
            }
            attempt += 1;
            shared.state().retried += 1;
            tracing::debug!(target: "tower_usage", error = %err, attempt, "retrying usage batch");
            tokio::select! {
                _ = tokio::time::sleep(backoff) => {}
                _ = abort.wait_for(|a| *a) => return Outcome::Aborted,
            }
            backoff = (backoff * 2).min(MAX_BACKOFF);
        }
    }

    /// A call failed (`None`: the sink panicked): the first of a streak is
    /// logged, the others counted.
    fn failed_call(&self, err: Option<&SinkError>, records: usize) {
        if !self.streak.fail() {
            return;
        }
        match err {
            Some(err) if err.is_temporary() => tracing::warn!(
                target: "tower_usage",
                error = %err,
                records,
                "usage sink failed; its batch is retried for up to max_retry_time, then counted in stats().failed (further failures are counted, not logged, until it recovers)"
            ),
            Some(err) => tracing::warn!(
                target: "tower_usage",
                error = %err,
                records,
                "usage sink failed with a permanent error; records counted in stats().failed (further failures are counted, not logged, until it recovers)"
            ),
            None => tracing::error!(
                target: "tower_usage",
                records,
                "usage sink panicked in record(); the batch is counted in stats().failed and the writer goes on (further failures are counted, not logged, until it recovers)"
            ),
        }
    }

    /// Counts how the batch of `n` records (`bytes` of captures) ended.
    /// `Break` when a shutdown deadline passed.
    pub(super) fn settle(
        &mut self,
        shared: &Shared,
        outcome: Outcome,
        n: u64,
        bytes: usize,
    ) -> ControlFlow<()> {
        let end = match outcome {
            Outcome::Written => End::Written,
            Outcome::Failed | Outcome::Panicked => End::Failed,
            Outcome::Aborted => End::Dropped,
        };
        shared.state().finish(n, bytes, end);
        match end {
            End::Written if n > 0 => {
                self.failing_since = None;
                if let Some(failures) = self.streak.succeed() {
                    let given_up = std::mem::take(&mut self.given_up);
                    tracing::info!(target: "tower_usage", failures, given_up, "usage sink recovered");
                }
            }
            End::Written => {}
            End::Failed => self.given_up += n,
            End::Dropped => return ControlFlow::Break(()),
        }
        ControlFlow::Continue(())
    }
}
