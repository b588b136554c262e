//! The new process's side: connect to the old one, check its format
//! before anything moves, then take its listeners and connections into
//! the loops (already running, without listeners of their own).

use std::fmt;
use std::io;
use std::net::SocketAddr;
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::time::Duration;

use super::state::{ConnState, Reader};
use super::wire::{Kind, Link};
use super::{Command, Controls, Moved, FORMAT};

/// How long the old process may take between two messages.
const STEP_TIMEOUT: Duration = Duration::from_secs(30);

/// Why a takeover did not happen.
#[derive(Debug)]
pub enum TakeoverError {
    /// The old process speaks another hand-off format (it keeps serving).
    Format {
        /// What it speaks.
        theirs: u32,
        /// What this build speaks.
        ours: u32,
    },
    /// It runs more loops than this process would: each of its listeners
    /// needs a loop here (it keeps serving).
    Loops {
        /// Its loops.
        theirs: u32,
        /// Ours.
        ours: u32,
    },
    /// The hand-off broke off (the old process takes its connections back).
    Io(io::Error),
    /// The old process sent something this side cannot read.
    Malformed(&'static str),
    /// The process at the socket will not hand over (and says why).
    Refused(String),
    /// The process at the socket runs as another user.
    Stranger,
}

impl fmt::Display for TakeoverError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            TakeoverError::Format { theirs, ours } => write!(
                f,
                "the running process speaks hand-off format {theirs}, this build {ours}: it keeps serving; \
                 restart it instead (a paced drain) or deploy a build that reads format {theirs}"
            ),
            TakeoverError::Loops { theirs, ours } => write!(
                f,
                "the running process has {theirs} loops and this one would have {ours}: run at least {theirs} \
                 (--workers); the running process keeps serving"
            ),
            TakeoverError::Io(e) => write!(f, "the hand-off broke off: {e}"),
            TakeoverError::Malformed(what) => write!(f, "the running process sent {what}"),
            TakeoverError::Refused(why) => write!(f, "the process at the socket refused: {why}"),
            TakeoverError::Stranger => f.write_str("the process at the socket runs as another user: refused"),
        }
    }
}

impl std::error::Error for TakeoverError {}

impl From<io::Error> for TakeoverError {
    fn from(e: io::Error) -> Self {
        TakeoverError::Io(e)
    }
}

/// What the old process said it is.
#[derive(Debug, Clone, Copy)]
pub struct Hello {
    /// Its hand-off format.
    pub format: u32,
    /// Its loops (and listeners).
    pub loops: u32,
    /// The address its listeners are bound to.
    pub addr: SocketAddr,
}

/// A takeover in progress: connected, the old process's `Hello` read.
pub struct Takeover {
    link: Link,
    hello: Hello,
}

/// Connects to the old process at `path`. `Ok(None)`: nobody is there
/// (no socket, or nobody listening): this process starts as the first.
pub fn take_over(path: &Path) -> Result<Option<Takeover>, TakeoverError> {
    let stream = match UnixStream::connect(path) {
        Ok(stream) => stream,
        Err(e) if matches!(e.kind(), io::ErrorKind::NotFound | io::ErrorKind::ConnectionRefused) => return Ok(None),
        Err(e) => return Err(e.into()),
    };
    if !super::offer::same_user(&stream) {
        return Err(TakeoverError::Stranger);
    }
    let mut link = Link::new(stream);
    link.set_timeout(Some(STEP_TIMEOUT))?;
    let msg = link.recv()?;
    match msg.kind {
        Kind::Hello => {}
        Kind::Refuse => return Err(TakeoverError::Refused(String::from_utf8_lossy(&msg.body).into_owned())),
        _ => return Err(TakeoverError::Malformed("no hello")),
    }
    let mut r = Reader { rest: &msg.body };
    let format = r.u32().map_err(|_| TakeoverError::Malformed("a short hello"))?;
    let loops = r.u32().map_err(|_| TakeoverError::Malformed("a short hello"))?;
    let addr = std::str::from_utf8(r.rest)
        .ok()
        .and_then(|a| a.parse().ok())
        .ok_or(TakeoverError::Malformed("a hello without an address"))?;
    Ok(Some(Takeover { link, hello: Hello { format, loops, addr } }))
}

impl Takeover {
    /// What the old process said.
    pub fn hello(&self) -> Hello {
        self.hello
    }

    /// Checks that this build can take over with `loops` loops; on a
    /// mismatch, tells the old process why (it keeps serving).
    pub fn check(&mut self, loops: usize) -> Result<(), TakeoverError> {
        let err = if self.hello.format != FORMAT {
            Some(TakeoverError::Format { theirs: self.hello.format, ours: FORMAT })
        } else if self.hello.loops as usize > loops {
            Some(TakeoverError::Loops { theirs: self.hello.loops, ours: loops as u32 })
        } else {
            None
        };
        match err {
            Some(e) => {
                let _ = self.link.send(Kind::Refuse, e.to_string().as_bytes(), &[]);
                Err(e)
            }
            None => Ok(()),
        }
    }

    /// Refuses the hand-off for `why` (this process could not start).
    pub fn refuse(mut self, why: &str) {
        let _ = self.link.send(Kind::Refuse, why.as_bytes(), &[]);
    }

