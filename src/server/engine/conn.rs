//! One connection: its socket, its protocol state and the buffers it holds
//! only while it must (a partial frame, unsent bytes, a fragmented message).
//!
//! Size budget (x86-64, release), checked by a test: socket 4, session 12,
//! generation 4, flags 1, stage 2 and timer link 16, padded to 40, plus three `Vec`
//! headers of 24: 112 bytes (a slab entry adds 8 for its tag: 120). An idle
//! open connection owns no heap memory at all: every `Vec` is empty with
//! zero capacity.
//!
//! Its flags are the engine's alone: a driver keeps its own per-slot state
//! (io_uring's armed receive and send in flight) in a table of its own.

use mio::net::TcpStream;

use crate::ws::Session;

use crate::runtime::TimerLink;
use crate::server::life::Stage;

/// Conn flag: the handshake completed and the handler saw `on_open`.
pub(crate) const OPENED: u8 = 1;
/// Conn flag: waiting in the loop's ready list for another read turn.
pub(crate) const IN_READY_LIST: u8 = 2;
/// Conn flag: room deliveries are owed to it, not yet written (see
/// `pubsub/fanout.rs`).
pub(crate) const OWED: u8 = 4;
/// Conn flag: the peer's FIN (or an error) was reported: read to EOF
/// (io_uring: the receive ended with EOF, so it is not armed again).
pub(crate) const PEER_CLOSED: u8 = 8;
/// Conn flag: not read while the process is over its memory budget's soft
/// mark (it holds a large unfinished input; see `engine/memory.rs`).
pub(crate) const THROTTLED: u8 = 16;

/// A connection owned by one event loop, stored in its slab.
#[derive(Debug)]
pub(crate) struct Conn {
    /// The non-blocking socket; the driver registers it its own way.
    pub(crate) socket: TcpStream,
    /// RFC 6455 state.
    pub(crate) session: Session,
    /// Distinguishes this connection from earlier ones in the same slot.
    pub(crate) generation: u32,
    /// Bit set of the flags above: what the engine knows of it.
    pub(crate) flags: u8,
    /// Where it is in its life: serving, pinged, paused, draining, lingering.
    pub(crate) stage: Stage,
    /// Position in the loop's timer wheel.
    pub(crate) timer: TimerLink,
    /// Unconsumed input (partial frame or request); zero capacity when none.
    pub(crate) rbuf: Vec<u8>,
    /// Bytes the kernel did not take yet; zero capacity when none.
    pub(crate) wbuf: Vec<u8>,
    /// The fragmented message being assembled; zero capacity when none.
    pub(crate) assembly: Vec<u8>,
}

impl Conn {
    /// A freshly accepted connection, waiting for its upgrade request.
    pub(crate) fn new(socket: TcpStream, generation: u32) -> Self {
        Conn {
            socket,
            session: Session::server(),
            generation,
            flags: 0,
            stage: Stage::Serving,
            timer: TimerLink::default(),
            rbuf: Vec::new(),
            wbuf: Vec::new(),
            assembly: Vec::new(),
        }
    }

    /// True if `flag` is set.
    #[inline]
    pub(crate) fn has(&self, flag: u8) -> bool {
        self.flags & flag != 0
    }

    /// Gives back the assembly buffer once no fragmented message is being
    /// assembled (its invariant: zero capacity when none).
    #[inline]
    pub(crate) fn release_finished_assembly(&mut self) {
        if self.assembly.capacity() > 0 && !self.session.is_assembling() {
            self.assembly = Vec::new();
        }
    }

    /// What holds between two events, checked in debug builds; `queued`
    /// is what the driver says the kernel has not taken yet.
    #[inline]
    pub(crate) fn debug_check_invariants(&self, queued: usize) {
        debug_assert!(self.stage != Stage::Paused || queued > 0, "paused only behind a backlog");
        debug_assert!(self.wbuf.capacity() > 0 || self.wbuf.is_empty());
        debug_assert!(
            !self.stage.is_ending() || self.session.phase() != crate::ws::Phase::Open,
            "a close is on its way"
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn conn_fits_its_budget() {
        let size = std::mem::size_of::<Conn>();
        // mio's TcpStream carries a 12-byte registry check in debug builds
        // (16 with padding).
        let budget = if cfg!(debug_assertions) { 128 } else { 112 };
        assert!(size <= budget, "Conn is {size} bytes");
        // In the slab each entry adds a tag word.
        assert!(std::mem::size_of::<slab::Slab<Conn>>() > 0);
    }
}
