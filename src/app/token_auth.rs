//! The built-in credential check (`--auth-token-file`): an upgrade must
//! carry one of the shared secrets in the file, as `Authorization: Bearer
//! TOKEN` or as `?token=TOKEN` (browsers cannot set headers on a
//! WebSocket); anything else is refused 401 before the 101.
//!
//! Shared secrets rather than signed tokens (JWT): nothing to parse or
//! verify per handshake but one comparison, no key-confusion pitfalls, and
//! no dependency; several lines in the file let a secret be rotated
//! without a moment when neither works. Comparison takes the same time
//! wherever the first differing byte is, so timing tells an attacker
//! nothing about a secret's content.

use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use crate::server::{CloseCtx, Ctx, Handler, Message, Refusal, Upgrade};
use crate::ws::Request;

/// Shorter secrets are refused at start: they can be guessed.
pub const MIN_TOKEN_LEN: usize = 16;

/// The secrets an upgrade may present; one per line of the file (blank
/// lines and lines starting with `#` are skipped).
#[derive(Clone, PartialEq, Eq)]
pub struct Tokens {
    tokens: Vec<Vec<u8>>,
}

impl fmt::Debug for Tokens {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Never print a secret.
        write!(f, "Tokens({} secrets)", self.tokens.len())
    }
}

/// Why a token file cannot be used; each names the file.
#[derive(Debug)]
pub enum TokenFileError {
    /// The file could not be read.
    Unreadable(PathBuf, std::io::Error),
    /// The file holds no token.
    Empty(PathBuf),
    /// A line (1-based) holds a token shorter than [`MIN_TOKEN_LEN`].
    TooShort(PathBuf, usize),
}

impl fmt::Display for TokenFileError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            TokenFileError::Unreadable(p, e) => write!(f, "--auth-token-file {}: cannot read it: {e}", p.display()),
            TokenFileError::Empty(p) => write!(f, "--auth-token-file {}: holds no token", p.display()),
            TokenFileError::TooShort(p, line) => write!(
                f,
                "--auth-token-file {}: line {line}: a token must be at least {MIN_TOKEN_LEN} characters",
                p.display()
            ),
        }
    }
}

impl std::error::Error for TokenFileError {}

impl Tokens {
    /// Reads the secrets from `path`.
    pub fn load(path: &Path) -> Result<Self, TokenFileError> {
        let text = std::fs::read_to_string(path).map_err(|e| TokenFileError::Unreadable(path.into(), e))?;
        Tokens::parse(&text).map_err(|line| match line {
            0 => TokenFileError::Empty(path.into()),
            n => TokenFileError::TooShort(path.into(), n),
        })
    }

    /// The secrets in `text`; `Err(0)` if there is none, `Err(line)` for a
    /// line whose token is too short.
    fn parse(text: &str) -> Result<Self, usize> {
        let mut tokens = Vec::new();
        for (i, line) in text.lines().enumerate() {
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            if line.len() < MIN_TOKEN_LEN {
                return Err(i + 1);
            }
            tokens.push(line.as_bytes().to_vec());
        }
        if tokens.is_empty() {
            return Err(0);
        }
        Ok(Tokens { tokens })
    }

    /// True if `request` presents one of the secrets.
    pub fn admits(&self, request: &Request<'_>) -> bool {
        let bearer = request.header("authorization").and_then(|v| {
            let (scheme, token) = v.split_once(' ')?;
            scheme.eq_ignore_ascii_case("bearer").then(|| token.trim().as_bytes().to_vec())
        });
        let presented = bearer.or_else(|| request.query_param("token").and_then(percent_decode));
        presented.is_some_and(|p| self.matches(&p))
    }

    /// Compares `presented` with every secret, each in time independent
    /// of where they differ.
    fn matches(&self, presented: &[u8]) -> bool {
        self.tokens.iter().fold(false, |found, t| found | constant_time_eq(t, presented))
    }
}

/// Equal slices, compared without an early exit on the first difference
/// (only the length, which is no secret, decides early).
fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    let diff = a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y));
    std::hint::black_box(diff) == 0
}

/// `%XX` escapes (and `+` as a space) decoded; `None` for a bad escape.
fn percent_decode(s: &str) -> Option<Vec<u8>> {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'%' => {
                let hex = std::str::from_utf8(bytes.get(i + 1..i + 3)?).ok()?;
                out.push(u8::from_str_radix(hex, 16).ok()?);
                i += 3;
            }
            b'+' => {
                out.push(b' ');
                i += 1;
            }
            b => {
                out.push(b);
                i += 1;
            }
        }
    }
    Some(out)
}

