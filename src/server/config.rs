//! Everything the engine can be told, with the defaults a production host
//! wants. The CLI fills it from flags and environment variables; library
//! users build it directly.

use std::net::SocketAddr;
use std::time::Duration;

use crate::units::format_size;
use crate::ws;

/// The server's settings. `Default` gives the documented defaults.
#[derive(Debug, Clone)]
pub struct ServerConfig {
    /// Address to listen on (every loop binds it with SO_REUSEPORT).
    pub addr: SocketAddr,
    /// Event loop threads; 0 means one per core.
    pub workers: usize,
    /// Protocol settings: paths, origins, subprotocols, size limits.
    pub ws: ws::Config,
    /// Open connections allowed in this process; past it, new ones get 503.
    /// 0 means "the file limit minus a reserve" (decided at start).
    pub max_conns: usize,
    /// Unsent bytes past which a connection's reads pause (its own replies
    /// then wait for it to read) until half has drained. A room publish to
    /// a connection that is still over it after a write closes it as a slow
    /// consumer (1008). A connection's memory is bounded by this plus one
    /// message and one read turn.
    pub max_backlog: usize,
    /// The process's memory budget in bytes (see `server::budget`): past
    /// 3/4 of it new connections are refused and the largest input holders
    /// stop being read; past it, the largest holders are closed (1009 or
    /// 1013). `None`: half of the cgroup's or host's memory, decided (and
    /// logged) at start; `Some(0)`: no budget.
    pub memory_limit: Option<u64>,
    /// Time a connection over `max_backlog` may go without the peer taking
    /// a single byte before it is closed as a slow consumer (1008).
    pub send_timeout: Duration,
    /// Size of a pooled I/O buffer.
    pub buffer_size: usize,
    /// Spare pooled buffers each loop keeps at most.
    pub pool_max_idle: usize,
    /// Time allowed from accept to a complete upgrade request.
    pub handshake_timeout: Duration,
    /// Silence after which the server pings the peer.
    pub idle_timeout: Duration,
    /// Time a peer has to answer the idle ping (any frame counts).
    pub pong_timeout: Duration,
    /// Time the peer has to answer our close frame.
    pub close_timeout: Duration,
    /// Time graceful shutdown waits for connections to close.
    pub shutdown_timeout: Duration,
    /// Graceful shutdown closes connections at a steady pace over this
    /// period, in random order, with 1012 and a reconnect hint; zero: all
    /// at once with 1001. At most `shutdown_timeout` ([`ServerConfig::check`]).
    pub drain_period: Duration,
    /// Connections older than this (jittered) are asked to leave, 1012
    /// with a reconnect hint, at most `drain_rate` a second; zero: never.
    pub max_connection_age: Duration,
    /// Jitter of `max_connection_age`, in percent (each connection's age
    /// falls in `age * (1 +- jitter)`); at most 100.
    pub connection_age_jitter: u8,
    /// Aged connections closed per second in the process at most, split
    /// over the loops (at least one each); at least 1.
    pub drain_rate: u32,
    /// The listen(2) backlog.
    pub listen_backlog: u32,
    /// Room name length and rooms-per-connection limits.
    pub rooms: super::pubsub::RoomLimits,
    /// permessage-deflate: off, shared or dedicated, and when to compress.
    /// `ws.handshake.deflate` must agree (see [`ServerConfig::set_compression`]).
    pub compression: crate::ws::compression::CompressionConfig,
    /// The I/O driver: io_uring where the kernel runs it, or epoll.
    pub io: super::driver::IoChoice,
    /// io_uring: receive buffers (of `buffer_size`) each loop's ring starts
    /// with, and grows by after a pass in which it ran dry.
    pub uring_buffers: usize,
    /// Per-source-address limits (connections held, handshake rate); off
    /// by default.
    pub address_limits: super::address_limits::AddressLimitConfig,
    /// TLS (`wss://`): the certificate and key to serve, reloadable; `None`
    /// serves plain `ws://`.
    pub tls: Option<std::sync::Arc<super::tls::TlsCerts>>,
    /// TLS handshake turns one loop pass takes at most (0: no limit); the
    /// others wait for the next pass.
    pub tls_handshakes_per_pass: u32,
    /// Rooms across processes and hosts over Redis pub/sub; `None` keeps
    /// rooms inside the process.
    pub bridge: Option<super::bridge::BridgeConfig>,
    /// How long a loop must stay mostly empty (its slab at most 1/8 full)
    /// before it gives its peak's memory back; zero: never.
    pub release_memory_after: Duration,
    /// JWT identities (`--jwt-key`): every upgrade must present a valid
    /// token, and its claims bound what the connection may do with rooms;
    /// `None`: anyone may connect and do anything.
    pub jwt: Option<std::sync::Arc<super::identity::Verifier>>,
    /// Connections one user id may hold open in this process; 0: no cap.
    /// Needs `jwt`.
    pub max_conns_per_user: u32,
    /// The message rate each connection may send at (off by default).
    pub rate_limit: RateLimitConfig,
}

