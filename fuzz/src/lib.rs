//! What the fuzz targets share: how one fuzz input becomes both the bytes a
//! peer sent and the pieces the socket delivered them in, and a driver that
//! feeds a [`Session`] like the event loop does.
//!
//! Input layout: byte 0 is a count `k` (taken mod 16) of piece lengths that
//! follow; each of those bytes is a length (0 counts as 1), used in turn
//! until the rest of the input, the body, is cut up. Every input is valid,
//! and the fuzzer controls the bytes and where each read ends.

use wsloop::ws::deflate::Inflater;
use wsloop::ws::{Config, Decoded, Event, Inflation, Phase, Session, WsError};

/// The body of an input, and the piece lengths to deliver it in.
pub struct Plan<'a> {
    /// The bytes the peer sent.
    pub body: &'a [u8],
    lengths: &'a [u8],
}

impl<'a> Plan<'a> {
    /// Reads the layout described in the module docs.
    pub fn new(data: &'a [u8]) -> Plan<'a> {
        let Some((&k, rest)) = data.split_first() else {
            return Plan { body: &[], lengths: &[] };
        };
        let k = (k as usize % 16).min(rest.len());
        let (lengths, body) = rest.split_at(k);
        Plan { body, lengths }
    }

    /// The offsets at which each piece ends, the last one `body.len()`. No
    /// lengths: the body in one piece.
    pub fn ends(&self) -> Vec<usize> {
        let mut ends = Vec::new();
        let mut at = 0;
        let mut i = 0;
        while at < self.body.len() {
            let len = if self.lengths.is_empty() {
                self.body.len()
            } else {
                self.lengths[i % self.lengths.len()].max(1) as usize
            };
            at = (at + len).min(self.body.len());
            ends.push(at);
            i += 1;
        }
        ends
    }

    /// The body cut into its pieces.
    pub fn pieces(&self) -> Vec<&'a [u8]> {
        let mut start = 0;
        self.ends()
            .into_iter()
            .map(|end| {
                let piece = &self.body[start..end];
                start = end;
                piece
            })
            .collect()
    }
}

/// An event copied out of the session's buffers, to compare two runs.
#[derive(Debug, PartialEq, Eq)]
pub enum Owned {
    /// The upgrade, by path.
    Open(String),
    /// A text message.
    Text(String),
    /// A binary message.
    Binary(Vec<u8>),
    /// A ping payload.
    Ping(Vec<u8>),
    /// A pong payload.
    Pong(Vec<u8>),
    /// A close frame.
    Close(Option<u16>, String),
}

impl From<Event<'_>> for Owned {
    fn from(e: Event<'_>) -> Owned {
        match e {
            Event::Upgrade(r) => Owned::Open(r.path.to_string()),
            Event::Text(t) => Owned::Text(t.to_string()),
            Event::Binary(b) => Owned::Binary(b.to_vec()),
            Event::Ping(b) => Owned::Ping(b.to_vec()),
            Event::Pong(b) => Owned::Pong(b.to_vec()),
            Event::Close { code, reason } => Owned::Close(code, reason.to_string()),
        }
    }
}

/// What feeding a session some pieces produced.
#[derive(Debug, PartialEq, Eq)]
pub struct Run {
    /// Every event, in order.
    pub events: Vec<Owned>,
    /// Every byte the session wrote back (pongs, close replies, the 101).
    pub out: Vec<u8>,
    /// The error that ended it, if one did.
    pub error: Option<WsError>,
}

/// Feeds `pieces` to `session` as the event loop does: append to a pending
/// buffer, decode until no event, drop what was consumed. Checks the
/// decoder's promises on every call.
pub fn feed<'p>(session: Session, pieces: impl IntoIterator<Item = &'p [u8]>, cfg: &Config) -> Run {
    feed_with(session, pieces, cfg, None)
}

/// [`feed`], with compressed messages inflated by `inflater` (as the
/// event loop does for a connection that negotiated permessage-deflate).
pub fn feed_with<'p>(
    mut session: Session,
    pieces: impl IntoIterator<Item = &'p [u8]>,
    cfg: &Config,
    mut inflater: Option<Inflater>,
) -> Run {
    let mut pending: Vec<u8> = Vec::new();
    let mut inflated = Vec::new();
    let mut assembly = Vec::new();
    let mut run = Run { events: Vec::new(), out: Vec::new(), error: None };
    for piece in pieces {
        pending.extend_from_slice(piece);
        loop {
            let len = pending.len();
            let inflation = inflater.as_mut().map(|i| Inflation { inflater: i, output: &mut inflated });
            match session.decode_inflating(&mut pending, &mut assembly, &mut run.out, cfg, inflation) {
                Ok(Decoded { consumed, event, wanted }) => {
                    assert!(consumed <= len, "consumed {consumed} of {len}");
                    if let Some(Event::Upgrade(req)) = &event {
                        session.accept(&mut run.out, req);
                    }
                    let got = event.map(Owned::from);
                    pending.drain(..consumed);
                    match got {
                        Some(e) => run.events.push(e),
                        None => {
                            let closed = session.phase() == Phase::Closed;
                            assert!(closed || wanted > pending.len(), "wanted {wanted} with {} pending", pending.len());
                            break;
                        }
                    }
                }
                Err(e) => {
                    run.error = Some(e);
                    return run;
                }
            }
        }
    }
    run
}
