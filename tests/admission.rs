//! Who may connect, through the real entry points: the `on_upgrade` hook
//! through the public API, the built-in token check and the per-address
//! limits through the binary. Every refusal is an HTTP reply before the
//! 101, counted by reason, and costs the connections already open nothing.

mod common;

use std::io::{Read, Write};
use std::net::{IpAddr, SocketAddr, TcpStream};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::*;
use wsloop::server::{self, Ctx, Handler, Message, Refusal, Upgrade};
use wsloop::ws::Request;

const KEY: &str = "dGhlIHNhbXBsZSBub25jZQ==";

/// Sends an upgrade for `target` with `extra` header lines (and `after`
/// right behind it) from `source`; returns the reply's status and head.
fn upgrade_reply(
    addr: SocketAddr,
    source: Option<IpAddr>,
    target: &str,
    extra: &str,
    after: &[u8],
) -> (u16, String, TcpStream) {
    let mut s = tcp_from(addr, source);
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let mut req = format!(
        "GET {target} HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: {KEY}\r\nSec-WebSocket-Version: 13\r\n{extra}\r\n"
    )
    .into_bytes();
    req.extend_from_slice(after);
    s.write_all(&req).unwrap();
    let (status, head) = read_reply_head(&mut s);
    (status, head, s)
}

/// A gatekeeper written against the public API: refuses by header, by
/// query parameter and by peer address; counts what it opened.
struct Gatekeeper {
    opened: Arc<AtomicUsize>,
    messages: Arc<AtomicUsize>,
}

impl Handler for Gatekeeper {
    fn on_upgrade(&mut self, upgrade: &Upgrade<'_>) -> Result<(), Refusal> {
        let peer = upgrade.peer_addr().ok_or(Refusal::Forbidden)?;
        if !peer.ip().is_loopback() {
            return Err(Refusal::Forbidden);
        }
        if upgrade.request.header("x-client") == Some("banned") {
            return Err(Refusal::Forbidden);
        }
        if upgrade.request.query_param("busy").is_some() {
            return Err(Refusal::TooManyRequests { retry_after: 30 });
        }
        if upgrade.request.header("authorization").is_none() {
            return Err(Refusal::Unauthorized);
        }
        Ok(())
    }

    fn on_open(&mut self, _: &mut Ctx<'_>, _: &Request<'_>) {
        self.opened.fetch_add(1, Ordering::Relaxed);
    }

    fn on_message(&mut self, ctx: &mut Ctx<'_>, message: Message<'_>) {
        self.messages.fetch_add(1, Ordering::Relaxed);
        if let Message::Text(t) = message {
            ctx.send_text(t);
        }
    }
}

#[test]
fn the_upgrade_hook_refuses_before_the_101_and_counts_each_reason() {
    let (opened, messages) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
    let (o, m) = (opened.clone(), messages.clone());
    let server = server::start(test_config(2), move |_| Gatekeeper { opened: o.clone(), messages: m.clone() })
        .expect("server starts");
    let addr = server.local_addr();
    // A masked "hi" text frame right behind the request: it must never
    // reach the handler of a refused connection.
    let frame = [0x81, 0x82, 1, 2, 3, 4, b'h' ^ 1, b'i' ^ 2];

    let (status, head, _) = upgrade_reply(addr, None, "/ws", "X-Client: banned\r\nAuthorization: x\r\n", &frame);
    assert_eq!(status, 403, "{head}");
    let (status, head, _) = upgrade_reply(addr, None, "/ws?busy=1", "Authorization: x\r\n", &frame);
    assert_eq!(status, 429, "{head}");
    assert!(head.contains("\r\nRetry-After: 30\r\n"), "{head}");
    let (status, head, mut refused) = upgrade_reply(addr, None, "/ws", "", &frame);
    assert_eq!(status, 401, "{head}");
    assert!(head.contains("\r\nWWW-Authenticate: Bearer\r\n") && head.contains("Connection: close"), "{head}");
    // The server closes a refused connection after its reply.
    let mut rest = Vec::new();
    let _ = refused.read_to_end(&mut rest);
    assert!(String::from_utf8_lossy(&rest).starts_with("missing or invalid credentials"), "{rest:?}");

    let (status, head, mut accepted) = upgrade_reply(addr, None, "/ws?room=a", "Authorization: x\r\n", &frame);
    assert_eq!(status, 101, "{head}");
    let mut echo = [0u8; 4];
    accepted.read_exact(&mut echo).unwrap();
    assert_eq!(echo, [0x81, 2, b'h', b'i'], "the frame behind an accepted request is handled");

    assert_eq!(opened.load(Ordering::Relaxed), 1, "on_open only for the accepted upgrade");
    assert_eq!(messages.load(Ordering::Relaxed), 1, "refused connections' frames are never handled");
    let failures = |label| server.stats().iter().map(|s| s.handshake_failures_by(label)).sum::<u64>();
    assert!(eventually(Duration::from_secs(5), || failures("unauthorized") == 1));
    assert_eq!((failures("forbidden"), failures("too_many_requests")), (1, 1));
    // Hang up first: held open, the shutdown would wait out their close timeout.
    drop((refused, accepted));
    server.shutdown();
    server.join().unwrap();
}

