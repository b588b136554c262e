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
//! (one mid-handshake has no room and no user yet).
//!
//! A frozen loop (a live hand-off: its connections may be moving) carries
//! out no kick and no listing: it answers that it is frozen, and keeps a
//! kick from another host (nobody waits for it) until it serves again.

use crate::server::handler::Handler;
use crate::server::life::{CloseReason, Signal};
use crate::server::pubsub::orders::{Answer, Ask, Kick, Order, Target};
use crate::ws::Phase;

use super::transport::Transport;
use super::Engine;

/// Kicks from other hosts a frozen loop keeps for its thaw, at most.
pub(crate) const MAX_KEPT_KICKS: usize = 1024;

impl<H: Handler, T: Transport> Engine<H, T> {
    /// Carries out `order` and sends the answer, if anyone waits for it.
    pub(crate) fn take_order(&mut self, order: Order) {
        if self.is_frozen() && !matches!(order.ask, Ask::Publish { .. }) {
            return self.hold_order(order);
        }
        let answer = match order.ask {
            Ask::Kick(kick) => Answer { count: self.kick(&kick), ..Answer::default() },
            Ask::Publish { room, frame } => {
                let frozen = self.is_frozen();
                Answer { count: self.deliver(&room, &frame, None), frozen, ..Answer::default() }
            }
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

    /// A kick or a listing at a frozen loop does nothing now (the
    /// connections may be moving): the asker is told the loop is frozen
    /// (the API answers 503, retry), and a kick from another host, which
    /// nobody waits for, is kept for the thaw ([`MAX_KEPT_KICKS`] at most;
    /// past that, logged and counted as missed).
    fn hold_order(&mut self, order: Order) {
        match (order.ask, order.reply) {
            (_, Some(reply)) => {
                let _ = reply.send(Answer { frozen: true, ..Answer::default() });
            }
            (Ask::Kick(kick), None) if self.kept_kicks.len() < MAX_KEPT_KICKS => {
                self.env.stats.admin_kicks_kept.add(1);
                self.kept_kicks.push(kick);
            }
            (Ask::Kick(kick), None) => {
                self.env.stats.admin_kicks_missed.add(1);
                log::warn!(
                    "loop {}: {MAX_KEPT_KICKS} kicks from other hosts wait for a live hand-off's end already; {:?} missed",
                    self.env.id,
                    kick.target()
                );
            }
            // Only kicks come without a reply.
            (_, None) => {}
        }
    }

    /// Carries out the kicks kept while the loop was frozen, once it
    /// serves again (the hand-off done, broken off, or its adopted
    /// connections thawed).
    pub(crate) fn apply_kept_kicks(&mut self) {
        if self.is_frozen() || self.kept_kicks.is_empty() {
            return;
        }
        for kick in std::mem::take(&mut self.kept_kicks) {
            self.kick(&kick);
        }
    }

    /// Closes this loop's open connections that `kick` names; how many.
    fn kick(&mut self, kick: &Kick) -> u64 {
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

    /// Writes the operator's close frame, then finishes the connection
    /// through its life like any other the server ends (the frame drains,
    /// FIN, linger until the peer's EOF, all bounded by the close timeout),
    /// counted as `kicked`; false if it is not open or already ending.
    fn kick_one(&mut self, slot: usize, code: u16, reason: &str) -> bool {
        let conn = &mut self.table.conns[slot];
        if conn.stage.is_ending() || conn.session.phase() != Phase::Open {
            return false;
        }
        conn.session.write_close(&mut self.scratch.out, code, reason);
        let signal = match self.flush(slot) {
            Ok(_) => Signal::Fault(CloseReason::Kicked),
            Err(fault) => Signal::Fault(fault),
        };
        self.signal(slot, signal);
        true
    }

    /// The count of `slots` and the first `limit` of them as connection ids.
    fn list(&self, slots: Vec<u32>, limit: usize) -> Answer {
        let id = self.env.id;
        let conns = slots.iter().take(limit).map(|&s| (id, s, self.table.conns[s as usize].generation)).collect();
        Answer { count: slots.len() as u64, conns, more: slots.len() > limit, ..Answer::default() }
    }
}
