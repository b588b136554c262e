//! Checking a token: signature (by the key its `kid` names), `exp`, `nbf`,
//! `aud` and `iss` when configured, with a clock-skew allowance; then the
//! claims the connection lives by: `sub` (its user id) and `wsloop` (its
//! rights). Every way a token fails is a [`Rejection`] with a stable label,
//! counted; none of them logs or keeps the token.
//!
//! The keys are reloaded on SIGHUP ([`Verifier::reload`]): new handshakes
//! and refreshes use the new file at once; a bad file keeps the old keys.

use std::path::PathBuf;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use jsonwebtoken::errors::ErrorKind;
use jsonwebtoken::{decode, decode_header, Validation};
use serde::Deserialize;

use super::keys::{KeyFileError, Keys};
use super::rights::Rights;

/// Bytes in a user id (`sub`) at most.
pub const MAX_SUB_LEN: usize = 256;

/// How tokens are checked (`--jwt-*` flags).
#[derive(Debug, Clone)]
pub struct JwtConfig {
    /// The key file: an HMAC secret, a PEM public key, or a JWKS.
    pub key_file: PathBuf,
    /// Accepted `aud` values; when set, a token must name one of them.
    pub audience: Vec<String>,
    /// Accepted `iss` values; when set, a token must name one of them.
    pub issuer: Vec<String>,
    /// Clock skew allowed on `exp` and `nbf`.
    pub leeway: Duration,
}

/// What a valid token says about its connection.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Verified {
    /// The user id (`sub`), 1 to [`MAX_SUB_LEN`] bytes.
    pub sub: String,
    /// When the token expires (`exp`), seconds since the Unix epoch.
    pub expires: u64,
    /// What it may do with rooms.
    pub rights: Rights,
}

/// Why a token was refused; the `reason` label of
/// `wsloop_auth_refused_total`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Rejection {
    /// No token was presented (401).
    Missing,
    /// Not a JWT: its shape, base64, JSON or header is broken, or it names
    /// an algorithm there is none of (`none`) (401).
    Malformed,
    /// Its algorithm is not one its key accepts (401).
    BadAlgorithm,
    /// Its `kid` names no key (or it has none and there are several) (401).
    UnknownKey,
    /// The signature does not match (401).
    BadSignature,
    /// `exp` has passed (401).
    Expired,
    /// `nbf` has not come yet (401).
    NotYetValid,
    /// `aud` is not an accepted audience (401).
    WrongAudience,
    /// `iss` is not an accepted issuer (401).
    WrongIssuer,
    /// Genuine, but its claims cannot be used: no `sub` or `exp`, a `sub`
    /// too long, rights out of bounds (403).
    BadClaims,
    /// Genuine, but for another user than the connection's (a refresh) (403).
    OtherUser,
    /// A refresh whose `exp` is no later than the token's in use: refused
    /// before its signature is checked.
    NotNewer,
    /// The user holds `--max-conns-per-user` connections already (429).
    UserLimit,
}

impl Rejection {
    /// Every reason, in counter order.
    pub const ALL: [Rejection; 13] = [
        Rejection::Missing,
        Rejection::Malformed,
        Rejection::BadAlgorithm,
        Rejection::UnknownKey,
        Rejection::BadSignature,
        Rejection::Expired,
        Rejection::NotYetValid,
        Rejection::WrongAudience,
        Rejection::WrongIssuer,
        Rejection::BadClaims,
        Rejection::OtherUser,
        Rejection::NotNewer,
        Rejection::UserLimit,
    ];

    /// The metric label, also the error code a refused refresh replies with.
    pub fn label(self) -> &'static str {
        match self {
            Rejection::Missing => "missing",
            Rejection::Malformed => "malformed",
            Rejection::BadAlgorithm => "bad_algorithm",
            Rejection::UnknownKey => "unknown_kid",
            Rejection::BadSignature => "bad_signature",
            Rejection::Expired => "expired",
            Rejection::NotYetValid => "not_yet_valid",
            Rejection::WrongAudience => "wrong_audience",
            Rejection::WrongIssuer => "wrong_issuer",
            Rejection::BadClaims => "bad_claims",
            Rejection::OtherUser => "other_user",
            Rejection::NotNewer => "not_newer",
            Rejection::UserLimit => "user_limit",
        }
    }

    /// True for a genuine token that grants nothing here (403, not 401).
    pub fn is_forbidden(self) -> bool {
        matches!(self, Rejection::BadClaims | Rejection::OtherUser | Rejection::NotNewer)
    }
}

/// A denied room action; the `action` label of `wsloop_auth_forbidden_total`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Denied {
    /// A join the rights do not name.
    Join,
    /// A publish the rights do not name.
    Publish,
    /// A broadcast without the right to.
    Broadcast,
}

