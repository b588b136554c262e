//! One load process: a single mio loop that opens client connections at a
//! bounded rate to follow the plan, runs the scenario on each, and
//! measures. Clients speak through the same sans-io `ws` layer as the
//! server (client role), and their timers use the same wheel.

use std::collections::VecDeque;
use std::io::{self, Read, Write};
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;
use mio::net::TcpStream;
use mio::{Events, Interest, Poll};
use serde::Deserialize;
use slab::Slab;

use crate::runtime::{token, untoken, Links, TimerLink, TimerWheel};
use crate::ws::client::{generate_key, parse_response_terms, write_request_offering, ClientHandshakeError};
use crate::ws::compression::{CompressionConfig, CompressionMode, Deflaters, Inflaters};
use crate::ws::extension::CLIENT_OFFER;
use crate::ws::frame::opcode;
use crate::ws::{Config, Event, Inflation, Session};

use super::delivery::Delivery;
use super::plan::Plan;
use super::report::{new_histogram, Latency, Report};

/// What each connection does once open.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, serde::Serialize, serde::Deserialize)]
pub enum Scenario {
    /// Connect and hold (answering the server's pings).
    Idle,
    /// Send `{"type":"ping","payload":..}` every interval and check the pong.
    Ping,
    /// Keep `depth` binary messages of `size` bytes in flight; verify echoes.
    Echo,
    /// Connect, one message, close, repeat.
    Churn,
    /// Every connection joins one room; one of them publishes to it at
    /// `--publish-rate`; every other receives. Measures deliveries and
    /// publish-to-delivery latency.
    Fanout,
}

impl Scenario {
    /// The name used in reports.
    pub fn name(self) -> &'static str {
        match self {
            Scenario::Idle => "idle",
            Scenario::Ping => "ping",
            Scenario::Echo => "echo",
            Scenario::Churn => "churn",
            Scenario::Fanout => "fanout",
        }
    }
}

/// Everything one load process needs.
#[derive(Debug, Clone)]
pub struct DriverConfig {
    /// The server's address.
    pub target: SocketAddr,
    /// The Host header.
    pub host: String,
    /// The request path.
    pub path: String,
    /// The scenario.
    pub scenario: Scenario,
    /// Connections over time.
    pub plan: Plan,
    /// New connections per second at most.
    pub rate: u32,
    /// Ping interval.
    pub interval: Duration,
    /// Echo payload size; fanout: about the size of a delivery.
    pub size: usize,
    /// Echo messages in flight per connection.
    pub depth: usize,
    /// Local addresses to connect from, round robin (empty: the kernel picks).
    pub source_ips: Vec<IpAddr>,
    /// Time allowed from connect to 101.
    pub connect_timeout: Duration,
    /// Fanout scenario: messages published per second.
    pub publish_rate: u32,
    /// Fanout scenario: broadcast (`{"type":"broadcast"}`) instead of publish.
    pub broadcast: bool,
    /// Offer permessage-deflate, and compress what is sent when agreed.
    pub compression: bool,
    /// What an echo message carries.
    pub payload: Payload,
    /// `wss://`: the TLS client every connection speaks through.
    pub tls: Option<super::tls::TlsClient>,
}

/// What the echo scenario sends.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Payload {
    /// Binary: the message number, then a byte pattern.
    Pattern,
    /// Text: a JSON chat message (user, room, words), as chat services send.
    Chat,
}

/// Words a chat message is made of: compresses like real chat text.
const WORDS: [&str; 32] = [
    "the", "meeting", "is", "moved", "to", "three", "o'clock", "please", "bring", "your", "notes", "and", "laptop",
    "we", "will", "review", "release", "plan", "for", "next", "week", "thanks", "everyone", "see", "you", "soon",
    "great", "work", "on", "that", "fix", "today",
];

