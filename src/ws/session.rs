//! One connection's protocol state machine, sans-io: bytes in, events out,
//! reply bytes appended to the caller's output buffer.
//!
//! ```text
//!  Handshake --accept: 101--> Open --we send close--> CloseSent --peer's close--> Closed
//!      |                        |                                                 ^
//!      +--4xx (bad request, ----+--peer's close (echoed) / protocol error---------+
//!          or refuse)
//! ```
//!
//! A whole upgrade request is handed to the caller as [`Event::Upgrade`]
//! with nothing written: the caller decides who may connect, then calls
//! [`Session::accept`] (the 101) or [`Session::refuse`] (a 4xx).
//!
//! A [`Session`] is 12 bytes and owns no buffer. The caller owns the input
//! buffer (frames are unmasked in place and events borrow from it, so a
//! message that arrives in one frame is never copied), the assembly buffer
//! (only touched by fragmented messages) and the output buffer.

use super::deflate::{InflateError, InflaterSource};
use super::error::{HandshakeError, ProtocolError, WsError};
use super::extension::Deflate;
use super::frame::{opcode, write_close, write_compressed_frame, write_frame, FrameHead, Role, MAX_HEADER_LEN};
use super::handshake::{self, HandshakeConfig, Request};
use super::mask::apply_mask_at;
use super::utf8::Utf8Validator;

/// The largest frame payload any [`Limits`] can allow: a frame that arrives
/// in pieces is checked as it arrives, and how far is kept in 32 bits.
pub const MAX_FRAME: u64 = u32::MAX as u64;

/// Size limits on what a peer may send (RFC 6455 leaves them to us; 1009).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Largest payload of one frame; never more than [`MAX_FRAME`].
    pub max_frame: u64,
    /// Largest payload of one message, summed over its fragments.
    pub max_message: u64,
}

impl Default for Limits {
    /// 16 MiB frames, 64 MiB messages: what tungstenite allows, and enough
    /// for the Autobahn suite's largest cases.
    fn default() -> Self {
        Limits { max_frame: 16 << 20, max_message: 64 << 20 }
    }
}

/// Everything a session is checked against; one per server, shared.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Config {
    /// What an upgrade request must look like.
    pub handshake: HandshakeConfig,
    /// Frame and message size limits.
    pub limits: Limits,
}

/// Where a session is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Phase {
    /// Waiting for the upgrade request (server only).
    Handshake,
    /// Messages flow both ways.
    Open,
    /// We sent a close frame and wait for the peer's.
    CloseSent,
    /// The close handshake is over, or the connection failed: close TCP.
    Closed,
}

