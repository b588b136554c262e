//! The bridge's two threads: the publisher (queue -> pipelined `PUBLISH`)
//! and the subscriber (`SUBSCRIBE`d channels -> the loops), each with its
//! own connection and its own reconnect-with-backoff.

use std::collections::HashSet;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, RecvTimeoutError};

use super::channel;
use super::envelope::{self, Envelope};
use super::outgoing::Outgoing;
use super::stats::BridgeStats;
use crate::server::pubsub::directory::Directory;
use crate::server::pubsub::hub::Hub;
use crate::server::pubsub::orders::Kick;
use crate::server::pubsub::publication::Publication;

/// Publishes sent in one pipeline at most.
const MAX_BATCH: usize = 1024;
/// Payload bytes one pipeline takes at most (past the first publish): the
/// pipeline is a copy, so large messages must not pile up in it.
const MAX_BATCH_BYTES: usize = 1 << 20;
/// How long connecting, or a reply, may take before Redis counts as down.
const REDIS_TIMEOUT: Duration = Duration::from_secs(2);
/// How long the subscriber waits for a message before it looks for new or
/// gone rooms: the most a join waits for its `SUBSCRIBE`.
const SUBSCRIBER_POLL: Duration = Duration::from_millis(5);
/// How often an idle subscriber pings Redis, to find a silent peer.
const KEEPALIVE: Duration = Duration::from_secs(2);
/// How often the publisher looks at the stop flag while idle.
const PUBLISHER_POLL: Duration = Duration::from_millis(100);

/// A random id for this process, so it knows its own publishes.
pub fn origin_id() -> u64 {
    let mut id = [0u8; 8];
    // SAFETY: getrandom writes at most 8 bytes into a live 8-byte array.
    let n = unsafe { libc::getrandom(id.as_mut_ptr().cast(), id.len(), 0) };
    if n == 8 {
        u64::from_ne_bytes(id)
    } else {
        // No getrandom: the pid and the clock are unique enough per host.
        let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default();
        (u64::from(std::process::id()) << 32) ^ nanos.as_nanos() as u64
    }
}

/// Waits between failed connection attempts: 100 ms, doubling to 5 s.
struct Backoff {
    next: Duration,
    failures: u32,
}

impl Backoff {
    const FIRST: Duration = Duration::from_millis(100);
    const MAX: Duration = Duration::from_secs(5);

    fn new() -> Backoff {
        Backoff { next: Self::FIRST, failures: 0 }
    }

    /// How long to wait after one more failure.
    fn failed(&mut self) -> Duration {
        let wait = self.next;
        self.next = (self.next * 2).min(Self::MAX);
        self.failures += 1;
        wait
    }

    fn reset(&mut self) {
        self.next = Self::FIRST;
        self.failures = 0;
    }
}

/// Sleeps up to `wait`, waking early when `stop` is set. False if stopped.
fn pause(wait: Duration, stop: &AtomicBool) -> bool {
    let until = Instant::now() + wait;
    while !stop.load(Ordering::Relaxed) {
        let left = until.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return true;
        }
        std::thread::sleep(left.min(PUBLISHER_POLL));
    }
    false
}

fn connect(client: &redis::Client) -> redis::RedisResult<redis::Connection> {
    let con = client.get_connection_with_timeout(REDIS_TIMEOUT)?;
    con.set_write_timeout(Some(REDIS_TIMEOUT))?;
    con.set_read_timeout(Some(REDIS_TIMEOUT))?;
    Ok(con)
}

/// What both threads share: how to reach Redis, how to name channels and
/// tag publishes, the counters, and the stop flag.
#[derive(Clone)]
pub(super) struct Link {
    pub client: redis::Client,
    /// Connections the subscriber has lost: when it moves, Redis went away
    /// (a restart kills both connections), so the publisher's connection is
    /// dead too, though nothing has told it yet. Reconnecting then, rather
    /// than at the next failed publish, loses no publish to a dead socket.
    pub losses: Arc<AtomicU64>,
    pub stats: Arc<BridgeStats>,
    pub origin: u64,
    pub prefix: Arc<str>,
    /// The configured largest publish; Redis's own limit may lower the one
    /// in effect (`BridgeStats::max_publish_bytes`) at each connect.
    pub max_publish_bytes: u64,
    pub stop: Arc<AtomicBool>,
}

