//! permessage-deflate through the binary: negotiation in each mode, the
//! threshold, compressed echoes read back with an independent inflate
//! (zlib-rs, fresh or with context as the terms say), a room publish
//! compressed once for every member, the bomb closed 1009 with the server's
//! memory bounded, and bad input closed with the right code without
//! touching the other connections.

mod common;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

use common::{http_get, rss_of, sample, spawn_binary_with_metrics};
use wsloop::ws::client::{generate_key, parse_response_terms, write_request_offering};
use wsloop::ws::deflate::{Deflater, Inflater};
use wsloop::ws::extension::{Deflate, CLIENT_OFFER};
use wsloop::ws::frame::{opcode, write_frame, FrameHead, Role};

/// A frame as the server sent it, RSV1 kept.
#[derive(Debug)]
struct Frame {
    compressed: bool,
    opcode: u8,
    payload: Vec<u8>,
}

/// A client that offers permessage-deflate (or any extension header) and
/// reads frames without interpreting RSV1.
struct Client {
    stream: TcpStream,
    buf: Vec<u8>,
    reply: String,
    terms: Option<Deflate>,
}

impl Client {
    fn connect(addr: SocketAddr, offer: Option<&str>) -> Client {
        let mut stream = TcpStream::connect(addr).unwrap();
        stream.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        stream.set_nodelay(true).unwrap();
        let key = generate_key();
        let mut req = Vec::new();
        write_request_offering(&mut req, &addr.to_string(), "/ws", &key, offer);
        stream.write_all(&req).unwrap();
        let mut buf = Vec::new();
        let accepted = loop {
            let mut chunk = [0u8; 4096];
            let n = stream.read(&mut chunk).unwrap();
            assert!(n > 0, "closed during the handshake");
            buf.extend_from_slice(&chunk[..n]);
            if let Some(a) = parse_response_terms(&buf, &key, offer.is_some()).expect("a valid 101") {
                break a;
            }
        };
        let reply = String::from_utf8_lossy(&buf[..accepted.len]).into_owned();
        buf.drain(..accepted.len);
        Client { stream, buf, reply, terms: accepted.deflate }
    }

    fn send_frame(&mut self, compressed: bool, op: u8, payload: &[u8]) {
        let mut v = Vec::new();
        write_frame(&mut v, true, op, payload, Some([1, 2, 3, 4]));
        if compressed {
            v[0] |= 0x40;
        }
        self.stream.write_all(&v).unwrap();
    }

    /// Sends `text` compressed with a fresh deflater (no context takeover).
    fn send_compressed(&mut self, op: u8, message: &[u8]) {
        let mut compressed = Vec::new();
        Deflater::new(15, 8, 6, false).compress(message, &mut compressed);
        self.send_frame(true, op, &compressed);
    }

    fn read_frame(&mut self) -> std::io::Result<Frame> {
        loop {
            if let Some(h) = FrameHead::decode(&self.buf).expect("server frame header") {
                h.check_with(Role::Client, u64::MAX, 4).expect("valid server frame");
                if self.buf.len() >= h.frame_len() {
                    let payload = self.buf[h.header_len as usize..h.frame_len()].to_vec();
                    self.buf.drain(..h.frame_len());
                    return Ok(Frame { compressed: h.rsv == 4, opcode: h.opcode, payload });
                }
            }
            let mut chunk = [0u8; 65536];
            let n = self.stream.read(&mut chunk)?;
            if n == 0 {
                return Err(std::io::ErrorKind::UnexpectedEof.into());
            }
            self.buf.extend_from_slice(&chunk[..n]);
        }
    }

    /// The next data frame, inflated with `inflater` when RSV1 is set.
    fn read_message(&mut self, inflater: &mut Inflater) -> (Frame, Vec<u8>) {
        let frame = self.read_frame().expect("a message");
        let message = if frame.compressed {
            let mut out = Vec::new();
            inflater.decompress(&frame.payload, &mut out, 1 << 30).expect("inflates");
            out
        } else {
            frame.payload.clone()
        };
        (frame, message)
    }

