//! The engine's side of a live hand-off (`server/handoff`): freezing the
//! loop, taking a connection out with everything it owns as a
//! [`ConnState`], and taking one in (adopting), on either driver.
//!
//! Frozen, a loop neither accepts nor handles input (it waits in the
//! socket, or, on io_uring, in the connection's held input), so no new
//! publish starts anywhere once every loop is frozen; timers, owed
//! deliveries and writes go on. A connection moves only whole: its unsent
//! bytes are written first in the new process, then its unhandled input
//! is handled, so no byte is lost, repeated or reordered.

use std::net::TcpListener as StdTcpListener;
use std::os::fd::OwnedFd;
use std::sync::atomic::Ordering;

use crate::server::handler::{ConnId, Handler};
use crate::server::handoff::state::{CarriedStage, ConnState, CARRIED_OPENED};
use crate::server::handoff::{Command, Exported, Frozen, Moved};
use crate::server::identity::Verified;
use crate::server::life::{CloseReason, Signal, Stage, Timeout};
use crate::ws::{Phase, Session};

use super::conn::{Conn, OPENED};
use super::table::Client;
use super::transport::{Part, Transport};
use super::{Engine, Handing, Turn};

/// What the handler may carry per connection (`Handler::on_handoff`).
pub(crate) const MAX_HANDLER_STATE: usize = 64 * 1024;

/// Why a carried connection could not be adopted.
#[derive(Debug)]
pub(crate) enum AdoptError {
    /// Its protocol state is not one a session can be in.
    BadSession,
    /// Its socket could not be set up or registered.
    Socket(std::io::Error),
}

impl std::fmt::Display for AdoptError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            AdoptError::BadSession => f.write_str("its protocol state is not one a session can be in"),
            AdoptError::Socket(e) => write!(f, "its socket: {e}"),
        }
    }
}

impl<H: Handler, T: Transport> Engine<H, T> {
    /// Takes every command waiting in the loop's control channel.
    pub(crate) fn take_commands(&mut self) {
        while let Ok(cmd) = self.env.control.try_recv() {
            match cmd {
                Command::Freeze(reply) => self.freeze(&reply),
                Command::Export(reply) => self.handing = Handing::Exporting(reply),
                Command::Finish => self.finish_handoff(),
                Command::Resume { moved, listener } => self.resume_serving(moved, listener),
                Command::Listen(listener) => self.listen(listener),
                Command::Adopt(moved, reply) => {
                    let held = self.hold_adopted(moved);
                    let _ = reply.send(held);
                }
                Command::Attach(reply) => {
                    let attached = self.attach_adopted();
                    let _ = reply.send(attached);
                }
                Command::Thaw => self.thaw_adopted(),
                Command::Abandon => self.abandon_adopted(),
            }
        }
        // Serving again: what other hosts asked meanwhile is done now.
        self.apply_kept_kicks();
    }

    /// Stops accepting and handling input. If the hand-off thread has
    /// given up already (its answer channel is gone), carries on serving.
    fn freeze(&mut self, reply: &crossbeam_channel::Sender<Frozen>) {
        let listener = self.give_up_listener();
        self.handing = Handing::Frozen;
        if let Err(unwanted) = reply.send(Frozen { loop_id: self.env.id as usize, listener }) {
            self.resume_serving(Vec::new(), unwanted.0.listener);
        }
    }

    /// Serves on after a failed hand-off: the listener and connections
    /// back, input read again.
    fn resume_serving(&mut self, moved: Vec<Moved>, listener: Option<StdTcpListener>) {
        let was_frozen = self.is_frozen();
        self.handing = Handing::Serving;
        if let Some(listener) = listener {
            self.listen(listener);
        }
        let back = moved.len();
        for m in moved {
            self.adopt_now(m);
        }
        if was_frozen || back > 0 {
            log::warn!("loop {}: hand-off failed; serving on ({back} connections taken back)", self.env.id);
        }
        self.read_all_again();
    }

