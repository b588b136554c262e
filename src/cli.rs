//! Command-line flags. Every serve flag can also come from an environment
//! variable (`WSLOOP_ADDR`, ...); a bad value is a one-line error naming
//! the flag.

use std::net::SocketAddr;
use std::time::Duration;

use clap::{Args, Parser, Subcommand};
use log::LevelFilter;

use crate::app::{BuiltinApp, PublishPolicy};
use crate::server::driver::IoChoice;
use crate::server::ServerConfig;
use crate::units::{parse_duration, parse_size};
use crate::ws;
use crate::ws::compression::{CompressionConfig, CompressionMode};

/// wsloop: a WebSocket server for very many concurrent connections.
#[derive(Debug, Parser)]
#[command(name = "wsloop", version, about, args_conflicts_with_subcommands = true)]
pub struct Cli {
    /// What to run; without one, `serve` with the flags given.
    #[command(subcommand)]
    pub command: Option<Command>,
    /// Flags of `serve`, accepted without the subcommand too.
    #[command(flatten)]
    pub serve: ServeArgs,
}

/// The subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the WebSocket server (the default).
    Serve(Box<ServeArgs>),
    /// Drive a WebSocket server with many connections and measure it.
    Load(Box<crate::load::LoadArgs>),
    /// Tell what this host still lacks for a number of connections.
    Doctor(DoctorArgs),
    /// Call a running server's admin API (`--admin-addr`).
    Admin(AdminArgs),
}

/// Flags of `wsloop admin`: where the API is, the token, what to do.
#[derive(Debug, Clone, Args)]
pub struct AdminArgs {
    /// The server's --admin-addr.
    #[arg(long, env = "WSLOOP_ADMIN_ADDR")]
    pub addr: SocketAddr,
    /// The file holding the server's admin token (its --admin-token-file).
    #[arg(long, env = "WSLOOP_ADMIN_TOKEN_FILE")]
    pub token_file: std::path::PathBuf,
    /// What to ask.
    #[command(subcommand)]
    pub command: AdminCommand,
}

/// What `wsloop admin` asks the API.
#[derive(Debug, Clone, Subcommand)]
pub enum AdminCommand {
    /// Publish TEXT to ROOM's members on every host.
    Publish {
        /// The room.
        room: String,
        /// The message (sent as a text frame, as it is); `-` reads it from
        /// standard input (for one past the 128 KiB bound on an argument).
        text: String,
    },
    /// Close connections: one, a room's members, or a user's (on every host).
    Disconnect {
        /// A user id (the JWT `sub`).
        #[arg(long, group = "target", required_unless_present_any = ["room", "conn"])]
        user: Option<String>,
        /// A room: all its members.
        #[arg(long, group = "target")]
        room: Option<String>,
        /// One connection, as `loop:slot:generation` (from `admin room` or `admin user`).
        #[arg(long, group = "target")]
        conn: Option<String>,
        /// The close code: 1000, 1008 or 4000-4999.
        #[arg(long, default_value_t = 1000)]
        code: u16,
        /// The close reason (at most 123 bytes).
        #[arg(long, default_value = "")]
        reason: String,
    },
    /// List rooms with their member counts (in name order).
    Rooms {
        /// Rooms listed at most (default 1000, at most 10000).
        #[arg(long)]
        limit: Option<usize>,
        /// Start after this room name (the `next_after` of a previous page).
        #[arg(long)]
        after: Option<String>,
    },
    /// A room's member count and connections.
    Room {
        /// The room.
        name: String,
    },
    /// A user's connections.
    User {
        /// The user id.
        name: String,
    },
}

/// Flags of `wsloop doctor`.
#[derive(Debug, Clone, Args)]
pub struct DoctorArgs {
    /// Connections the host should hold.
    #[arg(long, default_value_t = 100_000)]
    pub target_conns: u64,
    /// What the host runs: server, loadgen, or both.
    #[arg(long, value_enum, default_value = "server")]
    pub role: crate::tune::doctor::Role,
    /// Processes the connections are spread over (each side).
    #[arg(long, default_value_t = 1)]
    pub processes: u64,
    /// Source addresses the load generator connects from.
    #[arg(long, default_value_t = 1)]
    pub sources: u64,
    /// Read /proc from under this directory instead of / (for testing).
    #[arg(long, default_value = "/")]
    pub root: std::path::PathBuf,
}

