//! The old process's side: a thread listening on the hand-off socket.
//! For each new process that connects: say what this one is, wait for
//! Ready or Refuse, freeze every loop, send the listeners and the
//! connections, and wait for Adopted; then the loops finish. If anything
//! breaks before Adopted, the loops take everything back and serve on.

use std::fmt;
use std::io;
use std::os::fd::AsRawFd;
use std::os::unix::fs::{FileTypeExt, MetadataExt, PermissionsExt};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::wire::{Kind, Link};
use super::{Command, Controls, Exported, Frozen, Moved, BATCH, FORMAT};

/// How long the new process may take to answer each step.
const STEP_TIMEOUT: Duration = Duration::from_secs(10);
/// The loops' listeners, by loop (a loop may have none).
type Listeners = Vec<Option<std::net::TcpListener>>;

/// How long the loops may take to freeze, or to export.
const LOOP_TIMEOUT: Duration = Duration::from_secs(10);
/// How long sending the connections may take in all: a new process that
/// reads slowly cannot keep the loops frozen longer.
const FROZEN_LIMIT: Duration = Duration::from_secs(30);
/// Bytes of records a `Conns` message carries at most (a connection's
/// unsent bytes and unfinished message may be large).
const BATCH_BYTES: usize = 32 << 20;

/// Why the hand-off socket could not be offered.
#[derive(Debug)]
pub enum OfferError {
    /// Another process is listening on the path already.
    InUse(PathBuf),
    /// The path exists and is not a socket: refused rather than removed.
    NotASocket(PathBuf),
    /// Binding or setting up the socket failed.
    Io(PathBuf, io::Error),
}

impl fmt::Display for OfferError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            OfferError::InUse(p) => write!(f, "--takeover {}: another process listens there", p.display()),
            OfferError::NotASocket(p) => write!(f, "--takeover {}: exists and is not a socket", p.display()),
            OfferError::Io(p, e) => write!(f, "--takeover {}: {e}", p.display()),
        }
    }
}

impl std::error::Error for OfferError {}

/// The hand-off socket, offered by a running server.
pub struct Offer {
    stop: Arc<AtomicBool>,
    done: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
    path: PathBuf,
    inode: u64,
}

impl Offer {
    /// Listens on `path` (mode 0600) for a new process to hand over to.
    /// A stale socket there (nobody listening) is replaced.
    ///
    /// With `replace` (a process that took over from the one listening
    /// there, which may still be draining), the path is taken over even
    /// though someone listens on it.
    pub(crate) fn start(
        path: &Path,
        controls: Controls,
        addr: std::net::SocketAddr,
        replace: bool,
    ) -> Result<Offer, OfferError> {
        let err = |e| OfferError::Io(path.to_owned(), e);
        if let Ok(meta) = std::fs::symlink_metadata(path) {
            if !meta.file_type().is_socket() {
                return Err(OfferError::NotASocket(path.to_owned()));
            }
            if !replace && UnixStream::connect(path).is_ok() {
                return Err(OfferError::InUse(path.to_owned()));
            }
        }
        // Bound under a name of its own, made 0600, then renamed into
        // place: the path never lacks a listening socket (a successor
        // never finds it missing and starts as a second server) and is
        // never open to others.
        let staging = staging_path(path);
        let _ = std::fs::remove_file(&staging);
        let listener = UnixListener::bind(&staging).map_err(err)?;
        std::fs::set_permissions(&staging, std::fs::Permissions::from_mode(0o600)).map_err(err)?;
        let inode = std::fs::symlink_metadata(&staging).map_err(err)?.ino();
        std::fs::rename(&staging, path).map_err(err)?;
        listener.set_nonblocking(true).map_err(err)?;
        let stop = Arc::new(AtomicBool::new(false));
        let done = Arc::new(AtomicBool::new(false));
        let (stop2, done2) = (stop.clone(), done.clone());
        let thread = std::thread::Builder::new()
            .name("wsloop-handoff".into())
            .spawn(move || serve(listener, controls, addr, &stop2, &done2))
            .map_err(err)?;
        Ok(Offer { stop, done, thread: Some(thread), path: path.to_owned(), inode })
    }

