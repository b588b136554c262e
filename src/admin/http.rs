//! The admin port's HTTP/1.1 server: its own thread and mio poll, one
//! request per connection, bounded in every direction.
//!
//! - **Slots**: at most [`Limits::max_connections`] connections at once; a
//!   connection past them takes the slot of one already answered (still
//!   lingering for its peer's FIN), else of the oldest that has not sent a
//!   whole request head (closed unanswered, counted as evicted), else is
//!   answered 503 at once and closed. Only a caller with the token holds a
//!   slot past its head (a head without it is answered 401 at once), so a
//!   flood of silent or dribbling sockets only ever pushes out its own
//!   oldest members, and a real call gets a slot.
//! - **Deadlines** that bytes do not extend: [`HEAD_DEADLINE`] from accept
//!   to a whole head, [`REQUEST_DEADLINE`] to the whole body (else 408),
//!   [`REPLY_DEADLINE`] for the peer to take the reply.
//! - **Bounds**: a head of at most 8 KiB (431), a body of at most 1 MiB
//!   (413), read only once the token is checked: a request without the
//!   right token is answered 401 before its body is read.
//! - One request at a time: a call waits for the event loops' answers (at
//!   most `server::admin::ANSWER_DEADLINE`) on this thread, so the API
//!   cannot put more than one order at a time into the loops' inboxes.
//!
//! Every answer is counted (`wsloop_admin_requests_total{route,status}`)
//! and logged with the peer, method and path (never a header: the token
//! stays out of logs; method and path cut to [`LOGGED_BYTES`]); warning
//! lines at most [`WARN_LINES_PER_SECOND`] a second, the rest counted
//! (`wsloop_admin_log_suppressed_total`), so peers cannot flood the log.

use std::io::{self, Read, Write};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering::Relaxed};
use std::sync::Arc;
use std::time::{Duration, Instant};

use mio::net::{TcpListener, TcpStream};
use mio::{Events, Interest, Poll, Token};
use serde_json::{json, Value};
use slab::Slab;

use crate::metrics::admin::AdminStats;
use crate::server::admin::AdminPort;

use super::request::{self, Head, Parsed, MAX_BODY, MAX_HEAD};
use super::routes::{ApiError, Route};
use super::token::AdminToken;

/// Time from accept to a whole request head; dribbled bytes do not extend it.
pub const HEAD_DEADLINE: Duration = Duration::from_secs(2);
/// Time from accept to a whole request, body included.
pub const REQUEST_DEADLINE: Duration = Duration::from_secs(5);
/// Warning lines about peers written a second at most; the rest are counted.
pub const WARN_LINES_PER_SECOND: u32 = 20;
/// Bytes of a request's method and path that a log line shows.
pub const LOGGED_BYTES: usize = 64;
/// Time for the peer to take the whole reply.
pub const REPLY_DEADLINE: Duration = Duration::from_secs(10);
/// Time an answered connection waits for the peer's FIN.
const LINGER: Duration = Duration::from_secs(1);
/// Bytes read and dropped after the reply before closing anyway.
const LINGER_DISCARD: usize = 64 * 1024;
/// How soon accepting is tried again after it failed (out of descriptors).
const ACCEPT_RETRY: Duration = Duration::from_millis(50);
/// The longest poll wait, so the stop flag is seen at least this often.
const IDLE_WAKE: Duration = Duration::from_secs(1);
const LISTENER: Token = Token(usize::MAX);
/// The `route` label index of requests that name no route.
const OTHER: usize = 5;

/// The bounds of one server.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// Connections held at once; past it, eviction or 503 (module docs).
    pub max_connections: usize,
    /// See [`HEAD_DEADLINE`].
    pub head_deadline: Duration,
    /// See [`REQUEST_DEADLINE`].
    pub request_deadline: Duration,
}

impl Default for Limits {
    fn default() -> Self {
        Limits { max_connections: 64, head_deadline: HEAD_DEADLINE, request_deadline: REQUEST_DEADLINE }
    }
}

