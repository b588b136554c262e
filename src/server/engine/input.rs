//! Bytes in: the read turn, the same on every driver. A driver gets bytes
//! its own way (a `recv` loop under epoll, a ring buffer under io_uring)
//! and runs them through the same steps:
//!
//! 1. [`Engine::begin_turn`]: may the connection take input now, and what
//!    it was owed before it goes out first;
//! 2. [`Engine::unseal_into`] (TLS only): records in, plaintext out;
//! 3. [`Engine::handle_input`] for each batch of bytes: `Session::decode`
//!    and the handler, the publishes it made owed to the members;
//!    [`Engine::keep_or_return`] keeps a partial frame;
//! 4. [`Engine::finish_turn`]: the replies leave in one write, and the
//!    turn becomes a `Signal`.

use std::time::Instant;

use crate::server::handler::{ConnId, Ctx, Handler, Message, Upgrade, Who};
use crate::server::identity::{Identities, Verifier};
use crate::server::life::{CloseReason, Signal, Stage};
use crate::server::stats::LoopStats;
use crate::ws::compression::Inflaters;
use crate::ws::{Event, Inflation, Phase, Request, Session, WsError};

use super::client::{HeaderTurn, Judge};
use super::conn::{OPENED, OWED, THROTTLED};
use super::identity;
use super::output::{write_via, Seal};
use super::table::Client;
use super::transport::{Part, Transport};
use super::{Engine, CORK_LIMIT, MAX_OWED};

/// What a connection's stage allows a read turn to do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Turn {
    /// Handle input; the protocol phase it starts from.
    Handle(Phase),
    /// Nothing more will be handled: input is read and dropped.
    Discard,
    /// Paused behind its backlog: its input waits.
    Wait,
    /// Writing what it was owed ended it: nothing to do.
    Gone,
}

impl<H: Handler, T: Transport> Engine<H, T> {
    /// Marks the start of a pass's handling: the time the pass timings
    /// measure from, which the rate limits judge its messages at (one
    /// clock read a pass, none a message).
    pub(crate) fn begin_handling(&mut self) -> Instant {
        let now = Instant::now();
        self.table.rates.set_clock(now);
        now
    }

    /// Starts a read turn: what the connection may do with input now.
    /// What it was owed before this input is written first: its replies (a
    /// close echo, say) must not overtake earlier deliveries.
    pub(crate) fn begin_turn(&mut self, slot: usize) -> Turn {
        let conn = &self.table.conns[slot];
        match conn.stage {
            stage if stage.is_ending() => return Turn::Discard,
            // A live hand-off: input waits (in the socket, or held).
            _ if self.is_frozen() => return Turn::Wait,
            Stage::Paused => return Turn::Wait,
            _ if conn.has(THROTTLED) => return Turn::Wait,
            _ => {}
        }
        if conn.has(OWED) {
            self.write_owed_ahead(slot);
            match self.table.conns.get(slot) {
                None => return Turn::Gone,
                Some(conn) if conn.stage.is_ending() => return Turn::Discard,
                Some(_) => {}
            }
        }
        Turn::Handle(self.table.conns[slot].session.phase())
    }

    /// Ends a read turn that began in phase `before`: the replies leave
    /// (even when the input ended the connection: a refusal or a close
    /// frame is among them), and the turn becomes a signal: `end` if the
    /// input ended it (EOF, a fault), else `Handled`.
    pub(crate) fn finish_turn(&mut self, slot: usize, before: Phase, end: Option<Signal>) -> Signal {
        self.count_input(slot);
        let flushed = self.flush(slot);
        match (end, flushed) {
            (Some(fault @ Signal::Fault(_)), _) => fault,
            (_, Err(reason)) => Signal::Fault(reason),
            (Some(end), Ok(_)) => end,
            (None, Ok(_)) => Signal::Handled { before, after: self.table.conns[slot].session.phase() },
        }
    }

    /// True while the loop owes more deliveries than it should take on more
    /// input for (with hysteresis: from `MAX_OWED` down to half).
    pub(crate) fn owes_too_much(&mut self) -> bool {
        let owed = self.fanout.owed.len();
        if owed > MAX_OWED {
            self.fanout.owing_too_much = true;
        } else if owed <= MAX_OWED / 2 {
            self.fanout.owing_too_much = false;
        }
        self.fanout.owing_too_much
    }

