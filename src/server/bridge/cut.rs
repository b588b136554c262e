//! The Redis side of a live hand-off: one point in Redis's order of
//! messages that both processes' subscribers see, so a publish from
//! another host reaches each moved member exactly once.
//!
//! Redis sends every subscriber connection its messages in the one order
//! in which it ran the `PUBLISH` commands. So: the new process subscribes
//! to the old one's rooms and to a marker channel, then the old process
//! publishes a marker (through its publish queue, behind its own earlier
//! publishes). The old process delivers what came before the marker (its
//! loops take it before they export) and nothing after it until its loops
//! have exported; the new one drops what came before it, keeps what came
//! after (bounded), and delivers that once its loops have adopted the
//! members.
//!
//! ```text
//!   old subscriber:  m1 m2 [marker] m3 ...   delivers m1 m2 to the members before they move
//!   new subscriber:  m1 m2 [marker] m3 ...   drops m1 m2, keeps m3.. until adopted
//! ```
//!
//! (The old process's connections that stay, TLS ones say, miss what comes
//! between the marker and the end of the export: a few milliseconds, while
//! they are being drained.)
//!
//! The marker channel is `prefix + ":handoff"`, which no room's channel
//! can be (a room's `:` is escaped).

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};

use crossbeam_channel::Sender;

use crate::server::pubsub::hub::Hub;
use crate::server::pubsub::publication::Publication;
use crate::ws::frame::opcode;

use super::outgoing::Outgoing;
use super::stats::BridgeStats;

/// Bytes of messages the new process keeps between the marker and the
/// end of adoption; more are dropped and counted.
const MAX_HELD_BYTES: usize = 64 << 20;

/// Messages kept back, in order, up to [`MAX_HELD_BYTES`].
#[derive(Default)]
struct Kept {
    list: Vec<(Arc<str>, Arc<Publication>)>,
    bytes: usize,
}

impl Kept {
    /// Keeps one; false (and not kept) past the bound.
    fn push(&mut self, room: Arc<str>, frame: Arc<Publication>) -> bool {
        // Each kept publish costs its bookkeeping too: empty ones are not free.
        let size = super::outgoing::queued_cost(&room, frame.payload().len()) as usize;
        if self.bytes + size > MAX_HELD_BYTES {
            return false;
        }
        self.bytes += size;
        self.list.push((room, frame));
        true
    }
}

/// What a subscriber does with room messages during a hand-off.
#[derive(Default)]
enum Holding {
    /// Delivers them (no hand-off, or it is over).
    #[default]
    Off,
    /// Old side, before the marker: delivers them.
    Delivering,
    /// New side, before the marker: kept apart; the old process delivers
    /// these, so they are dropped when the marker comes (delivered only if
    /// it never does: a repeat rather than a loss).
    Early(Kept),
    /// New side, after the marker: kept for the members being adopted.
    Late(Kept),
    /// Old side, after the marker: kept until the hand-off ends; dropped
    /// if it commits (the new process delivers them), delivered if it fails.
    Past(Kept),
}

/// See the module docs. Shared by the subscriber thread and the hand-off.
#[derive(Default)]
pub struct Cut {
    /// Set while a hand-off runs: the subscriber's per-message check is
    /// one load when none does.
    active: AtomicBool,
    /// Moves at every `arm` and `release`: the subscriber looks at the
    /// marker channel again when it does.
    version: AtomicU64,
    /// The publish queue, for the marker (behind this process's own
    /// earlier publishes).
    outbox: Option<Sender<Outgoing>>,
    /// The marker channel (`prefix + ":handoff"`).
    channel: String,
    /// The marker channel to stay subscribed to, while a hand-off runs.
    marker: Mutex<Option<(String, Vec<u8>)>>,
    /// The subscriber has confirmed the marker channel's subscription.
    marker_subscribed: AtomicBool,
    /// The directory generation the subscriber has subscribed up to.
    applied: AtomicU64,
    /// The marker came.
    seen: AtomicBool,
    holding: Mutex<Holding>,
    /// Where messages dropped past [`MAX_HELD_BYTES`] are counted
    /// (`wsloop_redis_publishes_dropped_total{reason="handoff_held"}`).
    stats: Option<Arc<BridgeStats>>,
}

impl Cut {
    /// Over the publish queue `outbox`, with channels under `prefix`.
    pub(super) fn new(outbox: Sender<Outgoing>, prefix: &str, stats: Arc<BridgeStats>) -> Cut {
        Cut { outbox: Some(outbox), channel: format!("{prefix}:handoff"), stats: Some(stats), ..Cut::default() }
    }

