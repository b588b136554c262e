//! Clients behind a proxy, through the binary (and `peer_addr()` through
//! the public API): a PROXY v1/v2 header from a trusted peer names the
//! client the per-address limits count; anyone else is refused at accept;
//! broken, missing and slow headers are closed and counted; a forwarding
//! header is believed from a trusted peer only. Loopback stands in for the
//! network: the "proxy" is 127.0.0.1, an untrusted peer binds 127.0.0.2.

mod common;

use std::io::{Read, Write};
use std::net::{IpAddr, SocketAddr, TcpStream};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::*;
use wsloop::server::{self, Ctx, Handler, Message, Refusal, Upgrade};

const KEY: &str = "dGhlIHNhbXBsZSBub25jZQ==";
const PROXY: &str = "127.0.0.1";
const OUTSIDER: &str = "127.0.0.2";
const V2_SIGNATURE: &[u8] = b"\r\n\r\n\0\r\nQUIT\n";

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

fn v1(client: &str) -> Vec<u8> {
    format!("PROXY TCP4 {client} 10.0.0.1 40000 8080\r\n").into_bytes()
}

/// A v2 PROXY (or LOCAL, `command` 0) header for an IPv4 or IPv6 client.
fn v2(command: u8, client: SocketAddr) -> Vec<u8> {
    let mut body = Vec::new();
    let family = match client.ip() {
        IpAddr::V4(a) => {
            body.extend_from_slice(&a.octets());
            body.extend_from_slice(&[10, 0, 0, 1]);
            0x11
        }
        IpAddr::V6(a) => {
            body.extend_from_slice(&a.octets());
            body.extend_from_slice(&"fd00::1".parse::<std::net::Ipv6Addr>().unwrap().octets());
            0x21
        }
    };
    body.extend_from_slice(&client.port().to_be_bytes());
    body.extend_from_slice(&8080u16.to_be_bytes());
    let mut h = V2_SIGNATURE.to_vec();
    h.extend_from_slice(&[0x20 | command, family]);
    h.extend_from_slice(&(body.len() as u16).to_be_bytes());
    h.extend_from_slice(&body);
    h
}

fn upgrade_request(extra: &str) -> Vec<u8> {
    format!(
        "GET /ws HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: {KEY}\r\nSec-WebSocket-Version: 13\r\n{extra}\r\n"
    )
    .into_bytes()
}

/// Reads the reply's head; its status (0: closed before any reply).
fn read_status(s: &mut TcpStream) -> u16 {
    read_reply_head(s).0
}

/// Sends `pieces` (a header, then the upgrade, in as many writes) from
/// `source`; returns the reply's status and the stream.
fn send_from(addr: SocketAddr, source: &str, pieces: &[&[u8]]) -> (u16, TcpStream) {
    let mut s = tcp_from(addr, Some(ip(source)));
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    s.set_nodelay(true).unwrap();
    for piece in pieces {
        if s.write_all(piece).is_err() {
            break;
        }
        if pieces.len() > 1 {
            std::thread::sleep(Duration::from_millis(5));
        }
    }
    let status = read_status(&mut s);
    (status, s)
}

/// One masked text frame, and the echo it should get.
fn echoes(s: &mut TcpStream, text: &str) -> bool {
    let mut frame = vec![0x81, 0x80 | text.len() as u8, 0, 0, 0, 0];
    frame.extend_from_slice(text.as_bytes());
    if s.write_all(&frame).is_err() {
        return false;
    }
    let mut reply = vec![0u8; 2 + text.len()];
    s.read_exact(&mut reply).is_ok() && &reply[2..] == text.as_bytes()
}

fn metric(metrics: SocketAddr, series: &str) -> f64 {
    sample(&http_get(metrics, "/metrics").1, series).unwrap_or(-1.0)
}

fn refused(metrics: SocketAddr, reason: &str) -> f64 {
    metric(metrics, &format!("wsloop_proxy_refused_total{{reason=\"{reason}\"}}"))
}

/// True once the server has closed `s` (EOF or reset) within 10 s.
fn closed_by_server(s: &mut TcpStream) -> bool {
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let mut sink = [0u8; 256];
    loop {
        match s.read(&mut sink) {
            Ok(0) => return true,
            Ok(_) => continue,
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock || e.kind() == std::io::ErrorKind::TimedOut => {
                return false
            }
            Err(_) => return true,
        }
    }
}

