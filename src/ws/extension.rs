//! permessage-deflate negotiation (RFC 7692 5, 7.1): read the client's
//! offers from `Sec-WebSocket-Extensions`, accept the first one the
//! server's [`DeflatePolicy`] can honour, and write the response.
//!
//! An offer with an unknown, duplicate or malformed parameter is declined
//! (RFC 7692 5: "the server MUST decline"), and so is one that limits the
//! server's window to 8 bits, which zlib's raw deflate cannot produce. A
//! declined offer is not an error: the next offer is tried, and with none
//! left the connection opens without compression.

use super::deflate::{MAX_WINDOW, MIN_DEFLATE_WINDOW};

/// The extension's registered name.
pub const PERMESSAGE_DEFLATE: &str = "permessage-deflate";

/// What the server is willing to agree to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DeflatePolicy {
    /// Keep the compression window between messages (both directions).
    /// Without it, every message starts fresh and the state can be shared
    /// by all connections of a loop.
    pub context_takeover: bool,
    /// The largest window the server compresses with, and (with takeover)
    /// the window it asks the client to keep to: 9-15.
    pub window_bits: u8,
}

impl DeflatePolicy {
    /// No context takeover in either direction: the shared codec's terms.
    pub fn shared() -> Self {
        DeflatePolicy { context_takeover: false, window_bits: MAX_WINDOW }
    }

    /// Context takeover with a window of `window_bits` (9-15) both ways.
    pub fn dedicated(window_bits: u8) -> Self {
        DeflatePolicy { context_takeover: true, window_bits: window_bits.clamp(MIN_DEFLATE_WINDOW, MAX_WINDOW) }
    }
}

/// The terms agreed for one connection. Five bytes, `Copy`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Deflate {
    /// The client offered `client_max_window_bits`: the response may state it.
    pub client_window_offered: bool,
    /// The server keeps its window between messages.
    pub server_takeover: bool,
    /// The client keeps its window between messages.
    pub client_takeover: bool,
    /// The server's window: what it compresses with.
    pub server_window: u8,
    /// The most the client's window may be: what the server inflates with.
    pub client_window: u8,
}

/// Parameters of one offer, as the client sent them.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
struct Offer {
    server_no_context_takeover: bool,
    client_no_context_takeover: bool,
    server_max_window_bits: Option<u8>,
    /// `Some(None)`: offered without a value (the client accepts a limit).
    client_max_window_bits: Option<Option<u8>>,
}

/// Negotiates permessage-deflate from every `Sec-WebSocket-Extensions`
/// value of a request, in order. `None`: no acceptable offer.
pub fn negotiate<'a>(values: impl IntoIterator<Item = &'a str>, policy: &DeflatePolicy) -> Option<Deflate> {
    values.into_iter().flat_map(split_list).filter_map(parse_offer).find_map(|o| accept(&o, policy))
}

/// The offer a client (the load generator) makes: permessage-deflate, and
/// any window limit the server asks for.
pub const CLIENT_OFFER: &str = "permessage-deflate; client_max_window_bits";

/// Reads the terms a server's response states (client side). `None`: not
/// a valid permessage-deflate response, which fails the handshake.
pub fn parse_response(value: &str) -> Option<Deflate> {
    let mut items = split_list(value);
    let offer = parse_offer(items.next()?)?;
    if items.next().is_some() {
        return None; // one extension was offered, one may be accepted
    }
    let client_window = match offer.client_max_window_bits {
        Some(None) => return None, // a response must give the value
        Some(Some(bits)) => bits,
        None => MAX_WINDOW,
    };
    Some(Deflate {
        client_window_offered: offer.client_max_window_bits.is_some(),
        server_takeover: !offer.server_no_context_takeover,
        client_takeover: !offer.client_no_context_takeover,
        server_window: offer.server_max_window_bits.unwrap_or(MAX_WINDOW),
        client_window,
    })
}

/// Decides whether `policy` can accept `offer`, and on what terms.
fn accept(offer: &Offer, policy: &DeflatePolicy) -> Option<Deflate> {
    let server_window = match offer.server_max_window_bits {
        Some(bits) if bits < MIN_DEFLATE_WINDOW => return None,
        Some(bits) => bits.min(policy.window_bits),
        None => policy.window_bits,
    };
    let client_window = match offer.client_max_window_bits {
        // The client accepts a limit: ask for ours when it keeps a window.
        Some(offered) if policy.context_takeover => offered.unwrap_or(MAX_WINDOW).min(policy.window_bits),
        Some(offered) => offered.unwrap_or(MAX_WINDOW),
        None => MAX_WINDOW,
    };
    Some(Deflate {
        client_window_offered: offer.client_max_window_bits.is_some(),
        server_takeover: policy.context_takeover && !offer.server_no_context_takeover,
        client_takeover: policy.context_takeover && !offer.client_no_context_takeover,
        server_window,
        client_window,
    })
}