    fn close_code(&mut self) -> Option<u16> {
        loop {
            match self.read_frame() {
                Ok(f) if f.opcode == opcode::CLOSE => {
                    return f.payload.get(..2).map(|c| u16::from_be_bytes([c[0], c[1]]));
                }
                Ok(_) => continue,
                Err(_) => return None,
            }
        }
    }
}

/// JSON-ish chat text of about `len` bytes.
fn chat(len: usize) -> String {
    let words = ["hello", "team", "the", "release", "is", "ready", "for", "review", "today", "thanks"];
    let mut s = String::from("{\"type\":\"message\",\"text\":\"");
    let mut i = 7usize;
    while s.len() + 2 < len {
        i = i.wrapping_mul(31).wrapping_add(11);
        s.push_str(words[i % words.len()]);
        s.push(' ');
    }
    s.truncate(len - 2);
    s.push_str("\"}");
    s
}

#[test]
fn shared_mode_negotiates_without_context_takeover_and_echoes_compressed() {
    let (_server, addr, metrics) = spawn_binary_with_metrics(&["--compression", "shared"], None);
    let mut c = Client::connect(addr, Some(CLIENT_OFFER));
    assert!(
        c.reply.contains(
            "Sec-WebSocket-Extensions: permessage-deflate; server_no_context_takeover; client_no_context_takeover\r\n"
        ),
        "{}",
        c.reply
    );
    let terms = c.terms.unwrap();
    assert!(!terms.server_takeover && !terms.client_takeover);

    let mut inflater = Inflater::new(15, false);
    let big = chat(1500);
    // Compressed text in, compressed text back.
    c.send_compressed(opcode::TEXT, big.as_bytes());
    let (frame, message) = c.read_message(&mut inflater);
    assert!(frame.compressed && frame.opcode == opcode::TEXT);
    assert_eq!(message, big.as_bytes());
    assert!(frame.payload.len() < big.len() / 2, "{} of {}", frame.payload.len(), big.len());
    // Plain binary in (RSV1 is per message), compressed binary back.
    c.send_frame(false, opcode::BINARY, big.as_bytes());
    let (frame, message) = c.read_message(&mut inflater);
    assert!(frame.compressed && frame.opcode == opcode::BINARY);
    assert_eq!(message, big.as_bytes());
    // Under the threshold (128 by default): plain.
    c.send_compressed(opcode::TEXT, b"short message");
    let (frame, message) = c.read_message(&mut inflater);
    assert!(!frame.compressed);
    assert_eq!(message, b"short message");
    // A fragmented compressed message: RSV1 on the first frame only.
    let mut compressed = Vec::new();
    Deflater::new(15, 8, 6, false).compress(big.as_bytes(), &mut compressed);
    let (first, rest) = compressed.split_at(compressed.len() / 3);
    let mut v = Vec::new();
    write_frame(&mut v, false, opcode::TEXT, first, Some([5, 6, 7, 8]));
    v[0] |= 0x40;
    write_frame(&mut v, true, opcode::PING, b"between", Some([5, 6, 7, 8]));
    write_frame(&mut v, true, opcode::CONTINUATION, rest, Some([5, 6, 7, 8]));
    c.stream.write_all(&v).unwrap();
    assert_eq!(c.read_frame().unwrap().opcode, opcode::PONG);
    let (_, message) = c.read_message(&mut inflater);
    assert_eq!(message, big.as_bytes());

    // Counters are published at the end of the loop pass that wrote the echo.
    let scrape = || http_get(metrics, "/metrics").1;
    assert!(common::eventually(Duration::from_secs(5), || sample(&scrape(), "wsloop_compressed_messages_total")
        == Some(3.0)));
    let m = scrape();
    assert_eq!(sample(&m, "wsloop_compression_plain_bytes_total"), Some(3.0 * 1500.0));
    assert!(sample(&m, "wsloop_compression_deflated_bytes_total").unwrap() < 1500.0 * 3.0 / 2.0);
    assert_eq!(sample(&m, "wsloop_compression_dedicated_connections"), Some(0.0));
}

