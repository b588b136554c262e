//! Masking and unmasking of frame payloads (RFC 6455 5.3), in place.
//!
//! XOR with a 4-byte key repeats every 4 bytes, so the key is widened to a
//! 64-bit word and applied a word at a time; LLVM turns the 32-byte inner
//! loop into SIMD. Masking and unmasking are the same operation.

/// XORs `buf` with `mask`, starting at mask phase 0. Runs in place, allocates
/// nothing, and is its own inverse.
#[inline]
pub fn apply_mask(buf: &mut [u8], mask: [u8; 4]) {
    let word = u64::from_ne_bytes([mask[0], mask[1], mask[2], mask[3], mask[0], mask[1], mask[2], mask[3]]);
    // 32 bytes (four words) per step: independent XORs the compiler vectorises.
    let mut blocks = buf.chunks_exact_mut(32);
    for block in &mut blocks {
        for lane in block.chunks_exact_mut(8) {
            let v = u64::from_ne_bytes(lane.try_into().expect("8-byte lane")) ^ word;
            lane.copy_from_slice(&v.to_ne_bytes());
        }
    }
    // A multiple of 32 bytes has been processed, so the phase is still 0.
    let tail = blocks.into_remainder();
    let mut words = tail.chunks_exact_mut(8);
    for lane in &mut words {
        let v = u64::from_ne_bytes(lane.try_into().expect("8-byte lane")) ^ word;
        lane.copy_from_slice(&v.to_ne_bytes());
    }
    for (i, b) in words.into_remainder().iter_mut().enumerate() {
        *b ^= mask[i & 3];
    }
}

/// XORs `buf` with `mask` as the bytes at `offset` onwards of a payload:
/// for the part of a frame that arrived after `offset` bytes were unmasked.
#[inline]
pub fn apply_mask_at(buf: &mut [u8], mask: [u8; 4], offset: usize) {
    if offset.is_multiple_of(4) {
        // The common case: a whole frame, or a piece that ends on a word.
        return apply_mask(buf, mask);
    }
    let mut phased = mask;
    phased.rotate_left(offset % 4);
    apply_mask(buf, phased);
}

/// The byte-at-a-time definition from the RFC; the reference that
/// [`apply_mask`] is tested and benchmarked against.
pub fn apply_mask_bytewise(buf: &mut [u8], mask: [u8; 4]) {
    for (i, b) in buf.iter_mut().enumerate() {
        *b ^= mask[i & 3];
    }
}

/// A fresh masking key for a client frame. RFC 6455 asks for keys a page
/// script cannot predict; a per-thread xorshift seeded from the clock and
/// the thread's stack address is enough for a load generator and tests.
pub fn random_mask() -> [u8; 4] {
    (random_u64() as u32).to_ne_bytes()
}

/// A fast per-thread pseudo-random number (xorshift64*), not for secrets.
pub fn random_u64() -> u64 {
    use std::cell::Cell;
    thread_local! {
        static STATE: Cell<u64> = Cell::new({
            let local = 0u8;
            let addr = &local as *const u8 as u64;
            let now = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_nanos() as u64);
            (addr.rotate_left(32) ^ now) | 1
        });
    }
    STATE.with(|s| {
        let mut x = s.get();
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        s.set(x);
        x.wrapping_mul(0x2545_f491_4f6c_dd1d)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc_example_hello() {
        // RFC 6455 5.7: "Hello" masked with 37 fa 21 3d.
        let mut buf = [0x7f, 0x9f, 0x4d, 0x51, 0x58];
        apply_mask(&mut buf, [0x37, 0xfa, 0x21, 0x3d]);
        assert_eq!(&buf, b"Hello");
    }

    #[test]
    fn matches_bytewise_for_every_length_and_offset() {
        let mask = [0x12, 0x34, 0x56, 0x78];
        let data: Vec<u8> = (0..300u32).map(|i| (i * 7 + 3) as u8).collect();
        for start in 0..8 {
            for len in 0..(data.len() - start) {
                let mut fast = data[start..start + len].to_vec();
                let mut slow = fast.clone();
                apply_mask(&mut fast, mask);
                apply_mask_bytewise(&mut slow, mask);
                assert_eq!(fast, slow, "start {start} len {len}");
            }
        }
    }

    #[test]
    fn rfc_example_hello_unmasked_in_pieces() {
        // The same frame as above arriving as "Hel" then "lo": the second
        // piece continues at mask phase 3.
        let mut buf = [0x7f, 0x9f, 0x4d, 0x51, 0x58];
        let (first, rest) = buf.split_at_mut(3);
        apply_mask_at(first, [0x37, 0xfa, 0x21, 0x3d], 0);
        apply_mask_at(rest, [0x37, 0xfa, 0x21, 0x3d], 3);
        assert_eq!(&buf, b"Hello");
    }

    #[test]
    fn in_pieces_matches_whole_for_every_cut() {
        let mask = [0x9a, 0xbc, 0xde, 0xf0];
        let data: Vec<u8> = (0..77u32).map(|i| (i * 13 + 1) as u8).collect();
        let mut whole = data.clone();
        apply_mask(&mut whole, mask);
        for cut in 0..=data.len() {
            let mut pieces = data.clone();
            let (a, b) = pieces.split_at_mut(cut);
            apply_mask_at(a, mask, 0);
            apply_mask_at(b, mask, cut);
            assert_eq!(pieces, whole, "cut {cut}");
        }
    }

    #[test]
    fn is_its_own_inverse() {
        let mut buf = b"The quick brown fox jumps over the lazy dog, twice over.".to_vec();
        let orig = buf.clone();
        apply_mask(&mut buf, [1, 2, 3, 4]);
        assert_ne!(buf, orig);
        apply_mask(&mut buf, [1, 2, 3, 4]);
        assert_eq!(buf, orig);
    }
}
