//! The built-in credential check (`--auth-token-file`): an upgrade must
//! carry one of the shared secrets in the file, as `Authorization: Bearer
//! TOKEN` or as `?token=TOKEN` (browsers cannot set headers on a
//! WebSocket); anything else is refused 401 before the 101. A secret may
//! carry an expiry (`SECRET expires=2026-12-31` or `...T18:00:00Z`, UTC):
//! from then on it is refused like a wrong one.
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

use crate::server::identity::constant_time_eq;
use crate::server::{CloseCtx, Ctx, Handler, Message, Refusal, Upgrade};
use crate::ws::Request;

/// Shorter secrets are refused at start: they can be guessed.
pub const MIN_TOKEN_LEN: usize = 16;

/// The secrets an upgrade may present; one per line of the file (blank
/// lines and lines starting with `#` are skipped), each with its expiry if
/// it has one (seconds since the Unix epoch).
#[derive(Clone, PartialEq, Eq)]
pub struct Tokens {
    tokens: Vec<(Vec<u8>, Option<u64>)>,
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
    /// A line (1-based) has something after its token other than a valid
    /// `expires=YYYY-MM-DD[THH:MM:SSZ]`.
    BadExpiry(PathBuf, usize),
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
            TokenFileError::BadExpiry(p, line) => write!(
                f,
                "--auth-token-file {}: line {line}: after the token, only expires=YYYY-MM-DD or expires=YYYY-MM-DDTHH:MM:SSZ",
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
        Tokens::parse(&text).map_err(|e| match e {
            LineError::Empty => TokenFileError::Empty(path.into()),
            LineError::TooShort(n) => TokenFileError::TooShort(path.into(), n),
            LineError::BadExpiry(n) => TokenFileError::BadExpiry(path.into(), n),
        })
    }

    /// The secrets in `text`, or what is wrong with it.
    fn parse(text: &str) -> Result<Self, LineError> {
        let mut tokens = Vec::new();
        for (i, line) in text.lines().enumerate() {
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let (secret, rest) = line.split_once(char::is_whitespace).unwrap_or((line, ""));
            if secret.len() < MIN_TOKEN_LEN {
                return Err(LineError::TooShort(i + 1));
            }
            let expires = match rest.trim() {
                "" => None,
                rest => {
                    let when = rest.strip_prefix("expires=").and_then(parse_utc);
                    Some(when.ok_or(LineError::BadExpiry(i + 1))?)
                }
            };
            tokens.push((secret.as_bytes().to_vec(), expires));
        }
        if tokens.is_empty() {
            return Err(LineError::Empty);
        }
        Ok(Tokens { tokens })
    }

    /// True if `request` presents one of the secrets, unexpired now.
    pub fn admits(&self, request: &Request<'_>) -> bool {
        let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_secs());
        self.admits_at(request, now)
    }

    /// True if `request` presents one of the secrets, unexpired at `now`
    /// (seconds since the Unix epoch).
    pub fn admits_at(&self, request: &Request<'_>, now: u64) -> bool {
        let presented = request.credential();
        presented.is_some_and(|p| self.matches(&p, now))
    }

    /// Compares `presented` with every secret, each in time independent
    /// of where they differ; an expired one never matches.
    fn matches(&self, presented: &[u8], now: u64) -> bool {
        self.tokens.iter().fold(false, |found, (secret, expires)| {
            let current = expires.is_none_or(|at| now < at);
            found | (constant_time_eq(secret, presented) & current)
        })
    }
}

/// What is wrong with a token file's text.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum LineError {
    /// No token at all.
    Empty,
    /// The token on this line (1-based) is too short.
    TooShort(usize),
    /// What follows the token on this line is not a valid expiry.
    BadExpiry(usize),
}

