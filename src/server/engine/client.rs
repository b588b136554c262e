//! The client behind a proxy (`--proxy-protocol`, `--trusted-proxies`):
//! who may connect at accept, the PROXY header taken before the request
//! head, and the client's address judged at the upgrade, where the
//! per-address limits then count it instead of the proxy's.
//!
//! Invariant: while the feature is off nothing here runs past one check
//! and the table's `clients` stays empty. While it is on, a connection
//! from a trusted proxy is admitted by address exactly once, at its
//! upgrade, by the client's address (the PROXY header's, or the
//! forwarding header's rightmost untrusted hop), and that address is the
//! one its close releases; a connection from anyone else is admitted at
//! accept by its socket's address as before, or (PROXY on) refused there.

use std::net::{IpAddr, SocketAddr};
use std::time::Instant;

use crate::server::forwarded::{client_in_chain, ProxyConfig};
use crate::server::handler::Handler;
use crate::server::life::CloseReason;
use crate::server::proxy_protocol::{self, Parsed};
use crate::server::stats::{LoopStats, ProxyRefusal};
use crate::ws::{HandshakeError, Request, Session, WsError};

use super::table::Client;
use super::transport::Transport;
use super::{Engine, LoopEnv};

/// What a read turn did with a connection's PROXY header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum HeaderTurn {
    /// Not whole yet: the input buffer needs this many bytes in all.
    Wait(usize),
    /// Taken: the header's length; the request head follows it.
    Took(usize),
    /// Refused (a 400 is in the output): the connection ends for this.
    Refused(CloseReason),
}

impl<H: Handler, T: Transport> Engine<H, T> {
    /// At accept: where this connection's client will come from, or `None`
    /// if it must be closed now (from outside `--trusted-proxies` while a
    /// PROXY header is expected: counted; or already gone).
    pub(crate) fn client_at_accept(
        &mut self,
        socket: &mio::net::TcpStream,
        peer: Option<SocketAddr>,
    ) -> Option<Client> {
        let proxy = &self.env.cfg.proxy;
        if !proxy.is_on() {
            return Some(Client::Socket);
        }
        // io_uring's accept gives no address: ask the kernel.
        let peer = peer.or_else(|| socket.peer_addr().ok())?;
        let trusted = proxy.trusted.contains(peer.ip());
        if proxy.proxy_protocol && !trusted {
            self.env.stats.count_proxy_refusal(ProxyRefusal::Untrusted);
            self.env.stats.count_close(CloseReason::HandshakeFailed);
            log::debug!("loop {}: refused {peer} at accept: not a trusted proxy", self.env.id);
            return None;
        }
        Some(match (proxy.proxy_protocol, trusted) {
            (true, _) => Client::AwaitingHeader,
            (false, true) => Client::Deferred(None),
            (false, false) => Client::Socket,
        })
    }

    /// Takes the PROXY header at the front of `buf` (everything the
    /// connection has sent so far) for a connection awaiting it.
    pub(crate) fn take_proxy_header(&mut self, slot: usize, buf: &[u8]) -> HeaderTurn {
        match proxy_protocol::parse(buf) {
            Ok(Parsed::Incomplete { wanted }) => HeaderTurn::Wait(wanted),
            Ok(Parsed::Done(header)) => {
                self.table.set_client(slot, Client::Deferred(header.source));
                if let Some(client) = header.source {
                    log::debug!("loop {}: connection {slot} carries {client} (PROXY header)", self.env.id);
                }
                HeaderTurn::Took(header.len)
            }
            Err(e) => {
                // Counted here, once: its close no longer awaits a header.
                self.table.set_client(slot, Client::Socket);
                self.env.stats.count_proxy_refusal(ProxyRefusal::Malformed);
                log::debug!("loop {}: connection {slot} refused: {e}", self.env.id);
                crate::ws::handshake::write_reject(&mut self.scratch.out, HandshakeError::Malformed);
                HeaderTurn::Refused(CloseReason::HandshakeFailed)
            }
        }
    }

