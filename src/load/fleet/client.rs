//! One client connection as the fleet keeps it: its socket, where it is in
//! its life, its WebSocket session and buffers, and the messages it awaits
//! answers to. A slot in the fleet's slab; the generation in its token
//! tells a stale event from one for the connection now in the slot.

use std::collections::VecDeque;
use std::time::Instant;

use mio::net::TcpStream;
use slab::Slab;

use crate::runtime::{Links, TimerLink};
use crate::ws::Session;

use super::waiting::Lost;

/// Where a connection is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum State {
    /// The TCP connect is under way.
    Connecting,
    /// The upgrade request is sent; waiting for the 101.
    Handshaking,
    /// Upgraded: the scenario runs on it.
    Open,
    /// We sent a close frame.
    Closing,
    /// The close handshake is over; waiting for the server's FIN.
    Draining,
}

/// One client connection.
pub(crate) struct Client {
    /// Registered with the fleet's poll under the slot and `generation`.
    pub(super) socket: TcpStream,
    /// `wss://`: the TLS session (it buffers records both ways; `wbuf` is
    /// then unused).
    pub(super) tls: Option<Box<rustls::ClientConnection>>,
    pub(super) state: State,
    /// The WebSocket protocol's state (client role).
    pub(super) session: Session,
    /// The handshake's Sec-WebSocket-Key.
    pub(super) key: [u8; 24],
    /// When the connect began (the handshake's latency starts here).
    pub(super) started: Instant,
    /// Bytes read and not yet decoded.
    pub(super) rbuf: Vec<u8>,
    /// Bytes the socket would not take yet (plain connections).
    pub(super) wbuf: Vec<u8>,
    /// A fragmented message being put together.
    pub(super) assembly: Vec<u8>,
    /// The messages it awaits answers to (its scenario's).
    pub(crate) in_flight: InFlight,
    /// Tells this connection's events from those of the slot's earlier ones.
    pub(crate) generation: u32,
    /// Its place in the fleet's timer wheel.
    pub(super) timer: TimerLink,
    /// `--reconnect`: the lost connection this one brings back, until its
    /// 101 (boxed: most connections are not retries).
    pub(super) retry: Option<Box<Lost>>,
}

impl Links for Slab<Client> {
    fn link(&mut self, slot: u32) -> &mut TimerLink {
        &mut self[slot as usize].timer
    }
}

/// The messages a connection sent and awaits answers to, oldest first,
/// each with its sequence number (counted from 1 per connection) and the
/// time it was sent.
#[derive(Default)]
pub(crate) struct InFlight {
    last_seq: u64,
    sent: VecDeque<(u64, Instant)>,
}

impl InFlight {
    /// The sequence number the next message sent will have.
    pub(crate) fn next_seq(&self) -> u64 {
        self.last_seq + 1
    }

    /// The next message was sent `at`; its sequence number.
    pub(crate) fn sent(&mut self, at: Instant) -> u64 {
        self.last_seq += 1;
        self.sent.push_back((self.last_seq, at));
        self.last_seq
    }

    /// The oldest message awaiting an answer, now answered (or not).
    pub(crate) fn pop_oldest(&mut self) -> Option<(u64, Instant)> {
        self.sent.pop_front()
    }

    /// When the oldest message awaiting an answer was sent.
    pub(crate) fn oldest_sent_at(&self) -> Option<Instant> {
        self.sent.front().map(|(_, at)| *at)
    }

    /// Gives up on every message awaiting an answer; how many there were.
    pub(crate) fn abandon(&mut self) -> u64 {
        let n = self.sent.len() as u64;
        self.sent.clear();
        n
    }
}
