//! permessage-deflate for the fleet: the client's compressors and
//! decompressors, keyed by slot. Every message that gets smaller is sent
//! compressed once agreed, through the same per-loop codec tables the
//! server's loops use (`ws::compression`, beside the protocol).

use crate::ws::compression::{CompressionConfig, CompressionMode, Deflaters, Inflaters};
use crate::ws::extension::Deflate;
use crate::ws::Session;

/// The fleet's codecs: shared, or a connection's own where it keeps a
/// window. A slot's entries are forgotten when its connection goes.
pub(super) struct Codecs {
    deflaters: Deflaters,
    pub(super) inflaters: Inflaters,
}

impl Codecs {
    /// Nothing allocated until a message is compressed or inflated.
    pub(super) fn new() -> Codecs {
        Codecs {
            // The client compresses every message that gets smaller.
            deflaters: Deflaters::new(CompressionConfig {
                mode: CompressionMode::Shared,
                threshold: 0,
                level: 3,
                max_dedicated: 0,
            }),
            inflaters: Inflaters::default(),
        }
    }

    /// The server agreed to `terms` (as the server sees them) on `slot`.
    pub(super) fn agreed(&mut self, slot: usize, terms: &Deflate) {
        self.deflaters.agreed(slot as u32, terms);
        self.inflaters.agreed(slot as u32, terms);
    }

    /// The connection in `slot` is gone.
    pub(super) fn forget(&mut self, slot: usize) {
        self.deflaters.forget(slot as u32);
        self.inflaters.forget(slot as u32);
    }

    /// Appends one message for `slot` to `out`, compressed if agreed;
    /// false if the session cannot send it.
    pub(super) fn write(&mut self, slot: usize, session: &Session, out: &mut Vec<u8>, op: u8, payload: &[u8]) -> bool {
        self.deflaters.write(slot as u32, session, out, op, payload)
    }
}
