//! When a loop gives memory back: once the crowd has gone.
//!
//! A loop's tables grow to their peak and keep it: the slab of `Conn`s (112
//! bytes a slot), the slot-indexed side tables, the owed-deliveries
//! scratch, and what glibc keeps of everything freed. After a ramp-down
//! that is memory no one uses. [`Shrink`] says when to release it: the slab
//! has stayed at most 1/8 full for `after` (default 10 s) and its capacity
//! is worth the bother (at least [`MIN_CAPACITY`] slots), and either the
//! slab has grown since the last release or it has emptied further (a
//! release with stragglers left at high slots cannot shrink past them: the
//! 1M benchmark's first version released once per ramp-down, mid-way, and
//! kept 77 % of the peak). The check runs once per timer tick, not per
//! pass, and a busy loop never qualifies: the hot path pays nothing.

use std::time::{Duration, Instant};

/// Below this many slots a slab is not worth shrinking (112 KiB of `Conn`s).
pub const MIN_CAPACITY: usize = 1024;
/// Occupancy at or below 1 / this counts as "mostly empty".
const EMPTY_FRACTION: usize = 8;

/// See the module docs.
#[derive(Debug)]
pub struct Shrink {
    after: Duration,
    /// When the loop became mostly empty (`None`: it is not).
    quiet_since: Option<Instant>,
    /// The slab capacity the last release left and the connections it
    /// found: no second release until the slab has grown past that capacity
    /// or fewer than half as many connections are left.
    released_at: (usize, usize),
}

impl Shrink {
    /// Releases after `after` mostly empty; zero: never.
    pub fn new(after: Duration) -> Shrink {
        Shrink { after, quiet_since: None, released_at: (0, 0) }
    }

    /// True when memory should be released now, given the slab's occupied
    /// slots and capacity.
    pub fn due(&mut self, now: Instant, occupied: usize, capacity: usize) -> bool {
        let mostly_empty = occupied * EMPTY_FRACTION <= capacity;
        let (last_capacity, last_occupied) = self.released_at;
        let news = capacity > last_capacity || occupied * 2 < last_occupied;
        if self.after.is_zero() || capacity < MIN_CAPACITY || !news || !mostly_empty {
            self.quiet_since = None;
            return false;
        }
        let since = *self.quiet_since.get_or_insert(now);
        now.duration_since(since) >= self.after
    }

    /// Memory was released with `occupied` connections left; the slab is
    /// left with `capacity` slots.
    pub fn released(&mut self, occupied: usize, capacity: usize) {
        self.quiet_since = None;
        self.released_at = (capacity, occupied);
    }
}

/// Returns the C heap's free memory to the system (glibc keeps freed
/// memory for reuse; after a ramp-down that is most of the peak).
pub fn trim_heap() {
    #[cfg(target_env = "gnu")]
    // SAFETY: malloc_trim only walks the allocator's own free lists.
    unsafe {
        libc::malloc_trim(0);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn releases_once_after_a_quiet_spell_and_again_only_after_growth() {
        let t0 = Instant::now();
        let secs = |s| t0 + Duration::from_secs(s);
        let mut s = Shrink::new(Duration::from_secs(10));
        assert!(!s.due(secs(0), 20_000, 32_768), "busy");
        assert!(!s.due(secs(1), 100, 32_768), "quiet, not long enough");
        assert!(!s.due(secs(5), 4_000, 32_768));
        assert!(s.due(secs(11), 4_000, 32_768), "quiet for 10 s");
        s.released(0, 4_096);
        assert!(!s.due(secs(30), 0, 4_096), "nothing new to release");
        // A second crowd grows the slab; after it leaves, release again.
        assert!(!s.due(secs(40), 30_000, 32_768));
        assert!(!s.due(secs(41), 0, 32_768));
        assert!(!s.due(secs(50), 0, 32_768));
        assert!(s.due(secs(51), 0, 32_768));
        // A busy spell resets the clock.
        let mut s = Shrink::new(Duration::from_secs(10));
        assert!(!s.due(secs(0), 0, 8_192));
        assert!(!s.due(secs(9), 5_000, 8_192));
        assert!(!s.due(secs(12), 0, 8_192));
        assert!(s.due(secs(22), 0, 8_192));
    }

    #[test]
    fn stragglers_at_high_slots_get_a_second_release_once_they_leave() {
        let t0 = Instant::now();
        let secs = |s| t0 + Duration::from_secs(s);
        let mut s = Shrink::new(Duration::from_secs(10));
        assert!(!s.due(secs(0), 300, 32_768));
        assert!(s.due(secs(10), 300, 32_768));
        // One of them holds slot 30,000: the slab cannot shrink.
        s.released(300, 32_768);
        assert!(!s.due(secs(20), 200, 32_768), "not half as many gone yet");
        assert!(!s.due(secs(30), 100, 32_768), "half of them gone: the clock starts again");
        assert!(s.due(secs(40), 0, 32_768));
        s.released(0, 0);
        assert!(!s.due(secs(100), 0, 0));
        // Without stragglers nothing repeats at the same capacity.
        let mut s = Shrink::new(Duration::from_secs(10));
        assert!(!s.due(secs(0), 0, 2_048));
        assert!(s.due(secs(10), 0, 2_048));
        s.released(0, 2_048);
        assert!(!s.due(secs(20), 0, 2_048));
        assert!(!s.due(secs(40), 0, 2_048));
    }

    #[test]
    fn small_loops_and_zero_never_release() {
        let t0 = Instant::now();
        let mut s = Shrink::new(Duration::from_secs(1));
        assert!(!s.due(t0, 0, MIN_CAPACITY - 1));
        assert!(!s.due(t0 + Duration::from_secs(5), 0, MIN_CAPACITY - 1));
        let mut never = Shrink::new(Duration::ZERO);
        assert!(!never.due(t0, 0, 1 << 20));
        assert!(!never.due(t0 + Duration::from_secs(100), 0, 1 << 20));
    }
}
