//! [`Arrivals`]: the exchanges in flight (a long poll, a server-sent event
//! stream, a slow upload), from the request's arrival until its capture is in
//! the writer's queue, so that
//! [`UsageHandle::complete_until`](crate::UsageHandle::complete_until) never
//! passes one of them: a record is created (`created_at`) when its request
//! arrives, but reaches the writer only once its exchange ends.
//!
//! A short mutex, never held across an `.await`, taken once when a request
//! arrives and once when its capture is queued (or the exchange is dropped
//! unrecorded). The arrival time is read under it, so that a reader of
//! [`oldest`](Arrivals::oldest) either sees an exchange or read the clock
//! before that exchange did. Exchanges are counted per millisecond of
//! arrival, in order: the oldest is the first; memory is bounded by the
//! exchanges in flight (at most twice as many buckets, or 64), and no request
//! allocates once the list has grown to the most it held.

use std::collections::VecDeque;
use std::sync::{Mutex, MutexGuard, PoisonError};
use std::time::SystemTime;

use super::Queue;
use crate::captured::Captured;

/// The exchanges in flight, counted per millisecond of arrival.
#[derive(Debug, Default)]
pub(super) struct Arrivals {
    live: Mutex<Live>,
}

#[derive(Debug, Default)]
struct Live {
    /// The exchanges in flight per millisecond of arrival, in order of the
    /// millisecond; the first has at least one (or the list is empty),
    /// others may have none (they are removed when they come first, or when
    /// more than half the list is empty).
    counts: VecDeque<Bucket>,
    /// Exchanges in flight, in all.
    total: u64,
}

/// The exchanges in flight that arrived in one millisecond.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Bucket {
    ms: u64,
    n: u32,
    /// The earliest arrival counted in it.
    first: SystemTime,
}

impl Live {
    /// Counts an exchange that arrived at `at`, in millisecond `ms`.
    fn add(&mut self, at: SystemTime, ms: u64) {
        let new = Bucket {
            ms,
            n: 1,
            first: at,
        };
        match self.counts.back_mut() {
            Some(last) if last.ms == ms => {
                last.n += 1;
                last.first = last.first.min(at);
            }
            Some(last) if last.ms > ms => {
                // The clock went back: in its place.
                let i = self.counts.partition_point(|b| b.ms < ms);
                match self.counts.get_mut(i) {
                    Some(b) if b.ms == ms => {
                        b.n += 1;
                        b.first = b.first.min(at);
                    }
                    _ => self.counts.insert(i, new),
                }
            }
            _ => self.counts.push_back(new),
        }
        self.total += 1;
    }

    /// The earliest arrival in flight.
    fn oldest(&self) -> Option<SystemTime> {
        self.counts.front().map(|b| b.first)
    }

    /// Removes the empty counts at the front; and every empty one when they
    /// are more than half of a long list (so the list stays within twice the
    /// exchanges in flight).
    fn tidy(&mut self) {
        while self.counts.front().is_some_and(|b| b.n == 0) {
            self.counts.pop_front();
        }
        if self.counts.len() > 64 && self.counts.len() as u64 > 2 * self.total {
            self.counts.retain(|b| b.n > 0);
        }
    }
}

