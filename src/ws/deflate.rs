//! permessage-deflate's codec (RFC 7692 7.2): one whole message in, its
//! compressed form out (or back), no I/O, no framing.
//!
//! A compressed message is raw DEFLATE ended by a sync flush, whose last
//! four bytes (`00 00 ff ff`) are left off on the wire and put back before
//! inflating. Without context takeover each message starts from a fresh
//! state, so one [`Deflater`] and one [`Inflater`] per loop can serve every
//! connection in turn; with it, the state is the connection's own.
//!
//! Two engines, each for what it does best: deflate is C zlib (libz-sys),
//! whose memory and reset cost follow its `mem_level` (see [`Deflater`]);
//! inflate is zlib-rs through its safe API, since inflating parses what
//! peers send. flate2 is not used: it fixes `memLevel` at 8 (a 64 KiB hash
//! to clear on every reset, 256 KiB per deflater) and offers no way to use
//! two engines. miniz_oxide ignores window bits.
//!
//! Memory: deflate [`Deflater::footprint`] (14 KiB at 10 window bits and
//! memory level 3); a zlib-rs inflater measured 13-20 KiB once used
//! (BENCHMARKS.md, "Compression").

use zlib_rs::{InflateFlush, Status};

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
///
/// C zlib (libz-sys) rather than zlib-rs: zlib-rs (like zlib-ng) fixes its
/// hash table at 64 Ki entries, 128 KiB that a reset clears and that every
/// deflater holds whatever its window, where classic zlib sizes it by
/// `mem_level` (`2^(mem_level + 8)` bytes). Only our own messages pass
/// through it; what peers send is inflated by zlib-rs, in safe Rust.
pub struct Deflater {
    /// Boxed: zlib keeps a pointer back to the stream and checks it.
    stream: Box<libz_sys::z_stream>,
    takeover: bool,
    window_bits: u8,
    mem_level: u8,
}

// SAFETY: the stream and the state it points to belong to this value alone
// (nothing else holds them), and zlib keeps no thread-local state.
unsafe impl Send for Deflater {}

impl std::fmt::Debug for Deflater {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Deflater")
            .field("window_bits", &self.window_bits)
            .field("mem_level", &self.mem_level)
            .field("takeover", &self.takeover)
            .finish()
    }
}

extern "C" fn zalloc(_opaque: libz_sys::voidpf, items: libz_sys::uInt, size: libz_sys::uInt) -> libz_sys::voidpf {
    match (items as usize).checked_mul(size as usize) {
        // SAFETY: malloc of a checked size; zlib handles a null result.
        Some(bytes) => unsafe { libc::malloc(bytes) },
        None => std::ptr::null_mut(),
    }
}

extern "C" fn zfree(_opaque: libz_sys::voidpf, address: libz_sys::voidpf) {
    // SAFETY: `address` came from `zalloc`'s malloc.
    unsafe { libc::free(address) }
}

impl Deflater {
    /// A deflater with `window_bits` (9-15), zlib `mem_level` (1-9) and
    /// compression `level` (0-9).
    pub fn new(window_bits: u8, mem_level: u8, level: u8, takeover: bool) -> Self {
        let window_bits = window_bits.clamp(MIN_DEFLATE_WINDOW, MAX_WINDOW);
        let mem_level = mem_level.clamp(1, 9);
        let mut stream = Box::new(libz_sys::z_stream {
            next_in: std::ptr::null_mut(),
            avail_in: 0,
            total_in: 0,
            next_out: std::ptr::null_mut(),
            avail_out: 0,
            total_out: 0,
            msg: std::ptr::null_mut(),
            state: std::ptr::null_mut(),
            zalloc,
            zfree,
            opaque: std::ptr::null_mut(),
            data_type: 0,
            adler: 0,
            reserved: 0,
        });
        // SAFETY: a zeroed stream with our allocator, initialised once; the
        // parameters are in the ranges zlib accepts (clamped above).
        let rc = unsafe {
            libz_sys::deflateInit2_(
                &mut *stream,
                i32::from(level.min(9)),
                libz_sys::Z_DEFLATED,
                -i32::from(window_bits),
                i32::from(mem_level),
                libz_sys::Z_DEFAULT_STRATEGY,
                libz_sys::zlibVersion(),
                std::mem::size_of::<libz_sys::z_stream>() as i32,
            )
        };
        assert_eq!(rc, libz_sys::Z_OK, "deflateInit2 failed: out of memory");
        Deflater { stream, takeover, window_bits, mem_level }
    }

