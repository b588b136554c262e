//! Orders from outside the loops (the admin API, or another host's admin
//! API over Redis): plain data a loop carries out on its own connections
//! and answers, so nothing here knows about HTTP, the bridge or hand-offs.
//!
//! A [`Kick`] (close some connections with a code and a reason) also
//! travels between hosts: [`Kick::encode`] / [`Kick::decode`] are its bytes
//! on the Redis control channel. The invariant: a `Kick` is only ever made
//! by [`Kick::new`] or [`Kick::decode`], which both check the code (1000,
//! 1008 or 4000-4999) and bound the reason to [`MAX_REASON`] bytes of
//! UTF-8, so a loop never writes a close frame the protocol forbids.

use std::fmt;
use std::sync::Arc;

use crossbeam_channel::Sender;

use super::publication::Publication;

/// The longest close reason: a close frame's payload is at most 125 bytes,
/// two of which are the code.
pub const MAX_REASON: usize = 123;

/// Which connections an order is about.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Target {
    /// One connection of this process: its loop, slot and generation.
    Conn {
        /// The loop that holds it.
        loop_id: u32,
        /// Its slot in that loop.
        slot: u32,
        /// Its slot's generation (a reused slot is another connection).
        generation: u32,
    },
    /// Every member of a room.
    Room(Arc<str>),
    /// Every connection of a user (the identity's `sub`).
    User(Arc<str>),
}

/// Close the target's connections with this code and reason.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Kick {
    target: Target,
    code: u16,
    reason: Arc<str>,
}

/// Why a kick cannot be made or read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KickError {
    /// Not 1000, 1008 or 4000-4999.
    Code(u16),
    /// Over [`MAX_REASON`] bytes.
    ReasonTooLong(usize),
    /// A room or user name that is empty or over 65535 bytes.
    BadName,
    /// A connection target cannot leave the host that holds it.
    NotPortable,
    /// The bytes are no kick this build reads.
    Malformed(&'static str),
}

impl fmt::Display for KickError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            KickError::Code(c) => write!(f, "close code {c} is not 1000, 1008 or 4000-4999"),
            KickError::ReasonTooLong(n) => write!(f, "close reason of {n} bytes is over {MAX_REASON}"),
            KickError::BadName => f.write_str("the room or user name is empty or too long"),
            KickError::NotPortable => f.write_str("a connection id names a connection of this host only"),
            KickError::Malformed(why) => write!(f, "malformed kick: {why}"),
        }
    }
}

impl std::error::Error for KickError {}

/// The first byte of an encoded kick (its format version).
const VERSION: u8 = 1;
const ROOM: u8 = b'r';
const USER: u8 = b'u';

impl Kick {
    /// A checked kick (see the module docs).
    pub fn new(target: Target, code: u16, reason: &str) -> Result<Kick, KickError> {
        if !(code == 1000 || code == 1008 || (4000..=4999).contains(&code)) {
            return Err(KickError::Code(code));
        }
        if reason.len() > MAX_REASON {
            return Err(KickError::ReasonTooLong(reason.len()));
        }
        if let Target::Room(name) | Target::User(name) = &target {
            if name.is_empty() || name.len() > u16::MAX as usize {
                return Err(KickError::BadName);
            }
        }
        Ok(Kick { target, code, reason: reason.into() })
    }

    /// Which connections.
    pub fn target(&self) -> &Target {
        &self.target
    }

    /// The close code.
    pub fn code(&self) -> u16 {
        self.code
    }

    /// The close reason.
    pub fn reason(&self) -> &str {
        &self.reason
    }

    /// Its bytes for other hosts:
    /// `version (1) | kind 'r'|'u' (1) | code (2, BE) | name length (2, BE) | name | reason`.
    pub fn encode(&self) -> Result<Vec<u8>, KickError> {
        let (kind, name) = match &self.target {
            Target::Room(name) => (ROOM, name),
            Target::User(name) => (USER, name),
            Target::Conn { .. } => return Err(KickError::NotPortable),
        };
        let mut out = Vec::with_capacity(6 + name.len() + self.reason.len());
        out.extend_from_slice(&[VERSION, kind]);
        out.extend_from_slice(&self.code.to_be_bytes());
        out.extend_from_slice(&(name.len() as u16).to_be_bytes());
        out.extend_from_slice(name.as_bytes());
        out.extend_from_slice(self.reason.as_bytes());
        Ok(out)
    }

    /// Reads [`encode`](Self::encode)'s bytes, checked as [`new`](Self::new) checks.
    pub fn decode(bytes: &[u8]) -> Result<Kick, KickError> {
        let [version, kind, c0, c1, n0, n1, rest @ ..] = bytes else {
            return Err(KickError::Malformed("shorter than its 6-byte header"));
        };
        if *version != VERSION {
            return Err(KickError::Malformed("unknown version"));
        }
        let len = u16::from_be_bytes([*n0, *n1]) as usize;
        if rest.len() < len {
            return Err(KickError::Malformed("name cut short"));
        }
        let (name, reason) = (utf8(&rest[..len])?, utf8(&rest[len..])?);
        let target = match *kind {
            ROOM => Target::Room(name.into()),
            USER => Target::User(name.into()),
            _ => return Err(KickError::Malformed("unknown target kind")),
        };
        Kick::new(target, u16::from_be_bytes([*c0, *c1]), reason)
    }
}

