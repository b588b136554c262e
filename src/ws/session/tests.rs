//! Byte-vector tests of the session: the server side fed what a client
//! sends, checked against the exact bytes it must answer.

use super::*;
use crate::ws::frame::write_frame;
use crate::ws::HandshakeError;

const MASK: [u8; 4] = [0x37, 0xfa, 0x21, 0x3d];

fn cfg() -> Config {
    Config::default()
}

fn open() -> Session {
    Session::new(Role::Server, Phase::Open)
}

fn client_frame(fin: bool, op: u8, payload: &[u8]) -> Vec<u8> {
    let mut v = Vec::new();
    write_frame(&mut v, fin, op, payload, Some(MASK));
    v
}

/// An owned copy of an event, so tests can collect several.
#[derive(Debug, PartialEq, Eq)]
enum Owned {
    Open(String),
    Text(String),
    Binary(Vec<u8>),
    Ping(Vec<u8>),
    Pong(Vec<u8>),
    Close(Option<u16>, String),
}

fn own(e: Event<'_>) -> Owned {
    match e {
        Event::Upgrade(r) => Owned::Open(r.path.to_string()),
        Event::Text(t) => Owned::Text(t.to_string()),
        Event::Binary(b) => Owned::Binary(b.to_vec()),
        Event::Ping(b) => Owned::Ping(b.to_vec()),
        Event::Pong(b) => Owned::Pong(b.to_vec()),
        Event::Close { code, reason } => Owned::Close(code, reason.to_string()),
    }
}

/// Feeds `input` whole; returns the events, the output bytes and the error.
fn run(s: &mut Session, input: &[u8], cfg: &Config) -> (Vec<Owned>, Vec<u8>, Option<WsError>) {
    let mut buf = input.to_vec();
    let mut assembly = Vec::new();
    let mut out = Vec::new();
    let mut events = Vec::new();
    let mut pos = 0;
    loop {
        match s.decode(&mut buf[pos..], &mut assembly, &mut out, cfg) {
            Ok(Decoded { consumed, event: Some(e), .. }) => {
                pos += consumed;
                if let Event::Upgrade(req) = &e {
                    s.accept(&mut out, req);
                }
                events.push(own(e));
            }
            Ok(Decoded { event: None, .. }) => return (events, out, None),
            Err(e) => return (events, out, Some(e)),
        }
    }
}

/// Feeds `input` in pieces of `step` bytes, as a socket might deliver it,
/// keeping unconsumed bytes like the event loop does.
fn run_in_pieces(s: &mut Session, input: &[u8], step: usize) -> (Vec<Owned>, Vec<u8>, Option<WsError>) {
    let (events, out, failed) = run_pieces(s, input.chunks(step));
    (events, out, failed.map(|(_, e)| e))
}

/// Feeds the pieces one after another like the event loop does; on error,
/// also says which piece (0-based) the session failed on.
fn run_pieces<'p>(
    s: &mut Session,
    pieces: impl IntoIterator<Item = &'p [u8]>,
) -> (Vec<Owned>, Vec<u8>, Option<(usize, WsError)>) {
    let cfg = cfg();
    let mut pending: Vec<u8> = Vec::new();
    let mut assembly = Vec::new();
    let mut out = Vec::new();
    let mut events = Vec::new();
    for (i, piece) in pieces.into_iter().enumerate() {
        pending.extend_from_slice(piece);
        loop {
            match s.decode(&mut pending, &mut assembly, &mut out, &cfg) {
                Ok(Decoded { consumed, event, .. }) => {
                    if let Some(Event::Upgrade(req)) = &event {
                        s.accept(&mut out, req);
                    }
                    let got = event.map(own);
                    pending.drain(..consumed);
                    match got {
                        Some(e) => events.push(e),
                        None => break,
                    }
                }
                Err(e) => return (events, out, Some((i, e))),
            }
        }
    }
    (events, out, None)
}

/// `input` cut at the given offsets.
fn cut<'a>(input: &'a [u8], cuts: &[usize]) -> Vec<&'a [u8]> {
    let mut bounds = vec![0];
    bounds.extend_from_slice(cuts);
    bounds.push(input.len());
    bounds.windows(2).map(|w| &input[w[0]..w[1]]).collect()
}

fn close_bytes(code: u16, reason: &str) -> Vec<u8> {
    let mut v = Vec::new();
    crate::ws::frame::write_close(&mut v, Some(code), reason, None);
    v
}

const REQUEST: &[u8] = b"GET /ws HTTP/1.1\r\nHost: h\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n";

#[test]
fn session_is_small() {
    assert!(std::mem::size_of::<Session>() <= 12, "{}", std::mem::size_of::<Session>());
}

