//! The I/O engine: one event loop per core (on io_uring or epoll, see
//! [`driver`]), each with its own SO_REUSEPORT listener, so the kernel
//! spreads accepted connections and no lock is shared. It knows nothing of what messages mean: that is the
//! [`Handler`]'s job.
//!
//! Several processes can listen on the same port the same way (every
//! listener sets SO_REUSEPORT): that is how a host whose per-process file
//! limit is below the target still serves 100,000 connections.

pub mod address_limits;
pub mod admin;
pub mod bridge;
mod budget;
pub mod config;
pub mod driver;
mod engine;
pub mod forwarded;
pub mod handler;
pub mod handoff;
pub mod identity;
mod life;
pub mod proxy_protocol;
mod pubsub;
mod shrink;
pub mod stats;
pub mod tls;

use std::io;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;

use mio::net::TcpListener;
use mio::{Interest, Poll, Waker};
use socket2::{Domain, Protocol, Socket, Type};

use bridge::{Bridge, BridgeConfig, BridgeStats};
use driver::epoll::{EpollDriver, EpollIo, LISTENER, WAKER};
use driver::uring::{UringDriver, UringIo};
use driver::IoModel;
use engine::{Engine, LoopParts, Shared};
use pubsub::hub::{Hub, LoopMsg, LoopWaker};

pub use budget::{MemoryBudget, MemoryUsage};
pub use config::ServerConfig;
pub use handler::{CloseCtx, ConnId, Ctx, Handler, Message, RefreshError, Refusal, Upgrade};
pub use life::CloseReason;
pub use pubsub::orders::{Kick, KickError, Target, MAX_REASON};
pub use pubsub::{RoomError, RoomLimits};
pub use stats::LoopStats;

pub use crate::tune::rlimit::FD_RESERVE;

/// Opens a listening socket on `addr` with SO_REUSEADDR and SO_REUSEPORT.
pub fn bind_reuseport(addr: SocketAddr, backlog: u32) -> io::Result<std::net::TcpListener> {
    let socket = Socket::new(Domain::for_address(addr), Type::STREAM, Some(Protocol::TCP))?;
    socket.set_reuse_address(true)?;
    socket.set_reuse_port(true)?;
    socket.set_nonblocking(true)?;
    socket.bind(&addr.into())?;
    socket.listen(backlog.min(i32::MAX as u32) as i32)?;
    Ok(socket.into())
}

/// A non-blocking, close-on-exec eventfd: how the io_uring driver's inbox
/// is woken.
fn new_eventfd() -> io::Result<std::os::fd::OwnedFd> {
    // SAFETY: eventfd returns a new descriptor or -1.
    let fd = unsafe { libc::eventfd(0, libc::EFD_NONBLOCK | libc::EFD_CLOEXEC) };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: `fd` is new and ours alone.
    Ok(unsafe { <std::os::fd::OwnedFd as std::os::fd::FromRawFd>::from_raw_fd(fd) })
}

/// A running server: its address, its counters, and the way to stop it.
pub struct ServerHandle {
    addr: SocketAddr,
    stats: Vec<Arc<LoopStats>>,
    hub: Arc<Hub>,
    threads: Vec<JoinHandle<io::Result<()>>>,
    shared: Arc<Shared>,
    /// The Redis bridge's threads, stopped after the loops.
    bridge: Option<bridge::Running>,
    /// The Redis bridge's counters, if there is a bridge.
    bridge_stats: Option<Arc<BridgeStats>>,
    /// Each loop's control channel (a live hand-off).
    controls: handoff::Controls,
    /// The room limits, which the admin API's publishes keep to as well.
    rooms: RoomLimits,
}

impl ServerHandle {
    /// The address the loops listen on (with the real port if 0 was asked).
    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    /// Each loop's counters, in loop order.
    pub fn stats(&self) -> &[Arc<LoopStats>] {
        &self.stats
    }

