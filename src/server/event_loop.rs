//! The event loop: one thread, one I/O driver (a mio `Poll`, or an io_uring
//! ring), one SO_REUSEPORT listener, a
//! slab of connections, a buffer pool, a timer wheel and an inbox. It owns
//! everything it touches, so nothing on its hot path takes a lock.
//!
//! One pass: poll (edge-triggered) -> accept / read / write for each event ->
//! give a turn to connections that hit their read budget -> fire due timers.
//! A connection's life through this file is walked in docs/LIFECYCLE.md.
//!
//! This file is the engine and its epoll driver; the io_uring driver
//! (`completion.rs`) runs the same engine on completions: the same
//! `handle_input`, `signal`, deliveries, timers and close, with its own
//! pass, accept, receive and send.

mod completion;

use std::io::{self, Write};
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crossbeam_channel::Receiver;
use mio::net::TcpListener;
use mio::{Events, Interest, Poll, Token};
use slab::Slab;

use crate::ws::frame::FrameHead;
use crate::ws::{Event, HandshakeError, Inflation, WsError};

use super::address_limits::AddressLimits;
use super::compression::{Deflaters, Inflaters};
use super::config::ServerConfig;
use super::conn::{Conn, IN_READY_LIST, OPENED, OWED, PEER_CLOSED, SENDING};
use super::fanout::{Deliveries, Owed};
use super::handler::{CloseCtx, ConnId, Ctx, Handler, LocalPublish, Message, Upgrade};
use super::hub::{Hub, LoopMsg};
use super::life::{Action, Actions, Facts, Signal, Stage, Timeout};
use super::publication::Publication;
use super::rooms::Rooms;
use super::shrink::{trim_heap, Shrink};
use super::socket::{io_reason, write_parts};
use super::stats::{CloseReason, LoopStats};
use super::tls::{TlsAcceptor, TlsConn, TlsFailure};
use crate::runtime::BufferPool;
use crate::runtime::{token, untoken, Links, TimerLink, TimerWheel};

/// The listener's token.
pub(crate) const LISTENER: Token = Token(usize::MAX - 1);
/// The inbox waker's token.
pub(crate) const WAKER: Token = Token(usize::MAX - 2);

/// Bytes one connection may read per turn before others get theirs.
const READ_BUDGET: usize = 256 * 1024;
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
pub struct Shared {
    /// Connections open in the process, across loops (accept/close only).
    pub open: AtomicUsize,
    /// The `--max-conns` in effect.
    pub max_conns: usize,
    /// Set once shutdown has begun.
    pub shutting_down: AtomicBool,
    /// Per-source-address limits, checked at accept.
    pub address_limits: AddressLimits,
}

impl Links for Slab<Conn> {
    fn link(&mut self, slot: u32) -> &mut TimerLink {
        &mut self[slot as usize].timer
    }
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

/// How a loop does its I/O.
pub enum Io {
    /// Readiness: the `Poll` the listener and the waker are registered with.
    Epoll(Poll),
    /// Completions: the ring and what its pass keeps.
    Uring(Box<completion::UringIo>),
}

impl Io {
    /// The io_uring driver for one loop: its ring (made on the loop's own
    /// thread, which becomes its only submitter) and the eventfd its inbox
    /// wakes it by.
    pub fn uring(buf_size: usize, first_buffers: usize, eventfd: std::os::fd::OwnedFd) -> io::Result<Self> {
        Ok(Io::Uring(Box::new(completion::UringIo::new(buf_size, first_buffers, eventfd)?)))
    }
}

/// One event loop. See the module docs.
pub struct EventLoop<H> {
    id: u32,
    io: Io,
    listener: Option<TcpListener>,
    conns: Slab<Conn>,
    next_generation: u32,
    pool: BufferPool,
    /// Corked output of the connection being handled.
    out: Vec<u8>,
    /// permessage-deflate: what compresses outgoing messages and what
    /// inflates incoming ones (shared, or a connection's own).
    deflaters: Deflaters,
    inflaters: Inflaters,
    /// The compressed message being handled, inflated; events borrow it.
    inflated: Vec<u8>,
    /// The protocol settings this loop's handshakes use: the server's, but
    /// for the deflate terms offered once `--compression-max-dedicated`
    /// connections of this loop keep contexts of their own (then shared).
    ws_cfg: crate::ws::Config,
    /// This loop's share of `--compression-max-dedicated` (0: no limit).
    max_dedicated: usize,
    handler: H,
    cfg: Arc<ServerConfig>,
    stats: Arc<LoopStats>,
    shared: Arc<Shared>,
    inbox: Receiver<LoopMsg>,
    hub: Arc<Hub>,
    rooms: Rooms,
    /// Publishes made while handling a connection, delivered right after.
    local: Vec<LocalPublish>,
    /// Room deliveries owed, written at the end of the pass.
    owed: Deliveries,
    /// The slice of `owed` one pass writes, reused.
    owed_slice: Vec<Owed>,
    /// Set past `MAX_OWED` owed deliveries, cleared at half: reads wait.
    owing_too_much: bool,
    wheel: TimerWheel,
    ticks: Ticks,
    ready: Vec<(u32, u32)>,
    expired: Vec<u32>,
    resume_accept_at: Option<Instant>,
    emfile_logged: bool,
    shutdown_deadline: Option<Instant>,
    /// Each slot's peer address, kept only while `--max-conns-per-ip`
    /// counts connections (to release its count at close); else empty.
    peers: Vec<IpAddr>,
    /// TLS: where new connections' sessions come from (`None`: plain ws).
    tls: Option<TlsAcceptor>,
    /// Each slot's TLS session (boxed: only TLS servers pay for it).
    tls_conns: Vec<Option<Box<TlsConn>>>,
    /// Records sealed for the connection being written, reused.
    sealed: Vec<u8>,
    /// TLS handshake turns this pass may still take (of
    /// `--tls-handshakes-per-pass`; each may cost a key exchange and a
    /// signature), so a storm of handshakes cannot starve established
    /// connections.
    tls_budget: u32,
    /// When to give the peak's memory back after a ramp-down.
    shrink: Shrink,
}

impl<H: Handler> EventLoop<H> {
    /// A loop over an already registered listener and waker.
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        id: u32,
        io: Io,
        listener: TcpListener,
        handler: H,
        cfg: Arc<ServerConfig>,
        stats: Arc<LoopStats>,
        shared: Arc<Shared>,
        inbox: Receiver<LoopMsg>,
        hub: Arc<Hub>,
    ) -> Self {
        let wheel = TimerWheel::new(cfg.timer_tick());
        let ticks = Ticks {
            handshake: wheel.ticks(cfg.handshake_timeout),
            idle: wheel.ticks(cfg.idle_timeout),
            pong: wheel.ticks(cfg.pong_timeout),
            close: wheel.ticks(cfg.close_timeout),
            send: wheel.ticks(cfg.send_timeout),
        };
        let tls = cfg.tls.clone().map(TlsAcceptor::new);
        let tls_budget = handshake_budget(&cfg);
        let rooms = Rooms::new(hub.bridge().map(|b| b.directory().clone()));
        let shrink = Shrink::new(cfg.release_memory_after);
        EventLoop {
            id,
            io,
            listener: Some(listener),
            conns: Slab::new(),
            next_generation: 0,
            pool: BufferPool::new(cfg.buffer_size, cfg.pool_max_idle),
            out: Vec::with_capacity(cfg.buffer_size),
            deflaters: Deflaters::new(cfg.compression),
            inflaters: Inflaters::default(),
            inflated: Vec::new(),
            ws_cfg: cfg.ws.clone(),
            max_dedicated: cfg.compression.max_dedicated.div_ceil(cfg.worker_count().max(1)),
            handler,
            cfg,
            stats,
            shared,
            inbox,
            hub,
            rooms,
            local: Vec::new(),
            owed: Deliveries::default(),
            owed_slice: Vec::new(),
            owing_too_much: false,
            wheel,
            ticks,
            ready: Vec::new(),
            expired: Vec::new(),
            resume_accept_at: None,
            emfile_logged: false,
            shutdown_deadline: None,
            peers: Vec::new(),
            tls,
            tls_conns: Vec::new(),
            sealed: Vec::new(),
            tls_budget,
            shrink,
        }
    }

