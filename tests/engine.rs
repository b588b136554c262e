//! The engine through its public API: a real server on an ephemeral port,
//! real clients (tungstenite, and a raw one for what tungstenite won't send).

mod common;

use std::time::Duration;

use common::*;
use tungstenite::Message as TMsg;
use wsloop::server::{self, CloseReason, Ctx, Handler, Message};
use wsloop::ws::frame::opcode;

#[test]
fn echoes_text_and_binary_of_every_size() {
    let server = start_echo(test_config(2));
    let mut ws = tung_connect(server.local_addr());
    for size in [0usize, 125, 126, 64 * 1024, 1 << 20] {
        let text: String = (0..size).map(|i| char::from(b'a' + (i % 26) as u8)).collect();
        ws.send(TMsg::text(text.clone())).unwrap();
        assert_eq!(ws.read().unwrap(), TMsg::text(text), "text of {size}");
        let bin: Vec<u8> = (0..size).map(|i| (i * 31 % 251) as u8).collect();
        ws.send(TMsg::binary(bin.clone())).unwrap();
        assert_eq!(ws.read().unwrap(), TMsg::binary(bin), "binary of {size}");
    }
    ws.close(None).unwrap();
    // The server echoes the close; then tungstenite reports the close done.
    loop {
        match ws.read() {
            Ok(_) => continue,
            Err(tungstenite::Error::ConnectionClosed) => break,
            Err(e) => panic!("unexpected {e}"),
        }
    }
    assert!(eventually(Duration::from_secs(5), || server.connections() == 0));
    let normal: u64 = server.stats().iter().map(|s| s.closed_by(CloseReason::Normal)).sum();
    assert_eq!(normal, 1);
}

#[test]
fn fragmented_messages_and_control_frames() {
    let server = start_echo(test_config(1));
    let mut c = RawClient::connect(server.local_addr());
    let text = "κόσμε, fragmented";
    let b = text.as_bytes();
    c.send_frame(false, opcode::TEXT, &b[..1]); // inside a code point
    c.send_frame(true, opcode::PING, b"mid");
    c.send_frame(false, opcode::CONTINUATION, &b[1..7]);
    c.send_frame(true, opcode::CONTINUATION, &b[7..]);
    let pong = c.read_frame().unwrap();
    assert_eq!((pong.opcode, pong.payload.as_slice()), (opcode::PONG, &b"mid"[..]));
    let echo = c.read_frame().unwrap();
    assert_eq!((echo.opcode, echo.payload.as_slice()), (opcode::TEXT, b));
    // A big fragmented binary message.
    let big: Vec<u8> = (0..300_000u32).map(|i| i as u8).collect();
    for (i, chunk) in big.chunks(70_000).enumerate() {
        let op = if i == 0 { opcode::BINARY } else { opcode::CONTINUATION };
        c.send_frame((i + 1) * 70_000 >= big.len(), op, chunk);
    }
    let echo = c.read_frame().unwrap();
    assert_eq!((echo.opcode, echo.payload.len()), (opcode::BINARY, big.len()));
    assert_eq!(echo.payload, big);
}

