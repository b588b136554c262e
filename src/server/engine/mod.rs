//! The engine: everything one event loop does that does not depend on how
//! it does I/O. It owns the connection table ([`table`]), the handler,
//! the timers, compression, rooms and the deliveries owed to members; a
//! driver (`driver/epoll`, `driver/uring`) owns one engine and calls it for
//! the four things of docs/ARCHITECTURE.md, "The transport seam":
//!
//! 1. **bytes in**: a read turn ([`input`]): `begin_turn`, `handle_input`
//!    for each batch of bytes, `finish_turn`;
//! 2. **bytes out**: `flush` and the owed deliveries ([`output`],
//!    [`delivery`]), written through the driver's [`Transport`];
//! 3. **time**: `end_pass` ([`pass`]): the ready list, deliveries, timers;
//! 4. **actions**: `signal` ([`signals`]), the one path by which a
//!    connection is timed and ended.
//!
//! Plus `admit` and `close` ([`admit`], [`signals`]), and the admin API's
//! orders ([`orders`]). The engine is
//! generic over its driver's [`Transport`] (static dispatch) and never
//! asks which driver runs it. A connection's life through these files is
//! walked in docs/LIFECYCLE.md.

mod admit;
mod aging;
mod client;
pub(crate) mod conn;
mod delivery;
mod drain;
mod handoff;
mod identity;
mod input;
mod memory;
mod orders;
mod output;
mod pass;
mod rate;
mod retire;
mod signals;
pub(crate) mod table;
pub(crate) mod transport;

use std::sync::atomic::{AtomicBool, AtomicUsize};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crossbeam_channel::Receiver;
use mio::net::TcpListener;

use crate::runtime::{BufferPool, TimerWheel};
use crate::server::address_limits::AddressLimits;
use crate::server::budget::MemoryBudget;
use crate::server::config::ServerConfig;
use crate::server::handler::{Handler, LocalPublish};
use crate::server::handoff::Command;
use crate::server::identity::{Identities, UserCounts};
use crate::server::life::Timeout;
use crate::server::pubsub::fanout::{Deliveries, Owed};
use crate::server::pubsub::hub::{Hub, LoopMsg};
use crate::server::shrink::Shrink;
use crate::server::stats::LoopStats;
use crate::server::tls::TlsAcceptor;

use table::ConnTable;
use transport::Transport;

pub(crate) use admit::AcceptFailure;
pub(crate) use input::Turn;
pub(crate) use pass::DriverTurns;

/// Bytes one connection may read per turn before others get theirs.
pub(crate) const READ_BUDGET: usize = 256 * 1024;
/// Corked output is written out when it passes this size mid-batch.
const CORK_LIMIT: usize = 256 * 1024;
/// Members one pass writes room deliveries to at most; the rest wait for
/// the next pass (which starts with them), so a huge room cannot stall the
/// loop's other connections.
const DELIVERY_SLICE: usize = 2048;
/// Deliveries a loop may owe before it stops reading (publishers wait in
/// their sockets) until half are written: 12 bytes each (the frames live
/// once, in `Deliveries`' arena), so about 12 MB (24 MB while a round is
/// sorted) when publishes come faster than the loop can write them.
const MAX_OWED: usize = 1 << 20;
/// How long accepting pauses after the process runs out of descriptors.
const ACCEPT_PAUSE: Duration = Duration::from_millis(500);
/// Spare pooled buffers a loop keeps when it gives memory back.
const SPARE_BUFFERS_KEPT: usize = 16;

/// State shared by all loops of one server process.
#[derive(Debug)]
pub(crate) struct Shared {
    /// Connections open in the process, across loops (accept/close only).
    pub(crate) open: AtomicUsize,
    /// The `--max-conns` in effect.
    pub(crate) max_conns: usize,
    /// Set once shutdown has begun.
    pub(crate) shutting_down: AtomicBool,
    /// Per-source-address limits, checked at accept.
    pub(crate) address_limits: AddressLimits,
    /// The process's memory budget: its level is checked at accept and by
    /// every loop at the end of each pass.
    pub(crate) budget: Arc<MemoryBudget>,
    /// `--max-conns-per-user`, charged at upgrade; `None` when off.
    pub(crate) user_counts: Option<Arc<UserCounts>>,
}

