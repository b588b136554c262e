//! The admin API through the real binary: refusals (401, 404, 405, 400,
//! 413) answered, counted and logged without the token; publish reaches a
//! room's members and no one else; disconnect by connection and by room
//! with the code and reason the client sees (on both I/O drivers); room
//! counts; a user's connections (JWT `sub`) listed and closed; the public
//! port never answers the API; the `wsloop admin` subcommands; and, with
//! `redis-server` (required when CI is set), publish and disconnect by room
//! and by user across two hosts.

mod common;

use std::io::{BufRead, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::*;
use serde_json::{json, Value};
use tungstenite::Message as TMsg;

const TOKEN: &str = "admin-token-0123456789";

/// A token file with `TOKEN`, unique to this test.
fn token_file(name: &str) -> std::path::PathBuf {
    let path = std::env::temp_dir().join(format!("wsloop-admin-{}-{name}", std::process::id()));
    std::fs::write(&path, format!("{TOKEN}\n")).unwrap();
    path
}

/// A server with the admin API, its public and admin addresses, and its log so far.
struct Server {
    process: ServerProcess,
    addr: SocketAddr,
    admin: SocketAddr,
    metrics: SocketAddr,
    log: Arc<Mutex<Vec<String>>>,
}

/// Starts the binary with the admin API on 127.0.0.1:0, `extra` flags
/// and environment.
fn spawn(name: &str, extra: &[&str], env: &[(&str, &str)]) -> Server {
    let tokens = token_file(name);
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_wsloop"));
    cmd.args(["serve", "--addr", "127.0.0.1:0", "--workers", "2", "--metrics-addr", "127.0.0.1:0"])
        .args(["--admin-addr", "127.0.0.1:0", "--admin-token-file"])
        .arg(&tokens)
        .args(extra)
        .envs(env.iter().copied())
        .stderr(Stdio::piped())
        .stdout(Stdio::null());
    let mut process = ServerProcess(cmd.spawn().expect("spawn wsloop"));
    let mut lines = std::io::BufReader::new(process.stderr.take().unwrap()).lines();
    let (mut addr, mut admin, mut metrics) = (None, None, None);
    let log = Arc::new(Mutex::new(Vec::new()));
    while addr.is_none() || admin.is_none() || metrics.is_none() {
        let line = lines.next().expect("wsloop exited before serving").unwrap();
        let after = |marker: &str| line.split(marker).nth(1).map(|r| r.split('/').next().unwrap().parse().unwrap());
        addr = addr.or(after("listening on ws://"));
        admin = admin.or(after("admin API on http://"));
        metrics = metrics.or(after("metrics on http://"));
        log.lock().unwrap().push(line);
    }
    let kept = log.clone();
    std::thread::spawn(move || {
        for line in lines.map_while(Result::ok) {
            kept.lock().unwrap().push(line);
        }
    });
    Server { process, addr: addr.unwrap(), admin: admin.unwrap(), metrics: metrics.unwrap(), log }
}

/// One HTTP request with `token` (if any) and a raw body; (status, JSON or Null).
fn request(addr: SocketAddr, method: &str, path: &str, token: Option<&str>, body: &[u8]) -> (u16, Value) {
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let auth = token.map(|t| format!("Authorization: Bearer {t}\r\n")).unwrap_or_default();
    let head = format!("{method} {path} HTTP/1.1\r\nHost: x\r\n{auth}Content-Length: {}\r\n\r\n", body.len());
    s.write_all(head.as_bytes()).unwrap();
    let _ = s.write_all(body);
    let mut reply = Vec::new();
    let _ = s.read_to_end(&mut reply);
    let reply = String::from_utf8_lossy(&reply);
    let status = reply.split(' ').nth(1).and_then(|c| c.parse().ok()).unwrap_or(0);
    let body = reply.split_once("\r\n\r\n").map_or("", |(_, b)| b);
    (status, serde_json::from_str(body).unwrap_or(Value::Null))
}

fn get(s: &Server, path: &str) -> (u16, Value) {
    request(s.admin, "GET", path, Some(TOKEN), b"")
}

fn post(s: &Server, path: &str, body: Value) -> (u16, Value) {
    request(s.admin, "POST", path, Some(TOKEN), body.to_string().as_bytes())
}

fn recv(ws: &mut Tung) -> TMsg {
    loop {
        match ws.read().unwrap() {
            TMsg::Ping(_) | TMsg::Pong(_) => continue,
            other => return other,
        }
    }
}

fn join(ws: &mut Tung, room: &str) {
    ws.send(TMsg::text(json!({"type":"join","room":room}).to_string())).unwrap();
    let TMsg::Text(reply) = recv(ws) else { panic!("no reply to join") };
    assert_eq!(serde_json::from_str::<Value>(&reply).unwrap(), json!({"type":"joined","room":room}));
}

/// True if `ws` has nothing before its pong: it got no message.
fn got_nothing(ws: &mut Tung) -> bool {
    ws.send(TMsg::text(json!({"type":"ping","payload":"p"}).to_string())).unwrap();
    match recv(ws) {
        TMsg::Text(t) => t.contains("\"pong\""),
        _ => false,
    }
}

/// The close code and reason `ws` is sent.
fn close_of(ws: &mut Tung) -> (u16, String) {
    match recv(ws) {
        TMsg::Close(Some(frame)) => (frame.code.into(), frame.reason.to_string()),
        other => panic!("expected a close frame, got {other:?}"),
    }
}

fn scrape(s: &Server, series: &str) -> f64 {
    sample(&http_get(s.metrics, "/metrics").1, series).unwrap_or(0.0)
}

#[test]
fn refusals_are_answered_counted_and_logged_without_the_token() {
    let s = spawn("refusals", &[], &[]);
    let publish = json!({"room":"r","text":"hi"}).to_string();
    assert_eq!(request(s.admin, "POST", "/publish", None, publish.as_bytes()).0, 401);
    let (status, body) = request(s.admin, "POST", "/publish", Some("admin-token-0123456788"), publish.as_bytes());
    assert_eq!((status, body["error"].as_str()), (401, Some("unauthorized")));
    // Unknown routes are 404 only with the token: without it, 401 first.
    assert_eq!(request(s.admin, "GET", "/nowhere", None, b"").0, 401);
    assert_eq!(get(&s, "/nowhere").0, 404);
    assert_eq!(get(&s, "/publish").0, 405);
    let (status, body) = post(&s, "/rooms", json!({}));
    assert_eq!((status, body["error"].as_str()), (405, Some("method")));
    let (status, body) = request(s.admin, "POST", "/publish", Some(TOKEN), b"{\"room\":");
    assert_eq!((status, body["error"].as_str()), (400, Some("bad_json")));
    assert!(body["message"].as_str().unwrap().contains("EOF"), "{body}");
    let (status, body) = post(&s, "/publish", json!({"room":"r","text":"a","binary_base64":"YQ=="}));
    assert_eq!((status, body["error"].as_str()), (400, Some("bad_message")));
    let (status, _) = post(&s, "/disconnect", json!({"room":"r","code":1001}));
    assert_eq!(status, 400, "1001 is no code for the API");
    let (status, _) = post(&s, "/disconnect", json!({"room":"r","reason":"x".repeat(124)}));
    assert_eq!(status, 400, "a reason over 123 bytes");
    let big = vec![b' '; (1 << 20) + 1];
    let (status, body) = request(s.admin, "POST", "/publish", Some(TOKEN), &big);
    assert_eq!((status, body["error"].as_str()), (413, Some("too_large")));
    assert_eq!(scrape(&s, "wsloop_admin_requests_total{route=\"publish\",status=\"401\"}"), 2.0);
    assert_eq!(scrape(&s, "wsloop_admin_requests_total{route=\"other\",status=\"404\"}"), 1.0);
    assert_eq!(scrape(&s, "wsloop_admin_requests_total{route=\"publish\",status=\"413\"}"), 1.0);
    assert_eq!(scrape(&s, "wsloop_admin_requests_total{route=\"publish\",status=\"400\"}"), 2.0);
    let log = s.log.lock().unwrap().join("\n");
    assert!(log.contains("POST /publish: 401 no admin token"), "{log}");
    assert!(log.contains("POST /publish: 401 wrong admin token"), "{log}");
    assert!(!log.contains(TOKEN) && !log.contains("admin-token-0123456788"), "the token is never logged");
}

#[test]
fn a_request_that_never_finishes_is_408_at_its_deadline() {
    let s = spawn("slow", &[], &[]);
    let mut c = TcpStream::connect(s.admin).unwrap();
    c.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    write!(c, "POST /publish HTTP/1.1\r\nAuthorization: Bearer {TOKEN}\r\nContent-Length: 100\r\n\r\n{{").unwrap();
    let mut reply = String::new();
    let _ = c.read_to_string(&mut reply);
    assert!(reply.starts_with("HTTP/1.1 408 "), "{reply}");
}

#[test]
fn publish_reaches_the_rooms_members_on_every_loop_and_no_one_else() {
    let s = spawn("publish", &[], &[]);
    let mut members: Vec<Tung> = (0..6).map(|_| tung_connect(s.addr)).collect();
    for m in members.iter_mut() {
        join(m, "news");
    }
    let mut other = tung_connect(s.addr);
    join(&mut other, "sports");
    let mut idle = tung_connect(s.addr);
    let (status, body) = post(&s, "/publish", json!({"room":"news","text":"{\"headline\":1}"}));
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["delivered_local"], 6);
    assert_eq!((body["loops_answered"].as_u64(), body["loops"].as_u64()), (Some(2), Some(2)));
    assert_eq!(body["sent_to_other_hosts"], false, "no Redis");
    let (status, _) = post(&s, "/publish", json!({"room":"news","binary_base64":"AP8A"}));
    assert_eq!(status, 200);
    for m in members.iter_mut() {
        assert_eq!(recv(m), TMsg::text("{\"headline\":1}"));
        assert_eq!(recv(m), TMsg::binary(vec![0u8, 255, 0]));
    }
    assert!(got_nothing(&mut other) && got_nothing(&mut idle));
    let (status, body) = post(&s, "/publish", json!({"room":"","text":"x"}));
    assert_eq!((status, body["error"].as_str()), (400, Some("bad_room_name")));
    assert_eq!(scrape(&s, "wsloop_admin_delivered_total"), 12.0);
}

