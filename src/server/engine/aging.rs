//! Connection aging (`--max-connection-age`): each connection, once open,
//! is asked to leave (1012 with a reconnect hint) after its age, jittered,
//! so load spreads again over the hosts after a scale-out. The closes are
//! paced (`--drain-rate`, split over the loops): a mass of connections
//! opened together does not all leave in the same second.
//!
//! The invariants: no memory at all when aging is off (the engine holds no
//! `Aging`); when on, one 16-byte heap entry per connection, keyed by slot
//! and generation (a stale entry is skipped when it comes up, and the heap
//! is compacted once stale entries outnumber the live connections), never
//! a field in `Conn` and never a scan of all connections per pass: a pass
//! looks at the heap's top only. At most one close per `interval`, with at
//! most [`CATCH_UP`] of them made up after a late wake.

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::time::{Duration, Instant};

use crate::server::config::ServerConfig;

/// How far behind its pace a late loop may catch up at once.
const CATCH_UP: Duration = Duration::from_millis(20);

/// Deadlines of this loop's connections, and the pace of their closes.
#[derive(Debug)]
pub(crate) struct Aging {
    /// (deadline in ms after `epoch`, slot, generation), soonest on top.
    heap: BinaryHeap<Reverse<(u64, u32, u32)>>,
    /// What deadlines are counted from.
    epoch: Instant,
    /// `--max-connection-age`.
    age: Duration,
    /// `--connection-age-jitter`, as a fraction (0.1 for 10 %).
    jitter: f64,
    /// Time between two aged closes on this loop.
    interval: Duration,
    /// The earliest the next aged close may be made.
    next_turn: Instant,
}

impl Aging {
    /// The aging a loop of `cfg` runs: none unless `--max-connection-age`;
    /// the loop's share of `--drain-rate`.
    pub(crate) fn for_loop(cfg: &ServerConfig) -> Option<Aging> {
        if cfg.max_connection_age.is_zero() {
            return None;
        }
        let loops = cfg.worker_count().max(1) as u32;
        let rate = cfg.drain_rate.div_ceil(loops).max(1);
        Some(Aging::new(cfg.max_connection_age, cfg.connection_age_jitter, rate, Instant::now()))
    }

    /// Aging after `age`, +- `jitter_percent`, at most `rate` closes a
    /// second on this loop (at least one).
    pub(crate) fn new(age: Duration, jitter_percent: u8, rate: u32, now: Instant) -> Aging {
        Aging {
            heap: BinaryHeap::new(),
            epoch: now,
            age,
            jitter: f64::from(jitter_percent.min(100)) / 100.0,
            interval: Duration::from_secs(1) / rate.max(1),
            next_turn: now,
        }
    }

    /// Entries held, stale ones included.
    #[cfg(test)]
    fn len(&self) -> usize {
        self.heap.len()
    }

    /// Starts the clock of a connection that just opened; `random` picks
    /// where in `age * (1 +- jitter)` its deadline falls.
    pub(crate) fn opened(&mut self, slot: u32, generation: u32, now: Instant, random: u64) {
        let unit = (random >> 11) as f64 / (1u64 << 53) as f64; // [0, 1)
        let factor = 1.0 + self.jitter * (2.0 * unit - 1.0);
        let at = now.saturating_duration_since(self.epoch) + self.age.mul_f64(factor.max(0.0));
        self.heap.push(Reverse((at.as_millis() as u64, slot, generation)));
    }

    /// Drops stale entries once they outnumber `live` (the loop's open
    /// connections): an amortised O(1) per close, so a loop whose
    /// connections come and go faster than they age holds no more than
    /// twice its connections.
    pub(crate) fn compact(&mut self, live: usize, is_live: impl Fn(u32, u32) -> bool) {
        if self.heap.len() > 2 * live + 64 {
            self.heap.retain(|Reverse((_, slot, generation))| is_live(*slot, *generation));
        }
    }

    /// Drops every stale entry and the heap's spare capacity: after a
    /// ramp-down, when the loop gives its peak's memory back.
    pub(crate) fn release_memory(&mut self, is_live: impl Fn(u32, u32) -> bool) {
        self.heap.retain(|Reverse((_, slot, generation))| is_live(*slot, *generation));
        self.heap.shrink_to_fit();
    }