#[test]
fn request_followed_by_a_frame_in_the_same_read() {
    let mut input = REQUEST.to_vec();
    input.extend_from_slice(&[0x81, 0x85, 0x37, 0xfa, 0x21, 0x3d, 0x7f, 0x9f, 0x4d, 0x51, 0x58]);
    let mut s = Session::server();
    let (events, out, err) = run(&mut s, &input, &cfg());
    assert_eq!(err, None);
    assert_eq!(events, [Owned::Open("/ws".into()), Owned::Text("Hello".into())]);
    assert!(out.starts_with(b"HTTP/1.1 101 Switching Protocols\r\n"));
    assert_eq!(s.phase(), Phase::Open);
}

#[test]
fn request_and_frames_one_byte_at_a_time() {
    let mut input = REQUEST.to_vec();
    input.extend(client_frame(false, opcode::TEXT, "κό".as_bytes()));
    input.extend(client_frame(true, opcode::PING, b"p"));
    input.extend(client_frame(true, opcode::CONTINUATION, "σμε".as_bytes()));
    input.extend(client_frame(true, opcode::BINARY, &[0u8; 300]));
    let mut s = Session::server();
    let (events, _, err) = run_in_pieces(&mut s, &input, 1);
    assert_eq!(err, None);
    assert_eq!(
        events,
        [
            Owned::Open("/ws".into()),
            Owned::Ping(b"p".to_vec()),
            Owned::Text("κόσμε".into()),
            Owned::Binary(vec![0; 300])
        ]
    );
}

#[test]
fn an_upgrade_waits_for_its_verdict_and_a_refusal_ends_the_session() {
    let mut input = REQUEST.to_vec();
    input.extend_from_slice(&[0x81, 0x85, 0x37, 0xfa, 0x21, 0x3d, 0x7f, 0x9f, 0x4d, 0x51, 0x58]);
    let mut s = Session::server();
    let (mut assembly, mut out) = (Vec::new(), Vec::new());
    let d = s.decode(&mut input, &mut assembly, &mut out, &cfg()).unwrap();
    let Some(Event::Upgrade(req)) = d.event else { panic!("{:?}", d.event) };
    assert_eq!((d.consumed, req.path), (REQUEST.len(), "/ws"));
    assert!(out.is_empty(), "nothing is written before the verdict");
    assert_eq!(s.phase(), Phase::Handshake);
    let err = s.refuse(&mut out, HandshakeError::TooManyRequests, 9);
    assert_eq!(err, WsError::Handshake(HandshakeError::TooManyRequests));
    assert!(out.starts_with(b"HTTP/1.1 429 Too Many Requests\r\nRetry-After: 9\r\n"), "{out:?}");
    assert_eq!(s.phase(), Phase::Closed);
    // The frame behind the refused request is dropped unread.
    let rest = &mut input[REQUEST.len()..];
    let d = s.decode(rest, &mut assembly, &mut out, &cfg()).unwrap();
    assert_eq!((d.consumed, d.event), (11, None));
}

#[test]
fn bad_request_gets_its_reply_and_closes() {
    let mut s = Session::server();
    let (events, out, err) = run(&mut s, b"GET /nope HTTP/1.1\r\nHost: h\r\n\r\n", &cfg());
    assert!(events.is_empty());
    assert_eq!(err, Some(WsError::Handshake(HandshakeError::UnknownPath)));
    assert!(out.starts_with(b"HTTP/1.1 404 Not Found\r\n"));
    assert_eq!(s.phase(), Phase::Closed);
}

#[test]
fn rfc_5_7_examples_as_a_server_receives_them() {
    // Masked "Hello", then the fragmented unmasked example masked by a client.
    let mut input = vec![0x81, 0x85, 0x37, 0xfa, 0x21, 0x3d, 0x7f, 0x9f, 0x4d, 0x51, 0x58];
    input.extend(client_frame(false, opcode::TEXT, b"Hel"));
    input.extend(client_frame(true, opcode::CONTINUATION, b"lo"));
    input.extend([0x8a, 0x85, 0x37, 0xfa, 0x21, 0x3d, 0x7f, 0x9f, 0x4d, 0x51, 0x58]); // masked pong
    input.extend(client_frame(true, opcode::BINARY, &[7u8; 256]));
    input.extend(client_frame(true, opcode::BINARY, &[9u8; 65536]));
    let (events, out, err) = run(&mut open(), &input, &cfg());
    assert_eq!(err, None);
    assert!(out.is_empty());
    assert_eq!(
        events,
        [
            Owned::Text("Hello".into()),
            Owned::Text("Hello".into()),
            Owned::Pong(b"Hello".to_vec()),
            Owned::Binary(vec![7; 256]),
            Owned::Binary(vec![9; 65536]),
        ]
    );
}

