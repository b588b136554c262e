//! The metrics thread: Prometheus `/metrics` and `/healthz` over HTTP.
//!
//! Every figure is read at scrape time: loop counters from their atomics,
//! process figures (RSS, FDs, CPU, threads) by the prometheus crate's
//! process collector, the kernel's TCP memory from /proc/net/sockstat. The
//! event loops never do anything for a scrape. The port itself is served
//! by [`http`], which a flood of idle or slow connections cannot starve,
//! so `/healthz` answers a load balancer while the port is under fire.

pub mod admin;
pub mod collector;
mod head;
pub mod http;
mod sample;

use std::io;
use std::net::SocketAddr;
use std::sync::atomic::AtomicBool;
use std::sync::Arc;
use std::thread::JoinHandle;

use prometheus::{Encoder, Registry, TextEncoder};

pub use collector::{Source, WsloopCollector};

/// A running metrics server.
pub struct MetricsHandle {
    addr: SocketAddr,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<io::Result<()>>>,
}

impl MetricsHandle {
    /// The address it listens on.
    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }
}

impl Drop for MetricsHandle {
    fn drop(&mut self) {
        self.stop.store(true, std::sync::atomic::Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// The registry of everything `/metrics` shows.
pub fn registry(source: Source) -> Registry {
    let registry = Registry::new();
    registry.register(Box::new(WsloopCollector::new(source))).expect("wsloop metrics register once");
    registry
        .register(Box::new(prometheus::process_collector::ProcessCollector::for_self()))
        .expect("process metrics register once");
    registry
}

/// Renders the registry in the Prometheus text format.
pub fn render(registry: &Registry) -> Vec<u8> {
    let mut body = Vec::with_capacity(8192);
    let encoder = TextEncoder::new();
    if let Err(e) = encoder.encode(&registry.gather(), &mut body) {
        log::warn!("metrics: encoding failed: {e}");
    }
    body
}

/// Starts the metrics thread on `addr`. `serving` says whether the loops
/// are serving (true) or shutting down (false) for `/healthz`.
pub fn start(
    addr: SocketAddr,
    source: Source,
    serving: impl Fn() -> bool + Send + 'static,
) -> io::Result<MetricsHandle> {
    let listener = http::bind(addr)?;
    let addr = listener.local_addr()?;
    let stop = Arc::new(AtomicBool::new(false));
    let bridge = source.bridge.clone();
    let admin = source.admin.clone();
    let stats = Arc::new(http::HttpStats::default());
    let registry = registry(source);
    if let Some(admin) = admin {
        registry.register(Box::new(admin::AdminCollector::new(admin))).expect("admin families register once");
    }
    registry
        .register(Box::new(collector::HttpCollector::new(stats.clone())))
        .expect("metrics port families register once");
    let respond: http::Responder = Box::new(move |path: &str| match path {
        "/metrics" => (200, "text/plain; version=0.0.4; charset=utf-8", render(&registry)),
        // Still 200 without Redis: this host serves its own members, and a
        // load balancer must not take every host out because Redis is away.
        "/healthz" if serving() && bridge.as_ref().is_some_and(|b| !b.is_up()) => {
            (200, "text/plain", b"ok; redis bridge down: rooms reach this host's members only\n".to_vec())
        }
        "/healthz" if serving() => (200, "text/plain", b"ok\n".to_vec()),
        "/healthz" => (503, "text/plain", b"shutting down\n".to_vec()),
        _ => (404, "text/plain", b"not found: try /metrics or /healthz\n".to_vec()),
    });
    let flag = stop.clone();
    let thread = std::thread::Builder::new()
        .name("wsloop-metrics".into())
        .spawn(move || http::serve(listener, respond, stats, http::Limits::DEFAULT, flag))?;
    Ok(MetricsHandle { addr, stop, thread: Some(thread) })
}
