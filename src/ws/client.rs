//! The client side of the upgrade (RFC 6455 4.1): the request a client
//! sends and the check of the server's reply. Used by the load generator
//! and the tests; the server never calls it.

use std::fmt;

use tungstenite::handshake::derive_accept_key;

use super::extension::{self, Deflate};
use super::mask::random_u64;

/// A 101 the client accepts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Accepted {
    /// Bytes the reply took; frames may follow.
    pub len: usize,
    /// The permessage-deflate terms the server stated, if it accepted.
    pub deflate: Option<Deflate>,
}

/// Why a server's reply to our upgrade request was not a valid 101.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ClientHandshakeError {
    /// The reply is not parseable HTTP, or is over 8 KiB.
    Malformed,
    /// The server answered with this status instead of 101.
    Status(u16),
    /// 101, but `Sec-WebSocket-Accept` is missing or wrong.
    BadAccept,
    /// 101 with an extension we did not offer, or terms we cannot read.
    BadExtension,
}

impl fmt::Display for ClientHandshakeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ClientHandshakeError::Malformed => f.write_str("malformed handshake reply"),
            ClientHandshakeError::Status(s) => write!(f, "handshake refused with HTTP {s}"),
            ClientHandshakeError::BadAccept => f.write_str("wrong Sec-WebSocket-Accept"),
            ClientHandshakeError::BadExtension => f.write_str("unexpected or malformed Sec-WebSocket-Extensions"),
        }
    }
}

impl std::error::Error for ClientHandshakeError {}

/// A random `Sec-WebSocket-Key`: base64 of 16 random bytes, 24 characters.
pub fn generate_key() -> [u8; 24] {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut raw = [0u8; 18]; // 16 bytes of key, 2 zero bytes of padding room
    raw[..8].copy_from_slice(&random_u64().to_ne_bytes());
    raw[8..16].copy_from_slice(&random_u64().to_ne_bytes());
    let mut key = [b'='; 24];
    for (i, chunk) in raw.chunks(3).enumerate() {
        let n = (chunk[0] as u32) << 16 | (chunk[1] as u32) << 8 | chunk[2] as u32;
        for j in 0..4 {
            if i * 4 + j < 22 {
                key[i * 4 + j] = ALPHABET[(n >> (18 - 6 * j) & 63) as usize];
            }
        }
    }
    key
}

/// Appends an upgrade request for `path` on `host` with `key`.
pub fn write_request(out: &mut Vec<u8>, host: &str, path: &str, key: &[u8; 24]) {
    write_request_offering(out, host, path, key, None);
}

/// Like [`write_request`], offering the extensions in `extensions` (a
/// `Sec-WebSocket-Extensions` value, e.g. [`extension::CLIENT_OFFER`]).
pub fn write_request_offering(out: &mut Vec<u8>, host: &str, path: &str, key: &[u8; 24], extensions: Option<&str>) {
    out.extend_from_slice(b"GET ");
    out.extend_from_slice(path.as_bytes());
    out.extend_from_slice(b" HTTP/1.1\r\nHost: ");
    out.extend_from_slice(host.as_bytes());
    out.extend_from_slice(
        b"\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Key: ",
    );
    out.extend_from_slice(key);
    if let Some(extensions) = extensions {
        out.extend_from_slice(b"\r\nSec-WebSocket-Extensions: ");
        out.extend_from_slice(extensions.as_bytes());
    }
    out.extend_from_slice(b"\r\n\r\n");
}

/// Checks the server's reply in `buf`. `Ok(None)`: incomplete. `Ok(Some(n))`:
/// accepted, and the reply took `n` bytes (frames may follow). A reply that
/// accepts an extension fails: none was offered.
pub fn parse_response(buf: &[u8], key: &[u8; 24]) -> Result<Option<usize>, ClientHandshakeError> {
    match parse_response_terms(buf, key, false)? {
        Some(a) if a.deflate.is_some() => Err(ClientHandshakeError::BadExtension),
        a => Ok(a.map(|a| a.len)),
    }
}