const PROXIED: &[&str] = &["--proxy-protocol", "--trusted-proxies", "127.0.0.1/32", "--max-conns-per-ip", "1"];

#[test]
fn v1_and_v2_headers_key_the_per_address_limit_on_the_client() {
    let (_server, addr, metrics) = spawn_binary_with_metrics(PROXIED, None);
    let up = upgrade_request("");
    // v1 for 192.0.2.1: in; the same client again (v2): its one is taken.
    let (status, mut first) = send_from(addr, PROXY, &[&[v1("192.0.2.1"), up.clone()].concat()]);
    assert_eq!(status, 101);
    let again = v2(1, "192.0.2.1:5000".parse().unwrap());
    assert_eq!(send_from(addr, PROXY, &[&[again.clone(), up.clone()].concat()]).0, 429);
    // Another client through the same proxy has its own: v2, IPv6, and a
    // header split across writes, one byte at a time, then the upgrade.
    let six = v2(1, "[2001:db8::7]:443".parse().unwrap());
    let (status, mut second) = send_from(addr, PROXY, &[&[six, up.clone()].concat()]);
    assert_eq!(status, 101);
    let split = v2(1, "192.0.2.3:1".parse().unwrap());
    let mut pieces: Vec<&[u8]> = split.chunks(1).collect();
    pieces.push(&up);
    let (status, mut third) = send_from(addr, PROXY, &pieces);
    assert_eq!(status, 101);
    for s in [&mut first, &mut second, &mut third] {
        assert!(echoes(s, "through the proxy"));
    }
    // 192.0.2.1's count is released at close: it may come back.
    drop(first);
    let back = eventually(Duration::from_secs(5), || {
        send_from(addr, PROXY, &[&[again.clone(), up.clone()].concat()]).0 == 101
    });
    assert!(back, "the client's count was not released at close");
    assert_eq!(refused(metrics, "malformed") + refused(metrics, "untrusted"), 0.0);
    // LOCAL: the proxy's own connection, counted as 127.0.0.1 (the socket's).
    let local = v2(0, "192.0.2.1:1".parse().unwrap());
    let (status, _own) = send_from(addr, PROXY, &[&[local.clone(), up.clone()].concat()]);
    assert_eq!(status, 101);
    assert_eq!(send_from(addr, PROXY, &[&[local, up.clone()].concat()]).0, 429, "127.0.0.1 holds its one");
    assert_eq!(send_from(addr, PROXY, &[&[v1("127.0.0.1"), up].concat()]).0, 429, "named by v1: the same");
    // LOCAL with an X-Forwarded-For a client wrote (the proxy passes it on
    // untouched): not believed, so it cannot pick a fresh address.
    let spoofed = upgrade_request("X-Forwarded-For: 198.51.100.9\r\n");
    let local = v2(0, "192.0.2.1:1".parse().unwrap());
    assert_eq!(send_from(addr, PROXY, &[&[local, spoofed].concat()]).0, 429, "still 127.0.0.1's");
}

#[test]
fn an_untrusted_peer_is_refused_at_accept_and_counted() {
    let (_server, addr, metrics) = spawn_binary_with_metrics(PROXIED, None);
    let (status, mut s) = send_from(addr, OUTSIDER, &[&[v1("192.0.2.9"), upgrade_request("")].concat()]);
    assert_eq!(status, 0, "no reply, just a close");
    assert!(closed_by_server(&mut s));
    assert!(eventually(Duration::from_secs(5), || refused(metrics, "untrusted") == 1.0));
    // The trusted path is unaffected.
    let (status, mut ok) = send_from(addr, PROXY, &[&[v1("192.0.2.9"), upgrade_request("")].concat()]);
    assert_eq!(status, 101);
    assert!(echoes(&mut ok, "still here"));
}

