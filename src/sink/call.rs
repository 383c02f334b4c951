//! One guarded call of [`UsageSink::record`]: bounded by a timeout (a timeout
//! is a temporary failure), with a panic in the sink caught. The writer calls
//! its sink this way, and so does the spool ([`Spooled`](super::spool::Spooled))
//! when it writes its records back.

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::task::Poll;
use std::time::Duration;

use super::UsageSink;
use crate::{SinkError, SinkErrorKind, UsageRecord};

/// How one guarded call ended.
#[derive(Debug)]
pub(crate) enum Called {
    Written,
    Failed(SinkError),
    /// The sink panicked (in `record`, or while its future was polled).
    Panicked,
}

/// One `record` call, bounded by `timeout`, with a panic caught.
pub(crate) async fn call(
    sink: &dyn UsageSink,
    records: &[UsageRecord],
    timeout: Duration,
) -> Called {
    let Ok(mut fut) = catch_unwind(AssertUnwindSafe(|| sink.record(records))) else {
        return Called::Panicked;
    };
    let caught = std::future::poll_fn(move |cx| {
        match catch_unwind(AssertUnwindSafe(|| fut.as_mut().poll(cx))) {
            Ok(poll) => poll.map(Some),
            Err(_) => Poll::Ready(None),
        }
    });
    match tokio::time::timeout(timeout, caught).await {
        Ok(Some(Ok(()))) => Called::Written,
        Ok(Some(Err(err))) => Called::Failed(err),
        Ok(None) => Called::Panicked,
        Err(_) => Called::Failed(timed_out(records.len(), timeout)),
    }
}

/// The error of a call that took longer than `timeout`: temporary.
pub(crate) fn timed_out(records: usize, timeout: Duration) -> SinkError {
    SinkError::message(
        SinkErrorKind::Unavailable,
        format!("sink did not store a batch of {records} within {timeout:?}"),
    )
}
