//! The io_uring driver: the engine of `event_loop.rs` run on completions.
//!
//! One pass: submit every send the last pass queued and wait (one
//! `io_uring_enter`, bounded by the timer wheel) -> map each completion
//! onto the engine (accept -> `admit`; bytes received -> `handle_input`
//! in the ring's buffer, then `Handled`; a send done -> `Progress`; the
//! inbox eventfd read -> `drain_inbox`) -> the same end of pass as epoll.
//!
//! What differs from epoll, and why:
//! - Input arrives whether or not the engine wants it (a multishot receive
//!   stays armed). While a connection is paused, or the loop owes too many
//!   deliveries, its bytes are held in `rbuf` (`HOLDING`) and handled when
//!   a ready-list turn comes; past the read budget the receive is
//!   cancelled, and armed again once the held input is handled.
//! - Output is queued in `wbuf` during the pass and leaves in one send per
//!   connection per pass; while a send is in flight its bytes belong to the
//!   kernel (`uring::Sending`) and new output queues behind it.
//! - A closed connection's receive and send are cancelled; their last
//!   completions find a slot that is empty or holds a newer generation,
//!   and only give back what they held.

use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::time::{Duration, Instant};

use io_uring::cqueue;

use super::super::conn::{Conn, HOLDING, IN_READY_LIST, OWED, PEER_CLOSED, RECV_ARMED, SENDING, SEND_DUE};
use super::super::life::{Signal, Stage};
use super::super::socket::io_reason;
use super::super::stats::{CloseReason, LoopStats};
use super::super::uring::{parse_user_data, same_generation, user_data, Op, Ring};
use super::{EventLoop, Io, READ_BUDGET};
use crate::server::handler::Handler;

/// What the io_uring driver keeps per loop besides the engine's state.
pub struct UringIo {
    ring: Ring,
    /// The inbox's eventfd (the hub holds a duplicate to write to).
    eventfd: OwnedFd,
    /// A multishot accept is armed on the listener.
    accept_armed: bool,
    /// Connections with output queued this pass: (slot, generation).
    to_send: Vec<(u32, u32)>,
    /// The completions of one pass, reused.
    done: Vec<(u64, i32, u32)>,
    /// A receive found the buffer ring empty this pass: it grows one step.
    ran_dry: bool,
    /// Buffers the ring started with, and grows by.
    step: usize,
}

impl UringIo {
    /// Frees the bookkeeping a crowd left: the in-flight sends table and
    /// the per-pass lists, and the pages of the receive buffers (the
    /// buffers themselves stay provided: the ring does not shrink).
    pub fn shrink_to_fit(&mut self) {
        self.ring.bufs.release_pages();
        self.ring.sending.shrink_to_fit();
        self.to_send.shrink_to_fit();
        self.done.shrink_to_fit();
    }

    /// A ring for one loop; see [`Io::uring`].
    pub fn new(buf_size: usize, first_buffers: usize, eventfd: OwnedFd) -> io::Result<Self> {
        Ok(UringIo {
            ring: Ring::new(buf_size, first_buffers)?,
            step: first_buffers.max(1),
            eventfd,
            accept_armed: false,
            to_send: Vec::new(),
            done: Vec::new(),
            ran_dry: false,
        })
    }

    /// Arms a new connection's multishot receive.
    pub fn arm_recv(&mut self, conn: &mut Conn, slot: usize) {
        self.ring.recv(conn.socket.as_raw_fd(), slot as u32, conn.generation);
        conn.flags |= RECV_ARMED;
    }

    /// Bytes of the connection's send in flight the kernel has not taken.
    pub fn in_flight(&self, slot: usize, generation: u32) -> usize {
        self.ring.unsent(user_data(Op::Send, slot as u32, generation))
    }

