//! Why a connection ended: the vocabulary of the life machine
//! ([`Stage`](super::Stage)), counted as the `reason` label of
//! `wsloop_closed_total` and handed to [`Handler::on_close`](crate::server::Handler::on_close).

/// Why a connection ended; the `reason` label of `closed_total`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CloseReason {
    /// The close handshake completed (either side began it).
    Normal,
    /// The peer closed TCP (or reset it) without a close handshake.
    PeerGone,
    /// The peer broke RFC 6455; closed with the error's close code.
    ProtocolError,
    /// The upgrade request was refused (4xx).
    HandshakeFailed,
    /// The connection limit was reached (503).
    Overloaded,
    /// The upgrade did not complete within the handshake timeout.
    HandshakeTimeout,
    /// No pong came back within the pong deadline after an idle ping.
    IdleTimeout,
    /// The peer did not answer our close frame within the close timeout.
    CloseTimeout,
    /// The peer did not read fast enough: its backlog passed the cap (1008).
    SlowConsumer,
    /// The server shut down (1001).
    Shutdown,
    /// A socket error other than a reset.
    IoError,
    /// TLS failed: a bad handshake, or a record that does not decrypt.
    TlsFailed,
    /// The process passed its memory budget and this connection was among
    /// its largest holders (1009 for an unfinished message, else 1013), or
    /// it was refused at accept past the soft mark (503).
    MemoryBudget,
    /// A paced drain asked it to leave (1012 with a reconnect hint): the
    /// server shuts down with `--drain-period`, or hands its connections on.
    Restart,
    /// It reached `--max-connection-age` and was asked to leave (1012 with
    /// a reconnect hint), at the paced `--drain-rate`.
    MaxAge,
    /// Its token (`--jwt-key`) expired and was not refreshed (1008 `token
    /// expired`).
    TokenExpired,
    /// It kept sending over its message rate (`--rate-messages`,
    /// `--rate-bytes`) until it owed a second burst: 1008 "rate limit".
    RateLimited,
    /// The admin API disconnected it, with the code and reason the
    /// operator gave.
    Kicked,
}

impl CloseReason {
    /// Every reason, in label order.
    pub const ALL: [CloseReason; 18] = [
        CloseReason::Normal,
        CloseReason::PeerGone,
        CloseReason::ProtocolError,
        CloseReason::HandshakeFailed,
        CloseReason::Overloaded,
        CloseReason::HandshakeTimeout,
        CloseReason::IdleTimeout,
        CloseReason::CloseTimeout,
        CloseReason::SlowConsumer,
        CloseReason::Shutdown,
        CloseReason::IoError,
        CloseReason::TlsFailed,
        CloseReason::MemoryBudget,
        CloseReason::Restart,
        CloseReason::MaxAge,
        CloseReason::TokenExpired,
        CloseReason::RateLimited,
        CloseReason::Kicked,
    ];

    /// The metric label.
    pub fn label(self) -> &'static str {
        match self {
            CloseReason::Normal => "normal",
            CloseReason::PeerGone => "peer_gone",
            CloseReason::ProtocolError => "protocol_error",
            CloseReason::HandshakeFailed => "handshake_failed",
            CloseReason::Overloaded => "overloaded",
            CloseReason::HandshakeTimeout => "handshake_timeout",
            CloseReason::IdleTimeout => "idle_timeout",
            CloseReason::CloseTimeout => "close_timeout",
            CloseReason::SlowConsumer => "slow_consumer",
            CloseReason::Shutdown => "shutdown",
            CloseReason::IoError => "io_error",
            CloseReason::TlsFailed => "tls_failed",
            CloseReason::MemoryBudget => "memory_budget",
            CloseReason::Restart => "restart",
            CloseReason::MaxAge => "max_age",
            CloseReason::TokenExpired => "token_expired",
            CloseReason::RateLimited => "rate_limited",
            CloseReason::Kicked => "kicked",
        }
    }
}

/// The close reason a socket error stands for: the peer went away, or an
/// error of our own.
pub(crate) fn io_reason(e: &std::io::Error) -> CloseReason {
    use std::io::ErrorKind;
    match e.kind() {
        ErrorKind::ConnectionReset | ErrorKind::BrokenPipe | ErrorKind::ConnectionAborted => CloseReason::PeerGone,
        _ => CloseReason::IoError,
    }
}