    /// True once every movable connection was handed over.
    pub fn handed_over(&self) -> bool {
        self.done.load(Ordering::Acquire)
    }
}

/// Where the offer's socket is bound before it is renamed to `path`.
fn staging_path(path: &Path) -> PathBuf {
    let mut name = path.as_os_str().to_owned();
    name.push(format!(".{}", std::process::id()));
    PathBuf::from(name)
}

impl Drop for Offer {
    /// Stops listening; the socket file is removed unless a newer process
    /// has bound its own there since.
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Release);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
        if std::fs::symlink_metadata(&self.path).is_ok_and(|m| m.ino() == self.inode) {
            let _ = std::fs::remove_file(&self.path);
        }
    }
}

/// The thread: one new process at a time, until one takes over; after
/// that, any other that comes is told so (this process holds nothing).
fn serve(listener: UnixListener, controls: Controls, addr: std::net::SocketAddr, stop: &AtomicBool, done: &AtomicBool) {
    while !stop.load(Ordering::Acquire) {
        let stream = match listener.accept() {
            Ok((stream, _)) if !same_user(&stream) => {
                log::warn!("hand-off: refused a peer of another user on the hand-off socket");
                continue;
            }
            Ok((stream, _)) if done.load(Ordering::Acquire) => {
                refuse_late(stream);
                continue;
            }
            Ok((stream, _)) => stream,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                std::thread::sleep(Duration::from_millis(50));
                continue;
            }
            Err(e) => {
                log::warn!("hand-off: accept failed: {e}");
                std::thread::sleep(Duration::from_millis(50));
                continue;
            }
        };
        match hand_off(stream, &controls, addr) {
            Ok(n) => {
                log::info!("hand-off: {n} connections now live in the new process; draining the rest and exiting");
                done.store(true, Ordering::Release);
                for i in 0..controls.len() {
                    controls.send(i, Command::Finish);
                }
            }
            Err(e) => log::warn!("hand-off: {e}; still serving here"),
        }
    }
}

/// True if the peer on `stream` runs as this process's user (or root):
/// nobody else may take connections or hand them in.
pub(super) fn same_user(stream: &UnixStream) -> bool {
    use nix::sys::socket::{getsockopt, sockopt::PeerCredentials};
    let Ok(creds) = getsockopt(stream, PeerCredentials) else { return false };
    let me = nix::unistd::geteuid().as_raw();
    creds.uid() == me || creds.uid() == 0
}

/// A process that comes after the hand-off is over hears why it cannot
/// take over from here (best effort).
fn refuse_late(stream: UnixStream) {
    let _ = stream.set_nonblocking(false);
    let mut link = Link::new(stream);
    let _ = link.set_timeout(Some(Duration::from_secs(1)));
    let why = "this process has handed its connections over already; the newer process offers them";
    let _ = link.send(Kind::Refuse, why.as_bytes(), &[]);
}

/// Why one hand-off did not happen; the old process keeps serving.
#[derive(Debug)]
enum Failed {
    /// The new process said no, and why.
    Refused(String),
    /// A loop did not answer.
    LoopSilent,
    /// The link broke (the new process failed or went away).
    Link(io::Error),
    /// The new process took the connections too slowly.
    Slow,
}

impl fmt::Display for Failed {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Failed::Refused(why) => write!(f, "the new process refused: {why}"),
            Failed::LoopSilent => f.write_str("a loop did not answer in time"),
            Failed::Link(e) => write!(f, "the new process went away ({e})"),
            Failed::Slow => f.write_str("the new process took the connections too slowly"),
        }
    }
}

impl From<io::Error> for Failed {
    fn from(e: io::Error) -> Self {
        Failed::Link(e)
    }
}