#[test]
fn ping_gets_pong_with_same_payload() {
    let (events, out, _) = run(&mut open(), &client_frame(true, opcode::PING, b"Hello"), &cfg());
    assert_eq!(events, [Owned::Ping(b"Hello".to_vec())]);
    assert_eq!(out, [0x8a, 0x05, 0x48, 0x65, 0x6c, 0x6c, 0x6f]);
}

#[test]
fn control_frames_between_fragments() {
    let mut input = client_frame(false, opcode::BINARY, b"ab");
    input.extend(client_frame(true, opcode::PING, b""));
    input.extend(client_frame(false, opcode::CONTINUATION, b"cd"));
    input.extend(client_frame(true, opcode::PONG, b"x"));
    input.extend(client_frame(true, opcode::CONTINUATION, b"ef"));
    let (events, out, err) = run(&mut open(), &input, &cfg());
    assert_eq!(err, None);
    assert_eq!(events, [Owned::Ping(vec![]), Owned::Pong(b"x".to_vec()), Owned::Binary(b"abcdef".to_vec())]);
    assert_eq!(out, [0x8a, 0x00]);
}

#[test]
fn text_split_inside_a_code_point() {
    let text = "€uro"; // E2 82 AC ...
    let b = text.as_bytes();
    let mut input = client_frame(false, opcode::TEXT, &b[..1]);
    input.extend(client_frame(false, opcode::CONTINUATION, &b[1..2]));
    input.extend(client_frame(true, opcode::CONTINUATION, &b[2..]));
    let (events, _, err) = run(&mut open(), &input, &cfg());
    assert_eq!(err, None);
    assert_eq!(events, [Owned::Text(text.into())]);
}

#[test]
fn invalid_utf8_fails_on_the_bad_fragment() {
    // The first fragment is fine, the second is a surrogate: 1007 before the
    // final fragment ever arrives.
    let mut input = client_frame(false, opcode::TEXT, "κόσμε".as_bytes());
    input.extend(client_frame(false, opcode::CONTINUATION, b"\xed\xa0\x80"));
    let (events, out, err) = run(&mut open(), &input, &cfg());
    assert!(events.is_empty());
    assert_eq!(err, Some(WsError::Protocol(ProtocolError::InvalidUtf8)));
    assert_eq!(out, close_bytes(1007, "invalid UTF-8"));
}

#[test]
fn single_frame_invalid_utf8_is_1007() {
    let (_, out, err) = run(&mut open(), &client_frame(true, opcode::TEXT, b"\xff"), &cfg());
    assert_eq!(err, Some(WsError::Protocol(ProtocolError::InvalidUtf8)));
    assert_eq!(&out[2..4], &1007u16.to_be_bytes());
}

#[test]
fn each_protocol_violation_gets_its_close_code() {
    let cases: Vec<(Vec<u8>, ProtocolError)> = vec![
        (vec![0x81, 0x05, b'H', b'e', b'l', b'l', b'o'], ProtocolError::BadMask),
        (
            client_frame(true, opcode::TEXT, b"")
                .iter()
                .enumerate()
                .map(|(i, b)| if i == 0 { b | 0x40 } else { *b })
                .collect(),
            ProtocolError::ReservedBits,
        ),
        (vec![0x83, 0x80, 1, 2, 3, 4], ProtocolError::ReservedOpcode(3)),
        (vec![0x8b, 0x80, 1, 2, 3, 4], ProtocolError::ReservedOpcode(0xb)),
        (client_frame(false, opcode::PING, b""), ProtocolError::FragmentedControl),
        (client_frame(true, opcode::PING, &[0; 126]), ProtocolError::ControlTooLong),
        (client_frame(true, opcode::CONTINUATION, b"x"), ProtocolError::UnexpectedContinuation),
        (
            [client_frame(false, opcode::TEXT, b"a"), client_frame(true, opcode::TEXT, b"b")].concat(),
            ProtocolError::ExpectedContinuation,
        ),
        (vec![0x82, 0xff, 0x80, 0, 0, 0, 0, 0, 0, 0, 1, 2, 3, 4], ProtocolError::InvalidLength),
    ];
    for (input, want) in cases {
        let (_, out, err) = run(&mut open(), &input, &cfg());
        assert_eq!(err, Some(WsError::Protocol(want)), "{input:x?}");
        assert_eq!(out, close_bytes(want.close_code(), want.reason()), "{want:?}");
        assert_eq!(want.close_code(), 1002);
    }
}

