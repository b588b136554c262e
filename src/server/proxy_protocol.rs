//! The PROXY protocol (HAProxy's, versions 1 and 2): the header a proxy
//! sends first on a connection to say which client it carries. Sans-io:
//! [`parse`] is given every byte received so far and answers
//! [`Parsed::Incomplete`] (give it more), [`Parsed::Done`] (the client's
//! address, if the header names one, and how many bytes the header took) or
//! a [`ProxyError`]. It never reads past the header and never looks at more
//! than [`MAX_HEADER`] bytes, so a peer cannot make it buffer or scan more.
//!
//! Invariant: a prefix of a valid header is `Incomplete`, never an error;
//! a byte that no valid header could have there is an error at once (an
//! HTTP request's first byte, say), so a misconfigured peer is refused
//! without waiting for the deadline.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

/// A v1 header's longest form, CRLF included (the specification's bound).
pub const MAX_V1: usize = 107;
/// The longest v2 header accepted, its 16 fixed bytes included: room for
/// the addresses and a few TLVs (HAProxy's `send-proxy-v2` sends none or
/// a few dozen bytes of them); a longer one is refused.
pub const MAX_HEADER: usize = 16 + 496;

/// v1 starts with these bytes.
const V1_PREFIX: &[u8] = b"PROXY ";
/// v2 starts with these bytes (chosen to be no valid HTTP or TLS start).
const V2_SIGNATURE: [u8; 12] = *b"\r\n\r\n\0\r\nQUIT\n";

/// What [`parse`] found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Parsed {
    /// A valid start, not yet whole.
    Incomplete {
        /// Bytes in all (more than given) that the next answer needs.
        wanted: usize,
    },
    /// A whole header.
    Done(Header),
}

/// A whole header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Header {
    /// The client's address; `None` where the header names none (v1
    /// `UNKNOWN`, v2 `LOCAL` or an unspecified family): the connection is
    /// the proxy's own, and the socket's address stands.
    pub source: Option<SocketAddr>,
    /// Bytes the header took; what follows is the connection's own input.
    pub len: usize,
}

/// Why a header was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProxyError {
    /// Neither the v1 nor the v2 signature.
    BadSignature,
    /// v1: no CRLF within its 107 bytes.
    V1TooLong,
    /// v1: not `PROXY TCP4|TCP6|UNKNOWN` with valid addresses and ports.
    V1Malformed,
    /// v2: a version other than 2.
    BadVersion,
    /// v2: a command other than LOCAL (0) or PROXY (1).
    BadCommand,
    /// v2: a family or transport other than TCP over IPv4/IPv6 (or unspecified).
    BadFamily,
    /// v2: the length says more than [`MAX_HEADER`] in all.
    TooLong,
    /// v2: the address block is shorter than its family needs.
    ShortAddress,
    /// v2: a TLV runs past the end of the header.
    BadTlv,
}

impl std::fmt::Display for ProxyError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            ProxyError::BadSignature => "not a PROXY protocol header",
            ProxyError::V1TooLong => "PROXY v1 header without CRLF within 107 bytes",
            ProxyError::V1Malformed => "malformed PROXY v1 header",
            ProxyError::BadVersion => "PROXY v2 header of an unknown version",
            ProxyError::BadCommand => "PROXY v2 header with an unknown command",
            ProxyError::BadFamily => "PROXY v2 header for a family other than TCP over IPv4/IPv6",
            ProxyError::TooLong => "PROXY v2 header longer than the bound",
            ProxyError::ShortAddress => "PROXY v2 address block too short for its family",
            ProxyError::BadTlv => "PROXY v2 TLV past the end of the header",
        })
    }
}

impl std::error::Error for ProxyError {}

/// Parses the header at the start of `buf` (every byte received so far).
pub fn parse(buf: &[u8]) -> Result<Parsed, ProxyError> {
    match buf.first() {
        None => Ok(Parsed::Incomplete { wanted: 1 }),
        Some(b'P') => parse_v1(buf),
        Some(b'\r') => parse_v2(buf),
        Some(_) => Err(ProxyError::BadSignature),
    }
}