/// One hand-off to the new process on `stream`; the connections moved.
fn hand_off(stream: UnixStream, controls: &Controls, addr: std::net::SocketAddr) -> Result<usize, Failed> {
    stream.set_nonblocking(false)?;
    let mut link = Link::new(stream);
    link.set_timeout(Some(STEP_TIMEOUT))?;
    let mut hello = FORMAT.to_le_bytes().to_vec();
    hello.extend_from_slice(&(controls.len() as u32).to_le_bytes());
    hello.extend_from_slice(addr.to_string().as_bytes());
    link.send(Kind::Hello, &hello, &[])?;
    let answer = link.recv_answer()?;
    match answer.kind {
        Kind::Ready => {}
        Kind::Refuse => return Err(Failed::Refused(String::from_utf8_lossy(&answer.body).into_owned())),
        _ => return Err(Failed::Refused("an unexpected answer".into())),
    }
    log::info!("hand-off: a new process is taking over; freezing the loops");
    let mut listeners = match freeze(controls) {
        Ok(listeners) => listeners,
        Err((e, some)) => {
            resume(controls, some, Vec::new());
            return Err(e);
        }
    };
    if let Err(e) = super::redis_cut::old_side(&mut link, controls) {
        resume(controls, listeners, Vec::new());
        super::redis_cut::old_done(controls, true);
        return Err(e.into());
    }
    let mut exported = match export(controls) {
        Ok(exported) => exported,
        Err((e, some)) => {
            resume(controls, listeners, some);
            super::redis_cut::old_done(controls, true);
            return Err(e);
        }
    };
    match send_all(&mut link, &listeners, &exported) {
        Ok(n) => {
            // Committed: the descriptors here close; nothing goes back.
            listeners.clear();
            exported.clear();
            super::redis_cut::old_done(controls, false);
            Ok(n)
        }
        Err(e) => {
            // The members come back first, then what Redis brought them.
            resume(controls, listeners, exported.into_iter().map(|e| e.moved).collect());
            super::redis_cut::old_done(controls, true);
            Err(e)
        }
    }
}

/// Freezes every loop; their listeners, by loop. On a silent loop: the
/// error and the listeners that came (to give back); a late answer is
/// turned into that loop's `Resume` by [`reap_late`].
fn freeze(controls: &Controls) -> Result<Listeners, (Failed, Listeners)> {
    let (tx, rx) = crossbeam_channel::unbounded::<Frozen>();
    for i in 0..controls.len() {
        controls.send(i, Command::Freeze(tx.clone()));
    }
    drop(tx);
    let mut listeners: Listeners = (0..controls.len()).map(|_| None).collect();
    let deadline = Instant::now() + LOOP_TIMEOUT;
    for _ in 0..controls.len() {
        match rx.recv_deadline(deadline) {
            Ok(frozen) => listeners[frozen.loop_id] = frozen.listener,
            Err(_) => {
                reap_late(controls, rx, |f| (f.loop_id, Command::Resume { moved: Vec::new(), listener: f.listener }));
                return Err((Failed::LoopSilent, listeners));
            }
        }
    }
    Ok(listeners)
}

/// Every loop's movable connections, by loop, asked of all loops at once.
/// On a silent loop: the error, and what the others exported (to give
/// back); a late answer is given back to its loop by [`reap_late`].
fn export(controls: &Controls) -> Result<Vec<Exported>, (Failed, Vec<Vec<Moved>>)> {
    let (tx, rx) = crossbeam_channel::unbounded::<Exported>();
    for i in 0..controls.len() {
        controls.send(i, Command::Export(tx.clone()));
    }
    drop(tx);
    let mut all: Vec<Option<Exported>> = (0..controls.len()).map(|_| None).collect();
    let deadline = Instant::now() + LOOP_TIMEOUT;
    for _ in 0..controls.len() {
        match rx.recv_deadline(deadline) {
            Ok(exported) => {
                let i = exported.loop_id;
                all[i] = Some(exported);
            }
            Err(_) => {
                reap_late(controls, rx, |e| (e.loop_id, Command::Resume { moved: e.moved, listener: None }));
                let some = all.into_iter().map(|e| e.map(|e| e.moved).unwrap_or_default()).collect();
                return Err((Failed::LoopSilent, some));
            }
        }
    }
    Ok(all.into_iter().flatten().collect())
}

