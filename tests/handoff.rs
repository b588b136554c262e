//! Live hand-off through the binary (`serve --takeover PATH`): a second
//! process takes every connection of the first, with pings and room
//! publishes in flight, and nobody reconnects; a hand-off that breaks off
//! or a build that cannot read the format leaves the first serving.
//! Runs on the driver `WSLOOP_IO` names (both in CI).

mod common;

use std::io::{Read, Write};
use std::os::unix::net::UnixListener;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use common::{sample, spawn_binary_with_metrics, RawClient, ServerProcess};
use wsloop::ws::frame::opcode;

fn socket_path(tag: &str) -> PathBuf {
    std::env::temp_dir().join(format!("wsloop-handoff-{tag}-{}.sock", std::process::id()))
}

/// Waits until a process offers its connections at `path` (the socket is
/// renamed into place after the process logs its metrics address, so a
/// test that starts the next process at once could find none, or the one
/// before's); the offer's inode, to wait for the next one with `after`.
fn offered(path: &std::path::Path, after: Option<u64>) -> u64 {
    use std::os::unix::fs::MetadataExt;
    let inode = || std::fs::metadata(path).ok().map(|m| m.ino()).filter(|&ino| Some(ino) != after);
    assert!(common::eventually(Duration::from_secs(10), || inode().is_some()), "nothing offered at {path:?}");
    inode().expect("offered")
}

fn text(c: &mut RawClient) -> String {
    let f = c.read_frame().expect("a frame");
    assert_eq!(f.opcode, opcode::TEXT, "{f:?}");
    String::from_utf8(f.payload).unwrap()
}