fn millis(t: SystemTime) -> u64 {
    t.duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

impl Arrivals {
    fn live(&self) -> MutexGuard<'_, Live> {
        self.live.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Counts an exchange arriving now: its arrival time (read under the
    /// lock), its millisecond, and the arrival of the oldest exchange then in
    /// flight (its own, when it is the only one).
    fn arrive(&self) -> (SystemTime, u64, SystemTime) {
        let mut live = self.live();
        let now = SystemTime::now();
        let ms = millis(now);
        live.add(now, ms);
        (now, ms, live.oldest().unwrap_or(now))
    }

    /// An exchange that arrived in millisecond `ms` is no longer in flight.
    fn leave(&self, ms: u64) {
        let mut live = self.live();
        let at = live.counts.partition_point(|b| b.ms < ms);
        if let Some(b) = live.counts.get_mut(at) {
            if b.ms == ms && b.n > 0 {
                b.n -= 1;
                live.total -= 1;
            }
        }
        live.tidy();
    }

    /// The arrival of the oldest exchange in flight (no later than it: the
    /// earliest arrival counted in its millisecond); `None` when none is.
    pub(super) fn oldest(&self) -> Option<SystemTime> {
        self.live().oldest()
    }
}

/// An exchange in flight: counted in its queue's [`Arrivals`] until this is
/// dropped, which [`submit`](Self::submit) does once the capture is queued.
#[derive(Debug)]
pub(crate) struct InFlight {
    queue: Queue,
    ms: u64,
    /// The arrival of the oldest exchange in flight when this one arrived:
    /// no later than its own, nor than that of any exchange that arrived
    /// later (see [`Captured::oldest_in_flight`]).
    oldest: SystemTime,
}

impl InFlight {
    /// An exchange arriving now on `queue`, and its arrival time: what its
    /// record's `created_at` is made of.
    pub(crate) fn arrive(queue: &Queue) -> (Self, SystemTime) {
        let (now, ms, oldest) = queue.shared.arrivals.arrive();
        let queue = queue.clone();
        (Self { queue, ms, oldest }, now)
    }

    /// The arrival of the oldest exchange in flight when this one arrived.
    pub(crate) fn oldest(&self) -> SystemTime {
        self.oldest
    }

    /// Queues the capture (see [`Queue::submit`]), then counts the exchange
    /// out: a reader of [`Arrivals::oldest`] that no longer sees it finds its
    /// capture in the queue (or written).
    pub(crate) fn submit(self, captured: Captured) {
        self.queue.submit(captured);
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.queue.shared.arrivals.leave(self.ms);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn at(ms: u64) -> SystemTime {
        SystemTime::UNIX_EPOCH + Duration::from_millis(ms)
    }

    #[test]
    fn the_oldest_exchange_in_flight_holds_the_mark_until_it_leaves() {
        let arrivals = Arrivals::default();
        assert_eq!(arrivals.oldest(), None);
        let (first, a, oldest) = arrivals.arrive();
        assert_eq!(oldest, first, "its own arrival, exactly");
        std::thread::sleep(Duration::from_millis(3));
        let (second, b, oldest) = arrivals.arrive();
        assert!(a < b && first < second);
        assert_eq!(oldest, first, "the first is still in flight");
        assert_eq!(arrivals.oldest(), Some(first));
        arrivals.leave(a);
        assert_eq!(arrivals.oldest(), Some(second));
        arrivals.leave(b);
        assert_eq!(arrivals.oldest(), None);
        let live = arrivals.live();
        assert!(live.counts.is_empty() && live.total == 0);
    }

    #[test]
    fn the_list_stays_within_twice_the_exchanges_in_flight() {
        let arrivals = Arrivals::default();
        // One long exchange, then many short ones in later milliseconds.
        let (first, long, _) = arrivals.arrive();
        for ms in long + 1..=long + 10_000 {
            arrivals.live().add(at(ms), ms);
            arrivals.leave(ms);
            let live = arrivals.live();
            assert!(live.counts.len() <= 65.max(2 * live.total as usize + 1));
        }
        assert_eq!(arrivals.oldest(), Some(first));
        arrivals.leave(long);
        assert_eq!(arrivals.oldest(), None);
        assert!(arrivals.live().counts.is_empty());
    }

    #[test]
    fn a_clock_that_goes_back_keeps_the_order() {
        let arrivals = Arrivals::default();
        for ms in [10, 30, 20, 30, 5] {
            arrivals.live().add(at(ms), ms);
        }
        let counts: Vec<_> = arrivals.live().counts.iter().map(|b| (b.ms, b.n)).collect();
        assert_eq!(counts, [(5, 1), (10, 1), (20, 1), (30, 2)]);
        assert_eq!(arrivals.oldest(), Some(at(5)));
        for ms in [5, 10, 30] {
            arrivals.leave(ms);
        }
        assert_eq!(arrivals.oldest(), Some(at(20)));
        arrivals.leave(20);
        assert_eq!(arrivals.oldest(), Some(at(30)));
        arrivals.leave(30);
        assert_eq!(arrivals.oldest(), None);
    }
}
