//! `Session::decode_inflating` after an upgrade that negotiated
//! permessage-deflate, fed arbitrary frames (RSV1 set or not, compressed
//! payloads valid or not) in arbitrary pieces. Never panics, never inflates
//! past the message limit, and the pieces change nothing: same events, same
//! replies, same error as in one read.
#![no_main]

use libfuzzer_sys::fuzz_target;
use wsloop::ws::deflate::Inflater;
use wsloop::ws::extension::DeflatePolicy;
use wsloop::ws::{Config, Limits, Session};
use wsloop_fuzz::{feed_with, Owned, Plan};

const REQUEST: &[u8] = b"GET /ws HTTP/1.1\r\nHost: h\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Extensions: permessage-deflate\r\n\r\n";

fuzz_target!(|data: &[u8]| {
    let plan = Plan::new(data);
    // Small limits, so a little input can be a bomb.
    let mut cfg = Config { limits: Limits { max_frame: 4096, max_message: 16384 }, ..Config::default() };
    cfg.handshake.deflate = Some(DeflatePolicy::shared());
    let mut pieces = vec![REQUEST];
    pieces.extend(plan.pieces());
    let split = feed_with(Session::server(), pieces.iter().copied(), &cfg, Some(Inflater::new(15, false)));
    let whole_input = [REQUEST, plan.body].concat();
    let whole = feed_with(Session::server(), [&whole_input[..]], &cfg, Some(Inflater::new(15, false)));
    assert_eq!(split, whole);
    for event in &split.events {
        if let Owned::Text(t) = event {
            assert!(t.len() <= 16384);
        }
        if let Owned::Binary(b) = event {
            assert!(b.len() <= 16384);
        }
    }
});
