//! The I/O engine: one event loop per core (on io_uring or epoll, see
//! [`driver`]), each with its own SO_REUSEPORT listener, so the kernel
//! spreads accepted connections and no lock is shared. It knows nothing of what messages mean: that is the
//! [`Handler`]'s job.
//!
//! Several processes can listen on the same port the same way (every
//! listener sets SO_REUSEPORT): that is how a host whose per-process file
//! limit is below the target still serves 100,000 connections.

pub mod address_limits;
pub mod bridge;
pub mod compression;
pub mod config;
pub mod conn;
pub mod driver;
pub mod event_loop;
mod fanout;
pub mod handler;
pub mod hub;
pub mod life;
pub mod publication;
pub mod rooms;
pub mod shrink;
mod socket;
pub mod stats;
pub mod tls;
pub mod uring;

use std::io;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;

use mio::net::TcpListener;
use mio::{Interest, Poll, Waker};

use driver::Driver;
use hub::{Hub, LoopWaker};
use socket2::{Domain, Protocol, Socket, Type};

pub use config::ServerConfig;
pub use handler::{CloseCtx, ConnId, Ctx, Handler, Message, Refusal, Upgrade};
pub use rooms::{RoomError, RoomLimits};
pub use stats::{CloseReason, LoopStats};

use event_loop::{EventLoop, Io, Shared, LISTENER, WAKER};

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
    pub fn bridge_stats(&self) -> Option<Arc<bridge::BridgeStats>> {
        self.hub.bridge().map(|b| b.stats().clone())
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
    let workers = cfg.worker_count();
    let max_conns = if cfg.max_conns > 0 {
        cfg.max_conns
    } else {
        let (soft, _) = crate::tune::rlimit::nofile()?;
        (soft as usize).saturating_sub(FD_RESERVE).max(1)
    };
    let shared = Arc::new(Shared {
        open: AtomicUsize::new(0),
        max_conns,
        shutting_down: AtomicBool::new(false),
        address_limits: address_limits::AddressLimits::new(cfg.address_limits),
    });
    // The first listener resolves port 0; the others join the same port.
    let first = bind_reuseport(cfg.addr, cfg.listen_backlog)?;
    let addr = first.local_addr()?;
    let mut listeners = vec![first];
    for _ in 1..workers {
        listeners.push(bind_reuseport(addr, cfg.listen_backlog)?);
    }
    // A bad Redis URL fails here, before any thread starts.
    let bridge = match &cfg.bridge {
        Some(bridge_cfg) => Some(
            bridge::Bridge::new(bridge_cfg.clone())
                .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e.to_string()))?,
        ),
        None => None,
    };
    let (driver, why) = driver::resolve(cfg.io).map_err(|e| io::Error::new(io::ErrorKind::Unsupported, e.0))?;
    log::info!("I/O driver: {} ({why})", driver.label());
    let cfg = Arc::new(cfg);
    let factory = Arc::new(factory);
    // Every driver and waker exists before any loop runs, so each loop can
    // post to every other from its first event.
    let mut hub = Hub::default();
    let mut parts = Vec::with_capacity(workers);
    for std_listener in listeners {
        let (tx, rx) = crossbeam_channel::unbounded();
        let mut listener = TcpListener::from_std(std_listener);
        let io = match driver {
            Driver::Epoll => {
                let poll = Poll::new()?;
                poll.registry().register(&mut listener, LISTENER, Interest::READABLE)?;
                hub.add(tx, LoopWaker::Poll(Waker::new(poll.registry(), WAKER)?));
                LoopIo::Ready(Io::Epoll(poll))
            }
            Driver::Uring => {
                // io_uring waits on the blocking descriptor itself.
                socket2::SockRef::from(&listener).set_nonblocking(false)?;
                let eventfd = new_eventfd()?;
                hub.add(tx, LoopWaker::EventFd(eventfd.try_clone()?));
                // The ring is made on the loop's thread, its only user: io_uring
                // ties a ring's work to the threads that set it up and submit.
                LoopIo::Uring(eventfd)
            }
        };
        parts.push((io, listener, rx));
    }
    let pending = bridge.map(|(bridge, pending)| {
        hub.set_bridge(bridge);
        pending
    });
    let hub = Arc::new(hub);
    let mut handle = ServerHandle {
        addr,
        stats: Vec::new(),
        hub: hub.clone(),
        threads: Vec::new(),
        shared: shared.clone(),
        bridge: None,
    };
    // Each loop says whether its driver is up before `start` returns.
    let (up_tx, up_rx) = crossbeam_channel::bounded(workers);
    for (i, (io, listener, rx)) in parts.into_iter().enumerate() {
        let stats = Arc::new(LoopStats::default());
        handle.stats.push(stats.clone());
        let (cfg, shared, factory, hub, up) =
            (cfg.clone(), shared.clone(), factory.clone(), hub.clone(), up_tx.clone());
        let thread = std::thread::Builder::new().name(format!("wsloop-loop-{i}")).spawn(move || {
            let io = match io {
                LoopIo::Ready(io) => io,
                LoopIo::Uring(eventfd) => match Io::uring(cfg.buffer_size, cfg.uring_buffers, eventfd) {
                    Ok(io) => io,
                    Err(e) => {
                        let e = io::Error::new(e.kind(), format!("loop {i}: cannot set up io_uring: {e}"));
                        let _ = up.send(Err(io::Error::new(e.kind(), e.to_string())));
                        return Err(e);
                    }
                },
            };
            let _ = up.send(Ok(()));
            let handler = factory(i);
            EventLoop::new(i as u32, io, listener, handler, cfg, stats, shared, rx, hub).run()
        })?;
        handle.threads.push(thread);
    }
    for _ in 0..workers {
        if let Ok(Err(e)) = up_rx.recv() {
            handle.shutdown();
            let _ = handle.join();
            return Err(e);
        }
    }
    if let Some(pending) = pending {
        match bridge::Bridge::spawn(pending, hub) {
            Ok(running) => handle.bridge = Some(running),
            Err(e) => {
                handle.shutdown();
                let _ = handle.join();
                return Err(io::Error::other(e.to_string()));
            }
        }
    }
    Ok(handle)
}

/// A loop's driver as `start` hands it over: ready, or (io_uring) made on
/// the loop's own thread from its inbox's eventfd.
enum LoopIo {
    Ready(Io),
    Uring(std::os::fd::OwnedFd),
}