    /// Open connections across all loops.
    pub fn connections(&self) -> u64 {
        self.stats.iter().map(|s| s.connections.get()).sum()
    }

    /// The Redis bridge's counters, if there is a bridge.
    pub fn bridge_stats(&self) -> Option<Arc<BridgeStats>> {
        self.bridge_stats.clone()
    }

    /// The process's memory budget: its limit, and what is held against
    /// it by kind.
    pub fn memory_budget(&self) -> Arc<MemoryBudget> {
        self.shared.budget.clone()
    }

    /// Room publishes dropped because a loop's inbox was full (see
    /// `pubsub::hub::INBOX_CAP`), read at any time.
    pub fn inbox_dropped(&self) -> Arc<std::sync::atomic::AtomicU64> {
        self.hub.dropped().clone()
    }

    /// Offers this server's connections to a newer process on the Unix
    /// socket `path` (`--takeover`): see [`handoff`]. Dropping the offer
    /// stops it.
    /// `replace`: this server took over from the process offering there
    /// (which may still be draining): its socket is replaced.
    pub fn offer_handoff(&self, path: &std::path::Path, replace: bool) -> Result<handoff::Offer, handoff::OfferError> {
        handoff::Offer::start(path, self.controls.clone(), self.addr, replace)
    }

    /// The admin API's way into the loops: publish to a room, close
    /// connections, count rooms (see [`admin`]).
    pub fn admin(&self) -> admin::AdminPort {
        admin::AdminPort::new(self.hub.clone(), self.rooms)
    }

    /// The connection limit in effect.
    pub fn max_conns(&self) -> usize {
        self.shared.max_conns
    }

    /// True once shutdown has begun.
    pub fn is_shutting_down(&self) -> bool {
        self.shared.shutting_down.load(Ordering::Relaxed)
    }

    /// Begins graceful shutdown: every loop stops accepting and sends close
    /// 1001 to its connections. Returns at once; [`join`](Self::join) waits.
    pub fn shutdown(&self) {
        self.trigger().shutdown();
    }

    /// A handle that can begin shutdown from another thread (a signal
    /// handler thread, say) while this one waits in [`join`](Self::join).
    pub fn trigger(&self) -> ShutdownTrigger {
        ShutdownTrigger { hub: self.hub.clone(), shared: self.shared.clone() }
    }

    /// Waits for every loop to finish; the first loop error, if any.
    pub fn join(self) -> io::Result<()> {
        let mut result = Ok(());
        for t in self.threads {
            let r = t.join().unwrap_or_else(|_| Err(io::Error::other("an event loop panicked")));
            if result.is_ok() {
                result = r;
            }
        }
        if let Some(bridge) = self.bridge {
            bridge.stop();
        }
        result
    }
}

/// Begins graceful shutdown of a server from any thread.
#[derive(Clone)]
pub struct ShutdownTrigger {
    hub: Arc<Hub>,
    shared: Arc<Shared>,
}

impl ShutdownTrigger {
    /// True once shutdown has begun.
    pub fn is_shutting_down(&self) -> bool {
        self.shared.shutting_down.load(Ordering::Relaxed)
    }

    /// See [`ServerHandle::shutdown`].
    pub fn shutdown(&self) {
        self.shared.shutting_down.store(true, Ordering::Relaxed);
        self.hub.shutdown_all();
    }
}

/// Starts `cfg.worker_count()` event loops serving handlers made by
/// `factory` (called once per loop, on that loop's thread, with its index).
///
/// Binding happens before this returns, so a bad address is an error here.
pub fn start<H, F>(cfg: ServerConfig, factory: F) -> io::Result<ServerHandle>
where
    H: Handler + 'static,
    F: Fn(usize) -> H + Send + Sync + 'static,
{
    start_listening(cfg, factory, None)
}

