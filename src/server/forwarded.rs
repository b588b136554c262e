//! Who the client is behind a proxy: the proxies trusted to say so
//! (`--trusted-proxies`, IPv4 and IPv6 CIDRs), whether the listener expects
//! a PROXY protocol header first (`--proxy-protocol`), and the client named
//! by an `X-Forwarded-For` or `Forwarded` (RFC 7239 `for=`) chain.
//!
//! Invariant: a header is read only when the peer that sent it is trusted
//! (the caller checks), and then it is walked from the right: the first
//! hop that is not a trusted proxy is the client, since everything left of
//! it was written by someone who could lie. At most [`MAX_HOPS`] hops are
//! looked at, so a long chain costs a bounded walk.

use std::fmt;
use std::net::IpAddr;
use std::str::FromStr;

/// Hops walked from the right at most before a chain is given up.
pub const MAX_HOPS: usize = 32;

/// One network: an address and how many leading bits of it count.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cidr {
    net: IpAddr,
    prefix: u8,
}

/// Why a `--trusted-proxies` entry was refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CidrError {
    /// The part before `/` is not an IPv4 or IPv6 address.
    BadAddress(String),
    /// The prefix is not a number up to 32 (IPv4) or 128 (IPv6).
    BadPrefix(String),
}

impl fmt::Display for CidrError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            CidrError::BadAddress(s) => write!(f, "{s:?} is not an IP address or CIDR (e.g. 10.0.0.0/8, fd00::/8)"),
            CidrError::BadPrefix(s) => write!(f, "{s:?}: the prefix length is past the address's bits"),
        }
    }
}

impl std::error::Error for CidrError {}

impl FromStr for Cidr {
    type Err = CidrError;

    /// `10.0.0.0/8`, `fd00::/8`, or one address (a /32 or /128).
    fn from_str(s: &str) -> Result<Cidr, CidrError> {
        let (addr, prefix) = s.split_once('/').map_or((s, None), |(a, p)| (a, Some(p)));
        let net: IpAddr = addr.parse().map_err(|_| CidrError::BadAddress(s.to_string()))?;
        let bits = if net.is_ipv4() { 32 } else { 128 };
        let prefix = match prefix {
            None => bits,
            Some(p) if !p.is_empty() && p.len() <= 3 && p.bytes().all(|b| b.is_ascii_digit()) => {
                p.parse::<u8>().ok().filter(|&n| n <= bits).ok_or_else(|| CidrError::BadPrefix(s.to_string()))?
            }
            Some(_) => return Err(CidrError::BadPrefix(s.to_string())),
        };
        Ok(Cidr { net, prefix })
    }
}

impl Cidr {
    /// True if `ip` is in this network (an IPv4-mapped IPv6 address as IPv4).
    pub fn contains(&self, ip: IpAddr) -> bool {
        match (self.net, ip.to_canonical()) {
            (IpAddr::V4(net), IpAddr::V4(ip)) => {
                same_prefix(u32::from(net).into(), u32::from(ip).into(), 32, self.prefix)
            }
            (IpAddr::V6(net), IpAddr::V6(ip)) => same_prefix(u128::from(net), u128::from(ip), 128, self.prefix),
            _ => false,
        }
    }
}

/// True if the leading `prefix` of `bits` bits of `a` and `b` agree.
fn same_prefix(a: u128, b: u128, bits: u8, prefix: u8) -> bool {
    let shift = u32::from(bits - prefix);
    a.checked_shr(shift).unwrap_or(0) == b.checked_shr(shift).unwrap_or(0)
}

/// The proxies trusted to name the client: a list of networks, empty by
/// default (no one is).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TrustedProxies(Vec<Cidr>);

impl FromStr for TrustedProxies {
    type Err = CidrError;

    /// A comma-separated list of CIDRs (spaces around each allowed).
    fn from_str(s: &str) -> Result<TrustedProxies, CidrError> {
        s.split(',').map(|c| c.trim().parse()).collect::<Result<_, _>>().map(TrustedProxies)
    }
}

impl TrustedProxies {
    /// True if `ip` is one of the trusted proxies.
    pub fn contains(&self, ip: IpAddr) -> bool {
        self.0.iter().any(|c| c.contains(ip))
    }

    /// True if no proxy is trusted.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

/// Which request header names the client, when the peer is trusted.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum ForwardedHeader {
    /// `X-Forwarded-For: client, proxy1, proxy2` (what HAProxy's `option
    /// forwardfor`, nginx and most cloud balancers write).
    #[default]
    XForwardedFor,
    /// RFC 7239 `Forwarded: for=client;proto=https, for=proxy1`.
    Forwarded,
    /// Neither: only the PROXY header or the socket names the client.
    None,
}