impl Deflate {
    /// The same terms seen from the other end: what the server's codecs
    /// do for the server, the client's do for the client.
    pub fn mirrored(&self) -> Deflate {
        Deflate {
            client_window_offered: self.client_window_offered,
            server_takeover: self.client_takeover,
            client_takeover: self.server_takeover,
            server_window: self.client_window,
            client_window: self.server_window,
        }
    }

    /// Appends the response header line (with its CRLF) for these terms.
    /// Every term is stated, whether the client offered it or not, except a
    /// client window the client did not offer to limit (RFC 7692 7.1.2.2).
    pub fn write_response(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(b"Sec-WebSocket-Extensions: permessage-deflate");
        if !self.server_takeover {
            out.extend_from_slice(b"; server_no_context_takeover");
        }
        if !self.client_takeover {
            out.extend_from_slice(b"; client_no_context_takeover");
        }
        if self.server_window < MAX_WINDOW {
            out.extend_from_slice(format!("; server_max_window_bits={}", self.server_window).as_bytes());
        }
        if self.client_window_offered && self.client_window < MAX_WINDOW {
            out.extend_from_slice(format!("; client_max_window_bits={}", self.client_window).as_bytes());
        }
        out.extend_from_slice(b"\r\n");
    }
}

/// Splits a header value into its comma-separated items, keeping commas
/// inside quoted strings.
fn split_list(value: &str) -> impl Iterator<Item = &str> {
    let mut quoted = false;
    let mut start = 0;
    let mut items = Vec::new();
    for (i, c) in value.char_indices() {
        match c {
            '"' => quoted = !quoted,
            ',' if !quoted => {
                items.push(&value[start..i]);
                start = i + 1;
            }
            _ => {}
        }
    }
    items.push(&value[start..]);
    items.into_iter().map(str::trim).filter(|s| !s.is_empty())
}

/// Parses one `permessage-deflate; param[=value]...` item. `None`: another
/// extension, or an offer that must be declined.
fn parse_offer(item: &str) -> Option<Offer> {
    let mut parts = item.split(';').map(str::trim);
    if !parts.next()?.eq_ignore_ascii_case(PERMESSAGE_DEFLATE) {
        return None;
    }
    let mut offer = Offer::default();
    for part in parts {
        let (name, value) = match part.split_once('=') {
            Some((n, v)) => (n.trim(), Some(unquote(v.trim())?)),
            None => (part, None),
        };
        match (name.to_ascii_lowercase().as_str(), value) {
            ("server_no_context_takeover", None) if !offer.server_no_context_takeover => {
                offer.server_no_context_takeover = true
            }
            ("client_no_context_takeover", None) if !offer.client_no_context_takeover => {
                offer.client_no_context_takeover = true
            }
            ("server_max_window_bits", Some(v)) if offer.server_max_window_bits.is_none() => {
                offer.server_max_window_bits = Some(window_bits(v)?)
            }
            ("client_max_window_bits", v) if offer.client_max_window_bits.is_none() => {
                offer.client_max_window_bits = Some(match v {
                    Some(v) => Some(window_bits(v)?),
                    None => None,
                })
            }
            _ => return None,
        }
    }
    Some(offer)
}

/// A quoted-string's content (no escapes are valid in these values), or a token.
fn unquote(v: &str) -> Option<&str> {
    match v.strip_prefix('"') {
        Some(rest) => rest.strip_suffix('"').filter(|s| !s.contains('"')),
        None => Some(v),
    }
}

