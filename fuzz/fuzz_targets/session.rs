//! `Session::decode` after a valid upgrade, fed arbitrary frames in
//! arbitrary pieces. Never panics (its debug assertions are on); the pieces
//! change nothing: the events, the bytes written back and the error are the
//! same as when everything arrives in one read. So fail-fast UTF-8 fails
//! with the same code whole or in pieces, and no byte is unmasked twice.
#![no_main]

use libfuzzer_sys::fuzz_target;
use wsloop::ws::{Config, Limits, Session};
use wsloop_fuzz::{feed, Plan};

const REQUEST: &[u8] = b"GET /ws HTTP/1.1\r\nHost: h\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n";

fuzz_target!(|data: &[u8]| {
    let plan = Plan::new(data);
    // Small limits, so the size rules are reachable.
    let cfg = Config { limits: Limits { max_frame: 4096, max_message: 8192 }, ..Config::default() };
    let mut pieces = vec![REQUEST];
    pieces.extend(plan.pieces());
    let split = feed(Session::server(), pieces.iter().copied(), &cfg);
    let whole_input = [REQUEST, plan.body].concat();
    let whole = feed(Session::server(), [&whole_input[..]], &cfg);
    assert_eq!(split, whole);
});
