//! Fan-out: every connection joins one room; the first to open publishes
//! to it (or broadcasts) at `--publish-rate` once every connection of the
//! plan has joined, each message carrying its send time; every member
//! measures publish-to-delivery latency from it. After the plan ends,
//! members stay until deliveries stop arriving ([`Settling`]).

use std::time::{Duration, Instant};

use super::steps::next_word;
use crate::load::config::FleetConfig;
use crate::load::delivery::Delivery;
use crate::load::fleet::{Fleet, Script};
use crate::ws::frame::opcode;

/// How long deliveries must have stopped before members hang up.
const SETTLE_QUIET: Duration = Duration::from_millis(300);
/// The longest members wait for deliveries after the plan ends.
const SETTLE_MAX: Duration = Duration::from_secs(5);

/// The fan-out scenario: what to publish, who publishes, and how far the
/// room has filled.
pub(super) struct Fanout {
    /// Publishing starts once this many members have joined.
    members: u64,
    /// Messages published per second.
    rate: u32,
    /// About the bytes of a delivery.
    size: usize,
    /// Broadcast (`{"type":"broadcast"}`) instead of publishing to the room.
    broadcast: bool,
    /// The connection that publishes.
    publisher: Option<usize>,
    /// Join acknowledgements received.
    joined: u64,
    /// Publishes owed (the fraction carried from turn to turn).
    credit: f64,
    /// Set once the plan has ended.
    settling: Option<Settling>,
}

impl Fanout {
    /// Publishes `cfg.publish_rate` a second once the plan's peak has joined.
    pub(super) fn new(cfg: &FleetConfig) -> Fanout {
        Fanout {
            members: cfg.plan.peak() as u64,
            rate: cfg.publish_rate,
            size: cfg.size,
            broadcast: cfg.broadcast,
            publisher: None,
            joined: 0,
            credit: 0.0,
            settling: None,
        }
    }

    /// Publishes `n` messages from the publisher, each carrying its send
    /// time (µs since the epoch, padded to a 64-byte delivery).
    fn publish(&mut self, fleet: &mut Fleet<'_>, n: u64) {
        let Some(slot) = self.publisher.filter(|s| fleet.is_open(*s)) else {
            return;
        };
        for _ in 0..n {
            let us = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_micros());
            // The data: the send time, then chat words up to a delivery of
            // about --size bytes (64 at least: the envelope).
            let mut data = format!("{us:0>18}");
            let mut x = us as u64 | 1;
            while data.len() + 46 < self.size {
                data.push(' ');
                data.push_str(next_word(&mut x));
            }
            let text = if self.broadcast {
                format!(r#"{{"type":"broadcast","echo":false,"data":"{data}"}}"#)
            } else {
                format!(r#"{{"type":"publish","room":"fanout","echo":false,"data":"{data}"}}"#)
            };
            fleet.send(slot, opcode::TEXT, text.as_bytes());
        }
        fleet.flush(slot);
    }
}

impl Script for Fanout {
    /// Joins the room (again, for a reconnected member); the first
    /// connection open is the publisher, and once it is gone (the server
    /// ended it), the next to open.
    fn on_open(&mut self, fleet: &mut Fleet<'_>, slot: usize) {
        if self.publisher.is_none_or(|p| p == slot || !fleet.is_open(p)) {
            self.publisher = Some(slot);
        }
        fleet.write(slot, opcode::TEXT, br#"{"type":"join","room":"fanout"}"#);
        fleet.flush(slot);
    }

    /// A member got a delivery (or its join ack). The time it arrived is
    /// the clock read once per socket read (every delivery in that read
    /// had arrived by then), not once per delivery.
    fn on_message(&mut self, fleet: &mut Fleet<'_>, _slot: usize, payload: &[u8], _is_text: bool) {
        match Delivery::of(payload) {
            Some(Delivery::Joined) => self.joined += 1,
            Some(Delivery::SentAt(sent_us)) => {
                let now = fleet.read_at_us();
                fleet.tally().record_rtt(now.saturating_sub(sent_us).max(1) as u64);
            }
            None => fleet.tally().mismatch(),
        }
    }

    /// Publishes what is owed at the rate, once every member has joined.
    fn on_turn(&mut self, fleet: &mut Fleet<'_>, dt: f64) {
        if self.joined >= self.members {
            self.credit += dt * f64::from(self.rate);
            let n = self.credit.floor();
            self.credit -= n;
            self.publish(fleet, n as u64);
        }
    }

    fn settled(&mut self, now: Instant, received: u64) -> bool {
        self.settling.get_or_insert_with(|| Settling::new(now, received)).done(now, received)
    }
}

/// Fan-out, after the plan ends: publishing has stopped, and the members
/// stay until deliveries have stopped arriving (quiet for
/// [`SETTLE_QUIET`], at most [`SETTLE_MAX`]), so that "delivered" counts
/// what the server delivers, not what was in flight when the client hung up.
struct Settling {
    since: Instant,
    received: u64,
    changed: Instant,
}

impl Settling {
    /// The plan ended `now`, with `received` messages in so far.
    fn new(now: Instant, received: u64) -> Settling {
        Settling { since: now, received, changed: now }
    }

    /// True once the members may hang up, given the messages received now.
    fn done(&mut self, now: Instant, received: u64) -> bool {
        if received != self.received {
            (self.received, self.changed) = (received, now);
        }
        now - self.changed >= SETTLE_QUIET || now - self.since >= SETTLE_MAX
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fanout_members_hang_up_once_deliveries_stop_or_at_the_bound() {
        let ms = Duration::from_millis;
        let t0 = Instant::now();
        let mut s = Settling::new(t0, 100);
        assert!(!s.done(t0 + ms(200), 150), "deliveries still arriving");
        assert!(!s.done(t0 + ms(400), 150), "quiet for 200 ms only");
        assert!(s.done(t0 + ms(500), 150), "quiet for 300 ms");
        let mut busy = Settling::new(t0, 0);
        for i in 1..50 {
            assert!(!busy.done(t0 + ms(100 * i), i), "deliveries at {} ms", 100 * i);
        }
        assert!(busy.done(t0 + SETTLE_MAX, 50), "the bound");
    }
}
