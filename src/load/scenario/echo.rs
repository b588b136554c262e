//! Echo: each connection keeps `--depth` messages in flight and checks
//! every echo byte for byte against what it sent, sending the next as
//! each comes back. A message is made again from its sequence number to
//! be checked, so nothing sent is kept.

use super::steps::{answered, next_word, send_awaited};
use crate::load::config::{FleetConfig, Payload};
use crate::load::fleet::{Fleet, Script};
use crate::ws::frame::opcode;

/// The echo scenario: the messages' shape, and one buffer they are made in.
pub(super) struct Echo {
    size: usize,
    depth: usize,
    payload: Payload,
    /// The message being sent or checked (reused: no allocation per message).
    scratch: Vec<u8>,
}

impl Echo {
    /// Messages of `cfg.size` bytes of `cfg.payload`, `cfg.depth` in flight.
    pub(super) fn new(cfg: &FleetConfig) -> Echo {
        Echo { size: cfg.size, depth: cfg.depth, payload: cfg.payload, scratch: Vec::new() }
    }

    /// Puts message `seq` in `scratch`; returns its opcode.
    fn fill(&mut self, seq: u64) -> u8 {
        match self.payload {
            Payload::Pattern => {
                echo_payload(seq, self.size, &mut self.scratch);
                opcode::BINARY
            }
            Payload::Chat => {
                chat_payload(seq, self.size, &mut self.scratch);
                opcode::TEXT
            }
        }
    }

    /// Appends the connection's next message (flushed by the caller).
    fn send_next(&mut self, fleet: &mut Fleet<'_>, slot: usize) {
        let op = self.fill(fleet.in_flight(slot).next_seq());
        send_awaited(fleet, slot, op, &self.scratch);
    }
}

impl Script for Echo {
    fn on_open(&mut self, fleet: &mut Fleet<'_>, slot: usize) {
        for _ in 0..self.depth.max(1) {
            self.send_next(fleet, slot);
        }
        fleet.flush(slot);
    }

    /// An echo back: checked, and the next message sent in its place (the
    /// fleet flushes once the read's messages are handled).
    fn on_message(&mut self, fleet: &mut Fleet<'_>, slot: usize, payload: &[u8], is_text: bool) {
        let is_echo = |seq| {
            let op = self.fill(seq);
            is_text == (op == opcode::TEXT) && payload == self.scratch.as_slice()
        };
        if answered(fleet, slot, is_echo) {
            self.send_next(fleet, slot);
        }
    }
}

/// The pattern payload for message `seq`: its number, then a pattern.
fn echo_payload(seq: u64, size: usize, out: &mut Vec<u8>) {
    out.clear();
    out.extend((0..size).map(|i| (i as u64).wrapping_mul(31).wrapping_add(seq) as u8));
    let n = size.min(8);
    out[..n].copy_from_slice(&seq.to_le_bytes()[..n]);
}

/// The chat payload for message `seq`: `size` bytes of JSON (or just over
/// 80, the envelope without text, if `size` is smaller).
fn chat_payload(seq: u64, size: usize, out: &mut Vec<u8>) {
    use std::io::Write as _;
    out.clear();
    let _ = write!(
        out,
        r#"{{"type":"message","room":"team-{}","user":"user-{}","seq":{seq},"text":""#,
        seq % 7,
        seq % 1000
    );
    let envelope = out.len();
    let mut x = seq.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1;
    while out.len() + 2 < size {
        out.extend_from_slice(next_word(&mut x).as_bytes());
        out.push(b' ');
    }
    out.truncate(size.saturating_sub(2).max(envelope));
    out.extend_from_slice(br#""}"#);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chat_payloads_are_json_of_the_asked_size() {
        for size in [100, 200, 1000, 2000] {
            let mut out = Vec::new();
            chat_payload(size as u64, size, &mut out);
            assert_eq!(out.len(), size);
            let v: serde_json::Value = serde_json::from_slice(&out).unwrap();
            assert_eq!(v["type"], "message");
        }
    }

    #[test]
    fn echo_payloads_differ_by_sequence() {
        let (mut a, mut b) = (Vec::new(), Vec::new());
        echo_payload(1, 64, &mut a);
        echo_payload(2, 64, &mut b);
        assert_eq!(a.len(), 64);
        assert_ne!(a, b);
        echo_payload(3, 4, &mut a);
        assert_eq!(a.len(), 4);
    }
}
