//! The write-back task ([`SpoolWorker`]): while records wait on disk, it
//! probes the inner sink with the oldest batch (backing off from 100 ms to
//! 2 s while it fails), and writes the spool back, oldest first, once it
//! answers. It holds a `Weak` of the spool: it ends when the last
//! [`Spooled`](super::Spooled) clone is dropped, and the directory's lock is
//! let go then.

use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Weak};
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::sync::Notify;

use super::log::{arrival, Peeked, Spool};
use super::spooled::{lock, Shared};
use crate::sink::call::{call, Called};
use crate::{UsageRecord, UsageSink};

/// The most records written back per call of the inner sink (the writer's
/// default batch).
const WRITE_BACK_BATCH: usize = 256;

/// The write-back task of a [`Spooled`](super::Spooled) sink, as a future
/// to run on an executor of your choice; from
/// [`Spooled::pair`](super::Spooled::pair). It needs tokio's timer and
/// blocking pool (a tokio runtime with time enabled), and completes when
/// every clone of its `Spooled` is dropped.
#[must_use = "the spool writes nothing back unless the future is polled (spawn it)"]
pub struct SpoolWorker {
    inner: Pin<Box<dyn Future<Output = ()> + Send>>,
}

impl SpoolWorker {
    pub(super) fn new<S: UsageSink>(shared: Weak<Shared<S>>, wake: Arc<Notify>) -> Self {
        Self {
            inner: Box::pin(run(shared, wake)),
        }
    }
}

impl Future for SpoolWorker {
    type Output = ();

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        self.inner.as_mut().poll(cx)
    }
}

impl std::fmt::Debug for SpoolWorker {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SpoolWorker").finish_non_exhaustive()
    }
}

async fn run<S: UsageSink>(shared: Weak<Shared<S>>, wake: Arc<Notify>) {
    let mut records = Vec::new();
    loop {
        // Nothing spooled: wait to be woken. Spooled, the sink down: wait for
        // the next probe.
        let wait = {
            let Some(shared) = shared.upgrade() else {
                return;
            };
            let s = shared.state();
            if s.stats.spooled == 0 {
                None
            } else if s.due() {
                Some(Duration::ZERO)
            } else {
                Some(
                    s.next_probe
                        .saturating_duration_since(std::time::Instant::now()),
                )
            }
        };
        match wait {
            None => wake.notified().await,
            Some(d) if d.is_zero() => {}
            Some(d) => {
                let _ = tokio::time::timeout(d, wake.notified()).await;
                continue;
            }
        }
        let Some(shared) = shared.upgrade() else {
            return;
        };
        if shared.state().stats.spooled > 0 && shared.state().due() {
            shared.write_back(&mut records).await;
            shared.publish();
        }
    }
}

impl<S: UsageSink> Shared<S> {
    /// Runs `f` on the log, on the blocking pool.
    async fn blocking<T: Send + 'static>(
        &self,
        f: impl FnOnce(&mut Spool) -> T + Send + 'static,
    ) -> Option<T> {
        let log = self.log.clone();
        tokio::task::spawn_blocking(move || f(&mut lock(&log)))
            .await
            .ok()
    }

    /// Writes the oldest spooled records to the inner sink, once; on success
    /// or a permanent failure they leave the spool.
    async fn write_back(&self, records: &mut Vec<UsageRecord>) {
        let _gate = self.write_back.lock().await;
        let mut buf = std::mem::take(records);
        let peeked = self
            .blocking(move |spool| {
                let result = spool.peek(WRITE_BACK_BATCH, &mut buf);
                (buf, result)
            })
            .await;
        let Some((buf, peeked)) = peeked else {
            // The blocking task failed: tried again at the next round.
            return;
        };
        *records = buf;
        let peeked = match peeked {
            Ok(peeked) => {
                self.logs.read_again();
                peeked
            }
            Err(err) => return self.read_failed(err).await,
        };
        if peeked.records + peeked.undecodable == 0 {
            return self.lost().await;
        }
        if let Some(first) = records.iter().map(arrival).min() {
            // Records recovered from an earlier process: their arrivals hold
            // `completeUntil` back too (never moved forward while the spool
            // holds anything: a later record can have arrived earlier).
            let mut state = self.state();
            state.oldest = Some(state.oldest.map_or(first, |o| o.min(first)));
        }
        let written = match call(&self.inner, records, self.timeout()).await {
            Called::Written => {
                self.answered();
                self.logs.taken_again();
                true
            }
            Called::Failed(err) if err.is_temporary() => {
                // Tried again at the next probe.
                self.state().stats.retried += 1;
                self.sink_failed(&err, records.len());
                records.clear();
                return;
            }
            Called::Failed(err) => {
                self.answered();
                self.logs.refused(Some(&err), peeked.records);
                false
            }
            Called::Panicked => {
                self.logs.refused(None, peeked.records);
                false
            }
        };
        records.clear();
        self.acknowledge(peeked, written).await;
    }

    /// Takes what the last peek read out of the spool, and counts it.
    async fn acknowledge(&self, peeked: Peeked, written: bool) {
        // Written, but the cursor or the segment's delete may fail: a restart
        // would write these again (the bundled sinks keep one record per id).
        if let Some(result) = self.blocking(Spool::ack).await {
            self.logs.acked(result.err().as_ref());
        }
        let mut s = self.state();
        s.unspooled(peeked.records, written);
        s.unspooled(peeked.undecodable, false);
    }

    /// A read of the oldest segment failed: damage is skipped (counted as
    /// dropped), anything else tried again after a backoff.
    async fn read_failed(&self, err: std::io::Error) {
        if is_damage(&err) {
            // The oldest segment no longer holds what was counted in it (or
            // is gone): skip it, counted.
            let skipped = match self.blocking(Spool::skip_oldest).await {
                Some(Ok(n)) => n,
                _ => {
                    // Its delete failed: it stays, tried again later.
                    self.state().back_off();
                    0
                }
            };
            self.state().evicted(skipped);
            self.logs.damaged(&err, skipped);
        } else {
            // Too many open files, EIO, ...: the segment stays, and is read
            // again after a backoff, as for a sink that is down.
            self.state().back_off();
            self.logs.read_failed(&err);
        }
    }

    /// The counters say records are spooled, the files hold none (a blocking
    /// task that failed after writing): count the difference as dropped
    /// rather than look for them again and again.
    async fn lost(&self) {
        let left = self.blocking(|spool| spool.records()).await.unwrap_or(0);
        let mut s = self.state();
        let lost = s.stats.spooled.saturating_sub(left);
        s.evicted(lost);
        drop(s);
        tracing::error!(target: "tower_usage", lost, "usage spool holds fewer records than counted: the difference is counted in its stats().dropped");
    }
}

/// Whether a read error of the spool is damage, not a passing failure: the
/// segment no longer holds what was counted in it (`InvalidData`), or is gone.
fn is_damage(err: &std::io::Error) -> bool {
    matches!(
        err.kind(),
        std::io::ErrorKind::InvalidData | std::io::ErrorKind::NotFound
    )
}
