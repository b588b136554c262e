//! `--reconnect`: a connection the server ended waits its backoff (or the
//! server's hint) and connects again; a retry that fails before its 101
//! waits longer and tries again; once open, its gap is measured and its
//! scenario starts on it afresh. Waiting connections count toward the
//! plan's target, so the plan does not open others in their place.

use std::time::{Duration, Instant};

use super::waiting::Lost;
use super::Fleet;

impl Fleet<'_> {
    /// The server ended an open connection, with close `code` (1005: a
    /// close frame without one; 1006: no close frame) and maybe a
    /// `reconnect in N ms` `hint`: counted; true if it will reconnect.
    pub(super) fn disconnected(&mut self, code: u16, hint: Option<Duration>) -> bool {
        self.tally.count_disconnect(code);
        if self.cfg.reconnect.is_none() {
            return false;
        }
        self.wait_for_retry(Lost { since: Instant::now(), attempt: 0 }, hint);
        true
    }

    /// `lost` waits for its next retry: the backoff of its attempt, or
    /// the server's `hint` for the first.
    fn wait_for_retry(&mut self, lost: Lost, hint: Option<Duration>) {
        let Some(backoff) = self.cfg.reconnect else { return self.tally.never_back(1) };
        let delay = backoff.delay(lost.attempt, hint, crate::ws::mask::random_u64());
        self.waiting.push(Instant::now() + delay, lost);
        self.tally.waiting += 1;
    }

    /// A retry of `lost` failed before its 101, for `reason`: it waits
    /// longer and tries again.
    pub(super) fn retry_failed(&mut self, lost: Lost, reason: &str) {
        self.tally.retry_failed(reason);
        self.wait_for_retry(Lost { since: lost.since, attempt: lost.attempt.saturating_add(1) }, None);
    }

    /// Connects again every lost connection whose retry is due by `now`.
    pub(crate) fn reconnect_due(&mut self, now: Instant) {
        while let Some(lost) = self.waiting.pop_due(now) {
            self.tally.waiting -= 1;
            self.open(Some(Box::new(lost)));
        }
    }

    /// Gives up on up to `n` connections waiting for a retry, the latest
    /// due first: at the `end` of the run they count as never back, before
    /// it (the plan's target fell) as no longer wanted; how many.
    pub(super) fn cancel_waiting(&mut self, n: usize, end: bool) -> usize {
        let cancelled = self.waiting.cancel(n);
        self.tally.waiting -= cancelled as u64;
        match end {
            true => self.tally.never_back(cancelled as u64),
            false => self.tally.unwanted(cancelled as u64),
        }
        cancelled
    }
}
