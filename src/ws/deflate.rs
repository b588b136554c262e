//! permessage-deflate's codec (RFC 7692 7.2): one whole message in, its
//! compressed form out (or back), no I/O, no framing.
//!
//! A compressed message is raw DEFLATE ended by a sync flush, whose last
//! four bytes (`00 00 ff ff`) are left off on the wire and put back before
//! inflating. Without context takeover each message starts from a fresh
//! state, so one [`Deflater`] and one [`Inflater`] per loop can serve every
//! connection in turn; with it, the state is the connection's own.
//!
//! Built on zlib-rs' safe API rather than flate2: flate2 fixes zlib's
//! `memLevel` at 8, which costs 128 KiB per deflate stream whatever its
//! window; here it is a parameter, so a per-connection deflater with a small
//! window is small ([`Deflater::footprint`]).
//!
//! Memory (zlib's formulas): deflate `2^(w+2) + 2^(m+9)` bytes plus ~6 KiB
//! of state for window bits `w` and memory level `m`; inflate `2^w` plus
//! ~7 KiB.

use zlib_rs::{DeflateConfig, DeflateFlush, InflateFlush, Status};

/// What a sync flush ends with, and what the wire leaves off.
pub const TAIL: [u8; 4] = [0x00, 0x00, 0xff, 0xff];

/// The smallest window zlib's raw deflate can produce: a peer that limits
/// the server to 8 bits is declined (see `extension.rs`).
pub const MIN_DEFLATE_WINDOW: u8 = 9;

/// The largest window (32 KiB), the default on both sides.
pub const MAX_WINDOW: u8 = 15;

/// Output is grown in steps of this much while compressing or inflating.
const STEP: usize = 4096;

/// Why a compressed message could not be inflated.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum InflateError {
    /// It inflates past the size limit (a decompression bomb, or just big): 1009.
    TooLarge,
    /// It is not valid DEFLATE data: 1007.
    Corrupt,
}

/// Compresses messages. With context takeover the window carries over from
/// one message to the next (the peer's inflater must keep its own); without,
/// every message is compressed from a fresh state.
pub struct Deflater {
    raw: zlib_rs::Deflate,
    takeover: bool,
    window_bits: u8,
    mem_level: u8,
}

impl std::fmt::Debug for Deflater {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Deflater")
            .field("window_bits", &self.window_bits)
            .field("mem_level", &self.mem_level)
            .field("takeover", &self.takeover)
            .finish()
    }
}

impl Deflater {
    /// A deflater with `window_bits` (9-15), zlib `mem_level` (1-9) and
    /// compression `level` (0-9).
    pub fn new(window_bits: u8, mem_level: u8, level: u8, takeover: bool) -> Self {
        let window_bits = window_bits.clamp(MIN_DEFLATE_WINDOW, MAX_WINDOW);
        let mem_level = mem_level.clamp(1, 9);
        let config = DeflateConfig {
            level: i32::from(level.min(9)),
            window_bits: -i32::from(window_bits),
            mem_level: i32::from(mem_level),
            ..DeflateConfig::default()
        };
        Deflater { raw: zlib_rs::Deflate::new_with_config(config), takeover, window_bits, mem_level }
    }

    /// Its window bits.
    pub fn window_bits(&self) -> u8 {
        self.window_bits
    }

    /// True if the window carries over between messages.
    pub fn takes_over(&self) -> bool {
        self.takeover
    }

    /// Heap bytes a deflater with these parameters holds (zlib's formula
    /// plus the state struct), for memory budgets and metrics.
    pub fn footprint(window_bits: u8, mem_level: u8) -> usize {
        (1 << (window_bits as usize + 2)) + (1 << (mem_level as usize + 9)) + 6 * 1024
    }

    /// Appends the compressed form of one whole message to `out`, without
    /// the tail. The caller sets RSV1 on the message's first frame.
    pub fn compress(&mut self, message: &[u8], out: &mut Vec<u8>) {
        let start = out.len();
        let mut input = message;
        loop {
            out.reserve(STEP.max(input.len() / 2));
            let spare = out.spare_capacity_mut();
            let room = spare.len();
            let (in_before, out_before) = (self.raw.total_in(), self.raw.total_out());
            let status = self.raw.compress_uninit(input, spare, DeflateFlush::SyncFlush);
            let used = (self.raw.total_in() - in_before) as usize;
            let produced = (self.raw.total_out() - out_before) as usize;
            // SAFETY: zlib wrote `produced` bytes at the start of the spare
            // capacity, and `produced <= room`.
            debug_assert!(produced <= room);
            unsafe { out.set_len(out.len() + produced) };
            input = &input[used..];
            // Only a misuse of the stream can fail (a bug, not input).
            debug_assert!(status.is_ok(), "deflate failed: {status:?}");
            // Done once every byte is in and the flush did not fill the room.
            if input.is_empty() && produced < room || status.is_err() || status == Ok(Status::BufError) {
                break;
            }
        }
        debug_assert!(out[start..].ends_with(&TAIL), "a sync flush ends with the tail");
        if out[start..].ends_with(&TAIL) {
            out.truncate(out.len() - TAIL.len());
        }
        if !self.takeover {
            self.raw.reset();
        }
    }
}

