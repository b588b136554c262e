//! Idle: connect and hold. The server's pings keep the connection honest
//! (the session answers them); nothing is sent, and nothing is expected.

use crate::load::fleet::{Fleet, Script};

/// The idle scenario: no state, no deadline while holding.
pub(super) struct Idle;

impl Script for Idle {
    fn on_open(&mut self, _fleet: &mut Fleet<'_>, _slot: usize) {}

    /// Nothing was asked, so a message answers nothing: a mismatch.
    fn on_message(&mut self, fleet: &mut Fleet<'_>, _slot: usize, _payload: &[u8], _is_text: bool) {
        fleet.tally().mismatch();
    }
}
