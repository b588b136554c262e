//! The io_uring driver: the engine run on completions.
//!
//! One pass: submit every send the last pass queued and wait (one
//! `io_uring_enter`, bounded by the timer wheel) -> map each completion
//! onto the engine (accept -> `admit`; bytes received -> a read turn in
//! the ring's buffer; a send done -> `Progress`; the inbox eventfd read ->
//! `drain_inbox`) -> the engine's end of pass, as under epoll.
//!
//! What differs from epoll, and why:
//! - Input arrives whether or not the engine wants it (a multishot receive
//!   stays armed). While a connection is paused, or the loop owes too many
//!   deliveries, its bytes are held in `rbuf` (`HOLDING`) and handled when
//!   a ready-list turn comes; past the read budget the receive is
//!   cancelled, and armed again once the held input is handled.
//! - Output is queued during the pass and leaves in one send per
//!   connection per pass ([`io`]).
//! - A closed connection's receive and send are cancelled; their last
//!   completions find a slot that is empty or holds a newer generation,
//!   and only give back what they held.
//!
//! The ring itself (setup, the probe, `user_data`, the provided-buffer
//! ring, sends in flight) is [`ring`].

mod io;
pub(crate) mod ring;

use std::io as stdio;
use std::os::fd::{AsRawFd, FromRawFd};
use std::time::{Duration, Instant};

use io_uring::cqueue;

use crate::server::engine::conn::{PEER_CLOSED, THROTTLED};
use crate::server::engine::transport::Transport;
use crate::server::engine::{AcceptFailure, DriverTurns, Engine, Turn, READ_BUDGET};
use crate::server::handler::Handler;
use crate::server::life::{io_reason, CloseReason, Signal, Stage};

pub(crate) use io::UringIo;
use io::{HOLDING, LEAVING, RECV_ARMED, SENDING, SEND_DUE};
use ring::{parse_user_data, user_data, Op};

/// One loop on io_uring: its engine (whose transport holds the ring).
pub(crate) struct UringDriver<H> {
    engine: Engine<H, UringIo>,
}

impl<H: Handler> UringDriver<H> {
    /// A driver running `engine`.
    pub(crate) fn new(engine: Engine<H, UringIo>) -> Self {
        UringDriver { engine }
    }

    /// Runs until shutdown has closed every connection (or timed out).
    pub(crate) fn run(mut self) -> stdio::Result<()> {
        let engine = &mut self.engine;
        engine.env.stats.uring.set(1);
        engine.io.ring.enable()?;
        let eventfd = engine.io.eventfd.as_raw_fd();
        engine.io.ring.read_wake(eventfd);
        engine.accept_all();
        engine.env.stats.uring_buffers.set(engine.io.ring.bufs.provided() as u64);
        let mut overflowed = 0;
        loop {
            let timeout = engine.wait_timeout();
            engine.submit_sends();
            engine.io.ring.submit_and_wait(timeout)?;
            if engine.io.ring.all_submitted() {
                // What was queued for the connections closed since holds
                // its own reference to their files now.
                engine.io.closing.clear();
            }
            let handling = engine.begin_handling();
            let mut done = std::mem::take(&mut engine.io.done);
            engine.io.ring.completions(&mut done);
            for &(data, result, flags) in &done {
                engine.on_completion(data, result, flags);
            }
            let handled_any = !done.is_empty();
            done.clear();
            engine.io.done = done;
            overflowed = engine.after_completions(overflowed);
            let done = engine.end_pass(handled_any, handling);
            if engine.export_due() {
                engine.quiesce_leaving();
                engine.export_all();
                engine.stay_after_export();
            }
            if done {
                engine.release_listener();
                return Ok(());
            }
        }
    }
}

impl<H: Handler> DriverTurns for Engine<H, UringIo> {
    /// A ready-list turn (read again): handles held input, then lets the
    /// receive run again.
    fn read_again(&mut self, slot: usize, generation: u32) {
        debug_assert!(self.is_live(slot, generation), "the ready list hands on live connections only");
        let stage = self.table.conns[slot].stage;
        if stage == Stage::Paused || (self.is_frozen() && !stage.is_ending()) {
            return;
        }
        let mut signal = None;
        if stage.is_ending() {
            // Held input is discarded; the receive drains to EOF.
            self.io.clear(slot, HOLDING);
            let conn = &mut self.table.conns[slot];
            if conn.rbuf.capacity() > 0 {
                let buf = std::mem::take(&mut conn.rbuf);
                self.pool.give(buf);
                self.count_input(slot);
            }
        } else if self.io.has(slot, HOLDING) {
            if self.owes_too_much() {
                return self.hold(slot, &[]);
            }
            self.io.clear(slot, HOLDING);
            // Held input is what the connection reads (TLS's plaintext, not
            // records): it skips the TLS layer.
            signal = self.take_plain_input(slot, &mut []);
        } else if self
            .table
            .tls
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
        if self.is_live(slot, generation) && self.table.conns[slot].has(PEER_CLOSED) && !self.io.has(slot, HOLDING) {
            self.signal(slot, Signal::Eof);
        }
        self.rearm_recv(slot, generation);
        self.debug_check(slot);
    }