/// What the server answers with: the token, the engine, the counters.
pub(crate) struct Api {
    pub(crate) token: AdminToken,
    pub(crate) port: AdminPort,
    pub(crate) stats: Arc<AdminStats>,
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Phase {
    Reading,
    Replying,
    Closing,
}

struct Conn {
    stream: TcpStream,
    peer: SocketAddr,
    phase: Phase,
    accepted: Instant,
    deadline: Instant,
    /// The request read so far (`Reading`), the reply (`Replying`).
    buf: Vec<u8>,
    /// Its head, once complete.
    head: Option<Head>,
    /// Its route, once the head is admitted (token, route, method, length).
    route: Option<Route>,
    /// Reply bytes written, or bytes dropped while closing.
    done: usize,
    peer_closed: bool,
}

impl Conn {
    /// Bytes the request may still need: up to the end of its body, or of
    /// the longest head (one byte past, to know it is too long).
    fn wanted(&self) -> usize {
        match (&self.head, &self.route) {
            (Some(head), Some(_)) => head.len + head.content_length,
            _ => MAX_HEAD + 1,
        }
    }

    /// True until its whole head has come.
    fn before_head(&self) -> bool {
        self.phase == Phase::Reading && self.head.is_none()
    }

    /// Reads what the socket has, never past [`wanted`](Self::wanted) (so
    /// no byte is read and dropped): `Some(true)` when the socket has no
    /// more now (or the peer closed), `Some(false)` when it stopped at
    /// `wanted` with bytes maybe left, `None` when the socket failed.
    fn read_some(&mut self) -> Option<bool> {
        let mut chunk = [0u8; 16 * 1024];
        while self.buf.len() < self.wanted() {
            if self.peer_closed {
                return Some(true);
            }
            let room = (self.wanted() - self.buf.len()).min(chunk.len());
            match self.stream.read(&mut chunk[..room]) {
                Ok(0) => self.peer_closed = true,
                Ok(n) => self.buf.extend_from_slice(&chunk[..n]),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Some(true),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(_) => return None,
            }
        }
        Some(false)
    }

    /// Writes what the socket takes of the reply; `Some(true)` when all is
    /// written, `None` when the socket failed.
    fn write_some(&mut self) -> Option<bool> {
        while self.done < self.buf.len() {
            match self.stream.write(&self.buf[self.done..]) {
                Ok(0) => return None,
                Ok(n) => self.done += n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Some(false),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(_) => return None,
            }
        }
        Some(true)
    }