    /// Takes one of this pass's TLS handshake turns for the connection, or
    /// puts it off to the ready list when the budget is spent.
    pub(crate) fn take_tls_turn(&mut self, slot: usize) -> bool {
        if self.tls.budget > 0 {
            self.tls.budget -= 1;
            return true;
        }
        self.push_ready(slot);
        self.env.stats.tls_deferred.add(1);
        false
    }

    /// True if the connection's TLS handshake waits for a turn of this
    /// pass's budget (and takes one if there is).
    pub(crate) fn tls_turn_denied(&mut self, slot: usize) -> bool {
        self.table.is_tls_handshaking(slot) && !self.take_tls_turn(slot)
    }

    /// TLS: feeds `cipher` (bytes off the wire) to the connection's session,
    /// which appends the plaintext to `plain`; the handshake records and
    /// alerts it answers with are sent at once, in the clear (they are
    /// records already). Counts handshakes done and failed. A plain
    /// connection's bytes are appended as they are.
    pub(crate) fn unseal_into(
        &mut self,
        slot: usize,
        cipher: &mut [u8],
        plain: &mut Vec<u8>,
    ) -> Result<(), CloseReason> {
        let Some(tls) = self.table.tls.get_mut(slot).and_then(|t| t.as_deref_mut()) else {
            plain.extend_from_slice(cipher);
            return Ok(());
        };
        let sealed = &mut self.scratch.sealed;
        sealed.clear();
        let unsealed = tls.unseal(cipher, plain, sealed);
        let conn = &mut self.table.conns[slot];
        let stats = &self.env.stats;
        let sent = if sealed.is_empty() {
            Ok(0)
        } else {
            self.io.write(conn, slot, &[Part::Copy(&sealed[..])], &mut self.pool, stats)
        };
        if sealed.capacity() > CORK_LIMIT {
            *sealed = Vec::new();
        }
        match unsealed {
            Err(e) => {
                if e.in_handshake {
                    stats.count_tls_failure(e.failure);
                }
                log::debug!("loop {}: TLS failed on connection {slot}: {}", self.env.id, e.failure.label());
                Err(CloseReason::TlsFailed)
            }
            Ok(unsealed) => {
                if let Some(took) = unsealed.handshake_done {
                    stats.observe_tls_handshake(took);
                }
                sent.map(|_| ())
            }
        }
    }

    /// Keeps unconsumed input in the connection, or gives the buffer back.
    pub(crate) fn keep_or_return(&mut self, slot: usize, buf: Vec<u8>) {
        let pool = &mut self.pool;
        let conn = &mut self.table.conns[slot];
        if buf.is_empty() {
            pool.give(buf);
        } else if buf.capacity() > pool.buf_size() && buf.len() <= pool.buf_size() {
            // A large frame completed: keep the few leftover bytes in a
            // pool-sized buffer and free the big one.
            let mut small = pool.take();
            small.extend_from_slice(&buf);
            pool.give(buf);
            conn.rbuf = small;
        } else if buf.capacity() > pool.buf_size() && buf.len() <= buf.capacity() / 4 {
            // A large frame completed and the start of the next one is
            // kept: keep it in a buffer of its size, not the big one's.
            let mut kept = buf;
            kept.shrink_to(kept.len().max(pool.buf_size()));
            conn.rbuf = kept;
        } else {
            conn.rbuf = buf;
        }
    }

    /// Decodes and handles every whole frame in `buf` (unmasking in place),
    /// then owes what the handler published to this loop's members.
    /// Returns how many bytes it consumed, and the buffer length the next
    /// frame needs or why the connection must end.
    pub(crate) fn handle_input(&mut self, slot: usize, buf: &mut [u8]) -> (usize, Result<usize, CloseReason>) {
        let mut header = 0;
        if self.table.client(slot) == Client::AwaitingHeader {
            match self.take_proxy_header(slot, buf) {
                HeaderTurn::Wait(wanted) => return (0, Ok(wanted)),
                HeaderTurn::Refused(reason) => return (0, Err(reason)),
                HeaderTurn::Took(len) => header = len,
            }
        }
        let (consumed, handled) = self.decode_and_handle(slot, &mut buf[header..]);
        if !self.fanout.local.is_empty() {
            self.deliver_local();
        }
        (header + consumed, handled)
    }