impl Denied {
    /// Every action, in counter order.
    pub const ALL: [Denied; 3] = [Denied::Join, Denied::Publish, Denied::Broadcast];

    /// The metric label.
    pub fn label(self) -> &'static str {
        match self {
            Denied::Join => "join",
            Denied::Publish => "publish",
            Denied::Broadcast => "broadcast",
        }
    }
}

/// Refusal lines logged per second at most, process-wide: a flood of bad
/// tokens is counted in full but cannot flood the log.
const LOG_LINES_PER_SECOND: u32 = 20;

/// Refusals and denials, summed over every loop (rare next to messages:
/// one shared atomic each is cheap enough).
#[derive(Debug, Default)]
pub struct AuthCounts {
    refused: [AtomicU64; Rejection::ALL.len()],
    denied: [AtomicU64; Denied::ALL.len()],
    /// Refreshes taken, and refused.
    refreshed: [AtomicU64; 2],
    log_second: AtomicU64,
    log_lines: AtomicU32,
}

impl AuthCounts {
    /// True if a refusal at `now` (seconds) may have its line in the log.
    pub(crate) fn may_log(&self, now: u64) -> bool {
        if self.log_second.swap(now, Relaxed) != now {
            self.log_lines.store(1, Relaxed);
            return true;
        }
        self.log_lines.fetch_add(1, Relaxed) < LOG_LINES_PER_SECOND
    }

    /// Counts one refused token.
    pub fn refuse(&self, why: Rejection) {
        self.refused[why as usize].fetch_add(1, Relaxed);
    }

    /// Tokens refused for `why` so far.
    pub fn refused(&self, why: Rejection) -> u64 {
        self.refused[why as usize].load(Relaxed)
    }

    /// Counts one denied room action.
    pub fn deny(&self, what: Denied) {
        self.denied[what as usize].fetch_add(1, Relaxed);
    }

    /// Room actions denied as `what` so far.
    pub fn denied(&self, what: Denied) -> u64 {
        self.denied[what as usize].load(Relaxed)
    }

    /// Counts one refresh, taken or refused (refused refreshes are not
    /// counted as refused upgrades).
    pub fn refresh(&self, taken: bool) {
        self.refreshed[usize::from(!taken)].fetch_add(1, Relaxed);
    }

    /// Refreshes taken (`true`) or refused (`false`) so far.
    pub fn refreshed(&self, taken: bool) -> u64 {
        self.refreshed[usize::from(!taken)].load(Relaxed)
    }
}

/// Checks tokens against the current keys; shared by every loop.
#[derive(Debug)]
pub struct Verifier {
    config: JwtConfig,
    keys: RwLock<Arc<Keys>>,
    /// What was refused and denied, for `/metrics`.
    pub counts: AuthCounts,
}

/// The claims this server reads; the rest are the issuer's own business.
#[derive(Deserialize)]
struct Claims {
    sub: String,
    exp: u64,
    #[serde(default)]
    wsloop: Option<Rights>,
}

impl Verifier {
    /// Reads the key file; a file that cannot be used is an error naming it.
    pub fn load(config: JwtConfig) -> Result<Self, KeyFileError> {
        super::ring_verify::install();
        let keys = Keys::load(&config.key_file)?;
        Ok(Verifier { config, keys: RwLock::new(Arc::new(keys)), counts: AuthCounts::default() })
    }

    /// The clock skew allowed on `exp` and `nbf`, in seconds.
    pub fn leeway(&self) -> u64 {
        self.config.leeway.as_secs()
    }

    /// Reads the key file again; the old keys stay if it cannot be used.
    /// Returns how many keys it holds now.
    pub fn reload(&self) -> Result<usize, KeyFileError> {
        let keys = Keys::load(&self.config.key_file)?;
        let n = keys.keys.len();
        *self.keys.write().unwrap_or_else(|poisoned| poisoned.into_inner()) = Arc::new(keys);
        Ok(n)
    }

    /// The `exp` a token claims, read without checking anything: for
    /// turning away a refresh that could not extend the token in use
    /// before paying for its signature.
    pub fn unverified_expiry(token: &[u8]) -> Option<u64> {
        let data = jsonwebtoken::dangerous::insecure_decode::<serde_json::Value>(token).ok()?;
        data.claims.get("exp")?.as_u64()
    }

