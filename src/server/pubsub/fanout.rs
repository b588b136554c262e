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
//! Frames live once, in an arena: a delivery names its frame by a 4-byte
//! id, so owing a frame to a member copies 12 bytes and touches no shared
//! counter. Every delivery of a frame is owed in the interval between two
//! rounds (an id is reused only for deliveries owed after the current round
//! began), so once a round is done, the frames interned before it began
//! are no longer named by anyone and are freed.
//!
//! Size: 12 bytes per owed delivery (slot, generation, frame id), only
//! while it is owed; one `Bytes` per distinct frame.

use std::collections::VecDeque;

use bytes::Bytes;

/// A frame in the arena. Ids grow (wrapping) as frames are interned.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FrameId(u32);

impl FrameId {
    /// What an entry taken out of order names: nothing to send.
    const TAKEN: FrameId = FrameId(u32::MAX);
}

/// One delivery owed: a frame in the arena for a connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Owed {
    /// The member's slot.
    pub slot: u32,
    /// Its generation when the delivery was owed (a reused slot is someone
    /// else, who is owed nothing).
    pub generation: u32,
    /// The frame, shared by every member that gets it.
    pub frame: FrameId,
}

/// Unsorted entries that `take_for` scans; past this many, it sorts them.
const TAIL_SCAN: usize = 4096;

/// The deliveries a loop owes. `owed[start..sorted]` is the current round,
/// sorted by member starting at the cursor; `owed[sorted..]` arrived since
/// and waits for the next round, of which `owed[sorted..tail_sorted]` is
/// sorted by slot (for `take_for`) and the rest not yet. Every entry is
/// sorted into a round once, whatever the backlog, so a pass costs what it
/// writes, not what is waiting.
#[derive(Debug, Default)]
pub struct Deliveries {
    owed: Vec<Owed>,
    /// The first entry not yet taken.
    start: usize,
    /// The end of the current round's sorted entries.
    sorted: usize,
    /// The end of the entries since the round began that are sorted by slot.
    tail_sorted: usize,
    /// Where the next round starts: the slot after the last member served.
    cursor: u32,
    /// Where the current round started (its sort key's origin).
    round_cursor: u32,
    /// Scratch of `begin_round`'s counting sort, kept to allocate nothing.
    counts: Vec<u32>,
    spare: Vec<Owed>,
    /// The arena: `frames[i]` is frame `first_frame + i`.
    frames: VecDeque<Bytes>,
    first_frame: u32,
    /// The first frame interned since the current round began: the round
    /// names only frames before it.
    round_frames: u32,
    /// The last frame interned since the round began, by address and
    /// length, so that a publish owed to many members is interned once.
    last: Option<(usize, usize, FrameId)>,
}

impl Deliveries {
    /// Puts `frame` in the arena (once for the many members it is owed to
    /// in a row) and returns its id for [`push`](Self::push).
    pub fn intern(&mut self, frame: &Bytes) -> FrameId {
        let key = (frame.as_ptr() as usize, frame.len());
        if let Some((ptr, len, id)) = self.last {
            if (ptr, len) == key {
                return id;
            }
        }
        if self.next_frame() == FrameId::TAKEN.0 {
            // The sentinel is never a frame's id: an empty frame takes it.
            self.frames.push_back(Bytes::new());
        }
        let id = FrameId(self.next_frame());
        self.frames.push_back(frame.clone());
        self.last = Some((key.0, key.1, id));
        id
    }

    fn next_frame(&self) -> u32 {
        self.first_frame.wrapping_add(self.frames.len() as u32)
    }

    /// Frame `id`; empty for an entry taken out of order.
    pub fn frame(&self, id: FrameId) -> &Bytes {
        static NONE: Bytes = Bytes::new();
        if id == FrameId::TAKEN {
            return &NONE;
        }
        let index = id.0.wrapping_sub(self.first_frame) as usize;
        debug_assert!(index < self.frames.len(), "frame {id:?} freed while owed");
        self.frames.get(index).unwrap_or(&NONE)
    }

    /// Owes frame `frame` (from [`intern`](Self::intern)) to the connection
    /// in `slot`.
    pub fn push(&mut self, slot: u32, generation: u32, frame: FrameId) {
        self.owed.push(Owed { slot, generation, frame });
    }