impl Link {
    /// Writes `room`'s channel name into `out` (cleared first).
    fn channel_into(&self, out: &mut String, room: &str) {
        channel::write(out, &self.prefix, room);
    }

    fn stopped(&self) -> bool {
        self.stop.load(Ordering::Relaxed)
    }
}

/// The publisher thread's state.
pub(super) struct Publisher {
    pub link: Link,
    pub inbox: Receiver<Outgoing>,
}

impl Publisher {
    pub fn run(self) {
        let mut upstream = Upstream::new(&self.link);
        let mut batch = Batch::new();
        while !self.link.stopped() {
            upstream.drop_if_lost();
            upstream.connect_when_due();
            let first = match self.inbox.recv_timeout(upstream.wait()) {
                Ok(first) => first,
                Err(RecvTimeoutError::Timeout) => {
                    upstream.keep_alive();
                    continue;
                }
                Err(RecvTimeoutError::Disconnected) => return,
            };
            batch.fill(first, &self.inbox);
            upstream.publish(&mut batch);
        }
    }
}

/// The publisher's connection to Redis and its upkeep: reconnecting with
/// backoff, pinging while idle, dropping it when the subscriber saw Redis go.
pub(super) struct Upstream<'l> {
    /// Where Redis is, the counters, the subscriber's losses.
    link: &'l Link,
    /// The connection, while there is one.
    con: Option<redis::Connection>,
    /// The wait between failed attempts.
    backoff: Backoff,
    /// When the next connection attempt is due.
    retry_at: Instant,
    /// When the connection last carried a command.
    used: Instant,
    /// The subscriber's losses this publisher has acted on.
    losses_seen: u64,
}

impl<'l> Upstream<'l> {
    /// No connection yet, the first attempt due now.
    pub(super) fn new(link: &'l Link) -> Self {
        let retry_at = Instant::now();
        let used = Instant::now();
        let losses_seen = link.losses.load(Ordering::Acquire);
        Upstream { link, con: None, backoff: Backoff::new(), retry_at, used, losses_seen }
    }

    /// Drops the connection when the subscriber has lost Redis since the
    /// last look (see [`Link::losses`]): it is dead too.
    fn drop_if_lost(&mut self) {
        let losses = self.link.losses.load(Ordering::Acquire);
        if losses != self.losses_seen {
            self.losses_seen = losses;
            if self.con.take().is_some() {
                self.link.stats.publisher_up.store(false, Ordering::Relaxed);
                // Not `lost()`: no `retry_at`, so it reconnects at once; the
                // failure is noted only so that the reconnect is counted.
                self.backoff.failed();
            }
        }
    }

    /// Connects when there is no connection and the backoff allows.
    fn connect_when_due(&mut self) {
        if self.con.is_some() || Instant::now() < self.retry_at {
            return;
        }
        match connect(&self.link.client).and_then(|mut c| self.adopt_output_limit(&mut c).map(|()| c)) {
            Ok(c) => {
                if self.backoff.failures > 0 {
                    log::info!("redis bridge: publisher connected again");
                    self.link.stats.reconnects.fetch_add(1, Ordering::Relaxed);
                }
                self.backoff.reset();
                self.link.stats.publisher_up.store(true, Ordering::Relaxed);
                self.con = Some(c);
            }
            Err(e) => {
                let wait = self.backoff.failed();
                if self.backoff.failures == 1 {
                    log::warn!("redis bridge: publisher cannot reach Redis ({e}); retrying");
                }
                self.retry_at = Instant::now() + wait;
            }
        }
    }