#[test]
fn size_limits_are_1009() {
    let cfg = Config { limits: Limits { max_frame: 100, max_message: 150 }, ..Config::default() };
    let (_, out, err) = run(&mut open(), &client_frame(true, opcode::BINARY, &[0; 101]), &cfg);
    assert_eq!(err, Some(WsError::Protocol(ProtocolError::FrameTooLarge)));
    assert_eq!(&out[2..4], &1009u16.to_be_bytes());
    // The frame limit is checked from the header alone: a huge claimed length
    // fails before any payload arrives.
    let (_, _, err) = run(&mut open(), &[0x82, 0xff, 0, 0, 0, 1, 0, 0, 0, 0, 1, 2, 3, 4], &cfg);
    assert_eq!(err, Some(WsError::Protocol(ProtocolError::FrameTooLarge)));
    let mut input = client_frame(false, opcode::BINARY, &[0; 100]);
    input.extend(client_frame(true, opcode::CONTINUATION, &[0; 51]));
    let (_, _, err) = run(&mut open(), &input, &cfg);
    assert_eq!(err, Some(WsError::Protocol(ProtocolError::MessageTooLarge)));
    let mut input = client_frame(false, opcode::BINARY, &[0; 100]);
    input.extend(client_frame(true, opcode::CONTINUATION, &[0; 50]));
    let (events, _, err) = run(&mut open(), &input, &cfg);
    assert_eq!((events.len(), err), (1, None));
    let cfg = Config { limits: Limits { max_frame: 100, max_message: 50 }, ..Config::default() };
    let (_, _, err) = run(&mut open(), &client_frame(true, opcode::TEXT, &[b'a'; 51]), &cfg);
    assert_eq!(err, Some(WsError::Protocol(ProtocolError::MessageTooLarge)));
}

#[test]
fn close_is_echoed_with_its_code() {
    let mut s = open();
    let mut payload = 1000u16.to_be_bytes().to_vec();
    payload.extend_from_slice(b"done");
    let (events, out, err) = run(&mut s, &client_frame(true, opcode::CLOSE, &payload), &cfg());
    assert_eq!(err, None);
    assert_eq!(events, [Owned::Close(Some(1000), "done".into())]);
    assert_eq!(out, [0x88, 0x02, 0x03, 0xe8]);
    assert_eq!(s.phase(), Phase::Closed);
    // An empty close is answered with an empty close.
    let (events, out, _) = run(&mut open(), &client_frame(true, opcode::CLOSE, b""), &cfg());
    assert_eq!(events, [Owned::Close(None, String::new())]);
    assert_eq!(out, [0x88, 0x00]);
}

#[test]
fn close_code_rules() {
    for code in [1000u16, 1001, 1002, 1003, 1007, 1008, 1009, 1010, 1011, 1012, 1013, 1014, 3000, 3999, 4000, 4999] {
        let (events, _, err) = run(&mut open(), &client_frame(true, opcode::CLOSE, &code.to_be_bytes()), &cfg());
        assert_eq!((err, events.len()), (None, 1), "{code} must be accepted");
    }
    for code in [0u16, 999, 1004, 1005, 1006, 1015, 1016, 1100, 2000, 2999, 5000, 65535] {
        let (_, out, err) = run(&mut open(), &client_frame(true, opcode::CLOSE, &code.to_be_bytes()), &cfg());
        assert_eq!(err, Some(WsError::Protocol(ProtocolError::InvalidCloseCode(code))));
        assert_eq!(&out[2..4], &1002u16.to_be_bytes(), "{code}");
    }
    let (_, out, err) = run(&mut open(), &client_frame(true, opcode::CLOSE, &[0x03]), &cfg());
    assert_eq!(err, Some(WsError::Protocol(ProtocolError::CloseTooShort)));
    assert_eq!(&out[2..4], &1002u16.to_be_bytes());
    let (_, out, err) = run(&mut open(), &client_frame(true, opcode::CLOSE, b"\x03\xe8\xff\xfe"), &cfg());
    assert_eq!(err, Some(WsError::Protocol(ProtocolError::InvalidUtf8)));
    assert_eq!(&out[2..4], &1007u16.to_be_bytes());
}

#[test]
fn our_close_then_theirs() {
    let mut s = open();
    let mut out = Vec::new();
    s.write_close(&mut out, 1001, "going away");
    assert_eq!(out, close_bytes(1001, "going away"));
    assert_eq!(s.phase(), Phase::CloseSent);
    assert!(!s.write_text(&mut out, "late"), "no data after our close");
    // A ping after our close gets no pong; their close gets no second close.
    let mut input = client_frame(true, opcode::PING, b"x");
    input.extend(client_frame(true, opcode::CLOSE, &1001u16.to_be_bytes()));
    let (events, out, _) = run(&mut s, &input, &cfg());
    assert_eq!(events, [Owned::Ping(b"x".to_vec()), Owned::Close(Some(1001), String::new())]);
    assert!(out.is_empty());
    assert_eq!(s.phase(), Phase::Closed);
}

