//! Helpers shared by the integration tests: start a real server on an
//! ephemeral port, and a raw client that can send any bytes, valid or not.

#![allow(dead_code)]

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

use wsloop::app::EchoApp;
use wsloop::server::driver::IoChoice;
use wsloop::server::{self, ServerConfig, ServerHandle};
use wsloop::ws::client::{generate_key, parse_response, write_request};
use wsloop::ws::frame::{opcode, write_frame, FrameHead, Role};
use wsloop::ws::mask::apply_mask;

/// A config on 127.0.0.1:0 with `workers` loops, on the I/O driver that
/// `WSLOOP_IO` names (as the binary reads it), so that the whole suite runs
/// against each driver: `WSLOOP_IO=epoll cargo test`, `WSLOOP_IO=uring ...`.
pub fn test_config(workers: usize) -> ServerConfig {
    ServerConfig { addr: "127.0.0.1:0".parse().unwrap(), workers, io: io_under_test(), ..ServerConfig::default() }
}

/// The driver `WSLOOP_IO` asks for (auto when unset).
pub fn io_under_test() -> IoChoice {
    match std::env::var("WSLOOP_IO").as_deref() {
        Ok("epoll") => IoChoice::Epoll,
        Ok("uring") => IoChoice::Uring,
        Ok("auto") | Err(_) => IoChoice::Auto,
        Ok(other) => panic!("WSLOOP_IO={other}: expected auto, epoll or uring"),
    }
}

/// Starts the built-in echo app (default publish policy: broadcasts off).
pub fn start_echo(cfg: ServerConfig) -> ServerHandle {
    server::start(cfg, |_| EchoApp::new()).expect("server starts")
}

/// Starts the built-in echo app under `policy`, counting its refused
/// publishes in `refused`.
pub fn start_echo_with(
    cfg: ServerConfig,
    policy: wsloop::app::PublishPolicy,
    refused: std::sync::Arc<wsloop::server::handler::PublishRefusals>,
) -> ServerHandle {
    server::start(cfg, move |_| EchoApp::with_policy(policy, refused.clone())).expect("server starts")
}

