//! Bytes out: the corked output of a turn, sealed into TLS records where
//! the connection speaks TLS, leaves through the driver's
//! [`Transport::write`] in one write per connection per pass.

use crate::runtime::BufferPool;
use crate::server::handler::Handler;
use crate::server::life::CloseReason;
use crate::server::stats::LoopStats;
use crate::server::tls::TlsConn;

use super::conn::Conn;
use super::transport::{Part, Transport};
use super::{Engine, CORK_LIMIT};

impl<H: Handler, T: Transport> Engine<H, T> {
    /// Writes the corked output behind any backlog; returns how much of
    /// the earlier backlog is still unsent.
    pub(crate) fn flush(&mut self, slot: usize) -> Result<usize, CloseReason> {
        let conn = &mut self.table.conns[slot];
        let seal = Seal::of(&mut self.table.tls, &mut self.scratch.sealed, slot);
        let out = &mut self.scratch.out;
        let result =
            write_via(&mut self.io, conn, slot, &[Part::Copy(&out[..])], &mut self.pool, &self.env.stats, seal);
        out.clear();
        if out.capacity() > CORK_LIMIT {
            // A large message passed through: keep the loop's memory flat.
            *out = Vec::with_capacity(self.env.cfg.buffer_size);
        }
        result
    }
}

/// Writes `parts` through the transport behind the connection's backlog,
/// sealed into TLS records first when `seal` is given; returns how much of
/// the earlier backlog the kernel has not taken.
pub(super) fn write_via<T: Transport>(
    io: &mut T,
    conn: &mut Conn,
    slot: usize,
    parts: &[Part<'_>],
    pool: &mut BufferPool,
    stats: &LoopStats,
    seal: Option<Seal<'_>>,
) -> Result<usize, CloseReason> {
    if let Some(Seal { tls, sealed }) = seal {
        if parts.iter().any(|p| !p.bytes().is_empty()) {
            // TLS: the parts leave as records, sealed into one buffer (a
            // copy per connection: each has its own keys).
            sealed.clear();
            let sealing = match parts {
                // A pass's replies: one part, no list to allocate.
                [one] => tls.seal(&[one.bytes()], sealed),
                _ => tls.seal(&parts.iter().map(|p| p.bytes()).collect::<Vec<_>>(), sealed),
            };
            sealing.map_err(|_| CloseReason::TlsFailed)?;
            let written = io.write(conn, slot, &[Part::Copy(&sealed[..])], pool, stats);
            if sealed.capacity() > CORK_LIMIT {
                *sealed = Vec::new();
            }
            return written;
        }
    }
    io.write(conn, slot, parts, pool, stats)
}

/// What turns a connection's output into TLS records: its session and the
/// loop's sealing buffer. `None` for a plain connection.
pub(super) struct Seal<'a> {
    tls: &'a mut TlsConn,
    sealed: &'a mut Vec<u8>,
}

impl<'a> Seal<'a> {
    /// The seal for `slot`, if it speaks TLS.
    pub(super) fn of(tls_conns: &'a mut [Option<Box<TlsConn>>], sealed: &'a mut Vec<u8>, slot: usize) -> Option<Self> {
        let tls = tls_conns.get_mut(slot)?.as_deref_mut()?;
        Some(Seal { tls, sealed })
    }
}
