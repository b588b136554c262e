//! Per-loop counters: written by one event loop, read by anyone (the
//! metrics thread, tests) at any time.
//!
//! Each loop is the only writer of its own [`LoopStats`], so a counter is
//! bumped with a relaxed load and store, not a locked read-modify-write:
//! counting costs a few plain instructions on the hot path.

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};

use crate::ws::HandshakeError;

use super::life::CloseReason;
use super::tls::TlsFailure;

/// The `reason` labels of `handshake_failures_total`, in counter order:
/// every `HandshakeError`, then a handshake that timed out.
pub(crate) fn handshake_failure_labels() -> impl Iterator<Item = &'static str> {
    HandshakeError::ALL.iter().map(|e| e.label()).chain(["timeout"])
}

/// The counter slot of a handshake that timed out (after every `HandshakeError`).
const HANDSHAKE_TIMEOUT: usize = HandshakeError::ALL.len();

/// Upper bounds (seconds) of the loop-iteration histogram buckets.
pub(crate) const ITERATION_BUCKETS: [f64; 12] =
    [0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.5];

/// Upper bounds (seconds) of the TLS handshake duration buckets.
pub(crate) const TLS_HANDSHAKE_BUCKETS: [f64; 12] =
    [0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5];

/// A counter with a single writer.
#[derive(Debug, Default)]
pub struct Counter(AtomicU64);

impl Counter {
    /// Adds `n`. Only the owning loop may call this.
    #[inline]
    pub(crate) fn add(&self, n: u64) {
        self.0.store(self.0.load(Relaxed).wrapping_add(n), Relaxed);
    }

    /// Subtracts `n` (gauges). Only the owning loop may call this.
    #[inline]
    pub(crate) fn sub(&self, n: u64) {
        self.0.store(self.0.load(Relaxed).wrapping_sub(n), Relaxed);
    }

    /// Sets the value (gauges). Only the owning loop may call this.
    #[inline]
    pub(crate) fn set(&self, n: u64) {
        self.0.store(n, Relaxed);
    }

    /// The current value.
    pub fn get(&self) -> u64 {
        self.0.load(Relaxed)
    }
}

