//! Rooms across processes and hosts, over Redis pub/sub.
//!
//! One bridge per process. The loops never wait on it: a publish is handed
//! over with a non-blocking `try_send` into a queue bounded in count and in
//! bytes (`max_queue_bytes`; past either, the publish is dropped and
//! counted), and a room's birth or death on a loop is one short lock in
//! the `Directory`. Two threads of the bridge's own talk to Redis:
//!
//! - the **publisher** drains the queue and sends what it found as one
//!   pipeline of `PUBLISH`es (one write, one read of the replies per batch),
//!   then gives the batch's bytes back to the queue's bound;
//! - the **subscriber** keeps one connection `SUBSCRIBE`d to the channel of
//!   every room with members in the process, and posts what arrives to every
//!   loop through the `Hub`, encoded once into a shared `Publication`.
//!
//! What never goes to Redis (local members get it all the same; counted):
//! a publish to a room name `join` refuses (empty, longer than
//! `max_room_name`), and a publish larger than `max_publish_bytes`, which
//! the publisher lowers to half of Redis's hard pubsub output-buffer limit
//! when `CONFIG GET` tells it: Redis cuts off every subscriber whose buffer
//! passes that limit, and one such publish would cut off every other host.
//!
//! A publish is tagged with the process's random origin id
//! (`envelope`); the subscriber drops its own, since local members had it
//! at once. A room's channel is the prefix (ending with `:`) and the
//! room's name with `%` and `:` written `%25` and `%3A` (`channel`), so
//! that no two prefixes share a channel; subscribed with `SUBSCRIBE`, never
//! `PSUBSCRIBE`: a room called `a*` is just a name.
//!
//! The admin API's disconnects of a room or a user travel on one more
//! channel, `prefix + ":admin"` (`channel::admin`), which every subscriber
//! holds: a kick (`pubsub::orders::Kick`, its own bytes) in this process's
//! envelope, posted by the other hosts' subscribers to their loops.
//!
//! Redis down: local delivery goes on, publishes meant for other hosts are
//! counted as dropped (`redis_down`), both threads reconnect with backoff
//! (100 ms doubling to 5 s), and the subscriber subscribes again to every
//! room that has members. Nothing is replayed: a publish made while Redis
//! was away is lost to other hosts, never delivered twice.
//!
//! The URL may hold a password: it is shown only [`redacted`] (errors,
//! logs, `Debug`).
//!
//! The client is the `redis` crate (redis-rs), the most used and actively
//! kept Rust client, in its synchronous form without default features:
//! the bridge has threads of its own, so an async runtime would add a
//! scheduler for two sockets.

mod channel;
pub mod cut;
pub(crate) mod envelope;
mod outgoing;
mod stats;
mod url;
mod worker;

use std::fmt;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;

use crossbeam_channel::{Receiver, Sender, TrySendError};

pub use channel::{check_prefix, PrefixError};
use outgoing::{queued_cost, Outgoing};
pub use stats::BridgeStats;
pub use url::{redacted, RedisUrl};

pub use cut::Cut;

use crate::server::pubsub::directory::Directory;
use crate::server::pubsub::hub::Hub;
use crate::server::pubsub::orders::Kick;
use crate::server::pubsub::outbox::Outbox;
use crate::server::pubsub::publication::Publication;
use crate::server::pubsub::RoomLimits;
use crate::ws::frame::opcode;

/// The channel prefix unless configured: channels are `wsloop:room:<room>`.
pub const DEFAULT_PREFIX: &str = "wsloop:room:";
/// Publishes waiting for the publisher thread at most, whatever their size.
pub const QUEUE_LEN: usize = 64 * 1024;
/// Bytes of publishes waiting for the publisher at most unless configured:
/// past it they are dropped (counted) rather than let memory grow while
/// Redis is slow or stopped.
pub const DEFAULT_MAX_QUEUE_BYTES: usize = 64 << 20;
/// The largest publish sent to Redis unless configured: half of Redis's
/// default hard output-buffer limit for subscribers (32 MiB), so that one
/// publish, even with another behind it, never gets the other hosts'
/// subscriber connections dropped.
pub const DEFAULT_MAX_PUBLISH_BYTES: usize = 16 << 20;
/// What a publish costs in a subscriber's output buffer in Redis beyond
/// the envelope and the channel name (the RESP framing of a `message`).
const WIRE_OVERHEAD: usize = 64;