    /// Queues `parts` behind the connection's backlog, to leave in this
    /// pass's send; returns the bytes queued before them (none of which
    /// the kernel has confirmed taking).
    ///
    /// Unlike epoll's backlog, `wbuf` here is not a pooled buffer: every
    /// reply passes through it and on to the kernel, so it is sized to what
    /// it carries (a 101 is ~130 bytes, not a 16 KiB buffer) and freed at
    /// its send's completion.
    pub fn queue(&mut self, conn: &mut Conn, slot: usize, parts: &[&[u8]], stats: &LoopStats) -> usize {
        let earlier = conn.wbuf.len() + if conn.has(SENDING) { self.in_flight(slot, conn.generation) } else { 0 };
        let added: usize = parts.iter().map(|p| p.len()).sum();
        if added == 0 {
            return earlier;
        }
        conn.wbuf.reserve(added);
        for p in parts {
            conn.wbuf.extend_from_slice(p);
        }
        stats.backlog_bytes.add(added as u64);
        if !conn.has(SEND_DUE) {
            conn.flags |= SEND_DUE;
            self.to_send.push((slot as u32, conn.generation));
        }
        earlier
    }

    /// Cancels what a closing connection has in flight; a send's bytes
    /// stay with the ring until its completion.
    pub fn forget(&mut self, conn: &Conn, slot: usize) {
        if conn.has(RECV_ARMED) {
            self.ring.cancel(user_data(Op::Recv, slot as u32, conn.generation));
        }
        if conn.has(SENDING) {
            self.ring.cancel(user_data(Op::Send, slot as u32, conn.generation));
        }
    }

    /// Cancels the listener's accept (shutdown); the listener is closed by
    /// the caller.
    pub fn stop_accepting(&mut self) {
        if self.accept_armed {
            self.ring.cancel(user_data(Op::Accept, 0, 0));
        }
    }

    /// Starts the send of everything queued for a connection, unless one
    /// is in flight (its completion starts the next).
    fn start_send(&mut self, conn: &mut Conn, slot: usize) {
        if conn.has(SENDING) || conn.wbuf.is_empty() {
            return;
        }
        conn.flags |= SENDING;
        let buf = std::mem::take(&mut conn.wbuf);
        self.ring.send(conn.socket.as_raw_fd(), slot as u32, conn.generation, buf);
    }
}

impl<H: Handler> EventLoop<H> {
    fn uring(&mut self) -> &mut UringIo {
        match &mut self.io {
            Io::Uring(u) => u,
            // Only the io_uring pass and the completions it maps call this.
            Io::Epoll(_) => panic!("io_uring driver state asked for on an epoll loop"),
        }
    }

    /// The io_uring pass; see the module docs.
    pub(super) fn run_uring(mut self) -> io::Result<()> {
        let eventfd = {
            let u = self.uring();
            u.ring.enable()?;
            u.eventfd.as_raw_fd()
        };
        self.uring().ring.read_wake(eventfd);
        self.arm_accept();
        let buffers = self.uring().ring.bufs.provided() as u64;
        self.stats.uring_buffers.set(buffers);
        let mut overflowed = 0;
        loop {
            let timeout = self.wait_timeout();
            self.submit_sends();
            self.uring().ring.submit_and_wait(timeout)?;
            let handling = Instant::now();
            let mut done = std::mem::take(&mut self.uring().done);
            self.uring().ring.completions(&mut done);
            for &(data, result, flags) in &done {
                self.on_completion(data, result, flags);
            }
            let handled_any = !done.is_empty();
            done.clear();
            self.uring().done = done;
            let u = self.uring();
            if std::mem::take(&mut u.ran_dry) {
                u.ring.bufs.grow(u.step);
            }
            let lost = u.ring.overflowed.wrapping_sub(overflowed);
            overflowed = u.ring.overflowed;
            let buffers = u.ring.bufs.provided() as u64;
            self.stats.uring_cq_overflow.add(lost as u64);
            self.stats.uring_buffers.set(buffers);
            if lost > 0 {
                log::warn!("loop {}: the completion queue overflowed; {lost} completions lost", self.id);
            }
            if self.end_pass(handled_any, handling) {
                self.release_listener();
                return Ok(());
            }
        }
    }

    /// Before the ring goes: submits the accept's cancellation (asked for
    /// at shutdown) and waits for its last completion, so that the listening
    /// socket closes now, not whenever the kernel tears the ring down; until
    /// then SO_REUSEPORT would still hand it connections nobody accepts.
    fn release_listener(&mut self) {
        let deadline = Instant::now() + Duration::from_millis(500);
        let mut done = Vec::new();
        while self.uring().accept_armed && Instant::now() < deadline {
            if self.uring().ring.submit_and_wait(Duration::from_millis(10)).is_err() {
                return;
            }
            self.uring().ring.completions(&mut done);
            for (data, result, flags) in done.drain(..) {
                if parse_user_data(data).0 == Some(Op::Accept) {
                    self.on_accept(result, flags);
                }
            }
        }
    }

