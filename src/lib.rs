//! wsloop: a WebSocket server for very many concurrent connections on one
//! Linux host, and the tools that prove it.
//!
//! Layers, each importing only from those below it (see DESIGN.md):
//! - [`app`]: the built-in application (echo, JSON ping/pong).
//! - [`server`]: the I/O engine: per-core mio event loops.
//! - [`ws`]: RFC 6455 as a sans-io state machine.
//! - [`metrics`]: the metrics thread (Prometheus `/metrics`, `/healthz`).
//! - [`load`]: the load generator (`wsloop load`).
//! - [`tune`]: host limits.
//!
//! Embedding it takes a [`server::Handler`] and [`server::start`]:
//!
//! ```no_run
//! use wsloop::server::{self, Ctx, Handler, Message, ServerConfig};
//!
//! struct Shout;
//! impl Handler for Shout {
//!     fn on_message(&mut self, ctx: &mut Ctx<'_>, msg: Message<'_>) {
//!         if let Message::Text(t) = msg {
//!             ctx.send_text(&t.to_uppercase());
//!         }
//!     }
//! }
//!
//! let server = server::start(ServerConfig::default(), |_loop| Shout).unwrap();
//! server.join().unwrap();
//! ```

#![warn(missing_docs)]

pub mod app;
pub mod cli;
pub mod load;
pub mod logging;
pub mod metrics;
pub mod runtime;
pub mod server;
pub mod tune;
pub mod units;
pub mod ws;