/// `YYYY-MM-DD` (midnight) or `YYYY-MM-DDTHH:MM:SSZ`, UTC, as seconds since
/// the Unix epoch; `None` if it is neither or not a real date.
fn parse_utc(s: &str) -> Option<u64> {
    let (date, time) = match s.split_once('T') {
        Some((d, t)) => (d, Some(t.strip_suffix('Z')?)),
        None => (s, None),
    };
    let mut ymd = date.splitn(3, '-').map(|p| p.parse::<u32>().ok());
    let (y, m, d) = (ymd.next()??, ymd.next()??, ymd.next()??);
    let leap = (y % 4 == 0 && y % 100 != 0) || y % 400 == 0;
    let month_days = [31, if leap { 29 } else { 28 }, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31];
    if !(1970..=9999).contains(&y) || !(1..=12).contains(&m) || d == 0 || d > month_days[m as usize - 1] {
        return None;
    }
    let (hh, mm, ss) = match time {
        None => (0, 0, 0),
        Some(t) => {
            let mut hms = t.splitn(3, ':').map(|p| p.parse::<u32>().ok());
            (hms.next()??, hms.next()??, hms.next()??)
        }
    };
    if hh > 23 || mm > 59 || ss > 59 {
        return None;
    }
    let days_before_year = (1970..y).map(|y| if (y % 4 == 0 && y % 100 != 0) || y % 400 == 0 { 366 } else { 365 });
    let days = days_before_year.sum::<u64>() + month_days[..m as usize - 1].iter().sum::<u32>() as u64 + (d - 1) as u64;
    Some(days * 86_400 + (hh * 3600 + mm * 60 + ss) as u64)
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
    fn an_expired_secret_is_refused_like_a_wrong_one() {
        let tokens = Tokens::parse(&format!(
            "{SECRET} expires=2026-12-01\nlater-secret-for-2027 expires=2027-01-01T12:00:00Z\n"
        ))
        .unwrap();
        let header = |t: &str| format!("Authorization: Bearer {t}\r\n");
        let at = |tokens: &Tokens, extra: &str, now: u64| {
            let raw = format!(
                "GET /ws HTTP/1.1\r\nHost: a\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n{extra}\r\n"
            );
            let req = parse_request(raw.as_bytes(), &mut 0, &HandshakeConfig::default()).unwrap().unwrap();
            tokens.admits_at(&req, now)
        };
        let dec_1 = parse_utc("2026-12-01").unwrap();
        assert_eq!(dec_1, 1_796_083_200);
        assert!(at(&tokens, &header(SECRET), dec_1 - 1));
        assert!(!at(&tokens, &header(SECRET), dec_1), "expired at its date");
        let jan_1_noon = parse_utc("2027-01-01T12:00:00Z").unwrap();
        assert_eq!(jan_1_noon, 1_798_804_800);
        assert!(at(&tokens, &header("later-secret-for-2027"), jan_1_noon - 1));
        assert!(!at(&tokens, &header("later-secret-for-2027"), jan_1_noon));
        for bad in ["2026-02-29", "2026-13-01", "2026-1-1T25:00:00Z", "2026-01-01T00:00:00", "soon", "1969-12-31"] {
            assert_eq!(parse_utc(bad), None, "{bad}");
        }
        assert_eq!(parse_utc("2024-02-29"), Some(1_709_164_800));
        assert_eq!(Tokens::parse(&format!("{SECRET} until=2027-01-01")), Err(LineError::BadExpiry(1)));
    }

    #[test]
    fn bad_files_are_named_errors() {
        assert_eq!(Tokens::parse("# nothing\n\n"), Err(LineError::Empty));
        assert_eq!(Tokens::parse(&format!("{SECRET}\nshort\n")), Err(LineError::TooShort(2)));
        let missing = Tokens::load(Path::new("/nonexistent/tokens")).unwrap_err().to_string();
        assert!(missing.starts_with("--auth-token-file /nonexistent/tokens: cannot read it"), "{missing}");
        assert_eq!(format!("{:?}", Tokens::parse(SECRET).unwrap()), "Tokens(1 secrets)");
    }

    #[test]
    fn comparison_is_exact() {
        assert!(constant_time_eq(b"abc", b"abc"));
        assert!(!constant_time_eq(b"abc", b"abd"));
        assert!(!constant_time_eq(b"abc", b"ab"));
        assert_eq!(crate::ws::handshake::percent_decode("a%41+b").as_deref(), Some(&b"aA b"[..]));
        assert_eq!(crate::ws::handshake::percent_decode("%4"), None);
    }
}