/// What a loop is given and never changes: who it is, its settings, its
/// counters, and its links to the rest of the process.
pub(crate) struct LoopEnv {
    /// The loop's index, in logs and `ConnId`s.
    pub(crate) id: u32,
    pub(crate) cfg: Arc<ServerConfig>,
    /// This loop's counters (it is their only writer).
    pub(crate) stats: Arc<LoopStats>,
    pub(crate) shared: Arc<Shared>,
    /// Every loop's inbox, and the way out of the process.
    pub(crate) hub: Arc<Hub>,
    /// This loop's inbox.
    inbox: Receiver<LoopMsg>,
    /// Commands of a live hand-off, each announced in the inbox.
    control: Receiver<Command>,
    /// Timeouts converted to ticks once.
    ticks: Ticks,
}

/// Timeouts converted to ticks once.
#[derive(Debug, Clone, Copy)]
struct Ticks {
    handshake: u32,
    idle: u32,
    pong: u32,
    close: u32,
    send: u32,
}

impl Ticks {
    /// `cfg`'s timeouts on `wheel`.
    fn new(cfg: &ServerConfig, wheel: &TimerWheel) -> Ticks {
        Ticks {
            handshake: wheel.ticks(cfg.handshake_timeout),
            idle: wheel.ticks(cfg.idle_timeout),
            pong: wheel.ticks(cfg.pong_timeout),
            close: wheel.ticks(cfg.close_timeout),
            send: wheel.ticks(cfg.send_timeout),
        }
    }

    /// The length of `timeout`, in ticks.
    fn of(&self, timeout: Timeout) -> u32 {
        match timeout {
            Timeout::Handshake => self.handshake,
            Timeout::Idle => self.idle,
            Timeout::Pong => self.pong,
            Timeout::Close => self.close,
            Timeout::Send => self.send,
        }
    }
}

/// The listener and whether accepting is paused.
pub(crate) struct Accepting {
    /// Taken (and closed) at shutdown.
    pub(crate) listener: Option<TcpListener>,
    /// Accepting pauses until then after running out of descriptors.
    pub(crate) resume_at: Option<Instant>,
    /// The pause was logged (once per episode).
    emfile_logged: bool,
}

/// Buffers one pass reuses, so the hot path allocates nothing.
#[derive(Default)]
struct Scratch {
    /// Corked output of the connection being handled.
    out: Vec<u8>,
    /// The compressed message being handled, inflated; events borrow it.
    inflated: Vec<u8>,
    /// Records sealed for the connection being written (TLS).
    sealed: Vec<u8>,
    /// The slice of owed deliveries one pass writes.
    owed_slice: Vec<Owed>,
    /// Timers that fired this tick.
    expired: Vec<u32>,
    /// Connections asked to leave this pass (paced drain, aging).
    retiring: Vec<(u32, u32)>,
}

/// Room deliveries on their way: publishes made while handling input, and
/// what members are owed.
#[derive(Default)]
struct Fanout {
    /// Publishes made while handling a connection, delivered right after.
    local: Vec<LocalPublish>,
    /// Room deliveries owed, written at the end of the pass.
    owed: Deliveries,
    /// Set past `MAX_OWED` owed deliveries, cleared at half: reads wait.
    owing_too_much: bool,
}

/// What the loop tracks for the memory budget (see `memory.rs`).
#[derive(Debug, Default)]
struct Holders {
    /// Connections holding more input than a pooled buffer, by slot, and
    /// the bytes counted for each in the loop's `input_bytes`.
    large: std::collections::HashMap<u32, u64>,
    /// Connections not read while over the soft mark: (slot, generation,
    /// since when).
    throttled: Vec<(u32, u32, Instant)>,
}