/// Flags of `wsloop serve`.
#[derive(Debug, Clone, Args)]
pub struct ServeArgs {
    /// Address to listen on.
    #[arg(long, env = "WSLOOP_ADDR", default_value = "0.0.0.0:8080")]
    pub addr: SocketAddr,
    /// Event loop threads (0: one per core).
    #[arg(long, env = "WSLOOP_WORKERS", default_value_t = 0)]
    pub workers: usize,
    /// The built-in application: echo (with JSON ping/pong and rooms) or plain-echo.
    #[arg(long, env = "WSLOOP_APP", value_enum, default_value_t = BuiltinApp::Echo)]
    pub app: BuiltinApp,
    /// The I/O driver: auto (io_uring where the kernel runs it, else epoll),
    /// epoll, or uring (an error where io_uring is unavailable).
    #[arg(long, env = "WSLOOP_IO", value_enum, default_value_t = IoChoice::Auto)]
    pub io: IoChoice,
    /// Paths that accept WebSocket upgrades (comma-separated).
    #[arg(long = "path", env = "WSLOOP_PATHS", value_delimiter = ',', default_value = "/ws,/")]
    pub paths: Vec<String>,
    /// Most open connections (0: the file limit minus a reserve); past it, 503.
    #[arg(long, env = "WSLOOP_MAX_CONNS", default_value_t = 0)]
    pub max_conns: usize,
    /// Unsent bytes per connection past which its reads pause until half has drained
    /// (a room publish to it then closes it 1008 as a slow consumer).
    #[arg(long, env = "WSLOOP_MAX_BACKLOG", default_value = "1MiB", value_parser = parse_size)]
    pub max_backlog: usize,
    /// The process's memory budget (e.g. 2GiB; 0: none); default: half of the cgroup's
    /// or host's memory, logged at start. Past 3/4 of it new connections get 503 and
    /// the largest input holders are not read; past it, the largest holders are
    /// closed (1009 for an unfinished message, else 1013).
    #[arg(long, env = "WSLOOP_MEMORY_LIMIT", value_parser = parse_size)]
    pub memory_limit: Option<usize>,
    /// Time a connection over --max-backlog may go without the peer taking a byte
    /// before it is closed as a slow consumer (1008).
    #[arg(long, env = "WSLOOP_SEND_TIMEOUT", default_value = "30s", value_parser = parse_duration)]
    pub send_timeout: Duration,
    /// Largest message (summed over fragments); past it, close 1009.
    #[arg(long, env = "WSLOOP_MAX_MESSAGE_SIZE", default_value = "64MiB", value_parser = parse_size)]
    pub max_message_size: usize,
    /// Largest single frame (at most 4GiB - 1); past it, close 1009.
    #[arg(long, env = "WSLOOP_MAX_FRAME_SIZE", default_value = "16MiB", value_parser = parse_frame_size)]
    pub max_frame_size: usize,
    /// Largest upgrade request head; past it, HTTP 431.
    #[arg(long, env = "WSLOOP_MAX_HEADER_SIZE", default_value = "8KiB", value_parser = parse_size)]
    pub max_header_size: usize,
    /// Allowed Origin values (comma-separated; empty: any). Others get 403.
    #[arg(long, env = "WSLOOP_ALLOWED_ORIGINS", value_delimiter = ',')]
    pub allowed_origins: Vec<String>,
    /// Subprotocols offered, in order of preference (comma-separated).
    #[arg(long, env = "WSLOOP_SUBPROTOCOLS", value_delimiter = ',')]
    pub subprotocols: Vec<String>,
    /// Time allowed to complete the upgrade request.
    #[arg(long, env = "WSLOOP_HANDSHAKE_TIMEOUT", default_value = "10s", value_parser = parse_duration)]
    pub handshake_timeout: Duration,
    /// Silence after which the server pings the peer.
    #[arg(long, env = "WSLOOP_IDLE_TIMEOUT", default_value = "60s", value_parser = parse_duration)]
    pub idle_timeout: Duration,
    /// Time the peer has to answer the idle ping before it is closed.
    #[arg(long, env = "WSLOOP_PONG_TIMEOUT", default_value = "20s", value_parser = parse_duration)]
    pub pong_timeout: Duration,
    /// Time the peer has to answer our close frame.
    #[arg(long, env = "WSLOOP_CLOSE_TIMEOUT", default_value = "5s", value_parser = parse_duration)]
    pub close_timeout: Duration,
    /// Time graceful shutdown waits for connections to close.
    #[arg(long, env = "WSLOOP_SHUTDOWN_TIMEOUT", default_value = "10s", value_parser = parse_duration)]
    pub shutdown_timeout: Duration,
    /// Live hand-off (deploys without reconnects): the Unix socket where
    /// this process offers its connections to a newer one. Started with
    /// it while another process offers there, this one takes over that
    /// process's listeners and connections first. SIGUSR2 starts the
    /// binary at the same path, with the same flags, to take over.
    #[arg(long, env = "WSLOOP_TAKEOVER", value_name = "PATH")]
    pub takeover: Option<std::path::PathBuf>,
    /// On shutdown, close connections at a steady pace over this period, in random
    /// order, with 1012 and a reconnect hint (0: all at once, 1001). At most
    /// --shutdown-timeout (a longer one is refused at start).
    #[arg(long, env = "WSLOOP_DRAIN_PERIOD", default_value = "0s", value_parser = parse_duration)]
    pub drain_period: Duration,
    /// Ask connections older than this to leave (1012 with a reconnect hint), paced by
    /// --drain-rate (0: never).
    #[arg(long, env = "WSLOOP_MAX_CONNECTION_AGE", default_value = "0s", value_parser = parse_duration)]
    pub max_connection_age: Duration,
    /// Jitter of --max-connection-age, in percent: each connection's age is the
    /// age +- up to this much.
    #[arg(long, env = "WSLOOP_CONNECTION_AGE_JITTER", default_value_t = 10, value_parser = clap::value_parser!(u8).range(0..=100))]
    pub connection_age_jitter: u8,
    /// Aged connections closed per second at most in this process (split over the loops).
    #[arg(long, env = "WSLOOP_DRAIN_RATE", default_value_t = 1000, value_parser = clap::value_parser!(u32).range(1..))]
    pub drain_rate: u32,
    /// Size of a pooled I/O buffer.
    #[arg(long, env = "WSLOOP_BUFFER_SIZE", default_value = "16KiB", value_parser = parse_size)]
    pub buffer_size: usize,
    /// Longest room name, in bytes.
    #[arg(long, env = "WSLOOP_MAX_ROOM_NAME", default_value_t = 128)]
    pub max_room_name: usize,
    /// Rooms one connection may be in at once.
    #[arg(long, env = "WSLOOP_MAX_ROOMS_PER_CONN", default_value_t = 64)]
    pub max_rooms_per_conn: usize,
    /// Largest `data` a client's publish or broadcast may carry (its JSON
    /// text, in bytes), since each is copied to every member; past it, the
    /// `too_large` error (the connection stays).
    #[arg(long, env = "WSLOOP_MAX_PUBLISH_SIZE", default_value = "1MiB", value_parser = parse_size)]
    pub max_publish_size: usize,
    /// Let clients send `{"type":"broadcast"}` to every connection of the
    /// server; without it they get the `broadcast_disabled` error. (The
    /// variable takes true/false, 1/0, yes/no, on/off.)
    #[arg(long, env = "WSLOOP_ALLOW_BROADCAST", value_parser = clap::builder::BoolishValueParser::new())]
    pub allow_broadcast: bool,
    /// permessage-deflate: off; shared (no context takeover, one codec per
    /// loop: no memory per connection); or dedicated[:BITS] (context takeover
    /// with a BITS window, 9-15, default 10: its own codec per connection).
    #[arg(long, env = "WSLOOP_COMPRESSION", default_value = "off")]
    pub compression: CompressionMode,
    /// Messages shorter than this go out uncompressed.
    #[arg(long, env = "WSLOOP_COMPRESSION_THRESHOLD", default_value = "128", value_parser = parse_size)]
    pub compression_threshold: usize,
    /// zlib compression level: 1 (fastest) to 9 (smallest).
    #[arg(long, env = "WSLOOP_COMPRESSION_LEVEL", default_value_t = 3, value_parser = clap::value_parser!(u8).range(1..=9))]
    pub compression_level: u8,
    /// With --compression dedicated: connections per process that may keep
    /// a context of their own (0: no limit); past it, new ones get the shared
    /// terms. About 22 KiB each at 10 bits (see BENCHMARKS.md).
    #[arg(long, env = "WSLOOP_COMPRESSION_MAX_DEDICATED", default_value_t = 0)]
    pub compression_max_dedicated: usize,
    /// Serve wss:// with this certificate chain (PEM); needs --tls-key.
    /// SIGHUP reloads both files (new handshakes use them; a bad file keeps the old).
    #[arg(long, env = "WSLOOP_TLS_CERT", requires = "tls_key")]
    pub tls_cert: Option<std::path::PathBuf>,
    /// The private key (PEM: PKCS#8, PKCS#1 or SEC1) for --tls-cert.
    #[arg(long, env = "WSLOOP_TLS_KEY", requires = "tls_cert")]
    pub tls_key: Option<std::path::PathBuf>,
    /// TLS handshake turns each event loop takes per pass at most (0: no
    /// limit); the rest wait for the next pass, so a storm of new TLS
    /// connections cannot starve established ones.
    #[arg(long, env = "WSLOOP_TLS_HANDSHAKES_PER_PASS", default_value_t = 4)]
    pub tls_handshakes_per_pass: u32,
    /// Upgrades must present a secret from this file (one per line), as
    /// `Authorization: Bearer TOKEN` or `?token=TOKEN`; others get 401.
    #[arg(long, env = "WSLOOP_AUTH_TOKEN_FILE", conflicts_with = "jwt_key")]
    pub auth_token_file: Option<std::path::PathBuf>,
    /// Upgrades must present a JWT (`Authorization: Bearer` or `?token=`)
    /// signed with a key in this file: an HMAC secret (HS256/384/512, at
    /// least 32 bytes), a PEM public key (RS*/PS*, ES256/384, EdDSA) or a
    /// JWKS (several keys by `kid`). Its `sub` is the user id; its `wsloop`
    /// claim the rooms it may join and publish to and whether it may
    /// broadcast (none without it). 401/403 otherwise. SIGHUP reloads it.
    #[arg(long, env = "WSLOOP_JWT_KEY")]
    pub jwt_key: Option<std::path::PathBuf>,
    /// Accepted `aud` values, comma-separated; when set, a token must name one.
    #[arg(long, env = "WSLOOP_JWT_AUDIENCE", value_delimiter = ',', requires = "jwt_key")]
    pub jwt_audience: Vec<String>,
    /// Accepted `iss` values, comma-separated; when set, a token must name one.
    #[arg(long, env = "WSLOOP_JWT_ISSUER", value_delimiter = ',', requires = "jwt_key")]
    pub jwt_issuer: Vec<String>,
    /// Clock skew allowed on a token's `exp` and `nbf`.
    #[arg(long, env = "WSLOOP_JWT_LEEWAY", default_value = "30s", value_parser = parse_duration)]
    pub jwt_leeway: Duration,
    /// Open connections one user id (a token's `sub`) may hold in this
    /// process, across loops (0: no limit); past it, 429. Needs --jwt-key.
    #[arg(long, env = "WSLOOP_MAX_CONNS_PER_USER", default_value_t = 0, requires = "jwt_key")]
    pub max_conns_per_user: u32,
    /// Open connections one source address (IPv6: one /64) may hold (0: no
    /// limit); past it, 429.
    #[arg(long, env = "WSLOOP_MAX_CONNS_PER_IP", default_value_t = 0)]
    pub max_conns_per_ip: u32,
    /// Handshakes per second one source address may start, in bursts of as
    /// many (0: no limit); past it, 429 with Retry-After.
    #[arg(long, env = "WSLOOP_HANDSHAKE_RATE_PER_IP", default_value_t = 0)]
    pub handshake_rate_per_ip: u32,
    /// Messages a second one connection may send, pings and pongs included
    /// (0: no limit), in bursts of --rate-burst. A message over it is
    /// dropped, not handled: the first drop answers {"type":"error",
    /// "error":"rate_limited"}, and a connection that keeps going until it
    /// owes a second burst is closed 1008 "rate limit"; once its debt is
    /// paid, the next drop warns again. A live hand-off starts it afresh.
    #[arg(long, env = "WSLOOP_RATE_MESSAGES", default_value_t = 0)]
    pub rate_messages: u32,
    /// Payload bytes a second one connection may send (e.g. 1MiB; 0: no
    /// limit; a compressed message counts inflated), by the same rule as
    /// --rate-messages. Its burst must hold --max-message-size.
    #[arg(long, env = "WSLOOP_RATE_BYTES", default_value = "0", value_parser = parse_size)]
    pub rate_bytes: usize,
    /// How much of --rate-messages and --rate-bytes a connection may spend
    /// at once, as a time at that rate (2s: two seconds' worth).
    #[arg(long, env = "WSLOOP_RATE_BURST", default_value = "1s", value_parser = parse_duration)]
    pub rate_burst: Duration,
    /// Every connection starts with a PROXY protocol header (v1 or v2, as
    /// HAProxy's send-proxy-v2 writes) naming the client, whose address then
    /// counts for the per-address limits and peer_addr(). Needs
    /// --trusted-proxies: connections from elsewhere are closed at accept.
    #[arg(long, env = "WSLOOP_PROXY_PROTOCOL", value_parser = clap::builder::BoolishValueParser::new())]
    pub proxy_protocol: bool,
    /// Proxies (comma-separated CIDRs: 10.0.0.0/8,fd00::/8) allowed to send
    /// the PROXY header, and whose --forwarded-header is believed (the
    /// rightmost hop not in this list is the client).
    #[arg(long, env = "WSLOOP_TRUSTED_PROXIES", value_name = "CIDR,...", value_parser = parse_trusted_proxies)]
    pub trusted_proxies: Option<crate::server::forwarded::TrustedProxies>,
    /// The header that names the client when the peer is a trusted proxy.
    #[arg(long, env = "WSLOOP_FORWARDED_HEADER", value_enum, default_value_t = Default::default())]
    pub forwarded_header: crate::server::forwarded::ForwardedHeader,
    /// Share rooms with other wsloop processes and hosts through this Redis
    /// (`redis://[user:password@]host:port[/db]`): publishes go to every
    /// member on every host. Redis down: rooms stay local until it is back.
    /// With a password, give it in the environment, not on the command line.
    #[arg(long, env = "WSLOOP_REDIS_URL", hide_env_values = true, value_parser = RedisUrlParser)]
    pub redis_url: Option<crate::server::bridge::RedisUrl>,
    /// Redis channel of a room: this prefix (ending with ':'), then the
    /// room's name with '%' and ':' written %25 and %3A.
    #[arg(long, env = "WSLOOP_REDIS_PREFIX", default_value = crate::server::bridge::DEFAULT_PREFIX,
          value_parser = parse_redis_prefix, requires = "redis_url")]
    pub redis_prefix: String,
    /// Bytes of publishes waiting for Redis at most; past it, publishes
    /// are not sent to other hosts (counted: queue_full), local members still get them.
    #[arg(long, env = "WSLOOP_REDIS_QUEUE_BYTES", default_value = "64MiB", value_parser = parse_nonzero_size,
          requires = "redis_url")]
    pub redis_queue_bytes: usize,
    /// Largest publish sent to Redis (lowered to half of Redis's pubsub
    /// output-buffer limit where Redis tells it); larger ones reach local
    /// members only (counted: too_large).
    #[arg(long, env = "WSLOOP_REDIS_MAX_PUBLISH_SIZE", default_value = "16MiB", value_parser = parse_nonzero_size,
          requires = "redis_url")]
    pub redis_max_publish_size: usize,
    /// A loop that stays mostly empty (at most 1/8 of its peak) this long
    /// gives its peak's memory back (tables, spare buffers, the heap's free
    /// memory); 0s: never.
    #[arg(long, env = "WSLOOP_RELEASE_MEMORY_AFTER", default_value = "10s", value_parser = parse_duration)]
    pub release_memory_after: Duration,
    /// Spare pooled buffers each loop keeps at most.
    #[arg(long, env = "WSLOOP_POOL_SIZE", default_value_t = 256)]
    pub pool_size: usize,
    /// Serve the admin API (publish, disconnect, rooms; see the README) on
    /// this address: its own listener, never the public one. Needs
    /// --admin-token-file.
    #[arg(long, env = "WSLOOP_ADMIN_ADDR", requires = "admin_token_file")]
    pub admin_addr: Option<SocketAddr>,
    /// The admin API's bearer token: the first line of this file (16 to
    /// 1024 printable characters).
    #[arg(long, env = "WSLOOP_ADMIN_TOKEN_FILE", requires = "admin_addr")]
    pub admin_token_file: Option<std::path::PathBuf>,
    /// Where to serve Prometheus /metrics and /healthz, or `off`.
    #[arg(long, env = "WSLOOP_METRICS_ADDR", default_value = "0.0.0.0:2112", value_parser = parse_metrics_addr)]
    pub metrics_addr: MetricsAddr,
    /// Log level: error, warn, info, debug, trace or off.
    #[arg(long, env = "WSLOOP_LOG", default_value = "info", value_parser = parse_level)]
    pub log_level: LevelFilter,
}