#[test]
fn off_declines_and_bad_offers_are_declined_not_refused() {
    let (_off, addr, _) = spawn_binary_with_metrics(&[], None);
    let mut c = Client::connect(addr, Some(CLIENT_OFFER));
    assert!(!c.reply.to_ascii_lowercase().contains("sec-websocket-extensions"), "{}", c.reply);
    // Without the extension, RSV1 is a protocol error: 1002.
    c.send_compressed(opcode::TEXT, chat(500).as_bytes());
    assert_eq!(c.close_code(), Some(1002));

    let (_shared, addr, _) = spawn_binary_with_metrics(&["--compression", "shared"], None);
    for bad in [
        "permessage-deflate; server_max_window_bits=16",
        "permessage-deflate; server_max_window_bits=8",
        "permessage-deflate; client_no_context_takeover; client_no_context_takeover",
        "permessage-deflate; no_such_parameter",
    ] {
        let mut c = Client::connect(addr, Some(bad));
        assert!(c.terms.is_none(), "{bad}: {}", c.reply);
        c.send_frame(false, opcode::TEXT, b"still works");
        assert_eq!(c.read_frame().unwrap().payload, b"still works");
    }
    // A later acceptable offer in the same header is taken.
    let c = Client::connect(addr, Some("permessage-deflate; foo, permessage-deflate; server_max_window_bits=10"));
    assert_eq!(c.terms.map(|t| t.server_window), Some(10));
}

#[test]
fn dedicated_mode_keeps_each_connections_context_and_frees_it_on_close() {
    let (_server, addr, metrics) = spawn_binary_with_metrics(&["--compression", "dedicated:13"], None);
    let mut c = Client::connect(addr, Some(CLIENT_OFFER));
    assert!(
        c.reply.contains("permessage-deflate; server_max_window_bits=13; client_max_window_bits=13"),
        "{}",
        c.reply
    );
    let terms = c.terms.unwrap();
    assert!(terms.server_takeover && terms.client_takeover);
    // The client keeps its window too: its second message refers back.
    let mut deflater = Deflater::new(13, 8, 6, true);
    let mut inflater = Inflater::new(13, true);
    let text = chat(900);
    let mut sizes = Vec::new();
    for _ in 0..3 {
        let mut compressed = Vec::new();
        deflater.compress(text.as_bytes(), &mut compressed);
        c.send_frame(true, opcode::TEXT, &compressed);
        let (frame, message) = c.read_message(&mut inflater);
        assert!(frame.compressed);
        assert_eq!(message, text.as_bytes());
        sizes.push(frame.payload.len());
    }
    // With takeover, a repeated message is mostly back-references.
    assert!(sizes[1] < sizes[0] / 3 && sizes[2] < sizes[0] / 3, "{sizes:?}");
    let gauge = |m: &str| sample(m, "wsloop_compression_dedicated_connections");
    assert_eq!(gauge(&http_get(metrics, "/metrics").1), Some(1.0));
    drop(c);
    assert!(common::eventually(Duration::from_secs(5), || gauge(&http_get(metrics, "/metrics").1) == Some(0.0)));
}