#[test]
fn json_ping_gets_pong_and_ping_frames_get_pongs() {
    let server = start_echo(test_config(2));
    let mut ws = tung_connect(server.local_addr());
    ws.send(TMsg::text(r#"{"type":"ping","payload":"k6-42"}"#)).unwrap();
    let reply = ws.read().unwrap().into_text().unwrap();
    let v: serde_json::Value = serde_json::from_str(&reply).unwrap();
    assert_eq!((v["type"].as_str(), v["payload"].as_str()), (Some("pong"), Some("k6-42")));
    assert!(v["ts"].as_u64().is_some());
    ws.send(TMsg::Ping(b"hb".to_vec().into())).unwrap();
    assert_eq!(ws.read().unwrap(), TMsg::Pong(b"hb".to_vec().into()));
}

/// A handler that closes the connection when told "bye".
struct Closer;
impl Handler for Closer {
    fn on_message(&mut self, ctx: &mut Ctx<'_>, msg: Message<'_>) {
        if msg == Message::Text("bye") {
            ctx.close(4000, "as you wish");
        }
    }
}

#[test]
fn server_initiated_close_handshake() {
    let server = server::start(test_config(1), |_| Closer).unwrap();
    let mut c = RawClient::connect(server.local_addr());
    c.send_frame(true, opcode::TEXT, b"bye");
    let close = c.read_frame().unwrap();
    assert_eq!(close.close_code(), Some(4000));
    assert_eq!(&close.payload[2..], b"as you wish");
    c.send_frame(true, opcode::CLOSE, &4000u16.to_be_bytes());
    assert!(c.is_closed_by_server());
    assert!(eventually(Duration::from_secs(5), || server.connections() == 0));
    assert_eq!(server.stats()[0].closed_by(CloseReason::Normal), 1);
}

#[test]
fn five_thousand_concurrent_connections_on_two_loops() {
    let server = start_echo(test_config(2));
    let addr = server.local_addr();
    let mut clients: Vec<Tung> = (0..5000).map(|_| tung_connect(addr)).collect();
    assert!(eventually(Duration::from_secs(10), || server.connections() == 5000));
    let per_loop: Vec<u64> = server.stats().iter().map(|s| s.connections.get()).collect();
    assert!(per_loop.iter().all(|&n| n > 500), "SO_REUSEPORT spreads connections: {per_loop:?}");
    for (i, ws) in clients.iter_mut().enumerate() {
        ws.send(TMsg::text(format!("hello {i}"))).unwrap();
    }
    for (i, ws) in clients.iter_mut().enumerate() {
        assert_eq!(ws.read().unwrap(), TMsg::text(format!("hello {i}")));
    }
    for ws in clients.iter_mut() {
        ws.close(None).unwrap();
    }
    for ws in clients.iter_mut() {
        loop {
            match ws.read() {
                Ok(_) => continue,
                Err(tungstenite::Error::ConnectionClosed) => break,
                Err(e) => panic!("unexpected {e}"),
            }
        }
    }
    drop(clients);
    assert!(eventually(Duration::from_secs(10), || server.connections() == 0));
    let normal: u64 = server.stats().iter().map(|s| s.closed_by(CloseReason::Normal)).sum();
    let received: u64 = server.stats().iter().map(|s| s.messages_received.get()).sum();
    assert_eq!((normal, received), (5000, 5000));
}

#[test]
fn a_protocol_violation_closes_only_that_connection() {
    let server = start_echo(test_config(2));
    let addr = server.local_addr();
    let mut good: Vec<Tung> = (0..20).map(|_| tung_connect(addr)).collect();
    let mut bad = RawClient::connect(addr);
    // An unmasked frame: 1002.
    bad.send_raw(&[0x81, 0x02, b'h', b'i']);
    let close = bad.read_frame().unwrap();
    assert_eq!(close.close_code(), Some(1002));
    assert!(bad.is_closed_by_server());
    for (i, ws) in good.iter_mut().enumerate() {
        ws.send(TMsg::text(format!("still here {i}"))).unwrap();
        assert_eq!(ws.read().unwrap(), TMsg::text(format!("still here {i}")));
    }
    // The server lingers until our EOF, then counts the close.
    drop(bad);
    assert!(eventually(Duration::from_secs(5), || {
        server.stats().iter().map(|s| s.closed_by(CloseReason::ProtocolError)).sum::<u64>() == 1
    }));
}

#[test]
fn refused_handshakes_get_their_status() {
    let server = start_echo(test_config(1));
    let addr = server.local_addr();
    let mut c = RawClient::connect_tcp(addr);
    c.send_raw(b"GET /nope HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n");
    assert!(c.read_to_end().starts_with("HTTP/1.1 404 Not Found\r\n"));
    drop(c);
    let mut c = RawClient::connect_tcp(addr);
    c.send_raw(b"\x16\x03\x01 garbage that is not HTTP\r\n\r\n");
    assert!(c.read_to_end().starts_with("HTTP/1.1 400 Bad Request\r\n"));
    // The server lingers after a refusal until the client's EOF.
    drop(c);
    assert!(eventually(Duration::from_secs(5), || server.connections() == 0));
    assert_eq!(server.stats()[0].handshake_failures_by("path"), 1);
    assert_eq!(server.stats()[0].handshake_failures_by("malformed"), 1);
}

#[test]
fn graceful_shutdown_sends_1001() {
    let server = start_echo(test_config(2));
    let addr = server.local_addr();
    let mut clients: Vec<RawClient> = (0..50).map(|_| RawClient::connect(addr)).collect();
    assert!(eventually(Duration::from_secs(5), || server.connections() == 50));
    server.shutdown();
    for c in clients.iter_mut() {
        let close = c.read_frame().unwrap();
        assert_eq!(close.close_code(), Some(1001));
        c.send_frame(true, opcode::CLOSE, &1001u16.to_be_bytes());
    }
    server.join().unwrap();
}

#[test]
fn the_app_flag_picks_the_builtin_application() {
    let ping = r#"{"type":"ping","payload":"p1"}"#;
    for (app, pong) in [("echo", true), ("plain-echo", false)] {
        let (mut child, addr) = spawn_binary(&["--app", app], None);
        let mut ws = tung_connect(addr);
        ws.send(TMsg::text(ping)).unwrap();
        let reply = ws.read().unwrap().into_text().unwrap();
        if pong {
            assert!(reply.starts_with(r#"{"type":"pong","payload":"p1","ts":"#), "{app}: {reply}");
        } else {
            assert_eq!(reply.as_str(), ping, "{app}");
        }
        ws.send(TMsg::binary(vec![1, 2, 3])).unwrap();
        assert_eq!(ws.read().unwrap(), TMsg::binary(vec![1, 2, 3]), "{app}");
        child.kill().unwrap();
        child.wait().unwrap();
    }
}
