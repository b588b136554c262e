//! The keys tokens are checked with (`--jwt-key FILE`), read from one file
//! that is any of:
//!
//! - a JWKS (`{"keys": [...]}`): several keys, each found by its `kid`
//!   (RSA, EC P-256/P-384, Ed25519, or `oct` secrets); a key's `alg`, when
//!   given, is the only algorithm it accepts;
//! - a PEM public key (RSA, EC or Ed25519);
//! - anything else: an HS256/384/512 secret, the file's bytes (one final
//!   newline dropped), at least [`MIN_SECRET_LEN`] bytes (RFC 7518 §3.2).
//!
//! Each key accepts only the algorithms of its own kind, so a token can
//! never have an RSA public key used as an HMAC secret (the classic key
//! confusion); `alg: none` is no algorithm at all and never accepted.

use std::fmt;
use std::path::{Path, PathBuf};
use std::str::FromStr;

use jsonwebtoken::jwk::{AlgorithmParameters, EllipticCurve, Jwk, JwkSet, PublicKeyUse};
use jsonwebtoken::{Algorithm, DecodingKey};

/// Shorter HMAC secrets are refused at start: they can be guessed.
pub const MIN_SECRET_LEN: usize = 32;

/// Keys in one file at most.
const MAX_KEYS: usize = 64;

/// One key and the algorithms a token signed with it may name.
pub(crate) struct Key {
    /// Its `kid` (JWKS), if it has one.
    pub(crate) kid: Option<String>,
    pub(crate) key: DecodingKey,
    pub(crate) algorithms: Vec<Algorithm>,
}

/// The keys of one file.
pub(crate) struct Keys {
    pub(crate) keys: Vec<Key>,
}

impl fmt::Debug for Keys {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Never print key material.
        let kids: Vec<_> = self.keys.iter().map(|k| k.kid.as_deref().unwrap_or("-")).collect();
        write!(f, "Keys({kids:?})")
    }
}

/// Why a key file cannot be used; each names the file.
#[derive(Debug)]
pub enum KeyFileError {
    /// The file could not be read.
    Unreadable(PathBuf, std::io::Error),
    /// A PEM block that is no RSA, EC or Ed25519 public key.
    BadPem(PathBuf),
    /// A JWKS that does not parse, holds no key, or too many.
    BadJwks(PathBuf, String),
    /// A JWKS key that cannot be used (its `kid` or index, and why).
    BadJwk(PathBuf, String, String),
    /// An HMAC secret shorter than [`MIN_SECRET_LEN`].
    ShortSecret(PathBuf, usize),
}

impl fmt::Display for KeyFileError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            KeyFileError::Unreadable(p, e) => write!(f, "--jwt-key {}: cannot read it: {e}", p.display()),
            KeyFileError::BadPem(p) => {
                write!(f, "--jwt-key {}: a PEM block, but no RSA, EC or Ed25519 public key", p.display())
            }
            KeyFileError::BadJwks(p, why) => write!(f, "--jwt-key {}: not a usable JWKS: {why}", p.display()),
            KeyFileError::BadJwk(p, which, why) => write!(f, "--jwt-key {}: key {which}: {why}", p.display()),
            KeyFileError::ShortSecret(p, len) => write!(
                f,
                "--jwt-key {}: an HMAC secret of {len} bytes; at least {MIN_SECRET_LEN} are needed",
                p.display()
            ),
        }
    }
}

impl std::error::Error for KeyFileError {}

impl Keys {
    /// Reads the keys in `path`.
    pub(crate) fn load(path: &Path) -> Result<Self, KeyFileError> {
        let bytes = std::fs::read(path).map_err(|e| KeyFileError::Unreadable(path.into(), e))?;
        let text = std::str::from_utf8(&bytes).unwrap_or("");
        let trimmed = text.trim_start();
        if trimmed.starts_with('{') {
            return jwks(path, trimmed);
        }
        if trimmed.starts_with("-----BEGIN") {
            return pem(path, trimmed.as_bytes()).map(|key| Keys { keys: vec![key] });
        }
        let secret = bytes.strip_suffix(b"\n").unwrap_or(&bytes);
        let secret = secret.strip_suffix(b"\r").unwrap_or(secret);
        if secret.len() < MIN_SECRET_LEN {
            return Err(KeyFileError::ShortSecret(path.into(), secret.len()));
        }
        let key = Key { kid: None, key: DecodingKey::from_secret(secret), algorithms: HMAC.to_vec() };
        Ok(Keys { keys: vec![key] })
    }