    /// Runs until shutdown has closed every connection (or timed out).
    pub fn run(self) -> io::Result<()> {
        self.stats.uring.set(matches!(self.io, Io::Uring(_)) as u64);
        match self.io {
            Io::Epoll(_) => self.run_epoll(),
            Io::Uring(_) => self.run_uring(),
        }
    }

    /// How long the next wait may block: not at all while work is pending.
    fn wait_timeout(&self) -> Duration {
        let busy = !self.ready.is_empty() || !self.owed.is_empty();
        if busy {
            Duration::ZERO
        } else {
            self.wheel.until_next_tick(Instant::now())
        }
    }

    fn run_epoll(mut self) -> io::Result<()> {
        let mut events = Events::with_capacity(1024);
        loop {
            let timeout = self.wait_timeout();
            let polled = match &mut self.io {
                Io::Epoll(poll) => poll.poll(&mut events, Some(timeout)),
                Io::Uring(_) => Err(io::Error::other("the epoll pass runs on a loop without a Poll")),
            };
            if let Err(e) = polled {
                if e.kind() != io::ErrorKind::Interrupted {
                    return Err(e);
                }
            }
            let handling = Instant::now();
            for event in events.iter() {
                match event.token() {
                    LISTENER => self.accept_all(),
                    WAKER => self.drain_inbox(),
                    t => {
                        let (slot, generation) = untoken(t);
                        if event.is_writable() {
                            self.on_writable(slot, generation);
                        }
                        if event.is_read_closed() || event.is_error() {
                            self.mark_peer_closed(slot, generation);
                        }
                        if event.is_readable() || event.is_read_closed() || event.is_error() {
                            self.on_readable(slot, generation);
                        }
                    }
                }
            }
            if self.end_pass(!events.is_empty(), handling) {
                return Ok(());
            }
        }
    }

    /// What every pass ends with, whatever the driver: turns for the ready
    /// list, room deliveries, timers, gauges. True once shutdown is done.
    fn end_pass(&mut self, handled_any: bool, handling: Instant) -> bool {
        // The budget spans this ready list (handshakes put off earlier go
        // first) and the next pass's events.
        self.tls_budget = handshake_budget(&self.cfg);
        self.run_ready_list();
        self.write_owed();
        self.fire_timers(Instant::now());
        self.publish_pool_gauges();
        if handled_any {
            self.stats.observe_iteration(handling.elapsed());
        }
        if let Some(deadline) = self.shutdown_deadline {
            if self.conns.is_empty() {
                return true;
            }
            if Instant::now() >= deadline {
                let slots: Vec<usize> = self.conns.iter().map(|(s, _)| s).collect();
                for slot in slots {
                    self.close(slot, CloseReason::Shutdown);
                }
                return true;
            }
        }
        false
    }

