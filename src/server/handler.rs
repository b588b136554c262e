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
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::Arc;

use crate::ws::frame::opcode;
use crate::ws::{HandshakeError, Request, Session};

use super::identity::{Denied, Identities, Rejection, User, Verified, Verifier};
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
    pub(crate) user: Option<&'a Verified>,
    /// The client behind a trusted proxy (PROXY header, forwarding
    /// header), if one names it; else the socket's peer is.
    pub(crate) client: Option<SocketAddr>,
}

impl Upgrade<'_> {
    /// The client's address: behind a trusted proxy (`--proxy-protocol`,
    /// `--trusted-proxies`) the one it names (port 0 where a forwarding
    /// header gave none), else the socket's peer, asked of the kernel on
    /// each call. `None` if the peer is already gone.
    pub fn peer_addr(&self) -> Option<SocketAddr> {
        self.client.or_else(|| self.socket.peer_addr().ok())
    }

    /// What the request's token says (`--jwt-key`): the user id, its
    /// expiry and rights, already checked. `None` when identities are off.
    pub fn user(&self) -> Option<&Verified> {
        self.user
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

/// Why an application refused a peer's publish or broadcast: the `reason`
/// label of `wsloop_publish_refused_total`, and the error code the
/// built-in app replies with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PublishRefusal {
    /// The message is over the application's publish size limit.
    TooLarge,
    /// The room name is one `join` would refuse ([`RoomError::BadName`]).
    BadRoomName,
    /// Broadcasts from peers are not allowed.
    BroadcastDisabled,
    /// The connection's token does not allow it ([`RoomError::Forbidden`]).
    Forbidden,
}

impl PublishRefusal {
    /// Every refusal, in counter order.
    pub const ALL: [PublishRefusal; 4] = [
        PublishRefusal::TooLarge,
        PublishRefusal::BadRoomName,
        PublishRefusal::BroadcastDisabled,
        PublishRefusal::Forbidden,
    ];

    /// A stable label: the metric's `reason` and the reply's error code.
    pub fn label(self) -> &'static str {
        match self {
            PublishRefusal::TooLarge => "too_large",
            PublishRefusal::BadRoomName => RoomError::BadName.label(),
            PublishRefusal::BroadcastDisabled => "broadcast_disabled",
            PublishRefusal::Forbidden => RoomError::Forbidden.label(),
        }
    }
}

/// Publishes an application refused, by [`PublishRefusal`], summed over
/// every loop. Shared by the handler instances (one per loop) and the
/// metrics (`wsloop_publish_refused_total{reason}`); refusals are rare
/// next to messages, so one shared atomic per reason is cheap enough.
#[derive(Debug, Default)]
pub struct PublishRefusals([AtomicU64; PublishRefusal::ALL.len()]);

impl PublishRefusals {
    /// Counts one refusal.
    pub fn count(&self, why: PublishRefusal) {
        self.0[why as usize].fetch_add(1, Relaxed);
    }

    /// Refusals for `why` so far.
    pub fn get(&self, why: PublishRefusal) -> u64 {
        self.0[why as usize].load(Relaxed)
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
    pub(crate) who: Who<'a>,
}

/// Who a connection is: its loop's identities, and the verifier when
/// `--jwt-key` is on (`None`: no identities, every room action allowed).
pub(crate) struct Who<'a> {
    pub(crate) identities: &'a mut Identities,
    pub(crate) jwt: Option<&'a Verifier>,
}

/// Bytes in a refresh's token at most (an upgrade's is bounded by the
/// request head): a larger one is refused unread.
pub const MAX_REFRESH_TOKEN: usize = 16 * 1024;

/// Why [`Ctx::refresh`] kept the connection's old token.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RefreshError {
    /// The server checks no tokens (`--jwt-key` is not set).
    Off,
    /// The connection is closing: nothing more is checked for it.
    Closing,
    /// The new token was refused, counted in `wsloop_token_refreshes_total{result="refused"}`.
    Refused(Rejection),
}

impl RefreshError {
    /// True if the refused token cost a signature check: the connection
    /// should be closed (the built-in app closes it, 1008), or a client
    /// could make its loop check signatures without end.
    pub fn should_close(self) -> bool {
        matches!(self, RefreshError::Refused(why) if why != Rejection::NotNewer)
    }

