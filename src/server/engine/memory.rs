//! This loop's part of the memory budget (`server::budget`): it counts the
//! input its connections hold beyond a pooled buffer (large partial frames,
//! messages being assembled), and at the end of every pass acts on the
//! process's level:
//!
//! - under the soft mark: connections it stopped reading are read again;
//! - past the soft mark: it stops reading from its large input holders (the
//!   accept path refuses new connections meanwhile); one stopped for longer
//!   than `--send-timeout` (the time any peer may hold the server up) is
//!   shed as past the limit, each after its own wait;
//! - past the limit: it closes its largest holders, largest first, until
//!   what it freed brings the process under the soft mark: an unfinished
//!   message gets 1009, anything else 1013 ("try again later"). Only
//!   connections holding more than a pooled buffer of input, or more than
//!   `--max-backlog` queued of which some is their own, are candidates,
//!   ranked by what closing them frees (a member's share of a frame others
//!   owe too frees nothing): the polite are never shed.
//!
//! Each loop sheds against the whole process's excess, so two loops past
//! the limit at once may shed up to twice what was needed: the price of
//! not coordinating loops on the hot path.

use std::time::Instant;

use crate::server::budget::Level;
use crate::server::handler::Handler;
use crate::server::life::{CloseReason, Goodbye, Signal};

use super::conn::THROTTLED;
use super::transport::Transport;
use super::Engine;

impl<H: Handler, T: Transport> Engine<H, T> {
    /// Counts the input the connection in `slot` holds now (the bytes of
    /// its partial frame and of its assembly) if it is more than a pooled
    /// buffer; a pooled buffer is counted with the pool. Bytes, not
    /// capacity: a frame header reserves room for its whole length before
    /// the bytes come, and untouched room costs no memory, so a peer cannot
    /// make 16 KiB sent count as 16 MiB held. Cheap when the loop has no
    /// large holder: one comparison.
    pub(crate) fn count_input(&mut self, slot: usize) {
        let Some(conn) = self.table.conns.get(slot) else { return };
        let held = (conn.rbuf.len() + conn.assembly.len()) as u64;
        let large = if held > self.env.cfg.buffer_size as u64 { held } else { 0 };
        if large == 0 && self.holders.large.is_empty() {
            return;
        }
        let before = match large {
            0 => self.holders.large.remove(&(slot as u32)),
            n => self.holders.large.insert(slot as u32, n),
        };
        let stats = &self.env.stats;
        stats.input_bytes.add(large);
        stats.input_bytes.sub(before.unwrap_or(0));
    }

    /// Forgets the input a closing connection held.
    pub(crate) fn forget_input(&mut self, slot: usize) {
        if let Some(counted) = self.holders.large.remove(&(slot as u32)) {
            self.env.stats.input_bytes.sub(counted);
        }
    }

    /// Acts on the process's level (see the module docs).
    pub(crate) fn keep_to_budget(&mut self, now: Instant) {
        let budget = &self.env.shared.budget;
        if budget.limit() == 0 {
            return;
        }
        let (level, usage) = budget.refresh();
        let excess = usage.total().saturating_sub(budget.soft_mark());
        match level {
            Level::Under => self.read_throttled_again(),
            Level::Soft => {
                // Entries of connections gone since are dropped: a reused
                // slot is someone else, with a grace of its own.
                let table = &self.table;
                self.holders.throttled.retain(|&(slot, generation, _)| table.is_live(slot as usize, generation));
                self.throttle_holders(now);
                // Only those stopped for a whole send timeout: a holder
                // that came in late gets its own grace.
                let waited = now.checked_sub(self.env.cfg.send_timeout);
                let overdue = self.holders.throttled.iter().filter(|t| waited.is_some_and(|w| t.2 <= w));
                let overdue: Vec<u32> = overdue.map(|t| t.0).collect();
                if !overdue.is_empty() {
                    self.shed(excess, Some(&overdue));
                }
            }
            Level::Hard => {
                self.throttle_holders(now);
                self.shed(excess, None);
            }
        }
    }

