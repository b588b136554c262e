//! The engine's side of the admin API: the one way in for the service
//! behind wsloop to publish to a room, close connections and count rooms.
//! ([`AdminPort`], from [`ServerHandle::admin`](super::ServerHandle::admin).)
//!
//! Every call posts one order to every loop's inbox (taken in order with
//! the publishes before it), and waits for the answers at most
//! [`ANSWER_DEADLINE`]; what it reports says how many loops answered, so a
//! busy loop makes an answer partial, never wrong, and a loop frozen for a
//! live hand-off says so (a kick or listing there is not carried out: the
//! caller retries). Publishes and kicks of a
//! room or user also go to every other host when there is a Redis bridge,
//! the way a member's publish does. Nothing here blocks a loop.

use std::sync::Arc;
use std::time::{Duration, Instant};

use super::pubsub::hub::{Hub, LoopMsg};
use super::pubsub::orders::{Answer, Ask, ConnRef, Kick, Order, Target};
use super::pubsub::publication::Publication;
use super::pubsub::{RoomError, RoomLimits};
use crate::ws::frame::opcode;

/// How long a call waits for the loops' answers.
pub const ANSWER_DEADLINE: Duration = Duration::from_secs(2);

/// A message to publish: text or binary.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Payload<'a> {
    /// A text frame (the caller has checked it is UTF-8: it is a `str`).
    Text(&'a str),
    /// A binary frame.
    Binary(&'a [u8]),
}

/// How many loops answered, of how many.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Reach {
    /// Loops whose answer came within [`ANSWER_DEADLINE`].
    pub answered: usize,
    /// Loops in this process.
    pub loops: usize,
    /// Loops that answered they are frozen for a live hand-off: they
    /// carried out no kick or listing (a publish they did deliver).
    pub frozen: usize,
}

/// What a publish or a kick came to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Done {
    /// Connections of this process it reached (messages owed, or
    /// connections closed), among the loops that answered.
    pub local: u64,
    /// Handed to the Redis bridge for the other hosts (false without one;
    /// what the bridge drops is counted in `wsloop_redis_publishes_dropped_total`).
    pub to_other_hosts: bool,
    /// Which loops answered.
    pub reach: Reach,
}

/// Connections, counted and listed (the first `limit`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Listing {
    /// How many, in the loops that answered.
    pub count: u64,
    /// Their ids (loop, slot, generation), at most the limit asked.
    pub conns: Vec<ConnRef>,
    /// More than the limit.
    pub more: bool,
    /// Which loops answered.
    pub reach: Reach,
}

/// Rooms of the process in name order with their member counts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RoomList {
    /// (name, members), at most the limit asked.
    pub rooms: Vec<(Arc<str>, u64)>,
    /// More rooms come after the last one (ask again `after` it).
    pub more: bool,
    /// Which loops answered.
    pub reach: Reach,
}

/// See the module docs. Cheap to clone.
#[derive(Debug, Clone)]
pub struct AdminPort {
    hub: Arc<Hub>,
    rooms: RoomLimits,
}

impl AdminPort {
    pub(super) fn new(hub: Arc<Hub>, rooms: RoomLimits) -> AdminPort {
        AdminPort { hub, rooms }
    }

    /// Publishes `payload` to `room`'s members on every loop, and on every
    /// host over Redis. A name `join` refuses is refused here too.
    pub fn publish(&self, room: &str, payload: Payload<'_>) -> Result<Done, RoomError> {
        self.rooms.check_name(room)?;
        let frame = match payload {
            Payload::Text(text) => Publication::new(opcode::TEXT, text.as_bytes()),
            Payload::Binary(bytes) => Publication::new(opcode::BINARY, bytes),
        };
        let room: Arc<str> = room.into();
        let to_other_hosts = self.hub.publish_beyond(&room, &frame);
        let (answers, reach) = self.ask_all(|| Ask::Publish { room: room.clone(), frame: frame.clone() });
        Ok(Done { local: answers.iter().map(|a| a.count).sum(), to_other_hosts, reach })
    }

    /// Closes the connections `kick` names with its code and reason: on
    /// every loop, and for a room or a user on every host over Redis.
    pub fn kick(&self, kick: &Kick) -> Done {
        let to_other_hosts = !matches!(kick.target(), Target::Conn { .. }) && self.hub.kick_others(kick);
        let (answers, reach) = self.ask_all(|| Ask::Kick(kick.clone()));
        Done { local: answers.iter().map(|a| a.count).sum(), to_other_hosts, reach }
    }

    /// The process's rooms named after `after`, the first `limit` in name
    /// order, with their member counts summed over the loops.
    pub fn rooms(&self, after: Option<&str>, limit: usize) -> RoomList {
        let after: Option<Arc<str>> = after.map(Arc::from);
        let (answers, reach) = self.ask_all(|| Ask::Rooms { after: after.clone(), limit });
        let mut merged = std::collections::BTreeMap::<Arc<str>, u64>::new();
        let mut more = false;
        for answer in answers {
            more |= answer.more;
            for (name, count) in answer.rooms {
                *merged.entry(name).or_default() += count;
            }
        }
        more |= merged.len() > limit;
        RoomList { rooms: merged.into_iter().take(limit).collect(), more, reach }
    }

    /// A room's members in this process: their count and the first `limit`.
    pub fn room(&self, name: &str, limit: usize) -> Listing {
        let name: Arc<str> = name.into();
        self.listing(limit, || Ask::Room { name: name.clone(), limit })
    }

    /// A user's connections in this process: their count and the first `limit`.
    pub fn user(&self, name: &str, limit: usize) -> Listing {
        let name: Arc<str> = name.into();
        self.listing(limit, || Ask::User { name: name.clone(), limit })
    }

    fn listing(&self, limit: usize, ask: impl Fn() -> Ask) -> Listing {
        let (answers, reach) = self.ask_all(ask);
        let count = answers.iter().map(|a| a.count).sum();
        let mut conns: Vec<ConnRef> = answers.into_iter().flat_map(|a| a.conns).collect();
        conns.sort_unstable();
        conns.truncate(limit);
        Listing { count, more: count > limit as u64, conns, reach }
    }

    /// Posts `ask()` to every loop and gathers the answers that come
    /// within [`ANSWER_DEADLINE`].
    fn ask_all(&self, ask: impl Fn() -> Ask) -> (Vec<Answer>, Reach) {
        let loops = self.hub.loops();
        let (tx, rx) = crossbeam_channel::bounded(loops);
        for i in 0..loops {
            let order = Order { ask: ask(), reply: Some(tx.clone()) };
            self.hub.post(i, LoopMsg::Order(Box::new(order)));
        }
        drop(tx);
        let deadline = Instant::now() + ANSWER_DEADLINE;
        let mut answers = Vec::with_capacity(loops);
        while answers.len() < loops {
            match rx.recv_deadline(deadline) {
                Ok(answer) => answers.push(answer),
                // Past the deadline, or every loop that will answer has.
                Err(_) => break,
            }
        }
        let frozen = answers.iter().filter(|a| a.frozen).count();
        let reach = Reach { answered: answers.len(), loops, frozen };
        (answers, reach)
    }
}