    /// Takes everything the connection in `slot` is owed, in the order
    /// owed, into `into` (so that its replies to new input overtake none of
    /// it): its group in the current round and in the sorted part of the
    /// entries since (binary searches), then its share of the few unsorted
    /// ones; past [`TAIL_SCAN`] of those they are sorted first, so a storm
    /// of members closing under a large backlog costs a sort per
    /// `TAIL_SCAN` new entries, not a scan each. Taken entries stay in
    /// place, naming no frame, so nothing moves. Their frames stay in the
    /// arena until the next round begins.
    pub fn take_for(&mut self, slot: u32, into: &mut Vec<Owed>) {
        if self.owed.len() - self.tail_sorted > TAIL_SCAN {
            self.sort_from(self.sorted, 0);
            self.tail_sorted = self.owed.len();
        }
        let round = group(&self.owed, self.start, self.sorted, slot, self.round_cursor);
        let sorted_tail = group(&self.owed, self.sorted, self.tail_sorted, slot, 0);
        for i in round.chain(sorted_tail).chain(self.tail_sorted..self.owed.len()) {
            let o = &mut self.owed[i];
            if o.slot == slot && o.frame != FrameId::TAKEN {
                into.push(*o);
                o.frame = FrameId::TAKEN;
            }
        }
    }

    /// Entries owed, not yet taken.
    pub fn len(&self) -> usize {
        self.owed.len() - self.start
    }

    /// True if nothing is owed.
    pub fn is_empty(&self) -> bool {
        self.start == self.owed.len()
    }

    /// Frees every frame once nothing is owed (the caller has written what
    /// it took): a large publish does not outlive its deliveries.
    pub fn release_frames(&mut self) {
        if self.is_empty() {
            self.first_frame = self.next_frame();
            self.frames.clear();
            self.round_frames = self.first_frame;
            self.last = None;
        }
    }

    /// Frees the scratch a burst of fan-out left, if nothing is owed now.
    pub fn shrink_to_fit(&mut self) {
        if self.is_empty() {
            self.release_frames();
            self.owed = Vec::new();
            self.spare = Vec::new();
            self.counts = Vec::new();
            self.frames = VecDeque::new();
            self.start = 0;
            self.sorted = 0;
        }
    }

    /// Takes what at most `members` members are owed into `into`, grouped
    /// by member (each member's frames in the order owed). A round serves
    /// every member that was owed something when it began, starting after
    /// the last member served, so every member is reached in turn. The
    /// frames stay in the arena at least until the next call.
    pub fn take_slice(&mut self, members: usize, into: &mut Vec<Owed>) {
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
        into.extend_from_slice(&self.owed[self.start..end]);
        self.start = end;
        if self.is_empty() {
            self.owed.clear();
            (self.start, self.sorted, self.tail_sorted) = (0, 0, 0);
        }
    }

    /// Sorts everything owed so far into a round that starts at the
    /// cursor. The frames only the finished round named are freed.
    fn begin_round(&mut self) {
        self.owed.drain(..self.start);
        self.start = 0;
        let done = self.round_frames.wrapping_sub(self.first_frame) as usize;
        self.frames.drain(..done.min(self.frames.len()));
        self.first_frame = self.round_frames;
        self.round_frames = self.next_frame();
        self.last = None;
        self.round_cursor = self.sort_from(0, self.cursor);
        (self.sorted, self.tail_sorted) = (self.owed.len(), self.owed.len());
    }

    /// Sorts `owed[from..]` by slot, starting at slot `origin` and wrapping
    /// around: a counting sort over slots (dense small integers), linear
    /// and stable (a member's frames keep their order), through reused
    /// buffers. Returns the origin used (clamped past the largest slot).
    fn sort_from(&mut self, from: usize, origin: u32) -> u32 {
        let entries = &self.owed[from..];
        let Some(max) = entries.iter().map(|o| o.slot as usize).max() else {
            return origin;
        };
        self.counts.clear();
        self.counts.resize(max + 1, 0);
        for o in entries {
            self.counts[o.slot as usize] += 1;
        }
        // Each slot's first position: from the origin up, then from 0 up
        // to the origin.
        let origin = (origin as usize).min(max + 1);
        let mut at = 0u32;
        for slot in (origin..=max).chain(0..origin) {
            let n = self.counts[slot];
            self.counts[slot] = at;
            at += n;
        }
        self.spare.clear();
        self.spare.resize(entries.len(), Owed { slot: 0, generation: 0, frame: FrameId::TAKEN });
        for o in entries {
            let at = &mut self.counts[o.slot as usize];
            self.spare[*at as usize] = *o;
            *at += 1;
        }
        self.owed[from..].copy_from_slice(&self.spare);
        origin as u32
    }
}