/// Where a loop is in a hand-off.
#[derive(Default)]
pub(crate) enum Handing {
    /// Not handing off: serving as usual.
    #[default]
    Serving,
    /// Not accepting, not handling input.
    Frozen,
    /// Frozen, and the driver is to export at the end of this pass.
    Exporting(crossbeam_channel::Sender<crate::server::handoff::Exported>),
    /// Frozen, this many connections exported: waiting for `Finish` or
    /// `Resume`.
    Exported(usize),
    /// New side, before the old process commits: connections held, not
    /// in the table (nothing can be read, written or delivered to them),
    /// until `Attach` (or `Abandon`).
    Adopting(Vec<crate::server::handoff::Moved>),
    /// New side, committed: connections in the table, registered, their
    /// unsent bytes written; still frozen (no input handled, no timer)
    /// until `Thaw`, so no loop's member can publish before every loop has
    /// its members: (slot, generation, timer left) each.
    Attached(Vec<(u32, u32, Option<u32>)>),
}

/// TLS at accept: where sessions come from, and this pass's handshake turns.
struct TlsGate {
    /// `None`: plain ws.
    acceptor: Option<TlsAcceptor>,
    /// Handshake turns this pass may still take (of
    /// `--tls-handshakes-per-pass`; each may cost a key exchange and a
    /// signature), so a storm of handshakes cannot starve established
    /// connections.
    budget: u32,
}

/// The deflate terms this loop offers: the server's, but shared terms once
/// its share of `--compression-max-dedicated` connections keep contexts.
struct Offers {
    /// The protocol settings this loop's handshakes use.
    ws_cfg: crate::ws::Config,
    /// This loop's share of `--compression-max-dedicated` (0: no limit).
    max_dedicated: usize,
}

/// One loop's engine, driven by the transport `T`. See the module docs.
pub(crate) struct Engine<H, T> {
    /// The driver's I/O state, as the engine sees it.
    pub(crate) io: T,
    pub(crate) env: LoopEnv,
    /// Everything each connection owns.
    pub(crate) table: ConnTable,
    pub(crate) accepting: Accepting,
    pub(crate) pool: BufferPool,
    handler: H,
    scratch: Scratch,
    fanout: Fanout,
    tls: TlsGate,
    offers: Offers,
    /// Connections owed another read turn: (slot, generation).
    ready: Vec<(u32, u32)>,
    /// Set once shutdown began: when the stragglers are dropped.
    shutdown_deadline: Option<Instant>,
    /// When to give the peak's memory back after a ramp-down.
    shrink: Shrink,
    /// Large input holders and the connections not read over the memory
    /// budget's soft mark.
    holders: Holders,
    /// Where the loop is in a live hand-off.
    handing: Handing,
    /// Kicks from other hosts that came while the loop was frozen, for
    /// its thaw (`orders.rs`).
    kept_kicks: Vec<crate::server::pubsub::orders::Kick>,
    /// Connections asked to leave at a steady pace (see `retire.rs`).
    retiring: Retiring,
}

/// The paced closes a loop runs: a drain and connection aging.
struct Retiring {
    /// Connections being closed at a steady pace (shutdown with
    /// `--drain-period`, or what a hand-off could not move), if any.
    drain: Option<drain::Drain>,
    /// Connections' maximum-age deadlines (`--max-connection-age` only).
    aging: Option<aging::Aging>,
}

/// What `start` hands each loop besides its driver and listener.
pub(crate) struct LoopParts {
    pub(crate) id: u32,
    pub(crate) cfg: Arc<ServerConfig>,
    pub(crate) stats: Arc<LoopStats>,
    pub(crate) shared: Arc<Shared>,
    pub(crate) inbox: Receiver<LoopMsg>,
    pub(crate) control: Receiver<Command>,
    pub(crate) hub: Arc<Hub>,
}