    /// Reads and drops what the peer still sends; true once it is done
    /// (FIN, an error, or too much).
    fn drain(&mut self) -> bool {
        let mut chunk = [0u8; 4096];
        loop {
            match self.stream.read(&mut chunk) {
                Ok(0) => return true,
                Ok(n) if self.done + n > LINGER_DISCARD => return true,
                Ok(n) => self.done += n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return false,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(_) => return true,
            }
        }
    }
}

/// A whole reply: JSON body, `Connection: close`, and `extra` headers.
fn reply_bytes(status: u16, body: &Value, extra: &[(&str, &str)]) -> Vec<u8> {
    let phrase = match status {
        200 => "OK",
        400 => "Bad Request",
        401 => "Unauthorized",
        404 => "Not Found",
        405 => "Method Not Allowed",
        408 => "Request Timeout",
        411 => "Length Required",
        413 => "Content Too Large",
        431 => "Request Header Fields Too Large",
        503 => "Service Unavailable",
        _ => "Internal Server Error",
    };
    let body = format!("{body}\n");
    let mut out = format!("HTTP/1.1 {status} {phrase}\r\nContent-Type: application/json\r\n");
    for (name, value) in extra {
        out.push_str(&format!("{name}: {value}\r\n"));
    }
    out.push_str(&format!("Content-Length: {}\r\nConnection: close\r\n\r\n{body}", body.len()));
    out.into_bytes()
}

/// Runs the server until `stop` is set (seen within [`IDLE_WAKE`]).
pub(crate) fn serve(
    listener: std::net::TcpListener,
    api: Api,
    limits: Limits,
    stop: Arc<AtomicBool>,
) -> io::Result<()> {
    listener.set_nonblocking(true)?;
    let mut listener = TcpListener::from_std(listener);
    let poll = Poll::new()?;
    poll.registry().register(&mut listener, LISTENER, Interest::READABLE)?;
    let conns = Slab::with_capacity(limits.max_connections);
    let gate = LogGate { window: Instant::now(), written: 0, left_out: 0 };
    let mut server = Server { listener, poll, conns, limits, api, accept_again_at: None, gate };
    let mut events = Events::with_capacity(256);
    while !stop.load(Relaxed) {
        let timeout = server.next_wake(Instant::now());
        if let Err(e) = server.poll.poll(&mut events, Some(timeout)) {
            if e.kind() == io::ErrorKind::Interrupted {
                continue;
            }
            return Err(e);
        }
        for event in events.iter() {
            match event.token() {
                LISTENER => server.accept_all(),
                Token(key) => server.drive(key),
            }
        }
        server.expire(Instant::now());
        if server.accept_again_at.is_some_and(|at| at <= Instant::now()) {
            server.accept_again_at = None;
            server.accept_all();
        }
    }
    Ok(())
}

struct Server {
    listener: TcpListener,
    poll: Poll,
    conns: Slab<Conn>,
    limits: Limits,
    api: Api,
    accept_again_at: Option<Instant>,
    gate: LogGate,
}

/// Lets at most [`WARN_LINES_PER_SECOND`] warning lines about peers
/// through a second; counts the rest, and says how many at the next line.
struct LogGate {
    window: Instant,
    written: u32,
    left_out: u64,
}

impl LogGate {
    /// True if a warning line may be written now; false: counted in `stats`.
    fn admits(&mut self, stats: &AdminStats) -> bool {
        let now = Instant::now();
        if now.duration_since(self.window) >= Duration::from_secs(1) {
            if self.left_out > 0 {
                log::warn!("admin: {} warning lines about peers left out of the log in a second", self.left_out);
            }
            (self.window, self.written, self.left_out) = (now, 0, 0);
        }
        if self.written < WARN_LINES_PER_SECOND {
            self.written += 1;
            return true;
        }
        self.left_out += 1;
        stats.log_suppressed.fetch_add(1, Relaxed);
        false
    }
}

/// At most [`LOGGED_BYTES`] of `s` (at a character boundary), marked when cut.
fn clip(s: &str) -> String {
    if s.len() <= LOGGED_BYTES {
        return s.to_string();
    }
    let mut end = LOGGED_BYTES;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}...({} bytes)", &s[..end], s.len())
}

impl Server {
    fn next_wake(&self, now: Instant) -> Duration {
        let mut wake = now + IDLE_WAKE;
        for (_, conn) in self.conns.iter() {
            wake = wake.min(conn.deadline);
        }
        if let Some(at) = self.accept_again_at {
            wake = wake.min(at);
        }
        wake.saturating_duration_since(now)
    }

    fn accept_all(&mut self) {
        loop {
            match self.listener.accept() {
                Ok((stream, peer)) => self.admit(stream, peer),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
                Err(e) if matches!(e.kind(), io::ErrorKind::Interrupted | io::ErrorKind::ConnectionAborted) => {}
                Err(e) => {
                    log::warn!("admin: accept failed: {e}; trying again in {ACCEPT_RETRY:?}");
                    self.accept_again_at = Some(Instant::now() + ACCEPT_RETRY);
                    return;
                }
            }
        }
    }

