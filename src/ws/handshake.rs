//! The HTTP/1.1 upgrade (RFC 6455 4.2): parse a request as it arrives, decide
//! whether to accept it, and produce the exact reply bytes.
//!
//! Parsing is incremental and cheap to repeat: httparse only runs again when
//! a new line has arrived, so a request trickled one byte at a time costs
//! one parse per line, not one per byte. Nothing is allocated until the
//! reply is written.
//!
//! The parser is strict where leniency lets two readers of the same bytes
//! disagree: every line ends in CRLF (a bare LF, which httparse would take
//! as a line end, is refused, so [`Request::header`] and the parser split
//! the head alike); a request that says it has a body is refused (an
//! upgrade has none, and the body would be read as frames); a header that
//! may appear once (`Host`, `Origin`, `Authorization`, `Sec-WebSocket-Key`,
//! `Sec-WebSocket-Version`) is refused the second time; only SP and HTAB
//! are trimmed around a value, as httparse does.

use tungstenite::handshake::derive_accept_key;

use super::error::HandshakeError;
use super::extension::{self, Deflate, DeflatePolicy};

/// Headers a request may carry at most, whatever the configuration says:
/// the parse array lives on the stack.
pub const HEADER_CAPACITY: usize = 64;

/// What the server accepts in an upgrade request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HandshakeConfig {
    /// Request paths served (the part before any `?`). Default `/ws` and `/`.
    pub paths: Vec<String>,
    /// Allowed `Origin` values; empty means any. A request without `Origin`
    /// (not from a browser) is always allowed.
    pub allowed_origins: Vec<String>,
    /// Subprotocols the server speaks, in its order of preference.
    pub protocols: Vec<String>,
    /// Largest request head in bytes (default 8 KiB); past it, 431.
    pub max_header_size: usize,
    /// Most header lines (default 32, at most [`HEADER_CAPACITY`]); past it, 431.
    pub max_headers: usize,
    /// The permessage-deflate terms the server offers; `None` declines
    /// every offer.
    pub deflate: Option<DeflatePolicy>,
}

impl Default for HandshakeConfig {
    fn default() -> Self {
        HandshakeConfig {
            paths: vec!["/ws".into(), "/".into()],
            allowed_origins: Vec::new(),
            protocols: Vec::new(),
            max_header_size: 8 * 1024,
            max_headers: 32,
            deflate: None,
        }
    }
}

/// An accepted upgrade request; borrows the bytes it was parsed from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Request<'a> {
    /// The request path, without the query string.
    pub path: &'a str,
    /// The query string after `?`, if any.
    pub query: Option<&'a str>,
    /// The `Origin` header, if sent.
    pub origin: Option<&'a str>,
    /// The subprotocol the server selected, if any.
    pub protocol: Option<&'a str>,
    /// The `Sec-WebSocket-Key` header.
    pub key: &'a str,
    /// The permessage-deflate terms agreed, if any.
    pub deflate: Option<Deflate>,
    /// Bytes taken by the request head; frames may follow right after it.
    pub head_len: usize,
    /// The whole request head (any empty lines before the request line,
    /// the request line, the headers, the empty line that ends them), for
    /// [`header`](Self::header): the handshake keeps no header table.
    pub head: &'a [u8],
}

impl<'a> Request<'a> {
    /// The value of the first header named `name` (any case), without the
    /// SP and HTAB around it: the value the parser accepted the request
    /// with (a header that may appear once has only one). Scans the head;
    /// meant for the few lookups an admission check makes.
    pub fn header(&self, name: &str) -> Option<&'a str> {
        header_lines(self.head).find_map(|(n, v)| n.eq_ignore_ascii_case(name).then_some(v))
    }

    /// The raw (still percent-encoded) value of the first query parameter
    /// named `name`: `?a=1&token=xyz` gives `xyz` for `token`.
    pub fn query_param(&self, name: &str) -> Option<&'a str> {
        self.query?.split('&').find_map(|pair| {
            let (n, v) = pair.split_once('=').unwrap_or((pair, ""));
            (n == name).then_some(v)
        })
    }

    /// The credential the client presents, decoded: `Authorization: Bearer
    /// TOKEN`, else `?token=TOKEN` (browsers cannot set headers on a
    /// WebSocket), percent-decoded. A present `Authorization` header
    /// decides even if it is no bearer token (the query does not rescue
    /// it). `None` if there is none or its escapes are bad.
    pub fn credential(&self) -> Option<Vec<u8>> {
        if let Some(value) = self.header("authorization") {
            let (scheme, token) = value.split_once(' ')?;
            return scheme.eq_ignore_ascii_case("bearer").then(|| token.trim().as_bytes().to_vec());
        }
        self.query_param("token").and_then(percent_decode)
    }
}