/// The chat echo payload for message `seq`: `size` bytes of JSON (or just
/// over 80, the envelope without text, if `size` is smaller).
fn chat_payload(seq: u64, size: usize, out: &mut Vec<u8>) {
    use std::io::Write as _;
    out.clear();
    let _ = write!(
        out,
        r#"{{"type":"message","room":"team-{}","user":"user-{}","seq":{seq},"text":""#,
        seq % 7,
        seq % 1000
    );
    let envelope = out.len();
    let mut x = seq.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1;
    while out.len() + 2 < size {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        out.extend_from_slice(WORDS[(x % WORDS.len() as u64) as usize].as_bytes());
        out.push(b' ');
    }
    out.truncate(size.saturating_sub(2).max(envelope));
    out.extend_from_slice(br#""}"#);
}

/// A snapshot for the once-a-second progress line.
#[derive(Debug, Clone, Default, serde::Serialize, serde::Deserialize)]
pub struct Progress {
    /// Seconds since the start.
    pub t: f64,
    /// Connections open now.
    pub open: u64,
    /// The plan's target now.
    pub target: u64,
    /// Handshakes completed so far.
    pub established: u64,
    /// Connections failed so far.
    pub failed: u64,
    /// Messages received so far.
    pub received: u64,
    /// This process's anonymous resident memory (bytes) now.
    #[serde(default)]
    pub rss_anon: u64,
    /// Round trips completed since the last snapshot.
    #[serde(default)]
    pub rtt_window: Option<Latency>,
}

const TICK: Duration = Duration::from_millis(10);

/// The timer wheel's tick: fine enough to spread pings over an interval
/// (16 ticks to one), coarse enough that a turn of the wheel (256 ticks)
/// is not much shorter than the interval: a 30 s ping timer on 10 ms ticks
/// was visited 12 times per ping and cost 9 % of the CPU at 1M connections.
fn timer_tick(interval: Duration) -> Duration {
    (interval / 16).clamp(TICK, Duration::from_millis(100))
}
const CLOSE_TIMEOUT: Duration = Duration::from_secs(5);
const WIND_DOWN: Duration = Duration::from_secs(10);
/// Fan-out: how long deliveries must have stopped before members hang up.
const SETTLE_QUIET: Duration = Duration::from_millis(300);
/// Fan-out: the longest members wait for deliveries after the plan ends.
const SETTLE_MAX: Duration = Duration::from_secs(5);

/// Fan-out, after the plan ends: publishing has stopped, and the members
/// stay until deliveries have stopped arriving (quiet for
/// [`SETTLE_QUIET`], at most [`SETTLE_MAX`]), so that "delivered" counts
/// what the server delivers, not what was in flight when the client hung up.
struct Settling {
    since: Instant,
    received: u64,
    changed: Instant,
}

impl Settling {
    fn new(now: Instant, received: u64) -> Settling {
        Settling { since: now, received, changed: now }
    }

    /// True once the members may hang up, given the messages received now.
    fn done(&mut self, now: Instant, received: u64) -> bool {
        if received != self.received {
            (self.received, self.changed) = (received, now);
        }
        now - self.changed >= SETTLE_QUIET || now - self.since >= SETTLE_MAX
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    Connecting,
    Handshaking,
    Open,
    /// We sent a close frame.
    Closing,
    /// The close handshake is over; waiting for the server's FIN.
    Draining,
}

struct Client {
    socket: TcpStream,
    /// `wss://`: the TLS session (it buffers records both ways; `wbuf` is
    /// then unused).
    tls: Option<Box<rustls::ClientConnection>>,
    state: State,
    session: Session,
    key: [u8; 24],
    started: Instant,
    rbuf: Vec<u8>,
    wbuf: Vec<u8>,
    assembly: Vec<u8>,
    inflight: VecDeque<(u64, Instant)>,
    seq: u64,
    generation: u32,
    timer: TimerLink,
}

impl Links for Slab<Client> {
    fn link(&mut self, slot: u32) -> &mut TimerLink {
        &mut self[slot as usize].timer
    }
}

#[derive(Deserialize)]
struct Pong<'a> {
    #[serde(rename = "type")]
    kind: &'a str,
    payload: Option<&'a str>,
}

/// The echo payload for message `seq`: its number, then a pattern.
fn echo_payload(seq: u64, size: usize, out: &mut Vec<u8>) {
    out.clear();
    out.extend((0..size).map(|i| (i as u64).wrapping_mul(31).wrapping_add(seq) as u8));
    let n = size.min(8);
    out[..n].copy_from_slice(&seq.to_le_bytes()[..n]);
}

fn connect_error_reason(e: &io::Error) -> &'static str {
    match e.raw_os_error() {
        Some(libc::ECONNREFUSED) => "refused",
        Some(libc::ETIMEDOUT) => "timeout",
        Some(libc::ECONNRESET) | Some(libc::EPIPE) => "reset",
        Some(libc::EADDRNOTAVAIL) => "no_local_ports",
        Some(libc::EMFILE) | Some(libc::ENFILE) => "client_fd_limit",
        _ => "connect_error",
    }
}

