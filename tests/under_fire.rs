//! Bad peers against the real server, each while 100 well-behaved
//! connections keep echoing without a single error.

mod common;

use std::io::Write;
use std::net::TcpStream;
use std::time::{Duration, Instant};

use common::*;
use wsloop::server::{CloseReason, ServerConfig};
use wsloop::ws::frame::opcode;

fn total(server: &wsloop::server::ServerHandle, f: impl Fn(&wsloop::server::LoopStats) -> u64) -> u64 {
    server.stats().iter().map(|s| f(s)).sum()
}

const UPGRADE: &str = "GET /ws HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n";

#[test]
fn bad_handshakes_get_their_status() {
    let cfg = ServerConfig {
        handshake_timeout: Duration::from_secs(1),
        ws: wsloop::ws::Config {
            handshake: wsloop::ws::HandshakeConfig {
                allowed_origins: vec!["https://good.example".into()],
                ..Default::default()
            },
            ..Default::default()
        },
        ..test_config(2)
    };
    let server = start_echo(cfg);
    let addr = server.local_addr();
    let bg = Background::start(addr, 100);
    let cases = [
        ("garbage\x00\x01\x02 not http\r\n\r\n".to_string(), "HTTP/1.1 400 "),
        (format!("{UPGRADE}X-Big: {}\r\n\r\n", "a".repeat(9000)), "HTTP/1.1 431 "),
        (format!("{}\r\n", UPGRADE.replace("Version: 13", "Version: 8")), "HTTP/1.1 426 "),
        (format!("{}\r\n", UPGRADE.replace("/ws", "/elsewhere")), "HTTP/1.1 404 "),
        (format!("{UPGRADE}Origin: https://evil.example\r\n\r\n"), "HTTP/1.1 403 "),
    ];
    for (request, status) in &cases {
        let mut c = RawClient::connect_tcp(addr);
        c.send_raw(request.as_bytes());
        let reply = c.read_to_end();
        assert!(reply.starts_with(status), "{status}: got {reply:?}");
        if status.contains("426") {
            assert!(reply.contains("Sec-WebSocket-Version: 13\r\n"));
        }
    }
    // Slowloris: one byte a second, never finished: closed at the timeout.
    let mut slow = TcpStream::connect(addr).unwrap();
    let started = Instant::now();
    let mut closed_after = None;
    for b in UPGRADE.bytes() {
        if slow.write_all(&[b]).is_err() {
            closed_after = Some(started.elapsed());
            break;
        }
        std::thread::sleep(Duration::from_millis(250));
        if started.elapsed() > Duration::from_secs(5) {
            break;
        }
    }
    let closed_after = closed_after.expect("the trickled handshake was cut off");
    assert!(closed_after < Duration::from_secs(3), "{closed_after:?}");
    assert!(bg.finish() > 0);
    assert_eq!(total(&server, |s| s.handshake_failures_by("timeout")), 1);
    for label in ["malformed", "header_too_large", "version", "path", "origin"] {
        assert_eq!(total(&server, |s| s.handshake_failures_by(label)), 1, "{label}");
    }
}

/// "Hello", masked, as a client sends it: what a smuggled body carries.
const HELLO_FRAME: [u8; 11] = [0x81, 0x85, 0x37, 0xfa, 0x21, 0x3d, 0x7f, 0x9f, 0x4d, 0x51, 0x58];

/// Sends `request` on a fresh connection and reads until the server closes
/// (or 10 s pass): every byte it answered with.
fn answer_to(addr: std::net::SocketAddr, request: &[u8]) -> Vec<u8> {
    use std::io::Read;
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    s.write_all(request).unwrap();
    let mut reply = Vec::new();
    let _ = s.read_to_end(&mut reply);
    reply
}

/// The exact refusal the server sends for `err`, and nothing after it.
fn refusal(err: wsloop::ws::HandshakeError) -> Vec<u8> {
    let mut out = Vec::new();
    wsloop::ws::handshake::write_reject(&mut out, err);
    out
}