    /// A stable label for replies: `jwt_off`, or the rejection's.
    pub fn label(self) -> &'static str {
        match self {
            RefreshError::Off => "jwt_off",
            RefreshError::Closing => "closing",
            RefreshError::Refused(why) => why.label(),
        }
    }
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

    /// Who the connection is (`--jwt-key`): its user id, rights and token
    /// expiry. `None` when identities are off.
    pub fn user(&self) -> Option<User<'_>> {
        self.who.identities.get(self.id.slot as usize)
    }

    /// Ok if the connection's rights allow `action` on `room` (always, with
    /// identities off); else [`RoomError::Forbidden`], counted. Rights end
    /// with the token (past the clock skew allowed), even before the sweep
    /// that closes the connection has come.
    fn allowed(&self, action: Denied, room: &str) -> Result<(), RoomError> {
        let Some(jwt) = self.who.jwt else { return Ok(()) };
        let current = |expires: u64| expires.saturating_add(jwt.leeway()) > crate::server::identity::unix_now();
        let allowed = self.user().filter(|user| current(user.expires)).is_some_and(|user| match action {
            Denied::Join => user.rights.may_join(user.id, room),
            Denied::Publish => user.rights.may_publish(user.id, room),
            Denied::Broadcast => user.rights.broadcast,
        });
        if allowed {
            return Ok(());
        }
        jwt.counts.deny(action);
        Err(RoomError::Forbidden)
    }

    /// Replaces the connection's token with `token` (a `refresh` before
    /// the old one expires): a token for the same user id with a later
    /// `exp` (one that is not later is turned away before its signature is
    /// checked), checked like an upgrade's; its rights and expiry replace
    /// the old ones, and the rooms the new rights no longer name are left.
    /// Returns the new expiry (seconds since the Unix epoch). On an error
    /// the old token stays; see [`RefreshError::should_close`].
    pub fn refresh(&mut self, token: &[u8]) -> Result<u64, RefreshError> {
        let Some(jwt) = self.who.jwt else { return Err(RefreshError::Off) };
        if self.session.phase() != crate::ws::Phase::Open {
            // Closing (a refused refresh, an expired token): no more checks.
            return Err(RefreshError::Closing);
        }
        if token.len() > MAX_REFRESH_TOKEN {
            jwt.counts.refresh(false);
            return Err(RefreshError::Refused(Rejection::Malformed));
        }
        let slot = self.id.slot;
        let in_use = self.user().map(|user| user.expires);
        let newer = match (in_use, Verifier::unverified_expiry(token)) {
            (None, _) => Err(Rejection::OtherUser),
            (Some(old), Some(new)) if new <= old => Err(Rejection::NotNewer),
            _ => Ok(()),
        };
        let refreshed = newer
            .and_then(|()| jwt.verify(token))
            .and_then(|v| self.who.identities.refresh(slot as usize, &v).map(|_| v));
        jwt.counts.refresh(refreshed.is_ok());
        let verified = refreshed.map_err(RefreshError::Refused)?;
        for room in self.rooms.rooms_of(slot) {
            if !verified.rights.may_join(&verified.sub, &room) {
                let _ = self.rooms.leave(slot, &room);
            }
        }
        Ok(verified.expires)
    }

    /// Joins room `room` (joining twice is not an error). With identities
    /// on, the connection's rights must name it ([`RoomError::Forbidden`]).
    pub fn join(&mut self, room: &str) -> Result<(), RoomError> {
        self.room_limits.check_name(room)?;
        self.allowed(Denied::Join, room)?;
        self.rooms.join(self.id.slot, room, self.room_limits)
    }

    /// Leaves room `room`; an error if this connection is not in it.
    pub fn leave(&mut self, room: &str) -> Result<(), RoomError> {
        self.rooms.leave(self.id.slot, room)
    }

    /// Whether `room` is a name [`join`](Self::join) and
    /// [`publish_text`](Self::publish_text) take: not empty, at most
    /// [`RoomLimits::max_name_len`] bytes. For checking a name from a peer
    /// before building a message around it.
    pub fn check_room_name(&self, room: &str) -> Result<(), RoomError> {
        self.room_limits.check_name(room)
    }

    /// Whether [`publish_text`](Self::publish_text) to `room` would be
    /// taken: its name, and (identities on) the connection's rights. For
    /// checking before building a message around it.
    pub fn check_publish(&self, room: &str) -> Result<(), RoomError> {
        self.room_limits.check_name(room)?;
        self.allowed(Denied::Publish, room)
    }

    /// Whether [`broadcast_text`](Self::broadcast_text) would be taken
    /// (identities on: the connection's rights allow broadcasts).
    pub fn check_broadcast(&self) -> Result<(), RoomError> {
        self.allowed(Denied::Broadcast, "")
    }

    /// True if this connection is in `room`.
    pub fn is_member(&self, room: &str) -> bool {
        self.rooms.is_member(self.id.slot, room)
    }

    /// Sends `text` to every member of `room` on every loop. The frame is
    /// encoded once and shared; this connection gets a copy too if it is a
    /// member and `include_self` is true.
    ///
    /// A room name that [`join`](Self::join) would refuse (empty, or over
    /// [`RoomLimits::max_name_len`]) is refused here too, with
    /// [`RoomError::BadName`]: nothing is sent, to this process's members
    /// or beyond it, and nothing is counted as published. Membership is
    /// not needed to publish; with identities on, the connection's rights
    /// must name the room ([`RoomError::Forbidden`], nothing sent).
    pub fn publish_text(&mut self, room: &str, text: &str, include_self: bool) -> Result<(), RoomError> {
        self.publish(room, opcode::TEXT, text.as_bytes(), include_self)
    }

    /// Like [`publish_text`](Self::publish_text), as a binary message.
    pub fn publish_binary(&mut self, room: &str, data: &[u8], include_self: bool) -> Result<(), RoomError> {
        self.publish(room, opcode::BINARY, data, include_self)
    }

    fn publish(&mut self, room: &str, op: u8, payload: &[u8], include_self: bool) -> Result<(), RoomError> {
        self.room_limits.check_name(room)?;
        self.allowed(Denied::Publish, room)?;
        let (room, frame) = (Arc::<str>::from(room), Publication::new(op, payload));
        *self.published += 1;
        if include_self && self.rooms.is_member(self.id.slot, &room) {
            // The publisher's own copy goes out in order with its other replies.
            self.send(op, payload);
        }
        self.hub.publish_to_others(self.id.loop_id, &room, &frame);
        self.local.push(LocalPublish { room: Some(room), frame, skip: self.id.slot });
        Ok(())
    }

    /// Sends `text` to every connection of the server, on every loop, in a
    /// room or not; encoded once and shared. This connection gets a copy
    /// too if `include_self` is true. With identities on, the connection's
    /// rights must allow broadcasts ([`RoomError::Forbidden`], nothing sent).
    pub fn broadcast_text(&mut self, text: &str, include_self: bool) -> Result<(), RoomError> {
        self.broadcast(opcode::TEXT, text.as_bytes(), include_self)
    }

    /// Like [`broadcast_text`](Self::broadcast_text), as a binary message.
    pub fn broadcast_binary(&mut self, data: &[u8], include_self: bool) -> Result<(), RoomError> {
        self.broadcast(opcode::BINARY, data, include_self)
    }

    fn broadcast(&mut self, op: u8, payload: &[u8], include_self: bool) -> Result<(), RoomError> {
        self.allowed(Denied::Broadcast, "")?;
        let frame = Publication::new(op, payload);
        *self.published += 1;
        if include_self {
            self.send(op, payload);
        }
        self.hub.broadcast_to_others(self.id.loop_id, &frame);
        self.local.push(LocalPublish { room: None, frame, skip: self.id.slot });
        Ok(())
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
    /// The name is not checked as [`Ctx::publish_text`] checks it: no peer
    /// is sending here, the handler names a room of its own choosing (one
    /// the connection was in, typically).
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

    /// An opened connection moves to a new process (a live hand-off,
    /// `--takeover`): returns what this handler keeps for it (at most 64
    /// KiB; more is dropped with a warning), given to the new process's
    /// handler in [`on_adopt`](Self::on_adopt). `on_close` is not called
    /// for it here: it goes on living there.
    fn on_handoff(&mut self, id: ConnId) -> Vec<u8> {
        let _ = id;
        Vec::new()
    }

    /// An opened connection arrived from an earlier process, under its new
    /// `id`, with what [`on_handoff`](Self::on_handoff) returned there.
    /// Its rooms are joined already; `on_open` is not called again.
    fn on_adopt(&mut self, id: ConnId, carried: &[u8]) {
        let _ = (id, carried);
    }
}

