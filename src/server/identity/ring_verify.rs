//! Token signatures checked with ring, the library this server already
//! carries for TLS: its assembly P-256 and RSA verify several times faster
//! than the pure-Rust backend `jsonwebtoken` brings (an ES256 upgrade cost
//! ~300 us of server CPU with it; see BENCHMARKS.md), and every signature
//! an attacker makes the server check is paid on the event loop.
//!
//! Installed as `jsonwebtoken`'s process-wide provider by
//! [`install`]; signing (only tests and tools sign) and the JWK helpers
//! stay with the pure-Rust backend. A key is only ever used with an
//! algorithm of its own family (an RSA public key is never an HMAC
//! secret), checked here as well as by the key table.

use jsonwebtoken::crypto::{rust_crypto, CryptoProvider, JwkUtils, JwtSigner, JwtVerifier};
use jsonwebtoken::errors::{Error, ErrorKind, Result};
use jsonwebtoken::jwk::EllipticCurve;
use jsonwebtoken::signature;
use jsonwebtoken::{Algorithm, DecodingKey, DecodingKeyKind, EncodingKey};
use ring::signature::{self as ring_sig, RsaParameters, VerificationAlgorithm};

/// The provider: ring verifies, the pure-Rust backend signs.
static PROVIDER: CryptoProvider = CryptoProvider {
    signer_factory: rust_crypto_signer,
    verifier_factory: ring_verifier,
    jwk_utils: JwkUtils {
        extract_rsa_public_key_components: |der| {
            (rust_crypto::DEFAULT_PROVIDER.jwk_utils.extract_rsa_public_key_components)(der)
        },
        extract_ec_public_key_coordinates: ec_coordinates,
        compute_digest: |data, hash| (rust_crypto::DEFAULT_PROVIDER.jwk_utils.compute_digest)(data, hash),
    },
};

/// Makes ring check every token this process verifies. Idempotent; if
/// another provider was installed first, that one stays (and is correct,
/// only slower).
pub(crate) fn install() {
    if let Err(other) = PROVIDER.install_default() {
        if !std::ptr::eq(other, &PROVIDER) {
            log::warn!("JWT signatures are checked by a provider installed before wsloop's (correct, slower)");
        }
    }
}

fn rust_crypto_signer(alg: &Algorithm, key: &EncodingKey) -> Result<Box<dyn JwtSigner>> {
    (rust_crypto::DEFAULT_PROVIDER.signer_factory)(alg, key)
}

fn ec_coordinates(key: &[u8], alg: Algorithm) -> Result<(EllipticCurve, Vec<u8>, Vec<u8>)> {
    (rust_crypto::DEFAULT_PROVIDER.jwk_utils.extract_ec_public_key_coordinates)(key, alg)
}

/// What one token's signature is checked against.
enum Checked {
    Hmac(ring::hmac::Key),
    /// ECDSA (the uncompressed point), EdDSA (32 bytes), RSA (PKCS#1 DER).
    Public(&'static dyn VerificationAlgorithm, Vec<u8>),
    /// RSA from a JWK's modulus and exponent.
    RsaParts(&'static RsaParameters, Vec<u8>, Vec<u8>),
}

struct RingVerifier {
    algorithm: Algorithm,
    checked: Checked,
}

impl signature::Verifier<Vec<u8>> for RingVerifier {
    fn verify(&self, message: &[u8], sig: &Vec<u8>) -> std::result::Result<(), signature::Error> {
        let ok = match &self.checked {
            Checked::Hmac(key) => ring::hmac::verify(key, message, sig).is_ok(),
            Checked::Public(alg, key) => ring_sig::UnparsedPublicKey::new(*alg, key).verify(message, sig).is_ok(),
            Checked::RsaParts(params, n, e) => {
                // A JWK's big-endian integers may carry leading zeros ring refuses.
                let (n, e) = (strip_zeros(n), strip_zeros(e));
                ring_sig::RsaPublicKeyComponents { n, e }.verify(params, message, sig).is_ok()
            }
        };
        if ok {
            Ok(())
        } else {
            Err(signature::Error::new())
        }
    }
}

fn strip_zeros(bytes: &[u8]) -> &[u8] {
    let first = bytes.iter().position(|&b| b != 0).unwrap_or(bytes.len());
    &bytes[first..]
}

impl JwtVerifier for RingVerifier {
    fn algorithm(&self) -> Algorithm {
        self.algorithm
    }
}

fn ring_verifier(alg: &Algorithm, key: &DecodingKey) -> Result<Box<dyn JwtVerifier>> {
    if key.family() != alg.family() {
        return Err(Error::from(ErrorKind::InvalidAlgorithm));
    }
    let public = |algorithm: &'static dyn VerificationAlgorithm| match key.kind() {
        DecodingKeyKind::SecretOrDer(bytes) => Ok(Checked::Public(algorithm, bytes.clone())),
        DecodingKeyKind::RsaModulusExponent { .. } => Err(Error::from(ErrorKind::InvalidKeyFormat)),
    };
    let rsa = |params: &'static RsaParameters| match key.kind() {
        DecodingKeyKind::SecretOrDer(der) => Ok(Checked::Public(params, der.clone())),
        DecodingKeyKind::RsaModulusExponent { n, e } => Ok(Checked::RsaParts(params, n.clone(), e.clone())),
    };
    let hmac = |algorithm: ring::hmac::Algorithm| match key.kind() {
        DecodingKeyKind::SecretOrDer(secret) => Ok(Checked::Hmac(ring::hmac::Key::new(algorithm, secret))),
        DecodingKeyKind::RsaModulusExponent { .. } => Err(Error::from(ErrorKind::InvalidKeyFormat)),
    };
    let checked = match alg {
        Algorithm::HS256 => hmac(ring::hmac::HMAC_SHA256),
        Algorithm::HS384 => hmac(ring::hmac::HMAC_SHA384),
        Algorithm::HS512 => hmac(ring::hmac::HMAC_SHA512),
        Algorithm::ES256 => public(&ring_sig::ECDSA_P256_SHA256_FIXED),
        Algorithm::ES384 => public(&ring_sig::ECDSA_P384_SHA384_FIXED),
        Algorithm::EdDSA => public(&ring_sig::ED25519),
        Algorithm::RS256 => rsa(&ring_sig::RSA_PKCS1_2048_8192_SHA256),
        Algorithm::RS384 => rsa(&ring_sig::RSA_PKCS1_2048_8192_SHA384),
        Algorithm::RS512 => rsa(&ring_sig::RSA_PKCS1_2048_8192_SHA512),
        Algorithm::PS256 => rsa(&ring_sig::RSA_PSS_2048_8192_SHA256),
        Algorithm::PS384 => rsa(&ring_sig::RSA_PSS_2048_8192_SHA384),
        Algorithm::PS512 => rsa(&ring_sig::RSA_PSS_2048_8192_SHA512),
    }?;
    Ok(Box::new(RingVerifier { algorithm: *alg, checked }))
}
