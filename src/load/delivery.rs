//! What a fan-out member receives, read for its send time. At millions of
//! deliveries a second the client shares the server's cores, so reading a
//! delivery must cost little: the exact shapes wsloop and the peers send
//! (`{"type":"message","room":"fanout","data":"<18-digit µs>…"}` and
//! `{"type":"broadcast","data":"…"}`) are read by their prefix, anything
//! else through the JSON parser, so a server that orders or spaces its
//! fields differently is still read right, only slower.

use serde::Deserialize;

/// A member's message, as far as the load generator cares.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Delivery {
    /// The server acknowledged the join.
    Joined,
    /// A publish or broadcast sent at this time (µs since the epoch, the
    /// publisher's clock: the first 18 characters of its data).
    SentAt(u128),
}

/// Digits of the send time at the start of a publish's data.
const STAMP_LEN: usize = 18;

impl Delivery {
    /// Reads a member's text message; `None` if it is neither a join
    /// acknowledgement nor a timed delivery (a mismatch).
    pub fn of(payload: &[u8]) -> Option<Delivery> {
        const PREFIXES: [&[u8]; 2] =
            [br#"{"type":"message","room":"fanout","data":""#, br#"{"type":"broadcast","data":""#];
        for prefix in PREFIXES {
            if let Some(rest) = payload.strip_prefix(prefix) {
                if let Some(stamp) = rest.get(..STAMP_LEN).and_then(parse_digits) {
                    if payload.ends_with(b"\"}") {
                        return Some(Delivery::SentAt(stamp));
                    }
                }
            }
        }
        Self::parsed(payload)
    }

    /// The general case: any JSON object with `type` and `data`.
    fn parsed(payload: &[u8]) -> Option<Delivery> {
        #[derive(Deserialize)]
        struct Message<'a> {
            #[serde(rename = "type")]
            kind: &'a str,
            data: Option<&'a str>,
        }
        let m: Message<'_> = serde_json::from_slice(payload).ok()?;
        match (m.kind, m.data.and_then(|d| d.as_bytes().get(..STAMP_LEN)).and_then(parse_digits)) {
            ("joined", _) => Some(Delivery::Joined),
            ("message" | "broadcast", Some(stamp)) => Some(Delivery::SentAt(stamp)),
            _ => None,
        }
    }
}

/// ASCII digits as a number; `None` if any byte is not a digit.
fn parse_digits(digits: &[u8]) -> Option<u128> {
    digits.iter().try_fold(0u128, |n, &b| b.is_ascii_digit().then(|| n * 10 + u128::from(b - b'0')))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_the_shapes_servers_send_by_their_prefix() {
        let wsloop = br#"{"type":"message","room":"fanout","data":"001795973405123456 sun"}"#;
        assert_eq!(Delivery::of(wsloop), Some(Delivery::SentAt(1_795_973_405_123_456)));
        let broadcast = br#"{"type":"broadcast","data":"001795973405123457"}"#;
        assert_eq!(Delivery::of(broadcast), Some(Delivery::SentAt(1_795_973_405_123_457)));
    }

    #[test]
    fn reads_other_orders_and_spacing_through_the_parser() {
        let reordered = br#"{"data":"001795973405123456","room":"fanout","type":"message"}"#;
        assert_eq!(Delivery::of(reordered), Some(Delivery::SentAt(1_795_973_405_123_456)));
        let spaced = br#"{ "type": "message", "room": "fanout", "data": "001795973405123456" }"#;
        assert_eq!(Delivery::of(spaced), Some(Delivery::SentAt(1_795_973_405_123_456)));
        assert_eq!(Delivery::of(br#"{"type":"joined","room":"fanout"}"#), Some(Delivery::Joined));
    }

    #[test]
    fn anything_else_is_a_mismatch() {
        for bad in [
            &br#"{"type":"message","room":"fanout","data":"12345"}"#[..],
            br#"{"type":"message","room":"fanout","data":"00179597340512345x"}"#,
            br#"{"type":"message","room":"fanout","data":"001795973405123456"#,
            br#"{"type":"error","error":"bad_request","message":"no"}"#,
            br#"{"type":"message","room":"fanout","data":null}"#,
            b"not json",
            b"",
        ] {
            assert_eq!(Delivery::of(bad), None, "{}", String::from_utf8_lossy(bad));
        }
    }
}