    /// At close: a connection that never sent its whole header is counted
    /// (by the deadline: timeout; ended by the peer: malformed). One the
    /// server ends for its own reasons (shutdown, memory) is not a refusal.
    pub(crate) fn count_missing_header(&self, slot: usize, reason: CloseReason) {
        if self.table.client(slot) != Client::AwaitingHeader {
            return;
        }
        let why = match reason {
            CloseReason::HandshakeTimeout => ProxyRefusal::Timeout,
            CloseReason::PeerGone | CloseReason::IoError | CloseReason::ProtocolError => ProxyRefusal::Malformed,
            _ => return,
        };
        self.env.stats.count_proxy_refusal(why);
    }
}

/// What judging a client at its upgrade touches: the loop's settings
/// and counters, and the table's two side tables it fills (the engine's
/// `decode_and_handle` holds the rest of the table meanwhile).
pub(crate) struct Judge<'a> {
    pub(crate) env: &'a LoopEnv,
    pub(crate) clients: &'a mut Vec<Client>,
    pub(crate) peers: &'a mut Vec<Option<IpAddr>>,
}

impl Judge<'_> {
    /// The client of a connection at its upgrade, admitted by its address
    /// if admission waited for it (its count then released at close).
    /// `Ok(None)`: the socket's peer is the client (admitted at accept).
    /// `Err`: refused (429, in `out`).
    pub(crate) fn client(
        self,
        slot: usize,
        socket: &mio::net::TcpStream,
        session: &mut Session,
        request: &Request<'_>,
        out: &mut Vec<u8>,
    ) -> Result<Option<SocketAddr>, WsError> {
        let proxied = match self.clients.get(slot) {
            None | Some(Client::Socket | Client::AwaitingHeader) => return Ok(None),
            Some(Client::Known(addr)) => return Ok(Some(*addr)),
            Some(Client::Deferred(proxied)) => *proxied,
        };
        let Some(peer) = proxied.or_else(|| socket.peer_addr().ok()) else {
            return Ok(None); // Gone: its end is read next.
        };
        let addr = match (self.env.cfg.proxy.proxy_protocol, proxied) {
            // A PROXY header that names no client (LOCAL, UNKNOWN): the
            // proxy's own connection, a health check. Its forwarding headers
            // came from whoever wrote them, not from the proxy: not believed.
            (true, None) => peer,
            _ => forwarded_client(&self.env.cfg.proxy, &self.env.stats, peer, request),
        };
        let limits = &self.env.shared.address_limits;
        if limits.is_enabled() {
            if let Err(limited) = limits.admit(addr.ip(), Instant::now()) {
                log::debug!("loop {}: {addr} over its per-address limits", self.env.id);
                return Err(session.refuse(out, limited.error, limited.retry_after));
            }
            if limits.counts_conns() {
                if self.peers.len() <= slot {
                    self.peers.resize(slot + 1, None);
                }
                self.peers[slot] = Some(addr.ip());
            }
        }
        self.clients[slot] = Client::Known(addr);
        log::debug!("loop {}: connection {slot} is {addr}'s", self.env.id);
        Ok(Some(addr))
    }
}

/// `peer`, or the client its forwarding header names if `peer` is a
/// trusted proxy (port 0: a header names an address, rarely a port).
fn forwarded_client(proxy: &ProxyConfig, stats: &LoopStats, peer: SocketAddr, request: &Request<'_>) -> SocketAddr {
    let Some(name) = proxy.header.name() else { return peer };
    if !proxy.trusted.contains(peer.ip()) {
        return peer;
    }
    match client_in_chain(proxy.header, request.header_values(name), &proxy.trusted) {
        Ok(Some(ip)) if ip == peer.ip() => peer,
        Ok(Some(ip)) => SocketAddr::new(ip, 0),
        Ok(None) => peer,
        Err(e) => {
            stats.forwarded_unusable.add(1);
            log::debug!("{name} from {peer} names no client ({e:?}); {peer} stands");
            peer
        }
    }
}
