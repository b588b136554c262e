//! The bridge's counters and gauges: written by its two threads and the
//! loops (a dropped publish, the bytes queued), read by the metrics thread,
//! `/healthz` and whatever budgets the process's memory.
//!
//! Invariant: `queued_bytes` is the sum of the costs of the publishes
//! handed to the publisher and not yet sent or dropped by it, and never
//! exceeds the configured bound: a loop reserves before it queues, the
//! publisher releases after the pipeline that carried them is done.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

/// The bridge's counters, read by the metrics thread.
#[derive(Debug, Default)]
pub struct BridgeStats {
    /// The publisher's connection to Redis is up.
    pub publisher_up: AtomicBool,
    /// The subscriber's connection is up and subscribed.
    pub subscriber_up: AtomicBool,
    /// Channels subscribed now.
    pub subscriptions: AtomicU64,
    /// Publishes Redis accepted.
    pub published: AtomicU64,
    /// Publishes from other processes delivered to this process's loops.
    pub received: AtomicU64,
    /// Publishes not sent because Redis was down.
    pub dropped_redis_down: AtomicU64,
    /// Publishes not sent because the queue to the publisher was full, by
    /// count or by bytes.
    pub dropped_queue_full: AtomicU64,
    /// Publishes not sent because they were larger than a subscriber's
    /// output buffer in Redis allows (see [`BridgeStats::max_publish_bytes`]).
    pub dropped_too_large: AtomicU64,
    /// Publishes not sent because their room's name is one `join` refuses.
    pub dropped_bad_room: AtomicU64,
    /// Channel messages that were not an envelope this build reads.
    pub dropped_malformed: AtomicU64,
    /// Other hosts' publishes a live hand-off could not hold back (past
    /// 64 MiB held between the marker and the end of adoption).
    pub dropped_handoff_held: AtomicU64,
    /// Connections to Redis made again after one was lost or refused.
    pub reconnects: AtomicU64,
    /// Bytes of the publishes waiting for, or being sent by, the publisher.
    queued_bytes: AtomicU64,
    /// The largest publish, in bytes on the wire, sent to Redis now.
    max_publish_bytes: AtomicU64,
}

impl BridgeStats {
    /// Counters at zero, and `max_publish_bytes` as the bound in effect
    /// until Redis tells a smaller one.
    pub(crate) fn new(max_publish_bytes: u64) -> BridgeStats {
        BridgeStats { max_publish_bytes: AtomicU64::new(max_publish_bytes), ..BridgeStats::default() }
    }

    /// True when both connections are up.
    pub fn is_up(&self) -> bool {
        self.publisher_up.load(Ordering::Relaxed) && self.subscriber_up.load(Ordering::Relaxed)
    }

    /// Bytes the bridge's queue holds now: the messages it keeps alive for
    /// other hosts (at most the configured `max_queue_bytes`).
    pub fn queued_bytes(&self) -> u64 {
        self.queued_bytes.load(Ordering::Relaxed)
    }

    /// The largest publish sent to Redis now (larger ones are refused):
    /// the configured bound, or less where Redis's own output-buffer limit
    /// for subscribers asks for less.
    pub fn max_publish_bytes(&self) -> u64 {
        self.max_publish_bytes.load(Ordering::Relaxed)
    }

    pub(crate) fn set_max_publish_bytes(&self, bytes: u64) {
        self.max_publish_bytes.store(bytes, Ordering::Relaxed);
    }

    /// Takes `cost` bytes of the queue if the total stays within `max`;
    /// false (nothing taken) if it would not.
    pub(crate) fn reserve(&self, cost: u64, max: u64) -> bool {
        self.queued_bytes
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |held| held.checked_add(cost).filter(|&n| n <= max))
            .is_ok()
    }

    /// Gives back `cost` bytes taken by [`reserve`](Self::reserve).
    pub(crate) fn release(&self, cost: u64) {
        let before = self.queued_bytes.fetch_sub(cost, Ordering::AcqRel);
        debug_assert!(before >= cost, "released {cost} of {before} queued bytes");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reserve_stops_at_the_bound_and_release_gives_it_back() {
        let s = BridgeStats::new(1);
        assert!(s.reserve(60, 100));
        assert!(s.reserve(40, 100), "up to the bound exactly");
        assert!(!s.reserve(1, 100));
        assert_eq!(s.queued_bytes(), 100, "a refused reservation takes nothing");
        s.release(60);
        assert!(!s.reserve(61, 100));
        assert!(s.reserve(60, 100));
        assert!(!s.reserve(u64::MAX, u64::MAX), "no wrap-around");
        s.release(100);
        assert_eq!(s.queued_bytes(), 0);
    }
}
