//! What travels on a room's Redis channel: the message and which process
//! sent it, so the sender can skip its own publish when Redis echoes it back
//! (its local members already have it).
//!
//! ```text
//! 0xFF 'W' 'L' | version (1) | origin (8 bytes, little endian) | opcode (1) | payload
//! ```
//!
//! 13 bytes of header. 0xFF never occurs in UTF-8, so a text message that
//! someone else published on the channel (`redis-cli PUBLISH wsloop:room:lobby
//! hello`) can never be taken for an envelope: anything without the magic is
//! a foreign publish, delivered as text if it is valid UTF-8, else binary.

use std::fmt;

use crate::ws::frame::opcode;

const MAGIC: [u8; 3] = [0xFF, b'W', b'L'];
const VERSION: u8 = 1;
/// Bytes before the payload.
pub const HEADER_LEN: usize = 13;

/// A message read off a room channel.
#[derive(Debug, PartialEq, Eq)]
pub enum Envelope<'a> {
    /// Published by a wsloop process.
    Wsloop {
        /// The publishing process's id.
        origin: u64,
        /// Text or binary.
        op: u8,
        /// The message.
        payload: &'a [u8],
    },
    /// Published by something else: the raw bytes are the message.
    Foreign {
        /// Text if the bytes are UTF-8, else binary.
        op: u8,
        /// The message.
        payload: &'a [u8],
    },
}

/// Why an envelope was not understood.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EnvelopeError {
    /// The magic is there but the header is cut short.
    Truncated,
    /// A version this build does not speak (a newer wsloop on the channel).
    Version(u8),
    /// An opcode that is not text or binary.
    Opcode(u8),
}

impl fmt::Display for EnvelopeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            EnvelopeError::Truncated => write!(f, "envelope shorter than its {HEADER_LEN}-byte header"),
            EnvelopeError::Version(v) => write!(f, "envelope version {v} (this build speaks {VERSION})"),
            EnvelopeError::Opcode(op) => write!(f, "envelope opcode {op:#x} is not text or binary"),
        }
    }
}

impl std::error::Error for EnvelopeError {}

/// Appends the envelope of `payload` (a message of type `op`) to `out`.
pub fn encode(out: &mut Vec<u8>, origin: u64, op: u8, payload: &[u8]) {
    debug_assert!(op == opcode::TEXT || op == opcode::BINARY);
    out.reserve(HEADER_LEN + payload.len());
    out.extend_from_slice(&MAGIC);
    out.push(VERSION);
    out.extend_from_slice(&origin.to_le_bytes());
    out.push(op);
    out.extend_from_slice(payload);
}

/// Reads a channel message.
pub fn decode(bytes: &[u8]) -> Result<Envelope<'_>, EnvelopeError> {
    if !bytes.starts_with(&MAGIC) {
        let op = if std::str::from_utf8(bytes).is_ok() { opcode::TEXT } else { opcode::BINARY };
        return Ok(Envelope::Foreign { op, payload: bytes });
    }
    if bytes.len() < HEADER_LEN {
        return Err(EnvelopeError::Truncated);
    }
    if bytes[3] != VERSION {
        return Err(EnvelopeError::Version(bytes[3]));
    }
    let mut origin = [0u8; 8];
    origin.copy_from_slice(&bytes[4..12]);
    let op = bytes[12];
    if op != opcode::TEXT && op != opcode::BINARY {
        return Err(EnvelopeError::Opcode(op));
    }
    Ok(Envelope::Wsloop { origin: u64::from_le_bytes(origin), op, payload: &bytes[HEADER_LEN..] })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn byte_layout() {
        let mut out = Vec::new();
        encode(&mut out, 0x0102_0304_0506_0708, opcode::TEXT, b"hi");
        assert_eq!(out, [0xFF, b'W', b'L', 1, 8, 7, 6, 5, 4, 3, 2, 1, 0x1, b'h', b'i']);
        assert_eq!(
            decode(&out),
            Ok(Envelope::Wsloop { origin: 0x0102_0304_0506_0708, op: opcode::TEXT, payload: b"hi" })
        );
        out.clear();
        encode(&mut out, 7, opcode::BINARY, b"");
        assert_eq!(decode(&out), Ok(Envelope::Wsloop { origin: 7, op: opcode::BINARY, payload: b"" }));
    }

    #[test]
    fn foreign_publishes_are_the_message() {
        assert_eq!(decode(b"hello"), Ok(Envelope::Foreign { op: opcode::TEXT, payload: b"hello" }));
        assert_eq!(decode(b""), Ok(Envelope::Foreign { op: opcode::TEXT, payload: b"" }));
        // Not UTF-8 and not ours: binary, whole.
        assert_eq!(decode(&[0xC3, 0x28]), Ok(Envelope::Foreign { op: opcode::BINARY, payload: &[0xC3, 0x28] }));
        assert_eq!(decode(&[0xFF, b'W']), Ok(Envelope::Foreign { op: opcode::BINARY, payload: &[0xFF, b'W'] }));
    }

    #[test]
    fn broken_envelopes_are_errors() {
        assert_eq!(decode(&[0xFF, b'W', b'L', 1, 0, 0]), Err(EnvelopeError::Truncated));
        assert_eq!(decode(&[0xFF, b'W', b'L', 2, 0, 0, 0, 0, 0, 0, 0, 0, 1]), Err(EnvelopeError::Version(2)));
        assert_eq!(decode(&[0xFF, b'W', b'L', 1, 0, 0, 0, 0, 0, 0, 0, 0, 9]), Err(EnvelopeError::Opcode(9)));
    }
}