#[test]
fn malformed_and_missing_headers_are_closed_and_counted_neighbours_unaffected() {
    let (_server, addr, metrics) = spawn_binary_with_metrics(PROXIED, None);
    let (status, mut neighbour) = send_from(addr, PROXY, &[&[v1("192.0.2.50"), upgrade_request("")].concat()]);
    assert_eq!(status, 101);
    let mut bad_version = v2(1, "192.0.2.1:1".parse().unwrap());
    bad_version[12] = 0x31;
    let mut too_long = V2_SIGNATURE.to_vec();
    too_long.extend_from_slice(&[0x21, 0x11, 0xff, 0xff]);
    let long_v1 = [b"PROXY UNKNOWN ".as_slice(), &[b'x'; 120]].concat();
    let bad: [&[u8]; 5] = [
        &upgrade_request(""), // no header at all: an HTTP request
        b"PROXY TCP4 192.0.2.1 10.0.0.1 99999 80\r\n",
        &bad_version,
        &too_long,
        &long_v1,
    ];
    for (i, bytes) in bad.iter().enumerate() {
        let (status, mut s) = send_from(addr, PROXY, &[bytes]);
        assert_eq!(status, 400, "case {i}");
        assert!(closed_by_server(&mut s), "case {i}");
    }
    // A trusted peer that leaves before its header is whole.
    let mut gone = tcp_from(addr, Some(ip(PROXY)));
    gone.write_all(b"PROXY TCP4 192.0.2.1").unwrap();
    drop(gone);
    assert!(
        eventually(Duration::from_secs(5), || refused(metrics, "malformed") == 6.0),
        "{}",
        refused(metrics, "malformed")
    );
    assert!(echoes(&mut neighbour, "unaffected"));
}

#[test]
fn a_slow_header_meets_the_handshake_deadline() {
    let args = [PROXIED, &["--handshake-timeout", "1s"]].concat();
    let (_server, addr, metrics) = spawn_binary_with_metrics(&args, None);
    let mut slow = tcp_from(addr, Some(ip(PROXY)));
    let started = Instant::now();
    slow.write_all(b"PROXY TCP4 192.0.2.1 ").unwrap();
    std::thread::sleep(Duration::from_millis(300));
    slow.write_all(b"10.0.0.1 ").unwrap(); // Dribbled bytes do not extend it.
    assert!(closed_by_server(&mut slow));
    assert!(started.elapsed() < Duration::from_secs(5), "{:?}", started.elapsed());
    assert!(eventually(Duration::from_secs(5), || refused(metrics, "timeout") == 1.0));
    assert_eq!(refused(metrics, "malformed"), 0.0);
}

#[test]
fn forwarding_headers_are_believed_from_trusted_peers_only() {
    let args = ["--trusted-proxies", "127.0.0.1/32,10.0.0.0/8", "--max-conns-per-ip", "1"];
    let (_server, addr, metrics) = spawn_binary_with_metrics(&args, None);
    let xff = |chain: &str| upgrade_request(&format!("X-Forwarded-For: {chain}\r\n"));
    // Through the trusted proxy: the rightmost untrusted hop is the client,
    // whatever the client wrote left of it.
    let (status, _a) = send_from(addr, PROXY, &[&xff("6.6.6.6, 203.0.113.5, 10.1.1.1")]);
    assert_eq!(status, 101);
    assert_eq!(send_from(addr, PROXY, &[&xff("203.0.113.5")]).0, 429, "the same client");
    assert_eq!(send_from(addr, PROXY, &[&xff("203.0.113.5")]).0, 429);
    let two_lines = upgrade_request("X-Forwarded-For: 203.0.113.5\r\nX-Forwarded-For: 203.0.113.6\r\n");
    let (status, _b) = send_from(addr, PROXY, &[&two_lines]);
    assert_eq!(status, 101, "the last line is the nearest hop");
    // From an untrusted peer the header is ignored: its own address counts.
    let (status, _c) = send_from(addr, OUTSIDER, &[&xff("203.0.113.5")]);
    assert_eq!(status, 101, "not 203.0.113.5's (full) count");
    assert_eq!(send_from(addr, OUTSIDER, &[&xff("198.51.100.1")]).0, 429, "127.0.0.2 holds its one");
    // A chain naming no usable client: the proxy's own address, counted.
    let (status, _d) = send_from(addr, PROXY, &[&xff("unknown")]);
    assert_eq!(status, 101);
    assert_eq!(metric(metrics, "wsloop_forwarded_unusable_total"), 1.0);
    assert_eq!(send_from(addr, PROXY, &[&upgrade_request("")]).0, 429, "no header: the proxy, full");
}