/// Starts a server that takes over the connections of the running one
/// that `takeover` is connected to: its loops start without listeners,
/// then the old process's listeners and connections are adopted (see
/// [`handoff`]). Returns the server and how many connections it adopted.
/// Any error before the connections move leaves them with the old process.
pub fn start_taking_over<H, F>(
    cfg: ServerConfig,
    factory: F,
    mut takeover: handoff::Takeover,
) -> Result<(ServerHandle, usize), handoff::TakeoverError>
where
    H: Handler + 'static,
    F: Fn(usize) -> H + Send + Sync + 'static,
{
    takeover.check(cfg.worker_count())?;
    let handle = match start_listening(cfg, factory, Some(takeover.hello().addr)) {
        Ok(handle) => handle,
        Err(e) => {
            takeover.refuse(&format!("the new process could not start: {e}"));
            return Err(e.into());
        }
    };
    match takeover.run(&handle.controls) {
        Ok(adopted) => Ok((handle, adopted)),
        Err(e) => {
            handle.shutdown();
            let _ = handle.join();
            Err(e)
        }
    }
}

/// [`start`], binding listeners, or (`handed`: the address of the
/// listeners a hand-off brings) none.
fn start_listening<H, F>(cfg: ServerConfig, factory: F, handed: Option<SocketAddr>) -> io::Result<ServerHandle>
where
    H: Handler + 'static,
    F: Fn(usize) -> H + Send + Sync + 'static,
{
    cfg.check().map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e))?;
    let workers = cfg.worker_count();
    let shared = Arc::new(Shared {
        open: AtomicUsize::new(0),
        max_conns: max_conns(&cfg)?,
        shutting_down: AtomicBool::new(false),
        address_limits: address_limits::AddressLimits::new(cfg.address_limits),
        budget: Arc::new(budget::MemoryBudget::new(memory_limit(&cfg), cfg.buffer_size)),
        user_counts: (cfg.max_conns_per_user > 0).then(|| Arc::new(identity::UserCounts::new(cfg.max_conns_per_user))),
    });
    let (addr, listeners) = listeners_for(&cfg, workers, handed)?;
    let bridge = new_bridge(&cfg)?;
    let (model, why) = driver::resolve(cfg.io).map_err(|e| io::Error::new(io::ErrorKind::Unsupported, e.0))?;
    log::info!("I/O driver: {} ({why})", model.label());
    // Every driver and waker exists before any loop runs, so each loop can
    // post to every other from its first event.
    let mut hub = Hub::default();
    let mut loops = Vec::with_capacity(workers);
    let mut control_senders = Vec::with_capacity(workers);
    for listener in listeners {
        let (tx, control) = crossbeam_channel::unbounded();
        control_senders.push(tx);
        loops.push(prepare_loop(model, listener, control, &mut hub)?);
    }
    let mut bridge_stats = None;
    let mut cut = None;
    let pending = bridge.map(|(bridge, pending)| {
        let stats = bridge.stats().clone();
        let queued = stats.clone();
        shared.budget.watch_redis(Arc::new(move || queued.queued_bytes()));
        bridge_stats = Some(stats);
        cut = Some(bridge.cut().clone());
        let directory = bridge.directory().clone();
        hub.set_outbox(Box::new(bridge), directory);
        pending
    });
    let hub = Arc::new(hub);
    let controls = handoff::Controls::new(control_senders, hub.clone(), cut);
    let mut handle = ServerHandle {
        addr,
        stats: Vec::new(),
        hub: hub.clone(),
        threads: Vec::new(),
        shared: shared.clone(),
        bridge: None,
        bridge_stats,
        controls,
        rooms: cfg.rooms,
    };
    if let Err(e) = spawn_loops(&mut handle, loops, Arc::new(cfg), Arc::new(factory)) {
        return Err(handle.abort(e));
    }
    if let Some(pending) = pending {
        match Bridge::spawn(pending, hub) {
            Ok(running) => handle.bridge = Some(running),
            Err(e) => return Err(handle.abort(io::Error::other(e.to_string()))),
        }
    }
    Ok(handle)
}