impl ServeArgs {
    /// What the built-in app lets clients publish, from these flags.
    pub fn publish_policy(&self) -> PublishPolicy {
        PublishPolicy { max_size: self.max_publish_size, allow_broadcast: self.allow_broadcast }
    }

    /// The engine configuration these flags describe.
    pub fn to_config(&self) -> ServerConfig {
        let mut cfg = ServerConfig {
            addr: self.addr,
            workers: self.workers,
            ws: self.ws_config(),
            max_conns: self.max_conns,
            max_backlog: self.max_backlog,
            memory_limit: self.memory_limit.map(|n| n as u64),
            send_timeout: self.send_timeout,
            buffer_size: self.buffer_size,
            pool_max_idle: self.pool_size,
            handshake_timeout: self.handshake_timeout,
            idle_timeout: self.idle_timeout,
            pong_timeout: self.pong_timeout,
            close_timeout: self.close_timeout,
            shutdown_timeout: self.shutdown_timeout,
            drain_period: self.drain_period,
            max_connection_age: self.max_connection_age,
            connection_age_jitter: self.connection_age_jitter,
            drain_rate: self.drain_rate,
            rooms: crate::server::RoomLimits {
                max_name_len: self.max_room_name,
                max_rooms_per_conn: self.max_rooms_per_conn,
            },
            io: self.io,
            tls_handshakes_per_pass: self.tls_handshakes_per_pass,
            release_memory_after: self.release_memory_after,
            max_conns_per_user: self.max_conns_per_user,
            address_limits: crate::server::address_limits::AddressLimitConfig {
                max_conns: self.max_conns_per_ip,
                handshake_rate: self.handshake_rate_per_ip,
            },
            rate_limit: crate::server::config::RateLimitConfig {
                messages: self.rate_messages,
                bytes: self.rate_bytes as u64,
                burst: self.rate_burst,
            },
            proxy: self.proxy_config(),
            ..ServerConfig::default()
        };
        cfg.set_compression(CompressionConfig {
            mode: self.compression,
            threshold: self.compression_threshold,
            level: self.compression_level,
            max_dedicated: self.compression_max_dedicated,
        });
        cfg.bridge = self.redis_url.as_ref().map(|url| crate::server::bridge::BridgeConfig {
            url: url.expose().to_string(),
            prefix: self.redis_prefix.clone(),
            max_queue_bytes: self.redis_queue_bytes,
            max_publish_bytes: self.redis_max_publish_size,
            max_room_name: self.max_room_name,
        });
        cfg
    }

