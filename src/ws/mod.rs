//! The WebSocket protocol (RFC 6455), sans-io: bytes in, events and bytes
//! out. Nothing here knows about sockets, threads or time, so every rule is
//! tested with byte vectors and the event loop is thin glue over [`Session`].
//!
//! - [`handshake`]: the server side of the HTTP upgrade; [`client`]: the client side.
//! - [`frame`]: frame headers, per-frame rules, encoding.
//! - [`extension`], [`deflate`]: permessage-deflate (RFC 7692): negotiation, codec;
//!   [`compression`]: which codec a connection's message goes through (per loop).
//! - [`mask`]: (un)masking, a word at a time.
//! - [`utf8`]: incremental UTF-8 validation across fragments.
//! - [`session`]: one connection's state machine over all of the above.
//! - [`error`]: every failure, with its close code or HTTP status.

pub mod client;
pub mod compression;
pub mod deflate;
pub mod error;
pub mod extension;
pub mod frame;
pub mod handshake;
pub mod mask;
pub mod session;
pub mod utf8;

pub use error::{HandshakeError, ProtocolError, WsError};
pub use frame::Role;
pub use handshake::{HandshakeConfig, Request};
pub use session::{Config, Decoded, Event, Inflation, Limits, Phase, Session};
pub use tungstenite::protocol::frame::coding::CloseCode;
