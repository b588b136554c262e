//! The metrics port's HTTP/1.1 server: `/metrics` and `/healthz` on a
//! thread of its own, over its own mio poll, that no peer can starve.
//!
//! A load balancer marks the host down when `/healthz` goes unanswered, so
//! the port must answer while it is flooded with idle, slow or half-sent
//! connections. What keeps it so:
//!
//! - **Slots**: up to [`MAX_CONNECTIONS`] connections are held at once, all
//!   non-blocking on one poll. A new connection always gets a slot: past
//!   the bound (or when the process is out of descriptors) one is closed to
//!   make room, the first found of: the oldest one already answered and
//!   closing, else the oldest one that has not sent a complete request
//!   head, else the oldest one still taking its reply. A flood of idle
//!   sockets therefore only ever pushes out its own oldest members.
//! - **Deadlines** that bytes do not extend: [`HEAD_DEADLINE`] from accept
//!   to a complete request head (a slow loris gets no more for dribbling),
//!   [`REPLY_DEADLINE`] from then for the peer to take the whole reply.
//! - **Bounds**: a head of at most [`MAX_HEAD`] bytes (else 431); one
//!   request per connection (`Connection: close`), so a slot's life is
//!   bounded by the two deadlines plus a one-second linger for the peer's
//!   FIN; a scrape every few seconds costs one TCP handshake, nothing.
//! - **No blocking**: replies are written as the socket takes them, so a
//!   slow reader of `/metrics` holds its own slot, never the thread.
//!
//! Every closing the peer did not ask for is counted
//! (`wsloop_metrics_http_*`, README, Metrics).
//!
//! Why our own code and not a crate: hyper would bring an async runtime
//! (tokio) this crate does not otherwise run, for two paths, and the slot
//! bound and its eviction order would still be ours to write; tiny_http
//! serves each connection with blocking reads on a thread of a pool, so
//! idle sockets hold threads, and a socket read timeout is re-armed by
//! every dribbled byte. mio and httparse are already the engine's; what is
//! left is this file and `head.rs`.

use std::collections::VecDeque;
use std::io::{self, Read, Write};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};
use std::sync::Arc;
use std::time::{Duration, Instant};

use mio::net::{TcpListener, TcpStream};
use mio::{Events, Interest, Poll, Token};
use slab::Slab;

pub use super::head::MAX_HEAD;
use super::head::{self, Head, Refusal};

/// Connections the metrics port holds at once; past it the oldest
/// evictable one is closed to make room (module doc).
pub const MAX_CONNECTIONS: usize = 1024;
/// Time from accept to a complete request head; dribbled bytes do not
/// extend it.
pub const HEAD_DEADLINE: Duration = Duration::from_secs(3);
/// Time from a complete head for the peer to take the whole reply.
pub const REPLY_DEADLINE: Duration = Duration::from_secs(10);
/// Time an answered connection waits for the peer's FIN (so that closing
/// sends FIN, not a reset that could destroy the reply in flight).
const LINGER: Duration = Duration::from_secs(1);
/// Bytes read and dropped after the reply before closing anyway.
const LINGER_DISCARD: usize = 64 * 1024;
/// How soon accepting is tried again after it failed (out of descriptors).
const ACCEPT_RETRY: Duration = Duration::from_millis(50);
/// The listen backlog: a burst of connections waits in the kernel, not refused.
const BACKLOG: i32 = 1024;
/// The longest poll wait, so the stop flag is seen at least this often.
const IDLE_WAKE: Duration = Duration::from_secs(1);
const LISTENER: Token = Token(usize::MAX);

/// What the server answers for a path: status, content type, body.
pub(crate) type Responder = Box<dyn Fn(&str) -> (u16, &'static str, Vec<u8>) + Send>;

/// The bounds one server keeps: [`Limits::DEFAULT`] in the binary, smaller
/// ones in tests.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Limits {
    pub(crate) max_connections: usize,
    pub(crate) head_deadline: Duration,
    pub(crate) reply_deadline: Duration,
}

impl Limits {
    /// The public constants above.
    pub(crate) const DEFAULT: Limits =
        Limits { max_connections: MAX_CONNECTIONS, head_deadline: HEAD_DEADLINE, reply_deadline: REPLY_DEADLINE };
}

/// Where a connection is in its one exchange; each phase has its deadline
/// and its queue in deadline order.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Phase {
    /// Reading the request head.
    Head = 0,
    /// Writing the reply.
    Reply = 1,
    /// Answered; waiting for the peer's FIN.
    Closing = 2,
}