impl ForwardedHeader {
    /// The header's name, if one is read.
    pub fn name(self) -> Option<&'static str> {
        match self {
            ForwardedHeader::XForwardedFor => Some("x-forwarded-for"),
            ForwardedHeader::Forwarded => Some("forwarded"),
            ForwardedHeader::None => None,
        }
    }
}

/// How the listener learns its clients' addresses.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ProxyConfig {
    /// Every connection starts with a PROXY protocol header (v1 or v2)
    /// from a trusted proxy; others are refused at accept.
    pub proxy_protocol: bool,
    /// Who may send that header, or a forwarding header that is believed.
    pub trusted: TrustedProxies,
    /// The header read from a trusted peer.
    pub header: ForwardedHeader,
}

impl ProxyConfig {
    /// True if any connection's client may be someone other than its
    /// socket's peer (otherwise nothing per connection is kept or asked).
    pub fn is_on(&self) -> bool {
        self.proxy_protocol || !self.trusted.is_empty()
    }
}

/// Why a forwarding chain named no client.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum ChainError {
    /// A hop that is not an address (`unknown`, an obfuscated `_name`, garbage).
    BadHop,
    /// More than [`MAX_HOPS`] trusted hops.
    TooLong,
}

/// The client a forwarding chain names: the rightmost hop that is not a
/// trusted proxy (the leftmost if all are). `values` are the header's
/// lines in order; `Ok(None)` if there is no hop at all.
pub(crate) fn client_in_chain<'a>(
    header: ForwardedHeader,
    values: impl Iterator<Item = &'a str>,
    trusted: &TrustedProxies,
) -> Result<Option<IpAddr>, ChainError> {
    // Every line (the head bounds them): the rightmost are the nearest hops.
    let lines: Vec<&str> = values.collect();
    let mut leftmost = None;
    let hops = lines.iter().rev().flat_map(|line| line.rsplit(','));
    for (walked, hop) in hops.enumerate() {
        if walked == MAX_HOPS {
            return Err(ChainError::TooLong);
        }
        let ip = match header {
            ForwardedHeader::Forwarded => forwarded_for(hop),
            _ => hop_address(hop.trim()),
        }
        .ok_or(ChainError::BadHop)?;
        if !trusted.contains(ip) {
            return Ok(Some(ip));
        }
        leftmost = Some(ip);
    }
    Ok(leftmost)
}

/// The `for=` of one `Forwarded` element (`for=1.2.3.4;proto=http`).
fn forwarded_for(element: &str) -> Option<IpAddr> {
    let pair = element.split(';').find_map(|p| {
        let (k, v) = p.trim().split_once('=')?;
        k.eq_ignore_ascii_case("for").then_some(v)
    })?;
    let value = match pair.strip_prefix('"') {
        Some(quoted) => quoted.strip_suffix('"')?,
        None => pair,
    };
    hop_address(value)
}

