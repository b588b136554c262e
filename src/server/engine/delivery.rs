//! Room deliveries: a publication is owed to each member on this loop (12
//! bytes each; the frame lives once, in `Deliveries`' arena) and written at
//! the end of the pass, a slice of members at a time, one write per member
//! of every frame it is owed.

use crate::server::handler::Handler;
use crate::server::life::Signal;
use crate::server::pubsub::fanout::{Deliveries, Owed};
use crate::server::pubsub::publication::Publication;
use crate::ws::compression::Deflaters;
use crate::ws::frame::FrameHead;
use crate::ws::Session;

use super::conn::{Conn, OWED};
use super::output::{write_via, Seal};
use super::transport::{Part, Transport};
use super::{Engine, DELIVERY_SLICE};

impl<H: Handler, T: Transport> Engine<H, T> {
    /// Owes the publishes made while handling a connection to this loop's
    /// other members of each room.
    pub(crate) fn deliver_local(&mut self) {
        for p in std::mem::take(&mut self.fanout.local) {
            match &p.room {
                Some(room) => {
                    self.deliver(room, &p.frame, Some(p.skip));
                }
                None => self.deliver_to_all(&p.frame, Some(p.skip)),
            }
        }
    }

    /// Owes a publication to every member of `room` on this loop (but
    /// `skip`), each the frame its terms call for (encoded once, shared);
    /// `write_owed` writes it at the end of the pass.
    /// Returns how many members it was owed to.
    pub(crate) fn deliver(&mut self, room: &str, frame: &Publication, skip: Option<u32>) -> u64 {
        let table = &mut self.table;
        let mut delivered = 0u64;
        for slot in table.rooms.members(room).filter(|m| Some(*m) != skip) {
            let conn = &mut table.conns[slot as usize];
            delivered += owe(&mut self.fanout.owed, &mut table.deflaters, slot, conn, frame) as u64;
        }
        self.env.stats.messages_sent.add(delivered);
        self.env.stats.room_delivered.add(delivered);
        delivered
    }

    /// Owes a publication to every open connection of this loop (but `skip`).
    pub(crate) fn deliver_to_all(&mut self, frame: &Publication, skip: Option<u32>) {
        let table = &mut self.table;
        let mut delivered = 0u64;
        for (slot, conn) in table.conns.iter_mut().filter(|(s, _)| Some(*s as u32) != skip) {
            delivered += owe(&mut self.fanout.owed, &mut table.deflaters, slot as u32, conn, frame) as u64;
        }
        self.env.stats.messages_sent.add(delivered);
        self.env.stats.room_delivered.add(delivered);
    }

    /// Writes what the connection in `slot` is owed, ahead of its turn in
    /// the round: its replies to new input must not overtake them.
    pub(crate) fn write_owed_ahead(&mut self, slot: usize) {
        // `owed_slice` is free here: only `write_owed` holds it, and no
        // input is read while it runs.
        let mut owed = std::mem::take(&mut self.scratch.owed_slice);
        self.fanout.owed.take_for(slot as u32, &mut owed);
        if !owed.is_empty() {
            self.write_owed_to(&owed);
        }
        owed.clear();
        self.scratch.owed_slice = owed;
    }

    /// Writes a slice of what members are owed: one write per member of
    /// every frame it is owed, shared, behind its backlog.
    pub(crate) fn write_owed(&mut self) {
        if self.fanout.owed.is_empty() {
            return;
        }
        let mut slice = std::mem::take(&mut self.scratch.owed_slice);
        self.fanout.owed.take_slice(DELIVERY_SLICE, &mut slice);
        for owed in slice.chunk_by(|a, b| a.slot == b.slot) {
            self.write_owed_to(owed);
        }
        slice.clear();
        self.scratch.owed_slice = slice;
        self.fanout.owed.release_frames();
    }

    /// A member whose earlier backlog is still over the cap once the kernel
    /// has taken what it can is cut off as a slow consumer; the others are
    /// not held back. A member that keeps reading takes any one publish,
    /// whatever its size.
    fn write_owed_to(&mut self, owed: &[Owed]) {
        let slot = owed[0].slot as usize;
        let Some(conn) = self.table.conns.get_mut(slot) else { return };
        conn.flags &= !OWED;
        if !conn.session.can_send() || conn.stage.is_ending() {
            return;
        }
        let generation = conn.generation;
        let arena = &self.fanout.owed;
        let mut frames: Vec<Part<'_>> = Vec::new();
        let one;
        let parts: &[Part<'_>] = if let [single] = owed {
            // The common case, one frame: no list to allocate.
            let frame = arena.frame(single.frame);
            if single.generation != generation || frame.is_empty() {
                return;
            }
            one = [Part::Share(frame)];
            &one
        } else {
            let live = owed.iter().filter(|o| o.generation == generation).map(|o| arena.frame(o.frame));
            frames.extend(live.filter(|f| !f.is_empty()).map(Part::Share));
            if frames.is_empty() {
                return;
            }
            &frames
        };
        // A connection with its own deflate context gets each frame
        // compressed for it, now: in the order it goes on the wire.
        let own;
        let mine;
        let deflaters = &mut self.table.deflaters;
        let parts: &[Part<'_>] = if deflaters.has_own(slot as u32) {
            own = recompressed(deflaters, slot as u32, &conn.session, parts);
            mine = [Part::Copy(&own)];
            &mine
        } else {
            parts
        };
        let before = self.io.queued(conn, slot);
        self.env.stats.room_writes.add(1);
        let seal = Seal::of(&mut self.table.tls, &mut self.scratch.sealed, slot);
        match write_via(&mut self.io, conn, slot, parts, &mut self.pool, &self.env.stats, seal) {
            Ok(earlier_unsent) => {
                self.signal(slot, Signal::Published { earlier_unsent });
                let still_serving = self.table.conns.get(slot).is_some_and(|c| !c.stage.is_ending());
                if still_serving && earlier_unsent < before {
                    self.signal(slot, Signal::Progress);
                }
            }
            Err(reason) => self.signal(slot, Signal::Fault(reason)),
        }
    }
}

/// The frames `parts` compressed for a connection with a deflate context
/// of its own, in the order they go on the wire.
fn recompressed(deflaters: &mut Deflaters, slot: u32, session: &Session, parts: &[Part<'_>]) -> Vec<u8> {
    let mut out = Vec::new();
    for frame in parts.iter().map(Part::bytes) {
        if let Ok(Some(head)) = FrameHead::decode(frame) {
            let payload = &frame[head.header_len as usize..];
            deflaters.write(slot, session, &mut out, head.opcode, payload);
        }
    }
    out
}

/// Owes `frame` to the connection in `slot` if it can still receive: the
/// frame its deflate terms call for, interned once in the arena. True if
/// it was owed.
#[inline]
fn owe(owed: &mut Deliveries, deflaters: &mut Deflaters, slot: u32, conn: &mut Conn, frame: &Publication) -> bool {
    if !conn.session.can_send() || conn.stage.is_ending() {
        return false;
    }
    let window = deflaters.shared_window(slot, &conn.session);
    let id = owed.intern(frame.frame_for(window, deflaters));
    owed.push(slot, conn.generation, id);
    conn.flags |= OWED;
    true
}