/// A token file with `tokens` in a fresh temporary directory.
fn token_file(name: &str, tokens: &str) -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(format!("wsloop-admission-{}-{name}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("tokens");
    std::fs::write(&path, tokens).unwrap();
    path
}

#[test]
fn the_token_check_admits_only_a_known_secret() {
    let secret = "s3cret-s3cret-s3cret-0001";
    let path = token_file(
        "check",
        &format!("# current, next, and one long expired\n{secret}\nnext-secret-to-rotate-to\nexpired-secret-of-2020 expires=2020-01-01\n"),
    );
    let (_server, addr, metrics) = spawn_binary_with_metrics(&["--auth-token-file", path.to_str().unwrap()], None);
    let cases = [
        ("/ws", String::new(), 401),
        ("/ws", "Authorization: Bearer wrong-wrong-wrong-wrong\r\n".to_string(), 401),
        ("/ws?token=s3cret-s3cret-s3cret-000", String::new(), 401),
        ("/ws", format!("Authorization: Basic {secret}\r\n"), 401),
        ("/ws", "Authorization: Bearer expired-secret-of-2020\r\n".to_string(), 401),
        ("/ws", format!("Authorization: Bearer {secret}\r\n"), 101),
        ("/ws", "Authorization: Bearer next-secret-to-rotate-to\r\n".to_string(), 101),
        (&*format!("/ws?token={secret}"), String::new(), 101),
    ];
    for (target, extra, want) in &cases {
        let (status, head, _) = upgrade_reply(addr, None, target, extra, b"");
        assert_eq!(status, *want, "{target} {extra:?}: {head}");
    }
    // A client as a user would write it, with the header, echoes.
    let mut request = tungstenite::client::IntoClientRequest::into_client_request(format!("ws://{addr}/ws")).unwrap();
    request.headers_mut().insert("Authorization", format!("Bearer {secret}").parse().unwrap());
    let stream = TcpStream::connect(addr).unwrap();
    let (mut ws, _) = tungstenite::client(request, stream).expect("an upgrade with the secret");
    ws.send(tungstenite::Message::text("hello")).unwrap();
    assert_eq!(ws.read().unwrap(), tungstenite::Message::text("hello"));
    let (_, body) = http_get(metrics, "/metrics");
    assert_eq!(sample(&body, r#"wsloop_handshake_failures_total{reason="unauthorized"}"#), Some(5.0), "{body}");
}

#[test]
fn a_bad_token_file_stops_the_start_with_one_line_naming_it() {
    for (name, contents, says) in [
        ("empty", "# none yet\n", "holds no token"),
        ("short", "tiny\n", "line 1: a token must be at least 16 characters"),
        (
            "expiry",
            "# a typo\nlong-enough-secret-1 expires=2027-02-30\n",
            "line 2: after the token, only expires=YYYY-MM-DD or expires=YYYY-MM-DDTHH:MM:SSZ",
        ),
    ] {
        let path = token_file(name, contents);
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_wsloop"))
            .args(["--addr", "127.0.0.1:0", "--metrics-addr", "off", "--auth-token-file", path.to_str().unwrap()])
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{stderr}");
        assert_eq!(stderr.trim(), format!("wsloop: --auth-token-file {}: {says}", path.display()));
    }
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_wsloop"))
        .args(["--addr", "127.0.0.1:0", "--metrics-addr", "off", "--auth-token-file", "/nonexistent/tokens"])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1));
    assert!(stderr.starts_with("wsloop: --auth-token-file /nonexistent/tokens: cannot read it"), "{stderr}");
    assert_eq!(stderr.trim().lines().count(), 1, "{stderr}");
}

/// 127.0.1.1 .. 127.0.1.n
fn sources(n: u8) -> Vec<IpAddr> {
    (1..=n).map(|i| IpAddr::from([127, 0, 1, i])).collect()
}

#[test]
fn per_address_limits_turn_one_address_away_and_no_one_else() {
    let (_server, addr, metrics) =
        spawn_binary_with_metrics(&["--max-conns-per-ip", "20", "--handshake-rate-per-ip", "10"], None);
    // 100 well-behaved clients on 10 addresses (10 each: within both limits)
    // echo all along.
    let good = Background::start_from(addr, 100, &sources(10));

    // One address takes its 20 connections (10 at once, the rest once the
    // bucket has refilled), then is turned away with 429.
    let hog = Some(IpAddr::from([127, 0, 0, 9]));
    let mut held = Vec::new();
    for i in 0..20 {
        if i == 10 {
            std::thread::sleep(Duration::from_millis(1100));
        }
        let (status, head, stream) = upgrade_reply(addr, hog, "/ws", "", b"");
        assert_eq!(status, 101, "connection {i}: {head}");
        held.push(stream);
    }
    std::thread::sleep(Duration::from_millis(1100));
    let (status, head, _) = upgrade_reply(addr, hog, "/ws", "", b"");
    assert_eq!(status, 429, "{head}");
    assert!(head.contains("Retry-After: 1\r\n") && head.contains("Connection: close"), "{head}");
    // Closing some gives the address room again.
    held.truncate(15);
    let reopened = eventually(Duration::from_secs(5), || upgrade_reply(addr, hog, "/ws", "", b"").0 == 101);
    assert!(reopened, "a closed connection is released from its address's count");

    // Another address opens and closes as fast as it can: its first 10
    // handshakes pass, then the rate limit answers 429 with Retry-After.
    let hammer = Some(IpAddr::from([127, 0, 0, 10]));
    let started = Instant::now();
    let statuses: Vec<u16> = (0..40).map(|_| upgrade_reply(addr, hammer, "/ws", "", b"").0).collect();
    let elapsed = started.elapsed().as_secs_f64();
    assert!(statuses[..10].iter().all(|&s| s == 101), "{statuses:?}");
    let passed = statuses.iter().filter(|&&s| s == 101).count();
    let limited = statuses.iter().filter(|&&s| s == 429).count();
    assert_eq!(passed + limited, 40, "{statuses:?}");
    // At most the burst plus what refilled meanwhile got through.
    assert!(passed as f64 <= 10.0 + 10.0 * elapsed + 1.0, "{passed} passed in {elapsed:.2} s");
    assert!(limited > 0, "{statuses:?} in {elapsed:.2} s");

    let round_trips = good.finish();
    assert!(round_trips >= 100, "{round_trips}");
    let (_, body) = http_get(metrics, "/metrics");
    let count = |reason| sample(&body, &format!(r#"wsloop_handshake_failures_total{{reason="{reason}"}}"#));
    assert!(count("per_ip_conns").unwrap_or(0.0) >= 1.0, "{body}");
    assert_eq!(count("per_ip_rate"), Some(limited as f64), "{body}");
}
