//! An admin request's head and body, read sans-io, so each hostile byte
//! sequence is tested here as bytes.
//!
//! Invariant: a head is judged from at most [`MAX_HEAD`] bytes and a body
//! is never more than [`MAX_BODY`]; anything else is "wait for more" or one
//! refusal with its status. Bodies are framed by `Content-Length` only
//! (a `Transfer-Encoding` is refused: 411), so where a request ends is
//! never a guess.

/// The largest request head (request line and headers, blank line included).
pub const MAX_HEAD: usize = 8 * 1024;
/// The largest request body.
pub const MAX_BODY: usize = 1 << 20;
/// Headers a request may carry; more is malformed (400).
const MAX_HEADERS: usize = 32;

/// A complete request head.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Head {
    /// `GET`, `POST`, ...
    pub method: String,
    /// The path, still percent-encoded, without the query.
    pub path: String,
    /// The query string (after `?`), still encoded; empty without one.
    pub query: String,
    /// The `Authorization` header's value, if any.
    pub authorization: Option<Vec<u8>>,
    /// The body's length (0 without `Content-Length`).
    pub content_length: usize,
    /// Bytes of the head, blank line included: the body starts there.
    pub len: usize,
}

/// A refusal: its status and a one-line message for the reply and the log.
pub type Refused = (u16, &'static str);

/// What a buffer of request bytes amounts to.
#[derive(Debug, PartialEq, Eq)]
pub enum Parsed {
    /// The head has not ended yet, and is still under [`MAX_HEAD`].
    Incomplete,
    /// A complete head.
    Head(Head),
    /// Refused as it stands.
    Refused(Refused),
}

/// Reads the request head at the start of `buf`.
pub fn parse(buf: &[u8]) -> Parsed {
    let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut req = httparse::Request::new(&mut headers);
    let len = match req.parse(buf) {
        Ok(httparse::Status::Complete(len)) if len <= MAX_HEAD => len,
        Ok(httparse::Status::Partial) if buf.len() <= MAX_HEAD => return Parsed::Incomplete,
        Ok(_) => return Parsed::Refused((431, "request head over 8 KiB")),
        Err(_) => return Parsed::Refused((400, "not an HTTP/1.x request head")),
    };
    let (Some(method), Some(target)) = (req.method, req.path) else {
        return Parsed::Refused((400, "not an HTTP/1.x request head"));
    };
    let (path, query) = target.split_once('?').unwrap_or((target, ""));
    let mut head = Head {
        method: method.to_string(),
        path: path.to_string(),
        query: query.to_string(),
        authorization: None,
        content_length: 0,
        len,
    };
    let mut lengths = 0;
    for h in req.headers.iter() {
        if h.name.eq_ignore_ascii_case("authorization") {
            head.authorization = Some(h.value.to_vec());
        } else if h.name.eq_ignore_ascii_case("transfer-encoding") {
            return Parsed::Refused((411, "send the body with Content-Length, not Transfer-Encoding"));
        } else if h.name.eq_ignore_ascii_case("content-length") {
            lengths += 1;
            let digits =
                std::str::from_utf8(h.value).ok().filter(|v| !v.is_empty() && v.bytes().all(|b| b.is_ascii_digit()));
            match digits.and_then(|v| v.parse::<usize>().ok()) {
                Some(n) => head.content_length = n,
                None => return Parsed::Refused((400, "Content-Length is not a number")),
            }
        }
    }
    if lengths > 1 {
        return Parsed::Refused((400, "more than one Content-Length"));
    }
    Parsed::Head(head)
}

/// `%XX` escapes decoded (`+` kept as it is: paths and our query values
/// are not forms); `None` for a bad escape or bytes that are not UTF-8.
pub fn percent_decode(s: &str) -> Option<String> {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = std::str::from_utf8(bytes.get(i + 1..i + 3)?).ok()?;
            out.push(u8::from_str_radix(hex, 16).ok()?);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).ok()
}

/// The decoded value of `name` in a query string, if present.
pub fn query_value(query: &str, name: &str) -> Option<Option<String>> {
    let pair = query.split('&').find(|pair| pair.split('=').next() == Some(name))?;
    Some(percent_decode(pair.split_once('=').map_or("", |(_, v)| v)))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn head(bytes: &[u8]) -> Head {
        match parse(bytes) {
            Parsed::Head(h) => h,
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn a_post_with_a_token_and_a_body() {
        let bytes =
            b"POST /publish?x=1 HTTP/1.1\r\nAuthorization: Bearer abc\r\nContent-Length: 12\r\n\r\n{\"room\":\"r\"}";
        let h = head(bytes);
        assert_eq!((h.method.as_str(), h.path.as_str(), h.query.as_str()), ("POST", "/publish", "x=1"));
        assert_eq!(h.authorization.as_deref(), Some(&b"Bearer abc"[..]));
        assert_eq!(h.content_length, 12);
        assert_eq!(&bytes[h.len..], b"{\"room\":\"r\"}");
        let h = head(b"GET /rooms HTTP/1.0\r\n\r\n");
        assert_eq!((h.content_length, h.authorization), (0, None));
    }

    #[test]
    fn every_cut_of_a_head_waits() {
        let whole = b"GET /rooms HTTP/1.1\r\nAuthorization: Bearer x\r\n\r\n";
        for cut in 0..whole.len() {
            assert_eq!(parse(&whole[..cut]), Parsed::Incomplete, "cut at {cut}");
        }
    }

    #[test]
    fn hostile_heads_are_refused_with_their_status() {
        let status = |bytes: &[u8]| match parse(bytes) {
            Parsed::Refused((status, _)) => status,
            other => panic!("{bytes:?}: {other:?}"),
        };
        assert_eq!(status(b"\x16\x03\x01\x02\x00\x01\x00"), 400);
        assert_eq!(status(b"POST /publish HTTP/1.1\r\nContent-Length: -1\r\n\r\n"), 400);
        assert_eq!(status(b"POST /publish HTTP/1.1\r\nContent-Length: 1e3\r\n\r\n"), 400);
        assert_eq!(status(b"POST /publish HTTP/1.1\r\nContent-Length: 99999999999999999999999\r\n\r\n"), 400);
        assert_eq!(status(b"POST /publish HTTP/1.1\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n"), 400);
        assert_eq!(status(b"POST /publish HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n"), 411);
        let mut long = b"GET /rooms HTTP/1.1\r\nX: ".to_vec();
        long.resize(MAX_HEAD + 1, b'a');
        assert_eq!(status(&long), 431);
        let many: String = (0..MAX_HEADERS + 1).map(|i| format!("X{i}: y\r\n")).collect();
        assert_eq!(status(format!("GET /rooms HTTP/1.1\r\n{many}\r\n").as_bytes()), 400);
    }

    #[test]
    fn names_and_queries_are_decoded() {
        assert_eq!(percent_decode("a%3Ab%20c+d").as_deref(), Some("a:b c+d"));
        assert_eq!(percent_decode("%C3%A9").as_deref(), Some("é"));
        for bad in ["%", "%4", "%zz", "%FF"] {
            assert_eq!(percent_decode(bad), None, "{bad}");
        }
        assert_eq!(query_value("limit=5&after=a%3Ab", "after"), Some(Some("a:b".into())));
        assert_eq!(query_value("limit=5&after=a%3Ab", "limit"), Some(Some("5".into())));
        assert_eq!(query_value("limits=5", "limit"), None);
        assert_eq!(query_value("limit", "limit"), Some(Some(String::new())));
    }
}
