//! The epoll driver: readiness, edge-triggered, through mio. READABLE |
//! WRITABLE are registered once per connection; a read turn `recv`s into
//! pooled buffers up to the read budget (then the ready list gives others
//! a turn), a short read skips the read that would only say EAGAIN, and
//! writes go straight to the socket (`socket.rs`), only what the kernel
//! leaves being queued.
//!
//! One pass: poll -> accept / read / write for each event -> the engine's
//! end of pass (ready list, deliveries, timers).

mod socket;

use std::io;

use mio::net::TcpListener;
use mio::{Events, Interest, Poll, Token};

use crate::runtime::{token, untoken, BufferPool};
use crate::server::engine::conn::{Conn, IN_READY_LIST, PEER_CLOSED};
use crate::server::engine::transport::{Part, Transport};
use crate::server::engine::{AcceptFailure, DriverTurns, Engine, Turn, READ_BUDGET};
use crate::server::handler::Handler;
use crate::server::life::{io_reason, CloseReason, Signal};
use crate::server::stats::LoopStats;

/// The listener's token.
pub(crate) const LISTENER: Token = Token(usize::MAX - 1);
/// The inbox waker's token.
pub(crate) const WAKER: Token = Token(usize::MAX - 2);

/// The epoll driver's I/O state: the `Poll` the listener, the waker and
/// every connection are registered with.
pub(crate) struct EpollIo {
    poll: Poll,
    /// The backlogs that hold shared frames by reference (see `socket`).
    chains: socket::Chains,
}

impl EpollIo {
    /// Over `poll`, with the listener and waker already registered.
    pub(crate) fn new(poll: Poll) -> Self {
        EpollIo { poll, chains: socket::Chains::new() }
    }
}

impl Transport for EpollIo {
    const POOLED_BACKLOG: bool = true;

    fn attach(&mut self, conn: &mut Conn, slot: usize) -> io::Result<()> {
        // Readable and writable once, edge-triggered: no epoll_ctl per
        // backlog episode. A writable edge only comes after a write hit
        // EAGAIN, so idle connections get no spurious events.
        let interest = Interest::READABLE | Interest::WRITABLE;
        self.poll.registry().register(&mut conn.socket, token(slot, conn.generation), interest)
    }

    #[inline]
    fn write(
        &mut self,
        conn: &mut Conn,
        slot: usize,
        parts: &[Part<'_>],
        pool: &mut BufferPool,
        stats: &LoopStats,
    ) -> Result<usize, CloseReason> {
        socket::write_parts(conn, &mut self.chains, slot as u32, parts, pool, stats)
    }

    #[inline]
    fn queued(&self, conn: &Conn, slot: usize) -> usize {
        if self.chains.is_empty() {
            return conn.wbuf.len();
        }
        conn.wbuf.len() + self.chains.get(&(slot as u32)).map_or(0, |c| c.len())
    }

    fn shared_queued(&self, _conn: &Conn, slot: usize) -> usize {
        self.chains.get(&(slot as u32)).map_or(0, |c| c.shared_len())
    }

    /// Drops the connection's chain, if any (closing the socket takes it
    /// out of epoll).
    fn detach(&mut self, _conn: &Conn, slot: usize, stats: &LoopStats) {
        if let Some(chain) = self.chains.remove(&(slot as u32)) {
            stats.backlog_bytes.sub(chain.len() as u64);
            stats.shared_backlog_bytes.sub(chain.shared_len() as u64);
        }
    }

    fn stop_accepting(&mut self, listener: &mut TcpListener) {
        let _ = self.poll.registry().deregister(listener);
    }

    fn listen(&mut self, listener: &mut TcpListener) -> io::Result<()> {
        socket2::SockRef::from(&*listener).set_nonblocking(true)?;
        self.poll.registry().register(listener, LISTENER, Interest::READABLE)
    }

    fn can_hand_over(&self, _slot: usize) -> bool {
        true
    }

    /// Deregisters the socket; the backlog is the pooled `wbuf` and then
    /// the chain, if any.
    fn hand_over(&mut self, conn: &mut Conn, slot: usize, pool: &mut BufferPool, stats: &LoopStats) -> Vec<u8> {
        let _ = self.poll.registry().deregister(&mut conn.socket);
        let mut unsent = conn.wbuf.clone();
        stats.backlog_bytes.sub(conn.wbuf.len() as u64);
        if conn.wbuf.capacity() > 0 {
            pool.give(std::mem::take(&mut conn.wbuf));
        }
        if let Some(chain) = self.chains.remove(&(slot as u32)) {
            chain.copy_to(&mut unsent);
            stats.backlog_bytes.sub(chain.len() as u64);
            stats.shared_backlog_bytes.sub(chain.shared_len() as u64);
        }
        unsent
    }

    fn release_memory(&mut self, _end: usize) {
        self.chains.shrink_to_fit();
    }
}

/// One loop on epoll: its engine and the events of one poll.
pub(crate) struct EpollDriver<H> {
    engine: Engine<H, EpollIo>,
    events: Events,
}

impl<H: Handler> EpollDriver<H> {
    /// A driver running `engine`.
    pub(crate) fn new(engine: Engine<H, EpollIo>) -> Self {
        EpollDriver { engine, events: Events::with_capacity(1024) }
    }

