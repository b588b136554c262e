//! A publish on its way to Redis, as the loops queue it for the
//! publisher thread (and a live hand-off queues its marker).

use std::fmt;
use std::sync::Arc;

use crate::server::pubsub::publication::Publication;

/// A publish on its way to Redis: the frame is the one local members got,
/// shared, and the envelope is made on the publisher's thread.
pub(crate) struct Outgoing {
    pub(crate) room: Arc<str>,
    pub(crate) frame: Arc<Publication>,
    /// The bytes it holds of the queue's bound, given back once sent or dropped.
    pub(crate) cost: u64,
    /// A hand-off's marker: `room` is the whole channel name and the
    /// payload goes as it is, without an envelope.
    pub(crate) raw: bool,
}

impl fmt::Debug for Outgoing {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Outgoing").field("room", &self.room).finish_non_exhaustive()
    }
}

/// What a queued publish costs beyond its payload and room name: the
/// queue slot, the `Arc`s, the frame head.
const QUEUED_OVERHEAD: usize = 64;

/// Bytes a queued publish keeps alive, as counted against a bound (the
/// publish queue's, and what a hand-off's cut holds back).
pub(crate) fn queued_cost(room: &str, payload: usize) -> u64 {
    (payload + room.len() + QUEUED_OVERHEAD) as u64
}