/// [`parse_response`] for a request that may have offered permessage-deflate
/// (`offered`): the terms the server stated come back with the length.
pub fn parse_response_terms(
    buf: &[u8],
    key: &[u8; 24],
    offered: bool,
) -> Result<Option<Accepted>, ClientHandshakeError> {
    let mut headers = [httparse::EMPTY_HEADER; 32];
    let mut resp = httparse::Response::new(&mut headers);
    let len = match resp.parse(buf) {
        Ok(httparse::Status::Complete(n)) => n,
        Ok(httparse::Status::Partial) if buf.len() <= 8192 => return Ok(None),
        _ => return Err(ClientHandshakeError::Malformed),
    };
    let status = resp.code.ok_or(ClientHandshakeError::Malformed)?;
    if status != 101 {
        return Err(ClientHandshakeError::Status(status));
    }
    let expected = derive_accept_key(key);
    let accepted = resp
        .headers
        .iter()
        .any(|h| h.name.eq_ignore_ascii_case("sec-websocket-accept") && h.value == expected.as_bytes());
    if !accepted {
        return Err(ClientHandshakeError::BadAccept);
    }
    let mut deflate = None;
    for h in resp.headers.iter().filter(|h| h.name.eq_ignore_ascii_case("sec-websocket-extensions")) {
        let value = std::str::from_utf8(h.value).map_err(|_| ClientHandshakeError::BadExtension)?;
        let terms = extension::parse_response(value.trim()).ok_or(ClientHandshakeError::BadExtension)?;
        if !offered || deflate.replace(terms).is_some() {
            return Err(ClientHandshakeError::BadExtension);
        }
    }
    Ok(Some(Accepted { len, deflate }))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ws::handshake::{parse_request, write_accept, write_reject, HandshakeConfig};
    use crate::ws::HandshakeError;

    #[test]
    fn generated_keys_are_valid_and_differ() {
        let a = generate_key();
        let b = generate_key();
        assert_ne!(a, b);
        assert!(matches!(a[21], b'A' | b'Q' | b'g' | b'w'), "{}", String::from_utf8_lossy(&a));
        assert_eq!(&a[22..], b"==");
    }

    #[test]
    fn round_trip_with_the_server_side() {
        let key = generate_key();
        let mut req = Vec::new();
        write_request(&mut req, "127.0.0.1:8080", "/ws", &key);
        let mut scanned = 0;
        let parsed = parse_request(&req, &mut scanned, &HandshakeConfig::default()).unwrap().unwrap();
        let mut reply = Vec::new();
        write_accept(&mut reply, &parsed);
        let n = reply.len();
        reply.extend_from_slice(&[0x81, 0x00]);
        assert_eq!(parse_response(&reply[..n - 1], &key), Ok(None));
        assert_eq!(parse_response(&reply, &key), Ok(Some(n)));
        assert_eq!(parse_response(&reply, &generate_key()), Err(ClientHandshakeError::BadAccept));
    }

    #[test]
    fn deflate_terms_come_back_from_the_reply() {
        let key = generate_key();
        let mut req = Vec::new();
        write_request_offering(&mut req, "h", "/ws", &key, Some(extension::CLIENT_OFFER));
        let cfg = HandshakeConfig { deflate: Some(extension::DeflatePolicy::dedicated(11)), ..Default::default() };
        let parsed = parse_request(&req, &mut 0, &cfg).unwrap().unwrap();
        let mut reply = Vec::new();
        write_accept(&mut reply, &parsed);
        let accepted = parse_response_terms(&reply, &key, true).unwrap().unwrap();
        let terms = accepted.deflate.unwrap();
        assert_eq!((terms.server_window, terms.client_window, terms.server_takeover), (11, 11, true));
        // Not offered, yet accepted: the client fails the handshake.
        assert_eq!(parse_response(&reply, &key), Err(ClientHandshakeError::BadExtension));
    }

    #[test]
    fn refusal_status_is_reported() {
        let mut reply = Vec::new();
        write_reject(&mut reply, HandshakeError::Overloaded);
        assert_eq!(parse_response(&reply, &generate_key()), Err(ClientHandshakeError::Status(503)));
    }
}