impl Phase {
    const ALL: [Phase; 3] = [Phase::Head, Phase::Reply, Phase::Closing];

    /// The `phase` label of the metrics.
    pub(crate) fn label(self) -> &'static str {
        match self {
            Phase::Head => "head",
            Phase::Reply => "reply",
            Phase::Closing => "closing",
        }
    }
}

/// What the server refused, evicted and timed out, for `/metrics`. Written
/// by the metrics thread only, read at scrape time.
#[derive(Default, Debug)]
pub(crate) struct HttpStats {
    /// Connections held now.
    pub(crate) connections: AtomicU64,
    /// Connections closed to make room, by the phase they were in.
    pub(crate) evicted: [AtomicU64; 3],
    /// Connections closed at their deadline, by phase (`Closing`'s is the
    /// linger, not counted).
    pub(crate) timeouts: [AtomicU64; 3],
    /// Requests refused, by [`Refusal`] (in `Refusal::ALL` order).
    pub(crate) refused: [AtomicU64; 3],
    /// Accepts that failed (out of descriptors, most often).
    pub(crate) accept_failures: AtomicU64,
}

/// Binds the metrics listener with a backlog that holds a burst. With
/// SO_REUSEPORT: during a live hand-off the new process binds the same
/// port while the old one still answers on it.
pub(crate) fn bind(addr: SocketAddr) -> io::Result<std::net::TcpListener> {
    use socket2::{Domain, Protocol, Socket, Type};
    let socket = Socket::new(Domain::for_address(addr), Type::STREAM, Some(Protocol::TCP))?;
    socket.set_reuse_address(true)?;
    socket.set_reuse_port(true)?;
    socket.bind(&addr.into())?;
    socket.listen(BACKLOG)?;
    socket.set_nonblocking(true)?;
    Ok(socket.into())
}

/// Runs the server until `stop` is set (seen within [`IDLE_WAKE`]).
pub(crate) fn serve(
    listener: std::net::TcpListener,
    respond: Responder,
    stats: Arc<HttpStats>,
    limits: Limits,
    stop: Arc<AtomicBool>,
) -> io::Result<()> {
    let mut server = Server::new(listener, respond, stats, limits)?;
    let mut events = Events::with_capacity(1024);
    while !stop.load(Relaxed) {
        let timeout = server.next_wake(Instant::now());
        if let Err(e) = server.poll.poll(&mut events, Some(timeout)) {
            if e.kind() == io::ErrorKind::Interrupted {
                continue;
            }
            return Err(e);
        }
        // One clock reading per pass: deadlines enter each queue in order.
        let now = Instant::now();
        for event in events.iter() {
            match event.token() {
                LISTENER => server.accept_all(now),
                Token(key) => server.drive(key, now),
            }
        }
        server.expire(now);
        if server.accept_again_at.is_some_and(|at| at <= now) {
            server.accept_again_at = None;
            server.accept_all(now);
        }
    }
    Ok(())
}

/// One connection's state. `id` tells it from an earlier occupant of the
/// same slab slot in the phase queues.
struct Conn {
    stream: TcpStream,
    id: u64,
    phase: Phase,
    deadline: Instant,
    /// The head read so far (`Head`), the reply (`Reply`), empty after.
    buf: Vec<u8>,
    /// Reply bytes written (`Reply`), bytes dropped (`Closing`).
    done: usize,
    /// The peer has sent FIN.
    peer_closed: bool,
}

/// What reading a head came to.
enum Reading {
    Wait,
    Gone,
    /// A complete head: the path of a GET, or why it is refused.
    Got(Result<String, Refusal>),
}

/// How far writing a reply, or draining before close, got.
enum Progress {
    Wait,
    Done,
    Gone,
}

