//! Rooms across processes and hosts, over Redis pub/sub.
//!
//! One bridge per process. The loops never wait on it: a publish is handed
//! over with a non-blocking `try_send` into a bounded queue (full: counted
//! as dropped), and a room's birth or death on a loop is one short lock in
//! the `Directory`. Two threads of the bridge's own talk to Redis:
//!
//! - the **publisher** drains the queue and sends what it found as one
//!   pipeline of `PUBLISH`es (one write, one read of the replies per batch);
//! - the **subscriber** keeps one connection `SUBSCRIBE`d to the channel of
//!   every room with members in the process, and posts what arrives to every
//!   loop through the `Hub`, encoded once into a shared `Publication`.
//!
//! A publish is tagged with the process's random origin id
//! (`envelope`); the subscriber drops its own, since local members had it
//! at once. Channels are `prefix + room`, subscribed with `SUBSCRIBE`, never
//! `PSUBSCRIBE`: a room called `a*` is just a name.
//!
//! Redis down: local delivery goes on, publishes meant for other hosts are
//! counted as dropped (`redis_down`), both threads reconnect with backoff
//! (100 ms doubling to 5 s), and the subscriber subscribes again to every
//! room that has members. Nothing is replayed: a publish made while Redis
//! was away is lost to other hosts, never delivered twice.
//!
//! The client is the `redis` crate (redis-rs), the most used and actively
//! kept Rust client, in its synchronous form without default features:
//! the bridge has threads of its own, so an async runtime would add a
//! scheduler for two sockets.

pub(crate) mod envelope;
mod stats;
mod worker;

use std::fmt;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;

use crossbeam_channel::{Receiver, Sender, TrySendError};

pub use stats::BridgeStats;
use worker::Outgoing;

use crate::server::pubsub::directory::Directory;
use crate::server::pubsub::hub::Hub;
use crate::server::pubsub::outbox::Outbox;
use crate::server::pubsub::publication::Publication;

/// The channel prefix unless configured: channels are `wsloop:room:<room>`.
pub const DEFAULT_PREFIX: &str = "wsloop:room:";
/// Publishes waiting for the publisher thread; past this they are dropped
/// (counted) rather than let memory grow while Redis is slow.
pub const QUEUE_LEN: usize = 64 * 1024;

/// Where the bridge connects and how it names channels.
#[derive(Debug, Clone)]
pub struct BridgeConfig {
    /// `redis://[user:password@]host:port[/db]`.
    pub url: String,
    /// Put before every room name to make its channel.
    pub prefix: String,
}

impl BridgeConfig {
    /// A configuration for `url` with the default prefix, checked.
    pub fn new(url: &str) -> Result<BridgeConfig, BridgeError> {
        let cfg = BridgeConfig { url: url.to_string(), prefix: DEFAULT_PREFIX.to_string() };
        cfg.client()?;
        Ok(cfg)
    }

    fn client(&self) -> Result<redis::Client, BridgeError> {
        if !self.url.starts_with("redis://") {
            return Err(BridgeError::Url(format!("{:?} does not start with redis://", self.url)));
        }
        redis::Client::open(self.url.as_str()).map_err(|e| BridgeError::Url(format!("{:?}: {e}", self.url)))
    }
}

/// Why the bridge could not start.
#[derive(Debug)]
pub enum BridgeError {
    /// The Redis URL is not one the client accepts.
    Url(String),
    /// A thread could not be started.
    Spawn(std::io::Error),
}

impl fmt::Display for BridgeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            BridgeError::Url(why) => write!(f, "bad Redis URL: {why}"),
            BridgeError::Spawn(e) => write!(f, "cannot start the Redis bridge: {e}"),
        }
    }
}

impl std::error::Error for BridgeError {}

/// The loops' side of the bridge: hand a publish over, report rooms.
#[derive(Debug)]
pub(crate) struct Bridge {
    outbox: Sender<Outgoing>,
    directory: Arc<Directory>,
    stats: Arc<BridgeStats>,
}

impl Outbox for Bridge {
    /// Hands a local publish to the publisher thread; never blocks.
    fn publish(&self, room: &Arc<str>, frame: &Arc<Publication>) {
        match self.outbox.try_send(Outgoing { room: room.clone(), frame: frame.clone() }) {
            Ok(()) => {}
            Err(TrySendError::Full(_)) => {
                self.stats.dropped_queue_full.fetch_add(1, Ordering::Relaxed);
            }
            Err(TrySendError::Disconnected(_)) => {
                self.stats.dropped_redis_down.fetch_add(1, Ordering::Relaxed);
            }
        }
    }
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
}

/// What [`Bridge::new`] leaves for [`Bridge::spawn`]: the threads' ends.
pub(crate) struct Pending {
    cfg: BridgeConfig,
    client: redis::Client,
    inbox: Receiver<Outgoing>,
    directory: Arc<Directory>,
    stats: Arc<BridgeStats>,
}

impl Bridge {
    /// The loops' handle and what the threads will need, before the hub
    /// exists (the hub carries the handle; the threads carry the hub).
    pub(crate) fn new(cfg: BridgeConfig) -> Result<(Bridge, Pending), BridgeError> {
        let client = cfg.client()?;
        let (outbox, inbox) = crossbeam_channel::bounded(QUEUE_LEN);
        let directory = Arc::new(Directory::default());
        let stats = Arc::new(BridgeStats::default());
        let bridge = Bridge { outbox, directory: directory.clone(), stats: stats.clone() };
        Ok((bridge, Pending { cfg, client, inbox, directory, stats }))
    }

    /// Starts the publisher and subscriber threads.
    pub(crate) fn spawn(pending: Pending, hub: Arc<Hub>) -> Result<Running, BridgeError> {
        let stop = Arc::new(AtomicBool::new(false));
        let origin = worker::origin_id();
        let prefix: Arc<str> = pending.cfg.prefix.as_str().into();
        // The address only: the URL may carry a password.
        let at = pending.client.get_connection_info().addr().to_string();
        log::info!("redis bridge: {at} (channels {prefix}<room>, origin {origin:016x})");
        let link = worker::Link {
            client: pending.client,
            losses: Arc::new(AtomicU64::new(0)),
            stats: pending.stats,
            origin,
            prefix,
            stop: stop.clone(),
        };
        let publisher = worker::Publisher { link: link.clone(), inbox: pending.inbox };
        let subscriber = worker::Subscriber { link, hub, directory: pending.directory };
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