/// `%XX` escapes (and `+` as a space) decoded; `None` for a bad escape.
pub fn percent_decode(s: &str) -> Option<Vec<u8>> {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'%' => {
                let hex = std::str::from_utf8(bytes.get(i + 1..i + 3)?).ok()?;
                out.push(u8::from_str_radix(hex, 16).ok()?);
                i += 3;
            }
            b'+' => {
                out.push(b' ');
                i += 1;
            }
            b => {
                out.push(b);
                i += 1;
            }
        }
    }
    Some(out)
}

/// The `(name, value)` of each header line of `head`, a head the parser
/// accepted: lines end in CRLF (a bare LF was refused); empty lines before
/// the request line are skipped, then the request line; the first empty
/// line after it ends the headers. A name is a token (no `:`, no
/// whitespace), so a line splits at its first `:` as httparse splits it.
fn header_lines(head: &[u8]) -> impl Iterator<Item = (&str, &str)> {
    // A head the parser accepted is UTF-8 (the request line by httparse, the
    // values by `UpgradeHeaders::scan`).
    let text = std::str::from_utf8(head).unwrap_or("");
    let mut lines = text.split("\r\n").skip_while(|l| l.is_empty());
    lines.next();
    lines.take_while(|l| !l.is_empty()).filter_map(|line| {
        let (name, value) = line.split_once(':')?;
        Some((name, trim_ows(value)))
    })
}

/// `value` without the optional whitespace (SP, HTAB) around it (RFC 9110
/// 5.5); other Unicode whitespace is part of the value, as in httparse.
fn trim_ows(value: &str) -> &str {
    value.trim_matches([' ', '\t'])
}

/// Parses an upgrade request from the front of `buf`.
///
/// `scanned` is how much of `buf` earlier calls have seen (start at 0; keep
/// it between calls while the buffer only grows). `Ok(None)`: the request is
/// not complete yet. `Err`: refuse with [`write_reject`]. A line ended by a
/// bare LF or CR is [`HandshakeError::Malformed`].
pub fn parse_request<'a>(
    buf: &'a [u8],
    scanned: &mut usize,
    cfg: &HandshakeConfig,
) -> Result<Option<Request<'a>>, HandshakeError> {
    let limit = cfg.max_header_size;
    // Parse on the first bytes (garbage fails at once) and whenever a line
    // has ended since the last call; otherwise nothing can have changed.
    let first = *scanned == 0;
    let new_line = buf[(*scanned).min(buf.len())..].contains(&b'\n');
    *scanned = buf.len();
    if !first && !new_line {
        return if buf.len() > limit { Err(HandshakeError::HeaderTooLarge) } else { Ok(None) };
    }
    let mut headers = [httparse::EMPTY_HEADER; HEADER_CAPACITY];
    let max_headers = cfg.max_headers.clamp(1, HEADER_CAPACITY);
    let mut req = httparse::Request::new(&mut headers[..max_headers]);
    let head_len = match req.parse(buf) {
        Ok(httparse::Status::Complete(n)) if n <= limit => n,
        Ok(httparse::Status::Complete(_)) => return Err(HandshakeError::HeaderTooLarge),
        Ok(httparse::Status::Partial) if buf.len() > limit => return Err(HandshakeError::HeaderTooLarge),
        Ok(httparse::Status::Partial) => return Ok(None),
        Err(httparse::Error::TooManyHeaders) => return Err(HandshakeError::HeaderTooLarge),
        Err(_) => return Err(HandshakeError::Malformed),
    };
    let head = &buf[..head_len];
    // httparse refuses a CR not followed by LF, but takes a bare LF as a
    // line end: refuse it, so every reader of the head splits it alike.
    if !lines_end_in_crlf(head) {
        return Err(HandshakeError::Malformed);
    }
    validate(&req, cfg, head).map(Some)
}

/// True if every LF in `head` follows a CR.
fn lines_end_in_crlf(head: &[u8]) -> bool {
    head.first() != Some(&b'\n') && head.windows(2).all(|w| w[1] != b'\n' || w[0] == b'\r')
}

