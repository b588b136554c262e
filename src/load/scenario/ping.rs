//! Ping: every interval each connection sends the echo app's JSON ping,
//! `{"type":"ping","payload":"g<generation>-<seq>"}`, and checks the pong
//! carries it back. First pings are spread at random over an interval so
//! a ramp does not synchronise them; a ping still unanswered an interval
//! later counts as a pong timeout.

use std::time::Duration;

use serde::Deserialize;

use super::steps::{answered, send_awaited};
use crate::load::config::FleetConfig;
use crate::load::fleet::{Fleet, Script};
use crate::ws::frame::opcode;

/// The ping scenario: how often each connection pings.
pub(super) struct Ping {
    interval: Duration,
}

/// The echo app's answer to a ping.
#[derive(Deserialize)]
struct Pong<'a> {
    #[serde(rename = "type")]
    kind: &'a str,
    payload: Option<&'a str>,
}

impl Ping {
    /// Pings every `cfg.interval`.
    pub(super) fn new(cfg: &FleetConfig) -> Ping {
        Ping { interval: cfg.interval }
    }

    /// Sends the next ping on `slot`.
    fn send_ping(fleet: &mut Fleet<'_>, slot: usize) {
        let text = format!(
            r#"{{"type":"ping","payload":"g{}-{}"}}"#,
            fleet.generation(slot),
            fleet.in_flight(slot).next_seq()
        );
        send_awaited(fleet, slot, opcode::TEXT, text.as_bytes());
        fleet.flush(slot);
    }
}

impl Script for Ping {
    fn on_open(&mut self, fleet: &mut Fleet<'_>, slot: usize) {
        let spread = fleet.ticks(self.interval).max(1);
        let first = (crate::ws::mask::random_u64() % u64::from(spread)) as u32 + 1;
        fleet.set_deadline(slot, first);
    }

    fn on_message(&mut self, fleet: &mut Fleet<'_>, slot: usize, payload: &[u8], _is_text: bool) {
        let generation = fleet.generation(slot);
        answered(fleet, slot, |seq| {
            std::str::from_utf8(payload)
                .ok()
                .and_then(|t| serde_json::from_str::<Pong<'_>>(t).ok())
                .is_some_and(|p| p.kind == "pong" && p.payload == Some(&format!("g{generation}-{seq}")))
        });
    }

    /// Time for the next ping; pings unanswered for an interval time out.
    fn on_deadline(&mut self, fleet: &mut Fleet<'_>, slot: usize) {
        let in_flight = fleet.in_flight(slot);
        if in_flight.oldest_sent_at().is_some_and(|at| at.elapsed() >= self.interval) {
            let n = in_flight.abandon();
            fleet.tally().pong_timeouts(n);
        }
        Ping::send_ping(fleet, slot);
        if fleet.contains(slot) {
            fleet.set_deadline(slot, fleet.ticks(self.interval));
        }
    }
}