    /// Sets the largest publish in effect from what Redis says of its
    /// subscribers' output buffers (`CONFIG GET`): the configured bound,
    /// or half of Redis's hard pubsub limit if that is less. A refusal
    /// (CONFIG renamed away, an ACL without it) keeps the configured
    /// bound; only a failed connection is an error.
    fn adopt_output_limit(&self, con: &mut redis::Connection) -> redis::RedisResult<()> {
        let configured = self.link.max_publish_bytes;
        let reply = redis::cmd("CONFIG").arg("GET").arg("client-output-buffer-limit").query::<Vec<String>>(con);
        let limit = match reply {
            Ok(pairs) => match pairs.get(1).and_then(|v| pubsub_hard_limit(v)) {
                Some(hard) => safe_publish_bound(configured, hard),
                None => {
                    log::info!("redis bridge: no pubsub output-buffer limit in CONFIG GET's reply; publishes up to {configured} bytes");
                    configured
                }
            },
            Err(e) if e.is_io_error() || e.is_timeout() || e.is_connection_dropped() => return Err(e),
            Err(e) => {
                log::info!(
                    "redis bridge: cannot read Redis's output-buffer limit ({e}); publishes up to {configured} bytes"
                );
                configured
            }
        };
        if limit != self.link.stats.max_publish_bytes() {
            log::info!("redis bridge: publishes up to {limit} bytes (configured {configured})");
        }
        self.link.stats.set_max_publish_bytes(limit);
        Ok(())
    }

    /// How long to wait for a publish: a poll, or less when the next
    /// connection attempt is due sooner.
    fn wait(&self) -> Duration {
        if self.con.is_some() {
            PUBLISHER_POLL
        } else {
            self.retry_at.saturating_duration_since(Instant::now()).min(PUBLISHER_POLL)
        }
    }

    /// Pings a connection idle for [`KEEPALIVE`], so that metrics and
    /// /healthz show Redis gone before the next publish is lost to it.
    fn keep_alive(&mut self) {
        if let Some(c) = self.con.as_mut().filter(|_| self.used.elapsed() >= KEEPALIVE) {
            self.used = Instant::now();
            if let Err(e) = redis::cmd("PING").exec(c) {
                log::warn!("redis bridge: publisher lost Redis ({e})");
                self.lost();
            }
        }
    }

    /// Sends `batch` as one pipeline, emptying it; counts it published,
    /// or dropped when Redis is away or the pipeline fails.
    /// Either way the batch's bytes go back to the queue's bound.
    pub(super) fn publish(&mut self, batch: &mut Batch) {
        self.send(batch);
        self.link.stats.release(std::mem::take(&mut batch.cost));
    }

    fn send(&mut self, batch: &mut Batch) {
        let Some(c) = self.con.as_mut() else {
            // Redis is away: other hosts miss these; local members had them.
            self.link.stats.dropped_redis_down.fetch_add(batch.outgoing.len() as u64, Ordering::Relaxed);
            batch.outgoing.clear();
            return;
        };
        let sent = batch.pipeline(self.link);
        self.used = Instant::now();
        match batch.pipe.exec(c) {
            Ok(()) => {
                self.link.stats.published.fetch_add(sent, Ordering::Relaxed);
            }
            Err(e) => {
                log::warn!("redis bridge: publishing failed ({e}); {sent} publishes did not reach other hosts");
                self.link.stats.dropped_redis_down.fetch_add(sent, Ordering::Relaxed);
                self.lost();
            }
        }
    }

    /// The connection failed: drop it and wait the backoff before the next.
    fn lost(&mut self) {
        self.link.stats.publisher_up.store(false, Ordering::Relaxed);
        self.con = None;
        self.retry_at = Instant::now() + self.backoff.failed();
    }
}

/// Publishes taken off the queue to send together, and the buffers that
/// turn them into one pipeline, kept from batch to batch.
pub(super) struct Batch {
    /// The publishes, in queue order.
    outgoing: Vec<Outgoing>,
    /// The pipeline they are sent in.
    pipe: redis::Pipeline,
    /// The channel name being written.
    channel: String,
    /// The envelope being written.
    body: Vec<u8>,
    /// The queue bytes the batch holds (its publishes' costs).
    cost: u64,
}

impl Batch {
    /// Empty, with room for [`MAX_BATCH`] publishes.
    pub(super) fn new() -> Self {
        Batch {
            outgoing: Vec::with_capacity(MAX_BATCH),
            pipe: redis::pipe(),
            channel: String::new(),
            body: Vec::new(),
            cost: 0,
        }
    }

    /// Starts the batch with `first` and adds what the queue holds now, up
    /// to [`MAX_BATCH`] publishes or [`MAX_BATCH_BYTES`] of payload.
    pub(super) fn fill(&mut self, first: Outgoing, inbox: &Receiver<Outgoing>) {
        let mut bytes = first.frame.payload().len();
        self.cost += first.cost;
        self.outgoing.push(first);
        while self.outgoing.len() < MAX_BATCH && bytes < MAX_BATCH_BYTES {
            match inbox.try_recv() {
                Ok(next) => {
                    bytes += next.frame.payload().len();
                    self.cost += next.cost;
                    self.outgoing.push(next);
                }
                Err(_) => break,
            }
        }
    }

