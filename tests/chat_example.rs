//! The chat in examples/chat, through the public API: nicknames, the member
//! list shared by both event loops, messages to everyone, and "left" when a
//! member goes, with each refusal answered.

#[path = "../examples/chat/app.rs"]
mod app;
mod common;

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use common::*;
use serde_json::{json, Value};
use tungstenite::Message as TMsg;
use wsloop::server;

fn start_chat() -> (server::ServerHandle, SocketAddr) {
    let members = Arc::new(Mutex::new(app::Members::default()));
    let server = server::start(test_config(2), move |_| app::ChatApp::new(members.clone())).unwrap();
    let addr = server.local_addr();
    (server, addr)
}

fn send(ws: &mut Tung, v: Value) {
    ws.send(TMsg::text(v.to_string())).unwrap();
}

/// Reads until a message of type `kind` (skipping others), within the
/// client's read timeout.
fn expect(ws: &mut Tung, kind: &str) -> Value {
    loop {
        let msg = ws.read().unwrap_or_else(|e| panic!("waiting for {kind}: {e}"));
        let v: Value = serde_json::from_str(msg.to_text().unwrap()).unwrap();
        if v["type"] == kind {
            return v;
        }
    }
}

fn hello(ws: &mut Tung, nick: &str) -> Value {
    send(ws, json!({"type": "hello", "nick": nick}));
    expect(ws, "welcome")
}

#[test]
fn members_talk_across_loops_and_see_each_other_come_and_go() {
    let (_server, addr) = start_chat();
    // Enough clients that both loops have some (SO_REUSEPORT spreads them).
    let nicks = ["ann", "bob", "cyd", "dee", "eve", "fay"];
    let mut clients: Vec<Tung> = nicks.iter().map(|_| tung_connect(addr)).collect();
    for (i, nick) in nicks.iter().enumerate() {
        let welcome = hello(&mut clients[i], nick);
        assert_eq!(welcome["nick"], *nick);
        assert_eq!(welcome["members"].as_array().unwrap().len(), i + 1, "{welcome}");
        for earlier in clients.iter_mut().take(i) {
            assert_eq!(expect(earlier, "joined")["nick"], *nick);
        }
    }
    // A message reaches everyone, the sender too, on both loops.
    send(&mut clients[1], json!({"type": "say", "text": "hi all"}));
    for c in clients.iter_mut() {
        assert_eq!(expect(c, "said"), json!({"type": "said", "nick": "bob", "text": "hi all"}));
    }
    // bob goes: everyone else hears it, and the list forgets him.
    let bob = clients.remove(1);
    drop(bob);
    for c in clients.iter_mut() {
        assert_eq!(expect(c, "left")["nick"], "bob");
    }
    send(&mut clients[0], json!({"type": "who"}));
    assert_eq!(expect(&mut clients[0], "members")["members"], json!(["ann", "cyd", "dee", "eve", "fay"]));
    // His nickname is free again.
    let mut again = tung_connect(addr);
    assert_eq!(hello(&mut again, "bob")["members"].as_array().unwrap().len(), 6);
}

#[test]
fn refusals_are_answered_and_cost_nothing_else() {
    let (_server, addr) = start_chat();
    let mut ann = tung_connect(addr);
    hello(&mut ann, "ann");
    let mut other = tung_connect(addr);
    let cases = [
        (json!({"type": "say", "text": "before hello"}), "no_nick"),
        (json!({"type": "hello", "nick": "ann"}), "nick_taken"),
        (json!({"type": "hello", "nick": ""}), "bad_nick"),
        (json!({"type": "hello", "nick": "x".repeat(33)}), "bad_nick"),
        (json!({"type": "hello", "nick": "tab\there"}), "bad_nick"),
        (json!({"type": "dance"}), "bad_request"),
        (json!("not an object"), "bad_request"),
    ];
    for (request, code) in cases {
        send(&mut other, request.clone());
        assert_eq!(expect(&mut other, "error")["error"], code, "{request}");
    }
    other.send(TMsg::binary(vec![1, 2])).unwrap();
    assert_eq!(expect(&mut other, "error")["error"], "bad_request");
    hello(&mut other, "bo");
    send(&mut other, json!({"type": "hello", "nick": "bo2"}));
    assert_eq!(expect(&mut other, "error")["error"], "already_named");
    // ann saw bo arrive, and the list has the two of them.
    assert_eq!(expect(&mut ann, "joined")["nick"], "bo");
    send(&mut ann, json!({"type": "who"}));
    assert_eq!(expect(&mut ann, "members")["members"], json!(["ann", "bo"]));
}

#[test]
fn with_tokens_a_members_name_is_its_user_id() {
    use jsonwebtoken::{encode, EncodingKey, Header};
    use wsloop::server::identity::{JwtConfig, Verifier};
    let secret = "chat-example-secret-of-32-bytes-or-more";
    let key_file = std::env::temp_dir().join(format!("wsloop-chat-jwt-{}", std::process::id()));
    std::fs::write(&key_file, secret).unwrap();
    let config = JwtConfig { key_file, audience: vec![], issuer: vec![], leeway: std::time::Duration::ZERO };
    let jwt = Arc::new(Verifier::load(config).unwrap());
    let members = Arc::new(Mutex::new(app::Members::default()));
    let cfg = server::ServerConfig { jwt: Some(jwt), ..test_config(2) };
    let server = server::start(cfg, move |_| app::ChatApp::new(members.clone())).unwrap();
    let addr = server.local_addr();
    let token = |sub: &str, rooms: Value| {
        let claims = json!({"sub": sub, "exp": jsonwebtoken::get_current_timestamp() + 600, "wsloop": rooms});
        encode(&Header::default(), &claims, &EncodingKey::from_secret(secret.as_bytes())).unwrap()
    };
    let connect = |token: &str| {
        let stream = std::net::TcpStream::connect(addr).unwrap();
        stream.set_read_timeout(Some(std::time::Duration::from_secs(10))).unwrap();
        tungstenite::client(format!("ws://{addr}/ws?token={token}"), stream).expect("a token the chat takes").0
    };
    let chat = json!({"join": ["chat"], "publish": ["chat"]});
    let mut ann = connect(&token("ann", chat.clone()));
    send(&mut ann, json!({"type": "hello"}));
    assert_eq!(expect(&mut ann, "welcome")["nick"], "ann");
    let mut bob = connect(&token("bob", chat.clone()));
    send(&mut bob, json!({"type": "hello", "nick": "ann"}));
    assert_eq!(expect(&mut bob, "error")["error"], "not_your_name");
    send(&mut bob, json!({"type": "hello", "nick": "bob"}));
    assert_eq!(expect(&mut bob, "welcome")["members"], json!(["ann", "bob"]));
    send(&mut bob, json!({"type": "say", "text": "hi"}));
    assert_eq!(expect(&mut ann, "said"), json!({"type": "said", "nick": "bob", "text": "hi"}));
    // A token without the right to the room gets its name, not the room.
    let mut eve = connect(&token("eve", json!({})));
    send(&mut eve, json!({"type": "hello"}));
    let refused = expect(&mut eve, "error");
    assert_eq!(refused["error"], "room", "{refused}");
    send(&mut ann, json!({"type": "who"}));
    assert_eq!(expect(&mut ann, "members")["members"], json!(["ann", "bob"]), "eve is not in the chat");
    // No token: no connection.
    let stream = std::net::TcpStream::connect(addr).unwrap();
    assert!(tungstenite::client(format!("ws://{addr}/ws"), stream).is_err());
}
