//! Incremental UTF-8 validation for fragmented text messages.
//!
//! A code point may be split across fragments, so the validator carries at
//! most three bytes of an unfinished code point from one fragment to the
//! next. It fails on the first fragment that makes the text invalid, not
//! at the end of the message (RFC 6455 8.1: fail fast). Size: 4 bytes.

/// The state of a text message being validated piece by piece.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Utf8Validator {
    /// The start of a code point the last piece ended inside.
    partial: [u8; 3],
    /// How many bytes of `partial` are in use (0-3).
    partial_len: u8,
}

/// The text so far is not valid UTF-8, and no continuation can fix it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct InvalidUtf8;

/// The width of a code point from its lead byte, or `None` if the byte can
/// never start one.
fn width(lead: u8) -> Option<usize> {
    match lead {
        0x00..=0x7f => Some(1),
        0xc2..=0xdf => Some(2),
        0xe0..=0xef => Some(3),
        0xf0..=0xf4 => Some(4),
        _ => None,
    }
}

impl Utf8Validator {
    /// A validator at the start of a message.
    pub const fn new() -> Self {
        Utf8Validator { partial: [0; 3], partial_len: 0 }
    }

    /// Validates the next piece. With `is_final`, the text must also end on
    /// a code point boundary.
    pub fn feed(&mut self, mut input: &[u8], is_final: bool) -> Result<(), InvalidUtf8> {
        if self.partial_len > 0 {
            input = self.finish_partial(input)?;
            if self.partial_len > 0 {
                // Still inside the same code point: the input was used up.
                return if is_final { Err(InvalidUtf8) } else { Ok(()) };
            }
        }
        match std::str::from_utf8(input) {
            Ok(_) => Ok(()),
            Err(e) if e.error_len().is_none() && !is_final => {
                // A valid prefix of a code point at the very end: keep it.
                let tail = &input[e.valid_up_to()..];
                debug_assert!(!tail.is_empty() && tail.len() < 4);
                self.partial[..tail.len()].copy_from_slice(tail);
                self.partial_len = tail.len() as u8;
                Ok(())
            }
            Err(_) => Err(InvalidUtf8),
        }
    }

    /// Completes the carried code point from the front of `input`; returns
    /// the rest of the input.
    fn finish_partial<'a>(&mut self, input: &'a [u8]) -> Result<&'a [u8], InvalidUtf8> {
        let have = self.partial_len as usize;
        let need = width(self.partial[0]).ok_or(InvalidUtf8)? - have;
        let take = need.min(input.len());
        let mut cp = [0u8; 4];
        cp[..have].copy_from_slice(&self.partial[..have]);
        cp[have..have + take].copy_from_slice(&input[..take]);
        let cp = &cp[..have + take];
        match std::str::from_utf8(cp) {
            Ok(_) => self.partial_len = 0,
            Err(e) if e.error_len().is_none() && take < need => {
                self.partial[..cp.len()].copy_from_slice(cp);
                self.partial_len = cp.len() as u8;
            }
            Err(_) => return Err(InvalidUtf8),
        }
        Ok(&input[take..])
    }

    /// The validator as 4 bytes (the carried bytes, then their count), for
    /// a connection carried to another process.
    pub fn to_state(self) -> [u8; 4] {
        [self.partial[0], self.partial[1], self.partial[2], self.partial_len]
    }

    /// A validator from [`to_state`](Self::to_state)'s bytes; `None` if
    /// they could not have come from one (a count over 3, or carried bytes
    /// that cannot start a code point that long).
    pub fn from_state(b: [u8; 4]) -> Option<Self> {
        let carried = b[3] as usize;
        let valid = carried == 0 || (carried < 4 && width(b[0]).is_some_and(|w| w > carried));
        valid.then_some(Utf8Validator { partial: [b[0], b[1], b[2]], partial_len: b[3] })
    }

    /// What holds between two calls: at most three carried bytes, and they
    /// start with a lead byte of a code point wider than what is carried.
    #[inline]
    pub fn debug_check_invariants(&self) {
        let carried = self.partial_len as usize;
        debug_assert!(carried < 4);
        debug_assert!(carried == 0 || width(self.partial[0]).is_some_and(|w| w > carried));
    }

    /// True when no code point is left unfinished.
    pub fn is_complete(&self) -> bool {
        self.partial_len == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn split_everywhere(text: &[u8]) -> Vec<Result<(), InvalidUtf8>> {
        let mut results = Vec::new();
        for cut in 0..=text.len() {
            let mut v = Utf8Validator::new();
            let r = v.feed(&text[..cut], false).and_then(|_| v.feed(&text[cut..], true));
            results.push(r);
        }
        results
    }

    #[test]
    fn valid_text_passes_split_at_every_byte() {
        let text = "κόσμε and 𝄞 and 中文 and ascii".as_bytes();
        assert!(split_everywhere(text).iter().all(|r| r.is_ok()));
    }

    #[test]
    fn valid_text_passes_one_byte_at_a_time() {
        let text = "Hello-µ@ßöäüàá-UTF-8!! 𝄞".as_bytes();
        let mut v = Utf8Validator::new();
        for (i, b) in text.iter().enumerate() {
            v.feed(std::slice::from_ref(b), i == text.len() - 1).unwrap();
        }
        assert!(v.is_complete());
    }

    #[test]
    fn invalid_text_fails_split_at_every_byte() {
        // Autobahn 6.x style cases: surrogate, overlong, out of range, stray
        // continuation.
        for bad in [
            &b"\xed\xa0\x80"[..],
            b"\xc0\xaf",
            b"\xf4\x90\x80\x80",
            b"ab\x80cd",
            b"\xce\xba\xe1\xbd\xb9\xcf\x83\xce\xbc\xce\xb5\xed\xa0\x80edited",
        ] {
            assert!(split_everywhere(bad).iter().all(|r| r.is_err()), "{bad:x?}");
        }
    }

    #[test]
    fn fails_on_the_fragment_that_breaks_it() {
        let mut v = Utf8Validator::new();
        v.feed("κόσμε".as_bytes(), false).unwrap();
        v.feed(b"\xce", false).unwrap(); // could still become κ
        assert_eq!(v.feed(b"\x41", false), Err(InvalidUtf8)); // cannot
    }

    #[test]
    fn surrogate_fails_before_message_ends() {
        // ED A0 is already impossible (would be a surrogate), even unfinished.
        let mut v = Utf8Validator::new();
        assert_eq!(v.feed(b"ok\xed\xa0", false), Err(InvalidUtf8));
    }

    #[test]
    fn unfinished_code_point_at_end_fails() {
        let mut v = Utf8Validator::new();
        v.feed(b"ab\xe2\x82", false).unwrap();
        assert_eq!(v.feed(b"", true), Err(InvalidUtf8));
    }

    #[test]
    fn code_point_spread_over_three_pieces() {
        let mut v = Utf8Validator::new();
        v.feed(b"\xf0", false).unwrap();
        v.feed(b"\x9d", false).unwrap();
        v.feed(b"\x84", false).unwrap();
        v.feed(b"\x9e", true).unwrap();
    }
}