    /// Stops reading from every large input holder not stopped yet.
    fn throttle_holders(&mut self, now: Instant) {
        for &slot in self.holders.large.keys() {
            let Some(conn) = self.table.conns.get_mut(slot as usize) else { continue };
            if !conn.has(THROTTLED) && !conn.stage.is_ending() {
                conn.flags |= THROTTLED;
                self.holders.throttled.push((slot, conn.generation, now));
                self.env.stats.budget_throttled.add(1);
            }
        }
    }

    /// Reads again from the connections stopped while over the soft mark.
    fn read_throttled_again(&mut self) {
        if self.holders.throttled.is_empty() {
            return;
        }
        for (slot, generation, _) in std::mem::take(&mut self.holders.throttled) {
            if self.is_live(slot as usize, generation) {
                self.table.conns[slot as usize].flags &= !THROTTLED;
                self.push_ready(slot as usize);
            }
        }
    }

    /// Closes this loop's largest holders, largest first, until they held
    /// `excess` bytes: of `only` if given (slots), else its large input
    /// holders and then its backlogs over the cap, each ranked by the bytes
    /// its close frees (its own, not frames it shares with others).
    fn shed(&mut self, excess: u64, only: Option<&[u32]>) {
        let large = &self.holders.large;
        let mut candidates: Vec<(u64, u32)> = match only {
            Some(slots) => slots.iter().filter_map(|s| large.get(s).map(|&n| (n, *s))).collect(),
            None => large.iter().map(|(&s, &n)| (n, s)).collect(),
        };
        if only.is_none() {
            let cap = self.env.cfg.max_backlog;
            let others = self.table.conns.iter().filter(|(s, _)| !large.contains_key(&(*s as u32)));
            let over_cap = others.filter(|&(s, c)| self.io.queued(c, s) > cap);
            let own = over_cap.map(|(s, c)| (self.io.queued(c, s) - self.io.shared_queued(c, s), s as u32));
            candidates.extend(own.filter(|&(n, _)| n > 0).map(|(n, s)| (n as u64, s)));
        }
        candidates.sort_unstable_by(|a, b| b.cmp(a));
        let mut freed = 0;
        for (held, slot) in candidates {
            if freed >= excess {
                break;
            }
            if self.table.conns.get(slot as usize).is_some_and(|c| !c.stage.is_ending()) {
                self.shed_one(slot as usize);
                freed += held;
            }
        }
    }

    /// Closes one holder: its input is freed now, and it is told why (1009
    /// for an unfinished message, else 1013) unless a backlog stands before
    /// the close frame, in which case it is closed at once.
    fn shed_one(&mut self, slot: usize) {
        let conn = &mut self.table.conns[slot];
        let unfinished = conn.session.is_assembling() || !conn.rbuf.is_empty();
        let goodbye = if unfinished { Goodbye::TooBig } else { Goodbye::TryAgainLater };
        conn.assembly = Vec::new();
        let rbuf = std::mem::take(&mut conn.rbuf);
        if rbuf.capacity() > 0 {
            // It came from the pool: give it back (the pool drops a grown one).
            self.pool.give(rbuf);
        }
        conn.flags &= !THROTTLED;
        self.count_input(slot);
        self.env.stats.budget_shed.add(1);
        log::debug!("loop {}: connection {slot} shed over the memory budget", self.env.id);
        if self.io.queued(&self.table.conns[slot], slot) > self.env.cfg.max_backlog {
            return self.close(slot, CloseReason::MemoryBudget);
        }
        self.signal(slot, Signal::OverBudget(goodbye));
        if self.table.conns.get(slot).is_some() {
            // Its input is drained from now on, and may wait in the socket.
            self.push_ready(slot);
        }
    }
}
