//! Which rooms have members anywhere in this process: the set the bridge
//! keeps subscribed in Redis.
//!
//! A loop reports a room when its first local member joins and again when
//! its last leaves (not per member), so the lock here is taken at room
//! birth and death only. The count is of loops holding the room; the set
//! of rooms with a count above zero is what Redis must send us. A
//! generation number moves whenever that set changes, so the subscriber
//! sees a change with one atomic load and never scans an unchanged set.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};

/// See the module docs.
#[derive(Debug, Default)]
pub struct Directory {
    loops_in: Mutex<HashMap<Arc<str>, u32>>,
    generation: AtomicU64,
}

impl Directory {
    /// A loop has its first member of `room`.
    pub fn opened(&self, room: &Arc<str>) {
        let mut rooms = self.loops_in.lock().unwrap_or_else(PoisonError::into_inner);
        let count = rooms.entry(room.clone()).or_insert(0);
        *count += 1;
        if *count == 1 {
            self.generation.fetch_add(1, Ordering::Release);
        }
    }

    /// A loop's last member of `room` left.
    pub fn closed(&self, room: &str) {
        let mut rooms = self.loops_in.lock().unwrap_or_else(PoisonError::into_inner);
        let Some(count) = rooms.get_mut(room) else {
            debug_assert!(false, "closed a room no loop opened: {room}");
            return;
        };
        *count -= 1;
        if *count == 0 {
            rooms.remove(room);
            self.generation.fetch_add(1, Ordering::Release);
        }
    }

    /// Moves whenever the set of rooms changes.
    pub fn generation(&self) -> u64 {
        self.generation.load(Ordering::Acquire)
    }

    /// The rooms with members now, and the generation they belong to.
    pub fn snapshot(&self) -> (u64, HashSet<Arc<str>>) {
        let rooms = self.loops_in.lock().unwrap_or_else(PoisonError::into_inner);
        (self.generation(), rooms.keys().cloned().collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_room_lives_while_any_loop_holds_it() {
        let d = Directory::default();
        let lobby: Arc<str> = "lobby".into();
        let g0 = d.generation();
        d.opened(&lobby);
        let g1 = d.generation();
        assert_ne!(g0, g1);
        d.opened(&lobby); // a second loop: the set is unchanged
        assert_eq!(d.generation(), g1);
        d.closed("lobby");
        assert_eq!(d.generation(), g1);
        assert_eq!(d.snapshot().1.len(), 1);
        d.closed("lobby");
        assert_ne!(d.generation(), g1);
        assert!(d.snapshot().1.is_empty());
    }
}
