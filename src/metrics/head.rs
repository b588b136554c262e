//! The request head of the metrics port, and the replies it gets: sans-io,
//! so each peer-controlled byte sequence is tested here as bytes.
//!
//! Invariant: a head is judged only from the bytes given, never more than
//! [`MAX_HEAD`] of them; a complete head within the bound is served even if
//! more bytes (a body, a pipelined request) follow it, and anything else is
//! either "wait for more" or one refusal with its status.

use std::fmt;

/// The largest request head served (request line and headers, with the
/// blank line); a longer one gets 431.
pub const MAX_HEAD: usize = 8 * 1024;

/// Headers a request may carry; more is malformed (400).
const MAX_HEADERS: usize = 64;

/// What a buffer of request bytes amounts to.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Head {
    /// The head has not ended yet, and is still under [`MAX_HEAD`].
    Incomplete,
    /// A complete `GET` for this path (the query string left off).
    Get(String),
    /// A request refused with a status of its own.
    Refused(Refusal),
}

/// Why a request head is refused: each has its status and a metric label.
/// The discriminant indexes the refusal counters (`Refusal::ALL` order).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Refusal {
    /// Not HTTP/1.x as httparse reads it: 400.
    Malformed = 0,
    /// Over [`MAX_HEAD`] bytes without ending: 431.
    HeaderTooLarge = 1,
    /// A method other than GET: 405 (with `Allow: GET`).
    Method = 2,
}

impl Refusal {
    /// Every refusal, in the order `/metrics` lists them.
    pub(crate) const ALL: [Refusal; 3] = [Refusal::Malformed, Refusal::HeaderTooLarge, Refusal::Method];

    /// The label of `wsloop_metrics_http_refused_total{reason}`.
    pub(crate) fn label(self) -> &'static str {
        match self {
            Refusal::Malformed => "malformed",
            Refusal::HeaderTooLarge => "header_too_large",
            Refusal::Method => "method",
        }
    }

    /// The reply it gets.
    pub(crate) fn reply(self) -> Vec<u8> {
        match self {
            Refusal::Malformed => reply(400, "text/plain", &[], format!("{self}\n").into_bytes()),
            Refusal::HeaderTooLarge => reply(431, "text/plain", &[], format!("{self}\n").into_bytes()),
            Refusal::Method => reply(405, "text/plain", &[("Allow", "GET")], format!("{self}\n").into_bytes()),
        }
    }
}

impl fmt::Display for Refusal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Refusal::Malformed => "bad request: not an HTTP/1.x request head",
            Refusal::HeaderTooLarge => "request header too large (8 KiB at most)",
            Refusal::Method => "only GET",
        })
    }
}

/// Reads the request head at the start of `buf`.
pub(crate) fn parse(buf: &[u8]) -> Head {
    let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut req = httparse::Request::new(&mut headers);
    match req.parse(buf) {
        Ok(httparse::Status::Complete(len)) if len > MAX_HEAD => Head::Refused(Refusal::HeaderTooLarge),
        Ok(httparse::Status::Complete(_)) => match (req.method, req.path) {
            (Some("GET"), Some(path)) => Head::Get(path.split('?').next().unwrap_or_default().to_string()),
            (Some(_), Some(_)) => Head::Refused(Refusal::Method),
            _ => Head::Refused(Refusal::Malformed),
        },
        Ok(httparse::Status::Partial) if buf.len() > MAX_HEAD => Head::Refused(Refusal::HeaderTooLarge),
        Ok(httparse::Status::Partial) => Head::Incomplete,
        Err(_) => Head::Refused(Refusal::Malformed),
    }
}

