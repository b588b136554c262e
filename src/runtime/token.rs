//! A connection's name in the poller: its slab slot and the generation of
//! the connection in that slot, packed into one `mio::Token`. An event for
//! an earlier occupant of a reused slot is recognised by its generation and
//! dropped. The same packing serves a completion driver's `user_data`.

use mio::Token;

/// Packs `slot` (low 32 bits) and `generation` (high 32 bits).
#[inline]
pub fn token(slot: usize, generation: u32) -> Token {
    debug_assert!(slot <= u32::MAX as usize);
    Token(slot | (generation as usize) << 32)
}

/// The slot and generation a [`token`] was made from.
#[inline]
pub fn untoken(t: Token) -> (usize, u32) {
    (t.0 & 0xffff_ffff, (t.0 >> 32) as u32)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_and_keeps_clear_of_reserved_tokens() {
        for (slot, generation) in [(0, 0), (1, 7), (123_456, u32::MAX - 3), (u32::MAX as usize - 3, 1)] {
            assert_eq!(untoken(token(slot, generation)), (slot, generation));
        }
        // The loops reserve usize::MAX - 1 and - 2 for the listener and waker.
        assert_ne!(token(u32::MAX as usize - 3, u32::MAX).0, usize::MAX - 1);
    }
}