/// Inflates messages, bounded: it stops as soon as the output passes the
/// limit, without inflating the rest.
pub struct Inflater {
    raw: zlib_rs::Inflate,
    takeover: bool,
    window_bits: u8,
}

impl std::fmt::Debug for Inflater {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Inflater").field("window_bits", &self.window_bits).field("takeover", &self.takeover).finish()
    }
}

impl Inflater {
    /// An inflater for a peer whose window is at most `window_bits` (8-15).
    pub fn new(window_bits: u8, takeover: bool) -> Self {
        let window_bits = window_bits.clamp(8, MAX_WINDOW);
        Inflater { raw: zlib_rs::Inflate::new(false, window_bits), takeover, window_bits }
    }

    /// Heap bytes an inflater holds once it has inflated something.
    pub fn footprint(window_bits: u8) -> usize {
        (1 << window_bits as usize) + 7 * 1024
    }

    /// Appends the inflated form of one whole compressed message (as on the
    /// wire, without the tail) to `out`. Fails with `TooLarge` as soon as
    /// more than `limit` bytes would be appended.
    pub fn decompress(&mut self, compressed: &[u8], out: &mut Vec<u8>, limit: usize) -> Result<(), InflateError> {
        let start = out.len();
        let result = self.feed(compressed, out, start, limit).and_then(|ended| {
            if ended {
                Ok(true)
            } else {
                self.feed(&TAIL, out, start, limit)
            }
        });
        if result.is_err() || result == Ok(true) || !self.takeover {
            // After an error or a final block the stream cannot go on; without
            // takeover the next message starts fresh anyway.
            self.raw.reset(false);
        }
        result.map(|_| ())
    }