fn ping(c: &mut RawClient, n: usize) {
    c.send_frame(true, opcode::TEXT, format!(r#"{{"type":"ping","payload":{n}}}"#).as_bytes());
}

fn publish(c: &mut RawClient, n: usize) {
    c.send_frame(true, opcode::TEXT, format!(r#"{{"type":"publish","room":"r","data":{n},"echo":false}}"#).as_bytes());
}

/// Waits up to `within` for the process to exit; its status.
fn exits_within(p: &mut ServerProcess, within: Duration) -> Option<std::process::ExitStatus> {
    let deadline = Instant::now() + within;
    while Instant::now() < deadline {
        if let Some(status) = p.try_wait().unwrap() {
            return Some(status);
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    None
}

fn metric(addr: std::net::SocketAddr, series: &str) -> f64 {
    let (_, body) = common::http_get(addr, "/metrics");
    sample(&body, series).unwrap_or(0.0)
}

#[test]
fn every_connection_moves_with_pings_and_publishes_in_flight() {
    wsloop::tune::rlimit::raise_nofile().expect("raise RLIMIT_NOFILE");
    let path = socket_path("all");
    let p = path.to_str().unwrap();
    let args = ["--takeover", p, "--idle-timeout", "120s"];
    let (mut old, addr, _) = spawn_binary_with_metrics(&args, Some(8192));
    offered(&path, None);
    const N: usize = 2000;
    let mut clients: Vec<RawClient> = (0..N).map(|_| RawClient::connect(addr)).collect();
    // Every tenth is in room "r"; the last one publishes to it.
    for c in clients.iter_mut().step_by(10) {
        c.send_frame(true, opcode::TEXT, br#"{"type":"join","room":"r"}"#);
        assert!(text(c).contains("joined"));
    }
    for (i, c) in clients.iter_mut().enumerate() {
        ping(c, i);
        assert!(text(c).contains(&format!(r#""payload":{i}"#)));
    }
    // In flight across the hand-off: a ping from everyone, five publishes.
    for (i, c) in clients.iter_mut().enumerate() {
        ping(c, N + i);
    }
    let publisher = clients.last_mut().unwrap();
    for k in 0..5 {
        publish(publisher, k);
    }
    let (mut new, new_addr, new_metrics) = spawn_binary_with_metrics(&args, Some(8192));
    assert_eq!(new_addr, addr, "the new process serves the same listeners");
    let status = exits_within(&mut old, Duration::from_secs(20)).expect("the old process exits once it holds nothing");
    assert!(status.success(), "{status}");
    assert_eq!(metric(new_metrics, "wsloop_adopted_total"), N as f64);
    for (i, c) in clients.iter_mut().enumerate() {
        let member = i % 10 == 0 && i != N - 1;
        let mut got = Vec::new();
        for _ in 0..(1 + if member { 5 } else { 0 }) {
            got.push(text(c));
        }
        let pongs: Vec<_> = got.iter().filter(|m| m.contains(&format!(r#""payload":{}"#, N + i))).collect();
        assert_eq!(pongs.len(), 1, "client {i}: {got:?}");
        let messages: Vec<_> = got.iter().filter(|m| m.contains(r#""type":"message""#)).collect();
        let expected: Vec<String> = (0..if member { 5 } else { 0 }).map(|k| format!(r#""data":{k}"#)).collect();
        assert_eq!(messages.len(), expected.len(), "client {i}: {got:?}");
        for (m, e) in messages.iter().zip(&expected) {
            assert!(m.contains(e.as_str()), "client {i}: out of order: {got:?}");
        }
        // Nothing repeated: the next frame answers the next ping.
        ping(c, 2 * N + i);
        assert!(text(c).contains(&format!(r#""payload":{}"#, 2 * N + i)), "client {i}");
    }
    // Rooms stayed joined: a publish after the hand-off reaches the members.
    let publisher = clients.last_mut().unwrap();
    publish(publisher, 99);
    for c in clients.iter_mut().step_by(10) {
        assert!(text(c).contains(r#""data":99"#));
    }
    // The new process offers the next hand-off on the same path.
    let listener_there = std::os::unix::net::UnixStream::connect(&path).is_ok();
    assert!(listener_there, "the new process listens on {p}");
    let _ = new.kill();
}

#[test]
fn a_hand_off_that_breaks_off_leaves_every_connection_with_the_old_process() {
    let path = socket_path("broken");
    let p = path.to_str().unwrap();
    let (_old, addr, metrics) = spawn_binary_with_metrics(&["--takeover", p], None);
    offered(&path, None);
    let mut clients: Vec<RawClient> = (0..50).map(|_| RawClient::connect(addr)).collect();
    for c in clients.iter_mut().step_by(5) {
        c.send_frame(true, opcode::TEXT, br#"{"type":"join","room":"r"}"#);
        assert!(text(c).contains("joined"));
    }
    // A "new process" that says Ready, takes the listeners and the first
    // batch of connections, then dies before it says Adopted.
    let mut s = std::os::unix::net::UnixStream::connect(&path).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let read_message = |s: &mut std::os::unix::net::UnixStream| {
        let mut head = [0u8; 7];
        s.read_exact(&mut head).unwrap();
        let len = u32::from_le_bytes(head[..4].try_into().unwrap()) as usize;
        let mut body = vec![0u8; len - 3];
        s.read_exact(&mut body).unwrap();
        head[4]
    };
    assert_eq!(read_message(&mut s), 1, "a hello first");
    s.write_all(&[3, 0, 0, 0, 2, 0, 0]).unwrap(); // Ready
    assert_eq!(read_message(&mut s), 8, "the rooms: the loops are frozen now");
    s.write_all(&[4, 0, 0, 0, 9, 0, 0, 0]).unwrap(); // Subscribed: no
    assert_eq!(read_message(&mut s), 4, "the listeners");
    assert_eq!(read_message(&mut s), 5, "connections: exported now");
    drop(s);
    // Everyone is served again: pings answered, rooms joined, new
    // connections accepted.
    for (i, c) in clients.iter_mut().enumerate() {
        ping(c, i);
        assert!(text(c).contains(&format!(r#""payload":{i}"#)), "client {i}");
    }
    publish(&mut clients[1], 7);
    for c in clients.iter_mut().step_by(5) {
        assert!(text(c).contains(r#""data":7"#));
    }
    let mut late = RawClient::connect(addr);
    ping(&mut late, 1);
    assert!(text(&mut late).contains("pong"));
    assert_eq!(metric(metrics, "wsloop_adopted_total"), 50.0, "taken back");
}

#[test]
fn a_new_binary_that_cannot_read_the_format_refuses_before_anything_moves() {
    // The "old process" here is the test, speaking format 999.
    let path = socket_path("format");
    let _ = std::fs::remove_file(&path);
    let listener = UnixListener::bind(&path).unwrap();
    let old = std::thread::spawn(move || {
        let (mut s, _) = listener.accept().unwrap();
        let mut body = 999u32.to_le_bytes().to_vec();
        body.extend_from_slice(&2u32.to_le_bytes());
        body.extend_from_slice(b"127.0.0.1:9");
        let mut msg = ((body.len() + 3) as u32).to_le_bytes().to_vec();
        msg.extend_from_slice(&[1, 0, 0]);
        msg.extend_from_slice(&body);
        s.write_all(&msg).unwrap();
        let mut answer = Vec::new();
        let _ = s.read_to_end(&mut answer);
        answer
    });
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_wsloop"))
        .args(["serve", "--addr", "127.0.0.1:0", "--workers", "2", "--takeover", path.to_str().unwrap()])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("hand-off format 999"), "{stderr}");
    let answer = old.join().unwrap();
    assert_eq!(answer.get(4), Some(&3), "a Refuse, with the reason: {answer:?}");
    assert!(String::from_utf8_lossy(&answer).contains("format 999"));
}

#[test]
fn a_new_binary_with_a_bad_flag_leaves_the_old_one_serving() {
    let path = socket_path("badflag");
    let p = path.to_str().unwrap();
    let (_old, addr, _) = spawn_binary_with_metrics(&["--takeover", p], None);
    offered(&path, None);
    let mut c = RawClient::connect(addr);
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_wsloop"))
        .args(["serve", "--takeover", p, "--no-such-flag"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    ping(&mut c, 5);
    assert!(text(&mut c).contains(r#""payload":5"#));
}

/// Upgrades a raw client offering permessage-deflate (`extensions`).
fn connect_offering(addr: std::net::SocketAddr, extensions: &str) -> std::net::TcpStream {
    let mut s = std::net::TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let key = wsloop::ws::client::generate_key();
    let mut req = Vec::new();
    wsloop::ws::client::write_request_offering(&mut req, &addr.to_string(), "/ws", &key, Some(extensions));
    s.write_all(&req).unwrap();
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        s.read_exact(&mut byte).unwrap();
        head.push(byte[0]);
    }
    let head = String::from_utf8(head).unwrap();
    assert!(head.starts_with("HTTP/1.1 101") && head.contains("permessage-deflate"), "{head}");
    s
}

#[test]
fn what_cannot_move_is_drained_with_1012_and_what_can_moves() {
    let path = socket_path("drained");
    let p = path.to_str().unwrap();
    let args = ["--takeover", p, "--compression", "dedicated", "--shutdown-timeout", "4s"];
    let (mut old, addr, _) = spawn_binary_with_metrics(&args, None);
    let first = offered(&path, None);
    // Context takeover both ways: a compression context of its own.
    let mut dedicated: Vec<_> = (0..5).map(|_| connect_offering(addr, "permessage-deflate")).collect();
    let mut plain = RawClient::connect(addr);
    let (mut new, _, new_metrics) = spawn_binary_with_metrics(&args, None);
    offered(&path, Some(first));
    assert_eq!(metric(new_metrics, "wsloop_adopted_total"), 1.0, "only the plain one moves");
    for s in &mut dedicated {
        // A close frame (not a reset): 1012 with a reconnect hint.
        let mut frame = [0u8; 2];
        s.read_exact(&mut frame).unwrap();
        assert_eq!(frame[0], 0x88, "a close frame");
        let mut payload = vec![0u8; (frame[1] & 0x7f) as usize];
        s.read_exact(&mut payload).unwrap();
        assert_eq!(u16::from_be_bytes([payload[0], payload[1]]), 1012);
        assert!(String::from_utf8_lossy(&payload[2..]).contains("reconnect in"), "{payload:?}");
    }
    ping(&mut plain, 3);
    assert!(text(&mut plain).contains(r#""payload":3"#));
    // While the old process still drains, the new one offers the socket
    // already: the next deploy can come at once, and the plain connection
    // moves on a second time.
    let (mut third, _, third_metrics) = spawn_binary_with_metrics(&args, None);
    assert_eq!(metric(third_metrics, "wsloop_adopted_total"), 1.0);
    ping(&mut plain, 4);
    assert!(text(&mut plain).contains(r#""payload":4"#));
    drop(dedicated);
    let status = exits_within(&mut old, Duration::from_secs(10)).expect("the old process exits");
    assert!(status.success(), "{status}");
    let status = exits_within(&mut new, Duration::from_secs(10)).expect("the second process exits");
    assert!(status.success(), "{status}");
    let _ = third.kill();
}

/// A Redis server on a free port for this test, stopped on drop.
struct Redis(std::process::Child, u16);

impl Redis {
    /// `None` when redis-server is not installed (CI installs it).
    fn start() -> Option<Redis> {
        let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        let child = std::process::Command::new("redis-server")
            .args(["--port", &port.to_string(), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"])
            .stdout(std::process::Stdio::null())
            .spawn();
        let Ok(child) = child else {
            assert!(std::env::var_os("CI").is_none(), "redis-server is needed under CI");
            return None;
        };
        let up =
            common::eventually(Duration::from_secs(5), || std::net::TcpStream::connect(("127.0.0.1", port)).is_ok());
        assert!(up, "redis-server did not start");
        Some(Redis(child, port))
    }
}

impl Drop for Redis {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn join(c: &mut RawClient) {
    c.send_frame(true, opcode::TEXT, br#"{"type":"join","room":"r"}"#);
    assert!(text(c).contains("joined"));
}

#[test]
fn publishes_from_another_host_during_a_hand_off_arrive_exactly_once_in_order() {
    let Some(redis) = Redis::start() else { return };
    let url = format!("redis://127.0.0.1:{}", redis.1);
    let path = socket_path("redis");
    let p = path.to_str().unwrap();
    let a_args = ["--takeover", p, "--redis-url", url.as_str()];
    let (mut a, a_addr, a_metrics) = spawn_binary_with_metrics(&a_args, None);
    offered(&path, None);
    let (_b, b_addr, b_metrics) = spawn_binary_with_metrics(&["--redis-url", url.as_str()], None);
    let mut on_a: Vec<RawClient> = (0..20).map(|_| RawClient::connect(a_addr)).collect();
    let mut on_b: Vec<RawClient> = (0..5).map(|_| RawClient::connect(b_addr)).collect();
    on_a.iter_mut().chain(on_b.iter_mut()).for_each(join);
    let mut publisher = RawClient::connect(b_addr);
    // Both hosts have subscribed to the room before the test starts.
    for m in [a_metrics, b_metrics] {
        let subscribed = || metric(m, "wsloop_redis_subscribed_rooms") >= 1.0;
        assert!(common::eventually(Duration::from_secs(5), subscribed), "{m} subscribed");
    }
    const M: usize = 300;
    let sender = std::thread::spawn(move || {
        for k in 0..M {
            publish(&mut publisher, k);
            std::thread::sleep(Duration::from_millis(3));
        }
        publisher
    });
    std::thread::sleep(Duration::from_millis(150));
    let (mut a2, a2_addr, a2_metrics) = spawn_binary_with_metrics(&a_args, None);
    assert_eq!(a2_addr, a_addr);
    let _publisher = sender.join().unwrap();
    assert!(exits_within(&mut a, Duration::from_secs(20)).is_some_and(|s| s.success()), "the old host exits");
    assert_eq!(metric(a2_metrics, "wsloop_adopted_total"), 20.0);
    for (i, c) in on_a.iter_mut().chain(on_b.iter_mut()).enumerate() {
        for k in 0..M {
            let m = text(c);
            assert!(m.contains(&format!(r#""data":{k}}}"#)), "member {i}: expected {k}, got {m}");
        }
        // Nothing repeated after the last one.
        ping(c, 7);
        assert!(text(c).contains(r#""payload":7"#), "member {i}");
    }
    let _ = a2.kill();
}

/// A tungstenite client whose upgrade carries `token`.
fn connect_with_token(addr: std::net::SocketAddr, token: &str) -> common::Tung {
    let stream = std::net::TcpStream::connect(addr).unwrap();
    stream.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    tungstenite::client(format!("ws://{addr}/ws?token={token}"), stream).expect("an upgrade with the token").0
}

fn ask(ws: &mut common::Tung, command: &str) -> serde_json::Value {
    ws.send(tungstenite::Message::text(command)).unwrap();
    serde_json::from_str(ws.read().unwrap().to_text().unwrap()).unwrap()
}

#[test]
fn identities_move_with_their_connections_rights_and_per_user_count_included() {
    use jsonwebtoken::{encode, EncodingKey, Header};
    let path = socket_path("identity");
    let secret = "handoff-identity-secret-of-32-bytes!";
    let key = std::env::temp_dir().join(format!("wsloop-handoff-jwt-{}", std::process::id()));
    std::fs::write(&key, secret).unwrap();
    let args = ["--takeover", path.to_str().unwrap(), "--jwt-key", key.to_str().unwrap(), "--max-conns-per-user", "1"];
    let (mut old, addr, _) = spawn_binary_with_metrics(&args, None);
    offered(&path, None);
    let token = |sub: &str| {
        let rights = serde_json::json!({"join": ["chat:*"], "publish": ["chat:*"]});
        let claims =
            serde_json::json!({"sub": sub, "exp": jsonwebtoken::get_current_timestamp() + 600, "wsloop": rights});
        encode(&Header::default(), &claims, &EncodingKey::from_secret(secret.as_bytes())).unwrap()
    };
    let (mut alice, mut bob) = (connect_with_token(addr, &token("alice")), connect_with_token(addr, &token("bob")));
    assert_eq!(ask(&mut bob, r#"{"type":"join","room":"chat:1"}"#)["type"], "joined");
    let (_new, _, new_metrics) = spawn_binary_with_metrics(&args, None);
    assert!(exits_within(&mut old, Duration::from_secs(20)).expect("the old process exits").success());
    assert_eq!(metric(new_metrics, "wsloop_adopted_total"), 2.0);
    // Their rights came along: what the token allows, and only that.
    assert_eq!(ask(&mut alice, r#"{"type":"join","room":"chat:2"}"#)["type"], "joined");
    assert_eq!(ask(&mut alice, r#"{"type":"join","room":"admin"}"#)["error"], "forbidden");
    alice.send(tungstenite::Message::text(r#"{"type":"publish","room":"chat:1","data":"hi","echo":false}"#)).unwrap();
    let got: serde_json::Value = serde_json::from_str(bob.read().unwrap().to_text().unwrap()).unwrap();
    assert_eq!(got, serde_json::json!({"type":"message","room":"chat:1","data":"hi"}));
    // Alice's connection counts against her cap in the new process too.
    let stream = std::net::TcpStream::connect(addr).unwrap();
    match tungstenite::client(format!("ws://{addr}/ws?token={}", token("alice")), stream) {
        Err(tungstenite::HandshakeError::Failure(tungstenite::Error::Http(resp))) => assert_eq!(resp.status(), 429),
        other => panic!("expected 429, got {:?}", other.map(|(_, r)| r.status())),
    }
}

#[test]
fn connections_without_a_token_are_asked_to_leave_by_a_process_that_checks_tokens() {
    let path = socket_path("gains-jwt");
    let p = path.to_str().unwrap();
    let key = std::env::temp_dir().join(format!("wsloop-handoff-gains-jwt-{}", std::process::id()));
    std::fs::write(&key, "handoff-gains-jwt-secret-of-32-bytes!").unwrap();
    let (mut old, addr, _) = spawn_binary_with_metrics(&["--takeover", p], None);
    offered(&path, None);
    let mut c = RawClient::connect(addr);
    join(&mut c);
    let (_new, _, new_metrics) =
        spawn_binary_with_metrics(&["--takeover", p, "--jwt-key", key.to_str().unwrap()], None);
    assert!(exits_within(&mut old, Duration::from_secs(20)).expect("the old process exits").success());
    assert_eq!(metric(new_metrics, "wsloop_adopted_total"), 1.0);
    let f = c.read_frame().expect("a close frame");
    assert_eq!((f.close_code(), &f.payload[2..]), (Some(1008), &b"token expired"[..]));
    assert_eq!(metric(new_metrics, "wsloop_room_members"), 0.0, "its rooms were not joined");
}
