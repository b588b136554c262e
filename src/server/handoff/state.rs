//! What a connection carries to the new process: everything the engine
//! holds for it that is not its socket, as a record of bytes.
//!
//! ```text
//! session (11) | stage (1) | flags (1) | timer ms (4, u32::MAX: none)
//! | input (u32 len + bytes) | assembly (u32 + bytes) | unsent (u32 + bytes)
//! | rooms (u16 count, each u16 len + UTF-8) | handler (u32 len + bytes)
//! ```
//!
//! All integers little endian. A record is decoded against bounds (no
//! length past the record's end, no more rooms than [`MAX_ROOMS`], names no
//! longer than [`MAX_ROOM_NAME`], a session that passes
//! `Session::from_state`), so a record can never make the adopting engine
//! hold what it could not have held itself.

use std::fmt;

use crate::server::identity::{Verified, MAX_SUB_LEN};
use crate::ws::session::SESSION_STATE_LEN;

/// Rooms one carried connection may name.
pub(crate) const MAX_ROOMS: usize = 4096;
/// Bytes of one carried room name.
pub(crate) const MAX_ROOM_NAME: usize = 1024;

/// Where a carried connection is in its life (only the stages that move:
/// an ending connection finishes where it is).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum CarriedStage {
    /// Serving; its handshake or idle timer runs.
    Serving,
    /// The idle ping is out; its pong deadline runs.
    Pinged,
    /// Reads paused behind a backlog; its send deadline runs.
    Paused,
}

/// Carried flag: the handler saw `on_open` for it.
pub(crate) const CARRIED_OPENED: u8 = 1;
/// Carried flag: the peer's FIN was seen.
pub(crate) const CARRIED_PEER_CLOSED: u8 = 2;

/// One connection's state, as the old process hands it over.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct ConnState {
    /// `Session::to_state`.
    pub(crate) session: [u8; SESSION_STATE_LEN],
    pub(crate) stage: CarriedStage,
    /// `CARRIED_*` bits.
    pub(crate) flags: u8,
    /// Milliseconds left on its timer (which one follows from the stage
    /// and phase), if it was armed.
    pub(crate) timer_ms: Option<u32>,
    /// Bytes read but not yet handled (a partial frame or request).
    pub(crate) input: Vec<u8>,
    /// The fragmented message assembled so far.
    pub(crate) assembly: Vec<u8>,
    /// Bytes owed to the peer that the kernel had not taken, in order.
    pub(crate) unsent: Vec<u8>,
    /// The rooms it is a member of.
    pub(crate) rooms: Vec<String>,
    /// What the handler keeps for it (`Handler::on_handoff`).
    pub(crate) handler: Vec<u8>,
    /// Who it is (`--jwt-key`): user id, expiry and rights, if it has an
    /// identity.
    pub(crate) identity: Option<Verified>,
}

/// A record that cannot be a connection's state.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum StateError {
    /// The record ends inside a field.
    Truncated,
    /// Bytes follow the last field.
    TrailingBytes,
    /// The session bytes break a session invariant.
    BadSession,
    /// An unknown stage or flag.
    BadStage,
    /// More rooms than `MAX_ROOMS`, or a name too long or not UTF-8.
    BadRooms,
    /// An identity that does not parse or is out of the bounds a token's is.
    BadIdentity,
}

impl fmt::Display for StateError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            StateError::Truncated => "a connection record ends inside a field",
            StateError::TrailingBytes => "a connection record has bytes after its last field",
            StateError::BadSession => "a connection record's protocol state is not one a session can be in",
            StateError::BadStage => "a connection record has an unknown stage or flag",
            StateError::BadRooms => "a connection record names too many rooms, or a bad room name",
            StateError::BadIdentity => "a connection record's identity is malformed or out of bounds",
        })
    }
}