    /// Queues the marker's publish behind this process's own publishes;
    /// false if the queue is gone or full.
    pub(crate) fn publish_marker(&self) -> bool {
        let marker = self.marker.lock().unwrap_or_else(PoisonError::into_inner).clone();
        let (Some((channel, token)), Some(outbox)) = (marker, &self.outbox) else { return false };
        let frame = Publication::new(opcode::BINARY, &token);
        outbox.try_send(Outgoing { room: channel.into(), frame, cost: 0, raw: true }).is_ok()
    }

    /// Moves whenever the marker channel to hold changes.
    pub(super) fn version(&self) -> u64 {
        self.version.load(Ordering::Acquire)
    }

    /// Starts watching for the marker `token`; the new side also drops
    /// room messages until it comes.
    pub(crate) fn arm(&self, token: Vec<u8>, new_side: bool) {
        let channel = self.channel.clone();
        self.seen.store(false, Ordering::Release);
        self.marker_subscribed.store(false, Ordering::Release);
        *self.marker.lock().unwrap_or_else(PoisonError::into_inner) = Some((channel, token));
        *self.holding.lock().unwrap_or_else(PoisonError::into_inner) =
            if new_side { Holding::Early(Kept::default()) } else { Holding::Delivering };
        self.active.store(true, Ordering::Release);
        self.version.fetch_add(1, Ordering::AcqRel);
    }

    /// The marker channel the subscriber should hold, if any.
    pub(super) fn wanted(&self) -> Option<String> {
        self.marker.lock().unwrap_or_else(PoisonError::into_inner).as_ref().map(|(c, _)| c.clone())
    }

    /// The subscriber subscribed (or left) the marker channel.
    pub(super) fn set_marker_subscribed(&self, yes: bool) {
        self.marker_subscribed.store(yes, Ordering::Release);
    }

    /// The subscriber's subscriptions now match directory generation `g`.
    pub(super) fn set_applied(&self, g: u64) {
        self.applied.store(g, Ordering::Release);
    }

    /// True once the subscriber holds the marker channel and the rooms of
    /// directory generation `g` (or later).
    pub(crate) fn subscribed(&self, g: u64) -> bool {
        self.marker_subscribed.load(Ordering::Acquire) && self.applied.load(Ordering::Acquire) >= g
    }

    /// True once the marker came.
    pub(crate) fn seen(&self) -> bool {
        self.seen.load(Ordering::Acquire)
    }

    /// A message on `channel`: true if it was the marker's (taken here).
    pub(super) fn take_marker(&self, channel: &str, payload: &[u8]) -> bool {
        if !self.active.load(Ordering::Acquire) {
            return false;
        }
        let marker = self.marker.lock().unwrap_or_else(PoisonError::into_inner);
        let Some((name, token)) = marker.as_ref() else { return false };
        if name != channel {
            return false;
        }
        if payload == token.as_slice() {
            let mut holding = self.holding.lock().unwrap_or_else(PoisonError::into_inner);
            match *holding {
                Holding::Early(_) => *holding = Holding::Late(Kept::default()),
                Holding::Delivering => *holding = Holding::Past(Kept::default()),
                _ => {}
            }
            self.seen.store(true, Ordering::Release);
        }
        true
    }

    /// A room message: `Some` to deliver it now, `None` when it is kept
    /// back until [`release`](Self::release).
    pub(super) fn pass(&self, room: Arc<str>, frame: Arc<Publication>) -> Option<(Arc<str>, Arc<Publication>)> {
        if !self.active.load(Ordering::Acquire) {
            return Some((room, frame));
        }
        let mut holding = self.holding.lock().unwrap_or_else(PoisonError::into_inner);
        let kept = match &mut *holding {
            Holding::Off | Holding::Delivering => return Some((room, frame)),
            Holding::Early(kept) | Holding::Late(kept) | Holding::Past(kept) => kept,
        };
        if !kept.push(room, frame) {
            if let Some(stats) = &self.stats {
                stats.dropped_handoff_held.fetch_add(1, Ordering::Relaxed);
            }
        }
        None
    }

    /// The hand-off is over: what was kept back goes to the loops, in
    /// order and before anything that comes after it (the lock is held
    /// meanwhile), and messages flow again. The old side's messages from
    /// after the marker go too only if `failed` (the new process has not
    /// taken the members). Returns how many were delivered.
    pub(crate) fn release(&self, hub: &Hub, failed: bool) -> usize {
        let mut holding = self.holding.lock().unwrap_or_else(PoisonError::into_inner);
        let deliver = match std::mem::take(&mut *holding) {
            Holding::Late(kept) => kept.list,
            Holding::Early(kept) => {
                log::warn!("hand-off: the Redis marker never came; delivering every publish since the subscription (some may repeat)");
                kept.list
            }
            Holding::Past(kept) if failed => kept.list,
            Holding::Past(_) | Holding::Off | Holding::Delivering => Vec::new(),
        };
        for (room, frame) in &deliver {
            hub.publish_to_all(room, frame);
        }
        *self.marker.lock().unwrap_or_else(PoisonError::into_inner) = None;
        self.active.store(false, Ordering::Release);
        self.version.fetch_add(1, Ordering::AcqRel);
        drop(holding);
        deliver.len()
    }
}