    fn accept_all(&mut self) {
        if self.resume_accept_at.is_some() {
            return;
        }
        if let Io::Uring(_) = self.io {
            return self.arm_accept();
        }
        loop {
            let Some(listener) = &self.listener else {
                return;
            };
            let (socket, peer) = match listener.accept() {
                Ok(accepted) => accepted,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) if is_out_of_descriptors(&e) => return self.pause_accept(&e),
                Err(e) if e.kind() == io::ErrorKind::Interrupted || e.kind() == io::ErrorKind::ConnectionAborted => {
                    continue
                }
                Err(e) => {
                    log::warn!("loop {}: accept failed: {e}", self.id);
                    break;
                }
            };
            self.admit(socket, Some(peer));
        }
    }

    /// Never spin on a full descriptor table: pause this loop's accepting,
    /// retry on a timer (or when a connection closes).
    fn pause_accept(&mut self, e: &io::Error) {
        self.resume_accept_at = Some(Instant::now() + ACCEPT_PAUSE);
        self.stats.accept_pauses.add(1);
        if !self.emfile_logged {
            log::warn!("loop {}: out of file descriptors ({e}); pausing accept", self.id);
            self.emfile_logged = true;
        }
    }

    /// Takes an accepted connection in, or refuses it past `--max-conns` or
    /// its address's limits. `peer` is the address accept gave, if it did.
    fn admit(&mut self, socket: mio::net::TcpStream, peer: Option<SocketAddr>) {
        self.emfile_logged = false;
        self.stats.accepted.add(1);
        let mut counted = None;
        let limits = &self.shared.address_limits;
        if limits.is_enabled() {
            // io_uring's accept gives no address: ask the kernel (only here).
            let Some(ip) = peer.or_else(|| socket.peer_addr().ok()).map(|p| p.ip()) else {
                return; // Gone already: dropping it closes it.
            };
            match limits.admit(ip, Instant::now()) {
                Ok(()) => counted = limits.counts_conns().then_some(ip),
                Err(limited) => {
                    let reason = CloseReason::HandshakeFailed;
                    return self.refuse_at_accept(socket, limited.error, limited.retry_after, reason);
                }
            }
        }
        let open = self.shared.open.fetch_add(1, Ordering::Relaxed);
        let registered = if open >= self.shared.max_conns {
            self.refuse_at_accept(socket, HandshakeError::Overloaded, 1, CloseReason::Overloaded);
            None
        } else {
            self.register(socket).map_err(|e| log::warn!("loop {}: cannot register a connection: {e}", self.id)).ok()
        };
        match (registered, counted) {
            (Some(slot), Some(ip)) => {
                if self.peers.len() <= slot {
                    self.peers.resize(slot + 1, IpAddr::from([0, 0, 0, 0]));
                }
                self.peers[slot] = ip;
            }
            (Some(_), None) => {}
            (None, counted) => {
                self.shared.open.fetch_sub(1, Ordering::Relaxed);
                if let Some(ip) = counted {
                    self.shared.address_limits.release(ip);
                }
            }
        }
    }

    /// Answers a 429 or 503 on a connection refused at accept, and drops it.
    /// Best effort: the reply is small enough for an empty socket buffer,
    /// and nothing of the connection was kept.
    fn refuse_at_accept(
        &mut self,
        mut socket: mio::net::TcpStream,
        error: HandshakeError,
        retry_after: u32,
        reason: CloseReason,
    ) {
        if self.tls.is_none() {
            // Over TLS nothing can be said before a handshake: just close.
            self.out.clear();
            crate::ws::handshake::write_reject_after(&mut self.out, error, retry_after);
            let _ = socket.write(&self.out);
            self.out.clear();
        }
        self.stats.count_handshake_failure(error);
        self.stats.count_close(reason);
        log::debug!("loop {}: refused a connection at accept: {error}", self.id);
    }

    /// Takes the connection into the slab and the driver; its slot.
    fn register(&mut self, mut socket: mio::net::TcpStream) -> io::Result<usize> {
        socket.set_nodelay(true)?;
        let generation = self.next_generation;
        self.next_generation = self.next_generation.wrapping_add(1);
        let entry = self.conns.vacant_entry();
        let slot = entry.key();
        if let Io::Epoll(poll) = &mut self.io {
            // Readable and writable once, edge-triggered: no epoll_ctl per
            // backlog episode. A writable edge only comes after a write hit
            // EAGAIN, so idle connections get no spurious events.
            let interest = Interest::READABLE | Interest::WRITABLE;
            poll.registry().register(&mut socket, token(slot, generation), interest)?;
        }
        if let Some(acceptor) = &mut self.tls {
            let session = acceptor.accept(Instant::now()).map_err(io::Error::other)?;
            if self.tls_conns.len() <= slot {
                self.tls_conns.resize_with(slot + 1, || None);
            }
            self.tls_conns[slot] = Some(Box::new(session));
        }
        let conn = entry.insert(Conn::new(socket, generation));
        if let Io::Uring(uring) = &mut self.io {
            uring.arm_recv(conn, slot);
        }
        self.arm(slot, Timeout::Handshake);
        self.stats.connections.add(1);
        Ok(slot)
    }

    /// Remembers that the peer's FIN (or an error) was reported, so reads
    /// go on to EOF rather than stopping at a short read.
    fn mark_peer_closed(&mut self, slot: usize, generation: u32) {
        if self.is_live(slot, generation) {
            self.conns[slot].flags |= PEER_CLOSED;
        }
    }

    fn is_live(&self, slot: usize, generation: u32) -> bool {
        self.conns.get(slot).is_some_and(|c| c.generation == generation)
    }

    fn on_readable(&mut self, slot: usize, generation: u32) {
        if !self.is_live(slot, generation) || self.conns[slot].has(IN_READY_LIST) {
            return;
        }
        if let Io::Uring(_) = self.io {
            return self.resume_input(slot);
        }
        if self.tls_handshaking(slot) && !self.take_tls_turn(slot) {
            return;
        }
        if self.owes_too_much() {
            // Its input waits (in the ready list) until the loop has written
            // half of what it owes.
            let conn = &mut self.conns[slot];
            conn.flags |= IN_READY_LIST;
            self.ready.push((slot as u32, generation));
            return;
        }
        if let Some(signal) = self.read_and_handle(slot) {
            self.signal(slot, signal);
        }
        self.debug_check(slot);
    }

    /// True while the connection's TLS handshake is under way.
    fn tls_handshaking(&self, slot: usize) -> bool {
        self.tls_conns.get(slot).and_then(|t| t.as_deref()).is_some_and(TlsConn::is_handshaking)
    }

    /// Takes one of this pass's TLS handshake turns for the connection, or
    /// puts it off to the next pass (its bytes wait in the socket, or in
    /// its pending record on io_uring) when the budget is spent.
    fn take_tls_turn(&mut self, slot: usize) -> bool {
        if self.tls_budget > 0 {
            self.tls_budget -= 1;
            return true;
        }
        let conn = &mut self.conns[slot];
        if !conn.has(IN_READY_LIST) {
            conn.flags |= IN_READY_LIST;
            self.ready.push((slot as u32, conn.generation));
        }
        self.stats.tls_deferred.add(1);
        false
    }

    /// Reads what the socket has into `buf`: as it comes, or (TLS) through
    /// the connection's TLS session (see [`unseal_into`](Self::unseal_into)).
    /// Returns the bytes taken off the wire (0: end of input), or why there
    /// were none, and the room the read had.
    fn receive(&mut self, slot: usize, buf: &mut Vec<u8>) -> (Result<usize, Unread>, usize) {
        if self.tls_conns.get(slot).is_none_or(Option::is_none) {
            let spare = buf.capacity() - buf.len();
            return (self.conns[slot].read_into(buf).map_err(Unread::of), spare);
        }
        let mut cipher = self.pool.take();
        let spare = cipher.capacity();
        let result = match self.conns[slot].read_into(&mut cipher) {
            Ok(n) if n > 0 => self.unseal_into(slot, &mut cipher, buf).map(|()| n).map_err(Unread::Fault),
            other => other.map_err(Unread::of),
        };
        self.pool.give(cipher);
        (result, spare)
    }

    /// TLS: feeds `cipher` (bytes off the wire) to the connection's session,
    /// which appends the plaintext to `plain`; the handshake records and
    /// alerts it answers with are sent at once, in the clear (they are
    /// records already). Counts handshakes done and failed.
    fn unseal_into(&mut self, slot: usize, cipher: &mut [u8], plain: &mut Vec<u8>) -> Result<(), CloseReason> {
        let Some(tls) = self.tls_conns.get_mut(slot).and_then(|t| t.as_deref_mut()) else {
            plain.extend_from_slice(cipher);
            return Ok(());
        };
        self.sealed.clear();
        let unsealed = tls.unseal(cipher, plain, &mut self.sealed);
        let conn = &mut self.conns[slot];
        let sent = if self.sealed.is_empty() {
            Ok(0)
        } else {
            write_via(&mut self.io, conn, slot, &[&self.sealed[..]], &mut self.pool, &self.stats, None)
        };
        if self.sealed.capacity() > CORK_LIMIT {
            self.sealed = Vec::new();
        }
        match unsealed {
            Err(e) => {
                if e.in_handshake {
                    self.stats.count_tls_failure(e.failure);
                }
                log::debug!("loop {}: TLS failed on connection {slot}: {}", self.id, e.failure.label());
                Err(CloseReason::TlsFailed)
            }
            Ok(unsealed) => {
                if let Some(took) = unsealed.handshake_done {
                    self.stats.observe_tls_handshake(took);
                }
                sent.map(|_| ())
            }
        }
    }

    /// Checks a live connection's invariants; nothing at all in release.
    #[inline]
    fn debug_check(&self, slot: usize) {
        if cfg!(debug_assertions) {
            if let Some(conn) = self.conns.get(slot) {
                conn.debug_check_invariants();
            }
        }
    }

    /// True while the loop owes more deliveries than it should take on more
    /// input for (with hysteresis: from `MAX_OWED` down to half).
    fn owes_too_much(&mut self) -> bool {
        let owed = self.owed.len();
        if owed > MAX_OWED {
            self.owing_too_much = true;
        } else if owed <= MAX_OWED / 2 {
            self.owing_too_much = false;
        }
        self.owing_too_much
    }

    /// Tells the connection's [`Stage`] what happened and does what it
    /// answers: the one path by which a connection is timed and ended.
    fn signal(&mut self, slot: usize, signal: Signal) {
        let queued = self.queued(slot);
        let conn = &mut self.conns[slot];
        let facts = Facts {
            phase: conn.session.phase(),
            queued,
            max_backlog: self.cfg.max_backlog,
            shutting_down: self.shutdown_deadline.is_some(),
        };
        let actions = conn.stage.on(signal, facts);
        self.apply(slot, actions);
    }

    /// Bytes given to a connection that the kernel has not taken yet: its
    /// backlog, and (io_uring) the rest of a send in flight.
    fn queued(&self, slot: usize) -> usize {
        let conn = &self.conns[slot];
        match &self.io {
            Io::Uring(uring) if conn.has(SENDING) => conn.wbuf.len() + uring.in_flight(slot, conn.generation),
            _ => conn.wbuf.len(),
        }
    }

    fn apply(&mut self, slot: usize, actions: Actions) {
        for action in actions.iter() {
            let fault = match action {
                Action::Arm(timeout) => {
                    self.arm(slot, timeout);
                    None
                }
                Action::QueueClose(goodbye) => {
                    let (code, reason) = goodbye.frame();
                    self.conns[slot].session.write_close(&mut self.out, code, reason);
                    self.flush(slot).err()
                }
                Action::Ping => {
                    self.conns[slot].session.write_ping(&mut self.out, b"wsloop");
                    self.flush(slot).err()
                }
                Action::ReadAgain => {
                    let conn = &mut self.conns[slot];
                    if !conn.has(IN_READY_LIST) {
                        conn.flags |= IN_READY_LIST;
                        self.ready.push((slot as u32, conn.generation));
                    }
                    None
                }
                Action::ShutdownWrite => {
                    if let Some(tls) = self.tls_conns.get_mut(slot).and_then(|t| t.as_deref_mut()) {
                        // TLS says goodbye before TCP does.
                        self.sealed.clear();
                        tls.close_notify(&mut self.sealed);
                        let conn = &mut self.conns[slot];
                        let _ =
                            write_via(&mut self.io, conn, slot, &[&self.sealed[..]], &mut self.pool, &self.stats, None);
                    }
                    self.conns[slot].socket.shutdown(std::net::Shutdown::Write).err().map(|e| io_reason(&e))
                }
                Action::Finish(reason) => return self.signal(slot, Signal::Fault(reason)),
                Action::Close(reason) => {
                    self.close(slot, reason);
                    return;
                }
            };
            if let Some(reason) = fault {
                // Whatever else was asked for is moot now.
                return self.signal(slot, Signal::Fault(reason));
            }
        }
    }

    /// (Re)arms the connection's timer with `timeout` from now.
    fn arm(&mut self, slot: usize, timeout: Timeout) {
        let deadline = self.wheel.now() + self.ticks.of(timeout);
        self.wheel.schedule(&mut self.conns, slot as u32, deadline);
    }

    fn run_ready_list(&mut self) {
        if self.ready.is_empty() {
            return;
        }
        for (slot, generation) in std::mem::take(&mut self.ready) {
            if self.is_live(slot as usize, generation) {
                self.conns[slot as usize].flags &= !IN_READY_LIST;
                self.on_readable(slot as usize, generation);
            }
        }
    }

    /// Reads up to the budget, handling every whole frame as it arrives;
    /// returns what the turn amounts to for the connection's life.
    fn read_and_handle(&mut self, slot: usize) -> Option<Signal> {
        let conn = &mut self.conns[slot];
        match conn.stage {
            // Nothing more will be handled; just drain what the peer sends.
            stage if stage.is_ending() => return self.discard_input(slot),
            // The peer's requests wait in its socket until it reads replies.
            Stage::Paused => return None,
            _ => {}
        }
        if conn.has(OWED) {
            // What it was owed before this input comes first: its replies (a
            // close echo, say) must not overtake earlier deliveries.
            self.write_owed_ahead(slot);
            if !self.conns.contains(slot) {
                return None;
            }
        }
        let conn = &mut self.conns[slot];
        let before = conn.session.phase();
        let mut buf = if conn.rbuf.capacity() > 0 { std::mem::take(&mut conn.rbuf) } else { self.pool.take() };
        let mut wanted = 0;
        let mut budget = READ_BUDGET;
        let end = loop {
            if buf.capacity() - buf.len() == 0 || wanted > buf.capacity() {
                buf.reserve(wanted.saturating_sub(buf.len()).max(self.pool.buf_size()));
            }
            let drained;
            let (read, spare) = self.receive(slot, &mut buf);
            match read {
                Ok(0) => break Some(Signal::Eof),
                Ok(n) => {
                    self.stats.bytes_received.add(n as u64);
                    budget = budget.saturating_sub(n);
                    // A short read emptied the receive queue: with edge
                    // triggering, more data brings a new event, so the read
                    // that would only say EAGAIN is skipped (one syscall less
                    // per message). Not once the peer's FIN was reported:
                    // its EOF must still be read.
                    drained = n < spare && !self.conns[slot].has(PEER_CLOSED);
                }
                Err(Unread::Empty) => break None,
                Err(Unread::Interrupted) => continue,
                Err(Unread::Fault(reason)) => break Some(Signal::Fault(reason)),
            }
            let (consumed, handled) = self.handle_input(slot, &mut buf);
            buf.drain(..consumed);
            if !self.local.is_empty() {
                self.deliver_local();
            }
            match handled {
                Ok(w) => wanted = w,
                Err(reason) => break Some(Signal::Fault(reason)),
            }
            if drained || self.conns[slot].wbuf.len() > self.cfg.max_backlog {
                break None;
            }
            if budget == 0 {
                let conn = &mut self.conns[slot];
                conn.flags |= IN_READY_LIST;
                self.ready.push((slot as u32, conn.generation));
                break None;
            }
        };
        self.keep_or_return(slot, buf);
        if let Err(reason) = self.flush(slot) {
            return Some(Signal::Fault(reason));
        }
        Some(end.unwrap_or(Signal::Handled { before, after: self.conns[slot].session.phase() }))
    }

    /// Keeps unconsumed input in the connection, or gives the buffer back.
    fn keep_or_return(&mut self, slot: usize, buf: Vec<u8>) {
        let conn = &mut self.conns[slot];
        if buf.is_empty() {
            self.pool.give(buf);
        } else if buf.capacity() > self.pool.buf_size() && buf.len() <= self.pool.buf_size() {
            // A large frame completed: keep the few leftover bytes in a
            // pool-sized buffer and free the big one.
            let mut small = self.pool.take();
            small.extend_from_slice(&buf);
            self.pool.give(buf);
            conn.rbuf = small;
        } else if buf.capacity() > self.pool.buf_size() && buf.len() <= buf.capacity() / 4 {
            // A large frame completed and the start of the next one is
            // kept: keep it in a buffer of its size, not the big one's.
            let mut kept = buf;
            kept.shrink_to(kept.len().max(self.pool.buf_size()));
            conn.rbuf = kept;
        } else {
            conn.rbuf = buf;
        }
    }

    fn discard_input(&mut self, slot: usize) -> Option<Signal> {
        let mut scratch = self.pool.take();
        let end = loop {
            scratch.clear();
            match self.conns[slot].read_into(&mut scratch) {
                Ok(0) => break Some(Signal::Eof),
                Ok(_) => continue,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break None,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => break Some(Signal::Fault(io_reason(&e))),
            }
        };
        self.pool.give(scratch);
        end
    }

    /// Decodes and handles every whole frame in `buf` (unmasking in place).
    /// Returns how many bytes it consumed, and the buffer length the next
    /// frame needs or why the connection must end.
    fn handle_input(&mut self, slot: usize, buf: &mut [u8]) -> (usize, Result<usize, CloseReason>) {
        let EventLoop {
            conns,
            handler,
            out,
            cfg,
            stats,
            id,
            pool,
            rooms,
            hub,
            local,
            deflaters,
            inflaters,
            inflated,
            ws_cfg,
            io,
            tls_conns,
            sealed,
            ..
        } = self;
        let conn = &mut conns[slot];
        let conn_id = ConnId { loop_id: *id, slot: slot as u32, generation: conn.generation };
        let mut pos = 0;
        let mut sent = 0u64;
        let mut received = 0u64;
        let mut published = 0u64;
        let mut agreed_own = false;
        let result = loop {
            let mut inflater = inflaters.for_conn(conn_id.slot);
            let inflation =
                conn.session.deflate_window().map(|_| Inflation { inflater: &mut inflater, output: &mut *inflated });
            let decoded = conn.session.decode_inflating(&mut buf[pos..], &mut conn.assembly, out, ws_cfg, inflation);
            let decoded = match decoded {
                Ok(d) => d,
                Err(e) => break Err(decode_failure(e, stats, *id)),
            };
            pos += decoded.consumed;
            let Some(event) = decoded.event else {
                break Ok(decoded.wanted);
            };
            if let Event::Upgrade(request) = &event {
                // Who may connect: the application's verdict, before the 101.
                let upgrade = Upgrade { request, socket: &conn.socket };
                if let Err(refusal) = handler.on_upgrade(&upgrade) {
                    let refused = conn.session.refuse(out, refusal.error(), refusal.retry_after());
                    break Err(decode_failure(refused, stats, *id));
                }
                conn.session.accept(out, request);
            }
            let mut ctx = Ctx {
                id: conn_id,
                session: &mut conn.session,
                out,
                deflaters,
                sent: &mut sent,
                rooms,
                room_limits: &cfg.rooms,
                hub,
                local,
                published: &mut published,
            };
            match event {
                Event::Upgrade(request) => {
                    conn.flags |= OPENED;
                    if let Some(terms) = &request.deflate {
                        ctx.deflaters.agreed(conn_id.slot, terms);
                        inflaters.agreed(conn_id.slot, terms);
                        agreed_own |= terms.server_takeover || terms.client_takeover;
                    }
                    handler.on_open(&mut ctx, &request);
                }
                Event::Text(text) => {
                    received += 1;
                    handler.on_message(&mut ctx, Message::Text(text));
                }
                Event::Binary(data) => {
                    received += 1;
                    handler.on_message(&mut ctx, Message::Binary(data));
                }
                Event::Ping(_) | Event::Pong(_) | Event::Close { .. } => {}
            }
            if conn.assembly.capacity() > 0 && !conn.session.is_assembling() {
                conn.assembly = Vec::new();
            }
            if out.len() > CORK_LIMIT {
                let seal = Seal::of(tls_conns, sealed, slot);
                let written = write_via(io, conn, slot, &[&out[..]], pool, stats, seal);
                out.clear();
                if let Err(reason) = written {
                    break Err(reason);
                }
            }
        };
        if inflated.capacity() > CORK_LIMIT {
            // A large message was inflated: keep the loop's memory flat.
            *inflated = Vec::new();
        }
        stats.messages_received.add(received);
        stats.messages_sent.add(sent);
        stats.room_published.add(published);
        if agreed_own {
            self.limit_dedicated();
        }
        (pos, result)
    }

    fn on_writable(&mut self, slot: usize, generation: u32) {
        if !self.is_live(slot, generation) || self.conns[slot].wbuf.is_empty() {
            return;
        }
        let before = self.conns[slot].wbuf.len();
        match self.flush(slot) {
            Err(reason) => self.signal(slot, Signal::Fault(reason)),
            Ok(earlier_unsent) if earlier_unsent < before => self.signal(slot, Signal::Progress),
            Ok(_) => {}
        }
        self.debug_check(slot);
    }

    /// Writes the corked output behind any backlog; returns how much of
    /// the earlier backlog is still unsent.
    fn flush(&mut self, slot: usize) -> Result<usize, CloseReason> {
        let conn = &mut self.conns[slot];
        let seal = Seal::of(&mut self.tls_conns, &mut self.sealed, slot);
        let result = write_via(&mut self.io, conn, slot, &[&self.out[..]], &mut self.pool, &self.stats, seal);
        self.out.clear();
        if self.out.capacity() > CORK_LIMIT {
            // A large message passed through: keep the loop's memory flat.
            self.out = Vec::with_capacity(self.cfg.buffer_size);
        }
        result
    }

    /// Owes the publishes made while handling a connection to this loop's
    /// other members of each room.
    fn deliver_local(&mut self) {
        for p in std::mem::take(&mut self.local) {
            match &p.room {
                Some(room) => self.deliver(room, &p.frame, Some(p.skip)),
                None => self.deliver_to_all(&p.frame, Some(p.skip)),
            }
        }
    }

    /// Owes a publication to every member of `room` on this loop (but
    /// `skip`), each the frame its terms call for (encoded once, shared);
    /// `write_owed` writes it at the end of the pass.
    fn deliver(&mut self, room: &str, frame: &Publication, skip: Option<u32>) {
        let mut delivered = 0u64;
        for slot in self.rooms.members(room).filter(|m| Some(*m) != skip) {
            let conn = &mut self.conns[slot as usize];
            if conn.session.can_send() && !conn.stage.is_ending() {
                let window = self.deflaters.shared_window(slot, &conn.session);
                let id = self.owed.intern(frame.frame_for(window, &mut self.deflaters));
                self.owed.push(slot, conn.generation, id);
                conn.flags |= OWED;
                delivered += 1;
            }
        }
        self.stats.messages_sent.add(delivered);
        self.stats.room_delivered.add(delivered);
    }

    /// Owes a publication to every open connection of this loop (but `skip`).
    fn deliver_to_all(&mut self, frame: &Publication, skip: Option<u32>) {
        let mut delivered = 0u64;
        for (slot, conn) in self.conns.iter_mut() {
            let slot = slot as u32;
            if Some(slot) != skip && conn.session.can_send() && !conn.stage.is_ending() {
                let window = self.deflaters.shared_window(slot, &conn.session);
                let id = self.owed.intern(frame.frame_for(window, &mut self.deflaters));
                self.owed.push(slot, conn.generation, id);
                conn.flags |= OWED;
                delivered += 1;
            }
        }
        self.stats.messages_sent.add(delivered);
        self.stats.room_delivered.add(delivered);
    }

    /// Writes what the connection in `slot` is owed, ahead of its turn in
    /// the round: its replies to new input must not overtake them.
    fn write_owed_ahead(&mut self, slot: usize) {
        // `owed_slice` is free here: only `write_owed` holds it, and no
        // input is read while it runs.
        let mut owed = std::mem::take(&mut self.owed_slice);
        self.owed.take_for(slot as u32, &mut owed);
        if !owed.is_empty() {
            self.write_owed_to(&owed);
        }
        owed.clear();
        self.owed_slice = owed;
    }

    /// Writes a slice of what members are owed: one `writev` per member of
    /// every frame it is owed, shared, behind its backlog.
    fn write_owed(&mut self) {
        if self.owed.is_empty() {
            return;
        }
        let mut slice = std::mem::take(&mut self.owed_slice);
        self.owed.take_slice(DELIVERY_SLICE, &mut slice);
        for owed in slice.chunk_by(|a, b| a.slot == b.slot) {
            self.write_owed_to(owed);
        }
        slice.clear();
        self.owed_slice = slice;
        self.owed.release_frames();
    }

    /// A member whose earlier backlog is still over the cap once the kernel
    /// has taken what it can is cut off as a slow consumer; the others are
    /// not held back. A member that keeps reading takes any one publish,
    /// whatever its size.
    fn write_owed_to(&mut self, owed: &[Owed]) {
        let slot = owed[0].slot as usize;
        let Some(conn) = self.conns.get_mut(slot) else { return };
        conn.flags &= !OWED;
        if !conn.session.can_send() || conn.stage.is_ending() {
            return;
        }
        let generation = conn.generation;
        let arena = &self.owed;
        let mut frames: Vec<&[u8]> = Vec::new();
        let one;
        let parts: &[&[u8]] = if let [single] = owed {
            // The common case, one frame: no list to allocate.
            let frame = arena.frame(single.frame);
            if single.generation != generation || frame.is_empty() {
                return;
            }
            one = [frame];
            &one
        } else {
            let live = owed.iter().filter(|o| o.generation == generation).map(|o| arena.frame(o.frame));
            frames.extend(live.filter(|f| !f.is_empty()));
            if frames.is_empty() {
                return;
            }
            &frames
        };
        // A connection with its own deflate context gets each frame
        // compressed for it, now: in the order it goes on the wire.
        let own;
        let parts: &[&[u8]] = if self.deflaters.has_own(slot as u32) {
            let mut recompressed = Vec::new();
            for frame in parts {
                if let Ok(Some(head)) = FrameHead::decode(frame) {
                    let payload = &frame[head.header_len as usize..];
                    self.deflaters.write(slot as u32, &conn.session, &mut recompressed, head.opcode, payload);
                }
            }
            own = [recompressed];
            &[&own[0][..]]
        } else {
            parts
        };
        let before = conn.wbuf.len();
        self.stats.room_writes.add(1);
        let seal = Seal::of(&mut self.tls_conns, &mut self.sealed, slot);
        match write_via(&mut self.io, conn, slot, parts, &mut self.pool, &self.stats, seal) {
            Ok(earlier_unsent) => {
                self.signal(slot, Signal::Published { earlier_unsent });
                let still_serving = self.conns.get(slot).is_some_and(|c| !c.stage.is_ending());
                if still_serving && earlier_unsent < before {
                    self.signal(slot, Signal::Progress);
                }
            }
            Err(reason) => self.signal(slot, Signal::Fault(reason)),
        }
    }

    /// Removes the connection and frees what it held.
    fn close(&mut self, slot: usize, reason: CloseReason) {
        self.wheel.remove(&mut self.conns, slot as u32);
        self.rooms.remove_conn(slot as u32);
        self.deflaters.forget(slot as u32);
        self.inflaters.forget(slot as u32);
        self.limit_dedicated();
        let conn = self.conns.remove(slot);
        if let Io::Uring(uring) = &mut self.io {
            uring.forget(&conn, slot);
        }
        if let Some(mut tls) = self.tls_conns.get_mut(slot).and_then(Option::take) {
            let failure =
                if reason == CloseReason::HandshakeTimeout { TlsFailure::Timeout } else { TlsFailure::Closed };
            if let Some(failure) = tls.fail(failure) {
                self.stats.count_tls_failure(failure);
            }
        }
        self.stats.backlog_bytes.sub(conn.wbuf.len() as u64);
        // io_uring's `wbuf` is sized to its bytes, not pooled: it is freed.
        let pooled_wbuf = matches!(self.io, Io::Epoll(_));
        for (buf, pooled) in [(conn.rbuf, true), (conn.wbuf, pooled_wbuf)] {
            if pooled && buf.capacity() > 0 {
                self.pool.give(buf);
            }
        }
        if reason == CloseReason::HandshakeTimeout {
            self.stats.count_handshake_timeout();
        }
        self.stats.count_close(reason);
        self.stats.connections.sub(1);
        self.shared.open.fetch_sub(1, Ordering::Relaxed);
        if self.shared.address_limits.counts_conns() {
            self.shared.address_limits.release(self.peers[slot]);
        }
        if conn.flags & OPENED != 0 {
            let id = ConnId { loop_id: self.id, slot: slot as u32, generation: conn.generation };
            let mut ctx = CloseCtx { id, hub: &self.hub, local: &mut self.local, published: 0 };
            self.handler.on_close(&mut ctx, reason);
            self.stats.room_published.add(ctx.published);
        }
        log::debug!("loop {}: connection {slot} closed: {}", self.id, reason.label());
        // Dropping the socket closes it, which also removes it from epoll.
        drop(conn.socket);
        if self.resume_accept_at.is_some() {
            self.resume_accept_at = Some(Instant::now());
        }
        if !self.local.is_empty() {
            // What `on_close` published ("alice left").
            self.deliver_local();
        }
    }

    fn fire_timers(&mut self, now: Instant) {
        if let Some(at) = self.resume_accept_at {
            if now >= at {
                self.resume_accept_at = None;
                self.accept_all();
            }
        }
        let tick = self.wheel.tick_at(now);
        if tick <= self.wheel.now() {
            return;
        }
        let mut expired = std::mem::take(&mut self.expired);
        self.wheel.advance(&mut self.conns, tick, &mut expired);
        for slot in expired.drain(..) {
            self.on_timeout(slot as usize);
        }
        self.expired = expired;
        if self.shrink.due(now, self.conns.len(), self.conns.capacity()) {
            self.release_memory();
        }
    }

    /// Gives back what the peak left: slab and side-table capacity past the
    /// highest occupied slot, spare pooled buffers, fan-out scratch, room
    /// tables, and the heap's free memory. Only when mostly empty
    /// ([`Shrink`]), so the copies are of the few connections left.
    fn release_memory(&mut self) {
        let before = self.conns.capacity();
        self.conns.shrink_to_fit();
        let end = self.conns.iter().map(|(slot, _)| slot + 1).max().unwrap_or(0);
        self.peers.truncate(end);
        self.peers.shrink_to_fit();
        self.tls_conns.truncate(end);
        self.tls_conns.shrink_to_fit();
        self.pool.trim(SPARE_BUFFERS_KEPT);
        self.owed.shrink_to_fit();
        self.owed_slice = Vec::new();
        self.rooms.shrink_to_fit();
        for scratch in [&mut self.out, &mut self.inflated, &mut self.sealed] {
            if scratch.is_empty() {
                scratch.shrink_to(self.cfg.buffer_size);
            }
        }
        self.ready.shrink_to_fit();
        self.expired.shrink_to_fit();
        self.local.shrink_to_fit();
        if let Io::Uring(uring) = &mut self.io {
            uring.shrink_to_fit();
        }
        trim_heap();
        self.shrink.released(self.conns.len(), self.conns.capacity());
        self.stats.memory_releases.add(1);
        log::debug!(
            "loop {}: released memory: slab {before} -> {} slots for {} connections",
            self.id,
            self.conns.capacity(),
            self.conns.len()
        );
    }

    fn on_timeout(&mut self, slot: usize) {
        self.signal(slot, Signal::Timer);
    }

    /// Handles everything posted to this loop: publishes are owed to the
    /// members of their room, written at the end of the pass.
    fn drain_inbox(&mut self) {
        self.hub.clear_wake(self.id as usize);
        while let Ok(msg) = self.inbox.try_recv() {
            match msg {
                LoopMsg::Publish { room, frame } => self.deliver(&room, &frame, None),
                LoopMsg::Broadcast { frame } => self.deliver_to_all(&frame, None),
                LoopMsg::Shutdown => self.begin_shutdown(),
            }
        }
    }

    fn begin_shutdown(&mut self) {
        if self.shutdown_deadline.is_some() {
            return;
        }
        self.shutdown_deadline = Some(Instant::now() + self.cfg.shutdown_timeout);
        if let Some(mut listener) = self.listener.take() {
            match &mut self.io {
                Io::Epoll(poll) => {
                    let _ = poll.registry().deregister(&mut listener);
                }
                Io::Uring(uring) => uring.stop_accepting(),
            }
        }
        let slots: Vec<usize> = self.conns.iter().map(|(s, _)| s).collect();
        for slot in slots {
            self.signal(slot, Signal::Shutdown);
        }
    }

    /// Offers the shared terms instead of dedicated ones while this loop's
    /// share of `--compression-max-dedicated` is taken, and dedicated ones
    /// again once a connection holding a context has gone.
    fn limit_dedicated(&mut self) {
        let super::compression::CompressionMode::Dedicated(bits) = self.cfg.compression.mode else { return };
        if self.max_dedicated == 0 {
            return;
        }
        let agreed = self.deflaters.dedicated_agreed().max(self.inflaters.dedicated_agreed());
        let policy = if agreed >= self.max_dedicated {
            crate::ws::extension::DeflatePolicy::shared()
        } else {
            crate::ws::extension::DeflatePolicy::dedicated(bits)
        };
        self.ws_cfg.handshake.deflate = Some(policy);
    }

    fn publish_pool_gauges(&mut self) {
        let counts = std::mem::take(&mut self.deflaters.counts);
        if counts.messages > 0 {
            self.stats.compressed_messages.add(counts.messages);
            self.stats.compressed_plain_bytes.add(counts.plain_bytes);
            self.stats.compressed_bytes.add(counts.deflated_bytes);
        }
        if self.cfg.compression.mode != super::compression::CompressionMode::Off {
            let dedicated = self.deflaters.dedicated_in_use().max(self.inflaters.dedicated_in_use());
            self.stats.dedicated_codecs.set(dedicated as u64);
        }
        self.stats.pool_in_use.set(self.pool.in_use() as u64);
        self.stats.pool_idle.set(self.pool.idle() as u64);
        self.stats.rooms.set(self.rooms.room_count() as u64);
        self.stats.room_members.set(self.rooms.member_count() as u64);
    }
}

