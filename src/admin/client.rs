//! The client side of the admin API, for `wsloop admin ...`: one blocking
//! request, one reply, with a deadline.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

use serde_json::Value;

use super::token::AdminToken;

/// How long a request may take in all (the server waits up to 2 s for
/// its event loops).
const TIMEOUT: Duration = Duration::from_secs(10);
/// The largest reply read (a room list of 10,000 long names fits).
const MAX_REPLY: u64 = 16 << 20;

/// Why a request got no reply.
#[derive(Debug)]
pub enum ClientError {
    /// Connecting, writing or reading failed.
    Io(std::io::Error),
    /// The reply is not an HTTP reply with a JSON body.
    BadReply(String),
}

impl std::fmt::Display for ClientError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ClientError::Io(e) => write!(f, "admin API: {e}"),
            ClientError::BadReply(why) => write!(f, "admin API: bad reply: {why}"),
        }
    }
}

impl std::error::Error for ClientError {}

/// Sends `method path` (with a JSON `body` if any) and returns the status
/// and the JSON reply.
pub fn call(
    addr: SocketAddr,
    token: &AdminToken,
    method: &str,
    path: &str,
    body: Option<&Value>,
) -> Result<(u16, Value), ClientError> {
    let mut stream = TcpStream::connect_timeout(&addr, TIMEOUT).map_err(ClientError::Io)?;
    stream.set_read_timeout(Some(TIMEOUT)).map_err(ClientError::Io)?;
    stream.set_write_timeout(Some(TIMEOUT)).map_err(ClientError::Io)?;
    let body = body.map(Value::to_string).unwrap_or_default();
    let mut request = format!("{method} {path} HTTP/1.1\r\nHost: {addr}\r\nAuthorization: Bearer ").into_bytes();
    request.extend_from_slice(token.expose());
    request.extend_from_slice(
        format!("\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n", body.len()).as_bytes(),
    );
    request.extend_from_slice(body.as_bytes());
    stream.write_all(&request).map_err(ClientError::Io)?;
    let mut reply = Vec::new();
    stream.take(MAX_REPLY).read_to_end(&mut reply).map_err(ClientError::Io)?;
    parse_reply(&reply)
}

/// The status and JSON body of a whole reply.
fn parse_reply(reply: &[u8]) -> Result<(u16, Value), ClientError> {
    let text = std::str::from_utf8(reply).map_err(|_| ClientError::BadReply("not UTF-8".into()))?;
    let (head, body) = text.split_once("\r\n\r\n").ok_or_else(|| ClientError::BadReply("no end of head".into()))?;
    let status = head.split(' ').nth(1).and_then(|s| s.parse().ok());
    let status = status.ok_or_else(|| ClientError::BadReply(head.lines().next().unwrap_or_default().into()))?;
    let json = serde_json::from_str(body).map_err(|e| ClientError::BadReply(e.to_string()))?;
    Ok((status, json))
}

/// `s` written for a path segment or query value (`%XX` for all but
/// unreserved characters).
pub fn encode(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn replies_and_names() {
        let (status, json) =
            parse_reply(b"HTTP/1.1 401 Unauthorized\r\nX: y\r\n\r\n{\"error\":\"unauthorized\"}\n").unwrap();
        assert_eq!((status, json["error"].as_str()), (401, Some("unauthorized")));
        assert!(parse_reply(b"HTTP/1.1 200 OK\r\n\r\nnot json").is_err());
        assert!(parse_reply(b"garbage").is_err());
        assert_eq!(encode("a:b c/é"), "a%3Ab%20c%2F%C3%A9");
        assert_eq!(crate::admin::request::percent_decode(&encode("a:b c/é")).as_deref(), Some("a:b c/é"));
    }
}