/// `PROXY TCP4 1.2.3.4 5.6.7.8 1234 80\r\n`, or `PROXY UNKNOWN ...\r\n`.
fn parse_v1(buf: &[u8]) -> Result<Parsed, ProxyError> {
    let seen = buf.len().min(V1_PREFIX.len());
    if buf[..seen] != V1_PREFIX[..seen] {
        return Err(ProxyError::BadSignature);
    }
    check_v1_start(buf)?;
    let window = &buf[..buf.len().min(MAX_V1)];
    let Some(cr) = window.iter().position(|&b| b == b'\r') else {
        return if buf.len() >= MAX_V1 {
            Err(ProxyError::V1TooLong)
        } else {
            Ok(Parsed::Incomplete { wanted: buf.len() + 1 })
        };
    };
    match window.get(cr + 1) {
        None if cr + 1 >= MAX_V1 => return Err(ProxyError::V1TooLong),
        None => return Ok(Parsed::Incomplete { wanted: cr + 2 }),
        Some(b'\n') => {}
        Some(_) => return Err(ProxyError::V1Malformed),
    }
    let line = std::str::from_utf8(&buf[V1_PREFIX.len()..cr]).map_err(|_| ProxyError::V1Malformed)?;
    let source = v1_source(line)?;
    Ok(Parsed::Done(Header { source, len: cr + 2 }))
}

/// Refuses a v1 line as soon as its protocol word is wrong.
fn check_v1_start(buf: &[u8]) -> Result<(), ProxyError> {
    let rest = &buf[buf.len().min(V1_PREFIX.len())..];
    let fits = |word: &[u8]| {
        let n = rest.len().min(word.len());
        rest[..n] == word[..n]
    };
    if [&b"TCP4 "[..], b"TCP6 ", b"UNKNOWN"].iter().any(|w| fits(w)) {
        Ok(())
    } else {
        Err(ProxyError::V1Malformed)
    }
}

/// The client's address on a v1 line (after `PROXY `, before CRLF).
fn v1_source(line: &str) -> Result<Option<SocketAddr>, ProxyError> {
    let mut words = line.split(' ');
    let family = words.next().ok_or(ProxyError::V1Malformed)?;
    if family == "UNKNOWN" {
        // Whatever follows is to be ignored (the specification's words).
        return Ok(None);
    }
    let fields: Vec<&str> = words.collect();
    let [src, dst, sport, dport] = fields[..] else {
        return Err(ProxyError::V1Malformed);
    };
    // The destination is checked, not kept: a line must be whole to count.
    let (src, _dst): (IpAddr, IpAddr) = match family {
        "TCP4" => (v1_ip::<Ipv4Addr>(src)?.into(), v1_ip::<Ipv4Addr>(dst)?.into()),
        "TCP6" => (v1_ip::<Ipv6Addr>(src)?.into(), v1_ip::<Ipv6Addr>(dst)?.into()),
        _ => return Err(ProxyError::V1Malformed),
    };
    let sport = v1_port(sport)?;
    v1_port(dport)?;
    Ok(Some(SocketAddr::new(src, sport)))
}

fn v1_ip<A: std::str::FromStr>(s: &str) -> Result<A, ProxyError> {
    s.parse().map_err(|_| ProxyError::V1Malformed)
}

/// A port: 1 to 5 decimal digits, no sign, at most 65535.
fn v1_port(s: &str) -> Result<u16, ProxyError> {
    decimal_port(s).ok_or(ProxyError::V1Malformed)
}

/// A port written in decimal: 1 to 5 ASCII digits (no sign, no spaces),
/// at most 65535. The PROXY v1 line and forwarding headers both name ports
/// so.
pub(crate) fn decimal_port(s: &str) -> Option<u16> {
    if s.is_empty() || s.len() > 5 || !s.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    s.parse().ok()
}