/// Through the binary on `io`: an upgrade with a body, with two `Host`
/// headers, or with a bare LF gets its 400 and nothing else (the body
/// never decoded as a frame), each counted by reason on /metrics; the same
/// request without a body (`Content-Length: 0`) upgrades and echoes.
fn an_upgrade_with_a_body_or_two_hosts_gets_400_on(io: &str) {
    use wsloop::ws::HandshakeError::{Body, DuplicateHeader, Malformed};
    let (_server, addr, metrics) = spawn_binary_with_metrics(&["--io", io], None);
    let bg = Background::start(addr, 20);
    let with = |extra: &str, body: &[u8]| [format!("{UPGRADE}{extra}\r\n").as_bytes(), body].concat();
    let chunked = [b"b\r\n".as_slice(), &HELLO_FRAME, b"\r\n0\r\n\r\n"].concat();
    let cases = [
        (with("Content-Length: 11\r\n", &HELLO_FRAME), Body),
        (with("Transfer-Encoding: chunked\r\n", &chunked), Body),
        (with("Host: y\r\n", &HELLO_FRAME), DuplicateHeader),
        (with("X-A: 1\nHost: y\r\n", &HELLO_FRAME), Malformed),
    ];
    for (request, err) in &cases {
        let reply = answer_to(addr, request);
        assert_eq!(String::from_utf8_lossy(&reply), String::from_utf8_lossy(&refusal(*err)), "{io} {err:?}");
    }
    // Content-Length: 0 is no body: the frame behind the head is a frame.
    let mut ok = TcpStream::connect(addr).unwrap();
    ok.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    ok.write_all(&with("Content-Length: 0\r\n", &HELLO_FRAME)).unwrap();
    let mut got = Vec::new();
    let mut chunk = [0u8; 1024];
    let echo = [0x81, 0x05, b'H', b'e', b'l', b'l', b'o'];
    while !got.ends_with(&echo) {
        let n = std::io::Read::read(&mut ok, &mut chunk).unwrap();
        assert!(n > 0, "{io}: closed after {:?}", String::from_utf8_lossy(&got));
        got.extend_from_slice(&chunk[..n]);
    }
    assert!(got.starts_with(b"HTTP/1.1 101 "), "{io}: {:?}", String::from_utf8_lossy(&got));
    bg.finish();
    let (_, body) = http_get(metrics, "/metrics");
    let count = |reason: &str| sample(&body, &format!("wsloop_handshake_failures_total{{reason=\"{reason}\"}}"));
    assert_eq!(count("body"), Some(2.0), "{io}: {body}");
    assert_eq!(count("duplicate_header"), Some(1.0), "{io}: {body}");
    assert_eq!(count("malformed"), Some(1.0), "{io}: {body}");
}

#[test]
fn an_upgrade_with_a_body_or_two_hosts_gets_400_and_its_body_is_not_read() {
    an_upgrade_with_a_body_or_two_hosts_gets_400_on("epoll");
    if wsloop::server::driver::probe().is_err() {
        eprintln!("io_uring is unavailable here: only epoll checked");
        return;
    }
    an_upgrade_with_a_body_or_two_hosts_gets_400_on("uring");
}

#[test]
fn protocol_violations_get_their_close_codes() {
    let cfg = ServerConfig {
        ws: wsloop::ws::Config {
            limits: wsloop::ws::Limits { max_frame: 64 * 1024, max_message: 256 * 1024 },
            ..Default::default()
        },
        ..test_config(2)
    };
    let server = start_echo(cfg);
    let addr = server.local_addr();
    let bg = Background::start(addr, 100);
    let masked = |b0: u8, payload: &[u8]| {
        let mut v = Vec::new();
        wsloop::ws::frame::write_frame(&mut v, true, opcode::TEXT, payload, Some([1, 2, 3, 4]));
        v[0] = b0;
        v
    };
    let cases: Vec<(&str, Vec<u8>, u16)> = vec![
        ("unmasked", vec![0x81, 0x02, b'h', b'i'], 1002),
        ("reserved opcode", masked(0x83, b"x"), 1002),
        ("rsv bits", masked(0xc1, b"x"), 1002),
        ("invalid utf-8", masked(0x81, b"\xce\xba\xff"), 1007),
        ("frame over the limit", masked(0x82, &vec![0u8; 64 * 1024 + 1]), 1009),
        ("2^63 length", vec![0x82, 0xff, 0x80, 0, 0, 0, 0, 0, 0, 0, 1, 2, 3, 4], 1002),
        ("2^62 length", vec![0x82, 0xff, 0x40, 0, 0, 0, 0, 0, 0, 0, 1, 2, 3, 4], 1009),
    ];
    for (name, bytes, code) in cases {
        let mut c = RawClient::connect(addr);
        c.send_raw(&bytes);
        let close = c.read_frame().unwrap_or_else(|e| panic!("{name}: {e}"));
        assert_eq!(close.close_code(), Some(code), "{name}");
        assert!(c.is_closed_by_server(), "{name}");
    }
    bg.finish();
    // The last one hung up just now: its close is counted once the server reads the EOF.
    let protocol_errors = || total(&server, |s| s.closed_by(CloseReason::ProtocolError));
    assert!(eventually(Duration::from_secs(5), || protocol_errors() == 7), "{}", protocol_errors());
}