/// What a non-blocking write's result means to the loop writing.
enum Wrote {
    /// It took this many bytes.
    Bytes(usize),
    /// The socket is full (or not connected yet): wait for a writable event.
    Blocked,
    /// Interrupted: try again.
    Again,
    /// The connection is broken, for this reason.
    Failed(&'static str),
}

impl Wrote {
    fn of(result: io::Result<usize>) -> Wrote {
        match result {
            Ok(n) => Wrote::Bytes(n),
            Err(e) if matches!(e.kind(), io::ErrorKind::WouldBlock | io::ErrorKind::NotConnected) => Wrote::Blocked,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => Wrote::Again,
            Err(e) => Wrote::Failed(connect_error_reason(&e)),
        }
    }
}

/// Why a TLS read gave no plaintext.
enum TlsRead {
    /// The socket's error (`WouldBlock` included).
    Io(io::Error),
    /// The server closed the connection (FIN, or close_notify).
    Eof,
    /// The records were bad.
    Tls(rustls::Error),
}

/// Reads records off `socket` into `tls` and its plaintext into `rbuf`;
/// the ciphertext bytes read.
fn read_tls(tls: &mut rustls::ClientConnection, socket: &mut TcpStream, rbuf: &mut Vec<u8>) -> Result<usize, TlsRead> {
    let n = match tls.read_tls(socket) {
        Ok(0) => return Err(TlsRead::Eof),
        Ok(n) => n,
        Err(e) => return Err(TlsRead::Io(e)),
    };
    let state = tls.process_new_packets().map_err(TlsRead::Tls)?;
    let mut plain = state.plaintext_bytes_to_read();
    while plain > 0 {
        let start = rbuf.len();
        rbuf.resize(start + plain, 0);
        let got = tls.reader().read(&mut rbuf[start..]).unwrap_or(0);
        rbuf.truncate(start + got);
        if got == 0 {
            break;
        }
        plain -= got;
    }
    if state.peer_has_closed() && rbuf.is_empty() {
        return Err(TlsRead::Eof);
    }
    Ok(n)
}

/// Opens a non-blocking connection to `target` from `source`.
fn open_socket(target: SocketAddr, source: Option<IpAddr>) -> io::Result<TcpStream> {
    use socket2::{Domain, Socket, Type};
    let socket = Socket::new(Domain::for_address(target), Type::STREAM, None)?;
    socket.set_nonblocking(true)?;
    socket.set_tcp_nodelay(true)?;
    if let Some(ip) = source {
        // Let connect() pick the port per destination, so one source address
        // serves far more than 64k connections across destinations.
        let on: libc::c_int = 1;
        // SAFETY: a valid fd and a pointer to a live c_int of the right size.
        unsafe {
            libc::setsockopt(
                std::os::fd::AsRawFd::as_raw_fd(&socket),
                libc::IPPROTO_IP,
                libc::IP_BIND_ADDRESS_NO_PORT,
                (&on as *const libc::c_int).cast(),
                std::mem::size_of::<libc::c_int>() as libc::socklen_t,
            );
        }
        socket.bind(&SocketAddr::new(ip, 0).into())?;
    }
    match socket.connect(&target.into()) {
        Ok(()) => {}
        Err(e) if e.raw_os_error() == Some(libc::EINPROGRESS) => {}
        Err(e) => return Err(e),
    }
    Ok(TcpStream::from_std(socket.into()))
}

/// This process's anonymous resident memory, 0 where /proc cannot say.
pub fn own_anon_bytes() -> u64 {
    crate::tune::procfs::resident_anon_bytes(std::path::Path::new("/proc/self/status")).unwrap_or(0)
}

/// The driver's state. See the module docs.
struct Driver<'a> {
    cfg: &'a DriverConfig,
    poll: Poll,
    clients: Slab<Client>,
    wheel: TimerWheel,
    ws: Config,
    report: Report,
    handshake: Histogram<u64>,
    rtt: Histogram<u64>,
    /// Round trips since the last progress snapshot (per-second p99).
    rtt_window: Histogram<u64>,
    /// Round trips while the plan holds its peak (`at_peak`).
    rtt_at_peak: Histogram<u64>,
    /// The plan's target is its peak now (a hold, not a ramp).
    at_peak: bool,
    live: u64,
    open: u64,
    next_generation: u32,
    next_source: usize,
    out: Vec<u8>,
    scratch: Vec<u8>,
    expired: Vec<u32>,
    /// Fanout: the connection that publishes.
    publisher: Option<usize>,
    /// Fanout: join acknowledgements received.
    joined: u64,
    /// Fanout: the clock (µs since the epoch) at the current socket read,
    /// once a delivery in it needed it.
    read_at_us: Option<u128>,
    /// permessage-deflate, when agreed: the client's codecs (shared, or a
    /// connection's own where it keeps a window), keyed by slot.
    deflaters: Deflaters,
    inflaters: Inflaters,
}

