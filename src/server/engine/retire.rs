//! Asking connections to leave at a pace the clients' reconnects can bear:
//! a paced drain ([`Drain`]: shutdown with `--drain-period`, or the
//! connections a hand-off cannot move) and connection aging ([`Aging`]:
//! `--max-connection-age`). Each connection asked goes through its life
//! machine (`Signal::Retire`: 1012 with a reconnect hint, then the usual
//! graceful finish), so how it ends is decided in one place.

use std::time::{Duration, Instant};

use crate::server::handler::Handler;
use crate::server::life::{CloseReason, Signal};
use crate::ws::mask::random_u64;

use super::aging::Aging;
use super::drain::Drain;
use super::transport::Transport;
use super::Engine;

impl<H: Handler, T: Transport> Engine<H, T> {
    /// Closes `conns` (slot, generation) at a steady pace over `period`, in
    /// random order, each told 1012 with a reconnect hint (counted as
    /// `restart`); those that end on their own first are skipped. Replaces
    /// a drain under way (pass it its connections again to keep them).
    pub(crate) fn begin_paced_drain(&mut self, conns: Vec<(u32, u32)>, period: Duration) {
        let drain = Drain::new(conns, period, Instant::now(), random_u64);
        self.env.stats.drain_remaining.set(drain.remaining() as u64);
        self.retiring.drain = Some(drain);
    }

    /// Every live connection, for a drain of them all.
    pub(super) fn all_conns(&self) -> Vec<(u32, u32)> {
        self.table.conns.iter().map(|(slot, conn)| (slot as u32, conn.generation)).collect()
    }

    /// Starts the age clock of a connection that just opened.
    pub(super) fn start_aging(&mut self, slot: usize) {
        if let Some(aging) = &mut self.retiring.aging {
            let generation = self.table.conns[slot].generation;
            aging.opened(slot as u32, generation, Instant::now(), random_u64());
        }
    }

    /// When the next paced close is owed, if any.
    pub(super) fn next_retire_due(&self) -> Option<Instant> {
        let drain = self.retiring.drain.as_ref().and_then(Drain::next_due);
        let aged = if self.shutdown_deadline.is_none() {
            self.retiring.aging.as_ref().and_then(Aging::next_due)
        } else {
            None
        };
        match (drain, aged) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    /// Asks the connections whose turn has come to leave: the drain's
    /// share by `now`, and aged ones within the pace (not while shutting
    /// down: the shutdown decides then).
    pub(super) fn retire_due(&mut self, now: Instant) {
        let mut retiring = std::mem::take(&mut self.scratch.retiring);
        if let Some(drain) = &mut self.retiring.drain {
            retiring.extend(drain.due(now));
            self.env.stats.drain_remaining.set(drain.remaining() as u64);
            if drain.is_done() {
                self.retiring.drain = None;
            }
            let asked = self.retire(&retiring, CloseReason::Restart);
            self.env.stats.drained_by_drain.add(asked);
            retiring.clear();
        }
        if let (Some(aging), None) = (&mut self.retiring.aging, self.shutdown_deadline) {
            let table = &self.table;
            aging.compact(table.conns.len(), |slot, generation| table.is_live(slot as usize, generation));
            aging.due(now, |slot, generation| table.is_live(slot as usize, generation), &mut retiring);
            let asked = self.retire(&retiring, CloseReason::MaxAge);
            self.env.stats.drained_by_age.add(asked);
            retiring.clear();
        }
        self.scratch.retiring = retiring;
    }

    /// Signals `Retire(why)` to each connection still live and not already
    /// ending; how many were asked.
    pub(super) fn retire(&mut self, conns: &[(u32, u32)], why: CloseReason) -> u64 {
        let mut asked = 0;
        for &(slot, generation) in conns {
            let slot = slot as usize;
            if self.is_live(slot, generation) && !self.table.conns[slot].stage.is_ending() {
                asked += 1;
                self.signal(slot, Signal::Retire(why));
            }
        }
        asked
    }
}