#[test]
fn a_vanished_peer_is_found_by_the_idle_ping() {
    let cfg = ServerConfig {
        idle_timeout: Duration::from_millis(600),
        pong_timeout: Duration::from_millis(600),
        ..test_config(2)
    };
    let server = start_echo(cfg);
    let addr = server.local_addr();
    let bg = Background::start(addr, 100);
    // A peer that neither reads nor writes after its handshake: as if its
    // traffic were dropped. Its kernel still ACKs, so no FIN/RST ever comes.
    let mut gone = RawClient::connect(addr);
    // An attentive peer that answers the server's pings stays.
    let mut alive = RawClient::connect(addr);
    let started = Instant::now();
    while started.elapsed() < Duration::from_millis(2500) {
        alive.stream.set_read_timeout(Some(Duration::from_millis(100))).unwrap();
        if let Ok(f) = alive.read_frame() {
            assert_eq!(f.opcode, opcode::PING);
            alive.send_frame(true, opcode::PONG, &f.payload);
        }
    }
    assert!(eventually(Duration::from_secs(3), || total(&server, |s| s.closed_by(CloseReason::IdleTimeout)) == 1));
    gone.stream.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
    assert!(gone.is_closed_by_server());
    alive.send_frame(true, opcode::TEXT, b"still open");
    alive.stream.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let mut f = alive.read_frame().unwrap();
    while f.opcode == opcode::PING {
        f = alive.read_frame().unwrap();
    }
    assert_eq!(f.payload, b"still open");
    bg.finish();
}

#[test]
fn past_max_conns_new_connections_get_503_then_service_resumes() {
    let cfg = ServerConfig { max_conns: 110, ..test_config(2) };
    let server = start_echo(cfg);
    let addr = server.local_addr();
    let bg = Background::start(addr, 100);
    let mut extra: Vec<RawClient> = (0..10).map(|_| RawClient::connect(addr)).collect();
    for _ in 0..3 {
        let mut c = RawClient::connect_tcp(addr);
        c.send_raw(format!("{UPGRADE}\r\n").as_bytes());
        assert!(c.read_to_end().starts_with("HTTP/1.1 503 Service Unavailable\r\n"));
    }
    // Five leave; five new ones are served again.
    for mut c in extra.drain(..5) {
        c.send_frame(true, opcode::CLOSE, &1000u16.to_be_bytes());
        assert!(c.is_closed_by_server());
    }
    assert!(eventually(Duration::from_secs(5), || server.connections() == 105));
    let mut again: Vec<RawClient> = (0..5).map(|_| RawClient::connect(addr)).collect();
    for c in again.iter_mut() {
        c.send_frame(true, opcode::TEXT, b"back");
        assert_eq!(c.read_frame().unwrap().payload, b"back");
    }
    bg.finish();
    assert_eq!(total(&server, |s| s.handshake_failures_by("overloaded")), 3);
    assert_eq!(total(&server, |s| s.closed_by(CloseReason::Overloaded)), 3);
}

#[test]
fn a_flood_past_the_file_limit_does_not_spin_and_recovers() {
    // 300 descriptors for the whole server process; --max-conns set high so
    // the descriptor table, not the limit, is what runs out.
    let (mut child, addr) = spawn_binary(&["--max-conns", "100000"], Some(300));
    let bg = Background::start(addr, 100);
    let mut flood: Vec<TcpStream> = Vec::new();
    for _ in 0..400 {
        if let Ok(s) = TcpStream::connect_timeout(&addr, Duration::from_millis(500)) {
            flood.push(s);
        }
    }
    // The listen backlog holds what could not be accepted. Measure CPU over
    // two seconds of this state: a spinning accept loop would burn ~2 s.
    let cpu_before = cpu_ticks_of(child.id());
    std::thread::sleep(Duration::from_secs(2));
    let cpu_used = cpu_ticks_of(child.id()) - cpu_before;
    let ticks_per_sec = unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as u64;
    assert!(cpu_used < ticks_per_sec / 2, "server used {cpu_used} ticks in 2 s while out of descriptors");
    drop(flood);
    // Once the flood leaves, new connections are served again.
    assert!(eventually(Duration::from_secs(10), || {
        let mut c = RawClient::connect_tcp(addr);
        c.stream.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
        let key = wsloop::ws::client::generate_key();
        let mut req = Vec::new();
        wsloop::ws::client::write_request(&mut req, "x", "/ws", &key);
        c.send_raw(&req);
        c.read_frame_or_reply_starts_with("HTTP/1.1 101")
    }));
    bg.finish();
    child.kill().unwrap();
    child.wait().unwrap();
}

#[test]
fn sigterm_closes_a_thousand_connections_with_1001_and_exits_0() {
    let (mut child, addr) = spawn_binary(&["--shutdown-timeout", "5s"], None);
    let mut clients: Vec<RawClient> = (0..1000).map(|_| RawClient::connect(addr)).collect();
    let started = Instant::now();
    nix::sys::signal::kill(nix::unistd::Pid::from_raw(child.id() as i32), nix::sys::signal::Signal::SIGTERM).unwrap();
    for c in clients.iter_mut() {
        let close = c.read_frame().unwrap();
        assert_eq!(close.close_code(), Some(1001));
        c.send_frame(true, opcode::CLOSE, &1001u16.to_be_bytes());
    }
    let status = child.wait().unwrap();
    assert!(status.success(), "{status}");
    assert!(started.elapsed() < Duration::from_secs(5), "{:?}", started.elapsed());
}