/// Where the bridge connects, how it names channels, and its bounds.
#[derive(Clone)]
pub struct BridgeConfig {
    /// `redis://[user:password@]host:port[/db]`. Shown only [`redacted`].
    pub url: String,
    /// Put before every room's name to make its channel; must end with `:`
    /// (see the channel naming in the module docs).
    pub prefix: String,
    /// Bytes of publishes the queue to the publisher holds at most; past
    /// it new publishes are dropped (`queue_full`), never waited for.
    pub max_queue_bytes: usize,
    /// The largest publish sent to Redis (envelope, channel and framing);
    /// larger ones are refused (`too_large`). Lowered at connect to half
    /// of Redis's hard `client-output-buffer-limit pubsub` where Redis
    /// tells it (`CONFIG GET`).
    pub max_publish_bytes: usize,
    /// Longest room name sent to Redis: set it to the server's
    /// [`RoomLimits::max_name_len`] (the CLI does), so that a room `join`
    /// refuses never reaches Redis either.
    pub max_room_name: usize,
}

impl fmt::Debug for BridgeConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("BridgeConfig")
            .field("url", &redacted(&self.url))
            .field("prefix", &self.prefix)
            .field("max_queue_bytes", &self.max_queue_bytes)
            .field("max_publish_bytes", &self.max_publish_bytes)
            .field("max_room_name", &self.max_room_name)
            .finish()
    }
}

impl BridgeConfig {
    /// A configuration for `url` with the default prefix and bounds, checked.
    pub fn new(url: &str) -> Result<BridgeConfig, BridgeError> {
        let cfg = BridgeConfig {
            url: url.to_string(),
            prefix: DEFAULT_PREFIX.to_string(),
            max_queue_bytes: DEFAULT_MAX_QUEUE_BYTES,
            max_publish_bytes: DEFAULT_MAX_PUBLISH_BYTES,
            max_room_name: RoomLimits::default().max_name_len,
        };
        cfg.check()?;
        Ok(cfg)
    }

    /// Checks every field; the server does too before it starts the bridge.
    pub fn check(&self) -> Result<(), BridgeError> {
        self.client()?;
        channel::check_prefix(&self.prefix).map_err(BridgeError::Prefix)?;
        if self.max_queue_bytes == 0 {
            return Err(BridgeError::Bound("the queue's byte bound is 0: nothing could be sent"));
        }
        if self.max_publish_bytes == 0 {
            return Err(BridgeError::Bound("the largest publish is 0 bytes: nothing could be sent"));
        }
        Ok(())
    }

    fn client(&self) -> Result<redis::Client, BridgeError> {
        let shown = redacted(&self.url);
        if !self.url.starts_with("redis://") {
            return Err(BridgeError::Url(format!("{shown:?} does not start with redis://")));
        }
        redis::Client::open(self.url.as_str()).map_err(|e| BridgeError::Url(format!("{shown:?}: {e}")))
    }
}

/// Why the bridge could not start.
#[derive(Debug)]
pub enum BridgeError {
    /// The Redis URL is not one the client accepts (the text shows it
    /// [`redacted`]).
    Url(String),
    /// The channel prefix could make channels of two hosts collide.
    Prefix(PrefixError),
    /// A bound that would let nothing through.
    Bound(&'static str),
    /// A thread could not be started.
    Spawn(std::io::Error),
}

impl fmt::Display for BridgeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            BridgeError::Url(why) => write!(f, "bad Redis URL: {why}"),
            BridgeError::Prefix(e) => write!(f, "bad Redis prefix: {e}"),
            BridgeError::Bound(why) => write!(f, "bad Redis bridge bound: {why}"),
            BridgeError::Spawn(e) => write!(f, "cannot start the Redis bridge: {e}"),
        }
    }
}

impl std::error::Error for BridgeError {}

/// The loops' side of the bridge: hand a publish over, report rooms.
#[derive(Debug)]
pub(crate) struct Bridge {
    outbox: Sender<Outgoing>,
    /// This process's random id, on everything it publishes.
    origin: u64,
    /// The admin API's control channel (`channel::admin`).
    admin_channel: Arc<str>,
    directory: Arc<Directory>,
    /// A live hand-off's cut through Redis's order of messages.
    cut: Arc<Cut>,
    stats: Arc<BridgeStats>,
    /// The channel prefix, to size a publish as Redis will.
    prefix: Arc<str>,
    /// [`BridgeConfig::max_queue_bytes`].
    max_queue_bytes: u64,
    /// [`BridgeConfig::max_room_name`].
    max_room_name: usize,
}