    /// Accepts on `listener` (handed over by the old process, or given
    /// back after a failed hand-off).
    fn listen(&mut self, listener: StdTcpListener) {
        let mut listener = mio::net::TcpListener::from_std(listener);
        if let Err(e) = self.io.listen(&mut listener) {
            log::error!("loop {}: cannot accept on a handed-over listener: {e}", self.env.id);
            return;
        }
        self.accepting.listener = Some(listener);
        // The end of this pass accepts (or arms accepting) on it.
        self.accepting.resume_at = Some(std::time::Instant::now());
    }

    /// The hand-off is done: what stayed (TLS, dedicated compression) is
    /// drained at a steady pace with 1012 and a reconnect hint, over
    /// `--drain-period` (or, without one, half of `--shutdown-timeout`),
    /// and the loop ends once it is empty or the shutdown timeout is up.
    fn finish_handoff(&mut self) {
        if let Handing::Exported(moved) = self.handing {
            self.env.stats.handed_off.add(moved as u64);
        }
        self.handing = Handing::Serving;
        self.read_all_again();
        let cfg = &self.env.cfg;
        let period = if cfg.drain_period.is_zero() { cfg.shutdown_timeout / 2 } else { cfg.drain_period };
        self.shutdown_deadline = Some(std::time::Instant::now() + cfg.shutdown_timeout);
        let all = self.all_conns();
        self.begin_paced_drain(all, period);
    }

    /// Every connection gets a read turn: input that waited while the loop
    /// was frozen is handled.
    fn read_all_again(&mut self) {
        let slots: Vec<usize> = self.table.conns.iter().map(|(s, _)| s).collect();
        for slot in slots {
            self.push_ready(slot);
        }
    }

    /// True while the loop is frozen for a hand-off.
    #[inline]
    pub(crate) fn is_frozen(&self) -> bool {
        !matches!(self.handing, Handing::Serving)
    }

    /// True if the driver is to export this pass (after its own
    /// preparation: io_uring cancels what the movable have in flight).
    pub(crate) fn export_due(&self) -> bool {
        matches!(self.handing, Handing::Exporting(_))
    }

    /// Stops accepting and gives the listener up (as a std listener).
    fn give_up_listener(&mut self) -> Option<StdTcpListener> {
        let mut listener = self.accepting.listener.take()?;
        self.io.stop_accepting(&mut listener);
        Some(StdTcpListener::from(listener))
    }

    /// True if the connection can move to another process: plain (a TLS
    /// session lives inside rustls), no compression context of its own,
    /// not ending, not between an upgrade and its verdict, and nothing of
    /// it in flight in the driver.
    pub(crate) fn is_movable(&self, slot: usize) -> bool {
        let conn = &self.table.conns[slot];
        let key = slot as u32;
        matches!(conn.stage, Stage::Serving | Stage::Pinged | Stage::Paused)
            && matches!(conn.session.phase(), Phase::Handshake | Phase::Open)
            && conn.session.to_state().is_some()
            && !self.table.is_tls(slot)
            && !self.table.deflaters.has_own(key)
            && !self.table.inflaters.has_own(key)
            && matches!(self.table.client(slot), Client::Socket | Client::Known(_))
    }

    /// Writes what members are owed, then takes every movable connection
    /// out of the loop and answers the `Export` with them.
    pub(crate) fn export_all(&mut self) {
        let Handing::Exporting(reply) = std::mem::take(&mut self.handing) else { return };
        self.deliver_local();
        while !self.fanout.owed.is_empty() {
            self.write_owed();
        }
        let slots: Vec<usize> = self.table.conns.iter().map(|(s, _)| s).collect();
        let mut moved = Vec::with_capacity(slots.len());
        let mut kept = 0;
        for slot in slots {
            if !self.table.conns.contains(slot) {
                continue;
            }
            if self.is_movable(slot) && self.io.can_hand_over(slot) {
                moved.push(self.export_one(slot));
            } else {
                kept += 1;
            }
        }
        log::info!("loop {}: handing over {} connections; {kept} stay and drain", self.env.id, moved.len());
        self.handing = Handing::Exported(moved.len());
        if let Err(unwanted) = reply.send(Exported { loop_id: self.env.id as usize, moved, kept }) {
            // The hand-off thread gave up before this answer came: the
            // loop keeps its connections.
            self.resume_serving(unwanted.0.moved, None);
        }
    }

