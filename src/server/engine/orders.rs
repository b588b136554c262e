//! The admin API's orders (`pubsub/orders.rs`), carried out by one loop on
//! its own connections and answered: close some connections with a code
//! and a reason, deliver a publish, count and list rooms and members.
//!
//! A user's connections are found in the loop's identity table (`--jwt-key`:
//! the token's `sub`); without identities no connection is any user's.
//!
//! A kicked connection goes the way of an application's `ctx.close`: its
//! close frame is written behind whatever it is owed, and its stage is
//! told the session went from open to closing, so the close timeout bounds
//! the rest. Only open connections that are not already ending are kicked
//! (one mid-handshake has no room and no user yet), and none while the
//! loop is frozen for a live hand-off (the connection may be moving).

use crate::server::handler::Handler;
use crate::server::life::Signal;
use crate::server::pubsub::orders::{Answer, Ask, Kick, Order, Target};
use crate::ws::Phase;

use super::transport::Transport;
use super::Engine;

impl<H: Handler, T: Transport> Engine<H, T> {
    /// Carries out `order` and sends the answer, if anyone waits for it.
    pub(crate) fn take_order(&mut self, order: Order) {
        let answer = match order.ask {
            Ask::Kick(kick) => Answer { count: self.kick(&kick), ..Answer::default() },
            Ask::Publish { room, frame } => Answer { count: self.deliver(&room, &frame, None), ..Answer::default() },
            Ask::Rooms { after, limit } => {
                let (rooms, more) = self.table.rooms.counts(after.as_deref(), limit);
                Answer { rooms, more, ..Answer::default() }
            }
            Ask::Room { name, limit } => self.list(self.table.rooms.members(&name).collect(), limit),
            Ask::User { name, limit } => self.list(self.table.identities.slots_of(&name).collect(), limit),
        };
        if let Some(reply) = order.reply {
            // The asker may have given up waiting: nothing to do then.
            let _ = reply.send(answer);
        }
    }

    /// Closes this loop's open connections that `kick` names; how many.
    fn kick(&mut self, kick: &Kick) -> u64 {
        if self.is_frozen() {
            log::warn!("loop {}: a live hand-off is under way; admin kick of {:?} skipped", self.env.id, kick.target());
            return 0;
        }
        let slots: Vec<u32> = match kick.target() {
            &Target::Conn { loop_id, slot, generation } => {
                let here = loop_id == self.env.id && self.is_live(slot as usize, generation);
                if here {
                    vec![slot]
                } else {
                    Vec::new()
                }
            }
            Target::Room(name) => self.table.rooms.members(name).collect(),
            Target::User(name) => self.table.identities.slots_of(name).collect(),
        };
        let closed =
            slots.into_iter().map(|slot| self.kick_one(slot as usize, kick.code(), kick.reason()) as u64).sum();
        if closed > 0 {
            // One line per order and loop, however large the room.
            log::info!(
                "loop {}: closed {closed} connections ({}) by the admin API: {:?}",
                self.env.id,
                kick.code(),
                kick.target()
            );
        }
        closed
    }

    /// Writes the close frame and starts the close handshake, as
    /// `ctx.close` does; false if the connection is not open or already
    /// ending.
    fn kick_one(&mut self, slot: usize, code: u16, reason: &str) -> bool {
        let conn = &mut self.table.conns[slot];
        if conn.stage.is_ending() || conn.session.phase() != Phase::Open {
            return false;
        }
        conn.session.write_close(&mut self.scratch.out, code, reason);
        match self.flush(slot) {
            Ok(_) => self.signal(slot, Signal::Handled { before: Phase::Open, after: Phase::CloseSent }),
            Err(fault) => self.signal(slot, Signal::Fault(fault)),
        }
        true
    }

    /// The count of `slots` and the first `limit` of them as connection ids.
    fn list(&self, slots: Vec<u32>, limit: usize) -> Answer {
        let id = self.env.id;
        let conns = slots.iter().take(limit).map(|&s| (id, s, self.table.conns[s as usize].generation)).collect();
        Answer { count: slots.len() as u64, conns, more: slots.len() > limit, ..Answer::default() }
    }
}