    /// The key a token with header `kid` is checked with: the one with that
    /// `kid`; a token without one is checked with the only key of a file
    /// that has one key (and is refused where there are several).
    pub(crate) fn find(&self, kid: Option<&str>) -> Option<&Key> {
        match (kid, &self.keys[..]) {
            (_, [only]) if only.kid.is_none() => Some(only),
            (Some(kid), keys) => keys.iter().find(|k| k.kid.as_deref() == Some(kid)),
            (None, [only]) => Some(only),
            (None, _) => None,
        }
    }
}

const HMAC: [Algorithm; 3] = [Algorithm::HS256, Algorithm::HS384, Algorithm::HS512];
const RSA: [Algorithm; 6] =
    [Algorithm::RS256, Algorithm::RS384, Algorithm::RS512, Algorithm::PS256, Algorithm::PS384, Algorithm::PS512];

/// A PEM public key, whichever kind it is.
fn pem(path: &Path, text: &[u8]) -> Result<Key, KeyFileError> {
    let found = if let Ok(key) = DecodingKey::from_rsa_pem(text) {
        (key, RSA.to_vec())
    } else if let Ok(key) = DecodingKey::from_ec_pem(text) {
        // The curve decides between the two; the signature check refuses
        // the other.
        (key, vec![Algorithm::ES256, Algorithm::ES384])
    } else if let Ok(key) = DecodingKey::from_ed_pem(text) {
        (key, vec![Algorithm::EdDSA])
    } else {
        return Err(KeyFileError::BadPem(path.into()));
    };
    Ok(Key { kid: None, key: found.0, algorithms: found.1 })
}

/// Every key of a JWKS, each with a `kid` when there are several.
fn jwks(path: &Path, text: &str) -> Result<Keys, KeyFileError> {
    let set: JwkSet = serde_json::from_str(text).map_err(|e| KeyFileError::BadJwks(path.into(), e.to_string()))?;
    if set.keys.is_empty() || set.keys.len() > MAX_KEYS {
        let why = format!("{} keys; 1 to {MAX_KEYS} are needed", set.keys.len());
        return Err(KeyFileError::BadJwks(path.into(), why));
    }
    let mut keys = Vec::with_capacity(set.keys.len());
    for (i, jwk) in set.keys.iter().enumerate() {
        let which = jwk.common.key_id.clone().unwrap_or_else(|| format!("#{i}"));
        let bad = |why: String| KeyFileError::BadJwk(path.into(), which.clone(), why);
        if set.keys.len() > 1 && jwk.common.key_id.is_none() {
            return Err(bad("no kid, in a set of several".into()));
        }
        if matches!(jwk.common.public_key_use, Some(PublicKeyUse::Encryption)) {
            return Err(bad("a key for encryption (\"use\": \"enc\"), not signatures".into()));
        }
        let key = DecodingKey::from_jwk(jwk).map_err(|e| bad(e.to_string()))?;
        let kind = kind_of(jwk, &key).map_err(bad)?;
        let algorithms = match &jwk.common.key_algorithm {
            None => kind,
            Some(named) => {
                let name = serde_json::to_value(named).ok().and_then(|v| v.as_str().map(str::to_owned));
                let alg = name.as_deref().and_then(|n| Algorithm::from_str(n).ok());
                match alg {
                    Some(alg) if kind.contains(&alg) => vec![alg],
                    _ => return Err(bad(format!("alg {named:?} does not fit the key's kind"))),
                }
            }
        };
        keys.push(Key { kid: jwk.common.key_id.clone(), key, algorithms });
    }
    Ok(Keys { keys })
}

