//! Frame headers: decode from a byte buffer without touching the payload,
//! check the per-frame rules of RFC 6455 5.2, and encode headers for either
//! side. Header layout comes from tungstenite's `FrameHeader`; the rules
//! that depend on our role and limits are checked here.
//!
//! A decoded [`FrameHead`] is 24 bytes and `Copy`: it describes where the
//! payload sits in the caller's buffer, it never owns it.

use std::io::Cursor;

use tungstenite::protocol::frame::coding::{Control, Data, OpCode};
use tungstenite::protocol::frame::FrameHeader;

use super::error::ProtocolError;
use super::mask::apply_mask;

/// The largest header: 2 bytes + 8 bytes of length + 4 bytes of mask.
pub const MAX_HEADER_LEN: usize = 14;

/// The largest payload a control frame may carry (RFC 6455 5.5).
pub const MAX_CONTROL_PAYLOAD: usize = 125;

/// Which end of the connection we are: it decides which frames must be
/// masked (client to server) and which must not (server to client).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// We accept connections: incoming frames must be masked.
    Server,
    /// We open connections: incoming frames must not be masked, outgoing are.
    Client,
}

/// A frame header as decoded from the wire, with the payload's position.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FrameHead {
    /// Length of the payload in bytes.
    pub payload_len: u64,
    /// The masking key, if the frame is masked.
    pub mask: Option<[u8; 4]>,
    /// FIN: the last frame of a message.
    pub fin: bool,
    /// RSV1-3 as the low three bits.
    pub rsv: u8,
    /// The opcode, 0-15.
    pub opcode: u8,
    /// Bytes taken by the header; the payload starts here.
    pub header_len: u8,
}

/// Opcodes as RFC 6455 numbers them.
pub mod opcode {
    /// Continuation of a fragmented message.
    pub const CONTINUATION: u8 = 0x0;
    /// A text frame.
    pub const TEXT: u8 = 0x1;
    /// A binary frame.
    pub const BINARY: u8 = 0x2;
    /// Close.
    pub const CLOSE: u8 = 0x8;
    /// Ping.
    pub const PING: u8 = 0x9;
    /// Pong.
    pub const PONG: u8 = 0xa;
}

impl FrameHead {
    /// Decodes a header from the front of `buf`. `Ok(None)` means more bytes
    /// are needed; the buffer is never consumed in part.
    pub fn decode(buf: &[u8]) -> Result<Option<FrameHead>, ProtocolError> {
        let mut cursor = Cursor::new(buf);
        match FrameHeader::parse(&mut cursor) {
            Ok(Some((h, payload_len))) => Ok(Some(FrameHead {
                payload_len,
                mask: h.mask,
                fin: h.is_final,
                rsv: (h.rsv1 as u8) << 2 | (h.rsv2 as u8) << 1 | h.rsv3 as u8,
                opcode: u8::from(h.opcode),
                header_len: cursor.position() as u8,
            })),
            Ok(None) => Ok(None),
            // The only error a header parse over a slice can give.
            Err(_) => Err(ProtocolError::ReservedOpcode(buf[0] & 0x0f)),
        }
    }

    /// True for close, ping and pong.
    pub fn is_control(&self) -> bool {
        self.opcode & 0x8 != 0
    }

    /// Checks the rules that hold for one frame on its own (RFC 6455 5.2, 5.5):
    /// masking for the `role` that receives it, reserved bits, length, control
    /// frame rules and the frame size limit. Call before touching the payload.
    pub fn check(&self, role: Role, max_frame: u64) -> Result<(), ProtocolError> {
        self.check_with(role, max_frame, 0)
    }