    /// Arms the multishot accept if the listener is open, accepting is not
    /// paused and none is armed.
    fn accept_all(&mut self) {
        if self.accept_paused() || self.io.accept_armed {
            return;
        }
        let Some(fd) = self.accepting.listener.as_ref().map(|l| l.as_raw_fd()) else { return };
        self.io.ring.accept(fd);
        self.io.accept_armed = true;
    }
}

impl<H: Handler> Engine<H, UringIo> {
    /// After a pass's completions: grows the buffer ring if it ran dry and
    /// counts completions the kernel lost. Returns the overflow count seen.
    fn after_completions(&mut self, overflowed: u32) -> u32 {
        let u = &mut self.io;
        if std::mem::take(&mut u.ran_dry) {
            u.ring.bufs.grow(u.step);
        }
        let lost = u.ring.overflowed.wrapping_sub(overflowed);
        self.env.stats.uring_cq_overflow.add(lost as u64);
        self.env.stats.uring_buffers.set(u.ring.bufs.provided() as u64);
        if lost > 0 {
            log::warn!("loop {}: the completion queue overflowed; {lost} completions lost", self.env.id);
        }
        u.ring.overflowed
    }

    /// Before a hand-off's export: cancels the receive and the send of
    /// every connection that can move, and waits (up to 2 s) for their
    /// last completions, so nothing of theirs is in flight when their
    /// sockets leave: bytes received meanwhile are held (the loop is
    /// frozen) and go as unhandled input; a send's unsent rest is parked.
    /// A connection still busy at the deadline stays, and drains here.
    fn quiesce_leaving(&mut self) {
        let slots: Vec<usize> = self.table.conns.iter().map(|(s, _)| s).filter(|&s| self.is_movable(s)).collect();
        for &slot in &slots {
            let generation = self.table.conns[slot].generation;
            self.io.set(slot, LEAVING);
            if self.io.has(slot, RECV_ARMED) {
                self.io.ring.cancel(user_data(Op::Recv, slot as u32, generation));
            }
            if self.io.has(slot, SENDING) {
                self.io.ring.cancel(user_data(Op::Send, slot as u32, generation));
            }
        }
        let deadline = Instant::now() + Duration::from_secs(2);
        let busy = |e: &Self| slots.iter().any(|&s| e.table.conns.contains(s) && !e.io.can_hand_over(s));
        let mut done = Vec::new();
        while busy(self) && Instant::now() < deadline {
            if self.io.ring.submit_and_wait(Duration::from_millis(10)).is_err() {
                break;
            }
            self.io.ring.completions(&mut done);
            for (data, result, flags) in done.drain(..) {
                self.on_completion(data, result, flags);
            }
        }
        for &slot in &slots {
            if self.table.conns.contains(slot) && !self.io.can_hand_over(slot) {
                log::warn!("loop {}: connection {slot} still busy in io_uring: it stays and drains", self.env.id);
            }
        }
    }

    /// After the export: whatever was set leaving but stayed (busy at the
    /// deadline, or no longer movable: it began to close meanwhile) sends
    /// its parked rest again and receives again.
    fn stay_after_export(&mut self) {
        let stayed: Vec<(usize, u32)> = self
            .table
            .conns
            .iter()
            .filter(|&(slot, _)| self.io.has(slot, LEAVING))
            .map(|(slot, conn)| (slot, conn.generation))
            .collect();
        for (slot, generation) in stayed {
            self.io.clear(slot, LEAVING);
            self.unpark_send(slot);
            // What queued behind it while it was leaving.
            self.io.start_send(&mut self.table.conns[slot], slot);
            self.rearm_recv(slot, generation);
        }
    }

    /// Sends again the parked rest of a connection that stays after all.
    fn unpark_send(&mut self, slot: usize) {
        let conn = &self.table.conns[slot];
        let key = user_data(Op::Send, slot as u32, conn.generation);
        if !self.io.has(slot, SENDING) && self.io.ring.sending.contains_key(&key) {
            self.io.set(slot, SENDING);
            self.io.ring.resend(conn.socket.as_raw_fd(), key);
        }
    }