#[test]
fn nothing_after_closed() {
    let mut s = open();
    let mut input = client_frame(true, opcode::CLOSE, b"");
    input.extend(client_frame(true, opcode::TEXT, b"ignored"));
    let (events, _, err) = run(&mut s, &input, &cfg());
    assert_eq!((events.len(), err), (1, None));
}

#[test]
fn client_role_masks_what_it_sends_and_rejects_masked_input() {
    let mut c = Session::client();
    let mut out = Vec::new();
    assert!(c.write_text(&mut out, "hi"));
    assert_eq!(out[1] & 0x80, 0x80, "client frames are masked");
    // What the client sends, a server session decodes.
    let (events, _, _) = run(&mut open(), &out, &cfg());
    assert_eq!(events, [Owned::Text("hi".into())]);
    let (_, _, err) = run(&mut c, &client_frame(true, opcode::TEXT, b"x"), &cfg());
    assert_eq!(err, Some(WsError::Protocol(ProtocolError::BadMask)));
}

#[test]
fn wanted_tells_how_much_to_buffer() {
    let frame = client_frame(true, opcode::BINARY, &[1; 1000]);
    let mut s = open();
    let mut buf = frame[..10].to_vec();
    let mut asm = Vec::new();
    let d = s.decode(&mut buf, &mut asm, &mut Vec::new(), &cfg()).unwrap();
    assert_eq!((d.consumed, d.wanted), (0, frame.len()));
}

// Fail fast (RFC 6455 8.1): invalid UTF-8 fails as soon as the bytes that
// can never become valid have arrived, whether or not the frame is whole.

/// The payload of Autobahn 6.4.3/6.4.4: valid text, then F4 90 80 80 (above
/// U+10FFFF), then more text.
fn autobahn_6_4_payload() -> Vec<u8> {
    let mut p = "κόσμε".as_bytes().to_vec();
    p.extend_from_slice(b"\xf4\x90\x80\x80");
    p.extend_from_slice("edited".as_bytes());
    p
}

#[test]
fn one_text_frame_in_pieces_fails_on_the_piece_with_the_bad_bytes() {
    let payload = autobahn_6_4_payload();
    let frame = client_frame(true, opcode::TEXT, &payload);
    let bad = frame.len() - payload.len() + "κόσμε".len(); // offset of F4 in the frame
                                                           // 6.4.3: valid prefix, then the bad code point, then the rest.
    let (events, out, failed) = run_pieces(&mut open(), cut(&frame, &[bad, bad + 4]));
    assert!(events.is_empty());
    assert_eq!(failed, Some((1, WsError::Protocol(ProtocolError::InvalidUtf8))));
    assert_eq!(out, close_bytes(1007, "invalid UTF-8"));
    // 6.4.4: the same with the bad code point's first byte on its own: F4
    // could still start U+10xxxx, F4 90 cannot.
    let (_, _, failed) = run_pieces(&mut open(), cut(&frame, &[bad, bad + 1, bad + 2, bad + 4]));
    assert_eq!(failed.map(|(i, _)| i), Some(2));
}

#[test]
fn a_first_fragment_in_pieces_fails_before_it_is_whole() {
    let mut frame = client_frame(false, opcode::TEXT, b"abc\xc0\xafdef");
    frame.extend(client_frame(true, opcode::CONTINUATION, b"never read"));
    let header = 6; // 7-bit length: 2 + 4 (mask)
    let (_, out, failed) = run_pieces(&mut open(), cut(&frame, &[header + 2, header + 4, header + 6]));
    // C0 is never a lead byte: fails on the piece that brings it.
    assert_eq!(failed, Some((1, WsError::Protocol(ProtocolError::InvalidUtf8))));
    assert_eq!(out, close_bytes(1007, "invalid UTF-8"));
}

#[test]
fn a_continuation_in_pieces_fails_before_it_is_whole() {
    let mut input = client_frame(false, opcode::TEXT, "a€".as_bytes());
    let first = input.len();
    // The continuation ends a code point begun in it badly: E2 82 then 41.
    input.extend(client_frame(true, opcode::CONTINUATION, b"xyz\xe2\x82Azzzzzzz"));
    let (_, _, failed) = run_pieces(&mut open(), cut(&input, &[first + 6 + 4, first + 6 + 5, first + 6 + 6]));
    assert_eq!(failed, Some((2, WsError::Protocol(ProtocolError::InvalidUtf8))));
}

