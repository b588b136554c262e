//! Every way a peer can break the protocol, each mapped to exactly one
//! RFC 6455 close code (or, before the upgrade, one HTTP status) and one
//! reason string. The event loop never has to decide what a failure means.

use std::fmt;

/// A violation of RFC 6455 after the upgrade: the connection must be failed
/// with [`ProtocolError::close_code`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProtocolError {
    /// A client frame without a mask (RFC 6455 5.1), or a server frame with one.
    BadMask,
    /// RSV1-3 set, and no extension was negotiated that defines them.
    ReservedBits,
    /// Opcode 3-7 or 11-15.
    ReservedOpcode(u8),
    /// A 64-bit length with the most significant bit set (RFC 6455 5.2).
    InvalidLength,
    /// A control frame with FIN clear.
    FragmentedControl,
    /// A control frame whose payload is over 125 bytes.
    ControlTooLong,
    /// A continuation frame with no message in progress.
    UnexpectedContinuation,
    /// A new text or binary frame while a fragmented message is in progress.
    ExpectedContinuation,
    /// A text message (or close reason) that is not valid UTF-8.
    InvalidUtf8,
    /// A frame whose payload is over the configured frame limit.
    FrameTooLarge,
    /// A message whose total payload is over the configured message limit
    /// (for a compressed message: once inflated).
    MessageTooLarge,
    /// A compressed message that is not valid DEFLATE data (RFC 7692 8).
    BadCompression,
    /// A close frame with a one-byte payload.
    CloseTooShort,
    /// A close code that may not be sent on the wire.
    InvalidCloseCode(u16),
}

impl ProtocolError {
    /// The close code this failure is reported with.
    pub fn close_code(self) -> u16 {
        match self {
            ProtocolError::InvalidUtf8 | ProtocolError::BadCompression => 1007,
            ProtocolError::FrameTooLarge | ProtocolError::MessageTooLarge => 1009,
            _ => 1002,
        }
    }

    /// A short reason, sent in the close frame (always under 123 bytes).
    pub fn reason(self) -> &'static str {
        match self {
            ProtocolError::BadMask => "frame masking is wrong for this side",
            ProtocolError::ReservedBits => "reserved bits set without an extension",
            ProtocolError::ReservedOpcode(_) => "reserved opcode",
            ProtocolError::InvalidLength => "64-bit length has its high bit set",
            ProtocolError::FragmentedControl => "fragmented control frame",
            ProtocolError::ControlTooLong => "control frame payload over 125 bytes",
            ProtocolError::UnexpectedContinuation => "continuation without a message",
            ProtocolError::ExpectedContinuation => "new message inside a fragmented one",
            ProtocolError::InvalidUtf8 => "invalid UTF-8",
            ProtocolError::FrameTooLarge => "frame too large",
            ProtocolError::MessageTooLarge => "message too large",
            ProtocolError::BadCompression => "invalid compressed data",
            ProtocolError::CloseTooShort => "close payload of one byte",
            ProtocolError::InvalidCloseCode(_) => "invalid close code",
        }
    }

    /// A stable label for counters and logs (`closed{reason}`).
    pub fn label(self) -> &'static str {
        match self {
            ProtocolError::BadMask => "bad_mask",
            ProtocolError::ReservedBits => "reserved_bits",
            ProtocolError::ReservedOpcode(_) => "reserved_opcode",
            ProtocolError::InvalidLength => "invalid_length",
            ProtocolError::FragmentedControl => "fragmented_control",
            ProtocolError::ControlTooLong => "control_too_long",
            ProtocolError::UnexpectedContinuation => "unexpected_continuation",
            ProtocolError::ExpectedContinuation => "expected_continuation",
            ProtocolError::InvalidUtf8 => "invalid_utf8",
            ProtocolError::FrameTooLarge => "frame_too_large",
            ProtocolError::MessageTooLarge => "message_too_large",
            ProtocolError::BadCompression => "bad_compression",
            ProtocolError::CloseTooShort => "close_too_short",
            ProtocolError::InvalidCloseCode(_) => "invalid_close_code",
        }
    }
}