/// One event loop's counters and gauges.
#[derive(Debug, Default)]
pub struct LoopStats {
    /// Open connections (handshaking ones included). Gauge.
    pub connections: Counter,
    /// Connections accepted.
    pub accepted: Counter,
    /// Connections closed, by [`CloseReason`] (index = position in `ALL`).
    pub closed: [Counter; CloseReason::ALL.len()],
    /// Refused handshakes by `HandshakeError` (its discriminant), then timeouts.
    pub handshake_failures: [Counter; HANDSHAKE_TIMEOUT + 1],
    /// Messages received (whole messages, not frames).
    pub messages_received: Counter,
    /// Messages sent.
    pub messages_sent: Counter,
    /// Bytes read from sockets.
    pub bytes_received: Counter,
    /// Bytes written to sockets.
    pub bytes_sent: Counter,
    /// Pooled buffers held by connections. Gauge.
    pub pool_in_use: Counter,
    /// Pooled buffers waiting in the pool. Gauge.
    pub pool_idle: Counter,
    /// Bytes queued for slow readers. Gauge.
    pub backlog_bytes: Counter,
    /// The part of `backlog_bytes` that is shared frames held by reference
    /// (a 16 MiB publish owed to 40 members counts 640 MiB above, and is
    /// 16 MiB of memory). Gauge.
    pub shared_backlog_bytes: Counter,
    /// Input held beyond a pooled buffer: partial frames larger than one,
    /// and fragmented messages being assembled. Gauge.
    pub input_bytes: Counter,
    /// Connections no longer read while the process was over its memory
    /// budget's soft mark (each time it began).
    pub budget_throttled: Counter,
    /// Connections closed as the largest holders over the memory budget.
    pub budget_shed: Counter,
    /// Connections a paced drain has still to ask to leave (some may have
    /// left on their own before their turn). Gauge.
    pub drain_remaining: Counter,
    /// Connections a paced drain asked to leave (1012), when asked.
    pub drained_by_drain: Counter,
    /// Connections asked to leave at their maximum age (1012), when asked.
    pub drained_by_age: Counter,
    /// Times accepting paused because the process ran out of descriptors.
    pub accept_pauses: Counter,
    /// Connections handed to a new process (live hand-off).
    pub handed_off: Counter,
    /// Connections adopted from an earlier process (or taken back after a
    /// failed hand-off).
    pub adopted: Counter,
    /// Carried connections that could not be adopted (closed).
    pub adopt_failed: Counter,
    /// Kicks from other hosts (admin API over Redis) kept while the loop
    /// was frozen for a live hand-off, carried out when it serves again.
    pub admin_kicks_kept: Counter,
    /// Kicks from other hosts a frozen loop could not keep (over its bound).
    pub admin_kicks_missed: Counter,
    /// Times the loop gave its peak's memory back after a ramp-down.
    pub memory_releases: Counter,
    /// Loop passes whose handling time fell in each bucket (not cumulative;
    /// the last slot counts passes over the largest bound).
    pub iteration_buckets: [Counter; ITERATION_BUCKETS.len() + 1],
    /// Total handling time of all loop passes, in nanoseconds.
    pub iteration_nanos: Counter,
    /// Rooms with members on this loop. Gauge.
    pub rooms: Counter,
    /// Room memberships on this loop. Gauge.
    pub room_members: Counter,
    /// Messages published to rooms by this loop's connections.
    pub room_published: Counter,
    /// Room messages this loop delivered to its members (the publisher's
    /// own copy is counted as sent, not here).
    pub room_delivered: Counter,
    /// Writes that carried room deliveries: one per member per pass, however
    /// many publishes it was owed.
    pub room_writes: Counter,
    /// Messages sent compressed (permessage-deflate); a room publish counts
    /// once per window it was compressed for, not once per member.
    pub compressed_messages: Counter,
    /// Their bytes before compression.
    pub compressed_plain_bytes: Counter,
    /// Their bytes after compression (payloads, without frame headers).
    pub compressed_bytes: Counter,
    /// Connections holding a dedicated deflater or inflater. Gauge.
    pub dedicated_codecs: Counter,
    /// 1 while this loop runs the io_uring driver, 0 for epoll. Gauge.
    pub uring: Counter,
    /// io_uring: receives that found the provided-buffer ring empty
    /// (`-ENOBUFS`); each one grows the ring and re-arms the receive.
    pub uring_enobufs: Counter,
    /// io_uring: completions the kernel dropped because the completion
    /// queue was full (as the kernel counts them).
    pub uring_cq_overflow: Counter,
    /// io_uring: receive buffers provided to the kernel. Gauge.
    pub uring_buffers: Counter,
    /// TLS handshakes completed.
    pub tls_handshakes: Counter,
    /// TLS handshakes that failed, by `TlsFailure` (its discriminant).
    pub tls_failures: [Counter; TlsFailure::ALL.len()],
    /// TLS handshakes (accept to keys agreed) by duration bucket (not
    /// cumulative; the last slot counts those over the largest bound).
    pub tls_handshake_buckets: [Counter; TLS_HANDSHAKE_BUCKETS.len() + 1],
    /// Total duration of the completed TLS handshakes, in nanoseconds.
    pub tls_handshake_nanos: Counter,
    /// Connections whose TLS handshake waited for a later pass because this
    /// pass's handshake budget was spent.
    pub tls_deferred: Counter,
    /// Messages over their connection's rate, dropped before the handler.
    pub rate_dropped: Counter,
    /// Connections told `rate_limited` (once per episode over the rate).
    pub rate_warned: Counter,
    /// Connections closed 1008 for owing a second burst over the rate.
    pub rate_closed: Counter,
    /// Connections refused for their PROXY protocol header, by
    /// `ProxyRefusal` (its discriminant).
    pub proxy_refused: [Counter; ProxyRefusal::ALL.len()],
    /// Upgrades from a trusted proxy whose forwarding header named no
    /// usable client (a bad hop, too many hops): the proxy's address stands.
    pub forwarded_unusable: Counter,
}

/// Why a connection was refused for its PROXY protocol header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProxyRefusal {
    /// From an address outside `--trusted-proxies`: closed at accept.
    Untrusted,
    /// A header that is not one, or is broken (or the connection ended first).
    Malformed,
    /// No whole header within the handshake deadline.
    Timeout,
}

