//! permessage-deflate for many connections (the server's loops, the load
//! client): which codec compresses or inflates a
//! connection's message, and when a message goes out compressed at all.
//!
//! - **shared** (no context takeover either way): one deflater per window
//!   size in use and one inflater per loop, each reset after every message,
//!   so an idle connection holds no compression state at all: the only
//!   per-connection trace is four bits of its `Session`.
//! - **dedicated** (context takeover, a small window): a connection that
//!   keeps a window gets its own deflater and/or inflater, made when it first
//!   needs one and freed when it closes. A room publish is compressed for
//!   such a connection alone, when it is written (a frame shared by many
//!   connections cannot join one connection's context, and the context must
//!   see messages in wire order): the price of its better ratio.
//!
//! Messages under the threshold go out plain (RSV1 clear), and so does a
//! message that a fresh deflater could not make smaller.

use std::collections::HashMap;

use crate::ws::deflate::{Deflater, Inflater, InflaterSource, MAX_WINDOW, MIN_DEFLATE_WINDOW};
use crate::ws::extension::{Deflate, DeflatePolicy};
use crate::ws::Session;

/// How the server answers permessage-deflate offers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CompressionMode {
    /// Decline every offer.
    Off,
    /// Accept without context takeover; codecs shared per loop.
    Shared,
    /// Accept with context takeover and this window (9-15) both ways.
    Dedicated(u8),
}

impl std::str::FromStr for CompressionMode {
    type Err = String;

    /// `off`, `shared`, `dedicated` (window 10) or `dedicated:BITS` (9-15).
    fn from_str(s: &str) -> Result<Self, String> {
        match s.split_once(':') {
            None if s == "off" => Ok(CompressionMode::Off),
            None if s == "shared" => Ok(CompressionMode::Shared),
            None if s == "dedicated" => Ok(CompressionMode::Dedicated(DEFAULT_DEDICATED_WINDOW)),
            Some(("dedicated", bits)) => match bits.parse::<u8>() {
                Ok(b) if (MIN_DEFLATE_WINDOW..=MAX_WINDOW).contains(&b) => Ok(CompressionMode::Dedicated(b)),
                _ => Err(format!("window bits must be {MIN_DEFLATE_WINDOW}-{MAX_WINDOW}, not '{bits}'")),
            },
            _ => Err(format!("expected off, shared, dedicated or dedicated:BITS, not '{s}'")),
        }
    }
}

/// The window a `dedicated` connection gets unless told otherwise: 1 KiB;
/// 14 KiB of deflater and 5.5 KiB of inflater once used (22 KiB of server
/// RSS per active connection measured, see `BENCHMARKS.md`).
pub const DEFAULT_DEDICATED_WINDOW: u8 = 10;

/// Compression settings; off by default.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CompressionConfig {
    /// Which terms are accepted.
    pub mode: CompressionMode,
    /// Messages shorter than this many bytes go out uncompressed.
    pub threshold: usize,
    /// zlib level, 1 (fastest) to 9 (smallest).
    pub level: u8,
    /// `dedicated`: connections per process that may keep contexts of their
    /// own (0: no limit); past it, new connections get the shared terms.
    pub max_dedicated: usize,
}

impl Default for CompressionConfig {
    fn default() -> Self {
        CompressionConfig { mode: CompressionMode::Off, threshold: 128, level: 3, max_dedicated: 0 }
    }
}

impl CompressionConfig {
    /// The terms the handshake offers, if any.
    pub fn policy(&self) -> Option<DeflatePolicy> {
        match self.mode {
            CompressionMode::Off => None,
            CompressionMode::Shared => Some(DeflatePolicy::shared()),
            CompressionMode::Dedicated(bits) => Some(DeflatePolicy::dedicated(bits)),
        }
    }
}

/// zlib's memory level for a dedicated deflater's window: 8 (zlib's
/// default) for the largest, smaller with the window, so a small window is
/// small in all (10 bits: 3, 14 KiB; see `Deflater::footprint`).
fn mem_level(window_bits: u8) -> u8 {
    window_bits.saturating_sub(7).clamp(1, 8)
}

/// zlib's memory level for the shared deflaters, which are reset after every
/// message: a 4 KiB hash to clear instead of zlib's default 64 KiB, the same
/// output for chat-sized messages (`cargo bench --bench protocol -- deflate`).
const SHARED_MEM_LEVEL: u8 = 4;