#[test]
fn bad_flags_are_one_line_naming_them() {
    let wsloop = env!("CARGO_BIN_EXE_wsloop");
    for (args, names) in [
        (vec!["--trusted-proxies", "10.0.0.0/33"], "--trusted-proxies"),
        (vec!["--trusted-proxies", "10.0.0.0/8,haproxy"], "--trusted-proxies"),
        (vec!["--proxy-protocol"], "--proxy-protocol"),
    ] {
        let out = std::process::Command::new(wsloop)
            .args(["serve", "--addr", "127.0.0.1:0", "--metrics-addr", "off"])
            .args(&args)
            .output()
            .unwrap();
        assert!(!out.status.success(), "{args:?}");
        let stderr = String::from_utf8_lossy(&out.stderr);
        // clap's own hint ("For more information, try '--help'.") aside.
        let errors: Vec<&str> = stderr
            .lines()
            .filter(|l| !l.is_empty() && !l.contains(" INFO ") && !l.starts_with("For more information"))
            .collect();
        assert_eq!(errors.len(), 1, "{stderr}");
        assert!(errors[0].contains(names), "{stderr}");
    }
}

/// Records what `peer_addr()` says at each upgrade.
struct Recorder(Arc<Mutex<Vec<Option<SocketAddr>>>>);

impl Handler for Recorder {
    fn on_upgrade(&mut self, upgrade: &Upgrade<'_>) -> Result<(), Refusal> {
        self.0.lock().unwrap().push(upgrade.peer_addr());
        Ok(())
    }

    fn on_message(&mut self, ctx: &mut Ctx<'_>, msg: Message<'_>) {
        if let Message::Text(t) = msg {
            ctx.send_text(t);
        }
    }
}

#[test]
fn peer_addr_is_the_client_the_header_names() {
    let mut cfg = test_config(1);
    cfg.proxy.proxy_protocol = true;
    cfg.proxy.trusted = "127.0.0.1/32".parse().unwrap();
    let seen = Arc::new(Mutex::new(Vec::new()));
    let recorder = seen.clone();
    let server = server::start(cfg, move |_| Recorder(recorder.clone())).unwrap();
    let addr = server.local_addr();
    let up = upgrade_request("");
    let six: SocketAddr = "[2001:db8::7]:54321".parse().unwrap();
    for header in [v1("192.0.2.7"), v2(1, six), v2(0, six)] {
        let (status, _s) = send_from(addr, PROXY, &[&[header, up.clone()].concat()]);
        assert_eq!(status, 101);
    }
    let seen = seen.lock().unwrap().clone();
    assert_eq!(seen[0], Some("192.0.2.7:40000".parse().unwrap()));
    assert_eq!(seen[1], Some(six));
    assert_eq!(seen[2].map(|a| a.ip()), Some(ip(PROXY)), "LOCAL: the socket's peer");
    server.shutdown();
}

#[test]
fn a_hand_off_does_not_count_a_proxys_clients_under_the_proxy() {
    let path = std::env::temp_dir().join(format!("wsloop-proxy-handoff-{}.sock", std::process::id()));
    let p = path.to_str().unwrap();
    let args = ["--takeover", p, "--trusted-proxies", "127.0.0.1/32", "--max-conns-per-ip", "1"];
    let (mut old, addr, _) = spawn_binary_with_metrics(&args, None);
    let xff = |client: &str| upgrade_request(&format!("X-Forwarded-For: {client}\r\n"));
    let mut moved = Vec::new();
    for client in ["203.0.113.5", "203.0.113.6"] {
        let (status, s) = send_from(addr, PROXY, &[&xff(client)]);
        assert_eq!(status, 101);
        moved.push(s);
    }
    let (_new, new_addr, new_metrics) = spawn_binary_with_metrics(&args, None);
    assert_eq!(new_addr, addr);
    let gone = eventually(Duration::from_secs(20), || old.try_wait().unwrap().is_some());
    assert!(gone, "the old process exits once it holds nothing");
    assert_eq!(metric(new_metrics, "wsloop_adopted_total"), 2.0);
    for s in &mut moved {
        assert!(echoes(s, "moved"));
    }
    // The proxy's own address holds nothing: its clients were not counted
    // under it (the hand-off does not carry their addresses).
    let (status, _own) = send_from(addr, PROXY, &[&upgrade_request("")]);
    assert_eq!(status, 101);
    let _ = std::fs::remove_file(&path);
}