    /// The protocol settings: paths, origins, subprotocols, sizes.
    fn ws_config(&self) -> ws::Config {
        ws::Config {
            handshake: ws::HandshakeConfig {
                paths: self.paths.clone(),
                allowed_origins: self.allowed_origins.clone(),
                protocols: self.subprotocols.clone(),
                max_header_size: self.max_header_size,
                ..Default::default()
            },
            limits: ws::Limits { max_frame: self.max_frame_size as u64, max_message: self.max_message_size as u64 },
        }
    }

    /// Clients behind proxies: the PROXY header, who is trusted, which
    /// forwarding header is believed.
    fn proxy_config(&self) -> crate::server::forwarded::ProxyConfig {
        crate::server::forwarded::ProxyConfig {
            proxy_protocol: self.proxy_protocol,
            trusted: self.trusted_proxies.clone().unwrap_or_default(),
            header: self.forwarded_header,
        }
    }

    /// How tokens are checked, when `--jwt-key` is given.
    pub fn jwt_config(&self) -> Option<crate::server::identity::JwtConfig> {
        Some(crate::server::identity::JwtConfig {
            key_file: self.jwt_key.clone()?,
            audience: self.jwt_audience.clone(),
            issuer: self.jwt_issuer.clone(),
            leeway: self.jwt_leeway,
        })
    }
}

