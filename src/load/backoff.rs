//! `--reconnect`: how long a client waits before it connects again after
//! the server closed it. Exponential backoff with full jitter (each retry
//! waits a uniform time up to `min * 2^attempt`, capped at `max`), so a
//! fleet that lost its connections at once does not come back at once; a
//! server's hint (`reconnect in N ms` in the close reason) sets the first
//! wait instead. Every wait is at most `max`, whatever the server says: a
//! hostile or broken hint cannot park a client for longer.

use std::time::Duration;

/// The bounds of the reconnect backoff (`--reconnect-min`, `--reconnect-max`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Backoff {
    /// The first retry's cap; doubled per failed retry.
    pub min: Duration,
    /// No wait is longer.
    pub max: Duration,
}

/// The most digits a hint's number may have: more is malformed, not a
/// number to be clamped (u64 milliseconds fit in 20).
const HINT_DIGITS: usize = 12;

impl Backoff {
    /// The wait before retry `attempt` (0: the first after the loss), with
    /// the server's `hint` for the first one, `random` a uniform u64.
    /// Without a hint: uniform in `[0, min(max, min * 2^attempt)]`. With
    /// one (first retry only): the hint, capped at `max`, plus up to `min`
    /// of jitter, capped at `max` again.
    pub fn delay(&self, attempt: u32, hint: Option<Duration>, random: u64) -> Duration {
        let max = self.max.max(self.min);
        match hint {
            Some(h) if attempt == 0 => {
                let base = h.min(max);
                (base + scale(self.min, random)).min(max)
            }
            _ => {
                let cap = self.min.saturating_mul(1u32 << attempt.min(31)).min(max);
                scale(cap, random)
            }
        }
    }
}

/// `d` times a uniform fraction in [0, 1] taken from `random`.
fn scale(d: Duration, random: u64) -> Duration {
    let nanos = d.as_nanos().min(u128::from(u64::MAX));
    Duration::from_nanos((nanos * u128::from(random) / u128::from(u64::MAX)) as u64)
}

/// The server's hint in a close reason: the number in `reconnect in N ms`
/// (anywhere in the text, e.g. `service restart; reconnect in 1234 ms`).
/// `None` if there is none, or if the number is not a plain decimal of at
/// most [`HINT_DIGITS`] digits.
pub fn parse_hint(reason: &str) -> Option<Duration> {
    const LEAD: &str = "reconnect in ";
    let at = reason.find(LEAD)?;
    let rest = &reason[at + LEAD.len()..];
    let digits = rest.find(|c: char| !c.is_ascii_digit()).unwrap_or(rest.len());
    if digits == 0 || digits > HINT_DIGITS || !rest[digits..].starts_with(" ms") {
        return None;
    }
    rest[..digits].parse().ok().map(Duration::from_millis)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[allow(non_snake_case)]
    fn MS(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    fn backoff() -> Backoff {
        Backoff { min: MS(100), max: MS(10_000) }
    }

    #[test]
    fn full_jitter_spans_zero_to_the_doubled_cap() {
        let b = backoff();
        for (attempt, cap) in [(0, 100), (1, 200), (2, 400), (5, 3_200), (7, 10_000), (40, 10_000)] {
            assert_eq!(b.delay(attempt, None, 0), Duration::ZERO, "attempt {attempt}");
            assert_eq!(b.delay(attempt, None, u64::MAX), MS(cap), "attempt {attempt}");
            let mid = b.delay(attempt, None, u64::MAX / 2);
            assert!(mid > MS(cap) * 49 / 100 && mid < MS(cap) * 51 / 100, "attempt {attempt}: {mid:?}");
        }
    }

    #[test]
    fn random_delays_fall_in_range_and_spread() {
        let b = backoff();
        let delays: Vec<Duration> = (0..1000).map(|_| b.delay(3, None, crate::ws::mask::random_u64())).collect();
        assert!(delays.iter().all(|d| *d <= MS(800)));
        let low = delays.iter().filter(|d| **d < MS(400)).count();
        assert!((350..650).contains(&low), "{low} of 1000 in the lower half");
    }

    #[test]
    fn a_hint_sets_the_first_wait_plus_jitter() {
        let b = backoff();
        let hint = Some(MS(1234));
        assert_eq!(b.delay(0, hint, 0), MS(1234));
        assert_eq!(b.delay(0, hint, u64::MAX), MS(1334));
        // Later retries back off as usual.
        assert!(b.delay(1, hint, u64::MAX) <= MS(200));
    }

    #[test]
    fn a_huge_hint_is_bounded_by_the_max() {
        let b = backoff();
        for random in [0, u64::MAX] {
            assert_eq!(b.delay(0, Some(MS(u64::MAX / 2)), random), MS(10_000));
            assert_eq!(b.delay(0, parse_hint("reconnect in 999999999999 ms"), random), MS(10_000));
        }
        // A max below the min is read as the min: never a negative range.
        let odd = Backoff { min: MS(500), max: MS(100) };
        assert_eq!(odd.delay(3, None, u64::MAX), MS(500));
    }

    #[test]
    fn hints_are_read_from_the_close_reason() {
        assert_eq!(parse_hint("service restart; reconnect in 1234 ms"), Some(MS(1234)));
        assert_eq!(parse_hint("reconnect in 0 ms"), Some(MS(0)));
        assert_eq!(parse_hint("going away (reconnect in 50 ms)"), Some(MS(50)));
    }

    #[test]
    fn malformed_hints_are_ignored() {
        for bad in [
            "",
            "service restart",
            "reconnect in ms",
            "reconnect in -5 ms",
            "reconnect in 12.5 ms",
            "reconnect in 1234",
            "reconnect in 1234ms",
            "reconnect in 1234 s",
            "reconnect in 0x10 ms",
            "reconnect in 99999999999999999999999 ms",
            "reconnect in 1234567890123 ms",
            "reconnect in ١٢ ms",
        ] {
            assert_eq!(parse_hint(bad), None, "{bad:?}");
        }
    }
}