impl ConnState {
    /// Appends the record to `out`.
    pub(crate) fn encode(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(&self.session);
        out.push(match self.stage {
            CarriedStage::Serving => 0,
            CarriedStage::Pinged => 1,
            CarriedStage::Paused => 2,
        });
        out.push(self.flags);
        out.extend_from_slice(&self.timer_ms.unwrap_or(u32::MAX).to_le_bytes());
        for bytes in [&self.input, &self.assembly, &self.unsent] {
            put_bytes(out, bytes);
        }
        out.extend_from_slice(&(self.rooms.len() as u16).to_le_bytes());
        for room in &self.rooms {
            out.extend_from_slice(&(room.len() as u16).to_le_bytes());
            out.extend_from_slice(room.as_bytes());
        }
        put_bytes(out, &self.handler);
        // Serialising plain strings and numbers cannot fail.
        let identity = self.identity.as_ref().map(|v| serde_json::to_vec(v).unwrap_or_default());
        put_bytes(out, identity.as_deref().unwrap_or_default());
    }

    /// The record in `bytes` (exactly one).
    pub(crate) fn decode(bytes: &[u8]) -> Result<ConnState, StateError> {
        let mut r = Reader { rest: bytes };
        let session: [u8; SESSION_STATE_LEN] =
            r.take(SESSION_STATE_LEN)?.try_into().map_err(|_| StateError::Truncated)?;
        crate::ws::Session::from_state(&session).ok_or(StateError::BadSession)?;
        let stage = match r.u8()? {
            0 => CarriedStage::Serving,
            1 => CarriedStage::Pinged,
            2 => CarriedStage::Paused,
            _ => return Err(StateError::BadStage),
        };
        let flags = r.u8()?;
        if flags & !(CARRIED_OPENED | CARRIED_PEER_CLOSED) != 0 {
            return Err(StateError::BadStage);
        }
        let timer_ms = Some(r.u32()?).filter(|&ms| ms != u32::MAX);
        let input = r.bytes()?.to_vec();
        check_progress(&session, &input)?;
        let assembly = r.bytes()?.to_vec();
        let unsent = r.bytes()?.to_vec();
        let rooms = r.rooms()?;
        let handler = r.bytes()?.to_vec();
        let identity = decode_identity(r.bytes()?)?;
        if !r.rest.is_empty() {
            return Err(StateError::TrailingBytes);
        }
        Ok(ConnState { session, stage, flags, timer_ms, input, assembly, unsent, rooms, handler, identity })
    }
}

/// The session's progress names bytes the carried input holds: the
/// request bytes scanned (handshake), or the payload of the frame at the
/// front of the input already checked; never more, so a record cannot make
/// the session index past its input.
fn check_progress(session: &[u8; SESSION_STATE_LEN], input: &[u8]) -> Result<(), StateError> {
    let progress = u32::from_le_bytes([session[4], session[5], session[6], session[7]]) as usize;
    if progress == 0 {
        return Ok(());
    }
    let held = match session[10] {
        // The handshake: request bytes scanned.
        0 => input.len(),
        _ => match crate::ws::frame::FrameHead::decode(input) {
            Ok(Some(head)) => {
                let payload = input.len() - head.header_len as usize;
                payload.min(usize::try_from(head.payload_len).unwrap_or(usize::MAX))
            }
            _ => 0,
        },
    };
    if progress > held {
        return Err(StateError::BadSession);
    }
    Ok(())
}

/// Bytes of a carried identity at most: more than the largest a token's
/// bounds allow (a user id of 256 bytes, two lists of 64 patterns of 256,
/// 33 KiB of text), even with every character escaped in JSON (`\u0001`:
/// 6 bytes each).
const MAX_IDENTITY_LEN: usize = 256 * 1024;