impl fmt::Display for ProtocolError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ProtocolError::ReservedOpcode(op) => write!(f, "reserved opcode {op:#x}"),
            ProtocolError::InvalidCloseCode(code) => write!(f, "invalid close code {code}"),
            other => f.write_str(other.reason()),
        }
    }
}

impl std::error::Error for ProtocolError {}

/// Why an upgrade request was refused: each maps to one HTTP status.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HandshakeError {
    /// Not parseable as HTTP/1.1 (400).
    Malformed,
    /// The request head is over the size limit, or has too many headers (431).
    HeaderTooLarge,
    /// A method other than GET (405).
    MethodNotAllowed,
    /// No `Host` header (400).
    MissingHost,
    /// A request that says it has a body: a `Content-Length` that is not 0
    /// (or not a number), or any `Transfer-Encoding` (400). An upgrade has
    /// none, and whatever followed the head would otherwise be read as
    /// WebSocket frames.
    Body,
    /// A header that may appear once appeared twice: `Host` (RFC 9112 3.2),
    /// `Origin`, `Authorization`, `Sec-WebSocket-Key` or
    /// `Sec-WebSocket-Version` (400). Two values leave the server and
    /// whatever sits in front of it free to pick different ones.
    DuplicateHeader,
    /// `Upgrade: websocket` or `Connection: upgrade` is missing (426).
    NotUpgrade,
    /// `Sec-WebSocket-Version` is not 13 (426, with `Sec-WebSocket-Version: 13`).
    UnsupportedVersion,
    /// `Sec-WebSocket-Key` is missing or not base64 of 16 bytes (400).
    BadKey,
    /// The path is not one the server serves (404).
    UnknownPath,
    /// The `Origin` is not on the allow-list (403).
    ForbiddenOrigin,
    /// The server is at its connection limit (503).
    Overloaded,
    /// The server is over its memory budget's soft mark (503).
    MemoryBudget,
    /// The application asked for credentials that were missing or wrong
    /// (401, with `WWW-Authenticate: Bearer`).
    Unauthorized,
    /// The application refused this client (403).
    Forbidden,
    /// The application asked this client to come back later (429).
    TooManyRequests,
    /// The peer's address holds `--max-conns-per-ip` connections already (429).
    TooManyConnections,
    /// The peer's address is over its handshake rate (429).
    HandshakeRate,
}

impl HandshakeError {
    /// Every refusal, in declaration order (counters index by discriminant).
    pub const ALL: [HandshakeError; 18] = [
        HandshakeError::Malformed,
        HandshakeError::HeaderTooLarge,
        HandshakeError::MethodNotAllowed,
        HandshakeError::MissingHost,
        HandshakeError::Body,
        HandshakeError::DuplicateHeader,
        HandshakeError::NotUpgrade,
        HandshakeError::UnsupportedVersion,
        HandshakeError::BadKey,
        HandshakeError::UnknownPath,
        HandshakeError::ForbiddenOrigin,
        HandshakeError::Overloaded,
        HandshakeError::MemoryBudget,
        HandshakeError::Unauthorized,
        HandshakeError::Forbidden,
        HandshakeError::TooManyRequests,
        HandshakeError::TooManyConnections,
        HandshakeError::HandshakeRate,
    ];

    /// The HTTP status code of the reply.
    pub fn status(self) -> u16 {
        match self {
            HandshakeError::Malformed
            | HandshakeError::MissingHost
            | HandshakeError::Body
            | HandshakeError::DuplicateHeader
            | HandshakeError::BadKey => 400,
            HandshakeError::Unauthorized => 401,
            HandshakeError::ForbiddenOrigin | HandshakeError::Forbidden => 403,
            HandshakeError::UnknownPath => 404,
            HandshakeError::MethodNotAllowed => 405,
            HandshakeError::NotUpgrade | HandshakeError::UnsupportedVersion => 426,
            HandshakeError::TooManyRequests | HandshakeError::TooManyConnections | HandshakeError::HandshakeRate => 429,
            HandshakeError::HeaderTooLarge => 431,
            HandshakeError::Overloaded | HandshakeError::MemoryBudget => 503,
        }
    }

