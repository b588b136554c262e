//! Everything a connection owns, in one table keyed by its slot: the
//! `Conn` itself (socket, protocol state, buffers, timer link), and the
//! side tables only some connections need (peer address for the
//! per-address count, the client behind a proxy, TLS session, room
//! memberships, compression codecs, message-rate buckets, identities).
//!
//! The invariant: [`ConnTable::remove`] undoes all of it and
//! [`ConnTable::release_memory`] shrinks all of it, so a new per-connection
//! feature is one field here and one line in each of those two, never an
//! edit in the engine's accept or close paths. Two things keyed by slot
//! live elsewhere on purpose: owed room deliveries (`pubsub/fanout.rs`)
//! name a slot *and* generation and are skipped once stale, so a close
//! never walks them; and a driver's own per-slot flags (io_uring's armed
//! receive, send in flight), which its `Transport::detach` clears.

use std::net::{IpAddr, SocketAddr};

use slab::Slab;

use crate::runtime::{Links, TimerLink, TimerWheel};
use crate::server::identity::Identities;
use crate::server::pubsub::directory::Directory;
use crate::server::pubsub::rooms::Rooms;
use crate::server::tls::TlsConn;
use crate::ws::compression::{CompressionConfig, Deflaters, Inflaters};

use super::conn::Conn;
use super::rate::RateTable;

/// Generations are 28 bits, so that every driver names a connection
/// exactly: epoll in a token, io_uring in a completion's `user_data`.
pub(crate) const GENERATION_MASK: u32 = (1 << 28) - 1;

/// See the module docs.
pub(crate) struct ConnTable {
    /// The connections, by slot.
    pub(crate) conns: Slab<Conn>,
    /// The generation the next connection gets.
    next_generation: u32,
    /// Each slot's peer address while `--max-conns-per-ip` counts
    /// connections (its count is released at close); else empty.
    pub(crate) peers: Vec<Option<IpAddr>>,
    /// Each slot's client behind a proxy while `--proxy-protocol` or
    /// `--trusted-proxies` is on (see `engine/client.rs`); else empty.
    pub(crate) clients: Vec<Client>,
    /// Each slot's TLS session (boxed: only TLS servers pay for it).
    pub(crate) tls: Vec<Option<Box<TlsConn>>>,
    /// The connections' timers; each `Conn` holds its link.
    pub(crate) wheel: TimerWheel,
    /// This loop's rooms and their members.
    pub(crate) rooms: Rooms,
    /// What compresses outgoing messages (shared, or a connection's own).
    pub(crate) deflaters: Deflaters,
    /// What inflates incoming ones (shared, or a connection's own).
    pub(crate) inflaters: Inflaters,
    /// Who each connection is (`--jwt-key` only; else empty).
    pub(crate) identities: Identities,
    /// Each slot's message-rate buckets, while a rate limit is on.
    pub(crate) rates: RateTable,
}

/// Who a connection's client is, where a proxy may stand between: the
/// default (and the only value while the feature is off) is the socket's
/// peer, admitted at accept.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) enum Client {
    /// The socket's peer, admitted by its address at accept.
    #[default]
    Socket,
    /// A trusted proxy's connection whose PROXY header has not come yet.
    AwaitingHeader,
    /// Admission by address waits for the upgrade; the client the PROXY
    /// header named, if it named one (else the socket's peer, a trusted
    /// proxy whose forwarding header may name the client).
    Deferred(Option<SocketAddr>),
    /// Judged at the upgrade: the client's address.
    Known(SocketAddr),
}

/// What a removed connection leaves for the engine to account for.
pub(crate) struct Removed {
    /// The connection; dropping its socket closes it.
    pub(crate) conn: Conn,
    /// The address whose per-address count it held, if counted.
    pub(crate) peer: Option<IpAddr>,
    /// Its TLS session, if it spoke TLS.
    pub(crate) tls: Option<Box<TlsConn>>,
}

impl Links for Slab<Conn> {
    fn link(&mut self, slot: u32) -> &mut TimerLink {
        &mut self[slot as usize].timer
    }
}

impl ConnTable {
    /// An empty table; `directory` is the process-wide set of rooms with
    /// members, when another process needs to know it.
    pub(crate) fn new(
        wheel: TimerWheel,
        directory: Option<std::sync::Arc<Directory>>,
        compression: CompressionConfig,
        identities: Identities,
        rates: RateTable,
    ) -> Self {
        ConnTable {
            conns: Slab::new(),
            next_generation: 0,
            peers: Vec::new(),
            clients: Vec::new(),
            tls: Vec::new(),
            wheel,
            rooms: Rooms::new(directory),
            deflaters: Deflaters::new(compression),
            inflaters: Inflaters::default(),
            identities,
            rates,
        }
    }