/// A connection's [`Ctx`] without an engine, for unit tests of handlers:
/// an open session and what it wrote, one loop's rooms, and a hub with no
/// other loops (so a publish ends in `local`, where a test can see it).
#[cfg(test)]
pub(crate) mod testing {
    use super::*;
    use crate::ws::compression::CompressionConfig;
    use crate::ws::frame::FrameHead;
    use crate::ws::session::Event;

    /// One connection (slot 0 of loop 0) and everything its `Ctx` borrows.
    pub(crate) struct TestConn {
        session: Session,
        out: Vec<u8>,
        deflaters: Deflaters,
        sent: u64,
        rooms: Rooms,
        limits: RoomLimits,
        hub: Hub,
        /// What the handler published, in order.
        pub local: Vec<LocalPublish>,
        /// Publishes counted, as the engine would add them to its stats.
        pub published: u64,
        identities: Identities,
        jwt: Option<Arc<Verifier>>,
    }

    impl TestConn {
        /// A connection whose upgrade was accepted, under `limits`.
        pub(crate) fn open(limits: RoomLimits) -> TestConn {
            let mut session = Session::server();
            let mut out = Vec::new();
            let mut request = Vec::new();
            crate::ws::client::write_request(&mut request, "x", "/ws", &crate::ws::client::generate_key());
            let mut assembly = Vec::new();
            let decoded = session.decode(&mut request, &mut assembly, &mut out, &crate::ws::Config::default());
            match decoded.expect("a valid upgrade").event {
                Some(Event::Upgrade(req)) => session.accept(&mut out, &req),
                other => panic!("expected the upgrade, got {other:?}"),
            }
            out.clear();
            TestConn {
                session,
                out,
                deflaters: Deflaters::new(CompressionConfig::default()),
                sent: 0,
                rooms: Rooms::default(),
                limits,
                hub: Hub::default(),
                local: Vec::new(),
                published: 0,
                identities: Identities::new(None),
                jwt: None,
            }
        }