/// The binary header: signature, version and command, family and
/// transport, length, then the address block and TLVs.
fn parse_v2(buf: &[u8]) -> Result<Parsed, ProxyError> {
    let seen = buf.len().min(V2_SIGNATURE.len());
    if buf[..seen] != V2_SIGNATURE[..seen] {
        return Err(ProxyError::BadSignature);
    }
    if let Some(&ver_cmd) = buf.get(12) {
        if ver_cmd >> 4 != 2 {
            return Err(ProxyError::BadVersion);
        }
        if ver_cmd & 0x0f > 1 {
            return Err(ProxyError::BadCommand);
        }
    }
    if let Some(&fam) = buf.get(13) {
        // UNSPEC, INET, INET6 over UNSPEC or STREAM; UNIX and DGRAM are no
        // connection this TCP listener could carry.
        if fam >> 4 > 2 || fam & 0x0f > 1 {
            return Err(ProxyError::BadFamily);
        }
    }
    if buf.len() < 16 {
        return Ok(Parsed::Incomplete { wanted: 16 });
    }
    let len = 16 + usize::from(u16::from_be_bytes([buf[14], buf[15]]));
    if len > MAX_HEADER {
        return Err(ProxyError::TooLong);
    }
    if buf.len() < len {
        return Ok(Parsed::Incomplete { wanted: len });
    }
    let block = &buf[16..len];
    let local = buf[12] & 0x0f == 0;
    let (source, used) = match buf[13] >> 4 {
        1 => (v2_inet(block)?, 12),
        2 => (v2_inet6(block)?, 36),
        _ => (None, block.len()),
    };
    check_tlvs(&block[used.min(block.len())..])?;
    // LOCAL: the proxy's own connection (a health check); its addresses,
    // if any, are not a client's.
    Ok(Parsed::Done(Header { source: if local { None } else { source }, len }))
}

fn v2_inet(block: &[u8]) -> Result<Option<SocketAddr>, ProxyError> {
    let a = block.get(..12).ok_or(ProxyError::ShortAddress)?;
    let ip = Ipv4Addr::new(a[0], a[1], a[2], a[3]);
    Ok(Some(SocketAddr::new(ip.into(), u16::from_be_bytes([a[8], a[9]]))))
}

fn v2_inet6(block: &[u8]) -> Result<Option<SocketAddr>, ProxyError> {
    let a = block.get(..36).ok_or(ProxyError::ShortAddress)?;
    let mut ip = [0u8; 16];
    ip.copy_from_slice(&a[..16]);
    Ok(Some(SocketAddr::new(Ipv6Addr::from(ip).into(), u16::from_be_bytes([a[32], a[33]]))))
}

