//! Room deliveries one loop owes its members, written at the end of the
//! pass: whatever a member is owed (several publishes, several rooms, from
//! this loop and from others) leaves in one `writev` of the shared frames,
//! never copied per member. So the cost per delivery falls as load rises:
//! publishes that pile up while a pass is busy ride in the same write.
//!
//! A very large room does not stall its loop: a pass serves at most a
//! budget of members, and the next pass starts after the last one served,
//! so every member is reached in turn and pings and echoes on the same loop
//! wait at most one slice.
//!
//! Size: 40 bytes per owed delivery (slot, generation, a shared `Bytes`),
//! only while it is owed.

use bytes::Bytes;

/// One delivery owed: a shared, already encoded frame for a connection.
#[derive(Debug, Clone)]
pub struct Owed {
    /// The member's slot.
    pub slot: u32,
    /// Its generation when the delivery was owed (a reused slot is someone
    /// else, who is owed nothing).
    pub generation: u32,
    /// The whole frame, shared by every member that gets it.
    pub frame: Bytes,
}

/// The deliveries a loop owes, in the order they were owed.
#[derive(Debug, Default)]
pub struct Deliveries {
    owed: Vec<Owed>,
    /// Where the next slice starts: the slot after the last member served.
    cursor: u32,
}

impl Deliveries {
    /// Owes `frame` to the connection in `slot`.
    pub fn push(&mut self, slot: u32, generation: u32, frame: &Bytes) {
        self.owed.push(Owed { slot, generation, frame: frame.clone() });
    }

    /// Takes what the connection in `slot` is owed, in order, wherever it is
    /// in the list (one pass over it).
    pub fn take_for(&mut self, slot: u32) -> Vec<Owed> {
        self.owed.extract_if(.., |o| o.slot == slot).collect()
    }

    /// True if nothing is owed.
    pub fn is_empty(&self) -> bool {
        self.owed.is_empty()
    }

    /// Takes what at most `members` members are owed, grouped by member
    /// (each member's frames in the order owed), starting with the first
    /// member at or after the cursor and wrapping around.
    pub fn take_slice(&mut self, members: usize) -> Vec<Owed> {
        let cursor = self.cursor;
        // Stable: a member's frames keep their order.
        self.owed.sort_by_key(|o| o.slot.wrapping_sub(cursor));
        let mut end = 0;
        let mut served = 0;
        while end < self.owed.len() && served < members {
            let slot = self.owed[end].slot;
            while end < self.owed.len() && self.owed[end].slot == slot {
                end += 1;
            }
            served += 1;
        }
        if end > 0 {
            self.cursor = self.owed[end - 1].slot.wrapping_add(1);
        }
        let rest = self.owed.split_off(end);
        std::mem::replace(&mut self.owed, rest)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frames(slice: &[Owed]) -> Vec<(u32, &[u8])> {
        slice.iter().map(|o| (o.slot, &o.frame[..])).collect()
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
        let first: Vec<u32> = d.take_slice(4).iter().map(|o| o.slot).collect();
        assert_eq!(first, [0, 1, 2, 3]);
        // More is owed meanwhile, to members served and not yet served.
        d.push(1, 0, &f);
        d.push(9, 0, &f);
        let second: Vec<u32> = d.take_slice(4).iter().map(|o| o.slot).collect();
        assert_eq!(second, [4, 5, 6, 7]);
        // Wraps around: 8 and 9 (twice) first, then 1 again.
        let third: Vec<u32> = d.take_slice(4).iter().map(|o| o.slot).collect();
        assert_eq!(third, [8, 9, 9, 1]);
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