/// An address as a hop writes it: `1.2.3.4`, `1.2.3.4:5678`, `2001:db8::1`
/// or `[2001:db8::1]:5678`.
fn hop_address(hop: &str) -> Option<IpAddr> {
    if let Ok(ip) = hop.parse() {
        return Some(ip);
    }
    if let Some(rest) = hop.strip_prefix('[') {
        let (ip, after) = rest.split_once(']')?;
        let port_ok = after.is_empty()
            || after.strip_prefix(':').is_some_and(|p| super::proxy_protocol::decimal_port(p).is_some());
        return port_ok.then(|| ip.parse().ok()).flatten();
    }
    let (ip, port) = hop.rsplit_once(':')?;
    super::proxy_protocol::decimal_port(port)?;
    ip.parse::<std::net::Ipv4Addr>().ok().map(IpAddr::V4)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    fn trusted(s: &str) -> TrustedProxies {
        s.parse().unwrap()
    }

    #[test]
    fn cidrs_match_their_networks_only() {
        let t = trusted("10.0.0.0/8, 192.0.2.1,fd00::/8,127.0.0.1/32");
        assert!(t.contains(ip("10.255.1.2")) && !t.contains(ip("11.0.0.1")));
        assert!(t.contains(ip("192.0.2.1")) && !t.contains(ip("192.0.2.2")));
        assert!(t.contains(ip("fd12::1")) && !t.contains(ip("fe80::1")));
        assert!(t.contains(ip("::ffff:10.0.0.1")), "IPv4-mapped is IPv4");
        assert!(!t.contains(ip("127.0.0.2")));
        let all = trusted("0.0.0.0/0,::/0");
        assert!(all.contains(ip("1.2.3.4")) && all.contains(ip("2001:db8::1")));
        assert!(TrustedProxies::default().is_empty());
    }

    #[test]
    fn bad_cidrs_say_which() {
        for (bad, want) in [
            ("10.0.0.0/33", CidrError::BadPrefix("10.0.0.0/33".into())),
            ("fd00::/129", CidrError::BadPrefix("fd00::/129".into())),
            ("10.0.0.0/", CidrError::BadPrefix("10.0.0.0/".into())),
            ("10.0.0.0/+8", CidrError::BadPrefix("10.0.0.0/+8".into())),
            ("10.0.0/8", CidrError::BadAddress("10.0.0/8".into())),
            ("haproxy", CidrError::BadAddress("haproxy".into())),
            ("", CidrError::BadAddress("".into())),
        ] {
            assert_eq!(bad.parse::<Cidr>(), Err(want), "{bad}");
        }
        assert!("10.0.0.0/8,,fd00::/8".parse::<TrustedProxies>().is_err());
    }

    #[test]
    fn the_rightmost_untrusted_hop_is_the_client() {
        let t = trusted("10.0.0.0/8");
        let xff = ForwardedHeader::XForwardedFor;
        let chain = |lines: &[&str]| client_in_chain(xff, lines.iter().copied(), &t);
        assert_eq!(chain(&["203.0.113.9"]), Ok(Some(ip("203.0.113.9"))));
        // A client's own forged entry sits left of the real one.
        assert_eq!(chain(&["6.6.6.6, 203.0.113.9, 10.0.0.2"]), Ok(Some(ip("203.0.113.9"))));
        // Two lines read as one list, in order (HAProxy adds a line).
        assert_eq!(chain(&["6.6.6.6", "203.0.113.9"]), Ok(Some(ip("203.0.113.9"))));
        assert_eq!(chain(&["10.0.0.3, 10.0.0.2"]), Ok(Some(ip("10.0.0.3"))), "all trusted: the leftmost");
        assert_eq!(chain(&["[2001:db8::9]:443", "203.0.113.9:5000"]), Ok(Some(ip("203.0.113.9"))));
        assert_eq!(chain(&[" 2001:db8::9 "]), Ok(Some(ip("2001:db8::9"))));
        assert_eq!(chain(&[]), Ok(None));
        assert_eq!(chain(&["unknown, 10.0.0.2"]), Err(ChainError::BadHop));
        assert_eq!(chain(&["garbage, 203.0.113.9"]), Ok(Some(ip("203.0.113.9"))), "left of the client: unread");
        assert_eq!(chain(&["1.2.3.4:99999"]), Err(ChainError::BadHop));
        assert_eq!(chain(&[""]), Err(ChainError::BadHop));
    }

    #[test]
    fn a_long_chain_is_walked_only_so_far() {
        let t = trusted("10.0.0.0/8");
        let long = vec!["10.0.0.1"; 10_000].join(",");
        let got = client_in_chain(ForwardedHeader::XForwardedFor, [long.as_str()].into_iter(), &t);
        assert_eq!(got, Err(ChainError::TooLong));
        let mut ok = vec!["10.0.0.1"; MAX_HOPS - 1];
        ok.insert(0, "203.0.113.9");
        let got = client_in_chain(ForwardedHeader::XForwardedFor, [ok.join(",").as_str()].into_iter(), &t);
        assert_eq!(got, Ok(Some(ip("203.0.113.9"))));
    }

    #[test]
    fn forwarded_for_pairs_are_read() {
        let t = trusted("10.0.0.0/8");
        let fwd = ForwardedHeader::Forwarded;
        let chain = |lines: &[&str]| client_in_chain(fwd, lines.iter().copied(), &t);
        assert_eq!(chain(&["for=192.0.2.60;proto=http;by=203.0.113.43"]), Ok(Some(ip("192.0.2.60"))));
        assert_eq!(chain(&["for=6.6.6.6, For=\"[2001:db8:cafe::17]:4711\""]), Ok(Some(ip("2001:db8:cafe::17"))));
        assert_eq!(chain(&["for=192.0.2.43, for=10.1.1.1;proto=https"]), Ok(Some(ip("192.0.2.43"))));
        assert_eq!(chain(&["for=unknown"]), Err(ChainError::BadHop));
        assert_eq!(chain(&["for=\"_hidden\""]), Err(ChainError::BadHop));
        assert_eq!(chain(&["proto=http"]), Err(ChainError::BadHop));
        assert_eq!(chain(&["for=\"192.0.2.1"]), Err(ChainError::BadHop));
    }
}