impl<H: Handler, T: Transport> Engine<H, T> {
    /// An engine over `io` and an already registered listener.
    pub(crate) fn new(io: T, listener: Option<TcpListener>, handler: H, parts: LoopParts) -> Self {
        let LoopParts { id, cfg, stats, shared, inbox, control, hub } = parts;
        let wheel = TimerWheel::new(cfg.timer_tick());
        let ticks = Ticks::new(&cfg, &wheel);
        let identities = Identities::new(shared.user_counts.clone());
        let limit = &cfg.rate_limit;
        let rates = rate::Rates::new(limit.messages, limit.message_burst_milli(), limit.bytes, limit.byte_burst());
        let rates = rate::RateTable::new(rates, Instant::now());
        let table = ConnTable::new(wheel, hub.directory().cloned(), cfg.compression, identities, rates);
        Engine {
            io,
            table,
            accepting: Accepting { listener, resume_at: None, emfile_logged: false },
            pool: BufferPool::new(cfg.buffer_size, cfg.pool_max_idle),
            handler,
            scratch: Scratch { out: Vec::with_capacity(cfg.buffer_size), ..Scratch::default() },
            fanout: Fanout::default(),
            tls: TlsGate { acceptor: cfg.tls.clone().map(TlsAcceptor::new), budget: handshake_budget(&cfg) },
            offers: Offers {
                ws_cfg: cfg.ws.clone(),
                max_dedicated: cfg.compression.max_dedicated.div_ceil(cfg.worker_count().max(1)),
            },
            ready: Vec::new(),
            shutdown_deadline: None,
            shrink: Shrink::new(cfg.release_memory_after),
            holders: Holders::default(),
            handing: Handing::default(),
            kept_kicks: Vec::new(),
            retiring: Retiring { drain: None, aging: aging::Aging::for_loop(&cfg) },
            env: LoopEnv { id, cfg, stats, shared, hub, inbox, control, ticks },
        }
    }

    /// True if `slot` holds the connection of `generation`: how a driver
    /// drops an event or completion meant for an earlier occupant.
    #[inline]
    pub(crate) fn is_live(&self, slot: usize, generation: u32) -> bool {
        self.table.is_live(slot, generation)
    }

    /// How long the driver's next wait may block: not at all while work is
    /// pending.
    pub(crate) fn wait_timeout(&self) -> Duration {
        let busy = !self.ready.is_empty() || !self.fanout.owed.is_empty();
        if busy {
            return Duration::ZERO;
        }
        let now = Instant::now();
        let tick = self.table.wheel.until_next_tick(now);
        // Never sleep past a paced close: a late wake would make a burst.
        match self.next_retire_due() {
            Some(at) => tick.min(at.saturating_duration_since(now)),
            None => tick,
        }
    }

    /// Puts the connection on the ready list (once): it gets another read
    /// turn at the end of the pass.
    pub(crate) fn push_ready(&mut self, slot: usize) {
        let conn = &mut self.table.conns[slot];
        if !conn.has(conn::IN_READY_LIST) {
            conn.flags |= conn::IN_READY_LIST;
            self.ready.push((slot as u32, conn.generation));
        }
    }

    /// Checks a live connection's invariants; nothing at all in release.
    #[inline]
    pub(crate) fn debug_check(&self, slot: usize) {
        if cfg!(debug_assertions) {
            if let Some(conn) = self.table.conns.get(slot) {
                conn.debug_check_invariants(self.io.queued(conn, slot));
            }
        }
    }
}

/// TLS handshake turns a pass may take: `--tls-handshakes-per-pass`, 0
/// meaning no limit.
fn handshake_budget(cfg: &ServerConfig) -> u32 {
    match cfg.tls_handshakes_per_pass {
        0 => u32::MAX,
        n => n,
    }
}