#[test]
fn rooms_are_listed_with_their_counts_in_pages() {
    let s = spawn("rooms", &[], &[]);
    let mut clients: Vec<Tung> = (0..5).map(|_| tung_connect(s.addr)).collect();
    for (c, room) in clients.iter_mut().zip(["a", "a", "a", "b:1", "c"]) {
        join(c, room);
    }
    join(&mut clients[0], "c");
    let (status, body) = get(&s, "/rooms");
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["rooms"], json!([{"room":"a","members":3},{"room":"b:1","members":1},{"room":"c","members":2}]));
    assert_eq!(body["more"], false);
    let (_, page) = get(&s, "/rooms?limit=2");
    assert_eq!((page["rooms"].as_array().unwrap().len(), page["more"].as_bool()), (2, Some(true)));
    assert_eq!(page["next_after"], "b:1");
    let (_, rest) = get(&s, "/rooms?limit=2&after=b%3A1");
    assert_eq!(rest["rooms"], json!([{"room":"c","members":2}]));
    let (_, room) = get(&s, "/rooms/b%3A1");
    assert_eq!((room["members"].as_u64(), room["connections"].as_array().unwrap().len()), (Some(1), 1));
    let (_, none) = get(&s, "/rooms/nobody-here");
    assert_eq!(none["members"], 0);
    assert_eq!(get(&s, "/rooms?limit=100000").0, 400);
}