/// How fast one connection may send: messages and payload bytes a second,
/// each a token bucket holding `burst` of its rate (both buckets start
/// full). A message is handed to the handler only if both can pay for it;
/// one that cannot is dropped and still paid for, as debt. The first drop
/// of an episode answers `{"type":"error","error":"rate_limited",...}`; a
/// connection whose debt reaches a second burst is closed 1008 "rate
/// limit"; once the debt is paid, the next drop warns again. Pings and
/// pongs count as messages (a ping over the rate gets no pong); a
/// message's bytes are its payload as the handler would see it (inflated).
/// A live hand-off does not carry the buckets: they start full again.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RateLimitConfig {
    /// Messages a second (0: no message limit).
    pub messages: u32,
    /// Payload bytes a second (0: no byte limit).
    pub bytes: u64,
    /// How much of each rate may be spent at once: a bucket holds this
    /// long's worth. At least one message, and at least the largest
    /// message (`ws.limits.max_message`) when bytes are limited.
    pub burst: Duration,
}

impl Default for RateLimitConfig {
    fn default() -> Self {
        RateLimitConfig { messages: 0, bytes: 0, burst: Duration::from_secs(1) }
    }
}

impl RateLimitConfig {
    /// The most a bucket may hold, so that twice it (a burst of debt on
    /// top) still fits the bucket's 32 bits: in messages, and in bytes.
    pub const MAX_BURST: (u64, u64) = (u32::MAX as u64 / 2000, u32::MAX as u64 / 2);

    /// The messages bucket's size, in thousandths of a message.
    pub(crate) fn message_burst_milli(&self) -> u64 {
        u64::from(self.messages) * self.burst.as_millis() as u64
    }

    /// The bytes bucket's size, in bytes.
    pub(crate) fn byte_burst(&self) -> u64 {
        (u128::from(self.bytes) * self.burst.as_millis() / 1000).min(u64::MAX as u128) as u64
    }

    /// Refuses a burst that could never pass a message, or that overflows.
    fn check(&self, max_message: u64) -> Result<(), ConfigError> {
        let too_large = ConfigError::RateBurstTooLarge { burst: self.burst };
        if self.messages > 0 {
            let milli = self.message_burst_milli();
            if milli < 1000 {
                return Err(ConfigError::RateBurstUnderOneMessage { messages: self.messages, burst: self.burst });
            }
            if milli > Self::MAX_BURST.0 * 1000 {
                return Err(too_large);
            }
        }
        if self.bytes > 0 {
            let bytes = self.byte_burst();
            if bytes < max_message {
                return Err(ConfigError::RateBurstUnderMaxMessage { burst: self.burst, bytes, max_message });
            }
            if bytes > Self::MAX_BURST.1 {
                return Err(too_large);
            }
        }
        Ok(())
    }
}

impl Default for ServerConfig {
    fn default() -> Self {
        ServerConfig {
            addr: SocketAddr::from(([0, 0, 0, 0], 8080)),
            workers: 0,
            ws: ws::Config::default(),
            max_conns: 0,
            max_backlog: 1 << 20,
            memory_limit: None,
            send_timeout: Duration::from_secs(30),
            buffer_size: 16 * 1024,
            pool_max_idle: 256,
            handshake_timeout: Duration::from_secs(10),
            idle_timeout: Duration::from_secs(60),
            pong_timeout: Duration::from_secs(20),
            close_timeout: Duration::from_secs(5),
            shutdown_timeout: Duration::from_secs(10),
            drain_period: Duration::ZERO,
            max_connection_age: Duration::ZERO,
            connection_age_jitter: 10,
            drain_rate: 1000,
            listen_backlog: 4096,
            rooms: super::pubsub::RoomLimits::default(),
            compression: crate::ws::compression::CompressionConfig::default(),
            io: super::driver::IoChoice::default(),
            uring_buffers: super::driver::FIRST_BUFFERS,
            address_limits: Default::default(),
            tls: None,
            tls_handshakes_per_pass: 4,
            bridge: None,
            release_memory_after: Duration::from_secs(10),
            jwt: None,
            max_conns_per_user: 0,
            rate_limit: RateLimitConfig::default(),
        }
    }
}

