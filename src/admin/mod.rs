//! The admin API: how the service behind wsloop publishes to a room,
//! closes connections (one, a room's members, a user's) and counts rooms,
//! over HTTP with JSON, on a listener of its own (`--admin-addr`, never
//! the public port) behind a bearer token (`--admin-token-file`).
//!
//! - [`http`]: the port's server (its own thread and poll; bounded slots,
//!   deadlines, head and body).
//! - [`request`]: a request's head, read sans-io.
//! - [`routes`]: what each route does, through the engine's
//!   [`AdminPort`](crate::server::admin::AdminPort).
//! - [`token`]: the bearer token, compared in constant time.
//! - [`client`]: the other end, for `wsloop admin ...`.
//!
//! The routes and their JSON are in the README, "Admin API".

pub mod client;
pub mod http;
pub mod request;
pub mod routes;
pub mod token;

use std::io;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;

use crate::metrics::admin::AdminStats;
use crate::server::admin::AdminPort;

pub use token::{AdminToken, TokenError};

/// A running admin API; dropping it stops its thread.
pub struct AdminHandle {
    addr: SocketAddr,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<io::Result<()>>>,
}

impl AdminHandle {
    /// The address it listens on.
    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }
}

impl Drop for AdminHandle {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// Starts the admin API on `addr`, answering requests that present
/// `token` through `port`, counting in `stats`.
pub fn start(addr: SocketAddr, token: AdminToken, port: AdminPort, stats: Arc<AdminStats>) -> io::Result<AdminHandle> {
    start_with(addr, token, port, stats, http::Limits::default())
}

/// [`start`] with other bounds (tests use small ones).
pub fn start_with(
    addr: SocketAddr,
    token: AdminToken,
    port: AdminPort,
    stats: Arc<AdminStats>,
    limits: http::Limits,
) -> io::Result<AdminHandle> {
    // SO_REUSEPORT, like the metrics port: during a live hand-off the new
    // process binds while the old one still answers (the binary refuses an
    // admin port equal to the public or the metrics one).
    let listener = crate::server::bind_reuseport(addr, 128)?;
    let addr = listener.local_addr()?;
    let stop = Arc::new(AtomicBool::new(false));
    let flag = stop.clone();
    let api = http::Api { token, port, stats };
    let thread = std::thread::Builder::new()
        .name("wsloop-admin".into())
        .spawn(move || http::serve(listener, api, limits, flag))?;
    Ok(AdminHandle { addr, stop, thread: Some(thread) })
}