    /// Before the ring goes: submits the accept's cancellation (asked for
    /// at shutdown) and waits for its last completion, so that the listening
    /// socket closes now, not whenever the kernel tears the ring down; until
    /// then SO_REUSEPORT would still hand it connections nobody accepts.
    fn release_listener(&mut self) {
        let deadline = Instant::now() + Duration::from_millis(500);
        let mut done = Vec::new();
        while self.io.accept_armed && Instant::now() < deadline {
            if self.io.ring.submit_and_wait(Duration::from_millis(10)).is_err() {
                return;
            }
            self.io.ring.completions(&mut done);
            for (data, result, flags) in done.drain(..) {
                if parse_user_data(data).0 == Some(Op::Accept) {
                    self.on_accept(result, flags);
                }
            }
        }
    }

    /// Hands every connection's queued output to the kernel: one send per
    /// connection per pass, all submitted by the pass's one enter.
    fn submit_sends(&mut self) {
        let mut to_send = std::mem::take(&mut self.io.to_send);
        for &(slot, generation) in &to_send {
            let slot = slot as usize;
            if self.is_live(slot, generation) {
                self.io.clear(slot, SEND_DUE);
                self.io.start_send(&mut self.table.conns[slot], slot);
            }
        }
        to_send.clear();
        self.io.to_send = to_send;
    }

    fn on_completion(&mut self, data: u64, result: i32, flags: u32) {
        let (op, slot, generation) = parse_user_data(data);
        match op {
            Some(Op::Recv) => self.on_recv(slot as usize, generation, result, flags),
            Some(Op::Send) => self.on_send(data, slot as usize, generation, result),
            Some(Op::Accept) => self.on_accept(result, flags),
            Some(Op::Wake) => {
                self.drain_inbox();
                let fd = self.io.eventfd.as_raw_fd();
                self.io.ring.read_wake(fd);
            }
            Some(Op::Cancel) | None => {}
        }
    }

    fn on_accept(&mut self, result: i32, flags: u32) {
        if !cqueue::more(flags) {
            self.io.accept_armed = false;
        }
        if result >= 0 {
            // SAFETY: the kernel gave us this new descriptor; nothing else owns it.
            let socket = unsafe { mio::net::TcpStream::from_raw_fd(result) };
            if self.accepting.listener.is_some() || self.is_frozen() {
                // Frozen for a hand-off: accepted before the cancel landed,
                // it is served, and handed over with the others.
                self.admit(socket, None);
            }
            // Else shutdown began while it was accepted: it is closed unserved.
        } else if self.accept_failed(&stdio::Error::from_raw_os_error(-result)) == AcceptFailure::Cancelled {
            return;
        }
        self.accept_all();
    }

