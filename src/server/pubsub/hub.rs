//! The loops' inboxes, shared by all of them: how one loop (or the
//! process) posts to the others without a lock: a crossbeam channel and a
//! waker per loop (mio's, or an eventfd under io_uring), with a flag so
//! that a burst of posts costs one wake-up, not one per message.
//!
//! An inbox holds at most [`INBOX_CAP`] messages: a loop that falls that
//! far behind its peers' publishes (it drains its whole inbox every pass)
//! drops the publishes past it, counted in [`Hub::dropped`], rather than
//! letting a storm of small publishes grow without bound. (Their frames'
//! bytes are in the memory budget as well.) Shutdown, control commands and
//! admin orders someone waits for are never dropped.
//!
//! With a Redis bridge (`--redis-url`), a room publish also leaves the
//! process: [`Hub::publish_to_others`] hands it to the [`Outbox`] (the
//! bridge), whose subscriber brings other processes' publishes back in
//! through [`Hub::publish_to_all`].

use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;

use std::os::fd::{AsRawFd, OwnedFd};

use crossbeam_channel::Sender;
use mio::Waker;

use super::directory::Directory;
use super::orders::{Ask, Kick, Order};
use super::outbox::Outbox;
use super::publication::Publication;

/// What other threads may ask of a loop, through its inbox.
#[derive(Debug)]
pub enum LoopMsg {
    /// Begin graceful shutdown: stop accepting, close every connection 1001.
    Shutdown,
    /// A command waits in the loop's control channel (a live hand-off):
    /// in the inbox so that it is taken in order with the publishes posted
    /// before it.
    Control,
    /// Deliver a publication to every connection of this loop.
    Broadcast {
        /// The message, encoded once and shared by every loop.
        frame: Arc<Publication>,
    },
    /// Deliver a publication to this loop's members of `room`.
    Publish {
        /// The room.
        room: Arc<str>,
        /// The message, encoded once and shared by every loop.
        frame: Arc<Publication>,
    },
    /// An order of the admin API (boxed: the inbox's messages stay small).
    Order(Box<Order>),
}

/// How a loop is woken: the epoll driver's mio waker, or an eventfd the
/// io_uring driver keeps a read on.
#[derive(Debug)]
pub enum LoopWaker {
    /// Registered with the loop's `Poll`.
    Poll(Waker),
    /// An eventfd; a write of 1 completes the loop's pending read.
    EventFd(OwnedFd),
}

impl LoopWaker {
    /// Wakes the loop.
    pub fn wake(&self) -> std::io::Result<()> {
        match self {
            LoopWaker::Poll(w) => w.wake(),
            LoopWaker::EventFd(fd) => {
                let one = 1u64.to_ne_bytes();
                // SAFETY: writes 8 bytes from a live array to an open eventfd.
                let n = unsafe { libc::write(fd.as_raw_fd(), one.as_ptr().cast(), 8) };
                if n == 8 {
                    Ok(())
                } else {
                    Err(std::io::Error::last_os_error())
                }
            }
        }
    }
}

/// Messages an inbox holds at most; publishes past it are dropped.
pub const INBOX_CAP: usize = 65_536;

/// One loop's inbox, as seen from outside it.
#[derive(Debug)]
pub struct Inbox {
    tx: Sender<LoopMsg>,
    waker: LoopWaker,
    /// Set by a poster that woke the loop; cleared by the loop before it
    /// drains. While set, further posts need no wake-up.
    wake_pending: AtomicBool,
    /// Messages posted and not yet taken by the loop.
    pending: AtomicUsize,
}

/// Every loop's inbox.
#[derive(Debug, Default)]
pub struct Hub {
    inboxes: Vec<Inbox>,
    /// Where room publishes go beyond this process, if anywhere.
    outbox: Option<Box<dyn Outbox>>,
    /// The rooms with members in this process, kept while an outbox
    /// needs to know which to ask other processes for.
    directory: Option<Arc<Directory>>,
    /// Publishes dropped at a full inbox (one per loop that missed one).
    dropped: Arc<AtomicU64>,
}

impl Hub {
    /// Adds a loop's inbox; loops are numbered in the order they are added.
    pub fn add(&mut self, tx: Sender<LoopMsg>, waker: LoopWaker) {
        self.inboxes.push(Inbox { tx, waker, wake_pending: AtomicBool::new(false), pending: AtomicUsize::new(0) });
    }

    /// Posts `msg` to loop `i`, waking it unless a wake-up is already
    /// pending. A publish to a full inbox is dropped and counted.
    pub fn post(&self, i: usize, msg: LoopMsg) {
        let inbox = &self.inboxes[i];
        let held = inbox.pending.fetch_add(1, Ordering::Relaxed);
        if held >= INBOX_CAP && !is_never_dropped(&msg) {
            inbox.pending.fetch_sub(1, Ordering::Relaxed);
            self.dropped.fetch_add(1, Ordering::Relaxed);
            return;
        }
        if inbox.tx.send(msg).is_err() {
            inbox.pending.fetch_sub(1, Ordering::Relaxed);
        } else if !inbox.wake_pending.swap(true, Ordering::SeqCst) {
            let _ = inbox.waker.wake();
        }
    }

    /// Loop `i` took `n` messages out of its inbox.
    pub fn taken(&self, i: usize, n: usize) {
        self.inboxes[i].pending.fetch_sub(n, Ordering::Relaxed);
    }

