//! The library's public face: what an application implements to run on
//! the engine, and the context it is handed to act on a connection.
//!
//! Each event loop owns its own handler instance (made by the factory given
//! to `Server::start`), so a handler needs no lock and need not be `Send`.
//! Everything it sends is appended to the loop's output buffer and written
//! once per batch of input, so a handler never blocks and never sees a
//! socket.

use crate::ws::{Request, Session};

use super::stats::CloseReason;

/// A connection's identity across the whole server: the loop that owns it,
/// its slot in that loop, and a generation that makes a reused slot a
/// different connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ConnId {
    /// The event loop (0-based).
    pub loop_id: u32,
    /// The slab slot inside the loop.
    pub slot: u32,
    /// The generation of the slot.
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

/// What a handler may do with the connection it is called for.
pub struct Ctx<'a> {
    pub(crate) id: ConnId,
    pub(crate) session: &'a mut Session,
    pub(crate) out: &'a mut Vec<u8>,
    pub(crate) sent: &'a mut u64,
}

impl Ctx<'_> {
    /// The connection this call is about.
    pub fn id(&self) -> ConnId {
        self.id
    }

    /// Sends a text message. False if the connection is closing (nothing sent).
    pub fn send_text(&mut self, text: &str) -> bool {
        let ok = self.session.write_text(self.out, text);
        *self.sent += ok as u64;
        ok
    }

    /// Sends a binary message. False if the connection is closing (nothing sent).
    pub fn send_binary(&mut self, data: &[u8]) -> bool {
        let ok = self.session.write_binary(self.out, data);
        *self.sent += ok as u64;
        ok
    }

    /// Starts the close handshake with `code` (e.g. 1000) and a short reason.
    /// The connection is closed when the peer answers or the close timeout ends.
    pub fn close(&mut self, code: u16, reason: &str) {
        self.session.write_close(self.out, code, reason);
    }
}

/// An application running on the engine. Every method runs on the event
/// loop thread that owns the connection: keep it short and never block.
pub trait Handler {
    /// The upgrade succeeded (the 101 is already queued).
    fn on_open(&mut self, ctx: &mut Ctx<'_>, request: &Request<'_>) {
        let _ = (ctx, request);
    }

    /// A whole message arrived.
    fn on_message(&mut self, ctx: &mut Ctx<'_>, message: Message<'_>);

    /// An opened connection is gone, for `reason`. Connections that never
    /// completed their handshake are not reported.
    fn on_close(&mut self, id: ConnId, reason: CloseReason) {
        let _ = (id, reason);
    }
}