    /// Checks `token` now. Not counted: the caller counts what it refuses.
    pub fn verify(&self, token: &[u8]) -> Result<Verified, Rejection> {
        let keys = Arc::clone(&self.keys.read().unwrap_or_else(|poisoned| poisoned.into_inner()));
        let header = decode_header(token).map_err(|_| Rejection::Malformed)?;
        let key = keys.find(header.kid.as_deref()).ok_or(Rejection::UnknownKey)?;
        if !key.algorithms.contains(&header.alg) {
            return Err(Rejection::BadAlgorithm);
        }
        let mut validation = Validation::new(header.alg);
        validation.algorithms = key.algorithms.clone();
        validation.leeway = self.config.leeway.as_secs();
        validation.validate_nbf = true;
        validation.set_required_spec_claims(&["exp", "sub"]);
        // Without --jwt-audience, a token that names an audience is meant
        // for someone else and is refused (RFC 7519 4.1.3); one without is
        // taken.
        if !self.config.audience.is_empty() {
            validation.set_audience(&self.config.audience);
            validation.required_spec_claims.insert("aud".into());
        }
        if !self.config.issuer.is_empty() {
            validation.set_issuer(&self.config.issuer);
            validation.required_spec_claims.insert("iss".into());
        }
        let data = decode::<serde_json::Value>(token, &key.key, &validation).map_err(|e| rejection(e.kind()))?;
        let claims: Claims = serde_json::from_value(data.claims).map_err(|_| Rejection::BadClaims)?;
        if claims.sub.is_empty() || claims.sub.len() > MAX_SUB_LEN {
            return Err(Rejection::BadClaims);
        }
        let rights = claims.wsloop.unwrap_or_default().checked().map_err(|_| Rejection::BadClaims)?;
        Ok(Verified { sub: claims.sub, expires: claims.exp, rights })
    }
}

