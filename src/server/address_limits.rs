//! Per-source-address limits: how many connections one address may hold
//! (`--max-conns-per-ip`) and how fast it may open them
//! (`--handshake-rate-per-ip`, a token bucket). Checked once at accept, so a
//! refused client is answered 429 before it costs a slot, a buffer or a
//! parse; nothing here runs per message.
//!
//! Process-wide (SO_REUSEPORT spreads one address's connections over every
//! loop), in shards each behind its own lock, touched on accept and close
//! only. An IPv6 client is counted by its /64, which is what one host or
//! one customer usually gets: per address it could take 2^64 of them.
//! Memory stays bounded: an address with no connection left and a full
//! bucket is forgotten, and a shard that grows is swept of such entries.

use std::collections::HashMap;
use std::net::{IpAddr, Ipv6Addr};
use std::sync::Mutex;
use std::time::Instant;

use crate::ws::HandshakeError;

/// Shards of the table: enough that two or more loops accepting at once
/// rarely wait on one another.
const SHARDS: usize = 16;
/// A shard is swept once it holds this many entries, and then whenever it
/// has doubled since the last sweep.
const FIRST_SWEEP: usize = 1024;

/// The limits in effect; zero turns a limit off.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct AddressLimitConfig {
    /// Open connections one address may hold at once.
    pub max_conns: u32,
    /// Handshakes per second one address may start, with a burst of as
    /// many (the bucket holds `rate` tokens and refills `rate` per second).
    pub handshake_rate: u32,
}

/// Why an address was turned away, and when it may try again (seconds).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Limited {
    /// `TooManyConnections` or `HandshakeRate` (both 429).
    pub error: HandshakeError,
    /// For the reply's `Retry-After`.
    pub retry_after: u32,
}

/// One address's share: its open connections and its rate bucket.
#[derive(Debug, Clone, Copy)]
struct Entry {
    conns: u32,
    tokens: f64,
    refilled: Instant,
}

#[derive(Debug, Default)]
struct Shard {
    entries: HashMap<IpAddr, Entry>,
    sweep_at: usize,
}

/// The process-wide table. See the module docs.
#[derive(Debug)]
pub(crate) struct AddressLimits {
    cfg: AddressLimitConfig,
    shards: Vec<Mutex<Shard>>,
}

impl AddressLimits {
    /// A table enforcing `cfg` (empty until the first accept).
    pub(crate) fn new(cfg: AddressLimitConfig) -> Self {
        let shards = (0..SHARDS).map(|_| Mutex::new(Shard { sweep_at: FIRST_SWEEP, ..Shard::default() })).collect();
        AddressLimits { cfg, shards }
    }

    /// True if any limit is on (otherwise no call needs to be made).
    pub(crate) fn is_enabled(&self) -> bool {
        self.cfg.max_conns > 0 || self.cfg.handshake_rate > 0
    }

    /// True if connections are counted, so each must be [`release`](Self::release)d.
    pub(crate) fn counts_conns(&self) -> bool {
        self.cfg.max_conns > 0
    }

    /// Takes a connection from `ip` in at `now`, or says why not. On `Ok`,
    /// and if [`counts_conns`](Self::counts_conns), the caller owes one
    /// `release(ip)` when it closes.
    pub(crate) fn admit(&self, ip: IpAddr, now: Instant) -> Result<(), Limited> {
        let key = key_of(ip);
        let mut shard = self.shard(&key);
        let rate = f64::from(self.cfg.handshake_rate);
        let entry = shard.entries.entry(key).or_insert(Entry { conns: 0, tokens: rate, refilled: now });
        if self.cfg.max_conns > 0 && entry.conns >= self.cfg.max_conns {
            return Err(Limited { error: HandshakeError::TooManyConnections, retry_after: 1 });
        }
        if self.cfg.handshake_rate > 0 {
            let elapsed = now.saturating_duration_since(entry.refilled).as_secs_f64();
            entry.tokens = (entry.tokens + elapsed * rate).min(rate);
            entry.refilled = now;
            if entry.tokens < 1.0 {
                let retry_after = ((1.0 - entry.tokens) / rate).ceil().max(1.0) as u32;
                return Err(Limited { error: HandshakeError::HandshakeRate, retry_after });
            }
            entry.tokens -= 1.0;
        }
        if self.cfg.max_conns > 0 {
            entry.conns += 1;
        }
        if shard.entries.len() >= shard.sweep_at {
            self.sweep(&mut shard, now);
        }
        Ok(())
    }

    /// Counts a connection from `ip` admitted elsewhere (adopted from an
    /// earlier process): never refused; released like any other.
    pub(crate) fn count(&self, ip: IpAddr) {
        let key = key_of(ip);
        let mut shard = self.shard(&key);
        let rate = f64::from(self.cfg.handshake_rate);
        let now = Instant::now();
        shard.entries.entry(key).or_insert(Entry { conns: 0, tokens: rate, refilled: now }).conns += 1;
    }

    /// A connection from `ip` that [`admit`](Self::admit) counted has closed.
    pub(crate) fn release(&self, ip: IpAddr) {
        if !self.counts_conns() {
            return;
        }
        let key = key_of(ip);
        let mut shard = self.shard(&key);
        if let Some(entry) = shard.entries.get_mut(&key) {
            debug_assert!(entry.conns > 0, "released more than admitted");
            entry.conns = entry.conns.saturating_sub(1);
            if entry.conns == 0 && self.cfg.handshake_rate == 0 {
                shard.entries.remove(&key);
            }
        }
    }