/// A connection's own codec, made when first needed. Boxed, so an agreed
/// but unused entry costs its map slot (about 24 bytes), not a codec's
/// stream struct.
#[derive(Debug)]
enum Own<C> {
    /// Agreed, not yet needed: no memory beyond the map entry.
    Agreed(u8),
    /// In use since its first message.
    Made(Box<C>),
}

/// The sending half: compresses what the loop sends.
#[derive(Debug)]
pub struct Deflaters {
    cfg: CompressionConfig,
    /// Shared deflaters (no takeover), by window bits - 9.
    shared: [Option<Deflater>; 7],
    /// Dedicated deflaters of connections whose server side takes over, by slot.
    own: HashMap<u32, Own<Deflater>>,
    /// Entries of `own` that are `Made`: read every loop pass for a gauge.
    made: usize,
    /// Compressed bytes before they are framed.
    scratch: Vec<u8>,
    /// Messages compressed, and their bytes before and after (for metrics).
    pub counts: Counts,
}

/// What a codec side did, read by the loop into its metrics.
#[derive(Debug, Default, Clone, Copy)]
pub struct Counts {
    /// Messages compressed (or inflated).
    pub messages: u64,
    /// Their bytes uncompressed.
    pub plain_bytes: u64,
    /// Their bytes compressed.
    pub deflated_bytes: u64,
}

impl Deflaters {
    /// Nothing allocated until a message is compressed.
    pub fn new(cfg: CompressionConfig) -> Self {
        Deflaters {
            cfg,
            shared: Default::default(),
            own: HashMap::new(),
            made: 0,
            scratch: Vec::new(),
            counts: Counts::default(),
        }
    }

    /// A connection agreed to `terms`: with server takeover it will have
    /// its own deflater.
    pub fn agreed(&mut self, slot: u32, terms: &Deflate) {
        if terms.server_takeover {
            self.own.insert(slot, Own::Agreed(terms.server_window));
        }
    }

    /// The connection is gone: its own deflater, if any, is freed.
    pub fn forget(&mut self, slot: u32) {
        if !self.own.is_empty() && matches!(self.own.remove(&slot), Some(Own::Made(_))) {
            self.made -= 1;
        }
    }

    /// Connections that agreed to keep a context of their own, whether
    /// they have used it yet or not.
    pub fn dedicated_agreed(&self) -> usize {
        self.own.len()
    }

    /// Connections holding their own deflater (made, not just agreed).
    pub fn dedicated_in_use(&self) -> usize {
        self.made
    }

    /// The window a shared (compressed-once) frame for this connection
    /// must use, or `None` for the plain frame: no deflate, or a deflater of
    /// its own whose context a shared frame cannot join.
    #[inline]
    pub fn shared_window(&self, slot: u32, session: &Session) -> Option<u8> {
        let window = session.deflate_window()?;
        if !self.own.is_empty() && self.own.contains_key(&slot) {
            return None;
        }
        Some(window)
    }

    /// True if the connection in `slot` compresses with a context of its
    /// own: shared frames must be recompressed for it, in wire order.
    #[inline]
    pub fn has_own(&self, slot: u32) -> bool {
        !self.own.is_empty() && self.own.contains_key(&slot)
    }

    /// Appends `payload` as one message of type `op` for the connection in
    /// `slot`: compressed if it negotiated permessage-deflate and the
    /// message is worth it, plain otherwise. False once it is closing.
    pub fn write(&mut self, slot: u32, session: &Session, out: &mut Vec<u8>, op: u8, payload: &[u8]) -> bool {
        let Some(window) = session.deflate_window() else {
            return plain(session, out, op, payload);
        };
        if payload.len() < self.cfg.threshold || !session.can_send() {
            return plain(session, out, op, payload);
        }
        self.scratch.clear();
        let takes_over = match self.own.get_mut(&slot) {
            Some(own) => {
                let level = self.cfg.level;
                let deflater = match own {
                    Own::Made(d) => d,
                    Own::Agreed(bits) => {
                        *own = Own::Made(Box::new(Deflater::new(*bits, mem_level(*bits), level, true)));
                        self.made += 1;
                        let Own::Made(d) = own else { unreachable!() };
                        d
                    }
                };
                deflater.compress(payload, &mut self.scratch);
                true
            }
            None => {
                shared_deflater(&mut self.shared, window, self.cfg.level).compress(payload, &mut self.scratch);
                false
            }
        };
        // A fresh deflater's output can be dropped; a taking-over one's
        // cannot (the peer's window must see what ours saw).
        if !takes_over && self.scratch.len() >= payload.len() {
            return plain(session, out, op, payload);
        }
        self.count(payload.len(), self.scratch.len());
        let written = session.write_compressed(out, op, &self.scratch);
        if self.scratch.capacity() > 256 * 1024 {
            // A large message passed through: keep the loop's memory flat.
            self.scratch = Vec::new();
        }
        written
    }

