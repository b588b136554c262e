//! What several scenarios do alike: send a message that awaits an answer,
//! match an answer to it, and make chat-like words.

use std::time::Instant;

use crate::load::fleet::Fleet;

/// Sends a message on `slot` that awaits an answer (its round trip starts
/// now); a sequence number in the message must be the connection's next
/// (`InFlight::next_seq`).
pub(super) fn send_awaited(fleet: &mut Fleet<'_>, slot: usize, op: u8, payload: &[u8]) {
    fleet.in_flight(slot).sent(Instant::now());
    fleet.send(slot, op, payload);
}

/// A message on `slot` answers the oldest one awaiting an answer if
/// `is_answer(its seq)`: then the round trip is recorded, otherwise (or
/// when nothing awaited one) a mismatch counted. True if it was the answer.
pub(super) fn answered(fleet: &mut Fleet<'_>, slot: usize, is_answer: impl FnOnce(u64) -> bool) -> bool {
    let Some((seq, sent)) = fleet.in_flight(slot).pop_oldest() else {
        fleet.tally().mismatch();
        return false;
    };
    if !is_answer(seq) {
        fleet.tally().mismatch();
        return false;
    }
    fleet.tally().record_rtt(sent.elapsed().as_micros().max(1) as u64);
    true
}

/// Words a chat message (or a fan-out delivery) is made of: compresses
/// like real chat text.
const WORDS: [&str; 32] = [
    "the", "meeting", "is", "moved", "to", "three", "o'clock", "please", "bring", "your", "notes", "and", "laptop",
    "we", "will", "review", "release", "plan", "for", "next", "week", "thanks", "everyone", "see", "you", "soon",
    "great", "work", "on", "that", "fix", "today",
];

/// The next word of a sequence seeded by `x` (nonzero): a xorshift step.
pub(super) fn next_word(x: &mut u64) -> &'static str {
    *x ^= *x << 13;
    *x ^= *x >> 7;
    *x ^= *x << 17;
    WORDS[(*x % WORDS.len() as u64) as usize]
}