    /// Addresses the table holds now (for tests).
    #[cfg(test)]
    pub(crate) fn tracked(&self) -> usize {
        self.shards.iter().map(|s| s.lock().map_or(0, |s| s.entries.len())).sum()
    }

    /// Forgets every address that holds no connection and whose bucket
    /// would be full by `now`: remembering it would change nothing.
    fn sweep(&self, shard: &mut Shard, now: Instant) {
        let rate = f64::from(self.cfg.handshake_rate);
        shard.entries.retain(|_, e| {
            let refill = now.saturating_duration_since(e.refilled).as_secs_f64() * rate;
            e.conns > 0 || (rate > 0.0 && e.tokens + refill < rate)
        });
        shard.sweep_at = (shard.entries.len() * 2).max(FIRST_SWEEP);
    }

    fn shard(&self, key: &IpAddr) -> std::sync::MutexGuard<'_, Shard> {
        use std::hash::{Hash, Hasher};
        // The shard only spreads the lock; any stable mix of the bits does.
        let mut mix = std::hash::DefaultHasher::new();
        key.hash(&mut mix);
        let index = mix.finish() as usize % SHARDS;
        // A loop that panicked while holding a shard left nothing half-done
        // that matters: counts are advisory, so carry on with the data.
        self.shards[index].lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

/// The address an entry is kept under: IPv4 (also when mapped into IPv6)
/// as itself, IPv6 by its /64.
fn key_of(ip: IpAddr) -> IpAddr {
    match ip.to_canonical() {
        IpAddr::V6(v6) => {
            let prefix = u128::from(v6) & !((1u128 << 64) - 1);
            IpAddr::V6(Ipv6Addr::from(prefix))
        }
        v4 => v4,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn connections_per_address_are_capped_and_released() {
        let limits = AddressLimits::new(AddressLimitConfig { max_conns: 2, handshake_rate: 0 });
        let now = Instant::now();
        assert!(limits.admit(ip("10.0.0.1"), now).is_ok());
        assert!(limits.admit(ip("10.0.0.1"), now).is_ok());
        let refused = limits.admit(ip("10.0.0.1"), now).unwrap_err();
        assert_eq!(refused, Limited { error: HandshakeError::TooManyConnections, retry_after: 1 });
        // Another address is not affected.
        assert!(limits.admit(ip("10.0.0.2"), now).is_ok());
        limits.release(ip("10.0.0.1"));
        assert!(limits.admit(ip("10.0.0.1"), now).is_ok());
        for _ in 0..2 {
            limits.release(ip("10.0.0.1"));
        }
        limits.release(ip("10.0.0.2"));
        assert_eq!(limits.tracked(), 0, "an address with nothing open is forgotten");
    }

    #[test]
    fn the_rate_bucket_refills_and_says_when() {
        let limits = AddressLimits::new(AddressLimitConfig { max_conns: 0, handshake_rate: 2 });
        let t0 = Instant::now();
        assert!(limits.admit(ip("10.0.0.1"), t0).is_ok());
        assert!(limits.admit(ip("10.0.0.1"), t0).is_ok());
        let refused = limits.admit(ip("10.0.0.1"), t0).unwrap_err();
        assert_eq!(refused, Limited { error: HandshakeError::HandshakeRate, retry_after: 1 });
        // Half a second brings one token back (2 per second).
        assert!(limits.admit(ip("10.0.0.1"), t0 + Duration::from_millis(500)).is_ok());
        assert!(limits.admit(ip("10.0.0.1"), t0 + Duration::from_millis(500)).is_err());
        // A slow rate asks for a longer wait.
        let slow = AddressLimits::new(AddressLimitConfig { max_conns: 0, handshake_rate: 1 });
        assert!(slow.admit(ip("10.0.0.1"), t0).is_ok());
        assert_eq!(slow.admit(ip("10.0.0.1"), t0).unwrap_err().retry_after, 1);
    }

    #[test]
    fn ipv6_counts_by_its_64_and_mapped_ipv4_as_ipv4() {
        let limits = AddressLimits::new(AddressLimitConfig { max_conns: 1, handshake_rate: 0 });
        let now = Instant::now();
        assert!(limits.admit(ip("2001:db8:1:2::1"), now).is_ok());
        assert!(limits.admit(ip("2001:db8:1:2::ffff"), now).is_err(), "same /64");
        assert!(limits.admit(ip("2001:db8:1:3::1"), now).is_ok(), "another /64");
        assert!(limits.admit(ip("10.1.1.1"), now).is_ok());
        assert!(limits.admit(ip("::ffff:10.1.1.1"), now).is_err(), "mapped IPv4 is the same address");
    }

    #[test]
    fn a_spray_of_addresses_does_not_grow_the_table_without_bound() {
        let limits = AddressLimits::new(AddressLimitConfig { max_conns: 0, handshake_rate: 5 });
        let t0 = Instant::now();
        for i in 0..50_000u32 {
            // Each address starts one handshake, then is never seen again;
            // time moves on, so old buckets are full again when swept.
            let now = t0 + Duration::from_millis(u64::from(i));
            assert!(limits.admit(IpAddr::from(i.to_be_bytes()), now).is_ok());
        }
        assert!(limits.tracked() < 16 * 2 * FIRST_SWEEP, "{} tracked", limits.tracked());
    }
}