    /// Runs until shutdown has closed every connection (or timed out).
    pub(crate) fn run(mut self) -> io::Result<()> {
        let engine = &mut self.engine;
        engine.env.stats.uring.set(0);
        loop {
            let timeout = engine.wait_timeout();
            if let Err(e) = engine.io.poll.poll(&mut self.events, Some(timeout)) {
                if e.kind() != io::ErrorKind::Interrupted {
                    return Err(e);
                }
            }
            let handling = engine.begin_handling();
            for event in self.events.iter() {
                match event.token() {
                    LISTENER => engine.accept_all(),
                    WAKER => engine.drain_inbox(),
                    t => {
                        let (slot, generation) = untoken(t);
                        if !engine.is_live(slot, generation) {
                            continue;
                        }
                        if event.is_writable() {
                            engine.on_writable(slot, generation);
                        }
                        let closed = event.is_read_closed() || event.is_error();
                        if closed && engine.is_live(slot, generation) {
                            // Reads go on to EOF rather than stopping at a short read.
                            engine.table.conns[slot].flags |= PEER_CLOSED;
                        }
                        if event.is_readable() || closed {
                            engine.read_again(slot, generation);
                        }
                    }
                }
            }
            let done = engine.end_pass(!self.events.is_empty(), handling);
            if engine.export_due() {
                engine.export_all();
            }
            if done {
                return Ok(());
            }
        }
    }
}

impl<H: Handler> DriverTurns for Engine<H, EpollIo> {
    /// A read turn: unless it already waits in the ready list, or its TLS
    /// handshake waits for this pass's budget, or the loop owes too much.
    fn read_again(&mut self, slot: usize, generation: u32) {
        if !self.is_live(slot, generation) || self.table.conns[slot].has(IN_READY_LIST) {
            return;
        }
        if self.tls_turn_denied(slot) {
            // Its bytes wait in the socket.
            return;
        }
        if self.owes_too_much() {
            // Its input waits (in the ready list) until the loop has written
            // half of what it owes.
            return self.push_ready(slot);
        }
        if let Some(signal) = self.read_turn(slot) {
            self.signal(slot, signal);
        }
        self.debug_check(slot);
    }

    fn accept_all(&mut self) {
        if self.accept_paused() {
            return;
        }
        loop {
            let Some(listener) = &self.accepting.listener else { return };
            match listener.accept() {
                Ok((socket, peer)) => self.admit(socket, Some(peer)),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
                Err(e) => {
                    if self.accept_failed(&e) != AcceptFailure::Transient {
                        return;
                    }
                }
            }
        }
    }
}

/// Why a read got no bytes.
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

impl<H: Handler> Engine<H, EpollIo> {
    /// The backlog may go on: the peer took bytes.
    fn on_writable(&mut self, slot: usize, generation: u32) {
        debug_assert!(self.is_live(slot, generation), "the pass checks liveness before it calls");
        let before = self.io.queued(&self.table.conns[slot], slot);
        if before == 0 {
            return;
        }
        match self.flush(slot) {
            Err(reason) => self.signal(slot, Signal::Fault(reason)),
            Ok(earlier_unsent) if earlier_unsent < before => self.signal(slot, Signal::Progress),
            Ok(_) => {}
        }
        self.debug_check(slot);
    }

    /// Reads up to the budget, handling every whole frame as it arrives;
    /// returns what the turn amounts to for the connection's life.
    fn read_turn(&mut self, slot: usize) -> Option<Signal> {
        let before = match self.begin_turn(slot) {
            Turn::Handle(phase) => phase,
            Turn::Discard => return self.discard_input(slot),
            Turn::Wait | Turn::Gone => return None,
        };
        let conn = &mut self.table.conns[slot];
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
                    self.env.stats.bytes_received.add(n as u64);
                    budget = budget.saturating_sub(n);
                    // A short read emptied the receive queue: with edge
                    // triggering, more data brings a new event, so the read
                    // that would only say EAGAIN is skipped (one syscall less
                    // per message). Not once the peer's FIN was reported:
                    // its EOF must still be read.
                    drained = n < spare && !self.table.conns[slot].has(PEER_CLOSED);
                }
                Err(Unread::Empty) => break None,
                Err(Unread::Interrupted) => continue,
                Err(Unread::Fault(reason)) => break Some(Signal::Fault(reason)),
            }
            let (consumed, handled) = self.handle_input(slot, &mut buf);
            buf.drain(..consumed);
            match handled {
                Ok(w) => wanted = w,
                Err(reason) => break Some(Signal::Fault(reason)),
            }
            if drained || self.io.queued(&self.table.conns[slot], slot) > self.env.cfg.max_backlog {
                break None;
            }
            if budget == 0 {
                self.push_ready(slot);
                break None;
            }
        };
        self.keep_or_return(slot, buf);
        Some(self.finish_turn(slot, before, end))
    }

    /// Reads what the socket has into `buf`: as it comes, or (TLS) through
    /// the connection's TLS session. Returns the bytes taken off the wire
    /// (0: end of input), or why there were none, and the room the read had.
    fn receive(&mut self, slot: usize, buf: &mut Vec<u8>) -> (Result<usize, Unread>, usize) {
        if !self.table.is_tls(slot) {
            let spare = buf.capacity() - buf.len();
            return (socket::recv_into(&self.table.conns[slot].socket, buf).map_err(Unread::of), spare);
        }
        let mut cipher = self.pool.take();
        let spare = cipher.capacity();
        let result = match socket::recv_into(&self.table.conns[slot].socket, &mut cipher) {
            Ok(n) if n > 0 => self.unseal_into(slot, &mut cipher, buf).map(|()| n).map_err(Unread::Fault),
            other => other.map_err(Unread::of),
        };
        self.pool.give(cipher);
        (result, spare)
    }

    /// Drains what an ending connection sends, to its EOF.
    fn discard_input(&mut self, slot: usize) -> Option<Signal> {
        let mut scratch = self.pool.take();
        let end = loop {
            scratch.clear();
            match socket::recv_into(&self.table.conns[slot].socket, &mut scratch) {
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
}