/// Runs one load process to the end of its plan (or until `stop`), calling
/// `on_second` once a second.
pub fn run(cfg: &DriverConfig, stop: &AtomicBool, mut on_second: impl FnMut(&Progress)) -> io::Result<Report> {
    let mut d = Driver {
        cfg,
        poll: Poll::new()?,
        clients: Slab::new(),
        wheel: TimerWheel::new(timer_tick(cfg.interval)),
        ws: Config::default(),
        report: Report { scenario: cfg.scenario.name().into(), processes: 1, ..Report::default() },
        handshake: new_histogram(),
        rtt: new_histogram(),
        rtt_window: new_histogram(),
        rtt_at_peak: new_histogram(),
        at_peak: false,
        live: 0,
        open: 0,
        next_generation: 0,
        next_source: 0,
        out: Vec::new(),
        scratch: Vec::new(),
        expired: Vec::new(),
        publisher: None,
        read_at_us: None,
        joined: 0,
        // The client compresses every message that gets smaller.
        deflaters: Deflaters::new(CompressionConfig {
            mode: CompressionMode::Shared,
            threshold: 0,
            level: 3,
            max_dedicated: 0,
        }),
        inflaters: Inflaters::default(),
    };
    let mut publish_credit = 0.0f64;
    let start = Instant::now();
    let plan_end = cfg.plan.duration();
    let peak = cfg.plan.peak();
    let mut events = Events::with_capacity(1024);
    let mut tokens = 0.0f64;
    let mut last_tick = start;
    let mut next_second = start + Duration::from_secs(1);
    let mut wind_down: Option<Instant> = None;
    let mut settling: Option<Settling> = None;
    loop {
        if let Err(e) = d.poll.poll(&mut events, Some(TICK)) {
            if e.kind() != io::ErrorKind::Interrupted {
                return Err(e);
            }
        }
        for event in events.iter() {
            let (slot, generation) = untoken(event.token());
            if d.clients.get(slot).is_none_or(|c| c.generation != generation) {
                continue;
            }
            if event.is_writable() {
                d.on_writable(slot);
            }
            if d.clients.contains(slot) && (event.is_readable() || event.is_read_closed() || event.is_error()) {
                d.on_readable(slot, event.is_read_closed() || event.is_error());
            }
        }
        let now = Instant::now();
        let elapsed = now - start;
        d.at_peak = wind_down.is_none() && cfg.plan.target_at(elapsed) == peak && peak > 0;
        d.fire_timers(now);
        let stopped = stop.load(Ordering::Relaxed);
        let ended = elapsed >= plan_end || stopped;
        if wind_down.is_none() && ended {
            let received = d.report.messages_received;
            let settled = cfg.scenario != Scenario::Fanout
                || stopped
                || settling.get_or_insert_with(|| Settling::new(now, received)).done(now, received);
            if settled {
                d.report.interrupted = stopped && elapsed < plan_end;
                wind_down = Some(now + WIND_DOWN);
                d.close_clients(usize::MAX);
            }
        }
        match wind_down {
            Some(deadline) => {
                if d.clients.is_empty() || now >= deadline {
                    break;
                }
            }
            // Fan-out settling: nothing opens, closes or publishes.
            None if ended => {}
            None => {
                let dt = (now - last_tick).as_secs_f64();
                tokens = (tokens + dt * f64::from(cfg.rate)).min(f64::from(cfg.rate) / 10.0 + 1.0);
                let target = cfg.plan.target_at(elapsed) as u64;
                if d.live < target {
                    let n = ((target - d.live) as f64).min(tokens.floor()) as u64;
                    tokens -= n as f64;
                    for _ in 0..n {
                        d.open_one();
                    }
                } else if d.live > target {
                    d.close_clients((d.live - target) as usize);
                }
                // Fanout publishes once every connection of the plan has joined.
                if cfg.scenario == Scenario::Fanout && d.joined >= cfg.plan.peak() as u64 {
                    publish_credit += dt * f64::from(cfg.publish_rate);
                    let n = publish_credit.floor();
                    publish_credit -= n;
                    d.publish(n as u64);
                }
            }
        }
        last_tick = now;
        if now >= next_second {
            next_second += Duration::from_secs(1);
            let p = Progress {
                t: elapsed.as_secs_f64(),
                open: d.open,
                target: cfg.plan.target_at(elapsed) as u64,
                established: d.report.established,
                failed: d.report.failures(),
                received: d.report.messages_received,
                rss_anon: own_anon_bytes(),
                rtt_window: (!d.rtt_window.is_empty()).then(|| Latency::from_hist(&d.rtt_window)),
            };
            d.rtt_window.reset();
            d.report.peak_open = d.report.peak_open.max(d.open);
            on_second(&p);
        }
    }
    // Whatever is left after the wind-down deadline is dropped.
    let leftover: Vec<usize> = d.clients.iter().map(|(s, _)| s).collect();
    for slot in leftover {
        d.remove(slot);
    }
    d.report.duration_secs = start.elapsed().as_secs_f64();
    d.report.handshake = Some(Latency::from_hist(&d.handshake));
    d.report.rtt = Some(Latency::from_hist(&d.rtt));
    d.report.rtt_at_peak = (!d.rtt_at_peak.is_empty()).then(|| Latency::from_hist(&d.rtt_at_peak));
    Ok(d.report)
}