    /// [`check`](Self::check), with the reserved bits in `allowed_rsv` (the
    /// low three bits, RSV1 = 4) allowed: an extension negotiated them.
    pub fn check_with(&self, role: Role, max_frame: u64, allowed_rsv: u8) -> Result<(), ProtocolError> {
        if self.mask.is_some() != (role == Role::Server) {
            return Err(ProtocolError::BadMask);
        }
        if self.rsv & !allowed_rsv != 0 {
            return Err(ProtocolError::ReservedBits);
        }
        if self.payload_len >> 63 != 0 {
            return Err(ProtocolError::InvalidLength);
        }
        if self.is_control() {
            if !self.fin {
                return Err(ProtocolError::FragmentedControl);
            }
            if self.payload_len > MAX_CONTROL_PAYLOAD as u64 {
                return Err(ProtocolError::ControlTooLong);
            }
        } else if self.payload_len > max_frame {
            return Err(ProtocolError::FrameTooLarge);
        }
        Ok(())
    }

    /// Header plus payload, in bytes. Only meaningful after [`check`](Self::check).
    pub fn frame_len(&self) -> usize {
        self.header_len as usize + self.payload_len as usize
    }
}

/// An encoded frame header, ready to go in front of its payload (for a
/// vectored write, or appended to a buffer). 15 bytes, on the stack.
#[derive(Debug, Clone, Copy)]
pub struct EncodedHead {
    bytes: [u8; MAX_HEADER_LEN],
    len: u8,
}

impl EncodedHead {
    /// Encodes a header for a frame of `payload_len` bytes.
    pub fn new(fin: bool, opcode: u8, payload_len: u64, mask: Option<[u8; 4]>) -> Self {
        let header =
            FrameHeader { is_final: fin, rsv1: false, rsv2: false, rsv3: false, opcode: op_from_u8(opcode), mask };
        let mut bytes = [0u8; MAX_HEADER_LEN];
        let mut cursor = Cursor::new(&mut bytes[..]);
        header.format(payload_len, &mut cursor).expect("a header always fits in 14 bytes");
        let len = cursor.position() as u8;
        EncodedHead { bytes, len }
    }

    /// The same header with RSV1 set: the first frame of a compressed
    /// message (RFC 7692 6).
    pub fn compressed(mut self) -> Self {
        self.bytes[0] |= 0x40;
        self
    }

    /// The header bytes.
    pub fn as_bytes(&self) -> &[u8] {
        &self.bytes[..self.len as usize]
    }
}

fn op_from_u8(op: u8) -> OpCode {
    match op {
        opcode::CONTINUATION => OpCode::Data(Data::Continue),
        opcode::TEXT => OpCode::Data(Data::Text),
        opcode::BINARY => OpCode::Data(Data::Binary),
        opcode::CLOSE => OpCode::Control(Control::Close),
        opcode::PING => OpCode::Control(Control::Ping),
        opcode::PONG => OpCode::Control(Control::Pong),
        other => OpCode::from(other & 0x0f),
    }
}

/// Appends one whole frame to `out`: header, then payload, masked with
/// `mask` when given (client side). The only allocation is `out` growing.
pub fn write_frame(out: &mut Vec<u8>, fin: bool, opcode: u8, payload: &[u8], mask: Option<[u8; 4]>) {
    write_head_and_payload(out, EncodedHead::new(fin, opcode, payload.len() as u64, mask), payload, mask);
}

/// Appends one whole compressed message as a single frame with RSV1 set;
/// `payload` is already compressed (see `deflate.rs`).
pub fn write_compressed_frame(out: &mut Vec<u8>, opcode: u8, payload: &[u8], mask: Option<[u8; 4]>) {
    let head = EncodedHead::new(true, opcode, payload.len() as u64, mask).compressed();
    write_head_and_payload(out, head, payload, mask);
}

fn write_head_and_payload(out: &mut Vec<u8>, head: EncodedHead, payload: &[u8], mask: Option<[u8; 4]>) {
    out.reserve(head.as_bytes().len() + payload.len());
    out.extend_from_slice(head.as_bytes());
    let start = out.len();
    out.extend_from_slice(payload);
    if let Some(mask) = mask {
        apply_mask(&mut out[start..], mask);
    }
}