/// What the peer did, borrowing its payload from the caller's buffers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Event<'a> {
    /// A whole, valid upgrade request; nothing has been written yet. Answer
    /// it with [`Session::accept`] or [`Session::refuse`] before decoding
    /// further (frames may follow it in the same input).
    Upgrade(Request<'a>),
    /// A whole text message, UTF-8 checked.
    Text(&'a str),
    /// A whole binary message.
    Binary(&'a [u8]),
    /// A ping; the pong has been written already.
    Ping(&'a [u8]),
    /// A pong.
    Pong(&'a [u8]),
    /// The peer's close frame (code and reason checked). If we had not sent a
    /// close yet, the echo has been written. The session is now `Closed`.
    Close {
        /// The status code, if the frame had one.
        code: Option<u16>,
        /// The reason text, possibly empty.
        reason: &'a str,
    },
}

/// The result of one [`Session::decode`] call.
#[derive(Debug)]
pub struct Decoded<'a> {
    /// Bytes of the input used up; the caller drops them before the next call.
    pub consumed: usize,
    /// The event, or `None` when more input is needed.
    pub event: Option<Event<'a>>,
    /// With no event: the input length (counted after `consumed`) needed
    /// before the next call can make progress.
    pub wanted: usize,
}

/// Where a compressed message is inflated: the inflater to use (the
/// loop's shared one, or the connection's own) and the buffer the message
/// is inflated into, which the event borrows.
/// The inflater is borrowed for the call only (`'i`); the event borrows
/// the output (`'a`).
pub struct Inflation<'i, 'a> {
    /// Gives the inflater when a compressed message is whole (its takeover
    /// setting must match the terms); not asked otherwise.
    pub inflater: &'i mut dyn InflaterSource,
    /// Cleared, then filled with the inflated message.
    pub output: &'a mut Vec<u8>,
}

/// `Session::progress` in the handshake once the request is whole: the
/// caller must `accept` or `refuse` it before the next decode.
const AWAITING_VERDICT: u32 = u32::MAX;

/// `Session::ext` bit: permessage-deflate was negotiated.
const DEFLATE: u8 = 1;
/// `Session::ext` bit: the fragmented message in progress is compressed.
const COMPRESSED: u8 = 2;
/// `Session::ext` holds the server's deflate window bits from this bit up.
const WINDOW_SHIFT: u8 = 4;

/// The protocol state of one connection. 12 bytes (4 validator, 4 progress,
/// 4 one-byte fields); see the module docs.
#[derive(Debug, Clone)]
pub struct Session {
    /// Validates a text message across its frames and their pieces.
    utf8: Utf8Validator,
    /// In the handshake: bytes of the upgrade request already scanned. After
    /// it: payload bytes of the text-carrying frame at the front of the input
    /// already unmasked and validated, so that a frame arriving in pieces is
    /// checked as it arrives (fail fast) and no byte is unmasked twice. Zero
    /// whenever the front frame is not an unfinished text-carrying frame.
    progress: u32,
    /// The opcode of the fragmented message in progress, or 0 for none.
    fragmented: u8,
    /// Extension state: `DEFLATE`, `COMPRESSED` and the server's window bits.
    ext: u8,
    role: Role,
    phase: Phase,
}

/// True if `code` may appear in a close frame on the wire (RFC 6455 7.4,
/// IANA registry): 1000-1003, 1007-1014, 3000-4999.
pub fn is_valid_close_code(code: u16) -> bool {
    matches!(code, 1000..=1003 | 1007..=1014 | 3000..=4999)
}

impl Session {
    /// A server-side session waiting for its upgrade request.
    pub fn server() -> Self {
        Session::new(Role::Server, Phase::Handshake)
    }

    /// A client-side session whose handshake is done (see `ws::client`).
    pub fn client() -> Self {
        Session::new(Role::Client, Phase::Open)
    }

    fn new(role: Role, phase: Phase) -> Self {
        Session { utf8: Utf8Validator::new(), progress: 0, fragmented: 0, ext: 0, role, phase }
    }

    /// Turns permessage-deflate on with `terms` (the server does this
    /// itself when it accepts an offer; a client after the 101 names them).
    pub fn enable_deflate(&mut self, terms: &Deflate) {
        let window = match self.role {
            Role::Server => terms.server_window,
            Role::Client => terms.client_window,
        };
        self.ext = DEFLATE | window << WINDOW_SHIFT;
    }

    /// The window bits this side compresses with, if permessage-deflate
    /// was negotiated; `None` means every message goes out uncompressed.
    pub fn deflate_window(&self) -> Option<u8> {
        (self.ext & DEFLATE != 0).then_some(self.ext >> WINDOW_SHIFT)
    }

    /// The current phase.
    pub fn phase(&self) -> Phase {
        self.phase
    }

    /// True while a fragmented message is being assembled; the caller must
    /// keep the assembly buffer until it is false again.
    pub fn is_assembling(&self) -> bool {
        self.fragmented != 0
    }

    /// True if messages may still be sent.
    pub fn can_send(&self) -> bool {
        self.phase == Phase::Open
    }

    /// Decodes the next event from the front of `input`.
    ///
    /// Frames are unmasked in place. A fragmented message is collected in
    /// `assembly`; automatic replies (pongs, close echoes, the close frame
    /// or HTTP error of a failure) are appended to `out`; a whole upgrade
    /// request waits for [`accept`](Self::accept) or
    /// [`refuse`](Self::refuse). On `Err` the
    /// session is `Closed`: write out `out`, then close the connection.
    pub fn decode<'a>(
        &mut self,
        input: &'a mut [u8],
        assembly: &'a mut Vec<u8>,
        out: &mut Vec<u8>,
        cfg: &Config,
    ) -> Result<Decoded<'a>, WsError> {
        self.decode_inflating(input, assembly, out, cfg, None)
    }

    /// [`decode`](Self::decode) for a session that may have negotiated
    /// permessage-deflate: a compressed message is inflated with
    /// `inflation` (bounded by the message limit) and its event borrows the
    /// inflated bytes. Without `inflation`, a compressed message fails the
    /// connection (1002), as if nothing had been negotiated.
    pub fn decode_inflating<'a>(
        &mut self,
        input: &'a mut [u8],
        assembly: &'a mut Vec<u8>,
        out: &mut Vec<u8>,
        cfg: &Config,
        inflation: Option<Inflation<'_, 'a>>,
    ) -> Result<Decoded<'a>, WsError> {
        debug_assert!(!self.awaits_verdict(), "an Event::Upgrade was not answered");
        let result = match self.phase {
            Phase::Handshake => self.decode_handshake(input, &cfg.handshake),
            Phase::Open | Phase::CloseSent => self.decode_frames(input, assembly, out, &cfg.limits, inflation),
            Phase::Closed => Ok(Decoded { consumed: input.len(), event: None, wanted: 0 }),
        };
        if let Err(e) = result {
            match e {
                WsError::Handshake(h) => handshake::write_reject(out, h),
                WsError::Protocol(p) if self.phase == Phase::Open => {
                    write_close(out, Some(p.close_code()), p.reason(), self.mask())
                }
                WsError::Protocol(_) => {}
            }
            self.phase = Phase::Closed;
            self.progress = 0;
            self.abandon_message();
        }
        self.debug_check_invariants();
        result
    }

    /// What must hold between two calls, whatever the input was.
    #[inline]
    fn debug_check_invariants(&self) {
        debug_assert!(matches!(self.fragmented, 0 | opcode::TEXT | opcode::BINARY));
        debug_assert!(self.phase != Phase::Closed || (self.fragmented == 0 && self.progress == 0));
        debug_assert!(self.phase != Phase::Handshake || (self.role == Role::Server && self.fragmented == 0));
        debug_assert!(self.ext & COMPRESSED == 0 || (self.ext & DEFLATE != 0 && self.fragmented != 0));
        self.utf8.debug_check_invariants();
    }

    fn decode_handshake<'a>(&mut self, input: &'a [u8], cfg: &HandshakeConfig) -> Result<Decoded<'a>, WsError> {
        let mut scanned = self.progress as usize;
        let parsed = handshake::parse_request(input, &mut scanned, cfg);
        self.progress = scanned.min(AWAITING_VERDICT as usize - 1) as u32;
        match parsed? {
            None => Ok(Decoded { consumed: 0, event: None, wanted: input.len() + 1 }),
            Some(req) => {
                self.progress = AWAITING_VERDICT;
                Ok(Decoded { consumed: req.head_len, event: Some(Event::Upgrade(req)), wanted: 0 })
            }
        }
    }

    /// Accepts the upgrade request just decoded: appends the 101 (with the
    /// agreed subprotocol and deflate terms) and opens the session.
    pub fn accept(&mut self, out: &mut Vec<u8>, req: &Request<'_>) {
        debug_assert!(self.awaits_verdict(), "accept answers an Event::Upgrade");
        handshake::write_accept(out, req);
        if let Some(terms) = &req.deflate {
            self.enable_deflate(terms);
        }
        self.phase = Phase::Open;
        self.progress = 0;
    }

    /// Refuses the upgrade request just decoded with `err` (a 401, 403 or
    /// 429, say; `retry_after` seconds for a 429 or 503): appends the reply
    /// and closes the session. Returns the error to end the connection with.
    pub fn refuse(&mut self, out: &mut Vec<u8>, err: HandshakeError, retry_after: u32) -> WsError {
        debug_assert!(self.awaits_verdict(), "refuse answers an Event::Upgrade");
        handshake::write_reject_after(out, err, retry_after);
        self.phase = Phase::Closed;
        self.progress = 0;
        WsError::Handshake(err)
    }

    /// True between an [`Event::Upgrade`] and its `accept` or `refuse`.
    fn awaits_verdict(&self) -> bool {
        self.phase == Phase::Handshake && self.progress == AWAITING_VERDICT
    }

    fn decode_frames<'a>(
        &mut self,
        input: &'a mut [u8],
        assembly: &'a mut Vec<u8>,
        out: &mut Vec<u8>,
        limits: &Limits,
        mut inflation: Option<Inflation<'_, 'a>>,
    ) -> Result<Decoded<'a>, WsError> {
        let mut pos = 0;
        loop {
            let available = input.len() - pos;
            let need_more = |wanted: usize| {
                debug_assert!(wanted > available, "a call without an event must ask for more input");
                Ok(Decoded { consumed: pos, event: None, wanted })
            };
            let Some(head) = FrameHead::decode(&input[pos..])? else {
                debug_assert_eq!(self.progress, 0);
                return need_more(MAX_HEADER_LEN.min(available + 1));
            };
            self.check_head(&head, assembly.len(), limits)?;
            let frame_len = head.frame_len();
            let start = pos + head.header_len as usize;
            let end = pos + frame_len.min(available);
            debug_assert!(self.progress as usize <= end - start);
            if available < frame_len {
                self.check_text_prefix(&head, &mut input[start..end])?;
                return need_more(frame_len);
            }
            pos = end;
            // The frame is whole. Unmask what `check_text_prefix` has not.
            let done = std::mem::take(&mut self.progress) as usize;
            if let Some(mask) = head.mask {
                apply_mask_at(&mut input[start + done..end], mask, done);
            }
            // Each arm slices the payload anew: a slice shared by the arms would stay borrowed.
            let event = match head.opcode {
                opcode::TEXT | opcode::BINARY if head.rsv != 0 && head.fin => {
                    inflated_event(head.opcode, &input[start..end], inflation.take(), limits)?
                }
                opcode::TEXT | opcode::BINARY if !head.fin => {
                    self.begin_fragmented(&head, &input[start..end], done, assembly)?;
                    continue;
                }
                opcode::TEXT => text_event(&input[start..end])?,
                opcode::BINARY => Event::Binary(&input[start..end]),
                opcode::CONTINUATION => {
                    if self.carries_text(&head) {
                        self.feed_text(&head, &input[start..end], done, head.fin)?;
                    }
                    assembly.extend_from_slice(&input[start..end]);
                    if !head.fin {
                        continue;
                    }
                    self.finish_fragmented(assembly, inflation.take(), limits)?
                }
                opcode::PING => self.ping_event(&input[start..end], out),
                opcode::PONG => Event::Pong(&input[start..end]),
                _ => self.close_event(&head, &input[start..end], out)?,
            };
            return Ok(Decoded { consumed: pos, event: Some(event), wanted: 0 });
        }
    }

    /// Checks a frame's header before its payload is looked at: masking,
    /// reserved bits, size and control-frame rules, then a data frame's
    /// place in its message.
    #[inline]
    fn check_head(&self, head: &FrameHead, assembled: usize, limits: &Limits) -> Result<(), ProtocolError> {
        head.check_with(self.role, limits.max_frame.min(MAX_FRAME), self.allowed_rsv(head))?;
        if !head.is_control() {
            self.check_message(head, assembled, limits)?;
        }
        Ok(())
    }

    /// The event for a fragmented message whose final frame has just been
    /// appended to `assembly`: inflated first if it was compressed.
    #[inline]
    fn finish_fragmented<'a>(
        &mut self,
        assembly: &'a [u8],
        inflation: Option<Inflation<'_, 'a>>,
        limits: &Limits,
    ) -> Result<Event<'a>, ProtocolError> {
        let compressed = self.ext & COMPRESSED != 0;
        self.ext &= !COMPRESSED;
        let op = self.take_fragmented();
        if compressed {
            inflated_event(op, assembly, inflation, limits)
        } else if op == opcode::TEXT {
            // Checked piece by piece by `utf8`, which ended complete.
            let text = std::str::from_utf8(assembly).map_err(|_| ProtocolError::InvalidUtf8);
            debug_assert!(text.is_ok());
            text.map(Event::Text)
        } else {
            Ok(Event::Binary(assembly))
        }
    }

    /// The event for a ping; while open, the pong is written first.
    #[inline]
    fn ping_event<'a>(&self, payload: &'a [u8], out: &mut Vec<u8>) -> Event<'a> {
        if self.phase == Phase::Open {
            write_frame(out, true, opcode::PONG, payload, self.mask());
        }
        Event::Ping(payload)
    }

    /// The event for the peer's close frame, once checked; while open, the
    /// echo is written first. The session is `Closed` after it.
    fn close_event<'a>(
        &mut self,
        head: &FrameHead,
        payload: &'a [u8],
        out: &mut Vec<u8>,
    ) -> Result<Event<'a>, ProtocolError> {
        debug_assert_eq!(head.opcode, opcode::CLOSE);
        let (code, reason) = parse_close(payload)?;
        if self.phase == Phase::Open {
            write_close(out, code, "", self.mask());
        }
        // A message still in fragments is abandoned with the connection.
        self.phase = Phase::Closed;
        self.abandon_message();
        Ok(Event::Close { code, reason })
    }

    /// The rules a data frame must follow within its message, checked from
    /// the header alone (so before its payload has arrived): no new message
    /// inside a fragmented one, no continuation outside one, and the
    /// message size limit.
    fn check_message(&self, head: &FrameHead, assembled: usize, limits: &Limits) -> Result<(), ProtocolError> {
        match head.opcode {
            opcode::CONTINUATION if self.fragmented == 0 => Err(ProtocolError::UnexpectedContinuation),
            opcode::CONTINUATION if assembled as u64 + head.payload_len > limits.max_message => {
                Err(ProtocolError::MessageTooLarge)
            }
            opcode::CONTINUATION => Ok(()),
            _ if self.fragmented != 0 => Err(ProtocolError::ExpectedContinuation),
            _ if head.payload_len > limits.max_message => Err(ProtocolError::MessageTooLarge),
            _ => Ok(()),
        }
    }

    /// True for a frame whose payload is (part of) an uncompressed text
    /// message: its bytes are checked as they arrive. A compressed one is
    /// checked once inflated.
    fn carries_text(&self, head: &FrameHead) -> bool {
        match head.opcode {
            opcode::TEXT => head.rsv == 0,
            opcode::CONTINUATION => self.fragmented == opcode::TEXT && self.ext & COMPRESSED == 0,
            _ => false,
        }
    }

    /// The reserved bits `head` may carry: RSV1 on the first frame of a data
    /// message once permessage-deflate is negotiated, nothing elsewhere.
    fn allowed_rsv(&self, head: &FrameHead) -> u8 {
        let first_of_message = head.opcode == opcode::TEXT || head.opcode == opcode::BINARY;
        if self.ext & DEFLATE != 0 && first_of_message {
            4
        } else {
            0
        }
    }

    /// Unmasks and validates the part of an unfinished text-carrying
    /// frame's payload that arrived since the last call, so that bytes which
    /// can never become valid UTF-8 fail now, not when the frame is whole.
    /// Any other unfinished frame waits, untouched.
    #[inline]
    fn check_text_prefix(&mut self, head: &FrameHead, payload: &mut [u8]) -> Result<(), ProtocolError> {
        if !self.carries_text(head) {
            return Ok(());
        }
        let done = self.progress as usize;
        if payload.len() == done {
            return Ok(());
        }
        if let Some(mask) = head.mask {
            apply_mask_at(&mut payload[done..], mask, done);
        }
        self.feed_text(head, payload, done, false)?;
        // Fits: a frame's payload is at most MAX_FRAME (checked above).
        self.progress = payload.len() as u32;
        Ok(())
    }

    /// Feeds `payload[done..]` of a text-carrying frame to the validator; a
    /// text frame seen for the first time starts a fresh message.
    fn feed_text(
        &mut self,
        head: &FrameHead,
        payload: &[u8],
        done: usize,
        is_final: bool,
    ) -> Result<(), ProtocolError> {
        if head.opcode == opcode::TEXT && done == 0 {
            self.utf8 = Utf8Validator::new();
        }
        self.utf8.feed(&payload[done..], is_final).map_err(|_| ProtocolError::InvalidUtf8)
    }

    /// Starts a fragmented message with its first (whole) frame.
    fn begin_fragmented(
        &mut self,
        head: &FrameHead,
        payload: &[u8],
        done: usize,
        assembly: &mut Vec<u8>,
    ) -> Result<(), ProtocolError> {
        if head.rsv != 0 {
            self.ext |= COMPRESSED;
        } else if head.opcode == opcode::TEXT {
            self.feed_text(head, payload, done, false)?;
        }
        self.fragmented = head.opcode;
        assembly.clear();
        assembly.extend_from_slice(payload);
        Ok(())
    }

    /// Forgets a message still in fragments (the connection is closing):
    /// its opcode and whether it was compressed go together.
    fn abandon_message(&mut self) {
        self.fragmented = 0;
        self.ext &= !COMPRESSED;
    }

    fn take_fragmented(&mut self) -> u8 {
        std::mem::take(&mut self.fragmented)
    }

    /// The masking key for a frame we send: none from a server, a fresh
    /// random one from a client.
    fn mask(&self) -> Option<[u8; 4]> {
        match self.role {
            Role::Server => None,
            Role::Client => Some(super::mask::random_mask()),
        }
    }

    /// Appends a text message. Returns false (and writes nothing) once
    /// closing has begun.
    pub fn write_text(&self, out: &mut Vec<u8>, text: &str) -> bool {
        self.write_message(out, opcode::TEXT, text.as_bytes())
    }

    /// Appends a binary message. Returns false (and writes nothing) once
    /// closing has begun.
    pub fn write_binary(&self, out: &mut Vec<u8>, data: &[u8]) -> bool {
        self.write_message(out, opcode::BINARY, data)
    }

    /// Appends a data message of type `op` (a text payload must be UTF-8).
    /// Returns false (and writes nothing) once closing has begun.
    pub fn write_message(&self, out: &mut Vec<u8>, op: u8, payload: &[u8]) -> bool {
        if !self.can_send() {
            return false;
        }
        write_frame(out, true, op, payload, self.mask());
        true
    }

    /// Appends a message already compressed with this session's terms (see
    /// `deflate.rs`), RSV1 set. False (and nothing written) once closing.
    pub fn write_compressed(&self, out: &mut Vec<u8>, op: u8, compressed: &[u8]) -> bool {
        debug_assert!(self.ext & DEFLATE != 0, "compressed without permessage-deflate");
        if !self.can_send() {
            return false;
        }
        write_compressed_frame(out, op, compressed, self.mask());
        true
    }

    /// Appends a ping (payload cut to 125 bytes). False once closing.
    pub fn write_ping(&self, out: &mut Vec<u8>, payload: &[u8]) -> bool {
        let payload = &payload[..payload.len().min(super::frame::MAX_CONTROL_PAYLOAD)];
        self.write_message(out, opcode::PING, payload)
    }

    /// Starts the close handshake from our side: appends a close frame and
    /// moves to `CloseSent`. Does nothing unless `Open`.
    pub fn write_close(&mut self, out: &mut Vec<u8>, code: u16, reason: &str) {
        if self.phase == Phase::Open {
            write_close(out, Some(code), reason, self.mask());
            self.phase = Phase::CloseSent;
        }
    }
}

