//! wsloop: a WebSocket server for very many concurrent connections on one
//! Linux host, and the tools that prove it.
//!
//! Layers, each importing only from those below it (docs/ARCHITECTURE.md
//! in the repository; tests/architecture.rs checks its order and that no
//! circle of imports joins any two files):
//! - `cli`: the command line, over everything below (the binary's own).
//! - [`admin`]: the admin API (`--admin-addr`): publish, disconnect, rooms.
//! - [`app`]: the built-in applications (echo with JSON ping/pong, rooms).
//! - [`metrics`]: the metrics thread (Prometheus `/metrics`, `/healthz`).
//! - [`server`]: the engine: per-core event loops (one driver type per I/O
//!   model, each owning an engine), a connection's life apart from its I/O,
//!   rooms, the [`server::Handler`] trait.
//! - [`load`]: the load generator (`wsloop load`).
//! - [`ws`]: RFC 6455 as a sans-io state machine.
//! - `runtime`: what any event loop needs: timer wheel, tokens, buffer pool.
//! - [`tune`], [`units`], [`logging`]: host limits, sizes and durations, logs.
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

pub mod admin;
pub mod app;
#[doc(hidden)]
pub mod cli; // The binary's flags: public for main.rs, not an embedder's API.
pub mod load;
pub mod logging;
pub mod metrics;
mod runtime;
pub mod server;
pub mod tune;
pub mod units;
pub mod ws;
