//! permessage-deflate's codec (RFC 7692 7.2): one whole message in, its
//! compressed form out (or back), no I/O, no framing.
//!
//! A compressed message is raw DEFLATE ended by a sync flush, whose last
//! four bytes (`00 00 ff ff`) are left off on the wire and put back before
//! inflating. Without context takeover each message starts from a fresh
//! state, so one [`Deflater`] and one [`Inflater`] per loop can serve every
//! connection in turn; with it, the state is the connection's own.
//!
//! The engine is C zlib (libz-sys: the system's zlib, or its bundled copy),
//! the inflater browsers themselves use on what servers send, because its
//! memory follows the parameters: a deflater's hash is `2^(mem_level + 8)`
//! bytes and an inflater's window `2^window_bits`. The alternatives measured
//! here fix them: flate2 sets `memLevel` 8 (a 64 KiB hash to clear on every
//! reset); zlib-rs (and zlib-ng) keep a 128 KiB hash per deflater and a
//! 32 KiB window per inflater whatever was negotiated (183 KiB per active
//! dedicated connection, 62 KiB with zlib's deflater and zlib-rs' inflater,
//! 22 KiB with both on zlib; BENCHMARKS.md). miniz_oxide ignores window
//! bits. The unsafe code is confined to the two streams below.
//!
//! Memory: deflate [`Deflater::footprint`] (14 KiB at 10 window bits and
//! memory level 3); inflate 5.5 KiB at 10 bits (its ~7 KiB state is partly
//! untouched, plus its window, made at its first message).

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
/// zlib sizes its hash by `mem_level` (`2^(mem_level + 8)` bytes): a reset
/// clears it, so a small one keeps per-message resets cheap.
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

/// A stream with our allocator, not yet initialised. Boxed: zlib keeps a
/// pointer back to the stream and checks it on every call.
fn new_stream() -> Box<libz_sys::z_stream> {
    Box::new(libz_sys::z_stream {
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
    })
}

/// One call of `deflate` or `inflate` with a sync flush: reads from
/// `input`, appends at most `room` bytes (no more than `out`'s spare
/// capacity) to `out`. Returns zlib's code and the bytes used and produced.
fn run(
    stream: &mut libz_sys::z_stream,
    step: unsafe extern "C" fn(libz_sys::z_streamp, i32) -> i32,
    input: &[u8],
    out: &mut Vec<u8>,
    room: usize,
) -> (i32, usize, usize) {
    debug_assert!(room <= out.capacity() - out.len() && room <= u32::MAX as usize);
    let take = input.len().min(u32::MAX as usize);
    stream.next_in = input.as_ptr().cast_mut();
    stream.avail_in = take as u32;
    stream.next_out = out.spare_capacity_mut().as_mut_ptr().cast();
    stream.avail_out = room as u32;
    // SAFETY: next_in/avail_in describe `input`, which zlib only reads;
    // next_out/avail_out describe `room` bytes of `out`'s spare capacity.
    let rc = unsafe { step(stream, libz_sys::Z_SYNC_FLUSH) };
    let used = take - stream.avail_in as usize;
    let produced = room - stream.avail_out as usize;
    stream.next_in = std::ptr::null_mut();
    stream.next_out = std::ptr::null_mut();
    // SAFETY: zlib wrote `produced <= room` bytes into the spare capacity.
    unsafe { out.set_len(out.len() + produced) };
    (rc, used, produced)
}

impl Deflater {
    /// A deflater with `window_bits` (9-15), zlib `mem_level` (1-9) and
    /// compression `level` (0-9).
    pub fn new(window_bits: u8, mem_level: u8, level: u8, takeover: bool) -> Self {
        let window_bits = window_bits.clamp(MIN_DEFLATE_WINDOW, MAX_WINDOW);
        let mem_level = mem_level.clamp(1, 9);
        let mut stream = new_stream();
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
            let room = (out.capacity() - out.len()).min(u32::MAX as usize);
            let (rc, used, produced) = run(&mut self.stream, libz_sys::deflate, input, out, room);
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
    stream: Box<libz_sys::z_stream>,
    takeover: bool,
    window_bits: u8,
}

// SAFETY: as for `Deflater`: the stream is this value's alone.
unsafe impl Send for Inflater {}

impl std::fmt::Debug for Inflater {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Inflater").field("window_bits", &self.window_bits).field("takeover", &self.takeover).finish()
    }
}

impl Inflater {
    /// An inflater for a peer whose window is at most `window_bits` (8-15;
    /// 8 is read as 9, since zlib-based peers deflate "8" with 9 bits).
    pub fn new(window_bits: u8, takeover: bool) -> Self {
        let window_bits = window_bits.clamp(MIN_DEFLATE_WINDOW, MAX_WINDOW);
        let mut stream = new_stream();
        // SAFETY: a zeroed stream with our allocator, initialised once, with
        // window bits in zlib's range.
        let rc = unsafe {
            libz_sys::inflateInit2_(
                &mut *stream,
                -i32::from(window_bits),
                libz_sys::zlibVersion(),
                std::mem::size_of::<libz_sys::z_stream>() as i32,
            )
        };
        assert_eq!(rc, libz_sys::Z_OK, "inflateInit2 failed: out of memory");
        Inflater { stream, takeover, window_bits }
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
            // SAFETY: an initialised stream.
            unsafe { libz_sys::inflateReset(&mut *self.stream) };
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
            let room = (out.capacity() - out.len()).min(allowed + 1).min(u32::MAX as usize);
            let (rc, used, produced) = run(&mut self.stream, libz_sys::inflate, input, out, room);
            input = &input[used..];
            if out.len() - start > limit {
                out.truncate(start + limit);
                return Err(InflateError::TooLarge);
            }
            match rc {
                libz_sys::Z_STREAM_END => return Ok(true),
                libz_sys::Z_OK if input.is_empty() && produced < room => return Ok(false),
                libz_sys::Z_OK => {}
                // No progress possible: everything given was used.
                libz_sys::Z_BUF_ERROR if used == 0 && produced == 0 => return Ok(false),
                libz_sys::Z_BUF_ERROR => {}
                // Z_DATA_ERROR, Z_NEED_DICT, Z_MEM_ERROR: not a message we can read.
                _ => return Err(InflateError::Corrupt),
            }
        }
    }
}

impl Drop for Inflater {
    fn drop(&mut self) {
        // SAFETY: initialised in `new`, ended once.
        unsafe { libz_sys::inflateEnd(&mut *self.stream) };
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
