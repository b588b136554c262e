//! `--reconnect`: the connections the server ended that wait for their
//! retry, earliest first. They hold no socket while they wait; each keeps
//! when it was lost (its gap is measured from there) and how many retries
//! have failed (its backoff grows with them).

use std::cmp::{Ordering, Reverse};
use std::collections::BinaryHeap;
use std::time::Instant;

/// A lost connection on its way back.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Lost {
    /// When the server ended it.
    pub(crate) since: Instant,
    /// Retries that have failed since (0: the next is the first).
    pub(crate) attempt: u32,
}

/// A retry due `at`; `seq` orders retries due at the same instant.
#[derive(PartialEq, Eq)]
struct Due {
    at: Instant,
    seq: u64,
    lost: Lost,
}

impl Ord for Due {
    fn cmp(&self, other: &Due) -> Ordering {
        (self.at, self.seq).cmp(&(other.at, other.seq))
    }
}

impl PartialOrd for Due {
    fn partial_cmp(&self, other: &Due) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

/// The lost connections waiting for their retry.
#[derive(Default)]
pub(super) struct Waiting {
    heap: BinaryHeap<Reverse<Due>>,
    seq: u64,
}

impl Waiting {
    /// `lost` retries at `at`.
    pub(super) fn push(&mut self, at: Instant, lost: Lost) {
        self.seq += 1;
        self.heap.push(Reverse(Due { at, seq: self.seq, lost }));
    }

    /// The earliest retry due by `now`, taken out.
    pub(super) fn pop_due(&mut self, now: Instant) -> Option<Lost> {
        match self.heap.peek() {
            Some(Reverse(due)) if due.at <= now => self.heap.pop().map(|Reverse(d)| d.lost),
            _ => None,
        }
    }

    /// Takes out up to `n` retries, the latest due first (those furthest
    /// from coming back); how many.
    pub(super) fn cancel(&mut self, n: usize) -> usize {
        if n >= self.heap.len() {
            let all = self.heap.len();
            self.heap.clear();
            return all;
        }
        let mut dues = std::mem::take(&mut self.heap).into_sorted_vec();
        // Sorted ascending by Reverse: the latest due come first.
        dues.drain(..n);
        self.heap = dues.into();
        n
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn retries_come_due_in_order_and_cancels_take_the_latest() {
        let t0 = Instant::now();
        let ms = Duration::from_millis;
        let mut w = Waiting::default();
        for (i, at) in [30, 10, 20, 10].into_iter().enumerate() {
            w.push(t0 + ms(at), Lost { since: t0, attempt: i as u32 });
        }
        assert_eq!(w.pop_due(t0 + ms(5)), None);
        let due: Vec<u32> = std::iter::from_fn(|| w.pop_due(t0 + ms(20))).map(|l| l.attempt).collect();
        assert_eq!(due, [1, 3, 2], "earliest first, ties in the order pushed");
        w.push(t0 + ms(40), Lost { since: t0, attempt: 9 });
        assert_eq!(w.cancel(1), 1);
        assert_eq!(w.pop_due(t0 + ms(100)).map(|l| l.attempt), Some(0), "the latest (attempt 9) was cancelled");
        assert_eq!(w.cancel(5), 0);
    }
}