/// Appends a close frame with `code` and `reason` (cut to fit 123 bytes on a
/// character boundary), or an empty close frame when `code` is `None`.
pub fn write_close(out: &mut Vec<u8>, code: Option<u16>, reason: &str, mask: Option<[u8; 4]>) {
    let mut payload = [0u8; MAX_CONTROL_PAYLOAD];
    let len = match code {
        None => 0,
        Some(code) => {
            let mut cut = reason.len().min(MAX_CONTROL_PAYLOAD - 2);
            while !reason.is_char_boundary(cut) {
                cut -= 1;
            }
            payload[..2].copy_from_slice(&code.to_be_bytes());
            payload[2..2 + cut].copy_from_slice(&reason.as_bytes()[..cut]);
            2 + cut
        }
    };
    write_frame(out, true, opcode::CLOSE, &payload[..len], mask);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn head(bytes: &[u8]) -> FrameHead {
        FrameHead::decode(bytes).unwrap().unwrap()
    }

    #[test]
    fn rfc_5_7_single_frame_unmasked_text() {
        let f = [0x81, 0x05, 0x48, 0x65, 0x6c, 0x6c, 0x6f];
        let h = head(&f);
        assert_eq!((h.fin, h.opcode, h.payload_len, h.header_len, h.mask), (true, 1, 5, 2, None));
        assert!(h.check(Role::Client, 1 << 20).is_ok());
        assert_eq!(h.check(Role::Server, 1 << 20), Err(ProtocolError::BadMask));
    }

    #[test]
    fn rfc_5_7_single_frame_masked_text() {
        let f = [0x81, 0x85, 0x37, 0xfa, 0x21, 0x3d, 0x7f, 0x9f, 0x4d, 0x51, 0x58];
        let h = head(&f);
        assert_eq!(h.mask, Some([0x37, 0xfa, 0x21, 0x3d]));
        assert_eq!(h.header_len, 6);
        let mut payload = f[6..].to_vec();
        apply_mask(&mut payload, h.mask.unwrap());
        assert_eq!(payload, b"Hello");
        assert!(h.check(Role::Server, 1 << 20).is_ok());
    }

    #[test]
    fn rfc_5_7_fragmented_unmasked_text() {
        let first = head(&[0x01, 0x03, 0x48, 0x65, 0x6c]);
        let last = head(&[0x80, 0x02, 0x6c, 0x6f]);
        assert_eq!((first.fin, first.opcode, first.payload_len), (false, opcode::TEXT, 3));
        assert_eq!((last.fin, last.opcode, last.payload_len), (true, opcode::CONTINUATION, 2));
    }

    #[test]
    fn rfc_5_7_ping_and_pong() {
        let ping = head(&[0x89, 0x05, 0x48, 0x65, 0x6c, 0x6c, 0x6f]);
        assert_eq!((ping.opcode, ping.payload_len), (opcode::PING, 5));
        let pong = head(&[0x8a, 0x85, 0x37, 0xfa, 0x21, 0x3d, 0x7f, 0x9f, 0x4d, 0x51, 0x58]);
        assert_eq!((pong.opcode, pong.payload_len), (opcode::PONG, 5));
    }

    #[test]
    fn rfc_5_7_256_and_64k_binary_lengths() {
        let h = head(&[0x82, 0x7e, 0x01, 0x00]);
        assert_eq!((h.payload_len, h.header_len), (256, 4));
        let h = head(&[0x82, 0x7f, 0, 0, 0, 0, 0, 1, 0, 0]);
        assert_eq!((h.payload_len, h.header_len), (65536, 10));
    }

    #[test]
    fn partial_headers_need_more() {
        let full = [0x82, 0xff, 0, 0, 0, 0, 0, 1, 0, 0, 1, 2, 3, 4];
        for cut in 0..full.len() {
            assert_eq!(FrameHead::decode(&full[..cut]), Ok(None), "cut {cut}");
        }
        assert_eq!(head(&full).header_len, 14);
    }

    #[test]
    fn reserved_opcodes_are_rejected() {
        for op in [3u8, 4, 5, 6, 7, 0xb, 0xc, 0xd, 0xe, 0xf] {
            let f = [0x80 | op, 0x80, 1, 2, 3, 4];
            assert_eq!(FrameHead::decode(&f), Err(ProtocolError::ReservedOpcode(op)));
        }
    }

    #[test]
    fn frame_rules() {
        let masked = |b0: u8, b1: u8| head(&[b0, 0x80 | b1, 0, 0, 0, 0]);
        assert_eq!(masked(0xc1, 0).check(Role::Server, 100), Err(ProtocolError::ReservedBits));
        assert_eq!(masked(0x91, 0).check(Role::Server, 100), Err(ProtocolError::ReservedBits));
        assert_eq!(masked(0x09, 0).check(Role::Server, 100), Err(ProtocolError::FragmentedControl));
        let long_ping = head(&[0x89, 0x80 | 126, 0, 126, 1, 2, 3, 4]);
        assert_eq!(long_ping.check(Role::Server, 1000), Err(ProtocolError::ControlTooLong));
        assert_eq!(masked(0x82, 101).check(Role::Server, 100), Err(ProtocolError::FrameTooLarge));
        assert!(masked(0x82, 100).check(Role::Server, 100).is_ok());
        // RSV1 only where an extension allows it.
        assert!(masked(0xc1, 0).check_with(Role::Server, 100, 4).is_ok());
        assert_eq!(masked(0xe1, 0).check_with(Role::Server, 100, 4), Err(ProtocolError::ReservedBits));
        let huge = head(&[0x82, 0xff, 0x80, 0, 0, 0, 0, 0, 0, 0, 1, 2, 3, 4]);
        assert_eq!(huge.check(Role::Server, u64::MAX), Err(ProtocolError::InvalidLength));
    }

    #[test]
    fn encode_matches_rfc_bytes() {
        let mut out = Vec::new();
        write_frame(&mut out, true, opcode::TEXT, b"Hello", None);
        assert_eq!(out, [0x81, 0x05, 0x48, 0x65, 0x6c, 0x6c, 0x6f]);
        out.clear();
        write_frame(&mut out, true, opcode::TEXT, b"Hello", Some([0x37, 0xfa, 0x21, 0x3d]));
        assert_eq!(out, [0x81, 0x85, 0x37, 0xfa, 0x21, 0x3d, 0x7f, 0x9f, 0x4d, 0x51, 0x58]);
        assert_eq!(EncodedHead::new(true, opcode::BINARY, 256, None).as_bytes(), [0x82, 0x7e, 1, 0]);
        out.clear();
        // RFC 7692 7.2.3.1: "Hello" compressed, in one frame.
        write_compressed_frame(&mut out, opcode::TEXT, &[0xf2, 0x48, 0xcd, 0xc9, 0xc9, 0x07, 0x00], None);
        assert_eq!(out, [0xc1, 0x07, 0xf2, 0x48, 0xcd, 0xc9, 0xc9, 0x07, 0x00]);
        assert_eq!(
            EncodedHead::new(true, opcode::BINARY, 65536, None).as_bytes(),
            [0x82, 0x7f, 0, 0, 0, 0, 0, 1, 0, 0]
        );
    }

    #[test]
    fn close_frames() {
        let mut out = Vec::new();
        write_close(&mut out, Some(1000), "bye", None);
        assert_eq!(out, [0x88, 0x05, 0x03, 0xe8, b'b', b'y', b'e']);
        out.clear();
        write_close(&mut out, None, "ignored", None);
        assert_eq!(out, [0x88, 0x00]);
        out.clear();
        let long = "é".repeat(100); // 200 bytes: cut to 122 on a boundary
        write_close(&mut out, Some(1001), &long, None);
        assert_eq!(out[1] as usize, 2 + 122);
        assert!(std::str::from_utf8(&out[4..]).is_ok());
    }
}