/// `--trusted-proxies`: a list of CIDRs, each checked (the error names it).
fn parse_trusted_proxies(s: &str) -> Result<crate::server::forwarded::TrustedProxies, String> {
    s.parse().map_err(|e: crate::server::forwarded::CidrError| e.to_string())
}

/// Checks `--redis-url` the way the bridge will use it. Its errors show
/// the URL redacted: clap's own would echo the value, password included.
#[derive(Debug, Clone, Copy)]
struct RedisUrlParser;

impl clap::builder::TypedValueParser for RedisUrlParser {
    type Value = crate::server::bridge::RedisUrl;

    fn parse_ref(
        &self,
        cmd: &clap::Command,
        arg: Option<&clap::Arg>,
        value: &std::ffi::OsStr,
    ) -> Result<crate::server::bridge::RedisUrl, clap::Error> {
        let flag = arg.map_or_else(|| "--redis-url".to_string(), |a| a.to_string());
        let refuse = |why: String| {
            clap::Error::raw(clap::error::ErrorKind::ValueValidation, format!("invalid value for '{flag}': {why}\n"))
                .with_cmd(cmd)
        };
        let url = value.to_str().ok_or_else(|| refuse("not UTF-8".into()))?;
        crate::server::bridge::BridgeConfig::new(url).map_err(|e| refuse(e.to_string()))?;
        Ok(crate::server::bridge::RedisUrl::new(url))
    }
}

