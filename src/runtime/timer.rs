//! A coarse hashed timer wheel, one per event loop, for the timeouts of
//! every connection: handshake, idle ping, pong deadline, close.
//!
//! Connections are linked into buckets by slab index through a 16-byte
//! [`TimerLink`] inside each connection, so timers allocate nothing. Hot
//! path activity (a message arrived) only stores a later deadline; the
//! connection is moved to the right bucket when its old bucket comes round.
//! A tick therefore scans one bucket, and an idle connection is visited
//! about once per timeout or once per turn of the wheel (256 ticks),
//! whichever comes first, never once per tick: pick the tick so that a
//! turn is not much shorter than the common timeout.

use std::time::{Duration, Instant};

/// "No connection" in a link.
const NIL: u32 = u32::MAX;

/// Buckets in the wheel; timeouts longer than this many ticks cost one
/// extra visit per revolution.
const BUCKETS: usize = 256;

/// A connection's place in the wheel. 16 bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TimerLink {
    prev: u32,
    next: u32,
    /// The tick at which this timer fires.
    deadline: u32,
    /// The tick of the bucket the link sits in, or NIL when not linked.
    bucket_tick: u32,
}

impl Default for TimerLink {
    fn default() -> Self {
        TimerLink { prev: NIL, next: NIL, deadline: 0, bucket_tick: NIL }
    }
}

impl TimerLink {
    /// True while the link sits in a bucket.
    pub fn is_linked(&self) -> bool {
        self.bucket_tick != NIL
    }

    /// The tick this timer fires at, while it is linked.
    pub fn deadline(&self) -> Option<u32> {
        self.is_linked().then_some(self.deadline)
    }
}

/// Access to the links of all slots (the loop's slab of connections).
pub trait Links {
    /// The link of `slot`, which must exist.
    fn link(&mut self, slot: u32) -> &mut TimerLink;
}

impl Links for Vec<TimerLink> {
    fn link(&mut self, slot: u32) -> &mut TimerLink {
        &mut self[slot as usize]
    }
}

/// The wheel: bucket heads, the current tick and the tick length.
#[derive(Debug)]
pub struct TimerWheel {
    heads: Box<[u32]>,
    now: u32,
    start: Instant,
    tick: Duration,
}

impl TimerWheel {
    /// A wheel whose clock starts now, advancing by `tick`.
    pub fn new(tick: Duration) -> Self {
        TimerWheel {
            heads: vec![NIL; BUCKETS].into_boxed_slice(),
            now: 0,
            start: Instant::now(),
            tick: tick.max(Duration::from_millis(1)),
        }
    }

    /// The current tick.
    pub fn now(&self) -> u32 {
        self.now
    }

    /// `d` in ticks, rounded up, at least 1.
    pub fn ticks(&self, d: Duration) -> u32 {
        (d.as_nanos().div_ceil(self.tick.as_nanos()).max(1)).min(u32::MAX as u128 / 2) as u32
    }

    /// The time `ticks` ticks take.
    pub fn duration_of(&self, ticks: u32) -> Duration {
        self.tick * ticks
    }

    /// The tick the clock has reached at `at`.
    pub fn tick_at(&self, at: Instant) -> u32 {
        (at.saturating_duration_since(self.start).as_nanos() / self.tick.as_nanos()) as u32
    }

    /// Time from `at` until the next tick begins.
    pub fn until_next_tick(&self, at: Instant) -> Duration {
        let next = self.start + self.tick * (self.tick_at(at) + 1);
        next.saturating_duration_since(at)
    }

    /// Sets `slot`'s deadline to `deadline`, linking it if needed. A later
    /// deadline than the bucket it sits in is only recorded (O(1), no list
    /// update); an earlier one moves it.
    pub fn schedule(&mut self, links: &mut impl Links, slot: u32, deadline: u32) {
        let link = links.link(slot);
        if link.is_linked() && deadline >= link.bucket_tick {
            link.deadline = deadline;
            return;
        }
        self.remove(links, slot);
        self.insert(links, slot, deadline);
    }

    fn insert(&mut self, links: &mut impl Links, slot: u32, deadline: u32) {
        let bucket_tick = deadline.max(self.now + 1);
        let b = bucket_tick as usize % BUCKETS;
        let head = self.heads[b];
        *links.link(slot) = TimerLink { prev: NIL, next: head, deadline, bucket_tick };
        if head != NIL {
            links.link(head).prev = slot;
        }
        self.heads[b] = slot;
    }

