//! JWT identities through the binary (`--jwt-key`): which tokens open a
//! connection and which are refused with what status; rooms allowed and
//! refused by the token's claims; the per-user cap across loops; an
//! expired token closing its connection and a refresh keeping one open;
//! the key file reloaded on SIGHUP; bad key files and flags.

mod common;

use std::io::Write;
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::time::Duration;

use common::*;
use jsonwebtoken::{encode, Algorithm, EncodingKey, Header};
use serde_json::{json, Value};
use tungstenite::Message;

const SECRET: &str = "jwt-tests-secret-of-at-least-32-bytes";

/// A fresh directory for one test's key files.
fn dir(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("wsloop-jwt-{}-{name}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

fn write(path: &Path, content: &str) -> String {
    std::fs::write(path, content).unwrap();
    path.to_str().unwrap().to_string()
}

fn now() -> u64 {
    jsonwebtoken::get_current_timestamp()
}

fn hs256(claims: &Value, secret: &str) -> String {
    encode(&Header::default(), claims, &EncodingKey::from_secret(secret.as_bytes())).unwrap()
}

fn b64(bytes: &[u8]) -> String {
    use base64::Engine as _;
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
}

/// The status the server answers an upgrade with `extra` headers at `target`.
fn status(addr: SocketAddr, target: &str, extra: &str) -> u16 {
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let req = format!(
        "GET {target} HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n{extra}\r\n"
    );
    s.write_all(req.as_bytes()).unwrap();
    read_reply_head(&mut s).0
}

fn bearer(token: &str) -> String {
    format!("Authorization: Bearer {token}\r\n")
}

/// A client connected with `token` in the `Authorization` header.
fn connect(addr: SocketAddr, token: &str) -> Tung {
    let mut request = tungstenite::client::IntoClientRequest::into_client_request(format!("ws://{addr}/ws")).unwrap();
    request.headers_mut().insert("Authorization", format!("Bearer {token}").parse().unwrap());
    let stream = TcpStream::connect(addr).unwrap();
    stream.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    tungstenite::client(request, stream).expect("an upgrade with a valid token").0
}

/// Sends a JSON command and returns the next text message, parsed.
fn ask(ws: &mut Tung, command: Value) -> Value {
    ws.send(Message::text(command.to_string())).unwrap();
    next_json(ws)
}

fn next_json(ws: &mut Tung) -> Value {
    loop {
        match ws.read().expect("a reply") {
            Message::Text(t) => return serde_json::from_str(&t).unwrap(),
            Message::Ping(_) | Message::Pong(_) => continue,
            other => panic!("expected text, got {other:?}"),
        }
    }
}

fn metric(metrics: SocketAddr, series: &str) -> f64 {
    sample(&http_get(metrics, "/metrics").1, series).unwrap_or(-1.0)
}

#[test]
fn only_a_valid_token_opens_a_connection_and_each_refusal_is_counted_by_reason() {
    let d = dir("refusals");
    let jwks = json!({"keys": [
        {"kty": "oct", "kid": "k1", "k": b64(SECRET.as_bytes())},
        {"kty": "oct", "kid": "k2", "k": b64(b"the-second-key-of-the-set-32-bytes!")},
    ]});
    let key = write(&d.join("jwks.json"), &jwks.to_string());
    let args = ["--jwt-key", &key, "--jwt-audience", "chat-app", "--jwt-leeway", "0s"];
    let (_server, addr, metrics) = spawn_binary_with_metrics(&args, None);
    let good = json!({"sub": "alice", "exp": now() + 600, "aud": "chat-app"});
    let with = |patch: Value| {
        let mut claims = good.clone();
        claims.as_object_mut().unwrap().extend(patch.as_object().unwrap().clone());
        claims
    };
    let signed = |claims: &Value, kid: &str, secret: &str| {
        let header = Header { kid: Some(kid.into()), ..Header::default() };
        encode(&header, claims, &EncodingKey::from_secret(secret.as_bytes())).unwrap()
    };
    let valid = signed(&good, "k1", SECRET);
    let unsigned =
        format!("{}.{}.", b64(br#"{"alg":"none","typ":"JWT","kid":"k1"}"#), b64(good.to_string().as_bytes()));
    let cases: Vec<(&str, String, String, u16)> = vec![
        ("valid, header", "/ws".into(), bearer(&valid), 101),
        ("valid, query", format!("/ws?room=x&token={valid}"), String::new(), 101),
        ("missing", "/ws".into(), String::new(), 401),
        ("expired", "/ws".into(), bearer(&signed(&with(json!({"exp": now() - 5})), "k1", SECRET)), 401),
        ("not yet valid", "/ws".into(), bearer(&signed(&with(json!({"nbf": now() + 600})), "k1", SECRET)), 401),
        ("wrong signature", "/ws".into(), bearer(&signed(&good, "k1", "not-the-key-but-32-bytes-long-too!")), 401),
        ("wrong kid", "/ws".into(), bearer(&signed(&good, "k9", SECRET)), 401),
        ("other kid's key", "/ws".into(), bearer(&signed(&good, "k2", SECRET)), 401),
        ("alg none", "/ws".into(), bearer(&unsigned), 401),
        ("wrong audience", "/ws".into(), bearer(&signed(&with(json!({"aud": "other-app"})), "k1", SECRET)), 401),
        ("garbage", "/ws".into(), bearer("not.a.jwt"), 401),
        ("no sub", "/ws".into(), bearer(&signed(&json!({"exp": now() + 600, "aud": "chat-app"}), "k1", SECRET)), 403),
        ("bad rights", "/ws".into(), bearer(&signed(&with(json!({"wsloop": {"join": ["a*b"]}})), "k1", SECRET)), 403),
    ];
    for (what, target, extra, want) in &cases {
        assert_eq!(status(addr, target, extra), *want, "{what}");
    }
    let refused = |reason: &str| metric(metrics, &format!(r#"wsloop_auth_refused_total{{reason="{reason}"}}"#));
    let by_reason = [
        ("missing", 1.0),
        ("expired", 1.0),
        ("not_yet_valid", 1.0),
        ("bad_signature", 2.0),
        ("unknown_kid", 1.0),
        ("malformed", 2.0),
        ("wrong_audience", 1.0),
        ("bad_claims", 2.0),
    ];
    for (reason, want) in by_reason {
        assert_eq!(refused(reason), want, "{reason}");
    }
    let failures = |reason: &str| metric(metrics, &format!(r#"wsloop_handshake_failures_total{{reason="{reason}"}}"#));
    assert_eq!((failures("unauthorized"), failures("forbidden")), (9.0, 2.0));
    // A valid client echoes; the user id is in its identity.
    let mut ws = connect(addr, &valid);
    ws.send(Message::text("hello")).unwrap();
    assert_eq!(ws.read().unwrap(), Message::text("hello"));
}

#[test]
fn rooms_are_joined_and_published_to_only_as_the_token_allows() {
    let d = dir("rights");
    let key = write(&d.join("secret"), SECRET);
    let (_server, addr, metrics) = spawn_binary_with_metrics(&["--jwt-key", &key, "--allow-broadcast"], None);
    let rights = json!({"join": ["chat:*", "user:{sub}"], "publish": ["chat:*"]});
    let alice = hs256(&json!({"sub": "alice", "exp": now() + 600, "wsloop": rights}), SECRET);
    let bob = hs256(&json!({"sub": "bob", "exp": now() + 600, "wsloop": rights}), SECRET);
    let reader = hs256(&json!({"sub": "carol", "exp": now() + 600, "wsloop": {"join": ["chat:*"]}}), SECRET);
    let (mut a, mut b, mut c) = (connect(addr, &alice), connect(addr, &bob), connect(addr, &reader));
    assert_eq!(ask(&mut a, json!({"type": "join", "room": "user:alice"}))["type"], "joined");
    assert_eq!(ask(&mut a, json!({"type": "join", "room": "user:bob"}))["error"], "forbidden");
    assert_eq!(ask(&mut a, json!({"type": "join", "room": "admin"}))["error"], "forbidden");
    for ws in [&mut a, &mut b, &mut c] {
        assert_eq!(ask(ws, json!({"type": "join", "room": "chat:rust"}))["type"], "joined");
    }
    assert_eq!(ask(&mut c, json!({"type": "publish", "room": "chat:rust", "data": "hi"}))["error"], "forbidden");
    assert_eq!(ask(&mut a, json!({"type": "publish", "room": "user:alice", "data": 1}))["error"], "forbidden");
    assert_eq!(ask(&mut a, json!({"type": "broadcast", "data": 1}))["error"], "forbidden");
    // Bob's allowed publish reaches every member, the reader included;
    // nobody saw the refused ones.
    b.send(Message::text(json!({"type": "publish", "room": "chat:rust", "data": "from bob"}).to_string())).unwrap();
    for ws in [&mut a, &mut b, &mut c] {
        assert_eq!(next_json(ws), json!({"type": "message", "room": "chat:rust", "data": "from bob"}));
    }
    let denied = |action: &str| metric(metrics, &format!(r#"wsloop_auth_denied_total{{action="{action}"}}"#));
    assert_eq!((denied("join"), denied("publish"), denied("broadcast")), (2.0, 2.0, 1.0));
    assert_eq!(metric(metrics, r#"wsloop_publish_refused_total{reason="forbidden"}"#), 3.0);
}

#[test]
fn a_user_holds_at_most_its_cap_of_connections_across_loops() {
    let d = dir("cap");
    let key = write(&d.join("secret"), SECRET);
    let args = ["--jwt-key", &key, "--max-conns-per-user", "3"];
    let (_server, addr, metrics) = spawn_binary_with_metrics(&args, None);
    let token = |sub: &str| hs256(&json!({"sub": sub, "exp": now() + 600}), SECRET);
    // SO_REUSEPORT spreads connections over both loops by port: with 3
    // held, at least one loop took two, and the 4th is refused wherever it lands.
    let mut held: Vec<Tung> = (0..3).map(|_| connect(addr, &token("dave"))).collect();
    for _ in 0..4 {
        assert_eq!(status(addr, "/ws", &bearer(&token("dave"))), 429);
    }
    let mut other = connect(addr, &token("erin"));
    other.send(Message::text("still open")).unwrap();
    assert_eq!(other.read().unwrap(), Message::text("still open"));
    assert_eq!(metric(metrics, r#"wsloop_auth_refused_total{reason="user_limit"}"#), 4.0);
    // One leaves: a place comes free once the server has seen it go.
    held.pop().unwrap().close(None).unwrap();
    assert!(eventually(Duration::from_secs(5), || status(addr, "/ws", &bearer(&token("dave"))) == 101));
}

#[test]
fn an_expired_token_closes_its_connection_and_a_refresh_keeps_one_open() {
    let d = dir("expiry");
    let key = write(&d.join("secret"), SECRET);
    let (_server, addr, metrics) = spawn_binary_with_metrics(&["--jwt-key", &key, "--jwt-leeway", "0s"], None);
    let soon = now() + 2;
    let mut expiring = connect(addr, &hs256(&json!({"sub": "frank", "exp": soon}), SECRET));
    let mut refreshed = connect(addr, &hs256(&json!({"sub": "grace", "exp": soon}), SECRET));
    let later = now() + 600;
    let fresh = hs256(&json!({"sub": "grace", "exp": later}), SECRET);
    let reply = ask(&mut refreshed, json!({"type": "refresh", "token": fresh}));
    assert_eq!(reply, json!({"type": "refreshed", "exp": later}));
    // Another user's token: refused, and the connection that tried closed.
    let mut thief = connect(addr, &hs256(&json!({"sub": "ivan", "exp": later}), SECRET));
    let stolen = hs256(&json!({"sub": "mallory", "exp": later + 1}), SECRET);
    assert_eq!(ask(&mut thief, json!({"type": "refresh", "token": stolen}))["error"], "other_user");
    match thief.read() {
        Ok(Message::Close(Some(frame))) => {
            assert_eq!((u16::from(frame.code), frame.reason.as_str()), (1008, "token refused"))
        }
        other => panic!("expected 1008, got {other:?}"),
    }
    // Frank's token runs out: 1008 "token expired".
    let close = loop {
        match expiring.read() {
            Ok(Message::Close(frame)) => break frame.expect("a close code"),
            Ok(_) => continue,
            Err(e) => panic!("expected a close frame, got {e}"),
        }
    };
    assert_eq!((u16::from(close.code), close.reason.as_str()), (1008, "token expired"));
    assert!(now() >= soon, "not closed before its exp");
    // Hang up: the server, lingering after its close frame, counts the
    // close at our EOF. Left open, it would count it only at its close
    // timeout (5 s), as long as the wait below: a race lost under load.
    drop(expiring);
    // Grace's refreshed one is still open and echoes.
    refreshed.send(Message::text("still here")).unwrap();
    assert_eq!(refreshed.read().unwrap(), Message::text("still here"));
    assert!(eventually(Duration::from_secs(5), || {
        metric(metrics, r#"wsloop_connections_closed_total{reason="token_expired"}"#) == 1.0
    }));
    assert_eq!(metric(metrics, r#"wsloop_token_refreshes_total{result="taken"}"#), 1.0);
    assert_eq!(metric(metrics, r#"wsloop_token_refreshes_total{result="refused"}"#), 1.0);
    assert_eq!(metric(metrics, r#"wsloop_auth_refused_total{reason="other_user"}"#), 0.0, "upgrades only");
}

/// An EC P-256 key pair made by openssl: the private key (PKCS#8 PEM) and
/// the public key (PEM).
fn ec_pair(d: &Path, name: &str) -> (Vec<u8>, String) {
    let private = d.join(format!("{name}.key"));
    let public = d.join(format!("{name}.pub"));
    let run = |args: &[&str]| {
        let out = std::process::Command::new("openssl").args(args).output().expect("openssl");
        assert!(out.status.success(), "openssl {args:?}: {}", String::from_utf8_lossy(&out.stderr));
    };
    let p = private.to_str().unwrap();
    run(&["genpkey", "-algorithm", "EC", "-pkeyopt", "ec_paramgen_curve:P-256", "-out", p]);
    run(&["pkey", "-in", p, "-pubout", "-out", public.to_str().unwrap()]);
    (std::fs::read(&private).unwrap(), std::fs::read_to_string(&public).unwrap())
}

#[test]
fn es256_keys_are_reloaded_on_sighup_and_a_bad_file_keeps_the_old() {
    let d = dir("reload");
    let (old_private, old_public) = ec_pair(&d, "old");
    let (new_private, new_public) = ec_pair(&d, "new");
    let key = write(&d.join("key.pem"), &old_public);
    let (server, addr, metrics) = spawn_binary_with_metrics(&["--jwt-key", &key], None);
    let es256 = |private: &[u8]| {
        let claims = json!({"sub": "heidi", "exp": now() + 600});
        encode(&Header::new(Algorithm::ES256), &claims, &EncodingKey::from_ec_pem(private).unwrap()).unwrap()
    };
    // Key confusion: an HS256 token "signed" with the public key's text.
    let confused = hs256(&json!({"sub": "heidi", "exp": now() + 600}), &old_public);
    assert_eq!(status(addr, "/ws", &bearer(&es256(&old_private))), 101);
    assert_eq!(status(addr, "/ws", &bearer(&es256(&new_private))), 401);
    assert_eq!(status(addr, "/ws", &bearer(&confused)), 401);
    let hup =
        || nix::sys::signal::kill(nix::unistd::Pid::from_raw(server.id() as i32), nix::sys::signal::SIGHUP).unwrap();
    write(&d.join("key.pem"), &new_public);
    hup();
    assert!(eventually(Duration::from_secs(5), || status(addr, "/ws", &bearer(&es256(&new_private))) == 101));
    assert_eq!(status(addr, "/ws", &bearer(&es256(&old_private))), 401);
    write(&d.join("key.pem"), "-----BEGIN PUBLIC KEY-----\nnot a key\n-----END PUBLIC KEY-----\n");
    hup();
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(status(addr, "/ws", &bearer(&es256(&new_private))), 101, "the keys in use stayed");
    assert_eq!(metric(metrics, r#"wsloop_auth_refused_total{reason="bad_algorithm"}"#), 1.0);
}

#[test]
fn a_bad_key_file_or_flag_stops_the_start_with_one_line_naming_it() {
    let d = dir("bad");
    let short = write(&d.join("short"), "tiny-secret");
    let bad_jwks = write(&d.join("jwks.json"), r#"{"keys":[{"kty":"oct","k":"YQ"},{"kty":"oct","kid":"b","k":"Yg"}]}"#);
    let cases: Vec<(Vec<&str>, String)> = vec![
        (vec!["--jwt-key", &short], format!("--jwt-key {short}: an HMAC secret of 11 bytes; at least 32 are needed")),
        (vec!["--jwt-key", &bad_jwks], format!("--jwt-key {bad_jwks}: key #0: no kid, in a set of several")),
        (vec!["--jwt-key", "/nonexistent/key"], "--jwt-key /nonexistent/key: cannot read it".into()),
    ];
    for (args, says) in cases {
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_wsloop"))
            .args(["--addr", "127.0.0.1:0", "--metrics-addr", "off"])
            .args(&args)
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{stderr}");
        assert!(stderr.trim().starts_with(&format!("wsloop: {says}")), "{stderr}");
        assert_eq!(stderr.trim().lines().count(), 1, "{stderr}");
    }
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_wsloop"))
        .args(["--addr", "127.0.0.1:0", "--metrics-addr", "off", "--max-conns-per-user", "2"])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success() && stderr.contains("--jwt-key"), "{stderr}");
}

/// A key pair of openssl's `genpkey` arguments: (private PEM, public PEM).
fn pair(d: &Path, name: &str, genpkey: &[&str]) -> (Vec<u8>, String) {
    let private = d.join(format!("{name}.key"));
    let public = d.join(format!("{name}.pub"));
    let p = private.to_str().unwrap();
    let run = |args: &[&str]| {
        let out = std::process::Command::new("openssl").args(args).output().expect("openssl");
        assert!(out.status.success(), "openssl {args:?}: {}", String::from_utf8_lossy(&out.stderr));
    };
    run(&[&["genpkey"], genpkey, &["-out", p]].concat());
    run(&["pkey", "-in", p, "-pubout", "-out", public.to_str().unwrap()]);
    (std::fs::read(&private).unwrap(), std::fs::read_to_string(&public).unwrap())
}

/// A key kind: its name, openssl's arguments, the algorithms it signs
/// with, and how its private key is read.
type KeyKind = (&'static str, &'static [&'static str], &'static [Algorithm], fn(&[u8]) -> EncodingKey);

#[test]
fn rsa_pss_ecdsa_p384_and_eddsa_keys_check_their_tokens() {
    let d = dir("kinds");
    const RSA: &[&str] = &["-algorithm", "RSA", "-pkeyopt", "rsa_keygen_bits:2048"];
    const P384: &[&str] = &["-algorithm", "EC", "-pkeyopt", "ec_paramgen_curve:P-384"];
    const ED: &[&str] = &["-algorithm", "ED25519"];
    let kinds: [KeyKind; 3] = [
        ("rsa", RSA, &[Algorithm::RS256, Algorithm::RS512, Algorithm::PS256], |k| {
            EncodingKey::from_rsa_pem(k).unwrap()
        }),
        ("p384", P384, &[Algorithm::ES384], |k| EncodingKey::from_ec_pem(k).unwrap()),
        ("ed25519", ED, &[Algorithm::EdDSA], |k| EncodingKey::from_ed_pem(k).unwrap()),
    ];
    for (name, genpkey, algorithms, encoding) in kinds {
        let (private, public) = pair(&d, name, genpkey);
        let (other, _) = pair(&d, &format!("{name}-other"), genpkey);
        let key = write(&d.join(format!("{name}.pem")), &public);
        let (_server, addr) = spawn_binary(&["--jwt-key", &key], None);
        let claims = json!({"sub": "judy", "exp": now() + 600});
        for &alg in algorithms {
            let signed = |k: &[u8]| encode(&Header::new(alg), &claims, &encoding(k)).unwrap();
            assert_eq!(status(addr, "/ws", &bearer(&signed(&private))), 101, "{name} {alg:?}");
            assert_eq!(status(addr, "/ws", &bearer(&signed(&other))), 401, "{name} {alg:?}: another key's");
        }
        // The public key's text as an HMAC secret: never.
        assert_eq!(status(addr, "/ws", &bearer(&hs256(&claims, &public))), 401, "{name}: key confusion");
    }
}