    /// Moves the batch into the pipeline as `PUBLISH` commands, each in
    /// `link`'s envelope on its room's channel; how many.
    fn pipeline(&mut self, link: &Link) -> u64 {
        self.pipe.clear();
        for out in self.outgoing.drain(..) {
            self.body.clear();
            if out.raw {
                self.channel.clear();
                self.channel.push_str(&out.room);
                self.body.extend_from_slice(out.frame.payload());
            } else {
                link.channel_into(&mut self.channel, &out.room);
                envelope::encode(&mut self.body, link.origin, out.frame.op(), out.frame.payload());
            }
            self.pipe.cmd("PUBLISH").arg(self.channel.as_str()).arg(self.body.as_slice()).ignore();
        }
        self.pipe.cmd_iter().count() as u64
    }
}

/// The subscriber thread's state.
pub(super) struct Subscriber {
    pub link: Link,
    pub hub: Arc<Hub>,
    pub directory: Arc<Directory>,
    /// A live hand-off's marker, and what the new side holds back.
    pub cut: Arc<super::cut::Cut>,
    /// The admin API's control channel (`channel::admin`), always subscribed.
    pub admin: String,
}

impl Subscriber {
    pub fn run(self) {
        let mut backoff = Backoff::new();
        while !self.link.stopped() {
            let result = connect(&self.link.client).and_then(|mut con| {
                if backoff.failures > 0 {
                    log::info!("redis bridge: subscriber connected again; subscribing to every room with members");
                    self.link.stats.reconnects.fetch_add(1, Ordering::Relaxed);
                }
                backoff.reset();
                self.session(&mut con)
            });
            self.link.stats.subscriber_up.store(false, Ordering::Relaxed);
            self.link.stats.subscriptions.store(0, Ordering::Relaxed);
            match result {
                Ok(()) => return, // stopped
                Err(e) => {
                    self.link.losses.fetch_add(1, Ordering::Release);
                    let wait = backoff.failed();
                    if backoff.failures == 1 {
                        log::warn!("redis bridge: subscriber lost Redis ({e}); rooms are local until it is back");
                    }
                    if !pause(wait, &self.link.stop) {
                        return;
                    }
                }
            }
        }
    }

    /// One connection's life: keep the subscriptions equal to the
    /// directory's rooms and pass every message on. Returns `Ok` when
    /// stopped, the error when the connection fails.
    fn session(&self, con: &mut redis::Connection) -> redis::RedisResult<()> {
        let mut pubsub = con.as_pubsub();
        let mut subscribed: HashSet<Arc<str>> = HashSet::new();
        let mut seen = None;
        let mut marker = MarkerSub::default();
        self.cut.set_marker_subscribed(false);
        pubsub.subscribe(&self.admin)?;
        let mut pinged = Instant::now();
        while !self.link.stopped() {
            marker.follow(&self.cut, &mut pubsub)?;
            let generation = self.directory.generation();
            if seen != Some(generation) {
                let (generation, rooms) = self.directory.snapshot();
                // Replies may take longer than a poll; a cut-off reply would
                // leave the client out of step with Redis.
                pubsub.set_read_timeout(Some(REDIS_TIMEOUT))?;
                let join: Vec<String> = rooms.difference(&subscribed).map(|r| self.channel(r)).collect();
                let leave: Vec<String> = subscribed.difference(&rooms).map(|r| self.channel(r)).collect();
                if !join.is_empty() {
                    pubsub.subscribe(join)?;
                }
                if !leave.is_empty() {
                    pubsub.unsubscribe(leave)?;
                }
                subscribed = rooms;
                seen = Some(generation);
                self.cut.set_applied(generation);
                self.link.stats.subscriptions.store(subscribed.len() as u64, Ordering::Relaxed);
                self.link.stats.subscriber_up.store(true, Ordering::Relaxed);
                pubsub.set_read_timeout(Some(SUBSCRIBER_POLL))?;
            }
            if pinged.elapsed() >= KEEPALIVE {
                pubsub.set_read_timeout(Some(REDIS_TIMEOUT))?;
                pubsub.ping::<redis::Value>()?;
                pubsub.set_read_timeout(Some(SUBSCRIBER_POLL))?;
                pinged = Instant::now();
            }
            match pubsub.get_message() {
                Ok(msg) => self.deliver(msg.get_channel_name(), msg.get_payload_bytes()),
                Err(e) if e.is_timeout() => {}
                Err(e) => return Err(e),
            }
        }
        Ok(())
    }