/// Writes (epoll) or queues for this pass's send (io_uring) `parts` behind
/// the connection's backlog; returns how much of the earlier backlog the
/// kernel has not taken (io_uring: all of it, as nothing is written yet).
fn write_via(
    io: &mut Io,
    conn: &mut Conn,
    slot: usize,
    parts: &[&[u8]],
    pool: &mut BufferPool,
    stats: &LoopStats,
    seal: Option<Seal<'_>>,
) -> Result<usize, CloseReason> {
    if let Some(Seal { tls, sealed }) = seal {
        if parts.iter().any(|p| !p.is_empty()) {
            // TLS: the parts leave as records, sealed into one buffer.
            sealed.clear();
            tls.seal(parts, sealed).map_err(|_| CloseReason::TlsFailed)?;
            let written = write_via(io, conn, slot, &[&sealed[..]], pool, stats, None);
            if sealed.capacity() > CORK_LIMIT {
                *sealed = Vec::new();
            }
            return written;
        }
    }
    match io {
        Io::Epoll(_) => write_parts(conn, parts, pool, stats),
        Io::Uring(uring) => Ok(uring.queue(conn, slot, parts, stats)),
    }
}

/// Why a read turn got no bytes.
enum Unread {
    /// The socket has nothing more now (`EAGAIN`).
    Empty,
    /// A signal interrupted the read: read again.
    Interrupted,
    /// The connection must end: a socket error, or TLS records that failed.
    Fault(CloseReason),
}

