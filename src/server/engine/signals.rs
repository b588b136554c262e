//! The one path by which a connection is timed and ended: a [`Signal`]
//! goes to its [`Stage`](crate::server::life::Stage), and the engine does
//! the [`Actions`] it answers, in order; `Close` ends in [`Engine::close`],
//! which undoes everything the connection held.

use std::sync::atomic::Ordering;
use std::time::Instant;

use crate::server::handler::{CloseCtx, ConnId, Handler};
use crate::server::life::{Action, Actions, CloseReason, Facts, Goodbye, Signal, Timeout};
use crate::server::tls::TlsFailure;
use crate::ws::mask::random_u64;
use crate::ws::Phase;

use super::conn::OPENED;
use super::drain::restart_reason;
use super::transport::{Part, Transport};
use super::Engine;

impl<H: Handler, T: Transport> Engine<H, T> {
    /// Tells the connection's stage what happened and does what it
    /// answers.
    pub(crate) fn signal(&mut self, slot: usize, signal: Signal) {
        let conn = &mut self.table.conns[slot];
        let facts = Facts {
            phase: conn.session.phase(),
            queued: self.io.queued(conn, slot),
            max_backlog: self.env.cfg.max_backlog,
            shutting_down: self.shutdown_deadline.is_some(),
        };
        let actions = conn.stage.on(signal, facts);
        if let Signal::Handled { before: Phase::Handshake, after: Phase::Open } = signal {
            self.start_aging(slot);
        }
        self.apply(slot, actions);
    }

    fn apply(&mut self, slot: usize, actions: Actions) {
        for action in actions.iter() {
            let fault = match action {
                Action::Arm(timeout) => {
                    self.arm(slot, timeout);
                    None
                }
                Action::QueueClose(goodbye) => {
                    let (code, said) = goodbye.frame();
                    let mut text = [0u8; 64];
                    let reason = match goodbye {
                        Goodbye::Restart => restart_reason(said, random_u64(), &mut text),
                        _ => said,
                    };
                    self.table.conns[slot].session.write_close(&mut self.scratch.out, code, reason);
                    self.flush(slot).err()
                }
                Action::Ping => {
                    self.table.conns[slot].session.write_ping(&mut self.scratch.out, b"wsloop");
                    self.flush(slot).err()
                }
                Action::ReadAgain => {
                    self.push_ready(slot);
                    None
                }
                Action::ShutdownWrite => self.shutdown_write(slot),
                Action::Finish(reason) => return self.signal(slot, Signal::Fault(reason)),
                Action::Close(reason) => return self.close(slot, reason),
            };
            if let Some(reason) = fault {
                // Whatever else was asked for is moot now.
                return self.signal(slot, Signal::Fault(reason));
            }
        }
    }

    /// Ends the write side: TLS says goodbye before TCP does.
    fn shutdown_write(&mut self, slot: usize) -> Option<CloseReason> {
        if let Some(tls) = self.table.tls_mut(slot) {
            self.scratch.sealed.clear();
            tls.close_notify(&mut self.scratch.sealed);
            let conn = &mut self.table.conns[slot];
            let parts = [Part::Copy(&self.scratch.sealed[..])];
            let _ = self.io.write(conn, slot, &parts, &mut self.pool, &self.env.stats);
        }
        let socket = &self.table.conns[slot].socket;
        socket.shutdown(std::net::Shutdown::Write).err().map(|e| crate::server::life::io_reason(&e))
    }

    /// (Re)arms the connection's timer with `timeout` from now.
    pub(crate) fn arm(&mut self, slot: usize, timeout: Timeout) {
        let wheel = &mut self.table.wheel;
        let deadline = wheel.now() + self.env.ticks.of(timeout);
        wheel.schedule(&mut self.table.conns, slot as u32, deadline);
    }

    /// Removes the connection and frees what it held: its table entry
    /// (timer, rooms, codecs, TLS, counted address), the driver's state,
    /// its buffers; counts the close and tells the handler.
    pub(crate) fn close(&mut self, slot: usize, reason: CloseReason) {
        self.io.detach(&self.table.conns[slot], slot, &self.env.stats);
        self.forget_input(slot);
        self.count_missing_header(slot, reason);
        let removed = self.table.remove(slot);
        self.limit_dedicated();
        let conn = removed.conn;
        let stats = &self.env.stats;
        if let Some(mut tls) = removed.tls {
            let failure =
                if reason == CloseReason::HandshakeTimeout { TlsFailure::Timeout } else { TlsFailure::Closed };
            if let Some(failure) = tls.fail(failure) {
                stats.count_tls_failure(failure);
            }
        }
        stats.backlog_bytes.sub(conn.wbuf.len() as u64);
        for (buf, pooled) in [(conn.rbuf, true), (conn.wbuf, T::POOLED_BACKLOG)] {
            if pooled && buf.capacity() > 0 {
                self.pool.give(buf);
            }
        }
        if reason == CloseReason::HandshakeTimeout {
            stats.count_handshake_timeout();
        }
        stats.count_close(reason);
        stats.connections.sub(1);
        self.env.shared.open.fetch_sub(1, Ordering::Relaxed);
        if let Some(ip) = removed.peer {
            self.env.shared.address_limits.release(ip);
        }
        if conn.flags & OPENED != 0 {
            let id = ConnId { loop_id: self.env.id, slot: slot as u32, generation: conn.generation };
            let mut ctx = CloseCtx { id, hub: &self.env.hub, local: &mut self.fanout.local, published: 0 };
            self.handler.on_close(&mut ctx, reason);
            self.env.stats.room_published.add(ctx.published);
        }
        log::debug!("loop {}: connection {slot} closed: {}", self.env.id, reason.label());
        // Closing the socket takes it out of epoll; io_uring closes it once
        // what was queued for it is submitted.
        self.io.close_socket(conn.socket);
        if self.accepting.resume_at.is_some() {
            self.accepting.resume_at = Some(Instant::now());
        }
        if !self.fanout.local.is_empty() {
            // What `on_close` published ("alice left").
            self.deliver_local();
        }
    }
}
