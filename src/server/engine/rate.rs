//! The per-connection message rate (`--rate-messages`, `--rate-bytes`,
//! `--rate-burst`; `RateLimitConfig` in `server/config.rs` tells the rule): two token buckets
//! per connection, judged for every whole message before the handler sees
//! it, so one connection cannot make its loop work for it as fast as it
//! can send.
//!
//! The invariants: a bucket is 12 bytes in a slot-indexed side table that
//! exists only while a limit is on (with none, the read turn pays one
//! branch per message); an all-zero bucket is a full one, so a new or
//! adopted connection needs no set-up and `forget` is a reset; no clock is
//! read per message (the loop's pass stamps the time once); a bucket's
//! level never leaves `0..=2 * burst`, so it fits its 32 bits.

use std::time::Instant;

use crate::server::life::CloseReason;
use crate::server::stats::LoopStats;
use crate::ws::{Event, Session};

/// The reply to the first message an episode drops.
const RATE_LIMITED: &str =
    r#"{"type":"error","error":"rate_limited","message":"over this connection's message rate: dropped"}"#;
/// The close a connection that keeps going over gets.
const CLOSE_CODE: u16 = 1008;
/// Its reason text.
const CLOSE_REASON: &str = "rate limit";
/// What a message costs the messages bucket: it counts thousandths, so a
/// refill of `rate` per second is exactly `rate` per millisecond.
const MESSAGE: u64 = 1000;

/// One connection's two buckets, as what was spent (0: full; past the
/// burst: in debt) and when they were last refilled.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct Bucket {
    /// Thousandths of a message spent.
    messages: u32,
    /// Payload bytes spent.
    bytes: u32,
    /// The loop's milliseconds at the last refill (wrapping: a bucket
    /// untouched for a multiple of 49.7 days may be refilled less).
    at_ms: u32,
}

/// What a message gets.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Verdict {
    /// Both buckets paid: hand it on.
    Pass,
    /// Over the rate: dropped, and paid as debt; `warn` for the first
    /// drop since the connection was last out of debt.
    Drop {
        /// Tell the peer (once per episode).
        warn: bool,
    },
    /// It would owe more than a second burst: close it.
    Close,
}

/// The limits in the buckets' units; a limit that is off has a rate and
/// a burst of 0, so it charges nothing and never refuses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Rates {
    /// Messages a second: thousandths refilled per millisecond.
    messages_per_s: u64,
    /// Bucket size in thousandths of a message.
    message_burst: u64,
    /// Bytes a second.
    bytes_per_s: u64,
    /// Bucket size in bytes.
    byte_burst: u64,
}

impl Rates {
    /// `messages_per_s` in bursts of `message_burst` thousandths and
    /// `bytes_per_s` in bursts of `byte_burst` bytes (a rate of 0: off), or
    /// `None` when both are off. The bursts passed `ServerConfig::check`:
    /// twice each fits 32 bits.
    pub(crate) fn new(messages_per_s: u32, message_burst: u64, bytes_per_s: u64, byte_burst: u64) -> Option<Rates> {
        let on = |rate: u64, burst: u64| if rate > 0 { (rate, burst) } else { (0, 0) };
        let (messages_per_s, message_burst) = on(u64::from(messages_per_s), message_burst);
        let (bytes_per_s, byte_burst) = on(bytes_per_s, byte_burst);
        debug_assert!(2 * message_burst <= u64::from(u32::MAX) && 2 * byte_burst <= u64::from(u32::MAX));
        (messages_per_s > 0 || bytes_per_s > 0).then_some(Rates {
            messages_per_s,
            message_burst,
            bytes_per_s,
            byte_burst,
        })
    }

    /// Charges a message of `size` payload bytes at `now_ms`.
    pub(crate) fn charge(&self, bucket: &mut Bucket, now_ms: u32, size: usize) -> Verdict {
        self.refill(bucket, now_ms);
        let message = if self.messages_per_s > 0 { MESSAGE } else { 0 };
        let bytes = if self.bytes_per_s > 0 { size as u64 } else { 0 };
        let messages_after = u64::from(bucket.messages) + message;
        let bytes_after = u64::from(bucket.bytes) + bytes;
        let verdict = if messages_after <= self.message_burst && bytes_after <= self.byte_burst {
            Verdict::Pass
        } else if messages_after > 2 * self.message_burst || bytes_after > 2 * self.byte_burst {
            return Verdict::Close;
        } else {
            let in_debt = u64::from(bucket.messages) > self.message_burst || u64::from(bucket.bytes) > self.byte_burst;
            Verdict::Drop { warn: !in_debt }
        };
        // Both at most twice their burst, which fits 32 bits.
        bucket.messages = messages_after as u32;
        bucket.bytes = bytes_after as u32;
        verdict
    }

