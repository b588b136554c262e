//! The io_uring driver's I/O state as the engine sees it ([`Transport`]):
//! the ring, and a flag byte per slot of its own (a receive armed, a send
//! in flight, a send due this pass, input held), so `Conn` carries no
//! driver's flags.
//!
//! Output is queued in the connection's `wbuf` during the pass and leaves
//! in one send per connection per pass; while a send is in flight its
//! bytes belong to the kernel (`ring::Sending`) and new output queues
//! behind it. A large shared frame (a room publish) is not copied in: the
//! connection's output becomes a [`Chain`] that references it, sent with
//! `sendmsg` over iovecs, so a frame owed to 40 slow members exists once.

use std::collections::HashMap;
use std::io;
use std::os::fd::{AsRawFd, OwnedFd};

use mio::net::TcpListener;

use crate::runtime::{BufferPool, Chain};
use crate::server::engine::conn::Conn;
use crate::server::engine::transport::{Part, Transport};
use crate::server::life::CloseReason;
use crate::server::stats::LoopStats;

use super::ring::{user_data, Op, Ring};

/// Slot flag: a multishot receive is armed (until its last completion).
pub(super) const RECV_ARMED: u8 = 1;
/// Slot flag: a send is in flight (its bytes are in the ring's table).
pub(super) const SENDING: u8 = 2;
/// Slot flag: output is queued in `wbuf` and listed for this pass's sends.
pub(super) const SEND_DUE: u8 = 4;
/// Slot flag: input is held in `rbuf` (paused, or the loop owes too much)
/// and the receive was cancelled past the read budget.
pub(super) const HOLDING: u8 = 8;
/// Slot flag: leaving for another process (a live hand-off): its receive
/// and send are cancelled and not started again; a send's unsent rest is
/// kept (parked) in the ring's table for [`Transport::hand_over`].
pub(super) const LEAVING: u8 = 16;

/// What the io_uring driver keeps per loop besides the engine's state.
pub(crate) struct UringIo {
    pub(super) ring: Ring,
    /// The inbox's eventfd (the hub holds a duplicate to write to).
    pub(super) eventfd: OwnedFd,
    /// A multishot accept is armed on the listener.
    pub(super) accept_armed: bool,
    /// Connections with output queued this pass: (slot, generation).
    pub(super) to_send: Vec<(u32, u32)>,
    /// The completions of one pass, reused.
    pub(super) done: Vec<(u64, i32, u32)>,
    /// A receive found the buffer ring empty this pass: it grows one step.
    pub(super) ran_dry: bool,
    /// Buffers the ring started with, and grows by.
    pub(super) step: usize,
    /// Each slot's flags (above); zero for an empty slot.
    flags: Vec<u8>,
    /// Output queued (not in flight) that holds shared frames, by slot:
    /// then the connection's `wbuf` is empty and all of it is here.
    chains: HashMap<u32, Chain>,
    /// Sockets of connections closed this pass, closed once what was
    /// queued for them has been submitted ([`Transport::close_socket`]).
    pub(super) closing: Vec<mio::net::TcpStream>,
}

impl UringIo {
    /// A ring for one loop, made on the loop's own thread (which becomes
    /// its only submitter), and the eventfd its inbox wakes it by.
    pub(crate) fn new(buf_size: usize, first_buffers: usize, eventfd: OwnedFd) -> io::Result<Self> {
        Ok(UringIo {
            ring: Ring::new(buf_size, first_buffers)?,
            step: first_buffers.max(1),
            eventfd,
            accept_armed: false,
            to_send: Vec::new(),
            done: Vec::new(),
            ran_dry: false,
            flags: Vec::new(),
            chains: HashMap::new(),
            closing: Vec::new(),
        })
    }

    /// True if `flag` is set for `slot`.
    #[inline]
    pub(super) fn has(&self, slot: usize, flag: u8) -> bool {
        self.flags.get(slot).is_some_and(|f| f & flag != 0)
    }

    /// Sets `flag` for `slot`.
    #[inline]
    pub(super) fn set(&mut self, slot: usize, flag: u8) {
        if self.flags.len() <= slot {
            self.flags.resize(slot + 1, 0);
        }
        self.flags[slot] |= flag;
    }

    /// Clears `flag` for `slot`.
    #[inline]
    pub(super) fn clear(&mut self, slot: usize, flag: u8) {
        if let Some(f) = self.flags.get_mut(slot) {
            *f &= !flag;
        }
    }