/// Walks the TLVs after the addresses (type, 2-byte length, value) without
/// reading them: each must end within the header.
fn check_tlvs(mut tlvs: &[u8]) -> Result<(), ProxyError> {
    while !tlvs.is_empty() {
        let [_, hi, lo, ..] = *tlvs else {
            return Err(ProxyError::BadTlv);
        };
        let end = 3 + usize::from(u16::from_be_bytes([hi, lo]));
        tlvs = tlvs.get(end..).ok_or(ProxyError::BadTlv)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn addr(s: &str) -> Option<SocketAddr> {
        Some(s.parse().unwrap())
    }

    /// A v2 header: command, family byte, address block and TLVs.
    fn v2(command: u8, family: u8, body: &[u8]) -> Vec<u8> {
        let mut h = V2_SIGNATURE.to_vec();
        h.push(0x20 | command);
        h.push(family);
        h.extend_from_slice(&(body.len() as u16).to_be_bytes());
        h.extend_from_slice(body);
        h
    }

    const V4_BODY: [u8; 12] = [192, 0, 2, 7, 10, 0, 0, 1, 0x30, 0x39, 0, 80];

    fn v6_body() -> Vec<u8> {
        let mut b = Vec::new();
        b.extend_from_slice(&"2001:db8::7".parse::<Ipv6Addr>().unwrap().octets());
        b.extend_from_slice(&"2001:db8::1".parse::<Ipv6Addr>().unwrap().octets());
        b.extend_from_slice(&[0xd4, 0x31, 0x1f, 0x90]);
        b
    }

    /// Every prefix of `header` is `Incomplete`; the whole is `Done(source)`,
    /// also with the connection's own bytes after it.
    fn whole_and_truncated(header: &[u8], source: Option<SocketAddr>) {
        for cut in 0..header.len() {
            assert!(
                matches!(parse(&header[..cut]), Ok(Parsed::Incomplete { wanted }) if wanted > cut),
                "cut at {cut}: {:?}",
                parse(&header[..cut])
            );
        }
        let done = Parsed::Done(Header { source, len: header.len() });
        assert_eq!(parse(header), Ok(done));
        let mut more = header.to_vec();
        more.extend_from_slice(b"GET / HTTP/1.1\r\n");
        assert_eq!(parse(&more), Ok(done));
    }

    #[test]
    fn v1_tcp4_tcp6_and_unknown() {
        whole_and_truncated(b"PROXY TCP4 192.0.2.7 10.0.0.1 12345 80\r\n", addr("192.0.2.7:12345"));
        whole_and_truncated(b"PROXY TCP6 2001:db8::7 2001:db8::1 54321 8080\r\n", addr("[2001:db8::7]:54321"));
        whole_and_truncated(b"PROXY UNKNOWN\r\n", None);
        whole_and_truncated(b"PROXY UNKNOWN ffff::1 ffff::2 1 2\r\n", None);
    }

    #[test]
    fn v1_malformed_lines_are_refused() {
        for bad in [
            &b"PROXY TCP4 192.0.2.7 10.0.0.1 12345\r\n"[..],
            b"PROXY TCP4 192.0.2.777 10.0.0.1 1 80\r\n",
            b"PROXY TCP4 2001:db8::7 10.0.0.1 1 80\r\n",
            b"PROXY TCP6 192.0.2.7 10.0.0.1 1 80\r\n",
            b"PROXY TCP4 192.0.2.7 10.0.0.1 65536 80\r\n",
            b"PROXY TCP4 192.0.2.7 10.0.0.1 +1 80\r\n",
            b"PROXY TCP4  192.0.2.7 10.0.0.1 1 80\r\n",
            b"PROXY TCP4 192.0.2.7 10.0.0.1 1 80\rX",
            b"PROXY UDP4 192.0.2.7 10.0.0.1 1 80\r\n",
            b"PROXY TCP5",
            // Found by fuzzing: a wrong protocol word, then a CR still
            // waiting for its LF, was taken for a valid start.
            b"PROXY TCP6`2001:db8::7 2001:db8P6 204321 8080\r",
        ] {
            assert_eq!(parse(bad), Err(ProxyError::V1Malformed), "{:?}", String::from_utf8_lossy(bad));
        }
        for bad in [&b"PROXX"[..], b"GET / HTTP/1.1\r\n", b"\x16\x03\x01"] {
            assert_eq!(parse(bad), Err(ProxyError::BadSignature), "{bad:?}");
        }
    }

    #[test]
    fn v1_over_107_bytes_is_refused_at_107() {
        let mut long = b"PROXY UNKNOWN ".to_vec();
        long.resize(MAX_V1 - 1, b'x');
        assert!(matches!(parse(&long), Ok(Parsed::Incomplete { .. })));
        long.push(b'x');
        assert_eq!(parse(&long), Err(ProxyError::V1TooLong));
        long.extend_from_slice(b"\r\n");
        assert_eq!(parse(&long), Err(ProxyError::V1TooLong), "CRLF past 107 bytes");
        // The longest valid line, CRLF at bytes 106-107, is accepted.
        let mut edge = b"PROXY UNKNOWN ".to_vec();
        edge.resize(MAX_V1 - 2, b'y');
        edge.extend_from_slice(b"\r\n");
        assert_eq!(parse(&edge), Ok(Parsed::Done(Header { source: None, len: MAX_V1 })));
    }

    #[test]
    fn v2_tcp4_tcp6_with_tlvs() {
        whole_and_truncated(&v2(1, 0x11, &V4_BODY), addr("192.0.2.7:12345"));
        whole_and_truncated(&v2(1, 0x21, &v6_body()), addr("[2001:db8::7]:54321"));
        // TLVs (ALPN "h2", then a 0-length NOOP) are skipped.
        let mut body = V4_BODY.to_vec();
        body.extend_from_slice(&[0x01, 0x00, 0x02, b'h', b'2', 0x04, 0x00, 0x00]);
        whole_and_truncated(&v2(1, 0x11, &body), addr("192.0.2.7:12345"));
    }

    #[test]
    fn v2_local_and_unspec_mean_the_sockets_address() {
        whole_and_truncated(&v2(0, 0x00, &[]), None);
        whole_and_truncated(&v2(0, 0x11, &V4_BODY), None);
        whole_and_truncated(&v2(1, 0x00, &[]), None);
    }

    #[test]
    fn v2_bad_fields_are_refused_as_soon_as_seen() {
        let good = v2(1, 0x11, &V4_BODY);
        let with = |at: usize, byte: u8| {
            let mut h = good.clone();
            h[at] = byte;
            h
        };
        assert_eq!(parse(&with(3, b'X')[..4]), Err(ProxyError::BadSignature));
        assert_eq!(parse(&with(11, b'Z')), Err(ProxyError::BadSignature));
        assert_eq!(parse(&with(12, 0x11)[..13]), Err(ProxyError::BadVersion));
        assert_eq!(parse(&with(12, 0x22)[..13]), Err(ProxyError::BadCommand));
        assert_eq!(parse(&with(13, 0x31)[..14]), Err(ProxyError::BadFamily), "AF_UNIX");
        assert_eq!(parse(&with(13, 0x12)[..14]), Err(ProxyError::BadFamily), "DGRAM");
        assert_eq!(parse(&with(13, 0x41)[..14]), Err(ProxyError::BadFamily), "no such family");
        assert_eq!(parse(&v2(1, 0x11, &V4_BODY[..11])), Err(ProxyError::ShortAddress));
        assert_eq!(parse(&v2(1, 0x21, &V4_BODY)), Err(ProxyError::ShortAddress));
        let mut tlv = V4_BODY.to_vec();
        tlv.extend_from_slice(&[0x01, 0x00, 0x05, b'h']);
        assert_eq!(parse(&v2(1, 0x11, &tlv)), Err(ProxyError::BadTlv));
        tlv.truncate(14);
        assert_eq!(parse(&v2(1, 0x11, &tlv)), Err(ProxyError::BadTlv), "a TLV cut in its type and length");
    }

    #[test]
    fn v2_length_past_the_bound_is_refused_before_it_arrives() {
        let mut h = V2_SIGNATURE.to_vec();
        h.extend_from_slice(&[0x21, 0x11]);
        h.extend_from_slice(&((MAX_HEADER - 16 + 1) as u16).to_be_bytes());
        assert_eq!(parse(&h), Err(ProxyError::TooLong));
        h[15] -= 1;
        assert_eq!(parse(&h), Ok(Parsed::Incomplete { wanted: MAX_HEADER }));
        h[14..16].copy_from_slice(&u16::MAX.to_be_bytes());
        assert_eq!(parse(&h), Err(ProxyError::TooLong));
    }

    #[test]
    fn a_valid_start_never_asks_for_more_than_the_bounds() {
        for header in [v2(1, 0x11, &V4_BODY), b"PROXY TCP4 1.2.3.4 5.6.7.8 1 2\r\n".to_vec()] {
            for cut in 0..header.len() {
                if let Ok(Parsed::Incomplete { wanted }) = parse(&header[..cut]) {
                    assert!(wanted <= MAX_HEADER, "{wanted}");
                }
            }
        }
    }
}
