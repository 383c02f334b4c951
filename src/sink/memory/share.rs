//! Fair share in a full [`MemorySink`](super::MemorySink): how many records
//! and bytes each consumer holds, and who is over their share.

use std::collections::VecDeque;

use super::index::State;

impl State {
    /// How many records and bytes `consumer` (`None`: the anonymous one) holds.
    pub(super) fn share_of(&self, consumer: Option<&str>) -> (usize, usize) {
        match consumer {
            None => (self.anonymous.len(), self.anonymous_bytes),
            Some(c) => (
                self.consumers.get(c).map_or(0, VecDeque::len),
                self.consumer_bytes.get(c).copied().unwrap_or(0),
            ),
        }
    }

    /// Notes that `consumer` is over its share.
    pub(super) fn note_over_share(&mut self, consumer: Option<&str>) {
        if !self.over_share.iter().any(|c| c.as_deref() == consumer) {
            self.over_share.push(consumer.map(str::to_owned));
        }
    }

    /// A consumer still over its share (`over` says, given its records and
    /// bytes), if any; those no longer over it are forgotten.
    pub(super) fn over_share_consumer(
        &mut self,
        over: impl Fn(usize, usize) -> bool,
    ) -> Option<Option<String>> {
        while let Some(last) = self.over_share.last() {
            let (records, bytes) = self.share_of(last.as_deref());
            if over(records, bytes) {
                return Some(last.clone());
            }
            self.over_share.pop();
        }
        None
    }
}
