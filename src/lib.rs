//! wsloop: a WebSocket server for very many concurrent connections on one
//! Linux host, and the tools that prove it.
//!
//! Layers, each importing only from those below it (see DESIGN.md):
//! - [`ws`]: RFC 6455 as a sans-io state machine.

#![warn(missing_docs)]

pub mod ws;
