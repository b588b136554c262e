//! A deliberately small HTTP/1.1 server for `/metrics` and `/healthz`, on
//! its own thread with its own mio poll.
//!
//! It never trusts a scraper: at most [`MAX_CLIENTS`] connections at once
//! (more are closed at once), a request head of at most 8 KiB (else 431),
//! and [`CLIENT_DEADLINE`] to send a request and take the reply. Poll waits
//! up to a second at a time, so an idle metrics thread costs nothing.

use std::io::{self, Read, Write};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use mio::net::{TcpListener, TcpStream};
use mio::{Events, Interest, Poll, Token};
use slab::Slab;

/// Scrapers served at once.
pub const MAX_CLIENTS: usize = 64;
/// Time a scraper has for its whole exchange.
pub const CLIENT_DEADLINE: Duration = Duration::from_secs(5);
const MAX_REQUEST: usize = 8 * 1024;
const LISTENER: Token = Token(usize::MAX);

/// What the server answers for a path: status, content type, body.
pub type Responder = Box<dyn Fn(&str) -> (u16, &'static str, Vec<u8>) + Send>;

struct Client {
    stream: TcpStream,
    request: Vec<u8>,
    reply: Vec<u8>,
    written: usize,
    deadline: Instant,
}

/// Runs the server until `stop` is set (checked at least once a second).
pub fn serve(listener: std::net::TcpListener, respond: Responder, stop: Arc<AtomicBool>) -> io::Result<()> {
    listener.set_nonblocking(true)?;
    let mut listener = TcpListener::from_std(listener);
    let mut poll = Poll::new()?;
    poll.registry().register(&mut listener, LISTENER, Interest::READABLE)?;
    let mut clients: Slab<Client> = Slab::new();
    let mut events = Events::with_capacity(128);
    while !stop.load(Ordering::Relaxed) {
        if let Err(e) = poll.poll(&mut events, Some(Duration::from_secs(1))) {
            if e.kind() == io::ErrorKind::Interrupted {
                continue;
            }
            return Err(e);
        }
        for event in events.iter() {
            if event.token() == LISTENER {
                accept_all(&listener, &poll, &mut clients);
            } else if clients.contains(event.token().0) && !progress(&mut clients[event.token().0], &respond) {
                clients.remove(event.token().0);
            }
        }
        let now = Instant::now();
        clients.retain(|_, c| c.deadline > now);
    }
    Ok(())
}

fn accept_all(listener: &TcpListener, poll: &Poll, clients: &mut Slab<Client>) {
    loop {
        match listener.accept() {
            Ok((mut stream, _)) => {
                if clients.len() >= MAX_CLIENTS {
                    continue; // dropped: closed at once
                }
                let entry = clients.vacant_entry();
                let interest = Interest::READABLE | Interest::WRITABLE;
                if poll.registry().register(&mut stream, Token(entry.key()), interest).is_ok() {
                    entry.insert(Client {
                        stream,
                        request: Vec::new(),
                        reply: Vec::new(),
                        written: 0,
                        deadline: Instant::now() + CLIENT_DEADLINE,
                    });
                }
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => {
                log::warn!("metrics: accept failed: {e}");
                return;
            }
        }
    }
}

/// Reads the request, builds the reply, writes what the socket takes.
/// False when the client is done (or failed) and can be dropped.
fn progress(c: &mut Client, respond: &Responder) -> bool {
    if c.reply.is_empty() {
        let mut chunk = [0u8; 2048];
        loop {
            match c.stream.read(&mut chunk) {
                Ok(0) => return false,
                Ok(n) => c.request.extend_from_slice(&chunk[..n]),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(_) => return false,
            }
            if c.request.len() > MAX_REQUEST {
                break;
            }
        }
        match parse_head(&c.request) {
            _ if c.request.len() > MAX_REQUEST => {
                c.reply = reply(431, "text/plain", b"request header too large\n".to_vec())
            }
            Head::Incomplete => return true,
            Head::Bad => c.reply = reply(400, "text/plain", b"bad request\n".to_vec()),
            Head::Method => c.reply = reply(405, "text/plain", b"only GET\n".to_vec()),
            Head::Get(path) => {
                let (status, content_type, body) = respond(&path);
                c.reply = reply(status, content_type, body);
            }
        }
    }
    while c.written < c.reply.len() {
        match c.stream.write(&c.reply[c.written..]) {
            Ok(n) => c.written += n,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => return true,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(_) => return false,
        }
    }
    // Read what is left of the request (a refused, oversized one, say), so
    // closing sends FIN rather than a reset that could destroy the reply.
    let mut sink = [0u8; 4096];
    while matches!(c.stream.read(&mut sink), Ok(n) if n > 0) {}
    let _ = c.stream.shutdown(std::net::Shutdown::Write);
    false
}

enum Head {
    Incomplete,
    Bad,
    Method,
    Get(String),
}

fn parse_head(buf: &[u8]) -> Head {
    let mut headers = [httparse::EMPTY_HEADER; 32];
    let mut req = httparse::Request::new(&mut headers);
    match req.parse(buf) {
        Ok(httparse::Status::Complete(_)) => match (req.method, req.path) {
            (Some("GET"), Some(path)) => Head::Get(path.split('?').next().unwrap_or("").to_string()),
            (Some(_), Some(_)) => Head::Method,
            _ => Head::Bad,
        },
        Ok(httparse::Status::Partial) => Head::Incomplete,
        Err(_) => Head::Bad,
    }
}

fn reply(status: u16, content_type: &str, body: Vec<u8>) -> Vec<u8> {
    let phrase = match status {
        200 => "OK",
        400 => "Bad Request",
        404 => "Not Found",
        405 => "Method Not Allowed",
        431 => "Request Header Fields Too Large",
        503 => "Service Unavailable",
        _ => "Internal Server Error",
    };
    let mut out = format!(
        "HTTP/1.1 {status} {phrase}\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    )
    .into_bytes();
    out.extend_from_slice(&body);
    out
}
