//! What a client may fan out, through the real binary: a publish over
//! `--max-publish-size` and a publish to a room name `join` would refuse
//! get error replies and reach nobody, a client broadcast is refused unless
//! `--allow-broadcast`, the connection goes on after each, and
//! `wsloop_publish_refused_total{reason}` counts every refusal. Run on
//! each I/O driver by `WSLOOP_IO` (the spawned server inherits it).

mod common;

use std::net::SocketAddr;

use common::*;
use serde_json::{json, Value};
use tungstenite::Message as TMsg;

fn send(ws: &mut Tung, v: &Value) {
    ws.send(TMsg::text(v.to_string())).unwrap();
}

fn recv(ws: &mut Tung) -> Value {
    loop {
        match ws.read().unwrap() {
            TMsg::Text(t) => return serde_json::from_str(&t).unwrap_or(Value::String(t.to_string())),
            TMsg::Ping(_) | TMsg::Pong(_) => continue,
            other => panic!("unexpected {other:?}"),
        }
    }
}

/// The error code of the next reply, which must be an error.
fn error_code(ws: &mut Tung) -> String {
    let reply = recv(ws);
    assert_eq!(reply["type"], "error", "{reply}");
    assert!(reply["message"].as_str().is_some_and(|m| !m.is_empty()), "{reply}");
    reply["error"].as_str().unwrap().to_string()
}

fn join(ws: &mut Tung, room: &str) {
    send(ws, &json!({"type":"join","room":room}));
    assert_eq!(recv(ws), json!({"type":"joined","room":room}));
}

/// The connection still works: a plain message comes back as it went.
fn still_echoes(ws: &mut Tung, text: &str) {
    ws.send(TMsg::text(text)).unwrap();
    assert_eq!(recv(ws), Value::String(text.to_string()), "the connection goes on");
}

/// `wsloop_publish_refused_total` by reason: too_large, bad_room_name,
/// broadcast_disabled.
fn refused(metrics: SocketAddr) -> [f64; 3] {
    let (status, body) = http_get(metrics, "/metrics");
    assert_eq!(status, 200);
    ["too_large", "bad_room_name", "broadcast_disabled"].map(|reason| {
        let series = format!("wsloop_publish_refused_total{{reason=\"{reason}\"}}");
        sample(&body, &series).unwrap_or_else(|| panic!("{series} not exposed"))
    })
}

#[test]
fn an_oversize_publish_is_refused_and_the_publisher_stays() {
    let (_server, addr, metrics) = spawn_binary_with_metrics(&[], None);
    assert_eq!(refused(metrics), [0.0; 3]);
    let (mut publisher, mut member) = (tung_connect(addr), tung_connect(addr));
    join(&mut publisher, "lobby");
    join(&mut member, "lobby");
    // The default limit is 1 MiB of `data`; this is one byte over it (the
    // quotes count), and far under the 64 MiB a message may be.
    let over = "x".repeat((1 << 20) - 1);
    send(&mut publisher, &json!({"type":"publish","room":"lobby","data":over}));
    assert_eq!(error_code(&mut publisher), "too_large");
    still_echoes(&mut publisher, "after too_large");
    let at_limit = "y".repeat((1 << 20) - 2);
    send(&mut publisher, &json!({"type":"publish","room":"lobby","data":at_limit}));
    // The member's next message is the publish at the limit: the refused
    // one reached nobody.
    let got = recv(&mut member);
    assert_eq!((got["type"].as_str(), got["data"].as_str().map(str::len)), (Some("message"), Some(at_limit.len())));
    assert_eq!(recv(&mut publisher)["data"].as_str().map(str::len), Some(at_limit.len()), "its own copy");
    assert_eq!(refused(metrics), [1.0, 0.0, 0.0]);
}

#[test]
fn a_publish_to_a_room_join_would_refuse_gets_joins_error() {
    let (_server, addr, metrics) = spawn_binary_with_metrics(&["--max-room-name", "8"], None);
    let (mut publisher, mut member) = (tung_connect(addr), tung_connect(addr));
    join(&mut member, "lobby");
    let long = "r".repeat(9);
    let huge = "h".repeat(4 << 20);
    for room in ["", long.as_str(), huge.as_str()] {
        send(&mut publisher, &json!({"type":"join","room":room}));
        assert_eq!(error_code(&mut publisher), "bad_room_name", "join {:.12}", room);
        send(&mut publisher, &json!({"type":"publish","room":room,"data":1}));
        assert_eq!(error_code(&mut publisher), "bad_room_name", "publish {:.12}", room);
    }
    still_echoes(&mut publisher, "after bad_room_name");
    send(&mut publisher, &json!({"type":"publish","room":"lobby","data":"ok"}));
    assert_eq!(recv(&mut member), json!({"type":"message","room":"lobby","data":"ok"}));
    // Joins are not publishes: only the three publishes count.
    assert_eq!(refused(metrics), [0.0, 3.0, 0.0]);
}

#[test]
fn client_broadcasts_are_off_by_default() {
    let (_server, addr, metrics) = spawn_binary_with_metrics(&[], None);
    let (mut sender, mut other) = (tung_connect(addr), tung_connect(addr));
    for echo in [true, false] {
        send(&mut sender, &json!({"type":"broadcast","data":{"n":1},"echo":echo}));
        assert_eq!(error_code(&mut sender), "broadcast_disabled");
    }
    still_echoes(&mut sender, "after broadcast_disabled");
    // The other connection got nothing: its next message is its own echo.
    still_echoes(&mut other, "nothing before this");
    assert_eq!(refused(metrics), [0.0, 0.0, 2.0]);
}

#[test]
fn allow_broadcast_lets_clients_broadcast_under_the_size_limit() {
    let args = ["--allow-broadcast", "--max-publish-size", "4KiB"];
    let (_server, addr, metrics) = spawn_binary_with_metrics(&args, None);
    let mut clients: Vec<Tung> = (0..4).map(|_| tung_connect(addr)).collect();
    let mut sender = clients.remove(0);
    send(&mut sender, &json!({"type":"broadcast","data":{"n":1},"echo":false}));
    for c in clients.iter_mut() {
        assert_eq!(recv(c), json!({"type":"broadcast","data":{"n":1}}));
    }
    // 4097 bytes of JSON text: over 4 KiB, for a broadcast as for a publish.
    let over = "z".repeat(4095);
    send(&mut sender, &json!({"type":"broadcast","data":over}));
    assert_eq!(error_code(&mut sender), "too_large");
    send(&mut sender, &json!({"type":"publish","room":"any","data":over}));
    assert_eq!(error_code(&mut sender), "too_large");
    still_echoes(&mut sender, "after too_large");
    send(&mut sender, &json!({"type":"broadcast","data":2,"echo":false}));
    for c in clients.iter_mut() {
        assert_eq!(recv(c), json!({"type":"broadcast","data":2}), "the refused broadcast reached nobody");
    }
    assert_eq!(refused(metrics), [2.0, 0.0, 0.0]);
}
