//! The upgrade request's head, with arbitrary lines slipped into a valid
//! one (so that most inputs get past the syntax to the checks and the
//! lookups). Never panics; what is accepted holds what the module promises:
//! lines end in CRLF, no body, the headers that may appear once appear
//! once, and `Request::header` finds exactly what httparse parsed (the
//! first value of each name, and nothing that was not a header).
//!
//! Input layout: byte 0 picks the line of the valid request the rest of
//! the input goes in front of (0: before the request line; 6: before the
//! empty line that ends the head).
#![no_main]

use libfuzzer_sys::fuzz_target;
use wsloop::ws::extension::DeflatePolicy;
use wsloop::ws::handshake::{parse_request, write_accept, write_reject, HandshakeConfig, Request, HEADER_CAPACITY};

/// The lines of a valid request, each with its CRLF.
const LINES: [&[u8]; 7] = [
    b"GET /ws?a=1 HTTP/1.1\r\n",
    b"Host: h\r\n",
    b"Upgrade: websocket\r\n",
    b"Connection: Upgrade\r\n",
    b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n",
    b"Sec-WebSocket-Version: 13\r\n",
    b"\r\n",
];

/// Headers that may appear once in an accepted request.
const SINGLE: [&str; 5] = ["host", "origin", "authorization", "sec-websocket-key", "sec-websocket-version"];

fuzz_target!(|data: &[u8]| {
    let Some((&at, slipped)) = data.split_first() else { return };
    let at = at as usize % LINES.len();
    let mut input = LINES[..at].concat();
    input.extend_from_slice(slipped);
    input.extend_from_slice(&LINES[at..].concat());
    let cfg = HandshakeConfig {
        max_header_size: 4096,
        max_headers: HEADER_CAPACITY,
        allowed_origins: vec!["https://a.example".into()],
        protocols: vec!["chat".into()],
        deflate: Some(DeflatePolicy::shared()),
        ..HandshakeConfig::default()
    };
    let mut out = Vec::new();
    match parse_request(&input, &mut 0, &cfg) {
        Ok(None) => {}
        Ok(Some(req)) => {
            check_accepted(&req, &input);
            write_accept(&mut out, &req);
            assert!(out.starts_with(b"HTTP/1.1 101 ") && out.ends_with(b"\r\n\r\n"));
        }
        Err(e) => {
            write_reject(&mut out, e);
            assert!(out.starts_with(format!("HTTP/1.1 {} ", e.status()).as_bytes()));
        }
    }
});

/// What must hold of a request the parser accepted from `input`.
fn check_accepted(req: &Request<'_>, input: &[u8]) {
    let head = req.head;
    assert_eq!(head.len(), req.head_len);
    assert!(input.starts_with(head));
    for (i, &b) in head.iter().enumerate() {
        assert!(b != b'\n' || (i > 0 && head[i - 1] == b'\r'), "bare LF at {i}");
        assert!(b != b'\r' || head.get(i + 1) == Some(&b'\n'), "bare CR at {i}");
    }
    let mut headers = [httparse::EMPTY_HEADER; HEADER_CAPACITY];
    let mut parsed = httparse::Request::new(&mut headers);
    assert_eq!(parsed.parse(head), Ok(httparse::Status::Complete(head.len())));
    let named = |name| named(parsed.headers, name);
    assert_eq!(named("host").count(), 1);
    for name in SINGLE {
        assert!(named(name).count() <= 1, "{name} twice");
    }
    assert_eq!(named("transfer-encoding").count(), 0);
    assert!(named("content-length").all(|h| !h.value.is_empty() && h.value.iter().all(|&b| b == b'0')));
    for h in parsed.headers.iter() {
        let first = named(h.name).next().map(|h| std::str::from_utf8(h.value).expect("an accepted value is UTF-8"));
        assert_eq!(req.header(h.name), first, "{}", h.name);
        assert_eq!(req.header(&h.name.to_ascii_uppercase()), first, "{}", h.name);
    }
    // Any other name the head's bytes suggest finds nothing.
    let text = String::from_utf8_lossy(head);
    let pieces = text.split(['\r', '\n', ':', ' ', '\t']).chain(text.split("\r\n")).take(256);
    for piece in pieces {
        if named(piece).next().is_none() {
            assert_eq!(req.header(piece), None, "{piece:?}");
        }
    }
}

/// The headers of `headers` called `name` (any case), in order.
fn named<'a>(headers: &'a [httparse::Header<'a>], name: &'a str) -> impl Iterator<Item = &'a httparse::Header<'a>> {
    headers.iter().filter(move |h| h.name.eq_ignore_ascii_case(name))
}
