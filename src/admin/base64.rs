//! Standard base64 (RFC 4648 section 4, with padding) decoding, for a
//! binary publish in JSON (`binary_base64`). A few lines of our own rather
//! than a crate for one decoder.

/// Why a string is not base64.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Base64Error {
    /// Not a multiple of 4 characters.
    Length,
    /// A character outside the alphabet (at this byte offset), or `=`
    /// anywhere but at the end.
    Character(usize),
}

impl std::fmt::Display for Base64Error {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Base64Error::Length => f.write_str("base64 length is not a multiple of 4"),
            Base64Error::Character(at) => write!(f, "not base64 at byte {at}"),
        }
    }
}

fn value(c: u8) -> Option<u32> {
    Some(match c {
        b'A'..=b'Z' => c - b'A',
        b'a'..=b'z' => c - b'a' + 26,
        b'0'..=b'9' => c - b'0' + 52,
        b'+' => 62,
        b'/' => 63,
        _ => return None,
    } as u32)
}

/// The bytes `text` encodes.
pub fn decode(text: &str) -> Result<Vec<u8>, Base64Error> {
    let bytes = text.as_bytes();
    if !bytes.len().is_multiple_of(4) {
        return Err(Base64Error::Length);
    }
    let mut out = Vec::with_capacity(bytes.len() / 4 * 3);
    for (q, quad) in bytes.chunks_exact(4).enumerate() {
        let last = q + 1 == bytes.len() / 4;
        let pad = quad.iter().rev().take_while(|&&c| c == b'=').count();
        if pad > 2 || (pad > 0 && !last) {
            return Err(Base64Error::Character(q * 4 + 4 - pad));
        }
        let mut n = 0u32;
        for (i, &c) in quad[..4 - pad].iter().enumerate() {
            n |= value(c).ok_or(Base64Error::Character(q * 4 + i))? << (18 - 6 * i);
        }
        out.extend_from_slice(&n.to_be_bytes()[1..4 - pad]);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc_4648_vectors() {
        let cases = [
            ("", ""),
            ("Zg==", "f"),
            ("Zm8=", "fo"),
            ("Zm9v", "foo"),
            ("Zm9vYg==", "foob"),
            ("Zm9vYmE=", "fooba"),
            ("Zm9vYmFy", "foobar"),
        ];
        for (encoded, plain) in cases {
            assert_eq!(decode(encoded).unwrap(), plain.as_bytes(), "{encoded}");
        }
        assert_eq!(decode("AP8A/w==").unwrap(), [0, 255, 0, 255]);
        assert_eq!(decode("+/+/").unwrap(), [0xFB, 0xFF, 0xBF]);
    }

    #[test]
    fn not_base64_is_an_error() {
        assert_eq!(decode("Zm9"), Err(Base64Error::Length));
        assert_eq!(decode("Zm9*"), Err(Base64Error::Character(3)));
        assert_eq!(decode("Zg==Zg=="), Err(Base64Error::Character(2)));
        assert_eq!(decode("Z==="), Err(Base64Error::Character(1)));
        assert_eq!(decode("Zm 9"), Err(Base64Error::Character(2)));
    }
}