/// After a loop was too slow: answers that still come (each loop drops
/// its sender once it has answered, or with its channel if it ended) are
/// given back to their loops, so nothing a late loop handed out is lost.
fn reap_late<A: Send + 'static>(
    controls: &Controls,
    rx: crossbeam_channel::Receiver<A>,
    give_back: impl Fn(A) -> (usize, Command) + Send + 'static,
) {
    let controls = controls.clone();
    let spawned = std::thread::Builder::new().name("wsloop-handoff-reaper".into()).spawn(move || {
        for late in rx.iter() {
            let (i, cmd) = give_back(late);
            controls.send(i, cmd);
        }
    });
    if let Err(e) = spawned {
        log::error!("hand-off: cannot start the thread that gives late answers back: {e}");
    }
}

/// Sends the listeners, the connections in batches, Done; waits for
/// Adopted, then commits. Until the commit is sent the descriptors stay
/// open here and the new process has read and written nothing, so any
/// failure gives everything back; after it, nothing goes back.
fn send_all(
    link: &mut Link,
    listeners: &[Option<std::net::TcpListener>],
    exported: &[Exported],
) -> Result<usize, Failed> {
    let deadline = Instant::now() + FROZEN_LIMIT;
    let fds: Vec<i32> = listeners.iter().flatten().map(|l| l.as_raw_fd()).collect();
    link.send(Kind::Listeners, &[], &fds)?;
    let moved: Vec<&Moved> = exported.iter().flat_map(|e| &e.moved).collect();
    let kept: usize = exported.iter().map(|e| e.kept).sum();
    let mut body = Vec::new();
    let mut record = Vec::new();
    let mut rest = &moved[..];
    while !rest.is_empty() {
        // No send may wait past the deadline: a reader that trickles cannot
        // keep the loops frozen.
        let left = deadline.checked_duration_since(Instant::now()).ok_or(Failed::Slow)?;
        link.set_timeout(Some(left.min(STEP_TIMEOUT).max(Duration::from_millis(1))))?;
        // At most BATCH connections and BATCH_BYTES of records a message
        // (one record over it goes alone).
        body.clear();
        body.extend_from_slice(&0u32.to_le_bytes());
        let mut n = 0;
        while n < rest.len().min(BATCH) && (n == 0 || body.len() < BATCH_BYTES) {
            record.clear();
            rest[n].state.encode(&mut record);
            body.extend_from_slice(&(record.len() as u32).to_le_bytes());
            body.extend_from_slice(&record);
            n += 1;
        }
        body[..4].copy_from_slice(&(n as u32).to_le_bytes());
        let fds: Vec<i32> = rest[..n].iter().map(|m| m.fd.as_raw_fd()).collect();
        link.send(Kind::Conns, &body, &fds)?;
        rest = &rest[n..];
    }
    link.set_timeout(Some(STEP_TIMEOUT))?;
    link.send(Kind::Done, &(moved.len() as u64).to_le_bytes(), &[])?;
    let answer = link.recv_answer()?;
    if answer.kind != Kind::Adopted {
        return Err(Failed::Refused("no Adopted".into()));
    }
    let adopted = answer.body.get(..8).map_or(0, |b| u64::from_le_bytes(b.try_into().unwrap_or_default()));
    link.send(Kind::Commit, &[], &[])?;
    if adopted as usize != moved.len() {
        log::warn!("hand-off: sent {} connections, the new process adopted {adopted}", moved.len());
    }
    log::info!("hand-off: {} connections sent; {kept} stay here and drain", moved.len());
    Ok(moved.len())
}

/// The hand-off failed: every loop takes back its listener and its
/// connections and serves on.
fn resume(controls: &Controls, listeners: Listeners, moved: Vec<Vec<Moved>>) {
    let mut listeners = listeners.into_iter();
    let mut moved = moved.into_iter();
    for i in 0..controls.len() {
        let cmd = Command::Resume { moved: moved.next().unwrap_or_default(), listener: listeners.next().flatten() };
        controls.send(i, cmd);
    }
}