/// Disconnects one member by id, then the rest of the room, under the
/// I/O driver `io`; each sees its code and reason, others stay.
fn disconnect_by_conn_and_by_room(io: &str) {
    let s = spawn(&format!("disconnect-{io}"), &[], &[("WSLOOP_IO", io)]);
    let mut members: Vec<Tung> = (0..4).map(|_| tung_connect(s.addr)).collect();
    for m in members.iter_mut() {
        join(m, "lobby");
    }
    let mut bystander = tung_connect(s.addr);
    join(&mut bystander, "elsewhere");
    let (_, room) = get(&s, "/rooms/lobby");
    let ids: Vec<String> = room["connections"].as_array().unwrap().iter().map(|c| c.as_str().unwrap().into()).collect();
    assert_eq!(ids.len(), 4, "{room}");
    let (status, body) = post(&s, "/disconnect", json!({"conn": ids[0], "code": 4001, "reason": "banned"}));
    assert_eq!((status, body["closed_local"].as_u64()), (200, Some(1)), "{body}");
    let (_, again) = post(&s, "/disconnect", json!({"conn": ids[0], "code": 4001}));
    assert_eq!(again["closed_local"], 0, "a closed connection is no target");
    let mut kicked = Vec::new();
    for (i, m) in members.iter_mut().enumerate() {
        if let TMsg::Close(Some(f)) = {
            m.send(TMsg::text(json!({"type":"ping","payload":i}).to_string())).unwrap();
            recv(m)
        } {
            kicked.push((i, u16::from(f.code), f.reason.to_string()));
        }
    }
    assert_eq!(kicked.len(), 1, "{kicked:?}");
    assert_eq!((kicked[0].1, kicked[0].2.as_str()), (4001, "banned"));
    let (status, body) = post(&s, "/disconnect", json!({"room": "lobby", "code": 4002, "reason": "room closed"}));
    assert_eq!((status, body["closed_local"].as_u64()), (200, Some(3)), "{body}");
    for (i, m) in members.iter_mut().enumerate().filter(|(i, _)| *i != kicked[0].0) {
        assert_eq!(close_of(m), (4002, "room closed".to_string()), "member {i}");
    }
    assert!(got_nothing(&mut bystander), "the bystander stays");
    // Hang up: the server lingers after its close frame until our EOF
    // (held open, until its 5 s close timeout: as long as the wait below).
    drop(members);
    assert!(eventually(Duration::from_secs(5), || get(&s, "/rooms/lobby").1["members"] == 0));
    let kicked = r#"wsloop_connections_closed_total{reason="kicked"}"#;
    assert!(eventually(Duration::from_secs(5), || scrape(&s, kicked) == 4.0), "{}", scrape(&s, kicked));
    assert_eq!(scrape(&s, r#"wsloop_connections_closed_total{reason="normal"}"#), 0.0);
}

#[test]
fn disconnect_by_conn_and_by_room_on_io_uring_or_auto() {
    disconnect_by_conn_and_by_room("auto");
}

#[test]
fn disconnect_by_conn_and_by_room_on_epoll() {
    disconnect_by_conn_and_by_room("epoll");
}

#[test]
fn the_public_port_never_answers_the_api() {
    let s = spawn("public", &[], &[]);
    let mut c = tung_connect(s.addr);
    join(&mut c, "r");
    for (method, path) in [("GET", "/rooms"), ("GET", "/rooms/r"), ("POST", "/publish")] {
        let (status, body) =
            request(s.addr, method, path, Some(TOKEN), json!({"room":"r","text":"x"}).to_string().as_bytes());
        assert!(status != 200 && body.is_null(), "{method} {path} on the public port: {status} {body}");
    }
    assert!(got_nothing(&mut c), "nothing was published");
}

#[test]
fn the_admin_flags_are_checked_at_start() {
    let run = |args: &[&str]| {
        let out = Command::new(env!("CARGO_BIN_EXE_wsloop")).args(args).output().unwrap();
        (out.status.success(), String::from_utf8_lossy(&out.stderr).into_owned())
    };
    let (ok, err) = run(&["--addr", "127.0.0.1:0", "--admin-addr", "127.0.0.1:0"]);
    assert!(!ok && err.contains("--admin-token-file"), "{err}");
    let short = std::env::temp_dir().join(format!("wsloop-admin-short-{}", std::process::id()));
    std::fs::write(&short, "short\n").unwrap();
    let (ok, err) =
        run(&["--addr", "127.0.0.1:0", "--admin-addr", "127.0.0.1:0", "--admin-token-file", short.to_str().unwrap()]);
    assert!(!ok && err.contains("--admin-token-file") && err.contains("at least 16"), "{err}");
    assert_eq!(err.trim().lines().count(), 1, "one line: {err}");
    let port = TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port().to_string();
    let tokens = token_file("same-port");
    let same = format!("127.0.0.1:{port}");
    let (ok, err) = run(&[
        "--addr",
        &same,
        "--metrics-addr",
        "off",
        "--admin-addr",
        &same,
        "--admin-token-file",
        tokens.to_str().unwrap(),
    ]);
    assert!(!ok && err.contains("public port") && err.contains("--addr "), "{err}");
}

/// `wsloop admin ARGS` against `s`: success, and the JSON it printed.
fn admin_cli(s: &Server, args: &[&str]) -> (bool, Value) {
    let tokens = token_file(&format!("cli-{}", s.admin.port()));
    let out = Command::new(env!("CARGO_BIN_EXE_wsloop"))
        .args(["admin", "--addr", &s.admin.to_string(), "--token-file", tokens.to_str().unwrap()])
        .args(args)
        .output()
        .unwrap();
    (out.status.success(), serde_json::from_slice(&out.stdout).unwrap_or(Value::Null))
}

#[test]
fn the_admin_subcommands_call_the_api() {
    let s = spawn("cli", &[], &[]);
    let admin = |args: &[&str]| admin_cli(&s, args);
    let mut a = tung_connect(s.addr);
    let mut b = tung_connect(s.addr);
    join(&mut a, "ops");
    join(&mut b, "ops");
    let (ok, reply) = admin(&["publish", "ops", "deploy at 5"]);
    assert!(ok && reply["delivered_local"] == 2, "{reply}");
    assert_eq!(recv(&mut a), TMsg::text("deploy at 5"));
    assert_eq!(recv(&mut b), TMsg::text("deploy at 5"));
    let (ok, reply) = admin(&["rooms"]);
    assert!(ok && reply["rooms"] == json!([{"room":"ops","members":2}]), "{reply}");
    let (ok, reply) = admin(&["room", "ops"]);
    assert!(ok && reply["members"] == 2, "{reply}");
    let id = reply["connections"][0].as_str().unwrap().to_string();
    let (ok, reply) = admin(&["disconnect", "--conn", &id, "--code", "4003", "--reason", "one"]);
    assert!(ok && reply["closed_local"] == 1, "{reply}");
    let (ok, reply) = admin(&["disconnect", "--room", "ops", "--code", "1008"]);
    assert!(ok && reply["closed_local"] == 1, "{reply}");
    let mut codes = vec![close_of(&mut a).0, close_of(&mut b).0];
    codes.sort();
    assert_eq!(codes, [1008, 4003]);
    let (ok, reply) = admin(&["disconnect", "--room", "ops", "--code", "1001"]);
    assert!(!ok && reply["error"] == "bad_close", "{reply}");
}

// ---- user targets (`--jwt-key` identities) ----

const JWT_SECRET: &str = "admin-tests-jwt-secret-of-32-bytes-at-least";

/// A key file for `--jwt-key`, unique to this test.
fn jwt_key(name: &str) -> String {
    let path = std::env::temp_dir().join(format!("wsloop-admin-jwt-{}-{name}", std::process::id()));
    std::fs::write(&path, JWT_SECRET).unwrap();
    path.to_str().unwrap().to_string()
}

/// A client connected as `sub`, with rooms open to it.
fn connect_as(addr: SocketAddr, sub: &str) -> Tung {
    let exp = jsonwebtoken::get_current_timestamp() + 600;
    let claims = json!({"sub": sub, "exp": exp, "wsloop": {"join": ["*"], "publish": ["*"]}});
    let key = jsonwebtoken::EncodingKey::from_secret(JWT_SECRET.as_bytes());
    let token = jsonwebtoken::encode(&jsonwebtoken::Header::default(), &claims, &key).unwrap();
    let mut request = tungstenite::client::IntoClientRequest::into_client_request(format!("ws://{addr}/ws")).unwrap();
    request.headers_mut().insert("Authorization", format!("Bearer {token}").parse().unwrap());
    let stream = TcpStream::connect(addr).unwrap();
    stream.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    tungstenite::client(request, stream).expect("upgrade with a valid token").0
}

#[test]
fn a_users_connections_are_listed_and_closed_on_every_loop() {
    let key = jwt_key("user");
    let s = spawn("user", &["--jwt-key", &key], &[]);
    let mut alice: Vec<Tung> = Vec::new();
    let loops_of = |body: &Value| -> std::collections::HashSet<String> {
        let conns = body["connections"].as_array().unwrap();
        conns.iter().map(|c| c.as_str().unwrap().split(':').next().unwrap().to_string()).collect()
    };
    // Until alice has connections on both loops (the kernel spreads them).
    while alice.len() < 4 || (loops_of(&get(&s, "/users/alice/connections").1).len() < 2 && alice.len() < 32) {
        alice.push(connect_as(s.addr, "alice"));
    }
    let mut bob = connect_as(s.addr, "bob");
    let (status, body) = get(&s, "/users/alice/connections");
    assert_eq!((status, body["count"].as_u64()), (200, Some(alice.len() as u64)), "{body}");
    assert_eq!(loops_of(&body).len(), 2, "alice's connections are on both loops: {body}");
    let (ok, listed) = admin_cli(&s, &["user", "alice"]);
    assert!(ok && listed["count"] == body["count"], "{listed}");
    assert_eq!(get(&s, "/users/nobody/connections").1["count"], 0);
    let (_, limited) = get(&s, "/users/alice/connections?limit=1");
    assert_eq!((limited["connections"].as_array().unwrap().len(), limited["more"].as_bool()), (1, Some(true)));
    let (status, body) = post(&s, "/disconnect", json!({"user": "alice", "code": 1008, "reason": "banned"}));
    assert_eq!((status, body["closed_local"].as_u64()), (200, Some(alice.len() as u64)), "{body}");
    for ws in alice.iter_mut() {
        assert_eq!(close_of(ws), (1008, "banned".to_string()));
    }
    assert!(got_nothing(&mut bob), "bob stays");
    // Hang up: held open, alice's connections would linger to the close timeout.
    drop(alice);
    assert!(eventually(Duration::from_secs(5), || get(&s, "/users/alice/connections").1["count"] == 0));
    assert_eq!(get(&s, "/users/bob/connections").1["count"], 1);
}

// ---- across two hosts over Redis ----

fn have_redis() -> bool {
    let found = Command::new("sh").args(["-c", "command -v redis-server"]).stdout(Stdio::null()).status();
    if found.is_ok_and(|s| s.success()) {
        return true;
    }
    assert!(std::env::var_os("CI").is_none(), "this test needs redis-server (.ci/run installs it)");
    eprintln!("admin over Redis skipped: redis-server not installed");
    false
}

/// A redis-server on a free port, killed when dropped.
struct Redis(std::process::Child, u16);

impl Drop for Redis {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn start_redis() -> Redis {
    let port = TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let child = Command::new("redis-server")
        .args(["--port", &port.to_string(), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("start redis-server");
    let up = eventually(Duration::from_secs(5), || TcpStream::connect(("127.0.0.1", port)).is_ok());
    assert!(up, "redis-server did not listen on {port}");
    Redis(child, port)
}

/// True once a host's bridge holds `rooms` room subscriptions (the admin
/// channel is subscribed before any room, on the same connection).
fn subscribed(s: &Server, rooms: f64) -> bool {
    eventually(Duration::from_secs(5), || scrape(s, "wsloop_redis_subscribed_rooms") >= rooms)
}

#[test]
fn over_redis_a_publish_and_a_room_disconnect_reach_every_host() {
    if !have_redis() {
        return;
    }
    let redis = start_redis();
    let url = format!("redis://127.0.0.1:{}", redis.1);
    let a = spawn("redis-a", &["--redis-url", &url], &[]);
    let b = spawn("redis-b", &["--redis-url", &url], &[]);
    let mut on_a = tung_connect(a.addr);
    let mut on_b: Vec<Tung> = (0..3).map(|_| tung_connect(b.addr)).collect();
    join(&mut on_a, "lobby");
    for m in on_b.iter_mut() {
        join(m, "lobby");
    }
    let mut outsider = tung_connect(b.addr);
    join(&mut outsider, "other");
    assert!(subscribed(&a, 1.0) && subscribed(&b, 2.0), "the bridges subscribe");
    let (status, body) = post(&a, "/publish", json!({"room":"lobby","text":"to everyone"}));
    assert_eq!(
        (status, body["delivered_local"].as_u64(), body["sent_to_other_hosts"].as_bool()),
        (200, Some(1), Some(true))
    );
    assert_eq!(recv(&mut on_a), TMsg::text("to everyone"));
    for m in on_b.iter_mut() {
        assert_eq!(recv(m), TMsg::text("to everyone"), "a member on host B");
    }
    let (status, body) = post(&a, "/disconnect", json!({"room":"lobby","code":4009,"reason":"maintenance"}));
    assert_eq!(
        (status, body["closed_local"].as_u64(), body["sent_to_other_hosts"].as_bool()),
        (200, Some(1), Some(true))
    );
    assert_eq!(close_of(&mut on_a), (4009, "maintenance".into()));
    for m in on_b.iter_mut() {
        assert_eq!(close_of(m), (4009, "maintenance".into()), "a member on host B");
    }
    assert!(got_nothing(&mut outsider), "not a member: it stays");
    drop((a.process, b.process));
}

#[test]
fn over_redis_a_user_is_disconnected_on_every_host() {
    if !have_redis() {
        return;
    }
    let redis = start_redis();
    let url = format!("redis://127.0.0.1:{}", redis.1);
    let key = jwt_key("redis-user");
    let a = spawn("redis-user-a", &["--redis-url", &url, "--jwt-key", &key], &[]);
    let b = spawn("redis-user-b", &["--redis-url", &url, "--jwt-key", &key], &[]);
    let mut on_a = connect_as(a.addr, "mallory");
    let mut on_b: Vec<Tung> = (0..2).map(|_| connect_as(b.addr, "mallory")).collect();
    let mut other_on_b = connect_as(b.addr, "trent");
    // The control channel is subscribed before any room: one room each proves it.
    join(&mut on_a, "probe");
    join(&mut other_on_b, "probe");
    assert!(subscribed(&a, 1.0) && subscribed(&b, 1.0), "the bridges subscribe");
    let (status, body) =
        post(&a, "/disconnect", json!({"user": "mallory", "code": 4010, "reason": "banned everywhere"}));
    assert_eq!(
        (status, body["closed_local"].as_u64(), body["sent_to_other_hosts"].as_bool()),
        (200, Some(1), Some(true))
    );
    assert_eq!(close_of(&mut on_a), (4010, "banned everywhere".into()));
    for ws in on_b.iter_mut() {
        assert_eq!(close_of(ws), (4010, "banned everywhere".into()), "mallory on host B");
    }
    assert!(got_nothing(&mut other_on_b), "another user stays");
    // Hang up: held open, they would linger to the close timeout.
    drop((on_a, on_b));
    assert!(eventually(Duration::from_secs(5), || get(&b, "/users/mallory/connections").1["count"] == 0));
}

#[test]
fn past_its_slots_the_oldest_silent_one_makes_room_and_busy_ones_get_503() {
    let server = start_echo(test_config(1));
    let stats = Arc::new(wsloop::metrics::admin::AdminStats::default());
    let token = wsloop::admin::AdminToken::parse(TOKEN).unwrap();
    let limits = wsloop::admin::http::Limits {
        max_connections: 2,
        head_deadline: Duration::from_millis(500),
        request_deadline: Duration::from_millis(800),
    };
    let api = wsloop::admin::start_with("127.0.0.1:0".parse().unwrap(), token, server.admin(), stats.clone(), limits)
        .unwrap();
    let held =
        |n| eventually(Duration::from_secs(2), || stats.connections.load(std::sync::atomic::Ordering::Relaxed) == n);
    let mut idle: Vec<TcpStream> = (0..2).map(|_| TcpStream::connect(api.local_addr()).unwrap()).collect();
    assert!(held(2));
    // A real call takes the oldest silent one's slot.
    assert_eq!(request(api.local_addr(), "GET", "/rooms", Some(TOKEN), b"").0, 200);
    assert_eq!(stats.evicted.load(std::sync::atomic::Ordering::Relaxed), 1);
    for s in idle.iter_mut() {
        s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    }
    let mut reply = String::new();
    let _ = idle[0].read_to_string(&mut reply);
    assert_eq!(reply, "", "evicted without an answer");
    let _ = idle[1].read_to_string(&mut reply);
    assert!(reply.starts_with("HTTP/1.1 408 "), "the other silent one: 408 at its head deadline: {reply}");
    drop(idle);
    assert!(held(0));
    // Two authorized requests still sending their bodies are not evicted: 503.
    let mut busy: Vec<TcpStream> = (0..2)
        .map(|_| {
            let mut s = TcpStream::connect(api.local_addr()).unwrap();
            write!(s, "POST /publish HTTP/1.1\r\nAuthorization: Bearer {TOKEN}\r\nContent-Length: 100\r\n\r\n{{")
                .unwrap();
            s
        })
        .collect();
    assert!(held(2));
    // Time for the port to read their heads (until then they could be evicted).
    std::thread::sleep(Duration::from_millis(200));
    let (status, body) = request(api.local_addr(), "GET", "/rooms", Some(TOKEN), b"");
    assert_eq!((status, body["error"].as_str()), (503, Some("busy")));
    for s in busy.iter_mut() {
        s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        let mut reply = String::new();
        let _ = s.read_to_string(&mut reply);
        assert!(reply.starts_with("HTTP/1.1 408 "), "{reply}");
    }
    assert_eq!(stats.requests(5, 503), 1);
    assert_eq!(stats.requests(5, 408), 1);
    assert_eq!(stats.requests(0, 408), 2);
    assert_eq!(request(api.local_addr(), "GET", "/rooms", Some(TOKEN), b"").0, 200);
    drop(api);
    server.shutdown();
    server.join().unwrap();
}

// ---- findings of an attacker's review ----

/// One HTTP request as raw bytes written at once; the whole reply as text.
fn raw_reply(addr: SocketAddr, request: &[u8]) -> String {
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    s.write_all(request).unwrap();
    let mut reply = Vec::new();
    let _ = s.read_to_end(&mut reply);
    String::from_utf8_lossy(&reply).into_owned()
}

/// Stands in for a new process on the hand-off socket at `path`: reads
/// Hello, answers Ready, and returns once the old process sent Rooms (its
/// loops are all frozen then). Dropping the link breaks the hand-off off.
fn freeze_by_handoff(path: &std::path::Path) -> std::os::unix::net::UnixStream {
    use std::os::unix::net::UnixStream;
    assert!(eventually(Duration::from_secs(10), || UnixStream::connect(path).is_ok()), "no offer at {path:?}");
    let mut link = UnixStream::connect(path).unwrap();
    link.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let read_message = |link: &mut UnixStream| -> u8 {
        let mut head = [0u8; 7];
        link.read_exact(&mut head).unwrap();
        let len = u32::from_le_bytes([head[0], head[1], head[2], head[3]]) as usize;
        let mut body = vec![0u8; len - 3];
        link.read_exact(&mut body).unwrap();
        head[4]
    };
    assert_eq!(read_message(&mut link), 1, "Hello");
    link.write_all(&[3, 0, 0, 0, 2, 0, 0]).unwrap(); // Ready
    assert_eq!(read_message(&mut link), 8, "Rooms: the loops are frozen");
    link
}

fn takeover_path(name: &str) -> String {
    let path = std::env::temp_dir().join(format!("wsloop-admin-{name}-{}.sock", std::process::id()));
    let _ = std::fs::remove_file(&path);
    path.to_str().unwrap().to_string()
}

#[test]
fn during_a_live_handoff_kicks_and_listings_answer_503_and_retry_after() {
    let key = jwt_key("frozen");
    let path = takeover_path("frozen");
    let s = spawn("frozen", &["--jwt-key", &key, "--takeover", &path], &[]);
    let mut mallory: Vec<Tung> = (0..3).map(|_| connect_as(s.addr, "mallory")).collect();
    join(&mut mallory[0], "den");
    let link = freeze_by_handoff(std::path::Path::new(&path));
    let kick = json!({"user": "mallory", "code": 4010, "reason": "banned"}).to_string();
    let head = format!(
        "POST /disconnect HTTP/1.1\r\nAuthorization: Bearer {TOKEN}\r\nContent-Length: {}\r\n\r\n{kick}",
        kick.len()
    );
    let reply = raw_reply(s.admin, head.as_bytes());
    assert!(reply.starts_with("HTTP/1.1 503 "), "a frozen loop cannot kick: {reply}");
    assert!(reply.contains("\r\nRetry-After: "), "{reply}");
    assert!(reply.contains("\"error\":\"handoff\"") && reply.contains("handoff in progress, retry"), "{reply}");
    for path in ["/rooms", "/rooms/den", "/users/mallory/connections"] {
        let (status, body) = get(&s, path);
        assert_eq!((status, body["error"].as_str()), (503, Some("handoff")), "{path}: {body}");
    }
    drop(link);
    // The hand-off broke off: the loops serve again, and a retry answers
    // 200 (a loop that thawed first may have closed its share at a 503).
    let kicked = eventually(Duration::from_secs(10), || {
        post(&s, "/disconnect", json!({"user": "mallory", "code": 4010, "reason": "banned"})).0 == 200
    });
    assert!(kicked, "{}", s.log.lock().unwrap().join("\n"));
    for ws in mallory.iter_mut() {
        assert_eq!(close_of(ws), (4010, "banned".to_string()));
    }
    assert!(scrape(&s, "wsloop_admin_requests_total{route=\"disconnect\",status=\"503\"}") >= 1.0);
}

#[test]
fn over_redis_a_kick_reaching_a_frozen_host_is_kept_and_applied_at_thaw() {
    if !have_redis() {
        return;
    }
    let redis = start_redis();
    let url = format!("redis://127.0.0.1:{}", redis.1);
    let key = jwt_key("redis-frozen");
    let path = takeover_path("redis-frozen");
    let a = spawn("redis-frozen-a", &["--redis-url", &url, "--jwt-key", &key, "--takeover", &path], &[]);
    let b = spawn("redis-frozen-b", &["--redis-url", &url, "--jwt-key", &key], &[]);
    let mut on_a: Vec<Tung> = (0..2).map(|_| connect_as(a.addr, "mallory")).collect();
    let mut other_on_b = connect_as(b.addr, "trent");
    join(&mut on_a[0], "probe");
    join(&mut other_on_b, "probe");
    assert!(subscribed(&a, 1.0) && subscribed(&b, 1.0), "the bridges subscribe");
    let link = freeze_by_handoff(std::path::Path::new(&path));
    let (status, body) =
        post(&b, "/disconnect", json!({"user": "mallory", "code": 4011, "reason": "banned while moving"}));
    assert_eq!((status, body["sent_to_other_hosts"].as_bool()), (200, Some(true)), "{body}");
    // Every loop of A keeps it while frozen.
    assert!(eventually(Duration::from_secs(5), || scrape(&a, "wsloop_admin_kicks_kept_total") >= 2.0));
    drop(link);
    for ws in on_a.iter_mut() {
        assert_eq!(close_of(ws), (4011, "banned while moving".into()), "mallory on the host that was frozen");
    }
    assert_eq!(scrape(&a, "wsloop_admin_kicks_missed_total"), 0.0);
    assert!(got_nothing(&mut other_on_b), "another user stays");
}

#[test]
fn silent_connections_filling_every_slot_do_not_lock_the_api_out() {
    let s = spawn("slowloris", &[], &[]);
    let silent: Vec<TcpStream> = (0..70).map(|_| TcpStream::connect(s.admin).unwrap()).collect();
    assert!(eventually(Duration::from_secs(5), || scrape(&s, "wsloop_admin_connections") == 64.0));
    let (status, body) = get(&s, "/rooms");
    assert_eq!(status, 200, "a real call gets through the flood: {body}");
    assert!(scrape(&s, "wsloop_admin_evicted_total") >= 7.0, "the oldest silent ones made room");
    assert_eq!(scrape(&s, "wsloop_admin_requests_total{route=\"other\",status=\"503\"}"), 0.0);
    // The rest are answered 408 at the 2 s head deadline.
    assert!(eventually(Duration::from_secs(5), || scrape(&s, "wsloop_admin_connections") == 0.0));
    drop(silent);
}

#[test]
fn a_200_kib_publish_arrives_whole_through_the_cli_and_one_raw_write() {
    let s = spawn("large", &[], &[]);
    let mut member = tung_connect(s.addr);
    join(&mut member, "big");
    let text: String = (0..200 * 1024).map(|i| (b'a' + (i % 26) as u8) as char).collect();
    let tokens = token_file("large-cli");
    let mut cli = Command::new(env!("CARGO_BIN_EXE_wsloop"))
        .args(["admin", "--addr", &s.admin.to_string(), "--token-file", tokens.to_str().unwrap()])
        .args(["publish", "big", "-"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    cli.stdin.take().unwrap().write_all(text.as_bytes()).unwrap();
    let out = cli.wait_with_output().unwrap();
    let reply: Value = serde_json::from_slice(&out.stdout).unwrap_or(Value::Null);
    assert!(out.status.success() && reply["delivered_local"] == 1, "{reply}");
    assert_eq!(recv(&mut member), TMsg::text(text.clone()));
    let body = json!({"room": "big", "text": text}).to_string();
    let request = format!(
        "POST /publish HTTP/1.1\r\nAuthorization: Bearer {TOKEN}\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    );
    let reply = raw_reply(s.admin, request.as_bytes());
    assert!(reply.starts_with("HTTP/1.1 200 "), "{}", &reply[..reply.len().min(300)]);
    assert_eq!(recv(&mut member), TMsg::text(text));
}

#[test]
fn an_admin_port_equal_to_the_metrics_port_is_refused_at_start() {
    let port = TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let same = format!("127.0.0.1:{port}");
    let tokens = token_file("same-as-metrics");
    let mut child = ServerProcess(
        Command::new(env!("CARGO_BIN_EXE_wsloop"))
            .args(["--addr", "127.0.0.1:0", "--metrics-addr", &same, "--admin-addr", &same, "--admin-token-file"])
            .arg(&tokens)
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap(),
    );
    // A server that started anyway (both ports bind with SO_REUSEPORT) is killed on drop.
    assert!(eventually(Duration::from_secs(10), || child.try_wait().unwrap().is_some()), "it started anyway");
    let mut err = String::new();
    child.stderr.take().unwrap().read_to_string(&mut err).unwrap();
    let last = err.trim().lines().last().unwrap_or_default().to_string();
    assert!(!child.wait().unwrap().success(), "{err}");
    assert!(last.contains("--admin-addr") && last.contains("--metrics-addr"), "one line naming both: {err}");
}

#[test]
fn unauthenticated_floods_do_not_flood_the_log() {
    let s = spawn("logflood", &[], &[]);
    let long = format!("/{}", "p".repeat(4000));
    for _ in 0..200 {
        assert_eq!(request(s.admin, "GET", &long, None, b"").0, 401);
    }
    assert_eq!(scrape(&s, "wsloop_admin_requests_total{route=\"other\",status=\"401\"}"), 200.0);
    let suppressed = scrape(&s, "wsloop_admin_log_suppressed_total");
    assert!(suppressed > 0.0, "200 lines in a moment are over 20 a second");
    let logged = || s.log.lock().unwrap().iter().filter(|l| l.contains(": 401 ")).cloned().collect::<Vec<_>>();
    let all_counted = eventually(Duration::from_secs(5), || logged().len() as f64 + suppressed == 200.0);
    assert!(all_counted, "every line not written is counted: {} + {suppressed}", logged().len());
    let lines = logged();
    assert!(lines.iter().all(|l| l.len() < 300), "the path is cut short: {}", lines[0]);
}
