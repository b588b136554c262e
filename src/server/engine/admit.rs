//! Taking a connection in: what an accept error means (the same on every
//! driver), the limits checked before a socket costs anything
//! (`--max-conns`, per-address), and registering it in the table and with
//! the driver.

use std::io::{self, Write};
use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::time::Instant;

use crate::server::budget::Level;
use crate::server::handler::Handler;
use crate::server::life::{CloseReason, Timeout};
use crate::ws::HandshakeError;

use super::conn::Conn;
use super::table::Client;
use super::transport::Transport;
use super::{Engine, ACCEPT_PAUSE};

/// What a failed accept means for the loop.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum AcceptFailure {
    /// Nothing to accept now, or a connection that went before it was
    /// taken: carry on.
    Transient,
    /// The accept was cancelled (io_uring at shutdown): nothing to do.
    Cancelled,
    /// The process (or system) is out of descriptors or socket memory:
    /// accepting pauses, never spins.
    OutOfDescriptors,
    /// Anything else: logged.
    Other,
}

impl AcceptFailure {
    /// Classifies an accept error by its errno.
    pub(crate) fn of(e: &io::Error) -> AcceptFailure {
        match e.raw_os_error() {
            Some(libc::EMFILE | libc::ENFILE | libc::ENOBUFS | libc::ENOMEM) => AcceptFailure::OutOfDescriptors,
            Some(libc::ECANCELED) => AcceptFailure::Cancelled,
            Some(libc::EAGAIN | libc::EINTR | libc::ECONNABORTED) => AcceptFailure::Transient,
            _ => AcceptFailure::Other,
        }
    }
}

impl<H: Handler, T: Transport> Engine<H, T> {
    /// True while accepting is paused (out of descriptors) or over.
    pub(crate) fn accept_paused(&self) -> bool {
        self.accepting.resume_at.is_some() || self.accepting.listener.is_none()
    }

    /// What the loop does about a failed accept; returns its class.
    pub(crate) fn accept_failed(&mut self, e: &io::Error) -> AcceptFailure {
        let failure = AcceptFailure::of(e);
        match failure {
            AcceptFailure::OutOfDescriptors => self.pause_accept(e),
            AcceptFailure::Other => log::warn!("loop {}: accept failed: {e}", self.env.id),
            AcceptFailure::Transient | AcceptFailure::Cancelled => {}
        }
        failure
    }

    /// Never spin on a full descriptor table: pause this loop's accepting,
    /// retry on a timer (or when a connection closes).
    fn pause_accept(&mut self, e: &io::Error) {
        self.accepting.resume_at = Some(Instant::now() + ACCEPT_PAUSE);
        self.env.stats.accept_pauses.add(1);
        if !self.accepting.emfile_logged {
            log::warn!("loop {}: out of file descriptors ({e}); pausing accept", self.env.id);
            self.accepting.emfile_logged = true;
        }
    }

    /// Takes an accepted connection in, or refuses it past the memory
    /// budget's soft mark, `--max-conns` or its address's limits. `peer` is the address accept gave, if it did.
    pub(crate) fn admit(&mut self, socket: mio::net::TcpStream, peer: Option<SocketAddr>) {
        self.accepting.emfile_logged = false;
        self.env.stats.accepted.add(1);
        if self.env.shared.budget.level() >= Level::Soft {
            // Over the memory budget's soft mark: no new holder comes in.
            let reason = CloseReason::MemoryBudget;
            return self.refuse_at_accept(socket, HandshakeError::MemoryBudget, 1, reason);
        }
        let Some(client) = self.client_at_accept(&socket, peer) else {
            return; // Refused (counted), or gone: dropping it closes it.
        };
        let mut counted = None;
        let limits = &self.env.shared.address_limits;
        // Behind a trusted proxy, the client is judged at its upgrade.
        if limits.is_enabled() && client == Client::Socket {
            // io_uring's accept gives no address: ask the kernel (only here).
            let Some(ip) = peer.or_else(|| socket.peer_addr().ok()).map(|p| p.ip()) else {
                return; // Gone already: dropping it closes it.
            };
            match limits.admit(ip, Instant::now()) {
                Ok(()) => counted = limits.counts_conns().then_some(ip),
                Err(limited) => {
                    let reason = CloseReason::HandshakeFailed;
                    return self.refuse_at_accept(socket, limited.error, limited.retry_after, reason);
                }
            }
        }
        let open = self.env.shared.open.fetch_add(1, Ordering::Relaxed);
        let registered = if open >= self.env.shared.max_conns {
            self.refuse_at_accept(socket, HandshakeError::Overloaded, 1, CloseReason::Overloaded);
            false
        } else {
            let registered = self.register(socket, counted, client);
            registered.map_err(|e| log::warn!("loop {}: cannot register a connection: {e}", self.env.id)).is_ok()
        };
        if !registered {
            self.env.shared.open.fetch_sub(1, Ordering::Relaxed);
            if let Some(ip) = counted {
                self.env.shared.address_limits.release(ip);
            }
        }
    }

    /// Answers a 429 or 503 on a connection refused at accept, and drops it.
    /// Best effort: the reply is small enough for an empty socket buffer,
    /// and nothing of the connection was kept.
    fn refuse_at_accept(
        &mut self,
        mut socket: mio::net::TcpStream,
        error: HandshakeError,
        retry_after: u32,
        reason: CloseReason,
    ) {
        if self.tls.acceptor.is_none() {
            // Over TLS nothing can be said before a handshake: just close.
            let out = &mut self.scratch.out;
            out.clear();
            crate::ws::handshake::write_reject_after(out, error, retry_after);
            let _ = socket.write(out);
            out.clear();
        }
        self.env.stats.count_handshake_failure(error);
        self.env.stats.count_close(reason);
        log::debug!("loop {}: refused a connection at accept: {error}", self.env.id);
    }

    /// Takes the connection into the table and the driver, its handshake
    /// timer armed; `peer` is its counted address, if any, `client` where
    /// its client comes from.
    fn register(
        &mut self,
        socket: mio::net::TcpStream,
        peer: Option<std::net::IpAddr>,
        client: Client,
    ) -> io::Result<usize> {
        socket.set_nodelay(true)?;
        let tls = match &mut self.tls.acceptor {
            Some(acceptor) => Some(acceptor.accept(Instant::now()).map_err(io::Error::other)?),
            None => None,
        };
        let generation = self.table.next_generation();
        let slot = self.table.insert(Conn::new(socket, generation), tls, peer);
        if client != Client::Socket {
            self.table.set_client(slot, client);
        }
        if let Err(e) = self.io.attach(&mut self.table.conns[slot], slot) {
            // Undone as if it never came: the caller releases its counts.
            let removed = self.table.remove(slot);
            drop(removed);
            return Err(e);
        }
        self.arm(slot, Timeout::Handshake);
        self.env.stats.connections.add(1);
        Ok(slot)
    }
}