/// Checks a whole request head, parsed, against `cfg`: the request to
/// accept, or why it is refused.
fn validate<'a>(
    req: &httparse::Request<'_, 'a>,
    cfg: &HandshakeConfig,
    head: &'a [u8],
) -> Result<Request<'a>, HandshakeError> {
    let head_len = head.len();
    if req.version != Some(1) {
        return Err(HandshakeError::Malformed);
    }
    if req.method != Some("GET") {
        return Err(HandshakeError::MethodNotAllowed);
    }
    let target = req.path.ok_or(HandshakeError::Malformed)?;
    let (path, query) = match target.split_once('?') {
        Some((p, q)) => (p, Some(q)),
        None => (target, None),
    };
    let upgrade = UpgradeHeaders::scan(req, cfg)?;
    let key = upgrade.check(path, cfg)?;
    let deflate = cfg.deflate.and_then(|policy| {
        let offers = req.headers.iter().filter(|h| h.name.eq_ignore_ascii_case("sec-websocket-extensions"));
        // Every value is UTF-8: checked by `UpgradeHeaders::scan`.
        extension::negotiate(offers.filter_map(|h| std::str::from_utf8(h.value).ok()), &policy)
    });
    let UpgradeHeaders { origin, protocol, .. } = upgrade;
    Ok(Request { path, query, origin, protocol: protocol.map(|(_, p)| p), key, deflate, head_len, head })
}

/// What the headers of an upgrade request said, as far as accepting it
/// goes; collected in one pass, judged by [`check`](Self::check).
#[derive(Default)]
struct UpgradeHeaders<'a> {
    /// The `Host` header.
    host: Option<&'a str>,
    /// `Upgrade` named `websocket`.
    upgrade: bool,
    /// `Connection` named `upgrade`.
    connection: bool,
    /// The `Sec-WebSocket-Version` header.
    version: Option<&'a str>,
    /// The `Sec-WebSocket-Key` header.
    key: Option<&'a str>,
    /// The `Origin` header.
    origin: Option<&'a str>,
    /// The `Authorization` header (kept only to refuse a second one).
    authorization: Option<&'a str>,
    /// The offered subprotocol the server prefers, with its rank there.
    protocol: Option<(usize, &'a str)>,
}

impl<'a> UpgradeHeaders<'a> {
    /// Reads every header of `req` once. Fails on a value that is not
    /// UTF-8, on any sign of a body, and on a second header of those that
    /// may appear once.
    fn scan(req: &httparse::Request<'_, 'a>, cfg: &HandshakeConfig) -> Result<Self, HandshakeError> {
        let mut seen = UpgradeHeaders::default();
        for h in req.headers.iter() {
            let value = trim_ows(std::str::from_utf8(h.value).map_err(|_| HandshakeError::Malformed)?);
            let name = h.name;
            let is = |n: &str| name.eq_ignore_ascii_case(n);
            if is("host") {
                once(&mut seen.host, value)?;
            } else if is("upgrade") {
                seen.upgrade |= has_token(value, "websocket");
            } else if is("connection") {
                seen.connection |= has_token(value, "upgrade");
            } else if is("sec-websocket-version") {
                once(&mut seen.version, value)?;
            } else if is("sec-websocket-key") {
                once(&mut seen.key, value)?;
            } else if is("origin") {
                once(&mut seen.origin, value)?;
            } else if is("authorization") {
                once(&mut seen.authorization, value)?;
            } else if is("sec-websocket-protocol") {
                seen.prefer_protocol(value, &cfg.protocols);
            } else if is("transfer-encoding") || (is("content-length") && !is_zero(value)) {
                return Err(HandshakeError::Body);
            }
        }
        Ok(seen)
    }

    /// Keeps, of the subprotocols in the comma-separated `offered`, the one
    /// earliest in the server's `protocols` (if better than the one kept).
    fn prefer_protocol(&mut self, offered: &'a str, protocols: &[String]) {
        for offered in offered.split(',').map(str::trim) {
            let rank = protocols.iter().position(|p| p == offered);
            if let Some(rank) = rank {
                if self.protocol.is_none_or(|(best, _)| rank < best) {
                    self.protocol = Some((rank, offered));
                }
            }
        }
    }