/// Polls `f` until it is true or `within` passes; returns the last value.
pub fn eventually(within: Duration, mut f: impl FnMut() -> bool) -> bool {
    let end = std::time::Instant::now() + within;
    loop {
        if f() {
            return true;
        }
        if std::time::Instant::now() > end {
            return false;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// A tungstenite client (an independent implementation) over std TCP.
pub type Tung = tungstenite::WebSocket<TcpStream>;

/// Connects a tungstenite client to `ws://addr/ws`.
pub fn tung_connect(addr: SocketAddr) -> Tung {
    tung_connect_from(addr, None)
}

/// A TCP connection to `addr` from `source` (any address of 127.0.0.0/8
/// works on loopback), or from wherever the kernel picks.
pub fn tcp_from(addr: SocketAddr, source: Option<std::net::IpAddr>) -> TcpStream {
    let Some(source) = source else {
        return TcpStream::connect(addr).expect("connect");
    };
    let socket = socket2::Socket::new(socket2::Domain::for_address(addr), socket2::Type::STREAM, None).unwrap();
    socket.bind(&SocketAddr::new(source, 0).into()).expect("bind the source address");
    socket.connect(&addr.into()).expect("connect");
    socket.into()
}

/// [`tung_connect`] from `source` (see [`tcp_from`]).
pub fn tung_connect_from(addr: SocketAddr, source: Option<std::net::IpAddr>) -> Tung {
    let stream = tcp_from(addr, source);
    stream.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let (ws, resp) = tungstenite::client(format!("ws://{addr}/ws"), stream).expect("handshake");
    assert_eq!(resp.status(), 101);
    ws
}

/// A frame as the raw client read it.
#[derive(Debug, PartialEq, Eq)]
pub struct RawFrame {
    pub fin: bool,
    pub opcode: u8,
    pub payload: Vec<u8>,
}

impl RawFrame {
    /// The close code of a close frame.
    pub fn close_code(&self) -> Option<u16> {
        (self.opcode == opcode::CLOSE && self.payload.len() >= 2)
            .then(|| u16::from_be_bytes([self.payload[0], self.payload[1]]))
    }
}

/// A client that sends exactly the bytes it is told to.
pub struct RawClient {
    pub stream: TcpStream,
    buf: Vec<u8>,
}

impl RawClient {
    /// Connects and completes the upgrade on `/ws`.
    pub fn connect(addr: SocketAddr) -> RawClient {
        RawClient::upgrade(RawClient::connect_tcp(addr), addr)
    }

    fn upgrade(mut c: RawClient, addr: SocketAddr) -> RawClient {
        let key = generate_key();
        let mut req = Vec::new();
        write_request(&mut req, &addr.to_string(), "/ws", &key);
        c.stream.write_all(&req).unwrap();
        loop {
            c.fill().expect("reply to the upgrade");
            if let Some(n) = parse_response(&c.buf, &key).expect("101") {
                c.buf.drain(..n);
                return c;
            }
        }
    }

    /// Connects and upgrades with a receive buffer of `bytes` (set before
    /// connecting, so the window stays small).
    pub fn connect_with_rcvbuf(addr: SocketAddr, bytes: usize) -> RawClient {
        let socket = socket2::Socket::new(socket2::Domain::for_address(addr), socket2::Type::STREAM, None).unwrap();
        socket.set_recv_buffer_size(bytes).unwrap();
        socket.connect(&addr.into()).unwrap();
        RawClient::upgrade(RawClient::from_stream(socket.into()), addr)
    }

    fn from_stream(stream: TcpStream) -> RawClient {
        stream.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        stream.set_nodelay(true).unwrap();
        RawClient { stream, buf: Vec::new() }
    }

    /// Connects TCP only.
    pub fn connect_tcp(addr: SocketAddr) -> RawClient {
        RawClient::from_stream(TcpStream::connect(addr).expect("connect"))
    }

    fn fill(&mut self) -> std::io::Result<usize> {
        let mut chunk = [0u8; 65536];
        let n = self.stream.read(&mut chunk)?;
        if n == 0 {
            return Err(std::io::ErrorKind::UnexpectedEof.into());
        }
        self.buf.extend_from_slice(&chunk[..n]);
        Ok(n)
    }

    /// Sends raw bytes.
    pub fn send_raw(&mut self, bytes: &[u8]) {
        self.stream.write_all(bytes).unwrap();
    }

    /// Sends one masked frame.
    pub fn send_frame(&mut self, fin: bool, op: u8, payload: &[u8]) {
        let mut v = Vec::new();
        write_frame(&mut v, fin, op, payload, Some([0x11, 0x22, 0x33, 0x44]));
        self.send_raw(&v);
    }

    /// Reads one frame (unmasked, as a server sends).
    pub fn read_frame(&mut self) -> std::io::Result<RawFrame> {
        loop {
            if let Some(h) = FrameHead::decode(&self.buf).expect("server frame header") {
                h.check(Role::Client, u64::MAX).expect("valid server frame");
                if self.buf.len() >= h.frame_len() {
                    let mut payload = self.buf[h.header_len as usize..h.frame_len()].to_vec();
                    if let Some(m) = h.mask {
                        apply_mask(&mut payload, m);
                    }
                    self.buf.drain(..h.frame_len());
                    return Ok(RawFrame { fin: h.fin, opcode: h.opcode, payload });
                }
            }
            self.fill()?;
        }
    }

    /// Reads the whole HTTP reply until the server closes (for refusals).
    pub fn read_to_end(&mut self) -> String {
        let mut rest = Vec::new();
        let _ = self.stream.read_to_end(&mut rest);
        self.buf.extend_from_slice(&rest);
        String::from_utf8_lossy(&self.buf).into_owned()
    }

    /// True if the server closed the TCP connection (EOF or reset) within the
    /// read timeout, after any frames still in flight.
    pub fn is_closed_by_server(&mut self) -> bool {
        loop {
            match self.read_frame() {
                Ok(_) => continue,
                Err(e) => {
                    return matches!(e.kind(), std::io::ErrorKind::UnexpectedEof | std::io::ErrorKind::ConnectionReset)
                }
            }
        }
    }
}

/// 100 well-behaved connections echoing in a loop on their own thread,
/// counting round trips and errors, until stopped.
pub struct Background {
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
    thread: Option<std::thread::JoinHandle<(u64, Vec<String>)>>,
}

impl Background {
    /// Connects `n` clients to `addr` and starts echoing.
    pub fn start(addr: SocketAddr, n: usize) -> Background {
        Background::start_from(addr, n, &[])
    }

    /// [`start`](Self::start), the clients spread over `sources` (round
    /// robin; none: the kernel's choice).
    pub fn start_from(addr: SocketAddr, n: usize, sources: &[std::net::IpAddr]) -> Background {
        let source = |i: usize| (!sources.is_empty()).then(|| sources[i % sources.len()]);
        let mut clients: Vec<Tung> = (0..n).map(|i| tung_connect_from(addr, source(i))).collect();
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let flag = stop.clone();
        let thread = std::thread::spawn(move || {
            let mut round_trips = 0u64;
            let mut errors = Vec::new();
            while !flag.load(std::sync::atomic::Ordering::Relaxed) {
                for (i, ws) in clients.iter_mut().enumerate() {
                    let text = format!("bg {i} {round_trips}");
                    let r = ws.send(tungstenite::Message::text(text.clone())).and_then(|_| ws.read());
                    match r {
                        Ok(m) if m == tungstenite::Message::text(text) => round_trips += 1,
                        Ok(m) => errors.push(format!("client {i}: wrong echo {m:?}")),
                        Err(e) => errors.push(format!("client {i}: {e}")),
                    }
                }
                std::thread::sleep(Duration::from_millis(20));
            }
            for ws in clients.iter_mut() {
                let _ = ws.close(None);
            }
            (round_trips, errors)
        });
        Background { stop, thread: Some(thread) }
    }

    /// Stops, and asserts that every round trip succeeded.
    pub fn finish(mut self) -> u64 {
        self.stop.store(true, std::sync::atomic::Ordering::Relaxed);
        let (round_trips, errors) = self.thread.take().unwrap().join().unwrap();
        assert!(errors.is_empty(), "well-behaved clients saw errors: {:?}", &errors[..errors.len().min(5)]);
        assert!(round_trips > 0);
        round_trips
    }
}

/// A `wsloop` process a test started: killed and reaped when dropped, so a
/// failing test leaves no server behind.
pub struct ServerProcess(pub std::process::Child);

impl std::ops::Deref for ServerProcess {
    type Target = std::process::Child;
    fn deref(&self) -> &std::process::Child {
        &self.0
    }
}

impl std::ops::DerefMut for ServerProcess {
    fn deref_mut(&mut self) -> &mut std::process::Child {
        &mut self.0
    }
}

impl Drop for ServerProcess {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// The `wsloop` binary, started with `args` on 127.0.0.1:0 (metrics on
/// 127.0.0.1:0 too; two loops unless `args` name `--workers`); returns the
/// process and the address it listens on.
pub fn spawn_binary(args: &[&str], nofile: Option<u64>) -> (ServerProcess, SocketAddr) {
    let (child, addr, _) = spawn_binary_with_metrics(args, nofile);
    (child, addr)
}

/// Like [`spawn_binary`], also returning the metrics address (read from its log).
pub fn spawn_binary_with_metrics(args: &[&str], nofile: Option<u64>) -> (ServerProcess, SocketAddr, SocketAddr) {
    let (child, addr, metrics, _) = spawn_binary_with_log(args, nofile);
    (child, addr, metrics)
}

/// Like [`spawn_binary_with_metrics`], also returning its log up to the
/// metrics line (the start-up lines: driver, limits, listening).
pub fn spawn_binary_with_log(
    args: &[&str],
    nofile: Option<u64>,
) -> (ServerProcess, SocketAddr, SocketAddr, Vec<String>) {
    use std::io::BufRead;
    let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_wsloop"));
    cmd.args(["serve", "--addr", "127.0.0.1:0", "--metrics-addr", "127.0.0.1:0"]);
    // Two loops, unless the test names its own number.
    if !args.contains(&"--workers") {
        cmd.args(["--workers", "2"]);
    }
    cmd.args(args);
    cmd.stderr(std::process::Stdio::piped()).stdout(std::process::Stdio::null());
    if let Some(limit) = nofile {
        limit_nofile(&mut cmd, limit);
    }
    let mut child = ServerProcess(cmd.spawn().expect("spawn wsloop"));
    let stderr = child.stderr.take().unwrap();
    let mut lines = std::io::BufReader::new(stderr).lines();
    let mut addr = None;
    let mut log = Vec::new();
    let metrics = loop {
        let line = lines.next().expect("wsloop exited before listening").unwrap();
        log.push(line.clone());
        if let Some(rest) = line.split("listening on ws://").nth(1).or_else(|| line.split("listening on wss://").nth(1))
        {
            addr = Some(rest.split('/').next().unwrap().parse().unwrap());
        }
        if let Some(rest) = line.split("metrics on http://").nth(1) {
            break rest.split('/').next().unwrap().parse().unwrap();
        }
    };
    // Keep draining the log so the server never blocks on a full pipe.
    std::thread::spawn(move || for _ in lines {});
    (child, addr.expect("listening line before the metrics line"), metrics, log)
}

/// VmRSS of a process, in bytes.
pub fn rss_of(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let line = status.lines().find(|l| l.starts_with("VmRSS:")).unwrap();
    line.split_whitespace().nth(1).unwrap().parse::<u64>().unwrap() * 1024
}

/// User + system CPU time of a process, in clock ticks.
pub fn cpu_ticks_of(pid: u32) -> u64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
    let after = &stat[stat.rfind(')').unwrap() + 2..];
    let f: Vec<&str> = after.split_whitespace().collect();
    f[11].parse::<u64>().unwrap() + f[12].parse::<u64>().unwrap()
}

impl RawClient {
    /// True if the first bytes the server sends start with `prefix`.
    pub fn read_frame_or_reply_starts_with(&mut self, prefix: &str) -> bool {
        while self.buf.len() < prefix.len() {
            if self.fill().is_err() {
                return false;
            }
        }
        self.buf.starts_with(prefix.as_bytes())
    }
}

/// A plain HTTP GET; returns (status, body). Panics on transport errors.
pub fn http_get(addr: SocketAddr, path: &str) -> (u16, String) {
    let mut s = TcpStream::connect(addr).expect("connect to metrics");
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    write!(s, "GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").unwrap();
    let mut reply = String::new();
    s.read_to_string(&mut reply).unwrap();
    let status = reply.split(' ').nth(1).and_then(|c| c.parse().ok()).unwrap_or(0);
    let body = reply.split_once("\r\n\r\n").map(|(_, b)| b.to_string()).unwrap_or_default();
    (status, body)
}

/// The value of one sample line (`name{labels} value`) in an exposition.
pub fn sample(exposition: &str, series: &str) -> Option<f64> {
    exposition
        .lines()
        .find(|l| l.starts_with(series) && l[series.len()..].starts_with(' '))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
}

/// Open connections in an exposition: `wsloop_connections` summed over loops.
pub fn open_connections(exposition: &str) -> f64 {
    exposition
        .lines()
        .filter(|l| l.starts_with("wsloop_connections{"))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

/// Starts the metrics thread for an in-process server on 127.0.0.1:0.
pub fn start_metrics(server: &ServerHandle) -> wsloop::metrics::MetricsHandle {
    let source = wsloop::metrics::Source::of(server);
    let probe = server.trigger();
    wsloop::metrics::start("127.0.0.1:0".parse().unwrap(), source, move || !probe.is_shutting_down()).unwrap()
}

/// Makes `cmd` start under an open-file limit of `limit` (soft and hard).
pub fn limit_nofile(cmd: &mut std::process::Command, limit: u64) {
    use std::os::unix::process::CommandExt;
    // SAFETY: the closure runs between fork and exec and only calls
    // setrlimit, which is async-signal-safe.
    unsafe {
        cmd.pre_exec(move || {
            let rl = libc::rlimit { rlim_cur: limit, rlim_max: limit };
            if libc::setrlimit(libc::RLIMIT_NOFILE, &rl) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
}

/// Reads an HTTP reply's head off `s`, byte by byte (what follows stays
/// unread); its status (0: closed before any reply) and its text.
pub fn read_reply_head(s: &mut TcpStream) -> (u16, String) {
    use std::io::Read;
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") && s.read(&mut byte).unwrap_or(0) == 1 {
        head.push(byte[0]);
    }
    let head = String::from_utf8_lossy(&head).into_owned();
    (head.split(' ').nth(1).and_then(|c| c.parse().ok()).unwrap_or(0), head)
}