    /// Arms the multishot accept if the listener is open, accepting is not
    /// paused and none is armed.
    pub(super) fn arm_accept(&mut self) {
        let Some(fd) = self.listener.as_ref().map(|l| l.as_raw_fd()) else { return };
        if self.resume_accept_at.is_some() {
            return;
        }
        let u = self.uring();
        if !u.accept_armed {
            u.ring.accept(fd);
            u.accept_armed = true;
        }
    }

    /// Hands every connection's queued output to the kernel: one send per
    /// connection per pass, all submitted by the pass's one enter.
    fn submit_sends(&mut self) {
        let EventLoop { io: Io::Uring(u), conns, .. } = self else { return };
        let mut to_send = std::mem::take(&mut u.to_send);
        for &(slot, generation) in &to_send {
            let Some(conn) = conns.get_mut(slot as usize) else { continue };
            if conn.generation == generation {
                conn.flags &= !SEND_DUE;
                u.start_send(conn, slot as usize);
            }
        }
        to_send.clear();
        u.to_send = to_send;
    }

    fn on_completion(&mut self, data: u64, result: i32, flags: u32) {
        let (op, slot, generation) = parse_user_data(data);
        match op {
            Some(Op::Recv) => self.on_recv(slot as usize, generation, result, flags),
            Some(Op::Send) => self.on_send(data, slot as usize, generation, result),
            Some(Op::Accept) => self.on_accept(result, flags),
            Some(Op::Wake) => {
                self.drain_inbox();
                let fd = self.uring().eventfd.as_raw_fd();
                self.uring().ring.read_wake(fd);
            }
            Some(Op::Cancel) | None => {}
        }
    }

    fn live_slot(&self, slot: usize, generation: u32) -> bool {
        self.conns.get(slot).is_some_and(|c| same_generation(c.generation, generation))
    }

    fn on_accept(&mut self, result: i32, flags: u32) {
        if !cqueue::more(flags) {
            self.uring().accept_armed = false;
        }
        if result >= 0 {
            // SAFETY: the kernel gave us this new descriptor; nothing else owns it.
            let socket = unsafe { mio::net::TcpStream::from_raw_fd(result) };
            if self.listener.is_some() {
                self.admit(socket, None);
            }
            // Else shutdown began while it was accepted: it is closed unserved.
        } else {
            let e = io::Error::from_raw_os_error(-result);
            match -result {
                libc::ECANCELED => return,
                libc::EINTR | libc::ECONNABORTED | libc::EAGAIN => {}
                _ if super::is_out_of_descriptors(&e) => self.pause_accept(&e),
                _ => log::warn!("loop {}: accept failed: {e}", self.id),
            }
        }
        self.arm_accept();
    }

    /// Bytes (or the end of them) for a connection's receive.
    fn on_recv(&mut self, slot: usize, generation: u32, result: i32, flags: u32) {
        let bid = cqueue::buffer_select(flags);
        if !self.live_slot(slot, generation) {
            // An earlier occupant's last receive: only its buffer matters.
            if let Some(bid) = bid {
                self.uring().ring.bufs.provide(bid);
            }
            return;
        }
        if !cqueue::more(flags) {
            self.conns[slot].flags &= !RECV_ARMED;
        }
        let signal = match (result, bid) {
            (n, Some(bid)) if n > 0 => {
                self.stats.bytes_received.add(n as u64);
                // SAFETY: the kernel filled `n` bytes of buffer `bid` and
                // hands it to us until we provide it again, below; nothing
                // else reads or writes it meanwhile.
                let bytes = unsafe { self.uring().ring.bufs.filled(bid, n as usize) };
                let signal = self.take_input(slot, bytes);
                self.uring().ring.bufs.provide(bid);
                signal
            }
            (0, _) => {
                self.conns[slot].flags |= PEER_CLOSED;
                // Input held for later comes before the end of it.
                (!self.conns[slot].has(HOLDING)).then_some(Signal::Eof)
            }
            (e, _) if e == -libc::ENOBUFS => {
                self.stats.uring_enobufs.add(1);
                self.uring().ran_dry = true;
                None
            }
            (e, _) if e == -libc::ECANCELED => None,
            (e, _) if e < 0 => Some(Signal::Fault(io_reason(&io::Error::from_raw_os_error(-e)))),
            // Bytes without a buffer: the kernel broke its contract.
            _ => Some(Signal::Fault(CloseReason::IoError)),
        };
        if let Some(signal) = signal {
            self.signal(slot, signal);
        }
        self.rearm_recv(slot, generation);
        self.debug_check(slot);
    }