    /// Takes one movable connection out: its state, its socket.
    fn export_one(&mut self, slot: usize) -> Moved {
        let unsent = self.io.hand_over(&mut self.table.conns[slot], slot, &mut self.pool, &self.env.stats);
        self.forget_input(slot);
        let now = self.table.wheel.now();
        let conn = &self.table.conns[slot];
        let timer_ms = conn.timer.deadline().map(|deadline| {
            let left = self.table.wheel.duration_of(deadline.saturating_sub(now));
            left.as_millis().min(u32::MAX as u128 - 1) as u32
        });
        let stage = match conn.stage {
            Stage::Pinged => CarriedStage::Pinged,
            Stage::Paused => CarriedStage::Paused,
            _ => CarriedStage::Serving,
        };
        let session = conn.session.to_state().unwrap_or_else(|| unreachable!("checked by is_movable"));
        let opened = conn.has(OPENED);
        let rooms = self.table.rooms.rooms_of(slot as u32);
        let id = ConnId { loop_id: self.env.id, slot: slot as u32, generation: conn.generation };
        let mut handler = if opened { self.handler.on_handoff(id) } else { Vec::new() };
        if handler.len() > MAX_HANDLER_STATE {
            log::warn!("loop {}: a handler's hand-off state of {} bytes was dropped", self.env.id, handler.len());
            handler.clear();
        }
        let identity = self.table.identities.get(slot).map(|user| Verified {
            sub: user.id.to_owned(),
            expires: user.expires,
            rights: user.rights.clone(),
        });
        let removed = self.table.remove(slot);
        let mut conn = removed.conn;
        let input = conn.rbuf.clone();
        if conn.rbuf.capacity() > 0 {
            self.pool.give(std::mem::take(&mut conn.rbuf));
        }
        self.env.stats.connections.sub(1);
        self.env.shared.open.fetch_sub(1, Ordering::Relaxed);
        if let Some(ip) = removed.peer {
            self.env.shared.address_limits.release(ip);
        }
        let state = ConnState {
            session,
            stage,
            flags: if opened { CARRIED_OPENED } else { 0 },
            timer_ms,
            input,
            assembly: std::mem::take(&mut conn.assembly),
            unsent,
            rooms,
            handler,
            identity,
        };
        Moved { fd: OwnedFd::from(conn.socket), state }
    }

    /// New side: holds carried connections until the old process commits
    /// (see [`Handing::Adopting`]); returns how many are held.
    fn hold_adopted(&mut self, moved: Vec<Moved>) -> usize {
        let mut held = match std::mem::take(&mut self.handing) {
            Handing::Adopting(held) => held,
            _ => Vec::new(),
        };
        held.extend(moved);
        let n = held.len();
        self.handing = Handing::Adopting(held);
        n
    }

    /// Committed: every held connection into the table and the driver,
    /// its unsent bytes written; the loop stays frozen until `Thaw`.
    fn attach_adopted(&mut self) -> usize {
        let Handing::Adopting(held) = std::mem::take(&mut self.handing) else { return 0 };
        let mut attached = Vec::with_capacity(held.len());
        for m in held {
            match self.take_in(m) {
                Ok((slot, unsent, timer_ms)) => {
                    let generation = self.table.conns[slot].generation;
                    if self.attach_carried(slot, &unsent) {
                        attached.push((slot as u32, generation, timer_ms));
                    }
                }
                Err(e) => {
                    self.env.stats.adopt_failed.add(1);
                    log::warn!("loop {}: could not adopt a connection: {e}", self.env.id);
                }
            }
        }
        let n = attached.len();
        self.handing = Handing::Attached(attached);
        n
    }

    /// Every loop has its members: timers run with what was left of them,
    /// and each connection's carried input is handled, then its socket read.
    fn thaw_adopted(&mut self) {
        let Handing::Attached(attached) = std::mem::take(&mut self.handing) else { return };
        let mut live = 0;
        for (slot, generation, timer_ms) in attached {
            if self.is_live(slot as usize, generation) {
                self.thaw_carried(slot as usize, timer_ms);
                live += 1;
            }
        }
        self.env.stats.adopted.add(live);
        self.read_all_again();
    }