    /// The connections to retire now: past their deadline, live, and
    /// within the pace. A stale entry at the top is dropped without
    /// costing a turn.
    pub(crate) fn due(&mut self, now: Instant, is_live: impl Fn(u32, u32) -> bool, out: &mut Vec<(u32, u32)>) {
        let now_ms = now.saturating_duration_since(self.epoch).as_millis() as u64;
        while let Some(&Reverse((at, slot, generation))) = self.heap.peek() {
            if at > now_ms {
                break;
            }
            if !is_live(slot, generation) {
                self.heap.pop();
                continue;
            }
            if self.next_turn > now {
                break;
            }
            self.heap.pop();
            out.push((slot, generation));
            self.next_turn = self.next_turn.max(now.checked_sub(CATCH_UP).unwrap_or(now)) + self.interval;
        }
    }

    /// When `due` may next have something to do: the top's deadline, or
    /// the next turn if that is later.
    pub(crate) fn next_due(&self) -> Option<Instant> {
        let Reverse((at, _, _)) = self.heap.peek()?;
        Some((self.epoch + Duration::from_millis(*at)).max(self.next_turn))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn all_live(_: u32, _: u32) -> bool {
        true
    }

    #[test]
    fn deadlines_fall_within_the_jitter() {
        let t0 = Instant::now();
        let mut a = Aging::new(Duration::from_secs(10), 10, 1000, t0);
        let mut x = 1u64;
        for slot in 0..1000 {
            x = x.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
            a.opened(slot, 0, t0, x);
        }
        let mut out = Vec::new();
        a.due(t0 + Duration::from_millis(8999), all_live, &mut out);
        assert!(out.is_empty(), "none before 9 s");
        let first = a.next_due().unwrap() - t0;
        assert!(first >= Duration::from_secs(9) && first < Duration::from_millis(9100), "{first:?}");
        // Without jitter, exactly the age.
        let mut exact = Aging::new(Duration::from_secs(2), 0, 1000, t0);
        exact.opened(7, 3, t0 + Duration::from_millis(5), u64::MAX);
        assert_eq!(exact.next_due(), Some(t0 + Duration::from_millis(2005)));
    }

    #[test]
    fn closes_are_paced_at_the_rate_even_when_all_are_due_together() {
        let t0 = Instant::now();
        // 100 a second: one every 10 ms.
        let mut a = Aging::new(Duration::from_secs(1), 0, 100, t0);
        for slot in 0..500 {
            a.opened(slot, 1, t0, 0);
        }
        let mut out = Vec::new();
        let mut now = t0 + Duration::from_secs(1);
        a.due(now, all_live, &mut out);
        assert_eq!(out.len(), 3, "at once: one turn and 20 ms made up, not 500");
        // A loop that wakes when told closes one per turn.
        for _ in 0..97 {
            now = a.next_due().unwrap();
            let before = out.len();
            a.due(now, all_live, &mut out);
            assert_eq!(out.len(), before + 1);
        }
        let took = now - (t0 + Duration::from_secs(1));
        assert!(took >= Duration::from_millis(960), "100 closes at 100/s took {took:?}");
        // A loop that wakes 500 ms late makes up 20 ms at most: 3 closes.
        let before = out.len();
        a.due(now + Duration::from_millis(500), all_live, &mut out);
        assert_eq!(out.len() - before, 3);
    }

    #[test]
    fn stale_entries_cost_no_turn_and_are_compacted() {
        let t0 = Instant::now();
        let mut a = Aging::new(Duration::from_secs(1), 0, 1, t0);
        for slot in 0..1000 {
            a.opened(slot, 1, t0, 0);
        }
        // Only slot 999 is still the same connection.
        let live = |slot: u32, generation: u32| slot == 999 && generation == 1;
        let mut out = Vec::new();
        a.due(t0 + Duration::from_secs(1), live, &mut out);
        assert_eq!(out, [(999, 1)], "the 999 stale ones before it cost no turn");
        for slot in 0..1000 {
            a.opened(slot, 2, t0, 0);
        }
        a.compact(10, |_, _| false);
        assert_eq!(a.len(), 0, "over 2 * 10 + 64 entries, none live");
        a.opened(1, 3, t0, 0);
        a.compact(0, |_, _| false);
        assert_eq!(a.len(), 1, "under the floor: left alone");
        a.release_memory(|_, _| false);
        assert_eq!((a.len(), a.heap.capacity()), (0, 0), "a ramp-down gives it all back");
    }
}
