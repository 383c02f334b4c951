//! The watchdog of an export: what a client that stops reading may keep.

use std::sync::{Mutex, PoisonError, Weak};
use std::time::{Duration, Instant};

use super::super::limits::Held;
use crate::UsageRecord;

/// What an export holds against a client that stops reading: its slots
/// (the consumer's read and the export's), given back when the body ends or
/// is cut, and the write timeout.
pub(in crate::endpoint) struct Stall {
    pub(in crate::endpoint) held: Held,
    pub(in crate::endpoint) timeout: Duration,
}

/// The part of an export its watchdog may cut.
pub(super) struct Watched {
    /// The records of the page in hand not yet written.
    pub(super) page: std::vec::IntoIter<UsageRecord>,
    /// The export's slots; `None` once given back.
    pub(super) held: Option<Held>,
    /// When the server last asked for a frame.
    pub(super) last: Instant,
    /// A page is being fetched (the sink has the query timeout for that).
    pub(super) fetching: bool,
    /// The watchdog cut the export: the next poll ends the body with an error.
    pub(super) cut: bool,
}

/// Watches an export: when the server has not asked for a frame for
/// `timeout` (the client stopped reading, and the socket's buffers are full)
/// and no page is being fetched, it drops the page in hand and gives back the
/// export's slots, so that a stalled client holds at most the frame the
/// server is trying to send; the body then ends with an error if it is ever
/// polled again (the server aborts the response). Ends with the body.
pub(super) fn watchdog(watched: Weak<Mutex<Watched>>, timeout: Duration) {
    let Ok(runtime) = tokio::runtime::Handle::try_current() else {
        return;
    };
    runtime.spawn(async move {
        loop {
            let deadline = {
                let Some(watched) = watched.upgrade() else {
                    return;
                };
                let w = watched.lock().unwrap_or_else(PoisonError::into_inner);
                if w.held.is_none() {
                    return;
                }
                w.last + timeout
            };
            tokio::time::sleep_until(deadline.into()).await;
            let Some(watched) = watched.upgrade() else {
                return;
            };
            let mut w = watched.lock().unwrap_or_else(PoisonError::into_inner);
            if w.held.is_none() {
                return;
            }
            if !w.fetching && w.last.elapsed() >= timeout {
                tracing::debug!("GET /usage export: the client read nothing for the write timeout; cutting the export");
                w.page = Vec::new().into_iter();
                w.held = None;
                w.cut = true;
                return;
            }
        }
    });
}
