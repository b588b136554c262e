//! The per-connection message rate (`--rate-messages`, `--rate-bytes`,
//! `--rate-burst`), through the real binary on one loop, so that the
//! flooder and its neighbours share it: a connection that floods gets one
//! `rate_limited` error, its messages past the burst reach nobody, and it
//! is closed 1008 "rate limit" once it owes a second burst, while the
//! neighbours on its loop have every message answered; a sender under the
//! rate never hears of it, and one that waits is served again. Pings count
//! like messages. Run on each I/O driver by `WSLOOP_IO` (the spawned server
//! inherits it).

mod common;

use std::net::SocketAddr;
use std::time::Duration;

use common::*;
use serde_json::Value;
use tungstenite::Message as TMsg;
use wsloop::ws::frame::{opcode, write_frame};

/// What a raw client read after flooding: echoes (or pongs) of its own
/// messages, the error replies, and how the server ended it.
#[derive(Debug, Default)]
struct Flooded {
    answered: usize,
    errors: Vec<Value>,
    answered_after_error: usize,
    close: Option<(u16, String)>,
    eof: bool,
}

/// Sends every frame in one write, then reads until the server closes.
fn flood(addr: SocketAddr, op: u8, payloads: &[Vec<u8>]) -> Flooded {
    let mut client = RawClient::connect(addr);
    let mut bytes = Vec::new();
    for p in payloads {
        write_frame(&mut bytes, true, op, p, Some([1, 2, 3, 4]));
    }
    client.send_raw(&bytes);
    let mut seen = Flooded::default();
    loop {
        let frame = match client.read_frame() {
            Ok(frame) => frame,
            Err(e) => {
                assert!(seen.close.is_some(), "the server went away without a close frame: {e} ({seen:?})");
                seen.eof = true;
                return seen;
            }
        };
        let text = (frame.opcode == opcode::TEXT).then(|| String::from_utf8(frame.payload.clone()).unwrap());
        match frame.opcode {
            opcode::TEXT if text.as_deref().is_some_and(|t| t.starts_with('{')) => {
                seen.errors.push(serde_json::from_str(text.as_deref().unwrap()).unwrap());
            }
            opcode::CLOSE => {
                let reason = String::from_utf8_lossy(&frame.payload[2..]).into_owned();
                seen.close = Some((frame.close_code().unwrap(), reason));
                // Answer it, as a client does; the server then ends TCP.
                client.send_frame(true, opcode::CLOSE, &frame.payload[..2]);
            }
            _ if seen.errors.is_empty() => seen.answered += 1,
            _ => seen.answered_after_error += 1,
        }
    }
}

/// `wsloop_rate_limited_total` by action: warned, dropped, closed; and
/// `wsloop_connections_closed_total{reason="rate_limited"}`.
fn counted(metrics: SocketAddr) -> [f64; 4] {
    let (status, body) = http_get(metrics, "/metrics");
    assert_eq!(status, 200);
    let series = |s: &str| sample(&body, s).unwrap_or_else(|| panic!("{s} not exposed"));
    [
        series("wsloop_rate_limited_total{action=\"warned\"}"),
        series("wsloop_rate_limited_total{action=\"dropped\"}"),
        series("wsloop_rate_limited_total{action=\"closed\"}"),
        series("wsloop_connections_closed_total{reason=\"rate_limited\"}"),
    ]
}

/// The one error a flooder gets, checked.
fn assert_rate_limited_error(seen: &Flooded) {
    assert_eq!(seen.errors.len(), 1, "one error, then silence: {seen:?}");
    let error = &seen.errors[0];
    assert_eq!((error["type"].as_str(), error["error"].as_str()), (Some("error"), Some("rate_limited")), "{error}");
    assert!(error["message"].as_str().is_some_and(|m| !m.is_empty()), "{error}");
    assert_eq!(seen.answered_after_error, 0, "nothing past the error is handled: {seen:?}");
    assert_eq!(seen.close.as_ref().map(|(c, r)| (*c, r.as_str())), Some((1008, "rate limit")), "{seen:?}");
    assert!(seen.eof, "{seen:?}");
}

#[test]
fn a_flooding_connection_is_warned_then_closed_while_its_neighbours_keep_echoing() {
    let args = ["--workers", "1", "--rate-messages", "100"];
    let (_server, addr, metrics) = spawn_binary_with_metrics(&args, None);
    assert_eq!(counted(metrics), [0.0; 4]);
    // 20 neighbours on the same loop, each well under 100 messages/s,
    // every message answered or `finish` fails.
    let neighbours = Background::start(addr, 20);
    std::thread::sleep(Duration::from_millis(300));
    let payloads: Vec<Vec<u8>> = (0..1000).map(|i| format!("flood {i}").into_bytes()).collect();
    let seen = flood(addr, opcode::TEXT, &payloads);
    // A burst (1 s of the rate: 100) is served; whatever refilled while the
    // flood was read adds a little, never another burst.
    assert!((100..200).contains(&seen.answered), "{seen:?}");
    assert_rate_limited_error(&seen);
    std::thread::sleep(Duration::from_millis(300));
    neighbours.finish();
    assert!(eventually(Duration::from_secs(5), || counted(metrics)[3] == 1.0), "{:?}", counted(metrics));
    let [warned, dropped, closed, closes] = counted(metrics);
    assert_eq!((warned, closed, closes), (1.0, 1.0, 1.0));
    // It was closed when it owed a second burst: about 100 dropped, and
    // the rest of the 1000 never handled.
    assert!((90.0..=200.0).contains(&dropped), "{dropped}");
}