    /// Unlinks `slot` (no-op if not linked). Call before the slot is freed.
    pub fn remove(&mut self, links: &mut impl Links, slot: u32) {
        let TimerLink { prev, next, bucket_tick, .. } = *links.link(slot);
        if bucket_tick == NIL {
            return;
        }
        if prev == NIL {
            self.heads[bucket_tick as usize % BUCKETS] = next;
        } else {
            links.link(prev).next = next;
        }
        if next != NIL {
            links.link(next).prev = prev;
        }
        *links.link(slot) = TimerLink::default();
    }

    /// Advances the clock to `now_tick`, appending every slot whose deadline
    /// has passed to `expired` (unlinked). Slots whose deadline moved later
    /// are re-filed.
    pub fn advance(&mut self, links: &mut impl Links, now_tick: u32, expired: &mut Vec<u32>) {
        if now_tick <= self.now {
            return;
        }
        let steps = (now_tick - self.now).min(BUCKETS as u32);
        let first = self.now + 1;
        self.now = now_tick;
        for t in first..first + steps {
            let b = t as usize % BUCKETS;
            let mut slot = self.heads[b];
            while slot != NIL {
                let link = *links.link(slot);
                let next = link.next;
                if link.deadline <= now_tick {
                    self.remove(links, slot);
                    expired.push(slot);
                } else if link.bucket_tick <= now_tick {
                    self.remove(links, slot);
                    self.insert(links, slot, link.deadline);
                }
                slot = next;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn wheel() -> (TimerWheel, Vec<TimerLink>) {
        (TimerWheel::new(Duration::from_secs(1)), vec![TimerLink::default(); 8])
    }

    #[test]
    fn fires_at_the_deadline_not_before() {
        let (mut w, mut links) = wheel();
        w.schedule(&mut links, 3, 5);
        let mut out = Vec::new();
        w.advance(&mut links, 4, &mut out);
        assert!(out.is_empty());
        w.advance(&mut links, 5, &mut out);
        assert_eq!(out, [3]);
        assert!(!links[3].is_linked());
    }

    #[test]
    fn later_deadline_is_lazy_and_still_right() {
        let (mut w, mut links) = wheel();
        w.schedule(&mut links, 1, 2);
        w.schedule(&mut links, 1, 10); // activity: only the deadline changes
        assert_eq!(links[1].bucket_tick, 2);
        let mut out = Vec::new();
        w.advance(&mut links, 9, &mut out);
        assert!(out.is_empty());
        w.advance(&mut links, 10, &mut out);
        assert_eq!(out, [1]);
    }

    #[test]
    fn earlier_deadline_moves_the_link() {
        let (mut w, mut links) = wheel();
        w.schedule(&mut links, 1, 60);
        w.schedule(&mut links, 1, 3);
        let mut out = Vec::new();
        w.advance(&mut links, 3, &mut out);
        assert_eq!(out, [1]);
    }

    #[test]
    fn far_deadlines_survive_revolutions() {
        let (mut w, mut links) = wheel();
        w.schedule(&mut links, 0, 1000);
        let mut out = Vec::new();
        for t in 1..1000 {
            w.advance(&mut links, t, &mut out);
        }
        assert!(out.is_empty());
        w.advance(&mut links, 1000, &mut out);
        assert_eq!(out, [0]);
    }

    #[test]
    fn remove_unlinks_from_the_middle() {
        let (mut w, mut links) = wheel();
        for s in 0..4 {
            w.schedule(&mut links, s, 7);
        }
        w.remove(&mut links, 2);
        let mut out = Vec::new();
        w.advance(&mut links, 7, &mut out);
        out.sort();
        assert_eq!(out, [0, 1, 3]);
    }

    #[test]
    fn a_long_stall_expires_everything_due() {
        let (mut w, mut links) = wheel();
        w.schedule(&mut links, 0, 3);
        w.schedule(&mut links, 1, 700);
        w.schedule(&mut links, 2, 9000);
        let mut out = Vec::new();
        w.advance(&mut links, 5000, &mut out);
        out.sort();
        assert_eq!(out, [0, 1]);
        w.advance(&mut links, 9000, &mut out);
        assert_eq!(out, [0, 1, 2]);
    }
}
