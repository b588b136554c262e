//! One connection: its socket, its protocol state and the buffers it holds
//! only while it must (a partial frame, unsent bytes, a fragmented message).
//!
//! Size budget (x86-64, release), checked by a test: socket 4, session 12,
//! generation 4, flags 1, stage 2 and timer link 16, padded to 40, plus three `Vec`
//! headers of 24: 112 bytes (a slab entry adds 8 for its tag: 120). An idle
//! open connection owns no heap memory at all: every `Vec` is empty with
//! zero capacity.

use mio::net::TcpStream;

use crate::ws::Session;

use super::life::Stage;
use crate::runtime::TimerLink;

/// Conn flag: the handshake completed and the handler saw `on_open`.
pub const OPENED: u8 = 1;
/// Conn flag: waiting in the loop's ready list for another read turn.
pub const IN_READY_LIST: u8 = 2;
/// Conn flag: room deliveries are owed to it, not yet written (see fanout.rs).
pub const OWED: u8 = 4;
/// Conn flag: io_uring: a multishot receive is armed (until its last completion).
pub const RECV_ARMED: u8 = 8;
/// Conn flag: io_uring: a send is in flight (its bytes are in the ring's table).
pub const SENDING: u8 = 16;
/// Conn flag: an event reported the peer's FIN or an error: read to EOF
/// (io_uring: the receive ended with EOF, so it is not armed again).
pub const PEER_CLOSED: u8 = 32;
/// Conn flag: io_uring: output is queued in `wbuf` and listed for this pass's sends.
pub const SEND_DUE: u8 = 64;
/// Conn flag: io_uring: input is held in `rbuf` (paused, or the loop owes
/// too much) and the receive was cancelled past the read budget.
pub const HOLDING: u8 = 128;

/// A connection owned by one event loop, stored in its slab.
#[derive(Debug)]
pub struct Conn {
    /// The non-blocking socket, registered edge-triggered for read and write.
    pub socket: TcpStream,
    /// RFC 6455 state.
    pub session: Session,
    /// Distinguishes this connection from earlier ones in the same slot.
    pub generation: u32,
    /// Bit set of the flags above: what the driver and the handler know.
    pub flags: u8,
    /// Where it is in its life: serving, pinged, paused, draining, lingering.
    pub stage: Stage,
    /// Position in the loop's timer wheel.
    pub timer: TimerLink,
    /// Unconsumed input (partial frame or request); zero capacity when none.
    pub rbuf: Vec<u8>,
    /// Bytes the kernel did not take yet; zero capacity when none.
    pub wbuf: Vec<u8>,
    /// The fragmented message being assembled; zero capacity when none.
    pub assembly: Vec<u8>,
}

impl Conn {
    /// A freshly accepted connection, waiting for its upgrade request.
    pub fn new(socket: TcpStream, generation: u32) -> Self {
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
    pub fn has(&self, flag: u8) -> bool {
        self.flags & flag != 0
    }

    /// What holds between two events, checked in debug builds.
    #[inline]
    pub fn debug_check_invariants(&self) {
        debug_assert!(
            self.stage != Stage::Paused || !self.wbuf.is_empty() || self.has(SENDING),
            "paused only behind a backlog"
        );
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
