//! The bridge's counters: written by its two threads and the loops (a
//! dropped publish), read by the metrics thread and `/healthz`.

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
    /// Publishes not sent because the queue to the publisher was full.
    pub dropped_queue_full: AtomicU64,
    /// Channel messages that were not an envelope this build reads.
    pub dropped_malformed: AtomicU64,
    /// Connections to Redis made again after one was lost or refused.
    pub reconnects: AtomicU64,
}

impl BridgeStats {
    /// True when both connections are up.
    pub fn is_up(&self) -> bool {
        self.publisher_up.load(Ordering::Relaxed) && self.subscriber_up.load(Ordering::Relaxed)
    }
}
