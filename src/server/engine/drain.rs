//! A paced drain: closing a set of connections at a steady pace over a
//! period, in random order, instead of all at once, so that their clients
//! do not all reconnect in the same second (the "reconnect storm" of a
//! deploy). Used by graceful shutdown with `--drain-period`, and by a hand-off
//! for the connections it cannot move.
//!
//! The invariant: of `total` connections, by elapsed time `t` exactly
//! `ceil(total * t / period)` (at most `total`) have been handed out by
//! [`Drain::due`], never more, and [`Drain::next_due`] says when the next one
//! is owed, so a loop that sleeps until then never closes in a burst. The
//! type only names connections (slot and generation); the engine skips the
//! ones that ended on their own before their turn.

use std::time::{Duration, Instant};

/// The shortest reconnect hint a 1012 carries.
const HINT_MIN: Duration = Duration::from_millis(500);
/// Hints are spread uniformly over this much above [`HINT_MIN`].
const HINT_SPREAD: Duration = Duration::from_millis(4500);

/// The reconnect hint of one 1012 close, from a random number: between
/// 0.5 and 5 s, so clients told together do not come back together.
pub(crate) fn reconnect_hint(random: u64) -> Duration {
    HINT_MIN + Duration::from_millis(random % (HINT_SPREAD.as_millis() as u64 + 1))
}

/// The reason text of a 1012 close: `text`, then the reconnect hint,
/// `service restart; reconnect in 1234 ms`, written into `buf`.
pub(crate) fn restart_reason<'a>(text: &'a str, random: u64, buf: &'a mut [u8; 64]) -> &'a str {
    use std::io::Write;
    let mut cursor = std::io::Cursor::new(&mut buf[..]);
    let hint = reconnect_hint(random).as_millis();
    if write!(cursor, "{text}; reconnect in {hint} ms").is_err() {
        return text;
    }
    let len = cursor.position() as usize;
    std::str::from_utf8(&buf[..len]).unwrap_or(text)
}

/// Connections to close at a steady pace. See the module docs.
#[derive(Debug)]
pub(crate) struct Drain {
    /// Those not yet handed out, in random order; taken from the end.
    queue: Vec<(u32, u32)>,
    /// How many there were at the start.
    total: usize,
    /// When the drain began.
    started: Instant,
    /// How long it takes; zero: all at once.
    period: Duration,
}

impl Drain {
    /// A drain of `conns` (slot, generation) over `period` from `started`,
    /// shuffled with `random` (one call per connection).
    pub(crate) fn new(
        mut conns: Vec<(u32, u32)>,
        period: Duration,
        started: Instant,
        mut random: impl FnMut() -> u64,
    ) -> Drain {
        // Fisher-Yates.
        for i in (1..conns.len()).rev() {
            let j = (random() % (i as u64 + 1)) as usize;
            conns.swap(i, j);
        }
        Drain { total: conns.len(), queue: conns, started, period }
    }

    /// Connections not yet handed out.
    pub(crate) fn remaining(&self) -> usize {
        self.queue.len()
    }

    /// True once every connection has been handed out.
    pub(crate) fn is_done(&self) -> bool {
        self.queue.is_empty()
    }

    /// Connections handed out so far.
    fn handed_out(&self) -> usize {
        self.total - self.queue.len()
    }

    /// How many should have been handed out by `now`:
    /// `ceil(total * elapsed / period)`, at most `total`.
    fn owed_by(&self, now: Instant) -> usize {
        let elapsed = now.saturating_duration_since(self.started);
        if elapsed >= self.period {
            return self.total;
        }
        let owed = (self.total as u128 * elapsed.as_nanos()).div_ceil(self.period.as_nanos());
        (owed as usize).min(self.total)
    }