    /// Arms the receive again where it ended but the connection still
    /// reads: not after EOF, and not while input is held.
    fn rearm_recv(&mut self, slot: usize, generation: u32) {
        if !self.live_slot(slot, generation) {
            return;
        }
        let EventLoop { io: Io::Uring(u), conns, .. } = self else { return };
        let conn = &mut conns[slot];
        if conn.flags & (RECV_ARMED | PEER_CLOSED | HOLDING) == 0 {
            u.arm_recv(conn, slot);
        }
    }

    /// The io_uring read turn: handles `bytes` (in the ring's buffer) after
    /// any partial frame kept from before, keeps what is left of a frame,
    /// and queues the replies. Holds the bytes instead while the connection
    /// may not take input.
    fn take_input(&mut self, slot: usize, bytes: &mut [u8]) -> Option<Signal> {
        if self.conns[slot].stage.is_ending() {
            // Nothing more will be handled: the bytes are dropped.
            return None;
        }
        if self.tls_conns.get(slot).is_some_and(Option::is_some) {
            return self.take_sealed_input(slot, bytes);
        }
        self.take_plain_input(slot, bytes)
    }

    /// TLS on io_uring: the bytes are records; their plaintext is what the
    /// connection takes. A handshake turn past this pass's budget waits in
    /// the session's pending bytes for a later pass (the ready list).
    fn take_sealed_input(&mut self, slot: usize, cipher: &mut [u8]) -> Option<Signal> {
        if self.tls_handshaking(slot) && !self.take_tls_turn(slot) {
            if let Some(tls) = self.tls_conns[slot].as_deref_mut() {
                tls.defer(cipher);
            }
            return None;
        }
        let mut plain = self.pool.take();
        let signal = match self.unseal_into(slot, cipher, &mut plain) {
            Err(reason) => Some(Signal::Fault(reason)),
            // Handshake records only: they are queued, nothing to handle.
            Ok(()) if plain.is_empty() => None,
            Ok(()) => self.take_plain_input(slot, &mut plain),
        };
        self.pool.give(plain);
        signal
    }

    /// [`take_input`](Self::take_input) of bytes the connection reads as
    /// they are (plain, or TLS's plaintext).
    fn take_plain_input(&mut self, slot: usize, bytes: &mut [u8]) -> Option<Signal> {
        let conn = &self.conns[slot];
        let (must_wait, owed) = (conn.stage == Stage::Paused || conn.has(HOLDING), conn.has(OWED));
        if must_wait || self.owes_too_much() {
            self.hold(slot, bytes);
            return None;
        }
        if owed {
            // What it was owed before this input comes first.
            self.write_owed_ahead(slot);
            if !self.conns.contains(slot) || self.conns[slot].stage.is_ending() {
                return None;
            }
        }
        let before = self.conns[slot].session.phase();
        let handled = if self.conns[slot].rbuf.is_empty() {
            let (consumed, handled) = self.handle_input(slot, bytes);
            if handled.is_ok() && consumed < bytes.len() {
                let mut kept = self.pool.take();
                kept.extend_from_slice(&bytes[consumed..]);
                self.conns[slot].rbuf = kept;
            }
            handled
        } else {
            let mut buf = std::mem::take(&mut self.conns[slot].rbuf);
            buf.extend_from_slice(bytes);
            let (consumed, handled) = self.handle_input(slot, &mut buf);
            buf.drain(..consumed);
            self.keep_or_return(slot, buf);
            handled
        };
        if !self.local.is_empty() {
            self.deliver_local();
        }
        // The replies leave even when the input ended the connection: a
        // refusal or a close frame is among them.
        let flushed = self.flush(slot);
        if let Err(reason) = handled.and(flushed) {
            return Some(Signal::Fault(reason));
        }
        Some(Signal::Handled { before, after: self.conns[slot].session.phase() })
    }