impl Outbox for Bridge {
    /// Hands a local publish to the publisher thread; never blocks. A
    /// publish Redis must not carry (a bad room name, too large for a
    /// subscriber's output buffer) or that does not fit the queue is
    /// dropped and counted: local members have it all the same.
    fn publish(&self, room: &Arc<str>, frame: &Arc<Publication>) {
        let payload = frame.payload().len();
        if room.is_empty() || room.len() > self.max_room_name {
            self.stats.dropped_bad_room.fetch_add(1, Ordering::Relaxed);
            return;
        }
        if wire_len(&self.prefix, room, payload) as u64 > self.stats.max_publish_bytes() {
            self.stats.dropped_too_large.fetch_add(1, Ordering::Relaxed);
            return;
        }
        let cost = queued_cost(room, payload);
        if !self.stats.reserve(cost, self.max_queue_bytes) {
            self.stats.dropped_queue_full.fetch_add(1, Ordering::Relaxed);
            return;
        }
        match self.outbox.try_send(Outgoing { room: room.clone(), frame: frame.clone(), cost, raw: false }) {
            Ok(()) => {}
            Err(TrySendError::Full(_)) => {
                self.stats.release(cost);
                self.stats.dropped_queue_full.fetch_add(1, Ordering::Relaxed);
            }
            Err(TrySendError::Disconnected(_)) => {
                self.stats.release(cost);
                self.stats.dropped_redis_down.fetch_add(1, Ordering::Relaxed);
            }
        }
    }

    fn kick(&self, kick: &Kick) -> bool {
        self.queue_kick(kick)
    }
}

impl Bridge {
    /// Queues an admin kick on the control channel, in this process's
    /// envelope (its own subscriber skips it: the loops here had it);
    /// never blocks. Dropped and counted like a publish when the queue is
    /// full or Redis is gone.
    fn queue_kick(&self, kick: &Kick) -> bool {
        let Ok(order) = kick.encode() else { return false };
        let mut body = Vec::new();
        envelope::encode(&mut body, self.origin, opcode::BINARY, &order);
        let cost = queued_cost(&self.admin_channel, body.len());
        if !self.stats.reserve(cost, self.max_queue_bytes) {
            self.stats.dropped_queue_full.fetch_add(1, Ordering::Relaxed);
            return false;
        }
        let frame = Publication::new(opcode::BINARY, &body);
        match self.outbox.try_send(Outgoing { room: self.admin_channel.clone(), frame, cost, raw: true }) {
            Ok(()) => true,
            Err(e) => {
                self.stats.release(cost);
                let counter = match e {
                    TrySendError::Full(_) => &self.stats.dropped_queue_full,
                    TrySendError::Disconnected(_) => &self.stats.dropped_redis_down,
                };
                counter.fetch_add(1, Ordering::Relaxed);
                false
            }
        }
    }
}

/// Bytes a publish of `payload` bytes to `room` takes in a subscriber's
/// output buffer in Redis.
fn wire_len(prefix: &str, room: &str, payload: usize) -> usize {
    envelope::HEADER_LEN + payload + prefix.len() + channel::encoded_len(room) + WIRE_OVERHEAD
}

impl Bridge {
    /// The rooms with members in this process.
    pub(crate) fn directory(&self) -> &Arc<Directory> {
        &self.directory
    }

    /// The bridge's counters.
    pub(crate) fn stats(&self) -> &Arc<BridgeStats> {
        &self.stats
    }

    /// Where a live hand-off cuts the stream of other hosts' publishes.
    pub(crate) fn cut(&self) -> &Arc<Cut> {
        &self.cut
    }
}

/// What [`Bridge::new`] leaves for [`Bridge::spawn`]: the threads' ends.
pub(crate) struct Pending {
    cfg: BridgeConfig,
    client: redis::Client,
    inbox: Receiver<Outgoing>,
    directory: Arc<Directory>,
    stats: Arc<BridgeStats>,
    cut: Arc<Cut>,
    origin: u64,
}

impl Bridge {
    /// The loops' handle and what the threads will need, before the hub
    /// exists (the hub carries the handle; the threads carry the hub).
    pub(crate) fn new(cfg: BridgeConfig) -> Result<(Bridge, Pending), BridgeError> {
        cfg.check()?;
        let client = cfg.client()?;
        let (outbox, inbox) = crossbeam_channel::bounded(QUEUE_LEN);
        let directory = Arc::new(Directory::default());
        let stats = Arc::new(BridgeStats::new(cfg.max_publish_bytes as u64));
        let cut = Arc::new(Cut::new(outbox.clone(), &cfg.prefix, stats.clone()));
        let origin = worker::origin_id();
        let bridge = Bridge {
            outbox,
            origin,
            admin_channel: channel::admin(&cfg.prefix).into(),
            directory: directory.clone(),
            cut: cut.clone(),
            stats: stats.clone(),
            prefix: cfg.prefix.as_str().into(),
            max_queue_bytes: cfg.max_queue_bytes as u64,
            max_room_name: cfg.max_room_name,
        };
        Ok((bridge, Pending { cfg, client, inbox, directory, stats, cut, origin }))
    }