impl Driver<'_> {
    fn open_one(&mut self) {
        let source = if self.cfg.source_ips.is_empty() {
            None
        } else {
            self.next_source = (self.next_source + 1) % self.cfg.source_ips.len();
            Some(self.cfg.source_ips[self.next_source])
        };
        let mut socket = match open_socket(self.cfg.target, source) {
            Ok(s) => s,
            Err(e) => return self.count_failure(connect_error_reason(&e)),
        };
        let generation = self.next_generation;
        self.next_generation = self.next_generation.wrapping_add(1);
        let entry = self.clients.vacant_entry();
        let slot = entry.key();
        let token = token(slot, generation);
        if let Err(e) = self.poll.registry().register(&mut socket, token, Interest::READABLE | Interest::WRITABLE) {
            return self.count_failure(connect_error_reason(&e));
        }
        let tls = match &self.cfg.tls {
            None => None,
            Some(t) => match rustls::ClientConnection::new(t.config.clone(), t.server_name.clone()) {
                Ok(mut session) => {
                    // What is sent is bounded by the plan (depth, sizes);
                    // rustls' default cap would refuse bytes mid-message.
                    session.set_buffer_limit(None);
                    Some(Box::new(session))
                }
                Err(e) => return self.count_failure(super::tls::failure_reason(&e)),
            },
        };
        entry.insert(Client {
            socket,
            tls,
            state: State::Connecting,
            session: Session::client(),
            key: generate_key(),
            started: Instant::now(),
            rbuf: Vec::new(),
            wbuf: Vec::new(),
            assembly: Vec::new(),
            inflight: VecDeque::new(),
            seq: 0,
            generation,
            timer: TimerLink::default(),
        });
        self.live += 1;
        let deadline = self.wheel.now() + self.wheel.ticks(self.cfg.connect_timeout);
        self.wheel.schedule(&mut self.clients, slot as u32, deadline);
    }

    fn count_failure(&mut self, reason: &str) {
        *self.report.failed.entry(reason.to_string()).or_default() += 1;
    }

    fn count_server_close(&mut self, reason: String) {
        *self.report.server_closed.entry(reason).or_default() += 1;
    }

    /// Removes a client, keeping the live/open counts right.
    fn remove(&mut self, slot: usize) {
        self.wheel.remove(&mut self.clients, slot as u32);
        self.deflaters.forget(slot as u32);
        self.inflaters.forget(slot as u32);
        let c = self.clients.remove(slot);
        match c.state {
            State::Connecting | State::Handshaking => self.live -= 1,
            State::Open => {
                self.live -= 1;
                self.open -= 1;
            }
            State::Closing | State::Draining => {}
        }
    }

    fn fail(&mut self, slot: usize, reason: &str) {
        self.count_failure(reason);
        self.remove(slot);
    }

    /// Begins closing up to `n` open clients (and drops connecting ones
    /// when `n` is everything).
    fn close_clients(&mut self, n: usize) {
        let all = n == usize::MAX;
        let mut chosen = Vec::new();
        for (slot, c) in self.clients.iter() {
            if chosen.len() >= n {
                break;
            }
            if c.state == State::Open || (all && matches!(c.state, State::Connecting | State::Handshaking)) {
                chosen.push(slot);
            }
        }
        for slot in chosen {
            if self.clients[slot].state == State::Open {
                self.begin_close(slot);
            } else {
                self.remove(slot);
            }
        }
    }

    fn begin_close(&mut self, slot: usize) {
        let c = &mut self.clients[slot];
        c.session.write_close(&mut self.out, 1000, "load done");
        c.state = State::Closing;
        self.live -= 1;
        self.open -= 1;
        let deadline = self.wheel.now() + self.wheel.ticks(CLOSE_TIMEOUT);
        self.wheel.schedule(&mut self.clients, slot as u32, deadline);
        self.flush(slot);
    }

    fn on_writable(&mut self, slot: usize) {
        if self.clients[slot].state == State::Connecting {
            let c = &mut self.clients[slot];
            match c.socket.take_error() {
                Ok(Some(e)) | Err(e) => return self.fail(slot, connect_error_reason(&e)),
                Ok(None) => {}
            }
            if c.socket.peer_addr().is_err() {
                return; // not connected yet
            }
            let host = self.cfg.host.clone();
            let offer = self.cfg.compression.then_some(CLIENT_OFFER);
            write_request_offering(&mut self.out, &host, &self.cfg.path, &c.key, offer);
            c.state = State::Handshaking;
        }
        self.flush(slot);
    }

    /// Writes `self.out` after the client's backlog; drops the client on error.
    fn flush(&mut self, slot: usize) {
        let c = &mut self.clients[slot];
        if let Some(tls) = &mut c.tls {
            // Before the handshake is done rustls keeps the plaintext.
            if !self.out.is_empty() {
                // Without a buffer limit rustls takes every byte.
                let taken = tls.writer().write_all(&self.out);
                debug_assert!(taken.is_ok(), "rustls refused plaintext: {taken:?}");
                self.out.clear();
            }
            while tls.wants_write() {
                match Wrote::of(tls.write_tls(&mut c.socket)) {
                    Wrote::Bytes(_) | Wrote::Again => {}
                    Wrote::Blocked => break,
                    Wrote::Failed(reason) => return self.lost(slot, reason),
                }
            }
            return;
        }
        c.wbuf.extend_from_slice(&self.out);
        self.out.clear();
        let mut written = 0;
        while written < c.wbuf.len() {
            match Wrote::of(c.socket.write(&c.wbuf[written..])) {
                Wrote::Bytes(n) => written += n,
                Wrote::Again => {}
                Wrote::Blocked => break,
                Wrote::Failed(reason) => return self.lost(slot, reason),
            }
        }
        c.wbuf.drain(..written);
        if c.wbuf.is_empty() && c.wbuf.capacity() > 4096 {
            c.wbuf = Vec::new();
        }
    }

    /// The connection broke: a failure before the 101, a server-side close
    /// while open, nothing while we were closing.
    fn lost(&mut self, slot: usize, reason: &str) {
        match self.clients[slot].state {
            State::Connecting | State::Handshaking => self.fail(slot, reason),
            State::Open => {
                self.count_server_close(if reason == "reset" { "reset".into() } else { "dropped".into() });
                self.remove(slot);
            }
            State::Closing | State::Draining => self.remove(slot),
        }
    }

    /// Reads until the socket is empty. A short read empties it: with edge
    /// triggering, more data brings a new event, so the read that would only
    /// say EAGAIN is skipped (one syscall less per delivery), unless the
    /// event said the peer's FIN is in (`peer_closed`): its EOF must be read.
    fn on_readable(&mut self, slot: usize, peer_closed: bool) {
        let mut chunk = [0u8; 16 * 1024];
        loop {
            self.read_at_us = None;
            let c = &mut self.clients[slot];
            if c.state == State::Connecting {
                return;
            }
            let read = match &mut c.tls {
                None => c.socket.read(&mut chunk),
                Some(tls) => match read_tls(tls, &mut c.socket, &mut c.rbuf) {
                    Ok(n) => {
                        // The handshake's answers, a close_notify's reply.
                        if tls.wants_write() {
                            self.flush(slot);
                            if !self.clients.contains(slot) {
                                return;
                            }
                        }
                        if n > 0 && !self.process_input(slot) {
                            return;
                        }
                        continue;
                    }
                    Err(TlsRead::Io(e)) => Err(e),
                    Err(TlsRead::Eof) => Ok(0),
                    Err(TlsRead::Tls(e)) => {
                        // Our alert goes out first.
                        self.flush(slot);
                        if self.clients.contains(slot) {
                            self.lost(slot, super::tls::failure_reason(&e));
                        }
                        return;
                    }
                },
            };
            let c = &mut self.clients[slot];
            match read {
                Ok(0) => {
                    let state = c.state;
                    return match state {
                        State::Draining | State::Closing => self.remove(slot),
                        State::Handshaking => self.fail(slot, "reset"),
                        _ => self.lost(slot, "dropped"),
                    };
                }
                Ok(n) => {
                    c.rbuf.extend_from_slice(&chunk[..n]);
                    if !self.process_input(slot) || (n < chunk.len() && !peer_closed) {
                        return;
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => {
                    let reason = connect_error_reason(&e);
                    return self.lost(slot, reason);
                }
            }
        }
    }

    /// Handles what is buffered; false if the client is gone.
    fn process_input(&mut self, slot: usize) -> bool {
        if self.clients[slot].state == State::Handshaking {
            let c = &mut self.clients[slot];
            match parse_response_terms(&c.rbuf, &c.key, self.cfg.compression) {
                Ok(None) => return true,
                Ok(Some(accepted)) => {
                    c.rbuf.drain(..accepted.len);
                    if let Some(terms) = accepted.deflate {
                        c.session.enable_deflate(&terms);
                        self.deflaters.agreed(slot as u32, &terms.mirrored());
                        self.inflaters.agreed(slot as u32, &terms.mirrored());
                    }
                    c.state = State::Open;
                    let took = c.started.elapsed();
                    let _ = self.handshake.record(took.as_micros().max(1) as u64);
                    self.report.established += 1;
                    self.open += 1;
                    self.on_open(slot);
                }
                Err(ClientHandshakeError::Status(s)) => {
                    self.fail(slot, &format!("status_{s}"));
                    return false;
                }
                Err(_) => {
                    self.fail(slot, "bad_handshake");
                    return false;
                }
            }
        }
        // The buffers leave the client while its events are handled, so a
        // message is handed on as a slice of them, never copied.
        let mut rbuf = std::mem::take(&mut self.clients[slot].rbuf);
        let mut assembly = std::mem::take(&mut self.clients[slot].assembly);
        let mut inflated = Vec::new();
        let mut pos = 0;
        let mut alive = true;
        loop {
            let c = &mut self.clients[slot];
            let mut inflater = self.inflaters.for_conn(slot as u32);
            let inflation =
                c.session.deflate_window().map(|_| Inflation { inflater: &mut inflater, output: &mut inflated });
            let decoded =
                c.session.decode_inflating(&mut rbuf[pos..], &mut assembly, &mut self.out, &self.ws, inflation);
            let d = match decoded {
                Ok(d) => d,
                Err(e) => {
                    self.count_server_close(format!("protocol_{}", e.label()));
                    self.flush(slot);
                    if self.clients.contains(slot) {
                        self.remove_counted(slot);
                    }
                    alive = false;
                    break;
                }
            };
            pos += d.consumed;
            let Some(event) = d.event else { break };
            match event {
                Event::Text(t) => self.on_message(slot, t.as_bytes(), true),
                Event::Binary(b) => self.on_message(slot, b, false),
                Event::Close { code, .. } => {
                    let c = &mut self.clients[slot];
                    if c.state == State::Open {
                        let code = code.map_or("close_no_code".to_string(), |c| format!("close_{c}"));
                        self.count_server_close(code);
                        self.live -= 1;
                        self.open -= 1;
                    }
                    self.clients[slot].state = State::Draining;
                    let deadline = self.wheel.now() + self.wheel.ticks(CLOSE_TIMEOUT);
                    self.wheel.schedule(&mut self.clients, slot as u32, deadline);
                }
                Event::Ping(_) | Event::Pong(_) | Event::Upgrade(_) => {}
            }
            if !self.clients.contains(slot) {
                alive = false;
                break;
            }
        }
        if alive {
            rbuf.drain(..pos);
            self.clients[slot].rbuf = rbuf;
            self.clients[slot].assembly = assembly;
            if !self.out.is_empty() {
                self.flush(slot);
            }
            alive = self.clients.contains(slot);
        }
        alive
    }

    /// Removes a client after a protocol failure (already counted).
    fn remove_counted(&mut self, slot: usize) {
        if self.clients[slot].state == State::Open {
            self.live -= 1;
            self.open -= 1;
            self.clients[slot].state = State::Draining;
        }
        self.remove(slot);
    }

    fn on_open(&mut self, slot: usize) {
        match self.cfg.scenario {
            Scenario::Idle => {
                // No deadline while holding: the server's pings keep it honest.
                self.wheel.remove(&mut self.clients, slot as u32);
            }
            Scenario::Ping => {
                let spread = self.wheel.ticks(self.cfg.interval).max(1);
                let first = (crate::ws::mask::random_u64() % u64::from(spread)) as u32 + 1;
                let deadline = self.wheel.now() + first;
                self.wheel.schedule(&mut self.clients, slot as u32, deadline);
            }
            Scenario::Echo => {
                self.wheel.remove(&mut self.clients, slot as u32);
                for _ in 0..self.cfg.depth.max(1) {
                    self.send_echo(slot);
                }
                self.flush(slot);
            }
            Scenario::Churn => {
                self.wheel.remove(&mut self.clients, slot as u32);
                self.send_text(slot, "churn".into());
                self.flush(slot);
            }
            Scenario::Fanout => {
                self.wheel.remove(&mut self.clients, slot as u32);
                self.publisher.get_or_insert(slot);
                self.write(slot, opcode::TEXT, br#"{"type":"join","room":"fanout"}"#);
                self.flush(slot);
            }
        }
    }

    /// Fanout: publishes `n` messages from the publisher, each carrying its
    /// send time (µs since the epoch, padded to a 64-byte delivery).
    fn publish(&mut self, n: u64) {
        let Some(slot) = self.publisher.filter(|s| self.clients.get(*s).is_some_and(|c| c.state == State::Open)) else {
            return;
        };
        for _ in 0..n {
            let us = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_micros());
            // The data: the send time, then chat words up to a delivery of
            // about --size bytes (64 at least: the envelope).
            let mut data = format!("{us:0>18}");
            let mut x = us as u64 | 1;
            while data.len() + 46 < self.cfg.size {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                data.push(' ');
                data.push_str(WORDS[(x % WORDS.len() as u64) as usize]);
            }
            let text = if self.cfg.broadcast {
                format!(r#"{{"type":"broadcast","echo":false,"data":"{data}"}}"#)
            } else {
                format!(r#"{{"type":"publish","room":"fanout","echo":false,"data":"{data}"}}"#)
            };
            if self.write(slot, opcode::TEXT, text.as_bytes()) {
                self.report.messages_sent += 1;
                self.report.bytes_sent += text.len() as u64;
            }
        }
        self.flush(slot);
    }

    /// Fanout: a subscriber got a message (or its join ack). The time it
    /// arrived is the clock read once per socket read (every delivery in
    /// that read had arrived by then), not once per delivery.
    fn on_fanout(&mut self, payload: &[u8]) {
        match Delivery::of(payload) {
            Some(Delivery::Joined) => self.joined += 1,
            Some(Delivery::SentAt(sent_us)) => {
                let now = *self.read_at_us.get_or_insert_with(|| {
                    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_micros())
                });
                self.record_rtt(now.saturating_sub(sent_us).max(1) as u64);
            }
            None => self.report.mismatches += 1,
        }
    }

    fn send_text(&mut self, slot: usize, text: String) {
        let c = &mut self.clients[slot];
        c.seq += 1;
        c.inflight.push_back((c.seq, Instant::now()));
        if self.write(slot, opcode::TEXT, text.as_bytes()) {
            self.report.messages_sent += 1;
            self.report.bytes_sent += text.len() as u64;
        }
    }

    fn send_echo(&mut self, slot: usize) {
        self.clients[slot].seq += 1;
        let seq = self.clients[slot].seq;
        let op = self.fill_echo(seq);
        self.clients[slot].inflight.push_back((seq, Instant::now()));
        let scratch = std::mem::take(&mut self.scratch);
        if self.write(slot, op, &scratch) {
            self.report.messages_sent += 1;
            self.report.bytes_sent += scratch.len() as u64;
        }
        self.scratch = scratch;
    }

    /// Puts echo message `seq` in `scratch`; returns its opcode.
    fn fill_echo(&mut self, seq: u64) -> u8 {
        match self.cfg.payload {
            Payload::Pattern => {
                echo_payload(seq, self.cfg.size, &mut self.scratch);
                opcode::BINARY
            }
            Payload::Chat => {
                chat_payload(seq, self.cfg.size, &mut self.scratch);
                opcode::TEXT
            }
        }
    }

    /// Appends one message for the client in `slot`, compressed if agreed.
    fn write(&mut self, slot: usize, op: u8, payload: &[u8]) -> bool {
        self.deflaters.write(slot as u32, &self.clients[slot].session, &mut self.out, op, payload)
    }

    fn send_ping(&mut self, slot: usize) {
        let c = &self.clients[slot];
        let text = format!(r#"{{"type":"ping","payload":"g{}-{}"}}"#, c.generation, c.seq + 1);
        self.send_text(slot, text);
        self.flush(slot);
    }

    fn on_message(&mut self, slot: usize, payload: &[u8], is_text: bool) {
        self.report.messages_received += 1;
        self.report.bytes_received += payload.len() as u64;
        let c = &mut self.clients[slot];
        if c.state != State::Open {
            return;
        }
        if self.cfg.scenario == Scenario::Fanout {
            return self.on_fanout(payload);
        }
        let Some((seq, sent)) = c.inflight.pop_front() else {
            self.report.mismatches += 1;
            return;
        };
        let matches = match self.cfg.scenario {
            Scenario::Ping => std::str::from_utf8(payload)
                .ok()
                .and_then(|t| serde_json::from_str::<Pong<'_>>(t).ok())
                .is_some_and(|p| p.kind == "pong" && p.payload == Some(&format!("g{}-{seq}", c.generation))),
            Scenario::Echo => {
                let op = self.fill_echo(seq);
                is_text == (op == opcode::TEXT) && payload == self.scratch.as_slice()
            }
            Scenario::Churn => is_text && payload == b"churn",
            Scenario::Idle | Scenario::Fanout => true,
        };
        if !matches {
            self.report.mismatches += 1;
            return;
        }
        self.record_rtt(sent.elapsed().as_micros().max(1) as u64);
        match self.cfg.scenario {
            Scenario::Echo => {
                self.send_echo(slot);
            }
            Scenario::Churn => self.begin_close(slot),
            Scenario::Ping | Scenario::Idle | Scenario::Fanout => {}
        }
    }

    /// One round trip, in µs: into the run's histogram and this second's.
    fn record_rtt(&mut self, micros: u64) {
        let _ = self.rtt.record(micros);
        let _ = self.rtt_window.record(micros);
        if self.at_peak {
            let _ = self.rtt_at_peak.record(micros);
        }
    }

    fn fire_timers(&mut self, now: Instant) {
        let tick = self.wheel.tick_at(now);
        let mut expired = std::mem::take(&mut self.expired);
        self.wheel.advance(&mut self.clients, tick, &mut expired);
        for slot in expired.drain(..) {
            let slot = slot as usize;
            match self.clients[slot].state {
                State::Connecting | State::Handshaking => self.fail(slot, "timeout"),
                State::Closing | State::Draining => self.remove(slot),
                State::Open => {
                    // Only the ping scenario keeps a timer while open.
                    let c = &mut self.clients[slot];
                    if let Some((_, sent)) = c.inflight.front() {
                        if sent.elapsed() >= self.cfg.interval {
                            self.report.pong_timeouts += c.inflight.len() as u64;
                            c.inflight.clear();
                        }
                    }
                    self.send_ping(slot);
                    if self.clients.contains(slot) {
                        let deadline = self.wheel.now() + self.wheel.ticks(self.cfg.interval);
                        self.wheel.schedule(&mut self.clients, slot as u32, deadline);
                    }
                }
            }
        }
        self.expired = expired;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fanout_members_hang_up_once_deliveries_stop_or_at_the_bound() {
        let ms = Duration::from_millis;
        let t0 = Instant::now();
        let mut s = Settling::new(t0, 100);
        assert!(!s.done(t0 + ms(200), 150), "deliveries still arriving");
        assert!(!s.done(t0 + ms(400), 150), "quiet for 200 ms only");
        assert!(s.done(t0 + ms(500), 150), "quiet for 300 ms");
        let mut busy = Settling::new(t0, 0);
        for i in 1..50 {
            assert!(!busy.done(t0 + ms(100 * i), i), "deliveries at {} ms", 100 * i);
        }
        assert!(busy.done(t0 + SETTLE_MAX, 50), "the bound");
    }

    #[test]
    fn chat_payloads_are_json_of_the_asked_size() {
        for size in [100, 200, 1000, 2000] {
            let mut out = Vec::new();
            chat_payload(size as u64, size, &mut out);
            assert_eq!(out.len(), size);
            let v: serde_json::Value = serde_json::from_slice(&out).unwrap();
            assert_eq!(v["type"], "message");
        }
    }

    #[test]
    fn echo_payloads_differ_by_sequence() {
        let (mut a, mut b) = (Vec::new(), Vec::new());
        echo_payload(1, 64, &mut a);
        echo_payload(2, 64, &mut b);
        assert_eq!(a.len(), 64);
        assert_ne!(a, b);
        echo_payload(3, 4, &mut a);
        assert_eq!(a.len(), 4);
    }
}