impl Unread {
    /// What a failed socket read means.
    fn of(e: io::Error) -> Unread {
        match e.kind() {
            io::ErrorKind::WouldBlock => Unread::Empty,
            io::ErrorKind::Interrupted => Unread::Interrupted,
            _ => Unread::Fault(io_reason(&e)),
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

/// What turns a connection's output into TLS records: its session and the
/// loop's sealing buffer. `None` for a plain connection.
struct Seal<'a> {
    tls: &'a mut TlsConn,
    sealed: &'a mut Vec<u8>,
}

impl<'a> Seal<'a> {
    /// The seal for `slot`, if it speaks TLS.
    fn of(tls_conns: &'a mut [Option<Box<TlsConn>>], sealed: &'a mut Vec<u8>, slot: usize) -> Option<Self> {
        let tls = tls_conns.get_mut(slot)?.as_deref_mut()?;
        Some(Seal { tls, sealed })
    }
}

/// True for the accept errors that mean the process (or system) is out of
/// descriptors or memory for sockets: accepting pauses, never spins.
fn is_out_of_descriptors(e: &io::Error) -> bool {
    matches!(e.raw_os_error(), Some(libc::EMFILE | libc::ENFILE | libc::ENOBUFS | libc::ENOMEM))
}

/// Counts and logs a decode failure; the reason it ends the connection for
/// (its reply, a 4xx or a close frame, is already in the output).
fn decode_failure(e: WsError, stats: &LoopStats, loop_id: u32) -> CloseReason {
    match e {
        WsError::Handshake(e) => {
            stats.count_handshake_failure(e);
            log::debug!("loop {loop_id}: handshake refused: {e}");
            CloseReason::HandshakeFailed
        }
        WsError::Protocol(e) => {
            log::debug!("loop {loop_id}: protocol error, closing {}: {e}", e.close_code());
            CloseReason::ProtocolError
        }
    }
}