/// Inflates a whole compressed message into the inflation's output,
/// bounded by the message limit.
fn inflate<'a>(
    compressed: &[u8],
    inflation: Option<Inflation<'_, 'a>>,
    limits: &Limits,
) -> Result<&'a [u8], ProtocolError> {
    // Without an inflater nothing was negotiated as far as the caller knows.
    let Inflation { inflater, output } = inflation.ok_or(ProtocolError::ReservedBits)?;
    output.clear();
    let limit = limits.max_message.min(usize::MAX as u64) as usize;
    match inflater.inflater().decompress(compressed, output, limit) {
        Ok(()) => Ok(output),
        Err(InflateError::TooLarge) => Err(ProtocolError::MessageTooLarge),
        Err(InflateError::Corrupt) => Err(ProtocolError::BadCompression),
    }
}

/// The event for a whole compressed data message, once inflated.
#[inline]
fn inflated_event<'a>(
    op: u8,
    compressed: &[u8],
    inflation: Option<Inflation<'_, 'a>>,
    limits: &Limits,
) -> Result<Event<'a>, ProtocolError> {
    let inflated = inflate(compressed, inflation, limits)?;
    message_event(op, inflated)
}

/// The event for a whole (inflated) data message; text must be UTF-8.
fn message_event(op: u8, payload: &[u8]) -> Result<Event<'_>, ProtocolError> {
    if op == opcode::TEXT {
        text_event(payload)
    } else {
        Ok(Event::Binary(payload))
    }
}

