//! The writer's side of the disk spool ([`Spooler`]): whether batches go to
//! the spool, when to probe the sink with the oldest spooled batch, the
//! accounting of what the spool stores, evicts and gives back, and its logs
//! (one per streak). The file work runs on tokio's blocking pool.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use tokio::sync::watch;

use super::queue::{lock, End, Shared};
use super::worker::{once, Outcome, FIRST_BACKOFF, MAX_BACKOFF};
use crate::spool::{self, Spool};
use crate::streak::Streak;
use crate::{SinkError, UsageRecord, UsageSink};

/// The writer's side of the disk spool: when to probe the sink, and the
/// blocking file work, run on tokio's blocking pool.
pub(super) struct Spooler {
    spool: Arc<Mutex<Spool>>,
    /// The sink failed with a temporary error (or the spool could not be
    /// read), and has not answered since.
    pub(super) down: bool,
    /// When the sink may be tried next (with the oldest spooled records).
    pub(super) next_probe: Instant,
    backoff: Duration,
    /// The sink's failure streak (one warning), its refusals of spooled
    /// records, the spool's evictions and the spool's own errors.
    sink_streak: Streak,
    refused_streak: Streak,
    full_streak: Streak,
    error_streak: Streak,
    read_streak: Streak,
    /// A record larger than the whole spool was logged.
    refused_logged: bool,
}

impl Spooler {
    pub(super) fn new(spool: Arc<Mutex<Spool>>) -> Self {
        Self {
            spool,
            down: false,
            next_probe: Instant::now(),
            backoff: FIRST_BACKOFF,
            sink_streak: Streak::new(),
            refused_streak: Streak::new(),
            full_streak: Streak::new(),
            error_streak: Streak::new(),
            read_streak: Streak::new(),
            refused_logged: false,
        }
    }

    /// Whether new batches go to the spool: the sink is down, or records wait
    /// in the spool (to be written before them, in order).
    pub(super) fn in_use(&self, shared: &Shared) -> bool {
        self.down || shared.state().spooled > 0
    }

    /// Whether the sink may be written (probed) now.
    pub(super) fn due(&self) -> bool {
        !self.down || Instant::now() >= self.next_probe
    }

    pub(super) fn sink_failed(&mut self, err: &SinkError, n: u64) {
        self.back_off();
        if self.sink_streak.fail() {
            tracing::warn!(
                target: "tower_usage",
                error = %err,
                records = n,
                "usage sink failed; records go to the disk spool until it answers again (counted in stats().spooled; further failures are counted, not logged)"
            );
        }
    }

    /// Waits before the next probe: 100 ms, doubling, at most 2 s.
    fn back_off(&mut self) {
        if !self.down {
            self.backoff = FIRST_BACKOFF;
        }
        self.down = true;
        self.next_probe = Instant::now() + self.backoff;
        self.backoff = (self.backoff * 2).min(MAX_BACKOFF);
    }

    fn sink_answered(&mut self) {
        self.down = false;
        self.backoff = FIRST_BACKOFF;
        if let Some(failures) = self.sink_streak.succeed() {
            tracing::info!(target: "tower_usage", failures, "usage sink answers again; writing the spool back");
        }
    }