    /// The old process did not commit: the held connections are let go
    /// without a byte read or written (their descriptors closed here only;
    /// the old process serves them on).
    fn abandon_adopted(&mut self) {
        if let Handing::Adopting(held) = std::mem::take(&mut self.handing) {
            drop(held);
        }
    }

    /// Takes a connection in and makes it live at once (the old side
    /// taking its own back after a failed hand-off).
    fn adopt_now(&mut self, m: Moved) {
        match self.take_in(m) {
            Ok((slot, unsent, timer_ms)) => {
                if self.attach_carried(slot, &unsent) {
                    self.thaw_carried(slot, timer_ms);
                    self.env.stats.adopted.add(1);
                }
            }
            Err(e) => {
                self.env.stats.adopt_failed.add(1);
                log::warn!("loop {}: could not take a connection back: {e}", self.env.id);
            }
        }
    }

    /// Takes one carried connection into the table: its rooms joined, its
    /// age counted from now, the handler told; not yet registered with the
    /// driver, its timer not armed. Returns its slot, unsent bytes and the
    /// time its timer had left.
    fn take_in(&mut self, m: Moved) -> Result<(usize, Vec<u8>, Option<u32>), AdoptError> {
        let Moved { fd, state } = m;
        let session = Session::from_state(&state.session).ok_or(AdoptError::BadSession)?;
        let socket = std::net::TcpStream::from(fd);
        socket.set_nonblocking(true).map_err(AdoptError::Socket)?;
        let _ = socket.set_nodelay(true);
        let socket = mio::net::TcpStream::from_std(socket);
        let peer = self.count_adopted_peer(&socket);
        let generation = self.table.next_generation();
        let mut conn = Conn::new(socket, generation);
        conn.session = session;
        conn.stage = match state.stage {
            CarriedStage::Pinged => Stage::Pinged,
            // Paused again once live if its backlog is still over the cap.
            CarriedStage::Serving | CarriedStage::Paused => Stage::Serving,
        };
        let opened = state.flags & CARRIED_OPENED != 0;
        if opened {
            conn.flags |= OPENED;
        }
        if !state.input.is_empty() {
            let mut buf = self.pool.take();
            buf.extend_from_slice(&state.input);
            conn.rbuf = buf;
        }
        conn.assembly = state.assembly;
        let slot = self.table.insert(conn, None, peer);
        if let Some(identity) = &state.identity {
            self.table.identities.attach_carried(slot, identity);
        }
        self.env.shared.open.fetch_add(1, Ordering::Relaxed);
        self.env.stats.connections.add(1);
        if !self.lacks_identity(slot) {
            self.join_carried_rooms(slot, &state.rooms);
        }
        if opened {
            self.start_aging(slot);
            let id = ConnId { loop_id: self.env.id, slot: slot as u32, generation };
            self.handler.on_adopt(id, &state.handler);
        }
        self.count_input(slot);
        Ok((slot, state.unsent, state.timer_ms))
    }

    /// Registers a taken-in connection with the driver and writes its
    /// unsent bytes, before anything else is written to it. False if it
    /// could not be registered (it is let go).
    fn attach_carried(&mut self, slot: usize, unsent: &[u8]) -> bool {
        if let Err(e) = self.io.attach(&mut self.table.conns[slot], slot) {
            log::warn!("loop {}: could not register an adopted connection: {e}", self.env.id);
            self.env.stats.adopt_failed.add(1);
            self.forget_taken_in(slot);
            return false;
        }
        if !unsent.is_empty() {
            let conn = &mut self.table.conns[slot];
            let written = self.io.write(conn, slot, &[Part::Copy(unsent)], &mut self.pool, &self.env.stats);
            let signal = match written {
                Ok(_) => Signal::Published { earlier_unsent: 0 },
                Err(reason) => Signal::Fault(reason),
            };
            self.signal(slot, signal);
        }
        true
    }