        /// Identities on: the connection is `verified`, checked by `jwt`.
        pub(crate) fn with_identity(mut self, jwt: Arc<Verifier>, verified: &Verified) -> TestConn {
            self.identities.attach(0, verified).expect("no per-user cap");
            self.jwt = Some(jwt);
            self
        }

        /// The context a handler is given for this connection.
        pub(crate) fn ctx(&mut self) -> Ctx<'_> {
            Ctx {
                id: ConnId { loop_id: 0, slot: 0, generation: 0 },
                session: &mut self.session,
                out: &mut self.out,
                deflaters: &mut self.deflaters,
                sent: &mut self.sent,
                rooms: &mut self.rooms,
                room_limits: &self.limits,
                hub: &self.hub,
                local: &mut self.local,
                published: &mut self.published,
                who: Who { identities: &mut self.identities, jwt: self.jwt.as_deref() },
            }
        }

        /// The payloads of the frames written to this connection since the
        /// last call, as text.
        pub(crate) fn take_replies(&mut self) -> Vec<String> {
            let mut replies = Vec::new();
            let mut at = 0;
            while let Some(head) = FrameHead::decode(&self.out[at..]).expect("frames the server wrote") {
                let payload = &self.out[at + head.header_len as usize..at + head.frame_len()];
                replies.push(String::from_utf8_lossy(payload).into_owned());
                at += head.frame_len();
            }
            assert_eq!(at, self.out.len(), "a partial frame in the output");
            self.out.clear();
            replies
        }

        /// The rooms (`None`: a broadcast) and payloads published so far.
        pub(crate) fn publishes(&self) -> Vec<(Option<String>, String)> {
            let text = |p: &LocalPublish| String::from_utf8_lossy(p.frame.payload()).into_owned();
            self.local.iter().map(|p| (p.room.as_deref().map(str::to_string), text(p))).collect()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::testing::TestConn;
    use super::*;

    #[test]
    fn publish_refuses_the_names_join_refuses_and_sends_nothing() {
        let limits = RoomLimits { max_name_len: 8, max_rooms_per_conn: 4 };
        let mut conn = TestConn::open(limits);
        let mut ctx = conn.ctx();
        ctx.join("r").unwrap();
        let long = "x".repeat(9);
        for bad in ["", long.as_str()] {
            assert_eq!(ctx.publish_text(bad, "hi", true), Err(RoomError::BadName), "{bad:?}");
            assert_eq!(ctx.publish_binary(bad, b"hi", true), Err(RoomError::BadName), "{bad:?}");
        }
        assert_eq!(ctx.publish_text("r", "ok", true), Ok(()));
        assert_eq!(ctx.publish_text("12345678", "at the limit", false), Ok(()));
        assert_eq!(conn.published, 2, "only the accepted publishes count");
        assert_eq!(
            conn.publishes(),
            [(Some("r".to_string()), "ok".to_string()), (Some("12345678".to_string()), "at the limit".to_string())]
        );
        assert_eq!(conn.take_replies(), ["ok"], "the member's own copy, and nothing of the refused ones");
    }

    #[test]
    fn refusals_count_by_reason_and_label_like_the_replies() {
        let counts = PublishRefusals::default();
        counts.count(PublishRefusal::TooLarge);
        counts.count(PublishRefusal::TooLarge);
        counts.count(PublishRefusal::BroadcastDisabled);
        let got: Vec<_> = PublishRefusal::ALL.iter().map(|r| (r.label(), counts.get(*r))).collect();
        assert_eq!(got, [("too_large", 2), ("bad_room_name", 0), ("broadcast_disabled", 1), ("forbidden", 0)]);
        for (i, r) in PublishRefusal::ALL.iter().enumerate() {
            assert_eq!(*r as usize, i);
        }
    }
}