    /// Gives back what the time since the last refill earned (whole
    /// bytes: under a byte per refill is lost, at most one per message).
    fn refill(&self, bucket: &mut Bucket, now_ms: u32) {
        let elapsed = u64::from(now_ms.wrapping_sub(bucket.at_ms));
        if elapsed == 0 {
            return;
        }
        bucket.at_ms = now_ms;
        let messages = elapsed * self.messages_per_s;
        bucket.messages = u64::from(bucket.messages).saturating_sub(messages) as u32;
        let bytes = elapsed * self.bytes_per_s / 1000;
        bucket.bytes = u64::from(bucket.bytes).saturating_sub(bytes) as u32;
    }
}

/// The loop's buckets, by slot, and its clock. See the module docs.
#[derive(Debug)]
pub(crate) struct RateTable {
    /// `None`: no limit, and no buckets.
    rates: Option<Rates>,
    buckets: Vec<Bucket>,
    /// What the clock counts milliseconds from.
    epoch: Instant,
    /// Milliseconds since `epoch` when this pass began (wrapping).
    now_ms: u32,
}

impl RateTable {
    /// A table for these limits (none: it stays empty), its clock
    /// counting from `epoch`.
    pub(crate) fn new(rates: Option<Rates>, epoch: Instant) -> RateTable {
        RateTable { rates, buckets: Vec::new(), epoch, now_ms: 0 }
    }

    /// Sets the time messages are judged at until the next call: once a
    /// loop pass, not once a message.
    #[inline]
    pub(crate) fn set_clock(&mut self, now: Instant) {
        if self.rates.is_some() {
            // Truncated on purpose: the clock wraps, refills use wrapping_sub.
            self.now_ms = now.saturating_duration_since(self.epoch).as_millis() as u32;
        }
    }

    /// Forgets the slot's bucket: the next connection there starts full.
    pub(crate) fn forget(&mut self, slot: usize) {
        if let Some(bucket) = self.buckets.get_mut(slot) {
            *bucket = Bucket::default();
        }
    }

    /// Gives back the buckets from `end` on (no slot there is in use).
    pub(crate) fn truncate(&mut self, end: usize) {
        self.buckets.truncate(end);
        self.buckets.shrink_to_fit();
    }