#[test]
fn a_room_publish_is_compressed_once_and_plain_members_get_it_plain() {
    let (_server, addr, metrics) = spawn_binary_with_metrics(&["--compression", "shared"], None);
    let mut members: Vec<Client> =
        (0..6).map(|i| Client::connect(addr, (i % 3 != 2).then_some(CLIENT_OFFER))).collect();
    for m in &mut members {
        m.send_frame(false, opcode::TEXT, br#"{"type":"join","room":"r"}"#);
        let (_, ack) = m.read_message(&mut Inflater::new(15, false));
        assert_eq!(ack, br#"{"type":"joined","room":"r"}"#);
    }
    let data = chat(1200).replace('"', "'");
    let publish = format!(r#"{{"type":"publish","room":"r","echo":false,"data":"{data}"}}"#);
    members[0].send_compressed(opcode::TEXT, publish.as_bytes());
    let mut compressed_frames = Vec::new();
    for (i, m) in members.iter_mut().enumerate().skip(1) {
        let (frame, message) = m.read_message(&mut Inflater::new(15, false));
        let v: serde_json::Value = serde_json::from_slice(&message).unwrap();
        assert_eq!(v["data"], data.as_str());
        assert_eq!(frame.compressed, m.terms.is_some(), "member {i}");
        if frame.compressed {
            compressed_frames.push(frame.payload);
        }
    }
    // The same bytes for every compressing member, on both loops.
    assert_eq!(compressed_frames.len(), 3);
    assert!(compressed_frames.windows(2).all(|w| w[0] == w[1]));
    // Compressed once (the first loop to need it; the other loop reuses
    // it), never once per member. Counted at the end of the loop's pass.
    std::thread::sleep(Duration::from_millis(200));
    let m = http_get(metrics, "/metrics").1;
    assert_eq!(sample(&m, "wsloop_compressed_messages_total"), Some(1.0));
}

#[test]
fn a_bomb_is_closed_1009_and_the_server_stays_small() {
    let (server, addr, _) = spawn_binary_with_metrics(&["--compression", "shared", "--max-message-size", "1MiB"], None);
    let mut bystander = Client::connect(addr, Some(CLIENT_OFFER));
    let mut bomb = Vec::new();
    Deflater::new(15, 8, 9, false).compress(&vec![b'a'; 64 << 20], &mut bomb);
    assert!(bomb.len() < 128 * 1024, "{} bytes", bomb.len());
    let before = rss_of(server.id());
    for _ in 0..8 {
        let mut attacker = Client::connect(addr, Some(CLIENT_OFFER));
        attacker.send_frame(true, opcode::TEXT, &bomb);
        assert_eq!(attacker.close_code(), Some(1009));
    }
    // Exactly at the limit is still a message.
    let mut fits = Client::connect(addr, Some(CLIENT_OFFER));
    let at_limit = vec![b'b'; 1 << 20];
    fits.send_compressed(opcode::BINARY, &at_limit);
    let (_, echoed) = fits.read_message(&mut Inflater::new(15, false));
    assert_eq!(echoed.len(), at_limit.len());
    let grown = rss_of(server.id()).saturating_sub(before);
    assert!(grown < 16 << 20, "RSS grew {grown} bytes for 8 bombs of 64 MiB each");
    // Data that is not DEFLATE: 1007. The bystander never noticed.
    let mut garbage = Client::connect(addr, Some(CLIENT_OFFER));
    garbage.send_frame(true, opcode::BINARY, &[0xff; 32]);
    assert_eq!(garbage.close_code(), Some(1007));
    bystander.send_frame(false, opcode::TEXT, b"still here");
    assert_eq!(bystander.read_frame().unwrap().payload, b"still here");
}

#[test]
fn past_the_dedicated_cap_new_connections_get_the_shared_terms() {
    // Two loops, a cap of 2: one connection with a context of its own per
    // loop, so of three connections at least one gets the shared terms.
    let (_server, addr, _) =
        spawn_binary_with_metrics(&["--compression", "dedicated:10", "--compression-max-dedicated", "2"], None);
    let takeover = |c: &Client| c.terms.is_some_and(|t| t.server_takeover && t.client_takeover);
    let mut clients: Vec<Client> = (0..3).map(|_| Client::connect(addr, Some(CLIENT_OFFER))).collect();
    let dedicated = clients.iter().filter(|c| takeover(c)).count();
    assert!((1..=2).contains(&dedicated), "{dedicated} dedicated of 3");
    let shared = clients.iter_mut().find(|c| !takeover(c)).expect("one got the shared terms");
    assert!(shared.reply.contains("server_no_context_takeover; client_no_context_takeover"), "{}", shared.reply);
    // The shared terms work like the shared mode's.
    let text = chat(700);
    shared.send_compressed(opcode::TEXT, text.as_bytes());
    assert_eq!(shared.read_message(&mut Inflater::new(15, false)).1, text.as_bytes());
    // The dedicated ones leave: new connections get dedicated terms again.
    clients.retain(|c| !takeover(c));
    let again = common::eventually(Duration::from_secs(5), || takeover(&Client::connect(addr, Some(CLIENT_OFFER))));
    assert!(again);
}