    /// Judges the request for `path` by what its headers said, in the order
    /// the refusals are tested for; the key to answer with.
    fn check(&self, path: &str, cfg: &HandshakeConfig) -> Result<&'a str, HandshakeError> {
        if self.host.is_none() {
            return Err(HandshakeError::MissingHost);
        }
        if !cfg.paths.iter().any(|p| p == path) {
            return Err(HandshakeError::UnknownPath);
        }
        if !self.upgrade || !self.connection {
            return Err(HandshakeError::NotUpgrade);
        }
        if self.version != Some("13") {
            return Err(HandshakeError::UnsupportedVersion);
        }
        let key = self.key.filter(|k| is_valid_key(k)).ok_or(HandshakeError::BadKey)?;
        if let Some(o) = self.origin {
            if !cfg.allowed_origins.is_empty() && !cfg.allowed_origins.iter().any(|a| a == o) {
                return Err(HandshakeError::ForbiddenOrigin);
            }
        }
        Ok(key)
    }
}

/// Keeps `value` in `slot`, the place of a header that may appear once;
/// [`HandshakeError::DuplicateHeader`] if it is taken.
fn once<'a>(slot: &mut Option<&'a str>, value: &'a str) -> Result<(), HandshakeError> {
    match slot.replace(value) {
        Some(_) => Err(HandshakeError::DuplicateHeader),
        None => Ok(()),
    }
}

/// True if a `Content-Length` value says 0: one or more digits, all `0`.
/// Anything else (a length, a list, a sign, nothing) may announce a body.
fn is_zero(value: &str) -> bool {
    !value.is_empty() && value.bytes().all(|b| b == b'0')
}

/// True if the comma-separated `list` holds `token`, ignoring ASCII case.
fn has_token(list: &str, token: &str) -> bool {
    list.split(',').any(|t| t.trim().eq_ignore_ascii_case(token))
}

/// A Sec-WebSocket-Key is the base64 of 16 bytes: 22 symbols and `==`, the
/// last symbol carrying only 2 bits (so one of `A`, `Q`, `g`, `w`).
fn is_valid_key(key: &str) -> bool {
    let b = key.as_bytes();
    let symbol = |c: &u8| c.is_ascii_alphanumeric() || *c == b'+' || *c == b'/';
    b.len() == 24 && b[..21].iter().all(symbol) && matches!(b[21], b'A' | b'Q' | b'g' | b'w') && &b[22..] == b"=="
}

/// Appends the `101 Switching Protocols` reply for `req`.
pub fn write_accept(out: &mut Vec<u8>, req: &Request<'_>) {
    let accept = derive_accept_key(req.key.as_bytes());
    out.extend_from_slice(
        b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: ",
    );
    out.extend_from_slice(accept.as_bytes());
    if let Some(p) = req.protocol {
        out.extend_from_slice(b"\r\nSec-WebSocket-Protocol: ");
        out.extend_from_slice(p.as_bytes());
    }
    out.extend_from_slice(b"\r\n");
    if let Some(deflate) = &req.deflate {
        deflate.write_response(out);
    }
    out.extend_from_slice(b"\r\n");
}

/// Appends the error reply for `err`: status line, the headers the status
/// calls for, `Connection: close` and a one-line plain-text body.
pub fn write_reject(out: &mut Vec<u8>, err: HandshakeError) {
    write_reject_after(out, err, 1);
}

