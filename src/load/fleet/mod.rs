//! The fleet: the set of client connections one load process drives, on
//! one mio `Poll`, through the same sans-io `ws` layer as the server
//! (client role) and the same timer wheel. It opens, reads, writes, times
//! out and closes connections and counts what happens to them; what a
//! connection says once open is its scenario's [`Script`], which the fleet
//! calls and never names.

mod client;
mod close;
mod codecs;
mod connect;
mod input;
mod output;
mod retry;
mod socket;
mod tally;
mod waiting;

use std::io;
use std::time::{Duration, Instant};

use mio::{Events, Poll};
use slab::Slab;

use crate::runtime::{untoken, TimerWheel};
use crate::ws::Config;

use super::config::FleetConfig;
pub(crate) use client::InFlight;
use client::{Client, State};
use codecs::Codecs;
pub(crate) use tally::Tally;
use waiting::Waiting;

/// How long the loop waits for I/O at most, and the finest timer tick.
const TICK: Duration = Duration::from_millis(10);

/// The timer wheel's tick: fine enough to spread pings over an interval
/// (16 ticks to one), coarse enough that a turn of the wheel (256 ticks)
/// is not much shorter than the interval: a 30 s ping timer on 10 ms ticks
/// was visited 12 times per ping and cost 9 % of the CPU at 1M connections.
fn timer_tick(interval: Duration) -> Duration {
    (interval / 16).clamp(TICK, Duration::from_millis(100))
}

/// The client connections of one load process, and what they need
/// between them. A slot's timer, codecs and counts go with its connection.
pub(crate) struct Fleet<'a> {
    cfg: &'a FleetConfig,
    poll: Poll,
    table: Slab<Client>,
    /// One deadline per connection: connect, close, or its script's.
    wheel: TimerWheel,
    /// Reused by `fire_timers`: the slots whose deadline has come.
    expired: Vec<u32>,
    ws: Config,
    codecs: Codecs,
    /// Frames on their way to one connection's socket (see `flush`).
    out: Vec<u8>,
    tally: Tally,
    /// `--reconnect`: connections the server ended, waiting for their retry.
    waiting: Waiting,
    /// The clock (µs since the epoch) at the current socket read, once
    /// something in it needed it: read once per socket read, not per message.
    read_at_us: Option<u128>,
    next_generation: u32,
    next_source: usize,
}

impl<'a> Fleet<'a> {
    /// No connections yet; `cfg` says where and how to open them.
    pub(crate) fn new(cfg: &'a FleetConfig) -> io::Result<Fleet<'a>> {
        Ok(Fleet {
            cfg,
            poll: Poll::new()?,
            table: Slab::new(),
            wheel: TimerWheel::new(timer_tick(cfg.interval)),
            expired: Vec::new(),
            ws: Config::default(),
            codecs: Codecs::new(),
            out: Vec::new(),
            tally: Tally::new(cfg.scenario.name(), cfg.reconnect.is_some()),
            waiting: Waiting::default(),
            read_at_us: None,
            next_generation: 0,
            next_source: 0,
        })
    }

    /// Waits up to a tick for I/O readiness.
    pub(crate) fn wait(&mut self, events: &mut Events) -> io::Result<()> {
        match self.poll.poll(events, Some(TICK)) {
            Err(e) if e.kind() != io::ErrorKind::Interrupted => Err(e),
            _ => Ok(()),
        }
    }

    /// Handles the readiness `events` (those of connections since gone, or
    /// of a slot's earlier connection, are skipped).
    pub(crate) fn handle<S: Script>(&mut self, events: &Events, script: &mut S) {
        for event in events.iter() {
            let (slot, generation) = untoken(event.token());
            if self.table.get(slot).is_none_or(|c| c.generation != generation) {
                continue;
            }
            if event.is_writable() {
                self.on_writable(slot);
            }
            if self.table.contains(slot) && (event.is_readable() || event.is_read_closed() || event.is_error()) {
                self.on_readable(slot, event.is_read_closed() || event.is_error(), script);
            }
        }
    }

    /// Acts on the deadlines that have come by `now`: a connect that took
    /// too long fails, a close that took too long is dropped, and an open
    /// connection's deadline (only a script sets one) goes to the script.
    pub(crate) fn fire_timers<S: Script>(&mut self, now: Instant, script: &mut S) {
        let tick = self.wheel.tick_at(now);
        let mut expired = std::mem::take(&mut self.expired);
        self.wheel.advance(&mut self.table, tick, &mut expired);
        for slot in expired.drain(..) {
            let slot = slot as usize;
            match self.table[slot].state {
                State::Connecting | State::Handshaking => self.fail(slot, "timeout"),
                State::Closing | State::Draining => self.remove(slot),
                State::Open => script.on_deadline(self, slot),
            }
        }
        self.expired = expired;
    }

    /// What has been counted so far.
    pub(crate) fn tally(&mut self) -> &mut Tally {
        &mut self.tally
    }

    /// The counts, once the fleet is done.
    pub(crate) fn into_tally(self) -> Tally {
        self.tally
    }

    /// No connection is left (none waits for a retry either).
    pub(crate) fn is_empty(&self) -> bool {
        self.table.is_empty()
    }

    /// A connection is in `slot`.
    pub(crate) fn contains(&self, slot: usize) -> bool {
        self.table.contains(slot)
    }

    /// A connection is in `slot`, past its handshake and not closing.
    pub(crate) fn is_open(&self, slot: usize) -> bool {
        self.table.get(slot).is_some_and(|c| c.state == State::Open)
    }

    /// The messages the connection in `slot` awaits answers to.
    pub(crate) fn in_flight(&mut self, slot: usize) -> &mut InFlight {
        &mut self.table[slot].in_flight
    }

    /// Which connection of those that had `slot` this one is.
    pub(crate) fn generation(&self, slot: usize) -> u32 {
        self.table[slot].generation
    }

    /// `d` in timer ticks.
    pub(crate) fn ticks(&self, d: Duration) -> u32 {
        self.wheel.ticks(d)
    }

    /// Sets the open connection in `slot`'s deadline `ticks` from now; the
    /// script hears of it in `on_deadline`.
    pub(crate) fn set_deadline(&mut self, slot: usize, ticks: u32) {
        let deadline = self.wheel.now() + ticks;
        self.wheel.schedule(&mut self.table, slot as u32, deadline);
    }

    /// The clock (µs since the epoch) at the current socket read: every
    /// message in the read had arrived by then. Read once per socket read.
    pub(crate) fn read_at_us(&mut self) -> u128 {
        *self.read_at_us.get_or_insert_with(|| {
            std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_micros())
        })
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