    /// Runs `f` on the spool, on the blocking pool.
    async fn blocking<T: Send + 'static>(
        &self,
        f: impl FnOnce(&mut Spool) -> T + Send + 'static,
    ) -> Option<T> {
        let spool = self.spool.clone();
        tokio::task::spawn_blocking(move || f(&mut lock(&spool)))
            .await
            .ok()
    }

    /// Appends the batch in hand to the spool; hands the (emptied) vector back.
    pub(super) async fn append(
        &mut self,
        shared: &Shared,
        records: Vec<UsageRecord>,
        n: u64,
        bytes: usize,
        since: Option<SystemTime>,
    ) -> Vec<UsageRecord> {
        let done = self
            .blocking(move |spool| {
                let result = spool.append(&records);
                (records, result)
            })
            .await;
        let (records, appended) = match done {
            Some((records, appended)) => (records, appended),
            None => (
                Vec::new(),
                spool::Appended {
                    error: Some(std::io::Error::other("the spool's blocking task failed")),
                    ..spool::Appended::default()
                },
            ),
        };
        let spool::Appended {
            stored,
            evicted,
            refused,
            error,
        } = appended;
        {
            let mut s = shared.state();
            s.spooled(stored, bytes, evicted, since);
            s.finish(n - stored, 0, End::Failed);
        }
        // A full spool stays full until the sink takes records from it: one
        // warning for all the evictions until then.
        if evicted > 0 && self.full_streak.fail() {
            tracing::warn!(
                target: "tower_usage",
                evicted,
                "usage spool full: its oldest records are evicted to make room (counted in stats().dropped; logged once until the sink takes records again)"
            );
        }
        if refused > 0 && !std::mem::replace(&mut self.refused_logged, true) {
            tracing::warn!(
                target: "tower_usage",
                refused,
                "usage spool: records larger than the whole spool are counted in stats().failed (logged once)"
            );
        }
        match error {
            None => {
                if let Some(failures) = self.error_streak.succeed() {
                    tracing::info!(target: "tower_usage", failures, "usage spool writes again");
                }
            }
            Some(err) => {
                if self.error_streak.fail() {
                    tracing::error!(
                        target: "tower_usage",
                        error = %err,
                        records = n - stored - refused,
                        "usage spool write failed: those records are counted in stats().failed (further failures are counted, not logged)"
                    );
                }
            }
        }
        records
    }

    /// Writes the oldest spooled records to the sink, once; on success or a
    /// permanent failure they leave the spool. `Break` when a shutdown
    /// deadline passed (they stay in the spool).
    pub(super) async fn replay(
        &mut self,
        shared: &Shared,
        sink: &dyn UsageSink,
        records: &mut Vec<UsageRecord>,
        abort: &mut watch::Receiver<bool>,
    ) -> std::ops::ControlFlow<()> {
        use std::ops::ControlFlow::Continue;
        let max = shared.config.batch_size;
        let mut buf = std::mem::take(records);
        let peeked = self
            .blocking(move |spool| {
                let result = spool.peek(max, &mut buf);
                (buf, result)
            })
            .await;
        let peeked = match peeked {
            Some((buf, Ok(peeked))) => {
                *records = buf;
                if let Some(failures) = self.read_streak.succeed() {
                    tracing::info!(target: "tower_usage", failures, "usage spool reads again");
                }
                peeked
            }
            Some((buf, Err(err))) if is_damage(&err) => {
                *records = buf;
                // The oldest segment no longer holds what was counted in it
                // (or is gone): skip it, counted.
                let skipped = self.blocking(Spool::skip_oldest).await;
                let skipped = match skipped {
                    Some(Ok(n)) => n,
                    _ => {
                        // Its delete failed: it stays, tried again later.
                        self.back_off();
                        0
                    }
                };
                shared.state().evicted(skipped);
                if self.read_streak.fail() {
                    tracing::error!(
                        target: "tower_usage",
                        error = %err,
                        skipped,
                        "usage spool segment damaged: it is skipped (counted in stats().dropped; further failures are not logged until a read succeeds)"
                    );
                }
                return Continue(());
            }
            Some((buf, Err(err))) => {
                *records = buf;
                // A read that failed (too many open files, EIO, ...): the
                // segment stays, and is tried again after a backoff, as for
                // a sink that is down.
                self.back_off();
                if self.read_streak.fail() {
                    tracing::error!(
                        target: "tower_usage",
                        error = %err,
                        "usage spool read failed: the oldest segment is kept and read again after a backoff (further failures are not logged until a read succeeds)"
                    );
                }
                return Continue(());
            }
            None => return Continue(()),
        };
        let frames = peeked.records + peeked.undecodable;
        if frames == 0 {
            // The counters say records are spooled, the files hold none (a
            // spool task that failed after writing): count the difference as
            // dropped rather than look for them again and again.
            let left = self.blocking(|spool| spool.records()).await.unwrap_or(0);
            let mut s = shared.state();
            let lost = s.spooled.saturating_sub(left);
            s.evicted(lost);
            drop(s);
            tracing::error!(target: "tower_usage", lost, "usage spool holds fewer records than counted: the difference is counted in stats().dropped");
            return Continue(());
        }
        {
            let mut s = shared.state();
            if let Some(first) = records.first() {
                // The oldest record still in the spool.
                s.spooled_since = Some(spool::arrival(first));
            }
            s.replaying = true;
        }
        let flow = self.write_back(shared, sink, records, peeked, abort).await;
        shared.state().replaying = false;
        flow
    }

    /// Writes a batch read from the spool, once, and acknowledges it unless
    /// the failure is temporary.
    async fn write_back(
        &mut self,
        shared: &Shared,
        sink: &dyn UsageSink,
        records: &mut Vec<UsageRecord>,
        peeked: spool::Peeked,
        abort: &mut watch::Receiver<bool>,
    ) -> std::ops::ControlFlow<()> {
        use std::ops::ControlFlow::{Break, Continue};
        let end = if records.is_empty() {
            End::Failed
        } else {
            match once(sink, records, shared.config.sink_timeout, abort).await {
                Outcome::Written => {
                    self.sink_answered();
                    if let Some(batches) = self.refused_streak.succeed() {
                        tracing::info!(target: "tower_usage", batches, "usage sink takes spooled records again");
                    }
                    let _ = self.full_streak.succeed();
                    End::Written
                }
                Outcome::Failed(err) if err.is_temporary() => {
                    // The batch is tried again at the next probe.
                    shared.state().retried += 1;
                    self.sink_failed(&err, peeked.records);
                    records.clear();
                    return Continue(());
                }
                Outcome::Failed(err) => {
                    self.sink_answered();
                    if self.refused_streak.fail() {
                        tracing::warn!(
                            target: "tower_usage",
                            error = %err,
                            records = peeked.records,
                            "usage sink refused spooled records (a permanent error): counted in stats().failed (further refusals are counted, not logged)"
                        );
                    }
                    End::Failed
                }
                Outcome::Panicked => {
                    if self.refused_streak.fail() {
                        tracing::error!(
                            target: "tower_usage",
                            records = peeked.records,
                            "usage sink panicked in record() on spooled records: counted in stats().failed (further failures are counted, not logged)"
                        );
                    }
                    End::Failed
                }
                Outcome::Aborted | Outcome::Spool => {
                    records.clear();
                    return Break(());
                }
            }
        };
        records.clear();
        if let Some(Err(err)) = self.blocking(Spool::ack).await {
            // Written, but the cursor or the segment's delete failed: a
            // restart would write these again (sinks keep one record per id).
            if self.error_streak.fail() {
                tracing::warn!(target: "tower_usage", error = %err, "usage spool: recording written records failed; a restart may write them again");
            }
        }
        let mut s = shared.state();
        s.unspooled(peeked.records, end);
        s.unspooled(peeked.undecodable, End::Failed);
        Continue(())
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