impl std::fmt::Debug for Cut {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Cut").field("active", &self.active).field("seen", &self.seen).finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn msg(n: u8) -> (Arc<str>, Arc<Publication>) {
        (Arc::from("r"), Publication::new(opcode::TEXT, &[n]))
    }

    #[test]
    fn the_new_side_drops_before_the_marker_and_keeps_after_it() {
        let cut = Cut { channel: "p::handoff".into(), ..Cut::default() };
        cut.arm(b"tok".to_vec(), true);
        let (r, f) = msg(1);
        assert!(cut.pass(r, f).is_none(), "before the marker: kept apart (the old process has it)");
        assert!(cut.take_marker("p::handoff", b"other"), "another hand-off's marker is not ours");
        assert!(!cut.seen());
        assert!(!cut.take_marker("p:lobby", b"tok"));
        assert!(cut.take_marker("p::handoff", b"tok"));
        assert!(cut.seen());
        let (r, f) = msg(2);
        assert!(cut.pass(r, f).is_none(), "kept");
        let mut hub = Hub::default();
        let (tx, rx) = crossbeam_channel::unbounded();
        hub.add(tx, crate::server::pubsub::hub::LoopWaker::EventFd(std::fs::File::open("/dev/null").unwrap().into()));
        assert_eq!(cut.release(&hub, false), 1, "only what came after the marker");
        assert!(matches!(rx.try_recv(), Ok(crate::server::pubsub::hub::LoopMsg::Publish { .. })));
        assert!(rx.try_recv().is_err());
        let (r, f) = msg(3);
        assert!(cut.pass(r, f).is_some(), "flowing again");
    }

    #[test]
    fn the_old_side_delivers_before_the_marker_and_nothing_after_it_until_released() {
        let cut = Cut { channel: "p::handoff".into(), ..Cut::default() };
        cut.arm(b"tok".to_vec(), false);
        let (r, f) = msg(1);
        assert!(cut.pass(r, f).is_some());
        assert!(cut.take_marker("p::handoff", b"tok"));
        let (r, f) = msg(2);
        assert!(cut.pass(r, f).is_none(), "kept: the new process delivers it if the hand-off commits");
        let hub = Hub::default();
        assert_eq!(cut.release(&hub, false), 0, "committed: dropped");
        let (r, f) = msg(3);
        assert!(cut.pass(r, f).is_some());
    }

    #[test]
    fn a_failed_hand_off_delivers_what_the_old_side_kept_and_a_lost_marker_repeats_rather_than_loses() {
        let (hub, rx) = hub_of_one();
        let old = Cut { channel: "p::handoff".into(), ..Cut::default() };
        old.arm(b"tok".to_vec(), false);
        old.take_marker("p::handoff", b"tok");
        let (r, f) = msg(2);
        assert!(old.pass(r, f).is_none());
        assert_eq!(old.release(&hub, true), 1, "the members stayed: they get it");
        let new = Cut { channel: "p::handoff".into(), ..Cut::default() };
        new.arm(b"tok".to_vec(), true);
        let (r, f) = msg(1);
        assert!(new.pass(r, f).is_none());
        assert_eq!(new.release(&hub, false), 1, "no marker: delivered rather than lost");
        assert_eq!(rx.len(), 2);
    }

    #[test]
    fn what_is_held_back_is_bounded_and_the_rest_is_counted() {
        let stats = Arc::new(BridgeStats::new(1 << 20));
        let cut = Cut { channel: "p::handoff".into(), stats: Some(stats.clone()), ..Cut::default() };
        cut.arm(b"tok".to_vec(), true);
        cut.take_marker("p::handoff", b"tok");
        let big = Publication::new(opcode::BINARY, &vec![0; 1 << 20]);
        for _ in 0..70 {
            assert!(cut.pass(Arc::from("r"), big.clone()).is_none());
        }
        // 63 of 1 MiB (and a room name) fit under 64 MiB; 7 are dropped.
        assert_eq!(stats.dropped_handoff_held.load(Ordering::Relaxed), 7);
        let (hub, rx) = hub_of_one();
        assert_eq!(cut.release(&hub, false), 63);
        assert_eq!(rx.len(), 63);
    }

    fn hub_of_one() -> (Hub, crossbeam_channel::Receiver<crate::server::pubsub::hub::LoopMsg>) {
        let mut hub = Hub::default();
        let (tx, rx) = crossbeam_channel::unbounded();
        hub.add(tx, crate::server::pubsub::hub::LoopWaker::EventFd(std::fs::File::open("/dev/null").unwrap().into()));
        (hub, rx)
    }
}