/// Checks `--redis-prefix`: it must end with ':' so that channels never collide.
fn parse_redis_prefix(s: &str) -> Result<String, String> {
    crate::server::bridge::check_prefix(s).map(|()| s.to_string()).map_err(|e| e.to_string())
}

/// A size of at least one byte.
fn parse_nonzero_size(s: &str) -> Result<usize, String> {
    match parse_size(s)? {
        0 => Err("must be at least 1 byte".into()),
        n => Ok(n),
    }
}

/// The metrics listener: an address, or off.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MetricsAddr {
    /// Serve metrics here.
    On(SocketAddr),
    /// No metrics thread.
    Off,
}

/// Parses `--metrics-addr`: `host:port` or `off`.
pub fn parse_metrics_addr(s: &str) -> Result<MetricsAddr, String> {
    if s.eq_ignore_ascii_case("off") {
        return Ok(MetricsAddr::Off);
    }
    s.parse().map(MetricsAddr::On).map_err(|_| format!("'{s}' is not an address (host:port) or 'off'"))
}

/// Parses a log level name.
pub fn parse_level(s: &str) -> Result<LevelFilter, String> {
    s.parse().map_err(|_| format!("'{s}' is not a log level (error, warn, info, debug, trace, off)"))
}

/// A frame size limit: a size no larger than [`crate::ws::session::MAX_FRAME`].
fn parse_frame_size(s: &str) -> Result<usize, String> {
    let n = parse_size(s)?;
    if n as u64 > crate::ws::session::MAX_FRAME {
        return Err(format!("'{s}' is over the largest frame wsloop accepts (4GiB - 1)"));
    }
    Ok(n)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bad_flag_value_names_the_flag() {
        let err = Cli::try_parse_from(["wsloop", "--max-backlog", "lots"]).unwrap_err().to_string();
        assert!(err.contains("--max-backlog"), "{err}");
        let err = Cli::try_parse_from(["wsloop", "--max-frame-size", "5GiB"]).unwrap_err().to_string();
        assert!(err.contains("--max-frame-size") && err.contains("4GiB"), "{err}");
        let err = Cli::try_parse_from(["wsloop", "--send-timeout", "soon"]).unwrap_err().to_string();
        assert!(err.contains("--send-timeout"), "{err}");
        let err = Cli::try_parse_from(["wsloop", "--app", "chatty"]).unwrap_err().to_string();
        assert!(err.contains("--app") && err.contains("plain-echo"), "{err}");
        let err = Cli::try_parse_from(["wsloop", "serve", "--addr", "nowhere"]).unwrap_err().to_string();
        assert!(err.contains("--addr"), "{err}");
    }

    #[test]
    fn defaults_match_the_engine_defaults() {
        let cli = Cli::try_parse_from(["wsloop"]).unwrap();
        let cfg = cli.serve.to_config();
        let d = ServerConfig::default();
        assert_eq!(cfg.addr, d.addr);
        assert_eq!((cfg.max_backlog, cfg.send_timeout), (d.max_backlog, d.send_timeout));
        assert_eq!(cfg.ws, d.ws);
        assert_eq!(cfg.compression, d.compression);
        assert_eq!(cfg.rate_limit, d.rate_limit);
        assert_eq!(
            (cfg.handshake_timeout, cfg.idle_timeout, cfg.pong_timeout),
            (d.handshake_timeout, d.idle_timeout, d.pong_timeout)
        );
    }

    #[test]
    fn publish_flags() {
        let cli = Cli::try_parse_from(["wsloop"]).unwrap();
        assert_eq!(cli.serve.publish_policy(), PublishPolicy::default());
        assert!(cli.serve.max_publish_size < cli.serve.max_message_size);
        let cli = Cli::try_parse_from(["wsloop", "--max-publish-size", "4KiB", "--allow-broadcast"]).unwrap();
        assert_eq!(cli.serve.publish_policy(), PublishPolicy { max_size: 4096, allow_broadcast: true });
        let err = Cli::try_parse_from(["wsloop", "--max-publish-size", "big"]).unwrap_err().to_string();
        assert!(err.contains("--max-publish-size"), "{err}");
    }

    #[test]
    fn redis_flags_match_the_bridge_defaults_and_never_show_the_password() {
        let cli = Cli::try_parse_from(["wsloop", "--redis-url", "redis://:hunter2@redis:6379"]).unwrap();
        assert!(!format!("{cli:?}").contains("hunter2"), "{cli:?}");
        let cfg = cli.serve.to_config();
        let bridge = cfg.bridge.as_ref().unwrap();
        let d = crate::server::bridge::BridgeConfig::new("redis://:hunter2@redis:6379").unwrap();
        assert_eq!(bridge.url, d.url, "the client gets the whole URL");
        assert_eq!(
            (&bridge.prefix, bridge.max_queue_bytes, bridge.max_publish_bytes),
            (&d.prefix, d.max_queue_bytes, d.max_publish_bytes)
        );
        assert_eq!(bridge.max_room_name, cfg.rooms.max_name_len, "the bridge refuses the room names join refuses");
        for bad in ["redis://:hunter2@redis:port", "http://:hunter2@redis:6379"] {
            let err = Cli::try_parse_from(["wsloop", "--redis-url", bad]).unwrap_err().to_string();
            assert!(err.contains("--redis-url") && !err.contains("hunter2"), "{err}");
        }
        let err = Cli::try_parse_from(["wsloop", "--redis-url", "redis://r", "--redis-prefix", "tenant"]).unwrap_err();
        assert!(err.to_string().contains("--redis-prefix") && err.to_string().contains("':'"), "{err}");
        let err = Cli::try_parse_from(["wsloop", "--redis-url", "redis://r", "--redis-queue-bytes", "0"]).unwrap_err();
        assert!(err.to_string().contains("--redis-queue-bytes"), "{err}");
    }

    #[test]
    fn admin_flags_come_together() {
        let cli = Cli::try_parse_from(["wsloop"]).unwrap();
        assert_eq!(cli.serve.admin_addr, None, "off by default");
        let err = Cli::try_parse_from(["wsloop", "--admin-addr", "127.0.0.1:9090"]).unwrap_err().to_string();
        assert!(err.contains("--admin-token-file"), "{err}");
        let cli = Cli::try_parse_from(["wsloop", "--admin-addr", "127.0.0.1:9090", "--admin-token-file", "t"]).unwrap();
        assert_eq!(cli.serve.admin_addr, Some("127.0.0.1:9090".parse().unwrap()));
        let args = ["wsloop", "admin", "--addr", "127.0.0.1:1", "--token-file", "t", "disconnect", "--room", "r"];
        let Some(Command::Admin(admin)) = Cli::try_parse_from(args).unwrap().command else { panic!("admin") };
        assert!(matches!(admin.command, AdminCommand::Disconnect { code: 1000, room: Some(_), .. }));
        let args = [
            "wsloop",
            "admin",
            "--addr",
            "127.0.0.1:1",
            "--token-file",
            "t",
            "disconnect",
            "--room",
            "r",
            "--user",
            "u",
        ];
        assert!(Cli::try_parse_from(args).is_err(), "one target at a time");
        let args = ["wsloop", "admin", "--addr", "127.0.0.1:1", "--token-file", "t", "disconnect"];
        assert!(Cli::try_parse_from(args).is_err(), "a target is needed");
    }

    #[test]
    fn rate_flags() {
        let args = ["wsloop", "--rate-messages", "50", "--rate-bytes", "64MiB", "--rate-burst", "2s"];
        let cfg = Cli::try_parse_from(args).unwrap().serve.to_config();
        let want =
            crate::server::config::RateLimitConfig { messages: 50, bytes: 64 << 20, burst: Duration::from_secs(2) };
        assert_eq!(cfg.rate_limit, want);
        assert_eq!(cfg.check(), Ok(()));
        for (flag, bad) in [("--rate-messages", "many"), ("--rate-bytes", "fast"), ("--rate-burst", "soon")] {
            let err = Cli::try_parse_from(["wsloop", flag, bad]).unwrap_err().to_string();
            assert!(err.contains(flag), "{err}");
        }
    }

    #[test]
    fn compression_flags() {
        let cli = Cli::try_parse_from(["wsloop", "--compression", "dedicated:12"]).unwrap();
        let cfg = cli.serve.to_config();
        assert_eq!(cfg.compression.mode, CompressionMode::Dedicated(12));
        assert_eq!(cfg.ws.handshake.deflate, Some(crate::ws::extension::DeflatePolicy::dedicated(12)));
        let cfg = Cli::try_parse_from(["wsloop", "--compression", "shared"]).unwrap().serve.to_config();
        assert_eq!(cfg.ws.handshake.deflate, Some(crate::ws::extension::DeflatePolicy::shared()));
        for bad in ["gzip", "dedicated:8", "dedicated:x", "shared:9"] {
            let err = Cli::try_parse_from(["wsloop", "--compression", bad]).unwrap_err().to_string();
            assert!(err.contains("--compression"), "{err}");
        }
        let err = Cli::try_parse_from(["wsloop", "--compression-level", "0"]).unwrap_err().to_string();
        assert!(err.contains("--compression-level"), "{err}");
    }
}