    /// Bytes (or the end of them) for a connection's receive.
    fn on_recv(&mut self, slot: usize, generation: u32, result: i32, flags: u32) {
        let bid = cqueue::buffer_select(flags);
        if !self.is_live(slot, generation) {
            // An earlier occupant's last receive: only its buffer matters.
            if let Some(bid) = bid {
                self.io.ring.bufs.provide(bid);
            }
            return;
        }
        if !cqueue::more(flags) {
            self.io.clear(slot, RECV_ARMED);
        }
        let signal = match (result, bid) {
            (n, Some(bid)) if n > 0 => {
                self.env.stats.bytes_received.add(n as u64);
                // SAFETY: the kernel filled `n` bytes of buffer `bid` and
                // hands it to us until we provide it again, below; nothing
                // else reads or writes it meanwhile.
                let bytes = unsafe { self.io.ring.bufs.filled(bid, n as usize) };
                let signal = self.take_input(slot, bytes);
                self.io.ring.bufs.provide(bid);
                signal
            }
            (0, _) => {
                self.table.conns[slot].flags |= PEER_CLOSED;
                // Input held for later comes before the end of it.
                (!self.io.has(slot, HOLDING)).then_some(Signal::Eof)
            }
            (e, _) if e == -libc::ENOBUFS => {
                self.env.stats.uring_enobufs.add(1);
                self.io.ran_dry = true;
                None
            }
            (e, _) if e == -libc::ECANCELED => None,
            (e, _) if e < 0 => Some(Signal::Fault(io_reason(&stdio::Error::from_raw_os_error(-e)))),
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
        if !self.is_live(slot, generation) {
            return;
        }
        let conn = &self.table.conns[slot];
        if !conn.has(PEER_CLOSED) && !self.io.has(slot, RECV_ARMED | HOLDING | LEAVING) {
            self.io.arm_recv(conn, slot);
        }
    }

    /// The io_uring read turn: handles `bytes` (in the ring's buffer) after
    /// any partial frame kept from before, keeps what is left of a frame,
    /// and queues the replies. Holds the bytes instead while the connection
    /// may not take input.
    fn take_input(&mut self, slot: usize, bytes: &mut [u8]) -> Option<Signal> {
        if self.table.conns[slot].stage.is_ending() {
            // Nothing more will be handled: the bytes are dropped.
            return None;
        }
        if self.table.is_tls(slot) {
            return self.take_sealed_input(slot, bytes);
        }
        self.take_plain_input(slot, bytes)
    }

    /// TLS on io_uring: the bytes are records; their plaintext is what the
    /// connection takes. A handshake turn past this pass's budget waits in
    /// the session's pending bytes for a later pass (the ready list).
    fn take_sealed_input(&mut self, slot: usize, cipher: &mut [u8]) -> Option<Signal> {
        if self.tls_turn_denied(slot) {
            if let Some(tls) = self.table.tls_mut(slot) {
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
        let conn = &self.table.conns[slot];
        let paused = conn.stage == Stage::Paused || conn.has(THROTTLED) || self.is_frozen();
        if paused || self.io.has(slot, HOLDING) || self.owes_too_much() {
            self.hold(slot, bytes);
            return None;
        }
        let before = match self.begin_turn(slot) {
            Turn::Handle(phase) => phase,
            Turn::Discard | Turn::Wait | Turn::Gone => return None,
        };
        let handled = if self.table.conns[slot].rbuf.is_empty() {
            let (consumed, handled) = self.handle_input(slot, bytes);
            if handled.is_ok() && consumed < bytes.len() {
                let mut kept = self.pool.take();
                kept.extend_from_slice(&bytes[consumed..]);
                self.table.conns[slot].rbuf = kept;
            }
            handled
        } else {
            let mut buf = std::mem::take(&mut self.table.conns[slot].rbuf);
            buf.extend_from_slice(bytes);
            let (consumed, handled) = self.handle_input(slot, &mut buf);
            buf.drain(..consumed);
            self.keep_or_return(slot, buf);
            handled
        };
        Some(self.finish_turn(slot, before, handled.err().map(Signal::Fault)))
    }

    /// Keeps input the connection may not take yet; past the read budget
    /// the receive is cancelled, so a peer cannot make it grow unbounded.
    fn hold(&mut self, slot: usize, bytes: &[u8]) {
        let frozen = self.is_frozen();
        let conn = &mut self.table.conns[slot];
        if conn.rbuf.capacity() == 0 {
            conn.rbuf = self.pool.take();
        }
        conn.rbuf.extend_from_slice(bytes);
        let paused = conn.stage == Stage::Paused || conn.has(THROTTLED) || frozen;
        let (generation, held) = (conn.generation, conn.rbuf.len());
        self.io.set(slot, HOLDING);
        if held > READ_BUDGET && self.io.has(slot, RECV_ARMED) {
            self.io.ring.cancel(user_data(Op::Recv, slot as u32, generation));
        }
        if !paused {
            // The loop owed too much: try again at the end of the pass.
            self.push_ready(slot);
        }
        self.count_input(slot);
    }

    /// A send's completion: the rest goes again after a short send; once
    /// all is taken, what queued meanwhile goes next and the engine hears
    /// `Progress`.
    fn on_send(&mut self, key: u64, slot: usize, generation: u32, result: i32) {
        let live = self.is_live(slot, generation);
        let stats = &self.env.stats;
        let u = &mut self.io;
        let leaving = live && u.has(slot, LEAVING);
        let Some(sending) = u.ring.sending.get_mut(&key) else { return };
        if result > 0 {
            stats.bytes_sent.add(result as u64);
            stats.backlog_bytes.sub(result as u64);
            let shared_before = sending.shared_len();
            let more = sending.advance(result as usize);
            stats.shared_backlog_bytes.sub((shared_before - sending.shared_len()) as u64);
            if more && leaving {
                // Parked: the rest goes with the connection.
                u.clear(slot, SENDING);
                return;
            }
            if more && live {
                let fd = self.table.conns[slot].socket.as_raw_fd();
                u.ring.resend(fd, key);
                // The peer took bytes: a paused member's send deadline
                // starts again, as on epoll.
                return self.signal(slot, Signal::Progress);
            }
        }
        if leaving && result == -libc::ECANCELED {
            // Cancelled before the kernel took any of it: parked whole.
            u.clear(slot, SENDING);
            return;
        }
        let Some(done) = u.ring.sending.remove(&key) else { return };
        stats.backlog_bytes.sub(done.unsent() as u64);
        stats.shared_backlog_bytes.sub(done.shared_len() as u64);
        if !live {
            return;
        }
        u.clear(slot, SENDING);
        let signal = match result {
            r if r == -libc::ECANCELED => return,
            r if r < 0 => Signal::Fault(io_reason(&stdio::Error::from_raw_os_error(-r))),
            0 => Signal::Fault(CloseReason::PeerGone),
            _ => {
                u.start_send(&mut self.table.conns[slot], slot);
                Signal::Progress
            }
        };
        self.signal(slot, signal);
        self.debug_check(slot);
    }
}