fn utf8(bytes: &[u8]) -> Result<&str, KickError> {
    std::str::from_utf8(bytes).map_err(|_| KickError::Malformed("not UTF-8"))
}

/// What a loop is asked to do.
#[derive(Debug)]
pub enum Ask {
    /// Close the matching connections of this loop.
    Kick(Kick),
    /// Deliver `frame` to this loop's members of `room`.
    Publish {
        /// The room.
        room: Arc<str>,
        /// The message, encoded once for every loop.
        frame: Arc<Publication>,
    },
    /// This loop's rooms named after `after` (all without it), the first
    /// `limit` in name order, with their member counts here.
    Rooms {
        /// Names up to and including this one are left out (paging).
        after: Option<Arc<str>>,
        /// Rooms answered at most.
        limit: usize,
    },
    /// A room's members here: their count, and up to `limit` of them.
    Room {
        /// The room.
        name: Arc<str>,
        /// Connections listed at most.
        limit: usize,
    },
    /// A user's connections here: up to `limit` of them, and their count.
    User {
        /// The user id.
        name: Arc<str>,
        /// Connections listed at most.
        limit: usize,
    },
}

/// A connection as an answer names it.
pub type ConnRef = (u32, u32, u32);

/// A loop's answer.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Answer {
    /// Connections closed, messages owed (publish), or members / connections
    /// counted (room, user).
    pub count: u64,
    /// Rooms and their member counts here (`Rooms`), in name order.
    pub rooms: Vec<(Arc<str>, u64)>,
    /// Connections (loop, slot, generation) of `Room` and `User`.
    pub conns: Vec<ConnRef>,
    /// More than the limit matched.
    pub more: bool,
    /// The loop is frozen for a live hand-off: a kick or a listing was
    /// not carried out (its connections may be moving), a publish was.
    pub frozen: bool,
}

/// An ask and where to answer it (`None`: nobody waits, as for a kick
/// that came from another host).
#[derive(Debug)]
pub struct Order {
    /// What to do.
    pub ask: Ask,
    /// Where the loop sends its answer.
    pub reply: Option<Sender<Answer>>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_and_reasons_are_checked() {
        let room = || Target::Room("r".into());
        for code in [1000, 1008, 4000, 4999] {
            assert!(Kick::new(room(), code, "bye").is_ok(), "{code}");
        }
        for code in [0, 999, 1001, 1005, 1006, 1015, 3000, 3999, 5000, u16::MAX] {
            assert_eq!(Kick::new(room(), code, ""), Err(KickError::Code(code)));
        }
        assert!(Kick::new(room(), 4000, &"x".repeat(MAX_REASON)).is_ok());
        assert_eq!(Kick::new(room(), 4000, &"x".repeat(MAX_REASON + 1)), Err(KickError::ReasonTooLong(124)));
        assert_eq!(Kick::new(Target::User("".into()), 4000, ""), Err(KickError::BadName));
    }

    #[test]
    fn byte_layout() {
        let kick = Kick::new(Target::Room("ab".into()), 4001, "go").unwrap();
        let bytes = kick.encode().unwrap();
        assert_eq!(bytes, [1, b'r', 0x0F, 0xA1, 0, 2, b'a', b'b', b'g', b'o']);
        assert_eq!(Kick::decode(&bytes), Ok(kick));
        let kick = Kick::new(Target::User("é".into()), 1008, "").unwrap();
        assert_eq!(kick.encode().unwrap(), [1, b'u', 0x03, 0xF0, 0, 2, 0xC3, 0xA9]);
        assert_eq!(Kick::decode(&kick.encode().unwrap()), Ok(kick));
        let conn = Target::Conn { loop_id: 0, slot: 1, generation: 2 };
        assert_eq!(Kick::new(conn, 1000, "").unwrap().encode(), Err(KickError::NotPortable));
    }

    #[test]
    fn hostile_bytes_are_refused() {
        let cases: [&[u8]; 8] = [
            &[],
            &[1, b'r', 0x0F, 0xA0, 0],
            &[2, b'r', 0x0F, 0xA0, 0, 1, b'a'],
            &[1, b'x', 0x0F, 0xA0, 0, 1, b'a'],
            &[1, b'r', 0x0F, 0xA0, 0, 9, b'a'],
            &[1, b'r', 0x0F, 0xA0, 0, 1, 0xFF],
            &[1, b'r', 0x0F, 0xA0, 0, 1, b'a', 0xC3],
            &[1, b'r', 0x0F, 0xA0, 0, 0],
        ];
        for bytes in cases {
            assert!(Kick::decode(bytes).is_err(), "{bytes:?}");
        }
        assert_eq!(Kick::decode(&[1, b'r', 0x03, 0xE9, 0, 1, b'a']), Err(KickError::Code(1001)));
        let mut long = vec![1, b'r', 0x0F, 0xA0, 0, 1, b'a'];
        long.extend(std::iter::repeat_n(b'x', MAX_REASON + 1));
        assert_eq!(Kick::decode(&long), Err(KickError::ReasonTooLong(MAX_REASON + 1)));
    }
}