#[test]
fn a_code_point_split_across_pieces_and_frames_passes() {
    // "a𝄞b" as one frame, then as two fragments, cut at every byte: the
    // unmasked text must come out exactly once unmasked.
    let text = "a𝄞b€";
    let whole = client_frame(true, opcode::TEXT, text.as_bytes());
    let mut fragmented = client_frame(false, opcode::TEXT, &text.as_bytes()[..3]);
    fragmented.extend(client_frame(true, opcode::CONTINUATION, &text.as_bytes()[3..]));
    for input in [&whole, &fragmented] {
        for a in 0..input.len() {
            for b in a..input.len() {
                let (events, out, failed) = run_pieces(&mut open(), cut(input, &[a, b]));
                assert_eq!(failed, None, "cuts {a} {b}");
                assert!(out.is_empty());
                assert_eq!(events, [Owned::Text(text.into())], "cuts {a} {b}");
            }
        }
    }
}

#[test]
fn a_binary_frame_in_pieces_is_not_checked_as_text() {
    let payload = b"\xff\xfe not text \xc0";
    let frame = client_frame(true, opcode::BINARY, payload);
    let (events, _, failed) = run_pieces(&mut open(), frame.chunks(3));
    assert_eq!(failed, None);
    assert_eq!(events, [Owned::Binary(payload.to_vec())]);
}

#[test]
fn text_in_pieces_then_more_frames_in_one_read() {
    // The frame after a checked-in-pieces one starts from a clean slate.
    let mut input = client_frame(true, opcode::TEXT, "first ✓".as_bytes());
    let split = 9;
    input.extend(client_frame(true, opcode::TEXT, "second ✓".as_bytes()));
    input.extend(client_frame(true, opcode::BINARY, b"\x80"));
    let (events, _, failed) = run_pieces(&mut open(), cut(&input, &[split]));
    assert_eq!(failed, None);
    assert_eq!(events, [Owned::Text("first ✓".into()), Owned::Text("second ✓".into()), Owned::Binary(vec![0x80])]);
}

#[test]
fn a_text_frame_in_pieces_still_asks_for_the_whole_frame() {
    let frame = client_frame(true, opcode::TEXT, &[b'a'; 1000]);
    let mut s = open();
    let mut buf = frame[..500].to_vec();
    let mut asm = Vec::new();
    let d = s.decode(&mut buf, &mut asm, &mut Vec::new(), &cfg()).unwrap();
    assert_eq!((d.consumed, d.event.is_none(), d.wanted), (0, true, frame.len()));
    // Called again with nothing new: nothing is unmasked twice.
    let d = s.decode(&mut buf, &mut asm, &mut Vec::new(), &cfg()).unwrap();
    assert_eq!(d.wanted, frame.len());
    let mut buf = [&buf[..], &frame[500..]].concat();
    let d = s.decode(&mut buf, &mut asm, &mut Vec::new(), &cfg()).unwrap();
    assert_eq!(d.event, Some(Event::Text(&"a".repeat(1000))));
}

#[test]
fn message_rules_are_decided_from_the_header() {
    // A too-large message, and a new message inside a fragmented one, fail
    // with only their header in.
    let cfg = Config { limits: Limits { max_frame: 1 << 20, max_message: 100 }, ..Config::default() };
    let frame = client_frame(true, opcode::TEXT, &[b'a'; 200]);
    let (_, _, err) = run(&mut open(), &frame[..8], &cfg);
    assert_eq!(err, Some(WsError::Protocol(ProtocolError::MessageTooLarge)));
    let mut input = client_frame(false, opcode::TEXT, b"a");
    input.extend(&client_frame(true, opcode::BINARY, &[0; 50])[..8]);
    let (_, _, err) = run(&mut open(), &input, &cfg);
    assert_eq!(err, Some(WsError::Protocol(ProtocolError::ExpectedContinuation)));
}

#[test]
fn a_close_between_fragments_abandons_the_message() {
    // Found by the session fuzz target: the session ended Closed while
    // still "assembling", so the connection kept its assembly buffer.
    let mut input = client_frame(false, opcode::TEXT, b"half a mess");
    input.extend(client_frame(true, opcode::CLOSE, &1000u16.to_be_bytes()));
    let mut s = open();
    let (events, out, err) = run(&mut s, &input, &cfg());
    assert_eq!(err, None);
    assert_eq!(events, [Owned::Close(Some(1000), String::new())]);
    assert_eq!(out, close_bytes(1000, ""));
    assert_eq!(s.phase(), Phase::Closed);
    assert!(!s.is_assembling());
}

/// A server session that negotiated permessage-deflate (shared terms).
fn open_deflate() -> Session {
    let mut s = open();
    let terms = crate::ws::extension::negotiate(["permessage-deflate"], &crate::ws::extension::DeflatePolicy::shared());
    s.enable_deflate(&terms.unwrap());
    s
}

/// A client frame with RSV1 set (the first frame of a compressed message).
fn compressed_frame(fin: bool, op: u8, payload: &[u8]) -> Vec<u8> {
    let mut v = client_frame(fin, op, payload);
    v[0] |= 0x40;
    v
}

