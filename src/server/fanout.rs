//! Room deliveries one loop owes its members, written at the end of the
//! pass: whatever a member is owed (several publishes, several rooms, from
//! this loop and from others) leaves in one `writev` of the shared frames,
//! never copied per member. So the cost per delivery falls as load rises:
//! publishes that pile up while a pass is busy ride in the same write.
//!
//! A very large room does not stall its loop: a pass serves at most a
//! budget of members, and a round (everything owed when it began, sorted
//! once by member) continues where the last pass stopped, so every member
//! is reached in turn and pings and echoes on the same loop wait at most
//! one slice. What arrives during a round waits for the next one, so under
//! overload a member's frames pile up and leave in fewer, larger writes.
//!
//! Size: 40 bytes per owed delivery (slot, generation, a shared `Bytes`),
//! only while it is owed.

use bytes::Bytes;

/// One delivery owed: a shared, already encoded frame for a connection.
#[derive(Debug, Clone, Default)]
pub struct Owed {
    /// The member's slot.
    pub slot: u32,
    /// Its generation when the delivery was owed (a reused slot is someone
    /// else, who is owed nothing).
    pub generation: u32,
    /// The whole frame, shared by every member that gets it.
    pub frame: Bytes,
}

/// Entries owed since the round began that `take_for` scans at most.
const TAIL_SCAN: usize = 4096;

impl Owed {
    /// An empty entry that holds nothing (a static empty frame): what a
    /// taken entry leaves behind.
    fn placeholder() -> Owed {
        Owed::default()
    }

    /// What an entry taken out of order leaves: same member, nothing to send.
    fn emptied(slot: u32) -> Owed {
        Owed { slot, generation: 0, frame: Bytes::new() }
    }
}

/// The deliveries a loop owes. `owed[start..sorted]` is the current round,
/// sorted by member starting at the cursor; `owed[sorted..]` arrived since
/// and waits for the next round. Every entry is sorted once, whatever the
/// backlog, so a pass costs what it writes, not what is waiting.
#[derive(Debug, Default)]
pub struct Deliveries {
    owed: Vec<Owed>,
    /// The first entry not yet taken.
    start: usize,
    /// The end of the current round's sorted entries.
    sorted: usize,
    /// Where the next round starts: the slot after the last member served.
    cursor: u32,
    /// Where the current round started (its sort key's origin).
    round_cursor: u32,
    /// Scratch of `begin_round`'s counting sort, kept to allocate nothing.
    counts: Vec<u32>,
    spare: Vec<Owed>,
}

impl Deliveries {
    /// Owes `frame` to the connection in `slot`.
    pub fn push(&mut self, slot: u32, generation: u32, frame: &Bytes) {
        self.owed.push(Owed { slot, generation, frame: frame.clone() });
    }

    /// Takes what the connection in `slot` is owed, in order: its group in
    /// the current round (a binary search: the round is sorted) and, if the
    /// entries owed since the round began are few, its share of those. Under
    /// a large backlog, its newest entries stay and are written later (or
    /// dropped, if it is closing by then). Taken entries leave an empty
    /// frame behind, so nothing moves.
    pub fn take_for(&mut self, slot: u32) -> Vec<Owed> {
        let key = |o: &Owed| o.slot.wrapping_sub(self.round_cursor);
        let round = &self.owed[self.start..self.sorted];
        let first = round.partition_point(|o| key(o) < slot.wrapping_sub(self.round_cursor));
        let last = first + round[first..].iter().take_while(|o| o.slot == slot).count();
        let (first, last) = (self.start + first, self.start + last);
        let tail_end = if self.owed.len() - self.sorted <= TAIL_SCAN { self.owed.len() } else { self.sorted };
        let tail = (self.sorted..tail_end).filter(|&i| self.owed[i].slot == slot);
        let taken: Vec<usize> = (first..last).chain(tail).collect();
        taken.into_iter().map(|i| std::mem::replace(&mut self.owed[i], Owed::emptied(slot))).collect()
    }

    /// Entries owed, not yet taken.
    pub fn len(&self) -> usize {
        self.owed.len() - self.start
    }

    /// True if nothing is owed.
    pub fn is_empty(&self) -> bool {
        self.start == self.owed.len()
    }

    /// Frees the scratch a burst of fan-out left, if nothing is owed now.
    pub fn shrink_to_fit(&mut self) {
        if self.is_empty() {
            self.owed = Vec::new();
            self.spare = Vec::new();
            self.counts = Vec::new();
            self.start = 0;
            self.sorted = 0;
        }
    }