    /// The connections whose turn has come by `now` (and not handed out
    /// before), in the drain's random order.
    pub(crate) fn due(&mut self, now: Instant) -> impl Iterator<Item = (u32, u32)> + '_ {
        let n = self.owed_by(now).saturating_sub(self.handed_out());
        let from = self.queue.len() - n.min(self.queue.len());
        self.queue.drain(from..).rev()
    }

    /// When the next connection's turn comes (`None` once all are out):
    /// the first instant at which `owed_by` exceeds what was handed out.
    pub(crate) fn next_due(&self) -> Option<Instant> {
        if self.queue.is_empty() {
            return None;
        }
        if self.period.is_zero() {
            return Some(self.started);
        }
        // owed_by(t) > k  <=>  total * t / period > k  <=>  t > k * period / total.
        let k = self.handed_out() as u128;
        let nanos = k * self.period.as_nanos() / self.total as u128 + 1;
        Some(self.started + Duration::from_nanos(u64::try_from(nanos).unwrap_or(u64::MAX)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn conns(n: u32) -> Vec<(u32, u32)> {
        (0..n).map(|i| (i, i + 100)).collect()
    }

    fn counter_random() -> impl FnMut() -> u64 {
        let mut x = 0x9e37_79b9_7f4a_7c15u64;
        move || {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x
        }
    }

    #[test]
    fn hands_out_ceil_of_the_elapsed_share() {
        let t0 = Instant::now();
        let mut d = Drain::new(conns(2000), Duration::from_secs(10), t0, counter_random());
        assert_eq!(d.due(t0).count(), 0, "nothing at the very start");
        assert_eq!(d.due(t0 + Duration::from_nanos(1)).count(), 1, "ceil: the first is due at once");
        assert_eq!(d.due(t0 + Duration::from_millis(5)).count(), 0, "5 ms of 10 s is 1 of 2000");
        assert_eq!(d.due(t0 + Duration::from_millis(5) + Duration::from_nanos(1)).count(), 1);
        // By 1 s, 200 in all; by 2.5 s, 500.
        assert_eq!(d.due(t0 + Duration::from_secs(1)).count(), 198);
        assert_eq!(d.due(t0 + Duration::from_millis(2500)).count(), 300);
        assert_eq!(d.remaining(), 1500);
        // Asking twice at the same time hands out nothing more.
        assert_eq!(d.due(t0 + Duration::from_millis(2500)).count(), 0);
        // Past the period: all the rest, then nothing.
        assert_eq!(d.due(t0 + Duration::from_secs(11)).count(), 1500);
        assert!(d.is_done());
        assert_eq!(d.next_due(), None);
    }

    #[test]
    fn every_connection_once_in_a_shuffled_order() {
        let t0 = Instant::now();
        let mut d = Drain::new(conns(1000), Duration::from_secs(1), t0, counter_random());
        let mut out = Vec::new();
        for ms in 1..=1000 {
            out.extend(d.due(t0 + Duration::from_millis(ms)));
        }
        assert_eq!(out.len(), 1000);
        let mut sorted = out.clone();
        sorted.sort_unstable();
        assert_eq!(sorted, conns(1000), "each exactly once");
        let in_order = out.windows(2).filter(|w| w[0].0 + 1 == w[1].0).count();
        assert!(in_order < 50, "not in slot order: {in_order} neighbours of 999");
    }

    #[test]
    fn next_due_is_exactly_when_the_next_one_is_owed() {
        let t0 = Instant::now();
        for (n, period) in [(2000, Duration::from_secs(10)), (3, Duration::from_secs(7)), (1, Duration::from_millis(1))]
        {
            let mut d = Drain::new(conns(n), period, t0, counter_random());
            let mut handed = 0;
            while let Some(at) = d.next_due() {
                // A loop that sleeps until `at` finds exactly one more due,
                // and none an instant earlier: never a burst, never late.
                let before = at - Duration::from_nanos(1);
                assert_eq!(d.due(before).count(), 0, "n {n}: early at {:?}", before - t0);
                assert_eq!(d.due(at).count(), 1, "n {n}: at {:?}", at - t0);
                handed += 1;
            }
            assert_eq!(handed, n as usize);
            assert!(d.is_done());
        }
    }

    #[test]
    fn a_late_wake_catches_up_and_a_zero_period_is_all_at_once() {
        let t0 = Instant::now();
        let mut d = Drain::new(conns(100), Duration::from_secs(10), t0, counter_random());
        // A loop that slept 3 s hands out the 30 owed by then, no more.
        assert_eq!(d.due(t0 + Duration::from_secs(3)).count(), 30);
        let mut all = Drain::new(conns(5), Duration::ZERO, t0, counter_random());
        assert_eq!(all.next_due(), Some(t0));
        assert_eq!(all.due(t0).count(), 5);
        let mut none = Drain::new(Vec::new(), Duration::from_secs(1), t0, counter_random());
        assert_eq!((none.due(t0 + Duration::from_secs(2)).count(), none.next_due()), (0, None));
    }

    #[test]
    fn hints_spread_between_half_a_second_and_five() {
        let mut random = counter_random();
        let hints: Vec<Duration> = (0..10_000).map(|_| reconnect_hint(random())).collect();
        assert!(hints.iter().all(|h| *h >= HINT_MIN && *h <= HINT_MIN + HINT_SPREAD));
        let early = hints.iter().filter(|h| **h < Duration::from_millis(2750)).count();
        assert!((4000..6000).contains(&early), "uniform-ish: {early} of 10000 in the first half");
        assert_eq!(reconnect_hint(0), HINT_MIN);
        let mut buf = [0u8; 64];
        assert_eq!(restart_reason("service restart", 1234 - 500, &mut buf), "service restart; reconnect in 1234 ms");
        let mut buf = [0u8; 64];
        let long = "x".repeat(60);
        assert_eq!(restart_reason(&long, 0, &mut buf), long, "too long for the buffer: the text alone");
    }
}
