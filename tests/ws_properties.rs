//! Property tests of the sans-io protocol layer through its public API:
//! whatever a client encodes, the server decodes to the same messages, in
//! any split; arbitrary bytes never panic the decoder or the handshake.

use proptest::prelude::*;
use wsloop::ws::frame::{opcode, write_frame};
use wsloop::ws::handshake::{parse_request, HandshakeConfig};
use wsloop::ws::{Config, Decoded, Event, Session};

/// A message as the test describes it, and how it is cut into fragments.
#[derive(Debug, Clone)]
enum Msg {
    Text(String, Vec<usize>),
    Binary(Vec<u8>, Vec<usize>),
    Ping(Vec<u8>),
}

fn msg() -> impl Strategy<Value = Msg> {
    let cuts = prop::collection::vec(0usize..64, 0..4);
    prop_oneof![
        (".{0,40}", cuts.clone()).prop_map(|(s, c)| Msg::Text(s, c)),
        (prop::collection::vec(any::<u8>(), 0..300), cuts).prop_map(|(b, c)| Msg::Binary(b, c)),
        prop::collection::vec(any::<u8>(), 0..=125).prop_map(Msg::Ping),
    ]
}

/// Encodes `payload` as a message of `op`, fragmented at `cuts` (byte
/// offsets, so text may be cut inside a code point).
fn encode(out: &mut Vec<u8>, op: u8, payload: &[u8], cuts: &[usize]) {
    let mut points: Vec<usize> = cuts.iter().map(|c| c % (payload.len() + 1)).collect();
    points.sort_unstable();
    points.dedup();
    let mut start = 0;
    let mut first = true;
    for p in points.into_iter().chain(std::iter::once(payload.len())) {
        if p < start || (p == start && p != payload.len()) {
            continue;
        }
        let fin = p == payload.len();
        let frame_op = if first { op } else { opcode::CONTINUATION };
        write_frame(out, fin, frame_op, &payload[start..p], Some(rand_mask(start)));
        first = false;
        start = p;
        if fin {
            break;
        }
    }
}

fn rand_mask(seed: usize) -> [u8; 4] {
    ((seed as u32).wrapping_mul(2_654_435_761) ^ 0xa5a5_5a5a).to_le_bytes()
}

#[derive(Debug, PartialEq)]
enum Got {
    Text(String),
    Binary(Vec<u8>),
    Ping(Vec<u8>),
}

fn decode_all(stream: &[u8], step: usize) -> Vec<Got> {
    let cfg = Config::default();
    let mut server = wsloop::ws::Session::server();
    // Open the server session with a real handshake first.
    let mut pending = b"GET / HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: upgrade\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Key: AAAAAAAAAAAAAAAAAAAAAA==\r\n\r\n".to_vec();
    let mut assembly = Vec::new();
    let mut out = Vec::new();
    let mut got = Vec::new();
    let mut feed = |pending: &mut Vec<u8>, got: &mut Vec<Got>| loop {
        let Decoded { consumed, event, .. } =
            server.decode(pending, &mut assembly, &mut out, &cfg).expect("valid stream");
        if let Some(Event::Upgrade(req)) = &event {
            server.accept(&mut out, req);
        }
        let e = event.map(|e| match e {
            Event::Text(t) => Some(Got::Text(t.to_string())),
            Event::Binary(b) => Some(Got::Binary(b.to_vec())),
            Event::Ping(p) => Some(Got::Ping(p.to_vec())),
            _ => None,
        });
        pending.drain(..consumed);
        match e {
            None => break,
            Some(Some(g)) => got.push(g),
            Some(None) => {}
        }
    };
    feed(&mut pending, &mut got);
    for piece in stream.chunks(step.max(1)) {
        pending.extend_from_slice(piece);
        feed(&mut pending, &mut got);
    }
    assert!(pending.is_empty());
    got
}

proptest! {
    #[test]
    fn encoded_messages_decode_to_the_same(msgs in prop::collection::vec(msg(), 0..12), step in 1usize..200) {
        let mut stream = Vec::new();
        let mut want = Vec::new();
        for m in &msgs {
            match m {
                Msg::Text(s, cuts) => { encode(&mut stream, opcode::TEXT, s.as_bytes(), cuts); want.push(Got::Text(s.clone())); }
                Msg::Binary(b, cuts) => { encode(&mut stream, opcode::BINARY, b, cuts); want.push(Got::Binary(b.clone())); }
                Msg::Ping(p) => { write_frame(&mut stream, true, opcode::PING, p, Some([1, 2, 3, 4])); want.push(Got::Ping(p.clone())); }
            }
        }
        prop_assert_eq!(decode_all(&stream, step), want);
    }

    #[test]
    fn arbitrary_bytes_never_panic_the_decoder(bytes in prop::collection::vec(any::<u8>(), 0..600), step in 1usize..64) {
        let cfg = Config { limits: wsloop::ws::Limits { max_frame: 1000, max_message: 2000 }, ..Config::default() };
        for start_open in [false, true] {
            let mut s = if start_open { Session::client() } else { Session::server() };
            let mut pending = Vec::new();
            let mut assembly = Vec::new();
            let mut out = Vec::new();
            'outer: for piece in bytes.chunks(step) {
                pending.extend_from_slice(piece);
                loop {
                    match s.decode(&mut pending, &mut assembly, &mut out, &cfg) {
                        Ok(Decoded { consumed, event, .. }) => {
                            if let Some(Event::Upgrade(req)) = &event {
                                s.accept(&mut out, req);
                            }
                            let done = event.is_none();
                            pending.drain(..consumed);
                            if done { break; }
                        }
                        Err(_) => break 'outer,
                    }
                }
            }
        }
    }

    #[test]
    fn arbitrary_bytes_never_panic_the_handshake(bytes in prop::collection::vec(any::<u8>(), 0..2000)) {
        let cfg = HandshakeConfig::default();
        let mut scanned = 0;
        for end in (0..=bytes.len()).step_by(97) {
            if parse_request(&bytes[..end], &mut scanned, &cfg).is_err() { break; }
        }
    }

    #[test]
    fn request_lines_with_junk_never_panic(junk in "[ -~\r\n]{0,300}") {
        let raw = format!("GET /ws HTTP/1.1\r\nHost: h\r\n{junk}\r\n\r\n");
        let mut scanned = 0;
        let _ = parse_request(raw.as_bytes(), &mut scanned, &HandshakeConfig::default());
    }
}
