//! A message published to many connections (a room publish, a broadcast),
//! encoded once: the plain frame, and the compressed frame for each
//! deflate window its receivers negotiated, made by the first loop that
//! needs it and shared by every loop after. Members take a clone of the
//! `Bytes` they need: no copy per member.

use std::sync::{Arc, OnceLock};

use bytes::Bytes;

use crate::ws::deflate::{MAX_WINDOW, MIN_DEFLATE_WINDOW};
use crate::ws::frame::{write_compressed_frame, EncodedHead};

use crate::ws::compression::Deflaters;

/// See the module docs. Shared between loops behind an `Arc`.
#[derive(Debug)]
pub struct Publication {
    /// The whole uncompressed frame.
    plain: Bytes,
    /// Where the payload starts in `plain`.
    head_len: u8,
    /// The frame's opcode (text or binary).
    op: u8,
    /// Compressed frames by window bits - 9; an empty `Bytes` means "not
    /// worth compressing": the plain frame goes.
    compressed: [OnceLock<Bytes>; (MAX_WINDOW - MIN_DEFLATE_WINDOW + 1) as usize],
}

impl Publication {
    /// Encodes `payload` as one final frame of type `op`.
    pub fn new(op: u8, payload: &[u8]) -> Arc<Publication> {
        let head = EncodedHead::new(true, op, payload.len() as u64, None);
        let mut frame = Vec::with_capacity(head.as_bytes().len() + payload.len());
        frame.extend_from_slice(head.as_bytes());
        frame.extend_from_slice(payload);
        Arc::new(Publication {
            plain: Bytes::from(frame),
            head_len: head.as_bytes().len() as u8,
            op,
            compressed: Default::default(),
        })
    }

    /// The uncompressed frame.
    #[cfg(test)]
    pub fn plain(&self) -> &Bytes {
        &self.plain
    }

    /// The message's opcode (text or binary).
    pub fn op(&self) -> u8 {
        self.op
    }

    /// The message itself, without the frame head.
    pub fn payload(&self) -> &[u8] {
        &self.plain[self.head_len as usize..]
    }

    /// The frame for a receiver that compresses with `window` bits (or
    /// not at all): compressed once per window across all loops.
    pub fn frame_for(&self, window: Option<u8>, deflaters: &mut Deflaters) -> &Bytes {
        let Some(window) = window else { return &self.plain };
        let window = window.clamp(MIN_DEFLATE_WINDOW, MAX_WINDOW);
        let slot = &self.compressed[(window - MIN_DEFLATE_WINDOW) as usize];
        let frame = slot.get_or_init(|| {
            let payload = &self.plain[self.head_len as usize..];
            match deflaters.compress_shared(window, payload) {
                Some(compressed) => {
                    let mut frame = Vec::with_capacity(compressed.len() + 10);
                    write_compressed_frame(&mut frame, self.op, &compressed, None);
                    Bytes::from(frame)
                }
                None => Bytes::new(),
            }
        });
        if frame.is_empty() {
            &self.plain
        } else {
            frame
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ws::compression::{CompressionConfig, CompressionMode};
    use crate::ws::frame::opcode;

    #[test]
    fn compressed_once_per_window_and_plain_when_small() {
        let cfg = CompressionConfig { mode: CompressionMode::Shared, threshold: 16, level: 6, max_dedicated: 0 };
        let mut deflaters = Deflaters::new(cfg);
        let text = "{\"room\":\"lobby\",\"text\":\"hello hello hello hello\"}".repeat(4);
        let p = Publication::new(opcode::TEXT, text.as_bytes());
        assert_eq!(p.frame_for(None, &mut deflaters), p.plain());
        let first = p.frame_for(Some(15), &mut deflaters).clone();
        assert_eq!(first[0], 0xc1, "RSV1 and FIN, text");
        assert!(first.len() < p.plain().len() / 2);
        // The same bytes, not a new compression, for the next member.
        assert_eq!(p.frame_for(Some(15), &mut deflaters).as_ptr(), first.as_ptr());
        assert_eq!(deflaters.counts.messages, 1);
        assert_ne!(p.frame_for(Some(9), &mut deflaters).as_ptr(), first.as_ptr());
        // Under the threshold: plain for everyone.
        let small = Publication::new(opcode::TEXT, b"hi");
        assert_eq!(small.frame_for(Some(15), &mut deflaters), small.plain());
    }
}