    /// Inflates all of `input`; true if the deflate stream ended (BFINAL).
    fn feed(&mut self, mut input: &[u8], out: &mut Vec<u8>, start: usize, limit: usize) -> Result<bool, InflateError> {
        loop {
            let allowed = limit - (out.len() - start);
            // Grow geometrically, but never past one byte over the limit
            // (which tells "exactly at it" from "over it").
            if out.len() == out.capacity() {
                out.reserve_exact((out.len() - start).max(STEP).min(allowed + 1));
            }
            let spare = out.spare_capacity_mut();
            let room = spare.len().min(allowed + 1);
            let (in_before, out_before) = (self.raw.total_in(), self.raw.total_out());
            let status = self.raw.decompress_uninit(input, &mut spare[..room], InflateFlush::SyncFlush);
            let used = (self.raw.total_in() - in_before) as usize;
            let produced = (self.raw.total_out() - out_before) as usize;
            debug_assert!(produced <= room);
            // SAFETY: zlib wrote `produced <= room` bytes into the spare capacity.
            unsafe { out.set_len(out.len() + produced) };
            input = &input[used..];
            if out.len() - start > limit {
                out.truncate(start + limit);
                return Err(InflateError::TooLarge);
            }
            match status {
                Err(_) => return Err(InflateError::Corrupt),
                Ok(Status::StreamEnd) => return Ok(true),
                Ok(_) if input.is_empty() && produced < room => return Ok(false),
                Ok(Status::BufError) if used == 0 && produced == 0 => return Ok(false),
                Ok(_) => {}
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// RFC 7692 7.2.3.1: "Hello" in one compressed frame.
    const HELLO: [u8; 7] = [0xf2, 0x48, 0xcd, 0xc9, 0xc9, 0x07, 0x00];

    fn inflate(inflater: &mut Inflater, compressed: &[u8]) -> Result<Vec<u8>, InflateError> {
        let mut out = Vec::new();
        inflater.decompress(compressed, &mut out, 1 << 20).map(|_| out)
    }

    #[test]
    fn rfc_7692_7_2_3_1_hello() {
        let mut inflater = Inflater::new(15, false);
        assert_eq!(inflate(&mut inflater, &HELLO).unwrap(), b"Hello");
        let mut deflater = Deflater::new(15, 8, 6, false);
        let mut out = Vec::new();
        deflater.compress(b"Hello", &mut out);
        assert_eq!(out, HELLO);
    }

    #[test]
    fn rfc_7692_7_2_3_1_hello_in_two_fragments() {
        // The compressed bytes split across frames are one message: the
        // session joins them before inflating.
        let joined = [&[0xf2, 0x48, 0xcd][..], &[0xc9, 0xc9, 0x07, 0x00]].concat();
        assert_eq!(inflate(&mut Inflater::new(15, false), &joined).unwrap(), b"Hello");
    }

    #[test]
    fn rfc_7692_7_2_3_2_sharing_the_window() {
        // With context takeover the second "Hello" is a back-reference.
        let mut deflater = Deflater::new(15, 8, 6, true);
        let (mut first, mut second) = (Vec::new(), Vec::new());
        deflater.compress(b"Hello", &mut first);
        deflater.compress(b"Hello", &mut second);
        assert_eq!(first, HELLO);
        assert_eq!(second, [0xf2, 0x00, 0x11, 0x00, 0x00]);
        let mut inflater = Inflater::new(15, true);
        assert_eq!(inflate(&mut inflater, &first).unwrap(), b"Hello");
        assert_eq!(inflate(&mut inflater, &second).unwrap(), b"Hello");
        // Without takeover the same message compresses the same way twice.
        let mut fresh = Deflater::new(15, 8, 6, false);
        let (mut a, mut b) = (Vec::new(), Vec::new());
        fresh.compress(b"Hello", &mut a);
        fresh.compress(b"Hello", &mut b);
        assert_eq!((a.as_slice(), b.as_slice()), (&HELLO[..], &HELLO[..]));
    }

    #[test]
    fn rfc_7692_7_2_3_3_no_compression_block() {
        let stored = [0x00, 0x05, 0x00, 0xfa, 0xff, 0x48, 0x65, 0x6c, 0x6c, 0x6f, 0x00];
        assert_eq!(inflate(&mut Inflater::new(15, false), &stored).unwrap(), b"Hello");
    }

    #[test]
    fn rfc_7692_7_2_3_4_bfinal_set() {
        let last = [0xf3, 0x48, 0xcd, 0xc9, 0xc9, 0x07, 0x00, 0x00];
        let mut inflater = Inflater::new(15, true);
        assert_eq!(inflate(&mut inflater, &last).unwrap(), b"Hello");
        // The stream ended: the next message starts a new one.
        assert_eq!(inflate(&mut inflater, &HELLO).unwrap(), b"Hello");
    }

    #[test]
    fn rfc_7692_7_2_3_5_two_deflate_blocks() {
        let two = [0xf2, 0x48, 0x05, 0x00, 0x00, 0x00, 0xff, 0xff, 0xca, 0xc9, 0xc9, 0x07, 0x00];
        assert_eq!(inflate(&mut Inflater::new(15, false), &two).unwrap(), b"Hello");
    }

    #[test]
    fn rfc_7692_7_2_3_6_empty_message() {
        let mut out = Vec::new();
        Deflater::new(15, 8, 6, false).compress(b"", &mut out);
        assert_eq!(out, [0x00]);
        assert_eq!(inflate(&mut Inflater::new(15, false), &[0x00]).unwrap(), b"");
    }

    #[test]
    fn round_trips_at_every_window_and_memory_level() {
        let text: Vec<u8> = (0..50_000u32).map(|i| b"{\"user\":\"alice\",\"text\":\"hi\"}"[i as usize % 28]).collect();
        for window in MIN_DEFLATE_WINDOW..=MAX_WINDOW {
            for mem_level in [1, 4, 8] {
                let mut deflater = Deflater::new(window, mem_level, 6, true);
                let mut inflater = Inflater::new(window, true);
                for round in 0..3 {
                    let mut compressed = Vec::new();
                    deflater.compress(&text[round * 100..], &mut compressed);
                    assert!(compressed.len() < text.len() / 10, "window {window} level {mem_level}");
                    assert_eq!(inflate(&mut inflater, &compressed).unwrap(), &text[round * 100..]);
                }
            }
        }
    }

    #[test]
    fn a_bomb_stops_at_the_limit() {
        let zeros = vec![0u8; 10 << 20];
        let mut bomb = Vec::new();
        Deflater::new(15, 8, 9, false).compress(&zeros, &mut bomb);
        assert!(bomb.len() < 16 * 1024, "10 MiB of zeros is {} bytes", bomb.len());
        let mut inflater = Inflater::new(15, false);
        let mut out = Vec::new();
        assert_eq!(inflater.decompress(&bomb, &mut out, 1 << 20), Err(InflateError::TooLarge));
        assert!(out.capacity() <= (1 << 20) + 2 * STEP, "capacity {}", out.capacity());
        // The inflater is fresh again for the next message.
        assert_eq!(inflate(&mut inflater, &HELLO).unwrap(), b"Hello");
        // Exactly at the limit is allowed.
        let mut out = Vec::new();
        let mut exact = Vec::new();
        Deflater::new(15, 8, 9, false).compress(&zeros[..1000], &mut exact);
        assert_eq!(inflater.decompress(&exact, &mut out, 1000), Ok(()));
        assert_eq!(out.len(), 1000);
    }

    #[test]
    fn corrupt_data_is_an_error_and_the_inflater_recovers() {
        let mut inflater = Inflater::new(15, true);
        assert_eq!(inflate(&mut inflater, &[0xff, 0xff, 0xff, 0xff]), Err(InflateError::Corrupt));
        assert_eq!(inflate(&mut inflater, &HELLO).unwrap(), b"Hello");
    }

    #[test]
    fn appends_after_what_is_already_there() {
        let mut out = b"head".to_vec();
        Deflater::new(15, 8, 6, false).compress(b"Hello", &mut out);
        assert_eq!(&out[4..], HELLO);
        let mut plain = b"x".to_vec();
        Inflater::new(15, false).decompress(&HELLO, &mut plain, 5).unwrap();
        assert_eq!(plain, b"xHello");
    }
}