/// The algorithms a JWKS key's kind accepts, or why it cannot be used: an
/// `oct` secret shorter than [`MIN_SECRET_LEN`], a curve not supported.
fn kind_of(jwk: &Jwk, key: &DecodingKey) -> Result<Vec<Algorithm>, String> {
    match &jwk.algorithm {
        AlgorithmParameters::RSA(_) => Ok(RSA.to_vec()),
        AlgorithmParameters::OctetKey(_) => {
            let len = key.try_get_hmac_secret().map_or(0, <[u8]>::len);
            if len < MIN_SECRET_LEN {
                return Err(format!("an HMAC secret of {len} bytes; at least {MIN_SECRET_LEN} are needed"));
            }
            Ok(HMAC.to_vec())
        }
        AlgorithmParameters::OctetKeyPair(okp) if okp.curve == EllipticCurve::Ed25519 => Ok(vec![Algorithm::EdDSA]),
        AlgorithmParameters::EllipticCurve(ec) if ec.curve == EllipticCurve::P256 => Ok(vec![Algorithm::ES256]),
        AlgorithmParameters::EllipticCurve(ec) if ec.curve == EllipticCurve::P384 => Ok(vec![Algorithm::ES384]),
        AlgorithmParameters::OctetKeyPair(p) => Err(format!("curve {:?} is not supported", p.curve)),
        AlgorithmParameters::EllipticCurve(p) => Err(format!("curve {:?} is not supported", p.curve)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn file(name: &str, content: &str) -> PathBuf {
        let path = std::env::temp_dir().join(format!("wsloop-keys-{}-{name}", std::process::id()));
        std::fs::write(&path, content).unwrap();
        path
    }

    #[test]
    fn a_secret_file_is_one_hmac_key_and_a_short_one_is_refused() {
        let keys = Keys::load(&file("secret", &format!("{}\n", "s".repeat(32)))).unwrap();
        assert_eq!(keys.keys[0].algorithms, HMAC);
        assert!(keys.find(None).is_some() && keys.find(Some("any")).is_some());
        let short = Keys::load(&file("short", "too-short\n")).unwrap_err().to_string();
        assert!(short.contains("an HMAC secret of 9 bytes; at least 32"), "{short}");
        let missing = Keys::load(Path::new("/nonexistent/key")).unwrap_err().to_string();
        assert!(missing.starts_with("--jwt-key /nonexistent/key: cannot read it"), "{missing}");
    }

    #[test]
    fn a_jwks_finds_keys_by_kid_and_refuses_what_it_cannot_use() {
        let set = r#"{"keys":[{"kty":"oct","kid":"a","k":"c2VjcmV0LXNlY3JldC1zZWNyZXQtc2VjcmV0LXNlY3JldA"},
                              {"kty":"oct","kid":"b","alg":"HS512","k":"b3RoZXItc2VjcmV0LW90aGVyLXNlY3JldC1vdGhlci1zZWNyZXQ"}]}"#;
        let keys = Keys::load(&file("jwks", set)).unwrap();
        assert_eq!(keys.find(Some("a")).unwrap().algorithms, HMAC);
        assert_eq!(keys.find(Some("b")).unwrap().algorithms, [Algorithm::HS512]);
        assert!(keys.find(Some("c")).is_none(), "unknown kid");
        assert!(keys.find(None).is_none(), "no kid among several keys");
        let no_kid = r#"{"keys":[{"kty":"oct","k":"YQ"},{"kty":"oct","kid":"b","k":"Yg"}]}"#;
        let short = r#"{"keys":[{"kty":"oct","kid":"s","k":"c2hvcnQ"}]}"#;
        let err = Keys::load(&file("shortoct", short)).unwrap_err().to_string();
        assert!(err.contains("key s: an HMAC secret of 5 bytes"), "{err}");
        let enc =
            r#"{"keys":[{"kty":"oct","kid":"e","use":"enc","k":"c2VjcmV0LXNlY3JldC1zZWNyZXQtc2VjcmV0LXNlY3JldA"}]}"#;
        let err = Keys::load(&file("enc", enc)).unwrap_err().to_string();
        assert!(err.contains("key e: a key for encryption"), "{err}");
        let err = Keys::load(&file("nokid", no_kid)).unwrap_err().to_string();
        assert!(err.contains("key #0: no kid"), "{err}");
        let wrong_alg =
            r#"{"keys":[{"kty":"oct","kid":"a","alg":"RS256","k":"c2VjcmV0LXNlY3JldC1zZWNyZXQtc2VjcmV0LXNlY3JldA"}]}"#;
        let err = Keys::load(&file("wrongalg", wrong_alg)).unwrap_err().to_string();
        assert!(err.contains("key a: alg") && err.contains("does not fit"), "{err}");
        let err = Keys::load(&file("empty", r#"{"keys":[]}"#)).unwrap_err().to_string();
        assert!(err.contains("not a usable JWKS: 0 keys"), "{err}");
        let err = Keys::load(&file("garbage", "{nope")).unwrap_err().to_string();
        assert!(err.contains("not a usable JWKS"), "{err}");
        let err = Keys::load(&file("pem", "-----BEGIN PUBLIC KEY-----\nAAAA\n-----END PUBLIC KEY-----\n"));
        assert!(matches!(err, Err(KeyFileError::BadPem(_))));
    }
}