/// [`write_reject`], telling a 429 or 503 to retry after `retry_after`
/// seconds (at least 1).
pub fn write_reject_after(out: &mut Vec<u8>, err: HandshakeError, retry_after: u32) {
    use std::io::Write;
    let status = err.status();
    let phrase = match status {
        400 => "Bad Request",
        401 => "Unauthorized",
        403 => "Forbidden",
        404 => "Not Found",
        405 => "Method Not Allowed",
        426 => "Upgrade Required",
        429 => "Too Many Requests",
        431 => "Request Header Fields Too Large",
        _ => "Service Unavailable",
    };
    let retry;
    let extra = match err {
        HandshakeError::UnsupportedVersion => "Sec-WebSocket-Version: 13\r\n",
        HandshakeError::NotUpgrade => "Upgrade: websocket\r\n",
        HandshakeError::MethodNotAllowed => "Allow: GET\r\n",
        HandshakeError::Unauthorized => "WWW-Authenticate: Bearer\r\n",
        _ if matches!(err.status(), 429 | 503) => {
            retry = format!("Retry-After: {}\r\n", retry_after.max(1));
            &retry
        }
        _ => "",
    };
    let body = err.reason();
    // Writing to a Vec cannot fail.
    let _ = write!(
        out,
        "HTTP/1.1 {status} {phrase}\r\n{extra}Content-Type: text/plain; charset=utf-8\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}\n",
        body.len() + 1
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    const KEY: &str = "dGhlIHNhbXBsZSBub25jZQ==";

    fn request(extra: &str) -> String {
        format!(
            "GET /ws HTTP/1.1\r\nHost: example.com\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: {KEY}\r\nSec-WebSocket-Version: 13\r\n{extra}\r\n"
        )
    }

    fn parse<'a>(bytes: &'a [u8], cfg: &HandshakeConfig) -> Result<Option<Request<'a>>, HandshakeError> {
        let mut scanned = 0;
        parse_request(bytes, &mut scanned, cfg)
    }

    fn reply_of(err: HandshakeError) -> String {
        let mut out = Vec::new();
        write_reject(&mut out, err);
        String::from_utf8(out).unwrap()
    }

    #[test]
    fn rfc_example_is_accepted_with_exact_reply() {
        let raw = request("");
        let req = parse(raw.as_bytes(), &HandshakeConfig::default()).unwrap().unwrap();
        assert_eq!((req.path, req.key, req.head_len), ("/ws", KEY, raw.len()));
        let mut out = Vec::new();
        write_accept(&mut out, &req);
        assert_eq!(
            String::from_utf8(out).unwrap(),
            "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\n\r\n"
        );
    }

    #[test]
    fn one_byte_at_a_time() {
        let raw = request("");
        let cfg = HandshakeConfig::default();
        let mut scanned = 0;
        for end in 1..raw.len() {
            assert_eq!(parse_request(&raw.as_bytes()[..end], &mut scanned, &cfg), Ok(None), "{end}");
        }
        let req = parse_request(raw.as_bytes(), &mut scanned, &cfg).unwrap().unwrap();
        assert_eq!(req.head_len, raw.len());
    }

    #[test]
    fn pipelined_frame_after_the_head_is_left_for_the_caller() {
        let mut raw = request("").into_bytes();
        let head = raw.len();
        raw.extend_from_slice(&[0x81, 0x85, 0x37, 0xfa, 0x21, 0x3d, 0x7f, 0x9f, 0x4d, 0x51, 0x58]);
        let req = parse(&raw, &HandshakeConfig::default()).unwrap().unwrap();
        assert_eq!(req.head_len, head);
        assert_eq!(raw[req.head_len], 0x81);
    }

    #[test]
    fn header_names_and_tokens_ignore_case_and_lists() {
        let raw = format!(
            "GET /?x=1 HTTP/1.1\r\nhost: a\r\nupgrade: WebSocket\r\nCONNECTION: keep-alive, Upgrade\r\nsec-websocket-key: {KEY}\r\nsec-websocket-version: 13\r\n\r\n"
        );
        let req = parse(raw.as_bytes(), &HandshakeConfig::default()).unwrap().unwrap();
        assert_eq!((req.path, req.query), ("/", Some("x=1")));
    }

    #[test]
    fn subprotocol_is_chosen_in_server_order() {
        let cfg = HandshakeConfig { protocols: vec!["v2.chat".into(), "chat".into()], ..Default::default() };
        let raw = request("Sec-WebSocket-Protocol: chat, v2.chat\r\n");
        let req = parse(raw.as_bytes(), &cfg).unwrap().unwrap();
        assert_eq!(req.protocol, Some("v2.chat"));
        let mut out = Vec::new();
        write_accept(&mut out, &req);
        assert!(String::from_utf8(out).unwrap().contains("\r\nSec-WebSocket-Protocol: v2.chat\r\n"));
        let raw = request("Sec-WebSocket-Protocol: other\r\n");
        assert_eq!(parse(raw.as_bytes(), &cfg).unwrap().unwrap().protocol, None);
    }

    #[test]
    fn refusals_map_to_their_status() {
        let cfg = HandshakeConfig { allowed_origins: vec!["https://good.example".into()], ..Default::default() };
        let base = request("");
        let cases: Vec<(String, HandshakeError)> = vec![
            ("hello there\r\n\r\n".into(), HandshakeError::Malformed),
            ("\x16\x03\x01\x02\x00\x01\x00\x01\x7c\x03\x03\r\n".into(), HandshakeError::Malformed),
            (base.replace("GET", "POST"), HandshakeError::MethodNotAllowed),
            (base.replace("HTTP/1.1", "HTTP/1.0"), HandshakeError::Malformed),
            (base.replace("Host: example.com\r\n", ""), HandshakeError::MissingHost),
            (base.replace("/ws", "/nope"), HandshakeError::UnknownPath),
            (base.replace("Upgrade: websocket\r\n", ""), HandshakeError::NotUpgrade),
            (base.replace("Connection: Upgrade", "Connection: keep-alive"), HandshakeError::NotUpgrade),
            (base.replace("Version: 13", "Version: 8"), HandshakeError::UnsupportedVersion),
            (base.replace(KEY, "short=="), HandshakeError::BadKey),
            (base.replace(KEY, "dGhlIHNhbXBsZSBub25jZR=="), HandshakeError::BadKey),
            (request(&format!("Sec-WebSocket-Key: {KEY}\r\n")), HandshakeError::DuplicateHeader),
            (request("Origin: https://evil.example\r\n"), HandshakeError::ForbiddenOrigin),
            // Only SP and HTAB are whitespace around a value (RFC 9110 5.5).
            (request("Origin: https://good.example\u{a0}\r\n"), HandshakeError::ForbiddenOrigin),
        ];
        for (raw, want) in cases {
            assert_eq!(parse(raw.as_bytes(), &cfg), Err(want), "{raw:?}");
        }
        assert!(parse(request("Origin: https://good.example\r\n").as_bytes(), &cfg).unwrap().is_some());
    }

    #[test]
    fn size_and_count_limits() {
        let cfg = HandshakeConfig { max_header_size: 256, max_headers: 8, ..Default::default() };
        let big = request(&format!("X-Pad: {}\r\n", "a".repeat(300)));
        assert_eq!(parse(big.as_bytes(), &cfg), Err(HandshakeError::HeaderTooLarge));
        // Endless header with no newline at all.
        let endless = format!("GET /ws HTTP/1.1\r\nX: {}", "a".repeat(300));
        assert_eq!(parse(endless.as_bytes(), &cfg), Err(HandshakeError::HeaderTooLarge));
        let many = request(&"X-A: 1\r\n".repeat(4)); // 5 required + 4 > 8
        assert_eq!(parse(many.as_bytes(), &cfg), Err(HandshakeError::HeaderTooLarge));
    }

    #[test]
    fn reject_replies_are_exact() {
        assert_eq!(
            reply_of(HandshakeError::UnsupportedVersion),
            "HTTP/1.1 426 Upgrade Required\r\nSec-WebSocket-Version: 13\r\nContent-Type: text/plain; charset=utf-8\r\nContent-Length: 44\r\nConnection: close\r\n\r\nunsupported Sec-WebSocket-Version (13 only)\n"
        );
        for (err, line) in [
            (HandshakeError::Malformed, "HTTP/1.1 400 Bad Request\r\n"),
            (HandshakeError::Body, "HTTP/1.1 400 Bad Request\r\n"),
            (HandshakeError::DuplicateHeader, "HTTP/1.1 400 Bad Request\r\n"),
            (HandshakeError::ForbiddenOrigin, "HTTP/1.1 403 Forbidden\r\n"),
            (HandshakeError::UnknownPath, "HTTP/1.1 404 Not Found\r\n"),
            (HandshakeError::HeaderTooLarge, "HTTP/1.1 431 Request Header Fields Too Large\r\n"),
            (HandshakeError::Overloaded, "HTTP/1.1 503 Service Unavailable\r\nRetry-After: 1\r\n"),
            (HandshakeError::Unauthorized, "HTTP/1.1 401 Unauthorized\r\nWWW-Authenticate: Bearer\r\n"),
            (HandshakeError::Forbidden, "HTTP/1.1 403 Forbidden\r\n"),
            (HandshakeError::TooManyRequests, "HTTP/1.1 429 Too Many Requests\r\nRetry-After: 1\r\n"),
            (HandshakeError::TooManyConnections, "HTTP/1.1 429 Too Many Requests\r\nRetry-After: 1\r\n"),
        ] {
            let reply = reply_of(err);
            assert!(reply.starts_with(line), "{reply}");
            let (head, body) = reply.split_once("\r\n\r\n").unwrap();
            assert!(head.contains(&format!("Content-Length: {}", body.len())));
            assert!(head.ends_with("Connection: close"));
        }
    }

    #[test]
    fn a_429_says_when_to_retry() {
        let mut out = Vec::new();
        write_reject_after(&mut out, HandshakeError::HandshakeRate, 7);
        let reply = String::from_utf8(out).unwrap();
        assert!(reply.starts_with("HTTP/1.1 429 Too Many Requests\r\nRetry-After: 7\r\n"), "{reply}");
        let mut out = Vec::new();
        write_reject_after(&mut out, HandshakeError::Malformed, 7);
        assert!(!String::from_utf8(out).unwrap().contains("Retry-After"));
    }

    #[test]
    fn headers_and_query_parameters_are_found_by_name() {
        let raw =
            request("Authorization: Bearer  s3cret \r\nX-Empty:\r\n").replace("/ws", "/ws?room=a&token=t%2B1&flag");
        let req = parse(raw.as_bytes(), &HandshakeConfig::default()).unwrap().unwrap();
        assert_eq!(req.head, raw.as_bytes());
        assert_eq!(req.header("authorization"), Some("Bearer  s3cret"));
        assert_eq!(req.header("HOST"), Some("example.com"));
        assert_eq!(req.header("x-empty"), Some(""));
        assert_eq!(req.header("cookie"), None);
        // The request line is not a header, however it looks.
        assert_eq!(req.header("GET /ws?room=a&token=t%2B1&flag HTTP/1.1"), None);
        assert_eq!(req.query_param("token"), Some("t%2B1"));
        assert_eq!(req.query_param("flag"), Some(""));
        assert_eq!(req.query_param("tok"), None);
    }

    /// Every header httparse finds in `head`, in order: what the parser
    /// accepted, to hold `Request::header` to.
    fn parsed_headers(head: &[u8]) -> Vec<(String, String)> {
        let mut headers = [httparse::EMPTY_HEADER; HEADER_CAPACITY];
        let mut req = httparse::Request::new(&mut headers);
        assert!(req.parse(head).unwrap().is_complete());
        req.headers.iter().map(|h| (h.name.to_string(), String::from_utf8(h.value.to_vec()).unwrap())).collect()
    }

    #[test]
    fn an_upgrade_with_a_body_is_refused_and_its_body_never_parsed() {
        let frame = [0x81, 0x85, 0x37, 0xfa, 0x21, 0x3d, 0x7f, 0x9f, 0x4d, 0x51, 0x58];
        let body = |extra: &str, after: &[u8]| [request(extra).as_bytes(), after].concat();
        let cases: Vec<Vec<u8>> = vec![
            body("Content-Length: 11\r\n", &frame),
            body("content-length: 1\r\n", b"x"),
            body("Transfer-Encoding: chunked\r\n", b"b\r\n0123456789a\r\n0\r\n\r\n"),
            body("Transfer-Encoding: identity\r\n", b""),
            body("Transfer-Encoding:\r\n", b""),
            body("Content-Length: 0\r\nContent-Length: 5\r\n", b"hello"),
            body("Content-Length: 0\r\nTransfer-Encoding: chunked\r\n", b"0\r\n\r\n"),
            // A length that does not parse may mean anything: not 0.
            body("Content-Length: abc\r\n", b""),
            body("Content-Length: -0\r\n", b""),
            body("Content-Length: +0\r\n", b""),
            body("Content-Length:\r\n", b""),
            body("Content-Length: 0, 0\r\n", b""),
            body("Content-Length: 0 0\r\n", b""),
            body("Content-Length: 18446744073709551616\r\n", b""),
        ];
        for raw in cases {
            assert_eq!(parse(&raw, &HandshakeConfig::default()), Err(HandshakeError::Body), "{raw:?}");
        }
        // A length of zero says there is no body: the bytes after the head
        // are the first frame.
        for extra in ["Content-Length: 0\r\n", "content-length:  00 \r\n", "Content-Length: 0\r\nContent-Length: 0\r\n"]
        {
            let raw = body(extra, &frame);
            let req = parse(&raw, &HandshakeConfig::default()).unwrap().unwrap();
            assert_eq!(raw[req.head_len..], frame, "{extra:?}");
        }
    }

    #[test]
    fn a_header_that_must_be_single_is_refused_twice() {
        let cfg = HandshakeConfig { allowed_origins: vec!["https://good.example".into()], ..Default::default() };
        for extra in [
            "Host: example.com\r\n",
            "host: other.example\r\n",
            "Origin: https://evil.example\r\nOrigin: https://good.example\r\n",
            "Origin: https://good.example\r\nOrigin: https://good.example\r\n",
            "Sec-WebSocket-Version: 8\r\n",
            "Authorization: Bearer a\r\nauthorization: Bearer b\r\n",
            &format!("sec-websocket-key: {KEY}\r\n"),
        ] {
            assert_eq!(parse(request(extra).as_bytes(), &cfg), Err(HandshakeError::DuplicateHeader), "{extra:?}");
        }
        // List-valued headers may repeat (RFC 9110 5.3): their values add up.
        let cfg = HandshakeConfig { protocols: vec!["chat".into()], ..Default::default() };
        let raw = request("Connection: keep-alive\r\nUpgrade: websocket\r\nSec-WebSocket-Protocol: a\r\nSec-WebSocket-Protocol: chat\r\n");
        assert_eq!(parse(raw.as_bytes(), &cfg).unwrap().unwrap().protocol, Some("chat"));
        let raw = request("").replace("Connection: Upgrade\r\n", "Connection: keep-alive\r\nConnection: Upgrade\r\n");
        assert!(parse(raw.as_bytes(), &cfg).unwrap().is_some());
    }

    #[test]
    fn a_bare_lf_or_cr_is_refused_wherever_it_is() {
        let base = request("");
        let cases = [
            base.replace("\r\n", "\n"),
            base.replacen("HTTP/1.1\r\n", "HTTP/1.1\n", 1),
            base.replace("Host: example.com\r\n", "Host: example.com\n"),
            request("X-Smuggle: a\nAuthorization: Bearer x\r\n"),
            format!("{}\n", &base[..base.len() - 2]),
            format!("\n{base}"),
            format!("\r\n\n{base}"),
            request("X-A: 1\rHost: b\r\n"),
            request("X-A: 1\r\r\n"),
        ];
        for raw in cases {
            assert_eq!(parse(raw.as_bytes(), &HandshakeConfig::default()), Err(HandshakeError::Malformed), "{raw:?}");
        }
    }

    #[test]
    fn empty_lines_before_the_request_line_are_skipped_by_header_too() {
        // RFC 9112 2.2: a server ignores empty lines before the request line.
        let raw = format!("\r\n\r\n{}", request("X-A: 1\r\n").replace("/ws", "/ws?a:b"));
        let req = parse(raw.as_bytes(), &HandshakeConfig::default()).unwrap().unwrap();
        assert_eq!((req.path, req.query, req.head_len), ("/ws", Some("a:b"), raw.len()));
        assert_eq!(req.header("host"), Some("example.com"));
        assert_eq!(req.header("x-a"), Some("1"));
        assert_eq!(req.header("GET /ws?a"), None);
        assert_eq!(req.header(""), None);
    }

    #[test]
    fn header_returns_what_the_parser_parsed() {
        let cfg = HandshakeConfig { protocols: vec!["chat".into()], ..Default::default() };
        let raws = [
            request("X-Tab:\tv\t\r\nX-Sp:   v  w  \r\nX-Empty:\r\nX-Blank:   \r\n"),
            request("X-Nbsp: \u{a0}v\u{a0}\r\nX-Utf8: κόσμε\r\nX-Colon: a:b: c\r\n"),
            request("Sec-WebSocket-Protocol: x\r\nSec-WebSocket-Protocol: chat\r\nX-Dup: 1\r\nx-dup: 2\r\n"),
            format!("\r\n{}", request("Cookie: a=b; c=d\r\n")),
        ];
        for raw in &raws {
            let req = parse(raw.as_bytes(), &cfg).unwrap().unwrap();
            let parsed = parsed_headers(req.head);
            for (name, _) in &parsed {
                let first = parsed.iter().find(|(n, _)| n.eq_ignore_ascii_case(name)).map(|(_, v)| v.as_str());
                assert_eq!(req.header(name), first, "{name} in {raw:?}");
                assert_eq!(req.header(&name.to_ascii_uppercase()), first, "{name} in {raw:?}");
            }
            // Nothing is found that the parser did not see as a header: not
            // a piece of a line, a value, or the request line.
            for line in raw.split("\r\n") {
                for piece in line.split(':').chain(line.split(' ')).chain([line]) {
                    if !parsed.iter().any(|(n, _)| n.eq_ignore_ascii_case(piece)) {
                        assert_eq!(req.header(piece), None, "{piece:?} in {raw:?}");
                    }
                }
            }
        }
    }
}
