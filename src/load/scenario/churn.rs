//! Churn: connect, send one message, close once its echo is back, and let
//! the plan open another: the server's accept and close paths under load.

use super::steps::{answered, send_awaited};
use crate::load::fleet::{Fleet, Script};
use crate::ws::frame::opcode;

/// The churn scenario: no state.
pub(super) struct Churn;

/// The one message a churn connection sends.
const MESSAGE: &[u8] = b"churn";

impl Script for Churn {
    fn on_open(&mut self, fleet: &mut Fleet<'_>, slot: usize) {
        send_awaited(fleet, slot, opcode::TEXT, MESSAGE);
        fleet.flush(slot);
    }

    fn on_message(&mut self, fleet: &mut Fleet<'_>, slot: usize, payload: &[u8], is_text: bool) {
        if answered(fleet, slot, |_| is_text && payload == MESSAGE) {
            fleet.begin_close(slot);
        }
    }
}
