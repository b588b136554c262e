//! The library's public face: what an application implements to run on
//! the engine, and the context it is handed to act on a connection.
//!
//! Each event loop owns its own handler instance (made by the factory given
//! to [`server::start`](super::start)), so a handler needs no lock and
//! need not be `Send`.
//! Everything it sends is appended to the loop's output buffer and written
//! once per batch of input, so a handler never blocks and never sees a
//! socket.

use std::net::SocketAddr;
use std::sync::Arc;

use crate::ws::frame::opcode;
use crate::ws::{HandshakeError, Request, Session};

use super::life::CloseReason;
use super::pubsub::hub::Hub;
use super::pubsub::publication::Publication;
use super::pubsub::rooms::{RoomError, RoomLimits, Rooms};
use crate::ws::compression::Deflaters;

/// A connection's identity across the whole server: the loop that owns it,
/// its slot in that loop, and a generation that makes a reused slot a
/// different connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ConnId {
    /// The event loop (0-based).
    pub loop_id: u32,
    /// The slab slot inside the loop.
    pub slot: u32,
    /// The generation of the slot: 28 bits, wrapping (a loop's 2^28th
    /// connection after this one may have the same id once this one is
    /// closed).
    pub generation: u32,
}

/// A whole message from the peer, borrowed from the loop's buffers for the
/// duration of the callback.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Message<'a> {
    /// A text message (valid UTF-8).
    Text(&'a str),
    /// A binary message.
    Binary(&'a [u8]),
}

/// A publish waiting to be owed to this loop's members of a room (or, with
/// no room, to every connection of the loop), after the handler returns.
#[derive(Debug)]
pub(crate) struct LocalPublish {
    /// The room, or `None` for a broadcast.
    pub room: Option<Arc<str>>,
    pub frame: Arc<Publication>,
    /// The publisher's slot: it got its copy in order, or asked for none.
    pub skip: u32,
}

/// An upgrade request waiting for the application's verdict (see
/// [`Handler::on_upgrade`]): the request, and the peer it came from.
pub struct Upgrade<'a> {
    /// The request: path, query, headers (through [`Request::header`]).
    pub request: &'a Request<'a>,
    pub(crate) socket: &'a mio::net::TcpStream,
}

impl Upgrade<'_> {
    /// The peer's address; `None` if the peer is already gone. Asked of
    /// the kernel on each call (the engine does not keep it per connection).
    pub fn peer_addr(&self) -> Option<SocketAddr> {
        self.socket.peer_addr().ok()
    }
}

/// How an application turns an upgrade request away. The client gets the
/// HTTP status named, `Connection: close` and a one-line body; the refusal
/// counts in `wsloop_handshake_failures_total{reason}`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// 401, with `WWW-Authenticate: Bearer`: credentials missing or wrong.
    Unauthorized,
    /// 403: this client may not connect, whatever it sends.
    Forbidden,
    /// 429, with `Retry-After`: come back in `retry_after` seconds.
    TooManyRequests {
        /// Seconds, at least 1.
        retry_after: u32,
    },
}

impl Refusal {
    /// The handshake error the refusal is answered and counted as.
    pub fn error(self) -> HandshakeError {
        match self {
            Refusal::Unauthorized => HandshakeError::Unauthorized,
            Refusal::Forbidden => HandshakeError::Forbidden,
            Refusal::TooManyRequests { .. } => HandshakeError::TooManyRequests,
        }
    }

    /// The `Retry-After` seconds of a 429 (1 for the others, unused).
    pub fn retry_after(self) -> u32 {
        match self {
            Refusal::TooManyRequests { retry_after } => retry_after.max(1),
            _ => 1,
        }
    }
}

/// What a handler may do with the connection it is called for.
pub struct Ctx<'a> {
    pub(crate) id: ConnId,
    pub(crate) session: &'a mut Session,
    pub(crate) out: &'a mut Vec<u8>,
    pub(crate) deflaters: &'a mut Deflaters,
    pub(crate) sent: &'a mut u64,
    pub(crate) rooms: &'a mut Rooms,
    pub(crate) room_limits: &'a RoomLimits,
    pub(crate) hub: &'a Hub,
    pub(crate) local: &'a mut Vec<LocalPublish>,
    pub(crate) published: &'a mut u64,
}