/// RFC 7692 7.2.3.1: "Hello", compressed.
const HELLO_DEFLATED: [u8; 7] = [0xf2, 0x48, 0xcd, 0xc9, 0xc9, 0x07, 0x00];

/// Feeds `input` whole to a session with an inflater; the events and error.
fn run_inflating(s: &mut Session, input: &[u8], limits: Limits) -> (Vec<Owned>, Option<WsError>) {
    let cfg = Config { limits, ..Config::default() };
    let mut inflater = crate::ws::deflate::Inflater::new(15, false);
    let mut inflated = Vec::new();
    let mut buf = input.to_vec();
    let (mut assembly, mut out, mut events, mut pos) = (Vec::new(), Vec::new(), Vec::new(), 0);
    loop {
        let inflation = Inflation { inflater: &mut inflater, output: &mut inflated };
        match s.decode_inflating(&mut buf[pos..], &mut assembly, &mut out, &cfg, Some(inflation)) {
            Ok(Decoded { consumed, event: Some(e), .. }) => {
                pos += consumed;
                if let Event::Upgrade(req) = &e {
                    s.accept(&mut out, req);
                }
                events.push(own(e));
            }
            Ok(Decoded { event: None, .. }) => return (events, None),
            Err(e) => return (events, Some(e)),
        }
    }
}

#[test]
fn rfc_7692_compressed_text_in_one_frame() {
    let mut s = open_deflate();
    let frame = compressed_frame(true, opcode::TEXT, &HELLO_DEFLATED);
    assert_eq!(&frame[..2], [0xc1, 0x87]);
    let (events, err) = run_inflating(&mut s, &frame, Limits::default());
    assert_eq!((events, err), (vec![Owned::Text("Hello".into())], None));
}

#[test]
fn rfc_7692_compressed_message_in_fragments_between_control_frames() {
    let mut s = open_deflate();
    let mut input = compressed_frame(false, opcode::BINARY, &HELLO_DEFLATED[..3]);
    input.extend(client_frame(true, opcode::PING, b"p"));
    input.extend(client_frame(true, opcode::CONTINUATION, &HELLO_DEFLATED[3..]));
    input.extend(client_frame(true, opcode::TEXT, b"plain"));
    let (events, err) = run_inflating(&mut s, &input, Limits::default());
    let want = vec![Owned::Ping(b"p".to_vec()), Owned::Binary(b"Hello".to_vec()), Owned::Text("plain".into())];
    assert_eq!((events, err), (want, None));
}

#[test]
fn a_close_abandons_a_compressed_message_in_fragments() {
    // Found by the deflate fuzz target: the close cleared the fragment but
    // not the "compressed" mark, which then outlived its message.
    let mut s = open_deflate();
    let mut input = compressed_frame(false, opcode::TEXT, &HELLO_DEFLATED[..3]);
    input.extend(client_frame(true, opcode::CLOSE, &1000u16.to_be_bytes()));
    let (events, err) = run_inflating(&mut s, &input, Limits::default());
    assert_eq!((events, err), (vec![Owned::Close(Some(1000), String::new())], None));
    assert_eq!(s.phase(), Phase::Closed);
    assert!(!s.is_assembling());
}

#[test]
fn rsv1_is_refused_where_it_does_not_belong() {
    // Not negotiated.
    let (_, _, err) = run(&mut open(), &compressed_frame(true, opcode::TEXT, &HELLO_DEFLATED), &cfg());
    assert_eq!(err, Some(WsError::Protocol(ProtocolError::ReservedBits)));
    // On a continuation, or a control frame.
    let mut input = compressed_frame(false, opcode::TEXT, &HELLO_DEFLATED[..3]);
    input.extend(compressed_frame(true, opcode::CONTINUATION, &HELLO_DEFLATED[3..]));
    let (_, err) = run_inflating(&mut open_deflate(), &input, Limits::default());
    assert_eq!(err, Some(WsError::Protocol(ProtocolError::ReservedBits)));
    let (_, err) = run_inflating(&mut open_deflate(), &compressed_frame(true, opcode::PING, b""), Limits::default());
    assert_eq!(err, Some(WsError::Protocol(ProtocolError::ReservedBits)));
    // Negotiated, but the caller has no inflater: failed, not misread.
    let (_, out, err) = run(&mut open_deflate(), &compressed_frame(true, opcode::TEXT, &HELLO_DEFLATED), &cfg());
    assert_eq!(err, Some(WsError::Protocol(ProtocolError::ReservedBits)));
    assert_eq!(&out[..4], [0x88, out[1], 0x03, 0xea]);
}

