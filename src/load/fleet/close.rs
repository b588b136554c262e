//! How connections leave the fleet: a close the client begins, a failure
//! before the 101, a connection the server broke, and removal, which keeps
//! the live and open counts right whatever state a connection was in.

use std::time::Duration;

use super::client::State;
use super::Fleet;

/// How long a close handshake (ours or the server's) may take before the
/// connection is dropped.
pub(super) const CLOSE_TIMEOUT: Duration = Duration::from_secs(5);

impl Fleet<'_> {
    /// Removes a connection, keeping the live/open counts right.
    pub(super) fn remove(&mut self, slot: usize) {
        self.wheel.remove(&mut self.table, slot as u32);
        self.codecs.forget(slot);
        let c = self.table.remove(slot);
        match c.state {
            State::Connecting | State::Handshaking => self.tally.live -= 1,
            State::Open => {
                self.tally.live -= 1;
                self.tally.open -= 1;
            }
            State::Closing | State::Draining => {}
        }
    }

    /// A connection failed before its 101, for `reason`.
    pub(super) fn fail(&mut self, slot: usize, reason: &str) {
        self.tally.count_failure(reason);
        self.remove(slot);
    }

    /// The connection broke: a failure before the 101, a server-side close
    /// while open, nothing while we were closing.
    pub(super) fn lost(&mut self, slot: usize, reason: &str) {
        match self.table[slot].state {
            State::Connecting | State::Handshaking => self.fail(slot, reason),
            State::Open => {
                self.tally.count_server_close(if reason == "reset" { "reset".into() } else { "dropped".into() });
                self.remove(slot);
            }
            State::Closing | State::Draining => self.remove(slot),
        }
    }

    /// Removes a connection after a protocol failure (already counted).
    pub(super) fn remove_counted(&mut self, slot: usize) {
        if self.table[slot].state == State::Open {
            self.tally.live -= 1;
            self.tally.open -= 1;
            self.table[slot].state = State::Draining;
        }
        self.remove(slot);
    }

    /// The server's close frame arrived: counted if the connection was
    /// open; it drains until the server's FIN, for a while at most.
    pub(super) fn closed_by_server(&mut self, slot: usize, code: Option<u16>) {
        if self.table[slot].state == State::Open {
            let code = code.map_or("close_no_code".to_string(), |c| format!("close_{c}"));
            self.tally.count_server_close(code);
            self.tally.live -= 1;
            self.tally.open -= 1;
        }
        self.table[slot].state = State::Draining;
        let deadline = self.wheel.now() + self.wheel.ticks(CLOSE_TIMEOUT);
        self.wheel.schedule(&mut self.table, slot as u32, deadline);
    }

    /// Begins closing up to `n` open connections (and drops connecting
    /// ones when `n` is `usize::MAX`: everything).
    pub(crate) fn close_clients(&mut self, n: usize) {
        let all = n == usize::MAX;
        let mut chosen = Vec::new();
        for (slot, c) in self.table.iter() {
            if chosen.len() >= n {
                break;
            }
            if c.state == State::Open || (all && matches!(c.state, State::Connecting | State::Handshaking)) {
                chosen.push(slot);
            }
        }
        for slot in chosen {
            if self.table[slot].state == State::Open {
                self.begin_close(slot);
            } else {
                self.remove(slot);
            }
        }
    }

    /// Sends our close frame on the open connection in `slot`; it no
    /// longer counts toward the plan.
    pub(crate) fn begin_close(&mut self, slot: usize) {
        let c = &mut self.table[slot];
        c.session.write_close(&mut self.out, 1000, "load done");
        c.state = State::Closing;
        self.tally.live -= 1;
        self.tally.open -= 1;
        let deadline = self.wheel.now() + self.wheel.ticks(CLOSE_TIMEOUT);
        self.wheel.schedule(&mut self.table, slot as u32, deadline);
        self.flush(slot);
    }

    /// Drops every connection left (after the wind-down's deadline).
    pub(crate) fn drop_all(&mut self) {
        let leftover: Vec<usize> = self.table.iter().map(|(s, _)| s).collect();
        for slot in leftover {
            self.remove(slot);
        }
    }
}