    fn decode_and_handle(&mut self, slot: usize, buf: &mut [u8]) -> (usize, Result<usize, CloseReason>) {
        let Engine { table, handler, scratch, env, pool, fanout, offers, io, .. } = self;
        let conn = &mut table.conns[slot];
        let conn_id = ConnId { loop_id: env.id, slot: slot as u32, generation: conn.generation };
        let (mut pos, mut counts, mut agreed_own) = (0, Counts::default(), false);
        let result = loop {
            let mut inflater = table.inflaters.for_conn(conn_id.slot);
            let inflated = &mut scratch.inflated;
            let inflation =
                conn.session.deflate_window().map(|_| Inflation { inflater: &mut inflater, output: inflated });
            let out = &mut scratch.out;
            let mark = out.len();
            let decoded =
                conn.session.decode_inflating(&mut buf[pos..], &mut conn.assembly, out, &offers.ws_cfg, inflation);
            let decoded = match decoded {
                Ok(d) => d,
                Err(e) => break Err(decode_failure(e, &env.stats, env.id)),
            };
            pos += decoded.consumed;
            let Some(event) = decoded.event else {
                break Ok(decoded.wanted);
            };
            let jwt = env.cfg.jwt.as_deref();
            if let Event::Upgrade(request) = &event {
                let judge = Judge { env, clients: &mut table.clients, peers: &mut table.peers };
                let gate = Gate { jwt, identities: &mut table.identities, slot, loop_id: env.id };
                let (session, socket) = (&mut conn.session, &conn.socket);
                if let Err(refused) = admit_upgrade(judge, gate, handler, session, socket, out, request) {
                    break Err(decode_failure(refused, &env.stats, env.id));
                }
            }
            // Over its rate, a message is dropped here, or ends the connection.
            let handled = match table.rates.judge(slot, &event, &mut conn.session, out, mark, &env.stats) {
                Ok(handled) => handled,
                Err(reason) => break Err(rate_closed(reason, env.id, slot)),
            };
            let mut ctx = Ctx {
                id: conn_id,
                session: &mut conn.session,
                out,
                deflaters: &mut table.deflaters,
                sent: &mut counts.sent,
                rooms: &mut table.rooms,
                room_limits: &env.cfg.rooms,
                hub: &env.hub,
                local: &mut fanout.local,
                published: &mut counts.published,
                who: Who { identities: &mut table.identities, jwt },
            };
            if handled {
                let (flags, inflaters, received) = (&mut conn.flags, &mut table.inflaters, &mut counts.received);
                agreed_own |= dispatch(handler, &mut ctx, event, flags, inflaters, received);
            }
            conn.release_finished_assembly();
            let seal = Seal::of(&mut table.tls, &mut scratch.sealed, slot);
            if let Err(reason) = write_large_batch(io, conn, slot, seal, &mut scratch.out, pool, &env.stats) {
                break Err(reason);
            }
        };
        self.end_batch(&counts, agreed_own);
        (pos, result)
    }

    /// After a batch of input: its counts, the loop's memory kept flat, and
    /// the dedicated compression contexts bounded if one was agreed.
    fn end_batch(&mut self, counts: &Counts, agreed_own: bool) {
        if self.scratch.inflated.capacity() > CORK_LIMIT {
            // A large message was inflated: keep the loop's memory flat.
            self.scratch.inflated = Vec::new();
        }
        counts.add_to(&self.env.stats);
        if agreed_own {
            self.limit_dedicated();
        }
    }
}

/// A batch of replies past [`CORK_LIMIT`] is written (sealed, for TLS)
/// and emptied before the next message is handled; a smaller one waits
/// for the end of the read turn, to leave in one write.
fn write_large_batch<T: Transport>(
    io: &mut T,
    conn: &mut super::conn::Conn,
    slot: usize,
    seal: Option<Seal<'_>>,
    out: &mut Vec<u8>,
    pool: &mut crate::runtime::BufferPool,
    stats: &LoopStats,
) -> Result<(), CloseReason> {
    if out.len() <= CORK_LIMIT {
        return Ok(());
    }
    let written = write_via(io, conn, slot, &[Part::Copy(&out[..])], pool, stats, seal);
    out.clear();
    written.map(|_| ())
}

/// An upgrade's verdicts, in order: the client behind a trusted proxy (and
/// its per-address limits), then `judge_upgrade`'s. Writes the 101, or the
/// refusal (returned as the error that ends the connection).
fn admit_upgrade<H: Handler>(
    judge: Judge<'_>,
    gate: Gate<'_>,
    handler: &mut H,
    session: &mut Session,
    socket: &mio::net::TcpStream,
    out: &mut Vec<u8>,
    request: &Request<'_>,
) -> Result<(), WsError> {
    let client = judge.client(gate.slot, socket, session, request, out)?;
    judge_upgrade(handler, session, socket, client, out, request, gate)
}