impl ServerHandle {
    /// Stops what has started and returns `e`: `start` failed part way.
    fn abort(self, e: io::Error) -> io::Error {
        self.shutdown();
        let _ = self.join();
        e
    }
}

/// `--memory-limit`, or (unset) half of the cgroup's or host's memory;
/// logged.
fn memory_limit(cfg: &ServerConfig) -> u64 {
    let units = |b: u64| crate::units::format_size(b);
    match cfg.memory_limit {
        Some(0) => {
            log::info!("memory budget: off (--memory-limit 0)");
            0
        }
        Some(limit) => {
            log::info!("memory budget: {} (soft mark at 3/4)", units(limit));
            limit
        }
        None => match budget::default_limit() {
            Some((limit, source)) => {
                log::info!(
                    "memory budget: {} (half of {}; set --memory-limit to change)",
                    units(limit),
                    source.label()
                );
                limit
            }
            None => {
                log::warn!("memory budget: off (neither the cgroup's nor the host's memory could be read)");
                0
            }
        },
    }
}

/// `--max-conns`, or (0) what the descriptor limit allows.
fn max_conns(cfg: &ServerConfig) -> io::Result<usize> {
    if cfg.max_conns > 0 {
        return Ok(cfg.max_conns);
    }
    let (soft, _) = crate::tune::rlimit::nofile()?;
    Ok((soft as usize).saturating_sub(FD_RESERVE).max(1))
}

/// The Redis bridge `--redis-url` asks for, not started yet; a bad URL
/// fails here, before any thread starts.
fn new_bridge(cfg: &ServerConfig) -> io::Result<Option<(Bridge, bridge::Pending)>> {
    let Some(bridge_cfg) = &cfg.bridge else { return Ok(None) };
    // The bridge refuses the room names join refuses: the server's.
    let bridge_cfg = BridgeConfig { max_room_name: cfg.rooms.max_name_len, ..bridge_cfg.clone() };
    let made = Bridge::new(bridge_cfg).map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e.to_string()))?;
    Ok(Some(made))
}

/// Each loop's listener, bound here, or none (`handed`: they come from a
/// hand-off, on that address).
fn listeners_for(
    cfg: &ServerConfig,
    workers: usize,
    handed: Option<SocketAddr>,
) -> io::Result<(SocketAddr, Vec<Option<std::net::TcpListener>>)> {
    Ok(match handed {
        None => {
            let (addr, listeners) = bind_all(cfg, workers)?;
            (addr, listeners.into_iter().map(Some).collect())
        }
        Some(addr) => (addr, (0..workers).map(|_| None).collect()),
    })
}

/// One listener per loop on the same port; the first resolves port 0.
fn bind_all(cfg: &ServerConfig, workers: usize) -> io::Result<(SocketAddr, Vec<std::net::TcpListener>)> {
    let first = bind_reuseport(cfg.addr, cfg.listen_backlog)?;
    let addr = first.local_addr()?;
    let mut listeners = vec![first];
    for _ in 1..workers {
        listeners.push(bind_reuseport(addr, cfg.listen_backlog)?);
    }
    Ok((addr, listeners))
}

/// A loop as `start` hands it to its thread: its listener, its inbox, and
/// its driver's I/O, ready (epoll) or to be made on the loop's own thread
/// (io_uring, from its inbox's eventfd).
struct PreparedLoop {
    io: PreparedIo,
    /// None: it comes later, from a hand-off.
    listener: Option<TcpListener>,
    inbox: crossbeam_channel::Receiver<LoopMsg>,
    control: crossbeam_channel::Receiver<handoff::Command>,
}

/// See [`PreparedLoop`].
enum PreparedIo {
    Epoll(Poll),
    Uring(std::os::fd::OwnedFd),
}

