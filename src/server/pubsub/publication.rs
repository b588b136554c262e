//! A message published to many connections (a room publish, a broadcast),
//! encoded once: the plain frame, and the compressed frame for each
//! deflate window its receivers negotiated, made by the first loop that
//! needs it and shared by every loop after. Members take a clone of the
//! `Bytes` they need: no copy per member.
//!
//! Every frame is counted in [`frame_bytes`] from its encoding until the
//! last reference to it is dropped (wherever it is: an inbox, the fan-out
//! arena, a member's backlog, a send in flight), so the memory budget
//! counts a frame once, however many members owe it. The count is the
//! process's, as memory is.

use std::sync::atomic::{AtomicUsize, Ordering};
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
            plain: counted(frame),
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
                    counted(frame)
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

/// Bytes of the published frames alive in this process.
static FRAME_BYTES: AtomicUsize = AtomicUsize::new(0);

/// Bytes of the published frames alive in this process: each counted once,
/// from its encoding until its last reference is dropped.
pub fn frame_bytes() -> usize {
    FRAME_BYTES.load(Ordering::Relaxed)
}

/// A frame's bytes, counted in a counter while they live.
struct CountedFrame {
    bytes: Vec<u8>,
    counter: &'static AtomicUsize,
}

impl AsRef<[u8]> for CountedFrame {
    fn as_ref(&self) -> &[u8] {
        &self.bytes
    }
}

impl Drop for CountedFrame {
    fn drop(&mut self) {
        self.counter.fetch_sub(self.bytes.len(), Ordering::Relaxed);
    }
}

/// `frame` as shared bytes, counted in [`FRAME_BYTES`] until its last
/// reference is dropped.
fn counted(frame: Vec<u8>) -> Bytes {
    counted_in(frame, &FRAME_BYTES)
}

fn counted_in(bytes: Vec<u8>, counter: &'static AtomicUsize) -> Bytes {
    counter.fetch_add(bytes.len(), Ordering::Relaxed);
    Bytes::from_owner(CountedFrame { bytes, counter })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ws::compression::{CompressionConfig, CompressionMode};
    use crate::ws::frame::opcode;

    #[test]
    fn a_frame_is_counted_once_until_its_last_reference_goes() {
        // A counter of its own: other tests publish into FRAME_BYTES.
        static COUNTER: AtomicUsize = AtomicUsize::new(0);
        let frame = counted_in(vec![5u8; 1000], &COUNTER);
        let clones: Vec<Bytes> = (0..40).map(|_| frame.slice(10..)).collect();
        assert_eq!(COUNTER.load(Ordering::Relaxed), 1000, "once, not per reference");
        drop(frame);
        assert_eq!(COUNTER.load(Ordering::Relaxed), 1000, "a slice keeps it alive");
        drop(clones);
        assert_eq!(COUNTER.load(Ordering::Relaxed), 0);
    }

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