impl Conn {
    /// Reads what the socket has, keeping at most one byte past
    /// [`MAX_HEAD`] (enough to know it is too long).
    fn read_head(&mut self) -> Reading {
        let mut chunk = [0u8; 4096];
        while self.buf.len() <= MAX_HEAD && !self.peer_closed {
            match self.stream.read(&mut chunk) {
                Ok(0) => self.peer_closed = true,
                Ok(n) => {
                    let room = MAX_HEAD + 1 - self.buf.len();
                    self.buf.extend_from_slice(&chunk[..n.min(room)]);
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(_) => return Reading::Gone,
            }
        }
        match head::parse(&self.buf) {
            // A request then FIN (a half-close) is still answered.
            Head::Incomplete if self.peer_closed => Reading::Gone,
            Head::Incomplete => Reading::Wait,
            Head::Get(path) => Reading::Got(Ok(path)),
            Head::Refused(refusal) => Reading::Got(Err(refusal)),
        }
    }

    /// Writes what the socket takes of the reply.
    fn write_reply(&mut self) -> Progress {
        while self.done < self.buf.len() {
            match self.stream.write(&self.buf[self.done..]) {
                Ok(0) => return Progress::Gone,
                Ok(n) => self.done += n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Progress::Wait,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(_) => return Progress::Gone,
            }
        }
        Progress::Done
    }

    /// Reads and drops what the peer still sends, until its FIN.
    fn drain(&mut self) -> Progress {
        let mut chunk = [0u8; 4096];
        while !self.peer_closed {
            match self.stream.read(&mut chunk) {
                Ok(0) => self.peer_closed = true,
                Ok(n) if self.done + n > LINGER_DISCARD => return Progress::Gone,
                Ok(n) => self.done += n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Progress::Wait,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(_) => return Progress::Gone,
            }
        }
        Progress::Done
    }
}

/// The reply to a complete head, counted if refused.
fn answer(respond: &Responder, stats: &HttpStats, request: Result<String, Refusal>) -> Vec<u8> {
    match request {
        Ok(path) => {
            let (status, content_type, body) = respond(&path);
            head::reply(status, content_type, &[], body)
        }
        Err(refusal) => {
            stats.refused[refusal as usize].fetch_add(1, Relaxed);
            refusal.reply()
        }
    }
}

/// Whether a queue entry still names the connection in that phase.
fn is_live(conns: &Slab<Conn>, phase: Phase, (key, id): (usize, u64)) -> bool {
    conns.get(key).is_some_and(|c| c.id == id && c.phase == phase)
}

struct Server {
    listener: TcpListener,
    poll: Poll,
    conns: Slab<Conn>,
    /// Per phase, (slot, id) in the order they entered it, which is their
    /// deadline order; entries of connections that moved on or closed are
    /// skipped when met (and swept when a queue doubles the bound).
    queues: [VecDeque<(usize, u64)>; 3],
    next_id: u64,
    limits: Limits,
    respond: Responder,
    stats: Arc<HttpStats>,
    /// Set after a failed accept: when to try again.
    accept_again_at: Option<Instant>,
    /// Accepting has failed since the last success (logged once per streak).
    accept_failing: bool,
}

impl Server {
    fn new(
        listener: std::net::TcpListener,
        respond: Responder,
        stats: Arc<HttpStats>,
        limits: Limits,
    ) -> io::Result<Self> {
        listener.set_nonblocking(true)?;
        let mut listener = TcpListener::from_std(listener);
        let poll = Poll::new()?;
        poll.registry().register(&mut listener, LISTENER, Interest::READABLE)?;
        let queues = Default::default();
        let conns = Slab::with_capacity(limits.max_connections);
        Ok(Server {
            listener,
            poll,
            conns,
            queues,
            next_id: 0,
            limits,
            respond,
            stats,
            accept_again_at: None,
            accept_failing: false,
        })
    }

    /// How long poll may wait: until the earliest deadline or accept retry.
    fn next_wake(&mut self, now: Instant) -> Duration {
        let mut wake = now + IDLE_WAKE;
        for phase in Phase::ALL {
            if let Some(key) = self.front(phase) {
                wake = wake.min(self.conns[key].deadline);
            }
        }
        if let Some(at) = self.accept_again_at {
            wake = wake.min(at);
        }
        wake.saturating_duration_since(now)
    }

    /// The oldest live connection in `phase`, dropping stale entries.
    fn front(&mut self, phase: Phase) -> Option<usize> {
        let queue = &mut self.queues[phase as usize];
        while let Some(&entry) = queue.front() {
            if is_live(&self.conns, phase, entry) {
                return Some(entry.0);
            }
            queue.pop_front();
        }
        None
    }