    /// Judges one decoded event of the connection in `slot`, before the
    /// handler sees it: `Ok(true)` hands it on, `Ok(false)` drops it (the
    /// first drop of an episode writes the `rate_limited` error to `out`),
    /// `Err` ends the connection, its 1008 written. `mark` is `out`'s
    /// length before the event was decoded: a dropped ping's pong, which
    /// decoding wrote, is taken back. Counted in `stats`.
    #[inline]
    pub(crate) fn judge(
        &mut self,
        slot: usize,
        event: &Event<'_>,
        session: &mut Session,
        out: &mut Vec<u8>,
        mark: usize,
        stats: &LoopStats,
    ) -> Result<bool, CloseReason> {
        let Some(rates) = self.rates else {
            return Ok(true);
        };
        let size = match event {
            Event::Text(text) => text.len(),
            Event::Binary(data) | Event::Ping(data) | Event::Pong(data) => data.len(),
            Event::Upgrade(_) | Event::Close { .. } => return Ok(true),
        };
        if self.buckets.len() <= slot {
            self.buckets.resize(slot + 1, Bucket::default());
        }
        let verdict = rates.charge(&mut self.buckets[slot], self.now_ms, size);
        if verdict != Verdict::Pass && matches!(event, Event::Ping(_)) {
            out.truncate(mark);
        }
        match verdict {
            Verdict::Pass => Ok(true),
            Verdict::Drop { warn } => {
                stats.rate_dropped.add(1);
                if warn {
                    stats.rate_warned.add(1);
                    session.write_text(out, RATE_LIMITED);
                }
                Ok(false)
            }
            Verdict::Close => {
                stats.rate_closed.add(1);
                session.write_close(out, CLOSE_CODE, CLOSE_REASON);
                Err(CloseReason::RateLimited)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    fn rates(messages: u32, bytes: u64, burst_ms: u64) -> Rates {
        Rates::new(messages, u64::from(messages) * burst_ms, bytes, bytes * burst_ms / 1000).unwrap()
    }

    /// Charges `n` messages of `size` at `now_ms`; the verdicts.
    fn send(r: &Rates, b: &mut Bucket, now_ms: u32, n: usize, size: usize) -> Vec<Verdict> {
        (0..n).map(|_| r.charge(b, now_ms, size)).collect()
    }

    const WARN: Verdict = Verdict::Drop { warn: true };
    const DROP: Verdict = Verdict::Drop { warn: false };

    #[test]
    fn a_bucket_is_twelve_bytes_and_zero_is_full() {
        assert_eq!(std::mem::size_of::<Bucket>(), 12);
        let r = rates(10, 0, 1000);
        let mut b = Bucket::default();
        // A fresh bucket at any time of the loop's clock: a whole burst.
        assert_eq!(send(&r, &mut b, 123_456, 10, 0), vec![Verdict::Pass; 10]);
    }

    #[test]
    fn a_burst_then_one_warning_then_silent_drops_then_close_at_a_second_burst() {
        let r = rates(10, 0, 1000);
        let mut b = Bucket::default();
        assert_eq!(send(&r, &mut b, 5, 10, 0), vec![Verdict::Pass; 10]);
        assert_eq!(r.charge(&mut b, 5, 0), WARN);
        assert_eq!(send(&r, &mut b, 5, 9, 0), vec![DROP; 9], "one warning per episode");
        assert_eq!(b.messages, 20_000, "exactly a second burst owed");
        assert_eq!(r.charge(&mut b, 5, 0), Verdict::Close);
        assert_eq!(b.messages, 20_000, "a close charges nothing");
    }

    #[test]
    fn refills_at_the_rate_pay_the_debt_and_rearm_the_warning() {
        let r = rates(10, 0, 1000);
        let mut b = Bucket::default();
        send(&r, &mut b, 0, 10, 0);
        assert_eq!(r.charge(&mut b, 0, 0), WARN);
        // 50 ms earn half a message (kept exactly, in thousandths): still
        // owing, so no second warning.
        assert_eq!(r.charge(&mut b, 50, 0), DROP);
        assert_eq!(b.messages, 11_500);
        // 150 ms more earn one and a half: the debt is paid, and the next
        // drop is a new episode, warned again.
        assert_eq!(r.charge(&mut b, 200, 0), WARN);
        // A second later there is room again.
        assert_eq!(r.charge(&mut b, 1200, 0), Verdict::Pass);
        // A long wait fills the bucket to its burst, never past it.
        let mut burst = vec![Verdict::Pass; 10];
        burst.push(WARN);
        assert_eq!(send(&r, &mut b, 60_000, 11, 0), burst);
    }

    #[test]
    fn a_sender_at_the_rate_is_never_refused() {
        let r = rates(20, 0, 1000);
        let mut b = Bucket::default();
        for i in 0..10_000u32 {
            assert_eq!(r.charge(&mut b, i * 50, 0), Verdict::Pass, "message {i}");
        }
        // Sub-millisecond rates add up: 3 a second, one every 334 ms.
        let r = rates(3, 0, 1000);
        let mut b = Bucket::default();
        for i in 0..1000u32 {
            assert_eq!(r.charge(&mut b, i * 334, 0), Verdict::Pass, "message {i}");
        }
    }

    #[test]
    fn bytes_are_limited_by_payload_size() {
        let r = rates(0, 64 * 1024, 1000);
        let mut b = Bucket::default();
        let sixteen = 16 * 1024;
        assert_eq!(send(&r, &mut b, 1, 4, sixteen), vec![Verdict::Pass; 4]);
        assert_eq!(send(&r, &mut b, 1, 4, sixteen), [WARN, DROP, DROP, DROP]);
        assert_eq!(r.charge(&mut b, 1, sixteen), Verdict::Close);
        // Messages do not count without a message limit: empty ones pass.
        let mut b = Bucket { bytes: 64 * 1024, ..Bucket::default() };
        assert_eq!(send(&r, &mut b, 0, 1000, 0), vec![Verdict::Pass; 1000]);
        // A whole burst in one message passes from a full bucket only: half
        // a second later half is back, and it is dropped.
        let mut b = Bucket::default();
        assert_eq!(r.charge(&mut b, 0, 64 * 1024), Verdict::Pass);
        assert_eq!(r.charge(&mut b, 500, 64 * 1024), WARN);
        assert_eq!(r.charge(&mut b, 500, 1), DROP);
        assert_eq!(r.charge(&mut b, 500, 32 * 1024), Verdict::Close);
    }

    #[test]
    fn either_limit_refuses() {
        let r = rates(100, 1000, 1000);
        let mut b = Bucket::default();
        // Bytes run out before messages do.
        assert_eq!(send(&r, &mut b, 0, 10, 100), vec![Verdict::Pass; 10]);
        assert_eq!(r.charge(&mut b, 0, 100), WARN);
        // Messages run out before bytes do.
        let mut b = Bucket::default();
        assert_eq!(send(&r, &mut b, 0, 100, 0), vec![Verdict::Pass; 100]);
        assert_eq!(r.charge(&mut b, 0, 0), WARN);
    }

    #[test]
    fn the_clock_wraps() {
        let r = rates(10, 0, 1000);
        let mut b = Bucket { at_ms: u32::MAX - 50, ..Bucket::default() };
        send(&r, &mut b, u32::MAX - 50, 10, 0);
        assert_eq!(r.charge(&mut b, u32::MAX - 50, 0), WARN);
        // 1,100 ms later, across the wrap: paid and full again.
        assert_eq!(send(&r, &mut b, 1049, 10, 0), vec![Verdict::Pass; 10]);
    }

    #[test]
    fn off_means_no_table() {
        assert_eq!(Rates::new(0, 1000, 0, 1000), None);
        let mut table = RateTable::new(None, Instant::now());
        table.set_clock(Instant::now() + Duration::from_secs(5));
        assert_eq!(table.now_ms, 0);
        table.forget(3);
        assert!(table.buckets.is_empty());
    }
}