    /// Arms a connection's multishot receive.
    pub(super) fn arm_recv(&mut self, conn: &Conn, slot: usize) {
        self.ring.recv(conn.socket.as_raw_fd(), slot as u32, conn.generation);
        self.set(slot, RECV_ARMED);
    }

    /// Bytes of the connection's send in flight the kernel has not taken.
    fn in_flight(&self, slot: usize, generation: u32) -> usize {
        self.ring.unsent(user_data(Op::Send, slot as u32, generation))
    }

    /// Starts the send of everything queued for a connection, unless one
    /// is in flight (its completion starts the next).
    pub(super) fn start_send(&mut self, conn: &mut Conn, slot: usize) {
        if self.has(slot, SENDING | LEAVING) {
            // One in flight (its completion starts the next), or leaving
            // for another process (what is queued goes with it).
            return;
        }
        if let Some(chain) = self.take_chain(slot) {
            self.set(slot, SENDING);
            self.ring.send_chain(conn.socket.as_raw_fd(), slot as u32, conn.generation, chain);
            return;
        }
        if conn.wbuf.is_empty() {
            return;
        }
        self.set(slot, SENDING);
        let buf = std::mem::take(&mut conn.wbuf);
        self.ring.send(conn.socket.as_raw_fd(), slot as u32, conn.generation, buf);
    }
}

impl UringIo {
    /// The connection's queued chain, if it has one.
    fn take_chain(&mut self, slot: usize) -> Option<Chain> {
        if self.chains.is_empty() {
            return None;
        }
        self.chains.remove(&(slot as u32))
    }

    /// The connection's queued chain, made now (taking `wbuf` over) if
    /// `parts` hold a shared frame worth keeping by reference.
    fn chain_for(&mut self, conn: &mut Conn, slot: usize, parts: &[Part<'_>]) -> Option<&mut Chain> {
        let key = slot as u32;
        if self.chains.contains_key(&key) || parts.iter().any(|p| p.shares_from(0)) {
            let chain = self.chains.entry(key).or_default();
            if !conn.wbuf.is_empty() {
                chain.push_vec(std::mem::take(&mut conn.wbuf));
            }
            return Some(chain);
        }
        None
    }
}

impl Transport for UringIo {
    /// `wbuf` here is not a pooled buffer: every reply passes through it
    /// and on to the kernel, so it is sized to what it carries (a 101 is
    /// ~130 bytes, not a 16 KiB buffer) and freed at its send's completion.
    const POOLED_BACKLOG: bool = false;

    fn attach(&mut self, conn: &mut Conn, slot: usize) -> io::Result<()> {
        if self.flags.len() <= slot {
            self.flags.resize(slot + 1, 0);
        }
        self.flags[slot] = 0;
        self.arm_recv(conn, slot);
        Ok(())
    }