/// The rejection a decode error stands for. Errors about the claims come
/// only after the signature was checked, so they mean a genuine token.
fn rejection(kind: &ErrorKind) -> Rejection {
    match kind {
        ErrorKind::InvalidSignature => Rejection::BadSignature,
        ErrorKind::InvalidAlgorithm | ErrorKind::MissingAlgorithm => Rejection::BadAlgorithm,
        ErrorKind::ExpiredSignature => Rejection::Expired,
        ErrorKind::ImmatureSignature => Rejection::NotYetValid,
        ErrorKind::InvalidAudience => Rejection::WrongAudience,
        ErrorKind::InvalidIssuer => Rejection::WrongIssuer,
        ErrorKind::MissingRequiredClaim(claim) if claim == "aud" => Rejection::WrongAudience,
        ErrorKind::MissingRequiredClaim(claim) if claim == "iss" => Rejection::WrongIssuer,
        ErrorKind::MissingRequiredClaim(_) | ErrorKind::InvalidClaimFormat(_) | ErrorKind::InvalidSubject => {
            Rejection::BadClaims
        }
        _ => Rejection::Malformed,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use jsonwebtoken::{encode, Algorithm, EncodingKey, Header};
    use serde_json::json;

    const SECRET: &str = "a-secret-of-at-least-32-bytes-long!";

    fn verifier(name: &str, key: &str, audience: &[&str]) -> Verifier {
        let path = std::env::temp_dir().join(format!("wsloop-verify-{}-{name}", std::process::id()));
        std::fs::write(&path, key).unwrap();
        let audience = audience.iter().map(|s| s.to_string()).collect();
        let config = JwtConfig { key_file: path, audience, issuer: vec![], leeway: Duration::from_secs(5) };
        Verifier::load(config).unwrap()
    }

    fn now() -> u64 {
        jsonwebtoken::get_current_timestamp()
    }

    fn token(header: Header, claims: serde_json::Value, secret: &str) -> String {
        encode(&header, &claims, &EncodingKey::from_secret(secret.as_bytes())).unwrap()
    }

    #[test]
    fn a_token_for_an_audience_is_refused_where_none_is_configured() {
        let v = verifier("aud", SECRET, &[]);
        let claims = json!({"sub": "a", "exp": now() + 60, "aud": "another-service"});
        assert_eq!(v.verify(token(Header::default(), claims, SECRET).as_bytes()), Err(Rejection::WrongAudience));
    }

    #[test]
    fn a_valid_token_gives_the_user_its_expiry_and_its_rights() {
        let v = verifier("valid", SECRET, &[]);
        let claims = json!({"sub": "alice", "exp": now() + 60, "wsloop": {"join": ["chat:*"], "broadcast": true}});
        let verified = v.verify(token(Header::default(), claims, SECRET).as_bytes()).unwrap();
        assert_eq!(verified.sub, "alice");
        assert_eq!(verified.expires, now() + 60);
        assert!(verified.rights.may_join("alice", "chat:1") && verified.rights.broadcast);
        assert!(!verified.rights.may_publish("alice", "chat:1"));
    }

    #[test]
    fn every_bad_token_is_refused_with_its_reason() {
        let v = verifier("bad", SECRET, &["wsloop-tests"]);
        let good = json!({"sub": "a", "exp": now() + 60, "aud": "wsloop-tests"});
        let with = |patch: serde_json::Value| {
            let mut claims = good.clone();
            claims.as_object_mut().unwrap().extend(patch.as_object().unwrap().clone());
            claims
        };
        let check = |t: String| v.verify(t.as_bytes());
        assert!(check(token(Header::default(), good.clone(), SECRET)).is_ok());
        assert_eq!(check(token(Header::default(), with(json!({"exp": now() - 60})), SECRET)), Err(Rejection::Expired));
        assert_eq!(
            check(token(Header::default(), with(json!({"nbf": now() + 60})), SECRET)),
            Err(Rejection::NotYetValid)
        );
        let other_secret = "another-secret-of-32-bytes-or-more";
        assert_eq!(check(token(Header::default(), good.clone(), other_secret)), Err(Rejection::BadSignature));
        assert_eq!(
            check(token(Header::default(), with(json!({"aud": "other"})), SECRET)),
            Err(Rejection::WrongAudience)
        );
        let no_aud = json!({"sub": "a", "exp": now() + 60});
        assert_eq!(check(token(Header::default(), no_aud, SECRET)), Err(Rejection::WrongAudience));
        assert_eq!(check(token(Header::default(), with(json!({"sub": ""})), SECRET)), Err(Rejection::BadClaims));
        let long_sub = "x".repeat(MAX_SUB_LEN + 1);
        assert_eq!(check(token(Header::default(), with(json!({"sub": long_sub})), SECRET)), Err(Rejection::BadClaims));
        let no_sub = json!({"exp": now() + 60, "aud": "wsloop-tests"});
        assert_eq!(check(token(Header::default(), no_sub, SECRET)), Err(Rejection::BadClaims));
        let bad_rights = with(json!({"wsloop": {"join": ["a*b"]}}));
        assert_eq!(check(token(Header::default(), bad_rights, SECRET)), Err(Rejection::BadClaims));
        let hs512 = token(Header::new(Algorithm::HS512), good.clone(), SECRET);
        assert!(check(hs512).is_ok(), "every HMAC size from one secret");
        // `alg: none`: an unsigned token is not a JWT this server reads.
        let b64 = |s: &str| {
            use base64::Engine as _;
            base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(s)
        };
        let unsigned = format!("{}.{}.", b64(r#"{"alg":"none","typ":"JWT"}"#), b64(&good.to_string()));
        assert_eq!(check(unsigned), Err(Rejection::Malformed));
        for garbage in ["", "a.b", "a.b.c", "...", "eyJ.eyJ.sig"] {
            assert_eq!(v.verify(garbage.as_bytes()), Err(Rejection::Malformed), "{garbage:?}");
        }
    }

    #[test]
    fn a_jwks_picks_the_key_by_kid_and_a_reload_replaces_them() {
        use base64::Engine as _;
        let k = |s: &str| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(s);
        let (one, two) = ("first-secret-of-32-bytes-or-more!", "second-secret-of-32-bytes-or-more");
        let set = format!(
            r#"{{"keys":[{{"kty":"oct","kid":"one","k":"{}"}},{{"kty":"oct","kid":"two","k":"{}"}}]}}"#,
            k(one),
            k(two)
        );
        let v = verifier("jwks", &set, &[]);
        let claims = json!({"sub": "a", "exp": now() + 60});
        let signed = |kid: Option<&str>, secret: &str| {
            let header = Header { kid: kid.map(str::to_owned), ..Header::default() };
            token(header, claims.clone(), secret)
        };
        assert!(v.verify(signed(Some("one"), one).as_bytes()).is_ok());
        assert!(v.verify(signed(Some("two"), two).as_bytes()).is_ok());
        assert_eq!(v.verify(signed(Some("two"), one).as_bytes()), Err(Rejection::BadSignature));
        assert_eq!(v.verify(signed(Some("three"), one).as_bytes()), Err(Rejection::UnknownKey));
        assert_eq!(v.verify(signed(None, one).as_bytes()), Err(Rejection::UnknownKey));
        // An RS256 token against an HMAC key: refused before any check.
        let rs = format!("{}.{}.c2ln", k(r#"{"alg":"RS256","kid":"one"}"#), k(&claims.to_string()));
        assert_eq!(v.verify(rs.as_bytes()), Err(Rejection::BadAlgorithm));
        // Reload: `one` is gone, a bad file keeps the keys in use.
        let only_two = format!(r#"{{"keys":[{{"kty":"oct","kid":"two","k":"{}"}}]}}"#, k(two));
        std::fs::write(&v.config.key_file, only_two).unwrap();
        assert_eq!(v.reload().unwrap(), 1);
        assert_eq!(v.verify(signed(Some("one"), one).as_bytes()), Err(Rejection::UnknownKey));
        std::fs::write(&v.config.key_file, "short").unwrap();
        assert!(v.reload().is_err());
        assert!(v.verify(signed(Some("two"), two).as_bytes()).is_ok(), "the old keys stayed");
    }
}