/// A window size: 8-15, written without leading zeros (RFC 7692 7.1.2).
fn window_bits(v: &str) -> Option<u8> {
    match v.as_bytes() {
        [d @ b'8'..=b'9'] => Some(d - b'0'),
        [b'1', d @ b'0'..=b'5'] => Some(10 + d - b'0'),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn shared(values: &[&str]) -> Option<Deflate> {
        negotiate(values.iter().copied(), &DeflatePolicy::shared())
    }

    fn response(d: Deflate) -> String {
        let mut out = Vec::new();
        d.write_response(&mut out);
        String::from_utf8(out).unwrap()
    }

    #[test]
    fn chromium_offer_under_the_shared_policy() {
        let d = shared(&["permessage-deflate; client_max_window_bits"]).unwrap();
        assert_eq!((d.server_takeover, d.client_takeover, d.server_window, d.client_window), (false, false, 15, 15));
        assert_eq!(
            response(d),
            "Sec-WebSocket-Extensions: permessage-deflate; server_no_context_takeover; client_no_context_takeover\r\n"
        );
    }

    #[test]
    fn dedicated_policy_limits_both_windows() {
        let policy = DeflatePolicy::dedicated(10);
        let d = negotiate(["permessage-deflate; client_max_window_bits"], &policy).unwrap();
        assert_eq!((d.server_takeover, d.client_takeover, d.server_window, d.client_window), (true, true, 10, 10));
        assert_eq!(
            response(d),
            "Sec-WebSocket-Extensions: permessage-deflate; server_max_window_bits=10; client_max_window_bits=10\r\n"
        );
        // A client that cannot limit its window is inflated with 15 bits.
        let d = negotiate(["permessage-deflate"], &policy).unwrap();
        assert_eq!((d.client_window, d.server_window), (15, 10));
        assert_eq!(response(d), "Sec-WebSocket-Extensions: permessage-deflate; server_max_window_bits=10\r\n");
        // The client's own requests are honoured.
        let d = negotiate(["permessage-deflate; server_no_context_takeover; server_max_window_bits=9"], &policy);
        let d = d.unwrap();
        assert_eq!((d.server_takeover, d.client_takeover, d.server_window, d.client_window), (false, true, 9, 15));
    }

    #[test]
    fn autobahn_13_offers() {
        // 13.3: the client limits the server's window.
        let d = shared(&["permessage-deflate; client_max_window_bits; server_max_window_bits=9"]).unwrap();
        assert_eq!(d.server_window, 9);
        assert!(response(d).contains("; server_max_window_bits=9"));
        // 13.7: three offers; the first is accepted.
        let d = shared(&[
            "permessage-deflate; client_no_context_takeover; client_max_window_bits; server_max_window_bits=9, \
             permessage-deflate; client_no_context_takeover; client_max_window_bits, \
             permessage-deflate; client_max_window_bits",
        ]);
        assert_eq!(d.map(|d| d.server_window), Some(9));
    }

    #[test]
    fn bad_offers_are_declined_and_the_next_one_tried() {
        for bad in [
            "permessage-deflate; server_max_window_bits",
            "permessage-deflate; server_max_window_bits=16",
            "permessage-deflate; server_max_window_bits=7",
            "permessage-deflate; server_max_window_bits=010",
            "permessage-deflate; client_max_window_bits=abc",
            "permessage-deflate; server_no_context_takeover=1",
            "permessage-deflate; server_no_context_takeover; server_no_context_takeover",
            "permessage-deflate; client_max_window_bits; client_max_window_bits=10",
            "permessage-deflate; unknown_parameter",
            "permessage-deflate; server_max_window_bits=\"10",
            // zlib cannot deflate raw with an 8-bit window.
            "permessage-deflate; server_max_window_bits=8",
            "x-webkit-deflate-frame",
        ] {
            assert_eq!(shared(&[bad]), None, "{bad}");
            if bad.contains('"') {
                continue; // an open quote runs to the end of the header
            }
            let fallback = format!("{bad}, permessage-deflate");
            assert!(shared(&[&fallback]).is_some(), "{fallback}");
        }
    }

    #[test]
    fn values_may_be_quoted_and_names_any_case() {
        let d = shared(&["PerMessage-Deflate; Server_Max_Window_Bits=\"12\"; client_max_window_bits=\"8\""]).unwrap();
        assert_eq!((d.server_window, d.client_window), (12, 8));
    }

    #[test]
    fn responses_read_back_as_the_terms_written() {
        for policy in [DeflatePolicy::shared(), DeflatePolicy::dedicated(9), DeflatePolicy::dedicated(12)] {
            for offer in [CLIENT_OFFER, "permessage-deflate", "permessage-deflate; server_max_window_bits=11"] {
                let agreed = negotiate([offer], &policy).unwrap();
                let line = response(agreed);
                let value = line.strip_prefix("Sec-WebSocket-Extensions: ").unwrap().trim_end();
                let read = parse_response(value).unwrap();
                assert_eq!(
                    (read.server_takeover, read.client_takeover, read.server_window),
                    (agreed.server_takeover, agreed.client_takeover, agreed.server_window),
                    "{line}"
                );
                if agreed.client_window_offered && policy.context_takeover {
                    assert_eq!(read.client_window, agreed.client_window);
                }
            }
        }
        assert_eq!(parse_response("permessage-deflate; client_max_window_bits"), None);
        assert_eq!(parse_response("permessage-deflate, permessage-deflate"), None);
        assert_eq!(parse_response("x-other"), None);
    }

    #[test]
    fn offers_may_span_several_headers() {
        let d = shared(&["x-custom; a=\"1,2\"", "permessage-deflate; server_max_window_bits=11"]).unwrap();
        assert_eq!(d.server_window, 11);
        assert_eq!(shared(&[]), None);
        assert_eq!(shared(&[" , "]), None);
    }
}