    /// Queues `parts` behind the connection's backlog, to leave in this
    /// pass's send; returns the bytes queued before them (none of which
    /// the kernel has confirmed taking).
    fn write(
        &mut self,
        conn: &mut Conn,
        slot: usize,
        parts: &[Part<'_>],
        _pool: &mut BufferPool,
        stats: &LoopStats,
    ) -> Result<usize, CloseReason> {
        let earlier = self.queued(conn, slot);
        let added: usize = parts.iter().map(|p| p.bytes().len()).sum();
        if added == 0 {
            return Ok(earlier);
        }
        if let Some(chain) = self.chain_for(conn, slot, parts) {
            let shared_before = chain.shared_len();
            for p in parts {
                match p {
                    Part::Copy(bytes) => chain.push_own(bytes),
                    Part::Share(frame) => chain.push_shared(frame, 0),
                }
            }
            stats.shared_backlog_bytes.add((chain.shared_len() - shared_before) as u64);
        } else {
            conn.wbuf.reserve(added);
            for p in parts {
                conn.wbuf.extend_from_slice(p.bytes());
            }
        }
        stats.backlog_bytes.add(added as u64);
        if !self.has(slot, SEND_DUE) {
            self.set(slot, SEND_DUE);
            self.to_send.push((slot as u32, conn.generation));
        }
        Ok(earlier)
    }

    #[inline]
    fn queued(&self, conn: &Conn, slot: usize) -> usize {
        let in_flight = if self.has(slot, SENDING) { self.in_flight(slot, conn.generation) } else { 0 };
        let chained = if self.chains.is_empty() { 0 } else { self.chains.get(&(slot as u32)).map_or(0, Chain::len) };
        conn.wbuf.len() + chained + in_flight
    }

    fn shared_queued(&self, conn: &Conn, slot: usize) -> usize {
        let chained = self.chains.get(&(slot as u32)).map_or(0, Chain::shared_len);
        let key = user_data(Op::Send, slot as u32, conn.generation);
        chained + self.ring.sending.get(&key).map_or(0, |s| s.shared_len())
    }

    /// Cancels what a closing connection has in flight (a send's bytes
    /// stay with the ring until its completion) and drops its queued chain.
    fn detach(&mut self, conn: &Conn, slot: usize, stats: &LoopStats) {
        if let Some(chain) = self.take_chain(slot) {
            stats.backlog_bytes.sub(chain.len() as u64);
            stats.shared_backlog_bytes.sub(chain.shared_len() as u64);
        }
        if self.has(slot, RECV_ARMED) {
            self.ring.cancel(user_data(Op::Recv, slot as u32, conn.generation));
        }
        let key = user_data(Op::Send, slot as u32, conn.generation);
        if self.has(slot, SENDING) {
            self.ring.cancel(key);
        } else if let Some(parked) = self.ring.sending.remove(&key) {
            // The parked rest of a send (a hand-off that did not take this
            // connection): nothing of it is in flight.
            stats.backlog_bytes.sub(parked.unsent() as u64);
            stats.shared_backlog_bytes.sub(parked.shared_len() as u64);
        }
        if let Some(f) = self.flags.get_mut(slot) {
            *f = 0;
        }
    }

    /// Keeps the socket open until the next submission: a send or receive
    /// queued for it this pass must reach the kernel (which then holds its
    /// own reference to the file) before the descriptor number is closed
    /// and, maybe, reused by another thread's accept; else that request
    /// would act on the stranger.
    fn close_socket(&mut self, socket: mio::net::TcpStream) {
        self.closing.push(socket);
    }

    /// Cancels the listener's accept; the caller closes the listener.
    fn stop_accepting(&mut self, _listener: &mut TcpListener) {
        if self.accept_armed {
            self.ring.cancel(user_data(Op::Accept, 0, 0));
        }
    }

    /// io_uring waits on the blocking descriptor itself; the accept is
    /// armed by the engine's `accept_all`.
    fn listen(&mut self, listener: &mut TcpListener) -> io::Result<()> {
        socket2::SockRef::from(&*listener).set_nonblocking(false)
    }

    fn can_hand_over(&self, slot: usize) -> bool {
        !self.has(slot, RECV_ARMED | SENDING)
    }

    /// The parked rest of its last send, then its queued chain or `wbuf`.
    fn hand_over(&mut self, conn: &mut Conn, slot: usize, _pool: &mut BufferPool, stats: &LoopStats) -> Vec<u8> {
        debug_assert!(self.can_hand_over(slot), "nothing in flight");
        let mut unsent = Vec::new();
        if let Some(parked) = self.ring.sending.remove(&user_data(Op::Send, slot as u32, conn.generation)) {
            parked.copy_to(&mut unsent);
            stats.backlog_bytes.sub(parked.unsent() as u64);
            stats.shared_backlog_bytes.sub(parked.shared_len() as u64);
        }
        if let Some(chain) = self.take_chain(slot) {
            chain.copy_to(&mut unsent);
            stats.backlog_bytes.sub(chain.len() as u64);
            stats.shared_backlog_bytes.sub(chain.shared_len() as u64);
        }
        stats.backlog_bytes.sub(conn.wbuf.len() as u64);
        unsent.extend_from_slice(&std::mem::take(&mut conn.wbuf));
        if let Some(f) = self.flags.get_mut(slot) {
            *f = 0;
        }
        unsent
    }

    /// Frees the bookkeeping a crowd left: the slot flags past `end`, the
    /// in-flight sends table and the per-pass lists, and the pages of the
    /// receive buffers (the buffers themselves stay provided: the ring does
    /// not shrink).
    fn release_memory(&mut self, end: usize) {
        self.flags.truncate(end);
        self.flags.shrink_to_fit();
        self.ring.bufs.release_pages();
        self.ring.sending.shrink_to_fit();
        self.chains.shrink_to_fit();
        self.to_send.shrink_to_fit();
        self.done.shrink_to_fit();
    }
}