    /// The compressed payload of a message shared by many connections that
    /// agreed on `window` without takeover, or `None` if it should go plain.
    pub fn compress_shared(&mut self, window: u8, payload: &[u8]) -> Option<Vec<u8>> {
        if payload.len() < self.cfg.threshold {
            return None;
        }
        let mut compressed = Vec::with_capacity(payload.len() / 2 + 16);
        shared_deflater(&mut self.shared, window, self.cfg.level).compress(payload, &mut compressed);
        (compressed.len() < payload.len()).then(|| {
            self.count(payload.len(), compressed.len());
            compressed
        })
    }

    fn count(&mut self, plain: usize, deflated: usize) {
        self.counts.messages += 1;
        self.counts.plain_bytes += plain as u64;
        self.counts.deflated_bytes += deflated as u64;
    }
}

/// The loop's shared deflater for `window`, made on first use.
fn shared_deflater(shared: &mut [Option<Deflater>; 7], window: u8, level: u8) -> &mut Deflater {
    let window = window.clamp(MIN_DEFLATE_WINDOW, MAX_WINDOW);
    shared[(window - MIN_DEFLATE_WINDOW) as usize]
        .get_or_insert_with(|| Deflater::new(window, SHARED_MEM_LEVEL, level, false))
}

fn plain(session: &Session, out: &mut Vec<u8>, op: u8, payload: &[u8]) -> bool {
    session.write_message(out, op, payload)
}

/// The receiving half: inflates what connections send.
#[derive(Debug, Default)]
pub struct Inflaters {
    /// The loop's inflater for connections without client takeover.
    shared: Option<Inflater>,
    /// Dedicated inflaters of connections whose client side takes over.
    own: HashMap<u32, Own<Inflater>>,
    /// Entries of `own` that are `Made`.
    made: usize,
}

impl Inflaters {
    /// A connection agreed to `terms`: with client takeover it will have
    /// its own inflater.
    pub fn agreed(&mut self, slot: u32, terms: &Deflate) {
        if terms.client_takeover {
            self.own.insert(slot, Own::Agreed(terms.client_window));
        }
    }

    /// The connection is gone: its own inflater, if any, is freed.
    pub fn forget(&mut self, slot: u32) {
        if !self.own.is_empty() && matches!(self.own.remove(&slot), Some(Own::Made(_))) {
            self.made -= 1;
        }
    }

    /// True if the connection in `slot` agreed to an inflater of its own
    /// (client takeover): its context cannot leave the process.
    #[inline]
    pub fn has_own(&self, slot: u32) -> bool {
        !self.own.is_empty() && self.own.contains_key(&slot)
    }

    /// Connections that agreed to keep a context of their own.
    pub fn dedicated_agreed(&self) -> usize {
        self.own.len()
    }

    /// Connections holding their own inflater.
    pub fn dedicated_in_use(&self) -> usize {
        self.made
    }

    /// What inflates the next compressed message of the connection in
    /// `slot`, made only if one arrives.
    pub fn for_conn(&mut self, slot: u32) -> ConnInflater<'_> {
        ConnInflater { inflaters: self, slot }
    }

    /// The inflater for `slot`, made now if it is its first message.
    fn get(&mut self, slot: u32) -> &mut Inflater {
        match self.own.get_mut(&slot) {
            Some(own) => {
                if let Own::Agreed(bits) = *own {
                    *own = Own::Made(Box::new(Inflater::new(bits, true)));
                    self.made += 1;
                }
                let Own::Made(inflater) = own else { unreachable!() };
                inflater
            }
            None => self.shared.get_or_insert_with(|| Inflater::new(MAX_WINDOW, false)),
        }
    }
}

/// One connection's way to its inflater (see [`Inflaters::for_conn`]).
pub struct ConnInflater<'i> {
    inflaters: &'i mut Inflaters,
    slot: u32,
}

impl InflaterSource for ConnInflater<'_> {
    fn inflater(&mut self) -> &mut Inflater {
        self.inflaters.get(self.slot)
    }
}
