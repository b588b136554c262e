//! The engine's side of identities (`--jwt-key`): the token an upgrade
//! presents is checked before the 101 and the identity attached to its
//! slot (or the upgrade refused 401/403/429, counted by reason, one log
//! line without the token); connections whose token has expired are asked
//! to leave (1008 `token expired`).

use std::net::SocketAddr;

use crate::server::handler::Handler;
use crate::server::identity::{Rejection, Verified, Verifier};
use crate::server::life::CloseReason;
use crate::ws::{HandshakeError, Request};

use super::transport::Transport;
use super::Engine;

pub(super) use crate::server::identity::unix_now;

/// Checks the token `request` presents; a refusal is counted and logged
/// (the reason and the client, never the token).
pub(super) fn check_token(
    jwt: &Verifier,
    request: &Request<'_>,
    socket: &mio::net::TcpStream,
    client: Option<SocketAddr>,
    loop_id: u32,
) -> Result<Verified, Rejection> {
    let verified = match request.credential() {
        Some(token) => jwt.verify(&token),
        None => Err(Rejection::Missing),
    };
    if let Err(why) = verified {
        refused(jwt, why, socket, client, loop_id);
    }
    verified
}

/// Counts and logs (within the log's budget) a refused token; the log
/// names the client (behind a trusted proxy: the one it names).
pub(super) fn refused(
    jwt: &Verifier,
    why: Rejection,
    socket: &mio::net::TcpStream,
    client: Option<SocketAddr>,
    loop_id: u32,
) {
    jwt.counts.refuse(why);
    if jwt.counts.may_log(unix_now()) {
        let peer = client.or_else(|| socket.peer_addr().ok());
        let peer = peer.map_or_else(|| "a gone peer".to_string(), |a| a.to_string());
        log::info!("loop {loop_id}: upgrade from {peer} refused {}: token {}", status(why), why.label());
    }
}

/// The handshake error (and so the HTTP status) a rejection is answered with.
pub(super) fn handshake_error(why: Rejection) -> HandshakeError {
    match why {
        Rejection::UserLimit => HandshakeError::TooManyRequests,
        why if why.is_forbidden() => HandshakeError::Forbidden,
        _ => HandshakeError::Unauthorized,
    }
}

fn status(why: Rejection) -> u16 {
    handshake_error(why).status()
}

impl<H: Handler, T: Transport> Engine<H, T> {
    /// Asks the connections whose token expired (past the clock skew
    /// allowance) to leave, 1008 `token expired`; their rights end at once
    /// (the sweep passes them by from then), their user stays counted
    /// until they are gone. A walk of the table only once the earliest
    /// expiry is due. Called once per timer tick (never while frozen).
    pub(super) fn expire_tokens(&mut self) {
        let Some(jwt) = &self.env.cfg.jwt else { return };
        let now = unix_now().saturating_sub(jwt.leeway());
        let mut slots = Vec::new();
        self.table.identities.expired(now, &mut slots);
        if slots.is_empty() {
            return;
        }
        let table = &self.table;
        let conns: Vec<(u32, u32)> =
            slots.iter().filter_map(|&slot| Some((slot, table.conns.get(slot as usize)?.generation))).collect();
        for &slot in &slots {
            self.table.identities.asked_to_leave(slot as usize);
        }
        self.retire(&conns, CloseReason::TokenExpired);
    }
}