/// A handler behind the credential check: with `Some(tokens)`, upgrades
/// without one of them are refused 401 and `inner` never hears of them;
/// with `None`, everything goes to `inner` (the check is off).
#[derive(Debug, Clone)]
pub struct TokenAuth<H> {
    tokens: Option<Arc<Tokens>>,
    inner: H,
}

impl<H> TokenAuth<H> {
    /// `inner`, guarded by `tokens` (or not, with `None`).
    pub fn new(tokens: Option<Arc<Tokens>>, inner: H) -> Self {
        TokenAuth { tokens, inner }
    }
}

impl<H: Handler> Handler for TokenAuth<H> {
    fn on_upgrade(&mut self, upgrade: &Upgrade<'_>) -> Result<(), Refusal> {
        if let Some(tokens) = &self.tokens {
            if !tokens.admits(upgrade.request) {
                return Err(Refusal::Unauthorized);
            }
        }
        self.inner.on_upgrade(upgrade)
    }

    fn on_open(&mut self, ctx: &mut Ctx<'_>, request: &Request<'_>) {
        self.inner.on_open(ctx, request);
    }

    fn on_message(&mut self, ctx: &mut Ctx<'_>, message: Message<'_>) {
        self.inner.on_message(ctx, message);
    }

    fn on_close(&mut self, ctx: &mut CloseCtx<'_>, reason: crate::server::CloseReason) {
        self.inner.on_close(ctx, reason);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ws::handshake::{parse_request, HandshakeConfig};

    const SECRET: &str = "correct-horse-battery-staple";

    fn admits(tokens: &Tokens, target: &str, extra: &str) -> bool {
        let raw = format!(
            "GET {target} HTTP/1.1\r\nHost: a\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n{extra}\r\n"
        );
        let req = parse_request(raw.as_bytes(), &mut 0, &HandshakeConfig::default()).unwrap().unwrap();
        tokens.admits(&req)
    }

    #[test]
    fn a_secret_is_taken_from_the_header_or_the_query() {
        let tokens = Tokens::parse(&format!("# rotated monthly\n\n{SECRET}\nthe-next-secret-to-come\n")).unwrap();
        assert!(admits(&tokens, "/ws", &format!("Authorization: Bearer {SECRET}\r\n")));
        assert!(admits(&tokens, "/ws", &format!("authorization: bearer   {SECRET}\r\n")));
        assert!(admits(&tokens, "/ws", "Authorization: Bearer the-next-secret-to-come\r\n"));
        assert!(admits(&tokens, &format!("/ws?room=x&token={SECRET}"), ""));
        assert!(admits(&tokens, "/ws?token=correct%2Dhorse-battery-staple", ""), "percent-encoded");
        // Wrong, missing, truncated, longer, other schemes, bad escapes.
        assert!(!admits(&tokens, "/ws", ""));
        assert!(!admits(&tokens, "/ws", "Authorization: Bearer correct-horse-battery-stapl\r\n"));
        assert!(!admits(&tokens, "/ws", &format!("Authorization: Bearer {SECRET}x\r\n")));
        assert!(!admits(&tokens, "/ws", &format!("Authorization: Basic {SECRET}\r\n")));
        assert!(!admits(&tokens, "/ws?token=%zz", ""));
        assert!(!admits(&tokens, "/ws?tokens=correct-horse-battery-staple", ""));
        // A wrong header is not rescued by the query (the header decides).
        assert!(!admits(&tokens, &format!("/ws?token={SECRET}"), "Authorization: Bearer nope-nope-nope-nope\r\n"));
    }

    #[test]
    fn bad_files_are_named_errors() {
        assert_eq!(Tokens::parse("# nothing\n\n"), Err(0));
        assert_eq!(Tokens::parse(&format!("{SECRET}\nshort\n")), Err(2));
        let missing = Tokens::load(Path::new("/nonexistent/tokens")).unwrap_err().to_string();
        assert!(missing.starts_with("--auth-token-file /nonexistent/tokens: cannot read it"), "{missing}");
        assert_eq!(format!("{:?}", Tokens::parse(SECRET).unwrap()), "Tokens(1 secrets)");
    }

    #[test]
    fn comparison_is_exact() {
        assert!(constant_time_eq(b"abc", b"abc"));
        assert!(!constant_time_eq(b"abc", b"abd"));
        assert!(!constant_time_eq(b"abc", b"ab"));
        assert_eq!(percent_decode("a%41+b").as_deref(), Some(&b"aA b"[..]));
        assert_eq!(percent_decode("%4"), None);
    }
}