/// A whole HTTP/1.1 reply: status line, headers (`extra` besides the
/// content type and length), body. Always `Connection: close`: the port
/// serves one request per connection.
pub(crate) fn reply(status: u16, content_type: &str, extra: &[(&str, &str)], body: Vec<u8>) -> Vec<u8> {
    let phrase = match status {
        200 => "OK",
        400 => "Bad Request",
        404 => "Not Found",
        405 => "Method Not Allowed",
        431 => "Request Header Fields Too Large",
        503 => "Service Unavailable",
        _ => "Internal Server Error",
    };
    let mut out = format!("HTTP/1.1 {status} {phrase}\r\nContent-Type: {content_type}\r\n").into_bytes();
    for (name, value) in extra {
        out.extend_from_slice(format!("{name}: {value}\r\n").as_bytes());
    }
    out.extend_from_slice(format!("Content-Length: {}\r\nConnection: close\r\n\r\n", body.len()).as_bytes());
    out.extend_from_slice(&body);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn get(path: &str) -> Head {
        Head::Get(path.to_string())
    }

    #[test]
    fn a_whole_get_is_served_by_path_without_its_query() {
        assert_eq!(parse(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n"), get("/healthz"));
        assert_eq!(parse(b"GET /metrics?x=1&y HTTP/1.1\r\n\r\n"), get("/metrics"));
        // HAProxy's `option httpchk` sends HTTP/1.0 with no Host.
        assert_eq!(parse(b"GET /healthz HTTP/1.0\r\n\r\n"), get("/healthz"));
        // Bare LF line ends are read as httparse reads them: the same request.
        assert_eq!(parse(b"GET /healthz HTTP/1.1\nHost: x\n\n"), get("/healthz"));
    }

    #[test]
    fn an_unfinished_head_waits_for_more_at_every_cut() {
        let whole = b"GET /metrics HTTP/1.1\r\nHost: x\r\nAccept: */*\r\n\r\n";
        for cut in 0..whole.len() {
            assert_eq!(parse(&whole[..cut]), Head::Incomplete, "cut at {cut}");
        }
        assert_eq!(parse(whole), get("/metrics"));
    }

    #[test]
    fn bytes_after_a_complete_head_do_not_count_against_it() {
        let mut buf = b"GET /metrics HTTP/1.1\r\nContent-Length: 20000\r\n\r\n".to_vec();
        buf.extend(std::iter::repeat_n(b'x', 2 * MAX_HEAD));
        assert_eq!(parse(&buf), get("/metrics"));
    }

    #[test]
    fn a_head_over_the_bound_is_431_complete_or_not() {
        let mut open = b"GET /metrics HTTP/1.1\r\nX: ".to_vec();
        open.resize(MAX_HEAD, b'a');
        assert_eq!(parse(&open), Head::Incomplete, "exactly MAX_HEAD bytes may still end");
        open.push(b'a');
        assert_eq!(parse(&open), Head::Refused(Refusal::HeaderTooLarge));
        let mut whole = b"GET /metrics HTTP/1.1\r\nX: ".to_vec();
        whole.resize(MAX_HEAD, b'a');
        whole.extend_from_slice(b"\r\n\r\n");
        assert_eq!(parse(&whole), Head::Refused(Refusal::HeaderTooLarge));
    }

    #[test]
    fn other_methods_and_garbage_are_refused() {
        assert_eq!(parse(b"POST /metrics HTTP/1.1\r\n\r\n"), Head::Refused(Refusal::Method));
        assert_eq!(parse(b"HEAD /healthz HTTP/1.1\r\n\r\n"), Head::Refused(Refusal::Method));
        assert_eq!(parse(b"GET /metrics HTTP/2.0\r\n\r\n"), Head::Refused(Refusal::Malformed));
        assert_eq!(parse(b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03"), Head::Refused(Refusal::Malformed));
        assert_eq!(parse(b"GET /a b HTTP/1.1\r\n\r\n"), Head::Refused(Refusal::Malformed));
        assert_eq!(parse(b"GET /healthz HTTP/1.1\r\nNo colon here\r\n\r\n"), Head::Refused(Refusal::Malformed));
        let many: String = (0..MAX_HEADERS + 1).map(|i| format!("X{i}: y\r\n")).collect();
        let too_many = format!("GET /metrics HTTP/1.1\r\n{many}\r\n");
        assert_eq!(parse(too_many.as_bytes()), Head::Refused(Refusal::Malformed));
    }

    #[test]
    fn replies_say_their_length_and_that_the_connection_closes() {
        let r = String::from_utf8(reply(200, "text/plain", &[], b"ok\n".to_vec())).unwrap();
        assert_eq!(
            r,
            "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: 3\r\nConnection: close\r\n\r\nok\n"
        );
        let refused = String::from_utf8(Refusal::Method.reply()).unwrap();
        assert!(refused.starts_with("HTTP/1.1 405 Method Not Allowed\r\n"), "{refused}");
        assert!(refused.contains("\r\nAllow: GET\r\n"), "{refused}");
        assert!(String::from_utf8(Refusal::HeaderTooLarge.reply()).unwrap().starts_with("HTTP/1.1 431 "));
        assert!(String::from_utf8(Refusal::Malformed.reply()).unwrap().starts_with("HTTP/1.1 400 "));
    }
}