    /// Its window bits.
    pub fn window_bits(&self) -> u8 {
        self.window_bits
    }

    /// True if the window carries over between messages.
    pub fn takes_over(&self) -> bool {
        self.takeover
    }

    /// Heap bytes a deflater with these parameters holds (zlib's formula:
    /// window and its chain `4 * 2^w`, hash `2^(m+8)`, pending symbols
    /// `4 * 2^(m+6)`, plus the ~5.8 KiB state struct).
    pub fn footprint(window_bits: u8, mem_level: u8) -> usize {
        (4 << window_bits as usize) + (1 << (mem_level as usize + 8)) + (4 << (mem_level as usize + 6)) + 5952
    }

    /// Appends the compressed form of one whole message to `out`, without
    /// the tail. The caller sets RSV1 on the message's first frame.
    pub fn compress(&mut self, message: &[u8], out: &mut Vec<u8>) {
        let start = out.len();
        let mut input = message;
        loop {
            out.reserve(STEP.max(input.len() / 2));
            let spare = out.spare_capacity_mut();
            let room = spare.len().min(u32::MAX as usize);
            let take = input.len().min(u32::MAX as usize);
            let stream = &mut *self.stream;
            stream.next_in = input.as_ptr().cast_mut();
            stream.avail_in = take as u32;
            stream.next_out = spare.as_mut_ptr().cast();
            stream.avail_out = room as u32;
            // SAFETY: next_in/avail_in describe `input`, which zlib only
            // reads; next_out/avail_out describe the spare capacity of `out`.
            let rc = unsafe { libz_sys::deflate(stream, libz_sys::Z_SYNC_FLUSH) };
            let used = take - stream.avail_in as usize;
            let produced = room - stream.avail_out as usize;
            stream.next_in = std::ptr::null_mut();
            stream.next_out = std::ptr::null_mut();
            // SAFETY: zlib wrote `produced <= room` bytes into the spare capacity.
            unsafe { out.set_len(out.len() + produced) };
            input = &input[used..];
            // Only a misuse of the stream can fail (a bug, not input);
            // Z_BUF_ERROR means no progress was possible: done.
            debug_assert!(rc == libz_sys::Z_OK || rc == libz_sys::Z_BUF_ERROR, "deflate returned {rc}");
            if input.is_empty() && produced < room || rc != libz_sys::Z_OK {
                break;
            }
        }
        debug_assert!(out[start..].ends_with(&TAIL), "a sync flush ends with the tail");
        if out[start..].ends_with(&TAIL) {
            out.truncate(out.len() - TAIL.len());
        }
        if !self.takeover {
            // SAFETY: an initialised stream.
            unsafe { libz_sys::deflateReset(&mut *self.stream) };
        }
    }
}

impl Drop for Deflater {
    fn drop(&mut self) {
        // SAFETY: initialised in `new`, ended once.
        unsafe { libz_sys::deflateEnd(&mut *self.stream) };
    }
}

/// Hands out the inflater for a message only when one is needed, so a
/// caller can offer inflation on every decode without making (and paying
/// for) an inflater until a compressed message actually arrives.
pub trait InflaterSource {
    /// The inflater to use for the compressed message at hand.
    fn inflater(&mut self) -> &mut Inflater;
}

impl InflaterSource for Inflater {
    fn inflater(&mut self) -> &mut Inflater {
        self
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