/// A carried identity (empty: none), held to the bounds a token's claims
/// are: a record cannot give a connection rights no token could.
fn decode_identity(bytes: &[u8]) -> Result<Option<Verified>, StateError> {
    if bytes.is_empty() {
        return Ok(None);
    }
    if bytes.len() > MAX_IDENTITY_LEN {
        return Err(StateError::BadIdentity);
    }
    let verified: Verified = serde_json::from_slice(bytes).map_err(|_| StateError::BadIdentity)?;
    if verified.sub.is_empty() || verified.sub.len() > MAX_SUB_LEN {
        return Err(StateError::BadIdentity);
    }
    let rights = verified.rights.checked().map_err(|_| StateError::BadIdentity)?;
    Ok(Some(Verified { rights, ..verified }))
}

fn put_bytes(out: &mut Vec<u8>, bytes: &[u8]) {
    out.extend_from_slice(&(bytes.len() as u32).to_le_bytes());
    out.extend_from_slice(bytes);
}

/// Reads fields off the front of a record, never past its end.
pub(crate) struct Reader<'a> {
    pub(crate) rest: &'a [u8],
}

impl<'a> Reader<'a> {
    pub(crate) fn take(&mut self, n: usize) -> Result<&'a [u8], StateError> {
        if self.rest.len() < n {
            return Err(StateError::Truncated);
        }
        let (head, rest) = self.rest.split_at(n);
        self.rest = rest;
        Ok(head)
    }

    pub(crate) fn u8(&mut self) -> Result<u8, StateError> {
        Ok(self.take(1)?[0])
    }

    pub(crate) fn u16(&mut self) -> Result<u16, StateError> {
        let b = self.take(2)?;
        Ok(u16::from_le_bytes([b[0], b[1]]))
    }

    pub(crate) fn u32(&mut self) -> Result<u32, StateError> {
        let b = self.take(4)?;
        Ok(u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
    }

    /// A length-prefixed field (u32).
    pub(crate) fn bytes(&mut self) -> Result<&'a [u8], StateError> {
        let n = self.u32()? as usize;
        self.take(n)
    }

    fn rooms(&mut self) -> Result<Vec<String>, StateError> {
        let count = self.u16()? as usize;
        if count > MAX_ROOMS {
            return Err(StateError::BadRooms);
        }
        let mut rooms = Vec::with_capacity(count);
        for _ in 0..count {
            let len = self.u16()? as usize;
            if len > MAX_ROOM_NAME {
                return Err(StateError::BadRooms);
            }
            let name = std::str::from_utf8(self.take(len)?).map_err(|_| StateError::BadRooms)?;
            rooms.push(name.to_owned());
        }
        Ok(rooms)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> ConnState {
        let mut session = crate::ws::Session::server();
        let mut out = Vec::new();
        let mut req = b"GET / HTTP/1.1\r\nHost: x\r\n".to_vec();
        let mut asm = Vec::new();
        // Half a request: the session has scanned some of it.
        let _ = session.decode(&mut req, &mut asm, &mut out, &crate::ws::Config::default());
        ConnState {
            session: session.to_state().unwrap(),
            stage: CarriedStage::Pinged,
            flags: CARRIED_OPENED,
            timer_ms: Some(1234),
            input: req,
            assembly: vec![1, 2, 3],
            unsent: vec![0x81, 0x02, b'h', b'i'],
            rooms: vec!["lobby".into(), "chat:7".into()],
            handler: b"nick=ann".to_vec(),
            identity: Some(Verified {
                sub: "ann".into(),
                expires: 1_796_083_200,
                rights: crate::server::identity::Rights {
                    join: vec!["chat:*".into()],
                    publish: vec!["user:{sub}".into()],
                    broadcast: true,
                },
            }),
        }
    }

    #[test]
    fn a_carried_identity_is_held_to_a_tokens_bounds() {
        let mut state = sample();
        let encode = |state: &ConnState| {
            let mut bytes = Vec::new();
            state.encode(&mut bytes);
            bytes
        };
        state.identity = None;
        assert_eq!(ConnState::decode(&encode(&state)), Ok(state.clone()), "no identity");
        let mut bad = sample();
        if let Some(v) = &mut bad.identity {
            v.rights.join = vec!["a*b".into()];
        }
        assert_eq!(ConnState::decode(&encode(&bad)), Err(StateError::BadIdentity));
        let mut long = sample();
        if let Some(v) = &mut long.identity {
            v.sub = "x".repeat(MAX_SUB_LEN + 1);
        }
        assert_eq!(ConnState::decode(&encode(&long)), Err(StateError::BadIdentity));
        // Garbage in the identity field.
        let mut bytes = encode(&state);
        bytes.truncate(bytes.len() - 4);
        bytes.extend_from_slice(&3u32.to_le_bytes());
        bytes.extend_from_slice(b"{x}");
        assert_eq!(ConnState::decode(&bytes), Err(StateError::BadIdentity));
    }

    #[test]
    fn a_record_comes_back_whole() {
        let state = sample();
        let mut bytes = Vec::new();
        state.encode(&mut bytes);
        assert_eq!(ConnState::decode(&bytes), Ok(state));
    }

    #[test]
    fn every_cut_of_a_record_is_refused_never_a_panic() {
        let mut bytes = Vec::new();
        sample().encode(&mut bytes);
        for cut in 0..bytes.len() {
            assert!(ConnState::decode(&bytes[..cut]).is_err(), "cut at {cut}");
        }
        bytes.push(0);
        assert_eq!(ConnState::decode(&bytes), Err(StateError::TrailingBytes));
    }

    #[test]
    fn lengths_past_the_end_and_bad_fields_are_refused() {
        let mut bytes = Vec::new();
        sample().encode(&mut bytes);
        // The input's length claims 4 GiB.
        let mut huge = bytes.clone();
        huge[17..21].copy_from_slice(&u32::MAX.to_le_bytes());
        assert_eq!(ConnState::decode(&huge), Err(StateError::Truncated));
        let mut stage = bytes.clone();
        stage[11] = 9;
        assert_eq!(ConnState::decode(&stage), Err(StateError::BadStage));
        let mut phase = bytes.clone();
        phase[10] = 7;
        assert_eq!(ConnState::decode(&phase), Err(StateError::BadSession));
        let mut flags = bytes;
        flags[12] = 0x80;
        assert_eq!(ConnState::decode(&flags), Err(StateError::BadStage));
    }

    #[test]
    fn progress_past_the_carried_input_is_refused() {
        let mut state = sample();
        // Open, 100 bytes of a frame "checked", but only 2 payload bytes held.
        state.session = crate::ws::Session::server().to_state().unwrap();
        state.session[10] = 1;
        state.session[4..8].copy_from_slice(&100u32.to_le_bytes());
        state.input = vec![0x81, 0x80 | 120, 1, 2, 3, 4, b'h', b'i'];
        let mut bytes = Vec::new();
        state.encode(&mut bytes);
        assert_eq!(ConnState::decode(&bytes), Err(StateError::BadSession));
        state.session[4..8].copy_from_slice(&2u32.to_le_bytes());
        bytes.clear();
        state.encode(&mut bytes);
        assert!(ConnState::decode(&bytes).is_ok());
        // No frame head at all.
        state.input.clear();
        bytes.clear();
        state.encode(&mut bytes);
        assert_eq!(ConnState::decode(&bytes), Err(StateError::BadSession));
    }

    #[test]
    fn too_many_rooms_or_a_long_name_is_refused() {
        let mut state = sample();
        state.rooms = vec!["r".into(); MAX_ROOMS + 1];
        let mut bytes = Vec::new();
        state.encode(&mut bytes);
        assert_eq!(ConnState::decode(&bytes), Err(StateError::BadRooms));
        state.rooms = vec!["x".repeat(MAX_ROOM_NAME + 1)];
        bytes.clear();
        state.encode(&mut bytes);
        assert_eq!(ConnState::decode(&bytes), Err(StateError::BadRooms));
    }
}