    /// Makes room for a new connection when every slot is held (module
    /// docs): one already answered and only waiting for the peer's FIN
    /// goes first, else the oldest without a whole request head.
    fn make_room(&mut self) {
        if self.conns.len() < self.limits.max_connections {
            return;
        }
        if let Some(key) = self.conns.iter().find(|(_, c)| c.phase == Phase::Closing).map(|(key, _)| key) {
            return self.close(key);
        }
        let oldest = self.conns.iter().filter(|(_, c)| c.before_head()).min_by_key(|(_, c)| c.accepted);
        if let Some((key, peer)) = oldest.map(|(key, c)| (key, c.peer)) {
            self.api.stats.evicted.fetch_add(1, Relaxed);
            if self.gate.admits(&self.api.stats) {
                log::warn!("admin: {peer}: closed without a whole request head to make room for a new connection");
            }
            self.close(key);
        }
    }

    /// Takes a new connection into a slot, or answers it 503 when every
    /// slot holds a request past its head.
    fn admit(&mut self, mut stream: TcpStream, peer: SocketAddr) {
        self.make_room();
        if self.conns.len() >= self.limits.max_connections {
            self.api.stats.count(OTHER, 503);
            if self.gate.admits(&self.api.stats) {
                log::warn!("admin: {peer}: 503: all {} admin connections are held", self.limits.max_connections);
            }
            let busy = json!({"error": "busy", "message": "all admin connections are held; try again"});
            // One non-blocking try: a new socket's buffer takes this whole.
            let _ = stream.write(&reply_bytes(503, &busy, &[("Retry-After", "1")]));
            return;
        }
        let entry = self.conns.vacant_entry();
        let key = entry.key();
        if let Err(e) = self.poll.registry().register(&mut stream, Token(key), Interest::READABLE | Interest::WRITABLE)
        {
            return log::warn!("admin: cannot watch a connection: {e}");
        }
        let accepted = Instant::now();
        let deadline = accepted + self.limits.head_deadline;
        let (phase, buf, done, peer_closed) = (Phase::Reading, Vec::new(), 0, false);
        let (head, route) = (None, None);
        entry.insert(Conn { stream, peer, phase, accepted, deadline, buf, head, route, done, peer_closed });
        self.api.stats.connections.store(self.conns.len() as u64, Relaxed);
    }

    /// Closes every connection whose deadline has passed: one still reading
    /// is answered 408 first.
    fn expire(&mut self, now: Instant) {
        let due: Vec<usize> = self.conns.iter().filter(|(_, c)| c.deadline <= now).map(|(k, _)| k).collect();
        for key in due {
            if self.conns[key].phase == Phase::Reading {
                let route = self.conns[key].route.as_ref().map_or(OTHER, Route::index);
                let late = ApiError { status: 408, code: "timeout", message: "no whole request in time".into() };
                self.answer(key, route, Err(late));
                self.drive(key);
            } else {
                self.close(key);
            }
        }
    }

    /// Runs one connection as far as its socket allows now.
    fn drive(&mut self, key: usize) {
        while let Some(conn) = self.conns.get_mut(key) {
            match conn.phase {
                Phase::Reading => {
                    let Some(drained) = conn.read_some() else { return self.close(key) };
                    // Waiting with bytes maybe left in the socket (the head
                    // just admitted a body): read on, for edge-triggered
                    // polling brings no new event for them.
                    if !self.judge(key) && drained {
                        return;
                    }
                }
                Phase::Replying => match conn.write_some() {
                    None => return self.close(key),
                    Some(false) => return,
                    Some(true) => {
                        let _ = conn.stream.shutdown(std::net::Shutdown::Write);
                        (conn.phase, conn.done, conn.buf) = (Phase::Closing, 0, Vec::new());
                        conn.deadline = Instant::now() + LINGER;
                    }
                },
                Phase::Closing => {
                    if conn.drain() {
                        self.close(key);
                    }
                    return;
                }
            }
        }
    }

