//! What each connection does once open, one scenario to a file, each a
//! type behind the [`Script`] trait that the fleet calls. The fleet knows
//! no scenario; [`run`] is the one place a scenario's name becomes its
//! type.

mod churn;
mod echo;
mod fanout;
mod idle;
mod ping;

use std::io;
use std::sync::atomic::AtomicBool;
use std::time::Instant;

use super::config::FleetConfig;
use super::fleet::Fleet;
use super::process;
use super::progress::Progress;
use super::report::Report;

pub use echo::Payload;

/// What each connection does once open.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, serde::Serialize, serde::Deserialize)]
pub enum Scenario {
    /// Connect and hold (answering the server's pings).
    Idle,
    /// Send `{"type":"ping","payload":..}` every interval and check the pong.
    Ping,
    /// Keep `depth` binary messages of `size` bytes in flight; verify echoes.
    Echo,
    /// Connect, one message, close, repeat.
    Churn,
    /// Every connection joins one room; one of them publishes to it at
    /// `--publish-rate`; every other receives. Measures deliveries and
    /// publish-to-delivery latency.
    Fanout,
}

impl Scenario {
    /// The name used in reports.
    pub fn name(self) -> &'static str {
        match self {
            Scenario::Idle => "idle",
            Scenario::Ping => "ping",
            Scenario::Echo => "echo",
            Scenario::Churn => "churn",
            Scenario::Fanout => "fanout",
        }
    }
}

/// Runs one load process to the end of its plan (or until `stop`),
/// calling `on_second` once a second, with `cfg.scenario`'s script. The
/// process loop is generic over the script, so it is compiled once per
/// scenario and no call into a script (one per message) is virtual.
pub(crate) fn run(cfg: &FleetConfig, stop: &AtomicBool, on_second: impl FnMut(&Progress)) -> io::Result<Report> {
    match cfg.scenario {
        Scenario::Idle => process::run(cfg, idle::Idle, stop, on_second),
        Scenario::Ping => process::run(cfg, ping::Ping::new(cfg), stop, on_second),
        Scenario::Echo => process::run(cfg, echo::Echo::new(cfg), stop, on_second),
        Scenario::Churn => process::run(cfg, churn::Churn, stop, on_second),
        Scenario::Fanout => process::run(cfg, fanout::Fanout::new(cfg), stop, on_second),
    }
}

/// A scenario: what the fleet asks of it. A connection is the fleet's
/// `slot`; a script acts on it through the fleet (send, flush, close, set
/// a deadline) and keeps what it needs across connections itself.
pub(crate) trait Script {
    /// The connection in `slot` is open (its connect deadline cancelled).
    fn on_open(&mut self, fleet: &mut Fleet<'_>, slot: usize);

    /// The open connection in `slot` received a message (already counted).
    fn on_message(&mut self, fleet: &mut Fleet<'_>, slot: usize, payload: &[u8], is_text: bool);

    /// The deadline this script set on the open connection in `slot` has
    /// come. Only a script that sets one needs to say what to do.
    fn on_deadline(&mut self, _fleet: &mut Fleet<'_>, _slot: usize) {}

    /// Once a loop turn while the plan runs, `dt` seconds after the last.
    fn on_turn(&mut self, _fleet: &mut Fleet<'_>, _dt: f64) {}

    /// The plan has ended, with `received` messages in so far: true once
    /// the connections may hang up (asked each turn until it says so).
    fn settled(&mut self, _now: Instant, _received: u64) -> bool {
        true
    }
}

/// Sends a message on `slot` that awaits an answer (its round trip starts
/// now); a sequence number in the message must be the connection's next
/// (`InFlight::next_seq`).
fn send_awaited(fleet: &mut Fleet<'_>, slot: usize, op: u8, payload: &[u8]) {
    fleet.in_flight(slot).sent(Instant::now());
    fleet.send(slot, op, payload);
}

/// A message on `slot` answers the oldest one awaiting an answer if
/// `is_answer(its seq)`: then the round trip is recorded, otherwise (or
/// when nothing awaited one) a mismatch counted. True if it was the answer.
fn answered(fleet: &mut Fleet<'_>, slot: usize, is_answer: impl FnOnce(u64) -> bool) -> bool {
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
fn next_word(x: &mut u64) -> &'static str {
    *x ^= *x << 13;
    *x ^= *x >> 7;
    *x ^= *x << 17;
    WORDS[(*x % WORDS.len() as u64) as usize]
}
