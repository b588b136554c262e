//! Publish/subscribe inside one process and beyond it: rooms and their
//! members on each loop ([`rooms`]), the loops' shared inboxes ([`hub`]),
//! a publish encoded once for every member ([`publication`]), the
//! deliveries a loop owes its members ([`fanout`]), and the process-wide
//! set of rooms with members ([`directory`]); orders from the admin API
//! that each loop carries out on its own connections ([`orders`]).
//!
//! What leaves the process goes through an [`Outbox`] (the Redis bridge
//! implements it): pub/sub knows no transport between processes, so the
//! bridge depends on it and never the other way round.

pub(crate) mod directory;
pub(crate) mod fanout;
pub(crate) mod hub;
pub(crate) mod orders;
pub(crate) mod outbox;
pub(crate) mod publication;
pub(crate) mod rooms;

pub use rooms::{RoomError, RoomLimits};