    /// Looks at what a reading connection has: true if it moved on to its
    /// reply (or closed), false if it waits for more bytes.
    fn judge(&mut self, key: usize) -> bool {
        let conn = &mut self.conns[key];
        if conn.head.is_none() {
            match request::parse(&conn.buf) {
                Parsed::Incomplete if conn.peer_closed => return self.close_and(key),
                Parsed::Incomplete => return false,
                Parsed::Refused((status, why)) => {
                    let refused = ApiError { status, code: "bad_request", message: why.into() };
                    return self.answer_and(key, OTHER, Err(refused));
                }
                Parsed::Head(head) => {
                    let admitted = self.admit_head(&head);
                    self.conns[key].head = Some(head);
                    match admitted {
                        Ok(route) => {
                            let conn = &mut self.conns[key];
                            conn.route = Some(route);
                            conn.deadline = conn.accepted + self.limits.request_deadline;
                        }
                        Err((route, e)) => return self.answer_and(key, route, Err(e)),
                    }
                }
            }
        }
        let conn = &self.conns[key];
        if conn.buf.len() < conn.wanted() {
            if conn.peer_closed {
                return self.close_and(key);
            }
            return false;
        }
        let (Some(head), Some(route)) = (&conn.head, &conn.route) else { return self.close_and(key) };
        let body = &conn.buf[head.len..head.len + head.content_length];
        let result = route.call(&head.query, body, &self.api.port, &self.api.stats);
        let index = route.index();
        self.answer_and(key, index, result)
    }

    /// Checks a complete head in the order that keeps the token first: 401,
    /// then 404, 405, 413; the route, or (route label, refusal).
    fn admit_head(&self, head: &Head) -> Result<Route, (usize, ApiError)> {
        let route = Route::of(&head.path);
        let index = route.as_ref().map_or(OTHER, Route::index);
        if !self.api.token.admits(head.authorization.as_deref()) {
            let why = if head.authorization.is_some() { "wrong admin token" } else { "no admin token" };
            return Err((index, ApiError { status: 401, code: "unauthorized", message: why.into() }));
        }
        let route = route.map_err(|e| (OTHER, e))?;
        if head.method != route.method() {
            let message = format!("{} only", route.method());
            return Err((index, ApiError { status: 405, code: "method", message }));
        }
        if head.content_length > MAX_BODY {
            let message = format!("body of {} bytes is over {MAX_BODY}", head.content_length);
            return Err((index, ApiError { status: 413, code: "too_large", message }));
        }
        Ok(route)
    }

    fn close_and(&mut self, key: usize) -> bool {
        self.close(key);
        true
    }

    fn answer_and(&mut self, key: usize, route: usize, result: Result<Value, ApiError>) -> bool {
        self.answer(key, route, result);
        true
    }

    /// Puts the reply in place, counts and logs it.
    fn answer(&mut self, key: usize, route: usize, result: Result<Value, ApiError>) {
        let conn = &mut self.conns[key];
        let (method, path) = conn.head.as_ref().map_or(("-", "-"), |h| (h.method.as_str(), h.path.as_str()));
        let (status, body) = match &result {
            Ok(body) => (200, body),
            Err(e) => (e.status, &e.body()),
        };
        let extra: &[(&str, &str)] = match status {
            401 => &[("WWW-Authenticate", "Bearer")],
            405 => &[("Allow", Route::of(path).map_or("GET", |r| r.method()))],
            503 => &[("Retry-After", "1")],
            _ => &[],
        };
        let (method, path) = (clip(method), clip(path));
        match &result {
            Ok(_) => log::info!("admin: {} {method} {path}: {status}", conn.peer),
            Err(e) if self.gate.admits(&self.api.stats) => {
                log::warn!("admin: {} {method} {path}: {status} {}", conn.peer, e.message)
            }
            Err(_) => {}
        }
        conn.buf = reply_bytes(status, body, extra);
        (conn.phase, conn.done) = (Phase::Replying, 0);
        conn.deadline = Instant::now() + REPLY_DEADLINE;
        self.api.stats.count(route, status);
    }

    fn close(&mut self, key: usize) {
        // Dropping the stream closes it, which also takes it off the poll.
        self.conns.remove(key);
        self.api.stats.connections.store(self.conns.len() as u64, Relaxed);
    }
}