    /// The count of publishes dropped at a full inbox.
    pub fn dropped(&self) -> &Arc<AtomicU64> {
        &self.dropped
    }

    /// Sends room publishes beyond this process through `outbox`, which
    /// reads `directory` (the rooms with members here) to know what to
    /// receive in turn.
    pub(crate) fn set_outbox(&mut self, outbox: Box<dyn Outbox>, directory: Arc<Directory>) {
        self.outbox = Some(outbox);
        self.directory = Some(directory);
    }

    /// The process-wide room directory, when an outbox reads it.
    pub(crate) fn directory(&self) -> Option<&Arc<Directory>> {
        self.directory.as_ref()
    }

    /// Posts a publish to every loop but `from`, and to other processes
    /// when there is a bridge.
    pub fn publish_to_others(&self, from: u32, room: &Arc<str>, frame: &Arc<Publication>) {
        self.post_publish(Some(from as usize), room, frame);
        if let Some(outbox) = &self.outbox {
            outbox.publish(room, frame);
        }
    }

    /// Posts a publish that came from another process to every loop.
    pub fn publish_to_all(&self, room: &Arc<str>, frame: &Arc<Publication>) {
        self.post_publish(None, room, frame);
    }

    fn post_publish(&self, skip: Option<usize>, room: &Arc<str>, frame: &Arc<Publication>) {
        for i in (0..self.inboxes.len()).filter(|&i| Some(i) != skip) {
            self.post(i, LoopMsg::Publish { room: room.clone(), frame: frame.clone() });
        }
    }

    /// Posts a broadcast to every loop but `from`.
    pub fn broadcast_to_others(&self, from: u32, frame: &Arc<Publication>) {
        for i in 0..self.inboxes.len() {
            if i != from as usize {
                self.post(i, LoopMsg::Broadcast { frame: frame.clone() });
            }
        }
    }

    /// The loops this hub reaches.
    pub fn loops(&self) -> usize {
        self.inboxes.len()
    }

    /// Sends a kick to the other processes, when there is a bridge: false
    /// when there is none or it could not take it (counted by the bridge).
    pub fn kick_others(&self, kick: &Kick) -> bool {
        self.outbox.as_ref().is_some_and(|outbox| outbox.kick(kick))
    }

    /// Posts a kick from another host to every loop; nobody waits for
    /// the answers. Dropped (counted) at a full inbox like a publish.
    pub fn kick_here(&self, kick: &Kick) {
        for i in 0..self.inboxes.len() {
            let order = Order { ask: Ask::Kick(kick.clone()), reply: None };
            self.post(i, LoopMsg::Order(Box::new(order)));
        }
    }

    /// Hands a publish to the other processes only (the caller delivers
    /// it here itself): false when there is no bridge.
    pub fn publish_beyond(&self, room: &Arc<str>, frame: &Arc<Publication>) -> bool {
        match &self.outbox {
            Some(outbox) => {
                outbox.publish(room, frame);
                true
            }
            None => false,
        }
    }

    /// Posts shutdown to every loop.
    pub fn shutdown_all(&self) {
        for i in 0..self.inboxes.len() {
            self.post(i, LoopMsg::Shutdown);
        }
    }

    /// Called by loop `i` when woken, before it drains its inbox.
    pub fn clear_wake(&self, i: usize) {
        self.inboxes[i].wake_pending.store(false, Ordering::SeqCst);
    }
}

/// Shutdown, hand-off commands and the orders someone waits for are never
/// dropped at a full inbox (an order with a reply comes from this host's
/// admin API, one at a time); publishes, and kicks from other hosts, are.
fn is_never_dropped(msg: &LoopMsg) -> bool {
    match msg {
        LoopMsg::Shutdown | LoopMsg::Control => true,
        LoopMsg::Order(order) => order.reply.is_some(),
        LoopMsg::Publish { .. } | LoopMsg::Broadcast { .. } => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::fd::FromRawFd;

    fn hub_of_one() -> (Hub, crossbeam_channel::Receiver<LoopMsg>) {
        // SAFETY: a new eventfd, owned from here on.
        let fd = unsafe { OwnedFd::from_raw_fd(libc::eventfd(0, libc::EFD_NONBLOCK)) };
        let (tx, rx) = crossbeam_channel::unbounded();
        let mut hub = Hub::default();
        hub.add(tx, LoopWaker::EventFd(fd));
        (hub, rx)
    }

    #[test]
    fn a_full_inbox_drops_publishes_but_never_shutdown() {
        let (hub, rx) = hub_of_one();
        let frame = Publication::new(crate::ws::frame::opcode::TEXT, b"hi");
        let room: Arc<str> = Arc::from("r");
        for _ in 0..INBOX_CAP + 10 {
            hub.publish_to_all(&room, &frame);
        }
        assert_eq!(rx.len(), INBOX_CAP);
        assert_eq!(hub.dropped().load(Ordering::Relaxed), 10);
        hub.shutdown_all();
        assert_eq!(rx.len(), INBOX_CAP + 1, "shutdown gets through a full inbox");
        // The loop takes what it holds: there is room again.
        let taken = rx.try_iter().count();
        hub.taken(0, taken);
        hub.publish_to_all(&room, &frame);
        assert_eq!((rx.len(), hub.dropped().load(Ordering::Relaxed)), (1, 10));
    }
}