    /// Starts the publisher and subscriber threads.
    pub(crate) fn spawn(pending: Pending, hub: Arc<Hub>) -> Result<Running, BridgeError> {
        let stop = Arc::new(AtomicBool::new(false));
        let origin = pending.origin;
        let prefix: Arc<str> = pending.cfg.prefix.as_str().into();
        // The address only: the URL may carry a password.
        let at = pending.client.get_connection_info().addr().to_string();
        log::info!(
            "redis bridge: {at} (channels {prefix}<room>, origin {origin:016x}; queue up to {} bytes, \
             publishes up to {} bytes)",
            pending.cfg.max_queue_bytes,
            pending.cfg.max_publish_bytes
        );
        let link = worker::Link {
            client: pending.client,
            losses: Arc::new(AtomicU64::new(0)),
            stats: pending.stats,
            origin,
            prefix,
            max_publish_bytes: pending.cfg.max_publish_bytes as u64,
            stop: stop.clone(),
        };
        let publisher = worker::Publisher { link: link.clone(), inbox: pending.inbox };
        let admin = channel::admin(&link.prefix);
        let subscriber = worker::Subscriber { link, hub, directory: pending.directory, cut: pending.cut, admin };
        let spawn = |name: &str| std::thread::Builder::new().name(name.into());
        let threads = vec![
            spawn("wsloop-redis-pub").spawn(move || publisher.run()).map_err(BridgeError::Spawn)?,
            spawn("wsloop-redis-sub").spawn(move || subscriber.run()).map_err(BridgeError::Spawn)?,
        ];
        Ok(Running { stop, threads })
    }
}

/// The bridge's running threads.
pub(crate) struct Running {
    stop: Arc<AtomicBool>,
    threads: Vec<JoinHandle<()>>,
}

