//! How connections leave the fleet: a close the client begins, a failure
//! before the 101, a connection the server broke, and removal, which keeps
//! the live and open counts right whatever state a connection was in.

use std::time::Duration;

use super::super::backoff::parse_hint;
use super::client::State;
use super::Fleet;

/// How long a close handshake (ours or the server's) may take before the
/// connection is dropped.
pub(super) const CLOSE_TIMEOUT: Duration = Duration::from_secs(5);

/// The close code a disconnect is counted under when the server's close
/// frame had none (RFC 6455, 7.4.1: no status received).
const NO_STATUS: u16 = 1005;
/// The close code a disconnect is counted under when the connection ended
/// without a close frame (EOF or reset: an abnormal closure).
const ABNORMAL: u16 = 1006;

impl Fleet<'_> {
    /// Removes a connection, keeping the live/open counts right.
    pub(super) fn remove(&mut self, slot: usize) {
        self.wheel.remove(&mut self.table, slot as u32);
        self.codecs.forget(slot);
        let c = self.table.remove(slot);
        if c.retry.is_some() {
            // A retry dropped before its 101 (the run or the plan is done with it).
            self.tally.never_back(1);
        }
        match c.state {
            State::Connecting | State::Handshaking => self.tally.live -= 1,
            State::Open => {
                self.tally.live -= 1;
                self.tally.open -= 1;
            }
            State::Closing | State::Draining => {}
        }
    }

    /// A connection failed before its 101, for `reason`: counted, or for
    /// a retry, retried later.
    pub(super) fn fail(&mut self, slot: usize, reason: &str) {
        match self.table[slot].retry.take() {
            Some(lost) => {
                self.remove(slot);
                self.retry_failed(*lost, reason);
            }
            None => {
                self.tally.count_failure(reason);
                self.remove(slot);
            }
        }
    }

    /// The connection broke: a failure before the 101, a server-side close
    /// while open (1006: no close frame), nothing while we were closing.
    pub(super) fn lost(&mut self, slot: usize, reason: &str) {
        match self.table[slot].state {
            State::Connecting | State::Handshaking => self.fail(slot, reason),
            State::Open => {
                if !self.disconnected(ABNORMAL, None) {
                    self.tally.count_server_close(if reason == "reset" { "reset".into() } else { "dropped".into() });
                }
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
    /// open (and retried after a while with `--reconnect`, or after the
    /// `reconnect in N ms` its `reason` asks); it drains until the
    /// server's FIN, for a while at most.
    pub(super) fn closed_by_server(&mut self, slot: usize, code: Option<u16>, reason: &str) {
        if self.table[slot].state == State::Open {
            if !self.disconnected(code.unwrap_or(NO_STATUS), parse_hint(reason)) {
                let code = code.map_or("close_no_code".to_string(), |c| format!("close_{c}"));
                self.tally.count_server_close(code);
            }
            self.tally.live -= 1;
            self.tally.open -= 1;
        }
        self.table[slot].state = State::Draining;
        let deadline = self.wheel.now() + self.wheel.ticks(CLOSE_TIMEOUT);
        self.wheel.schedule(&mut self.table, slot as u32, deadline);
    }

    /// Begins closing up to `n` open connections (and drops connecting
    /// ones when `n` is `usize::MAX`: everything).
    /// Those waiting for a retry go first.
    pub(crate) fn close_clients(&mut self, n: usize) {
        let all = n == usize::MAX;
        let n = n - self.cancel_waiting(n, all);
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

    /// Drops every connection left (after the wind-down's deadline), and
    /// gives up on those waiting for a retry.
    pub(crate) fn drop_all(&mut self) {
        self.cancel_waiting(usize::MAX, true);
        let leftover: Vec<usize> = self.table.iter().map(|(s, _)| s).collect();
        for slot in leftover {
            self.remove(slot);
        }
    }
}
