//! How every pass ends, whatever the driver: turns for the ready list,
//! room deliveries, timers, gauges, and shutdown's progress; plus what the
//! inbox brings, and giving memory back after a ramp-down.

use std::time::Instant;

use crate::server::handler::Handler;
use crate::server::life::{CloseReason, Signal};
use crate::server::pubsub::hub::LoopMsg;
use crate::server::shrink::trim_heap;
use crate::ws::compression::CompressionMode;
use crate::ws::extension::DeflatePolicy;

use super::conn::IN_READY_LIST;
use super::transport::Transport;
use super::{handshake_budget, Engine, SPARE_BUFFERS_KEPT};

/// What the end of a pass asks of the driver running the engine: its own
/// read turn, and its own way of accepting. Implemented once per driver,
/// on the engine it runs (static dispatch).
pub(crate) trait DriverTurns {
    /// Another read turn for a live connection from the ready list.
    fn read_again(&mut self, slot: usize, generation: u32);
    /// Accepts (or arms accepting) now that a pause is over.
    fn accept_all(&mut self);
}

impl<H: Handler, T: Transport> Engine<H, T>
where
    Self: DriverTurns,
{
    /// What every pass ends with: turns for the ready list, room
    /// deliveries, timers, gauges. True once shutdown is done.
    pub(crate) fn end_pass(&mut self, handled_any: bool, handling: Instant) -> bool {
        // The budget spans this ready list (handshakes put off earlier go
        // first) and the next pass's events.
        self.tls.budget = handshake_budget(&self.env.cfg);
        self.run_ready_list();
        self.write_owed();
        let now = Instant::now();
        if self.accepting.resume_at.is_some_and(|at| now >= at) {
            self.accepting.resume_at = None;
            self.accept_all();
        }
        self.fire_timers(now);
        self.retire_due(now);
        self.keep_to_budget(now);
        self.publish_gauges();
        if handled_any {
            self.env.stats.observe_iteration(handling.elapsed());
        }
        self.shutdown_done()
    }

    fn run_ready_list(&mut self) {
        if self.ready.is_empty() {
            return;
        }
        for (slot, generation) in std::mem::take(&mut self.ready) {
            if self.is_live(slot as usize, generation) {
                self.table.conns[slot as usize].flags &= !IN_READY_LIST;
                self.read_again(slot as usize, generation);
            }
        }
    }
}

impl<H: Handler, T: Transport> Engine<H, T> {
    fn fire_timers(&mut self, now: Instant) {
        if self.is_frozen() {
            // A hand-off: nothing is read now, so no deadline is fair;
            // they fire (late) once the loop thaws.
            return;
        }
        let wheel = &mut self.table.wheel;
        let tick = wheel.tick_at(now);
        if tick <= wheel.now() {
            return;
        }
        let mut expired = std::mem::take(&mut self.scratch.expired);
        wheel.advance(&mut self.table.conns, tick, &mut expired);
        for slot in expired.drain(..) {
            self.signal(slot as usize, Signal::Timer);
        }
        self.scratch.expired = expired;
        // Tokens expire by the second: looked at once a tick, not a pass.
        self.expire_tokens();
        if self.shrink.due(now, self.table.conns.len(), self.table.conns.capacity()) {
            self.release_memory();
        }
    }

    /// True once shutdown has closed every connection, or its time is up
    /// (then the stragglers are dropped).
    fn shutdown_done(&mut self) -> bool {
        let Some(deadline) = self.shutdown_deadline else { return false };
        if self.table.conns.is_empty() {
            return true;
        }
        if Instant::now() >= deadline {
            let slots: Vec<usize> = self.table.conns.iter().map(|(s, _)| s).collect();
            for slot in slots {
                self.close(slot, CloseReason::Shutdown);
            }
            return true;
        }
        false
    }

    /// Handles everything posted to this loop: publishes are owed to the
    /// members of their room, written at the end of the pass.
    pub(crate) fn drain_inbox(&mut self) {
        self.env.hub.clear_wake(self.env.id as usize);
        let mut taken = 0;
        while let Ok(msg) = self.env.inbox.try_recv() {
            taken += 1;
            match msg {
                LoopMsg::Publish { room, frame } => {
                    self.deliver(&room, &frame, None);
                }
                LoopMsg::Broadcast { frame } => self.deliver_to_all(&frame, None),
                LoopMsg::Shutdown => self.begin_shutdown(),
                LoopMsg::Control => self.take_commands(),
                LoopMsg::Order(order) => self.take_order(*order),
            }
        }
        if taken > 0 {
            self.env.hub.taken(self.env.id as usize, taken);
        }
    }