    fn accept_all(&mut self, now: Instant) {
        loop {
            match self.listener.accept() {
                Ok((stream, _)) => {
                    self.accept_failing = false;
                    self.admit(stream, now);
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
                Err(e) if matches!(e.kind(), io::ErrorKind::Interrupted | io::ErrorKind::ConnectionAborted) => {}
                Err(e) => {
                    self.stats.accept_failures.fetch_add(1, Relaxed);
                    let out_of_descriptors =
                        matches!(e.raw_os_error(), Some(libc::EMFILE | libc::ENFILE | libc::ENOBUFS | libc::ENOMEM));
                    // Our own oldest socket is the descriptor to accept with.
                    if out_of_descriptors && self.evict() {
                        continue;
                    }
                    if !std::mem::replace(&mut self.accept_failing, true) {
                        log::warn!("metrics: accept failed: {e}; trying again every {ACCEPT_RETRY:?}");
                    }
                    self.accept_again_at = Some(now + ACCEPT_RETRY);
                    return;
                }
            }
        }
    }

    /// Gives a new connection a slot, making room first if need be.
    fn admit(&mut self, mut stream: TcpStream, now: Instant) {
        if self.conns.len() >= self.limits.max_connections {
            self.evict();
        }
        let entry = self.conns.vacant_entry();
        let key = entry.key();
        if let Err(e) = self.poll.registry().register(&mut stream, Token(key), Interest::READABLE | Interest::WRITABLE)
        {
            log::warn!("metrics: cannot watch a connection: {e}");
            return;
        }
        let id = self.next_id;
        self.next_id += 1;
        let deadline = now + self.limits.head_deadline;
        entry.insert(Conn { stream, id, phase: Phase::Head, deadline, buf: Vec::new(), done: 0, peer_closed: false });
        self.push(Phase::Head, key, id);
        self.stats.connections.store(self.conns.len() as u64, Relaxed);
    }

    /// Closes the first connection in eviction order (module doc); false
    /// if there is none.
    fn evict(&mut self) -> bool {
        for phase in [Phase::Closing, Phase::Head, Phase::Reply] {
            if let Some(key) = self.front(phase) {
                self.queues[phase as usize].pop_front();
                self.stats.evicted[phase as usize].fetch_add(1, Relaxed);
                self.close(key);
                return true;
            }
        }
        false
    }

    /// Closes every connection whose phase deadline has passed.
    fn expire(&mut self, now: Instant) {
        for phase in Phase::ALL {
            while let Some(key) = self.front(phase) {
                if self.conns[key].deadline > now {
                    break;
                }
                self.queues[phase as usize].pop_front();
                if phase != Phase::Closing {
                    self.stats.timeouts[phase as usize].fetch_add(1, Relaxed);
                }
                self.close(key);
            }
        }
    }

    /// Runs one connection as far as its socket allows now.
    fn drive(&mut self, key: usize, now: Instant) {
        while let Some(conn) = self.conns.get_mut(key) {
            let next = match conn.phase {
                Phase::Head => match conn.read_head() {
                    Reading::Wait => return,
                    Reading::Gone => None,
                    Reading::Got(request) => {
                        conn.buf = answer(&self.respond, &self.stats, request);
                        Some(Phase::Reply)
                    }
                },
                Phase::Reply => match conn.write_reply() {
                    Progress::Wait => return,
                    Progress::Done => Some(Phase::Closing),
                    Progress::Gone => None,
                },
                Phase::Closing => match conn.drain() {
                    Progress::Wait => return,
                    Progress::Done | Progress::Gone => None,
                },
            };
            match next {
                Some(phase) => self.enter(key, phase, now),
                None => return self.close(key),
            }
        }
    }

    /// Moves a connection to its next phase, with that phase's deadline.
    fn enter(&mut self, key: usize, phase: Phase, now: Instant) {
        let conn = &mut self.conns[key];
        conn.phase = phase;
        conn.done = 0;
        conn.deadline = now
            + match phase {
                Phase::Head => self.limits.head_deadline,
                Phase::Reply => self.limits.reply_deadline,
                Phase::Closing => LINGER,
            };
        if phase == Phase::Closing {
            conn.buf = Vec::new();
            let _ = conn.stream.shutdown(std::net::Shutdown::Write);
        }
        let id = conn.id;
        self.push(phase, key, id);
    }

    /// Queues a connection for its phase's deadline.
    fn push(&mut self, phase: Phase, key: usize, id: u64) {
        let queue = &mut self.queues[phase as usize];
        queue.push_back((key, id));
        if queue.len() > 2 * self.limits.max_connections + 16 {
            let conns = &self.conns;
            queue.retain(|&entry| is_live(conns, phase, entry));
        }
    }

    fn close(&mut self, key: usize) {
        // Dropping the stream closes it, which also takes it off the poll.
        self.conns.remove(key);
        self.stats.connections.store(self.conns.len() as u64, Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::TcpStream as StdStream;

    /// A server on 127.0.0.1:0 with `limits`, serving `/healthz` ("ok"),
    /// and `/big` (32 MiB, more than loopback buffers hold).
    struct Running {
        addr: SocketAddr,
        stats: Arc<HttpStats>,
        stop: Arc<AtomicBool>,
    }

    impl Drop for Running {
        fn drop(&mut self) {
            self.stop.store(true, Relaxed);
        }
    }

    fn run(limits: Limits) -> Running {
        let listener = bind("127.0.0.1:0".parse().unwrap()).unwrap();
        let addr = listener.local_addr().unwrap();
        let stats = Arc::new(HttpStats::default());
        let stop = Arc::new(AtomicBool::new(false));
        let respond: Responder = Box::new(|path: &str| match path {
            "/healthz" => (200, "text/plain", b"ok\n".to_vec()),
            "/big" => (200, "text/plain", vec![b'x'; 32 << 20]),
            _ => (404, "text/plain", Vec::new()),
        });
        let (s, f) = (stats.clone(), stop.clone());
        std::thread::spawn(move || serve(listener, respond, s, limits, f).unwrap());
        Running { addr, stats, stop }
    }

    fn small(max_connections: usize) -> Limits {
        Limits {
            max_connections,
            head_deadline: Duration::from_millis(400),
            reply_deadline: Duration::from_millis(400),
        }
    }

    /// A GET with a liveness bound of 2 s; the whole reply.
    fn get(addr: SocketAddr, path: &str) -> String {
        let mut s = StdStream::connect(addr).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
        write!(s, "GET {path} HTTP/1.1\r\nHost: x\r\n\r\n").unwrap();
        let mut reply = String::new();
        s.read_to_string(&mut reply).unwrap();
        reply
    }

    /// True once the server has closed `s` (FIN or reset) within 2 s.
    fn closed_by_server(s: &mut StdStream) -> bool {
        s.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
        let mut byte = [0u8; 1];
        match s.read(&mut byte) {
            Ok(0) => true,
            Ok(_) => false,
            Err(e) => e.kind() == io::ErrorKind::ConnectionReset,
        }
    }

    /// True if `s` is still open: nothing to read, no FIN.
    fn still_open(s: &StdStream) -> bool {
        s.set_nonblocking(true).unwrap();
        let open = matches!((&*s).read(&mut [0u8; 1]), Err(e) if e.kind() == io::ErrorKind::WouldBlock);
        s.set_nonblocking(false).unwrap();
        open
    }

    fn wait_for(what: impl Fn() -> bool) -> bool {
        let end = Instant::now() + Duration::from_secs(3);
        while Instant::now() < end {
            if what() {
                return true;
            }
            std::thread::sleep(Duration::from_millis(5));
        }
        false
    }

    #[test]
    fn the_oldest_idle_connection_makes_room_for_a_new_one() {
        let server = run(Limits { head_deadline: Duration::from_secs(30), ..small(4) });
        let mut idle: Vec<StdStream> = (0..4).map(|_| StdStream::connect(server.addr).unwrap()).collect();
        assert!(wait_for(|| server.stats.connections.load(Relaxed) == 4));
        assert!(get(server.addr, "/healthz").starts_with("HTTP/1.1 200 OK\r\n"));
        assert!(closed_by_server(&mut idle[0]), "the oldest idle one is evicted");
        assert!(idle[1..].iter().all(still_open), "the younger ones are kept");
        assert_eq!(server.stats.evicted[Phase::Head as usize].load(Relaxed), 1);
        assert_eq!(server.stats.timeouts[Phase::Head as usize].load(Relaxed), 0);
    }

    #[test]
    fn dribbled_bytes_do_not_extend_the_head_deadline() {
        let limits = small(8);
        let server = run(limits);
        let mut s = StdStream::connect(server.addr).unwrap();
        s.set_read_timeout(Some(Duration::from_millis(50))).unwrap();
        let started = Instant::now();
        let dribble =
            b"GET /healthz HTTP/1.1\r\nX-Slow: aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa";
        let mut closed = false;
        for byte in dribble.iter().cycle().take(200) {
            let _ = s.write_all(&[*byte]);
            match s.read(&mut [0u8; 64]) {
                Ok(0) => closed = true,
                Err(e) if e.kind() == io::ErrorKind::ConnectionReset => closed = true,
                _ => {}
            }
            if closed {
                break;
            }
        }
        let took = started.elapsed();
        assert!(closed, "still open after {took:?} of dribbling");
        assert!(took >= limits.head_deadline, "closed after {took:?}, before the deadline");
        assert!(took < limits.head_deadline + Duration::from_secs(2), "closed only after {took:?}");
        assert_eq!(server.stats.timeouts[Phase::Head as usize].load(Relaxed), 1);
    }

    #[test]
    fn a_reader_that_takes_nothing_holds_no_one_up_and_is_closed_in_time() {
        let server = run(small(8));
        let socket = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
        socket.set_recv_buffer_size(4096).unwrap();
        socket.connect(&server.addr.into()).unwrap();
        let mut slow: StdStream = socket.into();
        write!(slow, "GET /big HTTP/1.1\r\n\r\n").unwrap();
        assert!(wait_for(|| server.stats.connections.load(Relaxed) == 1));
        // While 32 MiB wait on the slow reader, others are answered.
        assert!(get(server.addr, "/healthz").starts_with("HTTP/1.1 200 OK\r\n"));
        assert!(wait_for(|| server.stats.timeouts[Phase::Reply as usize].load(Relaxed) == 1));
        assert!(wait_for(|| server.stats.connections.load(Relaxed) == 0));
    }

    #[test]
    fn a_request_then_fin_is_still_answered() {
        let server = run(small(8));
        let mut s = StdStream::connect(server.addr).unwrap();
        s.write_all(b"GET /healthz HTTP/1.0\r\n\r\n").unwrap();
        s.shutdown(std::net::Shutdown::Write).unwrap();
        let mut reply = String::new();
        s.read_to_string(&mut reply).unwrap();
        assert!(reply.starts_with("HTTP/1.1 200 OK\r\n") && reply.ends_with("\r\n\r\nok\n"), "{reply}");
    }

    #[test]
    fn refusals_are_answered_and_counted() {
        let server = run(small(8));
        let exchange = |request: &[u8]| {
            let mut s = StdStream::connect(server.addr).unwrap();
            s.write_all(request).unwrap();
            let mut reply = String::new();
            s.read_to_string(&mut reply).unwrap();
            reply
        };
        assert!(exchange(b"DELETE /metrics HTTP/1.1\r\n\r\n").starts_with("HTTP/1.1 405 "));
        // A TLS ClientHello on the plain port.
        assert!(exchange(b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03").starts_with("HTTP/1.1 400 "));
        // A method token that never ends, past the bound.
        assert!(exchange(&vec![b'a'; MAX_HEAD + 100]).starts_with("HTTP/1.1 431 "));
        assert_eq!(server.stats.refused[Refusal::Method as usize].load(Relaxed), 1);
        assert_eq!(server.stats.refused[Refusal::Malformed as usize].load(Relaxed), 1);
        assert_eq!(server.stats.refused[Refusal::HeaderTooLarge as usize].load(Relaxed), 1);
        assert!(wait_for(|| server.stats.connections.load(Relaxed) == 0));
    }

    #[test]
    fn past_the_bound_an_answered_connection_goes_before_an_unanswered_one() {
        let server = run(Limits { head_deadline: Duration::from_secs(30), ..small(3) });
        let idle = StdStream::connect(server.addr).unwrap();
        assert!(wait_for(|| server.stats.connections.load(Relaxed) == 1));
        // Answered, but it never closes its side: it lingers in a slot.
        let mut answered = StdStream::connect(server.addr).unwrap();
        answered.write_all(b"GET /healthz HTTP/1.1\r\n\r\n").unwrap();
        let mut reply = [0u8; 256];
        let n = answered.read(&mut reply).unwrap();
        assert!(reply[..n].starts_with(b"HTTP/1.1 200 OK\r\n"));
        let _third = StdStream::connect(server.addr).unwrap();
        assert!(wait_for(|| server.stats.connections.load(Relaxed) == 3));
        assert!(get(server.addr, "/healthz").starts_with("HTTP/1.1 200 OK\r\n"));
        assert_eq!(server.stats.evicted[Phase::Closing as usize].load(Relaxed), 1);
        assert_eq!(server.stats.evicted[Phase::Head as usize].load(Relaxed), 0);
        assert!(still_open(&idle));
    }
}
