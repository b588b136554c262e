//! The admin API's bearer token: one secret read from `--admin-token-file`
//! at start, compared in constant time, and never shown (not in `Debug`,
//! errors or logs).

use std::fmt;
use std::path::{Path, PathBuf};

use crate::server::identity::constant_time_eq;

/// The shortest token accepted: a guessable one would open the whole API.
pub const MIN_LEN: usize = 16;
/// The longest token accepted (it must fit in a request head).
pub const MAX_LEN: usize = 1024;

/// The secret every admin request must present as `Authorization: Bearer`.
#[derive(Clone)]
pub struct AdminToken(Vec<u8>);

impl fmt::Debug for AdminToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("AdminToken(..)")
    }
}

/// Why the token file cannot be used; the message names the file.
#[derive(Debug)]
pub enum TokenError {
    /// It cannot be read.
    Unreadable(PathBuf, std::io::Error),
    /// Its first line (surrounding spaces trimmed) is not a usable token.
    Bad(PathBuf, &'static str),
}

impl fmt::Display for TokenError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            TokenError::Unreadable(p, e) => write!(f, "--admin-token-file {}: {e}", p.display()),
            TokenError::Bad(p, why) => write!(f, "--admin-token-file {}: {why}", p.display()),
        }
    }
}

impl std::error::Error for TokenError {}

impl AdminToken {
    /// The token in the first line of `path`.
    pub fn load(path: &Path) -> Result<AdminToken, TokenError> {
        use std::io::Read;
        // Only the first line counts: read no more than a line can be.
        let mut bytes = Vec::new();
        let read = std::fs::File::open(path).and_then(|f| f.take(MAX_LEN as u64 + 64).read_to_end(&mut bytes));
        read.map_err(|e| TokenError::Unreadable(path.into(), e))?;
        let text = String::from_utf8_lossy(&bytes);
        AdminToken::parse(&text).map_err(|why| TokenError::Bad(path.into(), why))
    }

    /// The token in the first line of `text`.
    pub fn parse(text: &str) -> Result<AdminToken, &'static str> {
        let token = text.lines().next().unwrap_or_default().trim();
        if token.len() < MIN_LEN {
            return Err("the token (its first line) must be at least 16 characters");
        }
        if token.len() > MAX_LEN {
            return Err("the token must be at most 1024 characters");
        }
        if !token.bytes().all(|b| b.is_ascii_graphic()) {
            return Err("the token must be printable ASCII without spaces");
        }
        Ok(AdminToken(token.as_bytes().to_vec()))
    }

    /// The token's text, for a client to send.
    pub fn expose(&self) -> &[u8] {
        &self.0
    }

    /// True if an `Authorization` header's value presents this token.
    pub fn admits(&self, authorization: Option<&[u8]>) -> bool {
        let Some(value) = authorization else { return false };
        let Some(presented) = strip_bearer(value) else { return false };
        constant_time_eq(&self.0, presented)
    }
}

/// The credentials of `Bearer <token>` (the scheme in any case).
fn strip_bearer(value: &[u8]) -> Option<&[u8]> {
    let (scheme, rest) = value.split_at_checked(7)?;
    scheme.eq_ignore_ascii_case(b"bearer ").then(|| rest.trim_ascii())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_exact_bearer_token_is_admitted() {
        let token = AdminToken::parse("0123456789abcdef\nignored").unwrap();
        assert!(token.admits(Some(b"Bearer 0123456789abcdef")));
        assert!(token.admits(Some(b"bearer 0123456789abcdef ")));
        for wrong in
            [&b"Bearer 0123456789abcdeF"[..], b"Bearer 0123456789abcde", b"Basic 0123456789abcdef", b"", b"Bearer"]
        {
            assert!(!token.admits(Some(wrong)), "{wrong:?}");
        }
        assert!(!token.admits(None));
        assert!(!format!("{token:?}").contains("0123"));
    }

    #[test]
    fn bad_tokens_are_refused_with_a_reason() {
        assert!(AdminToken::parse("short").is_err());
        assert!(AdminToken::parse("").is_err());
        assert!(AdminToken::parse("has a space in it, long").is_err());
        assert!(AdminToken::parse(&"x".repeat(MAX_LEN + 1)).is_err());
        assert!(AdminToken::parse("  0123456789abcdef  \n").is_ok());
        let e = AdminToken::load(Path::new("/nonexistent/admin-token")).unwrap_err().to_string();
        assert!(e.starts_with("--admin-token-file /nonexistent/admin-token"), "{e}");
    }
}
