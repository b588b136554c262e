//! Live hand-off: a new process takes every connection of the running
//! one, with its state, and carries on; nobody reconnects.
//!
//! ```text
//!  old (serve --takeover P, listening on P)        new (serve --takeover P)
//!    <------------------------------------------- connect P
//!    Hello {format, loops, address} ------------>  same format? enough loops?
//!    <------------------------------------ Ready | Refuse(why): old keeps serving
//!    loops: Freeze (stop accepting and reading)
//!    Rooms {marker token, rooms} --------------->  (Redis bridge) subscribe, hold back
//!    <------------------------------------------- Subscribed
//!    publish the marker, see it come back (redis_cut.rs: every earlier
//!    publish from another host is in the loops' inboxes now)
//!    Listeners (descriptors) ------------------->
//!    loops: Export (owed deliveries written, each movable connection
//!           taken out with its state; io_uring's requests cancelled first)
//!    Conns {records} + descriptors, in batches -->
//!    Done {count} ------------------------------>  loops take the listeners and adopt;
//!                                                  what came after the marker is delivered
//!    <--------------------------------------------- Adopted {count}
//!    Finish: what could not move (TLS, dedicated        listens on P itself
//!    compression, connections already ending)
//!    drains; exits once empty
//! ```
//!
//! Until `Adopted`, the old process keeps its copy of every descriptor it
//! sent: if the new one refuses, fails or goes silent, the old loops take
//! their connections back (`Resume`) and serve on. The format is
//! versioned ([`FORMAT`]); a new binary that cannot read the old one's
//! refuses before anything moves.
//!
//! The threads: one in each process runs its side ([`offer`] in the old,
//! [`take`] in the new) and talks to the loops through their control
//! channels ([`Command`]), each command announced in the loop's inbox so
//! that it is taken in order with the publishes before it.

mod offer;
mod redis_cut;
pub(crate) mod state;
mod take;
mod wire;

use std::net::TcpListener as StdTcpListener;
use std::os::fd::OwnedFd;
use std::sync::Arc;

use crossbeam_channel::Sender;

use crate::server::bridge::Cut;
use crate::server::pubsub::directory::Directory;
use crate::server::pubsub::hub::{Hub, LoopMsg};

pub use offer::{Offer, OfferError};
pub(crate) use state::ConnState;
pub use take::{take_over, Takeover, TakeoverError};

/// The hand-off format this build speaks: the records of `state.rs` and
/// the messages of `wire.rs`. A change to either bumps it.
pub const FORMAT: u32 = 3;

/// Connections per `Conns` message.
const BATCH: usize = 200;

/// What the hand-off thread asks of a loop.
pub(crate) enum Command {
    /// Old side: stop accepting (give the listener back) and stop reading.
    Freeze(Sender<Frozen>),
    /// Old side: write what members are owed, then take every connection
    /// that can move out of the loop with its state.
    Export(Sender<Exported>),
    /// Old side, the hand-off done: what stayed drains; the loop ends once
    /// it is empty.
    Finish,
    /// Old side, the hand-off failed: take these back, accept again, read
    /// again.
    Resume {
        /// The connections this loop exported.
        moved: Vec<Moved>,
        /// The listener it gave back.
        listener: Option<StdTcpListener>,
    },
    /// New side: accept on this listener.
    Listen(StdTcpListener),
    /// New side: hold these connections (checked already), frozen, until
    /// the old process commits; answers how many are held.
    Adopt(Vec<Moved>, Sender<usize>),
    /// New side, the old process committed: the held connections go into
    /// the table and the driver, their unsent bytes written first; the
    /// loop stays frozen. Answers how many are in.
    Attach(Sender<usize>),
    /// New side, every loop attached: timers run, input is handled (the
    /// carried input first).
    Thaw,
    /// New side, the old process did not commit (it serves them on): the
    /// held connections are let go without a byte read or written.
    Abandon,
}

/// A connection on its way between processes: its socket and its state.
#[derive(Debug)]
pub(crate) struct Moved {
    pub(crate) fd: OwnedFd,
    pub(crate) state: ConnState,
}

/// A loop's answer to `Freeze`.
pub(crate) struct Frozen {
    /// The loop's index.
    pub(crate) loop_id: usize,
    /// Its listener, if it had one.
    pub(crate) listener: Option<StdTcpListener>,
}

/// A loop's answer to `Export`.
pub(crate) struct Exported {
    /// The loop's index.
    pub(crate) loop_id: usize,
    /// The connections that move.
    pub(crate) moved: Vec<Moved>,
    /// The connections that stay and drain (TLS, dedicated compression,
    /// ending).
    pub(crate) kept: usize,
}

/// The loops' control channels, and the Redis bridge's cut and rooms
/// when there is a bridge.
#[derive(Clone)]
pub struct Controls {
    senders: Vec<Sender<Command>>,
    hub: Arc<Hub>,
    redis: Option<(Arc<Cut>, Arc<Directory>)>,
}

impl Controls {
    pub(crate) fn new(senders: Vec<Sender<Command>>, hub: Arc<Hub>, cut: Option<Arc<Cut>>) -> Controls {
        let redis = cut.zip(hub.directory().cloned());
        Controls { senders, hub, redis }
    }

    /// The number of loops.
    pub(crate) fn len(&self) -> usize {
        self.senders.len()
    }

    /// Sends `cmd` to loop `i` and wakes it.
    pub(crate) fn send(&self, i: usize, cmd: Command) {
        if self.senders[i].send(cmd).is_ok() {
            self.hub.post(i, LoopMsg::Control);
        }
    }
}