    /// The carried connection goes on: its timer armed with what was left
    /// of it, then the input the old process had read but not handled.
    fn thaw_carried(&mut self, slot: usize, timer_ms: Option<u32>) {
        if matches!(self.table.conns[slot].stage, Stage::Serving | Stage::Pinged) {
            self.arm_carried_timer(slot, timer_ms);
        }
        if self.lacks_identity(slot) {
            // From a process that checked no tokens: it has none that is
            // current here (its rooms were not joined), so it is asked to
            // leave like one whose token expired.
            let generation = self.table.conns[slot].generation;
            self.retire(&[(slot as u32, generation)], CloseReason::TokenExpired);
            return;
        }
        self.handle_carried_input(slot);
    }

    /// True for an opened connection without an identity in a process
    /// that checks tokens (`--jwt-key`).
    fn lacks_identity(&self, slot: usize) -> bool {
        self.env.cfg.jwt.is_some() && self.table.conns[slot].has(OPENED) && self.table.identities.get(slot).is_none()
    }

    /// Removes a taken-in connection that never went live, undoing its
    /// counts; its descriptor is closed with nothing sent.
    fn forget_taken_in(&mut self, slot: usize) {
        self.forget_input(slot);
        let removed = self.table.remove(slot);
        if removed.conn.rbuf.capacity() > 0 {
            self.pool.give(removed.conn.rbuf);
        }
        if let Some(ip) = removed.peer {
            self.env.shared.address_limits.release(ip);
        }
        self.env.shared.open.fetch_sub(1, Ordering::Relaxed);
        self.env.stats.connections.sub(1);
    }

    /// Counts an adopted connection's address when `--max-conns-per-ip`
    /// counts them (it was admitted once already: never refused here).
    /// One from a trusted proxy is not counted: the hand-off does not carry
    /// the client's address, and the proxy's own must not fill with them.
    fn count_adopted_peer(&self, socket: &mio::net::TcpStream) -> Option<std::net::IpAddr> {
        let limits = &self.env.shared.address_limits;
        if !limits.counts_conns() {
            return None;
        }
        let ip = socket.peer_addr().ok()?.ip();
        if self.env.cfg.proxy.trusted.contains(ip) {
            return None;
        }
        limits.count(ip);
        Some(ip)
    }

    fn join_carried_rooms(&mut self, slot: usize, rooms: &[String]) {
        for room in rooms {
            if let Err(e) = self.table.rooms.join(slot as u32, room, &self.env.cfg.rooms) {
                log::warn!("loop {}: an adopted connection could not rejoin {room:?}: {e:?}", self.env.id);
            }
        }
    }

    /// Arms the timer the connection's stage runs, with what was left of
    /// it in the old process (or a full one).
    fn arm_carried_timer(&mut self, slot: usize, timer_ms: Option<u32>) {
        let conn = &self.table.conns[slot];
        let timeout = match (conn.stage, conn.session.phase()) {
            (Stage::Pinged, _) => Timeout::Pong,
            (_, Phase::Handshake) => Timeout::Handshake,
            _ => Timeout::Idle,
        };
        match timer_ms {
            Some(ms) => {
                let wheel = &mut self.table.wheel;
                let ticks = wheel.ticks(std::time::Duration::from_millis(ms as u64));
                let deadline = wheel.now() + ticks.min(self.env.ticks.of(timeout));
                wheel.schedule(&mut self.table.conns, slot as u32, deadline);
            }
            None => self.arm(slot, timeout),
        }
    }

    /// Handles the input the old process had read but not handled.
    fn handle_carried_input(&mut self, slot: usize) {
        if self.table.conns[slot].rbuf.is_empty() {
            return;
        }
        let before = match self.begin_turn(slot) {
            Turn::Handle(phase) => phase,
            Turn::Discard | Turn::Wait | Turn::Gone => return,
        };
        let mut buf = std::mem::take(&mut self.table.conns[slot].rbuf);
        let (consumed, handled) = self.handle_input(slot, &mut buf);
        buf.drain(..consumed);
        self.keep_or_return(slot, buf);
        let signal = self.finish_turn(slot, before, handled.err().map(Signal::Fault));
        self.signal(slot, signal);
    }
}