impl ProxyRefusal {
    /// Every refusal, in counter order.
    pub const ALL: [ProxyRefusal; 3] = [ProxyRefusal::Untrusted, ProxyRefusal::Malformed, ProxyRefusal::Timeout];

    /// Its `reason` label in `wsloop_proxy_refused_total`.
    pub fn label(self) -> &'static str {
        match self {
            ProxyRefusal::Untrusted => "untrusted",
            ProxyRefusal::Malformed => "malformed",
            ProxyRefusal::Timeout => "timeout",
        }
    }
}

impl LoopStats {
    /// Records how long one poll-and-handle pass took (time spent waiting in
    /// poll is not counted).
    #[inline]
    pub(crate) fn observe_iteration(&self, elapsed: std::time::Duration) {
        let secs = elapsed.as_secs_f64();
        let i = ITERATION_BUCKETS.iter().position(|b| secs <= *b).unwrap_or(ITERATION_BUCKETS.len());
        self.iteration_buckets[i].add(1);
        self.iteration_nanos.add(elapsed.as_nanos() as u64);
    }

    /// Counts a completed TLS handshake and how long it took.
    #[inline]
    pub(crate) fn observe_tls_handshake(&self, elapsed: std::time::Duration) {
        let secs = elapsed.as_secs_f64();
        let i = TLS_HANDSHAKE_BUCKETS.iter().position(|b| secs <= *b).unwrap_or(TLS_HANDSHAKE_BUCKETS.len());
        self.tls_handshake_buckets[i].add(1);
        self.tls_handshake_nanos.add(elapsed.as_nanos() as u64);
        self.tls_handshakes.add(1);
    }

    /// Counts a connection refused for its PROXY header.
    pub(crate) fn count_proxy_refusal(&self, why: ProxyRefusal) {
        self.proxy_refused[why as usize].add(1);
    }

    /// Connections refused for their PROXY header, for `why`.
    pub fn proxy_refused_by(&self, why: ProxyRefusal) -> u64 {
        self.proxy_refused[why as usize].get()
    }

    /// Counts a failed TLS handshake.
    pub(crate) fn count_tls_failure(&self, failure: TlsFailure) {
        self.tls_failures[failure as usize].add(1);
    }

    /// Failed TLS handshakes for `failure`.
    pub fn tls_failures_by(&self, failure: TlsFailure) -> u64 {
        self.tls_failures[failure as usize].get()
    }

    /// Counts a closed connection.
    #[inline]
    pub(crate) fn count_close(&self, reason: CloseReason) {
        self.closed[reason as usize].add(1);
    }

    /// Closed connections for `reason`.
    pub fn closed_by(&self, reason: CloseReason) -> u64 {
        self.closed[reason as usize].get()
    }

    /// Counts a refused handshake.
    #[inline]
    pub(crate) fn count_handshake_failure(&self, e: HandshakeError) {
        self.handshake_failures[e as usize].add(1);
    }

    /// Counts a handshake that did not complete in time.
    pub(crate) fn count_handshake_timeout(&self) {
        self.handshake_failures[HANDSHAKE_TIMEOUT].add(1);
    }

    /// Failed handshakes for a `reason` label of `handshake_failures_total`.
    pub fn handshake_failures_by(&self, label: &str) -> u64 {
        handshake_failure_labels().position(|l| l == label).map_or(0, |i| self.handshake_failures[i].get())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn labels_line_up_with_their_enums() {
        for (i, r) in CloseReason::ALL.iter().enumerate() {
            assert_eq!(*r as usize, i);
        }
        for (i, e) in HandshakeError::ALL.iter().enumerate() {
            assert_eq!(*e as usize, i, "{e:?}");
        }
        assert_eq!(handshake_failure_labels().last(), Some("timeout"));
    }

    #[test]
    fn counters_count() {
        let s = LoopStats::default();
        s.count_close(CloseReason::SlowConsumer);
        s.count_handshake_failure(HandshakeError::UnknownPath);
        s.count_handshake_timeout();
        s.connections.add(3);
        s.connections.sub(1);
        assert_eq!(s.closed_by(CloseReason::SlowConsumer), 1);
        assert_eq!(s.handshake_failures_by("path"), 1);
        assert_eq!(s.handshake_failures_by("timeout"), 1);
        assert_eq!(s.connections.get(), 2);
    }
}