/// The event for a whole text message; it must be UTF-8.
#[inline]
fn text_event(payload: &[u8]) -> Result<Event<'_>, ProtocolError> {
    std::str::from_utf8(payload).map(Event::Text).map_err(|_| ProtocolError::InvalidUtf8)
}

/// Splits and checks a close payload: empty, or a valid code and a UTF-8
/// reason.
fn parse_close(payload: &[u8]) -> Result<(Option<u16>, &str), ProtocolError> {
    match payload {
        [] => Ok((None, "")),
        [_] => Err(ProtocolError::CloseTooShort),
        [hi, lo, reason @ ..] => {
            let code = u16::from_be_bytes([*hi, *lo]);
            if !is_valid_close_code(code) {
                return Err(ProtocolError::InvalidCloseCode(code));
            }
            let reason = std::str::from_utf8(reason).map_err(|_| ProtocolError::InvalidUtf8)?;
            Ok((Some(code), reason))
        }
    }
}

/// The length of [`Session::to_state`]'s bytes.
pub const SESSION_STATE_LEN: usize = 11;

impl Session {
    /// A server session's whole state as bytes, to carry the connection
    /// to another process (live hand-off): the UTF-8 validator (4), the
    /// progress (4, little endian), the fragmented opcode, the extension
    /// byte and the phase. `None` between an [`Event::Upgrade`] and its
    /// verdict (never the case between two read turns) or for a client.
    pub fn to_state(&self) -> Option<[u8; SESSION_STATE_LEN]> {
        if self.role != Role::Server || self.awaits_verdict() {
            return None;
        }
        let mut b = [0u8; SESSION_STATE_LEN];
        b[..4].copy_from_slice(&self.utf8.to_state());
        b[4..8].copy_from_slice(&self.progress.to_le_bytes());
        b[8] = self.fragmented;
        b[9] = self.ext;
        b[10] = match self.phase {
            Phase::Handshake => 0,
            Phase::Open => 1,
            Phase::CloseSent => 2,
            Phase::Closed => 3,
        };
        Some(b)
    }