/// The positions of `slot`'s entries in `owed[from..to]`, which is sorted
/// by slot starting at `origin`.
fn group(owed: &[Owed], from: usize, to: usize, slot: u32, origin: u32) -> std::ops::Range<usize> {
    let sorted = &owed[from..to];
    let key = |o: &Owed| o.slot.wrapping_sub(origin);
    let first = sorted.partition_point(|o| key(o) < slot.wrapping_sub(origin));
    let last = first + sorted[first..].iter().take_while(|o| o.slot == slot).count();
    from + first..from + last
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Owes `frame` to each of `slots` (generation 0), interned once.
    fn owe(d: &mut Deliveries, slots: &[u32], frame: &Bytes) {
        let id = d.intern(frame);
        for &slot in slots {
            d.push(slot, 0, id);
        }
    }

    /// The deliveries in `taken`, without entries taken out of order.
    fn frames(d: &Deliveries, taken: &[Owed]) -> Vec<(u32, Vec<u8>)> {
        taken.iter().filter(|o| o.frame != FrameId::TAKEN).map(|o| (o.slot, d.frame(o.frame).to_vec())).collect()
    }

    fn slice(d: &mut Deliveries, members: usize) -> Vec<(u32, Vec<u8>)> {
        let mut taken = Vec::new();
        d.take_slice(members, &mut taken);
        frames(d, &taken)
    }

    fn slots(taken: &[(u32, Vec<u8>)]) -> Vec<u32> {
        taken.iter().map(|(slot, _)| *slot).collect()
    }

    fn at(slot: u32, bytes: &[u8]) -> (u32, Vec<u8>) {
        (slot, bytes.to_vec())
    }

    #[test]
    fn groups_by_member_and_keeps_each_members_order() {
        let mut d = Deliveries::default();
        owe(&mut d, &[3, 1, 2], &Bytes::from_static(b"a"));
        owe(&mut d, &[2, 3, 1], &Bytes::from_static(b"b"));
        let taken = slice(&mut d, 10);
        assert_eq!(taken, [at(1, b"a"), at(1, b"b"), at(2, b"a"), at(2, b"b"), at(3, b"a"), at(3, b"b")]);
        assert!(d.is_empty());
    }

    #[test]
    fn a_budget_slices_and_the_next_slice_starts_after_the_last_member() {
        let mut d = Deliveries::default();
        let fr = Bytes::from_static(b"f");
        owe(&mut d, &(0..10).collect::<Vec<_>>(), &fr);
        assert_eq!(slots(&slice(&mut d, 4)), [0, 1, 2, 3]);
        // More is owed meanwhile, to members served and not yet served.
        owe(&mut d, &[1, 9], &fr);
        // Taking one member's share keeps the round in order.
        owe(&mut d, &[6], &Bytes::from_static(b"g"));
        let mut six = Vec::new();
        d.take_for(6, &mut six);
        assert_eq!(frames(&d, &six), [at(6, b"f"), at(6, b"g")]);
        // (6 was emptied: it still counts as one of the four.)
        assert_eq!(slots(&slice(&mut d, 4)), [4, 5, 7]);
        // The round ends with 9; what came meanwhile is the next round, from
        // after 9, wrapping around.
        assert_eq!(slots(&slice(&mut d, 4)), [8, 9]);
        assert_eq!(slots(&slice(&mut d, 4)), [1, 9]);
        assert!(d.is_empty());
    }

    #[test]
    fn one_members_deliveries_can_be_taken_ahead_of_the_rest() {
        let mut d = Deliveries::default();
        let (a, b) = (Bytes::from_static(b"a"), Bytes::from_static(b"b"));
        owe(&mut d, &[1, 2], &a);
        owe(&mut d, &[1, 3], &b);
        let mut one = Vec::new();
        d.take_for(1, &mut one);
        assert_eq!(frames(&d, &one), [at(1, b"a"), at(1, b"b")]);
        // Taken twice: nothing the second time.
        one.clear();
        d.take_for(1, &mut one);
        assert!(one.is_empty());
        assert_eq!(slice(&mut d, 10), [at(2, b"a"), at(3, b"b")]);
    }

    #[test]
    fn a_member_gets_all_it_is_owed_ahead_even_past_a_large_backlog() {
        // A round under way, then more than TAIL_SCAN entries owed since:
        // a member closing now must still get every one, in order.
        let mut d = Deliveries::default();
        let members: Vec<u32> = (0..100).collect();
        owe(&mut d, &members, &Bytes::from_static(b"r"));
        assert_eq!(slots(&slice(&mut d, 10)), (0..10).collect::<Vec<_>>());
        let publishes = TAIL_SCAN / members.len() + 2;
        let published: Vec<Bytes> = (0..publishes).map(|i| Bytes::from(format!("p{i}"))).collect();
        for frame in &published {
            owe(&mut d, &members, frame);
        }
        let expected = |slot: u32| {
            let mut e = vec![at(slot, b"r")];
            e.extend(published.iter().map(|f| (slot, f.to_vec())));
            e
        };
        for slot in [57, 3, 99] {
            let mut taken = Vec::new();
            d.take_for(slot, &mut taken);
            // 3 was served this round: it is owed only what came since.
            let want = if slot == 3 { expected(slot)[1..].to_vec() } else { expected(slot) };
            assert_eq!(frames(&d, &taken), want, "member {slot}");
        }
        // Newer entries after the sort are found too, after the sorted ones.
        owe(&mut d, &[57], &Bytes::from_static(b"late"));
        let mut taken = Vec::new();
        d.take_for(57, &mut taken);
        assert_eq!(frames(&d, &taken), [at(57, b"late")]);
        // The rest of the round and the next are untouched by all this.
        let mut rest = Vec::new();
        while !d.is_empty() {
            rest.extend(slice(&mut d, 1000));
        }
        let per_member = |slot: u32| rest.iter().filter(|(s, _)| *s == slot).count();
        assert_eq!((per_member(57), per_member(3), per_member(99)), (0, 0, 0));
        assert_eq!(per_member(10), 1 + publishes);
        // Members 10..100 but 57 and 99 had the round's frame left; all but
        // the three taken had every publish left.
        assert_eq!(rest.len(), 88 + 97 * publishes);
    }

    #[test]
    fn a_frame_owed_to_many_is_interned_once_and_shared() {
        let mut d = Deliveries::default();
        let frame = Bytes::from(vec![7u8; 1000]);
        for slot in 0..100 {
            let id = d.intern(&frame);
            d.push(slot, 0, id);
        }
        assert_eq!(d.frames.len(), 1);
        let mut taken = Vec::new();
        d.take_slice(100, &mut taken);
        assert!(taken.iter().all(|o| d.frame(o.frame).as_ptr() == frame.as_ptr()));
    }

    #[test]
    fn frames_are_freed_once_no_round_names_them() {
        let mut d = Deliveries::default();
        let (a, b) = (Bytes::from(vec![1u8; 64]), Bytes::from(vec![2u8; 64]));
        owe(&mut d, &[0, 1, 2, 3], &a);
        assert_eq!(slice(&mut d, 2), [(0, a.to_vec()), (1, a.to_vec())]);
        // b is owed while the round that names a is under way.
        owe(&mut d, &[0, 5], &b);
        assert_eq!(slice(&mut d, 2), [(2, a.to_vec()), (3, a.to_vec())]);
        assert_eq!(d.frames.len(), 2, "a is freed when the next round begins, not before");
        assert_eq!(slice(&mut d, 2), [(5, b.to_vec()), (0, b.to_vec())]);
        assert_eq!(d.frames.len(), 1, "the round that named a is done");
        assert!(d.is_empty());
        d.release_frames();
        assert!(d.frames.is_empty(), "nothing owed: nothing kept");
        // Ids go on from where they were; the arena starts afresh.
        owe(&mut d, &[7], &a);
        assert_eq!(slice(&mut d, 10), [(7, a.to_vec())]);
    }

    #[test]
    fn a_frame_reinterned_after_a_round_began_gets_a_new_id() {
        // The same publication owed again in a later interval must not
        // reuse an id the arena frees with the earlier round.
        let mut d = Deliveries::default();
        let a = Bytes::from(vec![1u8; 64]);
        owe(&mut d, &[0, 1], &a);
        assert_eq!(slots(&slice(&mut d, 1)), [0]);
        owe(&mut d, &[2], &a);
        assert_eq!(slots(&slice(&mut d, 1)), [1]);
        assert_eq!(slice(&mut d, 1), [(2, a.to_vec())]);
    }

    #[test]
    fn ids_wrap_around_the_sentinel() {
        let mut d = Deliveries { first_frame: u32::MAX - 2, round_frames: u32::MAX - 2, ..Deliveries::default() };
        for (slot, byte) in (0..5u32).zip(b"vwxyz") {
            owe(&mut d, &[slot], &Bytes::from(vec![*byte; 8]));
        }
        let taken = slice(&mut d, 10);
        let got: Vec<u8> = taken.iter().map(|(_, bytes)| bytes[0]).collect();
        assert_eq!(got, b"vwxyz");
    }
}