impl Running {
    /// Stops both threads and waits for them (within their poll interval).
    pub(crate) fn stop(self) {
        self.stop.store(true, Ordering::Relaxed);
        for t in self.threads {
            let _ = t.join();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ws::frame::opcode;

    fn binary(len: usize) -> Arc<Publication> {
        Publication::new(opcode::BINARY, &vec![0; len])
    }

    #[test]
    fn rooms_join_refuses_and_publishes_too_large_for_redis_never_queue() {
        let mut cfg = BridgeConfig::new("redis://127.0.0.1:1").unwrap();
        cfg.max_room_name = 8;
        cfg.max_publish_bytes = 1000;
        let (bridge, pending) = Bridge::new(cfg).unwrap();
        for room in ["", "123456789"] {
            bridge.publish(&Arc::from(room), &binary(2));
        }
        assert_eq!(bridge.stats.dropped_bad_room.load(Ordering::Relaxed), 2);
        // Exactly the bound on the wire goes, a byte more does not; a room
        // written longer in its channel (':' takes 3 bytes) counts so.
        let fits = 1000 - wire_len(DEFAULT_PREFIX, "a:b", 0);
        bridge.publish(&Arc::from("a:b"), &binary(fits));
        bridge.publish(&Arc::from("a:b"), &binary(fits + 1));
        bridge.publish(&Arc::from("a_b"), &binary(fits + 1));
        assert_eq!(bridge.stats.dropped_too_large.load(Ordering::Relaxed), 1);
        // Redis said its limit is smaller: the loops refuse by that one.
        bridge.stats.set_max_publish_bytes(100);
        bridge.publish(&Arc::from("a_b"), &binary(100));
        assert_eq!(bridge.stats.dropped_too_large.load(Ordering::Relaxed), 2);

        let queued: Vec<(String, usize)> =
            pending.inbox.try_iter().map(|o| (o.room.to_string(), o.frame.payload().len())).collect();
        assert_eq!(queued, [("a:b".to_string(), fits), ("a_b".to_string(), fits + 1)]);
        let held = queued_cost("a:b", fits) + queued_cost("a_b", fits + 1);
        assert_eq!(bridge.stats.queued_bytes(), held, "refusals hold no bytes");
    }

    #[test]
    fn bad_configurations_are_refused_without_showing_the_password() {
        let e = BridgeConfig::new("http://:hunter2@redis:6379").unwrap_err().to_string();
        assert!(e.contains("redis://") && e.contains("redis:6379") && !e.contains("hunter2"), "{e}");
        let e = BridgeConfig::new("redis://:hunter2@redis:notaport").unwrap_err().to_string();
        assert!(e.starts_with("bad Redis URL") && !e.contains("hunter2"), "{e}");
        let mut cfg = BridgeConfig::new("redis://:hunter2@redis:6379").unwrap();
        assert!(!format!("{cfg:?}").contains("hunter2"), "{cfg:?}");
        cfg.prefix = "wsloop:room".into();
        assert!(cfg.check().unwrap_err().to_string().contains("must end with ':'"));
        cfg.prefix = DEFAULT_PREFIX.into();
        cfg.max_queue_bytes = 0;
        assert!(matches!(cfg.check(), Err(BridgeError::Bound(_))));
        cfg.max_queue_bytes = 1;
        cfg.max_publish_bytes = 0;
        assert!(matches!(Bridge::new(cfg), Err(BridgeError::Bound(_))));
    }

    /// A bridge on a Redis nobody runs, with `max_queue_bytes`, and the
    /// publisher's side of it.
    fn bridge(max_queue_bytes: usize) -> (Bridge, Receiver<Outgoing>, worker::Link) {
        let mut cfg = BridgeConfig::new("redis://127.0.0.1:1").unwrap();
        cfg.max_queue_bytes = max_queue_bytes;
        let (bridge, pending) = Bridge::new(cfg).unwrap();
        let link = worker::Link {
            client: pending.client,
            losses: Arc::new(AtomicU64::new(0)),
            stats: pending.stats,
            origin: 1,
            prefix: pending.cfg.prefix.as_str().into(),
            max_publish_bytes: pending.cfg.max_publish_bytes as u64,
            stop: Arc::new(AtomicBool::new(false)),
        };
        (bridge, pending.inbox, link)
    }

    #[test]
    fn the_queue_is_bounded_in_bytes_and_the_publisher_gives_them_back() {
        let cost = queued_cost("r", 1000);
        let (bridge, inbox, link) = bridge(4 * cost as usize);
        let (room, frame): (Arc<str>, _) = ("r".into(), Publication::new(opcode::BINARY, &[7; 1000]));
        for _ in 0..10 {
            bridge.publish(&room, &frame);
        }
        let stats = &link.stats;
        assert_eq!(inbox.len(), 4, "as many as the bytes allow");
        assert_eq!(stats.queued_bytes(), 4 * cost);
        assert_eq!(stats.dropped_queue_full.load(Ordering::Relaxed), 6);

        // The publisher takes them (Redis away: counted lost); the bytes
        // stay held while the batch is on its way, and come back after.
        let (mut upstream, mut batch) = (worker::Upstream::new(&link), worker::Batch::new());
        batch.fill(inbox.recv().unwrap(), &inbox);
        assert!(inbox.is_empty(), "one batch takes all four");
        assert_eq!(stats.queued_bytes(), 4 * cost, "held until the batch is done");
        upstream.publish(&mut batch);
        assert_eq!(stats.queued_bytes(), 0);
        assert_eq!(stats.dropped_redis_down.load(Ordering::Relaxed), 4);
        bridge.publish(&room, &frame);
        assert_eq!((inbox.len(), stats.queued_bytes()), (1, cost), "room again once given back");
    }

    #[test]
    fn the_default_bound_holds_300_publishes_of_2_mib_to_64_mib() {
        let (bridge, inbox, link) = bridge(DEFAULT_MAX_QUEUE_BYTES);
        let room: Arc<str> = "lobby".into();
        for i in 0..300u32 {
            // A frame of its own each time, as from 300 client messages.
            bridge.publish(&room, &Publication::new(opcode::BINARY, &vec![i as u8; 2 << 20]));
        }
        let queued: Vec<Outgoing> = inbox.try_iter().collect();
        let bound = DEFAULT_MAX_QUEUE_BYTES as u64;
        let fit = bound / queued_cost("lobby", 2 << 20);
        assert_eq!(queued.len() as u64, fit, "as many as 64 MiB holds, their overhead counted");
        let held = link.stats.queued_bytes();
        assert_eq!(held, queued.iter().map(|o| o.cost).sum::<u64>());
        assert!(held <= bound && held >= queued.len() as u64 * (2 << 20), "{held}");
        assert_eq!(link.stats.dropped_queue_full.load(Ordering::Relaxed), 300 - fit);
    }
}