    /// A server session from [`to_state`](Self::to_state)'s bytes; `None`
    /// if they break an invariant a session keeps (an unknown phase or
    /// opcode, a compressed message without deflate, state left in a closed
    /// session, a handshake awaiting its verdict), so bytes from a peer
    /// process can never make a session decode what no session could.
    pub fn from_state(b: &[u8; SESSION_STATE_LEN]) -> Option<Session> {
        let utf8 = Utf8Validator::from_state([b[0], b[1], b[2], b[3]])?;
        let progress = u32::from_le_bytes([b[4], b[5], b[6], b[7]]);
        let (fragmented, ext) = (b[8], b[9]);
        let phase = match b[10] {
            0 => Phase::Handshake,
            1 => Phase::Open,
            2 => Phase::CloseSent,
            3 => Phase::Closed,
            _ => return None,
        };
        let valid = matches!(fragmented, 0 | opcode::TEXT | opcode::BINARY)
            && (ext & COMPRESSED == 0 || (ext & DEFLATE != 0 && fragmented != 0))
            && (ext & DEFLATE == 0 || (8..=15).contains(&(ext >> WINDOW_SHIFT)))
            && (phase != Phase::Closed || (fragmented == 0 && progress == 0))
            && (phase != Phase::Handshake || (fragmented == 0 && ext == 0 && progress != AWAITING_VERDICT))
            && (utf8.is_complete() || fragmented == opcode::TEXT || progress > 0);
        valid.then_some(Session { utf8, progress, fragmented, ext, role: Role::Server, phase })
    }
}

#[cfg(test)]
mod tests;