    /// Runs the hand-off into the loops behind `controls`: listeners, then
    /// the connections, spread over the loops in turn, once every batch
    /// has come and been checked. Returns how many were adopted.
    pub(crate) fn run(mut self, controls: &Controls) -> Result<usize, TakeoverError> {
        self.link.send(Kind::Ready, &[], &[])?;
        let held = super::redis_cut::new_side(&mut self.link, controls)?;
        let listeners = self.link.recv()?;
        if listeners.kind != Kind::Listeners {
            return Err(TakeoverError::Malformed("no listeners"));
        }
        if !listeners.fds.iter().all(|fd| is_tcp(fd, true)) {
            return Err(TakeoverError::Malformed("a descriptor that is not a listening TCP socket"));
        }
        // Every batch is read and checked before any is adopted: a hand-off
        // that breaks off here leaves every connection with the old process.
        let mut batches = Vec::new();
        loop {
            let msg = self.link.recv()?;
            match msg.kind {
                Kind::Conns => batches.push(decode_batch(&msg.body, msg.fds)?),
                Kind::Done => break,
                _ => return Err(TakeoverError::Malformed("an unexpected message")),
            }
        }
        let (tx, rx) = crossbeam_channel::unbounded();
        let sent = batches.len();
        for (i, moved) in batches.into_iter().enumerate() {
            controls.send(i % controls.len(), Command::Adopt(moved, tx.clone()));
        }
        let mut adopted = 0;
        for _ in 0..sent {
            match rx.recv_timeout(STEP_TIMEOUT) {
                Ok(n) => adopted += n,
                Err(_) => return Err(abandon(controls, TakeoverError::Malformed("no loop answered"))),
            }
        }
        // Nothing of theirs has been read or written yet: until the old
        // process commits, it may still take them back.
        let committed = self
            .link
            .send(Kind::Adopted, &(adopted as u64).to_le_bytes(), &[])
            .and_then(|()| self.link.recv())
            .map_err(TakeoverError::Io)
            .and_then(|m| if m.kind == Kind::Commit { Ok(()) } else { Err(TakeoverError::Malformed("no commit")) });
        if let Err(e) = committed {
            return Err(abandon(controls, e));
        }
        // Every loop has its members before any thaws: none can publish
        // to a room whose members on another loop are not in yet.
        let (tx, rx) = crossbeam_channel::unbounded();
        for i in 0..controls.len() {
            controls.send(i, Command::Attach(tx.clone()));
        }
        let mut live = 0;
        for _ in 0..controls.len() {
            live += rx.recv_timeout(STEP_TIMEOUT).unwrap_or(0);
        }
        for i in 0..controls.len() {
            controls.send(i, Command::Thaw);
        }
        // Connections waited in the listeners' queues meanwhile, not lost.
        for (i, fd) in listeners.fds.into_iter().enumerate() {
            controls.send(i % controls.len(), Command::Listen(std::net::TcpListener::from(fd)));
        }
        super::redis_cut::release(controls, held);
        Ok(live)
    }
}

/// True if `fd` is a TCP socket (IPv4 or IPv6), listening or not as
/// `listening` says: what the old process may hand over, nothing else.
fn is_tcp(fd: &std::os::fd::OwnedFd, listening: bool) -> bool {
    use nix::sys::socket::{getsockname, getsockopt, sockopt, AddressFamily, SockType, SockaddrLike, SockaddrStorage};
    let stream = getsockopt(fd, sockopt::SockType).is_ok_and(|t| t == SockType::Stream);
    let inet = getsockname::<SockaddrStorage>(std::os::fd::AsRawFd::as_raw_fd(fd))
        .is_ok_and(|a| matches!(a.family(), Some(AddressFamily::Inet | AddressFamily::Inet6)));
    let accepts = getsockopt(fd, sockopt::AcceptConn).unwrap_or(false);
    stream && inet && accepts == listening
}

/// The hand-off broke off before the old process committed: the loops
/// let the taken-in connections go untouched (the old process serves them
/// on). Returns `e`.
fn abandon(controls: &Controls, e: TakeoverError) -> TakeoverError {
    for i in 0..controls.len() {
        controls.send(i, Command::Abandon);
    }
    e
}

/// A `Conns` body (count, then each record's length and bytes) with its
/// descriptors, one per record.
fn decode_batch(body: &[u8], fds: Vec<std::os::fd::OwnedFd>) -> Result<Vec<Moved>, TakeoverError> {
    let mut r = Reader { rest: body };
    let count = r.u32().map_err(|_| TakeoverError::Malformed("a short batch"))? as usize;
    if count != fds.len() {
        return Err(TakeoverError::Malformed("a batch whose records and descriptors differ in number"));
    }
    let mut moved = Vec::with_capacity(count);
    if !fds.iter().all(|fd| is_tcp(fd, false)) {
        return Err(TakeoverError::Malformed("a descriptor that is not a TCP connection"));
    }
    for fd in fds {
        let record = r.bytes().map_err(|_| TakeoverError::Malformed("a cut record"))?;
        let state = ConnState::decode(record).map_err(|_| TakeoverError::Malformed("a bad connection record"))?;
        moved.push(Moved { fd, state });
    }
    if !r.rest.is_empty() {
        return Err(TakeoverError::Malformed("bytes after a batch"));
    }
    Ok(moved)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nobody_there_is_a_first_start() {
        let path = std::env::temp_dir().join(format!("wsloop-nobody-{}", std::process::id()));
        assert!(matches!(take_over(&path), Ok(None)));
    }

    #[test]
    fn a_batch_with_fewer_descriptors_than_records_is_refused() {
        let mut body = 2u32.to_le_bytes().to_vec();
        body.extend_from_slice(&0u32.to_le_bytes());
        let fd = std::os::fd::OwnedFd::from(std::fs::File::open("/dev/null").unwrap());
        assert!(matches!(decode_batch(&body, vec![fd]), Err(TakeoverError::Malformed(_))));
    }
}