/// Registers a loop's inbox with the hub and readies its driver's I/O.
fn prepare_loop(
    model: IoModel,
    std_listener: Option<std::net::TcpListener>,
    control: crossbeam_channel::Receiver<handoff::Command>,
    hub: &mut Hub,
) -> io::Result<PreparedLoop> {
    let (tx, inbox) = crossbeam_channel::unbounded();
    let mut listener = std_listener.map(TcpListener::from_std);
    let io = match model {
        IoModel::Epoll => {
            let poll = Poll::new()?;
            if let Some(listener) = &mut listener {
                poll.registry().register(listener, LISTENER, Interest::READABLE)?;
            }
            hub.add(tx, LoopWaker::Poll(Waker::new(poll.registry(), WAKER)?));
            PreparedIo::Epoll(poll)
        }
        IoModel::Uring => {
            // io_uring waits on the blocking descriptor itself.
            if let Some(listener) = &listener {
                socket2::SockRef::from(listener).set_nonblocking(false)?;
            }
            let eventfd = new_eventfd()?;
            hub.add(tx, LoopWaker::EventFd(eventfd.try_clone()?));
            // The ring is made on the loop's thread, its only user: io_uring
            // ties a ring's work to the threads that set it up and submit.
            PreparedIo::Uring(eventfd)
        }
    };
    Ok(PreparedLoop { io, listener, inbox, control })
}

/// Starts one thread per loop; returns once every loop says its driver is
/// up, or the first error (the caller stops the others).
fn spawn_loops<H, F>(
    handle: &mut ServerHandle,
    loops: Vec<PreparedLoop>,
    cfg: Arc<ServerConfig>,
    factory: Arc<F>,
) -> io::Result<()>
where
    H: Handler + 'static,
    F: Fn(usize) -> H + Send + Sync + 'static,
{
    let workers = loops.len();
    let (up_tx, up_rx) = crossbeam_channel::bounded(workers);
    let all_stats: Vec<_> = (0..workers).map(|_| Arc::new(LoopStats::default())).collect();
    handle.shared.budget.watch_loops(all_stats.clone());
    for ((i, prepared), stats) in loops.into_iter().enumerate().zip(all_stats) {
        handle.stats.push(stats.clone());
        let parts = LoopParts {
            id: i as u32,
            cfg: cfg.clone(),
            stats,
            shared: handle.shared.clone(),
            inbox: prepared.inbox,
            control: prepared.control,
            hub: handle.hub.clone(),
        };
        let (factory, up) = (factory.clone(), up_tx.clone());
        let (io, listener) = (prepared.io, prepared.listener);
        let thread = std::thread::Builder::new()
            .name(format!("wsloop-loop-{i}"))
            .spawn(move || run_loop(io, listener, move || factory(i), parts, up))?;
        handle.threads.push(thread);
    }
    for _ in 0..workers {
        if let Ok(Err(e)) = up_rx.recv() {
            return Err(e);
        }
    }
    Ok(())
}

/// One loop's thread: makes its driver (io_uring's ring is made here, on
/// the thread that will submit to it), says whether it is up, and runs.
fn run_loop<H: Handler>(
    io: PreparedIo,
    listener: Option<TcpListener>,
    handler: impl FnOnce() -> H,
    parts: LoopParts,
    up: crossbeam_channel::Sender<io::Result<()>>,
) -> io::Result<()> {
    match io {
        PreparedIo::Epoll(poll) => {
            let _ = up.send(Ok(()));
            EpollDriver::new(Engine::new(EpollIo::new(poll), listener, handler(), parts)).run()
        }
        PreparedIo::Uring(eventfd) => {
            let cfg = &parts.cfg;
            let ring = match UringIo::new(cfg.buffer_size, cfg.uring_buffers, eventfd) {
                Ok(ring) => ring,
                Err(e) => {
                    let e = io::Error::new(e.kind(), format!("loop {}: cannot set up io_uring: {e}", parts.id));
                    let _ = up.send(Err(io::Error::new(e.kind(), e.to_string())));
                    return Err(e);
                }
            };
            let _ = up.send(Ok(()));
            UringDriver::new(Engine::new(ring, listener, handler(), parts)).run()
        }
    }
}