    /// Keeps input the connection may not take yet; past the read budget
    /// the receive is cancelled, so a peer cannot make it grow unbounded.
    fn hold(&mut self, slot: usize, bytes: &[u8]) {
        let EventLoop { io: Io::Uring(u), conns, pool, ready, .. } = self else { return };
        let conn = &mut conns[slot];
        if conn.rbuf.capacity() == 0 {
            conn.rbuf = pool.take();
        }
        conn.rbuf.extend_from_slice(bytes);
        conn.flags |= HOLDING;
        if conn.rbuf.len() > READ_BUDGET && conn.has(RECV_ARMED) {
            u.ring.cancel(user_data(Op::Recv, slot as u32, conn.generation));
        }
        if conn.stage != Stage::Paused && !conn.has(IN_READY_LIST) {
            // The loop owed too much: try again at the end of the pass.
            conn.flags |= IN_READY_LIST;
            ready.push((slot as u32, conn.generation));
        }
    }

    /// A ready-list turn (read again): handles held input, then lets the
    /// receive run again.
    pub(super) fn resume_input(&mut self, slot: usize) {
        let conn = &mut self.conns[slot];
        let generation = conn.generation;
        if conn.stage == Stage::Paused {
            return;
        }
        let mut signal = None;
        if conn.stage.is_ending() {
            // Held input is discarded; the receive drains to EOF.
            conn.flags &= !HOLDING;
            if conn.rbuf.capacity() > 0 {
                let buf = std::mem::take(&mut conn.rbuf);
                self.pool.give(buf);
            }
        } else if conn.has(HOLDING) {
            if self.owes_too_much() {
                return self.hold(slot, &[]);
            }
            self.conns[slot].flags &= !HOLDING;
            // Held input is what the connection reads (TLS's plaintext, not
            // records): it skips the TLS layer.
            signal = self.take_plain_input(slot, &mut []);
        } else if self
            .tls_conns
            .get(slot)
            .and_then(|t| t.as_deref())
            .is_some_and(|t| t.is_handshaking() && t.pending_len() > 0)
        {
            // A TLS handshake turn put off by the budget.
            signal = self.take_input(slot, &mut []);
        }
        if let Some(signal) = signal {
            self.signal(slot, signal);
        }
        if self.live_slot(slot, generation) && self.conns[slot].has(PEER_CLOSED) && !self.conns[slot].has(HOLDING) {
            self.signal(slot, Signal::Eof);
        }
        self.rearm_recv(slot, generation);
        self.debug_check(slot);
    }

    /// A send's completion: the rest goes again after a short send; once
    /// all is taken, what queued meanwhile goes next and the engine hears
    /// `Progress`.
    fn on_send(&mut self, key: u64, slot: usize, generation: u32, result: i32) {
        let live = self.live_slot(slot, generation);
        let EventLoop { io: Io::Uring(u), conns, stats, .. } = self else { return };
        let Some(sending) = u.ring.sending.get_mut(&key) else { return };
        if result > 0 {
            sending.sent += result as usize;
            stats.bytes_sent.add(result as u64);
            stats.backlog_bytes.sub(result as u64);
            if sending.sent < sending.buf.len() && live {
                let fd = conns[slot].socket.as_raw_fd();
                u.ring.resend(fd, key);
                return;
            }
        }
        let Some(done) = u.ring.sending.remove(&key) else { return };
        stats.backlog_bytes.sub((done.buf.len() - done.sent) as u64);
        if !live {
            return;
        }
        let conn = &mut conns[slot];
        conn.flags &= !SENDING;
        let signal = match result {
            r if r == -libc::ECANCELED => return,
            r if r < 0 => Signal::Fault(io_reason(&io::Error::from_raw_os_error(-r))),
            0 => Signal::Fault(CloseReason::PeerGone),
            _ => {
                u.start_send(conn, slot);
                Signal::Progress
            }
        };
        self.signal(slot, signal);
        self.debug_check(slot);
    }
}