/// A setting the server refuses to start with.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ConfigError {
    /// A paced drain that the shutdown deadline would cut short.
    DrainLongerThanShutdown {
        /// `drain_period`.
        drain: Duration,
        /// `shutdown_timeout`.
        shutdown: Duration,
    },
    /// `drain_rate` of 0: aged connections would never be closed.
    ZeroDrainRate,
    /// `connection_age_jitter` over 100 %.
    JitterOver100(u8),
    /// `max_conns_per_user` without `jwt`: there are no users to count.
    UserCapWithoutJwt,
    /// A message rate whose burst holds less than one message.
    RateBurstUnderOneMessage {
        /// `rate_limit.messages`.
        messages: u32,
        /// `rate_limit.burst`.
        burst: Duration,
    },
    /// A byte rate whose burst is smaller than the largest message, which
    /// could then never pass.
    RateBurstUnderMaxMessage {
        /// `rate_limit.burst`.
        burst: Duration,
        /// The bytes that burst holds.
        bytes: u64,
        /// `ws.limits.max_message`.
        max_message: u64,
    },
    /// A burst past [`RateLimitConfig::MAX_BURST`].
    RateBurstTooLarge {
        /// `rate_limit.burst`.
        burst: Duration,
    },
}

impl std::fmt::Display for ConfigError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ConfigError::DrainLongerThanShutdown { drain, shutdown } => write!(
                f,
                "--drain-period {drain:?} is longer than --shutdown-timeout {shutdown:?}, which would drop the \
                 connections left at its deadline: shorten the drain or lengthen the timeout"
            ),
            ConfigError::ZeroDrainRate => write!(f, "--drain-rate must be at least 1 (closes a second)"),
            ConfigError::JitterOver100(p) => write!(f, "--connection-age-jitter {p} is over 100 (percent)"),
            ConfigError::UserCapWithoutJwt => {
                write!(f, "--max-conns-per-user needs --jwt-key: without tokens there are no user ids to count")
            }
            ConfigError::RateBurstUnderOneMessage { messages, burst } => write!(
                f,
                "--rate-burst {burst:?} at --rate-messages {messages} holds less than one message: raise --rate-burst"
            ),
            ConfigError::RateBurstUnderMaxMessage { burst, bytes, max_message } => write!(
                f,
                "--rate-bytes with --rate-burst {burst:?} lets a connection send {} at once, less than \
                 --max-message-size ({}), so a larger message could never pass: raise --rate-burst or --rate-bytes, \
                 or lower --max-message-size",
                format_size(*bytes),
                format_size(*max_message)
            ),
            ConfigError::RateBurstTooLarge { burst } => {
                let (messages, bytes) = RateLimitConfig::MAX_BURST;
                write!(
                    f,
                    "--rate-burst {burst:?} holds more than {messages} messages or {bytes} bytes (--rate-messages, \
                     --rate-bytes) at once: lower it"
                )
            }
        }
    }
}

impl std::error::Error for ConfigError {}

impl ServerConfig {
    /// Refuses settings that contradict each other, before anything starts.
    pub fn check(&self) -> Result<(), ConfigError> {
        if self.drain_period > self.shutdown_timeout {
            return Err(ConfigError::DrainLongerThanShutdown {
                drain: self.drain_period,
                shutdown: self.shutdown_timeout,
            });
        }
        if self.drain_rate == 0 {
            return Err(ConfigError::ZeroDrainRate);
        }
        if self.connection_age_jitter > 100 {
            return Err(ConfigError::JitterOver100(self.connection_age_jitter));
        }
        if self.max_conns_per_user > 0 && self.jwt.is_none() {
            return Err(ConfigError::UserCapWithoutJwt);
        }
        self.rate_limit.check(self.ws.limits.max_message)
    }