    pub(crate) fn begin_shutdown(&mut self) {
        if self.shutdown_deadline.is_some() {
            return;
        }
        self.shutdown_deadline = Some(Instant::now() + self.env.cfg.shutdown_timeout);
        if let Some(mut listener) = self.accepting.listener.take() {
            self.io.stop_accepting(&mut listener);
        }
        let period = self.env.cfg.drain_period;
        if !period.is_zero() {
            // Paced: 1012 a few at a time (`retire.rs`), all within the period.
            let all = self.all_conns();
            return self.begin_paced_drain(all, period);
        }
        let slots: Vec<usize> = self.table.conns.iter().map(|(s, _)| s).collect();
        for slot in slots {
            self.signal(slot, Signal::Shutdown);
        }
    }

    /// Offers the shared terms instead of dedicated ones while this loop's
    /// share of `--compression-max-dedicated` is taken, and dedicated ones
    /// again once a connection holding a context has gone.
    pub(crate) fn limit_dedicated(&mut self) {
        let CompressionMode::Dedicated(bits) = self.env.cfg.compression.mode else { return };
        if self.offers.max_dedicated == 0 {
            return;
        }
        let agreed = self.table.deflaters.dedicated_agreed().max(self.table.inflaters.dedicated_agreed());
        let policy =
            if agreed >= self.offers.max_dedicated { DeflatePolicy::shared() } else { DeflatePolicy::dedicated(bits) };
        self.offers.ws_cfg.handshake.deflate = Some(policy);
    }

    /// Gives back what the peak left: every table's capacity past the
    /// highest occupied slot, spare pooled buffers, fan-out scratch, and
    /// the heap's free memory. Only when mostly empty
    /// ([`Shrink`](crate::server::shrink::Shrink)), so the copies are of
    /// the few connections left.
    fn release_memory(&mut self) {
        let before = self.table.conns.capacity();
        let end = self.table.release_memory();
        self.io.release_memory(end);
        self.pool.trim(SPARE_BUFFERS_KEPT);
        self.fanout.owed.shrink_to_fit();
        self.fanout.local.shrink_to_fit();
        let scratch = &mut self.scratch;
        scratch.owed_slice = Vec::new();
        for buf in [&mut scratch.out, &mut scratch.inflated, &mut scratch.sealed] {
            if buf.is_empty() {
                buf.shrink_to(self.env.cfg.buffer_size);
            }
        }
        scratch.expired.shrink_to_fit();
        scratch.retiring = Vec::new();
        self.ready.shrink_to_fit();
        if let Some(aging) = &mut self.retiring.aging {
            let table = &self.table;
            aging.release_memory(|slot, generation| table.is_live(slot as usize, generation));
        }
        trim_heap();
        self.shrink.released(self.table.conns.len(), self.table.conns.capacity());
        self.env.stats.memory_releases.add(1);
        let (id, after, left) = (self.env.id, self.table.conns.capacity(), self.table.conns.len());
        log::debug!("loop {id}: released memory: slab {before} -> {after} slots for {left} connections");
    }

    fn publish_gauges(&mut self) {
        let stats = &self.env.stats;
        let deflaters = &mut self.table.deflaters;
        let counts = std::mem::take(&mut deflaters.counts);
        if counts.messages > 0 {
            stats.compressed_messages.add(counts.messages);
            stats.compressed_plain_bytes.add(counts.plain_bytes);
            stats.compressed_bytes.add(counts.deflated_bytes);
        }
        if self.env.cfg.compression.mode != CompressionMode::Off {
            let dedicated = deflaters.dedicated_in_use().max(self.table.inflaters.dedicated_in_use());
            stats.dedicated_codecs.set(dedicated as u64);
        }
        stats.pool_in_use.set(self.pool.in_use() as u64);
        stats.pool_idle.set(self.pool.idle() as u64);
        stats.rooms.set(self.table.rooms.room_count() as u64);
        stats.room_members.set(self.table.rooms.member_count() as u64);
    }
}