    /// Takes what at most `members` members are owed, grouped by member
    /// (each member's frames in the order owed). A round serves every member
    /// that was owed something when it began, starting after the last member
    /// served, so every member is reached in turn.
    pub fn take_slice(&mut self, members: usize) -> Vec<Owed> {
        if self.start == self.sorted {
            self.begin_round();
        }
        let mut end = self.start;
        let mut served = 0;
        while end < self.sorted && served < members {
            let slot = self.owed[end].slot;
            while end < self.sorted && self.owed[end].slot == slot {
                end += 1;
            }
            served += 1;
        }
        if end > self.start {
            self.cursor = self.owed[end - 1].slot.wrapping_add(1);
        }
        let taken = self.owed[self.start..end].iter_mut().map(|o| std::mem::replace(o, Owed::placeholder())).collect();
        self.start = end;
        if self.is_empty() {
            self.owed.clear();
            (self.start, self.sorted) = (0, 0);
        }
        taken
    }

    /// Sorts everything owed so far into a round that starts at the cursor:
    /// a counting sort over slots (dense small integers), linear and stable
    /// (a member's frames keep their order), into a reused buffer.
    fn begin_round(&mut self) {
        self.owed.drain(..self.start);
        self.start = 0;
        let Some(max) = self.owed.iter().map(|o| o.slot as usize).max() else {
            self.sorted = 0;
            return;
        };
        self.counts.clear();
        self.counts.resize(max + 1, 0);
        for o in &self.owed {
            self.counts[o.slot as usize] += 1;
        }
        // Each slot's first position, in round order: the cursor up, then
        // from 0 up to the cursor.
        let cursor = (self.cursor as usize).min(max + 1);
        self.round_cursor = cursor as u32;
        let mut at = 0u32;
        for slot in (cursor..=max).chain(0..cursor) {
            let n = self.counts[slot];
            self.counts[slot] = at;
            at += n;
        }
        self.spare.clear();
        self.spare.resize_with(self.owed.len(), Owed::placeholder);
        for o in self.owed.drain(..) {
            let at = &mut self.counts[o.slot as usize];
            self.spare[*at as usize] = o;
            *at += 1;
        }
        std::mem::swap(&mut self.owed, &mut self.spare);
        self.sorted = self.owed.len();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The deliveries in a slice, without what `take_for` emptied.
    fn frames(slice: &[Owed]) -> Vec<(u32, &[u8])> {
        slice.iter().filter(|o| !o.frame.is_empty()).map(|o| (o.slot, &o.frame[..])).collect()
    }

    fn slots(slice: &[Owed]) -> Vec<u32> {
        frames(slice).iter().map(|(slot, _)| *slot).collect()
    }

    #[test]
    fn groups_by_member_and_keeps_each_members_order() {
        let mut d = Deliveries::default();
        let (a, b) = (Bytes::from_static(b"a"), Bytes::from_static(b"b"));
        for slot in [3, 1, 2] {
            d.push(slot, 0, &a);
        }
        for slot in [2, 3, 1] {
            d.push(slot, 0, &b);
        }
        let slice = d.take_slice(10);
        assert_eq!(frames(&slice), [(1, &b"a"[..]), (1, b"b"), (2, b"a"), (2, b"b"), (3, b"a"), (3, b"b")]);
        assert!(d.is_empty());
    }

    #[test]
    fn a_budget_slices_and_the_next_slice_starts_after_the_last_member() {
        let mut d = Deliveries::default();
        let f = Bytes::from_static(b"f");
        for slot in 0..10 {
            d.push(slot, 0, &f);
        }
        let first = slots(&d.take_slice(4));
        assert_eq!(first, [0, 1, 2, 3]);
        // More is owed meanwhile, to members served and not yet served.
        d.push(1, 0, &f);
        d.push(9, 0, &f);
        // Taking one member's share keeps the round in order.
        d.push(6, 0, &Bytes::from_static(b"g"));
        assert_eq!(frames(&d.take_for(6)), [(6, &b"f"[..]), (6, b"g")]);
        // (6 was emptied: it still counts as one of the four.)
        let second = slots(&d.take_slice(4));
        assert_eq!(second, [4, 5, 7]);
        // The round ends with 9; what came meanwhile is the next round, from
        // after 9, wrapping around.
        let third = slots(&d.take_slice(4));
        assert_eq!(third, [8, 9]);
        let fourth = slots(&d.take_slice(4));
        assert_eq!(fourth, [1, 9]);
        assert!(d.is_empty());
    }

    #[test]
    fn one_members_deliveries_can_be_taken_ahead_of_the_rest() {
        let mut d = Deliveries::default();
        let (a, b) = (Bytes::from_static(b"a"), Bytes::from_static(b"b"));
        for (slot, f) in [(1, &a), (2, &a), (1, &b), (3, &b)] {
            d.push(slot, 0, f);
        }
        assert_eq!(frames(&d.take_for(1)), [(1, &b"a"[..]), (1, b"b")]);
        assert_eq!(frames(&d.take_slice(10)), [(2, &b"a"[..]), (3, b"b")]);
    }

    #[test]
    fn frames_are_shared_not_copied() {
        let mut d = Deliveries::default();
        let f = Bytes::from(vec![7u8; 1000]);
        for slot in 0..100 {
            d.push(slot, 0, &f);
        }
        let slice = d.take_slice(100);
        assert!(slice.iter().all(|o| o.frame.as_ptr() == f.as_ptr()));
    }
}