    /// Sets the compression settings and the terms the handshake offers.
    pub fn set_compression(&mut self, compression: crate::ws::compression::CompressionConfig) {
        self.compression = compression;
        self.ws.handshake.deflate = compression.policy();
    }

    /// The number of loops to run: `workers`, or the cores available.
    pub fn worker_count(&self) -> usize {
        if self.workers > 0 {
            self.workers
        } else {
            std::thread::available_parallelism().map_or(1, |n| n.get())
        }
    }

    /// The timer tick: a quarter of the shortest timeout, between 10 ms and
    /// 1 s, so a timeout fires within 25 % of its value.
    pub(crate) fn timer_tick(&self) -> Duration {
        let shortest =
            [self.handshake_timeout, self.idle_timeout, self.pong_timeout, self.close_timeout, self.send_timeout]
                .into_iter()
                .min()
                .unwrap_or(Duration::from_secs(1));
        (shortest / 4).clamp(Duration::from_millis(10), Duration::from_secs(1))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_drain_longer_than_the_shutdown_timeout_is_refused() {
        let mut cfg = ServerConfig::default();
        assert_eq!(cfg.check(), Ok(()));
        cfg.drain_period = cfg.shutdown_timeout;
        assert_eq!(cfg.check(), Ok(()), "equal is allowed");
        cfg.drain_period += Duration::from_millis(1);
        let e = cfg.check().unwrap_err();
        assert!(matches!(e, ConfigError::DrainLongerThanShutdown { .. }));
        assert!(e.to_string().contains("--drain-period") && !e.to_string().contains('\n'), "{e}");
        let cfg = ServerConfig { drain_rate: 0, ..ServerConfig::default() };
        assert_eq!(cfg.check(), Err(ConfigError::ZeroDrainRate));
        let cfg = ServerConfig { connection_age_jitter: 101, ..ServerConfig::default() };
        assert_eq!(cfg.check(), Err(ConfigError::JitterOver100(101)));
    }

    #[test]
    fn a_rate_burst_must_pass_a_message_and_fit_its_bucket() {
        let rated = |messages, bytes, burst_ms| ServerConfig {
            rate_limit: RateLimitConfig { messages, bytes, burst: Duration::from_millis(burst_ms) },
            ..ServerConfig::default()
        };
        assert_eq!(rated(0, 0, 0).check(), Ok(()), "off: the burst is not looked at");
        assert_eq!(rated(1, 0, 1000).check(), Ok(()));
        assert_eq!(rated(2, 0, 500).check(), Ok(()), "exactly one message");
        let e = rated(1, 0, 500).check().unwrap_err();
        assert!(matches!(e, ConfigError::RateBurstUnderOneMessage { messages: 1, .. }), "{e:?}");
        assert!(e.to_string().contains("--rate-burst") && !e.to_string().contains('\n'), "{e}");
        // The default largest message is 64 MiB: a byte burst must hold it.
        assert_eq!(rated(0, 64 << 20, 1000).check(), Ok(()));
        let e = rated(0, 1 << 20, 1000).check().unwrap_err();
        assert_eq!(
            e,
            ConfigError::RateBurstUnderMaxMessage {
                burst: Duration::from_secs(1),
                bytes: 1 << 20,
                max_message: 64 << 20
            }
        );
        assert!(e.to_string().contains("--max-message-size") && !e.to_string().contains('\n'), "{e}");
        let (max_messages, max_bytes) = RateLimitConfig::MAX_BURST;
        assert_eq!(rated(max_messages as u32, 0, 1000).check(), Ok(()));
        let e = rated(max_messages as u32 + 1, 0, 1000).check().unwrap_err();
        assert!(matches!(e, ConfigError::RateBurstTooLarge { .. }), "{e:?}");
        assert_eq!(rated(0, max_bytes, 1000).check(), Ok(()));
        assert!(matches!(rated(0, max_bytes + 1, 1000).check(), Err(ConfigError::RateBurstTooLarge { .. })));
        assert!(matches!(rated(0, u64::MAX, 3_600_000).check(), Err(ConfigError::RateBurstTooLarge { .. })));
    }
}
