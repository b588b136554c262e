//! Rooms through the real server: fan-out across loops in order, leave and
//! close stop delivery (and leave nothing behind), a slow member is cut off
//! without slowing the others, error replies, and the Rust API.

mod common;

use std::time::Duration;

use common::*;
use serde_json::{json, Value};
use tungstenite::Message as TMsg;
use wsloop::server::{self, CloseReason, Ctx, Handler, Message, ServerConfig};

fn send(ws: &mut Tung, v: Value) {
    ws.send(TMsg::text(v.to_string())).unwrap();
}

fn recv(ws: &mut Tung) -> Value {
    loop {
        match ws.read().unwrap() {
            TMsg::Text(t) => return serde_json::from_str(&t).unwrap(),
            TMsg::Ping(_) | TMsg::Pong(_) => continue,
            other => panic!("unexpected {other:?}"),
        }
    }
}

fn join(ws: &mut Tung, room: &str) {
    send(ws, json!({"type":"join","room":room}));
    assert_eq!(recv(ws), json!({"type":"joined","room":room}));
}

fn total(server: &server::ServerHandle, f: impl Fn(&server::LoopStats) -> u64) -> u64 {
    server.stats().iter().map(|s| f(s)).sum()
}

#[test]
fn members_on_every_loop_receive_publishes_in_order() {
    let server = start_echo(test_config(2));
    let addr = server.local_addr();
    let mut members: Vec<Tung> = (0..20).map(|_| tung_connect(addr)).collect();
    for m in members.iter_mut() {
        join(m, "lobby");
    }
    let per_loop: Vec<u64> = server.stats().iter().map(|s| s.room_members.get()).collect();
    assert!(
        eventually(Duration::from_secs(2), || server.stats().iter().all(|s| s.room_members.get() > 0)),
        "{per_loop:?}"
    );
    let mut publisher = tung_connect(addr);
    for n in 0..50 {
        send(&mut publisher, json!({"type":"publish","room":"lobby","data":{"n":n}}));
    }
    for (i, m) in members.iter_mut().enumerate() {
        for n in 0..50 {
            assert_eq!(recv(m), json!({"type":"message","room":"lobby","data":{"n":n}}), "member {i}");
        }
    }
    // The publisher is not a member: it gets nothing back. A ping proves it.
    send(&mut publisher, json!({"type":"ping","payload":1}));
    assert_eq!(recv(&mut publisher)["type"], "pong");
    assert_eq!(total(&server, |s| s.room_published.get()), 50);
    assert_eq!(total(&server, |s| s.room_delivered.get()), 50 * 20);
}

#[test]
fn the_sender_gets_its_copy_unless_echo_is_false() {
    let server = start_echo(test_config(2));
    let mut a = tung_connect(server.local_addr());
    let mut b = tung_connect(server.local_addr());
    join(&mut a, "r");
    join(&mut b, "r");
    send(&mut a, json!({"type":"publish","room":"r","data":"one"}));
    assert_eq!(recv(&mut a)["data"], "one");
    assert_eq!(recv(&mut b)["data"], "one");
    send(&mut a, json!({"type":"publish","room":"r","data":"two","echo":false}));
    assert_eq!(recv(&mut b)["data"], "two");
    send(&mut a, json!({"type":"ping","payload":"after"}));
    assert_eq!(recv(&mut a)["type"], "pong", "no copy of 'two' came first");
}

#[test]
fn leave_and_close_stop_delivery_and_leave_nothing_behind() {
    let server = start_echo(test_config(2));
    let addr = server.local_addr();
    let mut stay = tung_connect(addr);
    let mut leaver = tung_connect(addr);
    let mut closer = tung_connect(addr);
    for ws in [&mut stay, &mut leaver, &mut closer] {
        join(ws, "news");
    }
    send(&mut leaver, json!({"type":"leave","room":"news"}));
    assert_eq!(recv(&mut leaver), json!({"type":"left","room":"news"}));
    closer.close(None).unwrap();
    while closer.read().is_ok() {}
    assert!(eventually(Duration::from_secs(5), || total(&server, |s| s.room_members.get()) == 1));
    send(&mut stay, json!({"type":"publish","room":"news","data":1}));
    assert_eq!(recv(&mut stay)["data"], 1);
    send(&mut leaver, json!({"type":"ping","payload":"x"}));
    assert_eq!(recv(&mut leaver)["type"], "pong", "the leaver got nothing from the room");
    stay.close(None).unwrap();
    while stay.read().is_ok() {}
    assert!(eventually(Duration::from_secs(5), || {
        total(&server, |s| s.room_members.get()) == 0 && total(&server, |s| s.rooms.get()) == 0
    }));
}

