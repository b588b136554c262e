//! What the engine asks of an I/O model: the few socket-facing calls the
//! shared code makes on a connection's behalf (take it in, write to it,
//! how much it still owes the kernel, let it go). Each driver implements
//! it once (`driver/epoll`, `driver/uring`), and the engine is generic over
//! it: static dispatch, so the hot path pays no virtual call, and the
//! engine never asks which driver runs it.
//!
//! The other direction (bytes arrived, the kernel took bytes, a tick) is
//! the driver calling the engine's methods: a driver owns its engine.

use std::io;

use bytes::Bytes;

use mio::net::TcpListener;

use crate::runtime::BufferPool;
use crate::server::life::CloseReason;
use crate::server::stats::LoopStats;

use super::conn::Conn;

/// See the module docs.
pub(crate) trait Transport {
    /// True if a connection's backlog (`Conn::wbuf`) is a pooled buffer,
    /// given back to the pool at close; false if it is sized to its bytes.
    const POOLED_BACKLOG: bool;

    /// A connection was taken in at `slot`: register it or arm its receive.
    /// An error leaves nothing registered.
    fn attach(&mut self, conn: &mut Conn, slot: usize) -> io::Result<()>;

    /// Writes (or queues for this pass's send) `parts`, in order, behind the
    /// connection's backlog. Returns how many bytes of the backlog that was
    /// there before the kernel has not taken: the measure of a slow
    /// consumer.
    fn write(
        &mut self,
        conn: &mut Conn,
        slot: usize,
        parts: &[Part<'_>],
        pool: &mut BufferPool,
        stats: &LoopStats,
    ) -> Result<usize, CloseReason>;

    /// Bytes given to the connection that the kernel has not taken yet.
    fn queued(&self, conn: &Conn, slot: usize) -> usize;

    /// The part of [`queued`](Self::queued) that is frames shared with
    /// other connections, held by reference (what closing this one alone
    /// would not free).
    fn shared_queued(&self, conn: &Conn, slot: usize) -> usize;

    /// The connection is leaving its slot: cancel what it has in flight and
    /// forget its per-slot state, and uncount the backlog it drops beside
    /// `Conn::wbuf` (which the caller uncounts). Its socket is closed by the
    /// caller.
    fn detach(&mut self, conn: &Conn, slot: usize, stats: &LoopStats);

    /// Closes a detached connection's socket: at once, or (io_uring) once
    /// what was queued for it has reached the kernel.
    fn close_socket(&mut self, socket: mio::net::TcpStream) {
        drop(socket);
    }

    /// Stops accepting on `listener` (shutdown); the caller closes it.
    fn stop_accepting(&mut self, listener: &mut TcpListener);

    /// Starts accepting on a listener handed over from another process
    /// (or given back): its blocking mode and registration made this
    /// driver's way.
    fn listen(&mut self, listener: &mut TcpListener) -> io::Result<()>;

    /// True if nothing of the connection is in flight in the driver, so
    /// it can leave for another process.
    fn can_hand_over(&self, slot: usize) -> bool;

    /// The connection leaves for another process: stop watching it, and
    /// return every byte queued for it that the kernel has not taken, in
    /// order (its backlog, uncounted; a pooled `wbuf` goes back to `pool`).
    /// Its socket stays open; the caller takes it.
    fn hand_over(&mut self, conn: &mut Conn, slot: usize, pool: &mut BufferPool, stats: &LoopStats) -> Vec<u8>;

    /// Gives back what a crowd left; the slots in use now lie below `end`.
    fn release_memory(&mut self, end: usize);
}

/// A piece of output for [`Transport::write`].
#[derive(Debug, Clone, Copy)]
pub(crate) enum Part<'a> {
    /// Bytes the caller owns: copied if the kernel does not take them at
    /// once.
    Copy(&'a [u8]),
    /// A frame shared by many connections: what the kernel does not take
    /// at once is kept by reference (see `runtime::chain`), never copied
    /// per connection.
    Share(&'a Bytes),
}

impl Part<'_> {
    /// The bytes to send.
    #[inline]
    pub(crate) fn bytes(&self) -> &[u8] {
        match self {
            Part::Copy(b) => b,
            Part::Share(b) => b,
        }
    }

    /// True if a rest of it from `offset` on is worth keeping by reference.
    #[inline]
    pub(crate) fn shares_from(&self, offset: usize) -> bool {
        matches!(self, Part::Share(b) if b.len().saturating_sub(offset) >= crate::runtime::chain::SHARE_MIN)
    }
}