#[test]
fn a_sender_under_the_rate_never_hears_of_it_and_one_that_waits_is_served_again() {
    let args = ["--workers", "1", "--rate-messages", "20", "--rate-burst", "1s"];
    let (_server, addr, metrics) = spawn_binary_with_metrics(&args, None);
    let mut ws = tung_connect(addr);
    let echo = |ws: &mut Tung, text: &str| {
        ws.send(TMsg::text(text)).unwrap();
        assert_eq!(ws.read().unwrap(), TMsg::text(text));
    };
    // 30 messages at 10/s: more than a burst in all, never over the rate.
    for i in 0..30 {
        echo(&mut ws, &format!("paced {i}"));
        std::thread::sleep(Duration::from_millis(100));
    }
    for round in 0..2 {
        // Full again: 25 at once are a burst of 20, then the error, then
        // silence for the rest.
        std::thread::sleep(Duration::from_millis(1100));
        for i in 0..25 {
            ws.write(TMsg::text(format!("burst {round} {i}"))).unwrap();
        }
        ws.flush().unwrap();
        let mut answered = 0;
        let error = loop {
            match ws.read().unwrap() {
                TMsg::Text(t) if t.starts_with('{') => break serde_json::from_str::<Value>(&t).unwrap(),
                TMsg::Text(t) => {
                    assert_eq!(t.as_str(), format!("burst {round} {answered}"));
                    answered += 1;
                }
                other => panic!("unexpected {other:?}"),
            }
        };
        assert!((20..25).contains(&answered), "round {round}: {answered}");
        assert_eq!(error["error"], "rate_limited", "{error}");
        // The debt (at most 5 dropped) is paid within a second: served
        // again, and the next message answered is this one, not one of the
        // dropped.
        std::thread::sleep(Duration::from_millis(1500));
        echo(&mut ws, &format!("after round {round}"));
    }
    let [warned, dropped, closed, closes] = counted(metrics);
    assert_eq!((warned, closed, closes), (2.0, 0.0, 0.0), "warned once per episode, never closed");
    assert!((2.0..=10.0).contains(&dropped), "{dropped}");
}

#[test]
fn a_byte_rate_limits_big_messages() {
    // 64 KiB a second, a burst of 1 s; a message may be as large as that.
    let args = ["--workers", "1", "--rate-bytes", "64KiB", "--max-message-size", "64KiB"];
    let (_server, addr, metrics) = spawn_binary_with_metrics(&args, None);
    let neighbours = Background::start(addr, 5);
    let payloads = vec![vec![7u8; 16 * 1024]; 12];
    let seen = flood(addr, opcode::BINARY, &payloads);
    // 4 x 16 KiB fill the burst; the 5th is the error, the 9th would owe
    // more than a second burst: closed. (A few bytes refill meanwhile.)
    assert!((4..=5).contains(&seen.answered), "{seen:?}");
    assert_rate_limited_error(&seen);
    neighbours.finish();
    assert!(eventually(Duration::from_secs(5), || counted(metrics)[3] == 1.0), "{:?}", counted(metrics));
    let [warned, dropped, closed, _] = counted(metrics);
    assert_eq!((warned, closed), (1.0, 1.0));
    assert!((3.0..=4.0).contains(&dropped), "{dropped}");
}

#[test]
fn pings_count_and_one_over_the_rate_gets_no_pong() {
    let args = ["--workers", "1", "--rate-messages", "50"];
    let (_server, addr, metrics) = spawn_binary_with_metrics(&args, None);
    let payloads: Vec<Vec<u8>> = (0..300).map(|i| format!("{i}").into_bytes()).collect();
    let seen = flood(addr, opcode::PING, &payloads);
    assert!((50..100).contains(&seen.answered), "pongs: {seen:?}");
    assert_rate_limited_error(&seen);
    assert!(eventually(Duration::from_secs(5), || counted(metrics)[3] == 1.0), "{:?}", counted(metrics));
}

#[test]
fn bad_rate_flags_are_one_line_naming_the_flag() {
    let cases: [(&[&str], &[&str]); 4] = [
        (&["--rate-messages", "lots"], &["--rate-messages"]),
        (&["--rate-bytes", "1 parsec"], &["--rate-bytes"]),
        (&["--rate-bytes", "1MiB"], &["--rate-bytes", "--max-message-size"]),
        (&["--rate-messages", "1", "--rate-burst", "500ms"], &["--rate-burst", "--rate-messages"]),
    ];
    for (args, named) in cases {
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_wsloop"))
            .args(["serve", "--addr", "127.0.0.1:0", "--metrics-addr", "off"])
            .args(args)
            .output()
            .unwrap();
        assert!(!out.status.success(), "{args:?} started");
        let stderr = String::from_utf8_lossy(&out.stderr);
        let named_all = |l: &&str| named.iter().all(|flag| l.contains(flag));
        assert!(stderr.lines().any(|l| named_all(&l)), "{args:?}: no one line names {named:?}: {stderr}");
    }
}