    fn channel(&self, room: &str) -> String {
        let mut name = String::new();
        self.link.channel_into(&mut name, room);
        name
    }

    /// A channel message: to every loop, unless it is our own (or a live
    /// hand-off's marker, or held back by one: `cut.rs`).
    fn deliver(&self, name: &str, bytes: &[u8]) {
        if self.cut.take_marker(name, bytes) {
            return;
        }
        if name == self.admin {
            return self.take_kick(bytes);
        }
        let Some(room) = channel::room_of(&self.link.prefix, name) else {
            log::debug!("redis bridge: dropped a message on {name:?}: no room's channel");
            self.link.stats.dropped_malformed.fetch_add(1, Ordering::Relaxed);
            return;
        };
        let frame = match envelope::decode(bytes) {
            Ok(Envelope::Wsloop { origin, .. }) if origin == self.link.origin => return,
            Ok(Envelope::Wsloop { op, payload, .. } | Envelope::Foreign { op, payload }) => {
                Publication::new(op, payload)
            }
            Err(e) => {
                log::debug!("redis bridge: dropped a message on {name:?}: {e}");
                self.link.stats.dropped_malformed.fetch_add(1, Ordering::Relaxed);
                return;
            }
        };
        self.link.stats.received.fetch_add(1, Ordering::Relaxed);
        if let Some((room, frame)) = self.cut.pass(Arc::from(room), frame) {
            self.hub.publish_to_all(&room, &frame);
        }
    }
}

impl Subscriber {
    /// A message on the control channel: another host's admin kick, for
    /// every loop here (our own was carried out here already).
    fn take_kick(&self, bytes: &[u8]) {
        let order = match envelope::decode(bytes) {
            Ok(Envelope::Wsloop { origin, .. }) if origin == self.link.origin => return,
            Ok(Envelope::Wsloop { payload, .. }) => Kick::decode(payload).map_err(|e| e.to_string()),
            Ok(Envelope::Foreign { .. }) => Err("not in a wsloop envelope".to_string()),
            Err(e) => Err(e.to_string()),
        };
        match order {
            Ok(kick) => {
                self.link.stats.received.fetch_add(1, Ordering::Relaxed);
                self.hub.kick_here(&kick);
            }
            Err(e) => {
                // Anyone who may publish to Redis could write these: counted, not logged loud.
                log::debug!("redis bridge: dropped a message on the admin channel {:?}: {e}", self.admin);
                self.link.stats.dropped_malformed.fetch_add(1, Ordering::Relaxed);
            }
        }
    }
}

/// The marker channel a subscriber holds for a live hand-off.
#[derive(Default)]
struct MarkerSub {
    /// `Cut::version` last acted on.
    version: Option<u64>,
    /// The channel subscribed now.
    channel: Option<String>,
}

impl MarkerSub {
    /// Subscribes or leaves the marker channel when the cut's wish moved.
    fn follow(&mut self, cut: &super::cut::Cut, pubsub: &mut redis::PubSub<'_>) -> redis::RedisResult<()> {
        let version = cut.version();
        if self.version == Some(version) {
            return Ok(());
        }
        let wanted = cut.wanted();
        if wanted != self.channel {
            pubsub.set_read_timeout(Some(REDIS_TIMEOUT))?;
            if let Some(old) = self.channel.take() {
                pubsub.unsubscribe(old)?;
            }
            if let Some(new) = &wanted {
                pubsub.subscribe(new)?;
            }
            pubsub.set_read_timeout(Some(SUBSCRIBER_POLL))?;
            self.channel = wanted;
        }
        cut.set_marker_subscribed(self.channel.is_some());
        self.version = Some(version);
        Ok(())
    }
}

