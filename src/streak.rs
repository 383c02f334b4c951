//! [`Streak`]: one log line when a repeated failure starts, one when it ends.
//!
//! A failing sink fails every call: logging each one floods the log (200,000
//! lines in 10 s from `GET /usage` under load, before this). Every repeated
//! error path of the crate (the writer, `GET /usage`, the SQLite writer thread)
//! goes through one of these instead: the first failure of a streak is logged,
//! later ones are only counted, and the first success after them logs how many
//! there were.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

/// The state of one failure streak. Lock-free; a success costs one relaxed load
/// while nothing is failing.
#[derive(Debug, Default)]
pub(crate) struct Streak {
    failing: AtomicBool,
    failures: AtomicU64,
}

impl Streak {
    /// No streak yet.
    pub(crate) const fn new() -> Self {
        Self {
            failing: AtomicBool::new(false),
            failures: AtomicU64::new(0),
        }
    }

    /// Counts a failure; `true` when it starts a streak (log this one).
    pub(crate) fn fail(&self) -> bool {
        self.failures.fetch_add(1, Ordering::Relaxed);
        !self.failing.swap(true, Ordering::AcqRel)
    }

    /// Counts a success; `Some(failures)` when it ends a streak (log the
    /// recovery, with how many failures it had).
    pub(crate) fn succeed(&self) -> Option<u64> {
        if !self.failing.load(Ordering::Relaxed) || !self.failing.swap(false, Ordering::AcqRel) {
            return None;
        }
        Some(self.failures.swap(0, Ordering::Relaxed))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_report_per_streak() {
        let s = Streak::new();
        assert_eq!(s.succeed(), None);
        assert!(s.fail());
        assert!(!s.fail());
        assert!(!s.fail());
        assert_eq!(s.succeed(), Some(3));
        assert_eq!(s.succeed(), None);
        assert!(s.fail(), "a new streak is reported again");
    }
}
