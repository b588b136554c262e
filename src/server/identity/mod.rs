//! Who a connection is and what it may do: JWT identities (`--jwt-key`).
//!
//! A token is checked once, before the 101 ([`Verifier`]); a connection
//! then carries its user id and rights in its loop's table ([`User`],
//! 12 bytes per connection, user ids and rights interned) until it closes,
//! its token expires (closed with 1008 `token expired`), or a new token
//! replaces it (`Ctx::refresh`). Room rights are enforced where joins and
//! publishes enter the engine, so every handler, built in or embedded, is
//! bound by them.
//!
//! - `keys.rs`: the key file (HMAC secret, PEM public key, JWKS), by `kid`;
//! - `verify.rs`: the checks, the claims read, why a token is refused;
//! - `ring_verify.rs`: the signatures checked with ring (several times
//!   faster than the pure-Rust backend on P-256 and RSA);
//! - `rights.rs`: room patterns (`chat:*`, `user:{sub}`) and broadcast;
//! - `table.rs`: each loop's slot-indexed identities and the expiry sweep;
//! - `names.rs`: the user ids a loop holds, once each, in one byte arena;
//! - `per_user.rs`: `--max-conns-per-user`, process-wide.

mod keys;
mod names;
mod per_user;
mod rights;
mod ring_verify;
mod table;
mod verify;

pub use keys::{KeyFileError, MIN_SECRET_LEN};
pub use rights::{Rights, RightsError, MAX_PATTERNS, MAX_PATTERN_LEN};
pub use table::User;
pub use verify::{AuthCounts, Denied, JwtConfig, Rejection, Verified, Verifier, MAX_SUB_LEN};

pub(crate) use per_user::UserCounts;

/// Equal secrets, compared without an early exit on the first difference
/// (only the length, which is no secret, decides early): every shared
/// secret a peer presents (`--auth-token-file`, the admin API's token) is
/// compared here, so timing tells nothing about where it differs.
pub(crate) fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    let diff = a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y));
    std::hint::black_box(diff) == 0
}

/// Seconds since the Unix epoch: the clock tokens are judged by.
pub(crate) fn unix_now() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_secs())
}
pub(crate) use table::Identities;