/// The hard limit, in bytes, of the `pubsub` class in the value of
/// Redis's `client-output-buffer-limit` (`normal 0 0 0 replica 268435456
/// 67108864 60 pubsub 33554432 8388608 60`); 0 is no limit. `None` when
/// the value has no readable pubsub class.
fn pubsub_hard_limit(value: &str) -> Option<u64> {
    let words: Vec<&str> = value.split_ascii_whitespace().collect();
    let at = words.chunks_exact(4).position(|class| class[0].eq_ignore_ascii_case("pubsub"))?;
    words[at * 4 + 1].parse().ok()
}

/// The largest publish for a Redis whose hard pubsub output-buffer limit
/// is `hard` (0: none): `configured`, or half of `hard` if less, so that a
/// subscriber with one publish unread still takes the next.
fn safe_publish_bound(configured: u64, hard: u64) -> u64 {
    if hard == 0 {
        configured
    } else {
        configured.min(hard / 2).max(1)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A queue holding `sizes` publishes (payloads of those sizes), in order.
    fn queue_of(sizes: &[usize]) -> (crossbeam_channel::Sender<Outgoing>, Receiver<Outgoing>) {
        let (tx, rx) = crossbeam_channel::unbounded();
        for (i, &size) in sizes.iter().enumerate() {
            let frame = Publication::new(crate::ws::frame::opcode::BINARY, &vec![i as u8; size]);
            tx.send(Outgoing { room: Arc::from(format!("r{i}")), frame, cost: size as u64, raw: false }).unwrap();
        }
        (tx, rx)
    }

    #[test]
    fn a_batch_stops_at_its_count_and_its_bytes_and_keeps_queue_order() {
        let mut batch = Batch::new();
        let (_tx, rx) = queue_of(&[10; MAX_BATCH + 1]);
        batch.fill(rx.recv().unwrap(), &rx);
        assert_eq!(batch.outgoing.len(), MAX_BATCH);
        let rooms: Vec<&str> = batch.outgoing.iter().take(3).map(|o| &*o.room).collect();
        assert_eq!(rooms, ["r0", "r1", "r2"]);
        assert_eq!(rx.len(), 1, "the rest waits for the next batch");

        // A first publish past the byte bound goes alone.
        let mut batch = Batch::new();
        let (_tx, rx) = queue_of(&[MAX_BATCH_BYTES + 1, 1]);
        batch.fill(rx.recv().unwrap(), &rx);
        assert_eq!(batch.outgoing.len(), 1);

        // Just under the bound, one more publish gets in, then it stops.
        let mut batch = Batch::new();
        let (_tx, rx) = queue_of(&[MAX_BATCH_BYTES - 1, 5, 5]);
        batch.fill(rx.recv().unwrap(), &rx);
        assert_eq!(batch.outgoing.len(), 2);
    }

    #[test]
    fn redis_output_limit_is_read_and_halved() {
        let default = "normal 0 0 0 slave 268435456 67108864 60 pubsub 33554432 8388608 60";
        assert_eq!(pubsub_hard_limit(default), Some(32 << 20));
        assert_eq!(pubsub_hard_limit("pubsub 0 0 0"), Some(0));
        assert_eq!(pubsub_hard_limit("normal 0 0 0"), None);
        assert_eq!(pubsub_hard_limit("pubsub lots 0 0"), None);
        assert_eq!(pubsub_hard_limit(""), None);
        assert_eq!(safe_publish_bound(16 << 20, 32 << 20), 16 << 20);
        assert_eq!(safe_publish_bound(16 << 20, 4 << 20), 2 << 20);
        assert_eq!(safe_publish_bound(16 << 20, 0), 16 << 20, "no limit in Redis: the configured bound");
        assert_eq!(safe_publish_bound(16 << 20, 1), 1);
    }

    #[test]
    fn backoff_doubles_to_a_ceiling_and_resets() {
        let mut b = Backoff::new();
        let waits: Vec<u128> = (0..8).map(|_| b.failed().as_millis()).collect();
        assert_eq!(waits, [100, 200, 400, 800, 1600, 3200, 5000, 5000]);
        b.reset();
        assert_eq!(b.failed(), Duration::from_millis(100));
    }

    #[test]
    fn origin_ids_differ() {
        assert_ne!(origin_id(), origin_id());
    }
}