#[test]
fn a_compression_bomb_closes_1009_after_inflating_at_most_the_limit() {
    let mut bomb = Vec::new();
    crate::ws::deflate::Deflater::new(15, 8, 9, false).compress(&vec![b'a'; 4 << 20], &mut bomb);
    assert!(bomb.len() < 8 * 1024);
    let limits = Limits { max_frame: 1 << 20, max_message: 1 << 20 };
    let (events, err) = run_inflating(&mut open_deflate(), &compressed_frame(true, opcode::TEXT, &bomb), limits);
    assert_eq!((events, err), (vec![], Some(WsError::Protocol(ProtocolError::MessageTooLarge))));
    assert_eq!(ProtocolError::MessageTooLarge.close_code(), 1009);
}

#[test]
fn compressed_text_is_checked_once_inflated() {
    let mut bad = Vec::new();
    crate::ws::deflate::Deflater::new(15, 8, 6, false).compress(&[b'a', 0xff, b'b'], &mut bad);
    let (_, err) = run_inflating(&mut open_deflate(), &compressed_frame(true, opcode::TEXT, &bad), Limits::default());
    assert_eq!(err, Some(WsError::Protocol(ProtocolError::InvalidUtf8)));
    // Binary carries any bytes; garbage that is not DEFLATE is 1007 too.
    let (events, _) =
        run_inflating(&mut open_deflate(), &compressed_frame(true, opcode::BINARY, &bad), Limits::default());
    assert_eq!(events, vec![Owned::Binary(vec![b'a', 0xff, b'b'])]);
    let (_, err) =
        run_inflating(&mut open_deflate(), &compressed_frame(true, opcode::BINARY, &[0xff; 8]), Limits::default());
    assert_eq!(err, Some(WsError::Protocol(ProtocolError::BadCompression)));
    assert_eq!(ProtocolError::BadCompression.close_code(), 1007);
}

#[test]
fn the_handshake_turns_deflate_on_only_when_agreed() {
    let request = "GET /ws HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
                   Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\
                   Sec-WebSocket-Extensions: permessage-deflate; client_max_window_bits\r\n\r\n";
    let mut with = Config::default();
    with.handshake.deflate = Some(crate::ws::extension::DeflatePolicy::shared());
    for (cfg, agreed) in [(Config::default(), false), (with, true)] {
        let mut s = Session::server();
        let (events, out, err) = run(&mut s, request.as_bytes(), &cfg);
        assert_eq!((events.len(), err), (1, None));
        let reply = String::from_utf8(out).unwrap();
        assert_eq!(reply.contains("Sec-WebSocket-Extensions: permessage-deflate; server_no_context_takeover"), agreed);
        assert!(reply.ends_with("\r\n\r\n"));
        assert_eq!(s.deflate_window(), agreed.then_some(15));
    }
}

#[test]
fn a_session_carried_mid_message_goes_on_where_it_stopped() {
    // A fragmented text message whose first fragment ends inside "é".
    let mut s = open();
    let first = client_frame(false, opcode::TEXT, &[b'a', 0xC3]);
    let (events, _, err) = run(&mut s, &first, &cfg());
    assert!(events.is_empty() && err.is_none());
    let state = s.to_state().expect("carriable between turns");
    let mut carried = Session::from_state(&state).expect("a state a session can be in");
    let rest = client_frame(true, opcode::CONTINUATION, &[0xA9, b'b']);
    let mut asm = b"a\xC3".to_vec();
    let mut input = rest.clone();
    let mut out = Vec::new();
    let d = carried.decode(&mut input, &mut asm, &mut out, &cfg()).unwrap();
    assert_eq!(d.event, Some(Event::Text("aéb")));
}

#[test]
fn session_states_no_session_could_be_in_are_refused() {
    let good = open().to_state().unwrap();
    assert!(Session::from_state(&good).is_some());
    let bad = |i: usize, v: u8| {
        let mut b = good;
        b[i] = v;
        Session::from_state(&b)
    };
    assert!(bad(10, 9).is_none(), "unknown phase");
    assert!(bad(8, 0x9).is_none(), "a ping cannot be a fragmented message");
    assert!(bad(9, 2).is_none(), "compressed without deflate");
    assert!(bad(3, 3).is_none(), "three carried bytes need a 4-byte lead byte");
    let mut closed_with_progress = good;
    closed_with_progress[10] = 3;
    closed_with_progress[4] = 1;
    assert!(Session::from_state(&closed_with_progress).is_none());
    // Between an upgrade and its verdict there is no state to carry.
    let mut s = Session::server();
    let mut req = b"GET / HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n".to_vec();
    let (mut asm, mut out) = (Vec::new(), Vec::new());
    let d = s.decode(&mut req, &mut asm, &mut out, &cfg()).unwrap();
    assert!(matches!(d.event, Some(Event::Upgrade(_))));
    assert!(s.to_state().is_none());
}