    /// The one-line plain-text body of the reply.
    pub fn reason(self) -> &'static str {
        match self {
            HandshakeError::Malformed => "malformed HTTP request",
            HandshakeError::HeaderTooLarge => "request header too large",
            HandshakeError::MethodNotAllowed => "method must be GET",
            HandshakeError::MissingHost => "missing Host header",
            HandshakeError::Body => "an upgrade request has no body (Content-Length must be 0, no Transfer-Encoding)",
            HandshakeError::DuplicateHeader => {
                "a header sent twice that may appear once (Host, Origin, Authorization, Sec-WebSocket-Key or -Version)"
            }
            HandshakeError::NotUpgrade => "this is a WebSocket endpoint: send Upgrade: websocket",
            HandshakeError::UnsupportedVersion => "unsupported Sec-WebSocket-Version (13 only)",
            HandshakeError::BadKey => "missing or invalid Sec-WebSocket-Key",
            HandshakeError::UnknownPath => "no WebSocket endpoint at this path",
            HandshakeError::ForbiddenOrigin => "origin not allowed",
            HandshakeError::Overloaded => "server at its connection limit, try again later",
            HandshakeError::MemoryBudget => "server over its memory budget, try again later",
            HandshakeError::Unauthorized => "missing or invalid credentials",
            HandshakeError::Forbidden => "refused",
            HandshakeError::TooManyRequests => "too many requests, try again later",
            HandshakeError::TooManyConnections => "too many connections from this address",
            HandshakeError::HandshakeRate => "too many handshakes from this address, slow down",
        }
    }

    /// A stable label for counters and logs (`handshake_failures{reason}`).
    pub fn label(self) -> &'static str {
        match self {
            HandshakeError::Malformed => "malformed",
            HandshakeError::HeaderTooLarge => "header_too_large",
            HandshakeError::MethodNotAllowed => "method",
            HandshakeError::MissingHost => "missing_host",
            HandshakeError::Body => "body",
            HandshakeError::DuplicateHeader => "duplicate_header",
            HandshakeError::NotUpgrade => "not_upgrade",
            HandshakeError::UnsupportedVersion => "version",
            HandshakeError::BadKey => "bad_key",
            HandshakeError::UnknownPath => "path",
            HandshakeError::ForbiddenOrigin => "origin",
            HandshakeError::Overloaded => "overloaded",
            HandshakeError::MemoryBudget => "memory_budget",
            HandshakeError::Unauthorized => "unauthorized",
            HandshakeError::Forbidden => "forbidden",
            HandshakeError::TooManyRequests => "too_many_requests",
            HandshakeError::TooManyConnections => "per_ip_conns",
            HandshakeError::HandshakeRate => "per_ip_rate",
        }
    }
}

impl fmt::Display for HandshakeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} ({})", self.reason(), self.status())
    }
}

impl std::error::Error for HandshakeError {}

/// Any failure of the protocol layer: before the upgrade or after it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WsError {
    /// The upgrade was refused; an HTTP error reply has been written.
    Handshake(HandshakeError),
    /// The connection failed; a close frame has been written.
    Protocol(ProtocolError),
}

impl WsError {
    /// A stable label for counters and logs.
    pub fn label(self) -> &'static str {
        match self {
            WsError::Handshake(e) => e.label(),
            WsError::Protocol(e) => e.label(),
        }
    }
}

impl From<HandshakeError> for WsError {
    fn from(e: HandshakeError) -> Self {
        WsError::Handshake(e)
    }
}

impl From<ProtocolError> for WsError {
    fn from(e: ProtocolError) -> Self {
        WsError::Protocol(e)
    }
}

impl fmt::Display for WsError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            WsError::Handshake(e) => write!(f, "handshake refused: {e}"),
            WsError::Protocol(e) => write!(f, "protocol error: {e} (close {})", e.close_code()),
        }
    }
}

impl std::error::Error for WsError {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_handshake_refusal_has_its_own_label_and_a_4xx_or_5xx() {
        let labels: std::collections::HashSet<_> = HandshakeError::ALL.iter().map(|e| e.label()).collect();
        assert_eq!(labels.len(), HandshakeError::ALL.len());
        assert!(!labels.contains("timeout"), "taken by the handshake timer");
        for e in HandshakeError::ALL {
            assert!((400..600).contains(&e.status()), "{e:?}");
            assert!(!e.reason().contains('\n'), "{e:?}");
        }
    }
}