#[test]
fn a_slow_member_is_cut_off_while_the_others_receive_everything() {
    let server = start_echo(ServerConfig { max_backlog: 256 * 1024, ..test_config(2) });
    let addr = server.local_addr();
    let mut slow = RawClient::connect(addr);
    slow.send_frame(true, wsloop::ws::frame::opcode::TEXT, br#"{"type":"join","room":"feed"}"#);
    assert_eq!(slow.read_frame().unwrap().payload, br#"{"type":"joined","room":"feed"}"#);
    // The slow member never reads again.
    let readers: Vec<_> = (0..4)
        .map(|_| {
            let mut ws = tung_connect(addr);
            join(&mut ws, "feed");
            std::thread::spawn(move || {
                (0..200).map(|_| recv(&mut ws)["data"]["n"].as_u64().unwrap()).collect::<Vec<_>>()
            })
        })
        .collect();
    let mut publisher = tung_connect(addr);
    let blob = "x".repeat(64 * 1024);
    for n in 0..200 {
        send(&mut publisher, json!({"type":"publish","room":"feed","data":{"n":n,"blob":blob}}));
    }
    for r in readers {
        assert_eq!(r.join().unwrap(), (0..200).collect::<Vec<u64>>());
    }
    drop(slow);
    assert!(eventually(Duration::from_secs(10), || total(&server, |s| s.closed_by(CloseReason::SlowConsumer)) == 1));
}

#[test]
fn error_replies() {
    let cfg = ServerConfig { rooms: server::RoomLimits { max_name_len: 8, max_rooms_per_conn: 2 }, ..test_config(1) };
    let server = start_echo(cfg);
    let mut ws = tung_connect(server.local_addr());
    send(&mut ws, json!({"type":"leave","room":"nowhere"}));
    assert_eq!(recv(&mut ws)["error"], "unknown_room");
    ws.send(TMsg::text(r#"{"type":"join","room":}"#)).unwrap();
    assert_eq!(recv(&mut ws)["error"], "bad_json");
    send(&mut ws, json!({"type":"join","room":"much-too-long"}));
    assert_eq!(recv(&mut ws)["error"], "bad_room_name");
    send(&mut ws, json!({"type":"join"}));
    assert_eq!(recv(&mut ws)["error"], "missing_room");
    join(&mut ws, "a");
    join(&mut ws, "b");
    send(&mut ws, json!({"type":"join","room":"c"}));
    assert_eq!(recv(&mut ws)["error"], "too_many_rooms");
    // Not commands: echoed as they are.
    for text in [r#"{"type":"chat","text":"hi"}"#, "plain", "{not json"] {
        ws.send(TMsg::text(text)).unwrap();
        assert_eq!(ws.read().unwrap(), TMsg::text(text));
    }
}

/// A library user's protocol on the Rust API: everyone joins "all" on open;
/// every binary message is published to it, every text broadcast (the
/// Rust API broadcasts whatever the built-in app's policy is).
struct Broadcast;
impl Handler for Broadcast {
    fn on_open(&mut self, ctx: &mut Ctx<'_>, _req: &wsloop::ws::Request<'_>) {
        ctx.join("all").unwrap();
    }
    fn on_message(&mut self, ctx: &mut Ctx<'_>, msg: Message<'_>) {
        match msg {
            Message::Binary(b) => ctx.publish_binary("all", b, false).expect("a name join took"),
            Message::Text(t) => ctx.broadcast_text(t, false).expect("identities are off"),
        }
    }
}

#[test]
fn the_rust_api() {
    let server = server::start(test_config(2), |_| Broadcast).unwrap();
    let mut clients: Vec<Tung> = (0..6).map(|_| tung_connect(server.local_addr())).collect();
    assert!(eventually(Duration::from_secs(2), || total(&server, |s| s.room_members.get()) == 6));
    clients[0].send(TMsg::binary(vec![1, 2, 3])).unwrap();
    for c in clients.iter_mut().skip(1) {
        assert_eq!(c.read().unwrap(), TMsg::binary(vec![1, 2, 3]));
    }
    clients[1].send(TMsg::text("to all")).unwrap();
    for (i, c) in clients.iter_mut().enumerate().filter(|(i, _)| *i != 1) {
        assert_eq!(c.read().unwrap(), TMsg::text("to all"), "client {i}");
    }
}

#[test]
fn a_member_of_ten_rooms_gets_the_ten_publishes_of_one_pass_in_one_write() {
    // One loop, so the publisher's ten publishes (sent in one TCP write,
    // handled in one read turn) and the member meet in one pass.
    let server = start_echo(test_config(1));
    let addr = server.local_addr();
    let mut member = tung_connect(addr);
    for i in 0..10 {
        join(&mut member, &format!("r{i}"));
    }
    let mut publisher = RawClient::connect(addr);
    let mut burst = Vec::new();
    for i in 0..10 {
        let publish = json!({"type":"publish","room":format!("r{i}"),"data":i,"echo":false}).to_string();
        wsloop::ws::frame::write_frame(
            &mut burst,
            true,
            wsloop::ws::frame::opcode::TEXT,
            publish.as_bytes(),
            Some([1, 2, 3, 4]),
        );
    }
    publisher.send_raw(&burst);
    for i in 0..10 {
        assert_eq!(recv(&mut member), json!({"type":"message","room":format!("r{i}"),"data":i}));
    }
    assert_eq!(total(&server, |s| s.room_delivered.get()), 10);
    assert_eq!(total(&server, |s| s.room_writes.get()), 1, "one write for the ten deliveries");
}

#[test]
fn a_broadcast_reaches_every_connection_on_every_loop() {
    let policy = wsloop::app::PublishPolicy { allow_broadcast: true, ..Default::default() };
    let server = start_echo_with(test_config(2), policy, Default::default());
    let addr = server.local_addr();
    let mut clients: Vec<Tung> = (0..8).map(|_| tung_connect(addr)).collect();
    join(&mut clients[1], "some-room"); // in a room or not, all get it
    let mut sender = clients.remove(0);
    send(&mut sender, json!({"type":"broadcast","data":{"n":1},"echo":false}));
    for c in clients.iter_mut() {
        assert_eq!(recv(c), json!({"type":"broadcast","data":{"n":1}}));
    }
    // With echo (the default) the sender gets its copy too.
    send(&mut sender, json!({"type":"broadcast","data":2}));
    assert_eq!(recv(&mut sender), json!({"type":"broadcast","data":2}));
    for c in clients.iter_mut() {
        assert_eq!(recv(c), json!({"type":"broadcast","data":2}));
    }
    assert_eq!(total(&server, |s| s.room_delivered.get()), 14);
}