/// What an upgrade's identity is checked with and kept in.
struct Gate<'a> {
    /// `--jwt-key`, if on.
    jwt: Option<&'a Verifier>,
    identities: &'a mut Identities,
    slot: usize,
    loop_id: u32,
}

/// Who may connect: the token (`--jwt-key`), then the application's
/// verdict, then the per-user cap, before the 101. Writes the 101, or the
/// refusal (returned as the error that ends the connection).
#[inline]
fn judge_upgrade<H: Handler>(
    handler: &mut H,
    session: &mut Session,
    socket: &mio::net::TcpStream,
    client: Option<std::net::SocketAddr>,
    out: &mut Vec<u8>,
    request: &Request<'_>,
    gate: Gate<'_>,
) -> Result<(), WsError> {
    let checked = gate.jwt.map(|jwt| identity::check_token(jwt, request, socket, client, gate.loop_id));
    let verified = match checked {
        None => None,
        Some(Ok(verified)) => Some(verified),
        Some(Err(why)) => return Err(session.refuse(out, identity::handshake_error(why), 1)),
    };
    let upgrade = Upgrade { request, socket, client, user: verified.as_ref() };
    if let Err(refusal) = handler.on_upgrade(&upgrade) {
        return Err(session.refuse(out, refusal.error(), refusal.retry_after()));
    }
    if let (Some(jwt), Some(verified)) = (gate.jwt, &verified) {
        if let Err(why) = gate.identities.attach(gate.slot, verified) {
            identity::refused(jwt, why, socket, client, gate.loop_id);
            return Err(session.refuse(out, identity::handshake_error(why), USER_LIMIT_RETRY_AFTER));
        }
    }
    session.accept(out, request);
    Ok(())
}

/// `Retry-After` seconds of a 429 for `--max-conns-per-user`.
const USER_LIMIT_RETRY_AFTER: u32 = 5;

/// Hands one decoded event to the handler (an upgrade opens the
/// connection first, its deflate terms noted). True if the connection
/// agreed terms that keep a compression context of its own.
#[inline]
fn dispatch<H: Handler>(
    handler: &mut H,
    ctx: &mut Ctx<'_>,
    event: Event<'_>,
    flags: &mut u8,
    inflaters: &mut Inflaters,
    received: &mut u64,
) -> bool {
    match event {
        Event::Upgrade(request) => {
            *flags |= OPENED;
            let mut agreed_own = false;
            if let Some(terms) = &request.deflate {
                ctx.deflaters.agreed(ctx.id.slot, terms);
                inflaters.agreed(ctx.id.slot, terms);
                agreed_own = terms.server_takeover || terms.client_takeover;
            }
            handler.on_open(ctx, &request);
            return agreed_own;
        }
        Event::Text(text) => {
            *received += 1;
            handler.on_message(ctx, Message::Text(text));
        }
        Event::Binary(data) => {
            *received += 1;
            handler.on_message(ctx, Message::Binary(data));
        }
        Event::Ping(_) | Event::Pong(_) | Event::Close { .. } => {}
    }
    false
}

/// What one batch of input amounted to, counted once at its end.
#[derive(Default)]
struct Counts {
    received: u64,
    sent: u64,
    published: u64,
}

impl Counts {
    fn add_to(&self, stats: &LoopStats) {
        stats.messages_received.add(self.received);
        stats.messages_sent.add(self.sent);
        stats.room_published.add(self.published);
    }
}

/// Logs a connection closed for its message rate (counted by the judge).
#[cold]
fn rate_closed(reason: CloseReason, loop_id: u32, slot: usize) -> CloseReason {
    log::info!("loop {loop_id}: connection {slot} closed 1008: over its message rate");
    reason
}

/// Counts and logs a decode failure; the reason it ends the connection for
/// (its reply, a 4xx or a close frame, is already in the output).
fn decode_failure(e: WsError, stats: &LoopStats, loop_id: u32) -> CloseReason {
    match e {
        WsError::Handshake(e) => {
            stats.count_handshake_failure(e);
            log::debug!("loop {loop_id}: handshake refused: {e}");
            CloseReason::HandshakeFailed
        }
        WsError::Protocol(e) => {
            log::debug!("loop {loop_id}: protocol error, closing {}: {e}", e.close_code());
            CloseReason::ProtocolError
        }
    }
}