impl Ctx<'_> {
    /// The connection this call is about.
    pub fn id(&self) -> ConnId {
        self.id
    }

    /// Sends a text message (compressed if the connection negotiated
    /// permessage-deflate and it is over the threshold). False if the
    /// connection is closing (nothing sent).
    pub fn send_text(&mut self, text: &str) -> bool {
        self.send(opcode::TEXT, text.as_bytes())
    }

    /// Sends a binary message, like [`send_text`](Self::send_text).
    pub fn send_binary(&mut self, data: &[u8]) -> bool {
        self.send(opcode::BINARY, data)
    }

    fn send(&mut self, op: u8, payload: &[u8]) -> bool {
        let ok = self.deflaters.write(self.id.slot, self.session, self.out, op, payload);
        *self.sent += ok as u64;
        ok
    }

    /// True if this connection negotiated permessage-deflate.
    pub fn is_compressed(&self) -> bool {
        self.session.deflate_window().is_some()
    }

    /// Joins room `room` (joining twice is not an error).
    pub fn join(&mut self, room: &str) -> Result<(), RoomError> {
        self.rooms.join(self.id.slot, room, self.room_limits)
    }

    /// Leaves room `room`; an error if this connection is not in it.
    pub fn leave(&mut self, room: &str) -> Result<(), RoomError> {
        self.rooms.leave(self.id.slot, room)
    }

    /// True if this connection is in `room`.
    pub fn is_member(&self, room: &str) -> bool {
        self.rooms.is_member(self.id.slot, room)
    }

    /// Sends `text` to every member of `room` on every loop. The frame is
    /// encoded once and shared; this connection gets a copy too if it is a
    /// member and `include_self` is true.
    pub fn publish_text(&mut self, room: &str, text: &str, include_self: bool) {
        self.publish(room, opcode::TEXT, text.as_bytes(), include_self);
    }

    /// Like [`publish_text`](Self::publish_text), as a binary message.
    pub fn publish_binary(&mut self, room: &str, data: &[u8], include_self: bool) {
        self.publish(room, opcode::BINARY, data, include_self);
    }

    fn publish(&mut self, room: &str, op: u8, payload: &[u8], include_self: bool) {
        let (room, frame) = (Arc::<str>::from(room), Publication::new(op, payload));
        *self.published += 1;
        if include_self && self.rooms.is_member(self.id.slot, &room) {
            // The publisher's own copy goes out in order with its other replies.
            self.send(op, payload);
        }
        self.hub.publish_to_others(self.id.loop_id, &room, &frame);
        self.local.push(LocalPublish { room: Some(room), frame, skip: self.id.slot });
    }

    /// Sends `text` to every connection of the server, on every loop, in a
    /// room or not; encoded once and shared. This connection gets a copy
    /// too if `include_self` is true.
    pub fn broadcast_text(&mut self, text: &str, include_self: bool) {
        self.broadcast(opcode::TEXT, text.as_bytes(), include_self);
    }

    /// Like [`broadcast_text`](Self::broadcast_text), as a binary message.
    pub fn broadcast_binary(&mut self, data: &[u8], include_self: bool) {
        self.broadcast(opcode::BINARY, data, include_self);
    }

    fn broadcast(&mut self, op: u8, payload: &[u8], include_self: bool) {
        let frame = Publication::new(op, payload);
        *self.published += 1;
        if include_self {
            self.send(op, payload);
        }
        self.hub.broadcast_to_others(self.id.loop_id, &frame);
        self.local.push(LocalPublish { room: None, frame, skip: self.id.slot });
    }

    /// Starts the close handshake with `code` (e.g. 1000) and a short reason.
    /// The connection is closed when the peer answers or the close timeout ends.
    pub fn close(&mut self, code: u16, reason: &str) {
        self.session.write_close(self.out, code, reason);
    }
}

/// What a handler may still do for a connection that is gone: tell rooms
/// about it (it has already left them all), e.g. "alice left".
pub struct CloseCtx<'a> {
    pub(crate) id: ConnId,
    pub(crate) hub: &'a Hub,
    pub(crate) local: &'a mut Vec<LocalPublish>,
    pub(crate) published: u64,
}

impl CloseCtx<'_> {
    /// The connection that is gone.
    pub fn id(&self) -> ConnId {
        self.id
    }

    /// Sends `text` to every member of `room` on every loop, encoded once.
    pub fn publish_text(&mut self, room: &str, text: &str) {
        self.publish(room, opcode::TEXT, text.as_bytes());
    }

    /// Like [`publish_text`](Self::publish_text), as a binary message.
    pub fn publish_binary(&mut self, room: &str, data: &[u8]) {
        self.publish(room, opcode::BINARY, data);
    }

    fn publish(&mut self, room: &str, op: u8, payload: &[u8]) {
        let (room, frame) = (Arc::<str>::from(room), Publication::new(op, payload));
        self.published += 1;
        self.hub.publish_to_others(self.id.loop_id, &room, &frame);
        self.local.push(LocalPublish { room: Some(room), frame, skip: self.id.slot });
    }
}

/// An application running on the engine. Every method runs on the event
/// loop thread that owns the connection: keep it short and never block.
pub trait Handler {
    /// A valid upgrade request arrived: accept it (`Ok`, the default) or
    /// refuse it before the 101 is sent. Runs after the engine's own checks
    /// (path, origin, per-address limits); keep it quick, as for every call.
    fn on_upgrade(&mut self, upgrade: &Upgrade<'_>) -> Result<(), Refusal> {
        let _ = upgrade;
        Ok(())
    }

    /// The upgrade succeeded (the 101 is already queued).
    fn on_open(&mut self, ctx: &mut Ctx<'_>, request: &Request<'_>) {
        let _ = (ctx, request);
    }

    /// A whole message arrived.
    fn on_message(&mut self, ctx: &mut Ctx<'_>, message: Message<'_>);

    /// An opened connection is gone, for `reason`; `ctx` can still publish
    /// to rooms. Connections that never completed their handshake are not
    /// reported.
    fn on_close(&mut self, ctx: &mut CloseCtx<'_>, reason: CloseReason) {
        let _ = (ctx, reason);
    }
}