    /// The next connection's generation (28 bits, wrapping).
    pub(crate) fn next_generation(&mut self) -> u32 {
        let generation = self.next_generation;
        self.next_generation = (generation + 1) & GENERATION_MASK;
        generation
    }

    /// Takes `conn` in with what it owns beside itself; its slot.
    pub(crate) fn insert(&mut self, conn: Conn, tls: Option<TlsConn>, peer: Option<IpAddr>) -> usize {
        let slot = self.conns.insert(conn);
        if let Some(session) = tls {
            if self.tls.len() <= slot {
                self.tls.resize_with(slot + 1, || None);
            }
            self.tls[slot] = Some(Box::new(session));
        }
        if let Some(ip) = peer {
            if self.peers.len() <= slot {
                self.peers.resize(slot + 1, None);
            }
            self.peers[slot] = Some(ip);
        }
        slot
    }

    /// Records where the connection's client comes from (only called while
    /// the feature is on: the table stays empty otherwise).
    pub(crate) fn set_client(&mut self, slot: usize, client: Client) {
        if self.clients.len() <= slot {
            self.clients.resize(slot + 1, Client::Socket);
        }
        self.clients[slot] = client;
    }

    /// Where the connection's client comes from.
    #[inline]
    pub(crate) fn client(&self, slot: usize) -> Client {
        self.clients.get(slot).copied().unwrap_or_default()
    }

    /// True if `slot` holds the connection of `generation`.
    #[inline]
    pub(crate) fn is_live(&self, slot: usize, generation: u32) -> bool {
        self.conns.get(slot).is_some_and(|c| c.generation == generation)
    }

    /// The connection's TLS session, if it speaks TLS.
    #[inline]
    pub(crate) fn tls_mut(&mut self, slot: usize) -> Option<&mut TlsConn> {
        self.tls.get_mut(slot).and_then(|t| t.as_deref_mut())
    }

    /// True if the connection speaks TLS.
    #[inline]
    pub(crate) fn is_tls(&self, slot: usize) -> bool {
        self.tls.get(slot).is_some_and(Option::is_some)
    }

    /// True while the connection's TLS handshake is under way.
    pub(crate) fn is_tls_handshaking(&self, slot: usize) -> bool {
        self.tls.get(slot).and_then(|t| t.as_deref()).is_some_and(TlsConn::is_handshaking)
    }

    /// Removes the connection and everything it owns here: its timer, room
    /// memberships, codecs, rate buckets, TLS session and counted address
    /// (the last two handed back for the engine to account for).
    pub(crate) fn remove(&mut self, slot: usize) -> Removed {
        self.wheel.remove(&mut self.conns, slot as u32);
        self.rooms.remove_conn(slot as u32);
        self.deflaters.forget(slot as u32);
        self.inflaters.forget(slot as u32);
        self.identities.detach(slot);
        self.rates.forget(slot);
        let tls = self.tls.get_mut(slot).and_then(Option::take);
        let peer = self.peers.get_mut(slot).and_then(Option::take);
        if let Some(client) = self.clients.get_mut(slot) {
            *client = Client::Socket;
        }
        let conn = self.conns.remove(slot);
        Removed { conn, peer, tls }
    }

    /// Gives back the capacity a peak left: the slab and every side table
    /// past the highest occupied slot. Returns that end (the slots still
    /// in use lie below it), for the driver's own per-slot table.
    pub(crate) fn release_memory(&mut self) -> usize {
        self.conns.shrink_to_fit();
        let end = self.conns.iter().map(|(slot, _)| slot + 1).max().unwrap_or(0);
        self.peers.truncate(end);
        self.peers.shrink_to_fit();
        self.clients.truncate(end);
        self.clients.shrink_to_fit();
        self.tls.truncate(end);
        self.tls.shrink_to_fit();
        self.rooms.shrink_to_fit();
        self.identities.release_memory();
        self.rates.truncate(end);
        end
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_client_entry_costs_what_the_docs_say() {
        // ARCHITECTURE.md's memory table: 36 bytes a slot, feature on only.
        assert_eq!(std::mem::size_of::<Client>(), 36);
    }
}
